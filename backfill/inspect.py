"""``backfill inspect``: what is in a file, and a mapping to start from.

Reads only the first chunk (``rows``), so it answers in a second on any size.
"""

from __future__ import annotations

import re

import polars as pl

from .errors import ConfigError
from .schema import COL_SOURCE_ERROR
from .sources import ReadOptions, expand_sources, iter_chunks
from .transform import iso_exprs, iso_parts

#: Column-name hints for the suggested mapping, most specific first.
_HINTS: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "event_timestamp",
        "created_at",
        "created",
        "time",
        "date",
        "datetime",
        "ts",
    ),
    "visitor": (
        "visitor_id",
        "user_pseudo_id",
        "user_id",
        "customer_id",
        "customer",
        "session_id",
        "client_id",
        "uid",
        "user",
    ),
    "url": ("url", "page_location", "page", "path", "pathname", "request_path", "page_path"),
    "hostname": ("hostname", "host", "domain"),
    "referrer": ("referrer", "referer", "page_referrer"),
    "title": ("title", "page_title"),
    "name": ("event_name", "event", "name", "type", "action"),
    "userAgent": ("user_agent", "useragent", "ua"),
    "language": ("language", "lang", "locale"),
    "screen": ("screen", "screen_resolution", "resolution"),
    "browser": ("browser",),
    "os": ("os", "operating_system", "platform"),
    "device": ("device", "device_category", "device_type"),
    "ip": ("ip", "ip_address", "client_ip", "remote_addr"),
}
_TIME_LIKE = re.compile(r"(time|date|created|updated|_at$|^ts$)", re.IGNORECASE)


def inspect_source(
    source: str, fmt: str | None, delimiter: str | None, encoding: str | None, rows: int
) -> tuple[str, str]:
    """(a human description, a suggested mapping YAML)."""
    kwargs: dict[str, object] = {"chunk_rows": rows}
    if fmt:
        kwargs["format"] = fmt
    if delimiter:
        kwargs["delimiter"] = delimiter
    if encoding:
        kwargs["encoding"] = encoding
    options = ReadOptions(**kwargs)  # type: ignore[arg-type]
    files, _ = expand_sources([source], options)
    if not files:
        raise ConfigError(f"no data file found at {source}")
    chunk = next(iter_chunks(files[0], 0, options), None)
    if chunk is None:
        return f"{files[0].path}: no data rows", ""
    unread = 0
    if COL_SOURCE_ERROR in chunk.columns:  # rows the reader could not read: not described
        unread = chunk.get_column(COL_SOURCE_ERROR).is_not_null().sum()
        chunk = chunk.filter(pl.col(COL_SOURCE_ERROR).is_null())
    frame = chunk.drop([c for c in chunk.columns if c.startswith("_")])
    frame = frame.with_columns(_infer_types(frame))
    text = describe(files[0].path, frame)
    if unread:
        text += f"\n\n{unread:,} sampled rows could not be read (wrong number of fields, not JSON); validate lists them"
    return text, suggest_mapping(frame)


#: Share of a text column's values that must parse for it to be called numeric or a time.
_TYPE_THRESHOLD = 0.95


def _infer_types(frame: pl.DataFrame) -> list[pl.Series]:
    """Text columns that are really numbers or times (CSV reads everything as text);
    a few bad values do not hide the type (they are what validate will reject)."""
    out = []
    for name in frame.columns:
        col = frame[name]
        present = col.len() - col.null_count()
        if col.dtype != pl.String or present == 0:
            continue
        number = col.str.strip_chars().cast(pl.Float64, strict=False)
        if number.len() - number.null_count() >= _TYPE_THRESHOLD * present:
            out.append(number.alias(name))
            continue
        parts = frame.select(iso_parts(pl.col(name)))
        seconds, _ = iso_exprs("UTC")
        parsed = parts.select(seconds.alias(name))[name]
        if parsed.len() - parsed.null_count() >= _TYPE_THRESHOLD * present:
            out.append(pl.from_epoch(parsed, "s").dt.replace_time_zone("UTC").alias(name))
    return out


def describe(path: str, frame: pl.DataFrame) -> str:
    lines = [f"{path}: {frame.height:,} rows sampled, {frame.width} columns", ""]
    lines.append(f"{'column':<32} {'type':<18} {'nulls':>8}  example")
    for name in frame.columns:
        col = frame[name]
        example = col.drop_nulls().head(1).to_list()
        shown = str(example[0])[:48] if example else ""
        lines.append(f"{name:<32} {col.dtype._string_repr():<18} {col.null_count():>8,}  {shown}")
    ranges = _time_ranges(frame)
    if ranges:
        lines.append("")
        lines.append("time ranges:")
        lines.extend(f"  {name}: {lo} .. {hi}" for name, lo, hi in ranges)
    for number, row in enumerate(frame.head(3).iter_rows(named=True), 1):
        lines.append("")
        lines.append(f"sample row {number}:")
        lines.extend(f"  {key:<30} {str(value)[:70]}" for key, value in row.items())
    return "\n".join(lines)


def _time_ranges(frame: pl.DataFrame) -> list[tuple[str, object, object]]:
    out = []
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, pl.Datetime | pl.Date):
            out.append((name, col.min(), col.max()))
        elif col.dtype.is_numeric() and _TIME_LIKE.search(name):
            lo, hi = col.min(), col.max()
            out.append((name, f"{lo} ({_epoch_guess(lo)})", f"{hi} ({_epoch_guess(hi)})"))
    return out


def _epoch_guess(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    magnitude = abs(value)
    for unit, low in (("ns", 1e17), ("us", 1e14), ("ms", 1e11), ("s", 1e8)):
        if magnitude >= low:
            return f"looks like epoch {unit}"
    return "not an epoch time?"


def _pick(frame: pl.DataFrame, target: str) -> str | None:
    lowered = {c.lower(): c for c in frame.columns}
    for hint in _HINTS.get(target, ()):
        if hint in lowered:
            return lowered[hint]
    return None


def suggest_mapping(frame: pl.DataFrame) -> str:
    """A starting point; every guess is marked so the user checks it."""
    lines = [
        "# Suggested by `backfill inspect`: check every line, then run `backfill validate`.",
        "version: 1",
    ]
    ts = _pick(frame, "timestamp")
    if ts is None:
        ts = next((c for c in frame.columns if isinstance(frame[c].dtype, pl.Datetime)), None)
    lines.append("timestamp:")
    lines.append(f"  column: {ts or 'CHANGE_ME'}")
    if ts is not None and frame[ts].dtype.is_numeric():
        unit = _epoch_guess(frame[ts].median()).rsplit(" ", 1)[-1]  # the median: one odd row does not decide
        lines.append("  format: epoch")
        lines.append(f"  unit: {unit if unit in ('s', 'ms', 'us', 'ns') else 's'}")
    else:
        lines.append("  format: iso8601")
        lines.append("  timezone: UTC   # the zone of values without an offset: CHECK")
    visitor = _pick(frame, "visitor")
    lines.append("visitor:")
    if visitor:
        lines.append(f"  columns: [{visitor}]")
    else:
        lines.append("  strategy: per_row   # no visitor column found: every row its own visitor")
    lines.append("type: event")
    lines.append("fields:")
    for target in (
        "hostname",
        "url",
        "referrer",
        "title",
        "name",
        "userAgent",
        "language",
        "screen",
        "browser",
        "os",
        "device",
        "ip",
    ):
        column = _pick(frame, target)
        if column and column not in (ts, visitor):
            if target == "name" and frame[column].dtype == pl.String:
                views = [v for v in ("pageview", "page_view", "PageView") if v in set(frame[column].to_list())]
                if views:
                    lines.append(
                        f"  {target}: {{column: {column}, map: {{{views[0]}: null}}}}  # pageviews have no name"
                    )
                    continue
            lines.append(f"  {target}: {column}")
    if not any(line.startswith("  url:") for line in lines):
        lines.append("  url: {const: /}   # no page column found: CHECK")
    used = {line.split(": ", 1)[-1] for line in lines}
    extra = [c for c in frame.columns if c not in used and c not in (ts, visitor)][:10]
    for column in extra:
        lines.append(f"  # data.{column}: {column}")
    lines.append("normalize: true")
    return "\n".join(lines) + "\n"
