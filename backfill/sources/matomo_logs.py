"""Matomo's raw log tables (a database dump): ``--format matomo_logs``.

A Matomo site's history is in four MySQL tables, dumped one file per table
(``mysql --batch -e 'SELECT * FROM matomo_log_visit' > matomo_log_visit.tsv``,
or CSV with a header; ``.gz``/``.zst`` read directly; table prefix ``matomo_``,
``piwik_``, any other ``<prefix>_`` or none):

* ``log_link_visit_action``: one row per action (page view, download, outlink,
  site search, event, content interaction), with ids into ``log_action``;
* ``log_action``: the dictionary of URLs, titles, event categories, ... (its
  ``url_prefix`` code gives back the ``https://www.`` Matomo strips);
* ``log_visit``: one row per visit: visitor, device, location, referrer;
* ``log_conversion``: goal conversions and ecommerce orders, with revenue;
* optionally ``site`` (``SELECT idsite, currency FROM matomo_site``): the
  currency of each site's revenue (Matomo keeps one per site, not per row).

The rows of the import are the rows of ``log_link_visit_action`` and
``log_conversion``; ``log_visit``, ``log_action`` and ``site`` are looked up
(those files yield no rows of their own). Each action file finds its tables in
its own folder, by the same prefix, so pass the folder or all the files.

Memory, as the tables' sizes are very different:

* ``log_action`` is held whole, as a dictionary (id, type, text): roughly
  20 bytes plus the text per row (measured: 44 bytes a row with 24-character
  URLs); usually far smaller than the actions.
* ``log_visit``, reduced to the 13 columns used (measured: about 100 bytes a
  visit with short referrers and city names), is held
  whole when its (decompressed) file is under :data:`PARTITION_BYTES`. A larger
  one is hash-partitioned by ``idvisit`` into K Arrow files on disk, and the
  actions likewise as they are read; partition k of both is then joined on its
  own. Memory is then one partition of visits plus one chunk of actions; disk
  is about the size of both tables' used columns (``BACKFILL_TMPDIR``).
* ``log_link_visit_action`` and ``log_conversion`` stream in chunks.

A row that cannot become an event names itself: an action id with no
``log_action`` row, an ``idvisit`` with no ``log_visit`` row, a ``server_time``
that is not a time, a row cut short (a truncated dump) are rejected with that
reason (``_source_error``), never dropped. A missing table, or a dictionary
table with an unreadable row, refuses the run before anything is sent.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources import csv as csv_reader
from backfill.sources.compression import iter_decompressed, local_file, take_head, temp_dir
from backfill.sources.matomo_codes import (
    EVENT_NAMES,
    FLAT_SCHEMA,
    URL_PREFIXES,
    browser_expr,
    country_expr,
    device_expr,
    finish,
    hostname_expr,
    language_expr,
    os_expr,
    positive,
    region_expr,
    screen_expr,
    text,
    visitor_expr,
)
from backfill.transform import map_unique

S = pl.String()
U64 = pl.UInt64()

#: A log_visit file larger than this (decompressed) is joined partition by partition.
PARTITION_BYTES = 256 << 20
#: Gzip/zstd dumps of these tables shrink about this much; used to estimate the size.
COMPRESSION_RATIO = 6

#: Required and optional columns of each table (others in the dump are not read).
TABLE_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log_link_visit_action": (
        ("idvisit", "server_time", "idaction_url"),
        (
            "idlink_va",
            "idaction_url_ref",
            "idaction_name",
            "idaction_event_category",
            "idaction_event_action",
            "idaction_content_name",
            "custom_float",
            "search_cat",
            "search_count",
        ),
    ),
    "log_visit": (
        ("idvisit", "idvisitor"),
        (
            "idsite",
            "user_id",
            "visit_first_action_time",
            "referer_url",
            "config_browser_name",
            "config_os",
            "config_os_version",
            "config_device_type",
            "config_resolution",
            "location_browser_lang",
            "location_country",
            "location_region",
            "location_city",
        ),
    ),
    "log_action": (("idaction", "name", "type"), ("url_prefix",)),
    "log_conversion": (("idvisit", "idgoal", "server_time"), ("idsite", "url", "revenue", "idorder")),
    "site": (("idsite", "currency"), ()),
}
#: The tables whose rows are the import's rows, and the tables each one needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "log_link_visit_action": ("log_visit", "log_action"),
    "log_conversion": ("log_visit",),
}
_TABLE_FILE = re.compile(
    r"^(?P<prefix>|.*_)(?P<table>log_link_visit_action|log_visit|log_action|log_conversion|site)"
    r"\.(?P<ext>tsv|csv|txt)(?P<comp>\.gz|\.zst|\.zstd)?$",
    re.IGNORECASE,
)
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_DATETIME = "%Y-%m-%d %H:%M:%S"
_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PART = "__part"


# --------------------------------------------------------------------------- the dump's files


@dataclass(frozen=True)
class TableFile:
    """One table's file in a dump."""

    path: str
    table: str
    prefix: str
    compression: str | None
    tsv: bool  # mysql --batch / INTO OUTFILE: tab-separated, unquoted, backslash escapes

    @property
    def dialect(self) -> csv_reader.Dialect:
        return csv_reader.Dialect("\t", "", True) if self.tsv else csv_reader.Dialect(",", '"', True)


def table_file(path: str) -> TableFile | None:
    """The table a file holds, from its name (``matomo_log_visit.tsv.gz``); None if it is none."""
    match = _TABLE_FILE.match(os.path.basename(path))
    if match is None:
        return None
    comp = (match["comp"] or "").lower()
    return TableFile(
        path=path,
        table=match["table"].lower(),
        prefix=match["prefix"],
        compression=_COMPRESSION.get(comp),
        tsv=match["ext"].lower() != "csv",
    )


def _own_table(source: SourceFile) -> TableFile:
    found = table_file(source.path)
    if found is None:
        raise SourceError(
            f"{source.path}: not a Matomo log table: name each file after its table "
            "(log_link_visit_action, log_visit, log_action, log_conversion, site), with an "
            "optional prefix such as matomo_ or piwik_, ending .tsv, .csv or .txt (+ .gz/.zst), "
            "e.g. matomo_log_visit.tsv.gz"
        )
    return found


def sibling(own: TableFile, table: str) -> TableFile | None:
    """The dump's file for ``table``: same folder, same prefix; SourceError if there are two."""
    folder = os.path.dirname(own.path) or "."
    found = []
    for name in sorted(os.listdir(folder)):
        other = table_file(os.path.join(folder, name))
        if other is not None and other.table == table and other.prefix.lower() == own.prefix.lower():
            found.append(other)
    if len(found) > 1:
        raise SourceError(
            f"{folder}: the dump has {len(found)} files for table {own.prefix}{table} "
            f"({', '.join(os.path.basename(f.path) for f in found)}); keep one"
        )
    return found[0] if found else None


def _needed(own: TableFile, table: str) -> TableFile:
    found = sibling(own, table)
    if found is None:
        raise SourceError(
            f"{own.path}: the dump has no table {own.prefix}{table} next to it; {own.table} "
            f"cannot be read without it. Export it into the same folder, e.g. "
            f"mysql --batch -e 'SELECT * FROM {own.prefix or 'matomo_'}{table}' > {own.prefix}{table}.tsv"
        )
    return found


def header(tf: TableFile, encoding: str) -> tuple[str, ...]:
    """The table file's column names; SourceError when a required one is missing.

    An empty file is an empty table (``mysql --batch`` prints nothing, not even the
    header, for a query without rows): no columns, and no rows.
    """
    blocks = iter_decompressed(tf.path, tf.compression)
    head, at_eof = take_head(blocks, csv_reader.HEADER_MAX_BYTES)
    if encoding.lower().replace("-", "") not in ("utf8", "utf8sig"):
        head = head.decode(encoding, "replace").encode("utf-8")
    found = csv_reader.read_header(head, at_eof, tf.path, tf.dialect)
    if found is None:
        return ()
    names = found.names
    required = TABLE_COLUMNS[tf.table][0]
    missing = [c for c in required if c not in names]
    if missing:
        shown = ", ".join(map(repr, names[:12]))
        raise SourceError(
            f"{tf.path}: table {tf.table} needs the column(s) {', '.join(map(repr, missing))}; "
            f"the first line has {shown}. Export it with its header line (mysql --batch writes one; "
            "not with -N / --skip-column-names)"
        )
    return names


def read_table(tf: TableFile, options: ReadOptions, *, bad_records: str) -> Iterator[pl.DataFrame]:
    """The used columns of a table file in chunks (text; missing optional columns null)."""
    required, optional = TABLE_COLUMNS[tf.table]
    names = header(tf, options.encoding)
    if not names:
        return
    present = [c for c in (*required, *optional) if c in names]
    with local_file(tf.path, tf.compression, options.encoding, ".txt") as path:
        for frame in csv_reader.iter_csv(
            path,
            name=tf.path,
            dialect=tf.dialect,
            columns=present,
            chunk_rows=options.chunk_rows,
            bad_records=bad_records,
        ):
            missing = [pl.lit(None, S).alias(c) for c in (*required, *optional) if c not in frame.columns]
            yield frame.with_columns(missing) if missing else frame


def unescape(values: pl.Series) -> pl.Series:
    """Undo mysql --batch's backslash escapes (``\\t``, ``\\n``, ``\\\\``) on the values that have one."""
    if not values.str.contains("\\", literal=True).any():
        return values
    return map_unique(values, lambda v: _ESCAPE.sub(lambda m: _MYSQL_ESCAPES.get(m[1], m[1]), v), S)


def _text_column(frame: pl.DataFrame, column: str, tsv: bool) -> pl.Series:
    values = frame.select(text(pl.col(column)).alias(column)).get_column(column)
    return unescape(values) if tsv else values


def _id(column: str) -> pl.Expr:
    """An id column as UInt64; 0 (Matomo's "none") and non-numbers are null."""
    value = text(pl.col(column)).cast(U64, strict=False)
    return pl.when(value != 0).then(value)


def _epoch(column: str) -> pl.Expr:
    return text(pl.col(column)).str.strptime(pl.Datetime("us"), _DATETIME, strict=False).dt.epoch("s")


# --------------------------------------------------------------------------- dictionaries


def load_actions(tf: TableFile, options: ReadOptions) -> pl.DataFrame:
    """log_action as (idaction, a_type, a_text, a_found); URLs get their prefix back."""
    frames = []
    for raw in read_table(tf, options, bad_records="raise"):
        name = _text_column(raw, "name", tf.tsv)
        prefix = text(pl.col("url_prefix")).cast(pl.Int64, strict=False)
        scheme = prefix.replace_strict(URL_PREFIXES, default=None, return_dtype=S)
        frames.append(
            raw.with_columns(name.alias("name")).select(
                _id("idaction").alias("idaction"),
                text(pl.col("type")).cast(pl.Int64, strict=False).alias("a_type"),
                pl.when(scheme.is_not_null())
                .then(pl.concat_str(scheme, pl.col("name")))
                .otherwise(pl.col("name"))
                .alias("a_text"),
                pl.lit(True).alias("a_found"),
            )
        )
    if not frames:
        return pl.DataFrame(schema={"idaction": U64, "a_type": pl.Int64(), "a_text": S, "a_found": pl.Boolean()})
    return pl.concat(frames).filter(pl.col("idaction").is_not_null()).unique("idaction", keep="first")


def load_currencies(own: TableFile, options: ReadOptions) -> pl.DataFrame:
    """site as (idsite, currency); empty when the dump has no site table."""
    tf = sibling(own, "site")
    frames = []
    if tf is not None:
        for raw in read_table(tf, options, bad_records="raise"):
            frames.append(
                raw.select(
                    text(pl.col("idsite")).alias("idsite"),
                    text(pl.col("currency")).str.to_uppercase().alias("currency"),
                )
            )
    if not frames:
        return pl.DataFrame(schema={"idsite": S, "currency": S})
    return pl.concat(frames).unique("idsite", keep="first")


def shape_visits(raw: pl.DataFrame, tsv: bool) -> pl.DataFrame:
    """log_visit rows -> the visit columns each event gets (Umami's vocabulary)."""
    raw = raw.with_columns(
        _text_column(raw, c, tsv).alias(c) for c in ("referer_url", "location_city", "user_id", "idvisitor")
    )
    country = country_expr(pl.col("location_country"))
    return raw.select(
        _id("idvisit").alias("idvisit"),
        text(pl.col("idsite")).alias("v_idsite"),
        visitor_expr(pl.col("user_id"), pl.col("idvisitor")).alias("visitor_id"),
        _epoch("visit_first_action_time").alias("v_first"),
        text(pl.col("referer_url")).alias("v_referrer"),
        screen_expr(pl.col("config_resolution")).alias("screen"),
        language_expr(pl.col("location_browser_lang")).alias("language"),
        browser_expr(pl.col("config_browser_name"), pl.col("config_os")).alias("browser"),
        os_expr(pl.col("config_os"), pl.col("config_os_version")).alias("os"),
        device_expr(pl.col("config_device_type")).alias("device"),
        country.alias("country"),
        region_expr(country, pl.col("location_region")).alias("region"),
        text(pl.col("location_city")).alias("city"),
    )


# --------------------------------------------------------------------------- actions and conversions


def _lookup(frame: pl.DataFrame, actions: pl.DataFrame, column: str, prefix: str) -> pl.DataFrame:
    """Join one action id column to the dictionary: ``<prefix>_type``, ``<prefix>_text``."""
    table = actions.rename(
        {"idaction": column, "a_type": f"{prefix}_type", "a_text": f"{prefix}_text", "a_found": f"{column}__found"}
    )
    joined = frame.join(table, on=column, how="left", maintain_order="left")
    return joined.with_columns(pl.col(f"{column}__found").fill_null(False))


def _orphan(column: str) -> pl.Expr:
    """The reason a row's action id has no log_action row (null when it has one)."""
    missing = pl.col(column).is_not_null() & pl.col(f"{column}__found").not_()
    return pl.when(missing).then(pl.format(f"{column} {{}} has no row in log_action", pl.col(column)))


def shape_actions(raw: pl.DataFrame, actions: pl.DataFrame, tsv: bool) -> pl.DataFrame:
    """log_link_visit_action rows -> events (without the visit's columns yet)."""
    ids = ("idaction_url", "idaction_url_ref", "idaction_name", "idaction_event_category", "idaction_event_action")
    frame = raw.with_columns(
        *(_id(c).alias(c) for c in ids),
        _id("idaction_content_name").alias("content"),
        _id("idvisit").alias("idvisit"),
        _epoch("server_time").alias("timestamp"),
        _text_column(raw, "search_cat", tsv).alias("search_cat"),
    )
    for column, prefix in zip(ids, ("url", "ref", "nam", "cat", "act"), strict=True):
        frame = _lookup(frame, actions, column, prefix)
    page_type = pl.coalesce(pl.col("url_type"), pl.col("nam_type"))
    kind = (
        pl.when(pl.col("idaction_event_category").is_not_null())
        .then(pl.lit("event"))
        .when(pl.col("content").is_not_null())
        .then(pl.lit("content"))
        .when(page_type.is_in([1, 4]))
        .then(pl.lit("pageview"))
        .when(page_type == 2)
        .then(pl.lit("outlink"))
        .when(page_type == 3)
        .then(pl.lit("download"))
        .when(page_type == 8)
        .then(pl.lit("site_search"))
    )
    frame = frame.with_columns(kind.alias("kind"), page_type.alias("page_type"))
    link = pl.col("kind").is_in(["outlink", "download"])
    is_event = pl.col("kind") == "event"
    value = text(pl.col("custom_float")).cast(pl.Float64, strict=False)
    return frame.with_columns(
        pl.when(is_event)
        .then(pl.col("act_text"))
        .otherwise(pl.col("kind").replace_strict(EVENT_NAMES, default=None, return_dtype=S))
        .alias("event_name"),
        pl.when(link | (pl.col("kind") == "site_search"))
        .then(pl.col("ref_text"))
        .otherwise(pl.col("url_text"))
        .alias("url"),
        pl.when(pl.col("kind") == "pageview").then(pl.col("nam_text")).alias("title"),
        pl.when(link).then(pl.col("url_text")).alias("link_url"),
        pl.when(is_event).then(pl.col("cat_text")).otherwise(pl.col("search_cat")).alias("category"),
        pl.when(is_event).then(pl.col("act_text")).alias("action"),
        pl.when(is_event).then(pl.col("nam_text")).alias("label"),
        pl.when(is_event).then(value).alias("value"),
        pl.when(pl.col("kind") == "site_search").then(pl.col("nam_text")).alias("keyword"),
        pl.when(pl.col("kind") == "site_search")
        .then(text(pl.col("search_count")).cast(pl.Int64, strict=False))
        .alias("search_count"),
        _action_error(ids).alias("_error"),
    )


def _action_error(ids: tuple[str, ...]) -> pl.Expr:
    """Why an action row cannot become an event, or null."""
    return pl.coalesce(
        pl.when(pl.col("timestamp").is_null()).then(
            pl.format("server_time {} is not a time (YYYY-MM-DD HH:MM:SS)", text(pl.col("server_time")))
        ),
        *(_orphan(c) for c in ids),
        pl.when(pl.col("kind").is_null()).then(
            pl.format(
                "action of type {} (idaction_url {}) is not a page view, download, outlink, site search or event",
                pl.col("page_type"),
                pl.col("idaction_url"),
            )
        ),
        pl.when((pl.col("kind") == "event") & pl.col("act_text").is_null()).then(
            pl.lit("an event without an action (idaction_event_action is empty)")
        ),
    )


def shape_conversions(raw: pl.DataFrame, tsv: bool) -> pl.DataFrame:
    """log_conversion rows -> goal / ecommerce order events (without the visit's columns yet)."""
    goal = text(pl.col("idgoal")).cast(pl.Int64, strict=False)
    kind = (
        pl.when(goal == 0)
        .then(pl.lit("ecommerce_order"))
        .when(goal == -1)
        .then(pl.lit("abandoned_cart"))
        .when(goal > 0)
        .then(pl.lit("goal"))
    )
    frame = raw.with_columns(_text_column(raw, "url", tsv).alias("url"), kind.alias("kind"))
    is_goal = pl.col("kind") == "goal"
    return frame.with_columns(
        _id("idvisit").alias("idvisit"),
        _epoch("server_time").alias("timestamp"),
        text(pl.col("idsite")).alias("c_idsite"),
        pl.when(is_goal)
        .then(pl.concat_str(pl.lit("goal_"), goal.cast(S)))
        .otherwise(pl.col("kind").replace_strict(EVENT_NAMES, default=None, return_dtype=S))
        .alias("event_name"),
        pl.when(is_goal).then(goal.cast(S)).alias("goal_id"),
        pl.when(pl.col("kind") == "ecommerce_order").then(text(pl.col("idorder"))).alias("order_id"),
        positive(pl.col("revenue")).alias("revenue"),
        pl.coalesce(
            pl.when(pl.col("kind").is_null()).then(pl.format("idgoal {} is not a goal id", text(pl.col("idgoal")))),
            pl.when(_epoch("server_time").is_null()).then(
                pl.format("server_time {} is not a time (YYYY-MM-DD HH:MM:SS)", text(pl.col("server_time")))
            ),
        ).alias("_error"),
    )


# --------------------------------------------------------------------------- joining the visits


def attach_visits(events: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """Add each event's visit columns; an event whose visit is missing gets an error."""
    joined = events.join(visits, on="idvisit", how="left", maintain_order="left")
    first = pl.col("v_first").is_null() | (pl.col("timestamp") <= pl.col("v_first"))
    orphan = pl.when(pl.col("idvisit").is_not_null() & pl.col("visitor_id").is_null()).then(
        pl.format("idvisit {} has no row in log_visit", pl.col("idvisit"))
    )
    no_visit = pl.when(pl.col("idvisit").is_null()).then(pl.lit("no idvisit"))
    error = pl.coalesce(pl.col("_error"), no_visit, orphan)
    return joined.with_columns(
        pl.col("idvisit").cast(S).alias("visit_id"),
        pl.col("v_idsite").alias("site_id"),
        pl.when(first).then(pl.col("v_referrer")).alias("referrer"),
        hostname_expr(pl.col("url")).alias("hostname"),
        error.alias("_error"),
    )


def _with_errors(frame: pl.DataFrame) -> pl.DataFrame:
    """Set ``_source_error``/``_source_raw`` from ``_error`` (keeping a reader's own)."""
    own = pl.col(COL_SOURCE_ERROR) if COL_SOURCE_ERROR in frame.columns else pl.lit(None, S)
    own_raw = pl.col(COL_SOURCE_RAW) if COL_SOURCE_RAW in frame.columns else pl.lit(None, S)
    described = pl.concat_str(
        pl.lit("idvisit="),
        pl.col("idvisit").cast(S).fill_null(""),
        pl.lit(" server_time="),
        text(pl.col("server_time")).fill_null(""),
    )
    return frame.with_columns(
        pl.coalesce(own, pl.col("_error")).alias(COL_SOURCE_ERROR),
        pl.coalesce(own_raw, pl.when(pl.col("_error").is_not_null()).then(described)).alias(COL_SOURCE_RAW),
    )


def visit_partitions(tf: TableFile) -> int:
    """How many partitions log_visit is joined in (1: held whole), from its decompressed size."""
    size = os.path.getsize(tf.path) * (COMPRESSION_RATIO if tf.compression else 1)
    return max(1, math.ceil(size / PARTITION_BYTES))


def join_visits(
    events: Iterator[pl.DataFrame],
    visits_file: TableFile,
    options: ReadOptions,
    partitions: int | None = None,
) -> Iterator[pl.DataFrame]:
    """Each chunk of events with its visit's columns, holding at most one partition of visits."""
    parts = visit_partitions(visits_file) if partitions is None else partitions
    visit_chunks = (shape_visits(raw, visits_file.tsv) for raw in read_table(visits_file, options, bad_records="raise"))
    if parts == 1:
        visits = _unique_visits(list(visit_chunks))
        for chunk in events:
            yield attach_visits(chunk, visits)
        return
    with tempfile.TemporaryDirectory(prefix="backfill-matomo-", dir=temp_dir()) as tmp:
        visit_files = _spill(visit_chunks, parts, os.path.join(tmp, "v"))
        event_files = _spill(events, parts, os.path.join(tmp, "e"))
        for k in range(parts):
            visits = _unique_visits([pl.read_ipc(p) for p in visit_files[k]])
            for path in event_files[k]:
                yield attach_visits(pl.read_ipc(path), visits)
                os.unlink(path)


def _unique_visits(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One row per idvisit (a duplicated visit row must not duplicate its events)."""
    if not frames:
        return shape_visits(pl.DataFrame(schema=dict.fromkeys(sum(TABLE_COLUMNS["log_visit"], ()), S)), False)
    return pl.concat(frames).filter(pl.col("idvisit").is_not_null()).unique("idvisit", keep="first")


def _spill(chunks: Iterator[pl.DataFrame], parts: int, stem: str) -> list[list[str]]:
    """Write each chunk's rows into the Arrow file of their ``idvisit`` partition."""
    files: list[list[str]] = [[] for _ in range(parts)]
    for i, chunk in enumerate(chunks):
        keyed = chunk.with_columns((pl.col("idvisit").fill_null(0) % parts).cast(pl.Int64).alias(_PART))
        for (k,), part in keyed.partition_by(_PART, as_dict=True, include_key=False).items():
            path = f"{stem}-{k}-{i}.arrow"
            part.write_ipc(path)
            files[int(k)].append(path)
    return files


# --------------------------------------------------------------------------- plugin entry points


def iter_events(source: SourceFile, options: ReadOptions, partitions: int | None = None) -> Iterator[pl.DataFrame]:
    """The events of one table file (none for the dictionary tables), each with ``_row``."""
    own = _own_table(source)
    if own.table not in NEEDS:
        header(own, options.encoding)  # a broken dictionary file is named even if no action file is read
        return
    visits_file = _needed(own, "log_visit")
    if own.table == "log_link_visit_action":
        actions = load_actions(_needed(own, "log_action"), options)
        raw_chunks = read_table(own, options, bad_records="reject")
        events = (shape_actions(raw, actions, own.tsv) for raw in raw_chunks)
    else:
        currencies = load_currencies(own, options)
        raw_chunks = read_table(own, options, bad_records="reject")
        events = (_with_currency(shape_conversions(raw, own.tsv), currencies) for raw in raw_chunks)
    for frame in join_visits(events, visits_file, options, partitions):
        frame = _with_errors(frame)
        if "currency" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, S).alias("currency"))
        yield finish(frame, (COL_SOURCE_ERROR, COL_SOURCE_RAW))


def _with_currency(conversions: pl.DataFrame, currencies: pl.DataFrame) -> pl.DataFrame:
    return conversions.join(
        currencies.rename({"idsite": "c_idsite"}), on="c_idsite", how="left", maintain_order="left"
    ).with_columns(pl.when(pl.col("revenue").is_not_null()).then(pl.col("currency")).alias("currency"))


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns, after checking that this file and the tables it needs are there."""
    own = _own_table(source)
    header(own, options.encoding)
    for table in NEEDS.get(own.table, ()):
        header(_needed(own, table), options.encoding)
    return dict(FLAT_SCHEMA)


def sniff(path: str) -> bool:
    """A log table file, or a folder holding log_link_visit_action."""
    if os.path.isdir(path):
        with contextlib.suppress(OSError):
            return any(
                (tf := table_file(name)) is not None and tf.table == "log_link_visit_action"
                for name in os.listdir(path)
            )
        return False
    return table_file(path) is not None


PLUGIN = FormatPlugin(
    name="matomo_logs",
    description="Matomo raw log tables: log_link_visit_action, log_visit, log_action, log_conversion "
    "(mysql --batch TSV or CSV, one file per table, .gz/.zst)",
    iter_frames=iter_events,
    schema=flat_schema,
    extensions=(".txt",),
    sniff=sniff,
    preset="matomo-logs",
)

__all__ = [
    "PARTITION_BYTES",
    "PLUGIN",
    "TABLE_COLUMNS",
    "TableFile",
    "iter_events",
    "join_visits",
    "load_actions",
    "sibling",
    "table_file",
    "unescape",
]
