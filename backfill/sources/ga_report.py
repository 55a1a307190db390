"""Google Analytics report CSVs ("Download CSV" of Universal Analytics and GA4) as synthetic events.

Selected only by name (``--format ga_report`` or ``reader: {format: ga_report}``).
Such a file is not a table of events but one or more tables of per-day TOTALS,
each after a block of ``#`` comment lines::

    # ----------------------------------------
    # All Web Site Data
    # Pages
    # 20240301-20240331                  (UA; GA4: "# Start date: 20240301" / "# End date: ...")
    # ----------------------------------------
    Page,Date,Pageviews,Avg. Time on Page,...
    /pricing,20240301,"1,234",00:01:12,...
    ,,"12,345",00:01:05,...               <- totals row (empty dimensions): excluded

Parsing (``parse_report``): tables are split at blank lines and comment blocks;
column names are mapped to canonical ones (English and German, UA and GA4, a few
French); numbers are read with the decimal separator detected per table (``1,234``
vs ``1.234`` vs ``1 234``, ``96,02 %``, ``00:01:12``, ``US$ 0,00``); dates as
``YYYYMMDD``, ISO, ``D.M.YYYY``, ``Mon D, YYYY``, ``M/D/YY``, or a Day Index counted
from the header's start date. Totals and empty-dimension rows are excluded and counted.

A table is USED when it has a date dimension and either a page / source / event
name dimension with an additive metric, or no other dimension and users, sessions,
pageviews, event counts or revenue per day; every other table is IGNORED, and
``ParsedReport.describe()`` (``python -m backfill.sources.ga_report FILE``) says
which and why. The per-day figures then go through ``backfill.synthesize``, which
invents events whose Umami counts equal them (see its docstring for what is
exact and what is invented).

Output columns: ``backfill.synthesize.OUTPUT_SCHEMA`` plus ``_row`` (1-based, in
time order per day, days ascending; the same file always gives the same rows).
``timestamp`` is ISO 8601 text in UTC (``2024-03-01T08:13:27Z``): report days are
taken as UTC days.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile, sniffing  # defined before plugins load
from backfill.sources.compression import UTF8_BOM, iter_decompressed, iter_utf8
from backfill.sources.ga_breakdowns import ATTRIBUTE_DIMS, breakdown_of, breakdown_rows
from backfill.sources.ga_columns import (
    ADDITIVE,
    COUNT_METRICS,
    DATE_DIMS,
    GA_AUTOMATIC_EVENTS,
    KEY_DIMS,
    TOTAL_LABELS,
    canonical_column,
)
from backfill.synthesize import (
    OTHER_PAGE,
    OUTPUT_SCHEMA,
    UNKNOWN_PAGE,
    DayAggregate,
    DayResult,
    EventCount,
    PageCount,
    SourceCount,
    synthesize_day,
)

_CURRENCIES = {
    "US$": "USD",
    "$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "A$": "AUD",
    "CA$": "CAD",
    "C$": "CAD",
    "R$": "BRL",
    "CHF": "CHF",
    "Fr.": "CHF",
}
#: German month names -> English (chrono reads English only); full names first, then abbreviations.
_GERMAN_MONTHS = (
    {"Januar": "January", "Februar": "February", "März": "March", "Mai": "May", "Juni": "June", "Juli": "July"}
    | {"Oktober": "October", "Dezember": "December"},
    {"Mär": "Mar", "Okt": "Oct", "Dez": "Dec"},
)
_DATE_FORMATS = (
    "%Y%m%d",
    "%Y-%m-%d",
    "%d.%m.%Y",
    "%d.%m.%y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d. %B %Y",
    "%d %B %Y",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%m/%d/%y",
    "%d/%m/%y",
)
_KNOWN_SOURCES = {
    "google": "https://google.com/",
    "bing": "https://bing.com/",
    "yahoo": "https://search.yahoo.com/",
    "duckduckgo": "https://duckduckgo.com/",
    "ecosia": "https://ecosia.org/",
    "baidu": "https://baidu.com/",
    "yandex": "https://yandex.com/",
    "facebook": "https://facebook.com/",
    "m.facebook.com": "https://m.facebook.com/",
    "t.co": "https://t.co/",
    "twitter": "https://twitter.com/",
    "linkedin": "https://linkedin.com/",
    "reddit": "https://reddit.com/",
    "instagram": "https://instagram.com/",
    "youtube": "https://youtube.com/",
}
_NO_SOURCE = frozenset({"", "(direct)", "direct", "(not set)", "(none)", "(other)"})
_NO_UTM_MEDIA = frozenset({"organic", "referral", "(none)", "(not set)", ""})

#: A number written with grouping only (counts are integers, so "1.234" and "1,234" are 1234).
_GROUPED_INT = r"^-?\d{1,3}([.,]\d{3})+$"
_DOT_DECIMAL = r"^-?\d+\.(\d{1,2}|\d{4,})$|^-?(0|\d{4,})\.\d+$|^-?\d{1,3}(,\d{3})+\.\d+$|^-?\d{1,3}(,\d{3}){2,}$"
_COMMA_DECIMAL = r"^-?\d+,(\d{1,2}|\d{4,})$|^-?(0|\d{4,}),\d+$|^-?\d{1,3}(\.\d{3})+,\d+$|^-?\d{1,3}(\.\d{3}){2,}$"
_DURATION = r"^(\d+):(\d{2}):(\d{2})$"
#: Characters that are never a decimal separator: spaces (incl. no-break ones) and apostrophes.
_GROUPING_ONLY = r"[\s\u00a0\u202f'’]"


# --------------------------------------------------------------------------- splitting the file


@dataclass
class RawTable:
    """One table of the file as text: its header, rows and the comment block above it."""

    index: int  # 1-based, in file order
    line: int  # 1-based line of the header
    title: str
    header: list[str]
    rows: list[list[str]]
    start: dt.date | None  # the report range the header comments give
    end: dt.date | None

    @property
    def label(self) -> str:
        where = f" (line {self.line})" if self.line else ""  # 0: not from a text file (a Data API response)
        return f"table {self.index}{where}: {self.title}"


_RANGE = re.compile(r"^#\s*(\d{8})\s*-\s*(\d{8})\s*$")
_START = re.compile(r"^#\s*(start date|startdatum|date de début|fecha de inicio)\s*:\s*(\d{8})", re.I)
_END = re.compile(r"^#\s*(end date|enddatum|date de fin|fecha de finalización)\s*:\s*(\d{8})", re.I)
_META = re.compile(r"^(account|property|konto|property-id|propriété|compte)\s*:", re.I)


def _ymd(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def split_tables(text: str, delimiter: str | None = None) -> list[RawTable]:
    """Cut a report into its tables: a table starts after a blank or comment line and
    runs until the next one. Comment lines give the title and the date range."""
    tables: list[RawTable] = []
    start: dt.date | None = None
    end: dt.date | None = None
    titles: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.strip(",;\t") == "":
            i += 1
            continue
        if stripped.startswith("#"):
            if m := _RANGE.match(stripped):
                start, end = _ymd(m.group(1)), _ymd(m.group(2))
            elif m := _START.match(stripped):
                start = _ymd(m.group(2))
            elif m := _END.match(stripped):
                end = _ymd(m.group(2))
            else:
                body = stripped.lstrip("#").strip()
                if body and body.strip("-=") and not _META.match(body):
                    titles.append(body)
            i += 1
            continue
        first = i
        block: list[str] = []
        while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("#"):
            if lines[i].strip().strip(",;\t"):
                block.append(lines[i])
            i += 1
        sep = delimiter or _sniff_delimiter(block[0])
        records = list(csv.reader(io.StringIO("\n".join(block)), delimiter=sep))
        index = len(tables) + 1
        title = " / ".join(titles) or f"table {index}"
        tables.append(RawTable(index, first + 1, title, records[0], records[1:], start, end))
        titles = []
    return tables


# --------------------------------------------------------------------------- numbers and dates


def _clean(expr: pl.Expr) -> pl.Expr:
    """Digits, separators, sign and colons only: drops currency, %, and space/apostrophe grouping."""
    return expr.str.replace_all(_GROUPING_ONLY, "").str.replace_all(r"[^0-9.,:\-]", "")


def detect_decimal(values: pl.Series) -> tuple[str | None, int, int]:
    """(decimal separator or None when no value tells, dot votes, comma votes).

    A value tells when it cannot be read the other way: ``96.02``, ``0.5``,
    ``1,234.5`` and ``1,234,567`` say "."; ``96,02``, ``1.234,5``, ``1.234.567``
    say ",". ``1,234`` and ``1.234`` alone say nothing.
    """
    cleaned = pl.DataFrame({"v": values.cast(pl.String)}).select(_clean(pl.col("v")).alias("v"))
    votes = cleaned.select(
        pl.col("v").str.contains(_DOT_DECIMAL).sum().alias("dot"),
        pl.col("v").str.contains(_COMMA_DECIMAL).sum().alias("comma"),
    ).row(0)
    dot, comma = int(votes[0] or 0), int(votes[1] or 0)
    if dot == comma == 0:
        return None, 0, 0
    return ("." if dot >= comma else ","), dot, comma


def number_expr(expr: pl.Expr, decimal: str | None, *, integer: bool = False) -> pl.Expr:
    """Locale text -> Float64: grouping removed, ``decimal`` read as the point, ``%`` / 100,
    ``hh:mm:ss`` as seconds. For integer metrics a lone ``1.234``/``1,234`` is 1234 whatever
    the decimal separator (a count has no fraction). Unreadable values become null."""
    text = expr.cast(pl.String).str.strip_chars()
    cleaned = _clean(text)
    dec = decimal or "."
    other = "," if dec == "." else "."
    plain = cleaned.str.replace_all(other, "", literal=True).str.replace(dec, ".", literal=True)
    value = plain.cast(pl.Float64, strict=False)
    if integer:
        grouped = cleaned.str.replace_all(r"[.,]", "").cast(pl.Float64, strict=False)
        value = pl.when(cleaned.str.contains(_GROUPED_INT)).then(grouped).otherwise(value)
    parts = cleaned.str.extract_groups(_DURATION)
    seconds = (
        parts.struct.field("1").cast(pl.Float64) * 3600
        + parts.struct.field("2").cast(pl.Float64) * 60
        + parts.struct.field("3").cast(pl.Float64)
    )
    value = pl.when(text.str.contains("%")).then(value / 100).otherwise(value)
    return pl.when(cleaned.str.contains(_DURATION)).then(seconds).otherwise(value)


def currency_of(values: pl.Series) -> str | None:
    """The currency a revenue column is written in (``US$ 0,00``, ``1.234,56 €``, ``EUR 12``)."""
    symbols = (
        pl.DataFrame({"v": values.cast(pl.String)})
        .select(pl.col("v").str.replace_all(r"[0-9.,\-\s\u00a0\u202f'’]", "").alias("s"))
        .filter(pl.col("s") != "")
        .get_column("s")
        .value_counts(sort=True)
    )
    for symbol in symbols.get_column("s").to_list():
        if symbol in _CURRENCIES:
            return _CURRENCIES[symbol]
        if re.fullmatch(r"[A-Z]{3}", symbol):
            return symbol
    return None


def parse_dates(values: pl.Series, start: dt.date | None, end: dt.date | None) -> tuple[pl.Series, str | None]:
    """Text dates -> Date, with the format that reads the most values.

    Ties (``3/1/24`` reads as March 1 or January 3) go to the format whose dates
    fall inside the header's range, then to the one with the shortest span.
    """
    text = values.cast(pl.String).str.strip_chars()
    german = text
    for names in _GERMAN_MONTHS:
        german = german.str.replace_many(list(names), list(names.values()))
    best: tuple[tuple[int, int, int], pl.Series, str | None] = ((0, 0, 0), pl.Series([None] * len(values)), None)
    for fmt in _DATE_FORMATS:
        source = german if "%B" in fmt or "%b" in fmt else text
        parsed = source.str.to_date(fmt, strict=False)
        hits = parsed.len() - parsed.null_count()
        if not hits:
            continue
        in_range = 0
        if start is not None and end is not None:
            in_range = int(((parsed >= start) & (parsed <= end)).sum() or 0)
        span = (parsed.max() - parsed.min()).days  # type: ignore[operator]
        score = (hits, in_range, -span)
        if score > best[0]:
            best = (score, parsed, fmt)
    return best[1].alias(values.name), best[2]


def day_index_dates(values: pl.Series, start: dt.date | None, zero_based: bool) -> pl.Series:
    """Day Index / Nth day (integers) -> Date, counted from the header's start date."""
    index = values.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
    if start is None:
        return pl.Series(values.name, [None] * len(values), dtype=pl.Date)
    offset = index if zero_based else index - 1
    return pl.select((pl.lit(start) + pl.duration(days=pl.lit(offset))).cast(pl.Date).alias(values.name)).to_series()


# --------------------------------------------------------------------------- tables


@dataclass
class TableReport:
    """What was made of one table: its kind, whether it was used, and what was left out."""

    label: str
    columns: dict[str, str | None]  # header -> canonical (None: not used)
    kind: str | None = None  # pages | events | sources | daily
    used_for: list[str] = field(default_factory=list)
    ignored: str | None = None
    rows: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    decimal: str | None = None
    date_format: str | None = None
    currency: str | None = None
    notes: list[str] = field(default_factory=list)
    frame: pl.DataFrame | None = field(default=None, repr=False)  # date + dims + metrics, aggregated


def _usable_columns(raw: RawTable, report: TableReport) -> tuple[dict[str, int], list[str]]:
    """(canonical -> column position, unknown dimension headers)."""
    found: dict[str, int] = {}
    for pos, name in enumerate(raw.header):
        canonical = canonical_column(name)
        if canonical is not None and canonical in found:
            report.notes.append(f"column {name!r} repeats {canonical}: the first one is used")
            canonical = None
        report.columns[name] = canonical
        if canonical is not None:
            found[canonical] = pos
    unknown_dims: list[str] = []
    for pos, name in enumerate(raw.header):
        if report.columns[name] is None:
            values = pl.Series([r[pos] if pos < len(r) else "" for r in raw.rows], dtype=pl.String)
            text = values.str.strip_chars().filter(values.str.strip_chars() != "")
            numeric = pl.select(number_expr(pl.lit(text), None).is_not_null().sum()).item() if len(text) else 0
            if len(text) and numeric < len(text) / 2:
                unknown_dims.append(name)
    return found, unknown_dims


def _kind(found: dict[str, int], unknown_dims: list[str]) -> tuple[str | None, str | None]:
    """(kind, None) for a usable table, else (None, why it is ignored)."""
    if not any(d in found for d in DATE_DIMS):
        return None, "no date dimension: a total over the whole range cannot be placed on days"
    metrics = [m for m in (*COUNT_METRICS, "revenue") if m in found]
    keyed = any(d in found for d in ("page", "page_title", "event_name", "source", "medium", "source_medium"))
    breakdown, why = breakdown_of(found)
    if not keyed and (breakdown or why):
        if why or unknown_dims:
            return None, why or f"also split by {', '.join(unknown_dims)}: users per value cannot be recovered"
        if "users" not in found:
            return None, f"a {breakdown} breakdown without a users metric (visitors per value need users)"
        return f"breakdown:{breakdown}", None
    if ("page" in found or "page_title" in found) and "event_name" not in found:
        if "pageviews" not in found:
            return None, "a page dimension but no pageviews/views metric"
        return "pages", None
    if "event_name" in found:
        if "event_count" not in found:
            return None, "event names without an event count"
        return "events", None
    if any(d in found for d in ("source", "medium", "source_medium")):
        if "sessions" not in found:
            return None, "a source dimension but no sessions metric"
        if unknown_dims:
            return None, f"also split by {', '.join(unknown_dims)}: sessions per source cannot be recovered"
        return "sources", None
    if unknown_dims:
        return None, (
            f"split by {', '.join(unknown_dims)}, which is not a page, source or event name "
            "(users per day cannot be recovered from it)"
        )
    if not metrics:
        return None, "a date dimension but no users, sessions, pageviews, event count or revenue"
    return "daily", None


def analyse_table(raw: RawTable, file_decimal: str | None) -> TableReport:
    """Classify one table and, when usable, parse it into per-day rows (``report.frame``)."""
    report = TableReport(label=raw.label, columns={}, rows=len(raw.rows))
    found, unknown_dims = _usable_columns(raw, report)
    report.kind, report.ignored = _kind(found, unknown_dims)
    if report.kind is None:
        return report
    width = len(raw.header)
    if any(len(r) != width for r in raw.rows):
        report.notes.append(f"rows with a different number of cells than the header ({width}) were padded/cut")
    cells = [(r + [""] * width)[:width] for r in raw.rows]
    frame = pl.DataFrame(
        {f"c{pos}": [row[pos] for row in cells] for pos in range(width)},
        schema={f"c{pos}": pl.String for pos in range(width)},
    )
    metric_cols = [
        f"c{pos}" for pos, name in enumerate(raw.header) if report.columns[name] not in (*DATE_DIMS, *KEY_DIMS)
    ]
    metric_cols = [c for c in metric_cols if raw.header[int(c[1:])] not in unknown_dims]
    decimal = None
    if metric_cols:
        decimal, dot, comma = detect_decimal(pl.concat([frame.get_column(c) for c in metric_cols]))
        if dot and comma:
            report.notes.append(f"mixed decimal separators ({dot} values say '.', {comma} say ','): '{decimal}' used")
    report.decimal = decimal or file_decimal
    date_key = "date" if "date" in found else "day_index"
    date_raw = pl.col(f"c{found[date_key]}").str.strip_chars()
    dims = [k for k in KEY_DIMS if k in found]
    if report.kind.startswith("breakdown:"):
        dims = [k for k in ATTRIBUTE_DIMS if k in found]
    dim_exprs = {k: pl.col(f"c{found[k]}").str.strip_chars() for k in dims}
    # dates
    date_text = frame.get_column(f"c{found[date_key]}")
    present = date_text.str.strip_chars().filter(date_text.str.strip_chars() != "")
    is_index = date_key == "day_index" and bool(len(present)) and bool(present.str.contains(r"^\d{1,5}$").all())
    if is_index:
        digits = date_text.str.strip_chars().cast(pl.Int64, strict=False)
        zero = bool((digits.min() or 0) == 0) or bool(date_text.str.strip_chars().str.starts_with("0").any())
        dates = day_index_dates(date_text, raw.start, zero_based=zero)
        report.date_format = f"day index ({'0' if zero else '1'}-based) from {raw.start}"
        if raw.start is None:
            report.kind, report.ignored = None, "a Day Index but no start date in the header comments"
            return report
    else:
        dates, report.date_format = parse_dates(date_text, raw.start, raw.end)
    frame = frame.with_columns(dates.alias("_date"))
    # rows to leave out, each with the reason it is counted under
    first = pl.col(f"c{min(found[d] for d in (date_key, *dims))}").str.strip_chars().str.to_lowercase()
    all_blank = pl.all_horizontal([pl.col(c).fill_null("").str.strip_chars() == "" for c in frame.columns[:width]])
    reason = (
        pl.when(all_blank)
        .then(pl.lit("blank row"))
        .when(first.is_in(list(TOTAL_LABELS)) | dim_exprs.get("page", pl.lit("")).str.to_lowercase().is_in(["total"]))
        .then(pl.lit("totals row"))
        .when(date_raw.fill_null("") == "")
        .then(pl.lit("totals row (empty date)"))
        .when(pl.col("_date").is_null())
        .then(pl.lit("date not understood"))
    )
    for dim in dims:
        if dim in ("page_title", "medium", "hostname") and ("page" in dims or "source" in dims):
            continue  # a secondary label may be empty ("(not set)" is written, but be lenient)
        if dim in ATTRIBUTE_DIMS:
            continue  # an empty country, browser, ... is a visitor without one
        reason = reason.when(dim_exprs[dim].fill_null("") == "").then(pl.lit(f"empty {dim.replace('_', ' ')}"))
    frame = frame.with_columns(reason.otherwise(None).alias("_why"))
    report.excluded = dict(frame.filter(pl.col("_why").is_not_null()).get_column("_why").value_counts().iter_rows())
    kept = frame.filter(pl.col("_why").is_null())
    if kept.height == 0:
        report.kind, report.ignored = None, "no row with a readable date and dimensions"
        return report
    metrics = [m for m in (*COUNT_METRICS, "revenue") if m in found]
    if "revenue" in found:
        report.currency = currency_of(kept.get_column(f"c{found['revenue']}"))
    values = [number_expr(pl.col(f"c{found[m]}"), report.decimal, integer=m in COUNT_METRICS).alias(m) for m in metrics]
    parsed = kept.select(pl.col("_date").alias("date"), *[e.alias(k) for k, e in dim_exprs.items()], *values)
    unreadable = parsed.select([pl.col(m).is_null().sum() for m in metrics]).row(0) if metrics else ()
    for m, n in zip(metrics, unreadable, strict=True):
        if n:
            report.notes.append(f"{n} {m} values not understood: counted as 0")
    parsed = parsed.with_columns([pl.col(m).fill_null(0) for m in metrics])
    if report.kind in ("pages", "events", "sources") or unknown_dims:
        dropped = [m for m in metrics if m not in ADDITIVE]
        if dropped:
            report.notes.append(f"{', '.join(dropped)} per {report.kind[:-1]} not used (not additive over the day)")
        metrics = [m for m in metrics if m in ADDITIVE]
    keys = ["date", *dims]
    if report.kind == "pages":
        keys = ["date", "page"] if "page" in dims else ["date", "page_title"]
        keys[1:1] = ["hostname"] if "hostname" in dims else []
    elif report.kind == "events":
        keys = ["date", "event_name"]
    aggs = [pl.col(m).sum() for m in metrics]
    if report.kind == "pages" and "page" in dims and "page_title" in dims:
        aggs.append(pl.col("page_title").first())
    out = parsed.group_by(keys, maintain_order=True).agg(aggs).sort("date", maintain_order=True)
    if report.kind == "daily" and out.height < parsed.height:
        report.notes.append("dates repeat: their values were summed")
    integer_cols = [pl.col(m).round(0).cast(pl.Int64) for m in metrics if m in COUNT_METRICS]
    cents = [(pl.col("revenue") * 100).round(0).cast(pl.Int64).alias("revenue_cents")] if "revenue" in metrics else []
    report.frame = out.with_columns(*integer_cols, *cents)
    return report


# --------------------------------------------------------------------------- the whole file


@dataclass
class ParsedReport:
    """The tables of one report file and the per-day figures taken from them."""

    name: str
    key: bytes  # sha256 of the file's bytes: seeds the synthesizer
    tables: list[TableReport]
    days: list[DayAggregate]
    notes: list[str] = field(default_factory=list)
    results: list[DayResult] = field(default_factory=list)  # filled as days are synthesized

    def describe(self) -> str:
        """Which tables were used for what, which were ignored and why, rows left out."""
        out = [f"{self.name}: {len(self.tables)} table(s), {len(self.days)} day(s)"]
        for t in self.tables:
            state = f"USED ({t.kind}: {', '.join(t.used_for)})" if t.used_for else f"IGNORED: {t.ignored}"
            out.append(f"  {t.label}: {state}")
            known = {k: v for k, v in t.columns.items() if v}
            out.append(f"    {t.rows} rows; columns {known}; decimal {t.decimal!r}; dates {t.date_format}")
            if t.excluded:
                out.append(f"    excluded: {dict(sorted(t.excluded.items()))}")
            out.extend(f"    note: {n}" for n in t.notes)
        out.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(out)


#: Characters that would break a query value, and their percent-encoding (one pass, so "%" is safe).
_QUERY_ESCAPES = {"%": "%25", " ": "%20", "&": "%26", "=": "%3D", "#": "%23", "?": "%3F", "+": "%2B"}


def _query_escape(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_many(list(_QUERY_ESCAPES), list(_QUERY_ESCAPES.values()))


def _referrer_exprs(frame: pl.DataFrame) -> pl.DataFrame:
    """source / medium -> referrer URL and the utm query of the landing page, as columns."""
    if "source_medium" in frame.columns:
        parts = pl.col("source_medium").str.splitn("/", 2)
        frame = frame.with_columns(
            parts.struct.field("field_0").str.strip_chars().alias("source"),
            parts.struct.field("field_1").str.strip_chars().alias("medium"),
        )
    if "source" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("source"))
    if "medium" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("medium"))
    src = pl.col("source").fill_null("").str.strip_chars().str.to_lowercase()
    med = pl.col("medium").fill_null("").str.strip_chars().str.to_lowercase()
    known = src.replace_strict(list(_KNOWN_SOURCES), list(_KNOWN_SOURCES.values()), default=None)
    domain_like = src.str.contains(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
    referrer = (
        pl.when(src.is_in(list(_NO_SOURCE)))
        .then(None)
        .when(known.is_not_null())
        .then(known)
        .when(domain_like)
        .then(pl.format("https://{}/", src))
        .otherwise(None)
    )
    utm = (
        pl.when(src.is_in(list(_NO_SOURCE)) | med.is_in(list(_NO_UTM_MEDIA)))
        .then(None)
        .otherwise(pl.format("utm_source={}&utm_medium={}", _query_escape(src), _query_escape(med)))
    )
    return frame.with_columns(referrer.alias("referrer"), utm.alias("utm_query"))


def parse_report(data: bytes, name: str, delimiter: str | None = None) -> ParsedReport:
    """A report file's bytes -> its tables and per-day aggregates (nothing synthesized yet)."""
    text = _decode(data, name)
    raws = split_tables(text, delimiter)
    first_pass = [analyse_table(raw, None) for raw in raws]
    votes = Counter(t.decimal for t in first_pass if t.decimal)
    file_decimal = votes.most_common(1)[0][0] if votes else None
    tables = [
        analyse_table(raw, file_decimal) if t.kind and t.decimal is None and file_decimal else t
        for raw, t in zip(raws, first_pass, strict=True)
    ]
    report = ParsedReport(name=name, key=hashlib.sha256(data).digest(), tables=tables, days=[])
    report.days = assemble_days(report)
    if not report.days:
        raise SourceError(
            f"{name}: no table of this Google Analytics report can be turned into events "
            "(each needs a date dimension plus a page, source or event name, or per-day "
            f"users/sessions/pageviews):\n{report.describe()}"
        )
    return report


def _decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{name}: not UTF-8 text (pass --encoding, e.g. cp1252)") from exc


def _first(report: ParsedReport, kind: str) -> TableReport | None:
    """The first usable table of a kind; later ones would count the same views twice."""
    chosen = None
    for t in report.tables:
        if t.kind != kind:
            continue
        if chosen is None:
            chosen = t
        else:
            t.ignored = f"{chosen.label} already gives the {kind} (using both would count twice)"
    return chosen


def assemble_days(report: ParsedReport) -> list[DayAggregate]:
    """Per-day figures from the chosen tables; each figure from exactly one table."""
    days: dict[dt.date, DayAggregate] = {}

    def day(d: dt.date) -> DayAggregate:
        if d not in days:
            days[d] = DayAggregate(d)
        return days[d]

    pages, events, sources = _first(report, "pages"), _first(report, "events"), _first(report, "sources")
    daily: dict[str, tuple[TableReport, dict[dt.date, int]]] = {}
    for t in report.tables:
        if t.kind != "daily" or t.frame is None:
            continue
        metrics = ("pageviews", "users", "sessions", "event_count", "transactions", "revenue_cents", "new_users")
        for metric in (*metrics, "bounces", "engaged_sessions"):
            if metric not in t.frame.columns:
                continue
            if metric in daily:
                t.notes.append(f"{metric} already taken from {daily[metric][0].label}; this table's only cross-checks")
                continue
            daily[metric] = (t, dict(t.frame.select("date", metric).iter_rows()))
            t.used_for.append(metric.removesuffix("_cents"))
        if not t.used_for:
            t.ignored = "every metric it has is already taken from an earlier table"
    if pages is not None and pages.frame is not None:
        pages.used_for.append("pageviews per page")
        has_title = "page_title" in pages.frame.columns
        for row in pages.frame.iter_rows(named=True):
            url = row.get("page") or UNKNOWN_PAGE
            title = row.get("page_title") if has_title else None
            host = row.get("hostname") or None
            if row["pageviews"] > 0:
                day(row["date"]).pages.append(PageCount(url, title, row["pageviews"], pages.label, host))
    if "pageviews" in daily:
        table, totals = daily["pageviews"]
        for d, total in totals.items():
            have = days[d].pageviews if d in days else 0
            if pages is None and total > 0:
                day(d).pages.append(PageCount(UNKNOWN_PAGE, None, total, table.label))
            elif total > have:
                day(d).pages.append(PageCount(OTHER_PAGE, None, total - have, table.label))
                table.notes.append(f"{d}: {total - have} pageviews beyond the page rows sent as {OTHER_PAGE}")
            elif total < have:
                table.notes.append(f"{d}: daily pageviews {total} < the page rows' {have}; the page rows are sent")
    for metric in ("users", "sessions", "transactions", "bounces"):
        if metric in daily:
            for d, value in daily[metric][1].items():
                setattr(day(d), metric, value)
    if "bounces" not in daily and "engaged_sessions" in daily and "sessions" in daily:
        daily["engaged_sessions"][0].notes.append("bounces = sessions - engaged sessions (GA4's definition)")
        for d, engaged in daily["engaged_sessions"][1].items():
            sessions = daily["sessions"][1].get(d)
            if sessions is not None:
                day(d).bounces = max(sessions - engaged, 0)
    _add_breakdowns(report, day)
    if sources is not None and sources.frame is not None:
        sources.used_for.append("referrers of visits")
        frame = _referrer_exprs(sources.frame)
        by_day: dict[dt.date, int] = {}
        for row in frame.iter_rows(named=True):
            if row["sessions"] > 0:
                day(row["date"]).sources.append(SourceCount(row["referrer"], row["utm_query"], row["sessions"]))
                by_day[row["date"]] = by_day.get(row["date"], 0) + row["sessions"]
        if "sessions" not in daily:
            sources.used_for.append("sessions")
            for d, total in by_day.items():
                day(d).sessions = total
    automatic: Counter[str] = Counter()
    if events is not None and events.frame is not None:
        events.used_for.append("custom events by name")
        for row in events.frame.iter_rows(named=True):
            name, count = row["event_name"], row["event_count"]
            if name in GA_AUTOMATIC_EVENTS:
                automatic[name] += count
                agg = day(row["date"])
                if name == "page_view" and not agg.pages and count > 0:
                    agg.pages.append(PageCount(UNKNOWN_PAGE, None, count, events.label))
                elif name == "session_start" and agg.sessions is None:
                    agg.sessions = count
                continue
            if count > 0:
                day(row["date"]).events.append(EventCount(name, count, events.label))
        for name, count in sorted(automatic.items()):
            events.notes.append(
                f"{count} {name} events not sent as custom events: GA's automatic event, "
                f"already in the {GA_AUTOMATIC_EVENTS[name]}"
            )
    revenue_table = None
    if "revenue_cents" in daily:
        revenue_table, revenue = daily["revenue_cents"]
    else:
        for t in (events, sources):
            if t is not None and t.frame is not None and "revenue_cents" in t.frame.columns:
                revenue_table = t
                revenue = dict(t.frame.group_by("date").agg(pl.col("revenue_cents").sum()).iter_rows())
                t.used_for.append("revenue")
                break
    if revenue_table is not None:
        if revenue_table.currency is None:
            revenue_table.notes.append("no currency symbol in the revenue column: revenue rows have no currency")
        for d, cents in revenue.items():
            if cents:
                agg = day(d)
                agg.revenue_cents, agg.currency, agg.revenue_table = cents, revenue_table.currency, revenue_table.label
    for t in report.tables:
        if t.kind and not t.used_for and t.ignored is None:
            t.ignored = "nothing in it is needed (its figures come from other tables)"
    return [days[d] for d in sorted(days)]


#: How each breakdown is named in ``describe()``.
BREAKDOWN_LABELS = {
    "countries": "country",
    "places": "region and city",
    "technology": "device, OS and browser",
    "devices": "device",
    "browsers": "browser",
    "oses": "OS",
    "languages": "language",
    "screens": "screen",
}


def _add_breakdowns(report: ParsedReport, day: Callable[[dt.date], DayAggregate]) -> None:
    """Visitors per country, device, ... from the first table of each breakdown."""
    for kind in sorted({t.kind for t in report.tables if t.kind and t.kind.startswith("breakdown:")}):
        table = _first(report, kind)
        if table is None or table.frame is None:
            continue
        name = kind.removeprefix("breakdown:")
        table.used_for.append(f"visitors per {BREAKDOWN_LABELS[name]}")
        for date, values, users in breakdown_rows(name, table.frame):
            day(date).breakdowns.setdefault(name, []).append((values, users))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the plugin


def read_report(source: SourceFile, options: ReadOptions) -> ParsedReport:
    """Read (decompressing, transcoding) and parse one report file: a CSV download, or the
    Data API's JSON answers (``backfill.sources.ga_report_api``)."""
    from backfill.sources import ga_report_api

    blocks = iter_utf8(iter_decompressed(source.path, source.compression), options.encoding, source.path)
    data = b"".join(blocks)
    if ga_report_api.is_api_answer(data):
        return ga_report_api.parse_api_report(data, source.path, options.note_in)
    return parse_report(data, source.path, options.delimiter)


#: The summary note listing the days whose figures the synthesis could not reproduce as given.
CLAMPED_DAYS = (
    "GA report: days whose figures Umami cannot show exactly as reported (users above pageviews, "
    "sessions beyond what the pageviews allow, breakdowns adding up to more than the visitors, ...; "
    "`python -m backfill.sources.ga_report FILE` says what and by how much)"
)


def iter_report_frames(
    report: ParsedReport, chunk_rows: int = 100_000, note_in: Callable[[str, str], None] | None = None
) -> Iterator[pl.DataFrame]:
    """Synthesize day by day; frames of at most ``chunk_rows`` rows with a 1-based ``_row``.

    ``note_in(topic, day)`` hears of each day the synthesis could not make exact.
    """
    row = 0
    for agg in report.days:
        frame, result = synthesize_day(agg, report.key)
        report.results.append(result)
        if result.notes and note_in is not None:
            note_in(CLAMPED_DAYS, agg.day.isoformat())
        for offset in range(0, frame.height, chunk_rows):
            part = frame.slice(offset, chunk_rows)
            yield part.with_columns(pl.int_range(row + 1, row + 1 + part.height, dtype=pl.UInt64).alias(COL_ROW))
            row += part.height


def _iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    report = read_report(source, options)
    yield from iter_report_frames(report, options.chunk_rows, options.note_in)
    pages = any(agg.pages for agg in report.days)
    events = any(agg.events for agg in report.days)
    for agg in report.days:  # what the report said, beside what was made of it (the run's report)
        options.reported.add(
            agg.day.isoformat(),
            {
                "pageviews": agg.pageviews if pages else None,
                "visitors": agg.users,
                "visits": agg.sessions,
                "events": sum(e.count for e in agg.events) if events else None,
            },
        )


def _schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """Fixed: the synthesizer's columns, whatever tables the report holds."""
    return dict(OUTPUT_SCHEMA)


def sniff(path: str) -> bool:
    """A GA report download: "#" comment lines first, then a table whose header names a
    date dimension and a metric this reader knows (in English or German); or a Data API
    answer saved as JSON (``dimensionHeaders`` near its start)."""
    text = sniffing.text_head(path)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith(("{", "[")):
        return '"dimensionHeaders"' in text and '"metricHeaders"' in text
    if not first.startswith("#"):
        return False
    for table in split_tables(text):
        names = {canonical_column(name) for name in table.header}
        if names & set(DATE_DIMS) and names & {*COUNT_METRICS, "revenue"}:
            return True
    return False


PLUGIN = FormatPlugin(
    name="ga_report",
    description="Google Analytics (UA / GA4) report CSV or Data API answer: per-day totals as synthetic events",
    iter_frames=_iter_frames,
    schema=_schema,
    sniff=sniff,
    preset="ga_report",
)


def main(argv: list[str] | None = None) -> int:
    """``python -m backfill.sources.ga_report FILE...``: what each report holds and what would be made of it."""
    import json

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m backfill.sources.ga_report FILE...", file=sys.stderr)
        return 2
    for path in paths:
        with open(path, "rb") as fh:
            report = parse_report(fh.read(), path)
        for _ in iter_report_frames(report):
            pass
        print(report.describe())
        for r in report.results:
            summary = {
                "pageviews": r.pageviews,
                "visitors": r.visitors,
                "visits": r.visits,
                "events": r.events,
                "revenue": r.revenue_cents / 100,
            }
            print(f"  {r.day}: {json.dumps(summary)}" + "".join(f"\n    note: {n}" for n in r.notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
