"""Per-day figures of the sendable rows (pageviews, visitors, visits, custom events), for the
run's report and its HTML charts.

Counted as ``verify`` counts what Umami should show, in UTC days: pageviews are
events without a name; visitors are distinct payload ids among a day's
pageviews; visits are distinct (visitor, source visit) pairs among them with
``--visits exact``, else (visitor, clock hour), Umami's own visit; custom
events are events with a name.

Memory stays flat in the rows: pageviews and events are per-day sums. The
distinct counts keep their (day, 64-bit hash) pairs, exactly, while there are
at most ``EXACT_PAIRS_MAX`` of them (about 24 MB); past that they switch to a
HyperLogLog per day (``HLL_BITS`` registers, about 3% standard error), which
grows with the days only, and the report says the figures are estimates.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import polars as pl

from .aggregate import Fold
from .schema import COL_TS, COL_VISITOR, COL_VKEY

#: Distinct (day, visitor) or (day, visit) pairs kept exactly before estimating.
EXACT_PAIRS_MAX = 2_000_000
#: Registers per day once estimating: 2**10, about 3.2% standard error.
HLL_BITS = 10
DAY_METRICS = ("pageviews", "visitors", "visits", "events")
_EPOCH = dt.date(1970, 1, 1)
_SEED = 0xDA7


def hll_rho(hashes: pl.Expr, bits: int) -> tuple[pl.Expr, pl.Expr]:
    """HyperLogLog's (register index, rank) of 64-bit hashes: the top ``bits`` bits pick the
    register; the rank is the position of the first 1 among the remaining bits."""
    low_bits = 64 - bits
    idx = (hashes // (1 << low_bits)).cast(pl.UInt32).alias("idx")
    rho = ((hashes % (1 << low_bits)).bitwise_leading_zeros().cast(pl.Int64) - bits + 1).cast(pl.UInt8).alias("rho")
    return idx, rho


def hll_estimate(ranks: list[int] | pl.Series, registers: int, zeros: int) -> int:
    """The HyperLogLog estimate from the ranks of the registers set (``zeros`` are unset),
    with the small-range correction (linear counting)."""
    m = registers
    alpha = 0.7213 / (1 + 1.079 / m)
    total = sum(2.0 ** -int(r) for r in ranks) + zeros
    estimate = alpha * m * m / total
    if estimate <= 2.5 * m and zeros:
        estimate = m * math.log(m / zeros)
    return round(estimate)


class DistinctPerDay:
    """Distinct hashes per day: exact (day, hash) pairs up to ``EXACT_PAIRS_MAX``, then a
    HyperLogLog per day seeded with every pair seen so far."""

    def __init__(self, exact_max: int = EXACT_PAIRS_MAX) -> None:
        self._exact_max = exact_max
        self._pairs: Fold | None = Fold(pl.DataFrame.unique, min_rows=min(1 << 20, exact_max))
        self._registers: pl.DataFrame | None = None  # (day, idx, rho) once estimating

    @property
    def exact(self) -> bool:
        return self._pairs is not None

    def add(self, pairs: pl.DataFrame) -> None:
        """``pairs``: columns ``day`` (Int32, days since 1970) and ``h`` (UInt64)."""
        if pairs.height == 0:
            return
        if self._pairs is not None:
            self._pairs.add(pairs)
            if self._pairs.merged_rows > self._exact_max:  # from here on: estimates
                merged = self._pairs.result({"day": pl.Int32, "h": pl.UInt64})
                self._pairs = None
                self._add_registers(merged)
            return
        self._add_registers(pairs)

    def _add_registers(self, pairs: pl.DataFrame) -> None:
        idx, rho = hll_rho(pl.col("h"), HLL_BITS)
        part = pairs.select("day", idx, rho).group_by("day", "idx").agg(pl.col("rho").max())
        if self._registers is not None:
            part = pl.concat([self._registers, part]).group_by("day", "idx").agg(pl.col("rho").max())
        self._registers = part

    def counts(self) -> dict[int, int]:
        if self._pairs is not None:
            merged = self._pairs.result({"day": pl.Int32, "h": pl.UInt64})
            return dict(merged.group_by("day").len().iter_rows())
        if self._registers is None:
            return {}
        m = 1 << HLL_BITS
        out = {}
        for day, ranks in self._registers.group_by("day").agg(pl.col("rho")).iter_rows():
            out[day] = hll_estimate(ranks, m, m - len(ranks))
        return out


class DailyFigures:
    """Pageviews, visitors, visits and custom events per UTC day, folded chunk by chunk;
    or, loaded from a report or checkpoint, the figures as they were written."""

    def __init__(self) -> None:
        self.pageviews: Counter[int] = Counter()
        self.events: Counter[int] = Counter()
        self._visitors = DistinctPerDay()
        self._visits = DistinctPerDay()
        self._loaded: dict[str, dict[str, int]] | None = None
        self._loaded_exact: bool | None = None

    def update(self, frame: pl.DataFrame) -> None:
        """Fold one chunk of sendable rows (``_ts``, ``_visitor``, ``type``, ``name``, ``_vkey``)."""
        if frame.height == 0:
            return
        cols = frame.columns
        is_event = pl.col("type") == "event" if "type" in cols else pl.lit(True)
        named = pl.col("name").is_not_null() if "name" in cols else pl.lit(False)
        visitor = pl.col(COL_VISITOR).hash(seed=_SEED)
        hour = pl.col(COL_TS) // 3600
        visit_part = pl.coalesce(pl.col(COL_VKEY), hour.cast(pl.UInt64)) if COL_VKEY in cols else hour
        rows = frame.select(
            (pl.col(COL_TS) // 86_400).cast(pl.Int32).alias("day"),
            (is_event & ~named).alias("pv"),
            (is_event & named).alias("ev"),
            visitor.alias("vh"),
            pl.struct(visitor, visit_part.alias("v")).hash(seed=_SEED).alias("visit"),
        )
        sums = rows.group_by("day").agg(pl.col("pv").sum(), pl.col("ev").sum())
        for day, pv, ev in sums.iter_rows():
            if pv:
                self.pageviews[day] += pv
            if ev:
                self.events[day] += ev
        views = rows.filter(pl.col("pv"))
        if views.height:
            self._visitors.add(views.select("day", pl.col("vh").alias("h")).unique())
            self._visits.add(views.select("day", pl.col("visit").alias("h")).unique())

    @property
    def exact(self) -> bool:
        """Whether the visitors and visits per day are exact counts (not estimates)."""
        if self._loaded is not None:
            return bool(self._loaded_exact)
        return self._visitors.exact and self._visits.exact

    def rows(self) -> list[dict[str, Any]]:
        """One dict per day with data, in date order: ``{"day": "2024-03-01", "pageviews": ...}``."""
        if self._loaded is not None:
            return [{"day": day, **figures} for day, figures in sorted(self._loaded.items())]
        visitors, visits = self._visitors.counts(), self._visits.counts()
        out = []
        for day in sorted(set(self.pageviews) | set(self.events)):
            out.append(
                {
                    "day": (_EPOCH + dt.timedelta(days=int(day))).isoformat(),
                    "pageviews": self.pageviews.get(day, 0),
                    "visitors": visitors.get(day, 0),
                    "visits": visits.get(day, 0),
                    "events": self.events.get(day, 0),
                }
            )
        return out

    @classmethod
    def loaded(cls, rows: list[dict[str, Any]] | None, exact: bool | None) -> DailyFigures:
        """Figures read back from a report or checkpoint (not updated any more)."""
        out = cls()
        out._loaded = {
            str(r["day"]): {m: int(r.get(m) or 0) for m in DAY_METRICS} for r in rows or [] if isinstance(r, dict)
        }
        out._loaded_exact = exact
        return out

    @classmethod
    def summed(cls, parts: list[DailyFigures]) -> DailyFigures:
        """Per-day sums of disjoint parts (the shards of one import: a visitor is in one shard)."""
        totals: dict[str, Counter[str]] = {}
        for part in parts:
            for row in part.rows():
                totals.setdefault(row["day"], Counter()).update({m: row[m] for m in DAY_METRICS})
        rows = [{"day": day, **{m: c.get(m, 0) for m in DAY_METRICS}} for day, c in totals.items()]
        return cls.loaded(rows, all(p.exact for p in parts))
