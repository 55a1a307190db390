"""How the HTTP sink fills its requests: many visitors of one location per request, openers of
crossing visits at the head of requests, visitors' order kept across windows."""

from __future__ import annotations

import collections
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from backfill.checkpoint import Checkpoint
from backfill.sinks.http import grouping, regroup
from backfill.visits import CrossingVisits
from tests.conftest import MAPPINGS, SAMPLES, import_into
from tests.fake_umami import FakeUmami
from tests.test_geo_visits import _mapping, _sessions_rows, _visits_of, _write
from tests.test_sender import MockUmami, Run, make_frames, seq_of


def _window(seed: int, visitors: int = 120) -> tuple[pl.DataFrame, CrossingVisits]:
    """A time-ordered window: visitors in 4 locations with 1-3 visits each, about a third crossing."""
    rnd = random.Random(seed)
    rows = []
    for v in range(visitors):
        geo = ["FR\x1f\x1f", "DE\x1f\x1f", "", "BR\x1f\x1f"][v % 4]
        t = rnd.randrange(86_400)
        for s in range(rnd.randint(1, 3)):
            for _ in range(rnd.randint(1, 5)):
                rows.append({"_ts": t, "_visitor": f"u{v}", "_geo": geo, "_vkey": v * 10 + s})
                t += rnd.randrange(60, 1500)
            t += 7200
    frame = pl.DataFrame(rows, schema_overrides={"_vkey": pl.UInt64}).sort("_ts")
    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_seq") + 1000, _lane=pl.lit(0))
    hours = frame.group_by("_vkey").agg((pl.col("_ts") // 3600).n_unique().alias("h"))
    keys = hours.filter(pl.col("h") > 1)["_vkey"].sort()
    return frame, CrossingVisits(keys=keys)


@pytest.mark.parametrize("seed", range(3))
def test_regroup_keeps_visitors_whole_in_order_and_openers_at_the_head_of_a_request(seed: int) -> None:
    frame, crossing = _window(seed)
    out = regroup(frame, crossing, lanes=64)
    assert crossing.count > 10
    assert out["_seq"].to_list() == list(range(1000, 1000 + frame.height))
    assert out.group_by("_visitor").agg(pl.col("_lane").n_unique())["_lane"].max() == 1  # one lane each
    for (_lane,), rows in out.partition_by("_lane", as_dict=True, maintain_order=True).items():
        for _visitor, times in rows.group_by("_visitor", maintain_order=True).agg("_ts").iter_rows():
            assert times == sorted(times)  # each visitor in time order within its lane
        previous = [None, *rows["_seg"].to_list()[:-1]]
        for seg, before, opens, vkey in zip(rows["_seg"], previous, rows["_open"], rows["_vkey"], strict=True):
            if opens is not None:
                assert opens == f"v{vkey}" and seg != before  # an opener starts a segment
            if seg.startswith("v"):
                assert seg == f"v{vkey}"
    openers = out.filter(pl.col("_open").is_not_null())
    assert openers.height == crossing.count  # one per crossing visit, its first row
    # A request starts at a segment: one per continuation, and besides the openers' about
    # one per lane (a lane's piece holds one location), not one per lane and location.
    starts = out.filter((pl.col("_seg") != pl.col("_seg").shift(1).over("_lane")).fill_null(True))
    assert starts.filter(pl.col("_seg").str.starts_with("v")).height == crossing.count
    located = starts.filter(pl.col("_seg").str.starts_with("g")).height
    assert located <= openers.height + out["_lane"].n_unique(), located


def test_a_located_import_with_whole_visits_fills_its_requests(tmp_path: Path) -> None:
    rows = _sessions_rows(400, seed=5)
    source = _write(tmp_path / "events.csv", rows)
    hours: dict[tuple[object, object], set[int]] = collections.defaultdict(set)
    for r in rows:
        hours[(r["user"], r["session"])].add(int(r["ts"]) // 3600)
    crossing = sum(1 for h in hours.values() if len(h) > 1)
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, _mapping(tmp_path), tmp_path)
        assert result.code == 0, result.stderr
        batches = [e for e in server.request_log if e["path"] == "/api/batch"]
        stored = Counter(e["url_path"] for e in server.events(site))
        sessions = {s["distinct_id"]: s for s in server.sessions(site)}
        visits = _visits_of(server, site)
    assert stored == Counter(r["url"] for r in rows)  # every row once
    assert all(visits[u] == n for u, n in Counter(u for u, _ in hours).items())  # every visit whole
    first_country: dict[object, object] = {}
    for row in sorted(rows, key=lambda r: r["ts"]):
        first_country.setdefault(row["user"], row["country"])
    assert {u: s["country"] or "" for u, s in sessions.items()} == first_country
    # Each crossing visit costs one request of its own (its rest, with the cache token); its
    # first event rides at the head of a request that is full anyway. Before: 1 request per
    # ~10 rows (64 lanes x 4 locations, plus 2 per crossing visit).
    # (This data is hard: 4 of 5 visits cross an hour.)
    cached = [b for b in batches if "x-umami-cache" in b["headers"]]
    assert len(cached) == crossing
    located = len(batches) - len(cached)
    assert located <= crossing + 64, (located, crossing)


def test_the_ga4_sample_needs_few_requests_and_keeps_its_visits(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, str(SAMPLES / "ga4" / "events_*"), MAPPINGS / "ga4.yaml", tmp_path)
        assert result.code == 0, result.stderr
        batches = [e for e in server.request_log if e["path"] == "/api/batch"]
        events = server.event_count(site)
    report = json.loads((tmp_path / "report.json").read_text())
    assert events == report["ledger"]["accepted"] == 208
    # 4 sessions cross an hour (a request each for their rest), 14 locations: was 33 requests.
    assert len(batches) <= 20, len(batches)


def _located_frames(n: int, frame_rows: int, visitors: int) -> list[pl.DataFrame]:
    places = ["FR\x1f\x1f", "DE\x1f\x1f", "US\x1fUS-CA\x1f", ""]
    return [
        frame.with_columns(
            _geo=pl.col("_visitor").str.slice(1).cast(pl.Int64).map_elements(lambda v: places[v % 4], pl.String),
            _vkey=pl.lit(None, dtype=pl.UInt64),
        )
        for frame in make_frames(n, visitors=visitors, frame_rows=frame_rows)
    ]


def test_a_visitor_keeps_its_order_when_its_lane_changes_between_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each window gives lanes anew; the next window waits until the last one is settled."""
    monkeypatch.setattr(grouping, "REGROUP_WINDOW_ROWS", 1200)  # 2 pieces of each location
    frames = _located_frames(4800, frame_rows=300, visitors=1500)
    lanes_of: dict[str, set[int]] = collections.defaultdict(set)
    for frame in grouping.regrouped(frames, CrossingVisits.empty(), lanes=8):
        for visitor, lane in frame.select("_visitor", "_lane").unique().iter_rows():
            lanes_of[visitor].add(lane)
    assert sum(1 for lanes in lanes_of.values() if len(lanes) > 1) > 40  # lanes do change

    def jitter(call: int, elements: list[dict[str, Any]], _: httpx.Request) -> None:
        time.sleep(random.uniform(0, 0.002) * (10 if call % 7 == 0 else 1))

    server = MockUmami(jitter)
    outcome, cp = Run(tmp_path).send(frames, server, batch_size=20, concurrency=6, checkpoint=Checkpoint.new({}, 8))
    assert outcome.completed and cp.phase == "complete"
    assert server.stored_seqs() == Counter(range(4800))
    arrivals: dict[str, list[int]] = collections.defaultdict(list)
    for element in server.stored:
        arrivals[element["payload"]["id"]].append(seq_of(element))
    assert all(seqs == sorted(seqs) for seqs in arrivals.values())
    assert outcome.requests <= 4800 / 20 + 4 * 8  # full requests, but for one partial per window and lane
