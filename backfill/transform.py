"""Apply a mapping to one chunk of source rows: source columns in, Umami fields out.

All column work is polars expressions; the only Python touching values runs
on the chunk's UNIQUE long visitor ids (stable hashing), never per row.
Output columns: ``type``, ``_ts`` (int seconds or null), ``_ts_error``,
each mapped payload field as String, ``data.<key>`` columns, ``_visitor``,
``_file``, ``_row``, ``_skip`` (name of the filter that skipped the row).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from .errors import MappingError
from .mapping import TEMPLATE_PLACEHOLDER, Mapping, ValueSpec
from .schema import COL_FILE, COL_LANE, COL_ROW, COL_SKIP, COL_TS, COL_VISIT, COL_VISITOR
from .umami.vocabulary import normalize_browser, normalize_device, normalize_os

COL_TS_ERROR = "_ts_error"
#: Source text of non-string data values, kept to tell "absent" from "not a number".
RAW_PREFIX = "_raw:"
VISITOR_ID_MAX = 50
DEFAULT_LANES = 64

_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
#: Seconds beyond this are almost surely milliseconds sent as seconds (year 5138).
_EPOCH_SECONDS_MAX = 100_000_000_000


@dataclass(frozen=True)
class TimeWindow:
    """--since / --until, as unix seconds (inclusive start, exclusive end)."""

    since: int | None = None
    until: int | None = None


def apply_mapping(
    frame: pl.DataFrame,
    mapping: Mapping,
    window: TimeWindow,
    file_tags: Sequence[str] = (),
) -> pl.DataFrame:
    """One source chunk -> canonical columns (still unvalidated).

    ``file_tags`` (one per ``_file`` index, see ``file_tag``) name the files in
    per-row visitor ids.
    """
    ts, ts_error = timestamp_exprs(mapping, frame.schema)
    if needs_iso_parts(mapping, frame.schema):
        frame = frame.with_columns(iso_parts(pl.col(mapping.timestamp.column).cast(pl.String)))
    columns: list[pl.Expr] = [
        pl.col(COL_FILE),
        pl.col(COL_ROW),
        skipped_by_filters(frame, mapping).alias(COL_SKIP),
        ts.alias(COL_TS),
        ts_error.alias(COL_TS_ERROR),
        _string(value_expr(mapping.event_type, frame.schema)).alias("type"),
    ]
    if mapping.visitor.visit:
        columns.append(visit_expr(mapping.visitor.visit).alias(COL_VISIT))
    for target, spec in mapping.fields.items():
        columns.append(field_expr(target, spec, mapping, frame.schema).alias(target))
        if target.startswith("data.") and data_type(target, spec, frame.schema) != "string":
            columns.append(raw_text(spec, frame.schema).alias(RAW_PREFIX + target))
    derived: list[pl.Expr] = [_window_skip(window)]
    if "hostname" not in mapping.fields and "url" in mapping.fields:
        # As Umami's tracker does (location.hostname, www. kept); left to Umami, an absolute
        # url's host would be stored without its www., apart from the site's live traffic.
        derived.append(url_part(pl.col("url"), "host").alias("hostname"))
    out = frame.lazy().select(columns).with_columns(derived).collect()
    if len(derived) > 1 and not out.get_column("hostname").drop_nulls().str.contains(r"^[\x00-\x7f]*$").all():
        out = out.with_columns(map_unique(out.get_column("hostname"), ascii_host, pl.String()).alias("hostname"))
    source = frame.with_columns(out.get_column(COL_TS)) if COL_TS not in frame.columns else frame
    return out.with_columns(visitor_ids(source, mapping, file_tags).alias(COL_VISITOR))


# --------------------------------------------------------------------------- values


def _string(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def value_expr(spec: ValueSpec, schema: pl.Schema) -> pl.Expr:
    """The raw value of a spec, before type/scale/case shaping."""
    if spec.kind == "column":
        expr = pl.col(str(spec.column))
    elif spec.kind == "const":
        expr = pl.lit(spec.const)
    elif spec.kind == "template":
        expr = _template_expr(str(spec.template))
    else:
        parts = [value_expr(p, schema) for p in spec.parts]
        expr = pl.coalesce([_blank_to_null(_string(p)) for p in parts])
    if spec.part is not None:
        expr = url_part(_string(expr), spec.part)
    if spec.value_map is not None:
        expr = _apply_map(expr, spec.value_map)
    if spec.default is not None:
        expr = pl.coalesce([_blank_to_null(_string(expr)), pl.lit(str(spec.default))])
    return expr


#: An absolute URL (``scheme://`` or ``//``): its authority, then the rest.
_ABSOLUTE_URL = r"^\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)(.*)$"


def url_part(url: pl.Expr, part: str) -> pl.Expr:
    """One piece of a URL, as a browser's ``location`` would give it.

    ``host``: the host of an absolute URL, lower-cased, without user info or port,
    ``www.`` kept (Umami's tracker sends ``location.hostname``); null for a path.
    ``path``: the path, ``/`` when an absolute URL has none, with any ``#fragment``
    (Umami keeps it in the path); ``query``: the text after ``?`` without the
    fragment, null when there is none.
    """
    groups = url.str.extract_groups(_ABSOLUTE_URL)
    authority, rest = groups.struct.field("1"), groups.struct.field("2")
    if part == "host":
        host = authority.str.replace(r"^.*@", "").str.replace(r"^(\[[^\]]*\]|[^:]*):.*$", "${1}")
        return _blank_to_null(host.str.to_lowercase())
    relative = pl.when(authority.is_null()).then(url.str.strip_chars()).otherwise(rest)
    if part == "query":
        return _blank_to_null(relative.str.extract(r"\?([^#]*)", 1))
    path = relative.str.replace(r"\?[^#]*", "")
    return pl.when(path.str.starts_with("#") | (path == "")).then(pl.lit("/") + path).otherwise(path)


def ascii_host(host: str) -> str:
    """A host as a browser's ``location.hostname`` gives it: internationalised labels in
    punycode (``bücher.de`` -> ``xn--bcher-kva.de``); kept as it is when not encodable
    (validation then refuses it as no valid host)."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.strip_chars() == "").then(None).otherwise(expr)


def _template_expr(template: str) -> pl.Expr:
    """ "/{path}?{query}" -> concatenation; null only when every column is null."""
    pieces: list[pl.Expr] = []
    columns: list[str] = []
    pos = 0
    for match in TEMPLATE_PLACEHOLDER.finditer(template):
        if match.start() > pos:
            pieces.append(pl.lit(template[pos : match.start()]))
        column = match.group(1)
        columns.append(column)
        pieces.append(pl.col(column).cast(pl.String).fill_null(""))
        pos = match.end()
    if pos < len(template):
        pieces.append(pl.lit(template[pos:]))
    all_null = pl.all_horizontal([pl.col(c).is_null() for c in columns])
    return pl.when(all_null).then(None).otherwise(pl.concat_str(pieces))


def _apply_map(expr: pl.Expr, value_map: dict[str, object]) -> pl.Expr:
    """Rename values; a value mapped to null becomes absent (e.g. pageview -> no name)."""
    as_text = expr.cast(pl.String)
    old = list(value_map)
    new = [None if v is None else str(v) for v in value_map.values()]
    return as_text.replace_strict(old, new, default=as_text, return_dtype=pl.String)


def field_expr(target: str, spec: ValueSpec, mapping: Mapping, schema: pl.Schema) -> pl.Expr:
    expr = value_expr(spec, schema)
    if target.startswith("data."):
        return _data_value(target, spec, expr, schema, decimal_comma=bool(mapping.reader.get("decimal_comma")))
    expr = _blank_to_null(_string(expr).str.replace_all("\x00", "", literal=True))
    if spec.case == "lower":
        expr = expr.str.to_lowercase()
    elif spec.case == "upper":
        expr = expr.str.to_uppercase()
    if mapping.normalize:
        if target == "browser":
            os_spec = mapping.fields.get("os")
            os_expr = _string(value_expr(os_spec, schema)) if os_spec is not None else None
            expr = normalize_browser(expr, os=os_expr)
        elif target == "os":
            expr = normalize_os(expr)
        elif target == "device":
            expr = normalize_device(expr)
    if target in ("country", "region"):
        expr = expr.str.strip_chars().str.to_uppercase()
    return expr


def _data_value(
    target: str, spec: ValueSpec, expr: pl.Expr, schema: pl.Schema, *, decimal_comma: bool = False
) -> pl.Expr:
    """Event properties keep numbers as JSON numbers; revenue is always a number."""
    dtype = data_type(target, spec, schema)
    if dtype == "string":
        out = _blank_to_null(_string(expr).str.replace_all("\x00", "", literal=True))
        if spec.case == "lower":
            out = out.str.to_lowercase()
        elif spec.case == "upper":
            out = out.str.to_uppercase()
        return out
    if dtype == "boolean":
        text = _string(expr).str.strip_chars().str.to_lowercase()
        return (
            pl.when(text.is_in(["true", "1", "yes", "y", "t"]))
            .then(True)
            .when(text.is_in(["false", "0", "no", "n", "f"]))
            .then(False)
            .otherwise(None)
        )
    number = number_text(_string(expr).str.strip_chars(), decimal_comma).cast(pl.Float64, strict=False)
    if spec.scale is not None:
        number = (number * spec.scale).round(4)  # decimal(19,4): no float noise like 19.990000000000002
    if dtype == "integer":
        return number.round(0).cast(pl.Int64, strict=False)
    return number


#: A number written with a decimal comma: 1234,5 or 1.234,5 (dots only between groups of three).
_DECIMAL_COMMA_NUMBER = r"^[+-]?(?:[0-9]+|[0-9]{1,3}(?:\.[0-9]{3})+)(?:,[0-9]+)?$"


def number_text(text: pl.Expr, decimal_comma: bool) -> pl.Expr:
    """Number text as polars reads it. With ``decimal_comma`` (reader option), "1.234,5" is
    1234.5; a value with a '.' or ',' of another shape ("1.5") becomes unreadable, so it is
    rejected as not a number instead of being read as something else."""
    if not decimal_comma:
        return text
    plain = text.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)
    other = pl.when(text.str.contains(r"[.,]")).then(pl.lit("")).otherwise(text)
    return pl.when(text.str.contains(_DECIMAL_COMMA_NUMBER)).then(plain).otherwise(other)


def data_type(target: str, spec: ValueSpec, schema: pl.Schema) -> str:
    """The JSON type a data.<key> value is sent as: declared, else from the source."""
    if spec.dtype is not None:
        return spec.dtype
    if target == "data.revenue" or spec.scale is not None:
        return "number"
    if spec.kind == "column" and spec.value_map is None and spec.column in schema:
        dtype = schema[str(spec.column)]
        if dtype == pl.Boolean:
            return "boolean"
        if dtype.is_integer():
            return "integer"
        if dtype.is_numeric():
            return "number"
    if spec.kind == "const" and spec.value_map is None:
        if isinstance(spec.const, bool):
            return "boolean"
        if isinstance(spec.const, (int, float)):
            return "number"
    return "string"


def raw_text(spec: ValueSpec, schema: pl.Schema) -> pl.Expr:
    """The source text of a data value, to tell 'absent' from 'not a number'."""
    return _blank_to_null(_string(value_expr(spec, schema)))


# --------------------------------------------------------------------------- time


def needs_iso_parts(mapping: Mapping, schema: pl.Schema) -> bool:
    spec = mapping.timestamp
    dtype = schema.get(spec.column)
    temporal = isinstance(dtype, pl.Datetime | pl.Date)
    return spec.format == "iso8601" and not temporal


def timestamp_exprs(mapping: Mapping, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    """(unix seconds or null, reason when null). Never guesses a zone or a unit."""
    spec = mapping.timestamp
    col = pl.col(spec.column)
    dtype = schema.get(spec.column)
    if spec.format == "epoch":
        return _epoch_exprs(col, str(spec.unit), dtype, decimal_comma=bool(mapping.reader.get("decimal_comma")))
    if isinstance(dtype, pl.Datetime | pl.Date):
        naive = col.cast(pl.Datetime("us"))
        if isinstance(dtype, pl.Datetime) and dtype.time_zone:
            return _datetime_seconds(col), pl.lit("timestamp: empty")
        return _zoned(naive, spec.timezone, "timestamp: empty")
    if not spec.is_strftime:
        return iso_exprs(spec.timezone)  # reads the COL_ISO column apply_mapping adds first
    text = col.cast(pl.String).str.strip_chars()
    parsed = text.str.to_datetime(spec.format, strict=False, time_unit="us")
    unparsed = f"timestamp: does not match the pattern {spec.format!r}"
    if spec.pattern_has_offset:
        return _datetime_seconds(parsed), pl.lit(unparsed)
    return _zoned(parsed, spec.timezone, unparsed)


def _datetime_seconds(dt: pl.Expr) -> pl.Expr:
    return dt.dt.epoch("s").cast(pl.Int64)


DST_GAP_REASON = "timestamp: local time that does not exist (skipped by a DST change)"


def _zoned(naive: pl.Expr, timezone: str | None, unparsed_reason: str) -> tuple[pl.Expr, pl.Expr]:
    """Naive local times in a declared zone; an hour that repeats takes its first instance."""
    local = naive.dt.replace_time_zone(timezone, non_existent="null", ambiguous="earliest")
    reason = pl.when(naive.is_null()).then(pl.lit(unparsed_reason)).otherwise(pl.lit(DST_GAP_REASON))
    return _datetime_seconds(local), reason


def _epoch_exprs(
    col: pl.Expr, unit: str, dtype: pl.DataType | None, *, decimal_comma: bool = False
) -> tuple[pl.Expr, pl.Expr]:
    numeric = dtype is not None and dtype.is_numeric()
    number = col if numeric else number_text(col.cast(pl.String).str.strip_chars(), decimal_comma)
    number = number.cast(pl.Float64, strict=False)
    seconds = (number / _UNIT_DIVISOR[unit]).floor()
    too_big = seconds.abs() >= _EPOCH_SECONDS_MAX
    out = pl.when(too_big | number.is_nan() | number.is_infinite()).then(None).otherwise(seconds)
    reason = (
        pl.when(too_big)
        .then(pl.lit(f"timestamp: far too large for epoch {unit}; {_finer_unit_hint(unit)}"))
        .otherwise(pl.lit(f"timestamp: not a number (format: epoch, unit: {unit})"))
    )
    return out.cast(pl.Int64), reason


def _finer_unit_hint(unit: str) -> str:
    finer = {"s": "ms", "ms": "us", "us": "ns"}.get(unit)
    if finer is None:
        return "check the column holds epoch nanoseconds"
    return f"it looks like a finer unit ({finer}?): check `unit:` in the mapping"


#: ISO 8601 as one regex: date, hour, minute, second (fraction dropped: Umami takes
#: whole seconds), offset. One pass per value; the parts are read from its groups.
ISO_PATTERN = (
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,][0-9]+)?)?)?"
    r"\s*([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
COL_ISO = "__iso_parts"
COL_ISO_FAST = "__iso_fast"
#: The commonest export shape, parsed natively first; other shapes go through the regex.
ISO_FAST_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_parts(text: pl.Expr) -> list[pl.Expr]:
    """Columns to materialise once before ``iso_exprs``: UTC seconds of values in the
    common ``...T08:00:00Z`` shape, and the regex groups of every other value."""
    text = text.str.strip_chars()
    fast = text.str.strptime(pl.Datetime("us"), ISO_FAST_FORMAT, strict=False).dt.epoch("s")
    rest = pl.when(fast.is_null()).then(text).otherwise(None)
    return [fast.alias(COL_ISO_FAST), rest.str.extract_groups(ISO_PATTERN).alias(COL_ISO)]


def iso_exprs(timezone: str | None) -> tuple[pl.Expr, pl.Expr]:
    """ISO 8601 with or without offset, from ``iso_parts``; naive values only with a declared zone."""
    parts = pl.col(COL_ISO)
    date = parts.struct.field("1").str.to_date("%Y-%m-%d", strict=False)
    hours = parts.struct.field("2").cast(pl.Int64, strict=False)
    minutes = parts.struct.field("3").cast(pl.Int64, strict=False).fill_null(0)
    secs = parts.struct.field("4").cast(pl.Int64, strict=False).fill_null(0)
    offset_text = parts.struct.field("5")
    has_time = hours.is_not_null()
    clock = hours.fill_null(0) * 3600 + minutes * 60 + secs
    valid = date.is_not_null() & (hours.fill_null(0) < 24) & (minutes < 60) & (secs < 61)
    naive_seconds = date.cast(pl.Int64) * 86_400 + clock
    sign = pl.when(offset_text.str.starts_with("-")).then(-1).otherwise(1)
    digits = offset_text.str.replace_all(r"[^0-9]", "")
    off_h = digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0)
    off_m = digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
    offset_seconds = sign * (off_h * 3600 + off_m * 60)
    has_offset = offset_text.is_not_null() & (has_time | offset_text.str.to_uppercase().eq("Z"))
    if timezone is not None:
        local = pl.from_epoch(naive_seconds, "s").dt.replace_time_zone(
            timezone, non_existent="null", ambiguous="earliest"
        )
        zoned_seconds = _datetime_seconds(local)
    else:
        zoned_seconds = pl.lit(None, dtype=pl.Int64)
    seconds = (
        pl.when(valid.not_()).then(None).when(has_offset).then(naive_seconds - offset_seconds).otherwise(zoned_seconds)
    )
    reason = (
        pl.when(valid.not_())
        .then(pl.lit("timestamp: not an ISO 8601 time (expected e.g. 2024-03-01T08:00:00Z)"))
        .when(has_offset.not_() & pl.lit(timezone is None))
        .then(
            pl.lit(
                "timestamp: naive time (no offset) and the mapping declares no timezone: "
                "add `timezone:` under timestamp"
            )
        )
        .otherwise(pl.lit(DST_GAP_REASON))
    )
    fast = pl.col(COL_ISO_FAST)
    return pl.coalesce(fast, seconds).cast(pl.Int64), reason


# --------------------------------------------------------------------------- skipping


def skipped_by_filters(frame: pl.DataFrame, mapping: Mapping) -> pl.Series:
    """Name of the first filter that skips each row, else null.

    A reader may have named rows to skip itself (a ``_skip`` column: the rows of
    the Matomo sites not chosen); that name comes first. A filter that cannot be
    evaluated on these values (a strict CAST of text, a type mismatch) is a
    mapping error, reported before anything is sent.
    """
    if COL_SKIP in frame.columns:
        by_reader = frame.get_column(COL_SKIP).cast(pl.String)
        if by_reader.null_count() < frame.height:
            by_filters = skipped_by_filters(frame.drop(COL_SKIP), mapping)
            return by_reader.fill_null(by_filters)
    if not mapping.filters:
        return pl.Series(COL_SKIP, [None] * frame.height, dtype=pl.String)
    expr = pl.when(mapping.filters[0].polars_expr()).then(pl.lit(mapping.filters[0].name))
    for flt in mapping.filters[1:]:
        expr = expr.when(flt.polars_expr()).then(pl.lit(flt.name))
    try:
        return frame.select(expr.otherwise(None).alias(COL_SKIP)).to_series()
    except pl.exceptions.PolarsError as exc:
        names = ", ".join(repr(f.name) for f in mapping.filters)
        first = str(exc).strip().splitlines()[0]
        raise MappingError(
            f"a filter ({names}) cannot be evaluated on rows {_row_span(frame)}: {first}. "
            "CSV columns are text: compare with text, or use TRY_CAST(col AS DOUBLE) instead of CAST",
            path=mapping.path,
            line=mapping.filters[0].line,
        ) from None


def _row_span(frame: pl.DataFrame) -> str:
    rows = frame[COL_ROW]
    return f"{rows.min()}..{rows.max()}" if frame.height else "(none)"


def _window_skip(window: TimeWindow) -> pl.Expr:
    skip = pl.col(COL_SKIP)
    if window.since is not None:
        skip = pl.when(skip.is_null() & (pl.col(COL_TS) < window.since)).then(pl.lit("--since")).otherwise(skip)
    if window.until is not None:
        skip = pl.when(skip.is_null() & (pl.col(COL_TS) >= window.until)).then(pl.lit("--until")).otherwise(skip)
    return skip.alias(COL_SKIP)


# --------------------------------------------------------------------------- identity


def file_tag(path: str) -> str:
    """A short stable name for a file in per-row ids: its base name's hash, so the
    same file gives the same ids whatever else is imported with it or after it."""
    return hashlib.sha256(os.path.basename(path).encode()).hexdigest()[:12]


def visitor_ids(frame: pl.DataFrame, mapping: Mapping, file_tags: Sequence[str] = ()) -> pl.Series:
    """The payload ``id``: stable forever, at most 50 characters."""
    spec = mapping.visitor
    if spec.strategy == "per_row":
        tags = list(file_tags) or ["f"]
        tag = pl.col(COL_FILE).replace_strict(list(range(len(tags))), tags, default="f", return_dtype=pl.String)
        expr = pl.concat_str(pl.lit("row-"), tag, pl.lit("-"), pl.col(COL_ROW).cast(pl.String))
        return frame.select(expr.alias(COL_VISITOR)).to_series()
    if spec.strategy == "ip_ua_day":
        day = pl.col(COL_TS) // 86_400 if COL_TS in frame.columns else pl.lit(0)
        parts = [pl.col(str(spec.ip)).cast(pl.String), pl.col(str(spec.user_agent)).cast(pl.String)]
        raw = pl.concat_str([*parts, day.cast(pl.String)], separator="|")
        ids = frame.select(raw.alias(COL_VISITOR)).to_series()
        return _hash_ids(ids, always=True)
    parts = [
        pl.col(c).cast(pl.String).str.replace_all("\x00", "", literal=True).str.strip_chars() for c in spec.columns
    ]
    if len(parts) == 1:
        raw = _blank_to_null(parts[0])
    else:
        any_value = pl.any_horizontal([_blank_to_null(p).is_not_null() for p in parts])
        raw = pl.when(any_value).then(pl.concat_str([p.fill_null("") for p in parts], separator="|"))
    ids = frame.select(raw.alias(COL_VISITOR)).to_series()
    return _hash_ids(ids, always=False)


def visit_expr(column: str) -> pl.Expr:
    """The source's visit id as text; blank means none (the row then follows Umami's hours)."""
    return _blank_to_null(pl.col(column).cast(pl.String).str.strip_chars())


def _hash_ids(ids: pl.Series, *, always: bool) -> pl.Series:
    """Hash ids longer than 50 (or all, for derived ids) on the unique values only."""
    needs = ids if always else ids.filter(ids.str.len_chars() > VISITOR_ID_MAX)
    uniques = needs.drop_nulls().unique()
    if uniques.len() == 0:
        return ids
    hashed = [stable_visitor_hash(v) for v in uniques.to_list()]
    mapping = pl.DataFrame({"k": uniques, "v": pl.Series(hashed, dtype=pl.String)})
    joined = pl.DataFrame({"k": ids}).join(mapping, on="k", how="left", maintain_order="left")
    return joined.select(pl.coalesce("v", "k").alias(COL_VISITOR)).to_series()


def stable_visitor_hash(value: str) -> str:
    """40 hex chars of SHA-256: stable across versions and machines (unlike polars' hash)."""
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def map_unique(values: pl.Series, fn: Callable[[Any], Any], dtype: pl.DataType) -> pl.Series:
    """``fn`` of each row's value, called once per distinct non-null value (a Python
    function per row would dominate a chunk's time); null stays null."""
    uniques = values.drop_nulls().unique()
    table = pl.DataFrame({"k": uniques, "v": pl.Series([fn(v) for v in uniques.to_list()], dtype=dtype)})
    return pl.DataFrame({"k": values}).join(table, on="k", how="left", maintain_order="left")["v"]


def map_distinct(values: pl.Series, fn: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """``fn`` of the distinct non-null values at once (a column-wise function), spread back
    over the rows; null stays null."""
    uniques = values.drop_nulls().unique()
    table = pl.DataFrame({"k": uniques, "v": fn(uniques)})
    return pl.DataFrame({"k": values}).join(table, on="k", how="left", maintain_order="left")["v"]


def lanes_for(visitors: pl.Series, lanes: int = DEFAULT_LANES) -> pl.Series:
    """Sender lane per row: CRC32 of the visitor id, stable across runs and versions."""
    lane = map_unique(visitors.fill_null(""), lambda v: zlib.crc32(v.encode()) % lanes, pl.UInt16())
    return lane.alias(COL_LANE)


def shard_of(frame: pl.DataFrame, shards: int) -> pl.Series:
    """0-based shard of each row: by visitor, so a visitor's events stay in one shard.

    BLAKE2b of the visitor id (stable across machines and versions, and unlike
    the lanes' CRC32 independent of them, so every shard still fills all lanes).
    A row without a visitor (it will be rejected) goes by its file and row.
    """
    by_visitor = map_unique(
        frame[COL_VISITOR],
        lambda v: int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big") % shards,
        pl.Int64(),
    )
    by_row = (pl.col(COL_FILE).cast(pl.Int64) + pl.col(COL_ROW).cast(pl.Int64)) % shards
    return frame.select(pl.coalesce(pl.lit(by_visitor), by_row)).to_series()
