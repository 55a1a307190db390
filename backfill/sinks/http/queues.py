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
    rows: pl.DataFrame  # _seq, _file, _row, _json, _nbytes, _origin, _rid, _geo, _seg
    too_large_reason: str | None = None  # set when one row alone exceeds the body cap
    #: Location and visit headers; every element of the request shares them.
    headers: dict[str, bytes] = field(default_factory=dict)
    #: The source visit (its ``_seg``) whose first event this lone row is: its answer's
    #: cache token then keeps the rest of that visit in one Umami visit.
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

    def split(self) -> tuple[Batch, Batch]:
        half = self.size // 2
        return (
            Batch(self.lane, self.rows.head(half), headers=self.headers),
            Batch(self.lane, self.rows.slice(half), headers=self.headers),
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

    A worker takes the lane with the most queued rows among those with nothing
    in flight. A partial batch goes out only when the input is exhausted or the
    queues hold more than ``bound`` rows (then the reader is blocked, so memory
    stays flat).
    """

    def __init__(self, lanes: int, batch_size: int, bound: int) -> None:
        self._cond = threading.Condition()
        self._queues: list[deque[pl.DataFrame]] = [deque() for _ in range(lanes)]
        self._counts = [0] * lanes
        self._busy = [False] * lanes
        self._total = 0
        self._batch_size = batch_size
        self.bound = bound
        self._exhausted = False
        self._tokens: OrderedDict[str, str] = OrderedDict()  # open source visits' cache tokens

    def set_token(self, visit: str, token: str) -> None:
        """Remember the cache token of a source visit's first event (bounded, oldest forgotten)."""
        with self._cond:
            self._tokens[visit] = token
            self._tokens.move_to_end(visit)
            while len(self._tokens) > MAX_OPEN_VISITS:
                self._tokens.popitem(last=False)

    def put(self, lane: int, rows: pl.DataFrame, *, front: bool = False) -> None:
        if rows.height == 0:
            return
        with self._cond:
            if front:
                self._queues[lane].appendleft(rows)
            else:
                self._queues[lane].append(rows)
            self._counts[lane] += rows.height
            self._total += rows.height
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
                    return self._form_batch(lane, limit)
                if self._exhausted and self._total == 0 and not any(self._busy):
                    return None
                self._cond.wait(0.1)
            return None

    def done_with(self, lane: int) -> None:
        """The lane's request is finished (or given up): its next rows may go."""
        with self._cond:
            self._busy[lane] = False
            self._cond.notify_all()

    def _pick_lane(self) -> int | None:
        best, best_count = None, 0
        for lane, count in enumerate(self._counts):
            if count > best_count and not self._busy[lane]:
                best, best_count = lane, count
        if best is None:
            return None
        if best_count >= self._batch_size or self._exhausted or self._total > self.bound:
            return best
        return None

    def _form_batch(self, lane: int, limit: BodyLimit) -> Batch:
        """Up to batch_size rows from the head of the lane whose body stays within the limit,
        all of one segment (one location, or one source visit), with that segment's headers."""
        queue = self._queues[lane]
        first = queue[0]
        segment, geo = str(first["_seg"][0]), str(first["_geo"][0])
        headers = request_headers(geo)
        if segment.startswith(VISIT_SEGMENT):
            token = self._tokens.get(segment)
            if token is None:  # the visit's first event goes alone: its answer names the visit
                row = first.head(1)
                self._pop_rows(lane, 1)
                reason = limit.too_large(int(row["_nbytes"][0]) + 2)
                return Batch(lane, row, too_large_reason=reason, headers=headers, opens_visit=segment)
            self._tokens.move_to_end(segment)
            headers = {"x-umami-cache": token.encode()}
        parts: list[pl.DataFrame] = []
        rows_left = self._batch_size
        budget = limit.target() - 1  # "[" + "]" is 2 bytes, and n elements need n-1 commas
        while rows_left and queue:
            head = queue[0]
            candidate = _segment_head(head, segment, rows_left)
            if candidate.height == 0:
                break
            cumulative = (candidate["_nbytes"].cast(pl.Int64) + 1).cum_sum()
            fit = int(cumulative.search_sorted(budget, side="right"))
            if fit == 0:
                if not parts:  # one row alone is over the target: alone, or not at all
                    row = head.head(1)
                    self._pop_rows(lane, 1)
                    reason = limit.too_large(int(row["_nbytes"][0]) + 2)
                    return Batch(lane, row, too_large_reason=reason, headers=headers)
                break
            parts.append(head.head(fit))
            self._pop_rows(lane, fit)
            budget -= int(cumulative[fit - 1])
            rows_left -= fit
            if fit < candidate.height or candidate.height < head.height:
                break
        rows = parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)
        return Batch(lane, rows, headers=headers)

    def _pop_rows(self, lane: int, count: int) -> None:
        queue = self._queues[lane]
        head = queue[0]
        if count >= head.height:
            queue.popleft()
        else:
            queue[0] = head.slice(count)
        self._counts[lane] -= count
        self._total -= count
        self._cond.notify_all()


def _segment_head(rows: pl.DataFrame, segment: str, limit: int) -> pl.DataFrame:
    """The leading rows (at most ``limit``) that belong to ``segment``."""
    head = rows.head(limit)
    other = (head["_seg"] != segment).arg_true()
    return head if other.len() == 0 else head.head(int(other[0]))
