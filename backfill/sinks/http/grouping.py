"""Regrouping the prepared stream so that each request holds many visitors of one location.

Umami charges per request, so a request should carry as many rows as it may.
Three things cut requests short, and this module arranges the rows around them:

- **location**: a request's location headers apply to all its elements (Umami
  uses them when it creates a session), so a request holds one location. Rows
  are grouped by the location of their visitor's first row in the window;
- **visitor order**: a visitor's rows must reach Umami in time order, and a lane
  has one request on the wire at a time. So a visitor's rows of one window stay
  in one lane, and the lanes of a window are contiguous *pieces* of about
  :data:`PIECE_ROWS` rows of one location, not a hash of the visitor (which would
  spread every location over every lane: lanes x locations small requests).
  The queues send a window only after the one before it is settled
  (:class:`~.queues.LaneQueues`), so a visitor whose lane changes between windows
  keeps its order;
- **whole visits** (a source visit that crosses a clock hour): its first event
  (the *opener*) must be the first element of a request, whose answer's cache
  token then carries the rest of the visit (the *continuation*) in a request of
  its own. Each piece starts with the opener of one such visitor, so openers
  ride at the head of requests that are full anyway; continuations follow the
  pieces of their lane.

All of it is a pure function of the stream (the same windows, the same order on
every run, whatever the settings), so the renumbered ``_seq`` and ``_lane`` stay
valid for the checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import polars as pl

from ...visits import CrossingVisits

GEO_SEGMENT = "g"
VISIT_SEGMENT = "v"
#: Rows regrouped together: the larger, the fuller each location's requests (memory: the
#: window's JSON, about 50 MB at 100k rows).
REGROUP_WINDOW_ROWS = 100_000
#: Rows of one location given to a lane at a time: the default batch size, so a piece is one
#: request. Fixed (not ``--batch-size``), because the lanes must not change between runs.
PIECE_ROWS = 200
#: Lanes of a checkpoint (``--restart`` to change): the most requests in flight at once.
DEFAULT_LANES = 64


def regrouped(
    frames: Iterable[pl.DataFrame],
    crossing: CrossingVisits,
    window_rows: int | None = None,
    lanes: int = DEFAULT_LANES,
) -> Iterator[pl.DataFrame]:
    """The prepared stream in send order: :func:`windows` without their keys."""
    for _, frame in windows(frames, crossing, window_rows, lanes):
        yield frame


def windows(
    frames: Iterable[pl.DataFrame],
    crossing: CrossingVisits,
    window_rows: int | None = None,
    lanes: int = DEFAULT_LANES,
) -> Iterator[tuple[int | None, pl.DataFrame]]:
    """The prepared stream in windows of about ``window_rows`` rows, each :func:`regroup`-ed,
    as (key, frame): consecutive frames with the same key (not None) are one window.

    Blocks that need no grouping (no location, no crossing visit) pass without
    read-ahead, keeping their ``_seq`` and the stream's lanes (a hash of the
    visitor), folded onto as many lanes as the block fills with
    :data:`PIECE_ROWS` rows each (the key): a small import then makes a few full
    requests instead of one small one per lane.
    """
    window_rows = window_rows or REGROUP_WINDOW_ROWS
    pending: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        if frame.height == 0:
            continue
        if not pending and not _needs_grouping(frame, crossing):
            used = min(lanes, -(-frame.height // PIECE_ROWS))
            yield used, _one_segment(frame, used)
            continue
        pending.append(frame)
        rows += frame.height
        if rows >= window_rows:
            yield None, regroup(pl.concat(pending, rechunk=False), crossing, lanes)
            pending, rows = [], 0
    if pending:
        yield None, regroup(pl.concat(pending, rechunk=False), crossing, lanes)


def _one_segment(frame: pl.DataFrame, used: int) -> pl.DataFrame:
    return frame.with_columns(
        pl.col("_lane") % used,
        _geo=pl.lit(""),
        _seg=pl.lit(GEO_SEGMENT),
        _open=pl.lit(None, dtype=pl.String),
    )


def _needs_grouping(frame: pl.DataFrame, crossing: CrossingVisits) -> bool:
    if crossing.count and "_vkey" in frame.columns and frame["_vkey"].is_not_null().any():
        return True
    return "_geo" in frame.columns and bool((frame["_geo"].fill_null("") != "").any())


def regroup(frame: pl.DataFrame, crossing: CrossingVisits, lanes: int = DEFAULT_LANES) -> pl.DataFrame:
    """Order one window (in time order, contiguous ``_seq``) for sending; see the module docstring.

    Each lane holds: its pieces (visitors of one location, ordered by location),
    then the continuations of the crossing visits opened there, then the rows of
    those visitors that come after a continuation (``_round`` 1, 2, ...), and so on.

    Sets ``_lane`` and renumbers ``_seq`` in the new order; adds ``_geo`` (the
    location key of the request), ``_seg`` (rows of one segment may share a
    request) and ``_open`` (on an opener: the segment of the visit it opens).
    """
    base = int(frame["_seq"][0])
    rows = _classify(frame, crossing)
    visitors = _visitors(rows)
    placed = _place(visitors, lanes)
    ordered = (
        rows.drop("_lane", strict=False)
        .join(placed, on="_visitor", how="left")
        .sort(["_lane", "_round", "_cont", "_rank", "_seq"])
    )
    openers_so_far = pl.col("_open").is_not_null().cast(pl.Int64).cum_sum().over("_lane")
    segment = (
        pl.when(pl.col("_cont"))
        .then(pl.concat_str(pl.lit(VISIT_SEGMENT), pl.col("_vkey").cast(pl.String)))
        .otherwise(pl.concat_str(pl.lit(GEO_SEGMENT), pl.col("_geo"), pl.lit("|"), openers_so_far.cast(pl.String)))
    )
    return ordered.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64) + base).alias("_seq"),
        pl.col("_lane").cast(pl.UInt16),
        segment.alias("_seg"),
    ).drop("_round", "_cont", "_rank")


def _classify(frame: pl.DataFrame, crossing: CrossingVisits) -> pl.DataFrame:
    """Per row: its visitor's location, whether it opens (``_open``) or continues (``_cont``)
    a crossing visit, and its ``_round``: the continuations of its visitor that end before it.

    The opener of a crossing visit is its first row in the window; a row that
    comes after a continuation waits for it, in the lane's next round.
    """
    geo = frame["_geo"].fill_null("") if "_geo" in frame.columns else pl.lit("", dtype=pl.String)
    vkey = frame["_vkey"] if "_vkey" in frame.columns else pl.lit(None, dtype=pl.UInt64)
    in_visit = (
        crossing.contains(frame["_vkey"])
        if crossing.count and "_vkey" in frame.columns
        else pl.lit(False, dtype=pl.Boolean)
    )
    rows = frame.with_columns(_geo=geo, _vkey=vkey, _xv=in_visit).with_columns(
        pl.col("_geo").first().over("_visitor"),  # the window is in time order
        (pl.col("_xv") & (pl.col("_seq") == pl.col("_seq").min().over("_vkey"))).alias("_opener"),
    )
    cont = pl.col("_xv") & ~pl.col("_opener")
    rows = rows.sort(["_visitor", "_seq"]).with_columns(_cont=cont)
    same_run_next = (
        pl.col("_cont").shift(-1).over("_visitor") & (pl.col("_vkey").shift(-1).over("_visitor") == pl.col("_vkey"))
    ).fill_null(False)
    run_end = (pl.col("_cont") & ~same_run_next).cast(pl.Int32)
    return rows.with_columns(
        (run_end.cum_sum().over("_visitor") - run_end).alias("_round"),
        pl.when(pl.col("_opener"))
        .then(pl.concat_str(pl.lit(VISIT_SEGMENT), pl.col("_vkey").cast(pl.String)))
        .alias("_open"),
    ).drop("_xv", "_opener")


def _visitors(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per visitor: location, rows before its first continuation, whether its first row opens a visit."""
    return rows.group_by("_visitor").agg(
        pl.col("_geo").first(),
        ((pl.col("_round") == 0) & ~pl.col("_cont")).sum().alias("_n0"),
        pl.col("_open").first().is_not_null().alias("_leads"),
    )


def _place(visitors: pl.DataFrame, lanes: int) -> pl.DataFrame:
    """Each visitor's lane and rank: pieces of one location, each led by an opener if one is left."""
    ordered = visitors.sort(["_geo", "_visitor"])
    starts = (ordered["_geo"] != ordered["_geo"].shift(1)).fill_null(True).to_list()
    rank, piece = _pack(starts, ordered["_n0"].to_list(), ordered["_leads"].to_list())
    pieces = max(piece, default=0) + 1
    used = min(lanes, pieces)
    return ordered.select("_visitor").with_columns(
        _rank=pl.Series(rank, dtype=pl.Int64),
        _lane=(pl.Series(piece, dtype=pl.Int64) * used // pieces),
    )


def _pack(starts: list[bool], sizes: list[int], leads: list[bool]) -> tuple[list[int], list[int]]:
    """Greedy pieces of at most :data:`PIECE_ROWS` rows within each location (a visitor larger
    than that is a piece of its own). A visitor whose first row opens a visit leads a piece: an
    opener must be the first element of its request, and a piece is one request.

    A loop over visitors (not rows): where a piece ends depends on the sizes before it.
    """
    n = len(sizes)
    rank, piece = [0] * n, [0] * n
    bounds = [i for i, start in enumerate(starts) if start] + [n]
    position, current = 0, -1
    for begin, end in itertools.pairwise(bounds):
        leaders = [i for i in range(begin, end) if leads[i]]
        others = [i for i in range(begin, end) if not leads[i]]
        led = taken = 0
        while led < len(leaders) or taken < len(others):
            current += 1
            size = 0
            if led < len(leaders):
                first = leaders[led]
                rank[first], piece[first] = position, current
                position, size, led = position + 1, sizes[first], led + 1
            while taken < len(others) and (size == 0 or size + sizes[others[taken]] <= PIECE_ROWS):
                member = others[taken]
                rank[member], piece[member] = position, current
                position, size, taken = position + 1, size + sizes[member], taken + 1
    return rank, piece
