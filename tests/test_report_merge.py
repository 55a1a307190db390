"""``backfill report merge``: the reports of N shard processes become one ledger that adds up.

Shard reports are made from a real ``backfill validate --report`` of the shipped
sample: every bucket is split between the N shards and each shard counts the
rows it did not take as "not in shard K/N", as a ``--shard K/N`` run does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from backfill.cli import main
from tests.conftest import MAPPINGS, SAMPLES, run_cli


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    result = run_cli(
        "validate",
        SAMPLES / "events.csv",
        "-m",
        MAPPINGS / "sample_events.yaml",
        "--report",
        tmp / "report.json",
        "--rejects",
        tmp / "rejects.ndjson",
        "-q",
    )
    assert result.code == 1, result.stderr  # the sample's bad rows are rejected on purpose
    return json.loads((tmp / "report.json").read_text())


def test_a_report_says_its_shard_timings_and_whether_visitors_are_exact(real_report) -> None:
    assert real_report["shard"] is None  # an unsharded run
    assert real_report["timings"]["prepare_s"] > 0
    assert real_report["stats"]["distinct_visitors_exact"] is True


def _part(total: int, k: int, n: int) -> int:
    return total // n + (1 if k <= total % n else 0)


def split(report: dict[str, Any], n: int, *, with_shard_field: bool = True) -> list[dict[str, Any]]:
    """N shard reports whose buckets sum to the report's; rows of other shards skipped as 'not in shard K/N'."""
    led = report["ledger"]
    shards = []
    for k in range(1, n + 1):
        data = copy.deepcopy(report)
        out = data["ledger"]
        out["accepted"] = _part(led["accepted"], k, n)
        out["in_doubt"] = _part(led["in_doubt"], k, n)
        out["rejected_by_reason"] = {r: _part(c, k, n) for r, c in led["rejected_by_reason"].items()}
        out["rejected"] = sum(out["rejected_by_reason"].values())
        skips = {r: _part(c, k, n) for r, c in led["skipped_by_filter"].items()}
        taken = out["accepted"] + out["in_doubt"] + out["rejected"] + sum(skips.values())
        skips[f"not in shard {k}/{n}"] = led["read"] - taken
        out["skipped_by_filter"] = skips
        out["skipped"] = sum(skips.values())
        data["stats"]["distinct_visitors"] = _part(report["stats"]["distinct_visitors"], k, n)
        data["stats"]["distinct_visitors_exact"] = True
        for key in ("events_by_name", "top_paths", "top_countries"):
            data["stats"][key] = {name: _part(c, k, n) for name, c in report["stats"][key].items()}
        data["shard"] = [k, n] if with_shard_field else None
        data["rejects_file"] = f"shard{k}/rejects.ndjson"
        shards.append(data)
    return shards


def write(tmp_path: Path, reports: list[dict[str, Any]]) -> list[str]:
    paths = []
    for i, data in enumerate(reports, 1):
        path = tmp_path / f"shard-{i}.json"
        path.write_text(json.dumps(data))
        paths.append(str(path))
    return paths


def merge(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", "merge", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_merged_ledger_equals_the_unsharded_one(tmp_path: Path, real_report, capsys) -> None:
    paths = write(tmp_path, split(real_report, 3))
    code, out, _ = merge(capsys, *paths, "--out", str(tmp_path / "merged.json"))
    assert code == 1  # rows were rejected, as in the run itself
    assert "merged from 3 shard reports" in out
    assert "= rows read: adds up" in out
    assert "not in shard" not in out.split("shards: 3")[0]  # the shard skips are not listed as filters
    assert "(3 - 1) x 1,043 rows read, as expected" in out
    merged = json.loads((tmp_path / "merged.json").read_text())
    want, got = real_report["ledger"], merged["ledger"]
    for key in ("read", "accepted", "rejected", "rejected_by_reason", "skipped", "skipped_by_filter", "in_doubt"):
        assert got[key] == want[key], key
    assert got["balances"] is True
    assert merged["merge"]["adds_up"] is True
    assert merged["merge"]["not_in_shard_total"] == 2 * want["read"]
    assert merged["stats"]["distinct_visitors"] == real_report["stats"]["distinct_visitors"]
    assert merged["stats"]["events_by_name"] == real_report["stats"]["events_by_name"]
    assert "stats.top_paths" in merged["merge"]["approximate"]
    assert "shard1/rejects.ndjson" in merged["rejects_file"] and "shard3/rejects.ndjson" in merged["rejects_file"]
    # Examples stay in input order whichever shard met them first.
    for reason, examples in got["reject_examples"].items():
        rows = [int(e.rsplit(":", 1)[1]) for e in examples]
        assert rows == sorted(rows), reason


def test_the_shard_is_read_from_the_skip_reason_when_the_report_does_not_say(
    tmp_path: Path, real_report, capsys
) -> None:
    reports = split(real_report, 2, with_shard_field=False)
    for data in reports:
        del data["shard"]
    code, out, _ = merge(capsys, *write(tmp_path, reports))
    assert code == 1
    assert "adds up" in out


def test_different_rows_read_is_an_error_naming_the_files(tmp_path: Path, real_report, capsys) -> None:
    reports = split(real_report, 2)
    reports[1]["ledger"]["read"] += 5
    reports[1]["ledger"]["skipped_by_filter"]["not in shard 2/2"] += 5
    paths = write(tmp_path, reports)
    code, out, err = merge(capsys, *paths)
    assert code == 2
    assert out == ""
    assert "different numbers of rows" in err
    assert f"{paths[0]}: 1,043" in err and f"{paths[1]}: 1,048" in err


def test_a_missing_shard_is_an_error(tmp_path: Path, real_report, capsys) -> None:
    paths = write(tmp_path, split(real_report, 3))
    code, _, err = merge(capsys, paths[0], paths[2])
    assert code == 2
    assert "missing the report of shard 2/3" in err


def test_a_shard_given_twice_is_an_error(tmp_path: Path, real_report, capsys) -> None:
    paths = write(tmp_path, split(real_report, 2))
    code, _, err = merge(capsys, paths[0], paths[0], paths[1])
    assert code == 2
    assert "repeated: shard 1/2" in err


def test_reports_of_different_splits_are_an_error(tmp_path: Path, real_report, capsys) -> None:
    two, three = split(real_report, 2), split(real_report, 3)
    paths = write(tmp_path, [two[0], three[1]])
    code, _, err = merge(capsys, *paths)
    assert code == 2
    assert "different splits" in err


def test_shard_skips_that_do_not_add_up_are_reported_and_exit_2(tmp_path: Path, real_report, capsys) -> None:
    # Each shard balances on its own, but shard 2 took 4 rows that shard 1 also took.
    reports = split(real_report, 2)
    led = reports[1]["ledger"]
    led["accepted"] += 4
    led["skipped_by_filter"]["not in shard 2/2"] -= 4
    led["skipped"] -= 4
    code, out, _ = merge(capsys, *write(tmp_path, reports), "--out", str(tmp_path / "merged.json"))
    assert code == 2
    assert "DOES NOT ADD UP" in out
    assert "SHARD CHECK FAILED" in out
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["merge"]["adds_up"] is False


def test_unfinished_shards_make_the_merge_unfinished(tmp_path: Path, real_report, capsys) -> None:
    reports = split(real_report, 2)
    for data in reports:
        data["mode"] = "import"
    led = reports[0]["ledger"]
    led["accepted"] -= 10
    led["not_sent_yet"] = 10
    reports[0]["stopped"] = "interrupted: the checkpoint is saved"
    reports[0]["resume_command"] = "backfill import x.csv -m m.yaml --shard 1/2"
    code, out, _ = merge(capsys, *write(tmp_path, reports))
    assert code == 3
    assert "not sent yet" in out and "adds up" in out
    assert "to resume it: backfill import x.csv -m m.yaml --shard 1/2" in out


def test_an_estimated_visitor_count_makes_the_sum_an_estimate(tmp_path: Path, real_report, capsys) -> None:
    reports = split(real_report, 2)
    reports[0]["stats"]["distinct_visitors_exact"] = False
    code, out, _ = merge(capsys, *write(tmp_path, reports), "--out", str(tmp_path / "m.json"))
    assert code == 1
    assert "distinct visitors = sum over the shards, an estimate" in out
    assert "stats.distinct_visitors" in json.loads((tmp_path / "m.json").read_text())["merge"]["approximate"]


def test_a_file_that_is_not_a_report(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    code, _, err = merge(capsys, str(bad))
    assert code == 2
    assert f"{bad}: not a backfill --report file" in err
    code, _, err = merge(capsys, str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read the report" in err


def test_real_shard_runs_merge_to_the_unsharded_ledger(tmp_path: Path, real_report) -> None:
    """End to end with ``--shard K/N``: the shards' reports merge to the unsharded ledger."""
    paths = []
    for k in (1, 2, 3):
        report = tmp_path / f"s{k}.json"
        result = run_cli(
            "validate",
            SAMPLES / "events.csv",
            "-m",
            MAPPINGS / "sample_events.yaml",
            "--shard",
            f"{k}/3",
            "--report",
            report,
            "--rejects",
            tmp_path / f"rejects-{k}.ndjson",
            "-q",
        )
        assert result.code in (0, 1), result.stderr
        paths.append(report)
    result = run_cli("report", "merge", *paths, "--out", tmp_path / "merged.json")
    assert result.code == 1, result.stdout + result.stderr
    merged = json.loads((tmp_path / "merged.json").read_text())
    for key in ("read", "accepted", "rejected_by_reason", "skipped_by_filter"):
        assert merged["ledger"][key] == real_report["ledger"][key], key
    assert merged["stats"]["distinct_visitors"] == real_report["stats"]["distinct_visitors"]
    assert merged["merge"]["adds_up"] is True


def test_sharded_imports_store_every_row_once_with_each_visitor_in_one_shard(tmp_path: Path) -> None:
    """Three shard imports into one (fake) Umami: together exactly the unsharded import."""
    from tests.conftest import import_into
    from tests.fake_umami import FakeUmami

    source, mapping = SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml"
    ids_by_shard: list[set[str]] = []
    seen_events: set[str] = set()
    reports = []
    with FakeUmami() as server:
        site = server.add_website()
        for k in (1, 2, 3):
            work = tmp_path / f"shard{k}"
            work.mkdir()
            result = import_into(server.url, site, source, mapping, work, "--shard", f"{k}/3")
            assert result.code in (0, 1), result.stderr
            reports.append(work / "report.json")
            new = [e for e in server.events(site) if e["event_id"] not in seen_events]
            seen_events.update(e["event_id"] for e in new)
            ids_by_shard.append({e["distinct_id"] for e in new})
        stored = [e["url_path"] + "|" + str(e["created_at"]) + "|" + e["distinct_id"] for e in server.events(site)]
    with FakeUmami() as server:
        site = server.add_website()
        whole = import_into(server.url, site, source, mapping, tmp_path)
        assert whole.code in (0, 1), whole.stderr
        expected = [e["url_path"] + "|" + str(e["created_at"]) + "|" + e["distinct_id"] for e in server.events(site)]
    assert sorted(stored) == sorted(expected)  # every row once, nothing extra
    assert all(ids_by_shard), "each shard imported some visitors"
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids_by_shard[a] & ids_by_shard[b], "a visitor's events were sent by two shards"
    merged = run_cli("report", "merge", *reports, "--out", tmp_path / "merged.json")
    assert merged.code == 1, merged.stdout + merged.stderr  # the sample's rejects
    ledger = json.loads((tmp_path / "merged.json").read_text())["ledger"]
    whole_ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["accepted"] == whole_ledger["accepted"] == len(expected)
