"""Google Analytics report CSVs: parsing (locales, tables, totals, dates), synthesis, and an import.

The end-to-end tests read the shipped samples (``sample_data/ga_reports/``,
written by ``sample_data/make_ga_report_samples.py``) and compare what the
fake Umami counts per day with ``expected.json``, the generator's own numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backfill.errors import SourceError
from backfill.sources import PLUGINS, ReadOptions, expand_sources, iter_chunks, read_schema
from backfill.sources.ga_report import (
    canonical_column,
    currency_of,
    detect_decimal,
    iter_report_frames,
    number_expr,
    parse_dates,
    parse_report,
    split_tables,
)
from backfill.synthesize import (
    OUTPUT_SCHEMA,
    DayAggregate,
    EventCount,
    PageCount,
    SourceCount,
    split_cents,
    synthesize_day,
)
from tests.conftest import MAPPINGS, SAMPLES, import_into, run_cli
from tests.fake_umami import FakeUmami

GA_DIR = SAMPLES / "ga_reports"
PRESET = MAPPINGS / "ga_report.yaml"
SAMPLE_FILES = ("ua_all_pages.csv", "ga4_de_events.csv")
DAY_MS = 86_400_000


def expected_samples() -> dict[str, Any]:
    return json.loads((GA_DIR / "expected.json").read_text())


def parse_text(text: str) -> Any:
    return parse_report(text.encode(), "test.csv")


def day_totals(text: str) -> dict[str, dict[str, int | None]]:
    report = parse_text(text)
    return {
        a.day.isoformat(): {"pageviews": a.pageviews, "users": a.users, "sessions": a.sessions} for a in report.days
    }


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "decimal", "integer", "value"),
    [
        ("1,234", ".", True, 1234),
        ("1.234", ",", True, 1234),
        ("1.234", None, True, 1234),  # a count has no fraction: grouping whatever the locale
        ("1,234", None, True, 1234),
        ("1 234", ",", True, 1234),
        ("1\u00a0234\u202f567", ",", True, 1234567),
        ("1'234", ".", True, 1234),
        ("12", ".", True, 12),
        ("96.02%", ".", False, 0.9602),
        ("96,02 %", ",", False, 0.9602),
        ("00:01:12", ".", False, 72),
        ("01:00:00", ",", False, 3600),
        ("US$ 0,00", ",", False, 0.0),
        ("$1,234.56", ".", False, 1234.56),
        ("1.234,56 €", ",", False, 1234.56),
        ("CHF 1'234.50", ".", False, 1234.5),
        ("-", ".", False, None),
        ("", ",", True, None),
    ],
)
def test_locale_numbers(text: str, decimal: str | None, integer: bool, value: float | None) -> None:
    got = pl.select(number_expr(pl.lit(text), decimal, integer=integer)).item()
    assert got == pytest.approx(value) if value is not None else got is None


@pytest.mark.parametrize(
    ("values", "decimal"),
    [
        (["1,234", "45.12%", "00:01:12"], "."),
        (["1.234", "41,20 %"], ","),
        (["1.234.567"], ","),
        (["1,234,567"], "."),
        (["US$ 0,00"], ","),
        (["1,234", "1.234", "12"], None),  # nothing tells
    ],
)
def test_decimal_separator_detection(values: list[str], decimal: str | None) -> None:
    assert detect_decimal(pl.Series(values))[0] == decimal


def test_currency_symbols() -> None:
    assert currency_of(pl.Series(["US$ 0,00", "US$ 12,00"])) == "USD"
    assert currency_of(pl.Series(["1.234,56 €", "0,00 €"])) == "EUR"
    assert currency_of(pl.Series(["EUR 12.00"])) == "EUR"
    assert currency_of(pl.Series(["12.00", "3"])) is None


# --------------------------------------------------------------------------- dates and names


@pytest.mark.parametrize(
    ("values", "fmt"),
    [
        (["20240301", "20240302"], "%Y%m%d"),
        (["2024-03-01", "2024-03-02"], "%Y-%m-%d"),
        (["1.3.2024", "2.3.2024"], "%d.%m.%Y"),
        (["Mar 1, 2024", "Mar 2, 2024"], "%b %d, %Y"),
        (["March 1, 2024", "March 2, 2024"], "%B %d, %Y"),
        (["1. März 2024", "2. März 2024"], "%d. %B %Y"),
        (["3/1/24", "3/2/24"], "%m/%d/%y"),
    ],
)
def test_date_forms(values: list[str], fmt: str) -> None:
    dates, used = parse_dates(pl.Series(values), dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    assert used == fmt
    assert dates.to_list() == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]


def test_day_month_order_follows_the_header_range() -> None:
    """01/03/2024 is March 1 in a UK export: the header's range decides, not a US default."""
    dates, _ = parse_dates(pl.Series(["01/03/2024", "02/03/2024"]), dt.date(2024, 3, 1), dt.date(2024, 3, 2))
    assert dates.to_list() == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]


@pytest.mark.parametrize(
    ("header", "canonical"),
    [
        ("Page", "page"),
        ("Seite", "page"),
        ("Page path and screen class", "page"),
        ("Seitenpfad und Bildschirmklasse", "page"),
        ("Seitenaufrufe", "pageviews"),
        ("Views", "pageviews"),
        ("Aufrufe", "pageviews"),
        ("Nutzer", "users"),
        ("Active users", "users"),
        ("Neue Nutzer", "new_users"),
        ("Datum", "date"),
        ("Day Index", "day_index"),
        ("Sitzungen", "sessions"),
        ("Source / Medium", "source_medium"),
        ("Sitzungsquelle", "source"),
        ("Event name", "event_name"),
        ("Ereignisanzahl", "event_count"),
        ("Gesamtumsatz", "revenue"),
        ("Seitentitel", "page_title"),
        ("Unique Pageviews", None),
        ("Bounce Rate", None),
    ],
)
def test_column_synonyms(header: str, canonical: str | None) -> None:
    assert canonical_column(header) == canonical


# --------------------------------------------------------------------------- tables

UA_TWO_TABLES = """\
# ----------------------------------------
# All Web Site Data
# Pages
# 20240301-20240302
# ----------------------------------------

Page,Date,Pageviews,Avg. Time on Page,Bounce Rate
/,20240301,"1,200",00:01:12,45.10%
/pricing,20240301,30,00:00:40,12.00%
/,20240302,900,00:01:00,40.00%
,,"2,130",00:01:00,41.00%

# ----------------------------------------
# All Web Site Data
# Audience Overview
# 20240301-20240302
# ----------------------------------------

Day Index,Users,Sessions
1,400,"1,001"
2,350,380
,750,"1,381"

# ----------------------------------------
# Device Category
# ----------------------------------------

Device Category,Sessions
desktop,900
"""


def test_comment_headers_and_several_tables() -> None:
    tables = split_tables(UA_TWO_TABLES)
    assert [t.title for t in tables] == [
        "All Web Site Data / Pages",
        "All Web Site Data / Audience Overview",
        "Device Category",
    ]
    assert [t.header[0] for t in tables] == ["Page", "Day Index", "Device Category"]
    assert tables[1].start == dt.date(2024, 3, 1) and tables[1].end == dt.date(2024, 3, 2)
    assert len(tables[0].rows) == 4


def test_tables_used_ignored_totals_excluded_day_index() -> None:
    report = parse_text(UA_TWO_TABLES)
    pages, audience, devices = report.tables
    assert pages.kind == "pages" and pages.used_for and pages.excluded == {"totals row (empty date)": 1}
    assert audience.kind == "daily" and audience.used_for == ["users", "sessions"]
    assert audience.date_format is not None and audience.date_format.startswith("day index (1-based)")
    assert devices.kind is None and "no date dimension" in (devices.ignored or "")
    assert day_totals(UA_TWO_TABLES) == {
        "2024-03-01": {"pageviews": 1230, "users": 400, "sessions": 1001},
        "2024-03-02": {"pageviews": 900, "users": 350, "sessions": 380},
    }
    text = report.describe()
    assert "IGNORED: no date dimension" in text and "excluded: {'totals row (empty date)': 1}" in text


GA4_DE = """\
\ufeff# ----------------------------------------
# Ereignisse: Ereignisname
# Konto: Test
# ----------------------------------------
#
# Alle Nutzer
# Startdatum: 20240301
# Enddatum: 20240302
Datum,Ereignisname,Ereignisanzahl,Gesamtumsatz
Gesamtsumme,,"3.512","1.234,57 €"
1.3.2024,page_view,"1.500","0,00 €"
1.3.2024,purchase,3,"1.234,57 €"
1.3.2024,sign_up,9,"0,00 €"
2.3.2024,page_view,"2.000","0,00 €"
2.3.2024,,12,"0,00 €"

# ----------------------------------------
# Übersicht
# ----------------------------------------
#
# Startdatum: 20240301
# Enddatum: 20240302
N-ter Tag,Nutzer insgesamt,Sitzungen
0000,"1.100","1.200"
0001,900,950
"""


def test_german_ga4_events_revenue_zero_based_day_index() -> None:
    report = parse_text(GA4_DE)
    events, overview = report.tables
    assert events.kind == "events" and events.decimal == "," and events.currency == "EUR"
    assert events.excluded == {"totals row": 1, "empty event name": 1}
    assert overview.date_format is not None and "0-based" in overview.date_format
    first, second = report.days
    assert (first.day, first.users, first.sessions, first.pageviews) == (dt.date(2024, 3, 1), 1100, 1200, 1500)
    assert (second.day, second.users, second.sessions, second.pageviews) == (dt.date(2024, 3, 2), 900, 950, 2000)
    assert {e.name: e.count for e in first.events} == {"purchase": 3, "sign_up": 9}  # page_view is not custom
    assert first.revenue_cents == 123457 and first.currency == "EUR"


def test_a_report_without_usable_tables_says_why() -> None:
    with pytest.raises(SourceError, match="no date dimension"):
        parse_text("# Devices\nDevice Category,Sessions\ndesktop,900\n")


def test_semicolon_tables_and_iso_dates() -> None:
    text = "# Export\nDate;Page;Views\n2024-03-01;/a;1.234\n2024-03-01;/b;5\n"
    assert day_totals(text) == {"2024-03-01": {"pageviews": 1239, "users": None, "sessions": None}}


# --------------------------------------------------------------------------- synthesis


def synth(agg: DayAggregate, key: bytes = b"k") -> tuple[pl.DataFrame, Any]:
    return synthesize_day(agg, key)


def umami_counts(frame: pl.DataFrame) -> dict[str, int]:
    """What Umami's stats query counts from these events (pageviews only for visitors/visits)."""
    views = frame.filter(pl.col("event_name").is_null())
    hours = views.select("visitor_id", pl.col("timestamp").str.slice(0, 13).alias("h")).unique()
    return {"pageviews": views.height, "visitors": views.get_column("visitor_id").n_unique(), "visits": hours.height}


@pytest.mark.parametrize(("pageviews", "users", "sessions"), [(1, 1, 1), (50, 10, 10), (300, 40, 120), (97, 97, 97)])
def test_synthesis_is_exact_within_bounds(pageviews: int, users: int, sessions: int) -> None:
    counts = [pageviews // 3, pageviews // 3, pageviews - 2 * (pageviews // 3)]
    pages = [PageCount(f"/p{i}", f"P{i}", n, "t") for i, n in enumerate(counts) if n]
    agg = DayAggregate(dt.date(2024, 3, 1), pages=pages, users=users, sessions=sessions)
    frame, result = synth(agg)
    assert umami_counts(frame) == {"pageviews": pageviews, "visitors": users, "visits": sessions}
    per_page = Counter(frame.get_column("url").to_list())
    assert per_page == {p.url: p.count for p in pages}
    assert frame.get_column("timestamp").str.starts_with("2024-03-01T").all()
    assert not frame.get_column("synthetic_visitors").any() and frame.get_column("synthetic").all()
    assert (result.visitors, result.visits) == (users, sessions)
    assert frame.schema == pl.Schema(OUTPUT_SCHEMA)


def test_out_of_bounds_figures_are_clamped_and_flagged() -> None:
    agg = DayAggregate(dt.date(2024, 3, 1), pages=[PageCount("/", None, 5, "t")], users=9, sessions=40)
    frame, result = synth(agg)
    assert umami_counts(frame) == {"pageviews": 5, "visitors": 5, "visits": 5}
    assert frame.get_column("synthetic_visitors").all() and result.notes
    agg = DayAggregate(dt.date(2024, 3, 1), pages=[PageCount("/", None, 100, "t")], users=2, sessions=80)
    assert umami_counts(synth(agg)[0])["visits"] == 48  # 24 clock hours per visitor at most


def test_without_users_visitors_are_estimated_not_one_per_pageview() -> None:
    agg = DayAggregate(dt.date(2024, 3, 1), pages=[PageCount("/", None, 41, "t")])
    frame, result = synth(agg)
    assert umami_counts(frame)["visitors"] == math.ceil(41 / 2.0) == result.visitors
    assert frame.get_column("synthetic_visitors").all()


def test_events_revenue_sources_and_determinism() -> None:
    agg = DayAggregate(
        dt.date(2024, 3, 2),
        pages=[PageCount("/", None, 60, "t"), PageCount("/buy", "Buy", 40, "t")],
        users=30,
        sessions=45,
        sources=[SourceCount("https://google.com/", None, 20), SourceCount(None, "utm_source=nl&utm_medium=email", 5)],
        events=[EventCount("purchase", 7, "e"), EventCount("sign_up", 3, "e")],
        revenue_cents=100_001,
        currency="EUR",
    )
    frame, _ = synth(agg, b"file-a")
    assert Counter(frame.get_column("event_name").drop_nulls().to_list()) == {"purchase": 7, "sign_up": 3}
    revenue = frame.filter(pl.col("revenue").is_not_null())
    assert revenue.height == 7 and round(revenue.get_column("revenue").sum() * 100) == 100_001
    assert revenue.get_column("currency").to_list() == ["EUR"] * 7
    assert frame.get_column("referrer").drop_nulls().to_list() == ["https://google.com/"] * 20
    assert frame.get_column("url").str.contains("utm_medium=email").sum() == 5
    assert umami_counts(frame) == {"pageviews": 100, "visitors": 30, "visits": 45}
    again, _ = synth(agg, b"file-a")
    assert again.equals(frame)
    assert not synth(agg, b"file-b")[0].equals(frame)


def test_revenue_without_purchase_events_gets_its_own() -> None:
    agg = DayAggregate(dt.date(2024, 3, 1), revenue_cents=999, currency="USD", transactions=2)
    frame, _ = synth(agg)
    assert frame.get_column("revenue").to_list() == [4.99, 5.0] or sorted(frame.get_column("revenue")) == [4.99, 5.0]
    assert frame.get_column("event_name").to_list() == ["purchase", "purchase"]


def test_split_cents_last_takes_the_remainder() -> None:
    assert split_cents(1001, 3) == [333, 333, 335]
    assert split_cents(2, 3) == [1, 1, 0]
    assert sum(split_cents(123457, 7)) == 123457


# --------------------------------------------------------------------------- the plugin and the samples


def test_plugin_registered_schema_and_rows() -> None:
    assert "ga_report" in PLUGINS
    options = ReadOptions(format="ga_report")
    files, _ = expand_sources([str(GA_DIR / "ga4_de_events.csv")], options)
    assert read_schema(files[0], options) == OUTPUT_SCHEMA
    frames = list(iter_chunks(files[0], 0, ReadOptions(format="ga_report", chunk_rows=1000)))
    rows = pl.concat(frames).get_column("_row")
    assert max(f.height for f in frames) <= 1000
    assert rows.to_list() == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_samples_synthesize_to_expected_per_day(name: str) -> None:
    expected = expected_samples()[name]["days"]
    report = parse_report((GA_DIR / name).read_bytes(), name)
    frame = pl.concat(list(iter_report_frames(report)))
    for day, want in expected.items():
        events = frame.filter(pl.col("day") == day)
        assert umami_counts(events) == {
            "pageviews": want["pageviews"],
            "visitors": want["users"],
            "visits": want["sessions"],
        }
        assert dict(Counter(events.get_column("event_name").drop_nulls().to_list())) == want["events"]
        assert round((events.get_column("revenue").sum() or 0) * 100) == round(want["revenue"] * 100)


def test_validate_both_samples(tmp_path: Path) -> None:
    expected = expected_samples()
    total = sum(d["pageviews"] + sum(d["events"].values()) for f in expected.values() for d in f["days"].values())
    result = run_cli(
        "validate",
        *(GA_DIR / n for n in SAMPLE_FILES),
        "-m",
        "ga_report",
        "--rejects",
        tmp_path / "rejects.ndjson",
        "--report",
        tmp_path / "report.json",
    )
    assert result.code == 0, result.stdout + result.stderr
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["rejected"] == 0
    assert ledger["read"] == total


def stored_per_day(server: FakeUmami, site: str, days: list[str]) -> dict[str, dict[str, Any]]:
    revenue: dict[str, int] = defaultdict(int)
    for row in server.revenue(site):
        revenue[row["created_at"][:10]] += round(float(row["revenue"]) * 100)
    names: dict[str, Counter[str]] = defaultdict(Counter)
    for event in server.events(site):
        if event["event_name"]:
            names[event["created_at"][:10]][event["event_name"]] += 1
    out = {}
    for day in days:
        start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)
        stats = server.stats(site, start, start + DAY_MS - 1)
        out[day] = {
            "pageviews": stats["pageviews"],
            "users": stats["visitors"],
            "sessions": stats["visits"],
            "events": dict(names[day]),
            "revenue": revenue[day] / 100,
        }
    return out


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_import_into_fake_umami_matches_expected(name: str, tmp_path: Path) -> None:
    expected = expected_samples()[name]["days"]
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, GA_DIR / name, PRESET, tmp_path, "--batch-size", "500")
        assert result.code == 0, result.stdout + result.stderr
        assert stored_per_day(server, site, list(expected)) == expected
        assert not server.internal_errors


def test_daily_total_above_the_page_rows_goes_to_other() -> None:
    """A page table cut by GA's row limit: the daily chart's extra views keep the day's total exact."""
    text = "# 20240301-20240301\nPage,Date,Pageviews\n/,20240301,10\n\nDay Index,Pageviews\n3/1/24,15\n"
    (day,) = parse_text(text).days
    assert [(p.url, p.count) for p in day.pages] == [("/", 10), ("/(other)", 5)]


def test_generator_is_deterministic() -> None:
    before = {n: (GA_DIR / n).read_bytes() for n in (*SAMPLE_FILES, "expected.json")}
    subprocess.run([sys.executable, str(SAMPLES / "make_ga_report_samples.py")], check=True, timeout=60)
    assert {n: (GA_DIR / n).read_bytes() for n in before} == before
