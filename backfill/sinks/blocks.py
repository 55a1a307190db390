"""What the database sinks share: blocks past the checkpoint, derived in a thread while the
previous block is written, each block counted, its rejects written and the checkpoint
moved only once the database holds it.

A sink subclasses :class:`BlockRun` with how it derives a block (:meth:`derive`) and
how it writes one (:meth:`write`, which calls :meth:`record` when the block is
stored); opening and closing its connection go in :meth:`open` / :meth:`close`.
A run that starts while the import is still being prepared (:mod:`backfill.early_delivery`)
counts in a checkpoint of its own until it :meth:`~BlockRun.adopt` s the import's.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..checkpoint import Checkpoint
from ..errors import ConfigError
from ..payload import elements_from_columns
from ..rejects import RecordFile
from ..schema import COL_FILE, COL_JSON, COL_ROW
from ..umami import ids
from ..umami.stored import Derivation, Refusal, positions
from . import Delivery
from .outcome import ProgressCallback, SendOutcome, SendProgress

SEQ = "_seq"
NO_SECRET_NOTE = (
    "note: no --app-secret (APP_SECRET): session ids use umami-backfill's own salt, so later API "
    "imports or live traffic with the same distinct ids start new sessions"
)
#: The first piece of a run is block_rows / RAMP rows; each next one twice as many, up to block_rows.
RAMP = 8
#: Bytes read from each end of an input to tell files apart in row ids (see file_key).
FILE_KEY_BYTES = 1 << 20


@dataclass(frozen=True)
class DatabaseSettings:
    """What every database sink needs to derive what Umami would store, and where it goes."""

    url: str
    website: str
    user_agent: str
    app_secret: str | None = None
    geoip_db: Path | None = None
    exact_visits: bool = False

    def __post_init__(self) -> None:
        from ..umami.api import website_id_problem

        problem = website_id_problem(self.website)
        if problem:
            raise ConfigError(problem)


class WriteAbandoned(Exception):
    """A block's write given up because an earlier block's failed (that one is reported)."""


class BlockRun:
    """One delivery into a database: the derivation, the counters and the checkpoint."""

    def __init__(self, delivery: Delivery, block_rows: int, how: Derivation, writers: int = 1) -> None:
        self.how = how
        #: Blocks written at once (each recorded only after every block before it);
        #: ``in_flight`` of them for now (an early run starts with one, see adopt).
        self.writers = writers
        self.in_flight = writers
        files = delivery.prepared.files
        self.files = files
        self.file_names = [os.path.basename(f) for f in files]
        self.cp = delivery.checkpoint
        self.cp_path = delivery.checkpoint_path
        self.rejects = delivery.rejects
        self.ledger = delivery.run_ledger
        self.progress = delivery.progress
        self.stop = delivery.stop
        self.block_rows = block_rows
        self.written: dict[str, int] = {}
        self.started = time.monotonic()
        self.commits = 0
        self.commit_s = 0.0
        self.skipped = 0
        #: Held while a block is recorded, so :meth:`adopt` moves the run between two blocks;
        #: a writer whose block is not next waits on it for its turn.
        self._recording = threading.Lock()
        self._turn = threading.Condition(self._recording)
        self._aborted = threading.Event()

    # ------------------------------------------------------------------ what a sink provides

    def open(self) -> None:
        """Connect (called before the first block)."""

    def close(self) -> None:
        """Disconnect (called after the last block, or on an error)."""

    def derive(self, block: pl.DataFrame) -> Any:
        raise NotImplementedError

    def write(self, block: pl.DataFrame, derived: Any) -> None:
        """Store one block, then :meth:`record` it."""
        raise NotImplementedError

    def failure(self, exc: Exception) -> Exception | None:
        """The error to raise for a database error (a SendError saying how to resume), else None."""
        return None

    # ------------------------------------------------------------------ the loop

    def execute(self, blocks: Iterator[pl.DataFrame], whole: Callable[[], bool] = lambda: True) -> SendOutcome:
        """Write every block past the checkpoint. ``whole()``, asked once the blocks ran
        out, says whether they were all of the import's rows (else the checkpoint is
        not marked complete: a later delivery writes the rest)."""
        # Rejects written after the last checkpoint belong to a block that will be replayed.
        self.rejects.truncate(self.cp.rejects_offset)
        self.open()
        derived = prefetch(self._derived(blocks), self.stop)
        try:
            interrupted = self._write_all(derived)
        except Exception as exc:
            translated = self.failure(exc)
            if translated is not None:
                raise translated from exc
            raise
        finally:
            derived.close()
            self.close()
        completed = not interrupted and whole()
        if completed:
            with self._recording:
                self.cp.phase = "complete"
                self.cp.save(self.cp_path)
        return SendOutcome(
            completed=completed,
            interrupted=interrupted,
            error=None,
            ledger=self.ledger,
            cumulative=self.cp.send_ledger,
            rows_seen=self.ledger.read,
            rows_skipped=self.skipped,
            requests=self.commits,
            elapsed_s=time.monotonic() - self.started,
            request_s=self.commit_s,
            notes=self.notes(),
        )

    def _write_all(self, derived: Iterator[tuple[pl.DataFrame, Any]]) -> bool:
        """Write the pieces, up to ``writers`` at once; whether a stop came before the end."""
        if self.writers == 1:
            for piece, values in derived:
                if self.stop.is_set():
                    return True
                self.write(piece, values)
            return self.stop.is_set()
        in_flight: deque[Future[None]] = deque()
        with ThreadPoolExecutor(self.writers, thread_name_prefix="write") as pool:
            try:
                for piece, values in derived:
                    if self.stop.is_set():
                        break
                    in_flight.append(pool.submit(self.write, piece, values))
                    while len(in_flight) >= self.in_flight:
                        in_flight.popleft().result()
                while in_flight:  # after a stop too: what is in flight is recorded
                    in_flight.popleft().result()
            except BaseException:
                self._aborted.set()  # writers waiting for their turn give up
                raise
        return self.stop.is_set()

    def _derived(self, blocks: Iterator[pl.DataFrame]) -> Iterator[tuple[pl.DataFrame, Any]]:
        """Pieces of ``block_rows`` past the checkpoint, each with what it becomes.

        The first pieces are smaller (an eighth, a quarter, a half of ``block_rows``):
        the database has nothing to write until the first piece is derived, so a small
        one sets both sides to work sooner."""
        committed = self.cp.lane_acked[0]
        pending: list[pl.DataFrame] = []
        held = 0
        size = max(1, self.block_rows // RAMP)
        for block in blocks:
            fresh = block.filter(pl.col(SEQ) > committed) if committed >= 0 else block
            self.skipped += block.height - fresh.height
            if fresh.height == 0:
                continue
            pending.append(fresh)
            held += fresh.height
            while held >= size:
                joined = pl.concat(pending, how="vertical", rechunk=False)
                piece, rest = joined.slice(0, size), joined.slice(size)
                yield piece, self.derive(piece)
                pending, held = ([rest] if rest.height else []), rest.height
                size = min(self.block_rows, size * 2)
        if held:
            piece = pl.concat(pending, how="vertical")
            yield piece, self.derive(piece)

    # ------------------------------------------------------------------ accounting

    def stored(self, table_counts: dict[str, int], began: float) -> None:
        """Count one successful write (its new rows per table and its time)."""
        with self._recording:
            self.commit_s += time.monotonic() - began
            self.commits += 1
            for table, count in table_counts.items():
                self.written[table] = self.written.get(table, 0) + count

    def record(self, block: pl.DataFrame, refused: list[Refusal]) -> None:
        """Count the block, write its rejects, then move the checkpoint past it: once
        every block before it is recorded (with several writers, blocks end out of order)."""
        with self._turn:
            self._wait_turn(block)
            self._record(block, refused)
            self._turn.notify_all()

    def wait_turn(self, block: pl.DataFrame) -> None:
        """Wait until every block before this one is recorded: for a write whose order
        matters (Umami's session data, where the last insert wins)."""
        with self._turn:
            self._wait_turn(block)

    def _wait_turn(self, block: pl.DataFrame) -> None:
        first = int(block[SEQ].min())  # type: ignore[arg-type]
        while self.cp.lane_acked[0] < first - 1:
            if self._aborted.is_set():
                raise WriteAbandoned("the write of an earlier block failed")
            self._turn.wait(0.2)

    def _record(self, block: pl.DataFrame, refused: list[Refusal]) -> None:
        self.ledger.read += block.height
        self.cp.send_ledger.read += block.height
        accepted = block.height - len(refused)
        self.ledger.accepted += accepted
        self.cp.send_ledger.accepted += accepted
        if refused:
            self._reject(block, refused)
        self.cp.lane_acked[0] = int(block[SEQ].max())  # type: ignore[arg-type]
        self.cp.rejects_offset = self.rejects.sync()
        self.cp.save(self.cp_path)
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.progress(
                SendProgress(
                    rows_done=self.ledger.read,
                    accepted=self.ledger.accepted,
                    rejected=self.ledger.rejected_total,
                    in_doubt=0,
                    rows_skipped=self.skipped,
                    events_per_second=self.ledger.read / elapsed,
                    concurrency=1,
                    last_latency=None,
                )
            )

    def adopt(self, checkpoint: Checkpoint, path: Path, rejects: RecordFile, progress: ProgressCallback | None) -> int:
        """Carry on in the import's own checkpoint and rejects file: what this run recorded
        so far (position, counts, rejects) moves there and is saved, and every later block
        is recorded there. Called from another thread, between two blocks; the rows
        recorded until then."""
        with self._recording:
            checkpoint.lane_acked = self.cp.lane_acked
            checkpoint.send_ledger = self.cp.send_ledger
            if self.cp.phase == "complete":
                checkpoint.phase = "complete"
            rejects.take_from(self.rejects)
            checkpoint.rejects_offset = rejects.sync()
            checkpoint.save(path)
            self.cp, self.cp_path, self.rejects, self.progress = checkpoint, path, rejects, progress
            self.in_flight = self.writers
            return self.ledger.read

    def carry_on(self, earlier: BlockRun) -> None:
        """Continue the counts of an earlier run of this delivery (an early run that
        stopped short of the end), so this run's outcome covers both."""
        self.started = earlier.started
        self.commits, self.commit_s = earlier.commits, earlier.commit_s
        self.written = earlier.written
        # The earlier run's rows are passed over again below: they are not "from an earlier import run".
        self.skipped = -earlier.ledger.read

    def _reject(self, block: pl.DataFrame, refused: list[Refusal]) -> None:
        where = {(int(f), int(r)): (field_name, reason) for f, r, field_name, reason in refused}
        picked = block.join(positions(refused), on=[COL_FILE, COL_ROW], how="semi", maintain_order="left")
        if COL_JSON not in picked.columns:  # spilled as columns: the element as the API would have had it
            picked = picked.with_columns(elements_from_columns(picked, self.how.website).alias(COL_JSON))
        records = []
        by_reason: dict[str, list[str]] = {}
        for file_index, row, element in picked.select(COL_FILE, COL_ROW, COL_JSON).iter_rows():
            field_name, reason = where[(file_index, row)]
            records.append(
                {"file": self.files[file_index], "row": row, "field": field_name, "reason": reason, "values": element}
            )
            by_reason.setdefault(reason, []).append(f"{self.file_names[file_index]}:{row}")
        self.rejects.write_records(records)
        for reason, examples in by_reason.items():
            self.ledger.reject(reason, len(examples), examples)
            self.cp.send_ledger.reject(reason, len(examples), examples)

    def notes(self) -> list[str]:
        if not self.written:
            return []
        rows = ", ".join(f"{table} {count:,}" for table, count in self.written.items() if count)
        return [f"new rows in the database this run: {rows or 'none (every row was there already)'}"]


def prefetch(items: Iterator[Any], stop: threading.Event) -> Generator[Any, None, None]:
    """Derive the next block in a thread while the database writes this one: the
    derivation is Python, the writing is the database's own process, so they overlap.

    The thread starts on a block only once the writer has taken the previous one, so
    at most two blocks are in memory: the one being written and the one being derived."""
    slot: queue.Queue[Any] = queue.Queue(maxsize=1)
    taken = threading.Semaphore(0)
    cancel = threading.Event()
    done = object()

    def hand_over(item: Any) -> bool:
        while not (cancel.is_set() or stop.is_set()):
            try:
                slot.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        while not (cancel.is_set() or stop.is_set()):
            if taken.acquire(timeout=0.2):
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(done)
        except BaseException as exc:  # handed to the consumer, raised there
            hand_over(exc)

    worker = threading.Thread(target=produce, name="derive", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = slot.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set() or not worker.is_alive():
                    return
                continue
            taken.release()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        worker.join(timeout=30)


def file_key(path: str) -> str:
    """A file's identity for row ids: its name, size and first and last MiB.

    Re-importing the same file (renamed folders, --restart, another state
    directory) gives the same ids, so nothing is stored twice; two different
    files never share ids unless they are identical.
    """
    digest = hashlib.blake2b(digest_size=16)
    target = Path(path)
    if target.is_dir():
        for child in sorted(target.rglob("*")):
            if child.is_file():
                digest.update(f"{child.relative_to(target)}\0{child.stat().st_size}\0".encode())
        return digest.hexdigest()
    size = target.stat().st_size
    digest.update(f"{size}\0".encode())
    with open(target, "rb") as fh:
        digest.update(fh.read(FILE_KEY_BYTES))
        if size > 2 * FILE_KEY_BYTES:
            fh.seek(size - FILE_KEY_BYTES)
            digest.update(fh.read(FILE_KEY_BYTES))
    return digest.hexdigest()


def derivation_for(settings: Any, delivery: Delivery, lookup: Any) -> Derivation:
    """How a database sink derives what Umami stores, from its settings and the prepared files."""
    return Derivation(
        website=settings.website,
        secret=ids.umami_secret(settings.app_secret),
        user_agent=settings.user_agent,
        file_keys=tuple(file_key(f) for f in delivery.prepared.files),
        detect=_detector(),
        geoip=lookup,
        exact_visits=settings.exact_visits,
        crossing=delivery.prepared.visits,
    )


def _detector() -> Callable[[str | None, str | None], tuple[str | None, str | None, str | None]]:
    from ..umami.detect import detect_client

    return detect_client
