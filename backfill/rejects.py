"""Append-only files of refused rows (rejects) and rows in doubt.

Each line says where the row came from (file, 1-based data row), which field
failed and why, so a user can fix the source or the mapping and re-run only
those rows. Writes are appended and their byte offset is recorded in the
checkpoint, so a resumed run truncates back to the last checkpoint and never
lists a row twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import polars as pl

#: Columns a frame handed to ``RecordFile.write_frame`` must have.
RECORD_COLUMNS: tuple[str, ...] = ("file", "row", "field", "reason", "values")
CSV_HEADER = b"file,row,field,reason,values\n"


class RecordFile:
    """An NDJSON (default) or CSV file of row records, opened for appending."""

    def __init__(self, path: str | os.PathLike[str], fmt: str = "ndjson") -> None:
        if fmt not in ("ndjson", "csv"):
            raise ValueError(f"unknown record format {fmt!r}")
        self.path = Path(path)
        self.format = fmt
        self.count = 0
        self._fh: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the run
            if self.format == "csv" and self._fh.tell() == 0:
                self._fh.write(CSV_HEADER)
        return self._fh

    def offset(self) -> int:
        """Bytes written so far (what the checkpoint records)."""
        if self._fh is not None:
            self._fh.flush()
            return self._fh.tell()
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Drop what a crashed run wrote after its last checkpoint."""
        self.close()
        if self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as fh:
                fh.truncate(offset)

    def write_frame(self, frame: pl.DataFrame) -> None:
        """Append rows of a frame with ``RECORD_COLUMNS`` (values is JSON text)."""
        if frame.height == 0:
            return
        fh = self._open()
        frame = frame.select(
            pl.col("file").cast(pl.String),
            pl.col("row").cast(pl.Int64),
            pl.col("field").cast(pl.String),
            pl.col("reason").cast(pl.String),
            pl.col("values").cast(pl.String),
        )
        if self.format == "csv":
            frame.write_csv(fh, include_header=False)
        else:
            lines = frame.select(
                pl.concat_str(
                    pl.lit("{"),
                    pl.struct("file", "row", "field", "reason")
                    .struct.json_encode()
                    .str.slice(1, None)
                    .str.strip_suffix("}"),
                    pl.lit(',"values":'),
                    pl.col("values").fill_null("null"),
                    pl.lit("}\n"),
                ).alias("line")
            )["line"]
            fh.write("".join(lines.to_list()).encode())
        self.count += frame.height

    def write_records(self, records: Sequence[dict[str, object]]) -> None:
        """Append a few records built in Python (server answers, in-doubt batches)."""
        if not records:
            return
        frame = pl.DataFrame(
            {
                "file": [r.get("file") for r in records],
                "row": [r.get("row") for r in records],
                "field": [r.get("field") for r in records],
                "reason": [r.get("reason") for r in records],
                "values": [_as_json(r.get("values")) for r in records],
            },
            schema={
                "file": pl.String,
                "row": pl.Int64,
                "field": pl.String,
                "reason": pl.String,
                "values": pl.String,
            },
        )
        self.write_frame(frame)

    def take_from(self, other: RecordFile) -> None:
        """Append the records another file of this format holds (a CSV header left out)."""
        other.close()
        if not other.path.exists() or other.path.stat().st_size == 0:
            return
        fh = self._open()
        with open(other.path, "rb") as source:
            if other.format == "csv" and source.read(len(CSV_HEADER)) != CSV_HEADER:
                source.seek(0)
            shutil.copyfileobj(source, fh)
        self.count += other.count

    def sync(self) -> int:
        """Flush to disk before the checkpoint that covers these lines is saved."""
        if self._fh is None:
            return self.offset()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            self._fh.close()
            self._fh = None


def _as_json(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value  # already JSON text (a payload as sent)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
