"""Days whose Matomo visit log is gone, from Matomo's reports: ``matomo-reports:URL?idSite=N``.

Matomo's data retention ("delete old raw data") drops the visit log and keeps the
archived reports. For such days the reports are all there is, so they are pulled
per day and turned into the tables the GA report reader knows (saved in the
Data API's answer shape), then synthesized exactly like a GA report
(``-m ga_report``): per day, visitors (``nb_uniq_visitors``), visits, pageviews and
bounces as Matomo counted them, pageviews per page, visits per referrer, events
by action (with outlinks, downloads and site searches by kind), revenue, and
visitors per country, device type, browser and OS.

Only days whose visit log is empty are pulled (one ``Live.getLastVisitsDetails``
of one visit per day tells): a day that still has its log is imported visit by
visit with ``matomo-api:`` and would count twice. Each report is one call for the
whole window (``period=day``, ``date=A,B``, ``filter_limit=-1``, ``flat=1``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from backfill.checkpoint import utc_now, write_atomically
from backfill.errors import ConfigError
from backfill.pull import Pulled, PullSettings, day_range, safe_name
from backfill.pull.matomo import MatomoApi, created_day, parse_target, site_zone, token_from

#: Matomo's referrer types -> a session medium the GA reader understands.
MEDIA = {"1": "(none)", "2": "organic", "3": "referral", "6": "campaign", "7": "social"}
DONE = "Nothing of these reports was saved yet."
TOTAL_METRICS = ["totalUsers", "sessions", "screenPageViews", "bounces", "purchaseRevenue"]
#: Actions.get counts -> the event names the matomo-live preset gives these actions.
ACTION_KINDS = (("outlink", "nb_outlinks"), ("download", "nb_downloads"), ("site_search", "nb_searches"))

Rows = list[dict[str, Any]]
Table = tuple[str, list[str], list[str], Callable[[dict[str, Any]], list[str] | None]]


def _by_day(answer: Any) -> dict[str, Any]:
    return answer if isinstance(answer, dict) else {}


def _rows(value: Any) -> Rows:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _num(row: dict[str, Any], *keys: str) -> str:
    for key in keys:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return "0"


def _page(row: dict[str, Any]) -> list[str] | None:
    url = str(row.get("url") or "")
    parts = urllib.parse.urlsplit(url) if "://" in url else None
    path = (parts.path or "/") if parts else "/" + str(row.get("label", "")).strip().lstrip("/")
    host = parts.hostname or "" if parts else ""
    return [host, path, _num(row, "nb_hits")]


def _source(row: dict[str, Any]) -> list[str] | None:
    kind = str(row.get("referer_type") or row.get("referrer_type") or "")
    medium = MEDIA.get(kind, "referral")
    source = "(direct)" if medium == "(none)" else str(row.get("label", "")).strip().lower()
    return [source, medium, _num(row, "nb_visits")]


def _label(row: dict[str, Any]) -> list[str] | None:
    label = str(row.get("label", "")).strip()
    if not label or label.lower() == "unknown":
        label = "(not set)"
    return [label, _num(row, "nb_uniq_visitors", "sum_daily_nb_uniq_visitors", "nb_visits")]


def _country(row: dict[str, Any]) -> list[str] | None:
    code = str(row.get("code", "")).strip()
    code = code.upper() if len(code) == 2 and code.lower() != "xx" else "(not set)"  # xx: Matomo's unknown
    return [code, _num(row, "nb_uniq_visitors", "sum_daily_nb_uniq_visitors", "nb_visits")]


def _event(row: dict[str, Any]) -> list[str] | None:
    return [str(row.get("label", "")).strip() or "(not set)", _num(row, "nb_events")]


#: (method, dimension headers, metric headers, row -> values) of each per-day table.
TABLES: tuple[Table, ...] = (
    ("Actions.getPageUrls", ["hostName", "pagePath"], ["screenPageViews"], _page),
    ("Referrers.getAll", ["sessionSource", "sessionMedium"], ["sessions"], _source),
    ("Events.getAction", ["eventName"], ["eventCount"], _event),
    ("UserCountry.getCountry", ["countryId"], ["totalUsers"], _country),
    ("DevicesDetection.getType", ["deviceCategory"], ["totalUsers"], _label),
    ("DevicesDetection.getBrowsers", ["browser"], ["totalUsers"], _label),
    ("DevicesDetection.getOsFamilies", ["operatingSystem"], ["totalUsers"], _label),
)


def _answer(day: str, dims: list[str], metrics: list[str], rows: list[list[str]], currency: str) -> dict[str, Any]:
    """One table of one day in the Data API's answer shape (what the GA report reader reads)."""
    date = day.replace("-", "")
    return {
        "dimensionHeaders": [{"name": "date"}, *({"name": d} for d in dims)],
        "metricHeaders": [{"name": m} for m in metrics],
        "rows": [
            {
                "dimensionValues": [{"value": date}, *({"value": v} for v in r[: len(dims)])],
                "metricValues": [{"value": v} for v in r[len(dims) :]],
            }
            for r in rows
        ],
        "rowCount": len(rows),
        "metadata": {"currencyCode": currency},
    }


def _totals(day: str, summary: Any, actions: Any, goals: Any) -> list[str]:
    s = summary if isinstance(summary, dict) else {}
    a = actions if isinstance(actions, dict) else {}
    g = goals if isinstance(goals, dict) else {}
    return [
        _num(s, "nb_uniq_visitors", "nb_visits"),
        _num(s, "nb_visits"),
        _num(a, "nb_pageviews"),
        _num(s, "bounce_count"),
        _num(g, "revenue"),
    ]


def pull_matomo_reports(spec: str, settings: PullSettings, progress: Any, stop: threading.Event, say: Any) -> Pulled:
    target = parse_target(spec)
    token = token_from(settings)
    folder = settings.folder / safe_name(f"matomo-reports-{target.label}-site{target.site}")
    with httpx.Client(timeout=settings.timeout, verify=not settings.insecure) as client:
        api = MatomoApi(target, token, client, stop)
        site = api.call("SitesManager.getSiteFromId", DONE)
        if not isinstance(site, dict):
            raise ConfigError(f"{target.endpoint}: SitesManager.getSiteFromId gave no site {target.site}")
        zone = site_zone(str(site.get("timezone") or "UTC"))
        days = day_range(settings.since, settings.until, zone, created_day(site))
        files = {d: folder / f"{d:%Y}" / f"{d.isoformat()}.json" for d in days}
        todo = [d for d in days if not files[d].exists()]
        kept: list[dt.date] = []
        with_log: list[str] = []
        for n, day in enumerate(todo):  # only days without a visit log: the others come from matomo-api
            probe = api.call("Live.getLastVisitsDetails", DONE, period="day", date=day.isoformat(), filter_limit=1)
            (with_log.append(day.isoformat()) if probe else kept.append(day))
            if progress:
                progress("pull", n + 1, len(todo), "which days lost their visit log")
        if kept:
            _save(api, site, kept, files, folder)
    present = [d for d in days if files[d].exists()]
    notes = [
        f"Matomo reports of site {target.site}: {len(present):,} day(s) without a visit log synthesized from "
        f"the reports ({len(kept):,} pulled now), files in {folder}"
    ]
    if with_log:
        from backfill.sources import day_ranges

        notes.append(
            "Matomo: days that still have their visit log were left out (import them visit by visit with "
            f"matomo-api:, or they would count twice): {', '.join(day_ranges(with_log))}"
        )
    return Pulled(files=[str(files[d]) for d in present], format="ga_report", preset="ga_report", notes=notes)


def _save(api: MatomoApi, site: dict[str, Any], days: list[dt.date], files: dict[dt.date, Path], folder: Path) -> None:
    """Every table for the days in ``days`` (one call per report over their span), one file a day."""
    span = f"{days[0]},{days[-1]}"
    common = {"period": "day", "date": span, "filter_limit": -1}
    summary = _by_day(api.call("VisitsSummary.get", DONE, **common))
    actions = _by_day(api.call("Actions.get", DONE, **common))
    goals = _by_day(api.call("Goals.get", DONE, **common))
    tables = [(dims, metrics, row, _by_day(api.call(m, DONE, flat=1, **common))) for m, dims, metrics, row in TABLES]
    currency = str(site.get("currency") or "")
    for day in days:
        iso = day.isoformat()
        totals = [_totals(iso, summary.get(iso), actions.get(iso), goals.get(iso))]
        answers = [_answer(iso, [], TOTAL_METRICS, totals, currency)]
        a = actions.get(iso) if isinstance(actions.get(iso), dict) else {}
        kinds = [[name, _num(a, key)] for name, key in ACTION_KINDS]
        for dims, metrics, row, answer in tables:
            rows = [v for r in _rows(answer.get(iso)) if (v := row(r)) is not None]
            if dims == ["eventName"]:
                rows += [k for k in kinds if k[1] not in ("0", "")]
            answers.append(_answer(iso, dims, metrics, rows, currency))
        document = {
            "kind": "analyticsData#batchRunReports",
            "reports": answers,
            "pull": {
                "source": "matomo-reports",
                "site": site.get("idsite"),
                "date": iso,
                "pulledAt": utc_now(),
                "reports": ["totals", *(t[0] for t in TABLES)],
            },
        }
        write_atomically(files[day], json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


__all__ = ["pull_matomo_reports"]
