"""CSV reading in bounded blocks, every column as String.

Why not ``pl.scan_csv(...).collect_batches()``: in polars 2.1.0 its streaming engine
runs ahead of the consumer by hundreds of MB, growing with the thread count
(measured: 460 MB with 2 threads, 1.1 GB with 8, for 100k-row chunks), and it
pads short rows with nulls without saying which. Here the file is cut into
blocks of about ``BLOCK_BYTES`` at record boundaries (newlines outside quotes),
each block is parsed by ``pl.read_csv`` (native, multi-threaded) and the field
count of every record is checked with byte counting before any row is kept.

Assumes RFC 4180 quoting: a quote character inside a field is doubled. A lone
stray quote makes records unsplittable; that is reported, never guessed around.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_ROW
from backfill.sources.compression import (
    UTF8_BOM,
    SourceRecordError,
    check_reserved,
    check_utf8,
)

#: Target size of one parsed block; a block also holds at least one whole record.
BLOCK_BYTES = 8 << 20
#: The header must end within this many bytes (it is parsed on its own).
HEADER_MAX_BYTES = 4 << 20

#: Delimiters suggested when the header does not split with the one given.
_OTHER_DELIMITERS = (";", "\t", "|", ",")


@dataclass(frozen=True)
class Dialect:
    """How one file is split; resolved per file (``.tsv`` defaults to tab)."""

    delimiter: str
    quote_char: str  # "" disables quoting
    has_header: bool


@dataclass(frozen=True)
class Header:
    """Column names and where the data records start in the file."""

    names: tuple[str, ...]
    data_offset: int
    lines: int  # physical lines before data_offset, to name lines in errors


def read_header(head: bytes, at_eof: bool, name: str, dialect: Dialect) -> Header | None:
    """Parse the first record of ``head``; None when the file holds no record at all."""
    start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    if not head[start:].strip():
        return None
    quote = dialect.quote_char.encode() or None
    end = _first_record_end(head, start, quote)
    if end is None:
        if not at_eof:
            raise SourceError(
                f"{name}: no end of the first record within {HEADER_MAX_BYTES >> 20} MiB; "
                "is the quote character right (an unbalanced quote)?"
            )
        end = len(head)
    check_utf8(head[:end], name, 1)
    fields = _parse_record(head[start:end].decode("utf-8"), dialect)
    if not dialect.has_header:
        names = tuple(f"column_{i}" for i in range(1, len(fields) + 1))
        return Header(names, start, 0)
    if not any(field.strip() for field in fields):
        raise SourceError(f"{name}: line 1 is blank, but it should be the header")
    _check_delimiter(fields, name, dialect.delimiter)
    names = _name_columns(fields, name)
    return Header(names, end, head.count(b"\n", 0, end))


def _parse_record(text: str, dialect: Dialect) -> list[str]:
    quoting = csv.QUOTE_MINIMAL if dialect.quote_char else csv.QUOTE_NONE
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=dialect.delimiter,
        quotechar=dialect.quote_char or None,
        quoting=quoting,
    )
    return next(reader, [])


def _check_delimiter(fields: list[str], name: str, delimiter: str) -> None:
    """A one-column header containing another delimiter is a wrong --delimiter."""
    if len(fields) != 1:
        return
    for other in _OTHER_DELIMITERS:
        if other != delimiter and other in fields[0]:
            shown = "\\t" if other == "\t" else other
            raise ConfigError(
                f"{name}: the header {fields[0][:80]!r} does not split on "
                f"{_show(delimiter)} but contains {_show(other)}; "
                f"pass --delimiter '{shown}'"
            )


def _show(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _name_columns(fields: list[str], name: str) -> tuple[str, ...]:
    """Header names as given; unnamed columns get polars' ``column_N`` names."""
    names = [field or f"column_{i}" for i, field in enumerate(fields, start=1)]
    seen: dict[str, list[int]] = {}
    for i, column in enumerate(names, start=1):
        seen.setdefault(column, []).append(i)
    duplicates = {column: where for column, where in seen.items() if len(where) > 1}
    if duplicates:
        listed = "; ".join(f"{column!r} (columns {', '.join(map(str, where))})" for column, where in duplicates.items())
        raise SourceError(
            f"{name}: duplicate column names in the header: {listed}; rename them so each column can be mapped by name"
        )
    return tuple(names)


def _first_record_end(buf: bytes, start: int, quote: bytes | None) -> int | None:
    """Offset just after the first newline outside quotes, at or after ``start``."""
    if quote is None:
        nl = buf.find(b"\n", start)
        return nl + 1 if nl >= 0 else None
    quotes = 0
    pos = start
    while (nl := buf.find(b"\n", pos)) >= 0:
        quotes += buf.count(quote, pos, nl)
        if quotes % 2 == 0:
            return nl + 1
        pos = nl + 1
    return None


def _last_record_end(buf: bytes, quote: bytes | None) -> int | None:
    """Offset just after the last newline outside quotes (``buf`` starts a record)."""
    nl = buf.rfind(b"\n")
    if quote is None or nl < 0:
        return nl + 1 if nl >= 0 else None
    total = buf.count(quote)
    after = buf.count(quote, nl)
    while nl >= 0:
        if (total - after) % 2 == 0:
            return nl + 1
        prev = buf.rfind(b"\n", 0, nl)
        after += buf.count(quote, max(prev, 0), nl)
        nl = prev
    return None


def iter_blocks(raw: BinaryIO, quote: bytes | None) -> Iterator[bytes]:
    """Blocks of whole records; a record longer than a block makes a longer block."""
    carry = b""
    while True:
        data = raw.read(BLOCK_BYTES)
        if not data:
            if carry:
                yield carry
            return
        buf = carry + data if carry else data
        end = _last_record_end(buf, quote)
        if end is None:
            carry = buf
            continue
        yield buf[:end]
        carry = buf[end:]


@dataclass
class _Position:
    """How far the reading got, to number rows and lines across blocks."""

    rows: int  # records (data rows, blank lines included) before the block
    lines: int  # physical lines before the block


class _BlockParser:
    """Parses one block into a String frame with a 1-based ``_row``."""

    def __init__(self, name: str, dialect: Dialect, names: Sequence[str], columns: Sequence[str]):
        self.name = name
        self.dialect = dialect
        self.ncols = len(names)
        self.schema = dict.fromkeys(names, pl.String())
        self.columns = list(columns)
        index = {column: i for i, column in enumerate(names)}
        self.projection = sorted(index[column] for column in columns)
        self.delimiter = dialect.delimiter.encode()
        self.quote = dialect.quote_char.encode() or None

    def parse(self, block: bytes, at: _Position) -> tuple[pl.DataFrame, int]:
        """The block's rows and its number of records (blank lines included)."""
        records, blank = self._check_fields(block, at)
        try:
            frame = pl.read_csv(
                block,
                has_header=False,
                schema=self.schema,
                columns=self.projection,
                separator=self.dialect.delimiter,
                quote_char=self.dialect.quote_char or None,
                row_index_name=COL_ROW,
                row_index_offset=at.rows + 1,
                empty_string_is_null=True,
                truncate_ragged_lines=False,
                raise_if_empty=False,
                encoding="utf8",
            )
        except pl.exceptions.PolarsError as exc:
            check_utf8(block, self.name, at.lines + 1)
            raise SourceError(
                f"{self.name}: cannot parse the data rows from {at.rows + 1} "
                f"(line {at.lines + 1}) on: {_polars_reason(exc)}; is a quote character "
                "unbalanced, or used inside an unquoted field? (if the file never quotes "
                "fields, turn quoting off)"
            ) from exc
        if frame.height != records:
            raise SourceError(
                f"{self.name}: data rows from {at.rows + 1} on: {frame.height} rows parsed "
                f"but {records} records found; is there a stray quote character "
                f"({self.dialect.quote_char!r}) inside an unquoted field?"
            )
        if blank:
            frame = frame.filter(~pl.col(COL_ROW).is_in([at.rows + i + 1 for i in blank]))
        return frame.select(*self.columns, pl.col(COL_ROW).cast(pl.UInt64)), records

    def _check_fields(self, block: bytes, at: _Position) -> tuple[int, list[int]]:
        """Count the records and find blank ones; a row of the wrong width raises.

        Works on the block with every quoted section cut out, where each
        delimiter separates two fields and each newline ends a record.
        """
        outside = b"".join(block.split(self.quote)[::2]) if self.quote else block
        records = outside.count(b"\n") + (0 if outside.endswith(b"\n") else 1)
        expected = records * (self.ncols - 1)
        if self.ncols > 1 and outside.count(self.delimiter) == expected:
            return records, []
        lines = outside.split(b"\n")
        if outside.endswith(b"\n"):
            lines.pop()
        blank = []
        for i, record in enumerate(lines):
            if record in (b"", b"\r"):
                blank.append(i)
                continue
            fields = record.count(self.delimiter) + 1
            if fields != self.ncols:
                raise self._ragged(at.rows + i + 1, fields)
        return records, blank

    def _ragged(self, row: int, fields: int) -> SourceRecordError:
        return SourceRecordError(
            f"{self.name}: data row {row} has {fields} fields where the file has "
            f"{self.ncols} columns; rows are never padded or cut: fix the row (or check "
            "--delimiter and quoting)",
            path=self.name,
            reason=f"{fields} fields, expected {self.ncols}",
            row=row,
        )


def _polars_reason(exc: Exception) -> str:
    """The core of a polars CSV error, without its advice about schema inference."""
    text = str(exc).split("Original error:", 1)[-1]
    return " ".join(text.replace("`", "").split())[:200]


def missing_columns(names: Sequence[str], columns: Sequence[str] | None) -> list[str]:
    """Requested columns the file does not have."""
    have = set(names)
    return [column for column in columns or () if column not in have]


def iter_csv(
    path: str,
    *,
    name: str,
    dialect: Dialect,
    columns: Sequence[str] | None,
    chunk_rows: int,
) -> Iterator[pl.DataFrame]:
    """Frames of the data rows of a UTF-8 file, at most ``chunk_rows`` rows each.

    ``path`` is the local (maybe decompressed) file; ``name`` the one shown in messages.
    Empty fields are null. Blank lines are skipped but keep their number, so ``_row``
    is the record number after the header, like a spreadsheet's row minus one.
    """
    with open(path, "rb") as raw:
        head = raw.read(HEADER_MAX_BYTES)
        header = read_header(head, len(head) < HEADER_MAX_BYTES, name, dialect)
        if header is None:
            return
        missing = missing_columns(header.names, columns)
        if missing:
            raise SourceError(
                f"{name}: no column {', '.join(map(repr, missing))}; "
                f"the header has {', '.join(map(repr, header.names))}"
            )
        wanted = list(columns) if columns is not None else list(header.names)
        check_reserved(wanted, name)
        parser = _BlockParser(name, dialect, header.names, wanted)
        raw.seek(header.data_offset)
        at = _Position(rows=0, lines=header.lines)
        frames = _parse_blocks(iter_blocks(raw, parser.quote), parser, at)
        yield from rebatch(frames, chunk_rows)


def _parse_blocks(blocks: Iterator[bytes], parser: _BlockParser, at: _Position) -> Iterator[pl.DataFrame]:
    for block in blocks:
        frame, records = parser.parse(block, at)
        at.rows += records
        at.lines += block.count(b"\n")
        yield frame


def rebatch(frames: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """Regroup frames into frames of exactly ``size`` rows (the last may be shorter)."""
    pending: list[pl.DataFrame] = []
    count = 0
    for frame in frames:
        while frame.height:
            take = min(size - count, frame.height)
            pending.append(frame.slice(0, take))
            count += take
            frame = frame.slice(take)
            if count == size:
                yield pl.concat(pending) if len(pending) > 1 else pending[0]
                pending, count = [], 0
    if pending:
        yield pl.concat(pending) if len(pending) > 1 else pending[0]
