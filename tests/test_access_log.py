"""The access log reader (``--format access_log``) and its preset ``mappings/access-log.yaml``.

The shipped samples (``sample_data/access_logs/``) render the same simulated
requests in every supported format; ``expected.json`` is computed by the
generator from its own labels (which request is a person's page view, which
visit it belongs to), never through the reader. The CLI tests compare the
payloads of a dry run, and what the fake Umami stored, with it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from backfill.errors import ConfigError, SourceError
from backfill.sources import ReadOptions, expand_sources, iter_chunks, read_schema
from backfill.sources.access_log import detect as detection
from backfill.sources.access_log.custom import custom_format
from backfill.sources.access_log.rotation import log_group, sort_key
from tests.conftest import SAMPLES, import_into, run_cli, stored_day, stored_figures
from tests.fake_umami import FakeUmami

LOGS = SAMPLES / "access_logs"
EXPECTED: dict[str, Any] = json.loads((LOGS / "expected.json").read_text())
HOST = EXPECTED["host"]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_access_log_samples", SAMPLES / "make_access_log_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = _generator()

#: sample folder -> extra flags (the formats that are not detected need --log-format; no vhost: --hostname)
FORMATS: dict[str, tuple[str, ...]] = {
    "combined": ("--hostname", HOST),
    "vhost_combined": (),
    "nginx_custom": ("--log-format", GEN.NGINX_CUSTOM),
    "apache_custom": ("--log-format", f'LogFormat "{GEN.APACHE_CUSTOM_FORMAT}" custom'),
    "nginx_json": (),
    "caddy": (),
    "traefik": (),
    "cloudfront": (),
    "iis": ("--hostname", HOST),
    "alb": (),
    "s3": (),
    "elb": (),
    "haproxy": ("--log-timezone", "Europe/Paris"),  # local times, as HAProxy logs them
    "ovh": (),
    "gandi": (),
    "iis_advanced": ("--log-timezone", "Europe/Paris"),
    "incapsula": (),
}


def read_all(*paths: str | Path, chunk_rows: int = 100_000, **plugin: str) -> pl.DataFrame:
    options = ReadOptions(format="access_log", chunk_rows=chunk_rows, plugin_options=tuple(plugin.items()))
    files, _ = expand_sources([str(p) for p in paths], options)
    frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
    return pl.concat(frames, how="diagonal")


def dry_run(tmp_path: Path, source: Path | str, *flags: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """``backfill validate`` with the preset: exit code, the report, the payloads."""
    out, report = tmp_path / "out.ndjson", tmp_path / "report.json"
    result = run_cli(
        "validate", source, "-m", "access-log", "--rejects", tmp_path / "rejects.ndjson",
        "--report", report, "--out", out, "-q", *flags,
    )  # fmt: skip
    assert result.code in (0, 1), result.stdout + result.stderr
    payloads = [json.loads(line)["payload"] for line in out.read_text().splitlines()]
    return result.code, json.loads(report.read_text()), payloads


def per_day_and_path(payloads: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    days = Counter(time.strftime("%Y-%m-%d", time.gmtime(p["timestamp"])) for p in payloads)
    paths = Counter(p["url"].split("?")[0] for p in payloads)
    return dict(sorted(days.items())), dict(sorted(paths.items()))


# --------------------------------------------------------------------------- every format, end to end


@pytest.mark.parametrize("folder", sorted(FORMATS))
def test_every_format_gives_the_page_views_of_people_exactly(tmp_path: Path, folder: str) -> None:
    code, report, payloads = dry_run(tmp_path, LOGS / folder, *FORMATS[folder])
    ledger = report["ledger"]
    assert ledger["balances"] is True
    assert ledger["read"] == ledger["accepted"] + ledger["rejected"] + ledger["skipped"] + ledger["in_doubt"]
    days, paths = per_day_and_path(payloads)
    assert days == EXPECTED["pageviews_by_day"]
    assert paths == EXPECTED["pageviews_by_path"]
    assert all(p["hostname"] == HOST for p in payloads)
    assert not any(p["userAgent"].startswith(("curl", "python-requests")) or "bot" in p["userAgent"] for p in payloads)
    assert "ip" not in payloads[0]  # never sent unless --geo ip
    skipped = ledger["skipped_by_filter"]
    assert skipped["static asset or download (by extension or content type)"] == EXPECTED["labels"]["person:asset"]
    assert skipped["crawler or script (Umami's bot list)"] > 0 and skipped["uptime monitor"] > 0
    # the truncated line of combined/access.log.1 is the only reject, with its text
    assert ledger["rejected"] == (1 if folder == "combined" else 0)
    assert code == (1 if folder == "combined" else 0)


def test_common_logs_have_no_user_agent_so_every_client_page_counts(tmp_path: Path) -> None:
    code, report, payloads = dry_run(tmp_path, LOGS / "common", "--hostname", HOST)
    assert code == 0
    days, paths = per_day_and_path(payloads)
    assert days == EXPECTED["common"]["pageviews_by_day"]
    assert paths == EXPECTED["common"]["pageviews_by_path"]
    assert report["ledger"]["rejected"] == 0


def test_the_unreadable_line_is_rejected_with_its_text_and_line_number(tmp_path: Path) -> None:
    dry_run(tmp_path, LOGS / "combined", "--hostname", HOST)
    (reject,) = [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert reject["field"] == "(record)"
    assert reject["values"]["_source_raw"] == GEN.TRUNCATED
    lines = (LOGS / "combined" / "access.log.1").read_text().splitlines()
    assert lines[reject["row"] - 1] == GEN.TRUNCATED


def test_import_into_fake_umami_matches_pageviews_visitors_and_visits(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(
            server.url, site, LOGS / "combined", "access-log", tmp_path, "--hostname", HOST, "--state", tmp_path / "s"
        )
        assert result.code == 1, result.stdout + result.stderr  # the one truncated line
        events = server.events(site)
    figures = stored_figures(events, [])
    assert figures.pageviews_by_day == EXPECTED["pageviews_by_day"]
    assert figures.visitors_by_day == EXPECTED["visitors_by_day"]
    assert Counter(e["url_path"] for e in figures.pageviews) == Counter(EXPECTED["pageviews_by_path"])
    visits: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for e in figures.pageviews:
        visits[stored_day(e)].add((e["session_id"], e["visit_id"]))
    assert {d: len(v) for d, v in sorted(visits.items())} == EXPECTED["visits_by_day"]
    assert any(e["url_query"] and "utm_campaign=spring" in e["url_query"] for e in figures.pageviews)
    assert any(e["referrer_domain"] == "google.com" for e in figures.pageviews)


# --------------------------------------------------------------------------- reader details


def test_rotated_files_are_read_oldest_first() -> None:
    options = ReadOptions(format="access_log")
    files, _ = expand_sources([str(LOGS / "combined")], options)
    assert [Path(f.path).name for f in files] == ["access.log.2.gz", "access.log.1", "access.log"]
    dated = ["x/access.log", "x/access.log-20240302.gz", "x/access.log-20240301.gz", "x/access.log.1"]
    assert sorted(dated, key=sort_key) == [
        "x/access.log-20240301.gz",
        "x/access.log-20240302.gz",
        "x/access.log.1",
        "x/access.log",
    ]
    cdn = ["cf/E2AB.2024-03-04-15.a1.gz", "cf/E2AB.2024-03-04-09.ff.gz", "cf/E2AB.2024-03-04-14.b2.gz"]
    assert sorted(cdn, key=sort_key) == [cdn[1], cdn[2], cdn[0]]
    assert len({log_group(p) for p in cdn}) == 1  # one log: one visit state across its files


def test_visits_do_not_depend_on_chunk_boundaries() -> None:
    whole = read_all(LOGS / "combined", hostname=HOST)
    pieces = read_all(LOGS / "combined", chunk_rows=97, hostname=HOST)
    assert whole["visit"].to_list() == pieces["visit"].to_list()
    assert whole["visit"].drop_nulls().n_unique() > 50


def test_x_forwarded_for_names_the_client_behind_a_proxy() -> None:
    frame = read_all(LOGS / "nginx_custom", log_format=GEN.NGINX_CUSTOM)
    assert "10.0.0.2" not in frame["ip"].to_list()  # the load balancer
    assert frame.filter(pl.col("ip") == "203.0.113.11").height > 0


def test_geo_ip_is_filled_only_when_asked() -> None:
    assert read_all(LOGS / "caddy")["geo_ip"].null_count() == read_all(LOGS / "caddy").height
    frame = read_all(LOGS / "caddy", send_ip="true")
    assert frame["geo_ip"].to_list() == frame["ip"].to_list()


def test_columns_of_a_combined_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(
        '203.0.113.9 - - [05/Mar/2024:14:22:10 +0100] "GET /blog/a.html?utm_source=x&q=rye%20bread HTTP/1.1" '
        '200 512 "-" "Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0"\n'
        '203.0.113.9 - - [05/Mar/2024:14:22:11 +0100] "GET /img/A.PNG HTTP/1.1" 304 0 "https://x/" "Mozilla/5.0"\n'
    )
    frame = read_all(log, hostname="WWW.Example.com", search_params="q,s")
    first, second = frame.to_dicts()
    assert str(first["time"]) == "2024-03-05 13:22:10+00:00"
    assert first["host"] == "www.example.com" and first["path"] == "/blog/a.html?utm_source=x&q=rye%20bread"
    assert first["referrer"] is None and first["kind"] == "page" and first["search"] == "rye bread"
    assert first["status"] == 200 and first["method"] == "GET"
    assert second["ext"] == "png" and second["kind"] == "asset" and second["visit"] is None
    assert first["visit"] == f"v{int(first['time'].timestamp())}"


def test_a_file_that_is_no_log_is_refused_naming_the_formats_tried(tmp_path: Path) -> None:
    text = tmp_path / "notes.log"
    text.write_text("hello\nthis is not a log\n")
    options = ReadOptions(format="access_log", plugin_options=(("hostname", HOST),))
    files, _ = expand_sources([str(text)], options)
    with pytest.raises(
        SourceError, match=r"match no access log format \(tried vhost_combined, .*combined.*--log-format"
    ):
        read_schema(files[0], options)
    result = run_cli("validate", text, "-m", "access-log", "--hostname", HOST)
    assert result.code == 2 and "notes.log" in result.stderr and "Traceback" not in result.stderr


def test_mixed_formats_in_one_file_are_refused_with_the_line(tmp_path: Path) -> None:
    combined = (LOGS / "combined" / "access.log.1").read_text().splitlines()[:20]
    json_line = (LOGS / "nginx_json" / "access.log.gz").read_bytes()
    first_json = gzip.decompress(json_line).decode().splitlines()[0]
    log = tmp_path / "access.log"
    log.write_text("\n".join([*combined[:10], first_json, *combined[10:]]) + "\n")
    result = run_cli("validate", log, "-m", "access-log", "--hostname", HOST, "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2, result.stdout + result.stderr
    assert "line 11 is in another format (JSON)" in result.stderr


def test_a_changed_w3c_header_is_refused(tmp_path: Path) -> None:
    text = (LOGS / "iis" / "u_ex240304.log").read_text().splitlines()
    log = tmp_path / "u_ex.log"
    changed = "#Fields: date time c-ip cs-method cs-uri-stem sc-status"
    log.write_text("\n".join([*text[:30], changed, *text[30:40]]) + "\n")
    options = ReadOptions(format="access_log", plugin_options=(("hostname", HOST),))
    files, _ = expand_sources([str(log)], options)
    with pytest.raises(SourceError, match="line 31: the #Fields header changes"):
        list(iter_chunks(files[0], 0, options))


def test_a_log_without_host_needs_hostname(tmp_path: Path) -> None:
    result = run_cli("validate", LOGS / "common", "-m", "access-log")
    assert result.code == 2 and "--hostname" in result.stderr


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("combined", "combined"),
        ("common", "common"),
        ("vhost_combined", "vhost_combined"),
        ("nginx_json", "nginx_json"),
        ("caddy", "caddy"),
        ("traefik", "traefik"),
        ("cloudfront", "cloudfront"),
        ("iis", "iis"),
        ("alb", "alb"),
        ("s3", "s3"),
        ("elb", "elb"),
        ("haproxy", "haproxy"),
        ("ovh", "ovh"),
        ("gandi", "gandi"),
        ("iis_advanced", "iis"),
        ("incapsula", "w3c"),
    ],
)
def test_formats_are_detected_from_the_first_lines(folder: str, name: str) -> None:
    from backfill.sources.access_log.lines import head_lines

    path = next(p for p in sorted((LOGS / folder).iterdir()) if p.name != "log_format.txt")
    compression = "gzip" if path.suffix == ".gz" else None
    assert detection.detect(str(path), head_lines(str(path), compression), None).name == name


def test_custom_formats_from_the_server_config() -> None:
    nginx = custom_format(GEN.NGINX_CUSTOM)  # the whole `log_format main '...';` line
    assert {"host", "ip", "time", "request", "status", "referrer", "user_agent", "xff"} <= set(nginx.parts())
    apache = custom_format(GEN.APACHE_CUSTOM_FORMAT.replace('\\"', '"'))
    assert apache.regex.match(GEN.apache_custom(GEN.simulate(GEN.random.Random(1))[0]))
    with pytest.raises(ConfigError, match="custom time format"):
        custom_format("%h %{%Y-%m-%d}t %r")
    with pytest.raises(ConfigError, match="no time or no request"):
        custom_format("$remote_addr $status")


def test_dry_run_throughput_of_a_gzipped_combined_log(tmp_path: Path) -> None:
    """Prints lines/s (not asserted: the machine is shared); checks only that the ledger adds up."""
    lines = 60_000
    log = tmp_path / "bench.log.gz"
    GEN.write_bench(log, lines)
    report = tmp_path / "report.json"
    started = time.perf_counter()
    result = run_cli(
        "validate", log, "-m", "access-log", "--hostname", HOST, "-q",
        "--rejects", tmp_path / "r.ndjson", "--report", report,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert result.code == 0, result.stdout + result.stderr
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["read"] == lines and ledger["balances"] is True
    print(f"\naccess_log dry run: {lines:,} gzipped combined lines in {elapsed:.2f} s = {lines / elapsed:,.0f} lines/s")


def test_an_empty_log_just_rotated_is_listed_not_refused(tmp_path: Path) -> None:
    (tmp_path / "access.log").write_text("")
    (tmp_path / "access.log.1").write_text((LOGS / "vhost_combined" / "other_vhosts_access.log").read_text())
    code, report, payloads = dry_run(tmp_path, tmp_path / "access.log*", "--hostname", HOST)
    assert code == 0 and payloads
    assert any("empty file" in note for note in report["skipped_files"])


def test_several_sites_in_one_run_keep_their_hostnames(tmp_path: Path) -> None:
    lines = (LOGS / "vhost_combined" / "other_vhosts_access.log").read_text().splitlines()[:300]
    (tmp_path / "shop.log").write_text("\n".join(line.replace(HOST, "shop.example.org") for line in lines) + "\n")
    (tmp_path / "blog.log").write_text("\n".join(lines) + "\n")
    _, _, payloads = dry_run(tmp_path, tmp_path / "*.log")
    hosts = Counter(p["hostname"] for p in payloads)
    assert set(hosts) == {"shop.example.org", HOST} and hosts["shop.example.org"] == hosts[HOST]


def test_geo_ip_sends_the_client_ip(tmp_path: Path) -> None:
    _, _, payloads = dry_run(tmp_path, LOGS / "caddy", "--geo", "ip")
    assert all(p["ip"].startswith(("203.0.113.", "2001:db8::")) for p in payloads)


def test_older_caddy_logs_name_the_client_remote_addr_with_a_port(tmp_path: Path) -> None:
    line = {
        "level": "info",
        "ts": 1709641330.52,
        "logger": "http.log.access",
        "msg": "handled request",
        "request": {"remote_addr": "203.0.113.5:41342", "method": "GET", "host": "example.com", "uri": "/a?b=1"},
        "status": 200,
        "size": 10,
    }
    log = tmp_path / "caddy.log"
    log.write_text(json.dumps(line) + "\n")
    (row,) = read_all(log).to_dicts()
    assert (row["ip"], row["host"], row["path"], row["kind"]) == ("203.0.113.5", "example.com", "/a?b=1", "page")
    assert str(row["time"]) == "2024-03-05 12:22:10.520000+00:00"


def test_a_broken_json_line_is_a_reject_and_the_rest_is_read(tmp_path: Path) -> None:
    lines = gzip.decompress((LOGS / "caddy" / "access.log.gz").read_bytes()).decode().splitlines()[:40]
    broken = lines[5][: len(lines[5]) // 2]
    log = tmp_path / "caddy.log"
    log.write_text("\n".join([*lines[:5], broken, "[1, 2]", *lines[6:]]) + "\n")
    frame = read_all(log)
    assert frame.height == 41
    bad = frame.filter(pl.col("_source_error").is_not_null())
    assert bad["_row"].to_list() == [6, 7] and bad["_source_raw"].to_list() == [broken, "[1, 2]"]
    assert frame.filter(pl.col("_source_error").is_null())["time"].null_count() == 0


def test_a_resumed_import_refuses_other_reader_options(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        state = ("--state", tmp_path / "s")
        first = import_into(server.url, site, LOGS / "alb", "access-log", tmp_path, *state)
        assert first.code == 0, first.stdout + first.stderr
        again = import_into(server.url, site, LOGS / "alb", "access-log", tmp_path, *state)
        assert again.code == 0, again.stdout + again.stderr
        other = import_into(server.url, site, LOGS / "alb", "access-log", tmp_path, *state, "--hostname", "x.example")
        assert other.code == 2 and "different import" in other.stderr and "reader" in other.stderr
        assert len(stored_figures(server.events(site), []).pageviews) == EXPECTED["pageviews"]


def test_reading_the_same_log_twice_with_one_options_object_gives_the_same_visits() -> None:
    options = ReadOptions(format="access_log", plugin_options=(("hostname", HOST),))
    files, _ = expand_sources([str(LOGS / "combined")], options)

    def visits() -> list[str | None]:
        frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
        return pl.concat(frames, how="diagonal")["visit"].to_list()

    assert visits() == visits()


def test_combined_variants_a_forwarded_list_as_client_and_iso_times(tmp_path: Path) -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0"
    log = tmp_path / "access.log"
    log.write_text(
        f'203.0.113.9, 10.0.0.1 - - [05/Mar/2024:14:22:10 +0100] "GET /a HTTP/1.1" 200 512 "-" "{ua}"\n'
        f'203.0.113.10 - - [2024-03-05T14:22:11+01:00] "GET /b HTTP/1.1" 200 512 "-" "{ua}"\n'
    )
    rows = read_all(log, hostname=HOST).select("time", "ip", "path").rows()
    assert [(str(t), ip, p) for t, ip, p in rows] == [
        ("2024-03-05 13:22:10+00:00", "203.0.113.9", "/a"),
        ("2024-03-05 13:22:11+00:00", "203.0.113.10", "/b"),
    ]
