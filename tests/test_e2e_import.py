"""End to end: the real ``backfill import`` process against the fake Umami, checked on what the server stored.

Every test starts its own :class:`FakeUmami` on an ephemeral port and works in
its own ``tmp_path`` (rejects, in-doubt file, checkpoint, report), so the file
runs in parallel workers. The importer always runs as a subprocess, exactly as
a user runs it; the assertions read the server's tables, the rejects and
in-doubt files and the ``--report`` JSON, never the log lines alone.

Generated inputs give every row a unique URL path (``/p/<i>`` for data row
``i + 1``), so a stored event names the source row it came from.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import MAPPINGS, ROOT, SAMPLES, run_cli
from tests.fake_umami import FakeUmami

PYTHON = sys.executable
#: A browser UA that passes Umami's bot check (and the importer's).
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36"
)
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
GENERATED_MAPPING = """\
version: 1
description: generated events for the end-to-end tests
timestamp: {column: time, format: iso8601}
visitor: {columns: [visitor]}
type: event
fields:
  hostname: host
  url: path
  name: event
  userAgent: ua
  ip: ip
  data.note: note
filters:
  - name: test traffic
    drop: "is_test = 'true'"
"""
BOT_MAPPING = """\
version: 1
timestamp: {column: time, format: iso8601}
visitor: {columns: [visitor]}
fields:
  hostname: {const: shop.example.com}
  url: path
  userAgent: ua
keep_bots: true
"""
SAMPLE_CASES = [
    ("events.csv", "sample_events.yaml"),
    ("events.parquet", "sample_events_parquet.yaml"),
    ("events.ndjson.gz", "sample_events_ndjson.yaml"),
]
ID_REASON_PREFIX = "id: the visitor column(s) are empty"


# --------------------------------------------------------------------------- generated inputs


@dataclass
class Generated:
    """A generated CSV and the fate each data row (1-based) must have."""

    path: Path
    mapping: Path
    rows: int
    sendable: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)  # refused by the importer's own checks
    skipped: set[int] = field(default_factory=set)  # dropped by the mapping's filter


def generate_events(
    directory: Path,
    n: int,
    *,
    visitors: int,
    seed: int,
    name: str = "events.csv",
    reject_every: int = 0,
    skip_every: int = 0,
    ua: str | None = None,
    special: dict[int, dict[str, Any]] | None = None,
) -> Generated:
    """``n`` events of ``visitors`` visitors over 60 days, not in time order (the importer sorts).

    Row ``i`` (0-based) has the path ``/p/<i>``. Every ``reject_every``-th row has
    no visitor (a client-side reject), every ``skip_every``-th is test traffic
    (skipped by the filter). ``special`` overrides columns of chosen rows.
    """
    rnd = random.Random(seed)
    start = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp())
    gen = Generated(directory / name, directory / "generated.yaml", n)
    columns = ("time", "visitor", "host", "path", "event", "ua", "ip", "note", "is_test")
    cols: dict[str, list[Any]] = {k: [] for k in columns}
    for i in range(n):
        row = i + 1
        when = start + rnd.randrange(60 * 86_400)
        visitor: str | None = f"visitor-{rnd.randrange(visitors):06d}"
        is_test = "false"
        if reject_every and i % reject_every == reject_every - 1:
            visitor = None
            gen.rejected.add(row)
        elif skip_every and i % skip_every == skip_every // 2:
            is_test = "true"
            gen.skipped.add(row)
        else:
            gen.sendable.add(row)
        values = {
            "time": dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "visitor": visitor,
            "host": "shop.example.com",
            "path": f"/p/{i}",
            "event": rnd.choice([None, None, None, "signup", "download"]),
            "ua": ua or rnd.choice([CHROME_UA, IPHONE_UA]),
            "ip": None,
            "note": None,
            "is_test": is_test,
        }
        values.update((special or {}).get(row, {}))
        for key, value in values.items():
            cols[key].append(value)
    pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.String)).write_csv(gen.path)
    gen.mapping.write_text(GENERATED_MAPPING)
    return gen


def row_of_path(path: str) -> int:
    """Source data row (1-based) of a generated ``/p/<i>`` path."""
    assert path.startswith("/p/"), path
    return int(path[3:]) + 1


def stored_rows(server: FakeUmami, site: str) -> Counter[int]:
    """How many times the server stored each generated source row."""
    return Counter(row_of_path(e["url_path"]) for e in server.events(site))


def batch_requests(server: FakeUmami, path: str = "/api/batch") -> list[dict[str, Any]]:
    return [r for r in list(server.request_log) if r["path"] == path]


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Paths:
    tmp: Path
    rejects: Path
    in_doubt: Path
    report: Path
    checkpoint: Path

    @classmethod
    def under(cls, tmp: Path) -> Paths:
        return cls(
            tmp,
            tmp / "rejects.ndjson",
            tmp / "rejects.in-doubt.ndjson",
            tmp / "report.json",
            tmp / ".backfill-state" / "checkpoint.json",
        )

    def report_json(self) -> dict[str, Any]:
        return json.loads(self.report.read_text())

    def rejects_records(self) -> list[dict[str, Any]]:
        return read_ndjson(self.rejects)

    def in_doubt_records(self) -> list[dict[str, Any]]:
        return read_ndjson(self.in_doubt)

    def checkpoint_phase(self) -> str | None:
        try:
            return json.loads(self.checkpoint.read_text())["phase"]
        except (FileNotFoundError, ValueError, KeyError):
            return None


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def import_args(
    source: Path,
    mapping: Path,
    server: FakeUmami | None,
    site: str | None,
    paths: Paths,
    *extra: str | os.PathLike[str],
) -> list[str | os.PathLike[str]]:
    args: list[str | os.PathLike[str]] = ["import", source, "--mapping", mapping]
    if server is not None:
        args += ["--host", server.url]
    if site is not None:
        args += ["--website", site]
    args += ["--rejects", paths.rejects, "--report", paths.report, *extra]
    return args


class Processes:
    """Background ``backfill`` processes of one test; any left running are killed at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str | os.PathLike[str]], tag: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UMAMI_")}
        out = open(self.tmp / f"{tag}.stdout", "wb")  # noqa: SIM115 - closed with the process
        err = open(self.tmp / f"{tag}.stderr", "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [PYTHON, "-m", "backfill", *map(str, args)], cwd=ROOT, env=env, stdout=out, stderr=err
            )
        finally:
            out.close()
            err.close()
        self.started.append(proc)
        return proc

    def output(self, tag: str) -> tuple[str, str]:
        return (
            (self.tmp / f"{tag}.stdout").read_text(errors="replace"),
            (self.tmp / f"{tag}.stderr").read_text(errors="replace"),
        )

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def server() -> Iterator[FakeUmami]:
    with FakeUmami() as s:
        yield s


def wait_until(predicate: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 2 ms while ``proc`` runs; fail if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the import ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, "the import ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def kill_after_batches(
    procs: Processes,
    args: list[Any],
    server: FakeUmami,
    batches: int,
    tag: str = "run1",
    path: str = "/api/batch",
) -> None:
    """Start an import, SIGKILL it once the fake Umami has seen ``batches`` requests to ``path``."""
    try:
        proc = procs.start(args, tag)
        wait_until(lambda: len(batch_requests(server, path)) >= batches, proc, 60, f"{batches} requests to {path}")
        kill9(proc)
    finally:
        procs.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- shared checks


def assert_ledger_adds_up(ledger: dict[str, Any]) -> None:
    total = (
        ledger["accepted"] + ledger["rejected"] + ledger["skipped"] + ledger["in_doubt"] + ledger.get("not_sent_yet", 0)
    )
    assert total == ledger["read"], ledger
    assert sum(ledger["rejected_by_reason"].values()) == ledger["rejected"], ledger
    assert ledger["balances"] is True, ledger


def assert_client_rejects(records: list[dict[str, Any]], gen: Generated) -> None:
    """The rejects file lists each client-side reject exactly once, on its row."""
    client = [r for r in records if r["reason"].startswith(ID_REASON_PREFIX)]
    assert Counter(r["row"] for r in client) == Counter(gen.rejected)
    assert all(r["file"] == str(gen.path) and r["field"] == "id" for r in client)


def assert_exactly_once_except_in_doubt(stored: Counter[int], gen: Generated, in_doubt_rows: set[int]) -> None:
    """Nothing doubled, nothing unsendable stored, nothing lost but the rows listed as in doubt."""
    doubled = {row: n for row, n in stored.items() if n > 1}
    assert not doubled, f"rows stored more than once: {sorted(doubled.items())[:10]}"
    assert set(stored) <= gen.sendable, f"unsendable rows stored: {sorted(set(stored) - gen.sendable)[:10]}"
    assert in_doubt_rows <= gen.sendable
    lost = gen.sendable - set(stored) - in_doubt_rows
    assert not lost, f"{len(lost)} sendable rows neither stored nor in doubt, e.g. {sorted(lost)[:10]}"


def assert_in_doubt_file_matches(paths: Paths, report: dict[str, Any]) -> set[int]:
    records = paths.in_doubt_records()
    rows = [r["row"] for r in records]
    assert len(rows) == len(set(rows)), "a row is listed twice in the in-doubt file"
    assert report["ledger"]["in_doubt"] == len(records)
    for record in records:
        assert record["reason"].startswith("in doubt"), record
        assert record["values"]["payload"]["url"] == f"/p/{record['row'] - 1}", record
    return set(rows)


def stored_key(event: dict[str, Any]) -> tuple[Any, ...]:
    created = int(dt.datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp())
    return (event["distinct_id"], created, event["url_path"], event["url_query"] or "", event["event_name"])


def payload_key(element: dict[str, Any]) -> tuple[Any, ...]:
    p = element["payload"]
    url = urllib.parse.urlsplit(urllib.parse.urljoin(f"https://{p.get('hostname', 'localhost')}/", p["url"]))
    path = urllib.parse.unquote(url.path) + (f"#{url.fragment}" if url.fragment else "")
    return (p["id"], p["timestamp"], path, url.query, p.get("name"))


# --------------------------------------------------------------------------- 1. exact delivery


@pytest.mark.parametrize(("sample", "mapping"), SAMPLE_CASES)
def test_import_stores_exactly_what_validate_would_send(sample, mapping, server, expected, tmp_path: Path) -> None:
    """Server's stored events == the validate --out payloads (as a multiset); ledger, exit code, rejects agree."""
    site = server.add_website()
    paths = Paths.under(tmp_path)
    source, mapping_path = SAMPLES / sample, MAPPINGS / mapping
    payloads_file, validate_rejects = tmp_path / "payloads.ndjson", tmp_path / "validate-rejects.ndjson"
    dry = run_cli(
        "validate",
        source,
        "--mapping",
        mapping_path,
        "--website",
        site,
        "--out",
        payloads_file,
        "--rejects",
        validate_rejects,
        "--quiet",
        timeout=60,
    )
    assert dry.code == 1, dry.stderr
    payloads = read_ndjson(payloads_file)
    assert len(payloads) == expected[sample]["would_send"]

    result = run_cli(*import_args(source, mapping_path, server, site, paths, "--batch-size", "50"), timeout=60)
    assert result.code == 1, result.stdout + result.stderr  # client-side rejects exist, nothing else
    assert "Traceback" not in result.stderr

    events = server.events(site)
    assert Counter(map(stored_key, events)) == Counter(map(payload_key, payloads))
    assert {e["event_type"] for e in events} <= {1, 2}
    assert server.internal_errors == []

    report = paths.report_json()
    led = report["ledger"]
    assert_ledger_adds_up(led)
    assert led["read"] == expected[sample]["read"]
    assert led["accepted"] == len(payloads) == len(events)
    assert led["in_doubt"] == 0 and led["not_sent_yet"] == 0
    assert led["skipped_by_filter"] == expected[sample]["skipped_by_filter"]
    assert led["rejected"] == sum(expected[sample]["rejected_by_reason"].values())
    assert report["this_run"]["accepted"] == len(payloads)

    # The rejects file holds exactly the refused rows, each once, as validate lists them.
    def refused(records: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
        return Counter((r["file"], r["row"], r["field"], r["reason"]) for r in records)

    rejects = paths.rejects_records()
    assert len(rejects) == led["rejected"]
    assert refused(rejects) == refused(read_ndjson(validate_rejects))
    assert Counter(r["reason"] for r in rejects) == Counter(led["rejected_by_reason"])
    assert not paths.in_doubt.exists() or paths.in_doubt_records() == []

    # Revenue rows: one per sent purchase with revenue > 0 and a currency, with that amount.
    purchases = [
        p["payload"]
        for p in payloads
        if isinstance(p["payload"].get("data", {}).get("revenue"), int | float)
        and p["payload"]["data"]["revenue"] > 0
        and p["payload"]["data"].get("currency")
    ]
    revenue = server.revenue(site)
    assert purchases, "the sample should contain purchases"
    assert len(revenue) == len(purchases)
    assert sorted((r["currency"], float(r["revenue"])) for r in revenue) == sorted(
        (p["data"]["currency"], round(float(p["data"]["revenue"]), 4)) for p in purchases
    )


# --------------------------------------------------------------------------- 2. re-run after completion


def test_rerun_after_completion_sends_nothing(server, tmp_path: Path) -> None:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 600, visitors=80, seed=2, reject_every=97)
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "50")
    first = run_cli(*args, timeout=60)
    assert first.code == 1, first.stdout + first.stderr
    assert stored_rows(server, site) == Counter(gen.sendable)
    requests_before = len(batch_requests(server))

    again = run_cli(*args, timeout=60)
    assert again.code == 1, again.stderr  # the cumulative ledger still has the rejects
    assert "nothing to do" in again.stdout
    assert len(batch_requests(server)) == requests_before, "a completed import sent again"
    assert stored_rows(server, site) == Counter(gen.sendable)
    report = paths.report_json()
    assert_ledger_adds_up(report["ledger"])
    assert report["ledger"]["accepted"] == len(gen.sendable)
    assert report["this_run"]["accepted"] == 0
    assert_client_rejects(paths.rejects_records(), gen)


# --------------------------------------------------------------------------- 3. SIGKILL, then resume


def test_sigkill_at_random_moments_then_resume(server, procs, tmp_path: Path) -> None:
    """kill -9 during prepare and several times during sending; resuming loses and doubles nothing."""
    rnd = random.Random(20240301)
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 20_000, visitors=3_000, seed=3, reject_every=1_000, skip_every=500)
    server.faults.latency_ms = 30
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100", "--timeout", "20")
    landed: list[str] = []

    # Kill 1: while the input is being read (the checkpoint says "preparing").
    proc = procs.start(args, "run1")
    wait_until(lambda: paths.checkpoint_phase() == "preparing", proc, 30, "the prepare phase")
    time.sleep(rnd.uniform(0, 0.05))
    kill9(proc)
    landed.append(paths.checkpoint_phase() or "?")
    assert landed == ["preparing"], "the first kill should land while the input is read"
    assert batch_requests(server) == []

    # Kills 2 and 3: at random points while sending, requests in flight.
    for tag, low, high in (("run2", 5, 30), ("run3", 30, 70)):
        before = len(batch_requests(server))
        target = before + rnd.randint(low, high)
        proc = procs.start(args, tag)
        wait_until(lambda target=target: len(batch_requests(server)) >= target, proc, 60, f"{tag}'s batches")
        time.sleep(rnd.uniform(0, 0.03))
        kill9(proc)
        landed.append(paths.checkpoint_phase() or "?")

    # Kill 4: forced in doubt. One batch hangs (the server never answers, stores nothing); kill while it hangs.
    proc = procs.start(args, "run4")
    target = len(batch_requests(server)) + rnd.randint(5, 20)
    wait_until(lambda: len(batch_requests(server)) >= target, proc, 60, "run4's batches")
    server.faults.hang(times=1)
    wait_until(lambda: any(r["fault"] == "hang" for r in batch_requests(server)), proc, 30, "the hanging batch")
    hung = next(r for r in batch_requests(server) if r["fault"] == "hang")
    kill9(proc)
    landed.append(paths.checkpoint_phase() or "?")
    assert landed[1:] == ["sending"] * 3, landed

    # Run to completion.
    final = run_cli(*args, timeout=90)
    assert final.code == 1, final.stdout + final.stderr
    report = paths.report_json()
    led = report["ledger"]
    assert_ledger_adds_up(led)
    assert led["not_sent_yet"] == 0
    assert led["skipped"] == len(gen.skipped)
    assert led["rejected"] == len(gen.rejected)
    in_doubt_rows = assert_in_doubt_file_matches(paths, report)
    assert len(in_doubt_rows) >= hung["elements"] > 0, "the hung batch must be listed as in doubt"
    stored = stored_rows(server, site)
    assert_exactly_once_except_in_doubt(stored, gen, in_doubt_rows)
    assert led["accepted"] == len(gen.sendable - in_doubt_rows)
    assert sum(stored.values()) == led["accepted"] + len(set(stored) & in_doubt_rows)
    # The hung batch stored nothing, so some rows in doubt are really missing: the gap is explicit.
    assert in_doubt_rows - set(stored)
    assert_client_rejects(paths.rejects_records(), gen)
    assert len(paths.rejects_records()) == len(gen.rejected), "a resumed prepare listed rejects twice"

    # --resend-in-doubt fills the gaps (and may double rows that had landed).
    resend = run_cli(*args, "--resend-in-doubt", timeout=90)
    assert resend.code == 1, resend.stdout + resend.stderr
    stored = stored_rows(server, site)
    assert set(stored) == gen.sendable, "every sendable row is present after --resend-in-doubt"
    assert all(stored[row] == 1 for row in gen.sendable - in_doubt_rows)
    assert all(stored[row] <= 2 for row in in_doubt_rows)
    report = paths.report_json()
    assert_ledger_adds_up(report["ledger"])
    assert report["ledger"]["in_doubt"] == 0
    assert report["ledger"]["accepted"] == len(gen.sendable)
    assert paths.in_doubt_records() == []


# --------------------------------------------------------------------------- 4. faults


def fault_import(
    server: FakeUmami, tmp_path: Path, n: int = 1_200, *extra: str, seed: int = 4
) -> tuple[Generated, Paths, str, Any]:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, n, visitors=150, seed=seed, reject_every=250)
    result = run_cli(
        *import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100", *extra), timeout=60
    )
    return gen, paths, site, result


def test_rate_limited_with_retry_after_is_retried(server, tmp_path: Path) -> None:
    server.faults.rate_limit(times=2, retry_after=0.5)
    gen, paths, site, result = fault_import(server, tmp_path)
    assert result.code == 1, result.stdout + result.stderr
    batches = batch_requests(server)
    limited = [r for r in batches if r["status"] == 429]
    assert len(limited) == 2
    paused = [r for r in batches if limited[0]["time"] + 0.05 < r["time"] < limited[0]["time"] + 0.45]
    assert paused == [], "a request started while Retry-After asked to wait"
    assert stored_rows(server, site) == Counter(gen.sendable)
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == len(gen.sendable) and led["in_doubt"] == 0
    assert_client_rejects(paths.rejects_records(), gen)
    assert len(paths.rejects_records()) == len(gen.rejected)


def test_service_unavailable_is_retried(server, tmp_path: Path) -> None:
    server.faults.unavailable(times=2)
    gen, paths, site, result = fault_import(server, tmp_path)
    assert result.code == 1, result.stdout + result.stderr
    assert sum(r["status"] == 503 for r in batch_requests(server)) == 2
    assert stored_rows(server, site) == Counter(gen.sendable)
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == len(gen.sendable) and led["in_doubt"] == 0
    assert len(paths.rejects_records()) == len(gen.rejected)
    assert_client_rejects(paths.rejects_records(), gen)


def test_retry_of_the_last_batch_does_not_hang(server, procs, tmp_path: Path) -> None:
    """Default (adaptive) concurrency; one visitor, so one lane and one batch; one 503: it must finish."""
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 60, visitors=1, seed=4)
    server.faults.unavailable(times=1)
    proc = procs.start(import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100"), "hang")
    try:
        code = proc.wait(
            timeout=60
        )  # it needs about 2 s (one backoff of 0.5-1 s); a hang never ends, a loaded machine only slows it
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # a clean stop saves the checkpoint and prints the ledger
        proc.wait(timeout=30)
        stdout, _ = procs.output("hang")
        pending = paths.report_json()["ledger"]["not_sent_yet"]
        pytest.fail(f"the import hung with {pending} rows not sent after one 503:\n{stdout[-600:]}")
    assert code == 0, procs.output("hang")
    assert stored_rows(server, site) == Counter(gen.sendable)


def test_body_too_large_halves_the_batch(tmp_path: Path) -> None:
    with FakeUmami(max_body_bytes=3_000) as server:
        gen, paths, site, result = fault_import(server, tmp_path)
        assert result.code == 1, result.stdout + result.stderr
        batches = batch_requests(server)
        assert any(r["status"] == 413 for r in batches)
        assert all(r["bytes"] <= 3_000 for r in batches if r["status"] == 200)
        assert stored_rows(server, site) == Counter(gen.sendable)
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == len(gen.sendable) and led["in_doubt"] == 0
    assert len(paths.rejects_records()) == len(gen.rejected)
    assert_client_rejects(paths.rejects_records(), gen)


def test_connection_reset_after_a_stored_prefix_is_in_doubt_not_resent(server, tmp_path: Path) -> None:
    server.faults.reset_after(7, skip=3)
    gen, paths, site, result = fault_import(server, tmp_path)
    assert result.code == 1, result.stdout + result.stderr
    reset = [r for r in batch_requests(server) if r["fault"] == "reset"]
    assert len(reset) == 1
    report = paths.report_json()
    assert_ledger_adds_up(report["ledger"])
    in_doubt = paths.in_doubt_records()
    assert len(in_doubt) == reset[0]["elements"] == report["ledger"]["in_doubt"]
    doubt_rows = [r["row"] for r in in_doubt]
    stored = stored_rows(server, site)
    # The prefix the server stored is there once; the rest of the batch was not resent.
    assert [stored[row] for row in doubt_rows] == [1] * 7 + [0] * (len(doubt_rows) - 7)
    assert_exactly_once_except_in_doubt(stored, gen, set(doubt_rows))
    assert report["ledger"]["accepted"] == len(gen.sendable) - len(doubt_rows)
    assert len(paths.rejects_records()) == len(gen.rejected)
    assert "in-doubt file" in result.stdout


def test_server_restart_mid_import(server, procs, tmp_path: Path) -> None:
    """The import rides through a restart or stops with exit 3; either way a re-run finishes cleanly."""
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 4_000, visitors=400, seed=5, reject_every=400)
    server.faults.latency_ms = 25
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "50")
    proc = procs.start(args, "restart")
    wait_until(lambda: len(batch_requests(server)) >= 15, proc, 60, "15 batches")
    server.restart(downtime=0.3)
    code = proc.wait(timeout=90)
    stdout, stderr = procs.output("restart")
    runs = 1
    while code == 3 and runs < 4:  # stopped (resumable): run the same command again
        assert "to resume:" in stdout and "Traceback" not in stderr, stdout + stderr
        again = run_cli(*args, timeout=60)
        code, stdout, stderr, runs = again.code, again.stdout, again.stderr, runs + 1
    assert code == 1, stdout + stderr
    report = paths.report_json()
    assert_ledger_adds_up(report["ledger"])
    assert report["ledger"]["not_sent_yet"] == 0
    in_doubt_rows = assert_in_doubt_file_matches(paths, report)
    assert_exactly_once_except_in_doubt(stored_rows(server, site), gen, in_doubt_rows)
    assert len(paths.rejects_records()) == len(gen.rejected)


def test_element_refused_by_umami_is_mapped_back_to_its_row(tmp_path: Path) -> None:
    """Umami refuses single elements the importer cannot foresee (IGNORE_IP: 403); the row is rejected
    with Umami's message at its file:row, and everything else of the batch is stored."""
    ignored_ip = "203.0.113.77"
    special = {
        41: {"ip": ignored_ip},
        388: {"ip": ignored_ip},
        # A protocol-relative URL with a space in its host: Umami's URL check refuses it (HTTP 400).
        500: {"path": "//bad host/p/499"},
    }
    with FakeUmami(ignore_ips=[ignored_ip]) as server:
        site = server.add_website()
        paths = Paths.under(tmp_path)
        gen = generate_events(tmp_path, 900, visitors=120, seed=6, reject_every=300, special=special)
        gen.sendable -= set(special)
        result = run_cli(*import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100"), timeout=60)
        assert result.code == 1, result.stdout + result.stderr
        assert stored_rows(server, site) == Counter(gen.sendable)
    report = paths.report_json()
    led = report["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == len(gen.sendable)
    assert led["rejected"] == len(gen.rejected) + len(special)
    records = {r["row"]: r for r in paths.rejects_records()}
    assert len(records) == len(paths.rejects_records()), "a row is listed twice"
    assert set(records) == gen.rejected | set(special)
    for row in (41, 388):
        assert records[row]["file"] == str(gen.path)
        assert "Forbidden" in records[row]["reason"], records[row]
        assert records[row]["reason"] in led["rejected_by_reason"]
        assert records[row]["values"]["payload"]["ip"] == ignored_ip
    url_reject = records[500]
    assert url_reject["field"] == "url", url_reject
    assert "URL" in url_reject["reason"], url_reject


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "//bad host/p/17"},
        {"host": "shop example.com"},
        {"note": "2024-13-01T00:00:00Z"},
    ],
    ids=["scheme-relative-url", "hostname", "data-date"],
)
def test_rows_umami_would_refuse_are_rejected_before_sending(bad, server, tmp_path: Path) -> None:
    """What the importer sends, Umami stores: such rows are rejected client-side, never sent."""
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 60, visitors=10, seed=14, special={18: bad})
    result = run_cli(*import_args(gen.path, gen.mapping, server, site, paths), timeout=60)
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    records = paths.rejects_records()
    assert [r["row"] for r in records] == [18], result.stdout
    assert not records[0]["reason"].startswith("Umami"), f"sent, then refused by Umami: {records[0]['reason']}"
    assert len(server.events(site)) == led["accepted"], "the ledger and the server disagree"


# --------------------------------------------------------------------------- 5. the run refused as a whole


def test_unknown_website_stops_at_the_first_batch(server, tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 800, visitors=100, seed=7, reject_every=200)
    missing = "6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10"
    result = run_cli(
        *import_args(gen.path, gen.mapping, server, missing, paths, "--batch-size", "100", "--concurrency", "1"),
        timeout=60,
    )
    assert result.code == 2, result.stdout + result.stderr  # a refusal of the run: fix the command
    message = result.stdout + result.stderr
    assert "does not exist" in message and missing in message
    assert "--website" in message or "UMAMI_WEBSITE_ID" in message
    assert "Traceback" not in result.stderr
    assert server.events() == [] and server.sessions() == []
    assert len(batch_requests(server)) == 1
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == 0 and led["not_sent_yet"] == len(gen.sendable)


def test_every_row_a_bot_stops_at_the_first_batch(server, tmp_path: Path) -> None:
    """keep_bots bypasses our check; Umami (bot check on) answers 200 without a cache key and stores nothing."""
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 500, visitors=60, seed=8, ua="curl/8.0")
    gen.mapping.write_text(BOT_MAPPING)
    result = run_cli(
        *import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100", "--concurrency", "1"),
        timeout=60,
    )
    assert result.code == 3, result.stdout + result.stderr
    message = result.stdout + result.stderr
    assert "User-Agent" in message or "user agent" in message.lower()
    assert "bot" in message
    assert "Traceback" not in result.stderr
    assert server.events() == [] and server.sessions() == []
    batches = batch_requests(server)
    assert len(batches) == 1
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == 0
    records = paths.rejects_records()
    assert len(records) == led["rejected"] == batches[0]["elements"]
    assert all(r["field"] == "userAgent" and "bot" in r["reason"] for r in records)


@pytest.mark.parametrize("case", ["bots", "unknown-website"])
def test_run_refused_as_a_whole_sends_nothing_after_the_refusal(case, server, tmp_path: Path) -> None:
    """Default concurrency: the first batch goes alone, so a refused run costs exactly one request."""
    paths = Paths.under(tmp_path)
    if case == "bots":
        site = server.add_website()
        gen = generate_events(tmp_path, 800, visitors=100, seed=15, ua="curl/8.0")
        gen.mapping.write_text(BOT_MAPPING)
    else:
        site = "6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10"
        gen = generate_events(tmp_path, 800, visitors=100, seed=15)
    result = run_cli(*import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100"), timeout=60)
    assert result.code == (3 if case == "bots" else 2), result.stdout + result.stderr  # rows' own UAs: rejects
    assert server.events() == []
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    batches = batch_requests(server)
    assert len(batches) == 1, f"{len(batches)} batches sent when Umami refused the run"
    assert led["rejected"] <= batches[0]["elements"]


# --------------------------------------------------------------------------- 6. host and website


def test_environment_variables_instead_of_flags(server, tmp_path: Path) -> None:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 300, visitors=40, seed=9)
    result = run_cli(
        *import_args(gen.path, gen.mapping, None, None, paths),
        env={"UMAMI_HOST": server.url, "UMAMI_WEBSITE_ID": site},
        timeout=60,
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "DRY RUN" not in result.stdout
    assert stored_rows(server, site) == Counter(gen.sendable)
    assert_ledger_adds_up(paths.report_json()["ledger"])


def test_host_without_website_is_a_configuration_error(server, tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 50, visitors=10, seed=10)
    result = run_cli(*import_args(gen.path, gen.mapping, server, None, paths), timeout=60)
    assert result.code == 2, result.stdout + result.stderr
    assert "--website" in result.stderr and "Traceback" not in result.stderr
    assert server.request_log == []


def test_wrong_host_names_the_url(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 50, visitors=10, seed=11)
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        *import_args(gen.path, gen.mapping, None, "6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10", paths, "--host", url),
        timeout=60,
    )
    assert result.code in (2, 3), result.stdout + result.stderr
    assert url in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- 7. changed input


def test_changed_input_after_an_interrupted_run_is_refused(server, procs, tmp_path: Path) -> None:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 3_000, visitors=300, seed=12)
    server.faults.latency_ms = 20
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "50")
    proc = procs.start(args, "first")
    wait_until(lambda: len(batch_requests(server)) >= 8, proc, 60, "8 batches")
    kill9(proc)
    time.sleep(0.2)  # requests the dead process left in flight finish on the server
    before = stored_rows(server, site)
    requests_before = len(batch_requests(server))

    with open(gen.path, "a", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerow(
            [
                "2024-04-01T10:00:00Z",
                "visitor-new",
                "shop.example.com",
                f"/p/{gen.rows}",
                "",
                CHROME_UA,
                "",
                "",
                "false",
            ]
        )
    gen.sendable.add(gen.rows + 1)
    refused = run_cli(*args, timeout=60)
    assert refused.code == 2, refused.stdout + refused.stderr
    assert str(gen.path) in refused.stderr and "changed" in refused.stderr
    assert "--restart" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(batch_requests(server)) == requests_before, "a refused resume sent something"

    restarted = run_cli(*args, "--restart", timeout=60)
    assert restarted.code == 0, restarted.stdout + restarted.stderr
    after = stored_rows(server, site)
    assert after == before + Counter(gen.sendable), "--restart sends every row of the new input once"
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["accepted"] == len(gen.sendable) and led["in_doubt"] == 0


def test_restart_record_files_match_the_new_ledger(server, tmp_path: Path) -> None:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 1_000, visitors=100, seed=16, reject_every=200)
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "100")
    server.faults.reset_after(3, skip=2)  # leaves one batch in doubt
    first = run_cli(*args, timeout=60)
    assert first.code == 1, first.stdout + first.stderr
    assert paths.report_json()["ledger"]["in_doubt"] > 0

    again = run_cli(*args, "--restart", timeout=60)
    assert again.code == 1, again.stdout + again.stderr
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["in_doubt"] == 0 and led["rejected"] == len(gen.rejected)
    assert len(paths.rejects_records()) == led["rejected"], "the rejects file lists rows twice"
    assert len(paths.in_doubt_records()) == led["in_doubt"], "the in-doubt file lists rows not in doubt"


# --------------------------------------------------------------------------- 8. SIGTERM


def test_sigterm_during_sending_stops_cleanly_and_resumes(server, procs, tmp_path: Path) -> None:
    site = server.add_website()
    paths = Paths.under(tmp_path)
    gen = generate_events(tmp_path, 5_000, visitors=500, seed=13, reject_every=500, skip_every=700)
    server.faults.latency_ms = 20
    args = import_args(gen.path, gen.mapping, server, site, paths, "--batch-size", "50")
    proc = procs.start(args, "term")
    wait_until(lambda: len(batch_requests(server)) >= 10, proc, 60, "10 batches")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stdout, stderr = procs.output("term")
    assert code == 3, stdout + stderr
    assert "not sent yet" in stdout and "to resume:" in stdout, stdout
    assert "Traceback" not in stderr
    report = paths.report_json()
    led = report["ledger"]
    assert_ledger_adds_up(led)
    assert led["not_sent_yet"] > 0 and led["in_doubt"] == 0
    stored = stored_rows(server, site)
    assert max(stored.values()) == 1
    assert sum(stored.values()) == led["accepted"]

    resumed = run_cli(*args, timeout=60)
    assert resumed.code == 1, resumed.stdout + resumed.stderr
    assert stored_rows(server, site) == Counter(gen.sendable)
    led = paths.report_json()["ledger"]
    assert_ledger_adds_up(led)
    assert led["not_sent_yet"] == 0 and led["in_doubt"] == 0
    assert led["accepted"] == len(gen.sendable)
    assert_client_rejects(paths.rejects_records(), gen)
    assert len(paths.rejects_records()) == len(gen.rejected)


# --------------------------------------------------------------------------- 9. servers without /api/batch


def _comparable(server: FakeUmami, site: str) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    """What a website holds, ids left out: its events with their session's attributes, and
    its visits as the sets of events they group."""
    sessions = {s["session_id"]: s for s in server.sessions(site)}
    keys = ("distinct_id", "browser", "os", "device", "country", "region", "city")
    events: Counter[tuple[Any, ...]] = Counter()
    visits: dict[str, set[str]] = {}
    for e in server.events(site):
        session = sessions[e["session_id"]]
        events[(e["url_path"], e["created_at"], e["event_type"], e["hostname"], *(session[k] for k in keys))] += 1
        visits.setdefault(e["visit_id"], set()).add(e["url_path"])
    return events, Counter(tuple(sorted(v)) for v in visits.values())


def test_send_and_batch_store_the_same_rows_locations_and_visits(tmp_path: Path) -> None:
    from tests.test_geo_visits import _mapping, _sessions_rows, _write

    source, mapping = _write(tmp_path / "events.csv", _sessions_rows(40, seed=9)), _mapping(tmp_path)
    with FakeUmami() as server:
        by_batch, by_send = server.add_website(), server.add_website()
        for site, endpoint in ((by_batch, "batch"), (by_send, "send")):
            paths = Paths.under(tmp_path / endpoint)
            result = run_cli(*import_args(source, mapping, server, site, paths, "--endpoint", endpoint))
            assert result.code == 0, result.stdout + result.stderr
        sends = [e for e in server.request_log if e["path"] == "/api/send"]
        assert sends and all(e["elements"] == 1 for e in sends)
        cached = [e["headers"] for e in sends if "x-umami-cache" in e["headers"]]
        assert cached and all("cf-connecting-ip" in h for h in cached)  # location on every request
        assert _comparable(server, by_send) == _comparable(server, by_batch)
        assert server.sessions(by_send) and all(s["country"] for s in server.sessions(by_send) if s["city"])


def test_umami_cloud_killed_mid_import_resumes_through_send_with_every_row_once(procs, tmp_path: Path) -> None:
    """Umami Cloud (no /api/batch, its read API at /v1 for an API key, rate-limited, on
    ClickHouse): auto goes over to /api/send; kill -9 with requests on the wire; the resumed
    run reads the rows in doubt back through the Cloud API and ends with nothing in doubt."""
    from tests.test_geo_visits import _mapping, _sessions_rows, _write

    rows = _sessions_rows(35, seed=21)
    source = _write(tmp_path / "events.csv", rows)
    paths = Paths.under(tmp_path)
    with FakeUmami(cloud=True, store="clickhouse", api_key="k-cloud", cloud_calls=25, cloud_window=1.0) as server:
        site = server.add_website()
        server.faults.latency_ms = 30  # requests on the wire at the kill are stored all the same
        args = import_args(
            source, _mapping(tmp_path), server, site, paths, "--api-url", f"{server.url}/v1", "--timeout", "3"
        )
        kill_after_batches(procs, args, server, 40, path="/api/send")
        assert [e for e in json.loads(paths.checkpoint.read_text())["lane_inflight"] if e]  # left on the wire
        server.faults.latency_ms = 0
        final = run_cli(*args, timeout=90, env={"UMAMI_API_KEY": "k-cloud"})
        stored = Counter(e["url_path"] for e in server.events(site))
        batch_tries = batch_requests(server)
    assert final.code == 0, final.stdout + final.stderr
    assert stored == Counter(r["url"] for r in rows)  # every row once
    assert len(batch_tries) == 1  # the killed run tried /api/batch once; the resumed one did not
    report = paths.report_json()
    assert_ledger_adds_up(report["ledger"])
    assert report["ledger"]["in_doubt"] == 0 and paths.in_doubt_records() == []
    [note] = [n for n in report["notes"] if n.startswith("rows in doubt read back from Umami")]
    assert "0 cannot be told" in note, note
    assert any("sent through /api/send" in n for n in report["notes"])


def test_a_forced_batch_endpoint_the_server_lacks_prints_no_resume_line(tmp_path: Path) -> None:
    with FakeUmami(cloud=True) as server:
        site = server.add_website()
        result = import_into_paths(server, site, tmp_path, "--endpoint", "batch")
        assert server.event_count(site) == 0
    assert result.code == 2, result.stdout + result.stderr
    assert "HTTP 405" in result.stdout and "--endpoint send" in result.stdout
    assert "to resume" not in result.stdout + result.stderr


def import_into_paths(server: FakeUmami, site: str, tmp: Path, *extra: str) -> Any:
    from tests.test_geo_visits import _mapping, _sessions_rows, _write

    source = _write(tmp / "events.csv", _sessions_rows(5, seed=1))
    return run_cli(*import_args(source, _mapping(tmp), server, site, Paths.under(tmp), *extra))
