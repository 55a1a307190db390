"""The HTTP send run: prepared rows to Umami's ``/api/batch`` (or ``/api/send``, one row per
request, where a server has no batch endpoint), nothing lost, nothing counted twice.

Umami's collection endpoints are not idempotent, and a batch cut off midway may
have stored any prefix of its elements. So:

* rows are split into *lanes* (a stable hash of the visitor); each lane has at
  most one request on the wire, which keeps every visitor's events in time
  order even with several requests in flight;
* before a request leaves, the checkpoint records it as in flight (fsync);
  after the answer, its rows' fates are written and the lane's position
  advances (fsync). A killed process therefore leaves an exact list of the
  batches whose fate is unknown;
* a request whose fate is unknown (read timeout, reset after the body was
  sent, 500/504) is never resent automatically: its rows are listed in the
  in-doubt file and counted as such, unless the user asks for
  ``resend_in_doubt`` (risking duplicates instead of gaps);
* only faults where Umami provably processed nothing (connection refused,
  429, 502, 503, 413) are retried.

Threads: the caller's thread reads the frames and fills per-lane queues
(:mod:`.stream`); a pool of workers forms batches and sends them
(:mod:`.delivery`). One lock guards the checkpoint, the ledgers and the record
files (:mod:`.books`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from ...checkpoint import Checkpoint, utc_now
from ...ledger import Ledger
from ...rejects import RecordFile
from ...throttle import WINDOW_BATCHES, WINDOW_ONE_PER_REQUEST, AdaptiveConcurrency
from ...visits import CrossingVisits
from ..outcome import ProgressCallback, SendOutcome, SendProgress
from .books import Bookkeeping
from .delivery import Delivering
from .settings import SendSettings, make_client
from .stream import StreamReading

#: Extra time given to requests still on the wire after a stop, beyond the request timeout.
STOP_GRACE_SECONDS = 5.0
#: Window over which the progress callback's events/s is measured.
PROGRESS_WINDOW_SECONDS = 10.0


def send_stream(
    frames: Iterable[pl.DataFrame],
    files: list[str],
    settings: SendSettings,
    checkpoint: Checkpoint,
    checkpoint_path: str | os.PathLike[str],
    rejects: RecordFile,
    in_doubt: RecordFile,
    ledger: Ledger,
    progress: ProgressCallback | None,
    stop: threading.Event,
    *,
    transport: httpx.BaseTransport | None = None,
    concurrency: AdaptiveConcurrency | None = None,
    crossing: CrossingVisits | None = None,
    settle: dict[tuple[int, int], bool] | None = None,
    announce: Callable[[str], None] | None = None,
) -> SendOutcome:
    """Send the prepared rows; resume from ``checkpoint``; return (or raise) when done.

    ``frames`` must be the same deterministic stream on every run (all rows,
    including those sent before: they are skipped here). ``ledger`` receives
    this run's counts; the checkpoint's ``send_ledger`` is the cumulative one.

    On the first send run (checkpoint phase ``preparing``) the record files'
    current sizes are adopted as the covered offsets; on a resume they are
    truncated back to the checkpoint's offsets.

    ``progress`` is called from the worker threads, one call at a time, after
    each finished batch. ``stop`` ends the run cleanly: no new batch is taken,
    requests on the wire get ``timeout`` + 5 s to answer, the checkpoint is
    saved and the outcome says ``interrupted``.

    Rows carry their request's location (``_geo``) and visit (``_vkey``);
    ``crossing`` names the source visits that cross a clock hour, which are
    kept whole with Umami's cache token (see :func:`regroup`).

    ``settings.endpoint`` picks ``/api/batch`` or ``/api/send`` (one row per
    request, the same lanes, checkpoint and guarantees); with ``auto`` a server
    that answers the first request as one without a batch endpoint is sent to
    through ``/api/send`` for the whole import, and ``announce`` says so once.

    Raises:
        TerminalSendError: Umami refused the run as a whole (website, credentials, bot filter).
        TransientSendError: retries ran out with ``on_error="stop"``.
        Either carries the run's SendOutcome as ``.outcome``; the checkpoint is saved first.
    """
    run = SendRun(
        files,
        settings,
        checkpoint,
        Path(checkpoint_path),
        rejects,
        in_doubt,
        ledger,
        progress,
        stop,
        crossing or CrossingVisits.empty(),
        settle,
        announce,
    )
    return run.execute(iter(frames), transport, concurrency)


class SendRun(StreamReading, Delivering, Bookkeeping):
    """One call of :func:`send_stream`: the reader, the worker pool and their shared state."""

    # ------------------------------------------------------------------ orchestration

    def execute(
        self,
        frames: Iterator[pl.DataFrame],
        transport: httpx.BaseTransport | None,
        concurrency: AdaptiveConcurrency | None,
    ) -> SendOutcome:
        self.concurrency = concurrency or AdaptiveConcurrency(
            fixed=self.settings.concurrency,
            maximum=self.settings.most_in_flight(self.endpoint),
            window=WINDOW_ONE_PER_REQUEST if self.endpoint == "send" else WINDOW_BATCHES,
        )
        self._open_files()
        self.client = make_client(self.settings, transport)
        workers = [
            threading.Thread(target=self._worker, name=f"umami-send-{i}", daemon=True)
            for i in range(self.settings.workers)
        ]
        exhausted = False
        try:
            for worker in workers:
                worker.start()
            exhausted = self._read(frames)
            if exhausted:
                self._finalize_killed(upto=None)
                self.queues.finish_input()
        except BaseException as exc:
            self._abort(exc)
        finally:
            self._wait_for(workers)
        try:
            return self._conclude(exhausted)
        finally:
            self.client.close()

    def _halted(self) -> bool:
        if self.stop.is_set() and not self.halt.is_set():
            self.halt.set()
            self.queues.wake()
        return self.halt.is_set()

    def _abort(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.halt.set()
        self.queues.wake()

    def _wait_for(self, workers: list[threading.Thread]) -> None:
        """Let workers drain; after a stop, give in-flight requests a bounded time to answer."""
        deadline: float | None = None
        while any(w.is_alive() for w in workers):
            if deadline is None and self._halted():
                deadline = time.monotonic() + self.settings.timeout + STOP_GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                self.notes.append(
                    "some requests were still unanswered when the run stopped: they stay in"
                    " flight in the checkpoint and are recorded as in doubt on resume"
                )
                break
            for worker in workers:
                worker.join(0.05)

    def _open_files(self) -> None:
        """Make the record files agree with the checkpoint before anything is written."""
        with self.lock:
            if self.cp.phase == "preparing":
                # Nothing of the send phase was written yet: what the files hold
                # (client-side rejects of the prepare stage) is covered as it is.
                self.cp.rejects_offset = self.rejects.offset()
                self.cp.in_doubt_offset = self.in_doubt.offset()
            else:
                self.rejects.truncate(self.cp.rejects_offset)
                self.in_doubt.truncate(self.cp.in_doubt_offset)
            self.cp.phase = "sending"
            self._save()

    def _conclude(self, exhausted: bool) -> SendOutcome:
        with self.save_lock, self.lock:  # no older snapshot may land after the final one
            self.closed = True
            completed = exhausted and self.error is None and self.queues.drained
            if completed:
                self._clear_leftover_inflight()
                self._compact_in_doubt(keep=self.doubt_keys)
                self.cp.phase = "complete"
            elif self.resolved_keys:
                self._compact_in_doubt(drop=self.resolved_keys)
            interrupted = not completed and self.error is None
            error = None if self.error is None else str(self.error)
            self._add_notes()
            self.cp.add_run(self._run_summary(completed, interrupted, error))
            self._save()
            outcome = SendOutcome(
                completed=completed,
                interrupted=interrupted,
                error=error,
                ledger=self.ledger,
                cumulative=self.total,
                rows_seen=self.rows_seen,
                rows_skipped=self.rows_skipped,
                in_doubt_recorded_on_resume=self.recorded_on_resume,
                in_doubt_resent=self.resent,
                requests=self.requests,
                elapsed_s=time.monotonic() - self.started,
                checkpoint_saves=self.saves,
                checkpoint_save_s=self.save_seconds,
                visit_first_requests=self.visits_opened,
                checkpoint_wait_s=self.wait_seconds,
                request_s=self.request_seconds,
                notes=list(self.notes),
            )
        for handle in (self.rejects, self.in_doubt):
            handle.sync()
        if self.error is not None:
            self.error.outcome = outcome  # type: ignore[attr-defined]
            raise self.error
        return outcome

    def _add_notes(self) -> None:
        if self.visits_opened:
            self.notes.append(
                f"{self.visits_opened:,} source visits crossed a clock hour: each was kept one Umami"
                " visit: its first event led a request, the rest went with its cache token in one of its own"
            )
        if self.resent and not self.settle:  # a settling pass's own note is the sink's (see HttpSink)
            self.notes.append(
                f"{self.resent} rows whose fate was unknown were sent again (--resend-in-doubt):"
                " those Umami had already stored are now stored twice"
            )
        elif self.total.in_doubt:
            self.notes.append(
                f"{self.total.in_doubt} rows are in doubt (listed in {self.in_doubt.path}):"
                " Umami may have stored all, some or none of them. Not resending them risks"
                " gaps; --resend-in-doubt resends them and risks duplicates"
            )

    def _run_summary(self, completed: bool, interrupted: bool, error: str | None) -> dict[str, Any]:
        return {
            "stage": "send",
            "ended_at": utc_now(),
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "outcome": "complete" if completed else "interrupted" if interrupted else "error",
            "error": error,
            "accepted": self.ledger.accepted,
            "rejected": self.ledger.rejected_total,
            "in_doubt": self.ledger.in_doubt,
            "in_doubt_resent": self.resent,
            "requests": self.requests,
        }

    def _progress_snapshot(self) -> SendProgress | None:
        if self.progress is None:
            return None
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - PROGRESS_WINDOW_SECONDS:
            self.recent.popleft()
        span = min(PROGRESS_WINDOW_SECONDS, max(now - self.started, 1e-6))
        return SendProgress(
            rows_done=self.ledger.read,
            accepted=self.ledger.accepted,
            rejected=self.ledger.rejected_total,
            in_doubt=self.ledger.in_doubt,
            rows_skipped=self.rows_skipped,
            events_per_second=sum(n for _, n in self.recent) / span,
            concurrency=self.concurrency.limit,
            last_latency=self.last_latency,
        )
