"""Cheap looks at the start of a file, for the format plugins' ``sniff``.

``backfill inspect`` asks every plugin whether a path is its export before it
describes the file generically. A sniff reads at most :data:`SNIFF_BYTES` of
the (decompressed) file, or a Parquet footer, and never raises: a file it
cannot read is simply not recognised (the readers name the problem later).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from backfill.sources.compression import GZIP_MAGIC, UTF8_BOM, ZSTD_MAGIC, peek

#: Bytes read from the start of a file: enough for a header or a first JSON line.
SNIFF_BYTES = 64 * 1024
PARQUET_MAGIC = b"PAR1"
AVRO_MAGIC = b"Obj\x01"


def raw_head(path: str, size: int = 8) -> bytes:
    """The first ``size`` bytes on disk (b"" for a folder or an unreadable file)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def text_head(path: str, size: int = SNIFF_BYTES) -> str:
    """The first ``size`` bytes, decompressed (gzip, zstd) and decoded (UTF-8 or UTF-16 with a BOM),
    cut at the last complete line; "" when the file is not text."""
    if not os.path.isfile(path):
        return ""
    magic = raw_head(path, 4)
    compression = "gzip" if magic.startswith(GZIP_MAGIC) else "zstd" if magic.startswith(ZSTD_MAGIC) else None
    try:
        data, whole = peek(path, compression, size)
    except Exception:  # a damaged archive: not recognised here, the reader says why
        return ""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data[: len(data) & ~1].decode("utf-16", "replace")
    elif data.startswith((PARQUET_MAGIC, AVRO_MAGIC)) or data[:1024].count(0) > 100:
        return ""  # binary (a few NULs are text: ClickHouse writes empty FixedStrings as NULs)
    else:
        text = data.removeprefix(UTF8_BOM).decode("utf-8", "replace")
    return text if whole else text[: text.rfind("\n") + 1]


def first_json_object(path: str) -> dict[str, object] | None:
    """The first non-blank line as a JSON object (NDJSON exports), or None."""
    for line in text_head(path).splitlines():
        if line.strip():
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def csv_header(path: str) -> list[str]:
    """The first non-blank line split on its most frequent delimiter, quotes removed."""
    for line in text_head(path).splitlines():
        if line.strip():
            delimiter = max((",", ";", "\t"), key=line.count)
            return [field.strip().strip('"').strip() for field in line.split(delimiter)]
    return []


def parquet_columns(path: str) -> list[str]:
    """Column names from a Parquet footer (no row is read); [] when it is not Parquet."""
    if raw_head(path, 4) != PARQUET_MAGIC:
        return []
    import polars as pl

    try:
        return list(pl.read_parquet_schema(path))
    except Exception:  # a damaged footer: not recognised here, the reader says why
        return []


def has_columns(columns: object, required: tuple[str, ...]) -> bool:
    return all(name in columns for name in required)  # type: ignore[operator]


def any_file(path: str, check: Callable[[str], bool], limit: int = 20) -> bool:
    """``check`` on a file, or on the first ``limit`` files of a folder (sorted, hidden ones left out)."""
    if os.path.isfile(path):
        return check(path)
    if not os.path.isdir(path):
        return False
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    return any(check(os.path.join(path, name)) for name in names[:limit])
