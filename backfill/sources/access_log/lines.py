"""A (decompressed) log file as frames of numbered lines, and its first lines for detection.

Lines are split in polars, a few MiB of text at a time, never one Python
object per line: at 200,000 lines a second a per-line loop would be the
bottleneck. Blank lines give no row but keep their number, so ``_row`` is
always the line number a person finds with ``sed -n 123p``.

Text is UTF-8 unless ``--encoding`` says otherwise (an old IIS or Apache log in
cp1252, Big5, Shift_JIS). A log records whatever bytes a client sent, so bytes
the encoding cannot read are neither refused nor replaced by U+FFFD (which
would lose them): they are kept percent-encoded (``%AC%B0``), as a browser
would have sent them in a URL.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Generator, Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW
from backfill.sources.compression import (
    UTF8_BOM,
    codec_name,
    compression_of_bytes,
    iter_decompressed,
    iter_utf8,
    take_head,
)

#: Text split into lines at once (about 16,000 combined lines).
SPLIT_BYTES = 4 << 20
#: A line longer than this is not a log line: refuse the file rather than hold it.
MAX_LINE_BYTES = 1 << 20
HEAD_BYTES = 64 << 10
HEAD_LINES = 50
#: The error handler that keeps undecodable bytes as %XX.
PERCENT_ERRORS = "backfill-percent"
#: Encodings whose newline is not the byte 0x0a: transcoded to UTF-8 before lines are split.
_WIDE = ("utf-16", "utf-32")


def _percent(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(f"%{byte:02X}" for byte in bad), error.end


codecs.register_error(PERCENT_ERRORS, _percent)


_NON_ASCII = re.compile(rb"[\x80-\xff]+")


def _utf8_run(match: re.Match[bytes]) -> bytes:
    run = match.group(0)
    try:
        run.decode("utf-8")
    except UnicodeDecodeError:
        return b"".join(b"%%%02X" % byte for byte in run)
    return run


def _utf8(data: bytes) -> str:
    """UTF-8 text; a run of non-ASCII bytes that is not UTF-8 as a whole is kept percent-encoded
    as a whole (Big5 or cp1252 bytes may hold a valid UTF-8 sequence by chance)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _NON_ASCII.sub(_utf8_run, data).decode("utf-8")


def text_decoder(encoding: str | None) -> Callable[[bytes], str]:
    """bytes -> text in ``encoding`` (UTF-8 by default), undecodable bytes as %XX."""
    codec = codec_name(encoding or "utf-8")
    if codec.startswith(_WIDE) or codec == "utf-8":
        return _utf8  # (wide encodings are transcoded to UTF-8 on the way in, see _blocks)
    return lambda data: data.decode(codec, PERCENT_ERRORS)


def _blocks(path: str, compression: str | None, encoding: str | None) -> Generator[bytes, None, None]:
    blocks = iter_decompressed(path, compression)
    if encoding and codec_name(encoding).startswith(_WIDE):
        return iter_utf8(blocks, encoding, path)
    return blocks


def actual_compression(path: str, declared: str | None) -> str | None:
    """The compression by the name, else by the first bytes: a rotated ``access.log.2``
    may be gzip data whose ``.gz`` was lost when the logs were copied."""
    if declared is not None:
        return declared
    try:
        with open(path, "rb") as raw:
            magic = raw.read(16)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror})") from exc
    return compression_of_bytes(magic)


def iter_line_frames(
    path: str, compression: str | None, chunk_rows: int, encoding: str | None = None
) -> Iterator[pl.DataFrame]:
    """Frames of at most ``chunk_rows`` non-blank lines: ``_row`` (UInt64) and ``line`` (String)."""
    compression = actual_compression(path, compression)
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for frame in _split_blocks(path, compression, encoding):
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


def _split_blocks(path: str, compression: str | None, encoding: str | None) -> Iterator[pl.DataFrame]:
    decode = text_decoder(encoding)
    carry = b""
    base = 1
    parts: list[bytes] = []
    size = 0
    for block in _blocks(path, compression, encoding):
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
        frame, lines = _frame(data[:cut], base, decode)
        base += lines
        if frame.height:
            yield frame
    data = carry + b"".join(parts)
    if data:
        frame, _ = _frame(data.removesuffix(b"\n"), base, decode)
        if frame.height:
            yield frame


def _frame(data: bytes, base: int, decode: Callable[[bytes], str]) -> tuple[pl.DataFrame, int]:
    """Numbered non-blank lines of ``data`` (no final newline); and how many lines it held."""
    if base == 1:
        data = data.removeprefix(UTF8_BOM)
    lines = pl.Series("line", [decode(data)]).str.split("\n").explode()
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


def head_lines(path: str, compression: str | None, encoding: str | None = None) -> list[tuple[int, str]]:
    """The first ``HEAD_LINES`` non-blank (line number, text) pairs, decompressing only the start."""
    try:
        blocks = _blocks(path, actual_compression(path, compression), encoding)
        head, at_eof = take_head(blocks, HEAD_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror})") from exc
    if not at_eof:
        head = head[: head.rfind(b"\n") + 1] or head  # no character cut in two
    text = text_decoder(encoding)(head.removeprefix(UTF8_BOM))
    lines = text.split("\n")
    if not at_eof and len(lines) > 1:
        lines.pop()  # cut in the middle
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(lines, 1) if line.strip()]
    return numbered[:HEAD_LINES]
