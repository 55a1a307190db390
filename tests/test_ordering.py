"""Sorted runs and their merge: total (time, file, row) order, bounded blocks, same order every time."""

from __future__ import annotations

import random

import polars as pl

from backfill import ordering
from backfill.ordering import COL_SEQ, RunSet, emit
from backfill.schema import PREPARED_SCHEMA


def make_chunk(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_ts": [r[0] for r in rows],
            "_file": [r[1] for r in rows],
            "_row": [r[2] for r in rows],
            "_visitor": [f"v{r[2] % 7}" for r in rows],
            "_lane": [r[2] % 64 for r in rows],
            "_json": [f'{{"n":{r[2]}}}' for r in rows],
            "_geo": [""] * len(rows),
            "_vkey": [None] * len(rows),
        },
        schema=PREPARED_SCHEMA,
    )


def keys(frames: list[pl.DataFrame]) -> list[tuple[int, int, int]]:
    merged = pl.concat(frames)
    return list(
        zip(
            merged["_ts"].to_list(),
            merged["_file"].to_list(),
            merged["_row"].to_list(),
            strict=True,
        )
    )


def test_ordered_runs_are_read_back_in_sequence(tmp_path) -> None:
    runs = RunSet(tmp_path)
    runs.add(make_chunk([(10, 0, 1), (11, 0, 2)]))
    runs.add(make_chunk([(11, 0, 3), (12, 0, 4)]))
    assert runs.ordered
    out = list(emit(runs, block_rows=1))
    assert keys(out) == [(10, 0, 1), (11, 0, 2), (11, 0, 3), (12, 0, 4)]
    assert pl.concat(out)[COL_SEQ].to_list() == [0, 1, 2, 3]


def test_unordered_runs_are_merged_in_total_order(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ordering, "MAX_MERGE_FAN_IN", 3)  # force an intermediate merge level
    rng = random.Random(5)
    all_rows = []
    runs = RunSet(tmp_path)
    for chunk_index in range(8):
        rows = [(rng.randrange(0, 50), chunk_index % 2, chunk_index * 100 + i) for i in range(40)]
        all_rows.extend(rows)
        runs.add(make_chunk(rows))
    assert not runs.ordered
    first = list(emit(runs, block_rows=7))
    assert keys(first) == sorted(all_rows)
    assert pl.concat(first)[COL_SEQ].to_list() == list(range(len(all_rows)))
    assert max(f.height for f in first) <= 7 * 3  # bounded by fan-in x block
    assert keys(list(emit(runs, block_rows=5))) == keys(first)


def test_runset_round_trips_through_checkpoint_dict(tmp_path) -> None:
    runs = RunSet(tmp_path)
    runs.add(make_chunk([(1, 0, 1)]))
    again = RunSet.from_dict(runs.to_dict())
    assert again.paths == runs.paths and again.rows == 1 and again.missing() == []
