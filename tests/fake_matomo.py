"""A fake Matomo HTTP API on 127.0.0.1: the methods the API pull calls, shaped after Matomo's reference.

``POST /index.php`` (or ``GET``) with ``module=API``, ``method``, ``idSite``,
``format=JSON`` and ``token_auth``:

* ``SitesManager.getSiteFromId``: the site (``idsite``, ``name``, ``main_url``,
  ``ts_created``, ``timezone``, ``currency``, ...);
* ``VisitsSummary.get`` with ``period=day`` and ``date=A,B``: ``{"YYYY-MM-DD":
  {"nb_visits": ..., ...}}``, ``[]`` for a day without visits;
* ``Live.getLastVisitsDetails`` with ``period=day``, ``date``, ``filter_limit``,
  ``filter_offset`` (and ``filter_sort_order`` when ``honor_sort``): the day's
  visits (site time zone, by last action), newest first by default.

Errors answer ``{"result": "error", "message": "..."}``, as Matomo does. Quirks: a
day whose raw log is purged (Live empty, reports intact), a visit arriving between
two pages of a day (the pages shift), a 502 and a slow answer once, the token
expiring after N calls. ``requests`` records each call's URL and form (to check
where the token travelled).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.json_server import JsonServer

BAD_TOKEN = "Unable to authenticate with the provided token. It is either invalid or expired."


@dataclass
class MatomoQuirks:
    purged: set[str] = field(default_factory=set)  # days whose Live log is empty
    arrive_after_first_page: dict[str, dict[str, Any]] = field(default_factory=dict)  # day -> a visit that arrives
    fail_once: list[int] = field(default_factory=list)  # HTTP statuses answered to the next Live calls
    slow_once: float = 0.0  # seconds the next Live call waits before answering
    token_calls: int | None = None  # the token stops working after this many calls
    honor_sort: bool = False  # older Matomo versions ignore filter_sort_order


class FakeMatomo(JsonServer):
    def __init__(self, visits: list[dict[str, Any]], *, token: str, site: dict[str, Any], offset_s: int) -> None:
        self.visits = list(visits)
        self.token = token
        self.site = site
        self.offset_s = offset_s  # the site's UTC offset (a fixed one is enough for these days)
        self.quirks = MatomoQuirks()
        self.requests: list[dict[str, Any]] = []
        self.calls_with_token = 0
        self.lock = threading.Lock()

    def respond(self, verb: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        form = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        form.update(urllib.parse.parse_qsl(body.decode()))
        return self.handle(path, form)

    def local_day(self, visit: dict[str, Any]) -> str:
        return dt.datetime.fromtimestamp(visit["lastActionTimestamp"] + self.offset_s, dt.UTC).date().isoformat()

    def handle(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        q = self.quirks
        with self.lock:
            self.requests.append({"path": path, "form": {k: v for k, v in form.items() if k != "token_auth"}})
            if form.get("token_auth") != self.token:
                return 200, {"result": "error", "message": BAD_TOKEN}
            self.calls_with_token += 1
            if q.token_calls is not None and self.calls_with_token > q.token_calls:
                return 200, {"result": "error", "message": BAD_TOKEN}
        if form.get("module") != "API":
            return 200, {"result": "error", "message": "The module parameter is missing"}
        if form.get("idSite") != str(self.site["idsite"]):
            return 200, {"result": "error", "message": f"An unexpected website was found: {form.get('idSite')}"}
        method = form.get("method")
        if method == "SitesManager.getSiteFromId":
            return 200, self.site
        if method == "VisitsSummary.get":
            return 200, self._summary(form)
        if method == "Live.getLastVisitsDetails":
            with self.lock:
                fail = q.fail_once.pop(0) if q.fail_once else None
                slow, q.slow_once = q.slow_once, 0.0
            if fail:
                return fail, {"result": "error", "message": "Bad gateway"}
            if slow:
                time.sleep(slow)
            return 200, self._live(form)
        return 200, {"result": "error", "message": f"The method '{method}' does not exist or is not available."}

    def _summary(self, form: dict[str, str]) -> dict[str, Any]:
        first, last = (dt.date.fromisoformat(d) for d in form["date"].split(","))
        out: dict[str, Any] = {}
        day = first
        while day <= last:
            visits = [v for v in self.visits if self.local_day(v) == day.isoformat()]
            out[day.isoformat()] = (
                {
                    "nb_uniq_visitors": len({v["visitorId"] for v in visits}),
                    "nb_visits": len(visits),
                    "nb_actions": sum(len(v["actionDetails"]) for v in visits),
                    "bounce_count": sum(len(v["actionDetails"]) == 1 for v in visits),
                    "sum_visit_length": 0,
                }
                if visits
                else []
            )
            day += dt.timedelta(days=1)
        return out

    def _live(self, form: dict[str, str]) -> list[dict[str, Any]]:
        day = form["date"]
        if form.get("period") != "day":
            raise ValueError("the fake answers period=day only")
        if day in self.quirks.purged:
            return []
        offset, limit = int(form.get("filter_offset", 0)), int(form.get("filter_limit", 100))
        with self.lock:
            visits = sorted(
                (v for v in self.visits if self.local_day(v) == day),
                key=lambda v: (v["lastActionTimestamp"], v["idVisit"]),
                reverse=not (self.quirks.honor_sort and form.get("filter_sort_order") == "asc"),
            )
            page = visits[offset : offset + limit]
            if offset == 0 and day in self.quirks.arrive_after_first_page:
                self.visits.append(self.quirks.arrive_after_first_page.pop(day))  # shifts the next page
        return page
