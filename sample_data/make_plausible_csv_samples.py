#!/usr/bin/env python3
"""Write the Plausible CSV export sample in ``sample_data/plausible_csv/``, the same bytes on every run.

    python sample_data/make_plausible_csv_samples.py

  example.com_20240305.zip  a Plausible export (current layout, ZIP_STORED) of
                            2024-03-01 .. 2024-03-04: imported_<table>_20240301_20240304.csv
                            for visitors, sources, pages, entry_pages, exit_pages,
                            custom_events (with Plausible's `engagement` event),
                            locations, devices, browsers, operating_systems and
                            custom_props; the tables agree with each other (pages
                            add up to the day's pageviews, sources to its visits,
                            devices/browsers/os/locations to its visitors).
  expected.json             per day: the visitors table's figures, pageviews per
                            page, custom events per name (engagement left out),
                            visits per source name and visitors per device /
                            browser / os / country: what Umami should count.

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


def build() -> tuple[dict[str, bytes], dict[str, object]]:
    rnd = random.Random(SEED)
    tables: dict[str, tuple[list[str], list[list[object]]]] = {
        "visitors": (["date", "visitors", "pageviews", "bounces", "visits", "visit_duration"], []),
        "sources": (
            [
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
            [],
        ),
        "pages": (["date", "hostname", "page", "visits", "visitors", "pageviews", "exits", "time_on_page"], []),
        "entry_pages": (["date", "entry_page", "visitors", "entrances", "visit_duration", "bounces", "pageviews"], []),
        "exit_pages": (["date", "exit_page", "visitors", "visit_duration", "exits", "bounces", "pageviews"], []),
        "custom_events": (["date", "name", "link_url", "path", "visitors", "events"], []),
        "locations": (["date", "country", "region", "city", "visitors", "visits", "visit_duration", "bounces"], []),
        "devices": (["date", "device", "visitors", "visits", "visit_duration", "bounces"], []),
        "browsers": (["date", "browser", "browser_version", "visitors", "visits", "visit_duration", "bounces"], []),
        "operating_systems": (
            ["date", "operating_system", "operating_system_version", "visitors", "visits", "visit_duration", "bounces"],
            [],
        ),
        "custom_props": (["date", "property", "value", "visitors", "events"], []),
    }
    expected: dict[str, object] = {}
    for i in range(DAYS):
        day = (START + dt.timedelta(days=i)).isoformat()
        visitors = rnd.randint(40, 90)
        visits = visitors + rnd.randint(5, 30)
        pageviews = visits * 2 + rnd.randint(10, 60)
        bounces = rnd.randint(visits // 4, visits // 2)
        duration = (visits - bounces) * rnd.randint(60, 240)
        tables["visitors"][1].append([day, visitors, pageviews, bounces, visits, duration])
        per_page = split(rnd, pageviews, len(PAGES))
        for page, n in zip(PAGES, per_page, strict=True):
            tables["pages"][1].append([day, HOST, page, max(1, n // 2), max(1, n // 3), n, n // 4, n * 30])
        entry = split(rnd, visits, len(PAGES))
        for page, n in zip(PAGES, entry, strict=True):
            tables["entry_pages"][1].append([day, page, n, n, n * 40, n // 3, n * 2])
            tables["exit_pages"][1].append([day, page, n, n * 40, n, n // 3, n * 2])
        per_source = split(rnd, visits, len(SOURCES))
        for (source, referrer, us, um, uc), n in zip(SOURCES, per_source, strict=True):
            tables["sources"][1].append([day, source, referrer, us, um, uc, "", "", n * 2, n, n, n * 50, n // 3])
        dims: dict[str, dict[str, int]] = {}
        for table, values in (
            ("devices", [(d,) for d in DEVICES]),
            ("browsers", BROWSERS),
            ("operating_systems", OSES),
            ("locations", LOCATIONS),
        ):
            counts = split(rnd, visitors, len(values))
            for value, n in zip(values, counts, strict=True):
                tables[table][1].append([day, *value, n, n, n * 50, n // 3])
            dims[table] = {
                "/".join(v for v in value[:2] if v and v != "ZZ") or "(unknown)": n
                for value, n in zip(values, counts, strict=True)
                if n
            }
        events: dict[str, int] = {}
        for name, link, path in EVENTS:
            n = rnd.randint(1, 15)
            tables["custom_events"][1].append([day, name, link, path, n, n])
            events[name] = n
        tables["custom_events"][1].append([day, "engagement", "", "", visitors, visits * 3])
        tables["custom_props"][1].append([day, "plan", "pro", 3, 3])
        expected[day] = {
            "visitors": visitors,
            "visits": visits,
            "pageviews": pageviews,
            "bounces": bounces,
            "visit_duration": duration,
            "pages": {p: n for p, n in zip(PAGES, per_page, strict=True) if n},
            "events": events,
            "sources": {s or "(direct)": n for (s, *_), n in zip(SOURCES, per_source, strict=True) if n},
            **dims,
        }
    files = {f"imported_{name}_{SUFFIX}.csv": csv_bytes(*content) for name, content in tables.items()}
    return files, {ZIP_NAME: {"days": expected}}


def main() -> None:
    files, expected = build()
    OUT.mkdir(exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 3, 5, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    (OUT / ZIP_NAME).write_bytes(buf.getvalue())
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
