"""Write the Plausible events_v2 samples (sample_data/plausible_events/): the same events twice.

    python sample_data/make_plausible_event_samples.py

Files, as a self-hosted Plausible's ClickHouse writes them:

* ``events_v2.ndjson.gz``: ``SELECT ... FROM events_v2 FORMAT JSONEachRow``, gzip.
  UInt64 values are quoted on odd rows and plain numbers on even rows (both
  occur, depending on ``output_format_json_quote_64bit_integers``).
* ``events_v2.csv``: ``FORMAT CSVWithNames``: strings in double quotes, nulls
  as ``\\N``, arrays as ClickHouse literals (``['a','b\\'c']``), FixedString
  ``\\0\\0`` as two raw NUL bytes.
* ``expected.json``: what an import must produce, computed here from the
  generator's own events (never through the reader): pageviews and distinct
  visitors per UTC day, goals (custom events) by name, revenue per day.

Seeded: running it again writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "plausible_events"
SEED = 20240301
DAYS = 4
START = dt.datetime(2024, 3, 1)
HOST = "www.cafe-demo.example"

COLUMNS = (
    "timestamp",
    "name",
    "site_id",
    "user_id",
    "session_id",
    "hostname",
    "pathname",
    "referrer",
    "referrer_source",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "meta.key",
    "meta.value",
    "country_code",
    "subdivision1_code",
    "city_geoname_id",
    "screen_size",
    "operating_system",
    "operating_system_version",
    "browser",
    "browser_version",
    "revenue_reporting_amount",
    "revenue_reporting_currency",
)
UINT64 = ("user_id", "session_id")
NUMBERS = ("site_id", "city_geoname_id")
ARRAYS = ("meta.key", "meta.value")

PATHS = ("/", "/menu", "/menu/coffee", "/about", "/blog/latte-art", "/shop", "/shop/beans#reviews")
REFERRERS = (  # (referrer as Plausible stores it, referrer_source)
    ("", ""),
    ("", ""),
    ("www.google.com", "Google"),
    ("news.ycombinator.com/item", "Hacker News"),
    ("https://duckduckgo.com/", "DuckDuckGo"),
)
CAMPAIGNS = (  # (medium, source, campaign, content, term)
    ("", "", "", "", ""),
    ("", "", "", "", ""),
    ("", "", "", "", ""),
    ("email", "newsletter", "march sale", "", ""),
    ("cpc", "google", "beans & more", "ad-2", "fresh coffee"),
)
PLACES = (  # (country_code, subdivision1_code, city_geoname_id)
    ("DE", "DE-BE", 2950159),
    ("DE", "DE-BY", 2867714),
    ("FR", "FR-IDF", 2988507),
    ("US", "US-CA", 5391959),
    ("GB", "", 0),
    ("\x00\x00", "", 0),  # FixedString(2) empty: unknown
    ("ZZ", "", 0),  # Plausible's "unknown country"
)
DEVICES = (  # (screen_size, operating_system, os version, browser, browser version)
    ("Desktop", "Windows", "10", "Chrome", "122.0"),
    ("Laptop", "Mac", "14.3", "Safari", "17.3"),
    ("Mobile", "iOS", "17.3", "Safari", "17.3"),
    ("Mobile", "Android", "14", "Chrome", "122.0"),
    ("Tablet", "iOS", "16.7", "Safari", "16.6"),
    ("Desktop", "GNU/Linux", "", "Firefox", "123.0"),
)
PLANS = ("basic", "pro", "O'Brien's blend")  # a value with a quote: escaped in the CSV array


def build_events() -> list[dict[str, Any]]:
    """Visits over DAYS days: pageviews with engagement events, some Signup and Purchase goals."""
    rng = random.Random(SEED)
    events: list[dict[str, Any]] = []
    for day in range(DAYS):
        date = START + dt.timedelta(days=day)
        visitors = rng.randint(14, 20)
        for _ in range(visitors):
            # user_id rotates daily in Plausible: a fresh one per visitor and day; some above 2**63
            user_id = rng.randrange(1, 2**64)
            place = rng.choice(PLACES)
            device = rng.choice(DEVICES)
            for _visit in range(rng.choice((1, 1, 2))):
                session_id = rng.randrange(1, 2**64)
                at = date + dt.timedelta(seconds=rng.randrange(0, 86_400 - 3_600))
                referrer, source = rng.choice(REFERRERS)
                medium, utm_source, campaign, content, term = rng.choice(CAMPAIGNS)
                base = {
                    "site_id": 1,
                    "user_id": user_id,
                    "session_id": session_id,
                    "hostname": HOST,
                    "referrer": referrer,
                    "referrer_source": source,
                    "utm_medium": medium,
                    "utm_source": utm_source,
                    "utm_campaign": campaign,
                    "utm_content": content,
                    "utm_term": term,
                    "country_code": place[0],
                    "subdivision1_code": place[1],
                    "city_geoname_id": place[2],
                    "screen_size": device[0],
                    "operating_system": device[1],
                    "operating_system_version": device[2],
                    "browser": device[3],
                    "browser_version": device[4],
                    "meta.key": [],
                    "meta.value": [],
                    "revenue_reporting_amount": None,
                    "revenue_reporting_currency": "\x00\x00\x00",
                }
                for _page in range(rng.randint(1, 4)):
                    path = rng.choice(PATHS)
                    events.append({**base, "timestamp": at, "name": "pageview", "pathname": path})
                    at += dt.timedelta(seconds=rng.randint(5, 300))
                    events.append({**base, "timestamp": at, "name": "engagement", "pathname": path})
                    at += dt.timedelta(seconds=rng.randint(1, 20))
                    if rng.random() < 0.12:
                        plan = rng.choice(PLANS)
                        events.append(
                            {
                                **base,
                                "timestamp": at,
                                "name": "Signup",
                                "pathname": path,
                                "meta.key": ["plan", "form"],
                                "meta.value": [plan, "footer"],
                            }
                        )
                    if path.startswith("/shop") and rng.random() < 0.5:
                        amount = round(rng.uniform(5, 60), 2)
                        events.append(
                            {
                                **base,
                                "timestamp": at,
                                "name": "Purchase",
                                "pathname": path,
                                "meta.key": ["sku"],
                                "meta.value": [f"BEAN-{rng.randint(1, 9)}"],
                                "revenue_reporting_amount": amount,
                                "revenue_reporting_currency": "EUR",
                            }
                        )
    events.sort(key=lambda e: (e["timestamp"], e["session_id"]))
    for event in events:
        event["timestamp"] = event["timestamp"].strftime("%Y-%m-%d %H:%M:%S")
    return events


# --------------------------------------------------------------------------- containers


def json_line(event: dict[str, Any], quote_uint64: bool) -> str:
    row = {c: event[c] for c in COLUMNS}
    if quote_uint64:
        row.update({c: str(row[c]) for c in UINT64})
    return json.dumps(row, ensure_ascii=True, separators=(",", ":"))


def _csv_string(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _array_literal(values: list[str]) -> str:
    quoted = ("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return "[" + ",".join(quoted) + "]"


def csv_line(event: dict[str, Any]) -> str:
    cells = []
    for column in COLUMNS:
        value = event[column]
        if value is None:
            cells.append("\\N")
        elif column in ARRAYS:
            cells.append(_csv_string(_array_literal(value)))
        elif column in UINT64 or column in NUMBERS or isinstance(value, float):
            cells.append(str(value))
        else:
            cells.append(_csv_string(value))
    return ",".join(cells)


def expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What Umami must hold after importing one of the files with mappings/plausible-events.yaml."""
    pageviews: Counter[str] = Counter()
    visitors: dict[str, set[int]] = defaultdict(set)
    goals: Counter[str] = Counter()
    revenue: dict[str, float] = defaultdict(float)
    countries: Counter[str] = Counter()
    engagement = 0
    for event in events:
        day = event["timestamp"][:10]
        if event["name"] == "engagement":
            engagement += 1
            continue
        code = event["country_code"].strip("\x00")
        if code and code != "ZZ":
            countries[code] += 1
        if event["name"] == "pageview":
            pageviews[day] += 1
            visitors[day].add(event["user_id"])
        else:
            goals[event["name"]] += 1
        if event["revenue_reporting_amount"]:
            revenue[day] += event["revenue_reporting_amount"]
    return {
        "events_total": len(events),
        "skipped_engagement": engagement,
        "pageviews_by_day": dict(sorted(pageviews.items())),
        "visitors_by_day": {d: len(v) for d, v in sorted(visitors.items())},
        "goals_by_name": dict(sorted(goals.items())),
        "revenue_by_day": {d: round(v, 4) for d, v in sorted(revenue.items())},
        "revenue_currency": "EUR",
        "events_by_country": dict(sorted(countries.items())),
    }


def write(out: Path = OUT) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    events = build_events()
    text = "".join(json_line(e, quote_uint64=i % 2 == 0) + "\n" for i, e in enumerate(events))
    with open(out / "events_v2.ndjson.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(text.encode("utf-8"))
    lines = [",".join(_csv_string(c) for c in COLUMNS)] + [csv_line(e) for e in events]
    (out / "events_v2.csv").write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    result = expected(events)
    (out / "expected.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    summary = write()
    print(f"wrote {summary['events_total']} events to {OUT}/events_v2.ndjson.gz and events_v2.csv")
