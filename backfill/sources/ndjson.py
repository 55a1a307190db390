"""NDJSON (JSON lines) reading: lines gathered in Python, each chunk parsed by polars.

Why not ``pl.scan_ndjson``: it cannot say which line is bad, cannot number rows
by line when blank lines are present, and (like every polars 2.1.0 streaming
scan) decodes ahead of the consumer. Gathering lines here costs one cheap pass
in Python; the JSON itself is parsed natively, one bounded chunk at a time.

``_row`` is the 1-based line number in the (decompressed) file: blank lines are
skipped but counted, so the number is what ``sed -n Np`` or an editor shows.

Each chunk infers its own dtypes over all of its lines, so chunks may differ:
a key first seen in a later chunk adds a column there only, and a field that is a
number in one chunk may be a String in another. Consumers align chunks by name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW
from backfill.sources.compression import (
    UTF8_BOM,
    SourceRecordError,
    check_reserved,
    encoding_error,
)

#: A chunk is parsed once it holds this much JSON text, even with fewer lines.
CHUNK_BYTES = 64 << 20
#: Bytes read at a time; lines are split per block.
BLOCK_BYTES = 8 << 20
#: Lines sampled by ``ndjson_schema``.
SCHEMA_SAMPLE_LINES = 1000

JSON_ARRAY_HINT = "this is a JSON array, not JSON lines; convert with `jq -c '.[]'`"


def json_array_error(name: str) -> SourceError:
    return SourceError(f"{name}: {JSON_ARRAY_HINT}")


def iter_line_blocks(raw: BinaryIO) -> Iterator[list[bytes]]:
    """The file's lines (newline removed), a block of about ``BLOCK_BYTES`` at a time.

    Splitting whole blocks keeps the per-line work in C: a Python loop over
    lines cost more than parsing the JSON.
    """
    carry = b""
    while block := raw.read(BLOCK_BYTES):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        yield lines
    if carry:
        yield [carry]


def iter_numbered(blocks: Iterable[list[bytes]], name: str) -> Iterator[tuple[list[int], list[bytes]]]:
    """Per block: the 1-based numbers and the stripped text of its non-blank lines."""
    base = 1
    first = True
    for lines in blocks:
        if base == 1 and lines:
            lines[0] = lines[0].removeprefix(UTF8_BOM)
        stripped = [line.strip() for line in lines]
        numbers = [base + i for i, text in enumerate(stripped) if text]
        texts = [text for text in stripped if text]
        base += len(lines)
        if first and texts:
            if texts[0][:1] == b"[":
                raise json_array_error(name)
            first = False
        yield numbers, texts


def iter_ndjson(path: str, *, name: str, columns: Sequence[str] | None, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of at most ``chunk_rows`` objects each, with ``_row`` = line number."""
    for numbers, texts in iter_line_chunks(path, name, chunk_rows):
        yield _frame(texts, numbers, name, columns)


def iter_line_chunks(path: str, name: str, chunk_rows: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """Numbered non-blank lines in groups of at most ``chunk_rows`` lines (or about
    ``CHUNK_BYTES``), so an export reader can parse each group its own way."""
    numbers: list[int] = []
    texts: list[bytes] = []
    with open(path, "rb") as raw:
        for block_numbers, block_texts in iter_numbered(iter_line_blocks(raw), name):
            numbers += block_numbers
            texts += block_texts
            while len(texts) >= chunk_rows:
                yield numbers[:chunk_rows], texts[:chunk_rows]
                del texts[:chunk_rows], numbers[:chunk_rows]
            if texts and sum(map(len, texts)) >= CHUNK_BYTES:
                yield numbers, texts
                numbers, texts = [], []
    if texts:
        yield numbers, texts


def parse_with_schema(
    lines: list[bytes], numbers: list[int], name: str, schema: dict[str, pl.DataType], shape: str
) -> pl.DataFrame:
    """Lines of an export with a known shape, parsed with its fixed schema; on failure the
    first line that is not a JSON object is named, else the span that lacks ``shape``."""
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema)
    except pl.exceptions.PolarsError as exc:
        _keys_or_raise(lines, numbers, name)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{name}: lines {numbers[0]}-{numbers[-1]} do not have {shape}'s shape ({first})") from exc
    if frame.height != len(lines):
        _keys_or_raise(lines, numbers, name)
        raise SourceError(f"{name}: lines {numbers[0]}-{numbers[-1]}: {frame.height} rows from {len(lines)} lines")
    return frame.with_columns(pl.Series(COL_ROW, numbers, dtype=pl.UInt64()))


def ndjson_schema(head: bytes, at_eof: bool, name: str) -> dict[str, pl.DataType]:
    """Columns and dtypes inferred from the first lines (later lines may add more)."""
    lines = head.split(b"\n")
    if not at_eof:
        lines.pop()  # the head may end in the middle of this line
    numbers, texts = next(iter_numbered([lines], name))
    if not texts:
        return {}
    sample = slice(0, SCHEMA_SAMPLE_LINES)
    return dict(_parse(texts[sample], numbers[sample], name).schema)


def _frame(lines: list[bytes], numbers: list[int], name: str, columns: Sequence[str] | None) -> pl.DataFrame:
    frame = _parse(lines, numbers, name)
    if columns is not None:
        frame = frame.select([column for column in columns if column in frame.columns])
    check_reserved(frame.columns, name)
    return frame.with_columns(pl.Series(COL_ROW, numbers, dtype=pl.UInt64()))


def _parse(lines: list[bytes], numbers: list[int], name: str) -> pl.DataFrame:
    """Parse natively; on failure find the bad line, or fall back to String fields.

    Dtypes are inferred over every line of the chunk (``infer_schema_length=None``),
    about four times the cost of the parse itself: with a sample, polars silently
    drops any key first seen after the sample.
    """
    data = b"\n".join(lines)
    try:
        frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except pl.exceptions.PolarsError:
        frame = None
    if frame is not None and frame.height == len(lines):
        return frame
    keys = _keys_or_raise(lines, numbers, name)
    # Every line is a valid object, so polars failed on types that have no common
    # supertype (an object in one line, a list in another): read them as JSON text.
    try:
        frame = pl.read_ndjson(io.BytesIO(data), schema=dict.fromkeys(keys, pl.String()))
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"{name}: cannot parse lines {numbers[0]}-{numbers[-1]} ({exc})") from exc
    if frame.height != len(lines):
        raise SourceError(
            f"{name}: lines {numbers[0]}-{numbers[-1]}: {frame.height} objects parsed from {len(lines)} lines"
        )
    return frame


def _keys_or_raise(lines: list[bytes], numbers: list[int], name: str) -> list[str]:
    """All top-level keys in first-seen order; the first line that is no object raises."""
    keys: dict[str, None] = {}
    for number, text in zip(numbers, lines, strict=True):
        value = _loads(text, number, name)
        if not isinstance(value, dict):
            raise bad_line(name, number, f"not a JSON object but {_kind(value)}")
        keys.update(dict.fromkeys(value))
    return list(keys)


def _reject_constant(constant: str) -> object:
    raise ValueError(f"{constant} is not valid JSON")


def _loads(text: bytes, number: int, name: str) -> object:
    """Python's json module, as strict as polars (no NaN), to name the bad line."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise encoding_error(name, "utf-8", number, text[exc.start : exc.end]) from exc
    except json.JSONDecodeError as exc:
        raise _syntax_error(exc, text, number, name) from exc
    except ValueError as exc:  # NaN, Infinity
        raise bad_line(name, number, f"not valid JSON: {exc}") from exc


def _syntax_error(exc: json.JSONDecodeError, text: bytes, number: int, name: str) -> SourceRecordError:
    hint = ""
    if number == 1 and text == b"{":
        hint = " (a pretty-printed JSON document? convert with `jq -c .`)"
    return bad_line(name, number, f"not valid JSON: {exc.msg} at column {exc.colno}{hint}")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def bad_line(name: str, number: int, reason: str) -> SourceRecordError:
    return SourceRecordError(f"{name}: line {number}: {reason}", path=name, reason=reason, line=number)
