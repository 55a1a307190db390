"""Per-day aggregates (a GA report's rows) -> individual synthetic events, deterministically.

Umami stores events, not totals. A report only says "on 2024-03-01, /pricing had
120 pageviews; the site had 80 users and 95 sessions". This module invents the
fewest, most neutral events whose Umami counts reproduce those figures:

* **pageviews**: exactly the report's count per (day, page);
* **visitors** (Umami: distinct payload ids among pageviews): exactly the day's
  users U, when 1 <= U <= pageviews; otherwise as close as possible (see
  ``synthesize_day``) and the frame says so in ``synthetic_visitors``;
* **visits** (Umami: distinct (id, clock hour) among pageviews): exactly the
  day's sessions S, when U <= S <= min(pageviews, 24 * U): every visitor gets
  k >= 1 visits in k DISTINCT clock hours, and every visit >= 1 pageview, all
  inside its hour, so no visit can merge with or split into another;
* **custom events**: exactly the report's count per (day, event name);
* **revenue**: the day's revenue in cents, split over its ``purchase`` events,
  the last one taking the rounding remainder, so the sum is exact to the cent;
* **bounces** (Umami: visits of exactly one pageview), when the report gives them
  (UA's Bounces, GA4's sessions - engaged sessions): exactly B, within the bounds
  of ``plan_bounces``; without them the pageviews of a visit are drawn at random;
* **breakdowns per visitor** (country, region and city, device, browser, OS,
  language, screen, when the report has them per day with users): one value per
  visitor, so visitors per value equal the report's users per value when they add
  up to at most the day's visitors (more are scaled down, largest remainder; fewer
  leave the rest unknown; both noted). Regions and cities are drawn inside the
  visitors of their country when a country breakdown is given; the breakdowns are
  otherwise independent of each other.

What is invented (and cannot be known from a report): which visitor saw which
page, the time of day, the length of each visit, which visits came from
which source, and which visitor had which country, device, browser, ...
together. Those are drawn from a seeded RNG keyed by the caller's key (a
hash of the report file) and the day, so the same file always gives the same
events and a re-import or ``validate`` run is reproducible.

Memory: one day at a time. Python loops run once per event of that day, which
is fine for reports (a day of a large site is a few hundred thousand views).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import polars as pl

#: Pages per visit assumed when a report gives pageviews but no users/sessions.
DEFAULT_PAGES_PER_VISIT = 2.0
#: Distinct clock hours in a UTC day: the most visits one visitor can have in it.
HOURS_PER_DAY = 24
#: URL used for pageviews whose page the report does not name.
UNKNOWN_PAGE = "/(not set)"
#: URL for the pageviews a daily total has beyond the page table's rows (row limits).
OTHER_PAGE = "/(other)"
PURCHASE_EVENT = "purchase"

#: Relative traffic per UTC hour: quiet nights, a working-day plateau, an evening bump.
#: Only shapes where the invented times fall; counts never depend on it.
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 8, 8, 9, 9, 8, 7, 7, 8, 8, 6, 4, 2)

#: The synthesizer's output columns, in order (``_row`` is added by the reader).
OUTPUT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.String(),  # ISO 8601 UTC, "2024-03-01T08:13:27Z"
    "day": pl.String(),  # the report's day, "2024-03-01"
    "visitor_id": pl.String(),
    "event_name": pl.String(),  # null for pageviews
    "url": pl.String(),
    "title": pl.String(),
    "referrer": pl.String(),
    "revenue": pl.Float64(),
    "currency": pl.String(),
    "source_table": pl.String(),
    "synthetic": pl.Boolean(),
    "synthetic_visitors": pl.Boolean(),
    "hostname": pl.String(),  # the page's host, when the report names it (GA4's hostName)
    "country": pl.String(),  # ISO 3166-1 alpha-2
    "region": pl.String(),  # ISO 3166-2
    "city": pl.String(),
    "device": pl.String(),  # GA's names (desktop, mobile, tablet, smart tv): the mapping normalises
    "browser": pl.String(),
    "os": pl.String(),
    "language": pl.String(),  # a language tag, en-us
    "screen": pl.String(),  # 1920x1080
}

#: Per-visitor breakdowns -> the output columns each value fills, in the order they are drawn.
BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "countries": ("country",),
    "places": ("country", "region", "city"),
    "technology": ("device", "os", "browser"),
    "devices": ("device",),
    "browsers": ("browser",),
    "oses": ("os",),
    "languages": ("language",),
    "screens": ("screen",),
}


@dataclass(frozen=True)
class PageCount:
    """``count`` pageviews of one page on one day."""

    url: str
    title: str | None
    count: int
    source_table: str
    hostname: str | None = None


@dataclass(frozen=True)
class SourceCount:
    """``sessions`` visits of one day that arrived from one source / medium."""

    referrer: str | None
    utm_query: str | None  # "utm_source=x&utm_medium=y", appended to the landing page
    sessions: int


@dataclass(frozen=True)
class EventCount:
    """``count`` custom events of one name on one day."""

    name: str
    count: int
    source_table: str


@dataclass
class DayAggregate:
    """Everything a report says about one day; None means "the report does not say"."""

    day: dt.date
    pages: list[PageCount] = field(default_factory=list)
    users: int | None = None
    sessions: int | None = None
    sources: list[SourceCount] = field(default_factory=list)
    events: list[EventCount] = field(default_factory=list)
    revenue_cents: int | None = None
    currency: str | None = None
    transactions: int | None = None
    revenue_table: str = ""
    bounces: int | None = None  # visits of one pageview; None: the report does not say
    #: breakdown (a key of BREAKDOWNS) -> (values, users); a value tuple holds that breakdown's columns
    breakdowns: dict[str, list[tuple[tuple[str | None, ...], int]]] = field(default_factory=dict)

    @property
    def pageviews(self) -> int:
        return sum(p.count for p in self.pages)


@dataclass
class DayResult:
    """What was synthesized for one day, in Umami's terms, and why it may differ from the report."""

    day: dt.date
    pageviews: int
    visitors: int
    visits: int
    visitors_estimated: bool  # True: the visitor count is not the report's users figure
    events: dict[str, int]
    revenue_cents: int
    notes: list[str]
    bounces: int | None = None  # visits of one pageview, when the report gave a bounces figure
    #: breakdown -> value -> visitors given it (what Umami will show per value)
    breakdowns: dict[str, dict[tuple[str | None, ...], int]] = field(default_factory=dict)


def day_seed(key: bytes, day: dt.date) -> int:
    """A 128-bit seed from the file's hash and the day: stable across runs and Python versions."""
    return int.from_bytes(hashlib.sha256(key + b"|" + day.isoformat().encode()).digest()[:16], "big")


def visitor_id(day: dt.date, n: int) -> str:
    """Stable synthetic id; the day is part of it, so each day has its own visitors."""
    return f"ga-syn-{day:%Y%m%d}-{n}"


def plan_counts(pageviews: int, users: int | None, sessions: int | None) -> tuple[int, int, bool, list[str]]:
    """(visitors, visits, visitors_estimated, notes) that can be realised for one day.

    Umami counts a visitor only if it has a pageview, and a visit is a distinct
    (visitor, clock hour) with a pageview; so with P pageviews:
    1 <= visitors <= P and visitors <= visits <= min(P, 24 * visitors).
    Report figures outside these bounds are clamped, and the note says by how much.
    """
    notes: list[str] = []
    if pageviews <= 0:
        if users:
            notes.append(f"{users} users but no pageviews: Umami counts no visitor without a pageview")
        return 0, 0, False, notes
    estimated = users is None
    if users is None:
        visitors = math.ceil(pageviews / DEFAULT_PAGES_PER_VISIT)
        notes.append(
            f"no users figure: {visitors} visitors estimated at {DEFAULT_PAGES_PER_VISIT:g} pageviews per visitor"
        )
    elif users > pageviews:
        visitors, estimated = pageviews, True
        notes.append(f"users {users} > pageviews {pageviews}: only {pageviews} visitors can have a pageview")
    elif users < 1:
        visitors, estimated = 1, True
        notes.append(f"users {users} with {pageviews} pageviews: 1 visitor used")
    else:
        visitors = users
    upper = min(pageviews, HOURS_PER_DAY * visitors)
    if sessions is None:
        visits = min(max(math.ceil(pageviews / DEFAULT_PAGES_PER_VISIT), visitors), upper)
        notes.append(f"no sessions figure: {visits} visits estimated")
    elif sessions < visitors:
        visits = visitors
        notes.append(f"sessions {sessions} < visitors {visitors}: every visitor has a visit, so {visits} visits")
    elif sessions > upper:
        visits = upper
        notes.append(
            f"sessions {sessions} > {upper} (a visit needs a pageview and a distinct clock hour): {visits} visits"
        )
    else:
        visits = sessions
    return visitors, visits, estimated, notes


def split_cents(total: int, parts: int) -> list[int]:
    """``total`` cents over ``parts`` events, equal shares, the last taking the remainder.

    A share of 0 cents is not revenue for Umami (it needs > 0): with fewer cents
    than events, the first ``total`` events get one cent each and the rest 0.
    """
    if parts <= 0:
        return []
    base = total // parts
    if base == 0:
        return [1 if i < total else 0 for i in range(parts)]
    return [base] * (parts - 1) + [total - base * (parts - 1)]


def plan_bounces(pageviews: int, visits: int, bounces: int) -> tuple[int, list[str]]:
    """(bounces Umami can show, notes): B visits of one pageview need the other S - B visits to
    hold >= 2 each (B >= 2S - P) and, with more pageviews than visits, one visit of 2+ (B <= S - 1)."""
    if visits <= 0:
        return 0, []
    low = max(0, 2 * visits - pageviews)
    high = visits if pageviews == visits else visits - 1
    made = min(max(bounces, low), high)
    if made == bounces:
        return made, []
    return made, [f"bounces {bounces} impossible with {visits} visits and {pageviews} pageviews: {made} bounces"]


def scale_counts(counts: list[int], total: int) -> list[int]:
    """Counts scaled down to add up to ``total`` (largest remainder, ties to the earlier); unchanged if they fit."""
    have = sum(counts)
    if have <= total:
        return list(counts)
    exact = [c * total / have for c in counts]
    out = [int(x) for x in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def assign_per_visitor(
    rnd: random.Random, rows: list[tuple[Hashable, int]], visitors: int
) -> tuple[list[Hashable | None], dict[Hashable, int], dict[Hashable, int]]:
    """One value per visitor so visitors per value match ``rows``; (values, wanted, made)."""
    wanted: Counter[Hashable] = Counter()
    for value, n in rows:
        if n > 0:
            wanted[value] += n
    keys = list(wanted)
    counts = scale_counts([wanted[k] for k in keys], visitors)
    values: list[Hashable | None] = [k for k, n in zip(keys, counts, strict=True) for _ in range(n)]
    values += [None] * (visitors - len(values))
    rnd.shuffle(values)
    made = dict(Counter(v for v in values if v is not None))
    return values, dict(wanted), made


def _distribute(rnd: random.Random, slots: int, extra: int, cap: int | None = None) -> list[int]:
    """``slots`` counts of 1, plus ``extra`` units dropped at random (each count at most ``cap``)."""
    counts = [1] * slots
    open_slots = list(range(slots))
    for _ in range(extra):
        i = rnd.randrange(len(open_slots))
        slot = open_slots[i]
        counts[slot] += 1
        if cap is not None and counts[slot] >= cap:
            open_slots[i] = open_slots[-1]
            open_slots.pop()
    return counts


def _distinct_hours(rnd: random.Random, k: int) -> list[int]:
    """``k`` distinct UTC hours, drawn by the daily traffic shape, in time order."""
    hours = list(range(HOURS_PER_DAY))
    weights = list(_HOUR_WEIGHTS)
    chosen: list[int] = []
    for _ in range(k):
        i = rnd.choices(range(len(hours)), weights)[0]
        chosen.append(hours.pop(i))
        weights.pop(i)
    return sorted(chosen)


def _times_in_hour(rnd: random.Random, start: int, m: int) -> list[int]:
    """``m`` sorted unix seconds within [start, start + 3600): a visit reads like a visit."""
    window = min(3600, 60 + 90 * (m - 1))
    offset = rnd.randrange(3600 - window + 1)
    return sorted(start + offset + rnd.randrange(window) for _ in range(m))


@dataclass
class _Columns:
    ts: list[int] = field(default_factory=list)
    visitor: list[int] = field(default_factory=list)
    name: list[str | None] = field(default_factory=list)
    url: list[str] = field(default_factory=list)
    title: list[str | None] = field(default_factory=list)
    referrer: list[str | None] = field(default_factory=list)
    revenue: list[float | None] = field(default_factory=list)
    currency: list[str | None] = field(default_factory=list)
    table: list[str] = field(default_factory=list)
    hostname: list[str | None] = field(default_factory=list)

    def add(
        self,
        ts: int,
        visitor: int,
        name: str | None,
        url: str,
        title: str | None,
        table: str,
        referrer: str | None = None,
        revenue: float | None = None,
        currency: str | None = None,
        hostname: str | None = None,
    ) -> None:
        self.ts.append(ts)
        self.visitor.append(visitor)
        self.name.append(name)
        self.url.append(url)
        self.title.append(title)
        self.referrer.append(referrer)
        self.revenue.append(revenue)
        self.currency.append(currency)
        self.table.append(table)
        self.hostname.append(hostname)


def _with_query(url: str, query: str | None) -> str:
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def synthesize_day(agg: DayAggregate, key: bytes) -> tuple[pl.DataFrame, DayResult]:
    """One day's aggregates -> its events (``OUTPUT_SCHEMA``, in time order) and what they add up to.

    Exact: pageviews per page, custom events per name, revenue in cents. Visitors
    and visits are exact within the bounds of ``plan_counts``. Without a users
    figure the visitor count is an estimate and every row says
    ``synthetic_visitors = true``.
    """
    rnd = random.Random(day_seed(key, agg.day))
    midnight = int(dt.datetime.combine(agg.day, dt.time(), dt.UTC).timestamp())
    cols = _Columns()
    pageviews = agg.pageviews
    visitors, visits, estimated, notes = plan_counts(pageviews, agg.users, agg.sessions)

    # visits: (visitor index, start of its hour); each visitor's hours are distinct
    visit_list: list[tuple[int, int]] = []
    visit_page: list[PageCount] = []  # each visit's landing page: custom events happen there
    if pageviews:
        per_visitor = _distribute(rnd, visitors, visits - visitors, cap=HOURS_PER_DAY)
        for v, k in enumerate(per_visitor):
            visit_list.extend((v, midnight + 3600 * h) for h in _distinct_hours(rnd, k))
        if agg.bounces is None:
            views_per_visit = _distribute(rnd, len(visit_list), pageviews - len(visit_list))
        else:
            bounces, bounce_notes = plan_bounces(pageviews, len(visit_list), agg.bounces)
            notes.extend(bounce_notes)
            views_per_visit = _views_with_bounces(rnd, len(visit_list), pageviews, bounces)
        order = [i for i, page in enumerate(agg.pages) for _ in range(page.count)]
        rnd.shuffle(order)
        # sources: the first pageview of the first n visits (in random order) per source
        landing: dict[int, SourceCount] = {}
        shuffled = list(range(len(visit_list)))
        rnd.shuffle(shuffled)
        position = 0
        for source in agg.sources:
            take = min(source.sessions, len(shuffled) - position)
            for i in shuffled[position : position + take]:
                landing[i] = source
            position += take
        source_sessions = sum(s.sessions for s in agg.sources)
        if agg.sources and source_sessions != len(visit_list):
            notes.append(
                f"sources list {source_sessions} sessions for {len(visit_list)} visits: "
                f"{min(source_sessions, len(visit_list))} visits got a source"
            )
        at = 0
        for i, ((v, hour_start), m) in enumerate(zip(visit_list, views_per_visit, strict=True)):
            source = landing.get(i)
            visit_page.append(agg.pages[order[at]])
            for j, ts in enumerate(_times_in_hour(rnd, hour_start, m)):
                page = agg.pages[order[at]]
                at += 1
                first = j == 0 and source is not None
                url = _with_query(page.url, source.utm_query) if first and source else page.url
                referrer = source.referrer if first and source else None
                cols.add(ts, v, None, url, page.title, page.source_table, referrer, hostname=page.hostname)

    # custom events inside existing visits (they never change Umami's visitor or visit counts)
    counts: dict[str, int] = {}
    events = list(agg.events)
    purchases = sum(e.count for e in events if e.name == PURCHASE_EVENT)
    revenue = agg.revenue_cents or 0
    if revenue > 0 and purchases == 0:
        made = agg.transactions if agg.transactions and agg.transactions > 0 else 1
        events.append(EventCount(PURCHASE_EVENT, made, agg.revenue_table))
        notes.append(f"revenue without purchase events: {made} '{PURCHASE_EVENT}' event(s) added to carry it")
        purchases = made
    shares = iter(split_cents(revenue, purchases) if revenue > 0 else [])
    # visitors for a day with events but no pageviews: the users figure, else the same 2-per-visitor guess
    pool = agg.users or math.ceil(sum(e.count for e in events) / DEFAULT_PAGES_PER_VISIT) or 1
    for event in events:
        counts[event.name] = counts.get(event.name, 0) + event.count
        for _ in range(event.count):
            url, title, host = UNKNOWN_PAGE, None, None
            if visit_list:
                i = rnd.randrange(len(visit_list))
                (v, hour_start), url, title = visit_list[i], visit_page[i].url, visit_page[i].title
                host = visit_page[i].hostname
            else:  # a day with events but no pageviews: visitors who only did events
                v, hour_start = rnd.randrange(pool), midnight + 3600 * _distinct_hours(rnd, 1)[0]
            ts = hour_start + rnd.randrange(3600)
            cents = next(shares, 0) if event.name == PURCHASE_EVENT else 0
            cols.add(
                ts,
                v,
                event.name,
                url,
                title,
                event.source_table,
                revenue=cents / 100 if cents > 0 else None,
                currency=agg.currency if cents > 0 else None,
                hostname=host,
            )
    per_visitor, made_breakdowns = assign_breakdowns(agg, visitors, key, notes)
    frame = _frame(cols, agg.day, estimated, per_visitor)
    result = DayResult(
        day=agg.day,
        pageviews=pageviews,
        visitors=visitors,
        visits=len(visit_list),
        visitors_estimated=estimated,
        events=counts,
        revenue_cents=revenue,
        notes=notes,
        bounces=sum(1 for m in views_per_visit if m == 1) if pageviews and agg.bounces is not None else None,
        breakdowns=made_breakdowns,
    )
    return frame, result


def _views_with_bounces(rnd: random.Random, visits: int, pageviews: int, bounces: int) -> list[int]:
    """Pageviews per visit: ``bounces`` visits of exactly one, the others two or more (see ``plan_bounces``)."""
    bounce = set(rnd.sample(range(visits), bounces))
    multi = [i for i in range(visits) if i not in bounce]
    views = [1 if i in bounce else 2 for i in range(visits)]
    for _ in range(pageviews - bounces - 2 * len(multi)):
        views[multi[rnd.randrange(len(multi))]] += 1
    return views


def assign_breakdowns(
    agg: DayAggregate, visitors: int, key: bytes, notes: list[str]
) -> tuple[dict[str, list[str | None]], dict[str, dict[tuple[str | None, ...], int]]]:
    """Output column -> value per visitor index, and visitors per value of each breakdown.

    Drawn with their own seed, so a report without breakdowns gives the same events as before
    they existed. Regions and cities go to visitors of their country when countries are drawn.
    """
    rnd = random.Random(day_seed(key + b"|breakdowns", agg.day))
    columns: dict[str, list[str | None]] = {}
    made: dict[str, dict[tuple[str | None, ...], int]] = {}
    for name, names in BREAKDOWNS.items():
        rows = [(values, n) for values, n in agg.breakdowns.get(name, []) if n > 0]
        if not rows or visitors <= 0:
            continue
        wanted = sum(n for _, n in rows)
        if name == "places" and "country" in columns:
            values = _within_countries(rnd, rows, columns["country"], notes)
        else:
            values = assign_per_visitor(rnd, list(rows), visitors)[0]
            if wanted > visitors:  # fewer is exact: the rest of the visitors have no value, as in the report
                notes.append(f"{name}: users add up to {wanted} for {visitors} visitors: scaled to {visitors}")
        for at, column in enumerate(names):
            if column in columns and name == "places" and column == "country":
                continue
            columns[column] = [v[at] if v is not None else None for v in values]  # type: ignore[index]
        made[name] = dict(Counter(v for v in values if v is not None and any(x is not None for x in v)))  # type: ignore[misc,union-attr]
    return columns, made


def _within_countries(
    rnd: random.Random,
    rows: list[tuple[tuple[str | None, ...], int]],
    countries: list[str | None],
    notes: list[str],
) -> list[tuple[str | None, ...] | None]:
    """(country, region, city) per visitor, drawn among the visitors already given that country."""
    values: list[tuple[str | None, ...] | None] = [None] * len(countries)
    by_country: dict[str | None, list[tuple[Hashable, int]]] = {}
    for place, n in rows:
        by_country.setdefault(place[0], []).append((place, n))
    for country, places in by_country.items():
        members = [i for i, c in enumerate(countries) if c == country and c is not None]
        wanted = sum(n for _, n in places)
        if not members:
            notes.append(f"places: {wanted} users in {country or '(no country)'}, which has no visitor: left out")
            continue
        drawn = assign_per_visitor(rnd, places, len(members))[0]
        if wanted > len(members):
            notes.append(f"places in {country}: users add up to {wanted} for {len(members)} visitors: scaled")
        for i, place in zip(members, drawn, strict=True):
            values[i] = place  # type: ignore[assignment]
    return values


def _frame(
    cols: _Columns, day: dt.date, estimated: bool, per_visitor: dict[str, list[str | None]] | None = None
) -> pl.DataFrame:
    per_visitor = per_visitor or {}
    visitor_columns = [c for c in OUTPUT_SCHEMA if c in {n for names in BREAKDOWNS.values() for n in names}]
    frame = pl.DataFrame(
        {
            "_ts": pl.Series(cols.ts, dtype=pl.Int64),
            "_v": pl.Series(cols.visitor, dtype=pl.Int64),
            "event_name": pl.Series(cols.name, dtype=pl.String),
            "url": pl.Series(cols.url, dtype=pl.String),
            "title": pl.Series(cols.title, dtype=pl.String),
            "referrer": pl.Series(cols.referrer, dtype=pl.String),
            "revenue": pl.Series(cols.revenue, dtype=pl.Float64),
            "currency": pl.Series(cols.currency, dtype=pl.String),
            "source_table": pl.Series(cols.table, dtype=pl.String),
            "hostname": pl.Series(cols.hostname, dtype=pl.String),
        }
    )
    for column in visitor_columns:  # each event carries its visitor's value
        values = pl.Series(per_visitor.get(column, []), dtype=pl.String)
        known = pl.col("_v") < values.len()
        looked_up = pl.lit(values).gather(pl.when(known).then(pl.col("_v")).otherwise(0)) if values.len() else None
        frame = frame.with_columns(
            (pl.when(known).then(looked_up) if looked_up is not None else pl.lit(None, dtype=pl.String)).alias(column)
        )
    return (
        frame.with_row_index("_i")
        .sort("_ts", "_v", "_i")  # time order; ties keep the order of creation
        .select(
            pl.from_epoch("_ts", "s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
            pl.lit(day.isoformat()).alias("day"),
            pl.format("ga-syn-{}-{}", pl.lit(f"{day:%Y%m%d}"), pl.col("_v") + 1).alias("visitor_id"),
            "event_name",
            "url",
            "title",
            "referrer",
            "revenue",
            "currency",
            "source_table",
            pl.lit(True).alias("synthetic"),
            pl.lit(estimated).alias("synthetic_visitors"),
            "hostname",
            *visitor_columns,
        )
    )


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=OUTPUT_SCHEMA)


def synthesize(days: Sequence[DayAggregate], key: bytes) -> list[tuple[pl.DataFrame, DayResult]]:
    """All days in date order (tests and small reports; readers use ``synthesize_day`` lazily)."""
    return [synthesize_day(agg, key) for agg in sorted(days, key=lambda a: a.day)]
