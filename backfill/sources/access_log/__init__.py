"""Raw web server access logs, read as they lie on disk (``--format access_log``).

Every page-view format Matomo's log importer reads, detected per file from its
first lines (``detect.py``) unless ``--log-format`` names it: nginx / Apache
``combined`` and ``common`` (with or without a virtual host prefix), OVH and
Gandi hosting logs, HAProxy HTTP logs (with their syslog prefix), AWS
CloudFront, ALB, Classic ELB and S3 logs, W3C extended logs (IIS, IIS Advanced
Logging, Incapsula, Netscaler: ``#Fields:``, ``w3c.py``), JSON lines (nginx
``escape=json``, Caddy, Traefik), and a custom nginx ``log_format`` or Apache
``LogFormat`` given with ``--log-format`` (``custom.py``). Plain, ``.gz``,
``.zst``, ``.bz2`` or ``.xz``; rotated files read oldest first. Streaming
servers' logs (Icecast, SHOUTcast, CloudFront RTMP) are refused by name.

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
site search, e.g. ``q,s``), ``w3c_fields`` (W3C field names under other names,
``x-client=c-ip``), ``log_timezone`` (the zone of times written without an
offset: HAProxy, IIS ``time-local``), ``send_ip`` (``--geo ip``: fill
``geo_ip``). ``ReadOptions.encoding`` is the text's encoding.
"""

from __future__ import annotations

import json
import re
import weakref
import zoneinfo
from collections.abc import Iterator

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW, SOURCE_RAW_MAX
from backfill.sources import Explanation, FormatPlugin, ReadOptions, SourceFile
from backfill.sources.access_log import detect as detection
from backfill.sources.access_log import w3c
from backfill.sources.access_log.formats import FALLBACK, LineFormat
from backfill.sources.access_log.lines import head_lines, iter_line_frames
from backfill.sources.access_log.parse import SCHEMA, normalize
from backfill.sources.access_log.rotation import log_group, sort_key
from backfill.sources.access_log.sessions import VisitState
from backfill.sources.compression import compression_of_name
from backfill.sources.records import MOSTLY_BAD_SHARE, refuse_mostly_bad
from backfill.transform import map_unique

#: File endings read as logs inside a directory: .log, none, and rotation numbers (.1, .2, ...).
ROTATED_EXTENSIONS = (".log", "", *(f".{n}" for n in range(1, 1000)))

__all__ = ["PLUGIN", "SCHEMA", "iter_frames", "log_schema", "sniff", "sort_key"]


def plugin_option(options: ReadOptions, key: str) -> str | None:
    return dict(getattr(options, "plugin_options", ()) or ()).get(key)


def _encoding(options: ReadOptions) -> str | None:
    encoding = getattr(options, "encoding", None)
    return None if not encoding or encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def file_format(source: SourceFile, options: ReadOptions) -> tuple[LineFormat, pl.DataFrame] | None:
    """The format of a file and its first lines read in it; None for an empty file.

    Refuses the file here, before any run, when most of those lines cannot be read
    (the same rule as while reading), so ``inspect`` never names a format that
    ``validate`` then refuses.
    """
    head = head_lines(source.path, source.compression, _encoding(options))
    if not head:
        return None
    renames = w3c.parse_renames(plugin_option(options, "w3c_fields"))
    timezone = plugin_option(options, "log_timezone")
    _check_zone(timezone)
    fmt = detection.detect(source.path, head, plugin_option(options, "log_format"), renames)
    lines = pl.DataFrame({COL_ROW: [n for n, _ in head], "line": [t for _, t in head]}, schema=_LINES)
    if fmt.time_kind == "w3c":
        lines = w3c.data_lines(lines, fmt, source.path)
    parts, matched = _parts(lines, fmt)
    frame = normalize(parts, fmt, None, (), timezone or "UTC")
    readable = matched & frame["time"].is_not_null()
    bad = int((~readable).sum())
    if lines.height and bad > lines.height * MOSTLY_BAD_SHARE:
        first = int((~readable).arg_true()[0])
        number, text = lines.row(first)
        why = "its time is not a valid time" if matched[first] else "the line is not in that format"
        raise SourceError(
            f"{source.path}: {bad} of the first {lines.height} lines cannot be read as {fmt.description} "
            f"(line {number}: {why}: {text[:200]!r}). If the server uses its own format, pass it with "
            "--log-format '<the log_format / LogFormat string>'"
        )
    return fmt, frame.filter(readable)


def _check_zone(zone: str | None) -> None:
    if zone is None:
        return
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--log-timezone {zone!r} is not an IANA time zone (e.g. Europe/Paris, UTC)") from None


def log_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed columns; detects the format first, so a file that is no log fails before the run."""
    found = file_format(source, options)
    if found is None:
        return {}  # an empty log (just rotated): no rows, listed as not read
    fmt, head = found
    if not plugin_option(options, "hostname") and not _names_site(head):
        raise ConfigError(
            f"{source.path}: this log ({fmt.description}) names no site on its lines: pass the site's "
            "hostname with --hostname www.example.com (Umami files page views under it)"
        )
    _time_note(fmt, source.path, options)
    if fmt.name == "cloudfront" and "x-host-header" not in fmt.fields and not plugin_option(options, "hostname"):
        options.note(
            f"{source.path}: this CloudFront log predates its x-host-header field: page views are filed under "
            "the distribution's own domain (cs(Host), *.cloudfront.net); pass --hostname for the site's name"
        )
    return dict(SCHEMA)


def _names_site(head: pl.DataFrame) -> bool:
    """Whether the first lines name their site (a virtual host, a Host header, an absolute URL)."""
    return head["host"].drop_nulls().len() > 0


def _time_note(fmt: LineFormat, name: str, options: ReadOptions) -> None:
    if fmt.local_time and not plugin_option(options, "log_timezone"):
        options.note(
            f"{fmt.description} (e.g. {name}): its times carry no UTC offset and were read as UTC; if the "
            "server's clock was local time, pass its zone: --log-timezone Europe/Paris"
        )


_LINES = {COL_ROW: pl.UInt64(), "line": pl.String()}


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Frames of ``parse.SCHEMA`` (+ ``_row``), at most ``chunk_rows`` lines each."""
    found = file_format(source, options)
    if found is None:
        return
    fmt = found[0]
    hostname = plugin_option(options, "hostname")
    params = tuple(p.strip() for p in (plugin_option(options, "search_params") or "").split(",") if p.strip())
    send_ip = plugin_option(options, "send_ip") == "true"
    timezone = plugin_option(options, "log_timezone") or "UTC"
    state = _visit_state(options, log_group(source.path))
    reading = _Reading(fmt, source.path, hostname, params, send_ip, timezone)
    frames = (
        reading.chunk(lines, state)
        for lines in iter_line_frames(source.path, source.compression, options.chunk_rows, _encoding(options))
    )
    hint = "Check --log-format against the server's configuration (or leave it out to detect the format)."
    yield from refuse_mostly_bad(frames, source.path, unit="line", hint=hint)


class _Reading:
    """How one file's chunks are read: its format and the reader options."""

    def __init__(
        self, fmt: LineFormat, name: str, hostname: str | None, params: tuple[str, ...], send_ip: bool, timezone: str
    ) -> None:
        self.fmt, self.name, self.hostname = fmt, name, hostname
        self.params, self.send_ip, self.timezone = params, send_ip, timezone

    def chunk(self, lines: pl.DataFrame, state: VisitState) -> pl.DataFrame:
        fmt = self.fmt
        if fmt.time_kind == "w3c":
            lines = w3c.data_lines(lines, fmt, self.name)
        parts, matched = _parts(lines, fmt)
        frame = normalize(parts, fmt, self.hostname, self.params, self.timezone)
        bad_reason = _bad_reasons(lines, frame, matched, fmt, self.name)
        if bad_reason is not None:  # unreadable lines keep only their number (their text is in bad_reason)
            good = pl.Series(matched & frame["time"].is_not_null())
            frame = frame.with_columns(pl.when(good).then(pl.col(c)).alias(c) for c in frame.columns if c != COL_ROW)
        frame = state.assign(frame)
        frame = frame.with_columns((pl.col("ip") if self.send_ip else pl.lit(None, pl.String)).alias("geo_ip"))
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
    escaped = text.str.contains("\\x", literal=True)
    if escaped.any():  # only those lines go through Python
        index = escaped.arg_true()
        text = text.scatter(index, map_unique(text.gather(index), _nginx_hex_escapes, pl.String()))
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


_HEX_ESCAPES = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+")


def _nginx_hex_escapes(line: str) -> str:
    """nginx without ``escape=json`` writes a byte it will not print as ``\\xHH``, which is no
    JSON: a run of them is decoded as UTF-8 where it is, else kept percent-encoded."""
    if "\\x" not in line:
        return line

    def text(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group(0).replace("\\x", ""))
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = "".join(f"%{byte:02X}" for byte in raw)
        return json.dumps(decoded)[1:-1]

    return _HEX_ESCAPES.sub(text, line)


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
    return explain(path, ()).ok


#: The reader options as the command line spells them (inspect prints them in the next command).
_FLAGS = {
    "log_format": "--log-format",
    "hostname": "--hostname",
    "search_params": "--search-param",
    "w3c_fields": "--w3c-field",
    "log_timezone": "--log-timezone",
}


def explain(path: str, plugin_options: tuple[tuple[str, str], ...], encoding: str | None = None) -> Explanation:
    """What ``inspect`` says of a file: the format found and the flags a run will need,
    or why it is not an access log this reader can read."""
    options = ReadOptions(
        format="access_log", plugin_options=plugin_options, **({"encoding": encoding} if encoding else {})
    )
    source = SourceFile(path, "access_log", compression_of_name(path), 0, 0)
    try:
        found = file_format(source, options)
    except (SourceError, ConfigError) as exc:
        return Explanation(False, [str(exc)], [])
    except OSError as exc:
        return Explanation(False, [f"{path}: cannot read it ({exc})"], [])
    if found is None:
        return Explanation(False, [f"{path}: empty"], [])
    fmt, head = found
    lines = [f"format: {fmt.description} ({fmt.name}), found from its first lines"]
    flags = [arg for key, value in plugin_options if key in _FLAGS for arg in (_FLAGS[key], value)]
    if not plugin_option(options, "hostname") and not _names_site(head):
        lines.append("its lines name no site: --hostname is needed (the site's name, e.g. www.example.com)")
        flags += ["--hostname", "www.example.com"]
    zone = plugin_option(options, "log_timezone")
    if fmt.local_time:
        lines.append(
            f"its times carry no UTC offset: read in {zone}"
            if zone
            else "its times carry no UTC offset: read as UTC unless --log-timezone names the server's zone"
        )
    return Explanation(True, lines, flags)


PLUGIN = FormatPlugin(
    name="access_log",
    description="web server access log (nginx/Apache combined, common, vhost, OVH, Gandi, HAProxy, JSON "
    "(nginx, Caddy, Traefik), CloudFront, ALB, ELB, S3, W3C/IIS/Incapsula, or --log-format; rotated, "
    ".gz/.zst/.bz2/.xz)",
    iter_frames=iter_frames,
    schema=log_schema,
    extensions=ROTATED_EXTENSIONS,
    sniff=sniff,
    preset="access-log",
    sort_key=sort_key,
    explain=explain,
)
