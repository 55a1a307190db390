"""How many requests to keep in flight, and how fast to send: keep Umami saturated, not swamped.

Umami runs each batch element through one Node.js thread, so its throughput
stops growing at two to four batches in flight; more only adds latency and,
behind a proxy, timeouts (whose batches end up in doubt). ``AdaptiveConcurrency``
finds that knee by measuring, and backs off when the server says it is
overloaded. ``RateLimiter`` is the user's explicit cap in events per second.

Both take an injectable clock so tests run in microseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_CONCURRENCY_ONE_PER_REQUEST",
    "WINDOW_ONE_PER_REQUEST",
    "AdaptiveConcurrency",
    "Clock",
    "RateLimiter",
    "retry_after_seconds",
]

Clock = Callable[[], float]

DEFAULT_INITIAL_CONCURRENCY = 2
DEFAULT_MAX_CONCURRENCY = 16
#: One event per request (``/api/send``): more requests in flight to carry the same events,
#: and far from Umami's knee over a long network path (Umami Cloud).
DEFAULT_MAX_CONCURRENCY_ONE_PER_REQUEST = 32
#: Throughput must grow by more than this factor for another request in flight to pay off.
THROUGHPUT_GAIN = 1.05
#: While doubling (slow start), a doubling must raise throughput by this factor to go on doubling.
SLOW_START_GAIN = 1.5
#: Latency may grow up to this factor over the best seen before we stop adding requests.
LATENCY_TOLERANCE = 1.5
#: One more request in flight (n -> n+1) must buy at least this share of the 1/n gain it buys
#: below the knee, and may cost at most this share of the 1/n latency it costs above it (where
#: requests only queue: Little's law). Between the two, a window's jitter cannot pass for a gain.
MARGINAL_SHARE = 0.5
#: Completed batches per measurement window (at least twice the current limit).
WINDOW_BATCHES = 6
#: The same for one event per request: a few milliseconds each, so more of them make a
#: window long enough for the throughput it measures to rise above the noise.
WINDOW_ONE_PER_REQUEST = 48
#: After settling, probe one step higher again after this many windows (the load may change).
REPROBE_AFTER_WINDOWS = 20
#: How long blocking waits sleep before re-checking the halt event.
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _Sample:
    events: int
    latency: float
    finished_at: float


class AdaptiveConcurrency:
    """The number of requests allowed in flight: additive increase, multiplicative decrease.

    * Start at ``initial`` and double the limit while each doubling raises the
      throughput by half or more (slow start: a server far from saturation, or a
      slow network, is filled in a few windows instead of one step per window).
    * Then, after each window of completed batches, compare the measured
      throughput (events/s) with the best of the previous level: more than 5%
      better while latency stays within 1.5x of the best seen -> one more
      request in flight.
    * No gain, or a gain smaller than half of what one more request gives
      below the knee, or latency grown by half of what it adds past the knee
      -> step back to the previous level and hold (the server is saturated);
      after a while probe again, one step up and one step down in turn (one
      fewer request that loses less than half of its share of throughput was
      one too many), so chance gains in a noisy window do not ratchet the
      limit up.
    * 429, 5xx or a timeout -> halve (once per round of requests) and honour
      ``Retry-After`` by pausing new requests.
    * ``fixed`` bypasses all of this (``--concurrency N``); pauses still apply.

    Thread-safe: call :meth:`acquire` before a request and :meth:`release` after.
    """

    def __init__(
        self,
        *,
        initial: int = DEFAULT_INITIAL_CONCURRENCY,
        minimum: int = 1,
        maximum: int = DEFAULT_MAX_CONCURRENCY,
        fixed: int | None = None,
        clock: Clock = time.monotonic,
        window: int = WINDOW_BATCHES,
        reprobe_after: int = REPROBE_AFTER_WINDOWS,
    ) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError("fixed concurrency must be at least 1")
        if not 1 <= minimum <= maximum:
            raise ValueError("need 1 <= minimum <= maximum")
        self.fixed = fixed
        self.minimum = minimum
        self.maximum = fixed if fixed is not None else maximum
        self._limit = fixed if fixed is not None else max(minimum, min(initial, maximum))
        self._clock = clock
        self._window = window
        self._reprobe_after = reprobe_after
        self._cond = threading.Condition()
        self._in_flight = 0
        self._paused_until = 0.0
        self._samples: list[_Sample] = []
        self._window_started: float | None = None
        self._baseline: float | None = None  # throughput of the level we are building on
        self._baseline_latency: float | None = None  # latency measured at that level
        self._best_latency: float | None = None
        self._last_step = 0  # +1 after an increase, -1 after a decrease, 0 when holding
        self._slow_start = fixed is None  # doubling until a doubling stops paying off
        self._previous_limit = self._limit
        self._settled_windows: int | None = None  # windows spent holding, None while probing
        self._last_decrease_at = float("-inf")
        self._probing_down = False  # holding one below the settled level, to see what it costs
        self._next_probe_down = False
        self._held: list[tuple[float, float]] = []  # (events/s, latency) of the windows held at this level

    def set_maximum(self, maximum: int, window: int | None = None) -> None:
        """A new ceiling, and optionally window (the run changed endpoint): what was measured
        against the old ones says little, so the search starts again from the current limit
        (slow start). A fixed limit stays as it is."""
        with self._cond:
            if self.fixed is not None:
                return
            if window is not None:
                self._window = window
            self.maximum = max(self.minimum, maximum)
            self._limit = min(self._limit, self.maximum)
            self._reset_measurement()
            self._slow_start = True
            self._probing_down = False
            self._last_step = 0
            self._held.clear()
            self._cond.notify_all()

    def now(self) -> float:
        """The clock :meth:`acquire` and :meth:`release` measure with."""
        return self._clock()

    @property
    def limit(self) -> int:
        with self._cond:
            return self._limit

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def pause_remaining(self) -> float:
        """Seconds until new requests may start again after a Retry-After (0 if not paused)."""
        with self._cond:
            return max(0.0, self._paused_until - self._clock())

    def try_acquire(self) -> float | None:
        """Take a slot if one is free and no pause is on; returns the start time, else None."""
        with self._cond:
            return self._take_slot()

    def acquire(self, halt: threading.Event | None = None) -> float | None:
        """Block until a slot is free; returns the start time, or None once ``halt`` is set."""
        with self._cond:
            while halt is None or not halt.is_set():
                started = self._take_slot()
                if started is not None:
                    return started
                wait = self._paused_until - self._clock()
                self._cond.wait(min(_POLL_SECONDS, wait) if wait > 0 else _POLL_SECONDS)
            return None

    def _take_slot(self) -> float | None:
        now = self._clock()
        if self._in_flight >= self._limit or now < self._paused_until:
            return None
        self._in_flight += 1
        if self._window_started is None:
            self._window_started = now
        return now

    def cancel(self) -> None:
        """Give back a slot that was not used for a request (nothing to measure)."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def release(
        self,
        started: float,
        events: int,
        *,
        overloaded: bool = False,
        retry_after: float | None = None,
    ) -> float:
        """Give back the slot taken at ``started``; returns the request's latency.

        ``overloaded`` marks 429, 5xx and timeouts. ``retry_after`` (seconds)
        pauses every new request, whatever the mode.
        """
        with self._cond:
            now = self._clock()
            latency = max(0.0, now - started)
            self._in_flight -= 1
            if retry_after is not None and retry_after > 0:
                self._paused_until = max(self._paused_until, now + retry_after)
            if self.fixed is None:
                if overloaded:
                    self._decrease(started, now)
                elif events > 0:  # a request that carried nothing (413) says nothing of speed
                    self._record(_Sample(events, latency, now))
            self._cond.notify_all()
            return latency

    def _decrease(self, started: float, now: float) -> None:
        # Requests that were already on the wire when we last halved report the
        # same overload: halving again for each of them would collapse to 1.
        if started < self._last_decrease_at:
            return
        self._limit = max(self.minimum, self._limit // 2)
        self._slow_start = False
        self._last_decrease_at = now
        self._probing_down = False
        self._reset_measurement()
        self._last_step = -1

    def _reset_measurement(self) -> None:
        self._samples.clear()
        self._window_started = None
        self._baseline = None
        self._baseline_latency = None
        self._settled_windows = None

    def _record(self, sample: _Sample) -> None:
        self._samples.append(sample)
        if len(self._samples) < max(self._window, 2 * self._limit):
            return
        started = self._window_started if self._window_started is not None else sample.finished_at
        throughput, latency = _measure(self._samples, started)
        self._samples.clear()
        self._window_started = sample.finished_at
        if throughput is None:
            return
        self._best_latency = latency if self._best_latency is None else min(self._best_latency, latency)
        self._adapt(throughput, latency)

    def _adapt(self, throughput: float, latency: float) -> None:
        assert self._best_latency is not None
        if self._settled_windows is not None:
            self._settled_windows += 1
            self._held.append((throughput, latency))
            if self._settled_windows >= self._reprobe_after:
                self._settled_windows = None
                # The level's mean over all the windows it was held: one window is too noisy
                # a yardstick for a step of a few percent.
                count = len(self._held)
                self._set_baseline(sum(x for x, _ in self._held) / count, sum(r for _, r in self._held) / count)
                # Probe up and down in turn: a step up that chance let through is undone.
                self._next_probe_down = not self._next_probe_down
                if self._next_probe_down and self._limit > self.minimum:
                    self._step_down()
                else:
                    self._step_up()
            return
        if self._probing_down:
            self._probing_down = False
            assert self._baseline is not None
            # Below the knee one request fewer costs 1/n of the throughput; past it, nothing.
            kept = throughput > self._baseline * (1.0 - MARGINAL_SHARE / self._previous_limit)
            if not kept:
                self._limit = self._previous_limit
            self._hold()
            return
        if self._baseline is None:
            self._set_baseline(throughput, latency)
            self._step_up()
            return
        doubling = self._slow_start and self._last_step > 0
        if doubling:
            gained = throughput > self._baseline * THROUGHPUT_GAIN
            latency_holds = latency <= self._best_latency * LATENCY_TOLERANCE
            ratio = throughput / self._baseline if self._baseline > 0 else 0.0
            self._slow_start = ratio > SLOW_START_GAIN and latency_holds
            if not gained:  # the doubling bought nothing: back to where it came from, and hold
                self._limit = self._previous_limit
                self._hold()
                return
            if not self._slow_start:
                # The knee lies between the two levels; throughput grew by ``ratio``, so
                # (throughput ~ requests in flight up to the knee) it is near ratio x previous.
                estimate = round(self._previous_limit * ratio)
                self._limit = max(self._previous_limit, min(self._limit, estimate))
        else:
            gained, latency_holds = self._paid_off(throughput, latency)
        if gained and latency_holds:
            self._set_baseline(throughput, latency)
            self._step_up()
        elif self._last_step > 0:
            # The last extra request bought nothing, or only latency: give it back and hold.
            self._limit = max(self.minimum, self._limit - 1)
            self._hold()
        else:
            self._baseline = max(self._baseline, throughput)
            self._hold()

    def _paid_off(self, throughput: float, latency: float) -> tuple[bool, bool]:
        """Whether the last step up raised throughput, and kept latency, as it does below the knee.

        From n to m requests in flight, a server below its knee gives (m - n)/n more
        events/s at the same latency; past it, the same events/s at (m - n)/n more
        latency. Half of either is the line between them.
        """
        assert self._baseline is not None and self._best_latency is not None
        marginal = (self._limit - self._previous_limit) / self._previous_limit if self._last_step > 0 else 0.0
        needed = max(THROUGHPUT_GAIN - 1.0, MARGINAL_SHARE * marginal)
        gained = throughput > self._baseline * (1.0 + needed)
        latency_holds = latency <= self._best_latency * LATENCY_TOLERANCE
        if self._baseline_latency is not None and self._last_step > 0:
            latency_holds = latency_holds and latency <= self._baseline_latency * (1.0 + MARGINAL_SHARE * marginal)
        return gained, latency_holds

    def _set_baseline(self, throughput: float, latency: float) -> None:
        self._baseline = throughput
        self._baseline_latency = latency

    def _step_down(self) -> None:
        self._previous_limit = self._limit
        self._limit -= 1
        self._probing_down = True
        self._last_step = 0

    def _step_up(self) -> None:
        if self._limit < self.maximum:
            self._previous_limit = self._limit
            self._limit = min(self.maximum, self._limit * 2) if self._slow_start else self._limit + 1
            self._last_step = 1
        else:
            self._hold()

    def _hold(self) -> None:
        self._last_step = 0
        self._settled_windows = 0
        self._held.clear()


def _measure(samples: list[_Sample], started: float) -> tuple[float | None, float]:
    """Events/s completed from the window's start to its last completion, and mean latency.

    Windows follow each other without gaps, so in a steady state every
    completed event is counted once, whatever the number in flight.
    """
    latency = sum(s.latency for s in samples) / len(samples)
    span = samples[-1].finished_at - started
    if span <= 0:
        return None, latency
    return sum(s.events for s in samples) / span, latency


class RateLimiter:
    """A token bucket in events per second (``--rate``); ``rate=None`` never waits.

    The bucket may go into debt: a batch larger than the burst is let through
    once enough time has passed to pay for it, so any batch size works and the
    average rate is exact.
    """

    def __init__(self, rate: float | None, *, burst: float | None = None, clock: Clock = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else (rate or 0.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def reserve(self, events: int) -> float:
        """Take ``events`` tokens now; returns how many seconds to wait before sending them."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= events
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def wait(self, events: int, halt: threading.Event | None = None) -> bool:
        """Block until ``events`` may be sent; False when ``halt`` was set meanwhile."""
        delay = self.reserve(events)
        if delay <= 0:
            return halt is None or not halt.is_set()
        if halt is None:
            time.sleep(delay)
            return True
        return not halt.wait(delay)


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """A ``Retry-After`` header as seconds (a delta or an HTTP date), at most ``cap``;
    None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), cap)
