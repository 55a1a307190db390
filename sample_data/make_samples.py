#!/usr/bin/env python3
"""Write every sample file in ``sample_data/``, the same bytes on every run.

    python sample_data/make_samples.py

The samples describe one made-up product, Ledgerly (invoicing for small
teams), over March and April 2024:

  events.csv          web events as text, ISO 8601 times with Z or an offset,
                      and a recognisable set of bad rows (see BAD ROWS below)
  events.parquet      web events with native types (UTC datetimes, Float64
                      revenue, Boolean is_test), its own few bad rows
  events.ndjson.gz    web events as gzip JSON lines, times in epoch
                      MILLISECONDS, its own few bad rows
  stripe_payments.csv a Stripe-like charges export (amounts in cents)
  api_actions.ndjson  mobile app / API actions
  job_results.csv     background jobs, naive local times in Europe/Berlin
  access_log.csv      a web server access log, no visitor column
  expected.json       for each sample: its mapping, how many rows an import
                      reads, sends, skips (by filter name) and rejects (by
                      reason), and which 1-based data rows are the bad ones

Each sample is read with the mapping of the same name in ``mappings/``.
Standard library and polars only; seeded, so the output never changes
unless this file does (polars' Parquet writer is the only version-dependent
byte source).

BAD ROWS in events.csv: every bad row has exactly one problem, and its
visitor id names it (``bad-<kind>-<n>``), except the empty-id rows and the
over-long id, which is not an error (ids over 50 characters are hashed) and
starts with ``auth0|``. Test traffic (``is_test`` = true, visitor ``qa-*``)
is skipped by the mapping's filter. ``expected.json`` lists them by row.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

OUT = Path(__file__).resolve().parent
SEED = 20240301
UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
START = dt.datetime(2024, 3, 1, tzinfo=UTC)
END = dt.datetime(2024, 5, 1, tzinfo=UTC)  # exclusive
SPAN_S = int((END - START).total_seconds())

# --------------------------------------------------------------------------- reasons
# The reject reasons an import prints, as written in backfill/transform.py and
# backfill/validate.py. expected.json repeats them so a test can compare the
# ledger of `backfill validate` with it.
R_NAIVE = "timestamp: naive time (no offset) and the mapping declares no timezone: add `timezone:` under timestamp"
R_NOT_ISO = "timestamp: not an ISO 8601 time (expected e.g. 2024-03-01T08:00:00Z)"
R_BOT = (
    "userAgent: bot user agent: Umami would drop it silently (set `keep_bots: true` "
    "only if the server runs with DISABLE_BOT_CHECK)"
)
R_ID = "id: the visitor column(s) are empty for this row; every event needs a visitor id"
R_BAD_URL = "url: does not parse as a URL; Umami refuses it (fix the value or the template)"
R_BAD_REFERRER = "referrer: does not parse as a URL; Umami refuses it (fix the value or the template)"
R_UTM_SOURCE = (
    "url: utm_source in the query is longer than 255 characters; Umami would store the "
    "session but lose the event (database error)"
)
R_REVENUE_NAN = "data.revenue: not a number"
R_REVENUE_LE0 = (
    "data.revenue: must be greater than 0; Umami keeps no revenue row for 0 or refunds "
    "(filter them out, or map them to another data key)"
)
R_REVENUE_BIG = "data.revenue: too large for Umami's decimal(19,4) column"
R_NO_CURRENCY = (
    "data.currency: revenue without a currency; Umami would store no revenue row (map data.currency, e.g. {const: USD})"
)
R_CURRENCY_LONG = "data.currency: longer than 10 characters (use an ISO code like USD)"
R_TS_INVALID = "timestamp: not a valid time"
R_TS_BEFORE_1990 = "timestamp: before 1990, almost surely a wrong unit or format in the mapping"
R_TS_TOO_BIG_MS = (
    "timestamp: far too large for epoch ms; it looks like a finer unit (milliseconds?): check `unit:` in the mapping"
)
R_TS_NAN_MS = "timestamp: not a number (format: epoch, unit: ms)"
R_JOB_PATTERN = "timestamp: does not match the pattern '%Y-%m-%d %H:%M:%S'"
R_DURATION_NAN = "data.duration_ms: not a number"


def r_too_long(name: str, limit: int) -> str:
    hints = {
        "browser": " or set `normalize: true` to map names like 'Samsung Internet' to Umami's",
        "os": " or set `normalize: true` to map names like 'Macintosh' to Umami's",
        "device": " or set `normalize: true`",
    }
    return (
        f"{name}: longer than {limit} characters (Umami's limit); shorten it in the "
        f"source, set `overflow: {{{name}: truncate}}`{hints.get(name, '')}"
    )


def r_data_long(name: str) -> str:
    return (
        f"{name}: longer than 500 characters; Umami would store the event without its "
        f"data (set `overflow: {{{name}: truncate}}` to cut it)"
    )


# --------------------------------------------------------------------------- web vocabulary

HOST = "www.ledgerly.example"
DOCS_HOST = "docs.ledgerly.example"

#: (path, title, host); the first entries are the likeliest landing pages.
PAGES: list[tuple[str, str, str]] = [
    ("/", "Ledgerly | Invoicing for small teams", HOST),
    ("/pricing", "Pricing | Ledgerly", HOST),
    ("/features", "Features | Ledgerly", HOST),
    ("/blog/how-to-write-an-invoice", "How to write an invoice that gets paid | Ledgerly", HOST),
    ("/blog/eu-vat-rules-2024", "EU VAT rules for 2024, explained | Ledgerly", HOST),
    ("/blog/late-payment-reminders", "Late payment reminders that work | Ledgerly", HOST),
    ("/blog", "Blog | Ledgerly", HOST),
    ("/features/recurring-invoices", "Recurring invoices | Ledgerly", HOST),
    ("/integrations", "Integrations | Ledgerly", HOST),
    ("/downloads", "Downloads and templates | Ledgerly", HOST),
    ("/about", "About us | Ledgerly", HOST),
    ("/contact", "Contact | Ledgerly", HOST),
    ("/getting-started", "Getting started | Ledgerly Docs", DOCS_HOST),
    ("/api", "API reference | Ledgerly Docs", DOCS_HOST),
    ("/signup", "Create your account | Ledgerly", HOST),
    ("/checkout", "Checkout | Ledgerly", HOST),
    ("/checkout/success", "Thank you for your order | Ledgerly", HOST),
]
PAGE = {p: (t, h) for p, t, h in PAGES}
BROWSE = [p for p, _, _ in PAGES if not p.startswith(("/signup", "/checkout"))]
LANDING_WEIGHTS = [30, 12, 8, 10, 9, 7, 4, 3, 3, 3, 1, 1, 5, 4]

#: (referrer, utm query) for the first page of a visit; "" = none.
ACQUISITION: list[tuple[str, str, int]] = [
    ("", "", 22),  # direct
    ("https://www.google.com/", "", 30),
    ("https://www.bing.com/", "", 4),
    ("https://duckduckgo.com/", "", 5),
    ("https://www.google.com/", "utm_source=google&utm_medium=cpc&utm_campaign=invoicing_eu", 6),
    ("", "utm_source=newsletter&utm_medium=email&utm_campaign=spring_2024", 8),
    ("https://t.co/", "utm_source=twitter&utm_medium=social&utm_campaign=launch_week", 4),
    ("https://news.ycombinator.com/", "", 5),
    ("https://www.reddit.com/r/smallbusiness/", "", 4),
    (
        "https://www.linkedin.com/",
        "utm_source=linkedin&utm_medium=social&utm_campaign=vat_guide",
        4,
    ),
    ("https://www.producthunt.com/", "ref=producthunt", 3),
    ("https://github.com/", "", 2),
]


@dataclass(frozen=True)
class Agent:
    ua: str
    browser: str  # as ua-parser names it (what log tools export)
    os: str
    device: str
    screens: tuple[str, ...]
    weight: int


DESKTOP_SCREENS = ("1920x1080", "2560x1440", "1440x900", "1536x864", "1366x768", "1680x1050")
PHONE_SCREENS = ("390x844", "393x873", "412x915", "360x800", "430x932", "375x812")
TABLET_SCREENS = ("820x1180", "1024x1366", "810x1080")

AGENTS: list[Agent] = [
    Agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/122.0.0.0 Safari/537.36",
        "Chrome",
        "Windows",
        "Desktop",
        DESKTOP_SCREENS,
        26,
    ),
    Agent(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.0.0 Safari/537.36",
        "Chrome",
        "Mac OS X",
        "Desktop",
        DESKTOP_SCREENS,
        12,
    ),
    Agent(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.3.1 Safari/605.1.15",
        "Safari",
        "Mac OS X",
        "Desktop",
        DESKTOP_SCREENS,
        9,
    ),
    Agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0",
        "Firefox",
        "Windows",
        "Desktop",
        DESKTOP_SCREENS,
        6,
    ),
    Agent(
        "Mozilla/5.0 (X11; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
        "Firefox",
        "Ubuntu",
        "Desktop",
        DESKTOP_SCREENS,
        3,
    ),
    Agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/122.0.0.0 Safari/537.36 Edg/122.0.2365.92",
        "Edge",
        "Windows",
        "Desktop",
        DESKTOP_SCREENS,
        7,
    ),
    Agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.3.1 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "iOS",
        "Mobile",
        PHONE_SCREENS,
        14,
    ),
    Agent(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1",
        "Chrome Mobile iOS",
        "iOS",
        "Mobile",
        PHONE_SCREENS,
        3,
    ),
    Agent(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/122.0.0.0 Mobile Safari/537.36",
        "Chrome Mobile",
        "Android",
        "Mobile",
        PHONE_SCREENS,
        10,
    ),
    Agent(
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "Samsung Internet",
        "Android",
        "Mobile",
        PHONE_SCREENS,
        3,
    ),
    Agent(
        "Mozilla/5.0 (iPad; CPU OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.3 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "iPadOS",
        "Tablet",
        TABLET_SCREENS,
        3,
    ),
]

LANGUAGES = [
    ("en-US", 30),
    ("en-GB", 10),
    ("de-DE", 18),
    ("fr-FR", 9),
    ("es-ES", 6),
    ("nl-NL", 6),
    ("it-IT", 4),
    ("pt-BR", 4),
    ("pl-PL", 3),
    ("sv-SE", 2),
    ("ja-JP", 2),
    ("de-AT", 2),
]

#: plan -> (monthly price, product name)
PLANS = {
    "starter": (9.0, "Ledgerly Starter"),
    "pro": (29.0, "Ledgerly Pro"),
    "team": (79.0, "Ledgerly Team"),
}
CURRENCIES = [
    ("EUR", 55),
    ("USD", 30),
    ("GBP", 10),
    ("eur", 3),
    ("usd", 2),
]  # some exports lowercase them
DOWNLOADS = [
    "ledgerly-invoice-template.xlsx",
    "eu-vat-checklist-2024.pdf",
    "ledgerly-desktop-2.4.1.dmg",
    "ledgerly-desktop-2.4.1-setup.exe",
    "late-payment-letter-template.docx",
]


def pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights=weights, k=1)[0]


def hex_id(rng: random.Random, n: int = 16) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


# --------------------------------------------------------------------------- web events


@dataclass
class Row:
    """One sample row: its values, when it happened, and what an import must do with it."""

    at: dt.datetime  # the instant, for ordering (bad timestamps keep a plausible one)
    values: dict[str, Any]
    fate: str = "send"  # "send" | "skip:<filter name>" | "reject"
    reason: str | None = None
    kind: str | None = None  # the bad-row kind, for the inventory


@dataclass
class Visit:
    visitor: str
    agent: Agent
    language: str
    screen: str
    rows: list[Row] = field(default_factory=list)


def web_events(rng: random.Random, visitors: int, id_prefix: str = "") -> list[Row]:
    """Realistic visits: a landing page with its referrer and utm tags, then a walk."""
    rows: list[Row] = []
    for _ in range(visitors):
        visitor = id_prefix + hex_id(rng)
        agent = pick(rng, [(a, a.weight) for a in AGENTS])
        language = pick(rng, LANGUAGES)
        screen = rng.choice(agent.screens)
        first = START + dt.timedelta(seconds=rng.randrange(SPAN_S - 10 * 86_400))
        n_visits = pick(rng, [(1, 62), (2, 24), (3, 10), (4, 4)])
        at = first
        plan_seen: str | None = None
        for v in range(n_visits):
            if v:
                at += dt.timedelta(hours=rng.randrange(20, 24 * 9))
                if at >= END - dt.timedelta(hours=2):
                    break
            visit = Visit(visitor, agent, language, screen)
            plan_seen = _one_visit(rng, visit, at, plan_seen)
            rows.extend(visit.rows)
            at = visit.rows[-1].at
    return rows


def _page_row(visit: Visit, at: dt.datetime, path: str, query: str, referrer: str) -> Row:
    title, host = PAGE[path]
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    return Row(
        at,
        {
            "visitor_id": visit.visitor,
            "event": "pageview",
            "url": url,
            "hostname": host,
            "referrer": referrer,
            "title": title,
            "user_agent": visit.agent.ua,
            "browser": visit.agent.browser,
            "os": visit.agent.os,
            "device": visit.agent.device,
            "language": visit.language,
            "screen": visit.screen,
            "revenue": None,
            "currency": None,
            "plan": None,
            "product": None,
            "file_name": None,
            "is_test": False,
        },
    )


def _event_row(page: Row, at: dt.datetime, name: str, **data: Any) -> Row:
    values = dict(page.values, event=name, **data)
    return Row(at, values)


def _one_visit(rng: random.Random, visit: Visit, at: dt.datetime, plan_seen: str | None) -> str | None:
    """Append one visit's rows; returns the plan the visitor looked at, if any."""
    landing = rng.choices(BROWSE, weights=LANDING_WEIGHTS, k=1)[0]
    referrer, query = pick(rng, [((r, q), w) for r, q, w in ACQUISITION])
    page = _page_row(visit, at, landing, query, referrer)
    visit.rows.append(page)
    path = landing
    steps = pick(rng, [(0, 30), (1, 22), (2, 18), (3, 12), (4, 8), (5, 5), (6, 3), (7, 2)])
    intent = rng.random()
    for _ in range(steps):
        at += dt.timedelta(seconds=rng.randrange(8, 240))
        previous_url = page.values["url"].split("?", 1)[0]
        if path == "/pricing" and intent < 0.45:
            plan_seen = plan_seen or pick(rng, [("starter", 4), ("pro", 5), ("team", 2)])
            if intent < 0.15:
                path = "/signup"
            else:
                visit.rows.append(_event_row(page, at, "add_to_cart", plan=plan_seen, product=PLANS[plan_seen][1]))
                at += dt.timedelta(seconds=rng.randrange(5, 60))
                path = "/checkout"
        elif path == "/checkout" and intent < 0.38:
            path = "/checkout/success"
        elif path == "/downloads" and intent < 0.6:
            visit.rows.append(_event_row(page, at, "download", file_name=rng.choice(DOWNLOADS)))
            at += dt.timedelta(seconds=rng.randrange(5, 90))
            path = rng.choice(BROWSE)
        else:
            path = rng.choice(BROWSE[:10] + ["/pricing"] * 4)
        page = _page_row(visit, at, path, "", previous_url)
        visit.rows.append(page)
        if path == "/signup":
            at += dt.timedelta(seconds=rng.randrange(20, 180))
            visit.rows.append(_event_row(page, at, "signup", plan=plan_seen or "free"))
        elif path == "/checkout/success":
            plan = plan_seen or "pro"
            yearly = rng.random() < 0.3
            price = PLANS[plan][0] * (10 if yearly else 1)
            visit.rows.append(
                _event_row(
                    page,
                    at + dt.timedelta(seconds=1),
                    "purchase",
                    revenue=price,
                    currency=pick(rng, CURRENCIES),
                    plan=plan,
                    product=PLANS[plan][1] + (" (yearly)" if yearly else " (monthly)"),
                )
            )
            break
    return plan_seen


def some(rng: random.Random, rows: list[Row], event: str | None = None) -> Row:
    """A copy of a random good row (optionally of one event kind) to turn into a bad one."""
    pool = [r for r in rows if r.fate == "send" and r.kind is None and (event is None or r.values["event"] == event)]
    base = rng.choice(pool)
    return Row(base.at + dt.timedelta(seconds=rng.randrange(1, 3600)), dict(base.values))


def iso_text(rng: random.Random, at: dt.datetime, style: str) -> str:
    """ISO 8601 as exports write it: Z, Z with milliseconds, or the Berlin offset."""
    if style == "ms":
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(1000):03d}Z"
    if style == "offset":
        return at.astimezone(BERLIN).isoformat(timespec="seconds")
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- events.csv

LONG_OS = "Windows Server 2022 (x64)"  # 25 characters: over Umami's 20, unknown to normalize
LONG_LANGUAGE = "fr-CH,fr;q=0.9,en;q=0.8,de;q=0.7,*;q=0.5"  # a raw Accept-Language header, 40
LONG_EVENT = "clicked_yearly_toggle_in_pricing_comparison_table_variant_b2"  # 60 characters
assert (len(LONG_OS), len(LONG_LANGUAGE), len(LONG_EVENT)) == (25, 40, 60)


def events_csv(rng: random.Random) -> tuple[list[Row], list[str]]:
    rows = web_events(rng, 215)
    styles = {}
    for r in rows:
        vid = r.values["visitor_id"]
        if vid not in styles:
            styles[vid] = pick(rng, [("z", 70), ("offset", 20), ("ms", 10)])
        r.values["timestamp"] = iso_text(rng, r.at, styles[vid])

    bad: list[Row] = []

    def add(kind: str, n: int, reason: str | None, make: Any, event: str | None = None) -> None:
        for i in range(1, n + 1):
            row = some(rng, rows, event)
            row.values["visitor_id"] = f"bad-{kind}-{i}"
            row.values["timestamp"] = iso_text(rng, row.at, "z")
            make(row, i)
            row.kind = kind
            row.fate = "reject" if reason else "send"
            row.reason = reason
            bad.append(row)

    def naive(row: Row, i: int) -> None:
        local = row.at.replace(tzinfo=None)
        row.values["timestamp"] = [
            local.strftime("%Y-%m-%dT%H:%M:%S"),
            local.strftime("%Y-%m-%d %H:%M:%S"),
            local.strftime("%Y-%m-%dT%H:%M:%S.250"),
        ][i - 1]

    def unparseable(row: Row, i: int) -> None:
        row.values["timestamp"] = [
            row.at.strftime("%d/%m/%Y %H:%M"),
            "2024-13-45T99:00:00Z",
            "yesterday",
        ][i - 1]

    def bot(row: Row, i: int) -> None:
        row.values["user_agent"] = [
            "python-requests/2.31",
            "curl/8.0",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/122.0.6261.94 Safari/537.36",
        ][i - 1]
        row.values.update(browser=None, os=None, device=None)

    def long_utm(row: Row, i: int) -> None:
        token = alnum(rng, 300)  # an email tool that pasted a tracking token into utm_source
        row.values["url"] = f"https://{HOST}/pricing?utm_source={token}&utm_medium=email"
        row.values["title"] = PAGE["/pricing"][0]

    def long_os(row: Row, i: int) -> None:
        row.values.update(os=LONG_OS, user_agent=AGENTS[0].ua, browser="Chrome", device="Desktop")

    def revenue_text(row: Row, i: int) -> None:
        row.values["revenue"] = ["abc", "N/A"][i - 1]

    def no_currency(row: Row, i: int) -> None:
        row.values["currency"] = None

    def bad_url(row: Row, i: int) -> None:
        row.values["url"] = ["http://[::1", "http://[::1/admin/invoices"][i - 1]

    def long_name(row: Row, i: int) -> None:
        row.values["event"] = LONG_EVENT

    def long_language(row: Row, i: int) -> None:
        row.values["language"] = LONG_LANGUAGE

    def long_data(row: Row, i: int) -> None:
        invoices = "_".join(f"INV-2024-{n:04d}" for n in range(1, 40))
        row.values["file_name"] = f"invoices-export-{invoices}.zip"

    def empty_id(row: Row, i: int) -> None:
        row.values["visitor_id"] = "" if i % 2 else "   "

    add("naive-ts", 3, R_NAIVE, naive)
    add("unparseable-ts", 3, R_NOT_ISO, unparseable)
    add("bot-ua", 4, R_BOT, bot)
    add("long-utm", 2, R_UTM_SOURCE, long_utm, "pageview")
    add("long-os", 3, r_too_long("os", 20), long_os)
    add("revenue-text", 2, R_REVENUE_NAN, revenue_text, "purchase")
    add("no-currency", 3, R_NO_CURRENCY, no_currency, "purchase")
    add("bad-url", 2, R_BAD_URL, bad_url)
    add("long-name", 2, r_too_long("name", 50), long_name, "download")
    add("long-language", 3, r_too_long("language", 35), long_language)
    add("long-data", 2, r_data_long("data.file_name"), long_data, "download")
    add("empty-id", 3, R_ID, empty_id)

    # An SSO user id of 60 characters: NOT an error, the importer hashes it to 42.
    long_id = "auth0|ledgerly-prod|" + hex_id(rng, 40)
    assert len(long_id) == 60
    template = some(rng, rows, "pageview")
    for i, path in enumerate(("/pricing", "/features", "/signup")):
        at = template.at + dt.timedelta(minutes=3 * i)
        values = dict(template.values, visitor_id=long_id, timestamp=iso_text(rng, at, "z"))
        title, host = PAGE[path]
        values.update(url=f"https://{host}{path}", title=title, hostname=host)
        bad.append(Row(at, values, kind="long-id-hashed"))

    # QA traffic from the staging checklist: skipped by the mapping's filter.
    for q in range(2):
        base = some(rng, rows, "pageview")
        for i, path in enumerate(("/", "/pricing", "/checkout")):
            at = base.at + dt.timedelta(seconds=40 * i)
            title, host = PAGE[path]
            values = dict(
                base.values,
                visitor_id=f"qa-{q + 1}",
                is_test=True,
                timestamp=iso_text(rng, at, "z"),
            )
            values.update(url=f"https://{host}{path}", title=title, hostname=host, referrer="")
            bad.append(Row(at, values, fate="skip:test traffic", kind="test-row"))

    everything = sorted(rows + bad, key=lambda r: (r.at, r.values["visitor_id"]))
    columns = [
        "timestamp",
        "visitor_id",
        "event",
        "url",
        "hostname",
        "referrer",
        "title",
        "user_agent",
        "browser",
        "os",
        "device",
        "language",
        "screen",
        "revenue",
        "currency",
        "plan",
        "product",
        "file_name",
        "is_test",
    ]
    for r in everything:
        rev = r.values["revenue"]
        if isinstance(rev, float):
            r.values["revenue"] = f"{rev:.2f}"
        r.values["is_test"] = "true" if r.values["is_test"] else "false"
    return everything, columns


# --------------------------------------------------------------------------- events.parquet


def events_parquet(rng: random.Random) -> list[Row]:
    rows = web_events(rng, 140, id_prefix="p")
    bad: list[Row] = []

    def add(kind: str, n: int, reason: str | None, make: Any, event: str | None = None) -> None:
        for i in range(1, n + 1):
            row = some(rng, rows, event)
            row.values["visitor_id"] = f"bad-{kind}-{i}"
            make(row, i)
            row.kind, row.reason = kind, reason
            row.fate = "reject"
            bad.append(row)

    def null_ts(row: Row, i: int) -> None:
        row.values["timestamp"] = None

    def bot(row: Row, i: int) -> None:
        row.values.update(
            user_agent=[
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "python-httpx/0.27.0",
            ][i - 1],
            browser=None,
            os=None,
            device=None,
        )

    def negative(row: Row, i: int) -> None:
        row.values["revenue"] = -row.values["revenue"]  # a refund written as a negative purchase

    def huge(row: Row, i: int) -> None:
        row.values["revenue"] = 2.9e16  # cents multiplied by 100 twice, then some

    def long_currency(row: Row, i: int) -> None:
        row.values["currency"] = "Pound Sterling"

    def long_screen(row: Row, i: int) -> None:
        row.values["screen"] = "1920 x 1080 px"

    def null_id(row: Row, i: int) -> None:
        row.values["visitor_id"] = None

    def bad_referrer(row: Row, i: int) -> None:
        row.values["referrer"] = "https://[2001:db8::1/blog"

    add("null-ts", 2, R_TS_INVALID, null_ts)
    add("bot-ua", 2, R_BOT, bot)
    add("negative-revenue", 2, R_REVENUE_LE0, negative, "purchase")
    add("huge-revenue", 1, R_REVENUE_BIG, huge, "purchase")
    add("long-currency", 1, R_CURRENCY_LONG, long_currency, "purchase")
    add("long-screen", 2, r_too_long("screen", 11), long_screen)
    add("null-id", 2, R_ID, null_id)
    add("bad-referrer", 1, R_BAD_REFERRER, bad_referrer, "pageview")
    for _ in range(4):
        row = some(rng, rows, "pageview")
        row.values.update(visitor_id="qa-parquet", is_test=True)
        row.kind, row.fate = "test-row", "skip:test traffic"
        bad.append(row)
    everything = sorted(rows + bad, key=lambda r: (r.at, r.values["visitor_id"] or ""))
    for r in everything:
        if "timestamp" not in r.values:
            r.values["timestamp"] = r.at
    return everything


# --------------------------------------------------------------------------- events.ndjson.gz


def events_ndjson(rng: random.Random) -> list[Row]:
    rows = web_events(rng, 140, id_prefix="n")
    bad: list[Row] = []

    def add(
        kind: str,
        n: int,
        reason: str | None,
        make: Any,
        event: str | None = None,
        fate: str = "reject",
    ) -> None:
        for i in range(1, n + 1):
            row = some(rng, rows, event)
            row.values["visitor_id"] = f"bad-{kind}-{i}"
            make(row, i)
            row.kind, row.reason, row.fate = kind, reason, fate
            bad.append(row)

    def seconds(row: Row, i: int) -> None:
        row.values["ts"] = int(row.at.timestamp())  # a writer that forgot the * 1000

    def micros(row: Row, i: int) -> None:
        row.values["ts"] = int(row.at.timestamp()) * 1_000_000

    def null_ts(row: Row, i: int) -> None:
        row.values["ts"] = None

    def long_device(row: Row, i: int) -> None:
        row.values["device"] = "Smart Fridge Display Panel"

    def zero(row: Row, i: int) -> None:
        row.values["revenue"] = 0.0  # a free trial logged as a purchase

    def bot(row: Row, i: int) -> None:
        row.values.update(user_agent="python-httpx/0.27.0", browser=None, os=None, device=None)

    def null_id(row: Row, i: int) -> None:
        row.values["visitor_id"] = None

    def staging(row: Row, i: int) -> None:
        row.values["environment"] = "staging"

    add("seconds-ts", 2, R_TS_BEFORE_1990, seconds)
    add("micros-ts", 1, R_TS_TOO_BIG_MS, micros)
    add("null-ts", 1, R_TS_NAN_MS, null_ts)
    add("long-device", 1, r_too_long("device", 20), long_device)
    add("zero-revenue", 2, R_REVENUE_LE0, zero, "purchase")
    add("bot-ua", 1, R_BOT, bot)
    add("null-id", 1, R_ID, null_id)
    add("staging", 5, None, staging, "pageview", fate="skip:staging traffic")
    everything = sorted(rows + bad, key=lambda r: (r.at, r.values["visitor_id"] or ""))
    for r in everything:
        r.values.setdefault("ts", int(r.at.timestamp() * 1000) + rng.randrange(1000))
        r.values.setdefault("environment", "production")
    return everything


# --------------------------------------------------------------------------- server-side samples


def stripe_payments(rng: random.Random) -> list[Row]:
    """A charges export as the Stripe API lists them, flattened (metadata.* columns)."""
    customers = [f"cus_{alnum(rng, 14)}" for _ in range(60)]
    rows: list[Row] = []
    for _ in range(140):
        at = START + dt.timedelta(seconds=rng.randrange(SPAN_S))
        plan = pick(rng, [("starter", 4), ("pro", 5), ("team", 2), ("templates", 1)])
        if plan == "templates":
            amount, description, interval = 1999, "Invoice template pack", None
        else:
            yearly = rng.random() < 0.25
            amount = int(PLANS[plan][0] * 100 * (10 if yearly else 1))
            interval = "yearly" if yearly else "monthly"
            description = f"{PLANS[plan][1]} ({interval})"
        live = rng.random() < 0.9
        status = pick(rng, [("succeeded", 80), ("failed", 11), ("refunded", 9)])
        customer = rng.choice(customers)
        values = {
            "id": f"ch_3O{alnum(rng, 22)}",
            "created": int(at.timestamp()),
            "amount": amount,
            "amount_refunded": amount if status == "refunded" else 0,
            "currency": pick(rng, [("eur", 6), ("usd", 3), ("gbp", 1)]),
            "customer": customer,
            "description": description,
            "status": status,
            "livemode": "true" if live else "false",
            "payment_method_type": pick(rng, [("card", 8), ("sepa_debit", 2), ("link", 1)]),
            "failure_code": "card_declined" if status == "failed" else None,
            "metadata.plan": plan,
            "metadata.order_id": f"ord_{rng.randrange(10_000, 99_999)}",
        }
        row = Row(at, values)
        if not live:
            row.fate, row.kind = "skip:test-mode charges", "test-mode"
        elif status == "failed":
            row.fate, row.kind = "skip:failed charges", "failed"
        rows.append(row)
    # Guest checkouts: no Stripe customer, so no visitor id.
    for row in [r for r in rows if r.fate == "send"][:3]:
        row.values["customer"] = None
        row.fate, row.reason, row.kind = "reject", R_ID, "no-customer"
    return sorted(rows, key=lambda r: r.at)


API_ACTIONS = [
    # (action, endpoint, method weight)
    ("login", "v1/sessions", 20),
    ("sync", "v1/sync", 30),
    ("create_invoice", "v1/invoices", 14),
    ("send_invoice", "v1/invoices/send", 8),
    ("upload_receipt", "v1/receipts", 10),
    ("export_pdf", "v1/exports/pdf", 5),
    ("view_report", "v1/reports/summary", 8),
    ("logout", "v1/sessions/current", 5),
]


def api_actions(rng: random.Random) -> list[Row]:
    accounts = [(f"acct_{hex_id(rng, 12)}", rng.choice(["ios", "android"])) for _ in range(45)]
    rows: list[Row] = []
    for _ in range(190):
        account, platform = rng.choice(accounts)
        at = START + dt.timedelta(milliseconds=rng.randrange(SPAN_S * 1000))
        action, endpoint = pick(rng, [((a, e), w) for a, e, w in API_ACTIONS])
        version = pick(rng, [("4.2.1", 6), ("4.2.0", 3), ("4.1.7", 2)])
        ua = f"Ledgerly/{version} (iPhone; iOS 17.4; Scale/3.00)" if platform == "ios" else "okhttp/4.12.0"
        rows.append(
            Row(
                at,
                {
                    "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "account_id": account,
                    "action": action,
                    "endpoint": endpoint,
                    "status_code": pick(rng, [(200, 90), (201, 6), (422, 3), (500, 1)]),
                    "app_version": version,
                    "platform": platform,
                    "user_agent": ua,
                },
            )
        )
    # Failed logins happen before there is an account: no visitor id.
    for row in rng.sample([r for r in rows if r.values["action"] == "login"], 2):
        row.values.update(account_id=None, status_code=401)
        row.fate, row.reason, row.kind = "reject", R_ID, "anonymous-login"
    return sorted(rows, key=lambda r: r.at)


JOBS = [
    # (job, hour, minute, typical duration ms): nightly jobs in Berlin time
    ("nightly_backup", 2, 15, 480_000),
    ("send_payment_reminders", 7, 0, 35_000),
    ("sync_bank_transactions", 6, 30, 95_000),
    ("generate_recurring_invoices", 1, 0, 140_000),
    ("refresh_exchange_rates", 16, 5, 4_000),
]
TENANTS = ["acme-gmbh", "globex-ltd", "initech-bv", "umbrella-sarl", "stark-ab", "wayne-spa"]


def job_results(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    day = START.date()
    while len(rows) < 160:
        for job, hour, minute, typical in JOBS:
            if rng.random() < 0.55:
                continue
            tenant = rng.choice(TENANTS)
            local = dt.datetime(day.year, day.month, day.day, hour, minute, rng.randrange(60))
            status = pick(rng, [("success", 88), ("failed", 7), ("retry", 5)])
            duration: Any = int(typical * rng.uniform(0.5, 1.8))
            values = {
                "started_at": local.strftime("%Y-%m-%d %H:%M:%S"),
                "job": job,
                "status": status,
                "duration_ms": str(duration),
                "worker": f"worker-{rng.randrange(1, 5)}",
                "tenant": tenant,
            }
            at = local.replace(tzinfo=BERLIN).astimezone(UTC)
            rows.append(Row(at, values))
        day += dt.timedelta(days=1)
        if day >= END.date():
            break
    # A job killed by its supervisor logs "timeout" instead of a duration.
    victim = rng.choice([r for r in rows if r.values["job"] == "sync_bank_transactions"])
    victim.values.update(status="failed", duration_ms="timeout")
    victim.fate, victim.reason, victim.kind = "reject", R_DURATION_NAN, "duration-text"
    # 2024-03-31 02:15 does not exist in Berlin (clocks jump 02:00 -> 03:00): the backup
    # writer logged it anyway. The importer never guesses such a time.
    gap = Row(
        dt.datetime(2024, 3, 31, 1, 15, tzinfo=UTC),
        {
            "started_at": "2024-03-31 02:15:07",
            "job": "nightly_backup",
            "status": "success",
            "duration_ms": "512034",
            "worker": "worker-2",
            "tenant": "acme-gmbh",
        },
        fate="reject",
        reason=R_JOB_PATTERN,
        kind="dst-gap",
    )
    rows = [r for r in rows if not r.values["started_at"].startswith("2024-03-31 02:")]
    rows.append(gap)
    return sorted(rows, key=lambda r: r.at)


CRAWLERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/8.4.0",
]


def ipv4(rng: random.Random) -> str:
    first = rng.choice([81, 85, 91, 93, 178, 185, 212])
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def access_log(rng: random.Random) -> list[Row]:
    """Combined Log Format fields as columns, times as the log writes them.

    ``time`` is ``%d/%b/%Y:%H:%M:%S %z`` in Berlin time (05/Mar/2024:14:22:10 +0100).
    """
    rows: list[Row] = []
    clients = [
        (
            ipv4(rng),
            pick(rng, [(a, a.weight) for a in AGENTS]).ua,
        )
        for _ in range(45)
    ]
    while len(rows) < 260:
        at = START + dt.timedelta(seconds=rng.randrange(SPAN_S - 3600))
        roll = rng.random()
        if roll < 0.12:
            ip = f"66.249.{rng.randrange(64, 80)}.{rng.randrange(1, 255)}"
            ua = rng.choice(CRAWLERS)
            hits = [(rng.choice(BROWSE), "GET", "200")]
        else:
            ip, ua = rng.choice(clients)
            path = rng.choice(BROWSE[:10])
            hits = [
                (path, "GET", "200"),
                ("/static/app.3f9c1b.js", "GET", "200"),
                ("/favicon.ico", "GET", "200"),
            ]
            for _ in range(rng.randrange(0, 4)):
                path = rng.choice([*BROWSE[:10], "/pricing"])
                hits.append((path, "GET", pick(rng, [("200", 85), ("304", 10), ("404", 3), ("500", 2)])))
            if rng.random() < 0.08:
                hits.append(("/contact", "POST", "302"))
            if rng.random() < 0.05:
                hits.append(("/old-pricing", "GET", "301"))
            if rng.random() < 0.04:
                hits.append(("/wp-login.php", "GET", "404"))
        referrer = "-"
        for path, method, status in hits:
            rows.append(
                Row(
                    at,
                    {
                        "time": at.astimezone(BERLIN).strftime("%d/%b/%Y:%H:%M:%S %z"),
                        "ip": ip,
                        "user_agent": ua,
                        "method": method,
                        "path": path,
                        "status": status,
                        "referer": referrer,
                        "bytes": str(rng.randrange(300, 48_000)) if status != "304" else "0",
                    },
                )
            )
            if not path.startswith(("/static", "/favicon")):
                referrer = f"https://{HOST}{path}"
            at += dt.timedelta(seconds=rng.randrange(1, 90))
    for r in rows:
        v = r.values
        if v["method"] != "GET":
            r.fate = "skip:not a GET request"
        elif int(v["status"]) >= 400:
            r.fate = "skip:error responses"
        elif v["status"] in ("301", "302"):
            r.fate = "skip:redirects"
        elif v["path"].startswith("/static/") or v["path"] in ("/favicon.ico", "/robots.txt"):
            r.fate = "skip:static files"
        elif v["user_agent"] in CRAWLERS:
            r.fate, r.reason, r.kind = "reject", R_BOT, "crawler"
    return sorted(rows, key=lambda r: r.at)


# --------------------------------------------------------------------------- writing


def ledger(rows: list[Row], mapping: str) -> dict[str, Any]:
    """What `backfill validate <file> --mapping <mapping>` must report for these rows."""
    rejected: dict[str, int] = {}
    skipped: dict[str, int] = {}
    bad_rows: dict[str, list[int]] = {}
    for number, r in enumerate(rows, 1):
        if r.fate == "reject":
            rejected[str(r.reason)] = rejected.get(str(r.reason), 0) + 1
        elif r.fate.startswith("skip:"):
            name = r.fate[5:]
            skipped[name] = skipped.get(name, 0) + 1
        if r.kind:
            bad_rows.setdefault(r.kind, []).append(number)
    return {
        "mapping": mapping,
        "read": len(rows),
        "would_send": sum(r.fate == "send" for r in rows),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "skipped_by_filter": dict(sorted(skipped.items())),
        "rows_by_kind": dict(sorted(bad_rows.items())),
    }


def write_csv(path: Path, rows: list[Row], columns: list[str]) -> None:
    frame = pl.DataFrame(
        {c: [_text(r.values.get(c)) for r in rows] for c in columns},
        schema={c: pl.String for c in columns},
    )
    frame.write_csv(path)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def write_ndjson(rows: list[Row], columns: list[str]) -> bytes:
    lines = [json.dumps({c: r.values.get(c) for c in columns}, ensure_ascii=False) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def write_gzip(path: Path, data: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:  # no name, no time: same bytes
        gz.write(data)
    path.write_bytes(buf.getvalue())


def main() -> None:
    expected: dict[str, Any] = {}

    rows, columns = events_csv(random.Random(SEED))
    write_csv(OUT / "events.csv", rows, columns)
    expected["events.csv"] = ledger(rows, "mappings/sample_events.yaml")

    rows = events_parquet(random.Random(SEED + 1))
    pq_columns = [c for c in columns if c != "timestamp"]
    frame = pl.DataFrame(
        {
            "timestamp": pl.Series([r.values["timestamp"] for r in rows], dtype=pl.Datetime("us", "UTC")),
            **{c: [r.values.get(c) for r in rows] for c in pq_columns},
        },
        schema_overrides={"revenue": pl.Float64, "is_test": pl.Boolean},
    )
    frame.write_parquet(OUT / "events.parquet", compression="zstd", statistics=True)
    expected["events.parquet"] = ledger(rows, "mappings/sample_events_parquet.yaml")

    rows = events_ndjson(random.Random(SEED + 2))
    nd_columns = ["ts", "visitor_id", "environment"] + [
        c for c in columns if c not in ("timestamp", "visitor_id", "is_test")
    ]
    write_gzip(OUT / "events.ndjson.gz", write_ndjson(rows, nd_columns))
    expected["events.ndjson.gz"] = ledger(rows, "mappings/sample_events_ndjson.yaml")

    rows = stripe_payments(random.Random(SEED + 3))
    write_csv(OUT / "stripe_payments.csv", rows, list(rows[0].values))
    expected["stripe_payments.csv"] = ledger(rows, "mappings/stripe_payments.yaml")

    rows = api_actions(random.Random(SEED + 4))
    (OUT / "api_actions.ndjson").write_bytes(write_ndjson(rows, list(rows[0].values)))
    expected["api_actions.ndjson"] = ledger(rows, "mappings/api_actions.yaml")

    rows = job_results(random.Random(SEED + 5))
    write_csv(OUT / "job_results.csv", rows, list(rows[0].values))
    expected["job_results.csv"] = ledger(rows, "mappings/job_results.yaml")

    rows = access_log(random.Random(SEED + 6))
    write_csv(OUT / "access_log.csv", rows, list(rows[0].values))
    expected["access_log.csv"] = ledger(rows, "mappings/pageview_log.yaml")

    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    for name, info in expected.items():
        size = (OUT / name).stat().st_size
        print(
            f"{name:<22} {info['read']:>5} rows {size / 1024:>7.1f} KiB"
            f"  send {info['would_send']:>5}"
            f"  reject {sum(info['rejected_by_reason'].values()):>3}"
            f"  skip {sum(info['skipped_by_filter'].values()):>3}"
        )


if __name__ == "__main__":
    main()
