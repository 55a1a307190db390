"""GA4's BigQuery export (event level): nested rows in, one FLAT frame per chunk out.

Google exports a property's daily ``events_YYYYMMDD`` tables as newline-delimited
JSON (optionally gzip; zstd also read), Parquet or Avro, many files per day. Each
row is one event with nested records (``event_params``, ``device``, ``geo``,
``collected_traffic_source``, ``ecommerce``, ...). A mapping works on flat
columns, so this reader flattens every container into the same fixed set of
columns (:data:`FLAT_SCHEMA`): ``schema()`` can answer without reading a row, and
the three containers give identical rows for identical events.

Why each choice:

* **JSON is parsed with an explicit schema** whose scalar leaves are all String.
  BigQuery writes INT64 as JSON strings (``"event_timestamp":"1611798022695757"``),
  but hand-made or re-encoded files often write numbers; a String field takes
  both, and keys outside the schema (``items``, ``app_info``, ...) are never
  materialised. Inference would also give each chunk its own dtypes.
* **event_params are read as {key, value-as-JSON-text}**: polars decodes a list of
  nested structs several times slower than a list of two text fields, and most
  params are keys nobody reads (GA's and the tag manager's own); after the
  explode only the values of known keys are decoded (``str.json_decode``).
* **event_params are flattened column-wise**: the list is exploded with a row
  index, each element's value is its one set value field as text (when a value
  struct has more than one, :mod:`backfill.sources.ga4_values` chooses and notes
  the events whose fields disagree; the first occurrence wins when a key repeats in one event),
  and one ``filter(key == k).first()`` aggregation per known key
  (:data:`PARAM_KEYS`) turns the long frame back into columns, joined on the row
  index. Keys not listed are ignored: the column set must be fixed for the
  mapping to be checked before reading. No Python runs per row.
* **Countries and regions** are mapped name -> ISO code with ``pycountry`` on the
  chunk's UNIQUE values only (a few hundred per day at most), cached per process.
* **Avro** (``fastavro``) is read in record batches of ``chunk_rows``; a batch of
  dicts is the only per-record Python, and fastavro's decoding is per record anyway.

``_row`` is the 1-based line number (JSON, blank lines counted), row position
(Parquet) or record number (Avro) within the file.
"""

from __future__ import annotations

import functools
import unicodedata
import urllib.parse
from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile, sniffing
from backfill.sources import ndjson as ndjson_reader
from backfill.sources import parquet as parquet_reader
from backfill.sources.compression import GZIP_MAGIC, ZSTD_MAGIC, local_file
from backfill.sources.ga4_values import DISAGREE, SAME, VALUE_ORDER, FieldClashes, choose

AVRO_MAGIC = b"Obj\x01"

S = pl.String()
I64 = pl.Int64()
F64 = pl.Float64()

#: The nested fields read from an export row, with BigQuery's native types.
#: Everything else in the row (items, app_info, user_properties, ...) is skipped.
RAW_SCHEMA: dict[str, pl.DataType] = {
    "event_date": S,
    "event_timestamp": I64,
    "event_name": S,
    "event_params": pl.List(
        pl.Struct(
            {
                "key": S,
                "value": pl.Struct({"string_value": S, "int_value": I64, "float_value": F64, "double_value": F64}),
            }
        )
    ),
    "user_id": S,
    "user_pseudo_id": S,
    "platform": S,
    "device": pl.Struct(
        {
            "category": S,
            "operating_system": S,
            "operating_system_version": S,
            "language": S,
            "web_info": pl.Struct({"browser": S, "browser_version": S, "hostname": S}),
        }
    ),
    "geo": pl.Struct({"continent": S, "sub_continent": S, "country": S, "region": S, "city": S, "metro": S}),
    "traffic_source": pl.Struct({"name": S, "medium": S, "source": S}),
    "collected_traffic_source": pl.Struct(
        {
            "manual_source": S,
            "manual_medium": S,
            "manual_campaign_name": S,
            "manual_term": S,
            "manual_content": S,
            "gclid": S,
        }
    ),
    "ecommerce": pl.Struct({"purchase_revenue": F64, "purchase_revenue_in_usd": F64, "transaction_id": S}),
}

#: event_params keys turned into columns (same name), with their flat dtype.
PARAM_KEYS: dict[str, pl.DataType] = {
    "page_location": S,
    "page_title": S,
    "page_referrer": S,
    "ga_session_id": I64,
    "ga_session_number": I64,
    "engagement_time_msec": I64,
    "session_engaged": I64,
    "source": S,
    "medium": S,
    "campaign": S,
    "term": S,
    "content": S,
    "gclid": S,
    "link_url": S,
    "outbound": S,
    "file_name": S,
    "search_term": S,
    "value": F64,
    "currency": S,
    "transaction_id": S,
}

#: The flat columns every chunk has, in this order (plus ``_row``).
FLAT_SCHEMA: dict[str, pl.DataType] = {
    "event_timestamp": I64,  # microseconds, UTC
    "event_date": S,  # YYYYMMDD in the property's time zone
    "event_name": S,
    "user_pseudo_id": S,
    "user_id": S,
    "visitor_id": S,  # coalesce(user_id, user_pseudo_id): a mapping's visitor cannot coalesce
    "stream_type": S,  # "web" | "app"
    "hostname": S,  # device.web_info.hostname, else the host of page_location
    "page_location_with_utm": S,  # page_location + utm_* / gclid of the event, when its query has none
    **PARAM_KEYS,  # page_location, page_title, ..., transaction_id (param, else ecommerce's)
    "purchase_revenue": F64,  # ecommerce.purchase_revenue
    "purchase_revenue_in_usd": F64,
    "revenue": F64,  # purchase events only: purchase_revenue, else the value param; null unless > 0
    "device_category": S,
    "operating_system": S,
    "operating_system_version": S,
    "browser": S,
    "browser_version": S,
    "language": S,  # lower-case tag, e.g. en-us
    "geo_continent": S,
    "geo_country": S,  # a NAME, as GA4 writes it
    "geo_country_code": S,  # ISO 3166-1 alpha-2
    "geo_region": S,
    "geo_region_code": S,  # ISO 3166-2, when pycountry knows the region by name
    "geo_city": S,
    "traffic_source_name": S,  # the user's FIRST touch, not this event's
    "traffic_source_medium": S,
    "traffic_source_source": S,
    "cts_source": S,  # collected_traffic_source: this event's own attribution
    "cts_medium": S,
    "cts_campaign": S,
    "cts_term": S,
    "cts_content": S,
    "cts_gclid": S,
}

#: GA's "no value" markers in dimension columns; they become null.
PLACEHOLDERS = ("", "(not set)", "(none)", "(direct)", "(other)", "(not provided)", "(data not available)")
#: Mediums GA derives itself (from the referrer); not turned into utm tags, since
#: Umami derives these from the referrer too, as its own tracker would.
DERIVED_MEDIUMS = ("organic", "referral", "(none)", "none")
#: File endings read in directories and globs when ``--format ga4`` is given.
EXTENSIONS = (".avro",)

_INDEX = "__ga4_i"
_PARAM = "__ga4_param"
_UTM_PREFIX = "__ga4_utm_"


# --------------------------------------------------------------------------- plugin entry points


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns: a mapping is checked against them before any row is read."""
    _container(source)  # an unreadable container fails here, before the run starts
    return dict(FLAT_SCHEMA)


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Flat frames of at most ``chunk_rows`` events, each with ``_row``."""
    container = _container(source)
    chunk_rows = options.chunk_rows
    if container == "parquet":
        raw_chunks = _iter_parquet(source, chunk_rows)
    elif container == "avro":
        raw_chunks = _iter_avro(source, chunk_rows)
    else:
        raw_chunks = _iter_json(source, options, chunk_rows)
    fields = FieldClashes(source.path)
    for raw in raw_chunks:
        raw, params = raw if isinstance(raw, tuple) else (raw, None)
        if params is None:
            params = _params(raw.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32()).alias(_INDEX)))
        fields.add(raw.get_column(COL_ROW), params, _INDEX)
        yield flatten(raw, params)
    for note in fields.notes():
        options.note(note)


#: Top-level fields every GA4 export row has; together they are GA4's and nobody else's.
SIGNATURE = ("event_timestamp", "event_name", "event_params")
#: A JSON export leaves out empty and null fields: one of these beside the first two will do.
_JSON_MARKERS = ("event_params", "user_pseudo_id", "event_bundle_sequence_id", "stream_id")


def sniff(path: str) -> bool:
    """A GA4 export file: a JSON line, Parquet footer or Avro schema with GA4's row fields."""
    head = sniffing.raw_head(path, 4)
    if head.startswith(AVRO_MAGIC):  # the writer's schema is JSON text in the file header
        schema = sniffing.raw_head(path, sniffing.SNIFF_BYTES)
        return all(f'"{name}"'.encode() in schema for name in SIGNATURE)
    if head.startswith(parquet_reader.PARQUET_MAGIC):
        return sniffing.has_columns(sniffing.parquet_columns(path), SIGNATURE)
    row = sniffing.first_json_object(path)
    return (
        row is not None and sniffing.has_columns(row, SIGNATURE[:2]) and any(marker in row for marker in _JSON_MARKERS)
    )


PLUGIN = FormatPlugin(
    name="ga4",
    description="Google Analytics 4 BigQuery export, event level (events_*.json[.gz], .parquet, .avro)",
    iter_frames=iter_frames,
    schema=flat_schema,
    extensions=EXTENSIONS,
    sniff=sniff,
    preset="ga4",
)


# --------------------------------------------------------------------------- containers


def _container(source: SourceFile) -> str:
    """json | parquet | avro: by the file's first bytes (decompressed), else its name.

    The content wins because exports get renamed; a compressed Parquet or Avro
    file is refused (both compress internally, BigQuery never wraps them).
    """
    try:
        with open(source.path, "rb") as raw:
            head = raw.read(4)
    except OSError as exc:
        raise SourceError(f"{source.path}: cannot read the file ({exc.strerror})") from exc
    if head.startswith(parquet_reader.PARQUET_MAGIC):
        return "parquet"
    if head.startswith(AVRO_MAGIC):
        return "avro"
    if head.startswith((GZIP_MAGIC, ZSTD_MAGIC)) or source.compression:
        return "json"
    name = source.path.lower()
    if name.endswith(".avro"):
        raise SourceError(f"{source.path}: named .avro but it is not an Avro object container file")
    if name.endswith((".parquet", ".pq")):
        raise SourceError(f"{source.path}: named Parquet but it does not start with the Parquet magic bytes")
    return "json"


def _iter_json(
    source: SourceFile, options: ReadOptions, chunk_rows: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None]]:
    """Newline-delimited JSON through the ndjson reader's line machinery, parsed with
    the GA4 schema (all scalars as text, so a number and a numeric string both read).

    Per chunk: (raw rows, known params or None). The top level is parsed by polars
    without ``event_params`` (that also checks every line and names a bad one); the
    params by pyarrow (:func:`_arrow_params`), when it can read them exactly as the
    polars path would; else the chunk is parsed again with the params by polars."""
    shape = "the GA4 export"
    with local_file(source.path, source.compression, options.encoding, ".json") as path:
        for numbers, lines in ndjson_reader.iter_line_chunks(path, source.path, chunk_rows):
            raw = ndjson_reader.parse_with_schema(lines, numbers, source.path, TOP_JSON_SCHEMA, shape)
            params = _arrow_params(lines)
            if params is None:
                raw = ndjson_reader.parse_with_schema(lines, numbers, source.path, JSON_SCHEMA, shape)
            yield raw, params


def _iter_parquet(source: SourceFile, chunk_rows: int) -> Iterator[pl.DataFrame]:
    with local_file(source.path, source.compression, None, ".parquet") as path:
        present = parquet_reader.parquet_schema(path, source.path)
        columns = [c for c in RAW_SCHEMA if c in present]
        yield from parquet_reader.iter_parquet(path, name=source.path, columns=columns, chunk_rows=chunk_rows)


def _iter_avro(source: SourceFile, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Record batches from fastavro: at most ``chunk_rows`` decoded records in memory.

    A file that cannot be read to its end is refused naming its first unreadable
    record and how many were read before it (the run reads every file before it
    sends anything, so none of them is sent)."""
    import fastavro  # imported here: only Avro inputs need it

    row = 1
    batch: list[object] = []
    try:
        with open(source.path, "rb") as raw:
            for record in fastavro.reader(raw):
                batch.append(record)
                if len(batch) == chunk_rows:
                    yield _avro_frame(batch, row)
                    row += len(batch)
                    batch = []
        if batch:
            yield _avro_frame(batch, row)
    except (ValueError, EOFError, OSError, fastavro.read.SchemaResolutionError) as exc:
        raise _avro_error(source.path, exc, row + len(batch)) from exc


def _avro_frame(batch: list[object], row: int) -> pl.DataFrame:
    frame = pl.from_dicts(batch, schema=RAW_SCHEMA, strict=False)  # type: ignore[arg-type]
    return frame.with_columns(pl.int_range(row, row + len(batch), dtype=pl.UInt64()).alias(COL_ROW))


def _avro_error(path: str, exc: Exception, first_bad: int) -> SourceError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "snappy" in detail.lower():
        return SourceError(
            f"{path}: cannot read Avro record {first_bad} onwards ({detail}); "
            "snappy-compressed Avro needs the `cramjam` package"
        )
    what = "truncated: it ends inside the block" if isinstance(exc, EOFError) else "damaged: unreadable"
    read = f"records 1-{first_bad - 1} were read intact" if first_bad > 1 else "no record could be read"
    return SourceError(
        f"{path}: Avro file {what} of record {first_bad} ({detail}); {read}, but a damaged file is "
        "refused as a whole (nothing of it is imported): re-download or re-export it"
    )


def _stringly(dtype: pl.DataType) -> pl.DataType:
    """The JSON-side dtype: every scalar leaf as String."""
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _stringly(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(_stringly(dtype.inner))
    return S


#: The JSON-side schema. A param's ``value`` is read as the JSON text of its object:
#: polars decodes a list of nested structs several times slower than a list of
#: {key, text}, and only the values of known keys (fewer than half) are decoded, by
#: ``_params``, with :data:`VALUE_TEXT_TYPE`.
JSON_SCHEMA: dict[str, pl.DataType] = {
    **{name: _stringly(dtype) for name, dtype in RAW_SCHEMA.items()},
    "event_params": pl.List(pl.Struct({"key": S, "value": S})),
}
VALUE_TEXT_TYPE = _stringly(RAW_SCHEMA["event_params"].inner.fields[1].dtype)
#: The JSON-side schema without ``event_params``, when pyarrow reads those.
TOP_JSON_SCHEMA: dict[str, pl.DataType] = {k: v for k, v in JSON_SCHEMA.items() if k != "event_params"}


def _arrow_params_schema() -> object:
    import pyarrow as pa

    value = pa.struct(
        [
            ("string_value", pa.string()),
            ("int_value", pa.string()),
            ("float_value", pa.float64()),
            ("double_value", pa.float64()),
        ]
    )
    return pa.schema([("event_params", pa.list_(pa.struct([("key", pa.string()), ("value", value)])))])


#: Smallest block pyarrow's JSON reader parses at a time (a line must fit in one).
ARROW_BLOCK_BYTES = 4 << 20


def _arrow_params(lines: list[bytes]) -> pl.DataFrame | None:
    """The known params of a chunk of JSON lines (as :func:`_params` gives them), read
    by pyarrow: several times faster than polars on a list of nested structs.

    pyarrow reads BigQuery's own JSON types only: ``string_value`` and ``int_value``
    as JSON strings, ``float_value`` and ``double_value`` as numbers. Anything else
    (an int_value written as a number, a value that is no object, a line pyarrow
    refuses) returns None: the caller parses the params with polars instead. So
    does a known text or integer param whose value comes from a float field, whose
    text polars keeps as written ("5", not "5.0"; all digits of a big integer).
    """
    import pyarrow as pa
    import pyarrow.json as pa_json

    data = b"\n".join(lines)
    block = max(ARROW_BLOCK_BYTES, max(map(len, lines), default=0) + 2)
    parse = pa_json.ParseOptions(explicit_schema=_arrow_params_schema(), unexpected_field_behavior="ignore")
    try:
        table = pa_json.read_json(
            pa.BufferReader(data), read_options=pa_json.ReadOptions(block_size=block), parse_options=parse
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != len(lines):
        return None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    long = (
        frame.select(pl.int_range(pl.len(), dtype=pl.UInt32()).alias(_INDEX), "event_params")
        .explode("event_params")
        .select(
            _INDEX, pl.col("event_params").struct.field("key").alias("k"), pl.col("event_params").struct.field("value")
        )
        .filter(pl.col("k").is_in(list(PARAM_KEYS)))
    )
    field = pl.col("value").struct.field
    from_number = pl.all_horizontal(field(f).is_null() for f in ("string_value", "int_value")) & pl.any_horizontal(
        field(f).is_not_null() for f in ("double_value", "float_value")
    )
    exact_text = [k for k, t in PARAM_KEYS.items() if t != F64]
    if long.select((pl.col("k").is_in(exact_text) & from_number).any()).item():
        return None
    return _pivot(long)


# --------------------------------------------------------------------------- flattening


def _path(schema: pl.Schema | dict[str, pl.DataType], *names: str) -> tuple[pl.Expr, pl.DataType | None]:
    """A nested field as an expression, and its dtype; a null literal when any level is
    missing (older exports lack collected_traffic_source, a chunk may lack a key)."""
    dtype = schema.get(names[0])
    expr = pl.col(names[0])
    for name in names[1:]:
        fields = {f.name: f.dtype for f in dtype.fields} if isinstance(dtype, pl.Struct) else {}
        if name not in fields:
            return pl.lit(None, dtype=S), None
        expr, dtype = expr.struct.field(name), fields[name]
    if dtype is None or dtype == pl.Null:
        return pl.lit(None, dtype=S), None
    return expr, dtype


def _as(expr: pl.Expr, source: pl.DataType | None, target: pl.DataType) -> pl.Expr:
    """Cast a column read as text or natively to the flat dtype; bad values become null."""
    if source is None:
        return pl.lit(None, dtype=target)
    if target == S:
        return _text(expr.cast(S))
    if source == S:
        text = expr.str.strip_chars()
        if target == I64:
            # "12" exactly; "12.0" (a double param) through Float64.
            return pl.coalesce(text.cast(I64, strict=False), text.cast(F64, strict=False).cast(I64, strict=False))
        return text.cast(target, strict=False)
    return expr.cast(target, strict=False)


def _text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text; GA's placeholders such as "(not set)" become null."""
    text = expr.str.strip_chars()
    return pl.when(text.is_in(PLACEHOLDERS)).then(None).otherwise(text)


def _params(raw: pl.DataFrame) -> pl.DataFrame:
    """One row per event that has any known param: ``_INDEX`` + one String column per key."""
    empty = pl.DataFrame(schema={_INDEX: pl.UInt32(), **{_PARAM + k: S for k in PARAM_KEYS}})
    list_type = raw.schema.get("event_params")
    if not isinstance(list_type, pl.List) or not isinstance(list_type.inner, pl.Struct):
        return empty
    fields = {f.name: f.dtype for f in list_type.inner.fields}
    if "key" not in fields or "value" not in fields:
        return empty
    long = (
        raw.select(_INDEX, "event_params")
        .explode("event_params")
        .select(
            _INDEX, pl.col("event_params").struct.field("key").alias("k"), pl.col("event_params").struct.field("value")
        )
        .filter(pl.col("k").is_in(list(PARAM_KEYS)))
    )
    if fields["value"] == S:  # JSON: the value object as text, decoded for known keys only
        text = pl.col("value").str.strip_chars_start()
        # Only an object is a value struct: anything else (a bare string, a number) has no field.
        value = pl.when(text.str.starts_with("{")).then(text)
        long = long.with_columns(value.str.json_decode(VALUE_TEXT_TYPE).alias("value"))
    return _pivot(long)


def _pivot(long: pl.DataFrame) -> pl.DataFrame:
    """``_INDEX``, ``k`` and a ``value`` struct, one row per known param -> one row per
    event: ``_INDEX`` + one String column per key (first occurrence of a key wins)."""
    empty = pl.DataFrame(schema={_INDEX: pl.UInt32(), **{_PARAM + k: S for k in PARAM_KEYS}})
    inner = {"value": long.schema["value"]}
    values = [_path(inner, "value", f) for f in VALUE_ORDER]
    named = {f: expr.cast(S) for f, (expr, dtype) in zip(VALUE_ORDER, values, strict=True) if dtype is not None}
    if not named:
        return empty
    value, disagree, same = choose(named, pl.col("k"), [k for k, t in PARAM_KEYS.items() if t == F64])
    long = long.select(_INDEX, "k", value.alias("v"), disagree.alias("m"), same.alias("same"))
    return long.group_by(_INDEX, maintain_order=True).agg(
        *(pl.col("v").filter(pl.col("k") == k).first().alias(_PARAM + k) for k in PARAM_KEYS),
        pl.col("m").drop_nulls().first().alias(DISAGREE),
        pl.col("same").drop_nulls().first().alias(SAME),
    )


def flatten(raw: pl.DataFrame, params: pl.DataFrame | None = None) -> pl.DataFrame:
    """A chunk of nested export rows (with ``_row``) -> the flat columns of FLAT_SCHEMA.

    ``params``: the chunk's known params as :func:`_params` gives them, when they
    were read apart from ``raw`` (then ``raw`` needs no ``event_params``)."""
    raw = raw.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32()).alias(_INDEX))
    if params is None:
        params = _params(raw)
    joined = raw.join(params, on=_INDEX, how="left", maintain_order="left")
    schema = joined.schema

    def field(target: pl.DataType, *names: str) -> pl.Expr:
        expr, dtype = _path(schema, *names)
        return _as(expr, dtype, target)

    def param(key: str) -> pl.Expr:
        return _as(pl.col(_PARAM + key), S, PARAM_KEYS[key])

    flat = joined.select(
        field(I64, "event_timestamp").alias("event_timestamp"),
        field(S, "event_date").alias("event_date"),
        field(S, "event_name").alias("event_name"),
        field(S, "user_pseudo_id").alias("user_pseudo_id"),
        field(S, "user_id").alias("user_id"),
        field(S, "platform").alias("__platform"),
        field(S, "device", "web_info", "hostname").alias("__hostname"),
        *(param(k).alias(k) for k in PARAM_KEYS if k != "transaction_id"),
        pl.coalesce(param("transaction_id"), field(S, "ecommerce", "transaction_id")).alias("transaction_id"),
        field(F64, "ecommerce", "purchase_revenue").alias("purchase_revenue"),
        field(F64, "ecommerce", "purchase_revenue_in_usd").alias("purchase_revenue_in_usd"),
        field(S, "device", "category").alias("device_category"),
        field(S, "device", "operating_system").alias("operating_system"),
        field(S, "device", "operating_system_version").alias("operating_system_version"),
        field(S, "device", "web_info", "browser").alias("browser"),
        field(S, "device", "web_info", "browser_version").alias("browser_version"),
        field(S, "device", "language").str.to_lowercase().alias("language"),
        field(S, "geo", "continent").alias("geo_continent"),
        field(S, "geo", "country").alias("geo_country"),
        field(S, "geo", "region").alias("geo_region"),
        field(S, "geo", "city").alias("geo_city"),
        field(S, "traffic_source", "name").alias("traffic_source_name"),
        field(S, "traffic_source", "medium").alias("traffic_source_medium"),
        field(S, "traffic_source", "source").alias("traffic_source_source"),
        field(S, "collected_traffic_source", "manual_source").alias("cts_source"),
        field(S, "collected_traffic_source", "manual_medium").alias("cts_medium"),
        field(S, "collected_traffic_source", "manual_campaign_name").alias("cts_campaign"),
        field(S, "collected_traffic_source", "manual_term").alias("cts_term"),
        field(S, "collected_traffic_source", "manual_content").alias("cts_content"),
        field(S, "collected_traffic_source", "gclid").alias("cts_gclid"),
        pl.col(COL_ROW).cast(pl.UInt64),
    )
    location = pl.col("page_location")
    host_of_location = location.str.extract(r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/?#@]*@)?([^/?#:]+)", 1)
    platform = pl.col("__platform").str.to_uppercase()
    flat = flat.with_columns(
        pl.coalesce(pl.col("user_id"), pl.col("user_pseudo_id")).alias("visitor_id"),
        pl.when(platform == "WEB")
        .then(pl.lit("web"))
        .when(platform.is_in(["IOS", "ANDROID"]))
        .then(pl.lit("app"))
        .when(location.is_not_null())
        .then(pl.lit("web"))
        .otherwise(pl.lit("app"))
        .alias("stream_type"),
        pl.coalesce(pl.col("__hostname"), host_of_location).str.to_lowercase().alias("hostname"),
        pl.when(pl.col("event_name") == "purchase")
        .then(pl.coalesce(pl.col("purchase_revenue"), pl.col("value")))
        .alias("revenue"),
    )
    flat = flat.with_columns(pl.when(pl.col("revenue") > 0).then(pl.col("revenue")).alias("revenue"))
    flat = _with_utm_location(flat)
    flat = _with_geo_codes(flat)
    return flat.select(*(pl.col(c).cast(t) for c, t in FLAT_SCHEMA.items()), COL_ROW)


# --------------------------------------------------------------------------- utm tags


_UTM = (
    ("utm_source", "source"),
    ("utm_medium", "medium"),
    ("utm_campaign", "campaign"),
    ("utm_term", "term"),
    ("utm_content", "content"),
)


def _with_utm_location(flat: pl.DataFrame) -> pl.DataFrame:
    """``page_location_with_utm``: page_location, plus the event's own attribution as a
    query when the URL carries none, so Umami (which reads utm_* and gclid only from
    the url) sees the campaign GA recorded. A mapping template cannot test the query.

    Values come from collected_traffic_source when it has any, else from the
    event's source/medium/... params (never mixed); GA-derived mediums (organic,
    referral) are left out: Umami derives those from the referrer. Values are
    percent-encoded on the unique values only.
    """
    use_cts = pl.any_horizontal(pl.col(f"cts_{k}").is_not_null() for _, k in _UTM)
    values = {tag: pl.when(use_cts).then(pl.col(f"cts_{k}")).otherwise(pl.col(k)) for tag, k in _UTM}
    values["gclid"] = pl.coalesce(pl.col("cts_gclid"), pl.col("gclid"))
    picked = flat.select(**{_UTM_PREFIX + tag: expr for tag, expr in values.items()})
    uniques = pl.concat([picked.get_column(c) for c in picked.columns]).drop_nulls().unique().to_list()
    encoded = {value: urllib.parse.quote(value, safe="") for value in uniques}

    location = pl.col("page_location")
    query = location.str.replace(r"#.*$", "").str.extract(r"\?(.*)$", 1)
    has_utm = query.str.contains(r"(^|&)utm_[A-Za-z]+=").fill_null(False)
    has_gclid = query.str.contains(r"(^|&)gclid=").fill_null(False)
    derived = pl.col(_UTM_PREFIX + "utm_medium").str.to_lowercase().is_in(DERIVED_MEDIUMS).fill_null(False)

    def pair(tag: str, allowed: pl.Expr) -> pl.Expr:
        value = (
            pl.col(_UTM_PREFIX + tag).replace_strict(encoded, default=None, return_dtype=S)
            if encoded
            else pl.lit(None, S)
        )
        return pl.when(allowed & value.is_not_null()).then(pl.concat_str(pl.lit(f"{tag}="), value))

    utm_allowed = has_utm.not_() & derived.not_()
    extra = pl.concat_str(
        [pair(tag, utm_allowed) for tag, _ in _UTM] + [pair("gclid", has_gclid.not_())],
        separator="&",
        ignore_nulls=True,
    )
    base = location.str.replace(r"#.*$", "")
    fragment = location.str.extract(r"(#.*)$", 1).fill_null("")
    separator = (
        pl.when(base.str.contains("?", literal=True).not_())
        .then(pl.lit("?"))
        .when(base.str.ends_with("?") | base.str.ends_with("&"))
        .then(pl.lit(""))
        .otherwise(pl.lit("&"))
    )
    # In two steps: the tags first (into a column), then the url; one expression
    # evaluated ``extra`` twice and cost more than the rest of the chunk's flattening.
    tags = pl.col(_UTM_PREFIX + "extra")
    with_utm = (
        pl.when(tags.is_null() | (tags == "")).then(location).otherwise(pl.concat_str(base, separator, tags, fragment))
    )
    return (
        pl.concat([flat, picked], how="horizontal")
        .with_columns(extra.alias(_UTM_PREFIX + "extra"))
        .with_columns(with_utm.alias("page_location_with_utm"))
        .drop(*picked.columns, _UTM_PREFIX + "extra")
    )


# --------------------------------------------------------------------------- countries and regions


#: GA4 writes Unicode CLDR English names; those pycountry does not know by any name.
COUNTRY_ALIASES: dict[str, str] = {
    "turkey": "TR",
    "kosovo": "XK",  # user-assigned code, used by GA, Google and the EU
    "ivory coast": "CI",
    "cote d'ivoire": "CI",
    "myanmar (burma)": "MM",
    "burma": "MM",
    "congo - kinshasa": "CD",
    "congo - brazzaville": "CG",
    "democratic republic of the congo": "CD",
    "republic of the congo": "CG",
    "cape verde": "CV",
    "swaziland": "SZ",
    "vatican city": "VA",
    "micronesia": "FM",
    "st. martin": "MF",
    "caribbean netherlands": "BQ",
    "u.s. virgin islands": "VI",
    "u.s. outlying islands": "UM",
    "british virgin islands": "VG",
    "macao": "MO",
    "macau": "MO",
    "north korea": "KP",
    "east timor": "TL",
    "the netherlands": "NL",
    "the bahamas": "BS",
    "the gambia": "GM",
    "falkland islands": "FK",
    "palestinian territories": "PS",
    "heard & mcdonald islands": "HM",
    "south georgia & south sandwich islands": "GS",
    "svalbard & jan mayen": "SJ",
}


def _fold(name: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a place name."""
    decomposed = unicodedata.normalize("NFKD", name.replace("’", "'"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.lower().split())


@functools.cache
def country_code(name: str) -> str | None:
    """ISO 3166-1 alpha-2 for a GA4 country name; None when unknown or a placeholder.

    Exact names (pycountry's name, official and common names, codes) first, then
    GA's CLDR spellings (``&`` for "and", ``St.`` for "Saint"), then a fuzzy
    search accepted only when the query is part of the country's OWN name
    ("Russia" -> Russian Federation): pycountry's fuzzy search also matches
    subdivisions, and "Kosovo" must not become Serbia.
    """
    import pycountry

    text = name.strip()
    if not text or text in PLACEHOLDERS:
        return None
    folded = _fold(text)
    if folded in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[folded]
    variants = [text, text.replace(" & ", " and "), text.replace("St. ", "Saint ")]
    for variant in variants:
        try:
            return pycountry.countries.lookup(variant).alpha_2
        except LookupError:
            pass
    try:
        candidates = pycountry.countries.search_fuzzy(text)
    except LookupError:
        return None
    for country in candidates:
        names = (getattr(country, a, None) for a in ("name", "official_name", "common_name"))
        if any(n and folded in _fold(n) for n in names):
            return country.alpha_2
    return None


@functools.cache
def _subdivisions(country: str) -> dict[str, str | None]:
    """Folded subdivision name -> ISO 3166-2 code (None when the name is ambiguous)."""
    import pycountry

    found: dict[str, list[tuple[bool, str]]] = {}
    for sub in pycountry.subdivisions.get(country_code=country) or ():
        name = sub.name.split(" [", 1)[0]  # "Wales [Cymru GB-CYM]" -> "Wales"
        found.setdefault(_fold(name), []).append((sub.parent_code is None, sub.code))
    table: dict[str, str | None] = {}
    for name, entries in found.items():
        top = [code for is_top, code in entries if is_top] or [code for _, code in entries]
        table[name] = top[0] if len(top) == 1 else None
    return table


@functools.cache
def region_code(country: str, region: str) -> str | None:
    """ISO 3166-2 code of a region GA4 names in English, when pycountry knows that name."""
    return _subdivisions(country).get(_fold(region))


def _with_geo_codes(flat: pl.DataFrame) -> pl.DataFrame:
    """geo_country_code and geo_region_code, computed on the chunk's unique values."""
    names = flat.get_column("geo_country").drop_nulls().unique().to_list()
    codes = {name: country_code(name) for name in names}
    country = pl.col("geo_country").replace_strict(codes, default=None, return_dtype=S) if codes else pl.lit(None, S)
    flat = flat.with_columns(country.alias("geo_country_code"))
    pairs = flat.select("geo_country_code", "geo_region").drop_nulls().unique()
    table = pairs.with_columns(
        pl.Series(
            "geo_region_code",
            [region_code(c, r) for c, r in pairs.iter_rows()],
            dtype=S,
        )
    )
    return flat.join(table, on=["geo_country_code", "geo_region"], how="left", maintain_order="left", nulls_equal=False)


__all__ = ["FLAT_SCHEMA", "PARAM_KEYS", "PLUGIN", "RAW_SCHEMA", "country_code", "flatten", "region_code"]
