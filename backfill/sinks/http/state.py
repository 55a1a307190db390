"""The state one send run shares between its reader, its workers and its bookkeeping."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl

from ...checkpoint import Checkpoint
from ...errors import ConfigError
from ...ledger import Ledger
from ...rejects import RecordFile
from ...throttle import AdaptiveConcurrency, RateLimiter
from ...visits import CrossingVisits
from ..outcome import ProgressCallback
from .doubt import DoubtRange, KilledInFlight
from .queues import BodyLimit, LaneQueues
from .settings import SendSettings


class RunState:
    """Everything one call of :func:`~backfill.sinks.http.run.send_stream` shares.

    The run is split by concern into :class:`~.stream.StreamReading` (the caller's
    thread: classify and queue rows), :class:`~.delivery.Delivering` (the worker
    threads: send and settle batches) and :class:`~.books.Bookkeeping` (the
    checkpoint, ledgers and record files, under ``lock``); they share this state.
    """

    def __init__(
        self,
        files: list[str],
        settings: SendSettings,
        checkpoint: Checkpoint,
        checkpoint_path: Path,
        rejects: RecordFile,
        in_doubt: RecordFile,
        ledger: Ledger,
        progress: ProgressCallback | None,
        stop: threading.Event,
        crossing: CrossingVisits,
        settle: dict[tuple[int, int], bool] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        if checkpoint.lanes != settings.lanes:
            raise ConfigError(
                f"the checkpoint was made with {checkpoint.lanes} lanes, this run uses"
                f" {settings.lanes}: use --restart or the same settings"
            )
        self.files = pl.Series("file", files, dtype=pl.String)
        self.file_names = [os.path.basename(f) for f in files]
        self.settings = settings
        self.cp = checkpoint
        #: ``batch`` or ``send``: forced by ``--endpoint``, else the one the import chose before,
        #: else ``batch``, which ``auto`` may leave for ``send`` once (see :mod:`.delivery`).
        self.endpoint = settings.endpoint if settings.endpoint != "auto" else checkpoint.endpoint or "batch"
        self.may_switch = (
            settings.endpoint == "auto"
            and checkpoint.endpoint is None
            and all(acked < 0 for acked in checkpoint.lane_acked)  # nothing of the import was answered
        )
        self.announce = announce or (lambda _message: None)
        self.notes: list[str] = []
        if self.endpoint == "send":
            why = "--endpoint send" if settings.endpoint == "send" else "the server had no /api/batch when it started"
            self.notes.append(f"sent through /api/send, one row per request ({why})")
        self.cp_path = checkpoint_path
        self.rejects = rejects
        self.in_doubt = in_doubt
        self.ledger = ledger
        self.total = checkpoint.send_ledger
        self.progress = progress
        self.stop = stop
        self.halt = threading.Event()  # stop requested or a fatal error: take no new batch
        self.lock = threading.Lock()  # checkpoint, ledgers, record files
        self.closed = False  # set once the run has returned: late answers change nothing
        # The first batch goes alone: a wrong website, a proxy refusal or a bot User-Agent
        # then costs one request, not one per slot.
        self.probe_taken = False
        self.probe_done = threading.Event()
        self.error: BaseException | None = None
        self.crossing = crossing
        #: (file, row) of rows in doubt -> whether reading Umami back found them stored
        #: (see :mod:`.readback`): found ones are settled as accepted, the others sent again.
        self.settle = settle or {}
        self.visits_opened = 0  # lone first events of visits that cross a clock hour
        self.started = time.monotonic()
        # Positions as they were when the run started decide what the stream's rows are.
        self.start_acked = pl.Series(checkpoint.lane_acked, dtype=pl.Int64)
        self.tracked = [DoubtRange(*r) for r in checkpoint.in_doubt_ranges]
        self.new_ranges: list[list[int]] = []
        self.killed = {
            lane: KilledInFlight(lane, *entry)
            for lane, entry in enumerate(checkpoint.lane_inflight)
            if entry is not None
        }
        self.doubt_keys: set[tuple[int, int]] = set()  # (file, row) of rows in doubt now
        self.resolved_keys: set[tuple[int, int]] = set()  # earlier in doubt, resolved now
        # Counters and measurements.
        self.rows_seen = 0
        self.rows_skipped = 0
        self.recorded_on_resume = 0
        self.resent = 0
        self.requests = 0
        self.saves = 0
        self.save_seconds = 0.0
        # Group commit: changes are numbered; one thread at a time writes the newest state.
        self.save_lock = threading.Lock()  # taken before self.lock, never while holding it
        self.change_version = 0
        self.saved_version = 0
        self.saved_at = time.monotonic()
        self.wait_seconds = 0.0  # workers blocked on a checkpoint write before their request
        self.request_seconds = 0.0  # workers on the wire
        self.last_latency: float | None = None
        self.recent: deque[tuple[float, int]] = deque()
        self.progress_lock = threading.Lock()
        self.synced_counts = (rejects.count, in_doubt.count)
        self.in_doubt_in_a_row = 0
        self.body_limit = BodyLimit(settings.max_body_bytes)
        bound = max(20 * settings.batch_size * settings.workers, 2 * settings.lanes * settings.batch_size)
        self.queues = LaneQueues(settings.lanes, 1 if self.endpoint == "send" else settings.batch_size, bound)
        self.rate = RateLimiter(settings.rate)
        self.concurrency: AdaptiveConcurrency
        self.client: httpx.Client

    @property
    def url(self) -> str:
        """Where requests go now (``/api/batch`` or ``/api/send``)."""
        return self.settings.url_for(self.endpoint)
