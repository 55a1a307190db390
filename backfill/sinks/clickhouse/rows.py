"""The ClickHouse layout of what Umami stores (:mod:`backfill.umami.stored`).

Umami 3.1 on ClickHouse inserts, per element, one ``website_event`` row carrying
the element's own session values, one ``event_data`` row per flattened key
carrying the event's session, path and name, and ``session_data`` rows for an
identify; its views make the hourly stats and the revenue. It sends them as
``JSONEachRow``, so a ``null`` in a plain ``String`` column is stored as ``''``,
numbers are cut to four places and times to whole seconds inside ``DateTime``'s
range. This module builds the same values as typed frames (one Arrow block per
table), after dropping the elements Umami on ClickHouse fails on
(:func:`backfill.umami.clickhouse.refusals`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from ...umami import clickhouse
from ...umami.stored import CLIENT_COLUMNS, EVENT_COLUMNS, Refusal, Stored

#: website_event columns we write (lcp, inp, cls, fcp, ttfb and job_id keep their NULL default).
_NOT_TEXT = ("event_id", "website_id", "session_id", "visit_id", "created_at", "event_type")
EVENT_STRINGS = tuple(c for c in (*EVENT_COLUMNS, *CLIENT_COLUMNS) if c not in _NOT_TEXT)
_DATETIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME_MAX = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
_SECONDS = pl.Datetime("us", "UTC")


@dataclass
class Rows:
    """One block's rows per ClickHouse table, the rows refused, and the block's time window."""

    website_event: pl.DataFrame
    event_data: pl.DataFrame
    session_data: pl.DataFrame
    refused: list[Refusal] = field(default_factory=list)
    #: Each table's insert body, made beside the derivation (the writer then only sends it).
    bodies: dict[str, bytes] = field(default_factory=dict)

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"website_event": self.website_event, "event_data": self.event_data, "session_data": self.session_data}

    @property
    def window(self) -> tuple[datetime, datetime] | None:
        """First and last ``created_at`` of the block's events (None without events)."""
        if self.website_event.height == 0:
            return None
        created = self.website_event["created_at"]
        return created.min(), created.max()  # type: ignore[return-value]


def layout(values: Stored) -> Rows:
    values = values.without(clickhouse.refusals(values))
    events = values.events
    website_event = events.select(
        "website_id",
        "session_id",
        "visit_id",
        "event_id",
        *(pl.col(c).fill_null("") for c in EVENT_STRINGS),
        pl.col("event_type").cast(pl.UInt32),
        "created_at",
    )
    owners = events.select(
        pl.col("event_id").alias("website_event_id"),
        "session_id",
        pl.col("url_path").fill_null(""),
        pl.col("event_name").fill_null(""),
    )
    event_data = values.event_data.join(owners, on="website_event_id", how="left", maintain_order="left").select(
        "website_id",
        "session_id",
        pl.col("website_event_id").alias("event_id"),
        "url_path",
        "event_name",
        *_data_values(values.event_data),
        "created_at",
    )
    session_data = values.session_data.select(
        "website_id",
        "session_id",
        *_data_values(values.session_data),
        pl.col("distinct_id").fill_null(""),
        "created_at",
    )
    return Rows(website_event, event_data, session_data, refused=values.refused)


def _data_values(frame: pl.DataFrame) -> list[pl.Expr | pl.Series]:
    """data_key, string_value, number_value (Decimal(22, 4), cut), date_value (whole
    seconds, clamped to DateTime's range), data_type, as Umami's JSON insert stores them."""
    return [
        pl.col("data_key"),
        pl.col("string_value"),
        pl.lit(clickhouse.stored_numbers(frame["number_value"]).alias("number_value")),
        pl.col("date_value")
        .dt.truncate("1s")
        .clip(pl.lit(_DATETIME_MIN).cast(_SECONDS), pl.lit(_DATETIME_MAX).cast(_SECONDS))
        .alias("date_value"),
        pl.col("data_type").cast(pl.UInt32),
    ]
