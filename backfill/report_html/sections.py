"""Sections every report kind shares: the ledger, the run, per-day charts and top lists.

Each takes the report's JSON dict (what ``--report`` writes) and nothing else, so
the page shows exactly the figures the terminal printed and the JSON holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from . import charts
from .page import Cell, cell, differs_mark, esc, facts, figure, num, raw, signed, table

METRICS = ("pageviews", "visitors", "visits", "events")
METRIC_TEXT = {
    "pageviews": ("Pageviews", "events without a name"),
    "visitors": ("Visitors", "distinct visitors among the day's pageviews"),
    "visits": ("Visits", "distinct visits among the day's pageviews"),
    "events": ("Custom events", "events with a name"),
}
#: Long tables scroll inside a box past this many rows (they stay whole in the page).
SCROLL_ROWS = 40

# ----------------------------------------------------------------------------- the ledger

_FIX_VERB = re.compile(
    r"^(?:e\.g\.\s*)?(set|map|add|shorten|fix|use|pass|give|remove|correct|re-download|check|run|write|"
    r"declare|rename|convert|name|choose|drop|keep|send|split|move|save|export|try)\b",
    re.IGNORECASE,
)
_TICKS = re.compile(r"`[^`]*`")


def reason_fix(reason: str) -> str | None:
    """The fix a reject reason names: its clause (after ``;`` or ``:``, or in its last
    brackets) that starts with what to do ("set ...", "map ...", "add ..."); None when
    the reason names no fix (the reason itself is always shown whole)."""
    hidden: list[str] = []

    def keep(match: re.Match[str]) -> str:
        hidden.append(match.group())
        return f"\x00{len(hidden) - 1}\x00"

    text = _TICKS.sub(keep, reason)
    clauses = []
    bracket = re.search(r"\(([^()]*)\)\s*$", text)
    if bracket:
        clauses.append(bracket.group(1))
        text = text[: bracket.start()]
    clauses += [c.strip() for c in re.split(r";\s+|:\s+", text)[1:]]
    fixes = [c for c in clauses if _FIX_VERB.match(c)]
    if not fixes:
        return None
    fix = "; ".join(fixes)
    return re.sub(r"\x00(\d+)\x00", lambda m: hidden[int(m.group(1))], fix)


def _with_code(text: str) -> str:
    """Escaped text with `backticked` parts as code."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(f"<code>{esc(p[1:-1])}</code>" if p.startswith("`") and p.endswith("`") else esc(p) for p in parts)


def ledger_section(ledger: dict[str, Any], *, accepted_label: str, dry: bool, caption: str) -> str:
    """read = accepted + rejected + skipped + in doubt (+ not sent yet), then each reason."""
    read = int(ledger.get("read") or 0)
    buckets = [
        (accepted_label, int(ledger.get("accepted") or 0)),
        ("rejected", int(ledger.get("rejected") or 0)),
        ("skipped by a filter", int(ledger.get("skipped") or 0)),
    ]
    if not dry:
        buckets.append(("in doubt", int(ledger.get("in_doubt") or 0)))
        if ledger.get("not_sent_yet"):
            buckets.append(("not sent yet", int(ledger["not_sent_yet"])))
    total = sum(n for _, n in buckets)
    adds_up = total == read
    equation = f"{num(read)} rows read = " + " + ".join(f"{num(n)} {esc(label)}" for label, n in buckets)
    verdict = (
        '<span class="good">adds up</span>'
        if adds_up
        else f'<span class="bad">DOES NOT ADD UP: the buckets hold {num(total)}</span>'
    )
    rows = [[raw(esc(label), css="rowhead"), cell(n), cell(f"{n / read:.1%}" if read else "")] for label, n in buckets]
    rows.append([raw("rows read", css="rowhead"), cell(read), cell("100%" if read else "")])
    out = [f'<p class="sum">{equation}: {verdict}.</p>']
    body = table(caption, ["bucket", "rows", "share"], rows, numeric_headers=[False, True, True], css="ledger")
    out.append(_total_last(body))
    out.append(_rejects_table(ledger))
    skipped = ledger.get("skipped_by_filter") or {}
    if skipped:
        rows = [[cell(name), cell(int(n))] for name, n in skipped.items()]
        out.append(
            table(
                "Rows skipped, by filter", ["filter", "rows"], rows, numeric_headers=[False, True], table_id="skipped"
            )
        )
    return "".join(out)


def _total_last(markup: str) -> str:
    """Mark the last row of the ledger table (rows read) as its total."""
    head, sep, tail = markup.rpartition("<tr>")
    return head + '<tr class="total">' + tail if sep else markup


def _rejects_table(ledger: dict[str, Any]) -> str:
    reasons = ledger.get("rejected_by_reason") or {}
    if not reasons:
        return ""
    examples = ledger.get("reject_examples") or {}
    rows = []
    for reason, count in reasons.items():
        fix = reason_fix(reason)
        shown = ", ".join(examples.get(reason, [])[:5])
        rows.append(
            [
                cell(int(count)),
                raw(_with_code(reason)),
                raw(_with_code(fix) if fix else '<span class="muted">(see the reason)</span>'),
                raw(f'<span class="mono">{esc(shown)}</span>'),
            ]
        )
    return table(
        "Rows rejected, by reason (every row is in the rejects file with its values)",
        ["rows", "reason", "fix", "first rows (file:line)"],
        rows,
        numeric_headers=[True],
        table_id="rejects",
    )


# ----------------------------------------------------------------------------- the run


def run_facts(report: dict[str, Any], extra: Sequence[tuple[str, str]] = ()) -> str:
    """Command, versions, destination, times: what was run, where to, how long."""
    run = report.get("run") or {}
    versions = run.get("versions") or {}
    items: list[tuple[str, str]] = [
        ("command", f"<code>{esc(run['command'])}</code>" if run.get("command") else ""),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items()))),
        *extra,
        ("started", esc(run.get("started_at"))),
        ("finished", esc(run.get("finished_at"))),
    ]
    return facts(items)


def destination_text(destination: dict[str, Any] | None) -> str:
    """Host or database and website; never credentials (the sinks keep none in it)."""
    if not destination:
        return "none: a dry run sends nothing"
    parts = []
    if destination.get("host"):
        parts.append(f"Umami at <code>{esc(destination['host'])}</code>")
    if destination.get("database"):
        parts.append(f"Umami's database <code>{esc(destination['database'])}</code>")
    if destination.get("website"):
        parts.append(f"website <code>{esc(destination['website'])}</code>")
    return ", ".join(parts)


def timings_text(elapsed: float | None, timings: dict[str, Any] | None) -> str:
    parts = [f"{elapsed:,.1f} s in all"] if elapsed else []
    names = {"prepare_s": "reading and checking", "send_s": "sending", "write_s": "writing payloads"}
    for key, label in names.items():
        value = (timings or {}).get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:,.1f} s")
    if (timings or {}).get("requests"):
        parts.append(f"{int(timings['requests']):,} requests")
    return esc("; ".join(parts))


def notes_list(notes: Sequence[str]) -> str:
    items = "".join(f"<li>{_with_code(str(n))}</li>" for n in notes if n)
    return f"<ul>{items}</ul>" if items else ""


# ----------------------------------------------------------------------------- per day


def by_day(days: list[dict[str, Any]], key: str | None = None) -> dict[str, dict[str, int]]:
    """{day: {metric: figure}} from a report's list of days (``key``: ``expected`` or
    ``found`` in a verify report; None: the figures are in the day itself)."""
    return {d["day"]: {m: int(v) for m, v in (d[key] if key else d).items() if m in METRICS} for d in days}


def day_figures(series: dict[str, dict[str, dict[str, int]]], differs: dict[str, list[str]] | None = None) -> str:
    """A chart per metric over every day of the range (a day without rows counts 0).

    ``series``: label -> {day: {metric: figure}}; a series that gives no figure of a
    metric (a report without a sessions column) is left out of that chart.
    ``differs``: metric -> days where that metric differs (marked in red).
    """
    known = sorted({day for figures in series.values() for day in figures})
    if not known:
        return '<p class="muted">No day holds a row.</p>'
    every = charts.every_day(known[0], known[-1])
    out = []
    for metric in METRICS:
        title, counted = METRIC_TEXT[metric]
        data = {
            label: {day: f[metric] for day, f in figures.items() if metric in f}
            for label, figures in series.items()
            if any(metric in f for f in figures.values())
        }
        if not data:
            continue
        marked = (differs or {}).get(metric, [])
        spec = charts.day_chart(every, data, marked)
        totals = "; ".join(f"{label} {sum(v.values()):,}" for label, v in data.items())
        label = f"{title} per day, {every[0]} to {every[-1]}: {totals}"
        if marked:
            label += f"; {len(marked)} day(s) differ"
        caption = f"<strong>{esc(title)}</strong> per day ({esc(counted)}). Totals: {esc(totals)}."
        if differs is not None:
            caption += (
                f' <span class="key bad"></span> {len(marked):,} day(s) differ.' if marked else " No day differs."
            )
        caption += " Figures in the table below."
        out.append(figure(charts.to_svg(spec, label), caption, figure_id=f"chart-{metric}"))
    return "".join(out)


def differing_days(left: dict[str, dict[str, int]], right: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """metric -> days where both series give the figure and it differs."""
    out: dict[str, list[str]] = {}
    for day in sorted(set(left) | set(right)):
        a, b = left.get(day, {}), right.get(day, {})
        for metric in METRICS:
            if metric in a and a[metric] != b.get(metric, 0):
                out.setdefault(metric, []).append(day)
    return out


def compared_days(
    labels: tuple[str, str],
    left: dict[str, dict[str, int]],
    right: dict[str, dict[str, int]],
    differs: dict[str, list[str]],
    caption: str,
) -> tuple[str, str]:
    """(the list of differing days, linked; the table of every day, the two series side by
    side per metric, differing rows marked ≠ and the difference in brackets). ``–`` where
    ``left`` gives no figure."""
    bad = sorted({day for days in differs.values() for day in days})
    if bad:
        links = ", ".join(f'<a href="#day-{esc(d)}">{esc(d)}</a>' for d in bad[:60])
        more = f" and {len(bad) - 60:,} more" if len(bad) > 60 else ""
        listed = f'<p><span class="bad">{len(bad):,} day(s) differ:</span> {links}{more}.</p>'
    else:
        listed = "<p>No day differs.</p>"
    headers = ["day", '<span class="sr">differs</span>']
    groups: list[tuple[str, int]] = [("", 1), ("", 1)]
    for m in METRICS:
        name = METRIC_TEXT[m][0]
        headers += [f'<span class="sr">{name}: </span>{esc(label)}' for label in labels]
        groups.append((name, 2))
    rows: list[list[Cell]] = []
    days = sorted(set(left) | set(right))
    for day in days:
        line = [raw(f'<span id="day-{esc(day)}">{esc(day)}</span>', css="rowhead"), differs_mark(day in bad)]
        for m in METRICS:
            a, b = left.get(day, {}).get(m), right.get(day, {}).get(m, 0)
            shown = f"{b:,}" if a is None or a == b else f"{b:,} ({b - a:+,})"
            wrong = day in differs.get(m, [])
            line += [cell(a if a is not None else "–"), raw(esc(shown), numeric=True, css="bad" if wrong else "")]
        rows.append(line)
    figures = table(
        f"{caption} ({len(days):,} days; differing days marked ≠, the difference in brackets)",
        headers,
        rows,
        differs=[day in bad for day in days],
        numeric_headers=[False, False] + [True] * 8,
        scroll=len(days) > SCROLL_ROWS,
        table_id="days-table",
        groups=groups,
    )
    return listed, figures


def legend(series: Sequence[str]) -> str:
    keys = ["src", "umami"]
    return " ".join(f'<span class="key {k}"></span>{esc(s)}' for k, s in zip(keys, series, strict=False))


# ----------------------------------------------------------------------------- top lists


def top_block(
    ident: str,
    title: str,
    counted: str,
    rows: list[dict[str, Any]],
    series: Sequence[str],
    note: str = "",
) -> str:
    """One top list: a bar chart and, beside it, its table (differing rows marked)."""
    heading = f'<h3 id="{esc(ident)}">{esc(title)}</h3>'
    if note:
        heading += f'<p class="muted">{_with_code(note)}</p>'
    if not rows:
        return heading + '<p class="muted">(none)</p>'
    compared = len(series) > 1
    spec = charts.top_chart(rows, series)
    differing = sum(1 for r in rows if r.get("differs"))
    label = f"{title}: {len(rows)} values" + (f", {differing} differ" if differing else "")
    caption = f"{esc(title)} ({esc(counted)})"
    if compared:
        caption += f": {differing:,} value(s) differ" if differing else ": every value agrees"
    chart = figure(charts.to_svg(spec, label), caption + ".")
    headers = ["value", *series] + (["difference", '<span class="sr">differs</span>'] if compared else [])
    body: list[list[Cell]] = []
    for r in rows:
        line = [raw(esc(r["value"]), css="rowhead")]
        line += [cell(r.get(s)) if r.get(s) is not None else cell("–") for s in series]
        if compared:
            a, b = r.get(series[0]), r.get(series[1])
            delta = signed(b - a) if isinstance(a, int) and isinstance(b, int) else ""
            line += [raw(esc(delta), numeric=True, css="bad" if r.get("differs") else ""), differs_mark(r["differs"])]
        body.append(line)
    numeric = [False, *([True] * len(series)), True, False]
    figures = table(
        f"{esc(title)}: the figures of the chart",
        headers,
        body,
        differs=[bool(r.get("differs")) for r in rows] if compared else None,
        numeric_headers=numeric,
    )
    return heading + f'<div class="pair">{chart}<div>{figures}</div></div>'
