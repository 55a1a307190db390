"""Deliver while preparing: a database sink writes the import's first runs while the
rest are still read, mapped, checked and spilled.

An import prepares every row before it sends any (about 2.4 s of each million rows
on two cores, the database idle meanwhile). When the input is in time order (each
chunk starts where the one before ended: the usual case for exports and logs) the
runs already on disk are the start of the final order, so a sink can write them at
once. That is done only

- for a sink whose stored rows do not depend on the rows written before them
  (``early_delivery``: ClickHouse, where every event row carries its own session
  values; not PostgreSQL, whose session row comes from a session's first event);
- without exact visits (the visits crossing an hour are known once every row is read);
- up to the first block with identify rows: Umami reads session data ``FINAL`` from a
  ReplacingMergeTree, where the last insert wins, so those wait for the final order.

Until prepare ends the early run counts in a checkpoint and a rejects file of its own
(``early/`` in the state directory) and the import's checkpoint stays "preparing":
killed at any moment, the next run prepares again and the sink finds what the early
run stored (every block is checked against the database before it is written). When
prepare ends

- in order: the early run adopts the import's checkpoint and rejects file
  (:meth:`~backfill.sinks.blocks.BlockRun.adopt`) and carries on;
- out of order (a chunk starting before the one before it ended): the early run
  stops, its counts are dropped, and the import delivers in the merged order from
  the first row; what the early run stored is found there and not written again.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .checkpoint import Checkpoint
from .errors import SendError
from .ledger import Ledger
from .ordering import emit, numbered, run_blocks
from .rejects import RecordFile
from .sinks import Delivery, ProgressCallback, SendOutcome
from .sinks.blocks import BlockRun
from .visits import CrossingVisits

#: The early run's own checkpoint and rejects, inside the import's state directory.
STATE_FOLDER = "early"
#: Seconds to wait for the early run to stop after prepare failed or was interrupted
#: (it stops between two blocks; one insert in flight is safe to leave, as after a kill).
STOP_WAIT_S = 30.0


def may_have_written(state_dir: Path) -> bool:
    """Whether a run of this import began writing while preparing and never ended
    (killed): then rows may be stored though the import's checkpoint says none were."""
    return (state_dir / STATE_FOLDER).exists()


def suits(sink: Any, exact_visits: bool) -> bool:
    """Whether this import can be delivered while it is prepared."""
    return bool(getattr(sink, "early_delivery", False)) and not exact_visits


class RunFeed:
    """Spilled runs handed from prepare to the early run, while they come in time order."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._paths: list[str] = []
        self._closed = False
        self.in_order = True
        #: Every run was handed over (prepare ended in order and nothing cut the feed short).
        self.whole = False
        #: Why the feed stopped before the end, if it did.
        self.cut: str | None = None

    def add(self, path: str, in_order: bool) -> None:
        """A run is on disk (``RunSet.on_run``, on the preparing thread)."""
        with self._ready:
            self.in_order = self.in_order and in_order
            if self.in_order:
                self._paths.append(path)
            else:
                self.cut = self.cut or "out of order"
            self._ready.notify_all()

    def close(self) -> None:
        """Prepare ended: no more runs."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def blocks(self, stop: threading.Event) -> Iterator[pl.DataFrame]:
        """The runs' rows with the ``_seq`` positions :func:`~backfill.ordering.emit`
        gives them once prepare has ended in order."""
        return numbered(self._unnumbered(stop))

    def _unnumbered(self, stop: threading.Event) -> Iterator[pl.DataFrame]:
        taken = 0
        while (path := self._next(taken, stop)) is not None:
            taken += 1
            for block in run_blocks(path):
                if "type" in block.columns and (block["type"] == "identify").any():
                    self.cut = "identify rows"
                    return
                yield block

    def _next(self, taken: int, stop: threading.Event) -> str | None:
        with self._ready:
            while taken == len(self._paths) and self.in_order and not self._closed and not stop.is_set():
                self._ready.wait(0.2)
            if not self.in_order or stop.is_set():
                return None
            if taken < len(self._paths):
                return self._paths[taken]
            self.whole = True
            return None


@dataclass
class _Preparing:
    """What the early run knows of the import before prepare ends (``Delivery.prepared``)."""

    files: list[str]
    visits: CrossingVisits = field(default_factory=CrossingVisits.empty)


class EarlyDelivery:
    """A sink's run on its own thread, fed the runs prepare spills."""

    def __init__(self, sink: Any, run: BlockRun, folder: Path) -> None:
        self.sink = sink
        self.run = run
        self.folder = folder
        self.feed = RunFeed()
        self.stop = run.stop
        self.adopted = False
        self.rows_before_end = 0  # rows the early run had stored when prepare ended
        self.outcome: SendOutcome | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._deliver, name="early-delivery", daemon=True)

    @classmethod
    def start(
        cls,
        sink: Any,
        files: list[str],
        checkpoint: Checkpoint,
        state_dir: Path,
        rejects_format: str,
        in_doubt: RecordFile,
    ) -> EarlyDelivery:
        """Start the sink's run; it waits for the first run prepare spills."""
        folder = state_dir / STATE_FOLDER
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        own = Checkpoint.new(checkpoint.fingerprint, checkpoint.lanes)
        delivery = Delivery(
            prepared=_Preparing(files),
            checkpoint=own,
            checkpoint_path=folder / "checkpoint.json",
            rejects=RecordFile(folder / f"rejects.{rejects_format}", rejects_format),
            in_doubt=in_doubt,
            run_ledger=Ledger(),
            progress=None,
            stop=threading.Event(),
        )
        early = cls(sink, sink.run_for(delivery), folder)
        # One insert at a time while prepare runs beside it: the two share the machine's
        # cores and memory; all of them once prepare has ended (adopt).
        early.run.in_flight = 1
        early._thread.start()
        return early

    @property
    def run_ledger(self) -> Ledger:
        return self.run.ledger

    def _deliver(self) -> None:
        try:
            self.outcome = self.run.execute(self.feed.blocks(self.stop), whole=lambda: self.feed.whole)
        except BaseException as exc:  # looked at on the main thread (deliver_rest)
            self.error = exc

    def finish(
        self,
        ordered: bool,
        checkpoint: Checkpoint,
        path: Path,
        rejects: RecordFile,
        progress: ProgressCallback | None,
    ) -> None:
        """Prepare ended and ``checkpoint`` holds what it prepared: in order, the early run
        carries on in it; out of order, the early run stops and is forgotten. The import's
        checkpoint is saved either way (by the early run once adopted: never from here again)."""
        self.feed.close()
        if ordered and self.feed.in_order:
            self.rows_before_end = self.run.adopt(checkpoint, path, rejects, progress)
            self.adopted = True
            return
        self.abandon()
        checkpoint.save(path)

    def note(self) -> str:
        """What became of writing while preparing, for the summary."""
        if not self.adopted:
            return (
                "the input is not in time order (a chunk starts before the one before it ends): writing while "
                "preparing was dropped and every row written in time order; rows already stored were not written again"
            )
        stored = f"{self.rows_before_end:,} rows were stored when preparing ended"
        if self.feed.cut:
            return (
                f"writing while preparing stopped at the first block with identify rows ({stored}): Umami keeps "
                "the session data inserted last, so those rows wait for the whole input's time order"
            )
        return f"writing began while the input was prepared: {stored}"

    def abandon(self) -> None:
        """Stop the early run and drop what it counted (prepare failed, or came out of order)."""
        self.feed.close()
        self.stop.set()
        self._thread.join(timeout=STOP_WAIT_S)
        self.run.rejects.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def deliver_rest(self, delivery: Delivery, user_stop: threading.Event) -> SendOutcome:
        """Wait for the adopted early run; where it stopped short of the end (identify
        rows, a failed write) a run that carries on its counts writes the rest."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.2)
            if user_stop.is_set():
                self.stop.set()
        shutil.rmtree(self.folder, ignore_errors=True)
        outcome = self.outcome
        if outcome is not None and (outcome.completed or outcome.interrupted):
            return outcome
        if self.error is not None and not isinstance(self.error, SendError):
            raise self.error
        rest = self.sink.run_for(delivery)  # a failed write is tried again, and reported from there
        rest.carry_on(self.run)
        return rest.execute(emit(delivery.prepared.runs))
