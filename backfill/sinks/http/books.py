"""A send run's bookkeeping: rows' fates into the ledgers and record files, lanes' positions
into the checkpoint, written with group commit so N requests in flight cost about one write."""

from __future__ import annotations

import time

import polars as pl

from ...checkpoint import write_atomically
from .doubt import EARLIER_IN_DOUBT, FRESH, filter_records
from .queues import Batch
from .state import RunState

#: An answered batch is saved at once when no checkpoint was written for this long;
#: otherwise the next request's save (which must precede it) covers it.
LAZY_SAVE_SECONDS = 0.05


class Bookkeeping(RunState):
    """Checkpoint updates and record keeping (see :class:`~.state.RunState`)."""

    def _mark_in_flight(self, batch: Batch) -> bool:
        """Record the batch as on the wire, durably, before it leaves; False once the run is closed."""
        with self.lock:
            if self.closed:
                return False
            self.cp.lane_inflight[batch.lane] = [batch.first_seq, batch.last_seq, batch.size]
            version = self._changed()
        began = time.perf_counter()
        self._durable(version)
        with self.lock:
            self.wait_seconds += time.perf_counter() - began
        return not self.closed

    def _clear_in_flight(self, batch: Batch) -> None:
        """Nothing of the batch was processed (a retry follows, or the run stops)."""
        with self.lock:
            if self.closed:
                return
            self.cp.lane_inflight[batch.lane] = None
            version = self._changed()
        self._save_if_stale(version)

    def _commit(
        self,
        batch: Batch,
        *,
        refused: dict[int, tuple[str | None, str]] | None = None,
        doubt_reason: str | None = None,
    ) -> None:
        """Write the batch's fates, advance its lane and save: one step under the lock."""
        rows = batch.rows
        earlier = rows["_origin"] == EARLIER_IN_DOUBT
        with self.lock:
            if self.closed:
                return
            self.resent += int((rows["_origin"] != FRESH).sum())
            self.in_doubt_in_a_row = self.in_doubt_in_a_row + 1 if doubt_reason else 0
            if doubt_reason is not None:
                # Rows already in doubt from an earlier run stay as they are (listed, counted).
                fresh = rows.filter(~earlier)
                if fresh.height:
                    self._record_in_doubt(batch.lane, fresh, doubt_reason)
                self.ledger.read += rows.height - fresh.height
                self.ledger.in_doubt += rows.height - fresh.height
            else:
                self._record_answered(rows, refused or {})
                self._resolve_earlier(rows.filter(earlier))
            self.cp.lane_acked[batch.lane] = max(self.cp.lane_acked[batch.lane], batch.last_seq)
            self.cp.lane_inflight[batch.lane] = None
            version = self._changed()
            self.recent.append((time.monotonic(), rows.height))
            snapshot = self._progress_snapshot()
        self._save_if_stale(version)
        if self.progress is not None and snapshot is not None:
            with self.progress_lock:
                self.progress(snapshot)

    def _record_answered(self, rows: pl.DataFrame, refused: dict[int, tuple[str | None, str]]) -> None:
        fresh_count = int((rows["_origin"] != EARLIER_IN_DOUBT).sum())
        self.ledger.read += rows.height
        self.total.read += fresh_count
        accepted = rows.height - len(refused)
        self.ledger.accepted += accepted
        self.total.accepted += accepted
        if not refused:
            return
        index = sorted(refused)
        picked = rows.select(pl.all().gather(index))
        files = self.files.gather(picked["_file"])
        records = [
            {
                "file": path,
                "row": row,
                "field": refused[i][0],
                "reason": refused[i][1],
                "values": js,
            }
            for i, path, row, js in zip(index, files, picked["_row"], picked["_json"], strict=True)
        ]
        self.rejects.write_records(records)
        by_reason: dict[str, list[str]] = {}
        for i, row, file_index in zip(index, picked["_row"], picked["_file"], strict=True):
            by_reason.setdefault(refused[i][1], []).append(f"{self.file_names[file_index]}:{row}")
        for reason, examples in by_reason.items():
            self.ledger.reject(reason, len(examples), examples)
            self.total.reject(reason, len(examples), examples)

    def _resolve_earlier(self, rows: pl.DataFrame) -> None:
        """Rows in doubt from an earlier run got an answer now: they leave the in-doubt list."""
        if rows.height == 0:
            return
        for rid, seq, file_index, row in zip(rows["_rid"], rows["_seq"], rows["_file"], rows["_row"], strict=True):
            self.tracked[rid].resolved.add(seq)
            self.doubt_keys.discard((file_index, row))
            self.resolved_keys.add((file_index, row))
        self.total.in_doubt -= rows.height
        self._refresh_ranges()

    def _record_in_doubt(self, lane: int, rows: pl.DataFrame, reason: str) -> None:
        """List rows whose fate is unknown, count them, and remember their range (lock held)."""
        paths = self.files.gather(rows["_file"])
        self.in_doubt.write_frame(
            pl.DataFrame(
                {
                    "file": paths,
                    "row": rows["_row"],
                    "field": pl.Series(values=[None] * rows.height, dtype=pl.String),
                    "reason": pl.Series(values=[reason] * rows.height, dtype=pl.String),
                    "values": rows["_json"],
                }
            )
        )
        self.doubt_keys.update(zip(rows["_file"], rows["_row"], strict=True))
        self.ledger.read += rows.height
        self.ledger.in_doubt += rows.height
        self.total.read += rows.height
        self.total.in_doubt += rows.height
        self.new_ranges.append(
            [lane, int(rows["_seq"].min()), int(rows["_seq"].max()), rows.height]  # type: ignore[arg-type]
        )
        self._refresh_ranges()

    def _refresh_ranges(self) -> None:
        ranges = [piece for r in self.tracked for piece in r.pieces()]
        self.cp.in_doubt_ranges = ranges + self.new_ranges

    def _clear_leftover_inflight(self) -> None:
        """After a full pass nothing is on the wire: clear entries whose rows never came."""
        for lane, entry in enumerate(self.cp.lane_inflight):
            if entry is not None:
                self.cp.lane_acked[lane] = max(self.cp.lane_acked[lane], entry[1])
                self.cp.lane_inflight[lane] = None

    def _sync_records(self) -> None:
        """Record files reach the disk before the checkpoint that covers them (lock held).

        Only a file written since the last save is fsynced: most batches write none.
        """
        if self.rejects.count != self.synced_counts[0]:
            self.cp.rejects_offset = self.rejects.sync()
        if self.in_doubt.count != self.synced_counts[1]:
            self.cp.in_doubt_offset = self.in_doubt.sync()
        self.synced_counts = (self.rejects.count, self.in_doubt.count)

    def _save(self) -> None:
        """Write the checkpoint now (lock held): at the start and the end of the run."""
        began = time.perf_counter()
        self._sync_records()
        self.cp.save(self.cp_path)
        self._saved(began, self.change_version)

    def _saved(self, began: float, version: int) -> None:
        self.save_seconds += time.perf_counter() - began
        self.saves += 1
        self.saved_version = max(self.saved_version, version)
        self.saved_at = time.monotonic()

    def _changed(self) -> int:
        """Number a change of the checkpoint state (lock held)."""
        self.change_version += 1
        return self.change_version

    def _durable(self, version: int) -> None:
        """Return once a checkpoint holding change ``version`` is on disk (lock NOT held).

        Group commit: the thread holding ``save_lock`` snapshots the newest state
        under the lock and writes it outside, so the workers waiting behind it
        find their change saved already: N requests in flight cost about one
        write, not N, and no worker waits on another's fsync under the lock.
        """
        with self.save_lock:
            if self.saved_version >= version:
                return
            began = time.perf_counter()
            with self.lock:
                if self.closed:
                    return
                self._sync_records()
                snapshot = self.cp.to_bytes()
                upto = self.change_version
            write_atomically(self.cp_path, snapshot)
            with self.lock:
                self._saved(began, upto)

    def _save_if_stale(self, version: int) -> None:
        """After an answer: save unless a save is due anyway (the next request saves first).

        If the process dies before that, the answered batch is still marked as on
        the wire and is listed in doubt: conservative, never a duplicate. Waiting
        at most ``LAZY_SAVE_SECONDS`` keeps that window short.
        """
        if time.monotonic() - self.saved_at >= LAZY_SAVE_SECONDS:
            self._durable(version)

    def _compact_in_doubt(
        self, *, keep: set[tuple[int, int]] | None = None, drop: set[tuple[int, int]] | None = None
    ) -> None:
        """Rewrite the in-doubt file so it lists exactly the rows still in doubt.

        Rows resent with ``resend_in_doubt`` have an answer now and leave the
        list; ``keep`` (after a full pass) also drops any line the checkpoint
        no longer counts, so the file and the ledger agree.
        """
        self.in_doubt.close()
        path = self.in_doubt.path
        if not path.exists() or path.stat().st_size == 0:
            return
        names = {name: i for i, name in enumerate(self.files.to_list())}

        def wanted(file: str, row: str | int) -> bool:
            key = (names.get(file, -1), int(row))
            return key in keep if keep is not None else key not in (drop or set())

        original = path.read_bytes()
        kept = filter_records(original, self.in_doubt.format, wanted)
        if kept != original:
            write_atomically(path, kept)
            self.cp.in_doubt_offset = len(kept)
