"""Umami 3.1 on ClickHouse: its tables, its views, and what its inserts fail on.

With ``CLICKHOUSE_URL`` set, Umami 3.1 keeps websites, users and reports in
PostgreSQL and every collected row in ClickHouse (``db/clickhouse/schema.sql``):

- ``website_event`` (MergeTree, partitioned by month): one row per event with the
  session values of its own element (browser, OS, device, screen, language,
  country, region, city, distinct id) on it; there is no session table;
- ``event_data`` (MergeTree): the flattened data of an event, with the event's
  session, path and name; ``session_data`` (ReplacingMergeTree on website,
  session, key: the last row inserted wins, read with ``FINAL``);
- two tables filled by materialized views on every insert:
  ``website_event_stats_hourly`` (AggregatingMergeTree, one row per visit, hour,
  session values and event type and *inserted block*, merged later) from
  ``website_event``, which most reports read; ``website_revenue`` from
  ``event_data``: inside one inserted block, every row whose key contains
  "revenue" joined to every row of the same event whose key contains "currency",
  the amount ``coalesce(toDecimal64(number_value, 2), toDecimal64(string_value, 2))``.

Umami inserts each element's rows as ``JSONEachRow`` (one insert for the event,
one for its data): a ``null`` becomes the column's default (``''``), a number
is cut (not rounded) to the column's scale, a time outside ``DateTime``'s range
is clamped to it. An event whose data an insert refuses is stored without it
(and the API answers 500): those elements are the ones :func:`refusals` names.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation

import polars as pl

from ..schema import COL_FILE, COL_ROW, QUERY_PARAMS_LIMITED
from ..transform import map_unique
from .stored import Refusal, Stored

#: Column -> type as ClickHouse's ``system.columns`` reports it, for the tables a
#: sink writes and the two the views fill (Umami 3.1's ``schema.sql``).
_EVENT_STRINGS = (
    "url_path",
    "url_query",
    *QUERY_PARAMS_LIMITED,
    "referrer_path",
    "referrer_query",
    "referrer_domain",
    "page_title",
)
_LOW_CARDINALITY = ("hostname", "browser", "os", "device", "screen", "language", "country", "region")
_DATA_VALUES = {
    "data_key": "String",
    "string_value": "Nullable(String)",
    "number_value": "Nullable(Decimal(22, 4))",
    "date_value": "Nullable(DateTime('UTC'))",
    "data_type": "UInt32",
}
_ARRAY = "SimpleAggregateFunction(groupArrayArray, Array(String))"
_UTC = "DateTime('UTC')"

COLUMNS: dict[str, dict[str, str]] = {
    "website_event": {
        "website_id": "UUID",
        "session_id": "UUID",
        "visit_id": "UUID",
        "event_id": "UUID",
        **dict.fromkeys(_LOW_CARDINALITY, "LowCardinality(String)"),
        "city": "String",
        **dict.fromkeys(_EVENT_STRINGS, "String"),
        "lcp": "Nullable(Decimal(10, 1))",
        "inp": "Nullable(Decimal(10, 1))",
        "cls": "Nullable(Decimal(10, 4))",
        "fcp": "Nullable(Decimal(10, 1))",
        "ttfb": "Nullable(Decimal(10, 1))",
        "event_type": "UInt32",
        "event_name": "String",
        "tag": "String",
        "distinct_id": "String",
        "created_at": _UTC,
        "job_id": "Nullable(UUID)",
    },
    "event_data": {
        "website_id": "UUID",
        "session_id": "UUID",
        "event_id": "UUID",
        "url_path": "String",
        "event_name": "String",
        **_DATA_VALUES,
        "created_at": _UTC,
        "job_id": "Nullable(UUID)",
    },
    "session_data": {
        "website_id": "UUID",
        "session_id": "UUID",
        **_DATA_VALUES,
        "distinct_id": "String",
        "created_at": _UTC,
        "job_id": "Nullable(UUID)",
    },
    "website_event_stats_hourly": {
        "website_id": "UUID",
        "session_id": "UUID",
        "visit_id": "UUID",
        "hostname": _ARRAY,
        **{c: "LowCardinality(String)" for c in _LOW_CARDINALITY if c != "hostname"},
        "city": "String",
        "entry_url": f"AggregateFunction(argMin, String, {_UTC})",
        "exit_url": f"AggregateFunction(argMax, String, {_UTC})",
        **{c: _ARRAY for c in _EVENT_STRINGS if c not in ("referrer_path", "referrer_query")},
        "event_type": "UInt32",
        "event_name": _ARRAY,
        "views": "SimpleAggregateFunction(sum, UInt64)",
        "min_time": f"SimpleAggregateFunction(min, {_UTC})",
        "max_time": f"SimpleAggregateFunction(max, {_UTC})",
        "tag": _ARRAY,
        "distinct_id": "String",
        "created_at": _UTC,
    },
    "website_revenue": {
        "website_id": "UUID",
        "session_id": "UUID",
        "event_id": "UUID",
        "event_name": "String",
        "currency": "String",
        "revenue": "Decimal(18, 4)",
        "created_at": _UTC,
    },
}
#: The engine of each table (any of its Replicated/Shared variants is the same table on a cluster).
ENGINES = {
    "website_event": "MergeTree",
    "event_data": "MergeTree",
    "session_data": "ReplacingMergeTree",
    "website_event_stats_hourly": "AggregatingMergeTree",
    "website_revenue": "MergeTree",
}
#: Materialized view -> (the table it reads, the table it fills).
VIEWS = {
    "website_event_stats_hourly_mv": ("website_event", "website_event_stats_hourly"),
    "website_revenue_mv": ("event_data", "website_revenue"),
}
#: The tables an import writes (the views fill the others).
WRITTEN = ("website_event", "event_data", "session_data")

#: Decimal(22, 4): 18 digits before the point. A JSON number past it fails the insert.
NUMBER_DIGITS = 18
#: website_revenue.revenue is Decimal(18, 4): the view's Decimal64(2) amount must fit it.
_REVENUE_LIMIT = Decimal(2**63 - 1) / Decimal(10**4)
_DECIMAL64_2_LIMIT = Decimal(2**63 - 1) / Decimal(100)
#: What ClickHouse's decimal text parser reads (toDecimal64 of a string; no spaces, no hex).
_DECIMAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_FOUR = Decimal("0.0001")
_TWO = Decimal("0.01")


def number_value(text: str | None) -> Decimal | None:
    """The Decimal(22, 4) ClickHouse stores for a JavaScript number's JSON text: cut
    toward zero at 4 places. Raises ValueError past 18 integer digits (the insert fails)."""
    if text is None:
        return None
    value = Decimal(text)
    if value.adjusted() >= NUMBER_DIGITS:  # checked first: quantizing a huge number overflows Decimal
        raise ValueError(f"{text} has more than {NUMBER_DIGITS} digits before the point")
    return value.quantize(_FOUR, rounding=ROUND_DOWN)


def stored_numbers(texts: pl.Series) -> pl.Series:
    """:func:`number_value` of each number text as ``Decimal(22, 4)``, computed once per
    distinct text; null where the text is null or the number does not fit."""

    def fitting(text: str) -> Decimal | None:
        try:
            return number_value(text)
        except ValueError:
            return None

    return map_unique(texts, fitting, pl.Decimal(22, 4))


def revenue_amount(number: Decimal | None, string: str | None) -> Decimal | None:
    """What Umami's revenue view computes for a row whose key contains "revenue", or None
    where the view fails (a NULL amount, or one too large): the whole insert then fails."""
    if number is not None:
        amount = number.quantize(_TWO, rounding=ROUND_DOWN)
        return amount if abs(amount) <= _REVENUE_LIMIT else None
    if string is None or not _DECIMAL_TEXT.fullmatch(string):
        return None
    try:
        amount = Decimal(string).quantize(_TWO, rounding=ROUND_DOWN)
    except InvalidOperation:
        return None
    if abs(amount) > _DECIMAL64_2_LIMIT or abs(amount) > _REVENUE_LIMIT:
        return None
    return amount


def is_revenue_key(key: str) -> bool:
    return "revenue" in key.lower()


def is_currency_key(key: str) -> bool:
    return "currency" in key.lower()


def engine_family(engine: str) -> str:
    """``ReplicatedMergeTree``, ``SharedReplacingMergeTree``, ... -> the plain engine."""
    for prefix in ("Replicated", "Shared"):
        if engine.startswith(prefix) and engine != prefix:
            return engine[len(prefix) :]
    return engine


def refusals(values: Stored) -> list[Refusal]:
    """The elements whose rows Umami on ClickHouse fails to insert, with the reason:
    a number with more than 18 digits before the point (``Decimal(22, 4)``), or an
    event whose revenue view fails (a key containing "revenue" whose value is not a
    decimal number, or is too large, beside a key containing "currency")."""
    found: dict[tuple[int, int], tuple[str, str]] = {}
    data = values.event_data.join(
        values.events.select(pl.col("event_id").alias("website_event_id"), COL_FILE, COL_ROW),
        on="website_event_id",
        how="left",
    )
    for frame in (data, values.session_data):
        numbers = frame.filter(pl.col("number_value").is_not_null())
        unstorable = numbers.filter(stored_numbers(numbers["number_value"]).is_null())
        rows = unstorable.select(COL_FILE, COL_ROW, "data_key", "number_value").iter_rows()
        for file_index, row, key, number in rows:
            reason = f"{number} has more than {NUMBER_DIGITS} digits before the point"
            found.setdefault((file_index, row), (f"data.{key}", f"Umami on ClickHouse cannot store it: {reason}"))
    with_currency = data.filter(pl.col("data_key").str.to_lowercase().str.contains("currency", literal=True))
    revenue_rows = data.filter(
        pl.col("data_key").str.to_lowercase().str.contains("revenue", literal=True)
        & pl.col("website_event_id").is_in(with_currency["website_event_id"].implode())
    )
    for file_index, row, key, number, string in revenue_rows.select(
        COL_FILE, COL_ROW, "data_key", "number_value", "string_value"
    ).iter_rows():
        if (file_index, row) in found:
            continue
        try:
            amount = revenue_amount(number_value(number), string)
        except ValueError:
            amount = None
        if amount is None:
            found[(file_index, row)] = (
                f"data.{key}",
                f"Umami on ClickHouse fails on it: its revenue view reads every key containing 'revenue' beside a "
                f"currency as a decimal amount, and {string!r} is not one it can store (rename the key or drop it)",
            )
    return [(f, r, field_name, reason) for (f, r), (field_name, reason) in found.items()]
