"""Generate a realistic GA4 BigQuery export (newline-delimited JSON, gzip) of any size.

    python bench/generate_ga4.py --events 1000000 --out bench/out/ga4-1m.json.gz

Rows are shaped like ``bq extract --destination_format NEWLINE_DELIMITED_JSON``
writes them (and like ``sample_data/make_ga4_samples.py``): INT64 values as JSON
strings, null fields left out, ~25 ``event_params`` per event (session ids,
page location/title/referrer, engagement, traffic params, plus the many keys GA
and tag managers add that a reader ignores), device/geo/web_info/traffic_source
structs, ``collected_traffic_source`` on campaign landings, ``ecommerce`` and
``items`` on purchases. Visitors: about one per three events (several hundred
thousand user_pseudo_ids at 1M events), a quarter logged in with a user_id.
A few rows carry event_timestamp as a JSON number, some events have no params,
some are app-stream events (platform ANDROID, no page_location).

Seeded: the same arguments write the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path
from typing import Any

START_US = 1_709_251_200 * 1_000_000  # 2024-03-01 00:00 UTC
HOST = "www.ledgerly.example"
COUNTRIES = (
    ("Europe", "Northern Europe", "United Kingdom", ("England", "Scotland", "Wales"), ("London", "Leeds", "Cardiff")),
    ("Americas", "Northern America", "United States", ("California", "New York", "Texas"), ("San Jose", "Buffalo")),
    ("Europe", "Western Europe", "Germany", ("Berlin", "Bavaria", "Hamburg"), ("Berlin", "Munich", "Hamburg")),
    ("Asia", "Western Asia", "Türkiye", ("Istanbul", "Ankara"), ("Istanbul", "Ankara")),
    ("Asia", "Eastern Asia", "South Korea", ("Seoul",), ("Seoul",)),
    ("Europe", "Eastern Europe", "Czechia", ("Prague",), ("Prague",)),
    ("Europe", "Western Europe", "France", ("Ile-de-France", "Occitanie"), ("Paris", "Toulouse")),
    ("Americas", "South America", "Brazil", ("Sao Paulo",), ("Sao Paulo",)),
    ("Asia", "Southern Asia", "India", ("Karnataka", "Maharashtra"), ("Bengaluru", "Mumbai")),
    ("(not set)", "(not set)", "(not set)", ("(not set)",), ("(not set)",)),
)
DEVICES = (
    ("desktop", "Windows", "Windows 10", "Chrome", "122.0.6261.112", None),
    ("desktop", "Macintosh", "Intel 10.15", "Safari", "17.3", "Apple"),
    ("mobile", "iOS", "17.3.1", "Safari", "17.3", "Apple"),
    ("mobile", "Android", "14", "Chrome", "122.0.6261.89", "Samsung"),
    ("mobile", "Android", "14", "Samsung Internet", "23.0.1.1", "Samsung"),
    ("desktop", "Windows", "Windows 11", "Edge", "122.0.2365.66", None),
    ("desktop", "Linux", "x86_64", "Firefox", "123.0", None),
    ("tablet", "iOS", "17.2", "Safari", "17.2", "Apple"),
)
LANGUAGES = ("en-us", "en-gb", "de-de", "tr-tr", "ko-kr", "fr-fr", "pt-br", "hi-in")
PAGES = tuple(
    [("/", "Ledgerly - invoicing for small teams"), ("/pricing", "Pricing - Ledgerly")]
    + [(f"/blog/post-{i}", f"Post {i} - Ledgerly blog") for i in range(300)]
    + [(f"/docs/page-{i}", f"Docs {i} - Ledgerly") for i in range(100)]
)
#: (where the campaign is, source, medium, campaign)
LANDINGS = (
    ("url", "newsletter", "email", "spring_launch"),
    ("cts", "google", "cpc", "brand_search"),
    ("cts", "google", "organic", None),
    (None, None, None, None),
    (None, None, None, None),
    (None, None, None, None),
    ("url", "twitter", "social", "launch week"),
)
EXTRA_KEYS = (
    "batch_page_id",
    "batch_ordering_id",
    "gtm_container",
    "debug_mode",
    "ignore_referrer",
    "content_group",
    "page_type",
    "entrances",
    "engaged_session_event",
    "experiment_id",
    "client_version",
    "consent_state",
    "ab_variant",
    "page_hostname",
    "traffic_type",
    "term_group",
    "term_id",
    "session_flag",
)
BOOKKEEPING = ("session_start", "user_engagement", "scroll")


def _s(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"string_value": value}}


def _i(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"int_value": str(value)}}  # INT64 as a JSON string


def _d(key: str, value: float) -> dict[str, Any]:
    return {"key": key, "value": {"double_value": value}}


class Generator:
    def __init__(self, events: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.events = events
        self.visitors = max(1, events // 3)
        self.made = 0

    def visitor(self, n: int) -> dict[str, Any]:
        rnd = random.Random(n * 7919 + 13)
        first = 1_706_745_600 + rnd.randrange(86_400 * 28)
        place = COUNTRIES[n % len(COUNTRIES)]
        return {
            "pseudo": f"{rnd.randrange(10**9, 10**10)}.{first}",
            "user_id": f"u-{n}" if n % 4 == 0 else None,
            "device": DEVICES[rnd.randrange(len(DEVICES))],
            "geo": {
                "continent": place[0],
                "sub_continent": place[1],
                "country": place[2],
                "region": rnd.choice(place[3]),
                "city": rnd.choice(place[4]),
                "metro": "(not set)",
            },
            "language": rnd.choice(LANGUAGES),
            "first": LANDINGS[n % len(LANDINGS)],
            "first_touch": first * 1_000_000,
            "app": n % 50 == 49,
        }

    def rows(self) -> Any:
        rnd = self.rnd
        span_us = 30 * 86_400 * 1_000_000
        while self.made < self.events:
            v = self.visitor(rnd.randrange(self.visitors))
            t = START_US + rnd.randrange(span_us)
            yield from self.session(v, t)

    def base(self, v: dict[str, Any], ts: int, name: str) -> dict[str, Any]:
        category, os_name, os_version, browser, browser_version, brand = v["device"]
        first = v["first"]
        device: dict[str, Any] = {
            "category": category,
            "operating_system": os_name,
            "operating_system_version": os_version,
            "language": v["language"],
            "is_limited_ad_tracking": "No",
            "browser": browser,
            "browser_version": browser_version,
        }
        if brand:
            device["mobile_brand_name"] = brand
        if not v["app"]:
            device["web_info"] = {"browser": browser, "browser_version": browser_version, "hostname": HOST}
        row: dict[str, Any] = {
            "event_date": "202403%02d" % (1 + (ts - START_US) // 86_400_000_000),  # noqa: UP031
            "event_timestamp": str(ts),
            "event_name": name,
            "event_params": [],
            "event_bundle_sequence_id": str(ts % 1_000_003),
            "event_server_timestamp_offset": str(ts % 997),
            "user_pseudo_id": v["pseudo"],
            "privacy_info": {"analytics_storage": "Yes", "ads_storage": "No", "uses_transient_token": "No"},
            "user_properties": [],
            "user_first_touch_timestamp": str(v["first_touch"]),
            "device": device,
            "geo": v["geo"],
            "app_info": {"id": "com.ledgerly.app", "version": "3.2.1"} if v["app"] else None,
            "traffic_source": {
                "name": first[3] or "(direct)",
                "medium": first[2] or "(none)",
                "source": first[1] or "(direct)",
            },
            "stream_id": "5012345678" if v["app"] else "4178561234",
            "platform": "ANDROID" if v["app"] else "WEB",
            "items": [],
            "is_active_user": True,
        }
        if v["user_id"]:
            row["user_id"] = v["user_id"]
        if row["app_info"] is None:
            del row["app_info"]
        return row

    def session(self, v: dict[str, Any], start: int) -> Any:
        rnd = self.rnd
        session_id = start // 1_000_000
        number = 1 + rnd.randrange(12)
        landing = rnd.choice(LANDINGS)
        path, title = rnd.choice(PAGES)
        if landing[0] == "url":
            campaign = landing[3].replace(" ", "%20")
            path_q = f"{path}?utm_source={landing[1]}&utm_medium={landing[2]}&utm_campaign={campaign}"
        else:
            path_q = path
        cts = None
        if landing[0] == "cts":
            cts = {"manual_source": landing[1], "manual_medium": landing[2]}
            if landing[3]:
                cts["manual_campaign_name"] = landing[3]
            if landing[2] == "cpc":
                cts["gclid"] = f"Cj0KCQ{rnd.randrange(10**8)}"
        t = start
        previous = None
        plan = ["session_start", "page_view"]
        plan += ["page_view", "scroll"] * rnd.choice((0, 1, 2, 3))
        plan.append("user_engagement")
        roll = rnd.random()
        if roll < 0.12:
            plan.append("click")
        elif roll < 0.2:
            plan.append("file_download")
        elif roll < 0.28:
            plan.append("view_search_results")
        elif roll < 0.4:
            plan += ["view_item", "add_to_cart"]
        elif roll < 0.45:
            plan += ["begin_checkout", "purchase"]
        elif roll < 0.47:
            plan.append("consent_update")
        for i, name in enumerate(plan):
            if self.made >= self.events:
                return
            t += rnd.randrange(1_000_000, 60_000_000)
            if i > 1 and name == "page_view":
                previous = f"https://{HOST}{path}"
                path, title = rnd.choice(PAGES)
                path_q = path
            row = self.base(v, t, name)
            if name == "consent_update":
                del row["event_params"]  # an event without params
            else:
                row["event_params"] = self.params(v, name, session_id, number, path_q, title, previous, landing, i)
            if i == 1 and cts:
                row["collected_traffic_source"] = cts
            if name == "purchase":
                revenue = rnd.choice((29.0, 96.0, 348.0, 12.5))
                if rnd.random() < 0.8:
                    row["ecommerce"] = {
                        "total_item_quantity": "1",
                        "purchase_revenue_in_usd": round(revenue * 1.085, 2),
                        "purchase_revenue": revenue,
                        "unique_items": "1",
                        "transaction_id": f"T-{t % 10**7}",
                    }
                row["items"] = [{"item_id": "plan-team", "item_name": "Team", "price": revenue, "quantity": "1"}]
            if self.made % 97 == 96:
                row["event_timestamp"] = t  # a JSON number among strings
            self.made += 1
            yield row

    def params(
        self,
        v: dict[str, Any],
        name: str,
        session_id: int,
        number: int,
        path: str,
        title: str,
        previous: str | None,
        landing: tuple[Any, ...],
        i: int,
    ) -> list[dict[str, Any]]:
        rnd = self.rnd
        out = [_i("ga_session_id", session_id), _i("ga_session_number", number)]
        if not v["app"]:
            out += [_s("page_location", f"https://{HOST}{path}"), _s("page_title", title)]
            if previous:
                out.append(_s("page_referrer", previous))
            elif landing[0] == "cts":
                out.append(_s("page_referrer", "https://www.google.com/"))
        else:
            out += [_s("firebase_screen", title), _s("firebase_screen_class", "MainActivity")]
        out.append(_i("session_engaged", 1) if rnd.random() < 0.7 else _s("session_engaged", "0"))
        out.append(_i("engagement_time_msec", rnd.randrange(100, 60_000)))
        if i == 1 and landing[0]:
            out += [_s("source", landing[1]), _s("medium", landing[2])]
            if landing[3]:
                out.append(_s("campaign", landing[3]))
        if name == "scroll":
            out.append(_i("percent_scrolled", 90))
        elif name == "click":
            out += [_s("link_url", "https://github.com/ledgerly"), _s("link_domain", "github.com")]
            out.append({"key": "outbound", "value": {"string_value": "true", "int_value": "1"}})
        elif name == "file_download":
            out += [_s("file_name", "/files/guide.pdf"), _s("file_extension", "pdf")]
        elif name == "view_search_results":
            out.append(_s("search_term", rnd.choice(("vat invoice", "export csv", "api key"))))
        elif name in ("view_item", "add_to_cart", "begin_checkout", "purchase"):
            value = rnd.choice((29, 96, 348))
            out += [_d("value", float(value)) if rnd.random() < 0.5 else _i("value", value), _s("currency", "EUR")]
            if name == "purchase":
                out.append(_s("transaction_id", f"T-{session_id % 10**7}"))
        # What GA, gtag and a tag manager add besides: ignored by the reader, but parsed.
        for key in EXTRA_KEYS:
            roll = rnd.random()
            if roll < 0.5:
                out.append(_s(key, f"{key}-{rnd.randrange(1000)}"))
            elif roll < 0.85:
                out.append(_i(key, rnd.randrange(10**6)))
            elif roll < 0.95:
                out.append(_d(key, round(rnd.random() * 100, 3)))
        rnd.shuffle(out)
        return out


def write(events: int, out: Path, seed: int = 20240301) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    buffer: list[str] = []
    with gzip.GzipFile(out, "wb", mtime=0, compresslevel=6) as fh:
        for row in Generator(events, seed).rows():
            buffer.append(dumps(row))
            if len(buffer) >= 20_000:
                fh.write(("\n".join(buffer) + "\n").encode("utf-8"))
                buffer.clear()
        if buffer:
            fh.write(("\n".join(buffer) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True, help="number of events (lines) to write")
    parser.add_argument("--out", type=Path, required=True, help="output file, e.g. bench/out/ga4-1m.json.gz")
    parser.add_argument("--seed", type=int, default=20240301)
    args = parser.parse_args()
    write(args.events, args.out, args.seed)


if __name__ == "__main__":
    main()
