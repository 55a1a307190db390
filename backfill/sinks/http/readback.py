"""Rows in doubt, settled by reading Umami back: stored (accepted) or not (to be sent again).

A request cut off mid-flight may have stored all, some or none of its rows, and
Umami's collection endpoints are not idempotent, so the sender lists such rows
"in doubt". With read credentials the question has an answer: Umami's session
reads (the ones its Sessions page uses) list a session's events with their
time, type and name. For each visitor (``payload.id``) with rows in doubt:

1. ``GET .../websites/{id}/sessions?distinctId=eq.<visitor>&search=<visitor>&startAt&endAt``
   finds its session. Without the ``distinctId`` filter the search matches
   substrings (visitor ``u1`` finds ``u12``, ``u100``, ... and a city or
   browser containing it): thousands of candidates, each to be looked at, and
   pages of a list ordered by a time that ties (PostgreSQL's ``limit/offset``
   then repeats or skips rows between pages). The list has one row per session
   *and hostname* (Umami groups by both), and on ClickHouse it reads an hourly
   table whose rows carry the start of their hour, so the range starts at the
   hour and session ids are deduplicated. ``GET .../sessions/{session}`` then
   checks its ``distinctId`` (a server that ignored the filter is caught);
2. ``GET .../sessions/{session}/activity?startAt&endAt`` lists its events in the
   rows' time range (at most 500 an answer: a full answer is split in halves);
3. a row's key is (timestamp to the second, event name or pageview). Where Umami
   holds no event with the key, none of the rows with it was stored: **absent**,
   send again. Where it holds as many as there are rows in doubt with it:
   **found**, accepted. Anything else (some of several identical rows, no
   visitor id, the API not answering) stays in doubt, and so does every row
   when not one visitor in doubt has a session Umami shows (the API may not
   answer as expected: resending could duplicate), and every row the API cannot
   show (Umami Cloud shows an account without a subscription its last six
   months only: ``visible_since``).

The reads run on a few threads and end at a deadline: the rows not looked at by
then stay in doubt, and the next run of the same command reads them again.

The caller checks that no other row of the import shares a found row's visitor
and second (see :mod:`.stream`): such a twin could be the one Umami holds.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ...umami.api import ReadApi, ReadTimeUp

#: Umami answers at most this many events per activity read.
ACTIVITY_LIMIT = 500
#: Sessions asked for per page of a search.
PAGE_SIZE = 100
#: Visitors read back at once (Umami Cloud's API paces them anyway).
READ_WORKERS = 4
#: Problems quoted in the note (the rest are counted).
MAX_PROBLEMS = 3

Key = tuple[int, str | None]  # (unix seconds, event name; None for a pageview)
Place = tuple[str, int]  # (file, row) as the in-doubt file names a row


@dataclass
class Verdicts:
    """What reading back told about the rows in doubt."""

    found: set[Place] = field(default_factory=set)
    absent: set[Place] = field(default_factory=set)
    unknown: int = 0
    problems: list[str] = field(default_factory=list)
    not_read: int = 0  # rows whose visitor was not read before the deadline (part of ``unknown``)

    @property
    def decided(self) -> int:
        return len(self.found) + len(self.absent)

    def problem(self, text: str) -> None:
        if text not in self.problems and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


@dataclass(frozen=True)
class _Row:
    place: Place
    visitor: str
    key: Key


def in_doubt_records(path: Path) -> list[dict[str, Any]]:
    """The records of an NDJSON in-doubt file (the last one for a row that is listed twice)."""
    if not path.exists():
        return []
    latest: dict[Place, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            latest[(str(record.get("file")), int(record.get("row", -1)))] = record
    return list(latest.values())


def read_back(
    api: ReadApi,
    website: str,
    records: Iterable[dict[str, Any]],
    *,
    visible_since: int | None = None,
    workers: int = READ_WORKERS,
) -> Verdicts:
    """Settle each record of the in-doubt file as found, absent or unknown (see the module docstring).

    ``visible_since`` (unix seconds): the API shows nothing older, so an older row
    that is not found stays unknown. ``api.deadline`` bounds the whole read.
    """
    verdicts = Verdicts()
    by_visitor: dict[str, list[_Row]] = {}
    for record in records:
        row = _row_of(record)
        if row is None:
            verdicts.unknown += 1
        else:
            by_visitor.setdefault(row.visitor, []).append(row)
    reader = _Reader(api, website)
    lock = threading.Lock()
    seen_a_session = False

    def settle(visitor: str, rows: list[_Row]) -> None:
        nonlocal seen_a_session
        try:
            stored = reader.stored_keys(visitor, min(r.key[0] for r in rows), max(r.key[0] for r in rows))
        except ReadTimeUp:
            with lock:
                verdicts.unknown += len(rows)
                verdicts.not_read += len(rows)
            return
        except _Unreadable as exc:
            with lock:
                verdicts.unknown += len(rows)
                verdicts.problem(str(exc))
            return
        with lock:
            seen_a_session = seen_a_session or stored is not None
            _judge(rows, stored, verdicts, visible_since)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="umami-read-back") as pool:
        for future in [pool.submit(settle, v, rows) for v, rows in by_visitor.items()]:
            future.result()
    if verdicts.absent and not seen_a_session:
        # Not one visitor in doubt has a session Umami shows: that may as well mean the read
        # API does not answer as this module expects. Resending could duplicate: keep them.
        verdicts.unknown += len(verdicts.absent)
        verdicts.absent.clear()
        verdicts.problem("no session of any visitor in doubt could be found, so no row counts as missing")
    return verdicts


def _judge(rows: list[_Row], stored: Counter[Key] | None, verdicts: Verdicts, visible_since: int | None) -> None:
    in_doubt = Counter(r.key for r in rows)
    for row in rows:
        held = 0 if stored is None else stored[row.key]
        if held == 0 and visible_since is not None and row.key[0] < visible_since:
            verdicts.unknown += 1
            since = datetime.fromtimestamp(visible_since, UTC).strftime("%Y-%m-%d")
            verdicts.problem(f"Umami's API shows nothing before {since} to this account: older rows cannot be told")
        elif held == 0:
            verdicts.absent.add(row.place)
        elif held == in_doubt[row.key]:
            verdicts.found.add(row.place)
        else:
            verdicts.unknown += 1


def _row_of(record: dict[str, Any]) -> _Row | None:
    values = record.get("values")
    payload = values.get("payload") if isinstance(values, dict) else None
    if not isinstance(payload, dict):
        return None
    visitor, timestamp, name = payload.get("id"), payload.get("timestamp"), payload.get("name")
    if not isinstance(visitor, str) or not visitor or isinstance(timestamp, bool):
        return None
    try:
        seconds = int(timestamp)
    except (TypeError, ValueError):
        return None
    if seconds <= 0 or (name is not None and not isinstance(name, str)):
        return None
    key = (seconds, name[:50] if name else None)  # Umami cuts event names to 50 characters
    return _Row((str(record.get("file")), int(record.get("row", -1))), visitor, key)


class _Unreadable(Exception):
    """The read API did not answer as expected: the rows stay in doubt."""


class _Reader:
    """The session reads under ``{api}/websites/{id}``."""

    def __init__(self, api: ReadApi, website: str) -> None:
        self.api = api
        self.path = f"/websites/{website}"

    def stored_keys(self, visitor: str, first: int, last: int) -> Counter[Key] | None:
        """Keys of the visitor's events stored in [first, last] seconds; None when it has no session."""
        start, end = first * 1000, last * 1000 + 999
        sessions = [s for s in self._candidates(visitor, start, end) if self._distinct_id(s) == visitor]
        if not sessions:
            return None
        keys: Counter[Key] = Counter()
        seen: set[str] = set()
        for session in sessions:
            for event in self._activity(session, start, end):
                event_id = str(event.get("eventId") or "")
                if event_id and event_id in seen:
                    continue
                seen.add(event_id)
                keys[_event_key(event)] += 1
        return keys

    def _candidates(self, visitor: str, start: int, end: int) -> list[str]:
        """Session ids listed for the visitor, each once, from the start of ``start``'s hour."""
        params: dict[str, Any] = {"startAt": start - start % 3_600_000, "endAt": end, "search": visitor}
        if "," not in visitor:  # Umami splits an equals filter's value at commas
            params["distinctId"] = f"eq.{visitor}"
        found: dict[str, None] = {}
        page = 1
        while True:
            body = self._get("/sessions", params | {"page": page, "pageSize": PAGE_SIZE})
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise _Unreadable(f"{self.api.base}{self.path}/sessions answered without a session list")
            found.update((str(s["id"]), None) for s in data if isinstance(s, dict) and s.get("id"))
            count = _count(body)
            if len(data) < PAGE_SIZE or page * PAGE_SIZE >= count:
                break
            page += 1
        if page > 1 and "distinctId" not in params:
            # Pages of a list ordered by a time that ties may repeat or skip sessions: a missing
            # one would make its rows look absent.
            raise _Unreadable(f"{count} sessions match the visitor {visitor!r}: too many to tell which is its own")
        return list(found)

    def _distinct_id(self, session: str) -> str | None:
        body = self._get(f"/sessions/{session}", {})
        if not isinstance(body, dict) or "distinctId" not in body:
            raise _Unreadable(f"{self.api.base}{self.path}/sessions/{session} answered without a distinctId")
        return body["distinctId"]

    def _activity(self, session: str, start: int, end: int) -> list[dict[str, Any]]:
        events = self._get(f"/sessions/{session}/activity", {"startAt": start, "endAt": end})
        if not isinstance(events, list):
            raise _Unreadable(f"{self.api.base}{self.path}/sessions/{session}/activity answered without a list")
        if len(events) < ACTIVITY_LIMIT:
            return events
        if end - start < 2000:  # a full answer for two seconds: the count cannot be told
            raise _Unreadable(f"more than {ACTIVITY_LIMIT} events of one session in one second")
        middle = (start + end) // 2
        return self._activity(session, start, middle) + self._activity(session, middle + 1, end)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.api.base}{self.path}{path}"
        try:
            response = self.api.get(self.path + path, params)
        except httpx.HTTPError as exc:
            raise _Unreadable(f"cannot read {url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _Unreadable(f"{url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise _Unreadable(f"{url} answered something that is not JSON") from None


def _count(body: dict[str, Any]) -> int:
    try:
        return int(body.get("count") or 0)
    except (TypeError, ValueError):
        return 0


def _event_key(event: dict[str, Any]) -> Key:
    """(seconds, name) of an activity row: ``createdAt`` is ISO 8601 (``...T10:50:00.000Z``; on
    ClickHouse ``...T10:50:00.000000Z`` or without the zone, which is UTC)."""
    created = str(event.get("createdAt") or "")
    try:
        moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise _Unreadable(f"an event time Umami gave cannot be read: {created!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    name = event.get("eventName") if event.get("eventType") == 2 else None
    return int(moment.timestamp()), name or None
