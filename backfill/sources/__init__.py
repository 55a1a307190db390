"""Input files -> polars frames in bounded chunks, each row tagged with where it came from.

Every row carries ``_file`` (index of its file in the run) and ``_row`` (its
place in that file) so a reject or a failed send can always be traced back to
the line a person can open. Memory stays flat whatever the input size: no
reader holds more than one chunk plus one parse block, and compressed or
non-UTF-8 inputs are first copied, decoded, to a temp file (``BACKFILL_TMPDIR``).

Nothing touches a file before the generator returned by ``iter_chunks`` is
iterated, and a temp copy is deleted when that generator is exhausted or closed.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.util
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_FILE, COL_ROW
from backfill.sources import csv as csv_reader
from backfill.sources import ndjson as ndjson_reader
from backfill.sources import parquet as parquet_reader
from backfill.sources.compression import (
    COMPRESSION_SUFFIXES,
    GZIP_MAGIC,
    MAGIC,
    UTF8_BOM,
    ZSTD_MAGIC,
    SourceRecordError,
    codec_name,
    compression_of_bytes,
    is_utf8,
    iter_decompressed,
    iter_utf8,
    local_file,
    peek,
    take_head,
)

__all__ = [
    "BASE_FORMATS",
    "Explanation",
    "ReadNotes",
    "ReadOptions",
    "SourceFile",
    "SourceRecordError",
    "count_rows_hint",
    "expand_sources",
    "iter_chunks",
    "read_schema",
]

BASE_FORMATS = ("csv", "parquet", "ndjson")


@dataclass(frozen=True)
class FormatPlugin:
    """A source format built on top of the base readers (an export with its own shape).

    Selected only by name (``--format NAME`` or the mapping's ``reader: {format: NAME}``),
    never guessed. ``iter_frames`` yields frames with a 1-based ``_row`` column (not
    ``_file``: ``iter_chunks`` adds it, and keeps only ``ReadOptions.columns``);
    ``schema`` gives the columns those frames will have, without reading the
    whole file, so a mapping is checked first.

    Whatever a reader leaves out, guesses or repairs without rejecting a row (an
    archive entry ignored, a table missing, a file name it cannot date), it says with
    ``options.note(text)``: every note reaches the run's summary and ``--report``.
    A note names the file; the same text said twice is kept once.
    """

    name: str
    description: str
    iter_frames: Callable[[SourceFile, ReadOptions], Iterator[pl.DataFrame]]
    schema: Callable[[SourceFile, ReadOptions], dict[str, pl.DataType]]
    extensions: tuple[str, ...] = ()  # extra file endings the plugin reads (e.g. ".avro")
    #: Whether a path (file, folder or ZIP) looks like this export; used by ``inspect`` to
    #: name the format and preset. It may read the first KiB of the file, never the whole.
    sniff: Callable[[str], bool] | None = None
    #: The preset in ``mappings/`` made for this format (``-m NAME``), if any.
    preset: str | None = None
    #: The order its files are read in (default: by path), e.g. rotated logs oldest first.
    sort_key: Callable[[str], Any] | None = None
    #: For ``inspect``: (path, plugin options, encoding) -> what the file is, the flags a run
    #: needs, or why it cannot be read as this format (a file with one of ``extensions``).
    explain: Callable[[str, tuple[tuple[str, str], ...], str | None], Explanation] | None = None


@dataclass(frozen=True)
class Explanation:
    """What ``inspect`` says of a file a plugin was asked about (``FormatPlugin.explain``)."""

    ok: bool  # the file is in this format and can be read
    lines: list[str]  # what was found (the exact variant, what a run will need), or why it cannot be read
    flags: list[str]  # what a run needs on its command line besides the files and -m (--hostname X)


PLUGINS: dict[str, FormatPlugin] = {}
#: Modules of this package that define a ``PLUGIN``; each is one file (see FormatPlugin).
PLUGIN_MODULES = (
    "ga4",
    "ga_report",
    "plausible_events",
    "plausible_csv",
    "matomo_logs",
    "matomo_live",
    "umami_export",
    "access_log",
)


def register_format(plugin: FormatPlugin) -> FormatPlugin:
    PLUGINS[plugin.name] = plugin
    return plugin


def known_formats() -> tuple[str, ...]:
    return BASE_FORMATS + tuple(sorted(PLUGINS))


_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
_SNIFF_BYTES = 4096
_UINT32_MAX = 2**32 - 1


class ReadNotes:
    """What the readers of one run said about their input, in the order said.

    Shared by every copy of a ``ReadOptions`` (``dataclasses.replace`` keeps it), and
    safe to add to from the reading thread.
    """

    #: Notes kept word for word; beyond, only counted (a summary must stay readable).
    MAX_KEPT = 50

    def __init__(self) -> None:
        self._notes: dict[str, None] = {}
        self._more = 0
        self._lock = threading.Lock()
        self._grouped: dict[str, dict[str, None]] = {}

    def add_to(self, topic: str, item: str) -> None:
        """Add ``item`` to the one note of ``topic`` (e.g. a day to "thresholded on: ...").

        The note lists every item once, in the order said; runs of consecutive ISO days
        are written as ranges (2024-03-01..2024-03-05).
        """
        with self._lock:
            self._grouped.setdefault(topic, {})[item] = None

    def add(self, text: str) -> None:
        with self._lock:
            if text in self._notes:
                return
            if len(self._notes) < self.MAX_KEPT:
                self._notes[text] = None
            else:
                self._more += 1

    def all(self) -> list[str]:
        with self._lock:
            more = [f"... and {self._more:,} more reader notes"] if self._more else []
            grouped = [f"{topic}: {', '.join(day_ranges(list(items)))}" for topic, items in self._grouped.items()]
            return list(self._notes) + grouped + more


_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def day_ranges(items: list[str]) -> list[str]:
    """Consecutive ISO days as first..last; anything else as it is."""
    import datetime as dt

    out: list[str] = []
    run: list[dt.date] = []

    def flush() -> None:
        if run:
            out.append(run[0].isoformat() if len(run) == 1 else f"{run[0]}..{run[-1]}")
            run.clear()

    for item in items:
        day = dt.date.fromisoformat(item) if _ISO_DAY.match(item) else None
        if day is not None and run and day == run[-1] + dt.timedelta(days=1):
            run.append(day)
            continue
        flush()
        if day is not None:
            run.append(day)
        else:
            out.append(item)
    flush()
    return out


class ReportedDays:
    """What aggregated sources (GA reports, Plausible's CSV export) say about each day,
    before any event is made of it: per UTC day, pageviews, visitors, visits and custom
    events, a figure left out where the source does not give it. Summed over files;
    shared by every copy of a ``ReadOptions`` like ``ReadNotes``."""

    METRICS = ("pageviews", "visitors", "visits", "events")

    def __init__(self) -> None:
        self._days: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, day: str, figures: dict[str, int | None]) -> None:
        with self._lock:
            kept = self._days.setdefault(day, {})
            for metric, value in figures.items():
                if value is not None:
                    kept[metric] = kept.get(metric, 0) + int(value)

    def rows(self) -> list[dict[str, Any]]:
        """``[{"day": "2024-03-01", "pageviews": 120, ...}]`` in date order; empty for event sources."""
        with self._lock:
            return [{"day": day, **figures} for day, figures in sorted(self._days.items())]


@dataclass(frozen=True)
class ReadOptions:
    """How to read the inputs; checked on creation so bad flags fail before any file."""

    format: str | None = None  # "csv" | "parquet" | "ndjson"; None = from the extension
    delimiter: str | None = None  # CSV; None = "," ("\t" for .tsv); "\\t" and "tab" = tab
    quote_char: str = '"'  # CSV; "" = fields are never quoted
    encoding: str = "utf-8"  # other encodings are transcoded to a temp UTF-8 copy
    has_header: bool = True  # CSV; without one, columns are column_1, column_2, ...
    chunk_rows: int = 100_000
    columns: tuple[str, ...] | None = None  # read only these; None = all
    plugin_options: tuple[tuple[str, str], ...] = ()  # format plugin settings, e.g. (("log_format", "..."),)
    #: Where readers put their notes (see ``FormatPlugin``); not part of how files are read.
    notes: ReadNotes = field(default_factory=ReadNotes, compare=False, repr=False)
    #: Every input file of the run (absolute paths, in reading order), for a reader whose files
    #: refer to one another (saved pages that overlap); empty: the file read is all there is.
    inputs: tuple[str, ...] = field(default=(), compare=False, repr=False)
    #: Where aggregated sources put the per-day figures they report (see ``ReportedDays``).
    reported: ReportedDays = field(default_factory=ReportedDays, compare=False, repr=False)

    def note_in(self, topic: str, item: str) -> None:
        """Add ``item`` (e.g. a day) to the one summary note of ``topic`` (see ``ReadNotes.add_to``)."""
        self.notes.add_to(topic, item)

    def note(self, text: str) -> None:
        """Say something about the input that the run's summary must show (see ``FormatPlugin``)."""
        self.notes.add(text)

    def with_inputs(self, files: Sequence[SourceFile]) -> ReadOptions:
        """These options, knowing the run's input files (see ``inputs``); the notes are shared."""
        return dataclasses.replace(self, inputs=tuple(f.path for f in files))

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in known_formats():
            raise ConfigError(f"unknown --format {self.format!r}; use one of {', '.join(known_formats())}")
        if self.delimiter is not None:
            delimiter = {"\\t": "\t", "tab": "\t"}.get(self.delimiter, self.delimiter)
            if len(delimiter) != 1 or delimiter in "\r\n":
                raise ConfigError(f"--delimiter must be one character (or '\\t'), not {self.delimiter!r}")
            object.__setattr__(self, "delimiter", delimiter)
        if len(self.quote_char) > 1 or self.quote_char in ("\r", "\n"):
            raise ConfigError(f"--quote-char must be one character or empty, not {self.quote_char!r}")
        if self.quote_char and self.quote_char == self.delimiter:
            raise ConfigError("--quote-char and --delimiter must differ")
        codec_name(self.encoding)
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int):
            raise ConfigError(f"chunk_rows must be an integer, not {self.chunk_rows!r}")
        if self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be at least 1, not {self.chunk_rows}")
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))


@dataclass(frozen=True)
class SourceFile:
    """One input file as found by ``expand_sources``.

    ``size`` and ``mtime_ns`` identify the version read, so a resumed run can
    tell whether the file changed since.
    """

    path: str  # absolute
    format: str  # "csv" | "parquet" | "ndjson"
    compression: str | None  # "gzip" | "zstd" | "bzip2" | "xz" | None
    size: int  # bytes on disk (compressed)
    mtime_ns: int


# --- finding the files ------------------------------------------------------------


def _extension(path: str) -> tuple[str, str | None]:
    """(extension, compression) with ``.gz``/``.zst``/``.bz2``/``.xz`` taken off first: ``a.csv.gz`` -> csv."""
    stem, ext = os.path.splitext(os.path.basename(path).lower())
    compression = COMPRESSION_SUFFIXES.get(ext)
    if compression:
        ext = os.path.splitext(stem)[1]
    return ext, compression


def _name_format(path: str) -> tuple[str | None, str | None]:
    """(format, compression) from the file name alone."""
    ext, compression = _extension(path)
    return _EXTENSIONS.get(ext), compression


def expand_sources(patterns: Sequence[str], options: ReadOptions) -> tuple[list[SourceFile], list[str]]:
    """Files, globs (``**`` recurses) and directories -> sorted unique data files.

    Returns the files and one human message per thing skipped (hidden and system
    files, unknown extensions inside a directory or glob). A pattern that yields
    no data file is a ConfigError naming it, so a typo never imports nothing.
    An explicitly named file with an unknown extension is read as ``--format``,
    or as what its content clearly is (Parquet, JSON lines), else ConfigError.
    """
    found: dict[tuple[int, int], SourceFile] = {}
    skipped: list[str] = []
    for pattern in patterns:
        produced = 0
        pattern_skipped: list[str] = []
        for path, origin in _candidates(pattern, pattern_skipped):
            info = os.stat(path)
            source = _source_file(path, info, origin, options, pattern_skipped)
            if source is None:
                continue
            produced += 1
            found.setdefault((info.st_dev, info.st_ino), source)
        skipped.extend(pattern_skipped)
        if not produced:
            detail = f" (skipped: {'; '.join(pattern_skipped)})" if pattern_skipped else ""
            raise ConfigError(f"{pattern!r}: no data files found{detail}")
    plugin = PLUGINS.get(options.format or "")
    order = plugin.sort_key if plugin is not None and plugin.sort_key is not None else (lambda path: path)
    return sorted(found.values(), key=lambda source: order(source.path)), skipped


def _candidates(pattern: str, skipped: list[str]) -> Iterator[tuple[str, str]]:
    """(path, origin) for each regular file a pattern stands for; origin is
    "named", "glob" or "directory", which decides what an unknown extension means."""
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
        matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            raise ConfigError(f"{pattern!r}: no file matches this pattern")
        for match in matches:
            if os.path.isdir(match):
                yield from _walk(match, skipped)
            elif os.path.isfile(match):
                yield match, "glob"
        return
    if os.path.isdir(expanded):
        yield from _walk(expanded, skipped)
    elif os.path.isfile(expanded):
        yield expanded, "named"
    elif os.path.exists(expanded):
        raise ConfigError(f"{pattern!r} is not a regular file or directory")
    else:
        raise ConfigError(f"{pattern!r}: no such file or directory")


def _walk(top: str, skipped: list[str]) -> Iterator[tuple[str, str]]:
    def note(error: OSError) -> None:
        skipped.append(f"skipped {error.filename}: cannot list it ({error.strerror})")

    for directory, dirnames, filenames in os.walk(top, onerror=note):
        for dirname in sorted(dirnames):
            if _junk_reason(dirname):
                skipped.append(f"skipped {os.path.join(directory, dirname)}/: hidden directory")
        dirnames[:] = sorted(d for d in dirnames if not _junk_reason(d))
        for filename in sorted(filenames):
            path = os.path.join(directory, filename)
            reason = _junk_reason(filename) or _not_regular(path)
            if reason:
                skipped.append(f"skipped {path}: {reason}")
            else:
                yield path, "directory"


def _not_regular(path: str) -> str | None:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    return None if stat.S_ISREG(mode) else "not a regular file"


def _junk_reason(filename: str) -> str | None:
    """Why a file found in a directory is obviously not data (named ones are read)."""
    if filename.startswith("."):
        return "hidden file"
    if filename.lower() in _SYSTEM_FILES:
        return "system file"
    if filename.startswith("~$"):
        return "office lock file"
    return None


def _source_file(
    path: str, info: os.stat_result, origin: str, options: ReadOptions, skipped: list[str]
) -> SourceFile | None:
    fmt, compression = _name_format(path)
    if fmt is None:
        fmt, compression = _unknown_extension(path, origin, options, compression, skipped)
        if fmt is None:
            return None
    elif options.format is not None:
        fmt = options.format
    return SourceFile(
        path=os.path.abspath(path),
        format=fmt,
        compression=compression,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
    )


def _unknown_extension(
    path: str,
    origin: str,
    options: ReadOptions,
    compression: str | None,
    skipped: list[str],
) -> tuple[str | None, str | None]:
    """Format for a file whose name does not tell; (None, None) when skipped.

    In a directory such files are notes and exports' side files (README.txt), so
    they are skipped even with --format; a glob or a name chose them on purpose.
    A format plugin's own endings (``FormatPlugin.extensions``) are data files
    wherever they are found, once that format is chosen.
    """
    plugin = PLUGINS.get(options.format or "")
    if plugin is not None and _extension(path)[0] in plugin.extensions:
        return plugin.name, compression
    if origin == "directory" or (origin == "glob" and options.format is None):
        ext = os.path.splitext(path)[1] or "no extension"
        how = "name it (or a glob) with --format" if origin == "directory" else "pass --format"
        skipped.append(f"skipped {path}: not a data file extension ({ext}); {how} to read it")
        return None, None
    head = _read_head(path)
    if compression is None:
        compression = compression_of_bytes(head)
    if options.format is not None:
        return options.format, compression
    if compression is not None:
        head = peek(path, compression, _SNIFF_BYTES)[0]
    fmt = _format_of(head)
    if fmt is None:
        raise ConfigError(f"{path}: the file type is not clear from its name; pass --format {'|'.join(BASE_FORMATS)}")
    return fmt, compression


def _read_head(path: str) -> bytes:
    try:
        with open(path, "rb") as raw:
            return raw.read(_SNIFF_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc


def _format_of(head: bytes) -> str | None:
    """Only formats that content identifies beyond doubt: CSV is never guessed."""
    if head.startswith(parquet_reader.PARQUET_MAGIC):
        return "parquet"
    if head.removeprefix(UTF8_BOM).lstrip()[:1] in (b"{", b"["):
        return "ndjson"
    return None


# --- checking that the content is what the name says --------------------------------

_JSON_ARRAY = re.compile(rb"\[\s*([\[{\"\]]|$)")


def _looks_like(head: bytes) -> str | None:
    """What the start of a file is, when that is recognisable."""
    text = head.removeprefix(UTF8_BOM).lstrip()
    lower = text[:16].lower()
    checks = (
        (head.startswith(parquet_reader.PARQUET_MAGIC), "Parquet"),
        (head.startswith(GZIP_MAGIC), "gzip-compressed data (name it *.gz)"),
        (head.startswith(ZSTD_MAGIC), "zstd-compressed data (name it *.zst)"),
        (compression_of_bytes(head) == "bzip2", "bzip2-compressed data (name it *.bz2)"),
        (head.startswith(MAGIC["xz"]), "xz-compressed data (name it *.xz)"),
        (head.startswith(b"PK\x03\x04"), "a ZIP archive (unzip it first)"),
        (head.startswith((b"\xff\xfe", b"\xfe\xff")), "UTF-16 text (pass --encoding utf-16)"),
        (_wide_text(head, 1), "UTF-16 text without a byte order mark (pass --encoding utf-16-le)"),
        (_wide_text(head, 0), "UTF-16 text without a byte order mark (pass --encoding utf-16-be)"),
        (
            lower.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<!--")),
            "an HTML page (an error or login page saved instead of the export?)",
        ),
        (lower.startswith(b"<?xml"), "an XML document"),
        (text.startswith(b"{"), "JSON lines"),
        (_JSON_ARRAY.match(text) is not None, "a JSON array"),
        (b"\x00" in head, "binary data"),
    )
    return next((what for hit, what in checks if hit), None)


def _wide_text(head: bytes, nul_at: int) -> bool:
    """Mostly ASCII text in UTF-16 without a BOM: every other byte (odd ones for
    little-endian, even ones for big-endian) is NUL, the others are not."""
    sample = head[: len(head) & ~1]
    if len(sample) < 8:
        return False
    nuls, chars = sample[nul_at::2], sample[1 - nul_at :: 2]
    return nuls.count(0) >= len(nuls) * 0.9 and chars.count(0) <= len(chars) * 0.1


def _check_content(source: SourceFile, options: ReadOptions) -> bytes:
    """Refuse a file whose bytes contradict its declared format; return its head."""
    raw = _raw_head(source)
    if source.compression is not None and not raw.startswith(MAGIC[source.compression]):
        raise _contradiction(source, source.compression, _looks_like(raw))
    head = peek(source.path, source.compression, _SNIFF_BYTES)[0] if source.compression else raw
    if not head:
        return head
    if source.format == "parquet":
        what = _looks_like(head)
        if what != "Parquet":
            raise _contradiction(source, "Parquet", what or "text (CSV?)")
        return head
    if not is_utf8(options.encoding):
        # Sniff what the text says, not its bytes (UTF-16 is full of NULs).
        head = head.decode(options.encoding, "replace").encode("utf-8")
    what = _looks_like(head)
    if source.format == "ndjson":
        if what == "a JSON array":
            raise ndjson_reader.json_array_error(source.path)
        if what not in (None, "JSON lines"):
            raise _contradiction(source, "JSON lines", what)
    elif what is not None:
        raise _contradiction(source, "CSV", what)
    return head


def _raw_head(source: SourceFile) -> bytes:
    try:
        with open(source.path, "rb") as raw:
            return raw.read(_SNIFF_BYTES)
    except OSError as exc:
        raise SourceError(f"{source.path}: cannot read the file ({exc.strerror})") from exc


def _contradiction(source: SourceFile, expected: str, what: str | None) -> SourceError:
    return SourceError(
        f"{source.path}: read as {expected}, but it looks like {what or 'something else'}; "
        "check the file (or pass the right --format)"
    )


# --- reading ---------------------------------------------------------------------


def _dialect(source: SourceFile, options: ReadOptions) -> csv_reader.Dialect:
    delimiter = options.delimiter
    if delimiter is None:
        delimiter = "\t" if _extension(source.path)[0] == ".tsv" else ","
    return csv_reader.Dialect(delimiter, options.quote_char, options.has_header, options.delimiter is not None)


def iter_chunks(source: SourceFile, file_index: int, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """Read one file as frames of at most ``options.chunk_rows`` rows.

    Each frame has the file's columns, then ``_file`` (UInt32 = ``file_index``)
    and ``_row`` (UInt64, 1-based), so every row can be traced to its source:

    * CSV: the data record number; the first record after the header is 1, quoted
      embedded newlines do not count, blank lines are skipped but do count.
      Every column is String and empty fields are null.
    * NDJSON: the line number of the object in the (decompressed) file; blank
      lines are skipped but counted. Chunks may differ in columns and dtypes.
    * Parquet: the row's position in the file.

    A record that cannot be read (a CSV row with the wrong number of fields, an
    NDJSON line that is not a JSON object) is a row with null data and
    ``_source_error`` (the reason) and ``_source_raw`` (its text) set; frames
    without such a row have neither column. Raises SourceError (SourceRecordError
    when one record is at fault, with its line or row) for a file that cannot be
    read as declared, including one most of whose first records are unreadable.
    A compressed file is decompressed completely before its first row, so damage
    is found first.
    """
    if not 0 <= file_index <= _UINT32_MAX:
        raise ValueError(f"file_index {file_index} does not fit in UInt32")
    file_column = pl.lit(file_index, dtype=pl.UInt32()).alias(COL_FILE)
    plugin = PLUGINS.get(source.format)
    if plugin is not None:
        for frame in plugin.iter_frames(source, options):
            if frame.height:
                yield frame.select(*_wanted(frame, options.columns), file_column, pl.col(COL_ROW).cast(pl.UInt64))
        return
    if not _check_content(source, options):
        return
    for frame in _iter_frames(source, options):
        if frame.height:
            yield frame.select(pl.exclude(COL_ROW), file_column, pl.col(COL_ROW))


def _wanted(frame: pl.DataFrame, columns: tuple[str, ...] | None) -> list[str]:
    """A plugin frame's data columns that the run reads (all when ``columns`` is None)."""
    if columns is None:
        return [c for c in frame.columns if c not in (COL_ROW, COL_FILE)]
    return [c for c in columns if c in frame.columns]


def _iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    columns = options.columns
    if source.format == "parquet":
        with local_file(source.path, source.compression, None, ".parquet") as path:
            yield from parquet_reader.iter_parquet(
                path, name=source.path, columns=columns, chunk_rows=options.chunk_rows
            )
        return
    with local_file(source.path, source.compression, options.encoding, ".txt") as path:
        if source.format == "ndjson":
            yield from ndjson_reader.iter_ndjson(path, name=source.path, columns=columns, chunk_rows=options.chunk_rows)
        else:
            yield from csv_reader.iter_csv(
                path,
                name=source.path,
                dialect=_dialect(source, options),
                columns=columns,
                chunk_rows=options.chunk_rows,
            )


def read_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """Column names and dtypes, read from the start of the file only (Parquet: footer).

    CSV: the header, every column String. NDJSON: inferred from the first lines, so
    later lines may add columns. Lets a mapping be checked before any row is read.
    Does not apply ``options.columns``. A compressed Parquet file is decompressed
    to a temp copy first, as its footer is at the end.
    """
    plugin = PLUGINS.get(source.format)
    if plugin is not None:
        return plugin.schema(source, options)
    head = _check_content(source, options)
    if not head:
        return {}
    if source.format == "parquet":
        with local_file(source.path, source.compression, None, ".parquet") as path:
            return parquet_reader.parquet_schema(path, source.path)
    text, at_eof = _utf8_head(source, options, csv_reader.HEADER_MAX_BYTES)
    if source.format == "ndjson":
        return ndjson_reader.ndjson_schema(text, at_eof, source.path)
    header = csv_reader.read_header(text, at_eof, source.path, _dialect(source, options))
    return {} if header is None else dict.fromkeys(header.names, pl.String())


def _utf8_head(source: SourceFile, options: ReadOptions, size: int) -> tuple[bytes, bool]:
    """The first ``size`` bytes of the file as UTF-8, decompressing only that far."""
    blocks = iter_decompressed(source.path, source.compression)
    return take_head(iter_utf8(blocks, options.encoding, source.path), size)


#: Bytes sampled at the start of a text file to estimate its rows for a progress ETA.
ESTIMATE_SAMPLE_BYTES = 1 << 20


def estimate_rows(source: SourceFile) -> int | None:
    """Rows of a file, exact for Parquet, else estimated from the line length of its first MiB.

    Only for progress and ETA: never used to count the ledger. None for
    compressed text, whose size says little about its rows.
    """
    exact = count_rows_hint(source)
    if exact is not None or source.format == "parquet" or source.compression is not None:
        return exact
    try:
        with open(source.path, "rb") as fh:
            sample = fh.read(ESTIMATE_SAMPLE_BYTES)
    except OSError:
        return None
    lines = sample.count(b"\n")
    if not lines:
        return None
    return max(1, round(source.size * lines / len(sample)) - (1 if source.format == "csv" else 0))


def count_rows_hint(source: SourceFile) -> int | None:
    """Exact rows of an uncompressed Parquet file, from its footer; else None.

    Other formats cannot be counted without reading them: progress is then
    better measured in bytes of the file.
    """
    if source.format != "parquet" or source.compression is not None:
        return None
    try:
        return parquet_reader.parquet_rows(source.path)
    except (pl.exceptions.PolarsError, OSError):
        return None


def _load_plugins() -> None:
    for name in PLUGIN_MODULES:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            register_format(importlib.import_module(f"{__name__}.{name}").PLUGIN)


_load_plugins()
