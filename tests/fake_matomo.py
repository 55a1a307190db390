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
from collections import Counter
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
        if method in REPORTS:
            return 200, self._report(REPORTS[method], form)
        return 200, {"result": "error", "message": f"The method '{method}' does not exist or is not available."}

    def _days(self, form: dict[str, str]) -> list[str]:
        first, last = (dt.date.fromisoformat(d) for d in form["date"].split(","))
        return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]

    def _report(self, build: Any, form: dict[str, str]) -> dict[str, Any]:
        """A report over ``date=A,B`` with ``period=day``: ``{day: rows or figures}``, ``[]`` for an empty day."""
        out: dict[str, Any] = {}
        for day in self._days(form):
            visits = [v for v in self.visits if self.local_day(v) == day]
            out[day] = build(visits) if visits else []
        return out

    def _summary(self, form: dict[str, str]) -> dict[str, Any]:
        return self._report(_visits_summary, form)

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


# --------------------------------------------------------------------------- reports (Matomo's archives)


def _kind(visits: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for v in visits for a in v["actionDetails"] if a["type"] == kind]


def _visits_summary(visits: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nb_uniq_visitors": len({v["visitorId"] for v in visits}),
        "nb_visits": len(visits),
        "nb_actions": sum(len(v["actionDetails"]) for v in visits),
        "bounce_count": sum(len(_kind([v], "action")) == 1 for v in visits),
        "sum_visit_length": 0,
    }


def _rows(values: dict[Any, list[dict[str, Any]]], row: Any) -> list[dict[str, Any]]:
    return sorted((row(key, group) for key, group in values.items()), key=lambda r: (-r["nb_visits"], r["label"]))


def _grouped(visits: list[dict[str, Any]], key: Any) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for v in visits:
        out.setdefault(key(v), []).append(v)
    return out


def _per_visitor(label: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    return {"label": label, "nb_visits": len(group), "nb_uniq_visitors": len({v["visitorId"] for v in group})}


def _pages(visits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hits: dict[str, int] = {}
    for a in _kind(visits, "action"):
        hits[a["url"]] = hits.get(a["url"], 0) + 1
    return [
        {"label": urllib.parse.urlsplit(u).path, "url": u, "nb_hits": n, "nb_visits": n}
        for u, n in sorted(hits.items())
    ]


def _referrer(v: dict[str, Any]) -> tuple[str, int]:
    url = v.get("referrerUrl")
    if not url:
        return "Direct Entry", 1
    host = urllib.parse.urlsplit(url).hostname or ""
    return ("Google", 2) if "google." in host else (host, 3)


def _revenue(visits: list[dict[str, Any]]) -> float:
    return round(sum(float(a.get("revenue") or 0) for k in ("goal", "ecommerceOrder") for a in _kind(visits, k)), 2)


REPORTS: dict[str, Any] = {
    "Actions.get": lambda visits: {
        "nb_pageviews": len(_kind(visits, "action")),
        "nb_outlinks": len(_kind(visits, "outlink")),
        "nb_downloads": len(_kind(visits, "download")),
        "nb_searches": len(_kind(visits, "search")),
    },
    "Goals.get": lambda visits: {
        "nb_conversions": len(_kind(visits, "goal")) + len(_kind(visits, "ecommerceOrder")),
        "revenue": round(
            sum(float(a.get("revenue") or 0) for k in ("goal", "ecommerceOrder") for a in _kind(visits, k)), 2
        ),
    },
    "Actions.getPageUrls": _pages,
    "Referrers.getAll": lambda visits: _rows(
        _grouped(visits, _referrer), lambda k, g: {"label": k[0], "referer_type": k[1], "nb_visits": len(g)}
    ),
    "Events.getAction": lambda visits: [
        {"label": name, "nb_events": n, "nb_visits": n}
        for name, n in sorted(Counter(a["eventAction"] for a in _kind(visits, "event")).items())
    ],
    "UserCountry.getCountry": lambda visits: _rows(
        _grouped(visits, lambda v: v["countryCode"]), lambda k, g: {**_per_visitor(k.upper(), g), "code": k}
    ),
    "DevicesDetection.getType": lambda visits: _rows(_grouped(visits, lambda v: v["deviceType"]), _per_visitor),
    "DevicesDetection.getBrowsers": lambda visits: _rows(
        _grouped(visits, lambda v: BROWSER_NAMES[v["browserCode"]]), _per_visitor
    ),
    "DevicesDetection.getOsFamilies": lambda visits: _rows(
        _grouped(visits, lambda v: OS_FAMILIES[v["operatingSystemCode"]]), _per_visitor
    ),
}
#: Matomo's labels for the sample's codes (device-detector names).
BROWSER_NAMES = {
    "CH": "Chrome",
    "FF": "Firefox",
    "SF": "Safari",
    "MF": "Mobile Safari",
    "CI": "Chrome Mobile iOS",
    "CM": "Chrome Mobile",
    "PS": "Microsoft Edge",
}
OS_FAMILIES = {"WIN": "Windows", "LIN": "GNU/Linux", "MAC": "Mac", "IOS": "iOS", "IPA": "iOS", "AND": "Android"}
