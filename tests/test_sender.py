"""The send phase against a scripted Umami (httpx.MockTransport) and the fake server.

What matters: every row ends accepted, rejected or in doubt (never lost, never
counted twice), a request whose fate is unknown is never resent on its own,
and each visitor's events reach Umami in order.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from backfill.checkpoint import Checkpoint
from backfill.errors import ConfigError, TerminalSendError, TransientSendError
from backfill.ledger import Ledger
from backfill.rejects import RecordFile
from backfill.sinks.http import (
    IN_DOUBT_KILLED,
    SendOutcome,
    SendProgress,
    SendSettings,
    describe_element_error,
    make_client,
    preflight,
    read_batch_answer,
    regrouped,
    send_stream,
)
from backfill.sinks.http.doubt import DoubtRange, filter_records
from backfill.umami.api import RunRefusedError
from backfill.visits import CrossingVisits

WEBSITE = "5d8a2b1e-3c4f-4a6b-9e7d-1f2a3b4c5d6e"
UA = "Mozilla/5.0 umami-backfill/0.1"
FILES = ["exports/a.csv", "exports/b.csv"]
LANES = 8


# --------------------------------------------------------------------------- input


def element(seq: int, visitor: str, **extra: Any) -> str:
    payload = {"website": WEBSITE, "url": f"/p/{seq}", "id": visitor, "timestamp": 1709280000 + seq}
    payload.update(extra)
    return json.dumps({"type": "event", "payload": payload}, separators=(",", ":"))


def make_frames(
    n: int,
    *,
    visitors: int = 40,
    lanes: int = LANES,
    frame_rows: int = 500,
    extra: dict[int, dict[str, Any]] | None = None,
) -> list[pl.DataFrame]:
    """The prepared stream: contiguous _seq, rows alternating between two files."""
    extra = extra or {}
    frames = []
    for start in range(0, n, frame_rows):
        seqs = list(range(start, min(n, start + frame_rows)))
        who = [f"v{(s * 7) % visitors}" for s in seqs]
        frames.append(
            pl.DataFrame(
                {
                    "_seq": pl.Series(seqs, dtype=pl.UInt64),
                    "_ts": pl.Series([1709280000 + s for s in seqs], dtype=pl.Int64),
                    "_file": pl.Series([s % 2 for s in seqs], dtype=pl.UInt32),
                    "_row": pl.Series([s // 2 + 1 for s in seqs], dtype=pl.UInt64),
                    "_visitor": who,
                    "_lane": pl.Series([int(v[1:]) % lanes for v in who], dtype=pl.UInt16),
                    "_json": [element(s, v, **extra.get(s, {})) for s, v in zip(seqs, who, strict=True)],
                }
            )
        )
    return frames


def seq_of(el: dict[str, Any]) -> int:
    return int(el["payload"]["url"].rsplit("/", 1)[1])


def where(seq: int) -> tuple[str, int]:
    """(file, row) of a test row, as written in the record files."""
    return FILES[seq % 2], seq // 2 + 1


# --------------------------------------------------------------------------- a scripted Umami

Script = Callable[[int, list[dict[str, Any]], httpx.Request], Any]


class MockUmami:
    """/api/batch as Umami 3.1 answers it; ``script(call, elements, request)`` may override.

    A script returns an httpx.Response, raises/returns an exception, returns
    "store-then-timeout" (the batch lands but the answer never comes), or None
    for the normal behaviour.
    """

    def __init__(
        self, script: Script | None = None, body_limit: int | None = None, no_batch: int | None = None
    ) -> None:
        self.script = script
        self.body_limit = body_limit
        self.no_batch = no_batch  # the status /api/batch answers on a server without it (405 on Umami Cloud)
        self.lock = threading.Lock()
        self.stored: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.statuses: list[int] = []
        self.arrivals: list[int] = []  # seq of each element, in the order requests arrived

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/heartbeat":
            return httpx.Response(200, json={"ok": True})
        single = request.url.path == "/api/send"
        if self.no_batch is not None and not single:
            with self.lock:
                self.requests.append(request)
                self.statuses.append(self.no_batch)
            return httpx.Response(self.no_batch, text="<html>Method Not Allowed</html>")
        elements = [json.loads(request.content)] if single else json.loads(request.content)
        with self.lock:
            call = len(self.requests)
            self.requests.append(request)
            self.arrivals.extend(seq_of(e) for e in elements)
        if self.script is not None:
            scripted = self.script(call, elements, request)
            if scripted == "store-then-timeout":
                self.process(elements)
                raise httpx.ReadTimeout("timed out", request=request)
            if isinstance(scripted, Exception):
                raise scripted
            if scripted is not None:
                self.statuses.append(scripted.status_code)
                return scripted
        if self.body_limit is not None and len(request.content) > self.body_limit:
            self.statuses.append(413)
            return httpx.Response(413, text="<html>413 Request Entity Too Large</html>")
        self.statuses.append(200)
        answer = self.process(elements)
        return as_send_answer(answer) if single else answer

    def process(self, elements: list[dict[str, Any]]) -> httpx.Response:
        details = []
        for index, el in enumerate(elements):
            payload = el["payload"]
            if len(payload.get("name", "")) > 50:
                details.append({"index": index, "response": zod_error("name", 50)})
            elif len(payload.get("os", "")) > 20:
                details.append({"index": index, "response": db_error(20)})
            else:
                with self.lock:
                    self.stored.append(el)
        body = {
            "size": len(elements),
            "processed": len(elements) - len(details),
            "errors": len(details),
            "details": details,
            "cache": "token" if len(details) < len(elements) else None,
        }
        return httpx.Response(200, json=body)

    def stored_seqs(self) -> Counter[int]:
        return Counter(seq_of(e) for e in self.stored)


def as_send_answer(batch_answer: httpx.Response) -> httpx.Response:
    """What /api/send answers for the one element of a batch answer (Umami's batch is a loop over it)."""
    body = batch_answer.json()
    if body["details"]:
        error = body["details"][0]["response"]
        return httpx.Response(error["error"]["status"], json=error)
    return httpx.Response(200, json={"cache": body["cache"], "sessionId": "s", "visitId": "v"})


def zod_error(field: str, limit: int) -> dict[str, Any]:
    message = f"Too big: expected string to have <={limit} characters"
    return {
        "error": {
            "message": "Bad request",
            "code": "bad-request",
            "status": 400,
            "errors": [],
            "properties": {"payload": {"errors": [], "properties": {field: {"errors": [message]}}}},
        }
    }


def db_error(limit: int, nested: bool = False) -> dict[str, Any]:
    cause = {
        "originalCode": "22001",
        "originalMessage": f"value too long for type character varying({limit})",
        "kind": "LengthMismatch",
    }
    obj: dict[str, Any] = {"name": "PrismaClientKnownRequestError", "code": "P2010"}
    if nested:
        obj["meta"] = {"driverAdapterError": {"cause": cause}}
    else:
        obj["meta.driverAdapterError.cause"] = cause
    obj["stack"] = "PrismaClientKnownRequestError:\n    at secret/stack/trace.js:1:1"
    return {
        "error": {
            "message": "Server error",
            "code": "server-error",
            "status": 500,
            "errorObject": obj,
        }
    }


# --------------------------------------------------------------------------- running


class Run:
    """One state directory: checkpoint, rejects and in-doubt files survive between sends."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.cp_path = tmp_path / "checkpoint.json"
        self.rejects_path = tmp_path / "rejects.ndjson"
        self.in_doubt_path = tmp_path / "rejects.in-doubt.ndjson"

    def checkpoint(self) -> Checkpoint:
        return Checkpoint.load(self.cp_path) or Checkpoint.new({"host": "test"}, LANES)

    def send(
        self,
        frames: Iterable[pl.DataFrame],
        server: MockUmami | str,
        *,
        checkpoint: Checkpoint | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[SendProgress], None] | None = None,
        **settings: Any,
    ) -> tuple[SendOutcome, Checkpoint]:
        """Send to a MockUmami, or over real HTTP when ``server`` is a base URL."""
        options: dict[str, Any] = {"lanes": LANES, "backoff_base": 0.001, "concurrency": 2}
        options.update(settings)
        host = server if isinstance(server, str) else "http://umami.test/"
        transport = None if isinstance(server, str) else httpx.MockTransport(server)
        cp = checkpoint or self.checkpoint()
        outcome = send_stream(
            iter(frames),
            FILES,
            SendSettings(host=host, website=WEBSITE, user_agent=UA, **options),
            cp,
            self.cp_path,
            RecordFile(self.rejects_path),
            RecordFile(self.in_doubt_path),
            Ledger(),
            progress,
            stop or threading.Event(),
            transport=transport,
        )
        return outcome, cp

    def send_expecting(
        self, error: type[Exception], frames: Iterable[pl.DataFrame], server: MockUmami, **kw: Any
    ) -> tuple[Exception, SendOutcome, Checkpoint]:
        cp = kw.pop("checkpoint", None) or self.checkpoint()
        with pytest.raises(error) as info:
            self.send(frames, server, checkpoint=cp, **kw)
        return info.value, info.value.outcome, cp  # type: ignore[attr-defined]

    def records(self, which: str) -> list[dict[str, Any]]:
        path = self.rejects_path if which == "rejects" else self.in_doubt_path
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def assert_balanced(outcome: SendOutcome, total_rows: int | None = None) -> None:
    for ledger in (outcome.ledger, outcome.cumulative):
        assert ledger.read == ledger.accepted + ledger.rejected_total + ledger.in_doubt
    if total_rows is not None:
        assert outcome.cumulative.read == total_rows


# --------------------------------------------------------------------------- happy path


def test_every_row_is_stored_once_and_the_ledger_adds_up(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami()
    frames = make_frames(1500, frame_rows=400)
    outcome, cp = run.send(frames, server, batch_size=50)
    assert outcome.completed and not outcome.interrupted and outcome.error is None
    assert server.stored_seqs() == Counter(range(1500))
    assert outcome.ledger.accepted == outcome.cumulative.accepted == 1500
    assert_balanced(outcome, 1500)
    assert cp.phase == "complete"
    assert cp.lane_inflight == [None] * LANES
    sent = pl.concat(list(regrouped(frames, CrossingVisits.empty(), lanes=LANES)))  # the lanes the sender used
    lanes = sent.group_by("_lane").agg(pl.col("_seq").max())
    assert lanes.height == 2  # 400-row blocks fill two lanes of 200 rows: folded, not 8 small ones
    for lane, last in lanes.iter_rows():
        assert cp.lane_acked[lane] == last
    saved = Checkpoint.load(run.cp_path)
    assert saved is not None and saved.to_dict() == cp.to_dict()
    assert cp.runs[-1]["outcome"] == "complete"
    assert run.records("rejects") == [] and run.records("in-doubt") == []


def test_requests_carry_the_right_headers_and_no_cache_token(tmp_path: Path) -> None:
    server = MockUmami()
    Run(tmp_path).send(make_frames(100), server)
    for request in server.requests:
        assert request.url == "http://umami.test/api/batch"
        assert request.headers["user-agent"] == UA
        assert request.headers["content-type"] == "application/json"
        assert "x-umami-cache" not in request.headers


def test_body_is_the_prepared_json_joined(tmp_path: Path) -> None:
    server = MockUmami()
    frames = make_frames(30, visitors=1, lanes=1)
    Run(tmp_path).send(frames, server, batch_size=30, lanes=1, checkpoint=Checkpoint.new({}, 1))
    [request] = server.requests
    assert request.content == ("[" + ",".join(frames[0]["_json"]) + "]").encode()


def test_rows_already_acknowledged_are_skipped(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami()
    frames = make_frames(400)
    cp = Checkpoint.new({}, LANES)
    cp.phase = "sending"
    cp.lane_acked = [199] * LANES  # everything up to _seq 199 finished in an earlier run
    cp.send_ledger.read = cp.send_ledger.accepted = 200
    outcome, _ = run.send(frames, server, checkpoint=cp)
    assert server.stored_seqs() == Counter(range(200, 400))
    assert outcome.rows_skipped == 200
    assert outcome.ledger.accepted == 200
    assert outcome.cumulative.accepted == 400
    assert_balanced(outcome, 400)


def test_progress_reports_counts_and_rate(tmp_path: Path) -> None:
    seen: list[SendProgress] = []
    Run(tmp_path).send(make_frames(300), MockUmami(), progress=seen.append, batch_size=25)
    assert seen and seen[-1].rows_done == 300 and seen[-1].accepted == 300
    assert seen[-1].events_per_second > 0
    assert seen[-1].concurrency == 2
    assert seen[-1].last_latency is not None


# --------------------------------------------------------------------------- Umami's answers


def test_details_map_back_to_their_rows(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami()
    extra = {5: {"name": "n" * 51}, 17: {"os": "o" * 21}, 18: {"name": "x" * 60}}
    outcome, _ = run.send(make_frames(60, extra=extra), server, batch_size=20)
    assert server.stored_seqs() == Counter(set(range(60)) - {5, 17, 18})
    rejects = {(r["file"], r["row"]): r for r in run.records("rejects")}
    assert set(rejects) == {where(5), where(17), where(18)}
    name_reason = "Umami refused name: Too big: expected string to have <=50 characters"
    assert rejects[where(5)]["reason"] == name_reason
    assert rejects[where(5)]["field"] == "name"
    assert rejects[where(5)]["values"]["payload"]["name"] == "n" * 51
    db = rejects[where(17)]["reason"]
    assert db.startswith("Umami's database refused the row: value too long for type character varying(20)")
    assert "may have stored part of it" in db and "stack" not in db
    assert outcome.ledger.accepted == 57
    assert outcome.ledger.rejected[name_reason] == 2
    assert sorted(outcome.ledger.examples[name_reason]) == ["a.csv:10", "b.csv:3"]
    assert_balanced(outcome, 60)


def test_element_errors_are_described_from_the_recorded_shapes() -> None:
    nested = describe_element_error(db_error(50, nested=True))
    assert nested.reason.startswith("Umami's database refused the row: value too long for type character varying(50)")
    bad_type = {
        "error": {
            "message": "Bad request",
            "status": 400,
            "errors": [],
            "properties": {"type": {"errors": ['Invalid option: expected one of "event"']}},
        }
    }
    assert describe_element_error(bad_type).reason == ('Umami refused type: Invalid option: expected one of "event"')
    two = zod_error("title", 1)
    two["error"]["properties"]["payload"]["properties"]["name"] = {"errors": ["expected string"]}
    described = describe_element_error(two)
    assert described.field == "title,name"
    assert "title: " in described.reason and "name: expected string" in described.reason
    missing = {"error": {"message": "Website not found.", "code": "bad-request", "status": 400}}
    assert describe_element_error(missing).website_not_found


def test_read_batch_answer_checks_the_counts() -> None:
    ok = {"size": 3, "processed": 2, "errors": 1, "details": [{"index": 1, "response": {}}]}
    assert list(read_batch_answer({**ok, "cache": "t"}, 3).rejected) == [1]
    assert read_batch_answer({**ok, "cache": "t"}, 3).bot_dropped == []
    assert read_batch_answer(ok, 3).bot_dropped == [0, 2]  # no "cache" key at all
    all_invalid = {"size": 1, "processed": 0, "errors": 1, "details": [{"index": 0}], "cache": None}
    assert read_batch_answer(all_invalid, 1).bot_dropped == []
    for broken in (
        {**ok, "size": 4},
        {**ok, "processed": 3},
        {"beep": "boop"},
        [],
        {**ok, "details": [{"index": 7}]},
    ):
        with pytest.raises(ValueError):
            read_batch_answer(broken, 3)


def test_a_batch_dropped_as_bots_stops_the_run_and_is_not_accepted(tmp_path: Path) -> None:
    def bots(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> httpx.Response:
        n = len(elements)
        return httpx.Response(200, json={"size": n, "processed": n, "errors": 0, "details": []})

    run = Run(tmp_path)
    error, outcome, cp = run.send_expecting(
        TerminalSendError, make_frames(100), MockUmami(bots), batch_size=10, concurrency=1
    )
    assert "bot" in str(error) and "--user-agent" in str(error)
    assert outcome.ledger.accepted == 0
    # The rows carry no userAgent of their own: the run's User-Agent is refused, not the
    # rows; they stay unsent for a run with another --user-agent.
    assert run.records("rejects") == [] and outcome.ledger.rejected_total == 0
    assert cp.lane_acked == [-1] * LANES and cp.lane_inflight == [None] * LANES
    assert cp.phase == "sending"


def test_an_answer_that_does_not_add_up_puts_the_batch_in_doubt(tmp_path: Path) -> None:
    def lying(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"size": 99, "processed": 1, "errors": 0, "details": []})

    run, server = Run(tmp_path), MockUmami(lying)
    error, outcome, _ = run.send_expecting(TerminalSendError, make_frames(50), server, batch_size=10, concurrency=1)
    assert "does not match" in str(error)
    sent = len(json.loads(server.requests[0].content))
    assert outcome.ledger.in_doubt == sent and len(run.records("in-doubt")) == sent


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"message": "Website not found.", "code": "bad-request", "status": 400}},
            f"website {WEBSITE} does not exist on http://umami.test/",
        ),
        (401, {"error": {"message": "Unauthorized"}}, "answered 401"),
        (403, {"error": {"message": "Forbidden"}}, "IGNORE_IP"),
        (404, None, "answered HTTP 404"),
    ],
)
def test_refusals_of_the_whole_request_stop_without_advancing(
    tmp_path: Path, status: int, body: Any, expected: str
) -> None:
    def refuse(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body else httpx.Response(status)

    run = Run(tmp_path)
    error, outcome, cp = run.send_expecting(TerminalSendError, make_frames(100), MockUmami(refuse), batch_size=10)
    assert expected in str(error)
    assert cp.lane_acked == [-1] * LANES and cp.lane_inflight == [None] * LANES
    assert outcome.ledger.read == 0 and run.records("rejects") == []
    assert outcome.error == str(error)


def test_website_not_found_inside_the_details(tmp_path: Path) -> None:
    missing = {"error": {"message": "Website not found.", "code": "bad-request", "status": 400}}

    def refuse(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> httpx.Response:
        n = len(elements)
        details = [{"index": i, "response": missing} for i in range(n)]
        answer = {"size": n, "processed": 0, "errors": n, "details": details, "cache": None}
        return httpx.Response(200, json=answer)

    error, outcome, cp = Run(tmp_path).send_expecting(
        TerminalSendError, make_frames(40), MockUmami(refuse), batch_size=10
    )
    assert "UMAMI_WEBSITE_ID" in str(error)
    assert cp.lane_acked == [-1] * LANES and outcome.ledger.read == 0


# --------------------------------------------------------------------------- /api/send


def test_auto_goes_on_through_send_when_the_server_has_no_batch_endpoint(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami(no_batch=405)
    said: list[str] = []
    frames = make_frames(300, visitors=30)
    outcome = send_stream(
        iter(frames),
        FILES,
        SendSettings(host="http://umami.test/", website=WEBSITE, user_agent=UA, lanes=LANES, concurrency=4),
        cp := run.checkpoint(),
        run.cp_path,
        RecordFile(run.rejects_path),
        RecordFile(run.in_doubt_path),
        Ledger(),
        None,
        threading.Event(),
        transport=httpx.MockTransport(server),
        announce=said.append,
    )
    assert outcome.completed and outcome.ledger.accepted == 300
    assert server.stored_seqs() == Counter(range(300))  # every row once
    paths = [r.url.path for r in server.requests]
    assert paths.count("/api/batch") == 1 and paths[0] == "/api/batch"  # only the first request tried it
    assert all(len(json.loads(r.content)["payload"]) for r in server.requests[1:])  # one element each
    assert len(said) == 1 and "HTTP 405" in said[0] and "/api/send" in said[0]
    assert sum("/api/send" in n for n in outcome.notes) == 1
    assert cp.endpoint == "send" and Checkpoint.load(run.cp_path).endpoint == "send"  # type: ignore[union-attr]
    by_visitor: dict[str, list[int]] = defaultdict(list)
    for el in server.stored:
        by_visitor[el["payload"]["id"]].append(seq_of(el))
    assert all(seqs == sorted(seqs) for seqs in by_visitor.values())  # each visitor in time order


def test_a_resumed_import_keeps_the_endpoint_it_chose(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami(no_batch=405)
    stop = threading.Event()
    frames = make_frames(200)

    def stop_soon(snapshot: SendProgress) -> None:
        if snapshot.rows_done >= 20:
            stop.set()

    first, _ = run.send(frames, server, stop=stop, progress=stop_soon)
    assert first.interrupted
    server.requests.clear()
    second, _ = run.send(frames, server)
    assert second.completed and server.stored_seqs() == Counter(range(200))
    assert {r.url.path for r in server.requests} == {"/api/send"}  # not /api/batch again


def test_a_forced_batch_endpoint_the_server_lacks_is_refused_for_a_corrected_command(tmp_path: Path) -> None:
    error, outcome, cp = Run(tmp_path).send_expecting(
        RunRefusedError, make_frames(50), MockUmami(no_batch=405), endpoint="batch"
    )
    assert "HTTP 405" in str(error) and "--endpoint send" in str(error)
    assert cp.lane_acked == [-1] * LANES and outcome.ledger.read == 0


def test_send_answers_are_mapped_row_by_row(tmp_path: Path) -> None:
    extra = {3: {"name": "n" * 51}, 5: {"os": "o" * 21}}

    def script(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> Any:
        seq = seq_of(elements[0])
        if seq == 7:
            return httpx.Response(200, json={"beep": "boop"})
        if seq == 9:
            return httpx.Response(500, text="<html>502 Bad Gateway</html>")
        if seq == 11 and server.statuses.count(429) < 2:
            return httpx.Response(429, headers={"Retry-After": "0.1"})
        return None

    run, server = Run(tmp_path), MockUmami(script)
    outcome, _ = run.send(make_frames(40, extra=extra), server, endpoint="send", concurrency=1)
    reasons = {(r["file"], r["row"]): r["reason"] for r in run.records("rejects")}
    assert "<=50 characters" in reasons[where(3)]
    assert "value too long for type character varying(20)" in reasons[where(5)]
    assert "bot filter" in reasons[where(7)]
    assert [(r["file"], r["row"]) for r in run.records("in-doubt")] == [where(9)]
    assert server.statuses.count(429) == 2 and Counter(server.arrivals)[11] == 3
    assert outcome.ledger.accepted == 36 and outcome.ledger.rejected_total == 3 and outcome.ledger.in_doubt == 1
    assert_balanced(outcome, 40)


# --------------------------------------------------------------------------- sizes


def test_byte_cap_is_respected(tmp_path: Path) -> None:
    server = MockUmami()
    extra = {s: {"title": "t" * (s * 13 % 300)} for s in range(400)}
    outcome, _ = Run(tmp_path).send(make_frames(400, extra=extra), server, batch_size=200, max_body_bytes=2000)
    assert max(len(r.content) for r in server.requests) <= 2000
    assert server.stored_seqs() == Counter(range(400))
    assert outcome.ledger.accepted == 400


def test_a_row_larger_than_the_cap_is_rejected_without_sending(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami()
    outcome, _ = run.send(make_frames(50, extra={7: {"title": "t" * 5000}}), server, max_body_bytes=4000)
    assert 7 not in server.arrivals
    assert server.stored_seqs() == Counter(set(range(50)) - {7})
    [reject] = run.records("rejects")
    assert (reject["file"], reject["row"]) == where(7)
    assert "--max-body-bytes" in reject["reason"]
    assert_balanced(outcome, 50)


def test_413_halves_the_batch_and_learns_the_limit(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami(body_limit=3000)
    outcome, _ = run.send(make_frames(600), server, batch_size=100, concurrency=1)
    assert server.stored_seqs() == Counter(range(600))
    assert server.statuses.count(413) <= 3  # later batches are formed below the learned limit
    assert outcome.ledger.accepted == 600 and run.records("rejects") == []


def test_413_on_a_single_row_rejects_that_row(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami(body_limit=3000)
    frames = make_frames(80, extra={33: {"title": "t" * 4000}})
    outcome, _ = run.send(frames, server, batch_size=40, concurrency=1)
    assert server.stored_seqs() == Counter(set(range(80)) - {33})
    [reject] = run.records("rejects")
    assert (reject["file"], reject["row"]) == where(33)
    assert "body limit" in reject["reason"]
    assert_balanced(outcome, 80)


# --------------------------------------------------------------------------- transient faults


def test_429_is_retried_after_retry_after(tmp_path: Path) -> None:
    def limited(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> Any:
        if call < 2:
            return httpx.Response(429, headers={"Retry-After": "0.2"})
        return None

    server = MockUmami(limited)
    began = time.monotonic()
    outcome, _ = Run(tmp_path).send(make_frames(100), server, batch_size=50, concurrency=1)
    assert time.monotonic() - began >= 0.4
    assert server.stored_seqs() == Counter(range(100))
    assert server.statuses[:2] == [429, 429]
    assert outcome.ledger.accepted == 100


def test_connection_refused_and_503_are_retried(tmp_path: Path) -> None:
    def flaky(call: int, elements: list[dict[str, Any]], request: httpx.Request) -> Any:
        if call == 0:
            return httpx.ConnectError("connection refused", request=request)
        if call in (1, 2):
            return httpx.Response(503)
        if call == 3:
            return httpx.Response(502)
        return None

    server = MockUmami(flaky)
    outcome, _ = Run(tmp_path).send(make_frames(200), server, batch_size=50)
    assert server.stored_seqs() == Counter(range(200))
    assert outcome.ledger.accepted == 200 and outcome.ledger.in_doubt == 0


def test_retries_exhausted_stop_the_run_and_keep_the_batch_unsent(tmp_path: Path) -> None:
    server = MockUmami(lambda *_: httpx.Response(503))
    error, outcome, cp = Run(tmp_path).send_expecting(
        TransientSendError, make_frames(100), server, max_attempts=3, concurrency=1
    )
    assert "503" in str(error) and "3 attempts" in str(error)
    assert len(server.requests) == 3
    assert cp.lane_acked == [-1] * LANES and cp.lane_inflight == [None] * LANES
    assert outcome.ledger.read == 0 and outcome.cumulative.read == 0


def test_retries_exhausted_with_on_error_reject(tmp_path: Path) -> None:
    run = Run(tmp_path)
    outcome, cp = run.send(
        make_frames(60),
        MockUmami(lambda *_: httpx.Response(503)),
        max_attempts=2,
        on_error="reject",
        batch_size=20,
    )
    rejects = run.records("rejects")
    assert len(rejects) == 60
    assert {r["reason"] for r in rejects} == {"not sent: HTTP 503 on 2 attempts"}
    assert outcome.completed and cp.phase == "complete"
    assert_balanced(outcome, 60)


# --------------------------------------------------------------------------- in doubt


@pytest.mark.parametrize(
    "fault",
    [
        "store-then-timeout",
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(500, json={"error": {"message": "Server error"}}),
        httpx.Response(504),
    ],
    ids=["timeout-after-storing", "timeout", "reset", "500", "504"],
)
def test_a_batch_of_unknown_fate_is_recorded_in_doubt_and_never_resent(tmp_path: Path, fault: Any) -> None:
    def script(call: int, elements: list[dict[str, Any]], request: httpx.Request) -> Any:
        if 77 in [seq_of(e) for e in elements]:
            if isinstance(fault, httpx.TransportError):
                return type(fault)(str(fault), request=request)
            return fault
        return None

    run, server = Run(tmp_path), MockUmami(script)
    frames = make_frames(300)
    outcome, cp = run.send(frames, server, batch_size=20)
    doubt = run.records("in-doubt")
    doubt_seqs = {seq_of(r["values"]) for r in doubt}
    assert 77 in doubt_seqs and len(doubt) == len(doubt_seqs) <= 20
    assert all(r["reason"].startswith("in doubt") for r in doubt)
    assert Counter(server.arrivals)[77] == 1  # never sent again
    stored = server.stored_seqs()
    assert max(stored.values()) == 1
    assert set(stored) | doubt_seqs == set(range(300))
    assert outcome.ledger.in_doubt == len(doubt) and outcome.completed
    assert cp.in_doubt_rows == len(doubt) and len(cp.in_doubt_ranges) == 1
    assert_balanced(outcome, 300)
    assert any("--resend-in-doubt" in note for note in outcome.notes)


def test_a_server_that_stops_answering_stops_the_run(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami(lambda *_: httpx.Response(504))
    error, outcome, cp = run.send_expecting(TransientSendError, make_frames(400), server, batch_size=20, concurrency=1)
    assert "3 requests in a row" in str(error) and "resume" in str(error)
    assert len(server.requests) == 3  # not one more batch put at risk
    assert outcome.ledger.in_doubt == len(run.records("in-doubt")) == 60
    assert cp.in_doubt_rows == 60 and cp.phase == "sending"
    assert_balanced(outcome, 60)


def test_an_answer_that_is_not_umamis_stops_the_run(tmp_path: Path) -> None:
    page = httpx.Response(200, text="<html>Please log in</html>")
    run, server = Run(tmp_path), MockUmami(lambda *_: page)
    error, outcome, _ = run.send_expecting(TerminalSendError, make_frames(100), server, batch_size=20, concurrency=1)
    assert "not Umami's" in str(error) and "--host" in str(error)
    [request] = server.requests
    assert outcome.ledger.in_doubt == len(json.loads(request.content))


def test_resend_in_doubt_resends_earlier_ranges_and_clears_the_list(tmp_path: Path) -> None:
    def timeout_once(call: int, elements: list[dict[str, Any]], request: httpx.Request) -> Any:
        if 77 in [seq_of(e) for e in elements] and not hasattr(timeout_once, "done"):
            timeout_once.done = True  # type: ignore[attr-defined]
            return httpx.ReadTimeout("timed out", request=request)
        return None

    run, server = Run(tmp_path), MockUmami(timeout_once)
    frames = make_frames(300)
    first, _ = run.send(frames, server, batch_size=20)
    in_doubt = first.cumulative.in_doubt
    assert in_doubt > 0
    again, cp = run.send(frames, server, batch_size=20, resend_in_doubt=True)
    assert again.in_doubt_resent == in_doubt
    assert server.stored_seqs() == Counter(range(300))
    assert again.cumulative.in_doubt == 0 and again.cumulative.accepted == 300
    assert cp.in_doubt_ranges == [] and run.records("in-doubt") == []
    assert any("stored twice" in note for note in again.notes)
    assert_balanced(again, 300)


def test_doubt_range_pieces_follow_resolved_rows() -> None:
    r = DoubtRange(lane=2, first=10, last=90, count=5, seen=[10, 30, 50])
    assert r.pieces() == [[2, 10, 90, 5]]
    r.resolved = {10}
    assert r.pieces() == [[2, 30, 90, 4]]
    r.resolved = {30}
    assert r.pieces() == [[2, 10, 10, 1], [2, 50, 90, 3]]
    r.resolved = {10, 30, 50}
    assert r.pieces() == [[2, 51, 90, 2]]
    r.seen += [70, 90]
    r.resolved = {10, 30, 50, 70, 90}
    assert r.pieces() == []


# --------------------------------------------------------------------------- resume


def crash_snapshot(
    run: Run, at_call: int | None = None, holding: int | None = None
) -> tuple[MockUmami, dict[str, Any]]:
    """A server that copies the checkpoint as it is on disk when a chosen request arrives.

    The request is number ``at_call``, or the first whose batch holds row ``holding``.
    That copy, with the record files as they are then, is exactly what a process
    killed during that request leaves behind; :func:`restore_snapshot` puts it back.
    """
    state: dict[str, Any] = {}

    def script(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> None:
        chosen = call == at_call or holding in [seq_of(e) for e in elements]
        if chosen and "batch" not in state:
            shutil.copy(run.cp_path, run.dir / "killed.json")
            for path in (run.rejects_path, run.in_doubt_path):
                if path.exists():
                    shutil.copy(path, path.with_suffix(".killed"))
            state["stored_before"] = len(server.stored)
            state["batch"] = [seq_of(e) for e in elements]

    server = MockUmami(script)
    return server, state


def restore_snapshot(run: Run) -> None:
    shutil.copy(run.dir / "killed.json", run.cp_path)
    for path in (run.rejects_path, run.in_doubt_path):
        path.unlink(missing_ok=True)
        if path.with_suffix(".killed").exists():
            shutil.copy(path.with_suffix(".killed"), path)


@pytest.mark.parametrize("resend", [False, True])
def test_resume_after_a_kill_mid_request(tmp_path: Path, resend: bool) -> None:
    run = Run(tmp_path)
    frames = make_frames(400, frame_rows=100)
    server, state = crash_snapshot(run, at_call=7)
    run.send(frames, server, batch_size=20, concurrency=1)
    # The process "died" during request 7: Umami had stored that batch, the
    # checkpoint on disk says it was on the wire, later writes are lost.
    killed = Checkpoint.load(run.dir / "killed.json")
    assert killed is not None
    in_flight = [e for e in killed.lane_inflight if e is not None]
    assert len(in_flight) == 1 and in_flight[0][2] == len(state["batch"])
    server.stored = server.stored[: state["stored_before"] + len(state["batch"])]
    server.script = None
    restore_snapshot(run)
    server.arrivals.clear()
    outcome, cp = run.send(frames, server, batch_size=20, resend_in_doubt=resend)
    batch = set(state["batch"])
    doubt = run.records("in-doubt")
    if resend:
        assert batch <= set(server.arrivals)
        assert server.stored_seqs() == Counter(range(400)) + Counter(batch)  # duplicates
        assert doubt == [] and outcome.cumulative.in_doubt == 0
        assert outcome.in_doubt_resent == len(batch)
    else:
        assert not batch & set(server.arrivals)
        assert server.stored_seqs() == Counter(range(400))
        assert {seq_of(r["values"]) for r in doubt} == batch
        assert {r["reason"] for r in doubt} == {IN_DOUBT_KILLED}
        assert outcome.in_doubt_recorded_on_resume == len(batch)
        assert outcome.cumulative.in_doubt == len(batch)
        assert cp.in_doubt_rows == len(batch)
    assert cp.phase == "complete" and cp.lane_inflight == [None] * LANES
    assert_balanced(outcome, 400)


def test_a_kill_while_resending_in_doubt_rows_counts_them_once(tmp_path: Path) -> None:
    run = Run(tmp_path)
    frames = make_frames(300)

    def timeout_on_77(call: int, elements: list[dict[str, Any]], request: httpx.Request) -> Any:
        if 77 in [seq_of(e) for e in elements]:
            return httpx.ReadTimeout("timed out", request=request)
        return None

    first, _ = run.send(frames, MockUmami(timeout_on_77), batch_size=20)
    doubt_before = run.records("in-doubt")
    # The resend run is killed while the in-doubt batch is on the wire again.
    server, _ = crash_snapshot(run, holding=77)
    run.send(frames, server, batch_size=20, resend_in_doubt=True)
    restore_snapshot(run)
    outcome, cp = run.send(frames, MockUmami(), batch_size=20)
    assert outcome.cumulative.in_doubt == first.cumulative.in_doubt == len(doubt_before)
    assert run.records("in-doubt") == doubt_before
    assert outcome.in_doubt_recorded_on_resume == 0
    assert any("--resend-in-doubt resends them" in note for note in outcome.notes)
    assert not any("did the prepared data change" in note for note in outcome.notes)
    assert cp.in_doubt_rows == len(doubt_before) and cp.lane_inflight == [None] * LANES
    assert_balanced(outcome, 300)


def test_record_files_are_filtered_by_row_in_both_formats() -> None:
    ndjson = (
        b'{"file":"a.csv","row":1,"values":{}}\n{"file":"a.csv","row":2}\n{"file":"a.csv","row":1,"reason":"again"}\n'
    )
    kept = filter_records(ndjson, "ndjson", lambda f, r: int(r) == 1)
    assert kept == b'{"file":"a.csv","row":1,"reason":"again"}\n'
    csv_text = b'file,row,field,reason,values\na.csv,1,,"x, y","{""a"":1}"\na.csv,2,,z,\n'
    kept = filter_records(csv_text, "csv", lambda f, r: r == "1")
    assert kept == b'file,row,field,reason,values\na.csv,1,,"x, y","{""a"":1}"\n'


def test_resume_truncates_what_a_crashed_run_wrote_after_its_checkpoint(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.rejects_path.write_text('{"file":"client-side","row":1}\n')
    frames = make_frames(100, extra={3: {"name": "n" * 60}})
    cp = Checkpoint.new({}, LANES)
    cp.phase = "sending"  # a resume: the prepare stage covered the first line
    cp.rejects_offset = run.rejects_path.stat().st_size
    with run.rejects_path.open("a") as fh:
        fh.write('{"file":"exports/b.csv","row":2,"reason":"written after the checkpoint"}\n')
    run.in_doubt_path.write_text('{"file":"exports/a.csv","row":9}\n')
    outcome, _ = run.send(frames, MockUmami(), checkpoint=cp)
    rejects = run.records("rejects")
    assert [r["file"] for r in rejects] == ["client-side", "exports/b.csv"]
    assert rejects[1]["reason"].startswith("Umami refused name")
    assert run.records("in-doubt") == []
    assert outcome.ledger.rejected_total == 1


def test_first_send_keeps_the_prepare_stage_rejects(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.rejects_path.write_text('{"file":"client-side","row":1}\n')
    cp = Checkpoint.new({}, LANES)  # phase "preparing": offsets not recorded yet
    run.send(make_frames(20), MockUmami(), checkpoint=cp)
    assert run.records("rejects") == [{"file": "client-side", "row": 1}]
    assert cp.rejects_offset == run.rejects_path.stat().st_size


def test_stop_then_resume_sends_everything_exactly_once(tmp_path: Path) -> None:
    run, server = Run(tmp_path), MockUmami()
    frames = make_frames(2000, frame_rows=250)
    stop = threading.Event()

    def stop_after_some(p: SendProgress) -> None:
        if p.rows_done >= 300:
            stop.set()

    first, cp = run.send(frames, server, batch_size=25, stop=stop, progress=stop_after_some)
    assert first.interrupted and not first.completed and first.error is None
    assert cp.phase == "sending" and cp.lane_inflight == [None] * LANES
    assert 300 <= len(server.stored) < 2000
    second, cp = run.send(frames, server, batch_size=25)
    assert second.completed
    assert server.stored_seqs() == Counter(range(2000))
    assert second.cumulative.accepted == 2000
    assert first.ledger.accepted + second.ledger.accepted == 2000
    assert [r["outcome"] for r in cp.runs] == ["interrupted", "complete"]


def test_a_changed_lane_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lanes"):
        Run(tmp_path).send(make_frames(10), MockUmami(), checkpoint=Checkpoint.new({}, 4))


# --------------------------------------------------------------------------- order and memory


def test_each_visitor_arrives_in_order_with_several_requests_in_flight(tmp_path: Path) -> None:
    lanes = 64
    busy: dict[int, int] = defaultdict(int)
    in_flight = peak = 0
    guard = threading.Lock()
    lane_of: dict[int, int] = {}
    frames = make_frames(3000, visitors=300, lanes=lanes, frame_rows=700)
    for frame in regrouped(frames, CrossingVisits.empty(), lanes=lanes):  # the lanes the sender uses
        lane_of.update(zip(frame["_seq"].to_list(), frame["_lane"].to_list(), strict=True))

    def slow(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> None:
        nonlocal in_flight, peak
        lanes_here = {lane_of[seq_of(e)] for e in elements}
        assert len(lanes_here) == 1  # a batch holds one lane
        [lane] = lanes_here
        with guard:
            busy[lane] += 1
            in_flight += 1
            peak = max(peak, in_flight)
            assert busy[lane] == 1  # never two requests of one lane at once
        time.sleep(random.uniform(0, 0.002))
        with guard:
            busy[lane] -= 1
            in_flight -= 1

    server = MockUmami(slow)
    outcome, _ = Run(tmp_path).send(
        frames,
        server,
        batch_size=20,
        concurrency=4,
        lanes=lanes,
        checkpoint=Checkpoint.new({}, lanes),
    )
    assert outcome.completed and 2 <= peak <= 4
    by_visitor: dict[str, list[int]] = defaultdict(list)
    for el in server.stored:
        by_visitor[el["payload"]["id"]].append(seq_of(el))
    assert len(by_visitor) == 300
    for seqs in by_visitor.values():
        assert seqs == sorted(seqs)
    assert server.stored_seqs() == Counter(range(3000))


def test_memory_stays_bounded_while_reading(tmp_path: Path) -> None:
    yielded = 0
    worst = 0

    def stream() -> Iterator[pl.DataFrame]:
        nonlocal yielded
        for frame in make_frames(3000, visitors=50, lanes=4, frame_rows=100):
            yielded += frame.height
            yield frame

    def watch(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> None:
        nonlocal worst
        worst = max(worst, yielded - len(server.stored))

    server = MockUmami(watch)
    outcome, _ = Run(tmp_path).send(
        stream(),
        server,
        batch_size=10,
        concurrency=1,
        lanes=4,
        checkpoint=Checkpoint.new({}, 4),
    )
    bound = max(20 * 10 * 1, 2 * 4 * 10)
    assert outcome.completed and server.stored_seqs() == Counter(range(3000))
    assert worst <= bound + 100 + 10


# --------------------------------------------------------------------------- preflight


def _settings(**kw: Any) -> SendSettings:
    options: dict[str, Any] = {"host": "http://umami.test", "website": WEBSITE, "user_agent": UA}
    options.update(kw)
    return SendSettings(**options)


def test_preflight_passes_against_a_healthy_server() -> None:
    settings = _settings()
    with make_client(settings, httpx.MockTransport(MockUmami())) as client:
        preflight(settings, client)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda r: httpx.Response(404), "answered HTTP 404"),
        (lambda r: httpx.Response(502), "answered HTTP 502"),
        (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)), "cannot reach"),
    ],
)
def test_preflight_explains_a_wrong_or_dead_host(
    answer: Callable[[httpx.Request], httpx.Response], expected: str
) -> None:
    settings = _settings()
    with (
        make_client(settings, httpx.MockTransport(answer)) as client,
        pytest.raises(TerminalSendError) as info,
    ):
        preflight(settings, client)
    assert expected in str(info.value)
    assert "http://umami.test/api/heartbeat" in str(info.value)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"website": "not-a-uuid"}, "not a UUID"),
        ({"user_agent": "python-httpx/0.28.1"}, "bot filter"),
        ({"user_agent": "curl/8.0"}, "bot filter"),
    ],
)
def test_preflight_refuses_bad_settings(kw: dict[str, Any], expected: str) -> None:
    settings = _settings(**kw)
    with (
        make_client(settings, httpx.MockTransport(MockUmami())) as client,
        pytest.raises(ConfigError, match=expected),
    ):
        preflight(settings, client)


@pytest.mark.parametrize(
    "kw",
    [{"batch_size": 501}, {"batch_size": 0}, {"on_error": "ignore"}, {"host": "umami.test"}],
)
def test_settings_are_checked(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _settings(**kw)


# --------------------------------------------------------------------------- the fake server

fake_umami = pytest.importorskip("tests.fake_umami")


def test_over_http_every_event_lands_once_and_in_order(tmp_path: Path) -> None:
    with fake_umami.FakeUmami() as server:
        server.add_website(WEBSITE)
        preflight(_settings(host=server.url))  # with a client of its own
        frames = make_frames(2000, visitors=120, frame_rows=300)
        outcome, cp = Run(tmp_path).send(frames, server.url, batch_size=50, concurrency=None)
        events = server.events(WEBSITE)
        assert server.internal_errors == []
    assert outcome.completed and cp.phase == "complete"
    assert Counter(int(e["url_path"].rsplit("/", 1)[1]) for e in events) == Counter(range(2000))
    by_visitor: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_visitor[e["distinct_id"]].append(int(e["url_path"].rsplit("/", 1)[1]))
    assert all(seqs == sorted(seqs) for seqs in by_visitor.values())
    assert outcome.ledger.accepted == 2000
    assert_balanced(outcome, 2000)


def test_over_http_faults_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with fake_umami.FakeUmami(max_body_bytes=5000) as server:
        server.add_website(WEBSITE)
        server.faults.rate_limit(times=2, retry_after=0.1)
        server.faults.unavailable(times=1)
        server.faults.reset_after(3, skip=6)  # stores 3 elements of a batch, then a TCP reset
        frames = make_frames(1500, visitors=60, frame_rows=250)
        outcome, _ = run.send(frames, server.url, batch_size=60, concurrency=3)
        stored = Counter(int(e["url_path"].rsplit("/", 1)[1]) for e in server.events(WEBSITE))
        statuses = Counter(entry["status"] for entry in server.request_log)
    doubt = {seq_of(r["values"]) for r in run.records("in-doubt")}
    assert statuses[413] >= 1 and statuses[429] == 2 and statuses[503] == 1
    assert max(stored.values()) == 1  # nothing stored twice
    assert set(stored) | doubt == set(range(1500))  # nothing lost without a trace
    assert len(set(stored) & doubt) == 3  # the prefix Umami kept before the reset
    assert outcome.completed and outcome.ledger.in_doubt == len(doubt)
    assert run.records("rejects") == []
    assert_balanced(outcome, 1500)
