"""What a run found and did: statistics of the sendable rows and the printed summary."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .daily import DailyFigures, hll_estimate, hll_rho
from .ledger import Ledger
from .schema import COL_TS, COL_VISITOR

TOP_KEEP = 1_000  # distinct paths kept between chunks (a bounded heavy-hitters list)
TOP_SHOW = 10
EXACT_VISITORS_MAX = 2_000_000  # distinct visitors counted exactly (16 MB); beyond, estimated
HLL_BITS = 14  # 16,384 registers: about 0.8% standard error


class VisitorCounter:
    """Distinct visitors: exact up to EXACT_VISITORS_MAX, then a HyperLogLog estimate,
    so memory stays flat however many visitors years of data hold."""

    def __init__(self) -> None:
        self.exact: pl.Series | None = pl.Series("h", [], dtype=pl.UInt64)
        self.registers = [0] * (1 << HLL_BITS)

    def update(self, visitors: pl.Series) -> None:
        hashes = visitors.hash(seed=7).unique()
        if self.exact is None:
            self._update_registers(hashes)
            return
        merged = pl.concat([self.exact, hashes]).unique()
        if merged.len() <= EXACT_VISITORS_MAX:
            self.exact = merged
        else:  # from here on an estimate: the registers start from every hash seen so far
            self._update_registers(merged)
            self.exact = None

    def _update_registers(self, hashes: pl.Series) -> None:
        idx, rho = hll_rho(pl.col("h"), HLL_BITS)
        best = pl.DataFrame({"h": hashes}).select(idx, rho).group_by("idx").agg(pl.col("rho").max())
        for i, r in best.iter_rows():
            if r > self.registers[i]:
                self.registers[i] = r

    @property
    def exact_count(self) -> bool:
        return self.exact is not None

    def count(self) -> int:
        if self.exact is not None:
            return self.exact.len()
        return hll_estimate([r for r in self.registers if r], len(self.registers), self.registers.count(0))


@dataclass
class Stats:
    """Facts about the rows that will be (or were) sent, gathered chunk by chunk."""

    first_ts: int | None = None
    last_ts: int | None = None
    events_by_name: Counter[str] = field(default_factory=Counter)
    top_paths: Counter[str] = field(default_factory=Counter)  # pageviews per URL path
    top_countries: Counter[str] = field(default_factory=Counter)  # rows per country
    top_referrers: Counter[str] = field(default_factory=Counter)  # pageviews per referrer domain
    top_browsers: Counter[str] = field(default_factory=Counter)  # rows per mapped browser
    top_os: Counter[str] = field(default_factory=Counter)  # rows per mapped OS
    top_devices: Counter[str] = field(default_factory=Counter)  # rows per mapped device
    visitors: VisitorCounter = field(default_factory=VisitorCounter)
    visitors_count: int | None = None  # when loaded from a checkpoint
    visitors_exact: bool | None = None  # ... and whether that count was exact (None: not known)
    daily: DailyFigures = field(default_factory=DailyFigures)

    def update(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        lo, hi = frame[COL_TS].min(), frame[COL_TS].max()
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)  # type: ignore[type-var]
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)  # type: ignore[type-var]
        self.visitors.update(frame[COL_VISITOR])
        self.daily.update(frame)
        _tally(self.events_by_name, _event_labels(frame))
        if "country" in frame.columns:
            _tally(self.top_countries, frame["country"].fill_null("(unknown)"))
        for column, counter in (("browser", self.top_browsers), ("os", self.top_os), ("device", self.top_devices)):
            if column in frame.columns:
                _tally(counter, frame[column].drop_nulls())
        if "url" not in frame.columns:
            return
        pageviews = pl.col("type") == "event"
        if "name" in frame.columns:
            pageviews = pageviews & pl.col("name").is_null()
        views = frame.filter(pageviews)
        _tally(self.top_paths, views.select(_path(pl.col("url")))["url"].drop_nulls())
        if "referrer" in frame.columns:
            self._add_referrers(views)

    def _add_referrers(self, views: pl.DataFrame) -> None:
        """Pageviews per referrer domain, the page's own domain left out; the domains are
        parsed once per distinct (referrer, page host), not per row."""
        site = "hostname" if "hostname" in views.columns else "url"
        pairs = views.filter(pl.col("referrer").is_not_null()).group_by("referrer", site).len()
        ref, own = _domain(pl.col("referrer")), _domain(pl.col(site)).fill_null("")
        domains = pairs.select(pl.when(ref != own).then(ref).alias("referrer"), "len").drop_nulls("referrer")
        sums = domains.group_by("referrer").agg(pl.col("len").sum())
        self.top_referrers.update(dict(sums.iter_rows()))
        _trim(self.top_referrers)

    @property
    def distinct_visitors(self) -> int:
        if self.visitors_count is not None:
            return self.visitors_count
        return self.visitors.count()

    @property
    def distinct_visitors_exact(self) -> bool | None:
        """True for an exact count, False for a HyperLogLog estimate, None when not known."""
        if self.visitors_count is not None:
            return self.visitors_exact
        return self.visitors.exact_count

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_event": _iso(self.first_ts),
            "last_event": _iso(self.last_ts),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "distinct_visitors": self.distinct_visitors,
            "distinct_visitors_exact": self.distinct_visitors_exact,
            "events_by_name": dict(self.events_by_name.most_common()),
            "top_paths": dict(self.top_paths.most_common(TOP_SHOW * 5)),
            "top_countries": dict(self.top_countries.most_common(TOP_SHOW * 5)),
            "top_referrers": dict(self.top_referrers.most_common(TOP_SHOW * 5)),
            "top_browsers": dict(self.top_browsers.most_common(TOP_SHOW * 5)),
            "top_os": dict(self.top_os.most_common(TOP_SHOW * 5)),
            "top_devices": dict(self.top_devices.most_common(TOP_SHOW * 5)),
            "days_timezone": "UTC",
            "days_exact": self.daily.exact,
            "days": self.daily.rows(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(
            first_ts=data.get("first_ts"),
            last_ts=data.get("last_ts"),
            events_by_name=Counter(data.get("events_by_name", {})),
            top_paths=Counter(data.get("top_paths", {})),
            top_countries=Counter(data.get("top_countries", {})),
            top_referrers=Counter(data.get("top_referrers", {})),
            top_browsers=Counter(data.get("top_browsers", {})),
            top_os=Counter(data.get("top_os", {})),
            top_devices=Counter(data.get("top_devices", {})),
            visitors_count=data.get("distinct_visitors"),
            visitors_exact=data.get("distinct_visitors_exact"),
            daily=DailyFigures.loaded(data.get("days"), data.get("days_exact")),
        )


def _tally(counter: Counter[str], values: pl.Series) -> None:
    """Add a chunk's value counts; past 2 x TOP_KEEP values keep the TOP_KEEP largest
    (a bounded heavy-hitters list: the top of a long tail is approximate)."""
    if values.len() == 0:
        return
    counts = values.value_counts()
    counter.update(dict(zip(counts[values.name].to_list(), counts["count"].to_list(), strict=True)))
    _trim(counter)


def _trim(counter: Counter[str]) -> None:
    if len(counter) > TOP_KEEP * 2:
        kept = counter.most_common(TOP_KEEP)
        counter.clear()
        counter.update(dict(kept))


_SCHEME_HOST = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*"


def _path(url: pl.Expr) -> pl.Expr:
    """The path of a URL (scheme, host, query and fragment dropped)."""
    return url.str.replace(_SCHEME_HOST, "").str.replace(r"[?#].*$", "")


def _domain(value: pl.Expr) -> pl.Expr:
    """The host of a URL or a bare hostname, lower case, without a leading ``www.``."""
    host = value.str.extract(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?([^/?#:@]+)", 1).str.to_lowercase()
    return host.str.replace(r"^www\.", "")


def _event_labels(frame: pl.DataFrame) -> pl.Series:
    name = pl.col("name") if "name" in frame.columns else pl.lit(None, dtype=pl.String)
    label = (
        pl.when(pl.col("type") == "identify")
        .then(pl.lit("(identify)"))
        .when(name.is_null())
        .then(pl.lit("(pageview)"))
        .otherwise(name)
    )
    return frame.select(label.alias("label"))["label"]


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Summary:
    """Everything the CLI prints at the end and ``--report`` writes as JSON."""

    mode: str  # "dry run" | "import"
    ledger: Ledger  # cumulative over every run of this import
    stats: Stats
    this_run: Ledger | None = None
    pending: int = 0  # sendable rows not sent yet (an interrupted run)
    accepted_label: str = "accepted by Umami"  # "stored in database" for the database sink
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    rejects_path: str | None = None
    in_doubt_path: str | None = None
    out_path: str | None = None
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early, if it did
    resume_command: str | None = None
    elapsed_s: float = 0.0
    #: Phase durations in seconds: prepare_s, send_s (import), write_s (dry run with --out),
    #: and the checkpoint saves made while sending (checkpoint_saves, checkpoint_save_s).
    timings: dict[str, float] = field(default_factory=dict)
    shard: tuple[int, int] | None = None  # (K, N) of a --shard K/N run
    title: str | None = None  # replaces "== <mode> summary ==" (a merged report)
    #: Where the rows went, without credentials (the sink's ``destination()``); None in a dry run.
    destination: dict[str, Any] | None = None
    #: Aggregated sources: what they reported per day, before events were made of it.
    reported_days: list[dict[str, Any]] = field(default_factory=list)

    @property
    def balances(self) -> bool:
        return self.ledger.accounted + self.pending == self.ledger.read

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ledger": self.ledger.to_dict() | {"not_sent_yet": self.pending, "balances": self.balances},
            "this_run": self.this_run.to_dict() if self.this_run else None,
            "stats": self.stats.to_dict(),
            "files": self.files,
            "skipped_files": self.skipped_files,
            "rejects_file": self.rejects_path,
            "in_doubt_file": self.in_doubt_path,
            "out_file": self.out_path,
            "notes": self.notes,
            "stopped": self.stopped,
            "resume_command": self.resume_command,
            "elapsed_s": round(self.elapsed_s, 3),
            "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in self.timings.items()},
            "shard": list(self.shard) if self.shard else None,
            "destination": self.destination,
            "reported_days": self.reported_days,
        }

    def render(self) -> str:
        led = self.ledger
        dry = self.mode == "dry run"
        sent_label = "would send" if dry else self.accepted_label
        lines = [self.title or f"== {self.mode} summary =="]
        lines.append(f"rows read            {led.read:>12,}")
        lines.append(f"  {sent_label:<18} {led.accepted:>12,}")
        lines.append(f"  rejected           {led.rejected_total:>12,}")
        for reason, count in led.rejected.most_common():
            examples = ", ".join(led.examples.get(reason, [])[:3])
            lines.append(f"    {count:>10,}  {reason}")
            if examples:
                lines.append(f"                e.g. {examples}")
        lines.append(f"  skipped by filter  {led.skipped_total:>12,}")
        for name, count in led.skipped.most_common():
            lines.append(f"    {count:>10,}  {name}")
            if led.flagged.get(name):
                examples = "; ".join(led.flagged_examples.get(name, [])[:3])
                lines.append(f"                ! {led.flagged[name]:,} of them {led.flag_label}, e.g. {examples}")
        if led.flagged:
            lines.append(
                "                (to import those, remove or narrow that filter in a copy of the mapping; "
                "validate shows this before anything is sent)"
            )
        if not dry:
            lines.append(f"  in doubt           {led.in_doubt:>12,}")
            if self.pending:
                lines.append(f"  not sent yet       {self.pending:>12,}")
        total = led.accounted + self.pending
        check = "adds up"
        if not self.balances:
            check = "DOES NOT ADD UP " + ("(see below)" if self.title else "(please report this)")
        lines.append(f"  (total {total:,} = rows read: {check})")
        if self.this_run is not None and not dry:
            tr = self.this_run
            lines.append(
                f"this run: accepted {tr.accepted:,}, rejected {tr.rejected_total:,}, in doubt {tr.in_doubt:,}"
            )
        st = self.stats
        if st.first_ts is not None:
            lines.append(f"time range           {_iso(st.first_ts)} .. {_iso(st.last_ts)}")
            lines.append(f"distinct visitors    {st.distinct_visitors:>12,}")
            lines.append("events by name       " + _top(st.events_by_name))
            if st.top_paths:
                lines.append("top paths            " + _top(st.top_paths))
            if st.top_countries:
                lines.append("top countries        " + _top(st.top_countries))
        for label, path in (
            ("rejects file", self.rejects_path if led.rejected_total else None),
            ("in-doubt file", self.in_doubt_path if led.in_doubt else None),
            ("payloads written to", self.out_path),
        ):
            if path:
                lines.append(f"{label:<20} {path}")
        if self.skipped_files:
            lines.append("files not read       " + "; ".join(self.skipped_files[:5]))
        lines.extend(self.notes)
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        if self.resume_command:
            lines.append(f"to resume: {self.resume_command}")
        if self.elapsed_s:
            rate = led.read / self.elapsed_s if self.elapsed_s else 0
            lines.append(f"elapsed              {self.elapsed_s:,.1f} s ({rate:,.0f} rows/s)")
        return "\n".join(lines)


def write_reports(report: dict[str, Any], json_path: Path | None, html_path: Path | None) -> None:
    """--report and --html: the same dict as JSON and as a page (one source for both)."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if html_path is not None:
        from .report_html import write_html  # the chart renderer loads only when asked for

        write_html(report, html_path)
        print(f"HTML report: {html_path}", file=sys.stderr, flush=True)


def _top(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common(TOP_SHOW))
