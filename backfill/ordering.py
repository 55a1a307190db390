"""Put prepared rows in time order with bounded memory: sorted runs on disk, then a merge.

Umami fixes a session's browser, os, device, location and start time from the
FIRST event it sees, so each visitor's events must arrive in time order.
Each prepared chunk is sorted and spilled as one Parquet "run"; if the runs
already follow each other (time-ordered input, the common case) they are read
back one after another, otherwise a k-way merge reads them block by block.
The order is total, (time, file, row), so every run of the same inputs emits
the same sequence, which is what the checkpoint's positions refer to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from .schema import COL_FILE, COL_JSON, COL_ROW, COL_TS, PREPARED_COLUMNS_SCHEMA, PREPARED_SCHEMA

SORT_KEY = (COL_TS, COL_FILE, COL_ROW)
COL_SEQ = "_seq"
MERGE_BLOCK_ROWS = 20_000
MAX_MERGE_FAN_IN = 64

Key = tuple[int, int, int]


@dataclass
class RunSet:
    """The sorted runs of one prepare phase, and whether they are already in order."""

    directory: Path
    paths: list[str] = field(default_factory=list)
    rows: int = 0
    ordered: bool = True
    last_key: Key | None = None
    #: Told of each run once it is on disk, with whether every run so far follows the one
    #: before (a sink that takes runs while they are spilled: :mod:`backfill.early_delivery`).
    on_run: Callable[[str, bool], None] | None = field(default=None, repr=False, compare=False)

    def add(self, frame: pl.DataFrame) -> None:
        """Sort one chunk and spill it as a run (elements as JSON text, or as columns)."""
        if frame.height == 0:
            return
        schema = PREPARED_SCHEMA if COL_JSON in frame.columns else PREPARED_COLUMNS_SCHEMA
        frame = frame.select(list(schema)).sort(list(SORT_KEY))
        first = _key_at(frame, 0)
        if self.last_key is not None and first < self.last_key:
            self.ordered = False
        last = _key_at(frame, frame.height - 1)
        self.last_key = last if self.last_key is None else max(self.last_key, last)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"run-{len(self.paths):06d}.parquet"
        frame.write_parquet(path, compression="zstd", row_group_size=MERGE_BLOCK_ROWS)
        self.paths.append(str(path))
        self.rows += frame.height
        if self.on_run is not None:
            self.on_run(str(path), self.ordered)

    def to_dict(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "paths": self.paths,
            "rows": self.rows,
            "ordered": self.ordered,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunSet:
        runs = cls(Path(str(data["directory"])))
        runs.paths = [str(p) for p in data.get("paths", [])]  # type: ignore[union-attr]
        runs.rows = int(data.get("rows", 0))  # type: ignore[arg-type]
        runs.ordered = bool(data.get("ordered", True))
        return runs

    def missing(self) -> list[str]:
        return [p for p in self.paths if not Path(p).exists()]


def _key_at(frame: pl.DataFrame, index: int) -> Key:
    row = frame.row(index, named=True)
    return (int(row[COL_TS]), int(row[COL_FILE]), int(row[COL_ROW]))


def emit(runs: RunSet, block_rows: int = MERGE_BLOCK_ROWS) -> Iterator[pl.DataFrame]:
    """Prepared rows in (time, file, row) order with a ``_seq`` position, in bounded blocks."""
    return numbered(_ordered_blocks(runs, block_rows))


def numbered(blocks: Iterator[pl.DataFrame], seq: int = 0) -> Iterator[pl.DataFrame]:
    """Blocks with their rows' ``_seq`` position (from ``seq``): what a checkpoint counts in."""
    for block in blocks:
        if block.height == 0:
            continue
        yield block.with_columns(pl.int_range(seq, seq + block.height, dtype=pl.UInt64).alias(COL_SEQ))
        seq += block.height


def _ordered_blocks(runs: RunSet, block_rows: int) -> Iterator[pl.DataFrame]:
    if runs.ordered:
        for path in runs.paths:
            yield from run_blocks(path, block_rows)
        return
    paths = list(runs.paths)
    level = 0
    while len(paths) > MAX_MERGE_FAN_IN:
        paths = _merge_level(paths, runs.directory / f"merge-{level}", block_rows)
        level += 1
    yield from merge_sorted_runs(paths, block_rows)


def _merge_level(paths: list[str], directory: Path, block_rows: int) -> list[str]:
    """Merge groups of runs into longer runs so the final fan-in (and memory) stays bounded."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(0, len(paths), MAX_MERGE_FAN_IN):
        target = directory / f"run-{i // MAX_MERGE_FAN_IN:06d}.parquet"
        # Written block by block through one writer, never all in memory at once.
        _write_blocks(merge_sorted_runs(paths[i : i + MAX_MERGE_FAN_IN], block_rows), target)
        out.append(str(target))
    return out


def _write_blocks(blocks: Iterator[pl.DataFrame], target: Path) -> None:
    import pyarrow.parquet as pq

    writer = None
    try:
        for block in blocks:
            table = block.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(target), table.schema, compression="zstd")
            writer.write_table(table, row_group_size=MERGE_BLOCK_ROWS)
    finally:
        if writer is not None:
            writer.close()


def run_blocks(path: str, block_rows: int = MERGE_BLOCK_ROWS) -> Iterator[pl.DataFrame]:
    """One spilled run, read back in blocks of ``block_rows``."""
    lazy = pl.scan_parquet(path)
    total = lazy.select(pl.len()).collect().item()
    for offset in range(0, total, block_rows):
        yield lazy.slice(offset, block_rows).collect()


def merge_sorted_runs(paths: list[str], block_rows: int = MERGE_BLOCK_ROWS) -> Iterator[pl.DataFrame]:
    """k-way merge of sorted runs, vectorised: each step emits every row up to the
    smallest of the runs' buffered maxima, which no unread row can precede."""
    sources = [run_blocks(p, block_rows) for p in paths]
    buffers: list[pl.DataFrame | None] = [next(src, None) for src in sources]
    while True:
        live = [i for i, buf in enumerate(buffers) if buf is not None and buf.height > 0]
        if not live:
            return
        cutoff = min(_key_at(buffers[i], buffers[i].height - 1) for i in live)  # type: ignore[union-attr]
        taken = []
        for i in live:
            buf = buffers[i]
            assert buf is not None
            upto = _before_or_at(buf, cutoff)
            taken.append(buf.filter(upto))
            rest = buf.filter(~upto)
            buffers[i] = rest if rest.height > 0 else next(sources[i], None)
        yield pl.concat(taken).sort(list(SORT_KEY))


def _before_or_at(frame: pl.DataFrame, key: Key) -> pl.Series:
    ts, file, row = key
    c_ts, c_file, c_row = (pl.col(c) for c in SORT_KEY)
    expr = (c_ts < ts) | ((c_ts == ts) & ((c_file < file) | ((c_file == file) & (c_row <= row))))
    return frame.select(expr.alias("m")).to_series()
