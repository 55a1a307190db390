"""The page of a ``verify`` run: the sources against what Umami holds, day by day and list by list."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .page import Page, cell, esc, num, raw, signed, table
from .sections import (
    SCROLL_ROWS,
    by_day,
    compared_days,
    day_figures,
    ledger_section,
    notes_list,
    run_facts,
    timings_text,
    top_block,
)

SOURCES, UMAMI = "sources", "Umami"
TOP_TITLES = {
    "paths": "Top paths",
    "referrers": "Top referrers",
    "countries": "Top countries",
    "browsers": "Top browsers",
    "os": "Top operating systems",
    "devices": "Top devices",
}


def verify_page(report: dict[str, Any]) -> Page:
    match = report.get("verdict") == "match"
    differences = report.get("differences") or []
    title = f"Verify: website {report.get('website')} on {report.get('host')}"
    first, last = (report.get("range") or {}).get("first_day"), (report.get("range") or {}).get("last_day")
    lead = (
        f'<p class="muted">{num(int(report.get("expected_rows") or 0))} rows the sources send, '
        f"{esc(first)} to {esc(last)}; days in {esc(report.get('timezone'))}; visits: {esc(report.get('visits'))}; "
        f"tolerance {esc(report.get('tolerance'))}.</p>"
    )
    if match:
        banner = (
            f"MATCH: Umami holds what the sources say, within tolerance {esc(report.get('tolerance'))}: "
            f"{len(report.get('days') or []):,} days × 4 figures and every compared top list agree."
        )
    else:
        listed = "; ".join(esc(_difference_text(d)) for d in differences[:3])
        more = f"; and {len(differences) - 3:,} more" if len(differences) > 3 else ""
        banner = f"DIFFERENT: {len(differences):,} difference(s) beyond the tolerance: {listed}{more}."
    page = Page(title, lead, banner, match)
    page.add("differences", "Differences", _differences(report))
    page.add("diagnoses", "Diagnoses", _diagnoses(report))
    ledger = report.get("source_ledger")
    if ledger:
        page.add(
            "ledger",
            "Ledger of the sources",
            ledger_section(ledger, accepted_label="would send", dry=True, caption="Where every row read went"),
        )
    page.add("run", "The run", _run_details(report))
    page.add("days", "Per day", _days(report))
    page.add("top", "Side by side", _tops(report))
    return page


def _difference_text(d: dict[str, Any]) -> str:
    delta = int(d["found"]) - int(d["expected"])
    return f"{d['where']} {d['metric']}: expected {int(d['expected']):,}, found {int(d['found']):,} ({delta:+,})"


def _differences(report: dict[str, Any]) -> str:
    differences = report.get("differences") or []
    if not differences:
        return "<p>None: every compared figure agrees within the tolerance.</p>"
    rows = []
    for d in differences:
        where = str(d["where"])
        link = f'<a href="#day-{esc(where)}">{esc(where)}</a>' if not where.startswith("top") else esc(where)
        expected, found = int(d["expected"]), int(d["found"])
        rows.append(
            [
                raw(link, css="rowhead"),
                cell(d["metric"]),
                cell(expected),
                cell(found),
                raw(signed(found - expected), numeric=True, css="bad"),
            ]
        )
    return table(
        "Every figure that differs beyond the tolerance (the days link to their row of the per-day table)",
        ["where", "figure", "sources", "Umami", "difference"],
        rows,
        differs=[True] * len(rows),
        numeric_headers=[False, False, True, True, True],
        scroll=len(rows) > SCROLL_ROWS,
    )


def _diagnoses(report: dict[str, Any]) -> str:
    out = []
    for d in report.get("diagnoses") or []:
        out.append(f"<h3>{esc(d.get('title'))}</h3><p>{esc(d.get('text'))}</p>")
    return "".join(out)


def _run_details(report: dict[str, Any]) -> str:
    recent = report.get("after_range_recent") or {}
    revenue = report.get("revenue_expected") or {}
    extra = [
        (
            "read from",
            f"Umami at <code>{esc(report.get('host'))}</code>, website <code>{esc(report.get('website'))}</code>",
        ),
        ("time", timings_text(report.get("elapsed_s"), {"requests": report.get("requests")})),
        (
            "after the range",
            esc(
                f"{int(recent.get('pageviews') or 0):,} pageviews, {int(recent.get('events') or 0):,} custom events "
                "in Umami in the last 30 days after the range (events sent without their time land there)"
            )
            if recent
            else "",
        ),
        (
            "revenue expected",
            esc(", ".join(f"{cur} {amount:,.2f}" for cur, amount in revenue.items()) + " (not compared)")
            if revenue
            else "",
        ),
    ]
    out = run_facts(report, extra)
    notes = notes_list(report.get("notes") or [])
    return out + (f"<h3>Notes</h3>{notes}" if notes else "")


def _days(report: dict[str, Any]) -> str:
    days = report.get("days") or []
    if not days:
        return ""
    differs: dict[str, list[str]] = {}
    for d in days:
        for metric in set(d.get("differs") or []) | ({"events"} if d.get("events_differ") else set()):
            differs.setdefault(metric, []).append(d["day"])
    note = (
        f"<p>Days are counted in <strong>{esc(report.get('timezone'))}</strong> on both sides (the sources' "
        "times converted to it; Umami asked for the same zone). A wrong zone moves events across midnight: "
        "two neighbouring days then differ by the same amount in opposite directions.</p>"
    )
    expected, found = by_day(days, "expected"), by_day(days, "found")
    listed, figures = compared_days(
        (SOURCES, UMAMI), expected, found, differs, "Per-day figures of the charts above, sources against Umami"
    )
    return note + listed + day_figures({SOURCES: expected, UMAMI: found}, differs) + figures


def _tops(report: dict[str, Any]) -> str:
    out = []
    for name, top in (report.get("top") or {}).items():
        title = TOP_TITLES.get(name, f"Top {name}")
        compared = bool(top.get("compared"))
        rows = [
            {
                "value": _label(r["value"]),
                SOURCES: r.get("expected"),
                UMAMI: r.get("found"),
                "differs": r.get("differs"),
            }
            for r in top.get("rows") or []
        ]
        if compared:
            out.append(top_block(f"top-{name}", title, str(top.get("counted")), rows, [SOURCES, UMAMI]))
        else:
            note = f"Not compared: {top.get('unpredictable')}. Umami's figures only."
            rows = [{"value": r["value"], UMAMI: r[UMAMI]} for r in rows]
            out.append(top_block(f"top-{name}", title, str(top.get("counted")), rows, [UMAMI], note))
    out.append(_events_block(report.get("days") or []))
    return "".join(out)


def _label(value: Any) -> str:
    if value is None:
        return "(none)"
    return "(empty)" if value == "" else str(value)


def _events_block(days: list[dict[str, Any]]) -> str:
    """Custom events per name over the range, summed from the per-day figures."""
    expected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    differing: set[str] = set()
    for d in days:
        for name, counts in (d.get("events") or {}).items():
            expected[name] += int(counts.get("expected") or 0)
            found[name] += int(counts.get("found") or 0)
        differing.update(d.get("events_differ") or [])
    names = sorted(set(expected) | set(found), key=lambda n: (-max(expected[n], found[n]), n))
    rows = [{"value": n, SOURCES: expected[n], UMAMI: found[n], "differs": n in differing} for n in names]
    return top_block(
        "top-events",
        "Custom events by name",
        "events per name over the range; a name differs when it differs on any day",
        rows,
        [SOURCES, UMAMI],
    )
