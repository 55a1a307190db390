"""Lane queues and batches: which rows may go in the next request, and how large it may be.

A lane has at most one request on the wire, so the rows of a lane reach Umami in
lane order; a batch is rows consecutive in its lane, all of one segment (see
:mod:`.grouping`), within the body limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from ...geo import request_headers
from .grouping import VISIT_SEGMENT

#: Cache tokens of source visits kept at once; a visit whose token was forgotten
#: starts again from its next event (Umami then counts it as two visits).
MAX_OPEN_VISITS = 100_000


@dataclass
class Batch:
    """Rows of one lane, consecutive in lane order, to be sent as one request."""

    lane: int
    rows: pl.DataFrame  # _seq, _file, _row, _json, _nbytes, _origin, _rid, _geo, _seg, _open
    too_large_reason: str | None = None  # set when one row alone exceeds the body cap
    #: Location and visit headers; every element of the request shares them.
    headers: dict[str, bytes] = field(default_factory=dict)
    #: The window of the stream the rows come from (see :class:`LaneQueues`).
    window: int = 0
    #: The source visit (its ``_seg``) whose first event is the batch's first row: its
    #: answer's cache token then keeps the rest of that visit in one Umami visit.
    opens_visit: str | None = None

    @property
    def size(self) -> int:
        return self.rows.height

    @property
    def first_seq(self) -> int:
        return int(self.rows["_seq"][0])

    @property
    def last_seq(self) -> int:
        return int(self.rows["_seq"][-1])

    def body(self) -> bytes:
        """``[`` + elements joined by ``,`` + ``]``: the prepared JSON is never re-encoded."""
        return ("[" + self.rows["_json"].str.join(",").item() + "]").encode("utf-8")

    def element(self) -> bytes:
        """The one row's element: an ``/api/send`` body."""
        return self.rows["_json"][0].encode("utf-8")

    def split_first(self) -> tuple[Batch, Batch]:
        """The first row alone (it keeps the batch's headers and the visit it opens), and the rest."""
        first = Batch(self.lane, self.rows.head(1), headers=self.headers, window=self.window)
        first.opens_visit = self.opens_visit
        return first, Batch(self.lane, self.rows.slice(1), headers=self.headers, window=self.window)

    def split(self) -> tuple[Batch, Batch]:
        half, lane, headers, window = self.size // 2, self.lane, self.headers, self.window
        return (
            Batch(lane, self.rows.head(half), headers=headers, window=window, opens_visit=self.opens_visit),
            Batch(lane, self.rows.slice(half), headers=headers, window=window),
        )


class BodyLimit:
    """How large a request body may be: the configured cap, tightened by any HTTP 413.

    Batches are formed to half the smallest body a 413 refused (the limit lies
    below it, and halving is what the refused batch went through), but a row is
    only rejected as too large when it alone is at least that refused size.
    """

    def __init__(self, configured: int) -> None:
        self.configured = configured
        self.refused: int | None = None
        self._lock = threading.Lock()

    def note_refused(self, size: int) -> None:
        with self._lock:
            self.refused = size if self.refused is None else min(self.refused, size)

    def target(self) -> int:
        """The cap batches are formed to."""
        refused = self.refused
        return self.configured if refused is None else min(self.configured, refused // 2)

    def too_large(self, body_size: int) -> str | None:
        """Why a single-element body of ``body_size`` bytes cannot be sent, or None."""
        refused = self.refused
        if body_size > self.configured:
            return f"larger than the body limit of {self.configured} bytes (--max-body-bytes)"
        if refused is not None and body_size >= refused:
            return f"larger than the server's body limit (HTTP 413 for {refused} bytes)"
        return None


class LaneQueues:
    """Per-lane FIFO queues of prepared rows, with the scheduling rule for workers.

    Rows come in windows (see :mod:`.grouping`). A worker takes the lane with
    the most queued rows among those with nothing in flight whose next rows
    belong to the oldest window not yet settled: a window's lanes are not the
    next one's, so a visitor's rows keep their order only if a window is settled
    before the next one starts. A partial batch goes out only once its window
    is sealed (wholly queued), the input is exhausted or the queues hold more
    than ``bound`` rows; the reader is blocked while they do, so memory stays flat.
    """

    def __init__(self, lanes: int, batch_size: int, bound: int) -> None:
        self._cond = threading.Condition()
        self._queues: list[deque[tuple[int, pl.DataFrame]]] = [deque() for _ in range(lanes)]
        self._counts = [0] * lanes
        self._busy = [False] * lanes
        self._in_flight: list[tuple[int, int]] = [(0, 0)] * lanes  # (window, rows) on the wire
        self._pending: dict[int, int] = {}  # window -> rows queued or on the wire
        self._sealed = -1  # windows up to this one are wholly queued
        self._total = 0
        self._batch_size = batch_size
        self.bound = bound
        self._exhausted = False
        self._tokens: OrderedDict[str, str] = OrderedDict()  # open source visits' cache tokens

    def set_batch_size(self, size: int) -> None:
        """Rows per request from now on (1 once the run sends through ``/api/send``)."""
        with self._cond:
            self._batch_size = size
            self._cond.notify_all()

    def set_token(self, visit: str, token: str) -> None:
        """Remember the cache token of a source visit's first event (bounded, oldest forgotten)."""
        with self._cond:
            self._tokens[visit] = token
            self._tokens.move_to_end(visit)
            while len(self._tokens) > MAX_OPEN_VISITS:
                self._tokens.popitem(last=False)

    def put(self, lane: int, rows: pl.DataFrame, window: int) -> None:
        """Queue a window's rows of one lane (the reader)."""
        if rows.height == 0:
            return
        with self._cond:
            self._queues[lane].append((window, rows))
            self._pending[window] = self._pending.get(window, 0) + rows.height
            self._count(lane, rows.height)

    def put_back(self, lane: int, rows: pl.DataFrame) -> None:
        """Return rows of the lane's batch on the wire to the head of the lane: not processed."""
        if rows.height == 0:
            return
        with self._cond:
            window, flying = self._in_flight[lane]
            self._in_flight[lane] = (window, flying - rows.height)
            self._queues[lane].appendleft((window, rows))
            self._count(lane, rows.height)

    def _count(self, lane: int, rows: int) -> None:
        self._counts[lane] += rows
        self._total += rows
        self._cond.notify_all()

    def seal(self, window: int) -> None:
        """Every row of ``window`` is queued: its lanes' last, partial batches may go."""
        with self._cond:
            self._sealed = max(self._sealed, window)
            self._cond.notify_all()

    def finish_input(self) -> None:
        with self._cond:
            self._exhausted = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_below_bound(self, halted: Callable[[], bool]) -> None:
        """Block the reader while the queues are over their memory bound."""
        with self._cond:
            while self._total > self.bound and not halted():
                self._cond.wait(0.1)

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._exhausted and self._total == 0 and not any(self._busy)

    def take(self, limit: BodyLimit, halted: Callable[[], bool]) -> Batch | None:
        """Wait for a batch to send; None once halted or when everything is sent."""
        with self._cond:
            while not halted():
                lane = self._pick_lane()
                if lane is not None:
                    self._busy[lane] = True
                    batch = self._form_batch(lane, limit)
                    self._in_flight[lane] = (batch.window, batch.size)
                    return batch
                if self._exhausted and self._total == 0 and not any(self._busy):
                    return None
                self._cond.wait(0.1)
            return None

    def done_with(self, lane: int) -> None:
        """The lane's request is finished (or given up): its next rows may go."""
        with self._cond:
            window, flying = self._in_flight[lane]
            self._in_flight[lane] = (0, 0)
            left = self._pending.get(window, 0) - flying
            if left > 0:
                self._pending[window] = left
            else:
                self._pending.pop(window, None)
            self._busy[lane] = False
            self._cond.notify_all()

    def _pick_lane(self) -> int | None:
        if not self._pending:
            return None
        current = min(self._pending)
        best, best_count = None, 0
        for lane, count in enumerate(self._counts):
            if count > best_count and not self._busy[lane] and self._queues[lane][0][0] == current:
                best, best_count = lane, count
        if best is None:
            return None
        if best_count >= self._batch_size or current <= self._sealed or self._exhausted or self._total > self.bound:
            return best
        return None

    def _form_batch(self, lane: int, limit: BodyLimit) -> Batch:
        """Up to batch_size rows from the head of the lane whose body stays within the limit,
        all of one segment (one location, or one source visit), with that segment's headers.

        A row that opens a crossing visit goes first in its request (the answer's
        cache token is the first element's) and so ends the batch before it.
        """
        window, first = self._queues[lane][0]
        segment, geo, opens = str(first["_seg"][0]), str(first["_geo"][0]), first["_open"][0]
        headers = request_headers(geo)
        if opens is not None and opens in self._tokens:
            # Opened in an earlier window already: this row continues the visit, alone.
            self._tokens.move_to_end(opens)
            return self._lone(lane, window, limit, {**headers, "x-umami-cache": self._tokens[opens].encode()})
        if segment.startswith(VISIT_SEGMENT):
            token = self._tokens.get(segment)
            if token is None:  # the visit's first event goes alone: its answer names the visit
                return self._lone(lane, window, limit, headers, opens_visit=segment)
            self._tokens.move_to_end(segment)
            # The location headers go along: Umami on PostgreSQL takes the session's location
            # from its first event, but Umami on ClickHouse stores each event's own request's.
            headers = {**headers, "x-umami-cache": token.encode()}
        parts: list[pl.DataFrame] = []
        rows_left = self._batch_size
        budget = limit.target() - 1  # "[" + "]" is 2 bytes, and n elements need n-1 commas
        queue = self._queues[lane]
        while rows_left and queue and queue[0][0] == window:
            head = queue[0][1]
            candidate = _segment_head(head, segment, rows_left, first=not parts)
            if candidate.height == 0:
                break
            cumulative = (candidate["_nbytes"].cast(pl.Int64) + 1).cum_sum()
            fit = int(cumulative.search_sorted(budget, side="right"))
            if fit == 0:
                if not parts:  # one row alone is over the target: alone, or not at all
                    return self._lone(lane, window, limit, headers)
                break
            parts.append(head.head(fit))
            self._pop_rows(lane, fit)
            budget -= int(cumulative[fit - 1])
            rows_left -= fit
            if fit < candidate.height or candidate.height < head.height:
                break
        rows = parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)
        return Batch(lane, rows, headers=headers, window=window, opens_visit=opens)

    def _lone(
        self, lane: int, window: int, limit: BodyLimit, headers: dict[str, bytes], opens_visit: str | None = None
    ) -> Batch:
        """The lane's next row alone (a visit's first event, or a row over the body target)."""
        row = self._queues[lane][0][1].head(1)
        self._pop_rows(lane, 1)
        reason = limit.too_large(int(row["_nbytes"][0]) + 2)
        return Batch(lane, row, too_large_reason=reason, headers=headers, window=window, opens_visit=opens_visit)

    def _pop_rows(self, lane: int, count: int) -> None:
        queue = self._queues[lane]
        window, head = queue[0]
        if count >= head.height:
            queue.popleft()
        else:
            queue[0] = (window, head.slice(count))
        self._counts[lane] -= count
        self._total -= count
        self._cond.notify_all()


def _segment_head(rows: pl.DataFrame, segment: str, limit: int, *, first: bool) -> pl.DataFrame:
    """The leading rows (at most ``limit``) that belong to ``segment``, up to the next opener
    (which may only lead the batch: ``first`` says the batch is still empty)."""
    head = rows.head(limit)
    stop = (head["_seg"] != segment) | head["_open"].is_not_null()
    if first:
        stop = stop.scatter(0, False)
    other = stop.arg_true()
    return head if other.len() == 0 else head.head(int(other[0]))
