"""Reading Umami back day by day and list by list, and comparing with the expected figures."""

from __future__ import annotations

import datetime as dt
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from .diagnose import diagnose
from .expected import CLICKHOUSE, POSTGRES, Expected, TopExpected, collect_expected
from .reader import STATS_WORKERS, EndpointMissing, UmamiReader
from .result import (
    DAY_METRICS,
    DEFAULT_TOP,
    TOP_LISTS,
    DayRow,
    Difference,
    TopList,
    TopRow,
    VerifyResult,
    display_label,
)
from .tolerance import Tolerance, default_tolerance

#: Days per /pageviews and /events/series request (Umami demotes unit=day beyond ~6 months).
WINDOW_DAYS = 90
#: How far back from now "landed now" looks, after the expected range.
RECENT_DAYS = 30
#: Lines of each top-N list.
#: Top-N lists: name -> (Umami /metrics type, what is counted).


@dataclass(frozen=True)
class VerifySettings:
    host: str
    website: str
    timezone: str = "UTC"
    tolerance: Tolerance | None = None  # None: default_tolerance(reader format)
    top: int = DEFAULT_TOP
    insecure: bool = False
    timeout: float = 60.0
    store: str = "auto"  # where Umami keeps its data: auto (told by its answers), postgres, clickhouse
    api_url: str | None = None  # the read API's base when it is not {host}/api (Umami Cloud)


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


def _day_bounds(day: dt.date, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
    """[start, end] of a local day in unix ms, both inclusive (Umami's ``between``)."""
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1


def clip(bounds: tuple[int, int], since: int | None, until: int | None, hourly: bool = False) -> tuple[int, int]:
    """A range cut to --since/--until. ``hourly`` (Umami on ClickHouse, whose reports read rows
    that start at the hour): the cuts move to whole hours, so the hours they fall in count whole."""
    lo, hi = bounds
    if hourly:
        since = None if since is None else since - since % 3600
        until = None if until is None else until + (-until) % 3600
    if since is not None:
        lo = max(lo, since * 1000)
    if until is not None:
        hi = min(hi, until * 1000 - 1)
    return lo, hi


def _windows(first: dt.date, last: dt.date, size: int = WINDOW_DAYS) -> Iterable[tuple[dt.date, dt.date]]:
    day = first
    while day <= last:
        end = min(last, day + dt.timedelta(days=size - 1))
        yield day, end
        day = end + dt.timedelta(days=1)


def run_verify(
    config: RunConfig,
    settings: VerifySettings,
    progress: Callable[..., None] | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> VerifyResult:
    """Compute the expected figures, read Umami, compare and diagnose."""
    started = time.monotonic()
    say = say or (lambda _m: None)
    zone = check_timezone(settings.timezone)
    reader = UmamiReader(
        settings.host,
        settings.website,
        api_url=settings.api_url,
        insecure=settings.insecure,
        timeout=settings.timeout,
        env=env,
    )
    with reader:
        site = reader.website_info()  # fails fast on a wrong website or credentials, before reading sources
        store, how = _store(reader, settings, now)
        say(f"Umami keeps this website's data in {STORE_NAMES[store]} ({how})")
        expected, reader_format = collect_expected(config, settings.timezone, progress, stop, store)
        tolerance = settings.tolerance or default_tolerance(reader_format)
        result = VerifyResult(
            host=settings.host,
            website=settings.website,
            timezone=settings.timezone,
            tolerance=tolerance,
            visits_mode=expected.visits_mode,
            expected_rows=expected.rows,
            first_day=expected.days[0] if expected.days else None,
            last_day=expected.days[-1] if expected.days else None,
            revenue=expected.revenue,
            source_ledger=expected.ledger,
        )
        if not expected.days:
            raise ConfigError("the sources hold no row that import would send: nothing to verify")
        if store == CLICKHOUSE:
            result.notes.append(
                "compared as Umami on ClickHouse counts (" + how + "): days by the hour each event's hour starts "
                "in, referrers other than the stored hostname (www. kept), each pageview's own browser, OS and "
                "country; its visitor and visit counts are ClickHouse's uniq(), exact up to about 65,000 distinct "
                "values and within about 1% beyond"
            )
        if settings.tolerance is None and not tolerance.exact:
            result.notes.append(
                f"tolerance {tolerance.describe()} (the default for {reader_format}: its events are synthesized "
                "from per-day totals); --tolerance 0 compares exactly"
            )
        say(f"reading website {site.get('name', '?')} ({site.get('domain', '?')}) on {settings.host}")
        _read_and_compare(reader, config, settings, zone, expected, result, now)
        result.requests = reader.requests
    result.elapsed_s = time.monotonic() - started
    return result


STORE_NAMES = {POSTGRES: "PostgreSQL", CLICKHOUSE: "ClickHouse"}


def _store(reader: UmamiReader, settings: VerifySettings, now: float | None) -> tuple[str, str]:
    """The store to model and how it was chosen: --store, else the server's time labels."""
    if settings.store != "auto":
        return settings.store, "--store"
    found = reader.store(int((time.time() if now is None else now) * 1000))
    if found is None:
        return POSTGRES, "no pageview yet to tell by; --store clickhouse if it runs on ClickHouse"
    return found, "told by how it labels time buckets"


def _read_and_compare(
    reader: UmamiReader,
    config: RunConfig,
    settings: VerifySettings,
    zone: zoneinfo.ZoneInfo,
    expected: Expected,
    result: VerifyResult,
    now: float | None,
) -> None:
    tz = settings.timezone
    since, until = config.since, config.until
    hourly = expected.store == CLICKHOUSE

    def _clip(bounds: tuple[int, int], since: int | None, until: int | None) -> tuple[int, int]:
        return clip(bounds, since, until, hourly)

    first, last = expected.days[0], expected.days[-1]
    one = dt.timedelta(days=1)
    # Per-day series over the range and one day either side (events shifted by a zone error land there).
    series_pv: dict[dt.date, tuple[int, int]] = {}
    series_ev: dict[dt.date, Counter[str]] | None = {}
    for w_first, w_last in _windows(first - one, last + one):
        lo, hi = _clip((_day_bounds(w_first, zone)[0], _day_bounds(w_last, zone)[1]), since, until)
        if lo > hi:
            continue
        series_pv.update(reader.pageview_days(lo, hi, tz))
        if series_ev is not None:
            try:
                for day, names in reader.event_days(lo, hi, tz).items():
                    series_ev.setdefault(day, Counter()).update(names)
            except EndpointMissing:
                series_ev = None
    active = set(expected.days)
    active |= {d for d, (pv, _s) in series_pv.items() if pv}
    if series_ev is not None:
        active |= {d for d, names in series_ev.items() if sum(names.values())}
    days = sorted(d for d in active if first - one <= d <= last + one)

    def day_stats(day: dt.date) -> tuple[dt.date, dict[str, int], Counter[str] | None]:
        lo, hi = _clip(_day_bounds(day, zone), since, until)
        stats = reader.stats(lo, hi)
        names = None
        if series_ev is None:  # no /events/series: this day's custom events from /metrics
            names = Counter({str(x): y for x, y in reader.metrics("event", lo, hi)})
        return day, stats, names

    with ThreadPoolExecutor(max_workers=STATS_WORKERS) as pool:
        answers = list(pool.map(day_stats, days))
    tol = result.tolerance
    bucket_mismatch: list[str] = []
    for day, stats, names in answers:
        events_found = names if names is not None else (series_ev or {}).get(day, Counter())
        row = DayRow(
            day=day,
            expected=expected.day_figures(day),
            found={
                "pageviews": stats["pageviews"],
                "visitors": stats["visitors"],
                "visits": stats["visits"],
                "events": sum(events_found.values()),
            },
            events_expected=expected.events.get(day, Counter()),
            events_found=events_found,
        )
        for metric in DAY_METRICS:
            if not tol.allows(row.expected[metric], row.found[metric]):
                row.differs.append(metric)
                result.differences.append(Difference(day.isoformat(), metric, row.expected[metric], row.found[metric]))
        for name in sorted(set(row.events_expected) | set(row.events_found)):
            exp_n, found_n = row.events_expected.get(name, 0), row.events_found.get(name, 0)
            if not tol.allows(exp_n, found_n):
                row.events_differ.append(name)
                if "events" not in row.differs:  # the total already names the day otherwise
                    result.differences.append(Difference(day.isoformat(), f"events '{name}'", exp_n, found_n))
        bucketed = series_pv.get(day, (0, 0))[0]
        if bucketed != stats["pageviews"]:
            bucket_mismatch.append(f"{day}: {bucketed:,} vs {stats['pageviews']:,}")
        result.days.append(row)
    if bucket_mismatch:
        result.notes.append(
            f"Umami's daily buckets (/pageviews?unit=day&timezone={tz}) disagree with its totals for the same "
            f"local days ({'; '.join(bucket_mismatch[:3])}): the server buckets days in another zone than "
            "the one asked for. The table uses the totals of each local day's own time range."
        )
    if series_ev is None:
        result.notes.append("this Umami has no /events/series: custom events read per day from /metrics?type=event")
    # Whole range: top lists.
    range_lo, range_hi = _clip((_day_bounds(first, zone)[0], _day_bounds(last, zone)[1]), since, until)
    for name, (kind, counted) in TOP_LISTS.items():
        top = _compare_top(reader, name, kind, counted, expected.top[name], (range_lo, range_hi), tol, settings.top)
        result.top.append(top)
    for top in result.top:
        for row in top.rows:
            if row.differs:
                result.differences.append(
                    Difference(f"top {top.name}", display_label(row.value), row.expected, row.found)
                )
    # After the range: what landed "now".
    now_ms = int((time.time() if now is None else now) * 1000)
    after = max(range_hi + 1, now_ms - RECENT_DAYS * 86_400_000)
    if after < now_ms:
        recent = reader.stats(after, now_ms + 3_600_000)
        recent_events = sum(y for _x, y in reader.metrics("event", after, now_ms + 3_600_000))
        result.recent = {
            "from_ms": after,
            "pageviews": recent["pageviews"],
            "visitors": recent["visitors"],
            "events": recent_events,
        }
    result.diagnoses = diagnose(expected, result)


def _compare_top(
    reader: UmamiReader,
    name: str,
    kind: str,
    counted: str,
    expected: TopExpected,
    bounds: tuple[int, int],
    tol: Tolerance,
    n: int,
) -> TopList:
    """One top list: the expected top n and the found top n, each with both counts."""
    out = TopList(name=name, counted=counted, unpredictable=expected.unpredictable)
    try:
        found_rows = reader.metrics(kind, *bounds)
    except EndpointMissing:
        out.unpredictable = out.unpredictable or f"this Umami has no /metrics?type={kind}"
        return out
    found: Counter[Any] = Counter()
    for value, count in found_rows:
        found[value] += count
    out.found_total = sum(found.values())
    exp = expected.counts
    keys: list[Any] = []
    for value, _c in sorted(exp.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]:
        keys.append(value)
    for value, _c in sorted(found.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]:
        if value not in keys:
            keys.append(value)
    compare = expected.unpredictable is None
    for value in keys:
        e, f = exp.get(value, 0), found.get(value, 0)
        out.rows.append(TopRow(value, e if compare else 0, f, compare and not tol.allows(e, f)))
    out.rows.sort(key=lambda r: (-max(r.expected, r.found), str(r.value)))
    return out
