"""The benchmark's tools work: bench/receiver.py answers like Umami's collection API, and
bench/run.py runs every case end to end at a tiny size. No timings are asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

BENCH = ROOT / "bench"


@pytest.fixture
def receiver() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "receiver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_receiver_answers_batch_send_and_heartbeat(receiver: str) -> None:
    elements = [
        {"type": "event", "payload": {"website": "w", "url": "/a", "id": "v1"}},
        # A data object whose first key is "type": counted as one element all the same.
        {"type": "event", "payload": {"website": "w", "name": "x", "data": {"type": "pro", "n": [1, {"type": 2}]}}},
        {"type": "identify", "payload": {"website": "w", "id": "v2", "data": {"plan": "a\\"}}},
    ]
    with httpx.Client(base_url=receiver) as client:
        assert client.get("/api/heartbeat").status_code == 200
        batch = client.post("/api/batch", json=elements)
        assert batch.status_code == 200
        assert batch.json() == {"size": 3, "processed": 3, "errors": 0, "details": [], "cache": "x"}
        send = client.post("/api/send", json=elements[0])
        assert send.status_code == 200
        assert set(send.json()) == {"cache", "sessionId", "visitId"}
        assert client.post("/api/batch", content=b'{"not": "an array"}').status_code == 400
        assert client.post("/api/send", content=b"[1, 2]").status_code == 400
        assert client.get("/nowhere").status_code == 404
        # Many requests on one keep-alive connection, then the counters.
        for _ in range(20):
            assert client.post("/api/batch", json=elements[:2]).json()["size"] == 2
        stats = client.get("/__stats").json()
    assert stats["batches"] == 21 and stats["elements"] == 43 and stats["sends"] == 1 and stats["bad"] == 2
    assert stats["connections"] == 1


def test_the_importer_accepts_the_receivers_answers(receiver: str, tmp_path: Path) -> None:
    from backfill.sinks.http import read_batch_answer

    body = [{"type": "event", "payload": {"website": "w"}}] * 5
    answer = httpx.post(receiver + "/api/batch", json=body).json()
    verdict = read_batch_answer(answer, 5)
    assert verdict.rejected == {} and verdict.bot_dropped == [] and not verdict.website_not_found


def test_bench_run_plumbing_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--out-dir",
            str(out),
            "--only",
            "dry,send,latency,baseline",  # the GA4 generator and reader have their own tests
            "--sizes",
            "1k",
            "--formats",
            "csv",
            "--send-rows",
            "1k",
            "--latency-rows",
            "1k",
            "--latency-ms",
            "10",
            "--concurrency-levels",
            "2",
            "--baseline-events",
            "20",
            "--baseline-slow-events",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    cases = {r["case"]: r for r in results["results"]}
    assert cases["validate csv 1k"]["rows"] == 1_000
    sends = [r for r in results["results"] if r["kind"] == "send"]
    assert len(sends) == 3  # instant, adaptive at 10 ms, --concurrency 2 at 10 ms
    for run in sends:
        assert run["accepted"] == run["received_by_receiver"] > 0
        assert run["send_s"] > 0 and run["checkpoint_saves"] > 0
    assert [r["rows"] for r in results["results"] if r["kind"] == "baseline"] == [20, 3]
    names = [t["name"] for t in results["targets"]]
    assert "send ceiling (instant receiver, 1k)" in names
    assert "checkpoint wait / worker time (instant)" in names
    assert "adaptive vs best fixed (10 ms)" in names
    assert all(t["pass"] in (True, False, None) for t in results["targets"])
    assert "verdict" in proc.stdout and ("PASS" in proc.stdout or "MISS" in proc.stdout)
    # Generated inputs are cached by size, format and seed.
    assert (out / "events-1k-seed7.csv").exists()
