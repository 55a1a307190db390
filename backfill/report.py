"""What a run found and did: statistics of the sendable rows and the printed summary."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

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
        low_bits = 64 - HLL_BITS
        frame = pl.DataFrame({"h": hashes}).select(
            (pl.col("h") // (1 << low_bits)).alias("idx"),
            (pl.col("h") % (1 << low_bits)).bitwise_leading_zeros().cast(pl.Int64).alias("lz"),
        )
        # Leading zeros of the low bits, counted from their top: rho = position of the first 1.
        best = frame.group_by("idx").agg((pl.col("lz").max() - HLL_BITS + 1).alias("rho"))
        for idx, rho in best.iter_rows():
            if rho > self.registers[idx]:
                self.registers[idx] = rho

    @property
    def exact_count(self) -> bool:
        return self.exact is not None

    def count(self) -> int:
        if self.exact is not None:
            return self.exact.len()
        m = len(self.registers)
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / sum(2.0**-r for r in self.registers)
        zeros = self.registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return round(estimate)


@dataclass
class Stats:
    """Facts about the rows that will be (or were) sent, gathered chunk by chunk."""

    first_ts: int | None = None
    last_ts: int | None = None
    events_by_name: Counter[str] = field(default_factory=Counter)
    top_paths: Counter[str] = field(default_factory=Counter)
    top_countries: Counter[str] = field(default_factory=Counter)
    visitors: VisitorCounter = field(default_factory=VisitorCounter)
    visitors_count: int | None = None  # when loaded from a checkpoint
    visitors_exact: bool | None = None  # ... and whether that count was exact (None: not known)

    def update(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        lo, hi = frame[COL_TS].min(), frame[COL_TS].max()
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)  # type: ignore[type-var]
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)  # type: ignore[type-var]
        self.visitors.update(frame[COL_VISITOR])
        names = _event_labels(frame).value_counts()
        self.events_by_name.update(dict(zip(names["label"].to_list(), names["count"].to_list(), strict=True)))
        if "country" in frame.columns:
            countries = frame["country"].fill_null("(unknown)").value_counts()
            self.top_countries.update(
                dict(zip(countries["country"].to_list(), countries["count"].to_list(), strict=True))
            )
        if "url" in frame.columns:
            pageviews = pl.col("type") == "event"
            if "name" in frame.columns:
                pageviews = pageviews & pl.col("name").is_null()
            paths = (
                frame.filter(pageviews)
                .select(
                    pl.col("url")
                    .str.replace(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*", "")
                    .str.replace(r"[?#].*$", "")
                    .alias("path")
                )
                .drop_nulls()["path"]
                .value_counts()
            )
            self.top_paths.update(dict(zip(paths["path"].to_list(), paths["count"].to_list(), strict=True)))
            if len(self.top_paths) > TOP_KEEP * 2:
                self.top_paths = Counter(dict(self.top_paths.most_common(TOP_KEEP)))

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(
            first_ts=data.get("first_ts"),
            last_ts=data.get("last_ts"),
            events_by_name=Counter(data.get("events_by_name", {})),
            top_paths=Counter(data.get("top_paths", {})),
            top_countries=Counter(data.get("top_countries", {})),
            visitors_count=data.get("distinct_visitors"),
            visitors_exact=data.get("distinct_visitors_exact"),
        )


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


def _top(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counter.most_common(TOP_SHOW))
