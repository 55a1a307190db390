"""Plausible's CSV export (Site settings -> Imports & Exports -> Export) as synthetic events.

Selected only by name (``--format plausible_csv`` or ``reader: {format: plausible_csv}``).
The export is a ZIP ``<domain>_<YYYYMMDD>.zip`` of per-day tables, one CSV each,
named ``imported_<table>_<YYYYMMDD>_<YYYYMMDD>.csv`` (or ``imported_<table>.csv``,
or without ``imported_``): visitors, sources, pages, entry_pages, exit_pages,
custom_events, locations, devices, browsers, operating_systems, custom_props.

Reading: ZIP entries are read one at a time in memory (never extracted); an
entry whose name contains ``..`` or starts with ``/`` is ignored with a note.
A folder of the CSVs works too: pass the folder (or the files) with
``--format plausible_csv``; the ``visitors`` file stands for the whole export and
reads its sibling tables (same date-range suffix), the other files give no rows
of their own. Columns are matched by name; a missing numeric column is 0, a
missing text column is empty. Tables are told by file name.

Synthesis: ``backfill.synthesize_plausible`` (what is exact, what is invented).
Output: its ``OUTPUT_SCHEMA`` plus ``_row`` (1-based, days ascending, time order
within a day). ``python -m backfill.sources.plausible_csv FILE_OR_FOLDER`` prints
the tables read, per-day totals, notes and the residuals per table and day.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import polars as pl

from backfill.errors import SourceError
from backfill.geo import city_names
from backfill.schema import COL_ROW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile  # defined before plugins load
from backfill.sources import csv as csv_reader
from backfill.sources.compression import GZIP_MAGIC, UTF8_BOM
from backfill.synthesize_plausible import (
    ENGAGEMENT_EVENT,
    OUTPUT_SCHEMA,
    DayResult,
    PlausibleDay,
    Source,
    synthesize_day,
)
from backfill.umami.vocabulary import os_with_version

#: table -> (text columns, numeric columns) read from it; others are ignored.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "visitors": ((), ("visitors", "pageviews", "bounces", "visits", "visit_duration")),
    "sources": (
        ("source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"),
        ("pageviews", "visitors", "visits", "visit_duration", "bounces"),
    ),
    "pages": (("hostname", "page"), ("visits", "visitors", "pageviews")),
    "entry_pages": (("entry_page",), ("visitors", "entrances", "visit_duration", "bounces", "pageviews")),
    "exit_pages": (("exit_page",), ("visitors", "visit_duration", "exits", "bounces", "pageviews")),
    "custom_events": (("name", "link_url", "path"), ("visitors", "events")),
    "locations": (("country", "region", "city"), ("visitors", "visits")),
    "devices": (("device",), ("visitors", "visits")),
    "browsers": (("browser", "browser_version"), ("visitors", "visits")),
    "operating_systems": (("operating_system", "operating_system_version"), ("visitors", "visits")),
    "custom_props": (("property", "value"), ("visitors", "events")),
}
#: Tables read but not (yet) turned into events.
UNUSED_TABLES: tuple[str, ...] = ()
_NAME = re.compile(r"^(?:imported_)?([a-z_]+?)(_\d{8}_\d{8})?\.csv$")
_DOMAIN = re.compile(r"^(.+)_\d{8}\.zip$")
_UNKNOWN_COUNTRIES = frozenset({"", "ZZ", "\x00\x00"})


def table_of(filename: str) -> tuple[str | None, str]:
    """(table, date-range suffix) from a file name; table None when it is not an export table."""
    m = _NAME.match(os.path.basename(filename).lower())
    if m is None or m.group(1) not in TABLES:
        return None, ""
    return m.group(1), m.group(2) or ""


@dataclass
class PlausibleExport:
    """The tables of one export, parsed, and what was made of them."""

    name: str
    key: bytes  # hash of the tables' content: seeds the synthesis
    domain: str | None
    tables: dict[str, pl.DataFrame]
    notes: list[str] = field(default_factory=list)
    results: list[DayResult] = field(default_factory=list)

    def residuals(self) -> dict[str, dict[str, Any]]:
        """table -> day -> {"table", "synthesized", "diff"}: where the events differ from a table."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            for table, residual in r.residuals.items():
                out.setdefault(table, {})[r.day.isoformat()] = residual
        return out


def parse_table(data: bytes | BinaryIO, table: str, label: str, notes: list[str]) -> pl.DataFrame:
    """One table's CSV (bytes or a binary stream) -> date + its columns (text '' when absent,
    numbers 0 when absent), rows of the same day and key summed.

    Read in blocks of whole lines and summed block by block, so memory is bounded by
    the distinct (day, key) rows, not by the size of the table: an entry of hundreds
    of MB (repeated rows, or padding without dates) cannot exhaust it.
    """
    texts, numbers = TABLES[table]
    schema = {"date": pl.Date, **dict.fromkeys(texts, pl.String), **dict.fromkeys(numbers, pl.Int64)}
    raw = io.BytesIO(data) if isinstance(data, bytes) else data
    header: list[str] | None = None
    parts: list[pl.DataFrame] = []
    undated = 0
    try:
        for block in csv_reader.iter_blocks(raw, b'"'):
            if header is None:
                block = block.removeprefix(UTF8_BOM)
                if not block.strip():
                    continue
            frame = _read_block(block, header, label)
            if header is None:
                header = [c.strip().lower() for c in frame.columns]
                _check_header(header, texts, numbers, label, notes)
            frame = _typed(frame.rename(dict(zip(frame.columns, header, strict=True))), texts, numbers)
            undated += frame.get_column("date").null_count()
            parts.append(_summed(frame.filter(pl.col("date").is_not_null()), texts, numbers))
    except csv_reader.RecordTooLong:
        raise SourceError(
            f"{label}: a line does not end within {csv_reader.MAX_RECORD_BYTES >> 20} MiB (an unbalanced quote?)"
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise SourceError(f"{label}: damaged ZIP entry ({exc}); re-download the export") from exc
    if header is None:
        notes.append(f"{label}: empty file")
        return pl.DataFrame(schema=schema)
    if undated:
        notes.append(f"{label}: {undated} rows without a YYYY-MM-DD date left out")
    return _summed(pl.concat(parts), texts, numbers) if len(parts) > 1 else parts[0]


def _read_block(block: bytes, header: list[str] | None, label: str) -> pl.DataFrame:
    try:
        return pl.read_csv(
            block,
            has_header=header is None,
            new_columns=header,
            infer_schema=False,
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{label}: not a readable CSV ({exc})") from exc


def _check_header(header: list[str], texts: tuple[str, ...], numbers: tuple[str, ...], label: str, notes: list[str]):
    if "date" not in header:
        raise SourceError(f"{label}: no 'date' column (columns: {', '.join(header)})")
    if len(set(header)) != len(header):
        raise SourceError(f"{label}: a column name appears twice (columns: {', '.join(header)})")
    missing = [c for c in (*texts, *numbers) if c not in header]
    if missing:
        notes.append(f"{label}: no column {', '.join(missing)} (numbers read as 0, text as empty)")


def _typed(raw: pl.DataFrame, texts: tuple[str, ...], numbers: tuple[str, ...]) -> pl.DataFrame:
    return raw.select(
        pl.col("date").str.strip_chars().str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
        *[(pl.col(c).fill_null("") if c in raw.columns else pl.lit("")).cast(pl.String).alias(c) for c in texts],
        *[
            (
                pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).fill_null(0).round().cast(pl.Int64)
                if c in raw.columns
                else pl.lit(0, dtype=pl.Int64)
            ).alias(c)
            for c in numbers
        ],
    )


def _summed(frame: pl.DataFrame, texts: tuple[str, ...], numbers: tuple[str, ...]) -> pl.DataFrame:
    """Rows of one day and key as one (every figure of a table adds up), first-seen order kept."""
    return frame.group_by(["date", *texts], maintain_order=True).agg(pl.col(c).sum() for c in numbers)


class _Hashing:
    """A binary stream that feeds every byte read into a hash (the synthesis seed)."""

    def __init__(self, raw: BinaryIO, digest: Any):
        self.raw, self.digest, self.size = raw, digest, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def _read_entries(
    path: str, notes: list[str], stack: contextlib.ExitStack
) -> tuple[list[tuple[str, int, Callable[[], BinaryIO]]], str | None]:
    """(file name, size, opener) of each CSV table of a ZIP or a folder, and the site domain if
    the name tells. Nothing is read yet, and nothing is ever extracted to disk."""
    entries: list[tuple[str, int, Callable[[], BinaryIO]]] = []
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isfile(full) and table_of(name)[0]:
                entries.append((name, os.path.getsize(full), functools.partial(open, full, "rb")))
        return entries, None
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(f"{path}: not a readable ZIP archive ({exc})") from exc
    for info in archive.infolist():
        name = info.filename
        if info.is_dir():
            continue
        if ".." in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            notes.append(f"{path}: entry {name!r} ignored (unsafe path)")
            continue
        if table_of(name)[0] is None:
            notes.append(f"{path}: entry {name!r} ignored (not a Plausible export table)")
            continue
        entries.append((os.path.basename(name), info.file_size, functools.partial(archive.open, info)))
    match = _DOMAIN.match(os.path.basename(path))
    return entries, match.group(1) if match else None


def read_export(path: str, suffix: str | None = None) -> PlausibleExport:
    """A ZIP export or a folder of its CSVs -> its tables (only those with ``suffix`` when given)."""
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        entries, domain = _read_entries(path, notes, stack)
        parts = _read_tables(path, entries, suffix, notes, digest := hashlib.sha256())
    if "visitors" not in parts:
        raise SourceError(f"{path}: no visitors table (imported_visitors_*.csv): the daily totals start there")
    notes.extend(layout_notes(path, [name for name, _, _ in entries], suffix))
    absent = [t for t in TABLES if t not in parts]
    if absent:
        notes.append(
            f"{path}: no {', '.join(absent)} table{'s' if len(absent) > 1 else ''}: what only "
            f"{'they hold' if len(absent) > 1 else 'it holds'} is not in the events (the daily totals still are)"
        )
    tables = {t: pl.concat([frame for _, frame in frames]) for t, frames in parts.items()}
    for t in UNUSED_TABLES:
        if t in tables and tables[t].height:
            notes.append(f"{t}: read, not turned into events (not supported yet)")
    return PlausibleExport(name=path, key=digest.digest(), domain=domain, tables=tables, notes=notes)


def layout_notes(path: str, names: list[str], suffix: str | None) -> list[str]:
    """What the entry names say that the data cannot: a date in a name that is no real
    day (``20240231``), and entries of more than one naming layout or date range."""
    notes = []
    ranges: dict[str, list[str]] = {}
    prefixed = {name.lower().startswith("imported_") for name in names}
    for name in names:
        range_suffix = table_of(name)[1]
        if suffix is not None and range_suffix != suffix:
            continue
        ranges.setdefault(range_suffix, []).append(name)
        bad = [d for d in range_suffix.split("_") if d and not _real_date(d)]
        if bad:
            notes.append(
                f"{path}: entry {name!r}: {' and '.join(bad)} in its name is not a real date; "
                "its rows are dated by their own date column"
            )
    if len(ranges) > 1:
        shown = "; ".join(f"{s.strip('_') or 'no dates'}: {len(n)} files" for s, n in sorted(ranges.items()))
        notes.append(
            f"{path}: entries of {len(ranges)} date ranges in one export ({shown}); each day is read from "
            "the tables that hold it, two tables of the same day are refused"
        )
    if len(prefixed) > 1:
        notes.append(f"{path}: mixed layouts: some entries are named imported_<table>, others <table>")
    return notes


def _real_date(text: str) -> bool:
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def _read_tables(
    path: str,
    entries: list[tuple[str, int, Callable[[], BinaryIO]]],
    suffix: str | None,
    notes: list[str],
    digest: Any,
) -> dict[str, list[tuple[str, pl.DataFrame]]]:
    """table -> (entry name, parsed table) for each entry; two entries of a table may not share a day."""
    parts: dict[str, list[tuple[str, pl.DataFrame]]] = {}
    for name, size, opener in sorted(entries, key=lambda e: (table_of(e[0])[0] or "", e[0])):
        table, range_suffix = table_of(name)
        assert table is not None
        if suffix is not None and range_suffix != suffix:
            continue
        digest.update(f"{table}\0{size}\0".encode())
        label = f"{os.path.basename(path)}:{name}"
        try:
            with opener() as raw:
                stream = _Hashing(raw, digest)
                frame = parse_table(stream, table, label, notes)  # type: ignore[arg-type]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
            raise SourceError(f"{label}: cannot read it ({exc}); re-download the export") from exc
        if stream.size != size:
            raise SourceError(f"{label}: {stream.size} bytes read, {size} expected; re-download the export")
        for other, earlier in parts.get(table, []):
            both = set(earlier.get_column("date").unique()) & set(frame.get_column("date").unique())
            if both:
                raise SourceError(
                    f"{path}: {other} and {name} both hold {table} for {min(both).isoformat()}"
                    f"{f' and {len(both) - 1} more days' if len(both) > 1 else ''}: two exports of the "
                    "same days in one place would count them twice; keep one of them"
                )
        parts.setdefault(table, []).append((name, frame))
    return parts


def _grouped(frame: pl.DataFrame, keys: list[str], value: str) -> dict[dt.date, list[tuple[Any, int]]]:
    out: dict[dt.date, list[tuple[Any, int]]] = {}
    summed = frame.group_by(["date", *keys], maintain_order=True).agg(pl.col(value).sum())
    for row in summed.iter_rows():
        day, *key, n = row
        out.setdefault(day, []).append((tuple(key) if len(key) > 1 else key[0], n))
    return out


def assemble_days(export: PlausibleExport) -> list[PlausibleDay]:
    """Per-day inputs of the synthesizer, each figure from one table."""
    t = export.tables
    days: dict[dt.date, PlausibleDay] = {}

    def day(d: dt.date) -> PlausibleDay:
        if d not in days:
            days[d] = PlausibleDay(d)
        return days[d]

    totals = (
        t["visitors"].group_by("date").agg(pl.col("visitors", "pageviews", "bounces", "visits", "visit_duration").sum())
    )
    for row in totals.iter_rows(named=True):
        agg = day(row["date"])
        agg.visitors, agg.pageviews, agg.bounces = row["visitors"], row["pageviews"], row["bounces"]
        agg.visits, agg.visit_duration, agg.has_totals = row["visits"], row["visit_duration"], True
    if "pages" in t:
        for d, rows in _grouped(t["pages"], ["hostname", "page"], "pageviews").items():
            day(d).pages = [(h, p, n) for (h, p), n in rows if n > 0]
    if "entry_pages" in t:
        summed = (
            t["entry_pages"]
            .group_by("date", "entry_page", maintain_order=True)
            .agg(pl.col("entrances", "bounces").sum())
        )
        for d, page, n, b in summed.iter_rows():
            if n > 0:
                day(d).entries.append((page.strip(), n, b))
    if "exit_pages" in t:
        for d, rows in _grouped(t["exit_pages"], ["exit_page"], "exits").items():
            day(d).exits = [(p.strip(), n) for p, n in rows if n > 0]
    if "custom_props" in t:
        for d, rows in _grouped(t["custom_props"], ["property", "value"], "events").items():
            day(d).props = [(p.strip(), v, n) for (p, v), n in rows if n > 0 and p.strip()]
    if "custom_events" in t:
        for d, rows in _grouped(t["custom_events"], ["name", "path"], "events").items():
            day(d).events = [(name, path, n) for (name, path), n in rows if n > 0 and name]
        for d, name, n in t["custom_events"].group_by("date", "name").agg(pl.col("visitors").sum()).iter_rows():
            if name:
                day(d).event_visitors[name] = n
    if "sources" in t:
        cols = ["source", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term"]
        for d, rows in _grouped(t["sources"], cols, "visits").items():
            day(d).sources = [(Source(*(s.strip() for s in key)), n) for key, n in rows if n > 0]
    for table, column, attr in (
        ("devices", "device", "devices"),
        ("browsers", "browser", "browsers"),
        ("operating_systems", "operating_system", "oses"),
    ):
        if table in t:
            frame = t[table]
            if table == "operating_systems":  # Windows + 7 is Umami's Windows 7: one name per version that differs
                named = os_with_version(pl.col(column), pl.col("operating_system_version"))
                frame = frame.with_columns(named.fill_null("").alias(column))
            for d, rows in _grouped(frame, [column], "visitors").items():
                setattr(day(d), attr, [(v.strip() or None, n) for v, n in rows if n > 0])
    if "locations" in t:
        frame = t["locations"].with_columns(
            pl.col("country").str.strip_chars().str.to_uppercase(),
            pl.col("region").str.strip_chars().str.to_uppercase(),
            city_names(pl.col("city").str.strip_chars().cast(pl.Int64, strict=False)).fill_null("").alias("city"),
        )
        for d, rows in _grouped(frame, ["country", "region", "city"], "visitors").items():
            day(d).locations = [
                ((c, r if r.startswith(f"{c}-") else "", city), n) if c not in _UNKNOWN_COUNTRIES else (("", "", ""), n)
                for (c, r, city), n in rows
                if n > 0
            ]
    for agg in days.values():  # unknown values stay unassigned (None) rather than a value "None"
        agg.devices = [(v, n) for v, n in agg.devices if v]
        agg.browsers = [(v, n) for v, n in agg.browsers if v]
        agg.oses = [(v, n) for v, n in agg.oses if v]
        agg.locations = [(v, n) for v, n in agg.locations if v[0]]
    return [days[d] for d in sorted(days)]


def iter_export_frames(
    export: PlausibleExport,
    chunk_rows: int = 100_000,
    on_day: Callable[[PlausibleDay], None] | None = None,
) -> Iterator[pl.DataFrame]:
    """Synthesize day by day; frames of at most ``chunk_rows`` rows with a 1-based ``_row``.
    ``on_day`` sees what the export says about each day before it is synthesized."""
    row = 0
    export.results.clear()
    for agg in assemble_days(export):
        if on_day is not None:
            on_day(agg)
        frame, result = synthesize_day(agg, export.key, export.domain)
        export.results.append(result)
        for offset in range(0, frame.height, chunk_rows):
            part = frame.slice(offset, chunk_rows)
            yield part.with_columns(pl.int_range(row + 1, row + 1 + part.height, dtype=pl.UInt64).alias(COL_ROW))
            row += part.height


def _export_for(source: SourceFile) -> PlausibleExport | None:
    """The export a plugin input stands for: a ZIP itself; in a folder, the visitors file (others: None)."""
    if zipfile.is_zipfile(source.path):
        return read_export(source.path)
    if source.path.lower().endswith(".zip"):
        raise SourceError(f"{source.path}: {_not_a_zip(source.path)}")
    table, suffix = table_of(source.path)
    folder = os.path.dirname(source.path)
    if table == "visitors":
        return read_export(folder, suffix)
    if table is not None:
        siblings = [n for n in os.listdir(folder) if table_of(n) == ("visitors", suffix)]
        if not siblings:
            raise SourceError(f"{source.path}: no visitors table next to it (imported_visitors{suffix}.csv)")
        return None  # read with the visitors file
    if source.path.lower().endswith(".csv"):
        raise SourceError(f"{source.path}: not a Plausible export table (imported_<table>_<dates>.csv) nor a ZIP")
    return None  # side files in an export folder (expected.json, README)


def _not_a_zip(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(GZIP_MAGIC):
        return "named .zip but it is gzip-compressed data, not a ZIP archive; Plausible's export is a ZIP"
    if head.startswith(b"PK"):
        return "a damaged or truncated ZIP archive (its directory at the end is missing); re-download the export"
    return "named .zip but not a ZIP archive (an error page saved instead of the export?); re-download it"


def _iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    export = _export_for(source)
    if export is None:
        return
    for note in export.notes:
        options.note(f"plausible_csv: {note}")
    events = "custom_events" in export.tables

    def reported(agg: PlausibleDay) -> None:  # what the export said, beside what was made of it
        totals: dict[str, int | None] = {"pageviews": None, "visitors": None, "visits": None}
        if agg.has_totals:
            totals = {"pageviews": agg.pageviews, "visitors": agg.visitors, "visits": agg.visits}
        # Plausible's internal engagement pings are no event of the site: the synthesizer skips them
        totals["events"] = sum(n for name, _p, n in agg.events if name != ENGAGEMENT_EVENT) if events else None
        options.reported.add(agg.day.isoformat(), totals)

    yield from iter_export_frames(export, options.chunk_rows, reported)
    for result in export.results:
        for note in result.notes:
            options.note(f"plausible_csv: {os.path.basename(export.name)}: {result.day.isoformat()}: {note}")


def _schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """Fixed: the synthesizer's columns, whatever tables the export holds."""
    return dict(OUTPUT_SCHEMA)


def sniff(path: str) -> bool:
    """A Plausible export: a ZIP (only its directory is read) or a folder holding a visitors
    table, or one of the export's tables itself (``imported_<table>_<dates>.csv``)."""
    if os.path.isdir(path):
        with contextlib.suppress(OSError):
            return any(table_of(name)[0] == "visitors" for name in os.listdir(path))
        return False
    if table_of(path)[0] is not None:
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(table_of(name)[0] == "visitors" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


PLUGIN = FormatPlugin(
    name="plausible_csv",
    description="Plausible CSV export (ZIP or folder of imported_*.csv): per-day tables turned into synthetic events",
    iter_frames=_iter_frames,
    schema=_schema,
    extensions=(".zip",),
    sniff=sniff,
    preset="plausible-csv",
)


def describe(path: str) -> dict[str, Any]:
    """What an export holds and what would be made of it (for ``python -m``)."""
    export = read_export(path)
    for _ in iter_export_frames(export):
        pass
    return {
        "file": path,
        "domain": export.domain,
        "tables": {name: frame.height for name, frame in sorted(export.tables.items())},
        "notes": export.notes,
        "days": {r.day.isoformat(): {**r.summary(), **({"notes": r.notes} if r.notes else {})} for r in export.results},
        "residuals": export.residuals(),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m backfill.sources.plausible_csv FILE...``: tables, per-day totals, notes, residuals (JSON)."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m backfill.sources.plausible_csv EXPORT.zip|FOLDER...", file=sys.stderr)
        return 2
    for path in paths:
        print(json.dumps(describe(path), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
