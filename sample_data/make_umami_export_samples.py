"""Write the Umami export samples in sample_data/umami_export/ and what they must give.

Two shapes of the same website's data, made from one list of sessions here:

* ``umami-export.zip``: Umami Cloud's "Export data" ZIP (website_event.csv,
  event_data.csv, session_data.csv; ClickHouse-style times "2024-03-01 10:00:00",
  session attributes on every event row, text cells starting with = + - @ quoted
  with ' as the export route does);
* ``postgres/``: a self-hosted PostgreSQL dump, each table ``\\copy``'d to CSV
  (website_event.csv without session attributes, session.csv, event_data.csv
  keyed by website_event_id, session_data.csv; times "2024-03-01 10:00:00.123+00").

``expected.json`` holds what Umami's dashboard must show after importing either
shape, computed from the sessions below (never through the reader): per-day
pageviews, visitors, visits, custom events by name, revenue, and sessions per
country, browser, OS and device; plus the rows skipped (link, pixel and
performance events).

Run from the repository root: ``python sample_data/make_umami_export_samples.py``.
"""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "umami_export"
WEBSITE = "5f1c2d3e-0a1b-4c2d-8e3f-112233445566"
NS = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

CLOUD_EVENT_COLUMNS = [
    "website_id", "session_id", "visit_id", "event_id", "hostname", "browser", "os", "device", "screen",
    "language", "country", "region", "city", "url_path", "url_query", "utm_source", "utm_medium",
    "utm_campaign", "utm_content", "utm_term", "referrer_path", "referrer_query", "referrer_domain",
    "page_title", "gclid", "fbclid", "msclkid", "ttclid", "li_fat_id", "twclid", "lcp", "inp", "cls", "fcp",
    "ttfb", "event_type", "event_name", "tag", "distinct_id", "created_at", "job_id",
]  # fmt: skip
CLOUD_SESSION_DATA_COLUMNS = [
    "website_id", "session_id", "data_key", "string_value", "number_value", "date_value", "data_type",
    "distinct_id", "created_at", "job_id",
]  # fmt: skip
CLOUD_EVENT_DATA_COLUMNS = [
    "website_id", "session_id", "event_id", "url_path", "event_name", "data_key", "string_value",
    "number_value", "date_value", "data_type", "created_at", "job_id",
]  # fmt: skip
PG_EVENT_COLUMNS = [
    "event_id", "website_id", "session_id", "created_at", "url_path", "url_query", "utm_source", "utm_medium",
    "utm_campaign", "utm_content", "utm_term", "referrer_path", "referrer_query", "referrer_domain",
    "page_title", "event_type", "event_name", "visit_id", "tag", "fbclid", "gclid", "li_fat_id", "msclkid",
    "ttclid", "twclid", "hostname",
]  # fmt: skip
PG_SESSION_COLUMNS = [
    "session_id", "website_id", "browser", "os", "device", "screen", "language", "country", "region", "city",
    "created_at", "distinct_id",
]  # fmt: skip
PG_EVENT_DATA_COLUMNS = [
    "event_data_id", "website_id", "website_event_id", "data_key", "string_value", "number_value",
    "date_value", "data_type", "created_at",
]  # fmt: skip
PG_SESSION_DATA_COLUMNS = [
    "session_data_id", "website_id", "session_id", "data_key", "string_value", "number_value", "date_value",
    "data_type", "created_at", "distinct_id",
]  # fmt: skip

CLIENTS = [
    ("chrome", "Windows 10", "desktop", "2560x1440"),
    ("chrome", "Mac OS", "laptop", "1440x900"),
    ("firefox", "Linux", "laptop", "1920x1080"),
    ("ios", "iOS", "mobile", "390x844"),
    ("samsung", "Android OS", "mobile", "412x915"),
    ("safari", "Mac OS", "tablet", "820x1180"),
    ("edge-chromium", "Windows 10", "desktop", "2560x1080"),
]
PLACES = [
    ("DE", "DE-BE", "Berlin"),
    ("FR", "FR-IDF", "Paris"),
    ("US", "US-CA", "San Francisco"),
    ("BR", "BR-SP", "São Paulo"),
    (None, None, None),
]
PAGES = [
    ("/", "Home"),
    ("/pricing", "Pricing"),
    ("/blog/umami", "Self-hosted analytics"),
    ("/docs/start#install", "Getting started"),
    ("/sale", "-50% on everything"),  # the export quotes it: '-50% on everything
    ("/café", "Café = coffee"),
]
QUERIES = [None, None, "utm_source=newsletter&utm_medium=email&utm_campaign=spring", "ref=x&gclid=abc123"]
REFERRERS = [
    (None, None, None),
    ("google.com", "/search", "q=umami+import"),
    ("news.ycombinator.com", "/item", "id=1"),
    ("t.co", "/abc", None),
]
DAYS = [datetime(2024, 3, d, tzinfo=UTC) for d in (1, 2, 3)]


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


def make_sessions(seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, event data, session data) of the website, as Umami stores them."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    event_data: list[dict[str, Any]] = []
    session_data: list[dict[str, Any]] = []
    for s in range(36):
        browser, os_name, device, screen = CLIENTS[s % len(CLIENTS)]
        country, region, city = PLACES[s % len(PLACES)]
        session = {
            "session_id": _id("session", s),
            "browser": browser,
            "os": os_name,
            "device": device,
            "screen": screen,
            "language": ["en-US", "de-DE", "fr-FR"][s % 3],
            "country": country,
            "region": region,
            "city": city,
            "distinct_id": f"user-{s}" if s % 4 == 0 else None,
        }
        day = DAYS[s % len(DAYS)]
        start = day + timedelta(hours=8 + (s % 12), minutes=rng.randrange(0, 50))
        if s == 5:
            start = day + timedelta(hours=10, minutes=52)  # this visit crosses 11:00: kept whole
        for v in range(1 + (s % 3 == 0)):
            visit = _id("visit", s, v)
            at = start + timedelta(hours=3 * v)
            referrer = REFERRERS[(s + v) % len(REFERRERS)]
            for n in range(1 + (s + v) % 4 + (s == 5) * 3):
                path, title = PAGES[(s + n) % len(PAGES)]
                query = QUERIES[(s + n) % len(QUERIES)] if n == 0 else None
                events.append(
                    _event(session, visit, at, 1, None, path, query, title, referrer if n == 0 else (None,) * 3)
                )
                at += timedelta(minutes=2, seconds=rng.randrange(0, 60))
            if s % 3 == 1:
                ev = _event(session, visit, at, 2, "signup", "/signup", None, "Sign up", (None,) * 3)
                events.append(ev)
                event_data += _data(ev, {"plan": "pro", "trial": True, "seats": 3, "form.step": "2"})
            if s % 5 == 2:
                ev = _event(
                    session, visit, at + timedelta(seconds=30), 2, "purchase", "/checkout", None, None, (None,) * 3
                )
                events.append(ev)
                amount = [49.99, 120.0, 9.5][s % 3]
                event_data += _data(
                    ev,
                    {
                        "revenue": amount,
                        "currency": "EUR" if country in ("DE", "FR") else "USD",
                        "items": ["a", "b"],
                        "paid_at": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    },
                )
            if s % 6 == 3:
                ev = _event(
                    session, visit, at + timedelta(seconds=40), 2, "download", "/docs/start", None, None, (None,) * 3
                )
                ev["tag"] = "docs"
                events.append(ev)
            if s % 7 == 4:  # a link hit and web vitals: skipped by the preset's filter
                events.append(
                    _event(session, visit, at + timedelta(seconds=50), 3, None, "/go", None, None, (None,) * 3)
                )
                events.append(
                    _event(session, visit, at + timedelta(seconds=55), 5, None, "/", None, "Home", (None,) * 3)
                )
        if session["distinct_id"]:
            session_data += _data(
                {**session, "created_at": start + timedelta(minutes=1)},
                {
                    "plan": ["free", "pro"][s % 2],
                    "age": 30 + s,
                    "beta": s % 8 == 0,
                    "signup": "2023-12-01T00:00:00.000Z",
                },
            )
    events.sort(key=lambda e: (e["created_at"], e["event_id"]))
    return events, event_data, session_data


def _event(session: dict[str, Any], visit: str, at: datetime, event_type: int, name: str | None, path: str,
           query: str | None, title: str | None, referrer: tuple[str | None, ...]) -> dict[str, Any]:  # fmt: skip
    domain, ref_path, ref_query = referrer
    return {
        **session,
        "event_id": _id("event", session["session_id"], at.isoformat(), event_type, name, path),
        "visit_id": visit,
        "hostname": "www.example.com",
        "url_path": path,
        "url_query": query,
        "referrer_domain": domain,
        "referrer_path": ref_path,
        "referrer_query": ref_query,
        "page_title": title,
        "event_type": event_type,
        "event_name": name,
        "tag": None,
        "created_at": at,
    }


def _data(owner: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in values.items():
        row: dict[str, Any] = {"data_key": key, "string_value": None, "number_value": None, "date_value": None}
        if isinstance(value, bool):
            row.update(string_value="true" if value else "false", data_type=3)
        elif isinstance(value, (int, float)):
            row.update(string_value=f"{value:.4f}", number_value=f"{value:.4f}", data_type=2)
        elif isinstance(value, list):
            row.update(string_value=json.dumps(value, separators=(",", ":")), data_type=5)
        elif key in ("paid_at", "signup"):
            row.update(string_value=value, date_value=datetime.fromisoformat(value), data_type=4)
        else:
            row.update(string_value=value, data_type=1)
        row.update(
            session_id=owner["session_id"],
            event_id=owner.get("event_id"),
            url_path=owner.get("url_path"),
            event_name=owner.get("event_name"),
            distinct_id=owner.get("distinct_id"),
            created_at=owner["created_at"],
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- writing


def _cloud_cell(value: Any) -> str:
    """As Umami's export route writes a cell: ClickHouse times, ' before formula triggers."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return "'" + text if text[:1] in "=+-@\t\r" and text else text


def _pg_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"
    return str(value)


def _csv(rows: list[dict[str, Any]], columns: list[str], cell: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell({"website_id": WEBSITE, **row}.get(c)) for c in columns])
    return out.getvalue()


def write(out: Path = OUT) -> dict[str, Any]:
    events, event_data, session_data = make_sessions()
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / "umami-export.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows, columns in (
            ("website_event.csv", events, CLOUD_EVENT_COLUMNS),
            ("event_data.csv", event_data, CLOUD_EVENT_DATA_COLUMNS),
            ("session_data.csv", session_data, CLOUD_SESSION_DATA_COLUMNS),
        ):
            info = zipfile.ZipInfo(name, date_time=(2024, 4, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _csv(rows, columns, _cloud_cell))
    pg = out / "postgres"
    pg.mkdir(exist_ok=True)
    sessions = {e["session_id"]: {**e, "created_at": e["created_at"]} for e in reversed(events)}
    (pg / "website_event.csv").write_text(_csv(events, PG_EVENT_COLUMNS, _pg_cell))
    (pg / "session.csv").write_text(_csv(list(sessions.values()), PG_SESSION_COLUMNS, _pg_cell))
    pg_event_data = [
        {**r, "website_event_id": r["event_id"], "event_data_id": _id("ed", i)} for i, r in enumerate(event_data)
    ]
    (pg / "event_data.csv").write_text(_csv(pg_event_data, PG_EVENT_DATA_COLUMNS, _pg_cell))
    pg_session_data = [{**r, "session_data_id": _id("sd", i)} for i, r in enumerate(session_data)]
    (pg / "session_data.csv").write_text(_csv(pg_session_data, PG_SESSION_DATA_COLUMNS, _pg_cell))
    expected = expected_figures(events, event_data, session_data)
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    return expected


def expected_figures(events: list[dict[str, Any]], event_data: list[dict[str, Any]],
                     session_data: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """What Umami's dashboard shows for these events (its own counting rules)."""
    pageviews = [e for e in events if e["event_type"] == 1]
    custom = [e for e in events if e["event_type"] == 2]
    imported = pageviews + custom

    def day(e: dict[str, Any]) -> str:
        return e["created_at"].strftime("%Y-%m-%d")

    visitors: dict[str, set[str]] = defaultdict(set)
    visits: dict[str, set[str]] = defaultdict(set)
    for e in pageviews:
        visitors[day(e)].add(e["session_id"])
        visits[day(e)].add(e["visit_id"])
    by_event = {e["event_id"]: e for e in events}
    revenue: dict[str, float] = defaultdict(float)
    for r in event_data:
        if r["data_key"] == "revenue":
            revenue[day(by_event[r["event_id"]])] += float(r["number_value"])
    sessions = {e["session_id"]: e for e in imported}

    def per(attr: str) -> dict[str, int]:
        return dict(sorted(Counter(str(s[attr]) for s in sessions.values() if s[attr]).items()))

    return {
        "website_event_rows": len(events),
        "event_data_rows": len(event_data),
        "session_data_rows": len(session_data),
        "identify_rows": len({r["session_id"] for r in session_data}),
        "skipped_link_pixel_performance": len(events) - len(imported),
        "pageviews_by_day": dict(sorted(Counter(map(day, pageviews)).items())),
        "visitors_by_day": {d: len(s) for d, s in sorted(visitors.items())},
        "visits_by_day": {d: len(s) for d, s in sorted(visits.items())},
        "events_by_name": dict(sorted(Counter(e["event_name"] for e in custom).items())),
        "revenue_by_day": {d: round(v, 4) for d, v in sorted(revenue.items())},
        "sessions": len(sessions),
        "sessions_by_country": per("country"),
        "sessions_by_browser": per("browser"),
        "sessions_by_os": per("os"),
        "sessions_by_device": per("device"),
    }


if __name__ == "__main__":
    print(json.dumps(write(), indent=2))
