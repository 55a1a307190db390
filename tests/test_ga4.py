"""The GA4 BigQuery-export reader (``--format ga4``) and its preset ``mappings/ga4.yaml``.

Reader tests build small exports by hand (the odd rows real exports contain) or
with ``sample_data/make_ga4_samples.py`` (the same events in all three
containers); the CLI tests run ``backfill validate`` and ``backfill import``
against the fake Umami on the shipped samples and compare with
``sample_data/ga4/expected.json``, which the generator computes from its own
events, not through the reader.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from backfill.sources import ReadOptions, expand_sources, iter_chunks, read_schema
from backfill.sources.ga4 import FLAT_SCHEMA, country_code, region_code
from tests.conftest import ROOT, SAMPLES, import_into, run_cli, stored_day, stored_figures
from tests.fake_umami import FakeUmami

GA4 = SAMPLES / "ga4"
SAMPLE_GLOB = str(GA4 / "events_*")
EXPECTED: dict[str, Any] = json.loads((GA4 / "expected.json").read_text())
BOOKKEEPING_FILTER = "GA bookkeeping event (session_start, first_visit, user_engagement, scroll)"
APP_FILTER = "app-stream event (no page_location)"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_ga4_samples", SAMPLES / "make_ga4_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def read_all(*patterns: str | Path, chunk_rows: int = 100_000) -> pl.DataFrame:
    options = ReadOptions(format="ga4", chunk_rows=chunk_rows)
    files, _ = expand_sources([str(p) for p in patterns], options)
    frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
    return pl.concat(frames)


def params(**values: Any) -> list[dict[str, Any]]:
    """event_params as the JSON export writes them (INT64 as strings)."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out.append({"key": key, "value": value})
        elif isinstance(value, int):
            out.append({"key": key, "value": {"int_value": str(value)}})
        elif isinstance(value, float):
            out.append({"key": key, "value": {"double_value": value}})
        else:
            out.append({"key": key, "value": {"string_value": value}})
    return out


def write_lines(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path


WEB = {
    "event_date": "20240301",
    "platform": "WEB",
    "user_pseudo_id": "111.222",
    "device": {
        "category": "mobile",
        "operating_system": "iOS",
        "language": "en-US",
        "web_info": {"browser": "Safari", "browser_version": "17.3", "hostname": "www.shop.example"},
    },
    "geo": {"country": "United Kingdom", "region": "England", "city": "London"},
}


# --------------------------------------------------------------------------- the reader


def test_flattening_coercion_and_odd_rows(tmp_path: Path) -> None:
    rows: list[dict[str, Any] | str] = [
        {  # 1: int64 as strings, as BigQuery writes them
            **WEB,
            "event_timestamp": "1709280000123456",
            "event_name": "page_view",
            "user_id": "u-7",
            "event_params": params(
                page_location="https://www.shop.example/a?x=1#top",
                page_title="A",
                ga_session_id=1709280000,
                ga_session_number=3,
                session_engaged="1",
                unknown_key="ignored",
            ),
        },
        {  # 2: event_timestamp as a number; two value fields set; repeated key
            **WEB,
            "event_timestamp": 1709280001000000,
            "event_name": "click",
            "event_params": [
                *params(page_location="https://www.shop.example/b", session_engaged=1),
                {"key": "outbound", "value": {"string_value": "true", "int_value": "1"}},
                {"key": "engagement_time_msec", "value": {"int_value": "250", "double_value": 9.5}},
                {"key": "link_url", "value": {"string_value": "https://first.example"}},
                {"key": "link_url", "value": {"string_value": "https://second.example"}},
            ],
        },
        "",  # 3: a blank line still counts for _row
        {  # 4: no event_params at all, no device.web_info
            "event_date": "20240301",
            "event_timestamp": "1709280002000000",
            "event_name": "consent_update",
            "user_pseudo_id": "333.444",
            "geo": {"country": "(not set)", "region": "(not set)"},
        },
        {  # 5: app stream: no page_location (and no platform field)
            "event_date": "20240301",
            "event_timestamp": "1709280003000000",
            "event_name": "screen_view",
            "user_pseudo_id": "555.666",
            "event_params": params(firebase_screen="Home", ga_session_id=1709280003),
            "device": {"category": "mobile", "operating_system": "Android"},
        },
        {  # 6: hostname from page_location; purchase with revenue from the value param
            "event_date": "20240301",
            "event_timestamp": "1709280004000000",
            "event_name": "purchase",
            "user_pseudo_id": "777.888",
            "event_params": params(
                page_location="https://Shop.Example:8443/checkout", value={"int_value": "30"}, currency="eur"
            ),
            "geo": {"country": "Türkiye", "region": "Istanbul"},
        },
    ]
    frame = read_all(write_lines(tmp_path / "events_20240301.json.gz", rows), chunk_rows=2)
    assert list(frame.columns) == [*FLAT_SCHEMA, "_file", "_row"]
    assert frame["_row"].to_list() == [1, 2, 4, 5, 6]
    by_name = {r["event_name"]: r for r in frame.to_dicts()}

    view = by_name["page_view"]
    assert view["event_timestamp"] == 1709280000123456
    assert view["visitor_id"] == "u-7" and view["user_pseudo_id"] == "111.222"
    assert (view["ga_session_id"], view["ga_session_number"], view["session_engaged"]) == (1709280000, 3, 1)
    assert view["hostname"] == "www.shop.example" and view["stream_type"] == "web"
    assert view["language"] == "en-us" and view["browser"] == "Safari"
    assert (view["geo_country_code"], view["geo_region_code"], view["geo_city"]) == ("GB", "GB-ENG", "London")
    assert "unknown_key" not in frame.columns

    click = by_name["click"]
    assert click["event_timestamp"] == 1709280001000000
    assert click["visitor_id"] == "111.222"  # no user_id: the pseudo id
    assert click["outbound"] == "true"  # string_value before int_value
    assert click["engagement_time_msec"] == 250  # int_value before double_value
    assert click["link_url"] == "https://first.example"  # a repeated key: the first
    assert click["session_engaged"] == 1  # int 1 and "1" read alike

    consent = by_name["consent_update"]
    assert consent["page_location"] is None and consent["ga_session_id"] is None
    assert consent["geo_country"] is None and consent["geo_country_code"] is None

    app = by_name["screen_view"]
    assert app["stream_type"] == "app" and app["hostname"] is None and app["ga_session_id"] == 1709280003

    purchase = by_name["purchase"]
    assert purchase["hostname"] == "shop.example" and purchase["stream_type"] == "web"
    assert purchase["value"] == 30.0 and purchase["revenue"] == 30.0 and purchase["currency"] == "eur"
    assert (purchase["geo_country_code"], purchase["geo_region_code"]) == ("TR", "TR-34")


def test_schema_is_fixed_and_every_chunk_has_it(tmp_path: Path) -> None:
    options = ReadOptions(format="ga4", chunk_rows=40)
    files, _ = expand_sources([SAMPLE_GLOB], options)
    assert len(files) == 3
    for i, source in enumerate(files):
        assert read_schema(source, options) == FLAT_SCHEMA
        for frame in iter_chunks(source, i, options):
            assert frame.height <= 40
            assert dict(frame.drop("_file", "_row").schema) == FLAT_SCHEMA


def test_same_events_give_the_same_rows_in_every_container(tmp_path: Path) -> None:
    events = GEN.build_events(seed=7)[:150]
    GEN.write_json_gz(events, tmp_path / "e.json.gz", numeric_ts_every=3)
    GEN.write_parquet(events, tmp_path / "e.parquet")
    GEN.write_avro(events, tmp_path / "e.avro")
    frames = [read_all(tmp_path / name, chunk_rows=37).drop("_file") for name in ("e.json.gz", "e.parquet", "e.avro")]
    assert frames[0].height == len(events)
    assert frames[0].equals(frames[1]), "JSON and Parquet differ"
    assert frames[0].equals(frames[2]), "JSON and Avro differ"


def test_odd_sample_rows_read_alike_in_every_container(tmp_path: Path) -> None:
    odd = [e for e in GEN.build_events() if e["event_name"] in ("consent_update", "screen_view", "purchase", "click")]
    GEN.write_json_gz(odd, tmp_path / "o.json.gz", numeric_ts_every=2)
    GEN.write_parquet(odd, tmp_path / "o.parquet")
    GEN.write_avro(odd, tmp_path / "o.avro")
    frames = [read_all(tmp_path / n).drop("_file") for n in ("o.json.gz", "o.parquet", "o.avro")]
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    rows = frames[0]
    assert rows.filter(pl.col("event_name") == "screen_view")["stream_type"].to_list() == ["app"]
    assert rows.filter(pl.col("event_name") == "consent_update")["page_location"].to_list() == [None]
    assert sorted(rows.filter(pl.col("event_name") == "purchase")["revenue"].to_list()) == [96.0, 348.0]
    assert rows.filter(pl.col("link_url") == "https://status.example")["outbound"].to_list() == ["true"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("United States", "US"),
        ("United Kingdom", "GB"),
        ("South Korea", "KR"),
        ("Russia", "RU"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Czechia", "CZ"),
        ("Côte d’Ivoire", "CI"),
        ("Myanmar (Burma)", "MM"),
        ("Bosnia & Herzegovina", "BA"),
        ("St. Lucia", "LC"),
        ("Kosovo", "XK"),  # pycountry's fuzzy search would say Serbia
        ("Congo - Kinshasa", "CD"),
        ("(not set)", None),
        ("Atlantis", None),
    ],
)
def test_country_names_to_codes(name: str, code: str | None) -> None:
    assert country_code(name) == code


@pytest.mark.parametrize(
    ("country", "region", "code"),
    [
        ("GB", "England", "GB-ENG"),
        ("GB", "Wales", "GB-WLS"),
        ("US", "California", "US-CA"),
        ("DE", "Berlin", "DE-BE"),
        ("FR", "Ile-de-France", "FR-IDF"),  # accents folded
        ("US", "Atlantis", None),
    ],
)
def test_region_names_to_codes(country: str, region: str, code: str | None) -> None:
    assert region_code(country, region) == code


def test_utm_tags_added_only_when_the_url_has_none(tmp_path: Path) -> None:
    def row(location: str, **extra: Any) -> dict[str, Any]:
        return {
            **WEB,
            "event_timestamp": "1709280000000000",
            "event_name": "page_view",
            "event_params": params(page_location=location, **extra.pop("params", {})),
            **extra,
        }

    cts = {"manual_source": "google", "manual_medium": "cpc", "manual_campaign_name": "a b&c", "gclid": "G1"}
    rows: list[dict[str, Any] | str] = [
        row("https://s.example/p#frag", collected_traffic_source=cts),
        row("https://s.example/p?utm_source=mail", collected_traffic_source=cts),
        row("https://s.example/p?x=1", params={"source": "news", "medium": "email"}),
        row("https://s.example/p", collected_traffic_source={"manual_source": "google", "manual_medium": "organic"}),
        row("https://s.example/p"),
    ]
    urls = read_all(write_lines(tmp_path / "u.json.gz", rows))["page_location_with_utm"].to_list()
    assert urls == [
        "https://s.example/p?utm_source=google&utm_medium=cpc&utm_campaign=a%20b%26c&gclid=G1#frag",
        "https://s.example/p?utm_source=mail&gclid=G1",  # has utm_: only the missing gclid is added
        "https://s.example/p?x=1&utm_source=news&utm_medium=email",
        "https://s.example/p",  # organic: derived by GA, left to Umami's referrer handling
        "https://s.example/p",
    ]


def test_avro_files_are_found_in_directories_only_with_format_ga4(tmp_path: Path) -> None:
    GEN.write_avro(GEN.build_events()[:5], tmp_path / "events_20240303.avro")
    (tmp_path / "README.txt").write_text("notes")
    files, skipped = expand_sources([str(tmp_path)], ReadOptions(format="ga4"))
    assert [Path(f.path).name for f in files] == ["events_20240303.avro"]
    assert any("README.txt" in s for s in skipped)
    from backfill.errors import ConfigError

    with pytest.raises(ConfigError):
        expand_sources([str(tmp_path)], ReadOptions())


def test_damaged_inputs_fail_with_the_file_named(tmp_path: Path) -> None:
    from backfill.errors import SourceError

    bad = write_lines(tmp_path / "bad.json.gz", [{**WEB, "event_timestamp": "1", "event_name": "x"}, "{not json"])
    with pytest.raises(SourceError, match=r"bad\.json\.gz: line 2"):
        read_all(bad)
    fake = tmp_path / "fake.avro"
    fake.write_bytes(b"not avro at all")
    with pytest.raises(SourceError, match="not an Avro"):
        read_all(fake)


def test_shipped_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    events = GEN.build_events()
    result = GEN.expected(events)
    shipped = dict(EXPECTED)
    shipped.pop("events_by_file")
    result.pop("events_by_file")
    assert result == shipped
    assert len(read_all(SAMPLE_GLOB)) == EXPECTED["events_total"]


# --------------------------------------------------------------------------- the preset through the CLI


def test_validate_samples_with_the_preset(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = run_cli("validate", SAMPLE_GLOB, "-m", "ga4", "--report", report, "--rejects", tmp_path / "r.ndjson")
    assert result.code == 0, result.stdout + result.stderr
    assert BOOKKEEPING_FILTER in result.stdout and APP_FILTER in result.stdout
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["balances"] is True
    assert ledger["read"] == EXPECTED["events_total"]
    assert ledger["read"] == ledger["accepted"] + ledger["rejected"] + ledger["skipped"] + ledger["in_doubt"]
    assert ledger["rejected"] == 0
    assert ledger["skipped_by_filter"] == {
        BOOKKEEPING_FILTER: EXPECTED["skipped_bookkeeping"],
        APP_FILTER: EXPECTED["skipped_app_stream"],
    }
    stats = json.loads(report.read_text())["stats"]
    countries = {k: v for k, v in stats["top_countries"].items() if k != "(unknown)"}
    assert countries == EXPECTED["events_by_country"]


def test_import_all_three_files_into_fake_umami(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, SAMPLE_GLOB, "ga4", tmp_path, "--state", tmp_path / "state", cwd=ROOT)
        assert result.code == 0, result.stdout + result.stderr
        events = server.events(site)
        revenue = server.revenue(site)
        event_data = server.event_data(site)

    figures = stored_figures(events, revenue)
    pageviews = figures.pageviews
    assert figures.pageviews_by_day == EXPECTED["pageviews_by_day"]
    assert figures.visitors_by_day == EXPECTED["visitors_by_day"]
    assert figures.custom_events_by_name == EXPECTED["custom_events_by_name"]
    for r in revenue:
        assert r["event_name"] == "purchase"
        assert r["currency"] == EXPECTED["revenue_currency"][stored_day(r)]
    assert figures.revenue_by_day == EXPECTED["revenue_by_day"]
    # A campaign GA kept only in collected_traffic_source reached Umami through the url.
    assert any(e["url_query"] and "utm_medium=cpc" in e["url_query"] for e in pageviews)
    assert any(d.get("data_key") == "transaction_id" for d in event_data)
    assert all(dt.date.fromisoformat(stored_day(e)) >= dt.date(2024, 3, 1) for e in events)


def test_param_values_read_as_text_cope_with_any_layout(tmp_path: Path) -> None:
    """JSON params are decoded from the value's text: key order, spacing, numbers for
    INT64, a value that is null, missing, or not an object all read as before."""
    lines: list[dict[str, Any] | str] = [
        '{"event_timestamp": 1709280000000000, "event_name": "page_view", "event_date": "20240301",'
        ' "event_params": [ {"value": { "int_value": 42 }, "key": "ga_session_id"},'
        ' {"key": "page_title", "value": {"string_value": "T {x}"}},'
        ' {"key": "value", "value": {"double_value": 12.5, "string_value": null}},'
        ' {"key": "currency", "value": null}, {"key": "term"},'
        ' {"key": "medium", "value": "not an object"},'
        ' {"key": "engagement_time_msec", "value": {"float_value": 7.0}},'
        ' {"key": "page_location", "value": {"string_value": "https://a.example/p?q=\\"x\\""}}]}',
        {"event_timestamp": "1709280001000000", "event_name": "x", "event_params": []},
    ]
    frame = read_all(write_lines(tmp_path / "t.json.gz", lines))
    first, second = frame.to_dicts()
    assert first["ga_session_id"] == 42 and first["page_title"] == "T {x}" and first["value"] == 12.5
    assert first["currency"] is None and first["term"] is None and first["medium"] is None
    assert first["engagement_time_msec"] == 7
    assert first["page_location"] == 'https://a.example/p?q="x"' and first["hostname"] == "a.example"
    assert second["ga_session_id"] is None and second["event_timestamp"] == 1709280001000000


def test_generated_benchmark_export_reads_like_parquet(tmp_path: Path) -> None:
    """bench/generate_ga4.py writes exports the reader takes whole; the JSON path (values
    as text) gives the same frame as the native-struct path on the same rows."""
    spec = importlib.util.spec_from_file_location("generate_ga4", ROOT / "bench" / "generate_ga4.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "g.json.gz"
    bench.write(3000, path, seed=5)
    from_json = read_all(path, chunk_rows=700)
    assert from_json.height == 3000
    assert from_json["ga_session_id"].null_count() == from_json.filter(pl.col("event_name") == "consent_update").height
    from backfill.sources.ga4 import RAW_SCHEMA, flatten

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    native = pl.from_dicts(rows, schema=RAW_SCHEMA, strict=False)
    native = native.with_columns(pl.int_range(1, native.height + 1, dtype=pl.UInt64()).alias("_row"))
    assert flatten(native).equals(from_json.drop("_file"))
