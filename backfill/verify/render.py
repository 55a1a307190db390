"""The text ``backfill verify`` prints."""

from __future__ import annotations

from .result import DAY_METRICS, VerifyResult, display_label


def _fmt_found(expected: int, found: int, differs: bool) -> str:
    if found == expected and not differs:
        return f"{found:,}"
    return f"{found:,} ({found - expected:+,})"


def render(result: VerifyResult, *, color: bool = False, all_days: bool = False, max_days: int = 100) -> str:
    """The comparison as text: per-day table, top lists, diagnoses, verdict."""
    red, bold, dim, reset = ("\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("", "", "", "")
    lines = [
        f"== verify: website {result.website} on {result.host} ==",
        f"days in {result.timezone}; visits: {result.visits_mode}; tolerance: {result.tolerance.describe()}; "
        f"{result.expected_rows:,} sendable rows ({result.first_day} .. {result.last_day})",
        "",
    ]
    headers = ("pageviews", "visitors", "visits", "custom events")
    rows = result.days
    shown = rows if all_days or len(rows) <= max_days else [r for r in rows if r.differs or r.events_differ]
    cells: list[tuple[str, list[str], bool]] = []
    for r in shown:
        values = []
        for metric in DAY_METRICS:
            values += [f"{r.expected[metric]:,}", _fmt_found(r.expected[metric], r.found[metric], metric in r.differs)]
        cells.append((r.day.isoformat(), values, bool(r.differs or r.events_differ)))
    widths = [max([len("expected")] + [len(c[1][i]) for c in cells]) for i in range(8)]
    group = [widths[2 * i] + widths[2 * i + 1] + 2 for i in range(4)]
    lines.append("  " + " " * 10 + "".join(f"  {h:^{g}}" for h, g in zip(headers, group, strict=True)))
    lines.append(
        "  " + " " * 10 + "".join(f"  {'expected':>{widths[2 * i]}}  {'found':>{widths[2 * i + 1]}}" for i in range(4))
    )
    for day, values, differs in cells:
        text = "".join(
            f"  {values[2 * i]:>{widths[2 * i]}}  {values[2 * i + 1]:>{widths[2 * i + 1]}}" for i in range(4)
        )
        line = f"{'!' if differs else ' '} {day}{text}"
        lines.append(f"{red}{line}{reset}" if differs and color else line)
    if len(shown) < len(rows):
        lines.append(f"  ({len(rows) - len(shown):,} matching days not shown; --verbose or --report for all)")
    total_e = {m: sum(r.expected[m] for r in rows) for m in ("pageviews", "events")}
    total_f = {m: sum(r.found[m] for r in rows) for m in ("pageviews", "events")}
    lines.append(
        f"  total pageviews expected {total_e['pageviews']:,}, found {total_f['pageviews']:,}; "
        f"custom events expected {total_e['events']:,}, found {total_f['events']:,}"
    )
    event_diffs = [(r, name) for r in rows for name in r.events_differ]
    if event_diffs:
        lines.append("")
        lines.append("custom events by name that differ:")
        for r, name in event_diffs[:30]:
            e, f = r.events_expected.get(name, 0), r.events_found.get(name, 0)
            lines.append(f"! {r.day}  {name}: expected {e:,}, found {_fmt_found(e, f, True)}")
        if len(event_diffs) > 30:
            lines.append(f"  ... and {len(event_diffs) - 30:,} more (see --report)")
    for top in result.top:
        lines.append("")
        head = f"top {top.name} ({top.counted}, whole range)"
        if top.unpredictable:
            lines.append(f"{head}: not compared, {top.unpredictable}")
            if top.rows:
                lines.append("  found: " + ", ".join(f"{display_label(r.value)} {r.found:,}" for r in top.rows))
            continue
        lines.append(head + ":")
        if not top.rows:
            lines.append("  (none expected, none found)")
            continue
        width = min(60, max(len(display_label(r.value)) for r in top.rows))
        for r in top.rows:
            label = display_label(r.value)
            label = label if len(label) <= width else label[: width - 3] + "..."
            found = _fmt_found(r.expected, r.found, r.differs)
            line = f"{'!' if r.differs else ' '} {label:<{width}}  {r.expected:>8,}  {found:>12}"
            lines.append(f"{red}{line}{reset}" if r.differs and color else line)
    if result.revenue:
        lines.append("")
        lines.append(
            "revenue expected (not compared: Umami's revenue report endpoint differs between releases): "
            + ", ".join(f"{cur} {amount:,.2f}" for cur, amount in result.revenue.items())
        )
    for note in result.notes:
        lines.append("")
        lines.append(f"{dim}note: {note}{reset}")
    for d in result.diagnoses:
        lines.append("")
        lines.append(f"{bold}diagnosis: {d.title}{reset}")
        lines.append(d.text)
    lines.append("")
    if result.matches:
        lines.append(
            f"{bold}verdict: MATCH{reset}: {len(rows):,} days x {len(DAY_METRICS)} figures and "
            f"{sum(1 for t in result.top if not t.unpredictable)} top lists agree "
            f"(tolerance {result.tolerance.describe()}; {result.requests:,} requests)"
        )
    else:
        listed = "; ".join(d.text() for d in result.differences[:5])
        more = f"; ... {len(result.differences) - 5:,} more" if len(result.differences) > 5 else ""
        lines.append(
            f"{bold}{red}verdict: DIFFERENT{reset}: {len(result.differences):,} differences beyond tolerance "
            f"{result.tolerance.describe()}: {listed}{more}"
        )
    return "\n".join(lines)
