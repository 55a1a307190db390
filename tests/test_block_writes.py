"""How a database sink's blocks are written and counted, whatever order writes end in.

- several blocks written at once are still recorded in order: the checkpoint never
  passes a block that is not stored, and a write that must follow the blocks before
  it (``wait_turn``) waits for them;
- a block that fails stops the run there: its error is the one reported, no later
  block is recorded, and nothing waits forever;
- writing while preparing (:mod:`backfill.early_delivery`): the early run's counts
  and rejects move into the import's checkpoint when prepare ends in order, and are
  dropped (the import's checkpoint untouched) when a run comes out of order.

The sink here stores blocks in a list; everything else (the block loop, the
checkpoint, the rejects file, the feed of runs) is the real code.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from backfill.checkpoint import Checkpoint
from backfill.early_delivery import EarlyDelivery
from backfill.ledger import Ledger
from backfill.ordering import numbered
from backfill.rejects import RecordFile
from backfill.sinks import Delivery
from backfill.sinks.blocks import BlockRun

ROWS = 100
BLOCK_ROWS = 8  # pieces of 1, 2, 4, then 8 rows


class ListSink(BlockRun):
    """Keeps what it is given; every other piece is slow, so the next one overtakes it."""

    def __init__(self, delivery: Delivery, writers: int, fail_piece: int | None = None, refuse_every: int = 0):
        super().__init__(delivery, BLOCK_ROWS, how=None, writers=writers)  # type: ignore[arg-type]
        self.events: list[tuple[str, int]] = []
        self.pieces = 0
        self.fail_piece = fail_piece
        self.refuse_every = refuse_every
        self.log_lock = threading.Lock()
        self.slow_s = 0.12

    def derive(self, block: pl.DataFrame) -> int:
        self.pieces += 1
        return self.pieces - 1  # the piece's index, in order

    def write(self, block: pl.DataFrame, index: int) -> None:
        time.sleep(self.slow_s if index % 2 == 0 else 0.0)
        if index == self.fail_piece:
            raise RuntimeError(f"piece {index} refused")
        with self.log_lock:
            self.events.append(("stored", index))
        self.wait_turn(block)
        with self.log_lock:
            self.events.append(("in turn", index))
        refused = []
        if self.refuse_every:
            refused = [
                (int(f), int(r), "name", "too long")
                for f, r in block.select("_file", "_row").iter_rows()
                if int(r) % self.refuse_every == 0
            ]
        self.record(block, refused)


def _delivery(tmp: Path, name: str = "run", prepared: Any = None) -> Delivery:
    checkpoint = Checkpoint.new({"test": True}, 1)
    return Delivery(
        prepared=prepared or SimpleNamespace(files=["events.csv"], visits=None),
        checkpoint=checkpoint,
        checkpoint_path=tmp / f"{name}-checkpoint.json",
        rejects=RecordFile(tmp / f"{name}-rejects.ndjson"),
        in_doubt=RecordFile(tmp / f"{name}-in-doubt.ndjson"),
        run_ledger=Ledger(),
        progress=None,
        stop=threading.Event(),
    )


def _rows(start: int, count: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_ts": list(range(start, start + count)),
            "_file": [0] * count,
            "_row": list(range(start + 1, start + count + 1)),
            "type": ["event"] * count,
            "_json": ['{"type":"event"}'] * count,
        },
        schema={"_ts": pl.Int64, "_file": pl.UInt32, "_row": pl.UInt64, "type": pl.String, "_json": pl.String},
    )


def _positions(run: ListSink) -> list[int]:
    """The checkpoint's position after each recorded block."""
    seen: list[int] = []
    run.progress = lambda _p: seen.append(run.cp.lane_acked[0])
    return seen


@pytest.mark.parametrize("writers", [1, 2, 3])
def test_blocks_written_at_once_are_recorded_in_order(tmp_path: Path, writers: int) -> None:
    run = ListSink(_delivery(tmp_path), writers)
    positions = _positions(run)
    outcome = run.execute(numbered(iter([_rows(0, ROWS)])))
    assert outcome.completed and run.ledger.read == run.ledger.accepted == ROWS
    assert positions == sorted(positions) and positions[-1] == ROWS - 1
    in_turn = [index for event, index in run.events if event == "in turn"]
    assert in_turn == list(range(run.pieces))
    stored = [index for event, index in run.events if event == "stored"]
    if writers > 1:  # the fast pieces were stored before the slow ones before them
        assert stored != sorted(stored)
    saved = json.loads((tmp_path / "run-checkpoint.json").read_text())
    assert saved["phase"] == "complete" and saved["lane_acked"] == [ROWS - 1]


def test_a_failed_block_stops_the_run_where_it_failed(tmp_path: Path) -> None:
    run = ListSink(_delivery(tmp_path), writers=2, fail_piece=4)  # piece 5 ends first and waits for 4
    positions = _positions(run)
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="piece 4 refused"):
        run.execute(numbered(iter([_rows(0, ROWS)])))
    assert time.monotonic() - began < 10
    before_failed = 1 + 2 + 4 + 8  # pieces 0..3
    assert run.cp.lane_acked[0] == before_failed - 1 == positions[-1]
    assert run.ledger.read == before_failed
    assert ("in turn", 5) not in run.events


def _spill(tmp: Path, name: str, frame: pl.DataFrame) -> str:
    path = tmp / f"{name}.parquet"
    frame.write_parquet(path)
    return str(path)


def _early(tmp: Path, refuse_every: int = 0) -> tuple[EarlyDelivery, Checkpoint]:
    """An early run of a ListSink, and the import's checkpoint (still "preparing")."""
    checkpoint = Checkpoint.new({"test": True}, 1)
    checkpoint.save(tmp / "checkpoint.json")
    sink = SimpleNamespace(run_for=lambda d: ListSink(d, writers=2, refuse_every=refuse_every))
    early = EarlyDelivery.start(sink, ["events.csv"], checkpoint, tmp / "state", "ndjson", RecordFile(tmp / "doubt"))
    return early, checkpoint


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_early_run_carries_on_in_the_imports_checkpoint_when_prepare_ends_in_order(tmp_path: Path) -> None:
    early, checkpoint = _early(tmp_path, refuse_every=10)
    early.run.slow_s = 0.05
    early.feed.add(_spill(tmp_path, "run-0", _rows(0, 40)), True)
    # the first run's pieces stored and recorded before prepare ends (its last rows wait to fill a piece)
    _wait_for(lambda: early.run.ledger.read >= 32)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["phase"] == "preparing"
    assert early.run.in_flight == 1  # one insert at a time while the input is still read
    early.feed.add(_spill(tmp_path, "run-1", _rows(40, 60)), True)
    rejects = RecordFile(tmp_path / "rejects.ndjson")
    rejects.write_records([{"file": "events.csv", "row": 999, "field": "url", "reason": "prepare's own"}])
    checkpoint.phase = "sending"
    early.finish(True, checkpoint, tmp_path / "checkpoint.json", rejects, None)
    assert early.adopted and early.rows_before_end >= 32 and early.run.in_flight == early.run.writers == 2
    prepared = SimpleNamespace(files=["events.csv"], visits=None, runs=None)
    outcome = early.deliver_rest(_delivery(tmp_path, "unused", prepared), threading.Event())
    rejects.close()
    assert outcome.completed and early.run_ledger.read == ROWS and early.run_ledger.rejected_total == 10
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["phase"] == "complete" and saved["lane_acked"] == [ROWS - 1]
    lines = [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert [line["row"] for line in lines] == [999, *range(10, ROWS + 1, 10)]  # prepare's, then each refusal once
    assert saved["rejects_offset"] == (tmp_path / "rejects.ndjson").stat().st_size
    assert not (tmp_path / "state" / "early").exists()
    assert "writing began while the input was prepared" in early.note()


def test_the_early_run_is_dropped_when_a_run_comes_out_of_order(tmp_path: Path) -> None:
    early, checkpoint = _early(tmp_path, refuse_every=10)
    early.feed.add(_spill(tmp_path, "run-0", _rows(50, 50)), True)
    _wait_for(lambda: early.run.ledger.read >= 32)
    early.feed.add(_spill(tmp_path, "run-1", _rows(0, 50)), False)  # starts before run-0 ended
    rejects = RecordFile(tmp_path / "rejects.ndjson")
    checkpoint.phase = "sending"
    early.finish(False, checkpoint, tmp_path / "checkpoint.json", rejects, None)
    rejects.close()
    assert not early.adopted and 32 <= early.run.ledger.read <= 50  # the second run was never written early
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["phase"] == "sending" and saved["lane_acked"] == [-1] and saved["send_ledger"]["read"] == 0
    assert not (tmp_path / "rejects.ndjson").exists() or not (tmp_path / "rejects.ndjson").read_text()
    assert not (tmp_path / "state" / "early").exists()
    assert "not in time order" in early.note()


def test_the_early_run_stops_before_identify_rows(tmp_path: Path) -> None:
    early, checkpoint = _early(tmp_path)
    with_identify = _rows(40, 60).with_columns(
        pl.when(pl.col("_ts") == 70).then(pl.lit("identify")).otherwise(pl.col("type")).alias("type")
    )
    early.feed.add(_spill(tmp_path, "run-0", _rows(0, 40)), True)
    early.feed.add(_spill(tmp_path, "run-1", with_identify), True)
    _wait_for(lambda: early.feed.cut is not None and not early._thread.is_alive())
    rejects = RecordFile(tmp_path / "rejects.ndjson")
    checkpoint.phase = "sending"
    early.finish(True, checkpoint, tmp_path / "checkpoint.json", rejects, None)
    rejects.close()
    assert early.adopted
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["phase"] == "sending"  # the rest is still to write, in the import's own order
    assert saved["lane_acked"][0] < 70 and early.run.ledger.read == saved["lane_acked"][0] + 1
    assert "identify rows" in early.note()
