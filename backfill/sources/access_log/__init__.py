"""Raw web server access logs, read as they lie on disk (``--format access_log``).

nginx / Apache ``combined`` and ``common`` (with or without a virtual host
prefix), a custom nginx ``log_format`` or Apache ``LogFormat`` given with
``--log-format``, JSON lines (nginx ``escape=json``, Caddy, Traefik), AWS
CloudFront, ALB and S3 logs and IIS W3C extended logs (``#Fields:``); plain,
``.gz`` or ``.zst``, rotated files read oldest first. The format is detected
per file from its first lines (``detect.py``) unless ``--log-format`` names it.

Every line becomes one row of the fixed columns of ``parse.SCHEMA``: what the
request was (``kind``: page, asset, api, ...), who asked (``ip`` after
X-Forwarded-For / CDN client-ip fields, ``user_agent``, ``agent``: uptime
monitor, feed reader, prefetch) and which visit it belongs to (``visit``: 30
minutes without a page view end one, see ``sessions.py``). Deciding what is
a page view is left to the mapping's named filters (``mappings/access-log.yaml``),
so the ledger counts each rule and a user can turn one off.

A line that matches no format is a row with ``_source_error`` and its text
(rejected as ``(record)``); a file whose first lines match nothing, or that
switches to another known format, is refused naming the line.

Reader options (``ReadOptions.plugin_options``, from the command line or the
mapping's ``reader:``): ``log_format``, ``hostname`` (the site, for logs
without a virtual host), ``search_params`` (comma-separated query keys of the
site search, e.g. ``q,s``), ``send_ip`` (``--geo ip``: fill ``geo_ip``).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW, SOURCE_RAW_MAX
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources.access_log import detect as detection
from backfill.sources.access_log.formats import FALLBACK, LineFormat
from backfill.sources.access_log.lines import head_lines, iter_line_frames
from backfill.sources.access_log.parse import SCHEMA, normalize
from backfill.sources.access_log.rotation import log_group, sort_key
from backfill.sources.access_log.sessions import VisitState
from backfill.sources.records import refuse_mostly_bad

#: File endings read as logs inside a directory: .log, none, and rotation numbers (.1, .2, ...).
ROTATED_EXTENSIONS = (".log", "", *(f".{n}" for n in range(1, 1000)))

__all__ = ["PLUGIN", "SCHEMA", "iter_frames", "log_schema", "sniff", "sort_key"]


def plugin_option(options: ReadOptions, key: str) -> str | None:
    return dict(getattr(options, "plugin_options", ()) or ()).get(key)


def log_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed columns; detects the format first, so a file that is no log fails before the run."""
    head = head_lines(source.path, source.compression)
    if not head:
        return {}  # an empty log (just rotated): no rows, listed as not read
    fmt = detection.detect(source.path, head, plugin_option(options, "log_format"))
    if not plugin_option(options, "hostname") and not {"host", "bucket"} & set(fmt.parts()):
        raise ConfigError(
            f"{source.path}: this log ({fmt.description}) has no virtual host field: pass the site's "
            "hostname with --hostname www.example.com (Umami files page views under it)"
        )
    return dict(SCHEMA)


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Frames of ``parse.SCHEMA`` (+ ``_row``), at most ``chunk_rows`` lines each."""
    head = head_lines(source.path, source.compression)
    if not head:
        return
    fmt = detection.detect(source.path, head, plugin_option(options, "log_format"))
    hostname = plugin_option(options, "hostname")
    params = tuple(p.strip() for p in (plugin_option(options, "search_params") or "").split(",") if p.strip())
    send_ip = plugin_option(options, "send_ip") == "true"
    state = _visit_state(options, log_group(source.path))
    frames = (
        _chunk(lines, fmt, source.path, hostname, params, send_ip, state)
        for lines in iter_line_frames(source.path, source.compression, options.chunk_rows)
    )
    hint = "Check --log-format against the server's configuration (or leave it out to detect the format)."
    yield from refuse_mostly_bad(frames, source.path, unit="line", hint=hint)


def _chunk(
    lines: pl.DataFrame,
    fmt: LineFormat,
    name: str,
    hostname: str | None,
    params: tuple[str, ...],
    send_ip: bool,
    state: VisitState,
) -> pl.DataFrame:
    if fmt.name in ("iis", "cloudfront"):
        lines = _w3c_lines(lines, fmt, name)
    parts, matched = _parts(lines, fmt)
    frame = normalize(parts, fmt, hostname, params)
    bad_reason = _bad_reasons(lines, frame, matched, fmt, name)
    if bad_reason is not None:  # unreadable lines keep only their number (their text is in bad_reason)
        good = pl.Series(matched & frame["time"].is_not_null())
        frame = frame.with_columns(pl.when(good).then(pl.col(c)).alias(c) for c in frame.columns if c != COL_ROW)
    frame = state.assign(frame)
    frame = frame.with_columns((pl.col("ip") if send_ip else pl.lit(None, pl.String)).alias("geo_ip"))
    frame = frame.select(*(pl.col(c).cast(t) for c, t in SCHEMA.items()), COL_ROW)
    if bad_reason is not None:
        frame = frame.join(bad_reason, on=COL_ROW, how="left", maintain_order="left")
    return frame


def _parts(lines: pl.DataFrame, fmt: LineFormat) -> tuple[pl.DataFrame, pl.Series]:
    """The format's named parts of each line, and whether the line matched."""
    if fmt.kind == "json":
        return _json_parts(lines, fmt)
    groups = lines.select(pl.col("line").str.extract_groups(fmt.pattern).alias("g"), COL_ROW).unnest("g")
    required = "date" if fmt.time_kind == "w3c" else "time"
    return groups, groups[required].is_not_null()


def _json_parts(lines: pl.DataFrame, fmt: LineFormat) -> tuple[pl.DataFrame, pl.Series]:
    """Each line decoded with the format's key paths as one struct type, in polars.

    polars refuses a whole chunk for one line that is not a JSON object; only then
    are the lines checked one by one in Python, and the bad ones decoded as null.
    """
    dtype = _struct(fmt)
    text = lines["line"].alias("j")
    valid = text.str.starts_with("{")
    try:
        decoded = text.str.json_decode(dtype)
    except pl.exceptions.PolarsError:
        valid = pl.Series([_is_object(v) for v in text.to_list()], dtype=pl.Boolean)
        decoded = text.zip_with(valid, pl.Series([None] * len(text), dtype=pl.String)).str.json_decode(dtype)
    frame = pl.DataFrame({"j": decoded, COL_ROW: lines[COL_ROW]})
    fields = {part: _json_field(path) for part, path in fmt.json_paths.items() if not part.endswith(FALLBACK)}
    for part, path in fmt.json_paths.items():
        if part.endswith(FALLBACK):
            main = part.removesuffix(FALLBACK)
            fields[main] = pl.coalesce(fields[main], _json_field(path))
    parts = frame.select(*(expr.alias(part) for part, expr in fields.items()), COL_ROW)
    return parts, valid & parts["time"].is_not_null()


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _struct(fmt: LineFormat) -> pl.DataType:
    tree: dict = {}
    for path in fmt.json_paths.values():
        node = tree
        keys = [k for k in path if isinstance(k, str)]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = "list" if isinstance(path[-1], int) else "text"

    def build(node: dict) -> pl.DataType:
        fields = {}
        for key, value in node.items():
            if isinstance(value, dict):
                fields[key] = build(value)
            else:
                fields[key] = pl.List(pl.String) if value == "list" else pl.String()
        return pl.Struct(fields)

    return build(tree)


def _json_field(path: tuple[str | int, ...]) -> pl.Expr:
    expr = pl.col("j")
    for key in path:
        expr = expr.list.first() if isinstance(key, int) else expr.struct.field(key)
    return expr.cast(pl.String)


def _w3c_lines(lines: pl.DataFrame, fmt: LineFormat, name: str) -> pl.DataFrame:
    """Drop W3C directives (#Version, #Date, ...); a #Fields line that changes the columns refuses the file."""
    directive = pl.col("line").str.starts_with("#")
    fields = lines.filter(directive & pl.col("line").str.starts_with(detection.W3C_FIELDS_PREFIX))
    for number, text in fields.select(COL_ROW, "line").iter_rows():
        names = tuple(f.lower() for f in text[len(detection.W3C_FIELDS_PREFIX) :].split())
        if names != fmt.fields:
            raise SourceError(
                f"{name}: line {number}: the #Fields header changes the columns ({text[:200]!r}); "
                "split the file at this line and import the parts separately"
            )
    return lines.filter(~directive)


def _bad_reasons(
    lines: pl.DataFrame, frame: pl.DataFrame, matched: pl.Series, fmt: LineFormat, name: str
) -> pl.DataFrame | None:
    """``_row``, ``_source_error``, ``_source_raw`` of the lines that cannot be read; None if all can."""
    bad_time = matched & frame["time"].is_null()
    bad = ~matched | bad_time
    if not bool(bad.any()):
        return None
    rows = lines.filter(bad).with_columns(bad_time.filter(bad).alias("bad_time"))
    reasons = []
    for number, text, is_time in rows.select(COL_ROW, "line", "bad_time").iter_rows():
        if is_time:
            reasons.append("the line's time is not a valid time")
            continue
        other = detection.other_format(text, fmt)
        if other is not None:
            raise SourceError(
                f"{name}: line {number} is in another format ({other}) than the lines before it "
                f"({fmt.name}): two logs in one file? Split it and import each part; line {number}: {text[:200]!r}"
            )
        reasons.append(f"line matches no access log format (the file is {fmt.name})")
    return pl.DataFrame(
        {
            COL_ROW: rows[COL_ROW],
            COL_SOURCE_ERROR: pl.Series(reasons, dtype=pl.String),
            COL_SOURCE_RAW: rows["line"].str.slice(0, SOURCE_RAW_MAX),
        }
    )


_STATES: dict[int, dict[str, VisitState]] = {}


def _visit_state(options: ReadOptions, group: str) -> VisitState:
    """The visit state of one log for one run: keyed by the run's ReadOptions object, freed with it."""
    key = id(options)
    if key not in _STATES:
        _STATES[key] = {}
        weakref.finalize(options, _STATES.pop, key, None)
    return _STATES[key].setdefault(group, VisitState())


def sniff(path: str) -> bool:
    """Whether a file's first lines are an access log of a known format (for ``inspect``)."""
    compression = "gzip" if path.endswith(".gz") else "zstd" if path.endswith((".zst", ".zstd")) else None
    try:
        detection.detect(path, head_lines(path, compression), None)
    except (SourceError, ConfigError, OSError):
        return False
    return True


PLUGIN = FormatPlugin(
    name="access_log",
    description="web server access logs: nginx/Apache combined, common, vhost, --log-format, JSON "
    "(nginx, Caddy, Traefik), CloudFront, ALB, S3, IIS W3C; rotated, .gz/.zst",
    iter_frames=iter_frames,
    schema=log_schema,
    extensions=ROTATED_EXTENSIONS,
    sniff=sniff,
    preset="access-log",
    sort_key=sort_key,
)
