"""Pull a Matomo site's visit log, day by day, through its HTTP API (Matomo Cloud or self-hosted).

``matomo-api:https://example.matomo.cloud/?idSite=3``: the Matomo URL (``index.php``
is added when the path does not name a ``.php`` file) and the site id. The token
comes from ``--matomo-token-file`` or ``MATOMO_TOKEN_AUTH``; every call is a POST
whose URL carries the method and its parameters (as Matomo's examples write them)
and whose form body carries them again with ``token_auth``, so the token never
appears in a URL, a proxy's log, a message or a saved file (any echo of it in an
answer is replaced by ``***``).

1. ``SitesManager.getSiteFromId``: the site's time zone (Matomo's days are the
   site's days), its creation day (the default ``--since``) and its name.
2. ``VisitsSummary.get`` with ``period=day`` over the window: how many visits
   Matomo's reports hold per day.
3. Per day, ``Live.getLastVisitsDetails`` with ``period=day``, ``filter_limit``
   (``--page-size``, 500 by default) and ``filter_offset``, until a page comes back
   short. Each page is saved as it arrives (``<pull-dir>/matomo-<host>-site<N>/
   <YYYY-MM>/<day>.p0001.json``, the API's own JSON array, visits already saved
   for that day left out: pages shift when visits arrive while paging), and the
   folder's ``pull.json`` records the day's next offset and, at the end, that the
   day is complete; a stopped pull continues at the page it stood at.

The pages are then read by the ``matomo_live`` reader, exactly as saved Live
pages are (``-m matomo-live``).

Days whose visit log came back empty (or short) while ``VisitsSummary.get`` counts
visits are said in the summary: Matomo's data retention ("delete old raw data")
removes the log and keeps the reports, so these days cannot be imported visit by
visit. Timeouts, connection errors, 5xx answers and Matomo's "max execution time"
error are retried with backoff (the page size halves after a timeout); a refused
token or site stops the pull with Matomo's message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backfill.checkpoint import utc_now, write_atomically
from backfill.errors import ConfigError
from backfill.pull import Pulled, PullSettings, PullStopped, day_range, read_secret_file, safe_name, scrub

TOKEN_ENV = "MATOMO_TOKEN_AUTH"
DEFAULT_PAGE_VISITS = 500
MIN_PAGE_VISITS = 2
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
#: Matomo's answers that say the token or the access is wrong (retrying cannot help).
_REFUSED = re.compile(r"token|authenticat|access|log ?in|permission|not allowed", re.I)
_SLOW = re.compile(r"max(imum)? execution time|timeout|too long", re.I)
_VISIT_ID = re.compile(rb'"idVisit"\s*:\s*"?(\d+)')


@dataclass(frozen=True)
class Target:
    """Where to pull from: the API endpoint and the site id (the token is kept apart)."""

    endpoint: str
    site: int
    label: str  # host + path, for messages and the folder name
    spec: str  # as the user wrote it (no token: it is refused in the URL)


def parse_target(spec: str) -> Target:
    """``https://host/path?idSite=3`` -> its endpoint (``.../index.php``) and site."""
    parsed = urllib.parse.urlsplit(spec)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"matomo-api:{spec}: give the Matomo URL, e.g. matomo-api:https://example.matomo.cloud/?idSite=1"
        )
    query = dict(urllib.parse.parse_qsl(parsed.query))
    if any(k.lower() == "token_auth" for k in query):
        raise ConfigError(
            "matomo-api: the token must not be part of the URL (it would be shown and stored): "
            f"put it in {TOKEN_ENV} or a --matomo-token-file"
        )
    site = next((v for k, v in query.items() if k.lower() == "idsite"), None)
    if site is None or not site.isdigit():
        raise ConfigError(f"matomo-api:{spec}: name the site with ?idSite=N (Matomo: Administration > Websites)")
    path = parsed.path if parsed.path.endswith(".php") else parsed.path.rstrip("/") + "/index.php"
    endpoint = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))
    return Target(endpoint, int(site), f"{parsed.netloc}{parsed.path.rstrip('/')}", spec)


class MatomoApi:
    """POSTs to Matomo's API: retries, and its ``{"result": "error"}`` answers turned into errors."""

    def __init__(self, target: Target, token: str, client: httpx.Client, stop: threading.Event) -> None:
        self.target = target
        self._token = token
        self.client = client
        self.stop = stop

    def call(self, method: str, done: str, *, shrinkable: bool = False, **params: Any) -> Any:
        """The answer of ``method``; with ``shrinkable``, a timeout raises ``TooSlow`` at once
        (the caller asks again for less) instead of being retried as it is."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise KeyboardInterrupt from None
            query = {"module": "API", "method": method, "format": "JSON", "idSite": str(self.target.site)}
            query.update({k: str(v) for k, v in params.items()})
            try:  # the parameters in the URL as Matomo's examples write them, and again with the token in the body
                response = self.client.post(
                    self.target.endpoint, params=query, data={**query, "token_auth": self._token}
                )
            except httpx.TimeoutException:
                if shrinkable:
                    raise TooSlow(f"{method} timed out") from None
                attempt = self._backoff(attempt, f"{method} timed out", done)
                continue
            except httpx.TransportError as exc:
                attempt = self._backoff(attempt, f"{method}: {type(exc).__name__}", done)
                continue
            if response.status_code >= 500 or response.status_code == 429:
                attempt = self._backoff(attempt, f"{method}: HTTP {response.status_code}", done)
                continue
            answer = self._answer(response, method)
            if isinstance(answer, dict) and answer.get("result") == "error":
                message = self.scrub(str(answer.get("message", "")))
                if _SLOW.search(message) and not _REFUSED.search(message):
                    if shrinkable:
                        raise TooSlow(message)
                    attempt = self._backoff(attempt, f"{method}: {message}", done)
                    continue
                raise ConfigError(self._refusal(method, message, done))
            if response.status_code >= 400:
                raise ConfigError(self._refusal(method, f"HTTP {response.status_code}", done))
            return answer

    def _answer(self, response: httpx.Response, method: str) -> Any:
        try:
            return response.json()
        except ValueError:
            start = self.scrub(response.text[:120]).strip()
            raise ConfigError(
                f"{self.target.endpoint} did not answer {method} with JSON ({start!r}): is this Matomo's URL?"
            ) from None

    def _refusal(self, method: str, message: str, done: str) -> str:
        why = f"Matomo refused {method} for site {self.target.site}: {message}"
        if _REFUSED.search(message):
            why += (
                f". Check the token (Matomo: Personal > Security > Auth tokens; a token may expire) in "
                f"{TOKEN_ENV} or --matomo-token-file, and that it has view access to site {self.target.site}"
            )
        return f"{why}. {done}"

    def scrub(self, text: str) -> str:
        return scrub(text, self._token, urllib.parse.quote(self._token))

    def _backoff(self, attempt: int, why: str, done: str) -> int:
        attempt += 1
        if attempt >= MAX_ATTEMPTS:
            raise PullStopped(f"Matomo kept failing ({self.scrub(why)}) after {attempt} attempts. {done}") from None
        if self.stop.wait(min(60.0, BACKOFF_BASE_S * 2 ** (attempt - 1))):
            raise KeyboardInterrupt
        return attempt


class TooSlow(Exception):
    """A page timed out, or Matomo gave up on it ("max execution time"): ask for fewer visits."""


@dataclass
class DayState:
    """One day in ``pull.json``: the next offset to ask for, pages saved, visits, done or not."""

    offset: int = 0
    pages: int = 0
    visits: int = 0
    overlaps: int = 0  # visits a page repeated (pages shifting as visits arrived)
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Manifest:
    """The folder's ``pull.json``: what each day holds (written atomically after every page)."""

    path: Path
    source: dict[str, Any]
    days: dict[str, DayState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, source: dict[str, Any]) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, source)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: the pull's record is damaged ({exc}); delete the folder to pull again") from exc
        if data.get("source") != source:
            raise ConfigError(
                f"{path.parent} holds a pull of {data.get('source')}, not {source}: use another --pull-dir"
            )
        days = {d: DayState(**s) for d, s in (data.get("days") or {}).items()}
        return cls(path, source, days)

    def save(self) -> None:
        data = {"source": self.source, "updated": utc_now(), "days": {d: s.to_dict() for d, s in self.days.items()}}
        write_atomically(self.path, json.dumps(data, indent=1).encode())


def page_file(folder: Path, day: dt.date, n: int) -> Path:
    return folder / f"{day:%Y-%m}" / f"{day.isoformat()}.p{n:04d}.json"


def token_from(settings: PullSettings) -> str:
    if settings.matomo_token_file:
        return read_secret_file(settings.matomo_token_file, "Matomo token")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(
            f"matomo-api needs a token with view access to the site: set {TOKEN_ENV} (Matomo: Personal > "
            "Security > Auth tokens) or pass --matomo-token-file FILE"
        )
    return token


def site_zone(name: str) -> dt.tzinfo:
    """Matomo's site time zone: an IANA name, or ``UTC+5.5`` / ``UTC-3``."""
    match = re.fullmatch(r"UTC([+-]\d+(?:\.\d+)?)?", name or "UTC")
    if match:
        return dt.timezone(dt.timedelta(hours=float(match.group(1) or 0)))
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception as exc:
        raise ConfigError(f"Matomo's site time zone {name!r} is unknown here (install tzdata)") from exc


def pull_matomo(spec: str, settings: PullSettings, progress: Any, stop: threading.Event, say: Any) -> Pulled:
    """Pull every day of the window not complete yet; the page files of all its days."""
    target = parse_target(spec)
    token = token_from(settings)
    folder = settings.folder / safe_name(f"matomo-{target.label}-site{target.site}")
    manifest = Manifest.load(folder / "pull.json", {"endpoint": target.endpoint, "idSite": target.site})
    with httpx.Client(timeout=settings.timeout, verify=not settings.insecure) as client:
        api = MatomoApi(target, token, client, stop)
        site = api.call("SitesManager.getSiteFromId", "Nothing was pulled.")
        if not isinstance(site, dict) or "idsite" not in {k.lower() for k in site}:
            raise ConfigError(f"{target.endpoint}: SitesManager.getSiteFromId gave no site {target.site}")
        zone = site_zone(str(site.get("timezone") or "UTC"))
        created = created_day(site)
        days = day_range(settings.since, settings.until, zone, created)
        todo = [d for d in days if not (manifest.days.get(d.isoformat()) or DayState()).complete]
        reported, unreported = _reported_visits(api, days, "Nothing was pulled.")
        if todo:
            say(f"pulling {len(todo):,} of {len(days):,} days of Matomo site {target.site} into {folder}")
        page_visits = settings.page_size or DEFAULT_PAGE_VISITS
        for n, day in enumerate(todo):
            done = f"{len(days) - len(todo) + n:,} of {len(days):,} days are pulled (kept in {folder})."
            page_visits = _pull_day(api, manifest, folder, day, page_visits, done)
            if progress:
                progress("pull", len(days) - len(todo) + n + 1, len(days), f"site {target.site}")
    files = sorted(str(p) for d in days for p in _day_pages(folder, d, manifest.days[d.isoformat()]))
    notes = _notes(target, site, days, todo, manifest, reported, folder)
    if unreported:
        notes.append(f"Matomo: days without a visit log could not be found ({unreported})")
    return Pulled(files=files, format="matomo_live", preset="matomo-live", notes=notes)


def created_day(site: dict[str, Any]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(site.get("ts_created", ""))[:10])
    except ValueError:
        return None


def _reported_visits(api: MatomoApi, days: list[dt.date], done: str) -> tuple[dict[str, int], str | None]:
    """Visits per day in Matomo's reports (``VisitsSummary.get``), a year per call, and why
    there are none (a token without access to the reports, a Matomo without the plugin)."""
    out: dict[str, int] = {}
    for start in range(0, len(days), 366):
        chunk = days[start : start + 366]
        try:
            answer = api.call("VisitsSummary.get", done, period="day", date=f"{chunk[0]},{chunk[-1]}")
        except ConfigError as exc:
            return {}, str(exc).split(". ", 1)[0]
        if isinstance(answer, dict):
            for day, figures in answer.items():
                visits = figures.get("nb_visits") if isinstance(figures, dict) else None
                out[day] = int(visits or 0)
    return out, None


def _pull_day(api: MatomoApi, manifest: Manifest, folder: Path, day: dt.date, limit: int, done: str) -> int:
    """Every page of one day; returns the page size that worked (it halves after timeouts)."""
    state = manifest.days.setdefault(day.isoformat(), DayState())
    seen = _saved_ids(folder, day, state)
    slow = 0
    while True:
        try:
            page = api.call(
                "Live.getLastVisitsDetails",
                done,
                period="day",
                date=day.isoformat(),
                filter_limit=limit,
                filter_offset=state.offset,
                filter_sort_order="asc",
                shrinkable=True,
            )
        except TooSlow as why:
            slow += 1
            if slow >= MAX_ATTEMPTS:
                raise PullStopped(f"Matomo cannot answer pages of {limit} visits of {day} ({why}). {done}") from None
            limit = max(MIN_PAGE_VISITS, limit // 2)
            if api.stop.wait(min(60.0, BACKOFF_BASE_S * 2 ** (slow - 1))):
                raise KeyboardInterrupt from None
            continue
        slow = 0
        if not isinstance(page, list):
            raise ConfigError(f"Live.getLastVisitsDetails did not answer a list of visits for {day}. {done}")
        fresh = [v for v in page if isinstance(v, dict) and str(v.get("idVisit")) not in seen]
        state.overlaps += len(page) - len(fresh)
        if fresh:
            state.pages += 1
            data = json.dumps(fresh, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            write_atomically(page_file(folder, day, state.pages), api.scrub(data.decode()).encode("utf-8"))
            seen.update(str(v.get("idVisit")) for v in fresh)
            state.visits += len(fresh)
        state.offset += len(page)
        state.complete = len(page) < limit
        manifest.save()
        if state.complete:
            return limit


def _day_pages(folder: Path, day: dt.date, state: DayState) -> list[Path]:
    return [page_file(folder, day, n) for n in range(1, state.pages + 1)]


def _saved_ids(folder: Path, day: dt.date, state: DayState) -> set[str]:
    """The visit ids in a day's pages saved by an earlier, stopped run."""
    ids: set[str] = set()
    for path in _day_pages(folder, day, state):
        if path.exists():
            ids.update(m.decode() for m in _VISIT_ID.findall(path.read_bytes()))
    return ids


def _notes(
    target: Target,
    site: dict[str, Any],
    days: list[dt.date],
    todo: list[dt.date],
    manifest: Manifest,
    reported: dict[str, int],
    folder: Path,
) -> list[str]:
    from backfill.sources import day_ranges

    name = site.get("name") or f"site {target.site}"
    visits = sum(manifest.days[d.isoformat()].visits for d in days)
    notes = [
        f"Matomo {target.label}, site {target.site} ({name}, {site.get('timezone') or 'UTC'}): "
        f"{visits:,} visits on {len(days):,} day(s), {len(todo):,} pulled now; pages in {folder}"
    ]
    overlaps = sum(manifest.days[d.isoformat()].overlaps for d in todo)
    if overlaps:
        notes.append(f"Matomo: {overlaps:,} visits came twice while paging (new visits shift the pages): kept once")
    purged, short, extra = [], [], []
    lost = 0
    for day in days:
        have, count = manifest.days[day.isoformat()].visits, reported.get(day.isoformat())
        if count is None or count == have:
            continue
        if have == 0:
            purged.append(day.isoformat())
            lost += count
        elif have < count:
            short.append(f"{day} ({have:,} of {count:,})")
        else:
            extra.append(f"{day} ({have:,}, reports {count:,})")
    if purged:
        first, last = dt.date.fromisoformat(purged[0]), dt.date.fromisoformat(purged[-1])
        notes.append(
            f"Matomo: the visit log of {len(purged):,} day(s) is empty while its reports count {lost:,} visits "
            "(raw data deleted by Matomo's data retention?); nothing of these days can be imported visit by "
            f"visit: {', '.join(day_ranges(purged))}. Their reports can be: backfill import "
            f"'matomo-reports:{target.spec}' --since {first} --until {last + dt.timedelta(days=1)} -m ga_report "
            "(a separate import; only days without a visit log are taken)"
        )
    if short:
        notes.append(
            "Matomo: fewer visits in the visit log than in the reports (part of the log deleted?): " + ", ".join(short)
        )
    if extra:
        notes.append(
            "Matomo: more visits in the visit log than in the reports (reports not archived since?): "
            + ", ".join(extra)
        )
    return notes


__all__ = ["MatomoApi", "Target", "parse_target", "pull_matomo"]
