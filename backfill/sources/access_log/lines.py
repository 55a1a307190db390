"""A (decompressed) log file as frames of numbered lines, and its first lines for detection.

Lines are split in polars, a few MiB of text at a time, never one Python
object per line: at 200,000 lines a second a per-line loop would be the
bottleneck. Blank lines give no row but keep their number, so ``_row`` is
always the line number a person finds with ``sed -n 123p``. Bytes that are
not UTF-8 (a log records whatever a client sent) are replaced, not refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW
from backfill.sources.compression import GZIP_MAGIC, UTF8_BOM, ZSTD_MAGIC, iter_decompressed, take_head

#: Text split into lines at once (about 16,000 combined lines).
SPLIT_BYTES = 4 << 20
#: A line longer than this is not a log line: refuse the file rather than hold it.
MAX_LINE_BYTES = 1 << 20
HEAD_BYTES = 64 << 10
HEAD_LINES = 50


def actual_compression(path: str, declared: str | None) -> str | None:
    """The compression by the name, else by the first bytes: a rotated ``access.log.2``
    may be gzip data whose ``.gz`` was lost when the logs were copied."""
    if declared is not None:
        return declared
    try:
        with open(path, "rb") as raw:
            magic = raw.read(4)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror})") from exc
    return "gzip" if magic.startswith(GZIP_MAGIC) else "zstd" if magic.startswith(ZSTD_MAGIC) else None


def iter_line_frames(path: str, compression: str | None, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of at most ``chunk_rows`` non-blank lines: ``_row`` (UInt64) and ``line`` (String)."""
    compression = actual_compression(path, compression)
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for frame in _split_blocks(path, compression):
        pending.append(frame)
        pending_rows += frame.height
        if pending_rows >= chunk_rows:
            joined = pl.concat(pending)
            whole = joined.height - joined.height % chunk_rows
            for offset in range(0, whole, chunk_rows):
                yield joined.slice(offset, chunk_rows)
            rest = joined.slice(whole)
            pending, pending_rows = ([rest] if rest.height else []), rest.height
    if pending_rows:
        yield pl.concat(pending)


def _split_blocks(path: str, compression: str | None) -> Iterator[pl.DataFrame]:
    carry = b""
    base = 1
    parts: list[bytes] = []
    size = 0
    for block in iter_decompressed(path, compression):
        parts.append(block)
        size += len(block)
        if size < SPLIT_BYTES:
            continue
        data = carry + b"".join(parts)
        parts, size = [], 0
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > MAX_LINE_BYTES:
                raise SourceError(f"{path}: line {base} is longer than 1 MiB; this is not an access log")
            continue
        carry = data[cut + 1 :]
        frame, lines = _frame(data[:cut], base)
        base += lines
        if frame.height:
            yield frame
    data = carry + b"".join(parts)
    if data:
        frame, _ = _frame(data.removesuffix(b"\n"), base)
        if frame.height:
            yield frame


def _frame(data: bytes, base: int) -> tuple[pl.DataFrame, int]:
    """Numbered non-blank lines of ``data`` (no final newline); and how many lines it held."""
    if base == 1:
        data = data.removeprefix(UTF8_BOM)
    lines = pl.Series("line", [data.decode("utf-8", "replace")]).str.split("\n").explode()
    count = lines.len()
    frame = pl.DataFrame({COL_ROW: pl.int_range(base, base + count, dtype=pl.UInt64, eager=True), "line": lines})
    if b"\r" in data:  # one rare byte: a fast scan (a two-byte pattern like "\n " is not)
        frame = frame.with_columns(pl.col("line").str.strip_chars_end("\r"))
    short = frame["line"].str.len_bytes() < 16
    if short.any():  # blank or whitespace-only lines give no row (they keep their number)
        index = short.arg_true()
        blank = frame["line"].gather(index).str.strip_chars() == ""
        frame = frame.filter(~pl.Series(short).scatter(index, blank))
    return frame, count


def head_lines(path: str, compression: str | None) -> list[tuple[int, str]]:
    """The first ``HEAD_LINES`` non-blank (line number, text) pairs, decompressing only the start."""
    try:
        head, at_eof = take_head(iter_decompressed(path, actual_compression(path, compression)), HEAD_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror})") from exc
    text = head.removeprefix(UTF8_BOM).decode("utf-8", "replace")
    lines = text.split("\n")
    if not at_eof and len(lines) > 1:
        lines.pop()  # cut in the middle
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(lines, 1) if line.strip()]
    return numbered[:HEAD_LINES]
