"""Pull a GA4 property's history, day by day, through the Data API's ``runReport`` (REST v1beta).

For each day, one report per table the GA report reader turns into events
(``REPORTS``): totals (users, sessions, views, engaged sessions, revenue,
transactions), pages with host and title, session source / medium, events by
name, and users per country, place (country, region, city), technology (device,
OS with version, browser: one report, so a visitor's browser fits its OS),
language and screen. Each request asks for that one day, ``limit`` rows
from ``offset`` (pages of up to ``--page-size``, 100,000 by default; Google
answers at most 250,000), and ``returnPropertyQuota``; the next page is asked
for while rows remain below ``rowCount``.

A day's answers are saved together as one ``batchRunReports``-shaped JSON file
(``<pull-dir>/ga4-<property>/<YYYY>/<YYYY-MM-DD>.json``) with a ``pull`` entry
(property, day, report names, when), written atomically once the day is whole;
``propertyQuota`` is left out, as it says nothing about the data. Days whose
file exists are not asked for again.

Why REST through httpx and google-auth rather than the ``google-analytics-data``
client: that client is built on gRPC (grpcio, protobuf), hides the answer's
``propertyQuota`` and error bodies behind its own retries, and would add native
wheels for one method; the REST call is one POST with a JSON body, and google-auth
does the part that is hard to get right (service-account JWTs, refresh tokens).

Errors: 401 -> refresh the token once and retry (an access token that expired
mid-pull); 429 -> ``backfill.pull.quota``; 5xx and timeouts -> retried with
backoff, then a clean stop; 400/403/404 -> a message naming the property and
Google's own words (nothing pulled is lost).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from backfill.checkpoint import utc_now, write_atomically
from backfill.errors import ConfigError
from backfill.pull import Pulled, PullSettings, PullStopped, day_range
from backfill.pull.google_auth import GoogleCredentials
from backfill.pull.quota import Quota

DEFAULT_ENDPOINT = "https://analyticsdata.googleapis.com"
ENDPOINT_ENV = "GA4_API_ENDPOINT"
DEFAULT_PAGE_ROWS = 100_000
MAX_PAGE_ROWS = 250_000
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5


@dataclass(frozen=True)
class Report:
    """One runReport per day: its name in the saved file, dimensions and metrics."""

    name: str
    dimensions: tuple[str, ...]
    metrics: tuple[str, ...]

    def body(self, day: dt.date, limit: int, offset: int) -> dict[str, Any]:
        iso = day.isoformat()
        return {
            "dateRanges": [{"startDate": iso, "endDate": iso}],
            "dimensions": [{"name": d} for d in self.dimensions],
            "metrics": [{"name": m} for m in self.metrics],
            "orderBys": [{"dimension": {"dimensionName": d}} for d in self.dimensions],  # stable pages
            "limit": str(limit),
            "offset": str(offset),
            "returnPropertyQuota": True,
        }


USERS = ("totalUsers",)
#: What each day is made of; every table is one the GA report reader uses (see its describe()).
REPORTS: tuple[Report, ...] = (
    Report(
        "totals",
        ("date",),
        ("totalUsers", "sessions", "screenPageViews", "engagedSessions", "purchaseRevenue", "transactions"),
    ),
    Report("pages", ("date", "hostName", "pagePath", "pageTitle"), ("screenPageViews",)),
    Report("sources", ("date", "sessionSource", "sessionMedium"), ("sessions",)),
    Report("events", ("date", "eventName"), ("eventCount",)),
    Report("countries", ("date", "countryId"), USERS),
    Report("places", ("date", "countryId", "region", "city"), USERS),
    Report("technology", ("date", "deviceCategory", "operatingSystem", "operatingSystemVersion", "browser"), USERS),
    Report("languages", ("date", "languageCode"), USERS),
    Report("screens", ("date", "screenResolution"), USERS),
)


def property_id(spec: str) -> str:
    """``123456789`` or ``properties/123456789`` -> ``123456789``."""
    text = spec.strip().removeprefix("properties/").strip("/")
    if not text.isdigit():
        raise ConfigError(
            f"ga4-api:{spec}: the property id is a number (GA4 Admin > Property details, e.g. ga4-api:123456789)"
        )
    return text


class RefusedReport(Exception):
    """Google refused one report as invalid (400): the others are pulled without it."""


class DataApi:
    """runReport calls for one property, with credentials, retries and quota pacing."""

    def __init__(
        self,
        prop: str,
        settings: PullSettings,
        client: httpx.Client,
        credentials: GoogleCredentials,
        quota: Quota,
        stop: threading.Event,
    ) -> None:
        endpoint = (settings.ga4_endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.url = f"{endpoint}/v1beta/properties/{prop}:runReport"
        self.prop = prop
        self.client = client
        self.credentials = credentials
        self.quota = quota
        self.stop = stop
        self.page_rows = min(settings.page_size or DEFAULT_PAGE_ROWS, MAX_PAGE_ROWS)

    def report(self, report: Report, day: dt.date, done: str) -> dict[str, Any]:
        """The whole report for one day: its pages joined into one answer."""
        offset = 0
        merged: dict[str, Any] | None = None
        while True:
            answer = self.run_report(report.body(day, self.page_rows, offset), report.name, done)
            rows = answer.get("rows") or []
            if merged is None:
                merged = {k: v for k, v in answer.items() if k != "propertyQuota"}
                merged["rows"] = list(rows)
            else:
                merged["rows"].extend(rows)
                _merge_metadata(merged, answer)
            offset += len(rows)
            total = answer.get("rowCount")  # proto3 JSON leaves a 0 out; a server may leave it out
            more = offset < int(total) if total is not None else len(rows) >= self.page_rows
            if not rows or not more:
                return merged

    def run_report(self, body: dict[str, Any], name: str, done: str) -> dict[str, Any]:
        """One runReport answer; raises ConfigError/PullStopped for what retrying cannot fix."""
        attempt = 0
        refreshed = False
        while True:
            if self.stop.is_set():
                raise KeyboardInterrupt
            self.quota.before_request(done)
            try:
                headers = self.credentials.headers()
                response = self.client.post(self.url, json=body, headers=headers)
            except httpx.TransportError as exc:  # timeouts, refused connections, a token endpoint down
                attempt = self._backoff(attempt, f"{type(exc).__name__} ({exc})", done)
                continue
            if response.status_code == 200:
                answer = _json(response)
                self.quota.update(answer.get("propertyQuota"))
                return answer
            status, message = _error(response)
            if response.status_code == 401 and not refreshed:
                self.credentials.refresh()  # an access token that expired or was revoked
                refreshed = True
                continue
            if response.status_code == 429:
                if not self.quota.exhausted(message, done):  # an hourly quota was waited for: ask again
                    attempt = self._backoff(attempt, f"429 {status}: {message}", done, response)
                continue
            if response.status_code >= 500:
                attempt = self._backoff(attempt, f"{response.status_code} {status}: {message}", done, response)
                continue
            if response.status_code == 400:
                raise RefusedReport(f"{status}: {message}")
            raise ConfigError(self._refusal(response.status_code, status, message, name, done))

    def _refusal(self, code: int, status: str, message: str, name: str, done: str) -> str:
        what = {
            401: f"the credentials from {self.credentials.origin} were refused even after a new token",
            403: f"no access to property {self.prop} with the credentials from {self.credentials.origin} "
            "(add their e-mail as a Viewer of the property, and enable the Google Analytics Data API "
            "in their Cloud project)",
            404: f"property {self.prop} not found (check the id in GA4 Admin > Property details)",
        }.get(code, f"Google refused the {name} report")
        return f"{what}: {code} {status}: {message}. {done}"

    def _backoff(self, attempt: int, why: str, done: str, response: httpx.Response | None = None) -> int:
        attempt += 1
        if attempt >= MAX_ATTEMPTS:
            raise PullStopped(f"Google Analytics kept failing ({why}) after {attempt} attempts. {done}")
        delay = min(60.0, BACKOFF_BASE_S * 2 ** (attempt - 1))
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = min(60.0, float(retry_after))
        if self.stop.wait(delay):
            raise KeyboardInterrupt
        return attempt


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError as exc:
        raise PullStopped(f"Google Analytics answered something that is not JSON: {response.text[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise PullStopped("Google Analytics answered JSON that is not a report")
    return answer


def _error(response: httpx.Response) -> tuple[str, str]:
    """(status, message) of Google's error body ``{"error": {"code", "message", "status"}}``."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", response.text[:200].strip()
    return str(error.get("status", "")), str(error.get("message", "")).strip()


def _merge_metadata(merged: dict[str, Any], page: dict[str, Any]) -> None:
    """A later page's flags count for the whole report."""
    into = merged.setdefault("metadata", {})
    more = page.get("metadata") or {}
    for flag in ("subjectToThresholding", "dataLossFromOtherRow"):
        if more.get(flag):
            into[flag] = True
    if more.get("samplingMetadatas"):
        into["samplingMetadatas"] = [*into.get("samplingMetadatas", []), *more["samplingMetadatas"]]


def day_file(folder: Path, day: dt.date) -> Path:
    return folder / f"{day:%Y}" / f"{day.isoformat()}.json"


def pull_ga4(
    spec: str,
    settings: PullSettings,
    progress: Any,
    stop: threading.Event,
    say: Any,
) -> Pulled:
    """Pull every day of the window not pulled yet; the files of all its days."""
    import os

    prop = property_id(spec)
    folder = settings.folder / f"ga4-{prop}"
    days = day_range(settings.since, settings.until, dt.UTC)
    files = [day_file(folder, d) for d in days]
    missing = [(d, f) for d, f in zip(days, files, strict=True) if not f.exists()]
    notes: list[str] = []
    if missing:
        if not settings.ga4_endpoint and os.environ.get(ENDPOINT_ENV):
            settings = _with_endpoint(settings, os.environ[ENDPOINT_ENV])
        with httpx.Client(timeout=settings.timeout, verify=not settings.insecure) as client:
            credentials = GoogleCredentials.find(settings.google_credentials, client)
            quota = Quota(settings.quota_wait, stop, say)
            api = DataApi(prop, settings, client, credentials, quota, stop)
            say(
                f"pulling {len(missing):,} of {len(days):,} days of GA4 property {prop} "
                f"({len(REPORTS)} reports a day) into {folder}"
            )
            refused: dict[str, str] = {}
            for n, (day, path) in enumerate(missing):
                done = f"{len(days) - len(missing) + n:,} of {len(days):,} days are pulled (kept in {folder})."
                answers: list[tuple[str, dict[str, Any]]] = []
                for report in REPORTS:
                    if report.name in refused:
                        continue
                    try:
                        answers.append((report.name, api.report(report, day, done)))
                    except RefusedReport as why:
                        refused[report.name] = f"{why} (from {day})"
                if not answers:
                    raise ConfigError(f"Google Analytics refused every report of {day}: {'; '.join(refused.values())}")
                _save_day(path, prop, day, answers)
                if progress:
                    progress("pull", len(days) - len(missing) + n + 1, len(days), quota.describe())
            notes.extend(
                f"Google Analytics refused the {name} report, so its figures are missing from the days "
                f"pulled now: {why}; delete those days' files to pull them again"
                for name, why in refused.items()
            )
            notes.append(
                f"GA4 property {prop}: pulled {len(missing):,} day(s) now ({quota.requests:,} requests, "
                f"{quota.describe()}), {len(days) - len(missing):,} were pulled before; files in {folder}"
            )
    else:
        notes.append(f"GA4 property {prop}: all {len(days):,} day(s) were pulled before (files in {folder})")
    return Pulled(files=[str(f) for f in files], format="ga_report", preset="ga_report", notes=notes)


def _with_endpoint(settings: PullSettings, endpoint: str) -> PullSettings:
    import dataclasses

    return dataclasses.replace(settings, ga4_endpoint=endpoint)


def _save_day(path: Path, prop: str, day: dt.date, answers: list[tuple[str, dict[str, Any]]]) -> None:
    document = {
        "kind": "analyticsData#batchRunReports",
        "reports": [answer for _, answer in answers],
        "pull": {
            "source": "ga4-api",
            "property": f"properties/{prop}",
            "date": day.isoformat(),
            "pulledAt": utc_now(),
            "reports": [name for name, _ in answers],
        },
    }
    write_atomically(path, json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


__all__ = ["REPORTS", "DataApi", "Report", "day_file", "property_id", "pull_ga4"]
