"""Source visits that Umami would split at the clock hour.

Umami's visit id is "this session in this clock hour", so a source visit from
10:50 to 11:10 becomes two visits (and two bounces). Umami keeps one visit
when a request carries ``x-umami-cache`` with the token of the visit's first
event, and only a request holding that one visit may carry it; the sender does
that for the visits found here. Visits inside one hour need nothing.

The spans are aggregated per chunk and merged now and then, so memory is
about 20 bytes per distinct source visit (not per row); what is kept after
``finish`` is only the hashes of the crossing visits.

The keys are polars' 64-bit hash, which polars keeps only within one version
(2.0 changed every value). They are computed once, in the prepare phase, and
stored with the prepared rows and the crossing-visits file; a resumed import
matches the two stored sets and never hashes anew, so a polars upgrade between
a crash and the resume (``make lock``) changes nothing. :func:`key_fingerprint`
records which hash made them, and :meth:`CrossingVisits.foreign_hash_note`
says so when a resume runs under a polars that hashes differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .aggregate import Fold
from .schema import COL_TS, COL_VISIT, COL_VISITOR, COL_VKEY

#: Merge the partial aggregates when they hold this many more rows than the merged one.
_MERGE_FACTOR = 2
_MERGE_MIN_ROWS = 1 << 20


#: A fixed (visitor, visit) pair whose key tells one hash function from another.
_PROBE = {COL_VISITOR: ["probe-visitor"], COL_VISIT: ["probe-visit"]}


def key_fingerprint() -> dict[str, str]:
    """Which hash made the visit keys: polars' version and the key of a fixed probe."""
    key = pl.DataFrame(_PROBE).select(visit_key_expr()).item()
    return {"polars": pl.__version__, "probe": f"{key:016x}"}


def visit_key_expr() -> pl.Expr:
    """A 64-bit hash of (visitor, source visit): the identity of one source visit.

    polars' hash is stable within one polars version only: the keys are computed
    once, in the prepare phase, and stored with the prepared rows that carry them
    (see the module docstring).
    """
    key = pl.concat_str([pl.col(COL_VISITOR), pl.col(COL_VISIT)], separator="\x1f")
    return pl.when(pl.col(COL_VISIT).is_not_null()).then(key.hash(seed=0x5EED)).alias(COL_VKEY)


class VisitSpans:
    """First and last clock hour of every source visit, over all chunks."""

    def __init__(self) -> None:
        self._spans = Fold(_widest, min_rows=_MERGE_MIN_ROWS, factor=_MERGE_FACTOR)

    def add(self, rows: pl.DataFrame) -> None:
        """Fold the rows of one chunk (``_vkey`` and ``_ts`` columns) into the spans."""
        hours = rows.lazy().filter(pl.col(COL_VKEY).is_not_null()).select(COL_VKEY, (pl.col(COL_TS) // 3600).alias("h"))
        self._spans.add(
            hours.group_by(COL_VKEY).agg(pl.col("h").min().alias("first"), pl.col("h").max().alias("last")).collect()
        )

    def finish(self) -> CrossingVisits:
        spans = self._spans.result({COL_VKEY: pl.UInt64, "first": pl.Int64, "last": pl.Int64})
        crossing = spans.filter(pl.col("first") != pl.col("last")).sort(COL_VKEY)
        return CrossingVisits(
            keys=crossing[COL_VKEY], visits=spans.height, first=crossing["first"], hashed_by=key_fingerprint()
        )


def _widest(spans: pl.DataFrame) -> pl.DataFrame:
    return spans.group_by(COL_VKEY).agg(pl.col("first").min(), pl.col("last").max())


@dataclass
class CrossingVisits:
    """The source visits that cross a clock hour, as sorted 64-bit keys."""

    keys: pl.Series  # UInt64, sorted
    visits: int = 0  # distinct source visits seen
    #: The clock hour (unix seconds // 3600) of each crossing visit's first event, beside ``keys``:
    #: the database sink names the visit after it, as Umami's cache token does.
    first: pl.Series | None = None
    #: :func:`key_fingerprint` of the prepare phase that hashed the keys (None: not recorded).
    hashed_by: dict[str, str] | None = None

    @property
    def count(self) -> int:
        return self.keys.len()

    def contains(self, keys: pl.Series) -> pl.Series:
        """Whether each key (nullable) belongs to a crossing visit: a binary search per row,
        so a long list of crossing visits costs no hash table per frame."""
        if self.keys.len() == 0:
            return pl.Series(values=[False] * keys.len(), dtype=pl.Boolean)
        values = keys.fill_null(0).cast(pl.UInt64)
        pos = self.keys.search_sorted(values).clip(upper_bound=self.keys.len() - 1)
        return (self.keys.gather(pos) == values) & keys.is_not_null()

    def first_hours(self, keys: pl.Series) -> pl.Series:
        """The first hour of each key's crossing visit; null for keys of no crossing visit."""
        if self.keys.len() == 0 or self.first is None:
            return pl.Series(values=[None] * keys.len(), dtype=pl.Int64)
        values = keys.fill_null(0).cast(pl.UInt64)
        pos = self.keys.search_sorted(values).clip(upper_bound=self.keys.len() - 1)
        found = (self.keys.gather(pos) == values) & keys.is_not_null()
        return pl.select(pl.when(found).then(self.first.gather(pos))).to_series()

    def save(self, path: Path) -> None:
        columns = {COL_VKEY: self.keys} | ({"first": self.first} if self.first is not None else {})
        pl.DataFrame(columns).write_parquet(path)

    def foreign_hash_note(self) -> str | None:
        """A sentence for a resumed import whose keys another hash made (another polars), else None.

        Nothing needs redoing: the stored rows and the crossing-visits file carry keys of
        the same hash, and the send phase only ever matches those two; hashing a row anew
        would be the bug, and ``tests/test_polars_versions.py`` would catch it.
        """
        if not self.count or not self.hashed_by or self.hashed_by.get("probe") == key_fingerprint()["probe"]:
            return None
        then, now = self.hashed_by.get("polars", "an unknown version"), pl.__version__
        return (
            f"the import was prepared under polars {then}, this is polars {now}, which hashes differently: "
            f"the {self.count:,} visits that cross an hour are matched by the keys stored with the prepared "
            "rows (never computed again), so they stay whole"
        )

    def to_dict(self, path: Path | None) -> dict[str, Any]:
        found = {"visits": self.visits, "crossing": self.count, "path": str(path) if path else None}
        return found | ({"hashed_by": self.hashed_by} if self.hashed_by else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CrossingVisits:
        hashed_by = (data or {}).get("hashed_by")
        if not data or not data.get("path"):
            return cls(keys=_no_keys(), visits=int((data or {}).get("visits", 0)), hashed_by=hashed_by)
        saved = pl.read_parquet(data["path"])
        first = saved["first"] if "first" in saved.columns else None
        return cls(keys=saved[COL_VKEY], visits=int(data.get("visits", 0)), first=first, hashed_by=hashed_by)

    @classmethod
    def empty(cls) -> CrossingVisits:
        return cls(keys=_no_keys())


def _no_keys() -> pl.Series:
    return pl.Series(COL_VKEY, [], dtype=pl.UInt64)
