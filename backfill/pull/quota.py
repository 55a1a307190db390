"""Pacing inside the Google Analytics Data API's property quotas, and waiting out its errors.

Every ``runReport`` asks for ``returnPropertyQuota``; the answer's
``propertyQuota`` gives, per quota, what the request ``consumed`` and what
``remaining``. Standard properties get 200,000 tokens a day (refreshed at
midnight Pacific time), 40,000 an hour (refreshed "within an hour"), 14,000 per
project an hour, 10 requests at once and 120 potentially thresholded requests an
hour; a request costs a few tokens (more for many rows or a long date range).

* Before a request: when the daily tokens left are fewer than the dearest request
  seen so far costs, the pull stops cleanly (``PullStopped``) instead of spending a
  request on a refusal, and says when Google refreshes the quota. When an hourly
  quota is that low, it waits (see below).
* A 429 ``RESOURCE_EXHAUSTED`` answer says which quota ran out: per day -> stop;
  per hour (tokens, project tokens, potentially thresholded requests, server
  errors) -> wait, polling at growing intervals up to a minute, for at most
  ``--quota-wait`` seconds in all, then stop; concurrent requests or anything
  else -> back off briefly and try again.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from typing import Any

from backfill.pull import PullStopped

#: propertyQuota fields that run out per hour (waited for) and per day (a clean stop).
HOURLY = ("tokensPerHour", "tokensPerProjectPerHour", "potentiallyThresholdedRequestsPerHour")
DAILY = ("tokensPerDay",)
_DAY_WORDS = re.compile(r"per\s+day|daily", re.I)
_HOUR_WORDS = re.compile(r"per\s+hour|hourly", re.I)
PACIFIC = "America/Los_Angeles"


def next_pacific_midnight(now: dt.datetime | None = None) -> dt.datetime:
    """When Google refreshes daily quotas: the next midnight in Pacific time (as UTC)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        from zoneinfo import ZoneInfo

        zone: dt.tzinfo = ZoneInfo(PACIFIC)
    except Exception:  # no time zone database: Pacific standard time
        zone = dt.timezone(dt.timedelta(hours=-8))
    local = now.astimezone(zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone)
    return midnight.astimezone(dt.UTC)


class Quota:
    """What the answers said of the property's quotas, and the waiting they call for."""

    def __init__(self, max_wait: float, stop: threading.Event, say: Any) -> None:
        self.max_wait = max_wait
        self.stop = stop
        self.say = say
        self.remaining: dict[str, int] = {}
        self.cost = 1  # tokens of the dearest request seen
        self.consumed = 0  # tokens this run consumed
        self.requests = 0
        self._waited = 0.0  # seconds spent waiting for the current hourly refresh
        self._lock = threading.Lock()

    def update(self, quota: Any) -> None:
        """Take in an answer's ``propertyQuota``."""
        if not isinstance(quota, dict):
            return
        with self._lock:
            self.requests += 1
            self._waited = 0.0
            for name, status in quota.items():
                if not isinstance(status, dict):
                    continue
                consumed, remaining = _int(status.get("consumed")), _int(status.get("remaining"))
                if remaining is not None:
                    self.remaining[name] = remaining
                if name == "tokensPerDay" and consumed is not None:
                    self.consumed += consumed
                    self.cost = max(self.cost, consumed)

    def before_request(self, done: str) -> None:
        """Stop before a request the daily quota cannot pay; wait while an hourly one is spent."""
        left = self.remaining.get("tokensPerDay")
        if left is not None and left < self.cost:
            raise self.daily_stop(done, f"{left:,} tokens left today, a request costs up to {self.cost:,}")
        for name in HOURLY:
            left = self.remaining.get(name)
            needs = self.cost if name.startswith("tokens") else 1
            if left is not None and left < needs:
                self.wait_for_hour(done, f"{name} has {left:,} left")
                self.remaining.pop(name, None)  # unknown until the next answer says

    def exhausted(self, message: str, done: str) -> bool:
        """A 429 RESOURCE_EXHAUSTED: stop (daily), wait for the hour and return True (hourly),
        or return False for a short backoff (concurrent requests, anything else)."""
        if _DAY_WORDS.search(message):
            raise self.daily_stop(done, message)
        if _HOUR_WORDS.search(message):
            self.wait_for_hour(done, message)
            return True
        return False

    def wait_for_hour(self, done: str, why: str) -> None:
        """Poll for an hourly refresh: 2 s, 4 s, ... up to a minute apart, ``max_wait`` in all."""
        step = min(60.0, 2.0 * 2 ** min(int(self._waited // 2), 5)) if self._waited else 2.0
        if self._waited + step > self.max_wait:
            raise PullStopped(
                f"Google Analytics' hourly quota for the property is spent ({why}); waited "
                f"{self._waited:,.0f} s (--quota-wait {self.max_wait:,.0f}). {done} Hourly quotas refresh "
                "within the hour: run the same command again then to continue."
            )
        if not self._waited:
            self.say(
                f"Google Analytics' hourly quota is spent ({why}): waiting for it (at most {self.max_wait:,.0f} s)"
            )
        if self.stop.wait(step):
            raise KeyboardInterrupt
        self._waited += step

    def daily_stop(self, done: str, why: str) -> PullStopped:
        refresh = next_pacific_midnight()
        local = refresh.astimezone()
        return PullStopped(
            f"Google Analytics' daily quota for the property is spent ({why}). {done} Google refreshes "
            f"it at midnight Pacific time: continue after {refresh:%Y-%m-%d %H:%M} UTC "
            f"({local:%Y-%m-%d %H:%M} here) by running the same command again."
        )

    def describe(self) -> str:
        """Tokens used and left, for progress and the summary."""
        day = self.remaining.get("tokensPerDay")
        hour = self.remaining.get("tokensPerHour")
        parts = [f"{self.consumed:,} tokens used"]
        if day is not None:
            parts.append(f"{day:,} left today")
        if hour is not None:
            parts.append(f"{hour:,} this hour")
        return ", ".join(parts)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


__all__ = ["Quota", "next_pacific_midnight"]
