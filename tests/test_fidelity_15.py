"""Fidelity and nothing silent: what a real Umami and unseen files showed, through the real CLI.

Each test runs ``backfill validate`` and/or ``backfill import`` (against the fake
Umami of ``tests/fake_umami.py``) on small files made here, and checks what was
stored, rejected, or said in the summary and ``--report``.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import ROOT, SAMPLES, import_into, run_cli
from tests.fake_umami import FakeUmami

pytestmark = pytest.mark.timeout(120)

MAPPING = """version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [vid]}
fields:
  url: url
  title: title
"""
HEADER = "ts,vid,url,title\n"


def csv_rows(n: int, url: str = "/p{i}", title: str = "T{i}") -> str:
    return "".join(
        f"2024-03-01T08:{i % 60:02d}:00Z,v{i},{url.format(i=i)},{title.format(i=i)}\n" for i in range(1, n + 1)
    )


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def mapping_file(tmp_path: Path, text: str = MAPPING) -> Path:
    return write(tmp_path / "mapping.yaml", text)


def validate(tmp_path: Path, source: Path | str, mapping: Path | str, *extra: str) -> tuple[Any, dict[str, Any]]:
    """``backfill validate`` with a report, rejects and payloads in ``tmp_path``."""
    report = tmp_path / "validate-report.json"
    report.unlink(missing_ok=True)
    result = run_cli(
        "validate",
        source,
        "-m",
        mapping,
        "--rejects",
        tmp_path / "validate-rejects.ndjson",
        "--report",
        report,
        "--out",
        tmp_path / "payloads.ndjson",
        *extra,
    )
    return result, (json.loads(report.read_text()) if report.exists() else {})


def payloads(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "payloads.ndjson").read_text().splitlines()
    return [json.loads(line)["payload"] for line in lines if line]


def rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def counts(report: dict[str, Any]) -> tuple[int, int, int, int]:
    led = report["ledger"]
    return led["read"], led["accepted"], led["rejected"], led["skipped"]


# --------------------------------------------------------------------------- hostname


def test_hostname_is_the_urls_host_with_its_www(tmp_path: Path) -> None:
    """Unmapped hostname + absolute url: the url's host goes as hostname, www. kept, so
    history lands under the same hostname as the live tracker's traffic."""
    text = HEADER + "2024-03-01T08:00:00Z,v1,https://WWW.Example.com:8443/a?utm_source=x,A\n"
    text += "2024-03-01T08:01:00Z,v2,/relative,B\n"
    text += "2024-03-01T08:02:00Z,v3,https://www.b\u00fccher.de/idn,C\n"
    source = write(tmp_path / "events.csv", text)
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, mapping_file(tmp_path), tmp_path, "--state", tmp_path / "s")
        assert result.code == 0, result.stdout + result.stderr
        stored = {e["url_path"]: e["hostname"] for e in server.events(site)}
    assert stored == {"/a": "www.example.com", "/relative": "localhost", "/idn": "www.xn--bcher-kva.de"}


def test_a_mapping_takes_url_parts_explicitly(tmp_path: Path) -> None:
    mapping = mapping_file(
        tmp_path,
        """version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [vid]}
fields:
  hostname: {column: url, part: host}
  url: {column: url, part: path}
  data.query: {column: url, part: query}
""",
    )
    source = write(tmp_path / "e.csv", HEADER + "2024-03-01T08:00:00Z,v1,https://shop.example/a/b?x=1#top,A\n")
    result, _ = validate(tmp_path, source, mapping)
    assert result.code == 0, result.stderr
    (payload,) = payloads(tmp_path)
    assert (payload["hostname"], payload["url"], payload["data"]) == ("shop.example", "/a/b#top", {"query": "x=1"})
    bad = mapping_file(tmp_path, MAPPING.replace("url: url", "url: {column: url, part: domain}"))
    result, _ = validate(tmp_path, source, bad)
    assert result.code == 2 and "part must be one of host, path, query" in result.stderr


def test_an_over_long_url_host_is_rejected_before_umami_sees_it(tmp_path: Path) -> None:
    """Umami would store the session, then refuse the event (hostname is varchar(100))."""
    long_host = "a" * 60 + "." + "b" * 60 + ".example"
    text = HEADER + csv_rows(3) + f"2024-03-01T09:00:00Z,v9,https://{long_host}/x,X\n"
    source = write(tmp_path / "events.csv", text)
    mapping = mapping_file(tmp_path)
    result, report = validate(tmp_path, source, mapping)
    assert counts(report) == (4, 3, 1, 0)
    (reject,) = rejects(tmp_path / "validate-rejects.ndjson")
    assert (reject["row"], reject["field"]) == (4, "url")
    assert "host is longer than 100 characters" in reject["reason"] and "map `hostname:`" in reject["reason"]
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, mapping, tmp_path, "--state", tmp_path / "s")
        assert result.code == 1, result.stdout + result.stderr
        assert len(server.events(site)) == 3
        assert len(server.sessions(site)) == 3  # no half-stored row for the refused one
    assert counts(json.loads((tmp_path / "report.json").read_text())) == (4, 3, 1, 0)


# --------------------------------------------------------------------------- dry run == import


def test_validate_predicts_import_for_huge_titles_and_urls(tmp_path: Path) -> None:
    """A 5 MiB title is cut to Umami's 500 (and counted); a row whose element cannot
    fit a request body is rejected by validation, so both commands count the same."""
    huge_title = "T" * (5 << 20)
    huge_url = "/" + "u" * (2 << 20)
    text = HEADER + csv_rows(4) + f"2024-03-01T09:00:00Z,v8,/big-title,{huge_title}\n"
    text += f"2024-03-01T09:01:00Z,v9,{huge_url},small\n"
    source = write(tmp_path / "events.csv", text)
    mapping = mapping_file(tmp_path)
    result, report = validate(tmp_path, source, mapping)
    assert counts(report) == (6, 5, 1, 0), result.stdout
    cut_note = "1 titles longer than 500 characters were cut to 500"
    assert any(cut_note in n for n in report["notes"]) and cut_note in result.stdout
    (reject,) = rejects(tmp_path / "validate-rejects.ndjson")
    assert (reject["row"], reject["field"]) == (6, "url")
    assert "larger than the request body limit of 1,048,576 bytes" in reject["reason"]
    assert max(len(p.get("title", "")) for p in payloads(tmp_path)) == 500
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, mapping, tmp_path, "--state", tmp_path / "s")
        assert result.code == 1, result.stdout + result.stderr
        titles = {e["url_path"]: e["page_title"] for e in server.events(site)}
    imported = json.loads((tmp_path / "report.json").read_text())
    assert counts(imported) == counts(report)
    assert imported["ledger"]["in_doubt"] == 0
    assert titles["/big-title"] == "T" * 500
    assert any(cut_note in n for n in imported["notes"])


# --------------------------------------------------------------------------- GA4


GA4_WEB = {
    "event_date": "20240301",
    "platform": "WEB",
    "user_pseudo_id": "111.222",
    "device": {"category": "desktop", "web_info": {"browser": "Chrome", "hostname": "www.shop.example"}},
}


def ga4_event(ts: int, name: str, params: Any, **extra: Any) -> dict[str, Any]:
    row = {**GA4_WEB, "event_timestamp": str(1709280000000000 + ts * 1_000_000), "event_name": name, **extra}
    if params is not ...:
        row["event_params"] = params
    return row


def test_ga4_page_view_without_page_location_is_rejected(tmp_path: Path) -> None:
    location = {"key": "page_location", "value": {"string_value": "https://www.shop.example/a"}}
    rows = [
        ga4_event(1, "page_view", [location]),
        ga4_event(2, "page_view", ...),  # event_params absent
        ga4_event(3, "page_view", None),  # null
        ga4_event(4, "page_view", []),  # empty
    ]
    source = tmp_path / "events_20240301.json.gz"
    with gzip.open(source, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    result, report = validate(tmp_path, source, "ga4")
    assert counts(report) == (4, 1, 3, 0), result.stdout + result.stderr
    found = rejects(tmp_path / "validate-rejects.ndjson")
    assert [(r["row"], r["field"]) for r in found] == [(2, "url"), (3, "url"), (4, "url")]
    assert all("without a url" in r["reason"] and "page_location" in r["reason"] for r in found)


def test_ga4_value_fields_that_disagree_keep_the_decimal_and_are_named_by_line(tmp_path: Path) -> None:
    location = {"key": "page_location", "value": {"string_value": "https://www.shop.example/c"}}
    cents = {"key": "value", "value": {"int_value": "3082", "double_value": 30.82}}  # the same amount in cents
    one = {"key": "value", "value": {"double_value": 12.5}}
    agreeing = {"key": "value", "value": {"string_value": "16.22", "double_value": 16.22}}
    single_float = {"key": "value", "value": {"float_value": 30.8199996948, "double_value": 30.82}}
    rows = [
        ga4_event(1, "view_item", [location, cents]),
        ga4_event(2, "view_item", [location, one]),
        ga4_event(3, "view_item", [location, agreeing]),
        ga4_event(4, "view_item", [location, single_float]),
        ga4_event(5, "view_item", [location, {"key": "value", "value": {"int_value": "7", "double_value": 9.5}}]),
        ga4_event(6, "click", [location, {"key": "outbound", "value": {"string_value": "true", "int_value": "1"}}]),
    ]
    source = tmp_path / "events_20240301.json.gz"
    with gzip.open(source, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    result, report = validate(tmp_path, source, "ga4")
    assert counts(report) == (6, 6, 0, 0), result.stdout + result.stderr
    assert [p["data"].get("value") for p in payloads(tmp_path)] == [30.82, 12.5, 16.22, 30.82, 9.5, None]
    disagree = [n for n in report["notes"] if "value fields disagree" in n]
    assert len(disagree) == 1 and "2 events" in disagree[0], report["notes"]
    assert f"{source}:1 (value: int_value 3082, double_value 30.82)" in disagree[0]
    assert f"{source}:5 (value: int_value 7, double_value 9.5)" in disagree[0]
    assert "16.22" not in disagree[0] and ":3 " not in disagree[0]  # agreeing fields are not a disagreement
    assert "cents" in disagree[0] and disagree[0] in result.stdout  # the choice is explained where it is seen
    same = [n for n in report["notes"] if "all the same value" in n]
    assert len(same) == 1 and "3 events" in same[0], report["notes"]  # outbound "true" and 1 agree
    preset = (ROOT / "mappings" / "ga4.yaml").read_text()
    assert "value fields disagree" in preset  # the rule is documented where users read it


# --------------------------------------------------------------------------- nothing silent


def test_one_bad_byte_rejects_one_record_and_imports_the_rest(tmp_path: Path) -> None:
    body = csv_rows(30).encode()
    lines = body.split(b"\n")
    lines[11] = lines[11].replace(b"/p12", b"/M\xfcnchen")
    source = write(tmp_path / "events.csv", HEADER.encode() + b"\n".join(lines))
    mapping = mapping_file(tmp_path)
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, mapping, tmp_path, "--state", tmp_path / "s")
        assert result.code == 1, result.stdout + result.stderr
        paths = {e["url_path"] for e in server.events(site)}
    assert len(paths) == 29 and "/p12" not in paths
    (reject,) = rejects(tmp_path / "rejects.ndjson")
    assert (reject["row"], reject["field"]) == (12, "(record)")
    assert "not valid UTF-8" in reject["reason"]
    assert reject["values"]["_source_raw"] == "2024-03-01T08:12:00Z,v12,/M\\xfcnchen,T12"
    # The header is not UTF-8: the file as a whole is in another encoding.
    latin = write(tmp_path / "latin.csv", "ts,vid,url,t\u00eftle\n".encode("latin-1") + body)
    result, _ = validate(tmp_path, latin, mapping)
    assert result.code == 2 and "latin.csv: line 1: 0xef is not valid utf-8" in result.stderr


def test_plausible_zip_notes_reach_the_summary_and_report(tmp_path: Path) -> None:
    sample = SAMPLES / "plausible_csv" / "example.com_20240305.zip"
    export = tmp_path / "example.com_20240305.zip"
    with zipfile.ZipFile(sample) as src, zipfile.ZipFile(export, "w") as out:
        for info in src.infolist():
            if "custom_props" in info.filename:
                continue  # a missing table
            name = info.filename
            if "devices" in name:
                name = "devices_20240231_20240304.csv"  # other layout, impossible date
            out.writestr(name, src.read(info))
        out.writestr("../x.csv", "date,visitors\n")
    result, report = validate(tmp_path, export, "plausible-csv")
    assert result.code in (0, 1), result.stderr
    expected = [
        "entry '../x.csv' ignored (unsafe path)",
        "no custom_props table",
        "20240231 in its name is not a real date",
        "mixed layouts",
        "2 date ranges",
    ]
    for fragment in expected:
        assert any(fragment in n for n in report["notes"]), (fragment, report["notes"])
        assert fragment in result.stdout


def test_truncated_avro_names_its_first_bad_record_and_what_was_read(tmp_path: Path) -> None:
    data = (SAMPLES / "ga4" / "events_20240303.avro").read_bytes()
    source = write(tmp_path / "events_20240303.avro", data[: len(data) * 2 // 3])
    result, _ = validate(tmp_path, source, "ga4")
    assert result.code == 2
    line = result.stderr.strip()
    assert line.startswith("error: ") and "events_20240303.avro: Avro file truncated" in line
    assert "of record 36" in line and "records 1-35 were read intact" in line and "onwards" not in line


def test_parquet_files_that_disagree_on_a_type_are_named_together(tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    base = {"vid": ["a"], "url": ["/a"], "title": ["A"]}
    pl.DataFrame({"ts": ["2024-03-01T08:00:00Z"], **base}).write_parquet(folder / "a.parquet")
    pl.DataFrame({"ts": ["2024-03-01T09:00:00Z"], **base}).write_parquet(folder / "b.parquet")
    pl.DataFrame({"ts": [1709283600], **base}).write_parquet(folder / "c.parquet")
    result, _ = validate(tmp_path, str(folder / "*.parquet"), mapping_file(tmp_path))
    assert result.code == 2
    err = result.stderr
    for name, dtype in (("a.parquet", "String"), ("b.parquet", "String"), ("c.parquet", "Int64")):
        assert name in err and dtype in err, err
    assert "use `format: epoch`" not in err and "convert the files to one type" in err
    # Types that only change how data is sent: a note with a fix that suits every file.
    mixed = mapping_file(tmp_path, MAPPING + "  data.n: n\n")
    shutil.rmtree(folder)
    folder.mkdir()
    pl.DataFrame({"ts": ["2024-03-01T08:00:00Z"], "n": [1], **base}).write_parquet(folder / "a.parquet")
    pl.DataFrame({"ts": ["2024-03-01T09:00:00Z"], "n": ["x"], **base}).write_parquet(folder / "b.parquet")
    result, report = validate(tmp_path, str(folder / "*.parquet"), mixed)
    assert result.code == 0, result.stderr
    (note,) = [n for n in report["notes"] if "different type" in n]
    assert "Int64 in" in note and "String in" in note and "set `type:` on data.n" in note
