"""``backfill report merge``: one ledger from the reports of N shard processes.

An import split with ``--shard K/N`` runs N processes over the SAME inputs;
each reads every row and counts the rows of the other shards as skipped with
the reason ``not in shard K/N``. Merging their ``--report`` files therefore:

* takes rows read once: every shard must have read the same number of rows;
* sums accepted, rejected (by reason), in doubt, not sent yet and the
  skips of the user's own filters;
* removes the ``not in shard`` skips, after checking them: each row lies
  outside exactly N-1 shards, so they must total (N-1) x rows read. That is
  exactly the condition for the merged buckets to add up to rows read;
* checks the reports are shards 1..N, each exactly once, when they say which
  shard they were (the ``shard`` field, else the K/N of their skip reason).

Statistics: first/last event are exact (min/max); events by name are exact
(every report lists all names); distinct visitors sum exactly, since a
visitor's events are all in one shard (a shard that estimated its count, past
2 million visitors, makes the sum an estimate too), and so do the per-day
figures; top paths, referrers, countries, browsers, OS and devices are summed
from each report's top 50 and are approximate.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .daily import DailyFigures
from .errors import ConfigError
from .ledger import MAX_EXAMPLES, Ledger
from .report import Stats, Summary, write_reports

#: The statistics summed over the shards (events by name exactly, the top lists from each top 50).
TOP_LISTS = ("events_by_name", "top_paths", "top_countries", "top_referrers", "top_browsers", "top_os", "top_devices")

#: Every skip reason a shard gives to the rows of the other shards starts with this.
SHARD_SKIP_PREFIX = "not in shard "
_SHARD_REASON = re.compile(r"^not in shard (\d+)/(\d+)$")

EXIT_OK, EXIT_REJECTED, EXIT_CONFIG, EXIT_STOPPED = 0, 1, 2, 3


@dataclass
class ShardReport:
    """One ``--report`` file, read defensively."""

    path: str
    data: dict[str, Any]
    ledger: Ledger  # without the "not in shard" skips
    shard_skips: int
    pending: int
    shard: tuple[int, int] | None

    @property
    def label(self) -> str:
        return f"{self.path} (shard {self.shard[0]}/{self.shard[1]})" if self.shard else self.path


@dataclass
class Merged:
    summary: Summary
    shards: int
    shard_skips: int
    expected_shard_skips: int
    reports: list[ShardReport] = field(default_factory=list)

    @property
    def adds_up(self) -> bool:
        return self.summary.balances and self.shard_skips == self.expected_shard_skips

    def to_dict(self) -> dict[str, Any]:
        return self.summary.to_dict() | {
            "merge": {
                "shards": self.shards,
                "reports": [
                    {
                        "file": r.path,
                        "shard": list(r.shard) if r.shard else None,
                        "read": r.ledger.read,
                        "not_in_shard": r.shard_skips,
                        "accepted": r.ledger.accepted,
                        "rejected": r.ledger.rejected_total,
                        "skipped": r.ledger.skipped_total,
                        "in_doubt": r.ledger.in_doubt,
                        "not_sent_yet": r.pending,
                        "command": (r.data.get("run") or {}).get("command"),
                    }
                    for r in self.reports
                ],
                "not_in_shard_total": self.shard_skips,
                "not_in_shard_expected": self.expected_shard_skips,
                "adds_up": self.adds_up,
                "approximate": [f"stats.{name}" for name in TOP_LISTS if name != "events_by_name"]
                + ([] if self.summary.stats.visitors_exact else ["stats.distinct_visitors"]),
                "timings_note": "durations are the slowest shard's; counts are sums",
            }
        }


def load_report(path: str | Path) -> ShardReport:
    """Read one report; a ConfigError names the file when it is not a backfill report."""
    name = str(path)
    data = _read_json(path)
    ledger_data = data.get("ledger")
    if not isinstance(ledger_data, dict) or not isinstance(ledger_data.get("read"), int):
        raise ConfigError(f"{name}: not a backfill --report file (no ledger with rows read)")
    try:
        ledger = Ledger.from_dict(ledger_data)
        pending = int(ledger_data.get("not_sent_yet") or 0)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{name}: the report's ledger is malformed ({exc})") from exc
    shard_reasons = {k: v for k, v in ledger.skipped.items() if str(k).startswith(SHARD_SKIP_PREFIX)}
    for reason in shard_reasons:
        del ledger.skipped[reason]
    return ShardReport(
        path=name,
        data=data,
        ledger=ledger,
        shard_skips=int(sum(shard_reasons.values())),
        pending=pending,
        shard=_shard_of(data, shard_reasons),
    )


def _shard_of(data: dict[str, Any], shard_reasons: dict[str, int]) -> tuple[int, int] | None:
    """(K, N) from the report's ``shard`` field, else from its ``not in shard K/N`` skip reason."""
    value = data.get("shard")
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    found = {m.groups() for m in (_SHARD_REASON.match(r) for r in shard_reasons) if m}
    if len(found) == 1:
        k, n = found.pop()
        return int(k), int(n)
    return None


def merge_reports(paths: list[str | Path]) -> Merged:
    """Merge shard reports into one summary.

    Raises:
        ConfigError: a report cannot be read, or the reports are not the N shards
            of one import (different rows read, modes, or shards missing/repeated).
    """
    if not paths:
        raise ConfigError("give the report files of the shards to merge")
    reports = [load_report(p) for p in paths]
    problems = _check(reports)
    if problems:
        raise ConfigError("cannot merge these reports: " + "; ".join(problems))
    shards = reports[0].shard[1] if reports[0].shard else len(reports)
    read = reports[0].ledger.read
    total = Ledger(read=read)
    pending = 0
    for r in reports:
        total.accepted += r.ledger.accepted
        total.in_doubt += r.ledger.in_doubt
        total.skipped.update(r.ledger.skipped)
        total.rejected.update(r.ledger.rejected)
        total.merge_flags(r.ledger)
        pending += r.pending
    for reason in total.rejected:  # the first examples in input order, whichever shard had them
        examples = {e for r in reports for e in r.ledger.examples.get(reason, [])}
        total.examples[reason] = sorted(examples, key=_example_key)[:MAX_EXAMPLES]
    mode = str(reports[0].data.get("mode", "import"))
    summary = Summary(
        mode=mode,
        ledger=total,
        stats=_merge_stats(reports),
        pending=pending,
        files=_union(r.data.get("files") for r in reports),
        skipped_files=_union(r.data.get("skipped_files") for r in reports),
        rejects_path=_joined(r.data.get("rejects_file") for r in reports),
        in_doubt_path=_joined(r.data.get("in_doubt_file") for r in reports),
        elapsed_s=max(float(r.data.get("elapsed_s") or 0.0) for r in reports),
        timings=_merge_timings(reports),
        destination=reports[0].data.get("destination"),
        reported_days=list(reports[0].data.get("reported_days") or []),  # every shard reads every day
        title=f"== {mode} summary, merged from {len(reports)} shard report{'s' if len(reports) > 1 else ''} ==",
    )
    merged = Merged(summary, shards, sum(r.shard_skips for r in reports), (shards - 1) * read, reports)
    summary.notes.extend(_notes(merged))
    return merged


def _check(reports: list[ShardReport]) -> list[str]:
    problems: list[str] = []
    modes = Counter(str(r.data.get("mode")) for r in reports)
    if len(modes) > 1:
        problems.append(
            "the reports mix run modes (" + ", ".join(f"{r.path}: {r.data.get('mode')}" for r in reports) + ")"
        )
    reads = Counter(r.ledger.read for r in reports)
    if len(reads) > 1:
        problems.append(
            "the shards read different numbers of rows ("
            + ", ".join(f"{r.path}: {r.ledger.read:,}" for r in reports)
            + "): every shard must read the same inputs with the same --since/--until/--limit"
        )
    unknown = [r.path for r in reports if r.shard is None]
    if unknown and len(unknown) < len(reports):
        problems.append(
            "these reports do not say which shard they ran (no shard field, no 'not in shard' skips): "
            + ", ".join(unknown)
        )
    known = [r for r in reports if r.shard is not None]
    if not known:
        return problems
    counts = Counter(r.shard[1] for r in known if r.shard)
    if len(counts) > 1:
        problems.append("the reports come from different splits (" + ", ".join(r.label for r in known) + ")")
        return problems
    n = next(iter(counts))
    by_k: dict[int, list[str]] = {}
    for r in known:
        assert r.shard is not None
        by_k.setdefault(r.shard[0], []).append(r.path)
    repeated = [f"shard {k}/{n} in {' and '.join(files)}" for k, files in sorted(by_k.items()) if len(files) > 1]
    if repeated:
        problems.append("repeated: " + "; ".join(repeated))
    outside = sorted(k for k in by_k if not 1 <= k <= n)
    if outside:
        problems.append(f"no such shard of {n}: " + ", ".join(str(k) for k in outside))
    missing = [k for k in range(1, n + 1) if k not in by_k]
    if missing:
        problems.append(
            f"missing the report of shard {', '.join(f'{k}/{n}' for k in missing)} (given: "
            + ", ".join(r.label for r in known)
            + ")"
        )
    return problems


def _example_key(example: str) -> tuple[str, int, str]:
    """'events.csv:516' sorts before 'events.csv:894' (file, then row number)."""
    name, _, row = str(example).rpartition(":")
    return (name, int(row), "") if row.isdigit() else (str(example), 0, "")


def _merge_stats(reports: list[ShardReport]) -> Stats:
    parts = [Stats.from_dict(r.data.get("stats") or {}) for r in reports]
    firsts = [s.first_ts for s in parts if s.first_ts is not None]
    lasts = [s.last_ts for s in parts if s.last_ts is not None]
    merged = Stats(first_ts=min(firsts) if firsts else None, last_ts=max(lasts) if lasts else None)
    for s in parts:
        for name in TOP_LISTS:
            getattr(merged, name).update(getattr(s, name))
    merged.daily = DailyFigures.summed([s.daily for s in parts])
    merged.visitors_count = sum(int(s.visitors_count or 0) for s in parts)
    merged.visitors_exact = all(s.visitors_exact is True for s in parts)
    return merged


def _merge_timings(reports: list[ShardReport]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in reports:
        timings = r.data.get("timings")
        if not isinstance(timings, dict):
            continue
        for key, value in timings.items():
            if not isinstance(value, int | float):
                continue
            if key.endswith("_s") and key != "checkpoint_save_s":
                out[key] = max(out.get(key, 0.0), float(value))
            else:
                out[key] = out.get(key, 0) + value
    return out


def _union(lists: Any) -> list[str]:
    seen: dict[str, None] = {}
    for items in lists:
        for item in items or []:
            seen.setdefault(str(item), None)
    return list(seen)


def _joined(values: Any) -> str | None:
    distinct = _union([v] for v in values if v)
    return "; ".join(distinct) or None


def _notes(merged: Merged) -> list[str]:
    summary = merged.summary
    read = summary.ledger.read
    n = merged.shards
    notes = []
    if merged.shard_skips == merged.expected_shard_skips:
        notes.append(
            f"shards: {n}; rows skipped as 'not in shard K/{n}': {merged.shard_skips:,} = ({n} - 1) x "
            f"{read:,} rows read, as expected (each row belongs to exactly one shard); left out above"
        )
    else:
        notes.append(
            f"SHARD CHECK FAILED: rows skipped as 'not in shard K/{n}' total {merged.shard_skips:,}, "
            f"expected ({n} - 1) x {read:,} = {merged.expected_shard_skips:,}: the shards did not split "
            "the rows between them exactly once ("
            + ", ".join(f"{r.label}: {r.shard_skips:,}" for r in merged.reports)
            + ")"
        )
    for r in merged.reports:
        if r.data.get("ledger", {}).get("balances") is False:
            notes.append(f"the ledger of {r.label} itself does not add up")
    visitors = "exact (a visitor's events are all in one shard)"
    if not summary.stats.visitors_exact:
        visitors = "an estimate (a shard estimated its own count, or did not say whether it was exact)"
    notes.append(
        f"merged statistics: distinct visitors = sum over the shards, {visitors}; events by name exact; "
        "per-day figures summed (visitors and visits exactly, as a visitor's events are all in one shard); "
        "top paths, referrers, countries, browsers, OS and devices summed from each shard's top 50: approximate"
    )
    for r in merged.reports:
        stopped = r.data.get("stopped")
        if stopped:
            notes.append(f"{r.label} stopped early: {stopped}")
        resume = r.data.get("resume_command")
        if resume:
            notes.append(f"  to resume it: {resume}")
        elif r.pending:
            notes.append(f"{r.label}: {r.pending:,} rows not sent yet (run its command again)")
    return notes


def exit_status(merged: Merged) -> int:
    """2 when the reports do not add up; else as a run: 3 unfinished, 1 rejects/in doubt, 0 clean."""
    if not merged.adds_up:
        return EXIT_CONFIG
    if merged.summary.pending or any(r.data.get("stopped") for r in merged.reports):
        return EXIT_STOPPED
    ledger = merged.summary.ledger
    if ledger.rejected_total or ledger.in_doubt:
        return EXIT_REJECTED
    return EXIT_OK


def run_merge(paths: list[str | Path], out: Path | None, html: Path | None = None) -> int:
    """The CLI command: print the merged summary, write it as JSON to ``out`` and as a page
    to ``html``, return the exit status."""
    merged = merge_reports(paths)
    print(merged.summary.render(), flush=True)
    write_reports(merged.to_dict(), out, html)
    return exit_status(merged)


def run_html(paths: list[str | Path], out: Path) -> int:
    """``backfill report html``: one saved report rendered as it is; several merged first."""
    from .report_html import report_kind, write_html

    if len(paths) > 1:
        report = merge_reports(paths).to_dict()
    else:
        report = _read_json(paths[0])
        report_kind(report)  # a ConfigError naming what it is not
    write_html(report, out)
    print(f"HTML report: {out}", flush=True)
    return EXIT_OK


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the report ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not a JSON report ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a backfill report (a JSON object is expected)")
    return data
