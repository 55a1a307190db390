"""The checkpoint: atomic saves, clear refusal of a damaged file, readable fingerprint diffs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backfill.checkpoint import (
    MAX_RUNS_KEPT,
    Checkpoint,
    compare_fingerprint,
    fingerprint_files,
    hash_text,
)
from backfill.errors import ConfigError, SourceError


def _checkpoint() -> Checkpoint:
    cp = Checkpoint.new({"host": "https://umami.example.com", "mapping": hash_text("m")}, lanes=4)
    cp.lane_acked[2] = 41
    cp.lane_inflight[1] = [10, 30, 5]
    cp.in_doubt_ranges.append([3, 7, 9, 2])
    cp.send_ledger.accepted = 40
    cp.send_ledger.read = 43
    cp.send_ledger.reject("Umami refused name: Too big", 1, ["a.csv:3"])
    cp.send_ledger.in_doubt = 2
    cp.rejects_offset = 120
    return cp


def test_new_checkpoint_starts_before_everything() -> None:
    cp = Checkpoint.new({"lanes": 8}, lanes=8)
    assert cp.phase == "preparing"
    assert cp.lane_acked == [-1] * 8
    assert cp.lane_inflight == [None] * 8
    assert cp.in_doubt_ranges == []
    assert cp.rejects_offset == cp.in_doubt_offset == 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "checkpoint.json"
    cp = _checkpoint()
    cp.save(path)
    loaded = Checkpoint.load(path)
    assert loaded is not None
    assert loaded.to_dict() == cp.to_dict()
    assert loaded.send_ledger.rejected["Umami refused name: Too big"] == 1
    assert loaded.send_ledger.balances()
    assert loaded.in_doubt_rows == 2


def test_saved_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    _checkpoint().save(path)
    data = json.loads(path.read_text())
    assert set(data) == {
        "version",
        "fingerprint",
        "lanes",
        "phase",
        "prepared",
        "started_at",
        "updated_at",
        "runs",
        "lane_acked",
        "lane_inflight",
        "in_doubt_ranges",
        "send_ledger",
        "rejects_offset",
        "in_doubt_offset",
    }
    assert data["lane_inflight"] == [None, [10, 30, 5], None, None]
    assert data["updated_at"].endswith("Z")


def test_save_leaves_no_temp_file_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    cp = _checkpoint()
    for i in range(5):
        cp.lane_acked[0] = i
        cp.save(path)
    assert os.listdir(tmp_path) == ["checkpoint.json"]
    loaded = Checkpoint.load(path)
    assert loaded is not None and loaded.lane_acked[0] == 4


def test_a_crash_during_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.json"
    cp = _checkpoint()
    cp.save(path)
    before = path.read_bytes()

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    cp.lane_acked[0] = 999
    with pytest.raises(OSError):
        cp.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.json"]


def test_missing_checkpoint_is_none(tmp_path: Path) -> None:
    assert Checkpoint.load(tmp_path / "nothing.json") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 1}',
        '{"version": 99, "lanes": 1}',
        json.dumps({**_checkpoint().to_dict(), "lane_acked": [1, 2]}),
        json.dumps({**_checkpoint().to_dict(), "phase": "dancing"}),
    ],
)
def test_damaged_checkpoint_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Checkpoint.load(path)
    assert str(path) in str(info.value)
    assert "--restart" in str(info.value)


def test_runs_are_capped() -> None:
    cp = Checkpoint.new({}, lanes=1)
    for i in range(MAX_RUNS_KEPT + 7):
        cp.add_run({"n": i})
    assert len(cp.runs) == MAX_RUNS_KEPT
    assert cp.runs[-1] == {"n": MAX_RUNS_KEPT + 6}


def test_fingerprint_files_and_hash(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("x,y\n1,2\n")
    [entry] = fingerprint_files([a])
    assert entry == {"path": str(a), "size": 8, "mtime_ns": a.stat().st_mtime_ns}
    assert hash_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(SourceError):
        fingerprint_files([tmp_path / "missing.csv"])


def _fingerprint(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "files": [
            {"path": "sample.csv", "size": 1200, "mtime_ns": 1},
            {"path": "more.csv", "size": 50, "mtime_ns": 2},
        ],
        "mapping": hash_text("mapping v1"),
        "host": "https://a.example.com",
        "website": "5d8a2b1e-3c4f-4a6b-9e7d-1f2a3b4c5d6e",
        "lanes": 64,
    }
    base.update(overrides)
    return base


def test_same_fingerprint_has_no_changes() -> None:
    assert compare_fingerprint(_fingerprint(), _fingerprint()) == []


def test_fingerprint_changes_are_explained() -> None:
    current = _fingerprint(
        files=[
            {"path": "sample.csv", "size": 1300, "mtime_ns": 1},
            {"path": "more.csv", "size": 50, "mtime_ns": 3},
        ],
        mapping=hash_text("mapping v2"),
        host="https://b.example.com",
        lanes=32,
    )
    assert compare_fingerprint(_fingerprint(), current) == [
        "input sample.csv changed size 1200 -> 1300 bytes since the checkpoint",
        "input more.csv was modified since the checkpoint (same size)",
        "the mapping changed",
        "the host changed from https://a.example.com to https://b.example.com",
        "the number of lanes changed from 64 to 32",
    ]


def test_added_removed_and_reordered_inputs() -> None:
    saved = _fingerprint()
    added = _fingerprint(files=[*saved["files"], {"path": "new.csv", "size": 1, "mtime_ns": 1}])  # type: ignore[misc]
    assert compare_fingerprint(saved, added) == ["input new.csv was added since the checkpoint"]
    assert compare_fingerprint(added, saved) == ["input new.csv is no longer among the inputs"]
    reordered = _fingerprint(files=list(reversed(saved["files"])))  # type: ignore[call-overload]
    assert compare_fingerprint(saved, reordered) == ["the inputs are the same files in a different order"]


def test_unknown_components_are_compared_too() -> None:
    saved = {"limit": 100, "extra": {"a": 1}}
    current = {"limit": 200, "extra": {"a": 2}, "since": 5}
    assert compare_fingerprint(saved, current) == [
        "--limit changed from 100 to 200",
        "the extra changed",
        "--since is given now but was not part of the checkpoint",
    ]
