"""Rows in doubt, settled by reading Umami back: stored (accepted) or not (to be sent again).

A request cut off mid-flight may have stored all, some or none of its rows, and
Umami's batch endpoint is not idempotent, so the sender lists such rows "in
doubt". With read credentials the question has an answer: Umami's session reads
(the ones its Sessions page uses) list a session's events with their time, type
and name. For each visitor (``payload.id``) with rows in doubt:

1. ``GET /api/websites/{id}/sessions?search=<visitor>&startAt&endAt`` finds the
   candidate sessions (the search matches substrings, of other columns too), and
   ``GET /api/websites/{id}/sessions/{session}`` keeps those whose ``distinctId``
   is the visitor;
2. ``GET .../sessions/{session}/activity?startAt&endAt`` lists their events in the
   rows' time range (at most 500 an answer: a full answer is split in halves);
3. a row's key is (timestamp to the second, event name or pageview). Where Umami
   holds no event with the key, none of the rows with it was stored: **absent**,
   send again. Where it holds as many as there are rows in doubt with it:
   **found**, accepted. Anything else (some of several identical rows, no
   visitor id, the API not answering) stays in doubt, and so does every row
   when not one visitor in doubt has a session Umami shows (the API may not
   answer as expected: resending could duplicate).

The caller checks that no other row of the import shares a found row's visitor
and second (see :mod:`.stream`): such a twin could be the one Umami holds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

#: Umami answers at most this many events per activity read.
ACTIVITY_LIMIT = 500
#: Sessions asked for per page of a search.
PAGE_SIZE = 100

Key = tuple[int, str | None]  # (unix seconds, event name; None for a pageview)
Place = tuple[str, int]  # (file, row) as the in-doubt file names a row


@dataclass
class Verdicts:
    """What reading back told about the rows in doubt."""

    found: set[Place] = field(default_factory=set)
    absent: set[Place] = field(default_factory=set)
    unknown: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def decided(self) -> int:
        return len(self.found) + len(self.absent)


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
    client: httpx.Client, base_url: str, website: str, headers: dict[str, str], records: Iterable[dict[str, Any]]
) -> Verdicts:
    """Settle each record of the in-doubt file as found, absent or unknown (see the module docstring)."""
    verdicts = Verdicts()
    by_visitor: dict[str, list[_Row]] = {}
    for record in records:
        row = _row_of(record)
        if row is None:
            verdicts.unknown += 1
        else:
            by_visitor.setdefault(row.visitor, []).append(row)
    reader = _Reader(client, f"{base_url}/api/websites/{website}", headers)
    seen_a_session = False
    for visitor, rows in by_visitor.items():
        try:
            stored = reader.stored_keys(visitor, min(r.key[0] for r in rows), max(r.key[0] for r in rows))
        except _Unreadable as exc:
            verdicts.unknown += len(rows)
            if len(verdicts.problems) < 3:
                verdicts.problems.append(str(exc))
            continue
        seen_a_session = seen_a_session or stored is not None
        _judge(rows, stored, verdicts)
    if verdicts.absent and not seen_a_session:
        # Not one visitor in doubt has a session Umami shows: that may as well mean the read
        # API does not answer as this module expects. Resending could duplicate: keep them.
        verdicts.unknown += len(verdicts.absent)
        verdicts.absent.clear()
        verdicts.problems.append("no session of any visitor in doubt could be found, so no row counts as missing")
    return verdicts


def _judge(rows: list[_Row], stored: Counter[Key] | None, verdicts: Verdicts) -> None:
    in_doubt = Counter(r.key for r in rows)
    for row in rows:
        held = 0 if stored is None else stored[row.key]
        if held == 0:
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
    """Authenticated GETs under ``/api/websites/{id}``."""

    def __init__(self, client: httpx.Client, site_url: str, headers: dict[str, str]) -> None:
        self.client = client
        self.site_url = site_url
        self.headers = headers

    def stored_keys(self, visitor: str, first: int, last: int) -> Counter[Key] | None:
        """Keys of the visitor's events stored in [first, last] seconds; None when it has no session."""
        start, end = first * 1000, last * 1000 + 999
        sessions = [s for s in self._candidates(visitor, start, end) if self._distinct_id(s) == visitor]
        if not sessions:
            return None
        keys: Counter[Key] = Counter()
        for session in sessions:
            for event in self._activity(session, start, end):
                keys[_event_key(event)] += 1
        return keys

    def _candidates(self, visitor: str, start: int, end: int) -> list[str]:
        found: list[str] = []
        page = 1
        while True:
            body = self._get(
                "/sessions",
                {"startAt": start, "endAt": end, "search": visitor, "page": page, "pageSize": PAGE_SIZE},
            )
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise _Unreadable(f"{self.site_url}/sessions answered without a session list")
            found += [str(s["id"]) for s in data if isinstance(s, dict) and s.get("id")]
            if len(data) < PAGE_SIZE or len(found) >= int(body.get("count") or 0):
                return found
            page += 1

    def _distinct_id(self, session: str) -> str | None:
        body = self._get(f"/sessions/{session}", {})
        if not isinstance(body, dict) or "distinctId" not in body:
            raise _Unreadable(f"{self.site_url}/sessions/{session} answered without a distinctId")
        return body["distinctId"]

    def _activity(self, session: str, start: int, end: int) -> list[dict[str, Any]]:
        events = self._get(f"/sessions/{session}/activity", {"startAt": start, "endAt": end})
        if not isinstance(events, list):
            raise _Unreadable(f"{self.site_url}/sessions/{session}/activity answered without a list")
        if len(events) < ACTIVITY_LIMIT:
            return events
        if end - start < 2000:  # a full answer for two seconds: the count cannot be told
            raise _Unreadable(f"more than {ACTIVITY_LIMIT} events of one session in one second")
        middle = (start + end) // 2
        return self._activity(session, start, middle) + self._activity(session, middle + 1, end)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = self.site_url + path
        try:
            response = self.client.get(url, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise _Unreadable(f"cannot read {url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise _Unreadable(f"{url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise _Unreadable(f"{url} answered something that is not JSON") from None


def _event_key(event: dict[str, Any]) -> Key:
    """(seconds, name) of an activity row: ``createdAt`` is ISO 8601 (``...T10:50:00.000Z``)."""
    created = str(event.get("createdAt") or "")
    try:
        seconds = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise _Unreadable(f"an event time Umami gave cannot be read: {created!r}") from None
    name = event.get("eventName") if event.get("eventType") == 2 else None
    return seconds, name or None
