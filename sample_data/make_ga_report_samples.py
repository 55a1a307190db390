#!/usr/bin/env python3
"""Write the Google Analytics report samples in ``sample_data/ga_reports/``, the same bytes on every run.

    python sample_data/make_ga_report_samples.py

  ua_all_pages.csv    Universal Analytics, English: "All Pages" with Date as a
                      secondary dimension (totals row last, empty dimensions),
                      the "Day Index, Pageviews" chart table (M/D/YY dates), an
                      audience overview (Day Index, Users, Sessions), sessions
                      by Source / Medium per day, and a Device Category table
                      without a date (ignored by the reader).
  ga4_de_events.csv   GA4, German UI: pages and screens (dates ``1.3.2024``,
                      ``1.234`` grouping, ``41,20 %``), a daily overview
                      (``YYYYMMDD``), events by name with revenue
                      (``1.234,56 €``), and a table split by device category
                      (ignored). Totals rows ("Gesamtsumme") first.
  expected.json       per file and day: pageviews, users, sessions, custom
                      events by name and revenue, from this generator's own
                      numbers (what Umami should count after an import).

Standard library only; seeded.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "ga_reports"
SEED = 20240301
UA_START = dt.date(2024, 3, 1)
UA_DAYS = 10
GA4_START = dt.date(2024, 3, 1)
GA4_DAYS = 7
UA_PAGES = ("/", "/pricing", "/features", "/blog/invoicing-tips", "/signup", "/docs/getting-started")
GA4_PAGES = ("/", "/preise", "/funktionen", "/blog/rechnungen-schreiben", "/registrieren")
UA_SOURCES = ("(direct) / (none)", "google / organic", "news.ycombinator.com / referral", "newsletter / email")
#: GA4 automatic events (the reader leaves them out: pageviews/sessions already count them).
GA4_AUTOMATIC = ("page_view", "session_start", "first_visit", "user_engagement")
GA4_CUSTOM = ("scroll", "click", "sign_up", "purchase")


def en(n: int) -> str:
    """1234 -> "1,234" (English grouping)."""
    return f"{n:,}"


def de(n: int) -> str:
    """1234 -> "1.234" (German grouping)."""
    return f"{n:,}".replace(",", ".")


def de_money(cents: int) -> str:
    """123456 -> "1.234,56 €"."""
    whole, frac = divmod(cents, 100)
    return f"{de(whole)},{frac:02d} €"


def quoted(*cells: str) -> str:
    """One CSV line; cells with a comma are quoted as GA does."""
    return ",".join(f'"{c}"' if "," in c else c for c in cells)


def split(rnd: random.Random, total: int, parts: int) -> list[int]:
    """``total`` into ``parts`` positive-ish shares (each >= 1 when total >= parts)."""
    cuts = sorted(rnd.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def ua_report(rnd: random.Random) -> tuple[str, dict[str, dict[str, object]]]:
    days = [UA_START + dt.timedelta(days=i) for i in range(UA_DAYS)]
    end = days[-1]
    rng = f"# {UA_START:%Y%m%d}-{end:%Y%m%d}"
    expected: dict[str, dict[str, object]] = {}
    page_rows: list[str] = []
    chart_rows: list[str] = []
    audience_rows: list[str] = []
    source_rows: list[str] = []
    totals = {"pv": 0, "users": 0, "sessions": 0}
    for day in days:
        pageviews = rnd.randint(700, 1400)
        users = rnd.randint(pageviews // 4, pageviews // 3)
        sessions = rnd.randint(users, min(pageviews, users + users // 2))
        for page, n in zip(UA_PAGES, split(rnd, pageviews, len(UA_PAGES)), strict=True):
            bounce = f"{rnd.uniform(20, 80):.2f}%"
            page_rows.append(
                quoted(page, f"{day:%Y%m%d}", en(n), en(max(1, n * 4 // 5)), "00:01:12", en(n // 3), bounce, "38.50%")
                + ",$0.00"
            )
        for source, n in zip(UA_SOURCES, split(rnd, sessions, len(UA_SOURCES)), strict=True):
            source_rows.append(quoted(f"{day:%Y%m%d}", source, en(n), en(max(1, n * 9 // 10))))
        chart_rows.append(quoted(f"{day.month}/{day.day}/{day:%y}", en(pageviews)))
        audience_rows.append(quoted(f"{day.month}/{day.day}/{day:%y}", en(users), en(sessions)))
        totals["pv"] += pageviews
        totals["users"] += users
        totals["sessions"] += sessions
        expected[day.isoformat()] = {
            "pageviews": pageviews,
            "users": users,
            "sessions": sessions,
            "events": {},
            "revenue": 0.0,
        }
    header = ["# ----------------------------------------", "# All Web Site Data", "# Pages", rng]
    header.append("# ----------------------------------------")
    lines = [*header, ""]
    lines.append("Page,Date,Pageviews,Unique Pageviews,Avg. Time on Page,Entrances,Bounce Rate,% Exit,Page Value")
    lines += page_rows
    lines.append(
        quoted("", "", en(totals["pv"]), en(totals["pv"] * 4 // 5), "00:01:10", "", "51.20%", "38.50%") + ",$0.00"
    )
    lines += ["", *header, "", "Day Index,Pageviews", *chart_rows, quoted("", en(totals["pv"])), ""]
    lines += ["# ----------------------------------------", "# All Web Site Data", "# Audience Overview", rng]
    lines += ["# ----------------------------------------", "", "Day Index,Users,Sessions", *audience_rows]
    lines += [quoted("", en(totals["users"]), en(totals["sessions"])), ""]
    lines += ["# ----------------------------------------", "# All Web Site Data", "# Source/Medium", rng]
    lines += ["# ----------------------------------------", "", "Date,Source / Medium,Sessions,Users", *source_rows]
    lines += [quoted("", "", en(totals["sessions"]), en(totals["users"])), ""]
    lines += ["# ----------------------------------------", "# All Web Site Data", "# Device Category", rng]
    lines += ["# ----------------------------------------", "", "Device Category,Sessions,Bounce Rate"]
    lines += [quoted("desktop", en(totals["sessions"] * 2 // 3), "44.10%")]
    lines += [quoted("mobile", en(totals["sessions"] - totals["sessions"] * 2 // 3), "58.70%"), ""]
    return "\n".join(lines), expected


def ga4_report(rnd: random.Random) -> tuple[str, dict[str, dict[str, object]]]:
    days = [GA4_START + dt.timedelta(days=i) for i in range(GA4_DAYS)]
    expected: dict[str, dict[str, object]] = {}
    page_rows: list[str] = []
    daily_rows: list[str] = []
    event_rows: list[str] = []
    device_rows: list[str] = []
    sums = {"pv": 0, "users": 0, "sessions": 0, "events": 0, "cents": 0}
    for day in days:
        d = f"{day.day}.{day.month}.{day.year}"
        pageviews = rnd.randint(900, 1300)
        users = rnd.randint(pageviews // 4, pageviews // 3)
        sessions = rnd.randint(users, users + users // 3)
        for page, n in zip(GA4_PAGES, split(rnd, pageviews, len(GA4_PAGES)), strict=True):
            rate = f"{rnd.uniform(20, 80):.2f}".replace(".", ",") + " %"
            page_rows.append(quoted(d, page, de(n), de(max(1, n // 3)), "00:00:45", rate))
        daily_rows.append(quoted(f"{day:%Y%m%d}", de(users), de(sessions), de(pageviews)))
        counts = {
            "page_view": pageviews,
            "session_start": sessions,
            "first_visit": users // 2,
            "user_engagement": sessions * 2,
            "scroll": rnd.randint(100, 400),
            "click": rnd.randint(20, 90),
            "sign_up": rnd.randint(1, 12),
            "purchase": rnd.randint(1, 6),
        }
        cents = sum(rnd.randint(1_900, 24_900) for _ in range(counts["purchase"])) + 1  # odd cent: a remainder
        for name, n in counts.items():
            revenue = de_money(cents if name == "purchase" else 0)
            event_rows.append(quoted(d, name, de(n), de(min(n, users)), revenue))
            sums["events"] += n
        mobile = rnd.randint(users // 3, users // 2)
        device_rows.append(quoted(d, "mobile", de(mobile)))
        device_rows.append(quoted(d, "desktop", de(users - mobile)))
        sums["pv"] += pageviews
        sums["users"] += users
        sums["sessions"] += sessions
        sums["cents"] += cents
        expected[day.isoformat()] = {
            "pageviews": pageviews,
            "users": users,
            "sessions": sessions,
            "events": {name: n for name, n in counts.items() if name not in GA4_AUTOMATIC},
            "revenue": cents / 100,
        }
    end = days[-1]
    meta = ["# Konto: Ledgerly", "# Property: ledgerly.example - GA4"]
    dates = ["#", "# Alle Nutzer", f"# Startdatum: {GA4_START:%Y%m%d}", f"# Enddatum: {end:%Y%m%d}"]
    bar = "# ----------------------------------------"
    lines = [bar, "# Seiten und Bildschirme: Seitenpfad und Bildschirmklasse", *meta, bar, *dates]
    lines.append("Datum,Seitenpfad und Bildschirmklasse,Aufrufe,Nutzer,Durchschnittliche Interaktionszeit,Absprungrate")
    lines.append(quoted("Gesamtsumme", "", de(sums["pv"]), de(sums["users"]), "00:00:44", "47,11 %"))
    lines += page_rows
    lines += ["", bar, "# Übersicht: Nutzer", *meta, bar, *dates]
    lines.append("Datum,Nutzer insgesamt,Sitzungen,Aufrufe")
    lines.append(quoted("Gesamtsumme", de(sums["users"]), de(sums["sessions"]), de(sums["pv"])))
    lines += daily_rows
    lines += ["", bar, "# Ereignisse: Ereignisname", *meta, bar, *dates]
    lines.append("Datum,Ereignisname,Ereignisanzahl,Nutzer insgesamt,Gesamtumsatz")
    lines.append(quoted("Gesamtsumme", "", de(sums["events"]), de(sums["users"]), de_money(sums["cents"])))
    lines += event_rows
    lines += ["", bar, "# Technik: Gerätekategorie", *meta, bar, *dates]
    lines += ["Datum,Gerätekategorie,Nutzer", *device_rows, ""]
    return "\n".join(lines), expected


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rnd = random.Random(SEED)
    ua_text, ua_expected = ua_report(rnd)
    ga4_text, ga4_expected = ga4_report(rnd)
    (OUT / "ua_all_pages.csv").write_text(ua_text, encoding="utf-8")
    (OUT / "ga4_de_events.csv").write_bytes(b"\xef\xbb\xbf" + ga4_text.encode("utf-8"))  # GA4 writes a BOM
    expected = {
        "ua_all_pages.csv": {"mapping": "mappings/ga_report.yaml", "currency": None, "days": ua_expected},
        "ga4_de_events.csv": {"mapping": "mappings/ga_report.yaml", "currency": "EUR", "days": ga4_expected},
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
