"""Umami's ClickHouse tables read back and compared, whatever ids the writer minted.

``canonical`` reads one website's rows from a database on the test engine and
replaces ids by what they stand for: an event by its values, a visit and a
session by the events in them, so two stores that hold the same data compare
equal. The hourly table is compared merged (its rows depend on how inserts were
cut into blocks until the engine merges them; Umami's queries aggregate them).
``insert_api_record`` writes what the fake Umami says Umami on ClickHouse would
have inserted for the API path: the same JSONEachRow lines, through the same engine.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from tests import chdb_server

_IDS = ("event_id", "session_id", "visit_id", "website_id", "job_id")


def new_database() -> str:
    name = f"umami_{uuid.uuid4().hex[:12]}"
    chdb_server.load_schema(name)
    return name


def insert_api_record(database: str, inserts: dict[str, list[str]]) -> None:
    """The fake Umami's record of the API path, inserted as Umami on ClickHouse inserts it (JSONEachRow)."""
    for table, lines in inserts.items():
        if lines:
            chdb_server.run(f"INSERT INTO {database}.{table} FORMAT JSONEachRow " + "\n".join(lines), "CSV")


Query = Callable[[str, dict[str, str]], list[dict[str, Any]]]


def canonical(database: str, website: str, query: Query = chdb_server.rows) -> dict[str, Any]:
    """Every table of one website as multisets of rows, ids replaced by what they point at
    (``query`` runs a statement with parameters: the shared engine, or a server over HTTP)."""
    where = "WHERE website_id = {website:UUID}"

    def _rows(sql: str, website: str) -> list[dict[str, Any]]:
        return query(sql, {"website": website})

    events = _rows(f"SELECT * EXCEPT (lcp, inp, cls, fcp, ttfb) FROM {database}.website_event {where}", website)
    signature: dict[str, str] = {}
    visits: dict[str, list[str]] = {}
    sessions: dict[str, list[str]] = {}
    for event in events:
        text = json.dumps({k: v for k, v in event.items() if k not in _IDS}, sort_keys=True)
        signature[event["event_id"]] = text
        visits.setdefault(event["visit_id"], []).append(text)
        sessions.setdefault(event["session_id"], []).append(text)
    visit_of = {v: sorted(group) for v, group in visits.items()}
    session_of = {s: sorted(group) for s, group in sessions.items()}

    def table(sql: str, **refs: tuple[str, dict[str, Any]]) -> list[str]:
        out = []
        for row in _rows(sql, website):
            keep = {k: v for k, v in row.items() if k not in _IDS}
            for name, (column, lookup) in refs.items():
                keep[name] = lookup.get(row[column])
            out.append(json.dumps(keep, sort_keys=True))
        return sorted(out)

    hourly = (
        "SELECT session_id, visit_id, event_type, created_at, browser, os, device, screen, language, country, "
        "region, city, distinct_id, arraySort(groupArrayArray(hostname)) AS hostnames, "
        "arraySort(groupArrayArray(url_path)) AS paths, arraySort(groupArrayArray(referrer_domain)) AS referrers, "
        "arraySort(groupArrayArray(page_title)) AS titles, arraySort(groupArrayArray(event_name)) AS names, "
        "arraySort(groupArrayArray(utm_source)) AS sources, arraySort(groupArrayArray(tag)) AS tags, "
        "sum(views) AS views, min(min_time) AS first, max(max_time) AS last, "
        "argMinMerge(entry_url) AS entry, argMaxMerge(exit_url) AS exit "
        f"FROM {database}.website_event_stats_hourly {where} "
        "GROUP BY session_id, visit_id, event_type, created_at, browser, os, device, screen, language, country, "
        "region, city, distinct_id"
    )
    return {
        "website_event": sorted(signature.values()),
        "visits": sorted(visit_of.values()),
        "sessions": sorted(session_of.values()),
        "event_data": table(
            f"SELECT * FROM {database}.event_data {where}",
            event=("event_id", signature),
            session=("session_id", session_of),
        ),
        "session_data": table(f"SELECT * FROM {database}.session_data FINAL {where}"),
        "website_revenue": table(
            f"SELECT * FROM {database}.website_revenue {where}",
            event=("event_id", signature),
            session=("session_id", session_of),
        ),
        "website_event_stats_hourly": table(hourly, visit=("visit_id", visit_of)),
    }


def count(database: str, table: str, final: bool = False) -> int:
    return int(chdb_server.rows(f"SELECT count() AS n FROM {database}.{table}{' FINAL' if final else ''}")[0]["n"])
