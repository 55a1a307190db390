"""Regrouping the prepared stream so each request can hold many rows of one location."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl

from ...visits import CrossingVisits

GEO_SEGMENT = "g"
VISIT_SEGMENT = "v"
#: Rows regrouped together: the larger, the fuller each location's requests (memory: the
#: window's JSON, about 50 MB at 100k rows).
REGROUP_WINDOW_ROWS = 100_000


def regrouped(
    frames: Iterable[pl.DataFrame], crossing: CrossingVisits, window_rows: int = REGROUP_WINDOW_ROWS
) -> Iterator[pl.DataFrame]:
    """The prepared stream in windows of about ``window_rows`` rows, each :func:`regroup`-ed.

    A pure function of the stream (the same windows, the same order on every
    run), so the renumbered ``_seq`` stays valid for the checkpoint. Blocks that
    need no grouping (no location, no crossing visit) pass straight through.
    """
    pending: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        if frame.height == 0:
            continue
        if not pending and not _needs_grouping(frame, crossing):  # nothing to group: no read-ahead
            yield _one_segment(frame)
            continue
        pending.append(frame)
        rows += frame.height
        if rows >= window_rows:
            yield regroup(pl.concat(pending, rechunk=False), crossing)
            pending, rows = [], 0
    if pending:
        yield regroup(pl.concat(pending, rechunk=False), crossing)


def _one_segment(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(_geo=pl.lit(""), _seg=pl.lit(GEO_SEGMENT))


def _needs_grouping(frame: pl.DataFrame, crossing: CrossingVisits) -> bool:
    if crossing.count and "_vkey" in frame.columns and frame["_vkey"].is_not_null().any():
        return True
    return "_geo" in frame.columns and bool((frame["_geo"].fill_null("") != "").any())


def regroup(frame: pl.DataFrame, crossing: CrossingVisits) -> pl.DataFrame:
    """Order one window of the prepared stream so each lane's rows come in segments.

    A segment is what one request may hold: rows of one location (Umami takes a
    request's location headers for every element, but only uses them to create
    a session), or the rows of one source visit that crosses a clock hour (its
    requests carry that visit's cache token). Within a window, each lane's
    visitors are grouped by the location of their first row in the window, and
    every row of a visitor travels with that location: only the first row that
    reaches Umami sets the session's location, and should an earlier row be
    lost (in doubt after a crash, or refused), the next one still carries the
    right headers. Visitors with a crossing visit come after all others, so
    their lone requests do not cut the others' segments. A visitor's own rows
    keep their time order, which is all Umami's sessions need. ``_seq`` is
    renumbered in the new order.

    Adds ``_geo`` (the location key for the request) and ``_seg``.
    """
    if not _needs_grouping(frame, crossing):
        return _one_segment(frame)
    base = int(frame["_seq"][0])
    geo = frame["_geo"].fill_null("") if "_geo" in frame.columns else pl.lit("")
    in_visit = crossing.contains(frame["_vkey"]) if crossing.count and "_vkey" in frame.columns else False
    ordered = (
        frame.with_columns(_geo=geo, _xv=in_visit)
        .with_columns(
            pl.col("_geo").first().over("_visitor").alias("_geo"),  # the window is in time order
            pl.col("_xv").any().over("_visitor").alias("_vx"),
        )
        .sort(["_lane", "_vx", "_geo", "_visitor", "_seq"])
    )
    segment = (
        pl.when(pl.col("_xv"))
        .then(pl.concat_str(pl.lit(VISIT_SEGMENT), pl.col("_vkey").cast(pl.String)))
        .otherwise(pl.concat_str(pl.lit(GEO_SEGMENT), pl.col("_geo")))
    )
    return ordered.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + base).alias("_seq"),
        segment.alias("_seg"),
    ).drop("_xv", "_vx")
