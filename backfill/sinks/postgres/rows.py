"""The PostgreSQL layout of what Umami stores (:mod:`backfill.umami.stored`).

Umami 3.1 on PostgreSQL keeps a session once (the first element of it that it
sees) and points every event at it; revenue has a table of its own, filled by
its ``/api/send`` route. The values come from the shared derivation; this module
only picks the columns of each of the five tables we write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ...umami import stored
from ...umami.stored import (
    EVENT_COLUMNS,
    EVENT_DATA_COLUMNS,
    REVENUE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_DATA_COLUMNS,
    Derivation,
    Refusal,
    positions,
)

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_DATA_COLUMNS",
    "REVENUE_COLUMNS",
    "SESSION_COLUMNS",
    "SESSION_DATA_COLUMNS",
    "Derivation",
    "Tables",
    "derive",
    "layout",
    "positions",
]


@dataclass
class Tables:
    """One block's rows per PostgreSQL table, plus the rows Umami would have refused (and why)."""

    session: pl.DataFrame
    website_event: pl.DataFrame
    event_data: pl.DataFrame
    revenue: pl.DataFrame
    session_data: pl.DataFrame
    refused: list[Refusal] = field(default_factory=list)  # (file, row, field, reason)


def derive(block: pl.DataFrame, how: Derivation) -> Tables:
    """Every table's rows for one block of prepared rows (in send order)."""
    return layout(stored.derive(block, how))


def layout(values: stored.Stored) -> Tables:
    return Tables(
        session=values.sessions.select(SESSION_COLUMNS),
        website_event=values.events.select(EVENT_COLUMNS),
        event_data=values.event_data.select(EVENT_DATA_COLUMNS),
        revenue=values.revenue.select(REVENUE_COLUMNS),
        session_data=values.session_data.select(SESSION_DATA_COLUMNS),
        refused=values.refused,
    )
