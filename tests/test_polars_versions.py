"""What must not change meaning with the polars version.

polars 2 made the streaming engine the default for ``LazyFrame.collect()`` (it
keeps no row order for joins, group_by, unique, ... unless asked) and changed
every value of ``Expr.hash`` (polars keeps its hash only within one version).
An import can be killed under one polars and resumed under another after
``make lock``; these tests hold the places where that could change meaning.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import polars as pl
import pytest

from backfill.visits import CrossingVisits, VisitSpans, key_fingerprint
from tests.conftest import MAPPINGS, SAMPLES, run_cli
from tests.fake_umami import FakeUmami
from tests.test_geo_visits import _mapping, _sessions_rows, _visits_of, _write

#: What a polars with another hash would have made of every key (any bijection would do).
OTHER_HASH = 0x9E37_79B9_7F4A_7C15


def _rehash_prepared(state: Path) -> int:
    """Rewrite the prepared rows and the crossing-visits file as another polars would have
    hashed them (every key XOR a constant, the crossing keys sorted again), and the
    checkpoint's record of the hash with them. Returns the crossing visits rewritten."""
    key = pl.col("_vkey")
    other = (key ^ pl.lit(OTHER_HASH, pl.UInt64)).alias("_vkey")
    for run in sorted((state / "prepared").glob("run-*.parquet")):
        pl.read_parquet(run).with_columns(other).write_parquet(run)
    crossing_path = state / "prepared" / "crossing-visits.parquet"
    crossing = pl.read_parquet(crossing_path).with_columns(other).sort("_vkey")
    crossing.write_parquet(crossing_path)
    checkpoint_path = state / "checkpoint.json"
    checkpoint = json.loads(checkpoint_path.read_text())
    checkpoint["prepared"]["visits"]["hashed_by"] = {"polars": "1.44.2", "probe": "0123456789abcdef"}
    checkpoint_path.write_text(json.dumps(checkpoint))
    return crossing.height


def test_an_import_resumed_under_a_polars_that_hashes_differently_keeps_visits_whole(tmp_path: Path) -> None:
    """The send phase matches the keys stored with the prepared rows against the stored
    crossing visits: were any key hashed anew on resume, the visits cut by the kill would
    not be the only ones split."""
    from tests.test_e2e_import import Paths, Processes, import_args, kill_after_batches

    rows = _sessions_rows(120, seed=5)
    source = _write(tmp_path / "events.csv", rows)
    paths = Paths.under(tmp_path)
    with FakeUmami() as server:
        site = server.add_website()
        server.faults.latency_ms = 20
        args = import_args(source, _mapping(tmp_path), server, site, paths, "--batch-size", "20")
        kill_after_batches(Processes(tmp_path), args, server, 8)
        assert paths.checkpoint_phase() == "sending"
        crossing = _rehash_prepared(paths.checkpoint.parent)
        server.faults.latency_ms = 0
        final = run_cli(*args, timeout=90)
        visits = _visits_of(server, site)
    assert final.code in (0, 1), final.stdout + final.stderr
    assert "this is polars" in final.stderr and "hashes differently" in final.stderr, final.stderr
    assert crossing > 20, crossing  # the data does exercise whole visits
    source_visits = collections.Counter(r["user"] for r in {(r["user"], r["session"]): r for r in rows}.values())
    split = sum(max(0, visits.get(u, 0) - n) for u, n in source_visits.items())
    assert split <= 8, (split, crossing)  # only visits the kill cut (few batches were on the wire)
    assert paths.report_json()["ledger"]["balances"]


def test_the_recorded_hash_is_compared_by_its_probe_not_by_the_version_string() -> None:
    spans = VisitSpans()
    frame = pl.DataFrame({"_ts": [0, 4000], "_vkey": pl.Series([7, 7], dtype=pl.UInt64)})
    spans.add(frame)
    crossing = spans.finish()
    assert crossing.count == 1 and crossing.hashed_by == key_fingerprint()
    assert crossing.foreign_hash_note() is None
    same_hash = {**key_fingerprint(), "polars": "9.9.9"}  # a release that kept the hash
    assert CrossingVisits(keys=crossing.keys, hashed_by=same_hash).foreign_hash_note() is None
    other = CrossingVisits(keys=crossing.keys, hashed_by={"polars": "1.44.2", "probe": "0"})
    assert "prepared under polars 1.44.2" in (other.foreign_hash_note() or "")
    assert CrossingVisits.from_dict(crossing.to_dict(None)).hashed_by == key_fingerprint()


#: The streaming engine (polars 2's default for lazy queries) with morsels so small that a
#: join, group_by or unique in a lazy plan comes out of order even on a sample; and the
#: in-memory engine (polars 1's default), which keeps the order incidentally.
STREAMING = {"POLARS_ENGINE_AFFINITY": "streaming", "POLARS_IDEAL_MORSEL_SIZE": "64"}
IN_MEMORY = {"POLARS_ENGINE_AFFINITY": "in-memory"}


@pytest.mark.parametrize(
    ("source", "mapping"),
    [
        (SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml"),  # rejects of every kind, in row order
        (SAMPLES / "plausible_events" / "events_v2.csv", "plausible-events"),  # whole visits, first rows
    ],
    ids=["events", "plausible-events"],
)
def test_payloads_and_rejects_do_not_depend_on_the_engine_that_runs_lazy_plans(
    tmp_path: Path, source: Path, mapping: str | Path
) -> None:
    outputs = []
    for name, env in (("streaming", STREAMING), ("in-memory", IN_MEMORY)):
        out, rejects = tmp_path / f"{name}.ndjson", tmp_path / f"{name}-rejects.ndjson"
        result = run_cli("validate", source, "-m", mapping, "--out", out, "--rejects", rejects, env=env)
        assert result.code in (0, 1), result.stdout + result.stderr
        outputs.append((out.read_bytes(), rejects.read_bytes() if rejects.exists() else b""))
    assert outputs[0][0] and outputs[0] == outputs[1]
