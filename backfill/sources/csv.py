"""CSV reading in bounded blocks, every column as String.

Why not ``pl.scan_csv(...).collect_batches()``: in polars 2.1.0 its streaming engine
runs ahead of the consumer by hundreds of MB, growing with the thread count
(measured: 460 MB with 2 threads, 1.1 GB with 8, for 100k-row chunks), and it
pads short rows with nulls without saying which. Here the file is cut into
blocks of about ``BLOCK_BYTES`` at record boundaries (newlines outside quotes),
each block is parsed by ``pl.read_csv`` (native, multi-threaded) and the field
count of every record is checked with byte counting before any row is kept.

A record with the wrong number of fields is never padded or cut: it becomes a
row with null data and ``_source_error``/``_source_raw`` (``records.py``), and
the rest of the block is read as usual; the check costs nothing on a clean block.

Assumes RFC 4180 quoting: a quote character inside a field is doubled. A lone
stray quote makes records unsplittable; that is reported, never guessed around.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_ROW, SOURCE_RAW_MAX
from backfill.sources.compression import (
    UTF8_BOM,
    SourceRecordError,
    check_reserved,
    check_utf8,
    encoding_error,
)
from backfill.sources.records import mark_bad, raw_text, refuse_mostly_bad

#: Target size of one parsed block; a block also holds at least one whole record.
BLOCK_BYTES = 8 << 20
#: A record (a row, with its quoted line breaks) must end within this many bytes:
#: a quote that is never closed would otherwise make the rest of the file one record.
MAX_RECORD_BYTES = 64 << 20
#: The header must end within this many bytes (it is parsed on its own).
HEADER_MAX_BYTES = 4 << 20

#: Records with bytes that are not UTF-8 are rejected one by one (a stray byte in an
#: otherwise UTF-8 export); past this many the file is refused: its encoding is wrong.
UNDECODABLE_MAX = 10
UNDECODABLE_REASON = (
    "not valid UTF-8: a byte in this record is no UTF-8 character (the record is in the rejects "
    "file with its bytes escaped, e.g. \\xfc); fix it there and import it again, or pass "
    "--encoding if the whole file is in another encoding (cp1252, latin-1)"
)

#: Delimiters suggested when the header does not split with the one given.
_OTHER_DELIMITERS = (";", "\t", "|", ",")


@dataclass(frozen=True)
class Dialect:
    """How one file is split; resolved per file (``.tsv`` defaults to tab)."""

    delimiter: str
    quote_char: str  # "" disables quoting
    has_header: bool
    delimiter_given: bool = True  # False: the default, so a header that splits better on another is refused


@dataclass(frozen=True)
class Header:
    """Column names and where the data records start in the file."""

    names: tuple[str, ...]
    data_offset: int
    lines: int  # physical lines before data_offset, to name lines in errors
    raw: bytes = b""  # the header record as in the file (no line end), to find it repeated


def read_header(head: bytes, at_eof: bool, name: str, dialect: Dialect) -> Header | None:
    """Parse the first record of ``head``; None when the file holds no record at all."""
    start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    if not head[start:].strip():
        return None
    quote = dialect.quote_char.encode() or None
    end = _first_record_end(head, start, quote)
    if end is None:
        _check_line_ends(head[start:], name, quote)
        if not at_eof:
            raise SourceError(
                f"{name}: no end of the first record within {HEADER_MAX_BYTES >> 20} MiB; "
                "is the quote character right (an unbalanced quote)?"
            )
        if quote is not None and head.count(quote, start) % 2:
            raise SourceError(
                f"{name}: line 1: a quoted field is never closed before the end of the file "
                f"(an unbalanced {dialect.quote_char!r}); fix the header, or turn quoting off "
                'with `quote_char: ""` under reader in the mapping'
            )
        end = len(head)
    check_utf8(head[:end], name, 1)
    _check_line_ends(head[start:end], name, quote)
    text = head[start:end].decode("utf-8")
    fields = _parse_record(text, dialect)
    if not dialect.has_header:
        names = tuple(f"column_{i}" for i in range(1, len(fields) + 1))
        return Header(names, start, 0)
    if not any(field.strip() for field in fields):
        raise SourceError(f"{name}: line 1 is blank, but it should be the header")
    _check_delimiter(fields, name, dialect, text)
    names = _name_columns(fields, name)
    return Header(names, end, head.count(b"\n", 0, end), head[start:end].rstrip(b"\r\n"))


def _check_line_ends(record: bytes, name: str, quote: bytes | None) -> None:
    """Refuse lines ended by a bare CR (classic Mac OS): they would be read as one header line."""
    body = record.rstrip(b"\r\n")
    outside = b"".join(body.split(quote)[::2]) if quote else body
    if b"\r" in outside:
        raise SourceError(
            f"{name}: lines end with a bare carriage return (CR, the classic Mac OS format), "
            "which is not read as a line break; convert the line ends first, e.g. "
            "`tr '\\r' '\\n' < in.csv > out.csv`"
        )


def _parse_record(text: str, dialect: Dialect) -> list[str]:
    quoting = csv.QUOTE_MINIMAL if dialect.quote_char else csv.QUOTE_NONE
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=dialect.delimiter,
        quotechar=dialect.quote_char or None,
        quoting=quoting,
    )
    return next(reader, [])


def _check_delimiter(fields: list[str], name: str, dialect: Dialect, text: str) -> None:
    """A one-column header containing another delimiter is a wrong --delimiter; a header
    that splits as well on another delimiter as on the default one is ambiguous."""
    delimiter = dialect.delimiter
    if len(fields) == 1:
        for other in _OTHER_DELIMITERS:
            if other != delimiter and other in fields[0]:
                raise ConfigError(
                    f"{name}: the header {fields[0][:80]!r} does not split on "
                    f"{_show(delimiter)} but contains {_show(other)}; "
                    f"pass --delimiter '{_flag(other)}'"
                )
        return
    if dialect.delimiter_given:
        return
    for other in _OTHER_DELIMITERS:
        if other == delimiter or other not in text:
            continue
        count = len(_parse_record(text, Dialect(other, dialect.quote_char, True)))
        if count >= len(fields):
            raise ConfigError(
                f"{name}: the delimiter is ambiguous: the header {text.strip()[:80]!r} splits into "
                f"{len(fields)} columns on {_show(delimiter)} (the default) and into {count} on "
                f"{_show(other)}; say which one the file uses: --delimiter '{_flag(delimiter)}' or "
                f"--delimiter '{_flag(other)}' (or `delimiter:` under reader in the mapping)"
            )


def _flag(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


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
    """Blocks of whole records; a record longer than a block makes a longer block, up to
    ``MAX_RECORD_BYTES`` (then ``RecordTooLong``, so memory never grows with a bad file)."""
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
            if len(buf) > MAX_RECORD_BYTES:
                raise RecordTooLong
            carry = buf
            continue
        yield buf[:end]
        carry = buf[end:]


class RecordTooLong(Exception):
    """No record end within ``MAX_RECORD_BYTES``; the parser names the row."""


def _record_starts(block: bytes, quote: bytes | None) -> list[int]:
    """Offset of the first byte of each record of ``block`` (a newline inside quotes ends none)."""
    starts = [0]
    if quote is None:
        pos = block.find(b"\n")
        while pos >= 0:
            starts.append(pos + 1)
            pos = block.find(b"\n", pos + 1)
    else:
        offset = 0
        for k, part in enumerate(block.split(quote)):
            if k % 2 == 0:
                pos = part.find(b"\n")
                while pos >= 0:
                    starts.append(offset + pos + 1)
                    pos = part.find(b"\n", pos + 1)
            offset += len(part) + 1
    if starts[-1] >= len(block):
        starts.pop()
    return starts


def _record_end(block: bytes, starts: list[int], i: int) -> int:
    """End of record ``i``'s content: before its newline (and a CR in front of it)."""
    end = starts[i + 1] - 1 if i + 1 < len(starts) else len(block)
    if end > starts[i] and block[end - 1 : end] == b"\r":
        end -= 1
    return end


@dataclass
class _Position:
    """How far the reading got, to number rows and lines across blocks."""

    rows: int  # records (data rows, blank lines included) before the block
    lines: int  # physical lines before the block


class _BlockParser:
    """Parses one block into a String frame with a 1-based ``_row``.

    A record with the wrong number of fields, or a copy of the header line, comes
    back as a row with null data and ``_source_error``/``_source_raw`` set (see
    ``backfill.sources.records``); with ``bad_records="raise"`` it raises instead.
    """

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        names: Sequence[str],
        columns: Sequence[str],
        header_raw: bytes = b"",
        bad_records: str = "reject",
    ):
        self.name = name
        self.dialect = dialect
        self.ncols = len(names)
        self.schema = dict.fromkeys(names, pl.String())
        self.columns = list(columns)
        self.delimiter = dialect.delimiter.encode()
        self.quote = dialect.quote_char.encode() or None
        self.header_raw = header_raw
        self.bad_records = bad_records
        self._error: Exception | None = None
        self.undecodable = 0  # records rejected as not UTF-8 so far
        self.first_undecodable: tuple[int, bytes] | None = None  # (line, bytes) of the first

    def parse(self, block: bytes, at: _Position) -> tuple[pl.DataFrame, int]:
        """The block's rows and its number of records (blank lines included).

        Fast path: the delimiters outside quotes add up to ``ncols - 1`` per record
        and polars parses the block with every column (it refuses a record with too
        many fields, so with the sum right none has too few either). Otherwise every
        record is looked at: blank ones are dropped (keeping their number), bad ones
        are replaced by an empty record of the right width and marked.
        """
        outside = block
        if self.quote is not None:
            parts = block.split(self.quote)
            if len(parts) % 2 == 0:  # an odd number of quote characters
                raise self._unclosed_quote(block, at)
            outside = b"".join(parts[::2])
        records = outside.count(b"\n") + (0 if outside.endswith(b"\n") else 1)
        frame = None
        if (
            self.ncols > 1
            and outside.count(self.delimiter) == records * (self.ncols - 1)
            and not self._may_repeat_header(block)
        ):
            frame = self._read(block, at, records)
        blank: list[int] = []
        bad: dict[int, tuple[str, str]] = {}
        if frame is None:
            undecodable, block = self._undecodable(block, at)
            if undecodable:
                outside = b"".join(block.split(self.quote)[::2]) if self.quote is not None else block
            blank, bad, block = self._scan(block, outside, at)
            bad.update(undecodable)
            frame = self._read(block, at, records)
            if frame is None and self.quote is not None:
                more, block = self._quote_misreads(block, blank)
                bad.update({at.rows + i + 1: reason for i, reason in more.items()})
                frame = self._read(block, at, records) if more else None
            if frame is None:
                check_utf8(block, self.name, at.lines + 1)
                raise self._unparseable(at)
            if bad and self.bad_records == "raise":
                row = min(bad)
                raise SourceRecordError(
                    f"{self.name}: data row {row}: {bad[row][0]}",
                    path=self.name,
                    reason=bad[row][0],
                    row=row,
                )
        if blank:
            frame = frame.filter(~pl.col(COL_ROW).is_in([at.rows + i + 1 for i in blank]))
        frame = frame.select(*self.columns, pl.col(COL_ROW).cast(pl.UInt64))
        if bad:
            frame = mark_bad(frame, bad)
        return frame, records

    def _read(self, block: bytes, at: _Position, records: int) -> pl.DataFrame | None:
        """All columns of the block, or None when polars cannot parse it into ``records`` rows."""
        try:
            frame = pl.read_csv(
                block,
                has_header=False,
                schema=self.schema,
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
            self._error = exc
            return None
        if frame.height != records:
            self._error = None
            return None
        return frame

    def _undecodable(self, block: bytes, at: _Position) -> tuple[dict[int, tuple[str, str]], bytes]:
        """Records with bytes that are not UTF-8, emptied out of the block, with their bytes
        shown escaped (``\\xfc``); the file is refused once there are more than
        ``UNDECODABLE_MAX`` of them (then its encoding is wrong as a whole)."""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return {}, block
        starts = _record_starts(block, self.quote)
        found: dict[int, str] = {}
        raws: dict[int, str] = {}
        pos = 0
        while pos < len(block):
            try:
                block[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as exc:
                where, stop = pos + exc.start, pos + exc.end
            i = bisect.bisect_right(starts, where) - 1
            record = block[starts[i] : _record_end(block, starts, i)]
            found[i] = UNDECODABLE_REASON
            raws[i] = record.decode("utf-8", "backslashreplace")[:SOURCE_RAW_MAX]
            self.undecodable += 1
            if self.first_undecodable is None:
                line = at.lines + block.count(b"\n", 0, where) + 1
                self.first_undecodable = (line, block[where:stop])
            if self.undecodable > UNDECODABLE_MAX:
                line, bad = self.first_undecodable
                raise encoding_error(self.name, "utf-8", line, bad, records=self.undecodable)
            pos = starts[i + 1] if i + 1 < len(starts) else len(block)
        bad, emptied = self._empty_out(block, starts, found, at)
        return {row: (reason, raws[row - at.rows - 1]) for row, (reason, _) in bad.items()}, emptied

    def _may_repeat_header(self, block: bytes) -> bool:
        raw = self.header_raw
        return bool(raw) and (block.startswith(raw) or b"\n" + raw in block)

    def _scan(self, block: bytes, outside: bytes, at: _Position) -> tuple[list[int], dict[int, tuple[str, str]], bytes]:
        """(blank record indexes, bad rows, the block with bad records emptied)."""
        lines = outside.split(b"\n")
        if outside.endswith(b"\n"):
            lines.pop()
        blank: list[int] = []
        widths: dict[int, int] = {}
        for i, record in enumerate(lines):
            if record in (b"", b"\r"):
                blank.append(i)
                continue
            fields = record.count(self.delimiter) + 1
            if fields != self.ncols:
                widths[i] = fields
        repeats = self._header_copies(block) if self._may_repeat_header(block) else []
        if not widths and not repeats:
            return blank, {}, block
        starts = _record_starts(block, self.quote)
        bad_at: dict[int, str] = {i: self._width_reason(n, block, starts, i) for i, n in widths.items()}
        for i in repeats:
            bad_at.setdefault(i, "row repeats the header line (two exports joined into one file?); it is not data")
        return blank, *self._empty_out(block, starts, bad_at, at)

    def _header_copies(self, block: bytes) -> list[int]:
        """Indexes of records that are exactly the header line."""
        starts = _record_starts(block, self.quote)
        index = {start: i for i, start in enumerate(starts)}
        raw = self.header_raw
        positions = [0] if block.startswith(raw) else []
        pos = block.find(b"\n" + raw)
        while pos >= 0:
            positions.append(pos + 1)
            pos = block.find(b"\n" + raw, pos + 1)
        found = []
        for pos in positions:
            i = index.get(pos)
            if i is not None and _record_end(block, starts, i) == pos + len(raw):
                found.append(i)
        return found

    def _width_reason(self, fields: int, block: bytes, starts: list[int], i: int) -> str:
        record = block[starts[i] : _record_end(block, starts, i)]
        if self.quote is not None and self.quote in record:
            hint = "a quote character inside an unquoted value? double it and quote the value"
        elif fields > self.ncols:
            hint = "a delimiter inside an unquoted value? quote it"
        else:
            hint = "cut short, or a line break inside an unquoted value?"
        return f"row has {fields} fields, the header has {self.ncols} ({hint})"

    def _empty_out(
        self, block: bytes, starts: list[int], bad_at: dict[int, str], at: _Position
    ) -> tuple[dict[int, tuple[str, str]], bytes]:
        """Replace each bad record by an empty one of the right width (parsed as all nulls)."""
        filler = self.delimiter * (self.ncols - 1)
        pieces: list[bytes] = []
        pos = 0
        bad: dict[int, tuple[str, str]] = {}
        for i in sorted(bad_at):
            end = _record_end(block, starts, i)
            bad[at.rows + i + 1] = (bad_at[i], raw_text(block[starts[i] : end]))
            pieces += [block[pos : starts[i]], filler]
            pos = end
        pieces.append(block[pos:])
        return bad, b"".join(pieces)

    def _quote_misreads(self, block: bytes, blank: list[int]) -> tuple[dict[int, tuple[str, str]], bytes]:
        """Records with a quote character whose fields, read as polars and Python read them
        (a quote inside an unquoted value is a plain character), do not fit the header."""
        starts = _record_starts(block, self.quote)
        assert self.quote is not None
        skip = set(blank)
        suspects: dict[int, str] = {}
        for i in range(len(starts)):
            if i in skip:
                continue
            record = block[starts[i] : _record_end(block, starts, i)]
            if self.quote not in record:
                continue
            fields = len(_parse_record(record.decode("utf-8", "replace"), self.dialect))
            if fields != self.ncols:
                suspects[i] = (
                    f"row has {fields} fields, the header has {self.ncols} (a quote character "
                    "inside an unquoted value? double it and quote the value)"
                )
        if not suspects:
            return {}, block
        marked, emptied = self._empty_out(block, starts, suspects, _Position(0, 0))
        return {row - 1: reason for row, reason in marked.items()}, emptied

    def _unparseable(self, at: _Position) -> SourceError:
        detail = _polars_reason(self._error) if self._error is not None else "a different number of rows"
        return SourceError(
            f"{self.name}: cannot parse the data rows from {at.rows + 1} (line {at.lines + 1}) on: "
            f"{detail}; is a quote character ({self.dialect.quote_char!r}) unbalanced, or used inside "
            "an unquoted field? (if the file never quotes fields, turn quoting off with "
            '`quote_char: ""` under reader in the mapping)'
        )

    def _unclosed_quote(self, block: bytes, at: _Position) -> SourceError:
        starts = _record_starts(block, self.quote)
        last = len(starts) - 1
        line = at.lines + block.count(b"\n", 0, starts[last]) + 1
        return SourceError(
            f"{self.name}: data row {at.rows + last + 1} (line {line}): "
            f"a quoted field is opened there and never closed: the file ends inside it. The file is "
            f"cut short, or a quote character ({self.dialect.quote_char!r}) is used inside an unquoted "
            'value: double it and quote the value, or turn quoting off with `quote_char: ""` under '
            "reader in the mapping"
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
    bad_records: str = "reject",
) -> Iterator[pl.DataFrame]:
    """Frames of the data rows of a UTF-8 file, at most ``chunk_rows`` rows each.

    ``path`` is the local (maybe decompressed) file; ``name`` the one shown in messages.
    Empty fields are null. Blank lines are skipped but keep their number, so ``_row``
    is the record number after the header, like a spreadsheet's row minus one.

    A row with the wrong number of fields (or a copy of the header line) is yielded
    with null data and ``_source_error``/``_source_raw`` set (``bad_records="raise"``:
    SourceRecordError instead); a file most of whose first rows are such rows is
    refused (``backfill.sources.records``).
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
        parser = _BlockParser(name, dialect, header.names, wanted, header.raw, bad_records)
        raw.seek(header.data_offset)
        at = _Position(rows=0, lines=header.lines)
        frames = _parse_blocks(iter_blocks(raw, parser.quote), parser, at)
        hint = (
            f"Check the delimiter (read with {_show(dialect.delimiter)}; --delimiter), the quote "
            "character and --encoding, and that this is the file you meant."
        )
        yield from rebatch(refuse_mostly_bad(frames, name, unit="data row", hint=hint), chunk_rows)


def _parse_blocks(blocks: Iterator[bytes], parser: _BlockParser, at: _Position) -> Iterator[pl.DataFrame]:
    try:
        for block in blocks:
            frame, records = parser.parse(block, at)
            at.rows += records
            at.lines += block.count(b"\n")
            yield frame
    except RecordTooLong:
        quoted = f"a quote character ({parser.dialect.quote_char!r}) opens a field that is never closed?"
        raise SourceError(
            f"{parser.name}: data row {at.rows + 1} (line {at.lines + 1}) does not end within "
            f"{MAX_RECORD_BYTES >> 20} MiB: {quoted if parser.quote else 'is this a CSV file?'}"
        ) from None


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
                yield _concat(pending)
                pending, count = [], 0
    if pending:
        yield _concat(pending)


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One frame; frames with bad-record columns and frames without them are aligned."""
    if len(frames) == 1:
        return frames[0]
    widths = {frame.width for frame in frames}
    return pl.concat(frames, how="diagonal" if len(widths) > 1 else "vertical")
