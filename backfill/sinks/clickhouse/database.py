"""Umami's ClickHouse database: what we check before writing, and how a block is written once.

Safety: before the first write we read ``system.tables`` and ``system.columns``
of the database the URL names and refuse anything but Umami 3.1's tables
(engines, every column and its type, the two materialized views), naming the
difference. We create, alter and drop nothing, and run no mutation.

Exactly once without transactions. ClickHouse keeps every row inserted twice (a
MergeTree has no primary key constraint), and insert deduplication tokens work
only on replicated tables or with ``non_replicated_deduplication_window``,
which Umami's schema does not set. So every block is checked against what the
database already holds before it is written, and only the missing rows go in:

1. ``website_event``: the ids of the block's events are ours and deterministic
   (see :mod:`backfill.umami.ids`); the event ids already stored in the block's
   time window (an index range of the table's key) are read, and only the other
   events are inserted;
2. ``event_data``: when none of the block's events was there, all of its data goes
   in; otherwise the events that already have data rows are read (their ids,
   through the same time window) and only the others' data goes in. An event's
   data is always inserted whole, in one block: Umami's revenue view pairs the
   "revenue" and "currency" keys of an event inside one inserted block;
3. ``session_data``: the (session, key, time, value) rows already there are left out.

Each insert is one Arrow block into one table: ClickHouse writes it as one part
per partition, and its views see the whole block. A run killed at any moment
leaves each table with whole inserts, and the next run writes exactly what is
missing. (A ClickHouse server that dies between writing a table's part and its
views' parts loses those derived rows, as it would for Umami's own inserts.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from ...errors import ConfigError
from ...umami import clickhouse as umami_ch
from .client import ClickHouse
from .rows import Rows

#: Session ids per lookup of existing session data (query parameters travel in the URL).
SESSIONS_PER_LOOKUP = 2_000


@dataclass(frozen=True)
class SchemaInfo:
    """What preflight found: the database, how its tables are built, and what that means for inserts."""

    database: str
    version: str
    engines: dict[str, str]

    @property
    def replicated(self) -> bool:
        return any(e.startswith(("Replicated", "Shared")) for e in self.engines.values())

    @property
    def distributed(self) -> bool:
        return any(e == "Distributed" for e in self.engines.values())

    @property
    def describe(self) -> str:
        kinds = sorted(set(self.engines.values()))
        return f"ClickHouse {self.version}, Umami 3.1's tables in {self.database} ({', '.join(kinds)})"

    def insert_settings(self) -> dict[str, Any]:
        """Settings of every insert: synchronous (an acknowledged insert is stored, so the
        next block's check sees it), and on a cluster, synchronous on every shard."""
        settings: dict[str, Any] = {"async_insert": 0}
        if self.distributed:
            settings["insert_distributed_sync"] = 1
        if self.replicated:
            settings["insert_deduplicate"] = 1
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        return settings


def check_schema(ch: ClickHouse) -> SchemaInfo:
    """Refuse (ConfigError, exit 2) any schema but Umami 3.1's, naming the difference."""
    database = ch.endpoint.database
    version = str(ch.rows("SELECT version() AS v")[0]["v"])
    tables = {
        row["name"]: row
        for row in ch.rows(
            "SELECT name, engine, create_table_query FROM system.tables WHERE database = {db:String}",
            {"db": database},
        )
    }
    engines: dict[str, str] = {}
    for table, family in umami_ch.ENGINES.items():
        if table not in tables:
            raise ConfigError(
                f"ClickHouse database {database} has no table {table}: it is not Umami 3.1's ClickHouse schema "
                "(check the database in --clickhouse-url: Umami's CLICKHOUSE_URL names it). Nothing was written"
            )
        engine = tables[table]["engine"]
        if engine != "Distributed" and umami_ch.engine_family(engine) != family:
            raise ConfigError(
                f"table {database}.{table} is a {engine}, Umami 3.1's is a {family} (or its Replicated/Shared "
                "variant): not the schema we write. Nothing was written"
            )
        engines[table] = engine
    _check_columns(ch, database)
    if not any(engine == "Distributed" for engine in engines.values()):
        _check_views(tables, database)
    return SchemaInfo(database, version, engines)


def _check_columns(ch: ClickHouse, database: str) -> None:
    found: dict[str, dict[str, str]] = {}
    for row in ch.rows(
        "SELECT table, name, type FROM system.columns WHERE database = {db:String} AND table IN {tables:Array(String)}",
        {"db": database, "tables": _array(list(umami_ch.COLUMNS))},
    ):
        found.setdefault(row["table"], {})[row["name"]] = row["type"]
    for table, expected in umami_ch.COLUMNS.items():
        present = found.get(table, {})
        lacking = [c for c in expected if c not in present]
        if lacking:
            raise ConfigError(
                f"table {database}.{table} lacks column(s) {', '.join(lacking)}: not Umami 3.1's ClickHouse schema "
                "(an older Umami? it migrates on start). Nothing was written"
            )
        for column, kind in expected.items():
            if present[column] != kind:
                raise ConfigError(
                    f"column {database}.{table}.{column} is {present[column]}, Umami 3.1 has {kind}: not the schema "
                    "we write. Nothing was written"
                )
        extra = [c for c in present if c not in expected]
        if extra and table in umami_ch.WRITTEN:
            raise ConfigError(
                f"table {database}.{table} has column(s) {', '.join(extra)} that Umami 3.1 does not have: a newer "
                "Umami whose rows we would store incompletely. Use the HTTP import (--host). Nothing was written"
            )


def _check_views(tables: dict[str, dict[str, Any]], database: str) -> None:
    """Both materialized views exist and fill their tables from the right source."""
    for view, (source, target) in umami_ch.VIEWS.items():
        row = tables.get(view)
        query = " ".join(str((row or {}).get("create_table_query", "")).split())
        if row is None or row["engine"] != "MaterializedView":
            raise ConfigError(
                f"ClickHouse database {database} has no materialized view {view}: without it the rows we write "
                f"would never reach {target}, which Umami's reports read. Nothing was written"
            )
        if f"TO {database}.{target}" not in query or f"{database}.{source}" not in query:
            raise ConfigError(
                f"materialized view {database}.{view} does not fill {target} from {source} as Umami 3.1's does. "
                "Nothing was written"
            )


def _array(values: list[str]) -> str:
    """A query parameter of type Array(String) in ClickHouse's text form."""
    return "[" + ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values) + "]"


# --------------------------------------------------------------------------- writing


def write_block(
    ch: ClickHouse,
    rows: Rows,
    website: str,
    settings: dict[str, Any],
    before_session_data: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Write what of one block the database does not hold yet; the new rows per table.
    ``before_session_data`` waits, where blocks are written at once, until the blocks
    before this one are written (session data is the one table whose insert order shows)."""
    added: dict[str, int] = {}
    window = rows.window
    events = rows.website_event
    stored_before: set[str] = set()
    if window is not None:
        stored_before = _events_in(ch, website, window) & set(events["event_id"].to_list())
        fresh = events.filter(~pl.col("event_id").is_in(list(stored_before))) if stored_before else events
        _insert(ch, "website_event", fresh, settings, "event_id", rows)
        added["website_event"] = fresh.height
    data = rows.event_data
    if data.height and stored_before and window is not None:
        with_data = _events_with_data(ch, website, window)
        data = data.filter(~pl.col("event_id").is_in(list(with_data)))
    _insert(ch, "event_data", data, settings, "event_id", rows)
    added["event_data"] = data.height
    session_data = rows.session_data
    if session_data.height:
        if before_session_data is not None:
            before_session_data()
        session_data = _new_session_data(ch, website, session_data)
        _insert(ch, "session_data", session_data, settings, "session_id", rows)
        added["session_data"] = session_data.height
    return added


def _insert(
    ch: ClickHouse, table: str, frame: pl.DataFrame, settings: dict[str, Any], key: str, rows: Rows | None = None
) -> None:
    """Insert ``frame`` into ``table``: the block's body made beside the derivation when
    nothing of the table's rows was stored before, else the rows left, encoded now."""
    if frame.height == 0:
        return
    whole = rows is not None and frame.height == rows.tables()[table].height
    body = rows.bodies.get(table) if rows is not None and whole else None
    if settings.get("insert_deduplicate"):  # replicated: a retried insert of the same rows is dropped
        digest = hashlib.blake2b(digest_size=16)
        for value in frame[key].sort().to_list():
            digest.update(value.encode())
        digest.update(str(frame.height).encode())
        settings = {**settings, "insert_deduplication_token": f"backfill-{table}-{digest.hexdigest()}"}
    ch.insert(table, frame, body, **settings)


def _window_params(website: str, window: tuple[datetime, datetime]) -> dict[str, str]:
    return {
        "website": website,
        "lo": window[0].strftime("%Y-%m-%d %H:%M:%S"),
        "hi": window[1].strftime("%Y-%m-%d %H:%M:%S"),
    }


_EVENTS_IN_WINDOW = (
    "SELECT event_id FROM website_event WHERE website_id = {website:UUID} "
    "AND created_at BETWEEN {lo:DateTime('UTC')} AND {hi:DateTime('UTC')}"
)


def _events_in(ch: ClickHouse, website: str, window: tuple[datetime, datetime]) -> set[str]:
    """Ids of the events stored in the block's time window (the table's key starts with the hour)."""
    found = ch.frame(f"SELECT toString(event_id) AS id FROM ({_EVENTS_IN_WINDOW})", _window_params(website, window))
    return set(found["id"].to_list()) if found.height else set()


def _events_with_data(ch: ClickHouse, website: str, window: tuple[datetime, datetime]) -> set[str]:
    """Ids of the window's events that have event data already (event_data's key is (website, event))."""
    found = ch.frame(
        "SELECT DISTINCT toString(event_id) AS id FROM event_data WHERE website_id = {website:UUID} "
        f"AND event_id IN ({_EVENTS_IN_WINDOW})",
        _window_params(website, window),
    )
    return set(found["id"].to_list()) if found.height else set()


def _new_session_data(ch: ClickHouse, website: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The session data rows not stored yet (same session, key, time and value)."""
    sessions = frame["session_id"].unique().to_list()
    stored: list[pl.DataFrame] = []
    for start in range(0, len(sessions), SESSIONS_PER_LOOKUP):
        found = ch.frame(
            "SELECT toString(session_id) AS session_id, data_key, toUnixTimestamp(created_at) AS at, string_value "
            "FROM session_data "
            "WHERE website_id = {website:UUID} AND session_id IN {sessions:Array(UUID)}",
            {"website": website, "sessions": _array(sessions[start : start + SESSIONS_PER_LOOKUP])},
        )
        if found.height:
            stored.append(found)
    if not stored:
        return frame
    keys = ["session_id", "data_key", "at", "string_value"]
    present = pl.concat(stored).select(
        pl.col(keys[:2]), pl.col("at").cast(pl.Int64), pl.col("string_value").cast(pl.String)
    )
    mine = frame.with_columns(pl.col("created_at").dt.epoch("s").alias("at"))
    return mine.join(present, on=keys, how="anti", nulls_equal=True, maintain_order="left").drop("at")
