"""The Plausible events_v2 reader (``--format plausible_events``) and its preset
``mappings/plausible-events.yaml``.

Reader tests build small exports by hand; the CLI tests run ``backfill
validate`` and ``backfill import`` (against the fake Umami) on the shipped
samples and compare with ``sample_data/plausible_events/expected.json``, which
``sample_data/make_plausible_event_samples.py`` computes from its own events,
not through the reader.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backfill.sources import ReadOptions, expand_sources, iter_chunks, read_schema
from backfill.sources.plausible_events import FLAT_SCHEMA, parse_array_literals, unescape
from tests.conftest import SAMPLES, import_into, run_cli, stored_figures
from tests.fake_umami import FakeUmami

PE = SAMPLES / "plausible_events"
NDJSON = PE / "events_v2.ndjson.gz"
CSV = PE / "events_v2.csv"
EXPECTED: dict[str, Any] = json.loads((PE / "expected.json").read_text())
ENGAGEMENT_FILTER = "Plausible engagement event (scroll depth / time on page)"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_plausible_event_samples", SAMPLES / "make_plausible_event_samples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def read_all(*paths: str | Path, chunk_rows: int = 100_000) -> pl.DataFrame:
    options = ReadOptions(format="plausible_events", chunk_rows=chunk_rows)
    files, _ = expand_sources([str(p) for p in paths], options)
    frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
    return pl.concat(frames)


EVENT: dict[str, Any] = {
    "timestamp": "2024-03-01 08:13:27",
    "name": "pageview",
    "user_id": "123",
    "session_id": "456",
    "hostname": "example.com",
    "pathname": "/",
    "referrer": "",
    "meta.key": [],
    "meta.value": [],
    "country_code": "DE",
    "subdivision1_code": "DE-BE",
    "city_geoname_id": 2950159,
    "screen_size": "Desktop",
    "revenue_reporting_amount": None,
    "revenue_reporting_currency": "\x00\x00\x00",
}


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- the reader


@pytest.mark.parametrize(
    ("literal", "values"),
    [
        ("[]", []),
        ("['a','b']", ["a", "b"]),
        ("['O\\'Brien\\'s blend']", ["O'Brien's blend"]),
        (
            "['back\\\\slash','new\\nline','tab\\t','comma, inside']",
            ["back\\slash", "new\nline", "tab\t", "comma, inside"],
        ),
        ("['', 'x']", ["", "x"]),
        (None, None),
    ],
)
def test_clickhouse_array_literals(literal: str | None, values: list[str] | None) -> None:
    assert parse_array_literals([literal]) == [values]


def test_unescape() -> None:
    assert unescape("b\\'c") == "b'c"
    assert unescape("a\\\\'") == "a\\'"
    assert unescape("\\0\\x") == "\x00x"


def test_unknowns_uint64_forms_and_derived_columns(tmp_path: Path) -> None:
    rows = [
        {
            **EVENT,
            "user_id": 18446744073709551615,
            "session_id": 7,
            "country_code": "\x00\x00",
            "subdivision1_code": "",
        },
        {**EVENT, "user_id": "18446744073709551615", "country_code": "ZZ", "city_geoname_id": 0},
        {
            **EVENT,
            "name": "Purchase",
            "country_code": "fr",
            "pathname": "/shop#top",
            "referrer": "news.ycombinator.com/item",
            "utm_source": "news letter",
            "utm_campaign": "a&b",
            "meta.key": ["plan", "who"],
            "meta.value": ["pro", 'O\'Brien "x"'],
            "revenue_reporting_amount": "12.50",
            "revenue_reporting_currency": "eur",
        },
        {**EVENT, "country_code": "", "referrer": "https://duckduckgo.com/", "revenue_reporting_amount": 0},
    ]
    frame = read_all(write_json(tmp_path / "e.ndjson.gz", rows))
    assert frame.schema == pl.Schema({**FLAT_SCHEMA, "_file": pl.UInt32(), "_row": pl.UInt64()})
    assert frame["visitor_id"].to_list() == ["18446744073709551615", "18446744073709551615", "123", "123"]
    assert frame["session_id"].to_list()[:2] == ["7", "456"]
    assert frame["country_code"].to_list() == [None, None, "FR", None]
    assert frame["region_code"].to_list() == [None, "DE-BE", "DE-BE", "DE-BE"]
    assert frame["city_geoname_id"].to_list() == [2950159, None, 2950159, 2950159]
    assert frame["city"].to_list() == ["Berlin", None, "Berlin", "Berlin"]  # GeoNames id -> English name
    assert frame["url"].to_list() == ["/", "/", "/shop?utm_source=news%20letter&utm_campaign=a%26b#top", "/"]
    assert frame["referrer"].to_list() == [None, None, "https://news.ycombinator.com/item", "https://duckduckgo.com/"]
    assert frame["revenue"].to_list() == [None, None, 12.5, None]
    assert frame["currency"].to_list() == [None, None, "EUR", None]
    assert frame["device"].to_list() == ["Desktop"] * 4
    meta = frame["meta_json"].to_list()
    assert meta[0] is None and json.loads(meta[2]) == {"plan": "pro", "who": 'O\'Brien "x"'}


def test_csv_container_with_nulls_nul_bytes_and_escaped_arrays(tmp_path: Path) -> None:
    header = ",".join(
        f'"{c}"'
        for c in (
            "timestamp",
            "name",
            "user_id",
            "session_id",
            "pathname",
            "meta.key",
            "meta.value",
            "country_code",
            "revenue_reporting_amount",
            "revenue_reporting_currency",
        )
    )
    lines = [
        header,
        '"2024-03-01 08:13:27","pageview",18446744073709551615,1,"/","[]","[]","\x00\x00",\\N,"\x00\x00\x00"',
        '"2024-03-01 08:14:00","Signup",5,2,"/a","[\'plan\',\'note\']",'
        '"[\'O\\\'Brien\',\'say ""hi""\']","DE",\\N,"\x00\x00\x00"',
    ]
    path = tmp_path / "e.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    frame = read_all(path)
    assert frame["visitor_id"].to_list() == ["18446744073709551615", "5"]
    assert frame["country_code"].to_list() == [None, "DE"]
    assert frame["revenue"].to_list() == [None, None]
    assert frame["currency"].to_list() == [None, None]
    assert frame["meta_json"][0] is None
    assert json.loads(frame["meta_json"][1]) == {"plan": "O'Brien", "note": 'say "hi"'}
    assert frame["hostname"].to_list() == [None, None]  # a missing column reads as null


def test_both_containers_give_identical_frames() -> None:
    from_json = read_all(NDJSON, chunk_rows=97)
    from_csv = read_all(CSV, chunk_rows=130)
    assert from_json.height == EXPECTED["events_total"]
    assert_frame_equal(from_json, from_csv)
    assert from_json["visitor_id"].str.len_chars().max() == 20  # UInt64 above 2**63 kept exactly
    assert from_json.filter(pl.col("meta_json").str.contains("O'Brien's blend", literal=True)).height > 0


def test_schema_is_fixed_and_a_foreign_file_fails(tmp_path: Path) -> None:
    options = ReadOptions(format="plausible_events")
    files, _ = expand_sources([str(CSV), str(NDJSON)], options)
    for source in files:
        assert read_schema(source, options) == FLAT_SCHEMA
    from backfill.errors import SourceError

    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="not an events_v2 export"):
        read_all(other)


def test_shipped_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    result = GEN.write(tmp_path)
    assert result == EXPECTED
    for name in ("events_v2.csv", "expected.json"):
        assert (tmp_path / name).read_bytes() == (PE / name).read_bytes(), name
    assert gzip.decompress((tmp_path / "events_v2.ndjson.gz").read_bytes()) == gzip.decompress(NDJSON.read_bytes())


# --------------------------------------------------------------------------- the preset through the CLI


def test_validate_samples_with_the_preset(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = run_cli(
        "validate", NDJSON, CSV, "-m", "plausible-events", "--report", report, "--rejects", tmp_path / "r.ndjson"
    )
    assert result.code == 0, result.stdout + result.stderr
    assert ENGAGEMENT_FILTER in result.stdout
    summary = json.loads(report.read_text())
    ledger = summary["ledger"]
    assert ledger["balances"] is True
    assert ledger["read"] == 2 * EXPECTED["events_total"]
    assert ledger["read"] == ledger["accepted"] + ledger["rejected"] + ledger["skipped"] + ledger["in_doubt"]
    assert ledger["rejected"] == 0
    assert ledger["skipped_by_filter"] == {ENGAGEMENT_FILTER: 2 * EXPECTED["skipped_engagement"]}
    countries = {k: v for k, v in summary["stats"]["top_countries"].items() if k != "(unknown)"}
    assert countries == {k: 2 * v for k, v in EXPECTED["events_by_country"].items()}


def test_import_into_fake_umami(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, NDJSON, "plausible-events", tmp_path, "--state", tmp_path / "state")
        assert result.code == 0, result.stdout + result.stderr
        events = server.events(site)
        revenue = server.revenue(site)
        event_data = server.event_data(site)

    figures = stored_figures(events, revenue)
    pageviews = figures.pageviews
    assert figures.pageviews_by_day == EXPECTED["pageviews_by_day"]
    assert figures.visitors_by_day == EXPECTED["visitors_by_day"]
    assert figures.custom_events_by_name == EXPECTED["goals_by_name"]
    for r in revenue:
        assert r["event_name"] == "Purchase"
        assert r["currency"] == EXPECTED["revenue_currency"]
    assert figures.revenue_by_day == EXPECTED["revenue_by_day"]
    assert not any(e["event_name"] == "engagement" for e in events)
    assert any(e["url_query"] and "utm_campaign=" in e["url_query"] for e in pageviews)
    metas = [d for d in event_data if d.get("data_key") == "meta"]
    assert metas and any("O'Brien's blend" in str(d.get("string_value")) for d in metas)


#: (operating_system, operating_system_version) as Plausible stores them (device-detector's
#: names, version cut to major.minor) -> the OS Umami stored for that visitor's browser.
OS_VERSIONS = [
    ("Windows", "7", "Windows 7"),
    ("Windows", "10", "Windows 10"),
    ("Windows", "11", "Windows 10"),  # a Windows 11 browser still says "Windows NT 10.0"
    ("Windows", "8.1", "Windows 8.1"),
    ("Windows", "XP", "Windows XP"),
    ("Windows", "Vista", "Windows Vista"),
    ("Windows", "Server 2003", "Windows Server 2003"),
    ("Windows", "", "Windows 10"),
    ("Windows", "NT", "Windows NT"),  # no Umami name: kept visible, not counted as 10
    ("Windows Phone", "10.0", "Windows Mobile"),
    ("Mac", "10.15", "Mac OS"),
    ("GNU/Linux", "", "Linux"),
    ("Ubuntu", "22.04", "Linux"),
    ("iOS", "17.1", "iOS"),
    ("iPadOS", "17.3", "iOS"),
    ("Android", "14", "Android OS"),
    ("Chrome OS", "118.0", "Chrome OS"),
]


def test_os_versions_become_the_names_umami_stores(tmp_path: Path) -> None:
    rows = [
        {**EVENT, "user_id": str(1000 + i), "operating_system": name, "operating_system_version": version}
        for i, (name, version, _) in enumerate(OS_VERSIONS)
    ]
    rows.append(
        {**EVENT, "user_id": "2000", "operating_system": "iOS", "operating_system_version": "17.1", "browser": "Chrome"}
    )
    out = tmp_path / "payloads.ndjson"
    source = write_json(tmp_path / "events_v2.ndjson.gz", rows)
    result = run_cli("validate", source, "-m", "plausible-events", "--out", out)
    assert result.code == 0, result.stdout + result.stderr
    sent = {p["payload"]["id"]: p["payload"] for p in map(json.loads, out.read_text().splitlines())}
    assert [sent[str(1000 + i)].get("os") for i in range(len(OS_VERSIONS))] == [umami for *_, umami in OS_VERSIONS]
    assert (sent["2000"]["os"], sent["2000"]["browser"]) == ("iOS", "crios")  # the browser still sees iOS
