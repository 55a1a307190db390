"""The byte layer under every reader: decompression, transcoding to UTF-8, temp files.

The format readers only ever parse a plain local file (UTF-8 text, or Parquet):
polars reads files fastest, a compressed or non-UTF-8 input would otherwise need a
parser of its own per format, and decompressing *completely* before the first row
is what lets a truncated archive fail before any of its rows were sent.
Nothing here holds more than one block of a file in memory.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import lzma
import os
import re
import tempfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from typing import BinaryIO

import zstandard

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_FILE, COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
UTF8_BOM = b"\xef\xbb\xbf"

#: File endings (lower case) -> compression. Rotated logs and server exports come as
#: ``.gz`` mostly, ``.bz2`` and ``.xz`` from logrotate's ``compresscmd`` and archives.
COMPRESSION_SUFFIXES = {
    ".gz": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
    ".bz2": "bzip2",
    ".xz": "xz",
}
#: compression -> the bytes its files start with.
MAGIC = {"gzip": GZIP_MAGIC, "zstd": ZSTD_MAGIC, "bzip2": BZIP2_MAGIC, "xz": XZ_MAGIC}

#: Environment variable naming the directory for decompressed/transcoded copies.
TMPDIR_ENV = "BACKFILL_TMPDIR"

_READ_BYTES = 1 << 20
# zstd input is fed in small pieces because one piece's output is returned whole:
# 64 KiB of highly repetitive log text can still expand to tens of MB.
_ZSTD_FEED_BYTES = 1 << 16

#: Codec names (as ``codecs.lookup`` spells them) that the readers take as they are.
_UTF8_CODECS = frozenset({"utf-8", "utf-8-sig"})


class SourceRecordError(SourceError):
    """One record (line or data row) of an input file is unreadable, and the file with it.

    Raised where one bad record condemns the file (an encoding error) or where the
    reader has no place for a bad row (the export readers); the base CSV and NDJSON
    readers yield such a record as a row with ``_source_error`` instead
    (``backfill.sources.records``). Carries where it is.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        reason: str,
        line: int | None = None,
        row: int | None = None,
    ):
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.line = line
        self.row = row


def codec_name(encoding: str) -> str:
    """Normalise an encoding name, so aliases like ``latin-1`` and ``L1`` compare equal."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}; use e.g. utf-8, latin-1, cp1252 or utf-16") from None


def is_utf8(encoding: str) -> bool:
    """True when a file in this encoding can be parsed without transcoding."""
    return codec_name(encoding) in _UTF8_CODECS


def temp_dir() -> str:
    """Where decompressed copies go: they can be as large as the input, so it is settable."""
    directory = os.environ.get(TMPDIR_ENV) or tempfile.gettempdir()
    if not os.path.isdir(directory):
        raise ConfigError(f"{TMPDIR_ENV}={directory} is not a directory")
    return directory


def iter_decompressed(path: str, compression: str | None) -> Generator[bytes, None, None]:
    """The file's (decompressed) bytes in blocks; damage raises only once it is reached."""
    try:
        if compression is None:
            yield from _iter_plain(path)
        elif compression == "gzip":
            yield from _iter_gzip(path)
        elif compression == "zstd":
            yield from _iter_zstd(path)
        elif compression in ("bzip2", "xz"):
            yield from _iter_stdlib(path, compression)
        else:
            raise ConfigError(f"unknown compression {compression!r}")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc})") from exc


def _iter_plain(path: str) -> Iterator[bytes]:
    with open(path, "rb") as raw:
        while block := raw.read(_READ_BYTES):
            yield block


def _damaged(path: str, kind: str, detail: object) -> SourceError:
    return SourceError(
        f"{path}: truncated or corrupt {kind} ({detail}): the rows before the damage "
        "were not read either; re-download or re-compress the file"
    )


def _iter_gzip(path: str) -> Iterator[bytes]:
    # gzip.open reads concatenated members (``cat a.gz b.gz``) as one stream.
    with gzip.open(path, "rb") as stream:
        while True:
            try:
                block = stream.read(_READ_BYTES)
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise _damaged(path, "gzip", exc) from exc
            if not block:
                return
            yield block


def _iter_stdlib(path: str, compression: str) -> Iterator[bytes]:
    """bzip2 and xz through the standard library; like gzip.open, both read concatenated
    streams (``pbzip2``, ``cat a.xz b.xz``) and raise EOFError for a truncated one."""
    opener = bz2.open if compression == "bzip2" else lzma.open
    with opener(path, "rb") as stream:
        while True:
            try:
                block = stream.read(_READ_BYTES)
            except (EOFError, OSError, lzma.LZMAError) as exc:
                raise _damaged(path, compression, exc) from exc
            if not block:
                return
            yield block


def compression_of_name(path: str) -> str | None:
    """The compression a file name says (``access.log.2.bz2`` -> bzip2), if any."""
    return COMPRESSION_SUFFIXES.get(os.path.splitext(path)[1].lower())


def compression_of_bytes(head: bytes) -> str | None:
    """The compression a file's first bytes say, if any (a rotated log whose ending was lost).

    "BZh" alone could start a text file: bzip2 needs its block size digit and the magic
    of its first block (or of the end of an empty stream) too.
    """
    if head.startswith(BZIP2_MAGIC):
        return "bzip2" if head[3:4] in b"123456789" and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90") else None
    return next((name for name, magic in MAGIC.items() if head.startswith(magic)), None)


def _iter_zstd(path: str) -> Iterator[bytes]:
    # zstandard's stream_reader returns a silently short stream for a truncated
    # frame, so frames are decoded with decompressobj, whose ``eof`` tells.
    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    frame_started = False
    with open(path, "rb") as raw:
        while data := raw.read(_ZSTD_FEED_BYTES):
            while data:
                try:
                    block = frame.decompress(data)
                except zstandard.ZstdError as exc:
                    raise _damaged(path, "zstd", exc) from exc
                frame_started = True
                if block:
                    yield block
                if not frame.eof:
                    break
                # A multi-frame file (pzstd, ``cat a.zst b.zst``): start the next frame.
                data = frame.unused_data
                frame = decompressor.decompressobj()
                frame_started = False
    if frame_started:
        raise _damaged(path, "zstd", "the last frame is incomplete")


def take_head(blocks: Generator[bytes, None, None], size: int) -> tuple[bytes, bool]:
    """The first ``size`` bytes of a block stream and whether that was all of it.

    Stops pulling blocks (and closes the stream) as soon as it has enough, so a
    look at the start of a large compressed file decompresses only its start.
    """
    head = bytearray()
    with contextlib.closing(blocks):
        for block in blocks:
            head += block
            if len(head) > size:
                return bytes(head[:size]), False
    return bytes(head), True


def peek(path: str, compression: str | None, size: int) -> tuple[bytes, bool]:
    """The first ``size`` (decompressed) bytes and whether that is the whole file."""
    return take_head(iter_decompressed(path, compression), size)


def iter_utf8(blocks: Iterable[bytes], encoding: str, path: str) -> Generator[bytes, None, None]:
    """Re-encode blocks to UTF-8; a byte the encoding has no character for names its line.

    UTF-8 input passes through unchecked: the readers validate it themselves and
    can name the line without decoding every block twice.
    """
    codec = codec_name(encoding)
    if codec in _UTF8_CODECS:
        yield from blocks
        return
    decoder = codecs.getincrementaldecoder(codec)("strict")
    single_byte = _is_single_byte(codec)
    line = 1
    first = codec.startswith(("utf-16", "utf-32"))
    for block in blocks:
        if first:
            _check_wide(block, codec, encoding, path)
            first = False
        if single_byte and not block.isascii():
            _check_not_utf8(block, encoding, path, line)
        state = decoder.getstate()
        try:
            text = decoder.decode(block)
        except UnicodeDecodeError as exc:
            raise _decode_error(path, encoding, decoder, state, block, exc, line) from exc
        except UnicodeError as exc:  # e.g. a byte order the codec cannot tell
            raise SourceError(f"{path}: cannot decode it as {encoding} ({exc}); pass the right --encoding") from exc
        line += text.count("\n")
        yield text.encode("utf-8")
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise encoding_error(path, encoding, line, exc.object[exc.start : exc.end]) from exc
    if tail:
        yield tail.encode("utf-8")


def _is_single_byte(codec: str) -> bool:
    """latin-1, cp1252 and the like: every byte is a character, so nothing fails to decode."""
    try:
        return len(bytes(range(256)).decode(codec, "replace")) == 256
    except (LookupError, ValueError):
        return False


def _check_not_utf8(block: bytes, encoding: str, path: str, line: int) -> None:
    """Refuse UTF-8 text declared as a single-byte encoding: it would be read as mojibake
    ("München" as "MÃ¼nchen"), which no later check could tell from real text."""
    cut = block.rfind(b"\n") + 1 or len(block)  # no character split at the block's end
    try:
        text = block[:cut].decode("utf-8")
    except UnicodeDecodeError:
        return  # bytes that are not UTF-8: the declared encoding is plausible
    if text.isascii():
        return
    at = next(i for i, char in enumerate(text) if ord(char) > 127)
    before = re.search(r"[^\s,;|]{0,20}\Z", text[:at])
    after = re.match(r"[^\s,;|]{0,20}", text[at:])
    word = (before.group() if before else "") + (after.group() if after else text[at])
    shown = word.encode("utf-8").decode(encoding, "replace")
    raise SourceError(
        f"{path}: line {line + text.count(chr(10), 0, at)}: the file is UTF-8 ({word!r}), but "
        f"--encoding {encoding} would read it as {shown!r}; drop --encoding (or `encoding:` in the "
        "mapping's reader section), or convert the file to one encoding if it mixes them"
    )


def _check_wide(block: bytes, codec: str, encoding: str, path: str) -> None:
    """UTF-16 and UTF-32 text is full of NUL bytes; without any it is another encoding
    (read as UTF-16 it would become CJK characters, not an error). Plain ``utf-16`` and
    ``utf-32`` need a byte order mark to know the byte order."""
    head = block[:4096]
    if len(head) >= 4 and b"\x00" not in head:
        raise SourceError(
            f"{path}: --encoding {encoding}, but the file has no NUL bytes, so it is not {encoding} "
            "(probably UTF-8 or a single-byte encoding like cp1252): drop --encoding or pass the right one"
        )
    boms = (
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) if codec == "utf-16" else (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    )
    if codec in ("utf-16", "utf-32") and len(head) >= 2 and not head.startswith(boms):
        order = "le" if head[1::2].count(0) >= head[0::2].count(0) else "be"
        raise SourceError(
            f"{path}: --encoding {encoding}, but the file does not start with a byte order mark; "
            f"say the byte order: --encoding {codec}-{order} (or {codec}-{'be' if order == 'le' else 'le'})"
        )


def _decode_error(
    path: str,
    encoding: str,
    decoder: codecs.IncrementalDecoder,
    state: tuple[bytes, int],
    block: bytes,
    exc: UnicodeDecodeError,
    line: int,
) -> SourceRecordError:
    """Count the lines before the bad byte, decoding the good prefix again."""
    # exc.start counts from the decoder's buffered bytes, which precede the block.
    good = block[: max(0, exc.start - len(state[0]))]
    decoder.setstate(state)
    line += decoder.decode(good).count("\n")
    return encoding_error(path, encoding, line, exc.object[exc.start : exc.end])


def encoding_error(path: str, encoding: str, line: int, bad: bytes, *, records: int = 1) -> SourceRecordError:
    """The error for undecodable bytes, with the encodings that usually fit instead.

    ``records``: how many records were found undecodable (a reader that rejects a few
    one by one refuses the file past a count, and says so).
    """
    shown = " ".join(f"0x{byte:02x}" for byte in bad[:4]) or "an incomplete character"
    more = (
        f", nor are {records - 1} more records after it: the file is not {encoding} as a whole" if records > 1 else ""
    )
    if is_utf8(encoding):
        advice = (
            "pass the real encoding with --encoding (Excel and older exports are "
            "often cp1252 or latin-1; UTF-16 files start with 0xff 0xfe)"
        )
    else:
        advice = "the file is not in this encoding; pass the right one with --encoding"
    return SourceRecordError(
        f"{path}: line {line}: {shown} is not valid {encoding}{more}; {advice}",
        path=path,
        reason=f"not valid {encoding}",
        line=line,
    )


def check_utf8(block: bytes, path: str, first_line: int) -> None:
    """Raise naming the line of the first invalid UTF-8 byte of ``block``, if any."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + block.count(b"\n", 0, exc.start)
        raise encoding_error(path, "utf-8", line, block[exc.start : exc.end]) from exc


@contextlib.contextmanager
def local_file(path: str, compression: str | None, encoding: str | None, suffix: str) -> Iterator[str]:
    """A plain file to parse: ``path`` itself, or a temp copy deleted on exit.

    ``encoding`` None means binary (Parquet): decompressed but never transcoded.
    The copy is complete before it is handed out, so damage is found before rows.
    """
    transcode = encoding is not None and not is_utf8(encoding)
    if compression is None and not transcode:
        yield path
        return
    blocks = iter_decompressed(path, compression)
    if transcode:
        assert encoding is not None
        blocks = iter_utf8(blocks, encoding, path)
    directory = temp_dir()
    fd, tmp = tempfile.mkstemp(prefix="backfill-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, contextlib.closing(blocks):
            for block in blocks:
                _write(out, block, directory)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write(out: BinaryIO, block: bytes, directory: str) -> None:
    try:
        out.write(block)
    except OSError as exc:
        raise ConfigError(
            f"cannot write a temporary copy in {directory} ({exc}); free some space "
            f"or point {TMPDIR_ENV} to a larger disk"
        ) from exc


def check_reserved(names: Iterable[str], path: str) -> None:
    """Refuse input columns that would collide with the columns added to every row."""
    clashing = [column for column in names if column in (COL_FILE, COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW)]
    if clashing:
        raise SourceError(
            f"{path}: column {clashing[0]!r} is reserved for the row's source identity; "
            "rename it in the file, or leave it out of the columns read"
        )
