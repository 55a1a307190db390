"""Write the Matomo samples (sample_data/matomo/): the same visits as a log-table dump and as Live API pages.

    python sample_data/make_matomo_samples.py

Files, in the shapes Matomo users export:

* ``logs/``: one file per table, as ``mysql --batch -e 'SELECT * FROM matomo_<table>'``
  writes them (tab-separated, a header line, ``\\N`` for NULL, backslash escapes),
  ``matomo_log_link_visit_action.tsv.gz`` gzipped, ``matomo_log_conversion.csv``
  as CSV with a header (a GUI export), the others plain ``.tsv``; ``idvisitor`` in hex
  (``HEX(idvisitor)``), URLs in ``log_action`` without the prefix ``url_prefix`` codes
  and text HTML-escaped as Matomo stores it (``Cakes &amp; tarts``). Beside the log
  tables: ``goal``, ``log_conversion_item`` (each order's items), ``site``, and two
  tables an import does not read (``site_url``, ``option``), as a whole-database dump has.
* ``live/``: ``Live.getLastVisitsDetails`` with ``format=json`` saved as two pages
  (``filter_offset=0`` and ``=N``), newest visit first, as the API returns them.
* ``expected.json``: what an import of either must show in Umami, computed here
  from the generator's own visits (never through a reader): per UTC day the
  pageviews, visitors and visits (Umami counts those from page views), custom
  events by name, revenue per day, each order's items, and sessions (one per
  visitor, with the attributes of the visitor's first event) per country,
  browser, OS and device.

``write_database(folder)`` writes, for the tests, a whole database of TWO sites
(``logs/``: the log tables of both, Matomo's other tables, a deleted goal that
keeps its name; ``live/``: pages of both sites) and returns each site's
expected figures.

Seeded: running it again writes the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "matomo"
SEED = 20240310
DAYS = 3
START = dt.datetime(2024, 3, 10, tzinfo=dt.UTC)
SITE = "https://www.bakery-demo.example"
CURRENCY = "EUR"
#: idsite -> (name, main URL). Site 2 is only in the two-site database (``write_database``).
SITES = {1: ("Bakery Demo", SITE), 2: ("Bakery & Co shop", "https://shop.bakery-demo.example")}
#: (idsite, idgoal) -> (name, deleted): a deleted goal keeps its row, and its conversions their name.
GOALS = {(1, 1): ("Contact form", 0), (2, 1): ("Newsletter signup", 1)}
#: Items an order holds: (SKU, name, category, price).
PRODUCTS = (
    ("SKU-RYE", "Rye loaf", "Bread", 4.5),
    ("SKU-TART", "Lemon tart", "Cakes & tarts", 18.0),
    ("SKU-BOX", "Gift box", None, 12.25),
)
PAGE_SIZE = 20
#: The site's UTC offset in March 2024 (Europe/Berlin): the Live API adds it to each action's
#: ``timestamp`` (not to the visit's ``firstActionTimestamp``), as Matomo does.
SITE_OFFSET = 3600

PAGES = (  # (path, title)
    ("/", "Bakery Demo"),
    ("/bread", "Our bread"),
    ("/bread/sourdough?ref=menu", "Sourdough\tloaf"),  # a tab in a title: escaped by mysql --batch
    ("/cakes", "Cakes & tarts"),
    ("/about", "About us"),
    ("/shop/cart", "Cart"),
)
REFERRERS = (None, None, "https://www.google.com/search?q=bakery", "https://news.example.org/story/12")
EVENTS = (("Video", "play", "intro"), ("Video", "pause", None), ("Newsletter", "subscribe", "footer"))
#: (browser code, os code, os version, device type, resolution, Umami browser, os, device)
DEVICES = (
    ("CH", "WIN", "10", 0, "1920x1080", "chrome", "Windows 10", "desktop"),
    ("FF", "LIN", "", 0, "2560x1440", "firefox", "Linux", "desktop"),
    ("SF", "MAC", "14.3", 0, "1440x900", "safari", "Mac OS", "desktop"),
    ("MF", "IOS", "17.3", 1, "390x844", "ios", "iOS", "mobile"),
    ("CI", "IOS", "17.3", 1, "390x844", "crios", "iOS", "mobile"),
    ("CM", "AND", "14", 1, "412x915", "chrome", "Android OS", "mobile"),
    ("SF", "IPA", "17.2", 2, "820x1180", "ios", "iOS", "tablet"),
    ("PS", "WIN", "7", 0, "1366x768", "edge-chromium", "Windows 7", "desktop"),
)
#: (country, region, city, Umami country, Umami region)
PLACES = (
    ("de", "BE", "Berlin", "DE", "DE-BE"),
    ("de", "BY", "München", "DE", "DE-BY"),
    ("fr", "IDF", "Paris", "FR", "FR-IDF"),
    ("us", "CA", "San Francisco", "US", "US-CA"),
    ("xx", None, None, None, None),  # Matomo's unknown country
)
LANGS = ("en-us,en;q=0.9", "de-de,de;q=0.8", "fr", "en-gb")

# log_action types (core/Tracker/Action.php) and URL prefix codes (core/Tracker/PageUrl.php)
T_URL, T_OUTLINK, T_DOWNLOAD, T_TITLE, T_SEARCH, T_ECAT, T_EACT, T_ENAME, T_CONTENT = 1, 2, 3, 4, 8, 10, 11, 12, 13
T_SKU, T_ITEM_NAME, T_ITEM_CATEGORY = 5, 6, 7
PREFIXES = (("https://www.", 3), ("https://", 2), ("http://www.", 1), ("http://", 0))


def build_visits(seed: int = SEED, idsite: int = 1, days: int = DAYS, idvisit: int = 100) -> list[dict[str, Any]]:
    """Visits with their actions and conversions, in time order of their first action."""
    rng = random.Random(seed)
    visits: list[dict[str, Any]] = []
    site_url = SITES[idsite][1]
    for day in range(days):
        date = START + dt.timedelta(days=day)
        for n in range(rng.randint(12, 16)):
            visitor = f"{rng.getrandbits(64):016x}"
            user_id = f"customer-{rng.randint(1, 9999)}" if rng.random() < 0.2 else None
            device = rng.choice(DEVICES)
            place = rng.choice(PLACES)
            lang = rng.choice(LANGS)
            starts = [rng.randrange(1_800, 70_000)]
            if n % 5 == 0:  # a second visit of the same visitor, hours later
                starts.append(starts[0] + rng.randrange(7_200, 12_000))
            if n % 7 == 3:  # a visit that crosses hh:00: one Umami visit with --visits exact
                starts[0] = starts[0] - starts[0] % 3_600 + 3_540
            for start in starts:
                idvisit += 1
                at = date + dt.timedelta(seconds=start)
                visit = {
                    "idvisit": idvisit,
                    "idsite": idsite,
                    "site_url": site_url,
                    "idvisitor": visitor,
                    "user_id": user_id,
                    "device": device,
                    "place": place,
                    "lang": lang,
                    "referrer": rng.choice(REFERRERS),
                    "first": at,
                    "actions": [],
                    "conversions": [],
                }
                _fill(visit, at, rng)
                visits.append(visit)
    visits.sort(key=lambda v: (v["first"], v["idvisit"]))
    return visits


def _fill(visit: dict[str, Any], at: dt.datetime, rng: random.Random) -> None:
    """A visit's actions: page views, then some events, outlinks, downloads, searches, goals."""
    page = rng.choice(PAGES[:2])
    actions = visit["actions"]
    actions.append({"kind": "pageview", "time": at, "page": page})
    previous = page
    for _ in range(rng.randint(0, 3)):
        at += dt.timedelta(seconds=rng.randint(20, 200))
        roll = rng.random()
        if roll < 0.45:
            page = rng.choice(PAGES)
            actions.append({"kind": "pageview", "time": at, "page": page})
            previous = page
        elif roll < 0.65:
            category, action, name = rng.choice(EVENTS)
            value = rng.choice((None, 1.5, 3))
            actions.append({"kind": "event", "time": at, "page": previous, "event": (category, action, name, value)})
        elif roll < 0.73:
            actions.append({"kind": "outlink", "time": at, "page": previous, "link": "https://partner.example.net/"})
        elif roll < 0.81:
            actions.append({"kind": "download", "time": at, "page": previous, "link": f"{visit['site_url']}/menu.pdf"})
        elif roll < 0.9:
            actions.append({"kind": "site_search", "time": at, "page": previous, "keyword": "rye", "count": 4})
        else:
            actions.append({"kind": "content", "time": at, "page": previous})
    if rng.random() < 0.2:
        at += dt.timedelta(seconds=rng.randint(5, 60))
        revenue = rng.choice((0, 5))
        visit["conversions"].append({"idgoal": 1, "time": at, "revenue": revenue, "page": previous})
    if rng.random() < 0.2:
        at += dt.timedelta(seconds=rng.randint(5, 60))
        items = [(*product, rng.randint(1, 3)) for product in rng.sample(PRODUCTS, rng.randint(1, 2))]
        amount = round(sum(price * quantity for *_, price, quantity in items), 2)
        visit["conversions"].append({"idgoal": 0, "time": at, "revenue": amount, "page": previous, "items": items})
    if rng.random() < 0.08:
        at += dt.timedelta(seconds=rng.randint(5, 60))
        visit["conversions"].append({"idgoal": -1, "time": at, "revenue": 12.5, "page": previous})


def visitor_of(visit: dict[str, Any]) -> str:
    return visit["user_id"] or visit["idvisitor"]


# --------------------------------------------------------------------------- expected figures


def umami_name(item: dict[str, Any], idsite: int = 1) -> str | None:
    """The Umami event name of an action or conversion (None: a page view; "" : not imported)."""
    kind = item.get("kind")
    if kind == "pageview":
        return None
    if kind == "event":
        return str(item["event"][1])
    if kind == "content":
        return ""
    if kind is not None:
        return str(kind)
    goal = item["idgoal"]
    if goal in (0, -1):
        return "ecommerce_order" if goal == 0 else ""
    return GOALS[(idsite, goal)][0]


def expected(visits: list[dict[str, Any]]) -> dict[str, Any]:
    pageviews: Counter[str] = Counter()
    visitors: dict[str, set[str]] = defaultdict(set)
    visit_ids: dict[str, set[int]] = defaultdict(set)
    names: Counter[str] = Counter()
    revenue: dict[str, float] = defaultdict(float)
    first: dict[str, tuple[dt.datetime, dict[str, Any]]] = {}
    for visit in visits:
        who = visitor_of(visit)
        for item in (*visit["actions"], *visit["conversions"]):
            name = umami_name(item, visit["idsite"])
            day = item["time"].strftime("%Y-%m-%d")
            if name == "":
                continue
            if who not in first or item["time"] < first[who][0]:
                first[who] = (item["time"], visit)
            if name is None:
                pageviews[day] += 1
                visitors[day].add(who)
                visit_ids[day].add(visit["idvisit"])
            else:
                names[name] += 1
            if item.get("revenue"):
                revenue[day] += item["revenue"]
    sessions = [v for _, v in first.values()]
    return {
        "actions_total": sum(len(v["actions"]) for v in visits),
        "conversions_total": sum(len(v["conversions"]) for v in visits),
        "visits_total": len(visits),
        "skipped_content": sum(a["kind"] == "content" for v in visits for a in v["actions"]),
        "skipped_abandoned_cart": sum(c["idgoal"] == -1 for v in visits for c in v["conversions"]),
        "pageviews_by_day": dict(sorted(pageviews.items())),
        "visitors_by_day": {d: len(s) for d, s in sorted(visitors.items())},
        "visits_by_day": {d: len(s) for d, s in sorted(visit_ids.items())},
        "events_by_name": dict(sorted(names.items())),
        "revenue_by_day": {d: round(v, 4) for d, v in sorted(revenue.items())},
        "order_items": {
            f"ORD-{v['idvisit']}": [list(item) for item in c["items"]]
            for v in visits
            for c in v["conversions"]
            if c["idgoal"] == 0
        },
        "revenue_currency": CURRENCY,
        "sessions_by_country": _count(s["place"][3] for s in sessions),
        "sessions_by_region": _count(s["place"][4] for s in sessions),
        "sessions_by_browser": _count(s["device"][5] for s in sessions),
        "sessions_by_os": _count(s["device"][6] for s in sessions),
        "sessions_by_device": _count(s["device"][7] for s in sessions),
    }


def _count(values: Any) -> dict[str, int]:
    return dict(sorted(Counter(v for v in values if v is not None).items()))


# --------------------------------------------------------------------------- log tables


class Dictionary:
    """log_action: one id per (text, type), URLs split into prefix code and rest."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, int, int | None]] = []
        self.ids: dict[tuple[str, int], int] = {}

    def id(self, name: str | None, kind: int) -> int | None:
        if name is None:
            return None
        prefix = None
        if kind in (T_URL, T_OUTLINK, T_DOWNLOAD):
            for text, code in PREFIXES:
                if name.startswith(text):
                    name, prefix = name[len(text) :], code
                    break
        key = (name, kind)
        if key not in self.ids:
            self.ids[key] = len(self.rows) + 1
            self.rows.append((len(self.rows) + 1, name, kind, prefix))
        return self.ids[key]


def mysql_field(value: Any) -> str:
    """A value as ``mysql --batch`` writes it: NULL as \\N, tab/newline/backslash escaped."""
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def tsv(header: list[str], rows: list[list[Any]]) -> bytes:
    lines = ["\t".join(header)] + ["\t".join(mysql_field(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def stamp(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def sanitized(text: str | None) -> str | None:
    """Text as Matomo stores what a tracker sent (``Common::sanitizeInputValue``): HTML-escaped."""
    if text is None:
        return None
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#039;")
    )


def log_tables(visits: list[dict[str, Any]]) -> dict[str, bytes]:
    """The table files (name -> bytes): the log tables, goal, log_conversion_item, site, and two unused."""
    actions = Dictionary()
    visit_rows, lva_rows, conv_rows, item_rows = [], [], [], []
    idlink = 0
    for visit in sorted(visits, key=lambda v: v["idvisit"]):
        browser, os_code, os_version, device_type, resolution = visit["device"][:5]
        country, region, city = visit["place"][:3]
        idsite, site = visit["idsite"], visit["site_url"]
        visit_rows.append(
            [visit["idvisit"], idsite, visit["idvisitor"].upper(), visit["user_id"], stamp(visit["first"]),
             stamp(max(a["time"] for a in visit["actions"])), visit["referrer"], browser, "122.0", os_code,
             os_version, device_type, resolution, visit["lang"], country, region, city, len(visit["actions"])]
        )  # fmt: skip
        previous_url = None
        for action in visit["actions"]:
            idlink += 1
            page_url = site + action["page"][0]
            row: dict[str, Any] = {"idaction_url_ref": previous_url, "server_time": stamp(action["time"])}
            kind = action["kind"]
            title = sanitized(action["page"][1])
            if kind == "pageview":
                row |= {"idaction_url": actions.id(page_url, T_URL), "idaction_name": actions.id(title, T_TITLE)}
            elif kind == "event":
                category, act, name, value = action["event"]
                row |= {
                    "idaction_url": actions.id(page_url, T_URL),
                    "idaction_name": actions.id(name, T_ENAME),
                    "idaction_event_category": actions.id(category, T_ECAT),
                    "idaction_event_action": actions.id(act, T_EACT),
                    "custom_float": value,
                }
            elif kind in ("outlink", "download"):
                row |= {
                    "idaction_url": actions.id(action["link"], T_OUTLINK if kind == "outlink" else T_DOWNLOAD),
                    "idaction_name": 0,
                }
            elif kind == "site_search":
                row |= {
                    "idaction_url": None,
                    "idaction_name": actions.id(action["keyword"], T_SEARCH),
                    "search_count": action["count"],
                }
            else:  # content impression
                row |= {
                    "idaction_url": actions.id(page_url, T_URL),
                    "idaction_content_name": actions.id("Banner", T_CONTENT),
                }
            if kind == "pageview":
                previous_url = row["idaction_url"]
            lva_rows.append([idlink, idsite, visit["idvisitor"].upper(), visit["idvisit"], row["idaction_url_ref"],
                             row.get("idaction_url"), row.get("idaction_name"), row.get("idaction_event_category"),
                             row.get("idaction_event_action"), row.get("idaction_content_name"), row["server_time"],
                             row.get("custom_float"), None, row.get("search_count")])  # fmt: skip
        for conv in visit["conversions"]:
            order = f"ORD-{visit['idvisit']}" if conv["idgoal"] == 0 else None
            buster = visit["idvisit"] * 10 + len(conv_rows) % 10
            quantity = sum(item[-1] for item in conv.get("items", ()))
            conv_rows.append([visit["idvisit"], idsite, conv["idgoal"], buster, stamp(conv["time"]),
                              sanitized(site + conv["page"][0]), f"{conv['revenue']:.2f}", order,
                              quantity])  # fmt: skip
            for sku, name, category, price, count in conv.get("items", ()):
                item_rows.append([idsite, visit["idvisitor"].upper(), stamp(conv["time"]), visit["idvisit"], order,
                                  actions.id(sku, T_SKU), actions.id(sanitized(name), T_ITEM_NAME),
                                  actions.id(sanitized(category), T_ITEM_CATEGORY) or 0, 0, 0, 0, 0, price, count,
                                  0])  # fmt: skip
    sites = sorted({v["idsite"] for v in visits})
    action_header = ["idaction", "name", "hash", "type", "url_prefix"]
    action_rows = [[i, name, i * 7919, kind, prefix]
                   for i, name, kind, prefix in actions.rows]  # fmt: skip
    lva_header = ["idlink_va", "idsite", "idvisitor", "idvisit", "idaction_url_ref", "idaction_url", "idaction_name",
                  "idaction_event_category", "idaction_event_action", "idaction_content_name", "server_time",
                  "custom_float", "search_cat", "search_count"]  # fmt: skip
    visit_header = ["idvisit", "idsite", "idvisitor", "user_id", "visit_first_action_time", "visit_last_action_time",
                    "referer_url", "config_browser_name", "config_browser_version", "config_os", "config_os_version",
                    "config_device_type", "config_resolution", "location_browser_lang", "location_country",
                    "location_region", "location_city", "visit_total_actions"]  # fmt: skip
    conv_header = ["idvisit", "idsite", "idgoal", "buster", "server_time", "url", "revenue", "idorder", "items"]
    item_header = ["idsite", "idvisitor", "server_time", "idvisit", "idorder", "idaction_sku", "idaction_name",
                   "idaction_category", "idaction_category2", "idaction_category3", "idaction_category4",
                   "idaction_category5", "price", "quantity", "deleted"]  # fmt: skip
    site_header = ["idsite", "name", "main_url", "ts_created", "ecommerce", "timezone", "currency", "type"]
    site_rows = [[i, sanitized(SITES[i][0]), SITES[i][1], "2023-01-01 00:00:00", 1, "Europe/Berlin", CURRENCY,
                  "website"] for i in sites]  # fmt: skip
    goal_header = ["idsite", "idgoal", "name", "description", "match_attribute", "pattern", "pattern_type",
                   "case_sensitive", "allow_multiple", "revenue", "deleted", "event_value_as_revenue"]  # fmt: skip
    goal_rows = [[i, g, name, "", "manually", "", "", 0, 0, 0, deleted, 0]
                 for (i, g), (name, deleted) in GOALS.items() if i in sites]  # fmt: skip
    return {
        "matomo_log_visit.tsv": tsv(visit_header, visit_rows),
        "matomo_log_link_visit_action.tsv.gz": gzip.compress(tsv(lva_header, lva_rows), mtime=0),
        "matomo_log_action.tsv": tsv(action_header, action_rows),
        "matomo_log_conversion.csv": _csv(conv_header, conv_rows),
        "matomo_log_conversion_item.tsv": tsv(item_header, item_rows),
        "matomo_goal.tsv": tsv(goal_header, goal_rows),
        "matomo_site.tsv": tsv(site_header, site_rows),
        "matomo_site_url.tsv": tsv(["idsite", "url"], [[i, SITES[i][1].replace("www.", "")] for i in sites]),
        "matomo_option.tsv": tsv(["option_name", "option_value", "autoload"], [["version_core", "5.1.0", 1]]),
    }


def database_tables() -> dict[str, bytes]:
    """More of Matomo's tables, as a dump of the whole database has them (none is read)."""
    return {
        "matomo_access.tsv": tsv(["idaccess", "login", "idsite", "access"], [[1, "viewer", 2, "view"]]),
        "matomo_user.tsv": tsv(["login", "password", "email"], [["admin", "$2y$10$x", "admin@example.org"]]),
        "matomo_archive_numeric_2024_03.tsv": tsv(
            ["idarchive", "name", "idsite", "date1", "date2", "period", "ts_archived", "value"],
            [[1, "nb_visits", 1, "2024-03-10", "2024-03-10", 1, "2024-03-11 00:00:00", 17]],
        ),
        "matomo_archive_blob_2024_03.tsv": tsv(["idarchive", "name", "value"], [[1, "Actions_actions", "x\u0001"]]),
        "matomo_tagmanager_container.tsv": tsv(["idcontainer", "idsite", "name"], [["abc", 1, "Default"]]),
        "matomo_custom_dimensions.tsv": tsv(["idcustomdimension", "idsite", "name"], [[1, 1, "Plan"]]),
        "matomo_log_profiling.tsv": b"",
    }


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().encode()


# --------------------------------------------------------------------------- Live API


DEVICE_LABELS = {0: "Desktop", 1: "Smartphone", 2: "Tablet"}


def live_visit(visit: dict[str, Any]) -> dict[str, Any]:
    """One visit as Live.getLastVisitsDetails (format=json) returns it (the fields read, and a few more)."""
    browser, os_code, os_version, device_type, resolution = visit["device"][:5]
    country, region, city = visit["place"][:3]
    details: list[dict[str, Any]] = []
    for action in visit["actions"]:
        ts = int(action["time"].timestamp()) + SITE_OFFSET
        page_url = visit["site_url"] + action["page"][0]
        kind = action["kind"]
        if kind == "pageview":
            details.append({"type": "action", "url": page_url, "pageTitle": action["page"][1], "timestamp": ts})
        elif kind == "event":
            category, act, name, value = action["event"]
            item = {"type": "event", "url": page_url, "eventCategory": category, "eventAction": act, "timestamp": ts}
            if name is not None:
                item["eventName"] = name
            if value is not None:
                item["eventValue"] = value
            details.append(item)
        elif kind in ("outlink", "download"):
            details.append({"type": kind, "url": action["link"], "timestamp": ts})
        elif kind == "site_search":
            search = {"siteSearchKeyword": action["keyword"], "siteSearchCount": action["count"]}
            details.append({"type": "search", **search, "siteSearchCategory": None, "timestamp": ts})
        else:
            details.append({"type": "content", "url": page_url, "contentName": "Banner", "timestamp": ts})
    for conv in visit["conversions"]:
        ts = int(conv["time"].timestamp()) + SITE_OFFSET
        if conv["idgoal"] > 0:
            name, deleted = GOALS[(visit["idsite"], conv["idgoal"])]
            goal = {"goalName": None, "goalId": None} if deleted else {"goalName": name, "goalId": str(conv["idgoal"])}
            details.append({"type": "goal", **goal, "revenue": conv["revenue"],
                            "url": visit["site_url"] + conv["page"][0], "timestamp": ts})  # fmt: skip
        else:
            kind = "ecommerceOrder" if conv["idgoal"] == 0 else "ecommerceAbandonedCart"
            items = conv.get("items", ())
            item = {"type": kind, "revenue": f"{conv['revenue']:.2f}", "items": str(sum(i[-1] for i in items) or 1),
                    "timestamp": ts}  # fmt: skip
            if kind == "ecommerceOrder":
                item["orderId"] = f"ORD-{visit['idvisit']}"
                item["itemDetails"] = [
                    {"itemSKU": sku, "itemName": name, "itemCategory": category, "price": price, "quantity": count,
                     "categories": [category] if category else []}
                    for sku, name, category, price, count in items
                ]  # fmt: skip
            details.append(item)
    details.sort(key=lambda d: d["timestamp"])
    return {
        "idSite": visit["idsite"],
        "siteName": SITES[visit["idsite"]][0],
        "idVisit": visit["idvisit"],
        "visitorId": visit["idvisitor"],
        "userId": visit["user_id"],
        "visitIp": "203.0.113.0",
        "firstActionTimestamp": int(visit["first"].timestamp()),
        "lastActionTimestamp": max(d["timestamp"] for d in details) - SITE_OFFSET,
        "serverTimestamp": max(d["timestamp"] for d in details) - SITE_OFFSET,
        "siteCurrency": CURRENCY,
        "actionDetails": details,
        "referrerUrl": visit["referrer"],
        "referrerType": "website" if visit["referrer"] else "direct",
        "browserCode": browser,
        "browserName": {"CH": "Chrome"}.get(browser, browser),
        "operatingSystemCode": os_code,
        "operatingSystemVersion": os_version,
        "deviceType": DEVICE_LABELS[device_type],
        "deviceTypeIcon": f"plugins/Morpheus/icons/dist/devices/{DEVICE_LABELS[device_type].lower()}.png",
        "resolution": resolution,
        "languageCode": visit["lang"].split(",")[0],
        "countryCode": country,
        "regionCode": region,
        "city": city,
    }


def live_pages(visits: list[dict[str, Any]]) -> dict[str, bytes]:
    """Pages of PAGE_SIZE visits, newest first, as filter_offset paging saves them."""
    newest_first = sorted(visits, key=lambda v: v["first"], reverse=True)
    pages = {}
    for n, start in enumerate(range(0, len(newest_first), PAGE_SIZE), 1):
        page = [live_visit(v) for v in newest_first[start : start + PAGE_SIZE]]
        pages[f"visits_page{n}.json"] = json.dumps(page, ensure_ascii=False, indent=1).encode()
    return pages


def write(out: Path = OUT) -> dict[str, Any]:
    """The shipped samples (one site); returns what an import of them must show."""
    visits = build_visits()
    for folder, files in (("logs", log_tables(visits)), ("live", live_pages(visits))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (out / folder / name).write_bytes(data)
    result = expected(visits)
    (out / "expected.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def write_database(out: Path) -> dict[str, dict[str, Any]]:
    """A whole database of two sites (``out/logs``, ``out/live``); returns each site's expected figures."""
    first = build_visits()
    second = build_visits(seed=SEED + 1, idsite=2, days=2, idvisit=1000)
    visits = first + second
    for folder, files in (("logs", log_tables(visits) | database_tables()), ("live", live_pages(visits))):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (out / folder / name).write_bytes(data)
    return {"1": expected(first), "2": expected(second)}


if __name__ == "__main__":
    figures = write()
    print(f"wrote {OUT}: {figures['visits_total']} visits, {figures['actions_total']} actions")
