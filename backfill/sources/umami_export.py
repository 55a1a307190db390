"""Umami's own export (Cloud "Export data" ZIP, or a self-hosted database dump) as events.

Selected by name (``--format umami`` or the preset ``umami-export``). Inputs:

* the Cloud ZIP (``website_event.csv``, ``event_data.csv``, ``session_data.csv``;
  columns as Umami's export route writes them: ``website_event`` carries the
  session's browser, os, device, screen, language, country, region, city and
  distinct_id on every row), or the same files unzipped in a folder;
* a PostgreSQL dump: ``\\copy`` of ``website_event`` joined with ``session`` (one
  CSV with the column names above), or the tables as separate CSV files
  (``website_event.csv`` + ``session.csv``, and ``event_data.csv`` /
  ``session_data.csv`` if the site has any).

The ``website_event`` file (or the ZIP) stands for the whole export and reads its
sibling tables from the same folder; a sibling table named on its own gives no
rows. Columns are matched by name; unknown columns are ignored with a note,
missing ones are absent (null). ZIP entries are copied one at a time to a temp
file (never extracted next to the input); an entry with an unsafe path is ignored
with a note.

Joining without holding the export in memory: every table is first spilled to
Parquet buckets (``hash(key) % K``, K from the input size so one bucket stays
near ``BUCKET_BYTES``). Events are bucketed by ``session_id`` and joined with
their session's attributes (``session.csv``) and session data (identify rows);
then re-bucketed by ``event_id`` and joined with their event data
(``backfill.sources.umami_join``). Memory is
one bucket, whatever the export's size or row order. The output order is by
bucket, not by time: the pipeline sorts by time anyway (``backfill.ordering``).

Output columns: ``FLAT_SCHEMA`` plus ``_row``. ``_row`` is the line of the row in
``website_event.csv``; identify rows (one per session with session data) and
rejected event-data rows (event data whose event is not in the export) are
numbered after the last ``website_event`` line, in that order, and their
reasons name their own file and line. ``data_json`` is the event's properties
(or the session's, for an identify row) as one JSON object text, each value of
the type Umami stored it as (data_type 1 string, 2 number, 3 boolean, 4 date
as an ISO string, 5 array as its JSON); the mapping sends it as ``data.*``.

``python -m backfill.sources.umami_export EXPORT`` prints the tables found, the
row counts and the notes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW, QUERY_PARAMS_LIMITED, SESSION_TABLE_COLUMNS
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources import csv as csv_reader
from backfill.sources.compression import temp_dir
from backfill.sources.umami_join import (
    DATA_SCHEMA,
    EV_SCHEMA,
    FLAT_SCHEMA,
    LINE,
    SES_SCHEMA,
    SESSION_ATTRS,
    Buckets,
    identify_rows,
    with_data,
    with_sessions,
)
from backfill.sources.umami_values import (
    data_members,
    epoch_ms,
    formula_unquoted,
    rebuilt_referrer,
    rebuilt_url,
)

S = pl.String()
I64 = pl.Int64()

#: Umami's tables: the columns read from each (Cloud export and PostgreSQL names).
TABLES: dict[str, tuple[str, ...]] = {
    "website_event": (
        "website_id",
        "session_id",
        "visit_id",
        "event_id",
        "hostname",
        "browser",
        "os",
        "device",
        "screen",
        "language",
        "country",
        "region",
        "city",
        "url_path",
        "url_query",
        "referrer_path",
        "referrer_query",
        "referrer_domain",
        "page_title",
        "event_type",
        "event_name",
        "tag",
        "distinct_id",
        "created_at",
    ),
    "session": SESSION_TABLE_COLUMNS,
    "event_data": (
        "website_id",
        "session_id",
        "event_id",
        "website_event_id",
        "data_key",
        "string_value",
        "number_value",
        "date_value",
        "data_type",
        "created_at",
    ),
    "session_data": (
        "website_id",
        "session_id",
        "data_key",
        "string_value",
        "number_value",
        "date_value",
        "data_type",
        "distinct_id",
        "created_at",
    ),
}
#: Columns Umami derives from others, or that the API cannot send: read without a note.
KNOWN_UNUSED = frozenset(
    {
        *QUERY_PARAMS_LIMITED,
        "lcp",
        "inp",
        "cls",
        "fcp",
        "ttfb",
        "job_id",
        "event_data_id",
        "session_data_id",
        "ip",
        "subdivision1",
        "subdivision2",
        "url_path_hash",
        "url_path",  # event_data: the event's own, read from website_event
        "event_name",
    }
)
REQUIRED = {"website_event": ("session_id", "created_at"), "session": ("session_id",)}
#: Target size of one bucket of the input's CSV bytes (memory is about a few times this).
BUCKET_BYTES = 48 << 20


# --------------------------------------------------------------------------- finding the tables


@dataclass
class Table:
    """One table of the export: its name, where it is shown, and how to open it."""

    name: str
    label: str  # "export.zip:website_event.csv" or the file path
    size: int
    open: Callable[[], BinaryIO]


@dataclass
class Export:
    """The tables of one export and what was noticed reading them."""

    path: str
    tables: dict[str, Table]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def table_name(filename: str) -> str | None:
    """The Umami table a file holds, from its name (``website_event.csv`` ...)."""
    base = os.path.basename(filename).lower()
    for suffix in (".csv", ".tsv"):
        if base.endswith(suffix):
            stem = base[: -len(suffix)]
            return stem if stem in TABLES else None
    return None


def find_export(path: str, stack: contextlib.ExitStack) -> Export:
    """The tables of a ZIP, or of the folder holding a ``website_event`` CSV."""
    if zipfile.is_zipfile(path) or path.lower().endswith(".zip"):
        return _zip_export(path, stack)
    folder = os.path.dirname(path) or "."
    export = Export(path=path, tables={})
    own = table_name(path) or "website_event"
    export.tables[own] = _file_table(own, path)
    if own == "website_event":
        for name in sorted(os.listdir(folder)):
            sibling = table_name(name)
            full = os.path.join(folder, name)
            if sibling and sibling != own and os.path.isfile(full):
                export.tables[sibling] = _file_table(sibling, full)
    return export


def _file_table(name: str, path: str) -> Table:
    return Table(name, path, os.path.getsize(path), functools.partial(open, path, "rb"))


def _zip_export(path: str, stack: contextlib.ExitStack) -> Export:
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable ZIP archive ({exc}); a truncated download? Fetch it again") from exc
    export = Export(path=path, tables={})
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        if ".." in name.split("/") or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            export.notes.append(f"{path}: entry {name!r} ignored (unsafe path)")
            continue
        table = table_name(name)
        if table is None:
            export.notes.append(f"{path}: entry {name!r} ignored (not an Umami export table)")
            continue
        if table in export.tables:
            raise SourceError(f"{path}: two {table} tables ({export.tables[table].label} and {name}): a mixed export?")
        export.tables[table] = Table(table, f"{path}:{name}", info.file_size, functools.partial(archive.open, info))
    return export


@contextlib.contextmanager
def _local_copy(table: Table) -> Iterator[str]:
    """A plain file with the table's bytes: the file itself, or a temp copy of a ZIP entry."""
    if os.path.isfile(table.label):
        yield table.label
        return
    fd, tmp = tempfile.mkstemp(prefix="backfill-umami-", suffix=".csv", dir=temp_dir())
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with table.open() as raw:
                    shutil.copyfileobj(raw, out, 1 << 20)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise SourceError(f"{table.label}: damaged ZIP entry ({exc}); fetch the export again") from exc
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def iter_table(table: Table, options: ReadOptions, export: Export) -> Iterator[pl.DataFrame]:
    """The table's rows in chunks: its known columns (absent ones null), ``_row``, and the
    reader's ``_source_error``/``_source_raw`` for lines that cannot be read."""
    dialect = csv_reader.Dialect(options.delimiter or ",", options.quote_char, True)
    wanted = TABLES[table.name]
    first = True
    with _local_copy(table) as path:
        for frame in csv_reader.iter_csv(
            path, name=table.label, dialect=dialect, columns=None, chunk_rows=options.chunk_rows
        ):
            if first:
                _check_columns(table, frame.columns, export)
                first = False
            present = [c for c in wanted if c in frame.columns]
            errors = [c for c in (COL_SOURCE_ERROR, COL_SOURCE_RAW) if c in frame.columns]
            yield frame.select(
                *(formula_unquoted(pl.col(c)).alias(c) for c in present),
                *(pl.lit(None, S).alias(c) for c in wanted if c not in frame.columns),
                pl.col(COL_ROW).cast(I64),
                *errors,
            )


def _check_columns(table: Table, columns: list[str], export: Export) -> None:
    names = [c for c in columns if c not in (COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW)]
    missing = [c for c in REQUIRED.get(table.name, ()) if c not in names]
    if table.name in ("event_data", "session_data"):
        missing += [c for c in ("data_key", "data_type") if c not in names]
        if table.name == "event_data" and "event_id" not in names and "website_event_id" not in names:
            missing.append("event_id")
    if missing:
        raise SourceError(
            f"{table.label}: not Umami's {table.name} table: no column {', '.join(map(repr, missing))} "
            f"(the header has {', '.join(map(repr, names[:12]))}{', ...' if len(names) > 12 else ''})"
        )
    attrs = [c for c in SESSION_ATTRS if c != "distinct_id"]
    if table.name == "website_event" and "session" not in export.tables and not set(attrs) & set(names):
        raise SourceError(
            f"{table.label}: no session columns ({', '.join(attrs)}) and no session.csv next to it: "
            "the sessions' browser, OS, device and location would be lost. Dump website_event joined "
            "with session, or the session table as session.csv in the same folder"
        )
    unknown = [c for c in names if c not in TABLES[table.name] and c not in KNOWN_UNUSED]
    if unknown:
        export.notes.append(f"{table.label}: column(s) {', '.join(unknown)} not used (not part of Umami's export)")
    used = [c for c in TABLES[table.name] if c not in ("website_id", "website_event_id", "event_id")]
    if table.name == "website_event" and "session" in export.tables:
        used = [c for c in used if c not in SESSION_ATTRS]  # they come from session.csv
    if table.name == "event_data":
        used = [c for c in used if c != "session_id"]
    absent = [c for c in used if c not in names]
    if absent:
        export.notes.append(f"{table.label}: no column {', '.join(absent)} (read as empty)")


def bucket_count(export: Export) -> int:
    total = sum(t.size for t in export.tables.values())
    return max(1, -(-total // BUCKET_BYTES))


# --------------------------------------------------------------------------- reading


def _problem(label: str, text: pl.Expr) -> pl.Expr:
    """``<file> row N: <text>`` (null when ``text`` is null)."""
    return pl.concat_str(pl.lit(f"{label} row "), pl.col(COL_ROW).cast(S), pl.lit(": "), text)


def _events(chunk: pl.DataFrame, label: str) -> pl.DataFrame:
    """website_event rows -> the flat event columns (+ website_id, ``problem``)."""
    event_type = pl.col("event_type").cast(I64, strict=False)
    named = pl.col("event_name").is_not_null()
    created = epoch_ms(pl.col("created_at"))
    problem = (
        pl.when(pl.col("session_id").is_null())
        .then(_problem(label, pl.lit("session_id is empty")))
        .when(created.is_null())
        .then(
            _problem(
                label,
                pl.concat_str(
                    pl.lit("created_at "), pl.col("created_at").fill_null("(empty)"), pl.lit(" is not a time")
                ),
            )
        )
        .when(pl.col("event_type").is_not_null() & event_type.is_null())
        .then(_problem(label, pl.concat_str(pl.lit("event_type "), pl.col("event_type"), pl.lit(" is not a number"))))
        .when((event_type == 2) & named.not_())
        .then(_problem(label, pl.lit("a custom event (event_type 2) without event_name: Umami would count a pageview")))
    )
    event_type = pl.coalesce(event_type, pl.when(named).then(2).otherwise(1))
    return chunk.select(
        pl.lit("event").alias("kind"),
        created.alias("created_ms"),
        pl.lit(None, S).alias("visitor"),
        "session_id",
        "visit_id",
        pl.coalesce("event_id", pl.lit(None, S)).alias("event_id"),
        event_type.alias("event_type"),
        "hostname",
        rebuilt_url(pl.col("url_path"), pl.col("url_query")).alias("url"),
        rebuilt_referrer(pl.col("referrer_domain"), pl.col("referrer_path"), pl.col("referrer_query")).alias(
            "referrer"
        ),
        pl.col("page_title").alias("title"),
        pl.when(event_type == 2).then(pl.col("event_name")).alias("name"),
        "tag",
        *SESSION_ATTRS,
        pl.lit(None, S).alias("data_json"),
        pl.lit(None, I64).alias("repeat_of"),
        "website_id",
        problem.alias("problem"),
        COL_ROW,
    )


def _data_rows(chunk: pl.DataFrame, table: str, label: str) -> pl.DataFrame:
    """event_data / session_data rows -> key, ``member`` (``"key":value``), problem, time, line."""
    key = pl.coalesce("event_id", "website_event_id") if table == "event_data" else pl.col("session_id")
    rows = data_members(chunk)
    extra = [pl.col("distinct_id")] if table == "session_data" else []
    return rows.select(
        key.alias("key"),
        "member",
        "data_key",
        _problem(label, pl.col("problem")).alias("problem"),
        epoch_ms(pl.col("created_at")).alias("created_ms"),
        pl.col(COL_ROW).alias(LINE),
        *extra,
    )


@dataclass
class _Pass:
    """What the first pass over the tables found."""

    buckets: Buckets
    websites: set[str] = field(default_factory=set)
    last_row: dict[str, int] = field(default_factory=dict)


def check_tables(export: Export) -> None:
    """Refuse an export that lacks a table it must have (before any row is read)."""
    if "website_event" not in export.tables:
        raise SourceError(
            f"{export.path}: no website_event table (website_event.csv): the events start there; "
            f"found {', '.join(sorted(export.tables)) or 'no Umami table'}"
        )
    if zipfile.is_zipfile(export.path):
        missing = [t for t in ("event_data", "session_data") if t not in export.tables]
        if missing:
            raise SourceError(
                f"{export.path}: no {' and no '.join(t + '.csv' for t in missing)}: Umami's export always "
                "has website_event.csv, event_data.csv and session_data.csv; a truncated or edited export? "
                "Fetch it again"
            )


def _spill(export: Export, options: ReadOptions, state: _Pass) -> None:
    """First pass: every table into buckets (events and sessions by session, event data by event)."""
    for name in ("website_event", "session", "session_data", "event_data"):
        table = export.tables.get(name)
        if table is None:
            continue
        rows = 0
        for chunk in iter_table(table, options, export):
            rows += chunk.height
            state.last_row[name] = max(state.last_row.get(name, 0), int(chunk.get_column(COL_ROW).max() or 0))
            if COL_SOURCE_ERROR in chunk.columns:
                bad = chunk.filter(pl.col(COL_SOURCE_ERROR).is_not_null())
                chunk = chunk.filter(pl.col(COL_SOURCE_ERROR).is_null())
                _unreadable(state, bad, name, table.label, export)
            if name == "website_event":
                events = _events(chunk, table.label)
                state.websites.update(events.get_column("website_id").drop_nulls().unique().to_list())
                state.buckets.add("ev", events.drop("website_id"), "session_id")
            elif name == "session":
                state.buckets.add("ses", chunk.select("session_id", *SESSION_ATTRS, COL_ROW), "session_id")
            else:
                state.buckets.add(name, _data_rows(chunk, name, table.label), "key")
        export.counts[name] = rows


def _unreadable(state: _Pass, bad: pl.DataFrame, table: str, label: str, export: Export) -> None:
    """Lines the CSV reader could not split: events are rejected rows, other tables a note."""
    if bad.height == 0:
        return
    if table == "website_event":
        state.buckets.put("unreadable", bad.select(COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW))
        return
    first = bad.get_column(COL_ROW).head(5).to_list()
    export.notes.append(
        f"{label}: {bad.height} unreadable row(s) not used (rows {', '.join(map(str, first))}"
        f"{', ...' if bad.height > 5 else ''}): {bad.get_column(COL_SOURCE_ERROR)[0]}"
    )


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """The output columns: FLAT_SCHEMA, ``_row`` and the problem as ``_source_error``."""
    return frame.select(
        *(pl.col(c).cast(t) for c, t in FLAT_SCHEMA.items()),
        pl.col(COL_ROW).cast(I64),
        pl.col("problem").alias(COL_SOURCE_ERROR),
    )


def read_frames(export: Export, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Every event (and identify row) of the export, in frames of at most ``chunk_rows``."""
    check_tables(export)
    state = _Pass(Buckets(bucket_count(export)))
    try:
        _spill(export, options, state)
        if len(state.websites) > 1:
            raise SourceError(
                f"{export.tables['website_event'].label}: events of {len(state.websites)} websites "
                f"({', '.join(sorted(state.websites)[:3])}): a mixed export; split it by website_id first"
            )
        for bad in state.buckets.iter_parts("unreadable"):
            yield bad.with_columns(pl.lit("event").alias("kind"))
        yield from _joined(export, state, options)
    finally:
        state.buckets.close()


def _joined(export: Export, state: _Pass, options: ReadOptions) -> Iterator[pl.DataFrame]:
    buckets = state.buckets
    has_sessions = "session" in export.tables
    events_end = state.last_row.get("website_event", 0)
    data_offset = events_end + state.last_row.get("session_data", 0)
    unmatched = 0
    for k in range(buckets.count):
        events = buckets.read("ev", k, EV_SCHEMA)
        sessions = buckets.read("ses", k, SES_SCHEMA)
        if has_sessions:
            known = sessions.get_column("session_id").unique()
            unmatched += events.filter(pl.col("session_id").is_in(known.implode()).not_()).height
        events = with_sessions(events, sessions, has_sessions)
        identify = identify_rows(
            buckets.read("session_data", k, {**DATA_SCHEMA, "distinct_id": S}), events, sessions, events_end
        )
        yield from _sliced(_flat(identify), options.chunk_rows)
        buckets.add("eve", events, "event_id")
    for k in range(buckets.count):
        events = buckets.read("eve", k, EV_SCHEMA)
        joined = with_data(events, buckets.read("event_data", k, DATA_SCHEMA), data_offset)
        yield from _sliced(_flat(joined), options.chunk_rows)
    if unmatched:
        export.notes.append(
            f"{export.tables['session'].label}: {unmatched} event(s) whose session_id is not in it: "
            "sent without browser, os, device, screen, language or location"
        )


def _sliced(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


# --------------------------------------------------------------------------- plugin entry points


def _export_for(source: SourceFile, stack: contextlib.ExitStack) -> Export | None:
    """The export a file stands for; None for a sibling table read through its website_event file."""
    name = table_name(source.path)
    if name not in (None, "website_event") and not source.path.lower().endswith(".zip"):
        folder = os.path.dirname(source.path)
        if any(table_name(f) == "website_event" for f in os.listdir(folder)):
            return None
        raise SourceError(
            f"{source.path}: Umami's {name} table alone; the website_event table (website_event.csv) "
            "must be next to it: the events start there"
        )
    return find_export(source.path, stack)


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    with contextlib.ExitStack() as stack:
        export = _export_for(source, stack)
        if export is not None:
            try:
                yield from read_frames(export, options)
            finally:  # what the reader noticed reaches the run's summary and --report
                for text in export.notes:
                    options.note(text)


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed columns; an unreadable ZIP or a missing website_event table fails here, before any row."""
    with contextlib.ExitStack() as stack:
        export = _export_for(source, stack)
        if export is not None:
            check_tables(export)
    return {**FLAT_SCHEMA, COL_SOURCE_ERROR: S}


_SIGNATURE = {"session_id", "visit_id", "event_type", "created_at"}


def sniff(path: str) -> bool:
    """A ZIP or folder with website_event.csv, or a CSV whose header has Umami's event columns."""
    try:
        if os.path.isdir(path):
            return any(table_name(f) == "website_event" for f in os.listdir(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(table_name(n) == "website_event" for n in archive.namelist())
        with open(path, "rb") as fh:
            head = fh.read(1024).decode("utf-8", "replace").splitlines()
    except (OSError, zipfile.BadZipFile):
        return False
    names = {c.strip().strip('"').lower() for c in head[0].split(",")} if head else set()
    return names >= _SIGNATURE


PLUGIN = FormatPlugin(
    name="umami",
    description="Umami export (the Cloud 'Export data' ZIP, its CSVs, or a PostgreSQL dump of its tables)",
    iter_frames=iter_frames,
    schema=flat_schema,
    extensions=(".zip",),
    sniff=sniff,
    preset="umami-export",
)


def describe(path: str, options: ReadOptions | None = None) -> dict[str, object]:
    """Tables, rows read per table, rows produced per kind, and the notes (reads the whole export)."""
    options = options or ReadOptions(format="umami")
    with contextlib.ExitStack() as stack:
        export = find_export(path, stack)
        kinds: dict[str, int] = {}
        for frame in read_frames(export, options):
            for kind, n in frame.group_by("kind").len().iter_rows():
                kinds[kind] = kinds.get(kind, 0) + n
    return {
        "tables": {t: x.label for t, x in export.tables.items()},
        "rows": export.counts,
        "produced": kinds,
        "notes": export.notes,
    }


def main(argv: list[str] | None = None) -> int:
    import json

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m backfill.sources.umami_export EXPORT.zip|website_event.csv...", file=sys.stderr)
        return 2
    for path in args:
        try:
            print(json.dumps({"export": path, **describe(path)}, indent=2))
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


__all__ = ["FLAT_SCHEMA", "PLUGIN", "TABLES", "describe", "find_export", "read_frames", "sniff", "table_name"]

if __name__ == "__main__":
    sys.exit(main())
