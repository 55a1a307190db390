"""Plausible CSV export (per-day tables) -> individual synthetic events, deterministically.

A Plausible export holds per-day TOTALS, one table per breakdown. Umami stores
events. This module invents, for one day, events whose Umami counts reproduce the
export's ``visitors`` table exactly, then shapes them after the other tables:

* **visitors table, exact** (within what Umami can represent, see ``plan_day``):
  V visitors (ids ``pl-syn-<YYYYMMDD>-<n>``), S visits, P pageviews, B bounces
  (visits of exactly one pageview), and the total visit duration (a visit's
  duration is last minus first pageview time; Umami's ``totaltime``). Every visit
  lies inside ONE UTC clock hour and each visitor's visits are in distinct hours,
  because Umami's visit is "this session in this clock hour".
* **pages, exact per page** when the pages table adds up to P; otherwise the
  difference is filled with ``/(other)`` or the pages are scaled down
  (largest remainder), and the residual is reported.
* **entry / exit pages, exact per page** when the tables are consistent (see
  ``assign_visit_pages``): a visit's first pageview is its entry page, its last its
  exit page, one-pageview visits land on the entry table's bounces per page, and
  the pageviews in between come from what the pages table has left, so pageviews
  per page stay exact. Priority when tables disagree: visitors table, then pages,
  then entry/exit pages; the residual is reported (``entry_pages``, ``exit_pages``).
* **custom events, exact per name** (Plausible's ``engagement`` is skipped),
  attached to existing visits (they never change visitor/visit/bounce counts).
  When the table's ``visitors`` per name is known (``event_visitors``), exactly
  that many distinct visitors of the day carry the name (each at least one event),
  clamped to [1, min(events, the day's visitors)] (residual ``custom_events``,
  in visitors per name).
* **custom props**: for each property, ``events`` of the day's custom events carry
  its value (one value per event and property), as the JSON text ``props_json``;
  more than the day's custom events are scaled down (residual ``custom_props``).
* **sources**: the first pageview of a visit carries the referrer and utm tags,
  so visits per source equal the table when it adds up to S (else scaled / the
  rest direct, reported).
* **devices, browsers, operating systems, locations**: one value per visitor,
  visitors per value equal the table when it adds up to V (else scaled / the
  rest unknown, reported). The four are drawn independently of each other.

Invented (not in an export): which visit saw which pages (within the tables'
totals), which custom event carries which property value, times of day, which visitor
had which device/browser/os/location together. Seeded by the export's content
and the day, so the same export always gives the same events.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import urllib.parse
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from backfill.synthesize import (
    HOURS_PER_DAY,
    OTHER_PAGE,
    _distinct_hours,
    _distribute,
    assign_per_visitor,
    day_seed,
    scale_counts,
)

#: Longest duration a visit can have and stay inside one clock hour (seconds).
MAX_VISIT_SECONDS = 3599
#: Plausible's internal engagement pings: not a goal, skipped by default.
ENGAGEMENT_EVENT = "engagement"
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")

#: The synthesizer's output columns, in order (``_row`` is added by the reader).
OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.String(),  # ISO 8601 UTC, "2024-03-01T08:13:27Z"
    "visitor_id": pl.String(),
    "event_name": pl.String(),  # null for pageviews
    "url": pl.String(),  # path; the landing pageview of a tagged visit carries ?utm_...
    "hostname": pl.String(),
    "referrer": pl.String(),
    "utm_source": pl.String(),
    "utm_medium": pl.String(),
    "utm_campaign": pl.String(),
    "utm_content": pl.String(),
    "utm_term": pl.String(),
    "device": pl.String(),  # Plausible's raw names: Desktop / Laptop / Mobile / Tablet
    "browser": pl.String(),
    "os": pl.String(),
    "country": pl.String(),  # ISO 3166-1 alpha-2
    "region": pl.String(),  # ISO 3166-2
    "city": pl.String(),  # English name (the export's GeoNames id, resolved)
    "props_json": pl.String(),  # custom events: {"<property>": "<value>", ...} as JSON text; else null
    "synthetic": pl.Boolean(),
}

#: Plausible source names (no referrer URL in the row) -> a referrer Umami groups under that site.
KNOWN_SOURCES = {
    "google": "https://www.google.com/",
    "bing": "https://www.bing.com/",
    "duckduckgo": "https://duckduckgo.com/",
    "yahoo": "https://search.yahoo.com/",
    "ecosia": "https://www.ecosia.org/",
    "facebook": "https://www.facebook.com/",
    "twitter": "https://t.co/",
    "x": "https://t.co/",
    "linkedin": "https://www.linkedin.com/",
    "reddit": "https://www.reddit.com/",
    "hacker news": "https://news.ycombinator.com/",
    "github": "https://github.com/",
    "youtube": "https://www.youtube.com/",
    "instagram": "https://www.instagram.com/",
}


@dataclass(frozen=True)
class Source:
    """Where a visit came from: Plausible's source, referrer and utm tags ('' = none)."""

    source: str = ""
    referrer: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_content: str = ""
    utm_term: str = ""

    def label(self) -> str:
        parts = [self.source or "Direct / None"]
        parts += [f"{k}={getattr(self, k)}" for k in UTM_FIELDS if getattr(self, k)]
        return " ".join(parts)

    def referrer_url(self) -> str | None:
        ref = self.referrer.strip()
        if ref:
            return ref if "://" in ref else f"https://{ref.lstrip('/')}"
        name = self.source.strip().lower()
        if name in KNOWN_SOURCES:
            return KNOWN_SOURCES[name]
        if name and "." in name and " " not in name:
            return f"https://{name}/"
        return None

    def utm_query(self) -> str | None:
        pairs = [(k, getattr(self, k)) for k in UTM_FIELDS if getattr(self, k)]
        return urllib.parse.urlencode(pairs) if pairs else None


@dataclass
class PlausibleDay:
    """Everything an export says about one day (its site-local date, placed as a UTC day)."""

    day: dt.date
    visitors: int = 0
    visits: int = 0
    pageviews: int = 0
    bounces: int = 0
    visit_duration: int = 0  # total seconds
    has_totals: bool = False  # False: no visitors-table row for this day
    pages: list[tuple[str, str, int]] = field(default_factory=list)  # (hostname, page, pageviews)
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (name, path, events)
    sources: list[tuple[Source, int]] = field(default_factory=list)  # visits
    devices: list[tuple[str, int]] = field(default_factory=list)  # visitors
    browsers: list[tuple[str, int]] = field(default_factory=list)
    oses: list[tuple[str, int]] = field(default_factory=list)
    locations: list[tuple[tuple[str, str, str], int]] = field(default_factory=list)  # ((country, region, city), n)
    entries: list[tuple[str, int, int]] = field(default_factory=list)  # (entry page, entrances, bounces)
    exits: list[tuple[str, int]] = field(default_factory=list)  # (exit page, exits)
    props: list[tuple[str, str, int]] = field(default_factory=list)  # (property, value, events)
    #: custom_events' visitors per event name (summed over its rows); a name absent: not constrained
    event_visitors: dict[str, int] = field(default_factory=dict)


@dataclass
class DayResult:
    """What was synthesized for one day (Umami's terms), the notes and the residuals per table."""

    day: dt.date
    visitors: int
    visits: int
    pageviews: int
    bounces: int
    visit_duration: int
    events: dict[str, int]
    notes: list[str]
    residuals: dict[str, dict[str, Any]]  # table -> {"table": n, "synthesized": m, "diff": {...}}

    def summary(self) -> dict[str, Any]:
        return {
            "visitors": self.visitors,
            "visits": self.visits,
            "pageviews": self.pageviews,
            "bounces": self.bounces,
            "visit_duration": self.visit_duration,
            "events": self.events,
        }


def visitor_id(day: dt.date, n: int) -> str:
    return f"pl-syn-{day:%Y%m%d}-{n}"


def plan_day(pageviews: int, visitors: int, visits: int, bounces: int) -> tuple[int, int, int, list[str]]:
    """(visitors, visits, bounces) Umami can show with ``pageviews`` pageviews, and notes on any clamp.

    1 <= V <= P; V <= S <= min(P, 24 V); B bounces need S - B visits of >= 2 pageviews
    (B >= 2S - P) and, when P > S, at least one visit of two or more (B <= S - 1).
    """
    notes: list[str] = []
    if pageviews <= 0:
        if visitors or visits:
            notes.append(f"{visitors} visitors / {visits} visits without pageviews: Umami counts none")
        return 0, 0, 0, notes
    v = min(max(visitors, 1), pageviews)
    if v != visitors:
        notes.append(f"visitors {visitors} with {pageviews} pageviews: {v} visitors")
    upper = min(pageviews, HOURS_PER_DAY * v)
    s = min(max(visits, v), upper)
    if s != visits:
        notes.append(f"visits {visits} outside [{v}, {upper}] (visitors .. min(pageviews, 24 x visitors)): {s} visits")
    low = max(0, 2 * s - pageviews)
    high = s if pageviews == s else s - 1
    b = min(max(bounces, low), high)
    if b != bounces:
        notes.append(f"bounces {bounces} impossible with {s} visits and {pageviews} pageviews: {b} bounces")
    return v, s, b, notes


def split_total(rnd: random.Random, total: int, parts: int, cap: int) -> list[int]:
    """``total`` over ``parts`` values in [0, cap], randomly uneven; exact when total <= parts * cap."""
    if parts <= 0:
        return []
    target = min(total, parts * cap)
    weights = [0.3 + rnd.random() for _ in range(parts)]
    scale = target / sum(weights)
    out = [min(cap, int(w * scale)) for w in weights]
    remaining = target - sum(out)
    while remaining > 0:
        open_ = [i for i in range(parts) if out[i] < cap]
        step = -(-remaining // len(open_))
        for i in open_:
            add = min(step, cap - out[i], remaining)
            out[i] += add
            remaining -= add
            if not remaining:
                break
    return out


def _diff(table: dict[Any, int], made: dict[Any, int]) -> dict[str, int]:
    keys = list(dict.fromkeys([*table, *made]))
    return {_key_text(k): made.get(k, 0) - table.get(k, 0) for k in keys if made.get(k, 0) != table.get(k, 0)}


def _key_text(key: Any) -> str:
    if isinstance(key, Source):
        return key.label()
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key if k) or "(unknown)"
    return str(key) if key not in (None, "") else "(unknown)"


def _paths(counts: Counter[tuple[str, str]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (_, path), n in counts.items():
        out[path] += n
    return dict(out)


def _residual(residuals: dict[str, dict[str, Any]], table: str, wanted: dict[Any, int], made: dict[Any, int]) -> None:
    diff = _diff(wanted, made)
    if diff:
        residuals[table] = {"table": sum(wanted.values()), "synthesized": sum(made.values()), "diff": diff}


def _take(counts: Counter[Hashable], key: Hashable, n: int) -> None:
    counts[key] -= n
    if counts[key] <= 0:
        del counts[key]


def _slots(rnd: random.Random, counts: dict[Hashable, int], n: int) -> list[Hashable]:
    """``n`` keys drawn without replacement from the multiset ``counts`` (all of them when it holds fewer)."""
    pool = [k for k, c in counts.items() for _ in range(max(c, 0))]
    rnd.shuffle(pool)
    return pool[: max(n, 0)]


def assign_visit_pages(
    rnd: random.Random,
    pages: dict[Hashable, int],
    views: list[int],
    entries: dict[Hashable, int],
    bounce_entries: dict[Hashable, int],
    exits: dict[Hashable, int],
) -> list[list[Hashable]]:
    """The pages of each visit (``views[i]`` each): first page from ``entries``, last from ``exits``.

    ``pages`` (pageviews per page, adding up to ``sum(views)``) is always met exactly; entrances
    and exits per page are met exactly when the tables are consistent: entrances and exits each
    add up to the visits, bounces per entry page add up to the one-pageview visits and fit
    under both entrances and exits, and entrances + exits - bounces <= pageviews per page.
    Otherwise the nearest the pages allow (the caller reports the residual).
    """
    n_visits = len(views)
    bounce_idx = [i for i, m in enumerate(views) if m == 1]
    multi_idx = [i for i, m in enumerate(views) if m > 1]
    left: Counter[Hashable] = Counter({k: n for k, n in pages.items() if n > 0})
    ent = Counter(dict(zip(entries, scale_counts(list(entries.values()), n_visits), strict=True)))
    ext = Counter(dict(zip(exits, scale_counts(list(exits.values()), n_visits), strict=True)))
    # one-pageview visits: a page that is both entry and exit, preferably the entry table's bounces
    want_b = Counter(
        dict(zip(bounce_entries, scale_counts(list(bounce_entries.values()), len(bounce_idx)), strict=True))
    )
    bounce_pages: list[Hashable] = []
    rooms = (
        lambda: {k: min(n, ent[k], ext[k], left[k]) for k, n in want_b.items()},
        lambda: {k: min(ent[k], ext[k], left[k]) for k in left},  # then any page open as entry and exit
        lambda: dict(left),  # then any page with pageviews left
    )
    for room in rooms:
        for k in _slots(rnd, room(), len(bounce_idx) - len(bounce_pages)):
            bounce_pages.append(k)
            for c in (ent, ext, left):
                _take(c, k, 1)
    n_multi = len(multi_idx)
    e_take = Counter({k: min(n, left[k]) for k, n in ent.items() if min(n, left[k]) > 0})
    e_list = _slots(rnd, e_take, n_multi)
    for k in e_list:
        _take(left, k, 1)
    x_take = Counter({k: min(n, left[k]) for k, n in ext.items() if min(n, left[k]) > 0})
    x_list = _slots(rnd, x_take, n_multi)
    for k in x_list:
        _take(left, k, 1)
    for chosen in (e_list, x_list):  # tables short of visits: the rest from the pageviews left
        for k in _slots(rnd, dict(left), n_multi - len(chosen)):
            chosen.append(k)
            _take(left, k, 1)
    rnd.shuffle(e_list)
    rnd.shuffle(x_list)
    middle = _slots(rnd, dict(left), sum(views[i] - 2 for i in multi_idx))
    out: list[list[Hashable]] = [[] for _ in views]
    for i, k in zip(bounce_idx, bounce_pages, strict=True):
        out[i] = [k]
    at = 0
    for i, first, last in zip(multi_idx, e_list, x_list, strict=True):
        inner = middle[at : at + views[i] - 2]
        at += views[i] - 2
        out[i] = [first, *inner, last]
    return out


@dataclass
class _Visit:
    visitor: int
    start: int  # unix seconds of the first pageview
    duration: int
    views: int
    landing: int = -1  # index of the first pageview row


def _event_visitors(
    rnd: random.Random,
    day: PlausibleDay,
    skip_events: tuple[str, ...],
    available: int,
    residuals: dict[str, dict[str, Any]],
) -> dict[str, list[int]]:
    """Per event name with a known ``visitors``: the visitor of each of its events (popped from the end).

    Vn = the table's visitors, clamped to [1, min(N, available)] for N events; Vn distinct
    visitors drawn from ``range(available)``, each with one event, the rest spread at random.
    A clamp is reported as the ``custom_events`` residual (visitors per name).
    """
    totals: Counter[str] = Counter()
    for name, _, count in day.events:
        if name not in skip_events and name in day.event_visitors:
            totals[name] += count
    wanted: dict[str, int] = {}
    made: dict[str, int] = {}
    out: dict[str, list[int]] = {}
    for name, n in totals.items():
        if n <= 0:
            continue
        vn = min(max(day.event_visitors[name], 1), n, max(available, 1))
        chosen = rnd.sample(range(max(available, 1)), vn)
        slots = [v for v, k in zip(chosen, _distribute(rnd, vn, n - vn), strict=True) for _ in range(k)]
        rnd.shuffle(slots)
        out[name] = slots
        wanted[name] = day.event_visitors[name]
        made[name] = vn
    if wanted:
        _residual(residuals, "custom_events", wanted, made)
    return out


def synthesize_day(
    day: PlausibleDay,
    key: bytes,
    default_hostname: str | None = None,
    skip_events: tuple[str, ...] = (ENGAGEMENT_EVENT,),
) -> tuple[pl.DataFrame, DayResult]:
    """One day -> its events (``OUTPUT_SCHEMA``, time order) and what they add up to in Umami."""
    rnd = random.Random(day_seed(key, day.day))
    midnight = int(dt.datetime.combine(day.day, dt.time(), dt.UTC).timestamp())
    notes: list[str] = []
    residuals: dict[str, dict[str, Any]] = {}

    # --- the visitors table: visitors, visits, pageviews, bounces, durations
    page_total = sum(n for _, _, n in day.pages)
    pageviews, table_v, table_s, table_b = day.pageviews, day.visitors, day.visits, day.bounces
    if not day.has_totals:
        pageviews = page_total
        table_v = table_s = -(-pageviews // 2)
        table_b = 0
        notes.append(f"no visitors-table row: {pageviews} pageviews from the pages table, visitors/visits estimated")
    v_count, s_count, b_count, clamp_notes = plan_day(pageviews, table_v, table_s, table_b)
    notes += clamp_notes
    visits: list[_Visit] = []
    if pageviews:
        per_visitor = _distribute(rnd, v_count, s_count - v_count, cap=HOURS_PER_DAY)
        slots = [(v, midnight + 3600 * h) for v, k in enumerate(per_visitor) for h in _distinct_hours(rnd, k)]
        bounce = set(rnd.sample(range(s_count), b_count))
        multi = [i for i in range(s_count) if i not in bounce]
        views = [1 if i in bounce else 2 for i in range(s_count)]
        for _ in range(pageviews - b_count - 2 * len(multi)):
            views[multi[rnd.randrange(len(multi))]] += 1
        durations = dict(zip(multi, split_total(rnd, day.visit_duration, len(multi), MAX_VISIT_SECONDS), strict=True))
        for i, (v, hour) in enumerate(slots):
            d = durations.get(i, 0)
            visits.append(_Visit(v, hour + rnd.randrange(3600 - d), d, views[i]))
    made_duration = sum(x.duration for x in visits)
    if day.has_totals and made_duration != day.visit_duration:
        notes.append(
            f"visit_duration {day.visit_duration}s: {made_duration}s possible "
            f"({len(visits) - b_count} visits of 2+ pageviews, at most {MAX_VISIT_SECONDS}s each inside a clock hour)"
        )

    # --- pages: one page per pageview
    page_keys = [(h or default_hostname or "", p or "/") for h, p, _ in day.pages]
    page_counts = scale_counts([n for _, _, n in day.pages], pageviews)
    wanted_pages: Counter[tuple[str, str]] = Counter()
    made_pages: Counter[tuple[str, str]] = Counter()
    for k, (_, _, n), m in zip(page_keys, day.pages, page_counts, strict=True):
        wanted_pages[k] += n
        made_pages[k] += m
    other = pageviews - sum(page_counts)
    if other:
        made_pages[(default_hostname or "", OTHER_PAGE)] += other
    if day.pages or other:
        _residual(residuals, "pages", dict(wanted_pages), dict(made_pages))

    # --- entry / exit pages: each visit's first and last pageview (pages keep priority)
    by_path: dict[str, tuple[str, str]] = {}
    for k in made_pages:
        by_path.setdefault(k[1], k)

    def page_key(path: str) -> tuple[str, str]:
        path = path or "/"
        return by_path.get(path, (default_hostname or "", path))

    wanted_entries: Counter[tuple[str, str]] = Counter()
    wanted_bounces: Counter[tuple[str, str]] = Counter()
    wanted_exits: Counter[tuple[str, str]] = Counter()
    for path, n, b in day.entries:
        wanted_entries[page_key(path)] += max(n, 0)
        wanted_bounces[page_key(path)] += max(min(b, n), 0)
    for path, n in day.exits:
        wanted_exits[page_key(path)] += max(n, 0)
    visit_pages = assign_visit_pages(
        rnd,
        dict(made_pages),
        [x.views for x in visits],
        {k: n for k, n in wanted_entries.items() if n > 0},
        {k: n for k, n in wanted_bounces.items() if n > 0},
        {k: n for k, n in wanted_exits.items() if n > 0},
    )
    made_entries = Counter(pages[0] for pages in visit_pages if pages)
    made_exits = Counter(pages[-1] for pages in visit_pages if pages)
    if day.entries:
        _residual(residuals, "entry_pages", {k[1]: n for k, n in wanted_entries.items() if n}, _paths(made_entries))
    if day.exits:
        _residual(residuals, "exit_pages", {k[1]: n for k, n in wanted_exits.items() if n}, _paths(made_exits))

    # --- sources: which visits arrive from where (the first pageview carries it)
    wanted_src: Counter[Source] = Counter()
    for src, n in day.sources:
        if n > 0:
            wanted_src[src] += n
    src_keys = list(wanted_src)
    src_counts = scale_counts([wanted_src[k] for k in src_keys], len(visits))
    visit_source: list[Source] = [k for k, n in zip(src_keys, src_counts, strict=True) for _ in range(n)]
    visit_source += [Source()] * (len(visits) - len(visit_source))
    rnd.shuffle(visit_source)
    if day.sources:
        _residual(residuals, "sources", dict(wanted_src), dict(Counter(visit_source)))

    # --- per-visitor dimensions
    per_visitor: dict[str, list[Hashable | None]] = {}
    for table, rows in (
        ("devices", day.devices),
        ("browsers", day.browsers),
        ("operating_systems", day.oses),
        ("locations", day.locations),
    ):
        values, wanted, made = assign_per_visitor(rnd, rows, v_count)
        per_visitor[table] = values
        if rows:
            _residual(residuals, table, wanted, made)

    # --- rows
    ts: list[int] = []
    who: list[int] = []
    names: list[str | None] = []
    urls: list[str] = []
    hosts: list[str | None] = []
    refs: list[str | None] = []
    utms: dict[str, list[str | None]] = {k: [] for k in UTM_FIELDS}
    visit_page: list[tuple[str, str]] = []
    for at, (visit, src) in enumerate(zip(visits, visit_source, strict=True)):
        d, m = visit.duration, visit.views
        times = (
            [visit.start]
            if m == 1
            else [visit.start, *sorted(visit.start + rnd.randint(0, d) for _ in range(m - 2)), visit.start + d]
        )
        for j, (t, (host, page)) in enumerate(zip(times, visit_pages[at], strict=True)):
            if j == 0:
                visit_page.append((host, page))
            query = src.utm_query() if j == 0 else None
            ts.append(t)
            who.append(visit.visitor)
            names.append(None)
            urls.append(f"{page}{'&' if '?' in page else '?'}{query}" if query else page)
            hosts.append(host or None)
            refs.append(src.referrer_url() if j == 0 else None)
            for k in UTM_FIELDS:
                utms[k].append((getattr(src, k) or None) if j == 0 else None)

    # --- custom events, inside existing visits
    made_events: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    event_slots = _event_visitors(rnd, day, skip_events, v_count if visits else 1, residuals)
    visits_of: dict[int, list[int]] = {}
    for i, x in enumerate(visits):
        visits_of.setdefault(x.visitor, []).append(i)
    for name, path, count in day.events:
        if name in skip_events:
            skipped[name] += count
            continue
        slots = event_slots.get(name)
        for _ in range(count):
            if visits:
                if slots:  # one of the name's chosen visitors, in one of its visits
                    own = visits_of[slots.pop()]
                    i = own[rnd.randrange(len(own))]
                else:
                    i = rnd.randrange(len(visits))
                visit = visits[i]
                v, t = visit.visitor, visit.start + rnd.randint(0, visit.duration)
                host, page = visit_page[i]
            else:
                v = slots.pop() if slots else rnd.randrange(max(v_count, 1))
                t = midnight + 3600 * _distinct_hours(rnd, 1)[0] + rnd.randrange(3600)
                host, page = default_hostname or "", "/"
            made_events[name] += 1
            ts.append(t)
            who.append(v)
            names.append(name)
            urls.append(path or page)
            hosts.append(host or None)
            refs.append(None)
            for k in UTM_FIELDS:
                utms[k].append(None)
    for name, n in sorted(skipped.items()):
        notes.append(f"{n} '{name}' events skipped (Plausible's internal event)")

    # --- custom props: `events` of the day's custom events carry property = value
    first_event = len(names) - sum(made_events.values())
    event_props: list[dict[str, str]] = [{} for _ in range(len(names) - first_event)]
    wanted_props: Counter[tuple[str, str]] = Counter()
    by_property: dict[str, list[tuple[str, int]]] = {}
    for prop, value, n in day.props:
        if prop and n > 0:
            wanted_props[(prop, value)] += n
            by_property.setdefault(prop, []).append((value, n))
    made_props: Counter[tuple[str, str]] = Counter()
    for prop, rows in by_property.items():  # one value per event and property
        counts = scale_counts([n for _, n in rows], len(event_props))
        chosen = rnd.sample(range(len(event_props)), sum(counts))
        pos = 0
        for (value, _), n in zip(rows, counts, strict=True):
            for i in chosen[pos : pos + n]:
                event_props[i][prop] = value
            made_props[(prop, value)] += n
            pos += n
    if day.props:
        _residual(residuals, "custom_props", dict(wanted_props), dict(made_props))
    props_json: list[str | None] = [None] * first_event + [
        json.dumps(p, ensure_ascii=False, separators=(",", ":")) if p else None for p in event_props
    ]
    if not visits and made_events:
        notes.append("custom events on a day without pageviews: their visitors are not counted by Umami")

    def attr(table: str, part: int | None = None) -> list[str | None]:
        values = per_visitor[table]
        out: list[str | None] = []
        for v in who:
            value = values[v] if v < len(values) else None
            if part is not None and value is not None:
                value = value[part]  # type: ignore[index]
            out.append(value or None)  # type: ignore[arg-type]
        return out

    frame = pl.DataFrame(
        {
            "_ts": pl.Series(ts, dtype=pl.Int64),
            "_v": pl.Series(who, dtype=pl.Int64),
            "event_name": pl.Series(names, dtype=pl.String),
            "url": pl.Series(urls, dtype=pl.String),
            "hostname": pl.Series(hosts, dtype=pl.String),
            "referrer": pl.Series(refs, dtype=pl.String),
            **{k: pl.Series(utms[k], dtype=pl.String) for k in UTM_FIELDS},
            "props_json": pl.Series(props_json, dtype=pl.String),
            "device": pl.Series(attr("devices"), dtype=pl.String),
            "browser": pl.Series(attr("browsers"), dtype=pl.String),
            "os": pl.Series(attr("operating_systems"), dtype=pl.String),
            "country": pl.Series(attr("locations", 0), dtype=pl.String),
            "region": pl.Series(attr("locations", 1), dtype=pl.String),
            "city": pl.Series(attr("locations", 2), dtype=pl.String),
        }
    )
    frame = (
        frame.with_row_index("_i")
        .sort("_ts", "_v", "_i")
        .select(
            pl.from_epoch("_ts", "s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
            pl.format("pl-syn-{}-{}", pl.lit(f"{day.day:%Y%m%d}"), pl.col("_v") + 1).alias("visitor_id"),
            *[c for c in OUTPUT_SCHEMA if c not in ("timestamp", "visitor_id", "synthetic")],
            pl.lit(True).alias("synthetic"),
        )
    )
    result = DayResult(
        day=day.day,
        visitors=v_count,
        visits=len(visits),
        pageviews=pageviews,
        bounces=sum(1 for x in visits if x.views == 1),
        visit_duration=made_duration,
        events=dict(made_events),
        notes=notes,
        residuals=residuals,
    )
    if day.has_totals:
        table = {
            "visitors": day.visitors,
            "visits": day.visits,
            "pageviews": day.pageviews,
            "bounces": day.bounces,
            "visit_duration": day.visit_duration,
        }
        made = {k: result.summary()[k] for k in table}
        if made != table:
            residuals["visitors"] = {
                "table": table,
                "synthesized": made,
                "diff": {k: made[k] - table[k] for k in table if made[k] != table[k]},
            }
    return frame, result
