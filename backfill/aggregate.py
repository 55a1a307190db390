"""Aggregates over every chunk of an input, in memory that grows with the result, not the rows."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl


class Fold:
    """Partial aggregates of one kind, merged by ``merge`` whenever they outgrow a bound.

    Each chunk adds its own small aggregate (distinct pairs, per-key minima...);
    they are merged into one frame when the pending parts hold more than
    ``max(min_rows, factor x merged rows)``, so merging costs amortised linear
    time and memory stays near the size of the final result.
    """

    def __init__(self, merge: Callable[[pl.DataFrame], pl.DataFrame], *, min_rows: int, factor: int = 1) -> None:
        self._merge = merge
        self._min_rows = min_rows
        self._factor = factor
        self._merged: pl.DataFrame | None = None
        self._parts: list[pl.DataFrame] = []
        self._rows = 0

    def add(self, part: pl.DataFrame) -> None:
        if part.height == 0:
            return
        self._parts.append(part)
        self._rows += part.height
        merged = 0 if self._merged is None else self._merged.height
        if self._rows > max(self._min_rows, self._factor * merged):
            self._compact()

    @property
    def merged_rows(self) -> int:
        """Rows of the last merge (the pending parts not counted)."""
        return 0 if self._merged is None else self._merged.height

    def _compact(self) -> None:
        frames = ([self._merged] if self._merged is not None else []) + self._parts
        if frames:
            self._merged = self._merge(pl.concat(frames, how="vertical_relaxed"))
        self._parts, self._rows = [], 0

    def result(self, empty: dict[str, pl.DataType]) -> pl.DataFrame:
        """The merged aggregate (a frame of schema ``empty`` when nothing was added)."""
        self._compact()
        return self._merged if self._merged is not None else pl.DataFrame(schema=empty)
