"""Access logs as servers and CDNs really write them (``tests/data/access_logs/``).

Each fixture reproduces one real shape, written here from the formats'
documentation and the public test logs of log analyzers: CloudFront user
agents encoded twice, S3 lines of every age, IIS quoted fields with spaces
(with a BOM, CRLF and a repeated header), IIS Advanced Logging and Incapsula,
a W3C log without a method, nginx JSON with the keys Matomo recommends (and
nginx's ``\\xHH`` escapes), Classic ELB, HAProxy behind syslog, OVH, Gandi,
Big5 bytes. ``expected.json`` holds, for every line, the fields a person reads
off the line itself: time (UTC), host, ip, method, path with query, status,
referrer, user agent, and the request's kind.
"""

from __future__ import annotations

import bz2
import json
import lzma
import shlex
from pathlib import Path
from typing import Any

import pytest

from backfill.errors import ConfigError, SourceError
from backfill.inspect import inspect_source
from backfill.sources import ReadOptions, expand_sources, iter_chunks, read_schema
from tests.conftest import ROOT, run_cli

DATA = ROOT / "tests" / "data" / "access_logs"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
COLUMNS: list[str] = EXPECTED.pop("columns")
SITE = "www.rye-demo.example"


def read_lines(path: Path | str, encoding: str = "utf-8", **plugin: str) -> list[list[Any]]:
    """Every line of a log as the expected.json columns, through the reader as a run uses it."""
    options = ReadOptions(format="access_log", encoding=encoding, plugin_options=tuple(plugin.items()))
    files, _ = expand_sources([str(path)], options)
    read_schema(files[0], options)
    rows = []
    for chunk in iter_chunks(files[0], 0, options):
        for row in chunk.iter_rows(named=True):
            row = {**row, "line": row["_row"], "time": row["time"].isoformat() if row["time"] else None}
            rows.append([row[c] for c in COLUMNS])
    return rows


def dry_run(tmp_path: Path, source: Path | str, *flags: str) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = run_cli(
        "validate", source, "-m", "access-log", "--rejects", tmp_path / "rejects.ndjson", "--report", report, *flags
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.code, result.stdout + result.stderr, data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_field_of_every_line_is_read_as_the_server_wrote_it(name: str) -> None:
    case = EXPECTED[name]
    assert read_lines(DATA / name, **case["options"]) == case["lines"]


def test_bzip2_and_xz_logs_read_like_the_plain_file(tmp_path: Path) -> None:
    plain = (DATA / "ovh.log").read_bytes()
    (tmp_path / "ovh.log.2.bz2").write_bytes(bz2.compress(plain))
    (tmp_path / "ovh.log.1.xz").write_bytes(lzma.compress(plain))
    (tmp_path / "ovh.log.3").write_bytes(bz2.compress(plain))  # rotated, its .bz2 lost on the way
    for name in ("ovh.log.2.bz2", "ovh.log.1.xz", "ovh.log.3"):
        assert read_lines(tmp_path / name) == EXPECTED["ovh.log"]["lines"], name
    options = ReadOptions(format="access_log")
    order = [Path(f.path).name for f in expand_sources([str(tmp_path)], options)[0]]
    assert order == ["ovh.log.3", "ovh.log.2.bz2", "ovh.log.1.xz"]  # one log, oldest first
    (tmp_path / "cut.log.bz2").write_bytes(bz2.compress(plain * 50)[:-40])
    with pytest.raises(SourceError, match="truncated or corrupt bzip2"):
        read_lines(tmp_path / "cut.log.bz2")


def test_encoding_is_honoured_and_undecodable_bytes_stay_percent_encoded(tmp_path: Path) -> None:
    big5 = read_lines(DATA / "combined_big5.log", encoding="big5", hostname=SITE)
    assert [row[5] for row in big5] == ["/文章/食包", "/search?q=雞包"]
    assert big5[1][7] == "http://www.rye-demo.example/文章/"
    as_utf8 = EXPECTED["combined_big5.log"]["lines"]  # no --encoding: the bytes as %XX, never U+FFFD
    assert as_utf8[0][5] == "/%A4%E5%B3%B9/%AD%B9%A5]" and "\ufffd" not in json.dumps(as_utf8)
    code, output, report = dry_run(tmp_path, DATA / "combined_big5.log", "--hostname", SITE, "--encoding", "big5")
    assert code == 0, output
    assert report["stats"]["top_paths"] == {"/文章/食包": 1, "/search": 1}


def test_the_nginx_json_format_matomo_recommends_is_read_with_or_without_its_log_format() -> None:
    spec = (DATA / "nginx_matomo_log_format.conf").read_text()
    given = read_lines(DATA / "nginx_matomo_json.log", log_format=spec)
    assert given == EXPECTED["nginx_matomo_json.log"]["lines"]


@pytest.mark.parametrize(
    ("name", "server"),
    [("icecast_access.log", "Icecast"), ("shoutcast_w3c.log", "SHOUTcast"), ("cloudfront_rtmp.log", "CloudFront RTMP")],
)
def test_streaming_server_logs_are_refused_by_name(name: str, server: str) -> None:
    with pytest.raises(SourceError, match=f"{server}.*listeners of a stream"):
        read_lines(DATA / name, hostname=SITE)


def test_an_icecast_like_log_can_still_be_read_as_combined_when_named() -> None:
    rows = read_lines(DATA / "icecast_access.log", hostname=SITE, log_format="combined")
    assert [row[5] for row in rows] == ["/live.mp3", "/live.ogg", "/admin/stats.xml"]


def test_log_format_names_include_matomos_and_an_unknown_name_lists_them() -> None:
    assert read_lines(DATA / "elb_classic.log", log_format="elb") == EXPECTED["elb_classic.log"]["lines"]
    assert read_lines(DATA / "ovh.log", log_format="ovh") == EXPECTED["ovh.log"]["lines"]
    amazon = read_lines(DATA / "cloudfront_2021.log", log_format="amazon_cloudfront")
    assert amazon == EXPECTED["cloudfront_2021.log"]["lines"]
    with pytest.raises(ConfigError, match=r"not a format name; the names are: .*haproxy.*ncsa_extended \(= combined\)"):
        read_lines(DATA / "ovh.log", log_format="nginx_default")


def test_w3c_fields_under_other_names_are_mapped_and_missing_ones_named(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(
        "#Fields: date time x-client x-url sc-status cs(User-Agent)\n"
        "2020-05-01 10:00:00 198.51.100.9 /a?b=1 200 Mozilla/5.0+(X11)\n"
    )
    with pytest.raises(SourceError) as refused:
        read_lines(log, hostname=SITE)
    message = str(refused.value)
    assert "the requested path (cs-uri-stem or cs-uri)" in message and "--w3c-field" in message
    assert "date (" not in message and "time (" not in message  # those are there
    rows = read_lines(log, hostname=SITE, w3c_fields="x-client=c-ip,x-url=cs-uri-stem")
    assert rows == [
        [2, "2020-05-01T10:00:00+00:00", SITE, "198.51.100.9", "GET", "/a?b=1", 200, None, "Mozilla/5.0 (X11)", "page"]
    ]


def test_a_log_with_times_without_offset_says_how_they_were_read(tmp_path: Path) -> None:
    code, output, report = dry_run(tmp_path, DATA / "haproxy_no_captures.log", "--hostname", SITE)
    assert code == 0, output
    assert any("no UTC offset" in note and "--log-timezone" in note for note in report["notes"])
    assert "--log-timezone Europe/Paris" in output


def test_a_filter_that_skips_requests_looking_like_people_says_so_with_examples(tmp_path: Path) -> None:
    browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
    lines = [
        f'198.51.100.1 - - [05/Mar/2024:10:00:00 +0000] "GET /api/docs HTTP/1.1" 200 900 '
        f'"https://www.google.com/" "{browser}"',
        f'198.51.100.2 - - [05/Mar/2024:10:01:00 +0000] "GET /api/docs?utm_source=newsletter HTTP/1.1" 200 900 '
        f'"-" "{browser}"',
        f'198.51.100.1 - - [05/Mar/2024:10:02:00 +0000] "GET /api/v1/items HTTP/1.1" 200 90 '
        f'"https://{SITE}/shop" "{browser}"',
        '198.51.100.3 - - [05/Mar/2024:10:03:00 +0000] "GET /api/docs HTTP/1.1" 200 90 "https://x.example/" "curl/8.4"',
        f'198.51.100.1 - - [05/Mar/2024:10:04:00 +0000] "GET /shop HTTP/1.1" 200 900 '
        f'"https://www.google.com/" "{browser}"',
    ]
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n")
    code, output, report = dry_run(tmp_path, log, "--hostname", SITE)
    assert code == 0, output
    flagged = report["ledger"]["skipped_flagged"]
    assert flagged["by_filter"] == {"API request": 2}  # not the page's own API call, not curl
    assert flagged["examples"]["API request"] == [
        "/api/docs (from google.com)",
        "/api/docs?utm_source=newsletter (utm_source=newsletter)",
    ]
    assert "2 of them look like people" in output and "/api/docs (from google.com)" in output
    assert report["ledger"]["skipped_by_filter"]["API request"] == 3 and report["ledger"]["accepted"] == 1


def test_tracker_hits_are_skipped_by_their_own_filter(tmp_path: Path) -> None:
    code, output, report = dry_run(tmp_path, DATA / "vhost_combined_ipv6.log")
    assert code == 0, output
    assert report["ledger"]["skipped_by_filter"] == {"Matomo/Piwik tracker hit (matomo.php, piwik.php)": 1}
    assert report["ledger"]["accepted"] == 2


# --------------------------------------------------------------------------- inspect


def test_inspect_names_the_format_found_and_the_flags_a_run_needs(tmp_path: Path) -> None:
    text, _ = inspect_source(str(DATA / "haproxy_no_captures.log"), None, None, None, 100)
    assert "format: HAProxy HTTP log" in text and "--hostname is needed" in text
    command = next(line for line in text.splitlines() if line.startswith("next: "))
    assert shlex.split(command.removeprefix("next: "))[-2:] == ["--hostname", "www.example.com"]


def test_inspect_of_a_folder_prints_a_command_that_pastes_whole(tmp_path: Path) -> None:
    for name in ("blog.log", "shop.log", "www.log", "zz.log"):
        (tmp_path / name).write_bytes((DATA / "ovh.log").read_bytes())
    (tmp_path / "error.log").write_text("2024/03/05 10:00:00 [error] 123#0: *1 open() failed\n")
    text, _ = inspect_source(str(tmp_path), None, None, None, 100)
    command = shlex.split(next(line for line in text.splitlines() if line.startswith("next: ")).removeprefix("next: "))
    assert command[:2] == ["backfill", "validate"] and "..." not in command
    assert sorted(Path(arg).name for arg in command[2:6]) == ["blog.log", "shop.log", "www.log", "zz.log"]


def test_inspect_of_a_log_it_cannot_read_says_why_and_suggests_log_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text('1.2.3.4 - - [February - 10, 2012:16:42:07] "GET / HTTP/1.0" 301 368\n' * 3)
    text, mapping = inspect_source(str(log), None, None, None, 100)
    assert "this is a web server access log" not in text and mapping == ""
    assert "cannot be read as nginx / Apache common" in text and "--log-format" in text
    result = run_cli("validate", log, "-m", "access-log", "--hostname", SITE)
    assert result.code == 2 and "cannot be read" in result.stderr


def test_flagged_skips_survive_the_report_a_resume_reads_and_add_up_across_shards() -> None:
    from backfill.ledger import Ledger

    ledger = Ledger(read=10, flag_label="look like people")
    ledger.skipped["API request"] = 3
    ledger.flag("API request", 2, ["/api/docs (from google.com)", "/api/x (utm_source=a)"])
    again = Ledger.from_dict(json.loads(json.dumps(ledger.to_dict())))
    assert (again.flagged, again.flagged_examples, again.flag_label) == (
        ledger.flagged,
        ledger.flagged_examples,
        ledger.flag_label,
    )
    total = Ledger()
    total.merge(again)
    total.merge(again)
    assert total.flagged["API request"] == 4 and total.flag_label == "look like people"
    assert total.flagged_examples["API request"] == ["/api/docs (from google.com)", "/api/x (utm_source=a)"]
