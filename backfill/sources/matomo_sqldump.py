"""Matomo tables read straight from a mysqldump file (``mysqldump matomo > backup.sql``).

A dump is turned, streaming, into the folder of per-table files the TSV path
reads (``mysql --batch --binary-as-hex`` output: tab-separated, ``\\N`` for NULL,
backslash escapes, binary columns as ``0x`` + upper-case hex), so every table
gives exactly the frames the TSV export of the same rows gives, and everything
downstream (sites, goals, items, Piwik 1.x, notes) is the same code.

What is read: ``CREATE TABLE`` (the column order, and which columns are binary),
``INSERT``/``INSERT IGNORE``/``REPLACE INTO`` with one or many rows (extended
inserts), with or without a column list (``--complete-insert``), over one line
or several. Values: NULL, numbers, quoted strings with MySQL's escapes
(``\\'``, ``\\\\``, ``\\n``, ``\\0``, ``\\Z``, ``''``), ``_binary '...'`` and
charset introducers, ``0x...`` (``--hex-blob``). Everything else (comments,
``/*!40101 ... */;``, ``LOCK TABLES``, ``DROP TABLE``, ``SET``, ``USE``) is
skipped. Only the columns the import reads are kept; tables it does not read
leave an empty file, so the usual note names them. A statement that cannot be
parsed is a SourceError naming the file, the line and the table.

Memory is one statement (mysqldump keeps each under ``--net-buffer-length``,
1 MB by default) plus the rows of a batch; the dump is never held whole.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from backfill.errors import SourceError
from backfill.sources.compression import compression_of_name, iter_decompressed, temp_dir
from backfill.sources.matomo_tables import TABLE_COLUMNS, _split_table

#: A dump file: ``*.sql`` (+ compression).
_SQL_NAME = re.compile(r"\.sql(\.(gz|zst|zstd|bz2|xz))?$", re.IGNORECASE)
_NAME = r"`?(?:[^`\s.(]+`?\.`?)?([^`\s(]+)`?"
_CREATE = re.compile(rf"\s*CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}\s*\(", re.IGNORECASE)
_COLUMN_DEF = re.compile(r"\s*`([^`]+)`\s+([A-Za-z]+)")
_INSERT = re.compile(
    rf"\s*(?:INSERT|REPLACE)\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*(?:INTO\s+)?{_NAME}"
    r"\s*(?:\(([^)]*)\))?\s*VALUES?\s*",
    re.IGNORECASE,
)
_QUOTED = r"'(?:[^'\\]|\\.|'')*'"
_QUOTED_RUN = re.compile(r"'(?:[^'\\]+|\\.|'')*'", re.DOTALL)
_VALUE = rf"(NULL|null|(?:_[A-Za-z0-9]+\s*)?{_QUOTED}|0x[0-9A-Fa-f]*|[Xx]'[0-9A-Fa-f]*'|[-+]?[0-9.][0-9.eE+-]*)"
_SEP = re.compile(r"\s*([,;])\s*")
_BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit"}
#: SQL string escape -> the character (MySQL's table; an unknown ``\\x`` is ``x``).
_SQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_SQL_ESCAPE = re.compile(r"\\(.)|''", re.DOTALL)
#: What mysql --batch escapes in a value.
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
_NEEDS_WORK = re.compile(r"[\\'\t\n\r\0]")
_BATCH_ROWS = 20_000


def is_dump(path: str) -> bool:
    """Whether a file is a mysqldump file, by its name (``backup.sql``, ``backup.sql.gz``)."""
    return _SQL_NAME.search(os.path.basename(path)) is not None


def sql_unescape(body: str) -> str:
    """A quoted string's content as MySQL reads it (``\\'`` -> ``'``, ``''`` -> ``'``, ``\\n`` -> newline)."""
    if "\\" not in body and "''" not in body:
        return body
    return _SQL_ESCAPE.sub(lambda m: "'" if m[1] is None else _SQL_ESCAPES.get(m[1], m[1]), body)


def _hex(text: str) -> str:
    """Raw bytes (kept through ``surrogateescape``) as mysql --binary-as-hex prints them."""
    return "0x" + text.encode("utf-8", "surrogateescape").hex().upper()


def tsv_value(token: str, binary: bool) -> str:
    """One SQL value as mysql --batch --binary-as-hex writes it in a TSV cell."""
    first = token[0]
    if first == "'":
        body = token[1:-1]
        if binary:
            return _hex(sql_unescape(body))
        return sql_unescape(body).translate(_TSV_ESCAPES) if _NEEDS_WORK.search(body) else body
    if first == "_":  # _binary '...' / _utf8mb4 '...'
        quote = token.index("'")
        return tsv_value(token[quote:], binary or token[:quote].strip().lower() == "_binary")
    if token in ("NULL", "null"):
        return "\\N"
    if first in "xX":
        return "0x" + token[2:-1].upper()
    if token.startswith("0x"):
        return "0x" + token[2:].upper()
    return token


@dataclass
class _Table:
    """One table of the dump: its columns (from CREATE TABLE) and the file it is written to."""

    name: str
    columns: list[str] = field(default_factory=list)
    binary: set[str] = field(default_factory=set)
    out: IO[str] | None = None
    written: tuple[str, ...] = ()
    rows: int = 0


class DumpConverter:
    """Reads a dump statement by statement and writes each used table as a TSV file."""

    def __init__(self, path: str, folder: str, encoding: str = "utf-8") -> None:
        self.path = path
        self.folder = folder
        self.encoding = encoding
        self.tables: dict[str, _Table] = {}
        self.others: set[str] = set()  # tables of the dump that are no Matomo table
        self._row_patterns: dict[tuple[int, tuple[int, ...]], re.Pattern[str]] = {}

    def run(self) -> list[str]:
        """Convert the whole dump; the paths written."""
        try:
            for line_no, statement in _statements(self.path):
                self._statement(line_no, statement)
        finally:
            for table in self.tables.values():
                if table.out is not None:
                    table.out.close()
        return sorted(os.path.join(self.folder, f"{t}.tsv") for t in self.tables if self._matomo(t))

    # ------------------------------------------------------------------ statements

    def _statement(self, line_no: int, statement: str) -> None:
        head = statement[:16].lstrip().upper()
        if head.startswith("CREATE"):
            self._create(statement)
        elif head.startswith(("INSERT", "REPLACE")):
            self._insert(line_no, statement)

    def _create(self, statement: str) -> None:
        match = _CREATE.match(statement)
        if match is None:
            return
        table = self._table(match[1])
        table.columns, table.binary = [], set()
        for line in statement[match.end() :].split("\n"):
            column = _COLUMN_DEF.match(line)
            if column is not None:
                table.columns.append(column[1])
                if column[2].lower() in _BINARY_TYPES:
                    table.binary.add(column[1])

    def _table(self, name: str) -> _Table:
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = _Table(name)
            if self._matomo(name):
                # every Matomo table gets its file (empty when unused), so the dump's notes name it
                open(os.path.join(self.folder, f"{name}.tsv"), "w").close()
            else:
                self.others.add(name)
        return table

    def _matomo(self, name: str) -> bool:
        return _split_table(name) is not None

    def _insert(self, line_no: int, statement: str) -> None:
        match = _INSERT.match(statement)
        if match is None:
            raise self._error(line_no, "?", "an INSERT statement whose table and VALUES cannot be read")
        table = self._table(match[1])
        split = _split_table(table.name)
        if split is None or split[1] not in TABLE_COLUMNS:
            return
        columns = [c.strip().strip("`") for c in match[2].split(",")] if match[2] else table.columns
        if not columns:
            raise self._error(
                line_no,
                table.name,
                "no column names: the dump has no CREATE TABLE for it and the INSERT no column list",
            )
        keep = self._open(table, split[1], columns, line_no)
        binary = [columns[i] in table.binary for i in keep]
        pattern = self._row_pattern(len(columns), tuple(keep))
        pos, end = match.end(), len(statement)
        lines: list[str] = []
        while True:
            row = pattern.match(statement, pos)
            if row is None:
                raise self._error(
                    line_no + statement.count("\n", 0, pos),
                    table.name,
                    f"row {table.rows + len(lines) + 1} is not {len(columns)} values in parentheses "
                    f"(near {statement[pos : pos + 60]!r})",
                )
            lines.append("\t".join([tsv_value(v, b) for v, b in zip(row.groups(), binary, strict=True)]))
            sep = _SEP.match(statement, row.end())
            if sep is None:
                raise self._error(
                    line_no, table.name, f"no ',' or ';' after a row (near {statement[row.end() : row.end() + 60]!r})"
                )
            pos = sep.end()
            if len(lines) >= _BATCH_ROWS or sep[1] == ";":
                self._write(table, lines)
                lines = []
            if sep[1] == ";":
                if statement[pos:end].strip():
                    raise self._error(line_no, table.name, "text after the statement's ';'")
                return

    def _open(self, table: _Table, kind: str, columns: list[str], line_no: int) -> list[int]:
        """The positions of the columns kept; the table's file gets its header on the first INSERT."""
        required, optional = TABLE_COLUMNS[kind]
        used = {*required, *optional}
        wanted = [c for c in columns if c in used]  # in the dump's order: captured in that order
        if table.out is None:
            table.written = tuple(wanted)
            table.out = open(  # noqa: SIM115 (closed when the dump is done)
                os.path.join(self.folder, f"{table.name}.tsv"), "w", encoding="utf-8", errors="surrogateescape"
            )
            table.out.write("\t".join(wanted) + "\n")
        elif tuple(wanted) != table.written:
            raise self._error(line_no, table.name, "INSERT statements with different column lists")
        return [columns.index(c) for c in wanted]

    def _row_pattern(self, count: int, keep: tuple[int, ...]) -> re.Pattern[str]:
        """One row of ``count`` values, capturing those at ``keep`` (in that order) and passing the rest."""
        pattern = self._row_patterns.get((count, keep))
        if pattern is None:
            skip = "(?:" + _VALUE[1:]
            values = r"\s*,\s*".join(_VALUE if i in keep else skip for i in range(count))
            pattern = self._row_patterns[(count, keep)] = re.compile(rf"\(\s*{values}\s*\)", re.DOTALL)
        return pattern

    def _write(self, table: _Table, lines: list[str]) -> None:
        assert table.out is not None
        if lines:
            table.out.write("\n".join(lines) + "\n")
            table.rows += len(lines)

    def _error(self, line_no: int, table: str, what: str) -> SourceError:
        return SourceError(
            f"{self.path}, line {line_no}, table {table}: cannot read {what}. "
            "Make the dump with mysqldump (no --compact edits by hand), or export the tables as TSV "
            "(README: Matomo)"
        )


def _statements(path: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each SQL statement worth reading (CREATE TABLE, INSERT, REPLACE).

    Other lines (comments, ``/*!...*/;``, ``LOCK TABLES``, ``SET``) are passed over.
    A statement ends at a line ending with ``;`` outside a quoted string.
    """
    pending: list[str] = []
    start = 0
    for line_no, line in enumerate(_lines(path), 1):
        if not pending:
            head = line[:24].lstrip().upper()
            if not head.startswith(("INSERT", "REPLACE", "CREATE TABLE", "CREATE TEMPORARY")):
                continue
            start = line_no
        pending.append(line)
        if line.rstrip().endswith(";") and _balanced(pending):
            yield start, "".join(pending)
            pending = []
    if pending:
        raise SourceError(f"{path}, line {start}: the dump ends inside a statement (a cut-off file?)")


def _balanced(parts: list[str]) -> bool:
    """Whether the statement so far closes every quoted string it opens."""
    text = parts[0] if len(parts) == 1 else "".join(parts)
    if "'" not in text:
        return True
    return "'" not in _QUOTED_RUN.sub("", text)


def _lines(path: str) -> Iterator[str]:
    """The dump's lines, decoded so that any byte (raw binary values) comes back unchanged."""
    rest = b""
    for block in iter_decompressed(path, compression_of_name(path)):
        block = rest + block
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        if cut:
            yield from block[:cut].decode("utf-8", "surrogateescape").splitlines(keepends=True)
    if rest:
        yield rest.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- the converted folder

_ROWS: dict[str, int] = {}
_CONVERTED: dict[tuple[str, int, int], tuple[tempfile.TemporaryDirectory[str], DumpConverter]] = {}


def converted(path: str) -> tuple[str, DumpConverter]:
    """The folder holding a dump's tables as TSV files, converted once per run."""
    info = os.stat(path)
    key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    found = _CONVERTED.get(key)
    if found is None:
        holder = tempfile.TemporaryDirectory(prefix="backfill-sqldump-", dir=temp_dir())
        folder = os.path.join(holder.name, os.path.basename(path))
        os.mkdir(folder)
        converter = DumpConverter(path, folder)
        try:
            converter.run()
        except BaseException:
            holder.cleanup()
            raise
        found = _CONVERTED[key] = (holder, converter)
        _ROWS.update((os.path.join(folder, f"{t.name}.tsv"), t.rows) for t in converter.tables.values())
    return os.path.join(found[0].name, os.path.basename(path)), found[1]


def table_of(tsv_path: str) -> str | None:
    """The Matomo table (no prefix) a converted file holds."""
    split = _split_table(os.path.basename(tsv_path)[: -len(".tsv")])
    return None if split is None else split[1]


def rows_of(tsv_path: str) -> int:
    """How many rows the dump gave a converted table file."""
    return _ROWS.get(tsv_path, 0)


def log_files(path: str, names: Iterable[str]) -> list[str]:
    """The converted files of a dump whose table is one of ``names`` (the import's row tables)."""
    folder, _ = converted(path)
    found = []
    for name in sorted(os.listdir(folder)):
        if table_of(name) in names:
            found.append(os.path.join(folder, name))
    return found


__all__ = ["DumpConverter", "converted", "is_dump", "log_files", "rows_of", "sql_unescape", "table_of", "tsv_value"]
