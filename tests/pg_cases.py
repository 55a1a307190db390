"""Replaying the recorded Umami cases through the database sink's derivation and writer.

Each recorded request (``tests/data/umami_cases.json``) becomes a block of prepared
rows exactly as the pipeline would hand it to a sink: the element as JSON, its
location key (from the CDN headers the case sent), time and source position.
What the sink stores is then read back in the shape the recording uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from backfill.geo import SEPARATOR
from backfill.schema import COL_FILE, COL_GEO, COL_JSON, COL_LANE, COL_ROW, COL_TS, COL_VISITOR, COL_VKEY

CASES_FILE = Path(__file__).parent / "data" / "umami_cases.json"
#: Cases whose recorded rows cannot be compared: "now" is not a fixed time, the
#: 600-element batch recorded only its first and last rows, and a millisecond
#: timestamp never reaches a sink (validation refuses it as "milliseconds, not seconds").
NOT_COMPARABLE = {"no timestamp means now", "batch: 600 elements", "millisecond timestamp"}


def load_cases() -> tuple[str, list[dict[str, Any]]]:
    data = json.loads(CASES_FILE.read_text())
    return data["default_user_agent"], data["cases"]


def stored_cases() -> list[dict[str, Any]]:
    """The cases where Umami answered 200 and stored at least one row."""
    _, cases = load_cases()
    out = []
    for case in cases:
        stored = case["stored"]
        if case["status"] != 200 or not stored or case["name"] in NOT_COMPARABLE:
            continue
        if any(stored[table] for table in stored):
            out.append(case)
    return out


def elements(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The elements Umami processed: a batch's failed indexes are left out (our checks refuse them)."""
    body = case["request_body"]
    if not isinstance(body, list):
        return [body]
    failed = {detail["index"] for detail in case["response"].get("details", [])}
    return [element for i, element in enumerate(body) if i not in failed]


def geo_key(headers: dict[str, str]) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    if "cf-ipcountry" not in lowered:
        return ""
    return SEPARATOR.join(lowered.get(h, "") for h in ("cf-ipcountry", "cf-region-code", "cf-ipcity"))


def block_for(case: dict[str, Any], website: str, file_index: int = 0) -> pl.DataFrame:
    rows = []
    geo = geo_key(case["request_headers"])
    for i, element in enumerate(elements(case)):
        element = json.loads(json.dumps(element).replace("<uuid>", website))
        payload = element["payload"]
        rows.append(
            {
                COL_TS: int(payload.get("timestamp") or 0),
                COL_FILE: file_index,
                COL_ROW: i + 1,
                COL_VISITOR: payload.get("id"),
                COL_LANE: 0,
                COL_JSON: json.dumps(element, ensure_ascii=False),
                COL_GEO: "" if payload.get("ip") else geo,
                COL_VKEY: None,
                "_seq": i,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            COL_TS: pl.Int64,
            COL_FILE: pl.UInt32,
            COL_ROW: pl.UInt64,
            COL_VISITOR: pl.String,
            COL_LANE: pl.UInt16,
            COL_JSON: pl.String,
            COL_GEO: pl.String,
            COL_VKEY: pl.UInt64,
            "_seq": pl.UInt64,
        },
    )


def user_agent_of(case: dict[str, Any], default: str) -> str:
    return {k.lower(): v for k, v in case["request_headers"].items()}.get("user-agent", default)


def _iso(value: Any) -> Any:
    return value.astimezone().strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "astimezone") else value


def read_back(conn: Any, website: str) -> dict[str, list[dict[str, Any]]]:
    """The stored rows of one website, in the recording's shape (ids left out)."""
    conn.execute("SET TIME ZONE 'UTC'")

    def rows(sql: str) -> list[dict[str, Any]]:
        cur = conn.execute(sql, (website,))
        names = [d.name for d in cur.description]
        return [{n: _iso(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

    sessions = rows(
        "SELECT distinct_id, browser, os, device, screen, language, country, region, city, created_at "
        "FROM session WHERE website_id = %s"
    )
    events = rows(
        "SELECT s.distinct_id, e.event_type, e.event_name, e.url_path, e.url_query, e.hostname, e.page_title, "
        "e.referrer_domain, e.referrer_path, e.referrer_query, e.utm_source, e.utm_medium, e.utm_campaign, "
        "e.gclid, e.tag, e.created_at, dense_rank() OVER (PARTITION BY e.session_id ORDER BY v.first) AS visit_no "
        "FROM website_event e JOIN session s USING (session_id) "
        "JOIN (SELECT visit_id, min(created_at) AS first FROM website_event GROUP BY visit_id) v USING (visit_id) "
        "WHERE e.website_id = %s"
    )
    event_data = rows(
        "SELECT data_key, string_value, number_value::text AS number_value, data_type FROM event_data "
        "WHERE website_id = %s"
    )
    revenue = rows("SELECT event_name, currency, revenue::text AS revenue FROM revenue WHERE website_id = %s")
    session_data = rows("SELECT data_key, string_value, data_type FROM session_data WHERE website_id = %s")
    return {
        "sessions": sessions,
        "events": events,
        "event_data": event_data,
        "revenue": revenue,
        "session_data": session_data,
    }


def as_multiset(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    return sorted(json.dumps({k: row.get(k) for k in keys}, sort_keys=True, default=str) for row in rows)


def visit_partition(events: list[dict[str, Any]]) -> list[list[str]]:
    """Which events share a visit, independent of how visits are numbered or named."""
    groups: dict[tuple[Any, Any], list[str]] = {}
    for row in events:
        signature = json.dumps({k: v for k, v in row.items() if k != "visit_no"}, sort_keys=True, default=str)
        groups.setdefault((row["distinct_id"], row["visit_no"]), []).append(signature)
    return sorted(sorted(group) for group in groups.values())


# --------------------------------------------------------------------------- whole imports, compared


def _event_signature(row: dict[str, Any]) -> str:
    keep = {k: v for k, v in row.items() if k not in ("event_id", "website_id", "session_id", "visit_id")}
    return json.dumps(keep, sort_keys=True, default=str)


def canonical(
    sessions: list[dict[str, Any]],
    events: list[dict[str, Any]],
    event_data: list[dict[str, Any]],
    revenue: list[dict[str, Any]],
    session_data: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every table as a multiset of rows with ids replaced by what they point at, so two
    stores that hold the same data compare equal whatever ids they minted."""
    distinct = {s["session_id"]: s.get("distinct_id") for s in sessions}
    by_event = {}
    visits: dict[tuple[Any, Any], list[str]] = {}
    for event in events:
        event = {**event, "distinct_id": distinct.get(event["session_id"])}
        signature = _event_signature(event)
        by_event[event["event_id"]] = signature
        visits.setdefault((event["session_id"], event["visit_id"]), []).append(signature)

    def rows(table: list[dict[str, Any]], drop: tuple[str, ...], **refs: str) -> list[str]:
        out = []
        for row in table:
            keep = {k: v for k, v in row.items() if k not in drop}
            for name, column in refs.items():
                keep[name] = (by_event if name == "event" else distinct).get(row[column])
            out.append(json.dumps(keep, sort_keys=True, default=str))
        return sorted(out)

    return {
        "session": rows(sessions, ("session_id", "website_id")),
        "website_event": sorted(by_event.values()),
        "visits": sorted(sorted(group) for group in visits.values()),
        "event_data": rows(
            event_data, ("event_data_id", "website_id", "website_event_id", "session_id"), event="website_event_id"
        ),
        "revenue": rows(revenue, ("revenue_id", "website_id", "session_id", "event_id"), event="event_id"),
        "session_data": rows(session_data, ("session_data_id", "website_id", "session_id"), owner="session_id"),
    }


def canonical_from_fake(fake: Any, website: str) -> dict[str, Any]:
    return canonical(
        fake.sessions(website),
        [{k: v for k, v in e.items() if k != "distinct_id"} for e in fake.events(website)],
        fake.event_data(website),
        fake.revenue(website),
        fake.session_data(website),
    )


_DATE_VALUE = """to_char(date_value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS date_value"""


def canonical_from_database(conn: Any, website: str) -> dict[str, Any]:
    conn.execute("SET TIME ZONE 'UTC'")

    def rows(sql: str) -> list[dict[str, Any]]:
        cur = conn.execute(sql, (website,))
        names = [d.name for d in cur.description]
        return [{n: _text(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

    events = rows(
        "SELECT event_id, website_id, session_id, visit_id, event_type, event_name, url_path, url_query, hostname, "
        "page_title, referrer_domain, referrer_path, referrer_query, tag, utm_source, utm_medium, utm_campaign, "
        "utm_content, utm_term, gclid, fbclid, msclkid, ttclid, li_fat_id, twclid, created_at "
        "FROM website_event WHERE website_id = %s"
    )
    return canonical(
        rows(
            "SELECT session_id, website_id, browser, os, device, screen, language, country, region, city, "
            "distinct_id, created_at FROM session WHERE website_id = %s"
        ),
        events,
        rows(
            "SELECT event_data_id, website_id, website_event_id, data_key, string_value, number_value::text AS "
            f"number_value, {_DATE_VALUE}, data_type, created_at FROM event_data WHERE website_id = %s"
        ),
        rows(
            "SELECT revenue_id, website_id, session_id, event_id, event_name, currency, revenue::text AS revenue, "
            "created_at FROM revenue WHERE website_id = %s"
        ),
        rows(
            "SELECT session_data_id, website_id, session_id, data_key, string_value, number_value::text AS "
            f"number_value, {_DATE_VALUE}, data_type, distinct_id, created_at FROM session_data "
            "WHERE website_id = %s"
        ),
    )


def _text(value: Any) -> Any:
    """Database values in the fake's shapes: UUIDs and times as text, times at whole seconds, UTC."""
    import datetime as dt
    import uuid as uuid_module

    if isinstance(value, uuid_module.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value
