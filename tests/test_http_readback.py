"""Rows in doubt settled by reading Umami back (read credentials given): found -> accepted,
not found -> sent again; without credentials they stay in doubt."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from backfill.sinks.http.readback import read_back
from backfill.umami.api import ReadApi, auth_headers
from tests.conftest import run_cli
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami
from tests.test_geo_visits import _mapping, _sessions_rows, _write

LOGIN = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}
UA = "Mozilla/5.0 umami-backfill/0.1"
T0 = 1_709_280_000


def _api(client: httpx.Client, server: FakeUmami) -> ReadApi:
    return ReadApi(client, server.url + "/api", auth_headers(client, server.url + "/api", LOGIN))


def _element(site: str, visitor: str, ts: int, url: str, name: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"website": site, "id": visitor, "timestamp": ts, "url": url, "hostname": "example.com"}
    if name:
        payload["name"] = name
    return {"type": "event", "payload": payload}


def test_read_back_tells_stored_from_missing_and_leaves_what_it_cannot_tell(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        stored = [
            _element(site, "alice", T0, "/a"),
            _element(site, "alice", T0 + 60, "/b", "signup"),
            _element(site, "bob", T0 + 5, "/a"),
            _element(site, "bob", T0 + 5, "/a"),  # twice in one second: one of three below
            _element(site, "alice-2", T0, "/x"),  # a visitor whose id contains "alice"
        ]
        with httpx.Client(headers={"User-Agent": UA}) as client:
            answer = client.post(f"{server.url}/api/batch", json=stored).json()
            assert answer["errors"] == 0
            records = [
                {"file": "f.csv", "row": 1, "values": _element(site, "alice", T0, "/a")},
                {"file": "f.csv", "row": 2, "values": _element(site, "alice", T0 + 60, "/b", "signup")},
                {"file": "f.csv", "row": 3, "values": _element(site, "alice", T0 + 120, "/c")},  # never stored
                {"file": "f.csv", "row": 4, "values": _element(site, "carol", T0, "/a")},  # no session at all
                {"file": "f.csv", "row": 5, "values": _element(site, "bob", T0 + 5, "/a")},
                {"file": "f.csv", "row": 6, "values": _element(site, "bob", T0 + 5, "/a")},
                {"file": "f.csv", "row": 7, "values": _element(site, "bob", T0 + 5, "/a")},
                {"file": "f.csv", "row": 8, "values": {"type": "event", "payload": {"website": site, "url": "/"}}},
            ]
            verdicts = read_back(_api(client, server), site, records)
    assert verdicts.found == {("f.csv", 1), ("f.csv", 2)}
    assert verdicts.absent == {("f.csv", 3), ("f.csv", 4)}
    assert verdicts.unknown == 4  # bob's three identical rows (two stored), and one without an id


@pytest.mark.parametrize("store", ["postgres", "clickhouse"])
def test_read_back_tells_each_visitor_from_look_alikes_with_few_reads(store: str) -> None:
    """Visitor ids that contain each other (``u1``, ``u12``, ``u120``, as generated ids do),
    rows in doubt in the middle of an hour (Umami on ClickHouse lists sessions by the hour),
    a session on two hostnames (one list row per hostname): each row is told exactly, with
    three reads per visitor, not one per look-alike."""
    with FakeUmami(store=store) as server:
        site = server.add_website()
        visitors = ["u1", "u12", "u120", "u1201", "u2"]
        stored = [
            _element(site, v, T0 + 600 + 60 * i + 3600 * h, f"/{v}/{h}") for i, v in enumerate(visitors) for h in (0, 1)
        ]
        stored.append(
            {"type": "event", "payload": {**_element(site, "u12", T0 + 900, "/x")["payload"], "hostname": "b.example"}}
        )
        with httpx.Client(headers={"User-Agent": UA}) as client:
            assert client.post(f"{server.url}/api/batch", json=stored).json()["errors"] == 0
            records = [
                {"file": "f.csv", "row": 1, "values": _element(site, "u12", T0 + 660, "/u12/0")},  # stored
                {"file": "f.csv", "row": 2, "values": _element(site, "u12", T0 + 3600 + 660, "/u12/1")},  # stored
                {"file": "f.csv", "row": 3, "values": _element(site, "u12", T0 + 700, "/y")},  # never stored
                {"file": "f.csv", "row": 4, "values": _element(site, "u1", T0 + 1000, "/z")},  # never stored
                {"file": "f.csv", "row": 5, "values": _element(site, "u120", T0 + 720, "/u120/0")},  # stored
                {"file": "f.csv", "row": 6, "values": _element(site, "u3", T0 + 700, "/w")},  # no session
            ]
            server.request_log.clear()
            verdicts = read_back(_api(client, server), site, records)
            reads = [e for e in server.request_log if e["path"].startswith("/api/websites")]
    assert verdicts.found == {("f.csv", 1), ("f.csv", 2), ("f.csv", 5)}
    assert verdicts.absent == {("f.csv", 3), ("f.csv", 4), ("f.csv", 6)}
    assert verdicts.unknown == 0 and not verdicts.problems
    assert len(reads) <= 3 * 4 + 1  # a list, a session and its activity per visitor found; a list for u3


def test_rows_older_than_the_api_shows_are_never_called_missing() -> None:
    """Umami Cloud shows an account without a subscription six months: older rows not found stay in doubt."""
    with FakeUmami() as server:
        site = server.add_website()
        with httpx.Client(headers={"User-Agent": UA}) as client:
            assert (
                client.post(f"{server.url}/api/batch", json=[_element(site, "ann", T0 + 10, "/a")]).json()["errors"]
                == 0
            )
            records = [
                {
                    "file": "f.csv",
                    "row": 1,
                    "values": _element(site, "ann", T0 - 90_000, "/old"),
                },  # before: cannot tell
                {"file": "f.csv", "row": 2, "values": _element(site, "ann", T0 + 10, "/a")},  # stored
                {"file": "f.csv", "row": 3, "values": _element(site, "ann", T0 + 20, "/b")},  # after: not stored
            ]
            verdicts = read_back(_api(client, server), site, records, visible_since=T0 - 3600)
    assert verdicts.found == {("f.csv", 2)} and verdicts.absent == {("f.csv", 3)} and verdicts.unknown == 1
    assert any("shows nothing before" in p for p in verdicts.problems)


def test_read_back_ends_at_its_deadline_and_leaves_the_rest_in_doubt() -> None:
    with FakeUmami() as server:
        site = server.add_website()
        with httpx.Client(headers={"User-Agent": UA}) as client:
            elements = [_element(site, f"v{i}", T0 + i, "/a") for i in range(40)]
            assert client.post(f"{server.url}/api/batch", json=elements).json()["errors"] == 0
            records = [{"file": "f.csv", "row": i, "values": e} for i, e in enumerate(elements)]
            api = _api(client, server)
            server.faults.latency_ms = 100  # a server under load: about 0.3 s per visitor
            api.deadline = time.monotonic() + 1.0
            began = time.monotonic()
            verdicts = read_back(api, site, records)
            took = time.monotonic() - began
    assert took < 3  # bounded by the deadline, not by the 40 visitors' 12 s of reads
    assert verdicts.not_read > 0 and verdicts.unknown == verdicts.not_read
    assert len(verdicts.found) + verdicts.unknown == 40 and not verdicts.absent


def test_read_back_calls_nothing_missing_when_it_finds_no_session_at_all(tmp_path: Path) -> None:
    """Absence of every visitor may mean a read API that does not answer as expected."""
    with FakeUmami() as server:
        site = server.add_website()
        with httpx.Client(headers={"User-Agent": UA}) as client:
            records = [{"file": "f.csv", "row": i, "values": _element(site, f"v{i}", T0 + i, "/a")} for i in range(3)]
            verdicts = read_back(_api(client, server), site, records)
    assert not verdicts.found and not verdicts.absent and verdicts.unknown == 3
    assert verdicts.problems


def test_a_killed_import_resumed_with_credentials_ends_with_nothing_in_doubt(tmp_path: Path) -> None:
    from tests.test_e2e_import import Paths, Processes, import_args, kill_after_batches

    rows = _sessions_rows(300, seed=3)
    source = _write(tmp_path / "events.csv", rows)
    paths = Paths.under(tmp_path)
    procs = Processes(tmp_path)
    with FakeUmami() as server:
        site = server.add_website()
        server.faults.latency_ms = 30  # a batch on the wire at the kill is stored all the same
        server.faults.hang(times=2, skip=12, seconds=30)  # these two are never stored
        args = import_args(source, _mapping(tmp_path), server, site, paths, "--batch-size", "10", "--timeout", "2")
        kill_after_batches(procs, args, server, 25)
        in_flight = [e for e in json.loads(paths.checkpoint.read_text())["lane_inflight"] if e]
        assert in_flight  # the kill left batches whose fate the importer does not know
        server.faults.latency_ms = 0
        final = run_cli(*args, timeout=90, env=LOGIN)
        assert final.code == 0, final.stdout + final.stderr
        stored = collections.Counter(e["url_path"] for e in server.events(site))
    report = paths.report_json()
    assert report["ledger"]["balances"] and report["ledger"]["in_doubt"] == 0
    assert report["ledger"]["accepted"] == len(rows)
    assert paths.in_doubt_records() == []
    assert stored == collections.Counter(r["url"] for r in rows)  # every row once: none lost, none twice
    [note] = [n for n in report["notes"] if n.startswith("rows in doubt read back from Umami")]
    found, sent_again, unknown = (int(w.replace(",", "")) for w in note.split() if w.replace(",", "").isdigit())
    assert found > 0 and sent_again >= 2 and unknown == 0, note  # both ways of settling were taken


def test_without_credentials_rows_in_doubt_stay_in_doubt(tmp_path: Path) -> None:
    from tests.test_e2e_import import Paths, Processes, import_args, kill_after_batches

    rows = _sessions_rows(200, seed=4)
    source = _write(tmp_path / "events.csv", rows)
    paths = Paths.under(tmp_path)
    procs = Processes(tmp_path)
    with FakeUmami() as server:
        site = server.add_website()
        server.faults.latency_ms = 30
        args = import_args(source, _mapping(tmp_path), server, site, paths, "--batch-size", "10")
        kill_after_batches(procs, args, server, 20)
        server.faults.latency_ms = 0
        final = run_cli(*args, timeout=90)
        assert final.code in (0, 1), final.stdout + final.stderr
    report = paths.report_json()
    assert report["ledger"]["balances"] and report["ledger"]["in_doubt"] == len(paths.in_doubt_records()) > 0
    assert not any("read back from Umami" in n for n in report["notes"])
