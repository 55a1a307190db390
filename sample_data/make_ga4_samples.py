#!/usr/bin/env python3
"""Write the GA4 BigQuery-export samples in ``sample_data/ga4/``, the same events on every run.

    python sample_data/make_ga4_samples.py

A made-up web property (www.ledgerly.example, time zone UTC) exported from its
daily ``events_YYYYMMDD`` tables the three ways BigQuery can:

  events_20240301.json.gz   newline-delimited JSON, gzip; INT64 values written as
                            JSON strings, null fields left out (as `bq extract` does)
  events_20240302.parquet   Parquet, native types
  events_20240303.avro      Avro object container, deflate, a schema shaped like
                            BigQuery's (nullable unions, REPEATED as arrays)
  expected.json             what an import with mappings/ga4.yaml must store, computed
                            here from the generated events themselves (not by the reader)

Visitors come back over several days (several sessions each, some logged in
with a user_id); sessions start with GA's bookkeeping events (first_visit,
session_start), land on pages with utm tags in the URL or only in
collected_traffic_source, click, download, search, add to cart and buy.

Odd rows, on purpose (``ODD`` below names them by event_name + a marker param):
  * lines whose event_timestamp is a JSON number among string ones (JSON file);
  * an event without event_params (``consent_update``);
  * a param whose value struct has two fields set (``outbound`` of a click:
    string_value "true" AND int_value 1; the reader takes string_value);
  * an app-stream event (platform ANDROID, no page_location);
  * a purchase without ``ecommerce`` (revenue from its ``value`` param);
  * a country GA could not place, "(not set)".

Each file can also be written from any list of events (``write_json_gz``,
``write_parquet``, ``write_avro``): the tests write the same events in all three
containers and compare the reader's rows.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import fastavro
import polars as pl

OUT = Path(__file__).resolve().parent / "ga4"
SEED = 4242
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
HOST = "www.ledgerly.example"
BOOKKEEPING = ("session_start", "first_visit", "user_engagement", "scroll")

#: (country name as GA4 writes it, ISO code, region, ISO region code or None, city)
PLACES = (
    ("United Kingdom", "GB", "England", "GB-ENG", "London"),
    ("United States", "US", "California", "US-CA", "San Francisco"),
    ("Germany", "DE", "Berlin", "DE-BE", "Berlin"),
    ("Türkiye", "TR", "Istanbul", "TR-34", "Istanbul"),
    ("South Korea", "KR", "Seoul", None, "Seoul"),
    ("Czechia", "CZ", "Prague", None, "Prague"),
    ("United States", "US", "New York", "US-NY", "New York"),
)
NOT_SET_PLACE = ("(not set)", None, "(not set)", None, "(not set)")

#: (category, operating_system, version, browser, browser version)
DEVICES = (
    ("desktop", "Windows", "Windows 10", "Chrome", "122.0.6261.112"),
    ("desktop", "Macintosh", "Intel 10.15", "Safari", "17.3"),
    ("mobile", "iOS", "17.3.1", "Safari", "17.3"),
    ("mobile", "iOS", "17.3.1", "Chrome", "122.0.6261.89"),
    ("mobile", "Android", "14", "Samsung Internet", "23.0.1.1"),
    ("desktop", "Windows", "Windows 10", "Edge", "122.0.2365.66"),
    ("desktop", "Linux", "x86_64", "Firefox", "123.0"),
    ("tablet", "Android", "13", "Chrome", "121.0.6167.178"),
)
PAGES = (
    ("/", "Ledgerly - invoicing for small teams"),
    ("/pricing", "Pricing - Ledgerly"),
    ("/features", "Features - Ledgerly"),
    ("/blog/late-payments", "Chasing late payments - Ledgerly blog"),
    ("/docs/getting-started", "Getting started - Ledgerly docs"),
    ("/signup", "Sign up - Ledgerly"),
)
#: (where the campaign is: "url" | "cts" | None, source, medium, campaign)
LANDINGS = (
    ("url", "newsletter", "email", "spring_launch"),
    ("cts", "google", "cpc", "brand_search"),
    ("cts", "google", "organic", None),  # GA-derived: not turned into utm tags
    (None, None, None, None),
    (None, None, None, None),
    ("url", "twitter", "social", "launch week"),
)


def _param(key: str, value: Any) -> dict[str, Any]:
    """One event_params element, with the value in the field BigQuery would use."""
    if isinstance(value, dict):  # an explicit value struct (the two-fields-set row)
        return {"key": key, "value": value}
    if isinstance(value, bool | str):
        return {"key": key, "value": {"string_value": str(value).lower() if isinstance(value, bool) else value}}
    if isinstance(value, int):
        return {"key": key, "value": {"int_value": value}}
    return {"key": key, "value": {"double_value": float(value)}}


def build_events(seed: int = SEED) -> list[dict[str, Any]]:
    """Every event of the three days, in BigQuery's nested shape with native Python types."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    visitors = []
    for n in range(24):
        first_seen = int(dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp()) + rnd.randrange(86_400 * 28)
        visitors.append(
            {
                "pseudo": f"{rnd.randrange(10**9, 10**10)}.{first_seen}",
                "user_id": f"u-{1000 + n}" if n % 4 == 0 else None,
                "device": DEVICES[n % len(DEVICES)],
                "place": NOT_SET_PLACE if n == 23 else PLACES[n % len(PLACES)],
                "language": rnd.choice(["en-us", "en-gb", "de-de", "tr-tr", "ko-kr"]),
                "sessions": 0,
                "first_touch": LANDINGS[n % len(LANDINGS)],
            }
        )
    for day in DAYS:
        day_start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
        for visitor in visitors:
            if rnd.random() < 0.35:
                continue  # not every visitor comes every day
            for _ in range(rnd.choice([1, 1, 2])):
                start = day_start + rnd.randrange(3_600, 86_400 - 7_200)
                events += _session(rnd, visitor, day, start)
    events += _odd_events(visitors)
    events.sort(key=lambda e: e["event_timestamp"])
    return events


def _base(visitor: dict[str, Any], day: dt.date, ts_us: int, name: str) -> dict[str, Any]:
    category, os_name, os_version, browser, browser_version = visitor["device"]
    country, _, region, _, city = visitor["place"]
    first = visitor["first_touch"]
    event: dict[str, Any] = {
        "event_date": day.strftime("%Y%m%d"),
        "event_timestamp": ts_us,
        "event_name": name,
        "event_params": [],
        "event_previous_timestamp": None,
        "event_bundle_sequence_id": ts_us % 1_000_003,
        "user_id": visitor["user_id"],
        "user_pseudo_id": visitor["pseudo"],
        "user_first_touch_timestamp": ts_us - 86_400_000_000,
        "device": {
            "category": category,
            "mobile_brand_name": "Apple" if os_name in ("iOS", "Macintosh") else None,
            "operating_system": os_name,
            "operating_system_version": os_version,
            "language": visitor["language"],
            "is_limited_ad_tracking": "No",
            "web_info": {"browser": browser, "browser_version": browser_version, "hostname": HOST},
        },
        "geo": {
            "continent": "Europe" if country in ("United Kingdom", "Germany", "Czechia") else "Americas",
            "sub_continent": "(not set)",
            "country": country,
            "region": region,
            "city": city,
            "metro": "(not set)",
        },
        "traffic_source": {
            "name": first[3] or "(direct)",
            "medium": first[2] or "(none)",
            "source": first[1] or "(direct)",
        },
        "stream_id": "4178561234",
        "platform": "WEB",
        "collected_traffic_source": None,
        "ecommerce": None,
        "items": [],
    }
    return event


def _session(rnd: random.Random, visitor: dict[str, Any], day: dt.date, start: int) -> list[dict[str, Any]]:
    """One visit: bookkeeping, a landing page view (maybe a campaign), a few more events."""
    visitor["sessions"] += 1
    session_id = start
    number = visitor["sessions"]
    landing = rnd.choice(LANDINGS)
    t = start * 1_000_000 + rnd.randrange(1_000_000)
    out: list[dict[str, Any]] = []

    def add(name: str, path: str | None, title: str | None, extra: list[dict[str, Any]], **top: Any) -> None:
        nonlocal t
        t += rnd.randrange(2_000_000, 90_000_000)
        event = _base(visitor, day, t, name)
        params = [_param("ga_session_id", session_id), _param("ga_session_number", number)]
        if path is not None:
            params.append(_param("page_location", f"https://{HOST}{path}"))
            params.append(_param("page_title", title))
        event["event_params"] = params + extra
        event.update(top)
        out.append(event)

    path, title = rnd.choice(PAGES)
    if landing[0] == "url":
        query = f"?utm_source={landing[1]}&utm_medium={landing[2]}&utm_campaign={landing[3].replace(' ', '%20')}"
        landing_path = path + query
    else:
        landing_path = path
    cts = None
    if landing[0] == "cts":
        cts = {"manual_source": landing[1], "manual_medium": landing[2], "manual_campaign_name": landing[3]}
        if landing[2] == "cpc":
            cts["gclid"] = f"Cj0KCQ{rnd.randrange(10**8)}"
    if number == 1:
        add("first_visit", landing_path, title, [])
    add("session_start", landing_path, title, [])
    referrer = [_param("page_referrer", "https://www.google.com/")] if landing[0] == "cts" else []
    traffic = [_param("source", landing[1]), _param("medium", landing[2])] if landing[0] else []
    add(
        "page_view",
        landing_path,
        title,
        referrer + traffic + [_param("session_engaged", 0)],
        collected_traffic_source=cts,
    )
    for _ in range(rnd.choice([0, 1, 2, 3])):
        previous = f"https://{HOST}{path}"
        path, title = rnd.choice(PAGES)
        add("page_view", path, title, [_param("page_referrer", previous), _param("session_engaged", "1")])
        if rnd.random() < 0.5:
            add("scroll", path, title, [_param("percent_scrolled", 90)])
    add("user_engagement", path, title, [_param("engagement_time_msec", rnd.randrange(500, 60_000))])
    roll = rnd.random()
    if roll < 0.15:
        add("click", path, title, [_param("link_url", "https://github.com/ledgerly"), _param("outbound", True)])
    elif roll < 0.25:
        add("file_download", "/docs/getting-started", PAGES[4][1], [_param("file_name", "/files/ledgerly-guide.pdf")])
    elif roll < 0.35:
        add("view_search_results", "/docs/getting-started", PAGES[4][1], [_param("search_term", "vat invoice")])
    elif roll < 0.5:
        add("view_item", "/pricing", PAGES[1][1], [_param("value", 29.0), _param("currency", "EUR")])
        add("add_to_cart", "/pricing", PAGES[1][1], [_param("value", 29), _param("currency", "EUR")])
    return out


def _odd_events(visitors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows every reader must cope with (see the module docstring)."""
    day = DAYS[0]
    base = int(dt.datetime(2024, 3, 1, 21, 0, tzinfo=dt.UTC).timestamp()) * 1_000_000
    v0, v1, v2 = visitors[0], visitors[1], visitors[2]
    out = []

    def web(visitor: dict[str, Any], day: dt.date, ts: int, name: str, params: list[dict[str, Any]]) -> dict:
        event = _base(visitor, day, ts, name)
        event["event_params"] = [_param("ga_session_id", ts // 1_000_000), _param("ga_session_number", 9), *params]
        return event

    # A purchase on day 1 with ecommerce, its checkout before it.
    page = [_param("page_location", f"https://{HOST}/checkout"), _param("page_title", "Checkout - Ledgerly")]
    out.append(web(v0, day, base + 1, "page_view", page))
    out.append(
        web(v0, day, base + 2_000_000, "begin_checkout", [*page, _param("value", 348.0), _param("currency", "EUR")])
    )
    purchase = web(
        v0,
        day,
        base + 9_000_000,
        "purchase",
        [*page, _param("value", 348.0), _param("currency", "EUR"), _param("transaction_id", "T-1001")],
    )
    purchase["ecommerce"] = {
        "total_item_quantity": 1,
        "purchase_revenue_in_usd": 377.58,
        "purchase_revenue": 348.0,
        "refund_value_in_usd": None,
        "refund_value": None,
        "shipping_value_in_usd": None,
        "shipping_value": None,
        "tax_value_in_usd": None,
        "tax_value": None,
        "unique_items": 1,
        "transaction_id": "T-1001",
    }
    purchase["items"] = [{"item_id": "plan-team-annual", "item_name": "Team, annual", "price": 348.0, "quantity": 1}]
    out.append(purchase)
    # A purchase on day 3 without ecommerce: revenue from the value param (int_value).
    day3 = DAYS[2]
    base3 = int(dt.datetime(2024, 3, 3, 15, 30, tzinfo=dt.UTC).timestamp()) * 1_000_000
    page3 = [_param("page_location", f"https://{HOST}/checkout?plan=solo"), _param("page_title", "Checkout - Ledgerly")]
    out.append(web(v1, day3, base3, "page_view", page3))
    out.append(
        web(
            v1,
            day3,
            base3 + 5_000_000,
            "purchase",
            [*page3, _param("value", 96), _param("currency", "GBP"), _param("transaction_id", "T-1002")],
        )
    )
    # A click whose `outbound` value has two fields set: string_value is taken first.
    two = {"string_value": "true", "int_value": 1, "float_value": None, "double_value": None}
    out.append(
        web(
            v2,
            day,
            base + 60_000_000,
            "click",
            [*page, _param("link_url", "https://status.example"), _param("outbound", two)],
        )
    )
    # An event without event_params at all.
    consent = _base(v2, day, base + 61_000_000, "consent_update")
    consent["event_params"] = None
    out.append(consent)
    # An app-stream event: Android app, no page_location.
    app = _base(v1, DAYS[1], int(dt.datetime(2024, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()) * 1_000_000, "screen_view")
    app["platform"] = "ANDROID"
    app["stream_id"] = "5012345678"
    app["device"]["web_info"] = None
    app["event_params"] = [
        _param("firebase_screen", "InvoiceList"),
        _param("ga_session_id", 1709380800),
        _param("engagement_time_msec", 1200),
    ]
    out.append(app)
    return out


# --------------------------------------------------------------------------- writers


def _json_value(value: Any) -> Any:
    """BigQuery's JSON export: INT64 as strings, nulls left out, lists kept."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def write_json_gz(events: list[dict[str, Any]], path: Path, numeric_ts_every: int = 7) -> None:
    """Every ``numeric_ts_every``-th line keeps event_timestamp as a JSON number (0: none)."""
    lines = []
    for i, event in enumerate(events):
        row = _json_value(event)
        if numeric_ts_every and i % numeric_ts_every == numeric_ts_every - 1:
            row["event_timestamp"] = event["event_timestamp"]
        lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(("\n".join(lines) + "\n").encode("utf-8"))


S = pl.String
VALUE = pl.Struct({"string_value": S, "int_value": pl.Int64, "float_value": pl.Float64, "double_value": pl.Float64})
SCHEMA: dict[str, pl.DataType] = {
    "event_date": S,
    "event_timestamp": pl.Int64,
    "event_name": S,
    "event_params": pl.List(pl.Struct({"key": S, "value": VALUE})),
    "event_previous_timestamp": pl.Int64,
    "event_bundle_sequence_id": pl.Int64,
    "user_id": S,
    "user_pseudo_id": S,
    "user_first_touch_timestamp": pl.Int64,
    "device": pl.Struct(
        {
            "category": S,
            "mobile_brand_name": S,
            "operating_system": S,
            "operating_system_version": S,
            "language": S,
            "is_limited_ad_tracking": S,
            "web_info": pl.Struct({"browser": S, "browser_version": S, "hostname": S}),
        }
    ),
    "geo": pl.Struct({k: S for k in ("continent", "sub_continent", "country", "region", "city", "metro")}),
    "traffic_source": pl.Struct({"name": S, "medium": S, "source": S}),
    "stream_id": S,
    "platform": S,
    "collected_traffic_source": pl.Struct(
        {
            k: S
            for k in (
                "manual_source",
                "manual_medium",
                "manual_campaign_name",
                "manual_term",
                "manual_content",
                "gclid",
            )
        }
    ),
    "ecommerce": pl.Struct(
        {
            "total_item_quantity": pl.Int64,
            "purchase_revenue_in_usd": pl.Float64,
            "purchase_revenue": pl.Float64,
            "refund_value_in_usd": pl.Float64,
            "refund_value": pl.Float64,
            "shipping_value_in_usd": pl.Float64,
            "shipping_value": pl.Float64,
            "tax_value_in_usd": pl.Float64,
            "tax_value": pl.Float64,
            "unique_items": pl.Int64,
            "transaction_id": S,
        }
    ),
    "items": pl.List(pl.Struct({"item_id": S, "item_name": S, "price": pl.Float64, "quantity": pl.Int64})),
}


def write_parquet(events: list[dict[str, Any]], path: Path) -> None:
    pl.from_dicts(events, schema=SCHEMA).write_parquet(path, statistics=False)


def _avro_type(dtype: pl.DataType, name: str) -> Any:
    """BigQuery's Avro mapping: NULLABLE -> ["null", T], REPEATED -> array (never null)."""
    if isinstance(dtype, pl.List):
        return {"type": "array", "items": _avro_type(dtype.inner, name)[1]}
    if isinstance(dtype, pl.Struct):
        fields = [{"name": f.name, "type": _avro_type(f.dtype, f"{name}_{f.name}")} for f in dtype.fields]
        return ["null", {"type": "record", "name": name, "fields": fields}]
    if dtype == pl.Int64:
        return ["null", "long"]
    if dtype == pl.Float64:
        return ["null", "double"]
    return ["null", "string"]


AVRO_SCHEMA = {
    "type": "record",
    "name": "Root",
    "fields": [{"name": name, "type": _avro_type(dtype, name)} for name, dtype in SCHEMA.items()],
}


def _avro_record(value: Any, dtype: pl.DataType) -> Any:
    if isinstance(dtype, pl.List):
        return [_avro_record(v, dtype.inner) for v in value or []]
    if isinstance(dtype, pl.Struct):
        if value is None:
            return None
        return {f.name: _avro_record(value.get(f.name), f.dtype) for f in dtype.fields}
    return value


def write_avro(events: list[dict[str, Any]], path: Path) -> None:
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    records = [{k: _avro_record(e.get(k), t) for k, t in SCHEMA.items()} for e in events]
    with open(path, "wb") as fh:
        fastavro.writer(fh, parsed, records, codec="deflate", sync_marker=b"ledgerly-ga4-smp")


# --------------------------------------------------------------------------- expected numbers


def _params(event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in event.get("event_params") or []:
        v = p["value"]
        out.setdefault(
            p["key"], next((v[k] for k in ("string_value", "int_value", "double_value") if v.get(k) is not None), None)
        )
    return out


def expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What mappings/ga4.yaml must import, from the events as generated.

    Rules, written out here rather than taken from the reader: web events only
    (app-stream rows are skipped), GA's bookkeeping events skipped; a page_view is
    a page view, any other event a custom event of that name; the visitor is
    user_id, else user_pseudo_id; days are UTC days of event_timestamp; revenue is
    ecommerce.purchase_revenue, else the purchase's value param.
    """
    pageviews: Counter[str] = Counter()
    visitors: dict[str, set[str]] = defaultdict(set)
    custom: Counter[str] = Counter()
    revenue: dict[str, float] = defaultdict(float)
    countries: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    code_of = {p[0]: p[1] for p in PLACES}
    for event in events:
        params = _params(event)
        if event["platform"] != "WEB":
            skipped["app"] += 1
            continue
        if event["event_name"] in BOOKKEEPING:
            skipped["bookkeeping"] += 1
            continue
        day = dt.datetime.fromtimestamp(event["event_timestamp"] // 1_000_000, dt.UTC).date().isoformat()
        visitor = event["user_id"] or event["user_pseudo_id"]
        code = code_of.get(event["geo"]["country"])
        if code:
            countries[code] += 1
        if event["event_name"] == "page_view":
            pageviews[day] += 1
            visitors[day].add(visitor)
            continue
        custom[event["event_name"]] += 1
        if event["event_name"] == "purchase":
            amount = (event.get("ecommerce") or {}).get("purchase_revenue") or params.get("value")
            revenue[day] += float(amount)
    return {
        "events_total": len(events),
        "events_by_file": {},
        "skipped_app_stream": skipped["app"],
        "skipped_bookkeeping": skipped["bookkeeping"],
        "pageviews_by_day": dict(sorted(pageviews.items())),
        "visitors_by_day": {d: len(v) for d, v in sorted(visitors.items())},
        "custom_events_by_name": dict(sorted(custom.items())),
        "revenue_by_day": {d: round(v, 4) for d, v in sorted(revenue.items())},
        "revenue_currency": {"2024-03-01": "EUR", "2024-03-03": "GBP"},
        "events_by_country": dict(countries.most_common()),
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    events = build_events()
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_day[event["event_date"]].append(event)
    write_json_gz(by_day["20240301"], OUT / "events_20240301.json.gz")
    write_parquet(by_day["20240302"], OUT / "events_20240302.parquet")
    write_avro(by_day["20240303"], OUT / "events_20240303.avro")
    result = expected(events)
    result["events_by_file"] = {
        "events_20240301.json.gz": len(by_day["20240301"]),
        "events_20240302.parquet": len(by_day["20240302"]),
        "events_20240303.avro": len(by_day["20240303"]),
    }
    (OUT / "expected.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(events)} events to {OUT}")


if __name__ == "__main__":
    main()
