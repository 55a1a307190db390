"""Joining Umami's tables one bucket at a time (for ``backfill.sources.umami_export``).

Every table is spilled to Parquet parts per bucket (``hash(key) % K``); a bucket
of events is then joined with the same bucket of sessions, session data or event
data, so memory holds one bucket, never a whole table. Events are bucketed by
session for the session joins, then again by event_id for the event data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import polars as pl

from backfill.schema import COL_ROW
from backfill.sources.compression import temp_dir
from backfill.sources.umami_values import join_members

S = pl.String()
I64 = pl.Int64()
_BUCKET = "__bucket"
#: The line of a side-table row (event_data / session_data) in its own file.
LINE = "__line"

#: Session attributes: on every website_event row of the Cloud export, in ``session`` in PostgreSQL.
SESSION_ATTRS = ("browser", "os", "device", "screen", "language", "country", "region", "city", "distinct_id")

FLAT_SCHEMA: dict[str, pl.DataType] = {
    "kind": S,  # event | identify
    "created_ms": I64,  # unix milliseconds, UTC (null: created_at unreadable, the row is rejected)
    "visitor": S,  # distinct_id, else session_id: the payload id, one Umami session per source session
    "session_id": S,
    "visit_id": S,
    "event_id": S,
    "event_type": I64,  # 1 pageview, 2 custom event, 3 link, 4 pixel, 5 performance; null for identify
    "hostname": S,
    "url": S,  # url_path + ?url_query (query placed before a #fragment)
    "referrer": S,  # https:// + referrer_domain + referrer_path + ?referrer_query
    "title": S,
    "name": S,  # event_name of custom events
    "tag": S,
    **dict.fromkeys(SESSION_ATTRS, S),
    "data_json": S,  # the event's (or session's) properties as one JSON object, null when none
    "repeat_of": I64,  # the row of the first copy of this event_id (exports that overlap), else null
}


class Buckets:
    """Parquet parts per (kind, bucket) in one temp folder, deleted on close."""

    def __init__(self, count: int):
        self.count = count
        self.root = tempfile.mkdtemp(prefix="backfill-umami-", dir=temp_dir())
        self.parts: dict[tuple[str, int], int] = {}

    def add(self, kind: str, frame: pl.DataFrame, key: str) -> None:
        """Spill a frame's rows, each into the bucket of ``hash(key)``."""
        if frame.height == 0:
            return
        keyed = frame.with_columns((pl.col(key).fill_null("").hash(seed=13) % self.count).alias(_BUCKET))
        for (bucket,), part in keyed.partition_by(_BUCKET, as_dict=True, include_key=False).items():
            number = self.parts.get((kind, int(bucket)), 0)
            self.parts[(kind, int(bucket))] = number + 1
            part.write_parquet(os.path.join(self.root, f"{kind}-{bucket}-{number}.parquet"))

    def put(self, kind: str, frame: pl.DataFrame) -> None:
        """Spill a frame as it is (into bucket 0), to be read back part by part."""
        if frame.height:
            number = self.parts.get((kind, 0), 0)
            self.parts[(kind, 0)] = number + 1
            frame.write_parquet(os.path.join(self.root, f"{kind}-0-{number}.parquet"))

    def iter_parts(self, kind: str) -> Iterator[pl.DataFrame]:
        for i in range(self.parts.get((kind, 0), 0)):
            yield pl.read_parquet(os.path.join(self.root, f"{kind}-0-{i}.parquet"))

    def read(self, kind: str, bucket: int, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        number = self.parts.get((kind, bucket), 0)
        if not number:
            return pl.DataFrame(schema=schema)
        paths = [os.path.join(self.root, f"{kind}-{bucket}-{i}.parquet") for i in range(number)]
        return pl.concat([pl.read_parquet(p) for p in paths], how="diagonal_relaxed")

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- joins


EV_SCHEMA: dict[str, pl.DataType] = {**FLAT_SCHEMA, "problem": S, COL_ROW: I64}
SES_SCHEMA: dict[str, pl.DataType] = {"session_id": S, **dict.fromkeys(SESSION_ATTRS, S), COL_ROW: I64}
DATA_SCHEMA: dict[str, pl.DataType] = {
    "key": S,
    "member": S,
    "data_key": S,
    "problem": S,
    "created_ms": I64,
    LINE: I64,
}


def with_sessions(events: pl.DataFrame, sessions: pl.DataFrame, has_table: bool) -> pl.DataFrame:
    """Events with their session's attributes (from ``session``, where the dump has it) and visitor."""
    if has_table and sessions.height:
        sessions = sessions.sort(COL_ROW).unique("session_id", keep="first").drop(COL_ROW)
        joined = events.join(sessions, on="session_id", how="left", suffix="__s")
        events = joined.with_columns(pl.coalesce(f"{c}__s", c).alias(c) for c in SESSION_ATTRS).drop(
            f"{c}__s" for c in SESSION_ATTRS
        )
    return events.with_columns(pl.coalesce("distinct_id", "session_id").alias("visitor"))


def identify_rows(data: pl.DataFrame, events: pl.DataFrame, sessions: pl.DataFrame, offset: int) -> pl.DataFrame:
    """One identify row per session with session data: its properties, sent with the session's attributes."""
    if data.height == 0:
        return pl.DataFrame(schema=EV_SCHEMA)
    data = data.unique(["key", "member"], keep="first")
    grouped = data.group_by("key").agg(
        join_members(pl.col("member")).alias("data_json"),
        pl.col("created_ms").max(),
        pl.col(LINE).min(),
        pl.col("problem").drop_nulls().first(),
        pl.col("distinct_id").drop_nulls().first(),
        (pl.col("data_key").n_unique() < pl.len()).alias("clash"),
    )
    attrs = pl.concat(
        [
            sessions.select("session_id", *SESSION_ATTRS, pl.lit(0, I64).alias("_order"), COL_ROW),
            events.select("session_id", *SESSION_ATTRS, pl.lit(1, I64).alias("_order"), COL_ROW),
        ]
    )
    attrs = attrs.sort("_order", COL_ROW).unique("session_id", keep="first").drop("_order", COL_ROW)
    rows = grouped.rename({"key": "session_id", "distinct_id": "sd_distinct_id"}).join(
        attrs, on="session_id", how="left"
    )
    clash = pl.concat_str(
        pl.lit("session_data.csv row "),
        pl.col(LINE).cast(S),
        pl.lit(": a data_key appears twice with different values for this session"),
    )
    return rows.select(
        pl.lit("identify").alias("kind"),
        "created_ms",
        pl.coalesce("distinct_id", "sd_distinct_id", "session_id").alias("visitor"),
        "session_id",
        *(pl.lit(None, S).alias(c) for c in ("visit_id", "event_id")),
        pl.lit(None, I64).alias("event_type"),
        *(pl.lit(None, S).alias(c) for c in ("hostname", "url", "referrer", "title", "name", "tag")),
        *(c for c in SESSION_ATTRS if c != "distinct_id"),
        pl.coalesce("distinct_id", "sd_distinct_id").alias("distinct_id"),
        "data_json",
        pl.lit(None, I64).alias("repeat_of"),
        pl.coalesce("problem", pl.when(pl.col("clash")).then(clash)).alias("problem"),
        (pl.col(LINE) + offset).alias(COL_ROW),
    )


def with_data(events: pl.DataFrame, data: pl.DataFrame, offset: int) -> pl.DataFrame:
    """Events with their event data as ``data_json``, a repeated event_id marked ``repeat_of``
    (the preset skips it by a named filter), and event data without an event rejected."""
    first = (
        events.filter(pl.col("event_id").is_not_null()).group_by("event_id").agg(pl.col(COL_ROW).min().alias("_first"))
    )
    events = events.join(first, on="event_id", how="left")
    repeated = pl.col("_first").is_not_null() & (pl.col("_first") != pl.col(COL_ROW))
    events = events.with_columns(pl.when(repeated).then(pl.col("_first")).alias("repeat_of")).drop("_first")
    if data.height == 0:
        return events
    data = data.unique(["key", "member"], keep="first")
    grouped = data.group_by("key").agg(
        join_members(pl.col("member")).alias("_data"),
        pl.col(LINE).min(),
        pl.len().alias("_n"),
        pl.col("problem").drop_nulls().first().alias("_problem"),
        (pl.col("data_key").n_unique() < pl.len()).alias("_clash"),
    )
    clash = pl.concat_str(
        pl.lit("event_data.csv row "),
        pl.col(LINE).cast(S),
        pl.lit(": a data_key appears twice with different values for this event"),
    )
    joined = events.join(grouped, left_on="event_id", right_on="key", how="left")
    joined = joined.with_columns(
        pl.coalesce("data_json", "_data").alias("data_json"),
        pl.coalesce("problem", "_problem", pl.when(pl.col("_clash")).then(clash)).alias("problem"),
    ).select(list(EV_SCHEMA))
    orphans = grouped.join(events.select("event_id"), left_on="key", right_on="event_id", how="anti")
    if orphans.height == 0:
        return joined
    lost = orphans.select(
        pl.lit("event").alias("kind"),
        *(pl.lit(None, FLAT_SCHEMA[c]).alias(c) for c in list(FLAT_SCHEMA)[1:]),
        pl.concat_str(
            pl.lit("event_data.csv row "),
            pl.col(LINE).cast(S),
            pl.lit(": event_id "),
            pl.col("key"),
            pl.lit(" is in no website_event row (a truncated or partial export?); its "),
            pl.col("_n").cast(S),
            pl.lit(" propert(ies) are not imported"),
        ).alias("problem"),
        (pl.col(LINE) + offset).alias(COL_ROW),
    )
    return pl.concat([joined, lost])
