#!/usr/bin/env python3
"""Write the Plausible CSV export sample in ``sample_data/plausible_csv/``, the same bytes on every run.

    python sample_data/make_plausible_csv_samples.py

  example.com_20240305.zip  a Plausible export (current layout, ZIP_STORED) of
                            2024-03-01 .. 2024-03-04: imported_<table>_20240301_20240304.csv
                            for visitors, sources, pages, entry_pages, exit_pages,
                            custom_events (with Plausible's `engagement` event),
                            locations, devices, browsers, operating_systems and
                            custom_props; the tables agree with each other: the
                            day's visits are drawn one by one (entry page, pages,
                            exit page), so pages add up to the day's pageviews,
                            entrances and exits per page and bounces per entry
                            page are those visits', sources add up to its visits,
                            devices/browsers/os/locations to its visitors, and
                            custom_props to at most the day's custom events;
                            a custom event name's visitors are about two thirds
                            of its events (at least 1).
  old-layout.example.com_20230101.zip
                            an export in Plausible's OLD layout (2023-01-01 ..
                            2023-01-03): pages = date, hostname, page, visitors,
                            pageviews, exits, time_on_page; exit_pages = date,
                            exit_page, visitors, exits; sources without referrer,
                            utm_source and pageviews; browsers / operating_systems
                            without versions; no custom_events, no custom_props.
  expected.json             per ZIP and day: the visitors table's figures, pageviews
                            per page, entrances per entry page, exits per exit page,
                            custom events per name (engagement left out), custom
                            props per property=value, visits per source name and
                            visitors per device / browser / os / country: what
                            Umami should count.

Standard library only; seeded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "plausible_csv"
ZIP_NAME = "example.com_20240305.zip"
SEED = 20240305
START = dt.date(2024, 3, 1)
DAYS = 4
SUFFIX = "20240301_20240304"
HOST = "example.com"
PAGES = ("/", "/pricing", "/blog/hello-world", "/docs", "/signup")
#: (source, referrer, utm_source, utm_medium, utm_campaign)
SOURCES = (
    ("", "", "", "", ""),
    ("Google", "", "", "", ""),
    ("Hacker News", "news.ycombinator.com/item", "", "", ""),
    ("newsletter", "", "newsletter", "email", "spring"),
)
DEVICES = ("Desktop", "Mobile", "Tablet", "Laptop")
BROWSERS = (("Chrome", "122.0"), ("Safari", "17.3"), ("Firefox", "123.0"), ("Microsoft Edge", "122.0"))
OSES = (("Windows", "10"), ("Mac", "14"), ("iOS", "17.3"), ("Android", "14"), ("GNU/Linux", ""))
LOCATIONS = (("DE", "DE-BE", "2950159"), ("US", "US-CA", "5391959"), ("FR", "FR-IDF", "0"), ("ZZ", "", "0"))
EVENTS = (("Signup", "", "/signup"), ("Outbound Link: Click", "https://github.com/example", "/docs"))


def split(rnd: random.Random, total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` non-negative counts."""
    cuts = sorted(rnd.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def csv_bytes(header: list[str], rows: list[list[object]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


#: table -> header, current layout
CURRENT = {
    "visitors": ["date", "visitors", "pageviews", "bounces", "visits", "visit_duration"],
    "sources": [
        "date",
        "source",
        "referrer",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "pageviews",
        "visitors",
        "visits",
        "visit_duration",
        "bounces",
    ],
    "pages": ["date", "hostname", "page", "visits", "visitors", "pageviews", "exits", "time_on_page"],
    "entry_pages": ["date", "entry_page", "visitors", "entrances", "visit_duration", "bounces", "pageviews"],
    "exit_pages": ["date", "exit_page", "visitors", "visit_duration", "exits", "bounces", "pageviews"],
    "custom_events": ["date", "name", "link_url", "path", "visitors", "events"],
    "locations": ["date", "country", "region", "city", "visitors", "visits", "visit_duration", "bounces"],
    "devices": ["date", "device", "visitors", "visits", "visit_duration", "bounces"],
    "browsers": ["date", "browser", "browser_version", "visitors", "visits", "visit_duration", "bounces"],
    "operating_systems": [
        "date",
        "operating_system",
        "operating_system_version",
        "visitors",
        "visits",
        "visit_duration",
        "bounces",
    ],
    "custom_props": ["date", "property", "value", "visitors", "events"],
}
#: table -> header, Plausible's older export layout
OLD = {
    "visitors": ["date", "visitors", "pageviews", "bounces", "visits", "visit_duration"],
    "sources": [
        "date",
        "source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "visitors",
        "visits",
        "visit_duration",
        "bounces",
    ],
    "pages": ["date", "hostname", "page", "visitors", "pageviews", "exits", "time_on_page"],
    "entry_pages": ["date", "entry_page", "visitors", "entrances", "visit_duration", "bounces"],
    "exit_pages": ["date", "exit_page", "visitors", "exits"],
    "locations": ["date", "country", "region", "city", "visitors", "visits", "visit_duration", "bounces"],
    "devices": ["date", "device", "visitors", "visits", "visit_duration", "bounces"],
    "browsers": ["date", "browser", "visitors", "visits", "visit_duration", "bounces"],
    "operating_systems": ["date", "operating_system", "visitors", "visits", "visit_duration", "bounces"],
}
OLD_ZIP = "old-layout.example.com_20230101.zip"
OLD_SEED = 20230101
OLD_START = dt.date(2023, 1, 1)
OLD_DAYS = 3
OLD_SUFFIX = "20230101_20230103"


def draw_visits(rnd: random.Random, visits: int, bounces: int, pageviews: int) -> list[list[str]]:
    """The day's visits, each a list of pages: ``bounces`` of one pageview, ``pageviews`` in all."""
    weights = [rnd.random() + 0.2 for _ in PAGES]
    multi = visits - bounces
    views = [1] * bounces + [2] * multi
    for _ in range(pageviews - bounces - 2 * multi):
        views[bounces + rnd.randrange(multi)] += 1
    return [rnd.choices(PAGES, weights, k=m) for m in views]


def build_export(
    rnd: random.Random, start: dt.date, days: int, layout: dict[str, list[str]], with_events: bool
) -> tuple[dict[str, list[list[object]]], dict[str, object]]:
    """Rows per table (as dicts by column) of ``days`` days, and what Umami should count per day."""
    tables: dict[str, list[dict[str, object]]] = {name: [] for name in layout}
    expected: dict[str, object] = {}
    for i in range(days):
        day = (start + dt.timedelta(days=i)).isoformat()
        visitors = rnd.randint(40, 90)
        visits = visitors + rnd.randint(5, 30)
        pageviews = visits * 2 + rnd.randint(10, 60)
        bounces = rnd.randint(visits // 4, visits // 2)
        duration = (visits - bounces) * rnd.randint(60, 240)
        tables["visitors"].append(
            dict(zip(layout["visitors"], [day, visitors, pageviews, bounces, visits, duration], strict=True))
        )
        drawn = draw_visits(rnd, visits, bounces, pageviews)
        per_page = {p: sum(v.count(p) for v in drawn) for p in PAGES}
        entries = {p: sum(1 for v in drawn if v[0] == p) for p in PAGES}
        exits = {p: sum(1 for v in drawn if v[-1] == p) for p in PAGES}
        entry_bounces = {p: sum(1 for v in drawn if v == [p]) for p in PAGES}
        for page in PAGES:
            n = per_page[page]
            if n:
                tables["pages"].append(
                    dict(
                        date=day,
                        hostname=HOST,
                        page=page,
                        visits=max(1, n // 2),
                        visitors=max(1, n // 3),
                        pageviews=n,
                        exits=exits[page],
                        time_on_page=n * 30,
                    )
                )
            if entries[page]:
                e = entries[page]
                tables["entry_pages"].append(
                    dict(
                        date=day,
                        entry_page=page,
                        visitors=e,
                        entrances=e,
                        visit_duration=e * 40,
                        bounces=entry_bounces[page],
                        pageviews=e * 2,
                    )
                )
            if exits[page]:
                x = exits[page]
                tables["exit_pages"].append(
                    dict(
                        date=day,
                        exit_page=page,
                        visitors=x,
                        visit_duration=x * 40,
                        exits=x,
                        bounces=entry_bounces[page],
                        pageviews=x * 2,
                    )
                )
        per_source = split(rnd, visits, len(SOURCES))
        for (source, referrer, us, um, uc), n in zip(SOURCES, per_source, strict=True):
            tables["sources"].append(
                dict(
                    date=day,
                    source=source,
                    referrer=referrer,
                    utm_source=us,
                    utm_medium=um,
                    utm_campaign=uc,
                    utm_content="",
                    utm_term="",
                    pageviews=n * 2,
                    visitors=n,
                    visits=n,
                    visit_duration=n * 50,
                    bounces=n // 3,
                )
            )
        dims: dict[str, dict[str, int]] = {}
        for table, column, values in (
            ("devices", ["device"], [(d,) for d in DEVICES]),
            ("browsers", ["browser", "browser_version"], BROWSERS),
            ("operating_systems", ["operating_system", "operating_system_version"], OSES),
            ("locations", ["country", "region", "city"], LOCATIONS),
        ):
            counts = split(rnd, visitors, len(values))
            for value, n in zip(values, counts, strict=True):
                tables[table].append(
                    dict(
                        date=day,
                        **dict(zip(column, value, strict=True)),
                        visitors=n,
                        visits=n,
                        visit_duration=n * 50,
                        bounces=n // 3,
                    )
                )
            kept = [c for c in column if c in layout[table]]
            dims[table] = {
                "/".join(str(v) for c, v in zip(column, value, strict=True) if c in kept[:2] and v and v != "ZZ")
                or "(unknown)": n
                for value, n in zip(values, counts, strict=True)
                if n
            }
        want: dict[str, object] = {
            "visitors": visitors,
            "visits": visits,
            "pageviews": pageviews,
            "bounces": bounces,
            "visit_duration": duration,
            "pages": {p: n for p, n in per_page.items() if n},
            "entry_pages": {p: n for p, n in entries.items() if n},
            "exit_pages": {p: n for p, n in exits.items() if n},
            "sources": {s or "(direct)": n for (s, *_), n in zip(SOURCES, per_source, strict=True) if n},
            **dims,
        }
        if with_events:
            events: dict[str, int] = {}
            for name, link, path in EVENTS:
                n = rnd.randint(1, 15)
                tables["custom_events"].append(
                    dict(date=day, name=name, link_url=link, path=path, visitors=max(1, (2 * n + 2) // 3), events=n)
                )
                events[name] = n
            tables["custom_events"].append(
                dict(date=day, name="engagement", link_url="", path="", visitors=visitors, events=visits * 3)
            )
            total = sum(events.values())
            pro = rnd.randint(1, total - 1)
            free = rnd.randint(0, total - pro)
            props = {"plan=pro": pro, "plan=free": free, "author=alice": 1}
            for key, n in props.items():
                prop, value = key.split("=")
                if n:
                    tables["custom_props"].append(dict(date=day, property=prop, value=value, visitors=n, events=n))
            want["events"] = events
            want["props"] = {k: n for k, n in props.items() if n}
        expected[day] = want
    rows = {name: [[row.get(c, "") for c in layout[name]] for row in found] for name, found in tables.items()}
    return rows, expected


def zip_of(
    layout: dict[str, list[str]], rows: dict[str, list[list[object]]], suffix: str, stamp: tuple[int, ...]
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, header in layout.items():
            info = zipfile.ZipInfo(f"imported_{name}_{suffix}.csv", date_time=stamp)  # type: ignore[arg-type]
            info.external_attr = 0o644 << 16
            archive.writestr(info, csv_bytes(header, rows[name]))
    return buf.getvalue()


def build() -> tuple[dict[str, bytes], dict[str, object]]:
    """ZIP name -> bytes, and expected.json's content."""
    rows, expected = build_export(random.Random(SEED), START, DAYS, CURRENT, with_events=True)
    old_rows, old_expected = build_export(random.Random(OLD_SEED), OLD_START, OLD_DAYS, OLD, with_events=False)
    zips = {
        ZIP_NAME: zip_of(CURRENT, rows, SUFFIX, (2024, 3, 5, 0, 0, 0)),
        OLD_ZIP: zip_of(OLD, old_rows, OLD_SUFFIX, (2023, 1, 4, 0, 0, 0)),
    }
    return zips, {ZIP_NAME: {"days": expected}, OLD_ZIP: {"days": old_expected}}


def main() -> None:
    zips, expected = build()
    OUT.mkdir(exist_ok=True)
    for name, data in zips.items():
        (OUT / name).write_bytes(data)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
