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
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources.compression import (
    UTF8_BOM,
    SourceRecordError,
    check_reserved,
    encoding_error,
)
from backfill.sources.records import bad_rows_frame, raw_text, refuse_mostly_bad

#: A chunk is parsed once it holds this much JSON text, even with fewer lines.
CHUNK_BYTES = 64 << 20
#: Bytes read at a time; lines are split per block.
BLOCK_BYTES = 8 << 20
#: Lines sampled by ``ndjson_schema``.
SCHEMA_SAMPLE_LINES = 1000
#: A line must end within this many bytes.
MAX_LINE_BYTES = 64 << 20
#: Objects and arrays nested deeper than this in one line are not handed to polars:
#: its type inference takes time that grows with the cube of the depth (a line
#: nested 200 objects deep took 23 s), and ~1000 levels crash it. GA4 needs 4.
MAX_JSON_DEPTH = 16

JSON_ARRAY_HINT = "this is a JSON array, not JSON lines; convert with `jq -c '.[]'`"


def json_array_error(name: str) -> SourceError:
    return SourceError(f"{name}: {JSON_ARRAY_HINT}")


def iter_line_blocks(raw: BinaryIO, name: str = "") -> Iterator[list[bytes]]:
    """The file's lines (newline removed), a block of about ``BLOCK_BYTES`` at a time.

    Splitting whole blocks keeps the per-line work in C: a Python loop over
    lines cost more than parsing the JSON. A line longer than ``MAX_LINE_BYTES``
    refuses the file (memory must not grow with one endless line).
    """
    carry = b""
    done = 0
    while block := raw.read(BLOCK_BYTES):
        lines = (carry + block).split(b"\n")
        carry = lines.pop()
        if len(carry) > MAX_LINE_BYTES:
            raise SourceError(
                f"{name}: line {done + len(lines) + 1} is longer than {MAX_LINE_BYTES >> 20} MiB; "
                "this is not JSON lines (one JSON object per line)"
            )
        done += len(lines)
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
    """Frames of at most ``chunk_rows`` objects each, with ``_row`` = line number.

    A line that is not a JSON object comes back as a row with null data and
    ``_source_error``/``_source_raw`` set; a file most of whose first lines are
    such lines is refused (``backfill.sources.records``).
    """
    frames = (_frame(texts, numbers, name, columns) for numbers, texts in iter_line_chunks(path, name, chunk_rows))
    hint = (
        "Each line must be one JSON object (JSON lines): a JSON array needs `jq -c '.[]'`, "
        "a pretty-printed document `jq -c .`."
    )
    yield from refuse_mostly_bad(frames, name, unit="line", hint=hint)


def iter_line_chunks(path: str, name: str, chunk_rows: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """Numbered non-blank lines in groups of at most ``chunk_rows`` lines (or about
    ``CHUNK_BYTES``), so an export reader can parse each group its own way."""
    numbers: list[int] = []
    texts: list[bytes] = []
    with open(path, "rb") as raw:
        for block_numbers, block_texts in iter_numbered(iter_line_blocks(raw, name), name):
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
    frame = _parse(texts[sample], numbers[sample], name)
    schema = {c: t for c, t in frame.schema.items() if c not in (COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW)}
    if not schema and COL_SOURCE_ERROR in frame.columns:
        first = frame.row(0, named=True)
        raise SourceError(
            f"{name}: none of the first {frame.height} lines is a JSON object (line {first[COL_ROW]}: "
            f"{first[COL_SOURCE_ERROR]}); each line must be one JSON object (JSON lines)"
        )
    return schema


def _frame(lines: list[bytes], numbers: list[int], name: str, columns: Sequence[str] | None) -> pl.DataFrame:
    frame = _parse(lines, numbers, name)
    data = [c for c in frame.columns if c not in (COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW)]
    check_reserved(data, name)
    if columns is not None:
        kept = set(columns)
        frame = frame.select(c for c in frame.columns if c in kept or c not in data)
    return frame


def _parse(lines: list[bytes], numbers: list[int], name: str) -> pl.DataFrame:
    """Parse natively, with ``_row``; on failure sort the lines out one by one.

    Dtypes are inferred over every line of the chunk (``infer_schema_length=None``),
    about four times the cost of the parse itself: with a sample, polars silently
    drops any key first seen after the sample. Lines that are no JSON object, or
    nested too deeply for polars, come back as rows with ``_source_error``.
    """
    data = b"\n".join(lines)
    deep = _too_deep(data, lines)
    if not deep:
        try:
            frame = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
        except pl.exceptions.PolarsError:
            frame = None
        if frame is not None and frame.height == len(lines):
            return frame.with_columns(pl.Series(COL_ROW, numbers, dtype=pl.UInt64()))
    good: list[int] = []
    bad: dict[int, str] = {i: f"line nests objects or arrays more than {MAX_JSON_DEPTH} levels deep" for i in deep}
    keys: dict[str, None] = {}
    for i, (number, text) in enumerate(zip(numbers, lines, strict=True)):
        if i in bad:
            continue
        try:
            value = _loads(text, number, name)
        except SourceRecordError as exc:
            if exc.reason.startswith("not valid utf-8"):
                raise  # a wrong encoding is the whole file's problem
            bad[i] = f"line is {exc.reason}"
            continue
        if isinstance(value, dict):
            good.append(i)
            keys.update(dict.fromkeys(value))
        else:
            bad[i] = f"line is not a JSON object but {_kind(value)}"
    frame = _parse_objects([lines[i] for i in good], [numbers[i] for i in good], list(keys), name)
    if not bad:
        return frame
    order = sorted(bad)
    marks = bad_rows_frame([numbers[i] for i in order], [bad[i] for i in order], [raw_text(lines[i]) for i in order])
    return pl.concat([frame, marks], how="diagonal").sort(COL_ROW)


def _parse_objects(lines: list[bytes], numbers: list[int], keys: list[str], name: str) -> pl.DataFrame:
    """Lines that are each a JSON object; a key with no common type (an object in one
    line, a list in another) makes every value of the chunk JSON text."""
    rows = pl.Series(COL_ROW, numbers, dtype=pl.UInt64())
    if not lines:
        return pl.DataFrame([rows])
    data = b"\n".join(lines)
    for schema in (None, dict.fromkeys(keys, pl.String())):
        try:
            frame = pl.read_ndjson(io.BytesIO(data), schema=schema, infer_schema_length=None)
        except pl.exceptions.PolarsError as exc:
            error: Exception = exc
            continue
        if frame.height == len(lines):
            return frame.with_columns(rows)
        error = SourceError(f"{frame.height} objects parsed from {len(lines)} lines")
    raise SourceError(f"{name}: cannot parse lines {numbers[0]}-{numbers[-1]} ({_first_line(error)})") from error


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}\n")


def _too_deep(data: bytes, lines: list[bytes]) -> list[int]:
    """Indexes of lines whose objects and arrays nest deeper than ``MAX_JSON_DEPTH``.

    Cheap for the whole chunk: keep only brackets and newlines, then remove the
    innermost ``[]``/``{}`` pairs ``MAX_JSON_DEPTH`` times (C speed). Lines with
    brackets left over (deep ones, or brackets inside strings) are checked exactly.
    """
    brackets = data.translate(None, _BRACKETS_ONLY)
    for _ in range(MAX_JSON_DEPTH):
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    if len(brackets) == brackets.count(b"\n"):
        return []
    left = brackets.split(b"\n")
    return [i for i, rest in enumerate(left) if rest and _depth(lines[i]) > MAX_JSON_DEPTH]


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _depth(line: bytes) -> int:
    """Deepest nesting of objects and arrays outside strings, counted up to one past the limit."""
    depth = deepest = 0
    for char in _JSON_STRING.sub(b"", line).translate(None, _BRACKETS_ONLY):
        if char in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif char != 10:
            depth -= 1
    return deepest


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
    except RecursionError as exc:
        raise bad_line(name, number, "nested too deeply to read") from exc


def _syntax_error(exc: json.JSONDecodeError, text: bytes, number: int, name: str) -> SourceRecordError:
    hint = ""
    if number == 1 and text == b"{":
        hint = " (a pretty-printed JSON document? convert with `jq -c .`)"
    return bad_line(name, number, f"not valid JSON: {exc.msg}{hint}", f" (at column {exc.colno})")


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


def bad_line(name: str, number: int, reason: str, where: str = "") -> SourceRecordError:
    """``reason`` is short and the same for alike lines (it groups rejects); ``where`` adds detail."""
    return SourceRecordError(f"{name}: line {number}: {reason}{where}", path=name, reason=reason, line=number)
