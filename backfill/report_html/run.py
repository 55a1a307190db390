"""The page of a run: ``validate``, ``import`` (dry or not) or a ``report merge`` of shards."""

from __future__ import annotations

from typing import Any

from .page import Page, cell, esc, num, raw, table
from .sections import (
    METRIC_TEXT,
    METRICS,
    SCROLL_ROWS,
    by_day,
    compared_days,
    day_figures,
    destination_text,
    differing_days,
    ledger_section,
    notes_list,
    run_facts,
    timings_text,
    top_block,
)

#: name in the report's stats -> (heading, what is counted)
TOP_LISTS = {
    "top_paths": ("Top paths", "pageviews per URL path"),
    "top_referrers": ("Top referrers", "pageviews per referrer domain, the site's own left out"),
    "top_countries": ("Top countries", "rows per mapped country"),
    "top_browsers": ("Top browsers", "rows per mapped browser"),
    "top_os": ("Top operating systems", "rows per mapped OS"),
    "top_devices": ("Top devices", "rows per mapped device"),
    "events_by_name": ("Events by name", "rows per event name; pageviews and identifies in brackets"),
}
TOP_SHOWN = 15
SERIES = "sources"


def accepted_label(report: dict[str, Any]) -> str:
    if report.get("mode") == "dry run":
        return "would send"
    if (report.get("destination") or {}).get("database"):
        return "stored in database"
    return "accepted by Umami"


def run_page(report: dict[str, Any]) -> Page:
    ledger = report.get("ledger") or {}
    mode = str(report.get("mode") or "run")
    dry = mode == "dry run"
    merge = report.get("merge")
    where = (report.get("destination") or {}).get("host") or (report.get("destination") or {}).get("database")
    title = "Dry run" if dry else f"Import into {where}" if where else "Import"
    if merge:
        title += f", merged from {merge.get('shards')} shards"
    stats = report.get("stats") or {}
    adds_up = bool(ledger.get("balances")) and (merge or {}).get("adds_up", True)
    rejected, in_doubt = int(ledger.get("rejected") or 0), int(ledger.get("in_doubt") or 0)
    banner = f"{num(int(ledger.get('read') or 0))} rows read: {num(int(ledger.get('accepted') or 0))} "
    banner += f"{esc(accepted_label(report))}, {num(rejected)} rejected, {num(int(ledger.get('skipped') or 0))} skipped"
    if not dry:
        banner += f", {num(in_doubt)} in doubt"
    banner += ". The ledger adds up." if adds_up else ". THE LEDGER DOES NOT ADD UP."
    if report.get("stopped"):
        banner += f" Stopped early: {esc(report['stopped'])}"
    lead = ""
    if stats.get("first_event"):
        lead = f'<p class="muted">Events from {esc(stats["first_event"])} to {esc(stats["last_event"])}.</p>'
    page = Page(title, lead, banner, adds_up and not report.get("stopped") and not rejected and not in_doubt)
    page.add(
        "ledger",
        "Ledger",
        ledger_section(ledger, accepted_label=accepted_label(report), dry=dry, caption="Where every row read went"),
    )
    page.add("run", "The run", _run_details(report))
    page.add("days", "Per day", _days(report))
    page.add("top", "What the sources hold", _tops(stats))
    return page


def _run_details(report: dict[str, Any]) -> str:
    files = report.get("files") or []
    extra = [
        ("destination", destination_text(report.get("destination"))),
        ("time", timings_text(report.get("elapsed_s"), report.get("timings"))),
        ("files read", esc(", ".join(files[:20]) + (f" and {len(files) - 20:,} more" if len(files) > 20 else ""))),
        ("files not read", esc("; ".join(report.get("skipped_files") or []))),
        ("rejects file", f"<code>{esc(report['rejects_file'])}</code>" if report.get("rejects_file") else ""),
        ("in-doubt file", f"<code>{esc(report['in_doubt_file'])}</code>" if report.get("in_doubt_file") else ""),
        ("payloads written to", f"<code>{esc(report['out_file'])}</code>" if report.get("out_file") else ""),
        ("shard", esc("/".join(map(str, report["shard"]))) if report.get("shard") else ""),
        ("stopped", esc(report.get("stopped"))),
        ("to resume", f"<code>{esc(report['resume_command'])}</code>" if report.get("resume_command") else ""),
    ]
    out = run_facts(report, extra)
    this_run = report.get("this_run")
    if this_run and report.get("mode") != "dry run":
        out += (
            f"<p>This run: {num(int(this_run.get('accepted') or 0))} accepted, "
            f"{num(int(this_run.get('rejected') or 0))} rejected, {num(int(this_run.get('in_doubt') or 0))} in doubt "
            "(the ledger above counts every run of this import).</p>"
        )
    merge = report.get("merge")
    if merge:
        out += _shards_table(merge)
    notes = notes_list(report.get("notes") or [])
    return out + (f"<h3>Notes</h3>{notes}" if notes else "")


def _shards_table(merge: dict[str, Any]) -> str:
    rows = []
    for r in merge.get("reports") or []:
        shard = "/".join(map(str, r["shard"])) if r.get("shard") else "?"
        rows.append(
            [raw(f"<code>{esc(r.get('file'))}</code>"), cell(shard)]
            + [cell(int(r.get(k) or 0)) for k in ("read", "accepted", "rejected", "skipped", "in_doubt")]
        )
    headers = ["report", "shard", "rows read", "accepted", "rejected", "skipped", "in doubt"]
    return table("The shards merged", headers, rows, numeric_headers=[False, False, True, True, True, True, True])


def _days(report: dict[str, Any]) -> str:
    stats = report.get("stats") or {}
    days = stats.get("days") or []
    reported = report.get("reported_days") or []
    if not days and not reported:
        return "" if "days" not in stats else '<p class="muted">No row would be sent: no day to show.</p>'
    estimated = (
        ""
        if stats.get("days_exact", True)
        else (
            " Visitors and visits per day are estimates (about 3% off: more than 2 million distinct "
            "visitor-days were counted); pageviews and events are exact."
        )
    )
    note = (
        f"<p>Days are <strong>{esc(stats.get('days_timezone') or 'UTC')}</strong> days, as Umami stores them. "
        "Umami's dashboard shows days in the viewer's time zone, so events near midnight can fall on the next "
        "or previous day there; <code>backfill verify --timezone ZONE</code> counts the days of any zone. "
        "The figures are of the rows that passed the checks (sent, or that a dry run would send), counted as "
        f"Umami counts them.{esc(estimated)}</p>"
    )
    if reported:
        return note + _reported_days(by_day(reported), by_day(days))
    figures = table(
        f"Per-day figures of the charts above ({len(days):,} days with rows; days not listed hold none)",
        ["day"] + [METRIC_TEXT[m][0] for m in METRICS],
        [
            *([raw(esc(d["day"]), css="rowhead")] + [cell(int(d.get(m) or 0)) for m in METRICS] for d in days),
            [raw("total", css="rowhead")] + [cell(sum(int(d.get(m) or 0) for d in days)) for m in METRICS],
        ],
        numeric_headers=[False, True, True, True, True],
        scroll=len(days) > SCROLL_ROWS,
        table_id="days-table",
    )
    return note + day_figures({SERIES: by_day(days)}) + figures


def _reported_days(reported: dict[str, dict[str, int]], made: dict[str, dict[str, int]]) -> str:
    """An aggregated source: what it reported per day against the events made of it."""
    differs = differing_days(reported, made)
    intro = (
        "<p>This source holds per-day totals, not events: the importer made events whose totals, as Umami "
        "counts them, equal the report's. <em>reported</em> is what the source says; <em>synthesized</em> "
        "is what the events made of it hold after the checks (rows rejected, skipped or outside "
        "<code>--since</code>/<code>--until</code> are not in it). A figure the source does not give is left "
        "out (– in the table).</p>"
    )
    listed, figures = compared_days(
        ("reported", "synthesized"),
        reported,
        made,
        differs,
        "Per-day figures of the charts above, reported against synthesized",
    )
    charts = day_figures({"reported": reported, "synthesized": made}, differs)
    return intro + listed + charts + figures


def _tops(stats: dict[str, Any]) -> str:
    out = []
    for key, (title, counted) in TOP_LISTS.items():
        values = stats.get(key)
        if values is None:
            continue
        rows = [{"value": v, SERIES: int(n)} for v, n in list(values.items())[:TOP_SHOWN]]
        note = ""
        if not rows and key in ("top_countries", "top_browsers", "top_os", "top_devices"):
            note = "Not mapped: Umami derives it itself (from the user agent, screen size or the request's location)."
        if len(values) > TOP_SHOWN:
            note = f"The {TOP_SHOWN} largest of {len(values):,} listed in the report."
        out.append(top_block(f"top-{key}", title, counted, rows, [SERIES], note))
    return "".join(out)
