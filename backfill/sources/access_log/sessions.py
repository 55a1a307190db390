"""Visits: a visitor's page views with no gap over 30 minutes, across chunks and rotated files.

A log has no visit id, so the reader makes one: the page views of one client
(ip + user agent) belong to one visit until the client is silent for more than
``VISIT_GAP_S``; the visit id is ``v`` + the unix second of its first page view. Only
rows that the preset counts as page views take part (see :func:`is_page_view`):
an image fetched 40 minutes later does not keep a visit alive. Other rows get
no visit (they follow Umami's hours if a user keeps them).

Lines of one client spread over chunks and over rotated files, so the last
page view and visit start of each client are carried from chunk to chunk in a
small frame (:class:`VisitState`), one per log (a rotation group). Logs are in
time order give or take the seconds a request took, so a page view slightly
before the last one seen continues its visit; clients silent for more than the
gap (plus a margin for that disorder) are dropped from the state, which keeps
its size to the clients of the last hour, whatever the size of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

VISIT_GAP_S = 30 * 60
#: A client's state is kept this long after its last page view (the gap plus disorder).
KEEP_S = VISIT_GAP_S + 15 * 60

_KEY, _TS, _LAST, _START = "__key", "__ts", "__last", "__start"
_STATE_SCHEMA = {_KEY: pl.UInt64(), _LAST: pl.Int64(), _START: pl.Int64()}


def is_page_view() -> pl.Expr:
    """The rows the preset's filters keep (bots aside: they are their own clients)."""
    status = pl.col("status")
    ok = ((status >= 200) & (status < 300)) | (status == 304)
    return (
        pl.col("method").is_in(["GET", "HEAD"])
        & ok
        & (pl.col("kind") == "page")
        & pl.col("agent").is_null()
        & pl.col("time").is_not_null()
    ).fill_null(False)


@dataclass
class VisitState:
    """Per client of one log: last page view and start of its visit (unix seconds)."""

    frame: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_STATE_SCHEMA))

    def assign(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """``chunk`` with its ``visit`` column; the state moves past the chunk."""
        page = chunk.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("__i"),
            pl.concat_str(pl.col("ip"), pl.col("user_agent"), separator="\x1f", ignore_nulls=True).hash().alias(_KEY),
            pl.col("time").dt.epoch("s").alias(_TS),
            is_page_view().alias("__page"),
        ).filter(pl.col("__page"))
        if page.height == 0:
            return chunk.with_columns(pl.lit(None, pl.String).alias("visit"))
        # shift/forward_fill below need (client, time) order: a join keeps it only when asked
        page = page.sort(_KEY, _TS).join(self.frame, on=_KEY, how="left", maintain_order="left")
        # a client whose lines go back further than any disorder (the same log read again,
        # or files given out of order) starts afresh instead of joining a later visit
        stale = pl.col(_TS).min().over(_KEY) < pl.col(_LAST) - KEEP_S
        page = page.with_columns(pl.when(stale).then(None).otherwise(pl.col(c)).alias(c) for c in (_LAST, _START))
        previous = pl.col(_TS).shift(1).over(_KEY)
        carried = pl.col(_LAST)  # the client's last page view in earlier chunks (same on all its rows)
        previous = pl.coalesce(pl.max_horizontal(previous, carried), carried)
        starts = previous.is_null() | ((pl.col(_TS) - previous) > VISIT_GAP_S)
        # a row before the carried visit started belongs to it (disorder), not to a new one
        visit = pl.when(starts).then(pl.col(_TS)).otherwise(None).forward_fill().over(_KEY)
        page = page.with_columns(pl.coalesce(visit, pl.col(_START)).alias("__visit"))
        self._advance(page)
        visit_id = pl.concat_str(pl.lit("v"), pl.col("__visit").cast(pl.String))  # text, never read as a number
        visits = page.select("__i", visit_id.alias("visit"))
        indexed = chunk.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__i"))
        return indexed.join(visits, on="__i", how="left", maintain_order="left").drop("__i")

    def _advance(self, page: pl.DataFrame) -> None:
        latest = page.group_by(_KEY).agg(
            pl.max_horizontal(pl.col(_TS).max(), pl.col(_LAST).max()).alias(_LAST),
            pl.col("__visit").last().alias(_START),
        )
        horizon = int(page[_TS].max()) - KEEP_S
        merged = pl.concat([self.frame.join(latest, on=_KEY, how="anti"), latest.select(list(_STATE_SCHEMA))])
        self.frame = merged.filter(pl.col(_LAST) >= horizon)
