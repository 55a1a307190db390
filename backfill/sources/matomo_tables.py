"""The files of a Matomo database dump, and the dictionary tables the log tables are read with.

One file per table, named after it (``matomo_log_visit.tsv.gz``: an optional
prefix such as ``matomo_`` or ``piwik_``, the table, ``.tsv``/``.csv``/``.txt``,
optionally ``.gz``/``.zst``), as ``mysql --batch`` writes it (tab-separated,
unquoted, ``\\N`` for NULL, backslash escapes) or as CSV with a header.

People dump a whole database, so a folder holds Matomo's other tables too
(``option``, ``user``, ``archive_numeric_2024_01``, a plugin's tables): those are
ignored, with one note naming them (:func:`ignored_note`). A table is a Matomo
table when its name is one of Matomo's (:data:`MATOMO_TABLES`,
:data:`MATOMO_TABLE_PATTERNS`), or when it carries the same prefix as the dump's
log tables; any other file in the folder is refused, naming it, as it may be a
log table under another name.

The tables read, besides the actions and conversions (``matomo_logs``):

* ``log_action``: the dictionary of URLs, titles, event names, item SKUs, ...;
* ``log_visit``: one row per visit (also where the sites' visits are counted);
* ``site``: each site's name, main URL and currency (Matomo keeps one currency
  per site);
* ``goal``: each goal's name, deleted goals included (their conversions stay);
* ``log_conversion_item``: the items of each ecommerce order.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from backfill.errors import SourceError
from backfill.sources import ReadOptions
from backfill.sources import csv as csv_reader
from backfill.sources.compression import iter_decompressed, local_file, take_head
from backfill.sources.matomo_codes import URL_PREFIXES, item_lines, items_object, text, unsanitize
from backfill.sources.matomo_sites import Site, sites_of
from backfill.transform import map_unique

S = pl.String()
U64 = pl.UInt64()

#: Required and optional columns of each table read (others in the dump are not read).
TABLE_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log_link_visit_action": (
        ("idvisit", "server_time", "idaction_url"),
        (
            "idlink_va",
            "idsite",
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
    "log_conversion": (
        ("idvisit", "idgoal", "server_time"),
        ("idsite", "url", "revenue", "idorder", "items"),
    ),
    "log_conversion_item": (
        ("idvisit", "idorder", "idaction_sku"),
        ("idaction_name", "idaction_category", "price", "quantity", "deleted"),
    ),
    "site": (("idsite",), ("name", "main_url", "currency")),
    "goal": (("idsite", "idgoal", "name"), ("deleted",)),
}
#: Matomo's own tables (core and the plugins it ships) that an import does not read.
MATOMO_TABLES = (
    "access",
    "alert",
    "alert_site",
    "alert_triggered",
    "archive_invalidations",
    "brute_force_log",
    "changes",
    "custom_dimensions",
    "funnel",
    "locks",
    "log_profiling",
    "logger_api_call",
    "logger_error",
    "logger_exception",
    "logger_message",
    "option",
    "plugin_setting",
    "privacy_logdata_anonymizations",
    "queuedtracking_queue",
    "report",
    "report_subscriptions",
    "segment",
    "sequence",
    "session",
    "site_setting",
    "site_url",
    "tracking_failure",
    "twofactor_recovery_code",
    "usage_measurement_profiles",
    "user",
    "user_dashboard",
    "user_language",
    "user_token_auth",
)
#: Families of Matomo tables: monthly archives, plugins' log and settings tables.
MATOMO_TABLE_PATTERNS = (
    r"archive_(numeric|blob)_\d{4}_\d{2}",
    r"log_[a-z0-9_]+",
    r"tagmanager_[a-z0-9_]+",
    r"custom_[a-z0-9_]+",
    r"funnel_[a-z0-9_]+",
    r"goal_[a-z0-9_]+",
    r"user_[a-z0-9_]+",
)
#: The tables whose rows are the import's rows, and the tables each one needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "log_link_visit_action": ("log_visit", "log_action"),
    "log_conversion": ("log_visit",),
}
_FILE = re.compile(r"^(?P<stem>.+?)\.(?P<ext>tsv|csv|txt)(?P<comp>\.gz|\.zst|\.zstd)?$", re.IGNORECASE)
_TABLES_LONGEST_FIRST = sorted((*TABLE_COLUMNS, *MATOMO_TABLES), key=len, reverse=True)
_OTHER = re.compile(rf"^(?P<prefix>|.*?_)(?P<table>{'|'.join(MATOMO_TABLE_PATTERNS)})$")
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_DATETIME = "%Y-%m-%d %H:%M:%S"
_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
#: log_action.type of an item's SKU, name and category (core/Tracker/Action.php).
ITEM_TYPES = (5, 6, 7)


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

    @property
    def used(self) -> bool:
        """Whether an import reads this table (else it is one of Matomo's others, ignored)."""
        return self.table in TABLE_COLUMNS


def table_file(path: str) -> TableFile | None:
    """The Matomo table a file holds, from its name (``matomo_log_visit.tsv.gz``); None if none."""
    match = _FILE.match(os.path.basename(path))
    if match is None:
        return None
    stem = match["stem"]
    found = _split_table(stem)
    if found is None:
        return None
    comp = (match["comp"] or "").lower()
    return TableFile(
        path=path,
        table=found[1],
        prefix=found[0],
        compression=_COMPRESSION.get(comp),
        tsv=match["ext"].lower() != "csv",
    )


def _split_table(stem: str) -> tuple[str, str] | None:
    """(prefix, table) of a file name's stem; the longest table name wins (``alert_site``, not ``site``)."""
    lower = stem.lower()
    for table in _TABLES_LONGEST_FIRST:
        if lower == table or lower.endswith("_" + table):
            return stem[: len(stem) - len(table)], table
    other = _OTHER.match(lower)
    if other is not None:
        return stem[: len(other["prefix"])], other["table"]
    return None


def dump_tables(folder: str) -> list[TableFile]:
    """Every Matomo table file in a folder; a file with the prefix of the dump's log tables
    (``matomo_anything.tsv`` beside ``matomo_log_visit.tsv``) is one too (a plugin's table)."""
    files = []
    names = sorted(os.listdir(folder))
    for name in names:
        found = table_file(os.path.join(folder, name))
        if found is not None:
            files.append(found)
    prefixes = {f.prefix.lower() for f in files if f.table in NEEDS["log_link_visit_action"] and f.prefix}
    known = {f.path for f in files}
    for name in names:
        path = os.path.join(folder, name)
        match = _FILE.match(name)
        if path in known or match is None:
            continue
        prefix = next((p for p in prefixes if match["stem"].lower().startswith(p)), None)
        if prefix is not None:
            stem = match["stem"]
            comp = (match["comp"] or "").lower()
            tsv = match["ext"].lower() != "csv"
            files.append(TableFile(path, stem[len(prefix) :].lower(), stem[: len(prefix)], _COMPRESSION.get(comp), tsv))
    return files


def own_table(path: str) -> TableFile:
    """The table of an input file; SourceError naming it when it is no Matomo table."""
    folder = os.path.dirname(path) or "."
    found = next((f for f in dump_tables(folder) if f.path == path), None)
    if found is None:
        raise SourceError(
            f"{path}: not a Matomo table: name each file after its table "
            "(log_link_visit_action, log_visit, log_action, log_conversion, site, goal, ...), with an "
            "optional prefix such as matomo_ or piwik_, ending .tsv, .csv or .txt (+ .gz/.zst), "
            "e.g. matomo_log_visit.tsv.gz; or move it out of the dump's folder"
        )
    return found


def ignored_note(own: TableFile) -> str | None:
    """One note per dump naming the Matomo tables in its folder that the import does not read."""
    folder = os.path.dirname(own.path) or "."
    unused = sorted({f.table for f in dump_tables(folder) if not f.used and f.prefix.lower() == own.prefix.lower()})
    if not unused:
        return None
    archives = [t for t in unused if t.startswith("archive_")]
    shown = [t for t in unused if not t.startswith("archive_")]
    if archives:
        shown.append(f"archive_* ({len(archives)} monthly tables)")
    return (
        f"{folder}: {len(unused)} Matomo table(s) not used by the import, ignored: "
        f"{', '.join(own.prefix + t if not t.startswith('archive_*') else t for t in shown)}"
    )


def sibling(own: TableFile, table: str) -> TableFile | None:
    """The dump's file for ``table``: same folder, same prefix; SourceError if there are two."""
    folder = os.path.dirname(own.path) or "."
    found = [f for f in dump_tables(folder) if f.table == table and f.prefix.lower() == own.prefix.lower() and f.used]
    if len(found) > 1:
        raise SourceError(
            f"{folder}: the dump has {len(found)} files for table {own.prefix}{table} "
            f"({', '.join(os.path.basename(f.path) for f in found)}); keep one"
        )
    return found[0] if found else None


def needed(own: TableFile, table: str) -> TableFile:
    """A table the file cannot be read without; SourceError saying how to export it."""
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


def read_table(
    tf: TableFile, options: ReadOptions, *, bad_records: str, columns: tuple[str, ...] | None = None
) -> Iterator[pl.DataFrame]:
    """The used columns of a table file in chunks (text; missing optional columns null)."""
    required, optional = TABLE_COLUMNS[tf.table]
    wanted = columns or (*required, *optional)
    names = header(tf, options.encoding)
    if not names:
        return
    present = [c for c in wanted if c in names]
    with local_file(tf.path, tf.compression, options.encoding, ".txt") as path:
        for frame in csv_reader.iter_csv(
            path,
            name=tf.path,
            dialect=tf.dialect,
            columns=present,
            chunk_rows=options.chunk_rows,
            bad_records=bad_records,
        ):
            missing = [pl.lit(None, S).alias(c) for c in wanted if c not in frame.columns]
            yield frame.with_columns(missing) if missing else frame


def unescape(values: pl.Series) -> pl.Series:
    """Undo mysql --batch's backslash escapes (``\\t``, ``\\n``, ``\\\\``) on the values that have one."""
    if not values.str.contains("\\", literal=True).any():
        return values
    return map_unique(values, lambda v: _ESCAPE.sub(lambda m: _MYSQL_ESCAPES.get(m[1], m[1]), v), S)


def text_column(frame: pl.DataFrame, column: str, tsv: bool) -> pl.Series:
    """A text column as the dump meant it (nulls, mysql --batch escapes undone)."""
    values = frame.select(text(pl.col(column)).alias(column)).get_column(column)
    return unescape(values) if tsv else values


def id_expr(column: str) -> pl.Expr:
    """An id column as UInt64; 0 (Matomo's "none") and non-numbers are null."""
    value = text(pl.col(column)).cast(U64, strict=False)
    return pl.when(value != 0).then(value)


def epoch_expr(column: str) -> pl.Expr:
    """A DATETIME column (UTC) as unix seconds."""
    return text(pl.col(column)).str.strptime(pl.Datetime("us"), _DATETIME, strict=False).dt.epoch("s")


# --------------------------------------------------------------------------- dictionaries


def load_actions(tf: TableFile, options: ReadOptions) -> pl.DataFrame:
    """log_action as (idaction, a_type, a_text, a_found); URLs get their prefix back, text unescaped."""
    frames = []
    for raw in read_table(tf, options, bad_records="raise"):
        raw = raw.with_columns(text_column(raw, "name", tf.tsv).alias("name"))
        prefix = text(pl.col("url_prefix")).cast(pl.Int64, strict=False)
        scheme = prefix.replace_strict(URL_PREFIXES, default=None, return_dtype=S)
        name = unsanitize(pl.col("name"))
        frames.append(
            raw.select(
                id_expr("idaction").alias("idaction"),
                text(pl.col("type")).cast(pl.Int64, strict=False).alias("a_type"),
                pl.when(scheme.is_not_null()).then(pl.concat_str(scheme, name)).otherwise(name).alias("a_text"),
                pl.lit(True).alias("a_found"),
            )
        )
    if not frames:
        return pl.DataFrame(schema={"idaction": U64, "a_type": pl.Int64(), "a_text": S, "a_found": pl.Boolean()})
    return pl.concat(frames).filter(pl.col("idaction").is_not_null()).unique("idaction", keep="first")


def _dictionary(own: TableFile, table: str, options: ReadOptions, shape: pl.Expr | list[pl.Expr]) -> pl.DataFrame:
    """A small table of the dump, shaped by ``shape`` (empty when the dump does not have it)."""
    tf = sibling(own, table)
    frames = []
    if tf is not None:
        for raw in read_table(tf, options, bad_records="raise"):
            escaped = [c for c in TABLE_COLUMNS[table][1] + TABLE_COLUMNS[table][0] if raw.schema[c] == S]
            raw = raw.with_columns(text_column(raw, c, tf.tsv) for c in escaped)
            frames.append(raw.select(shape))
    if not frames:
        empty = pl.DataFrame(schema=dict.fromkeys(sum(TABLE_COLUMNS[table], ()), S))
        return empty.select(shape).clear()
    return pl.concat(frames)


def load_sites(own: TableFile, options: ReadOptions) -> pl.DataFrame:
    """site as (idsite, name, main_url, currency); empty when the dump has no site table."""
    shape = [
        text(pl.col("idsite")).alias("idsite"),
        unsanitize(text(pl.col("name"))).alias("name"),
        text(pl.col("main_url")).alias("main_url"),
        text(pl.col("currency")).str.to_uppercase().alias("currency"),
    ]
    return _dictionary(own, "site", options, shape).unique("idsite", keep="first")


def load_goals(own: TableFile, options: ReadOptions) -> pl.DataFrame:
    """goal as (c_idsite, goal_id, goal_name), deleted goals too (their conversions keep the name)."""
    shape = [
        text(pl.col("idsite")).alias("c_idsite"),
        text(pl.col("idgoal")).alias("goal_id"),
        unsanitize(text(pl.col("name"))).alias("goal_name"),
    ]
    return _dictionary(own, "goal", options, shape).unique(["c_idsite", "goal_id"], keep="first")


def load_items(own: TableFile, options: ReadOptions, actions: pl.DataFrame) -> pl.DataFrame:
    """log_conversion_item as (idvisit, order_id, items: the order's items as a JSON object).

    Items removed from the cart before the order (``deleted`` = 1) are left out, as
    Matomo's reports leave them out.
    """
    shape = [
        id_expr("idvisit").alias("idvisit"),
        text(pl.col("idorder")).alias("order_id"),
        id_expr("idaction_sku").alias("sku"),
        id_expr("idaction_name").alias("iname"),
        id_expr("idaction_category").alias("icat"),
        text(pl.col("price")).alias("price"),
        text(pl.col("quantity")).alias("quantity"),
        text(pl.col("deleted")).alias("deleted"),
    ]
    lines = _dictionary(own, "log_conversion_item", options, shape).filter(pl.col("deleted").fill_null("0") != "1")
    names = actions.select("idaction", "a_text")
    for column in ("sku", "iname", "icat"):
        lines = lines.join(names.rename({"idaction": column, "a_text": f"{column}_text"}), on=column, how="left")
    described = lines.with_columns(
        item_lines(
            pl.col("sku_text"), pl.col("iname_text"), pl.col("icat_text"), pl.col("price"), pl.col("quantity")
        ).alias("line"),
        text(pl.col("quantity")).cast(pl.Int64, strict=False).alias("quantity"),
    )
    orders = described.group_by("idvisit", "order_id", maintain_order=True).agg(
        pl.col("line"), pl.col("quantity").sum().alias("count")
    )
    return orders.select("idvisit", "order_id", items_object(pl.col("line"), pl.col("count")).alias("order_items"))


@functools.lru_cache(maxsize=16)
def _site_visits(tf: TableFile, encoding: str, size: int, mtime_ns: int) -> pl.DataFrame:
    """(idsite, visits) of a log_visit file; kept per file version, as every table file asks."""
    options = ReadOptions(chunk_rows=1_000_000, encoding=encoding)
    counts = [
        raw.group_by(text(pl.col("idsite")).alias("idsite")).agg(pl.len().alias("visits"))
        for raw in read_table(tf, options, bad_records="reject", columns=("idsite",))
    ]
    if not counts:
        return pl.DataFrame(schema={"idsite": S, "visits": pl.UInt32()})
    return pl.concat(counts).group_by("idsite").agg(pl.col("visits").sum()).sort("idsite")


def dump_sites(own: TableFile, options: ReadOptions) -> list[Site]:
    """The sites the dump's visits belong to (log_visit.idsite), with name and URL from ``site``."""
    visits = needed(own, "log_visit")
    if "idsite" not in header(visits, options.encoding):
        return []
    info = os.stat(visits.path)
    counts = _site_visits(visits, options.encoding, info.st_size, info.st_mtime_ns)
    return sites_of(counts, load_sites(own, options).select("idsite", "name", "main_url"))


__all__ = [
    "NEEDS",
    "TABLE_COLUMNS",
    "TableFile",
    "dump_sites",
    "dump_tables",
    "epoch_expr",
    "header",
    "id_expr",
    "ignored_note",
    "load_actions",
    "load_goals",
    "load_items",
    "load_sites",
    "needed",
    "own_table",
    "read_table",
    "sibling",
    "table_file",
    "text_column",
    "unescape",
]
