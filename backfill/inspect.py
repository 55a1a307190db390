"""``backfill inspect``: what is in a file, and a mapping to start from.

Reads only the first chunk (``rows``), so it answers in a second on any size.
"""

from __future__ import annotations

import re

import polars as pl

from .errors import BackfillError, ConfigError
from .inspect_exports import NO_HINTS, ReaderHints, Recognised, export_report, recognise, unrecognised_reasons
from .inspect_suggest import epoch_guess, suggest_mapping
from .schema import COL_SOURCE_ERROR
from .sources import ReadOptions, expand_sources, iter_chunks
from .transform import iso_exprs, iso_parts

_TIME_LIKE = re.compile(r"(time|date|created|updated|_at$|^ts$)", re.IGNORECASE)


def inspect_source(
    source: str,
    fmt: str | None,
    delimiter: str | None,
    encoding: str | None,
    rows: int,
    plugin_options: tuple[tuple[str, str], ...] = (),
) -> tuple[str, str]:
    """(a human description, a suggested mapping YAML).

    An export format we read (every plugin's ``sniff``) is named first, with its
    preset and the next command; anything else is described column by column.
    A file a plugin reads by its name (``access.log``) but cannot read says why,
    and which option would let it (``--log-format``).
    """
    hints = (plugin_options, encoding)
    found = recognise(source, fmt, hints)
    if found is not None:
        text, mapping = export_report(found, hints)
        return text + "\n\n" + _export_sample(found, rows, hints), mapping
    reasons = unrecognised_reasons(source, fmt, hints)
    try:
        text, mapping = _describe_generic(source, fmt, delimiter, encoding, rows)
    except ConfigError as exc:
        if not reasons:
            raise
        return "\n".join([*reasons, f"(read as a data file instead: {exc})"]), ""
    return ("\n".join(reasons) + "\n\n" + text if reasons else text), mapping


def _describe_generic(
    source: str, fmt: str | None, delimiter: str | None, encoding: str | None, rows: int
) -> tuple[str, str]:
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
    raw = chunk.drop([c for c in chunk.columns if c.startswith("_")])
    frame = raw.with_columns(_infer_types(raw))
    text = describe(files[0].path, frame)
    if unread:
        text += f"\n\n{unread:,} sampled rows could not be read (wrong number of fields, not JSON); validate lists them"
    return text, suggest_mapping(frame, raw)


def _export_sample(found: Recognised, rows: int, hints: ReaderHints = NO_HINTS) -> str:
    """The columns the format's reader gives (what its preset maps), from the first file that has rows."""
    plugin_options, encoding = hints
    options = ReadOptions(
        format=found.plugin.name,
        chunk_rows=rows,
        plugin_options=plugin_options,
        **({"encoding": encoding} if encoding else {}),
    )
    try:
        files, _ = expand_sources(found.files[:1] if found.whole else found.files, options)
        for index, source in enumerate(files):
            chunk = next(iter_chunks(source, index, options), None)
            if chunk is not None:
                frame = chunk.drop([c for c in chunk.columns if c.startswith("_")])
                return f"the columns the {found.plugin.name} reader gives (what a mapping uses):\n" + describe(
                    source.path, frame
                )
    except BackfillError as exc:
        return f"reading it as {found.plugin.name} failed: {exc}"
    return f"reading it as {found.plugin.name} gave no rows"


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
            out.append((name, f"{lo} ({epoch_guess(lo)})", f"{hi} ({epoch_guess(hi)})"))
    return out
