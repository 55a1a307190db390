"""`backfill validate` / `import` (dry) / `inspect` on the shipped real-format samples, as a user runs them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.conftest import MAPPINGS, ROOT, SAMPLES

SAMPLE_NAMES = [
    "events.csv",
    "events.parquet",
    "events.ndjson.gz",
    "stripe_payments.csv",
    "api_actions.ndjson",
    "job_results.csv",
    "access_log.csv",
]


def field_of(reason: str) -> str:
    return reason.split(":", 1)[0]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_validate_sample_ledger_rejects_and_payloads(name, cli, expected, tmp_path: Path) -> None:
    exp = expected[name]
    report, rejects, out = tmp_path / "r.json", tmp_path / "rej.ndjson", tmp_path / "out.ndjson"
    result = cli(
        "validate",
        SAMPLES / name,
        "--mapping",
        ROOT / exp["mapping"],
        "--report",
        report,
        "--rejects",
        rejects,
        "--out",
        out,
        "--quiet",
    )
    assert result.code == (1 if exp["rejected_by_reason"] else 0), result.stderr
    led = json.loads(report.read_text())["ledger"]
    assert led["read"] == exp["read"]
    assert led["accepted"] == exp["would_send"]
    assert led["skipped_by_filter"] == exp["skipped_by_filter"]
    assert led["balances"] is True
    assert led["read"] == led["accepted"] + led["rejected"] + led["skipped"]
    by_field = Counter()
    for reason, n in led["rejected_by_reason"].items():
        by_field[field_of(reason)] += n
    want = Counter()
    for reason, n in exp["rejected_by_reason"].items():
        want[field_of(reason)] += n
    assert by_field == want
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(records) == led["rejected"]
    assert all(r["file"].endswith(name) and r["row"] >= 1 and r["reason"] and r["field"] for r in records)
    payloads = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(payloads) == exp["would_send"]
    for element in payloads:
        assert element["type"] in ("event", "identify")
        p = element["payload"]
        assert isinstance(p["timestamp"], int) and 631152000 < p["timestamp"] < 2_000_000_000
        assert 0 < len(p["id"]) <= 50
        assert None not in p.values()
    times = [(e["payload"]["timestamp"]) for e in payloads]
    assert times == sorted(times), "payloads must be in time order"


def test_each_bad_row_kind_lands_on_its_row(cli, expected, tmp_path: Path) -> None:
    exp = expected["events.csv"]
    rejects = tmp_path / "rej.ndjson"
    cli(
        "validate",
        SAMPLES / "events.csv",
        "--mapping",
        MAPPINGS / "sample_events.yaml",
        "--rejects",
        rejects,
        "--quiet",
    )
    field_by_row = {r["row"]: r["field"] for r in map(json.loads, rejects.read_text().splitlines())}
    kind_field = {
        "bad-url": "url",
        "bot-ua": "userAgent",
        "empty-id": "id",
        "long-data": "data.file_name",
        "long-language": "language",
        "long-name": "name",
        "long-os": "os",
        "long-utm": "url",
        "naive-ts": "timestamp",
        "no-currency": "data.currency",
        "revenue-text": "data.revenue",
        "unparseable-ts": "timestamp",
    }
    for kind, rows in exp["rows_by_kind"].items():
        for row in rows:
            if kind in kind_field:
                assert field_by_row.get(row) == kind_field[kind], (kind, row)
            else:
                assert row not in field_by_row, (
                    kind,
                    row,
                )  # hashed ids and filtered rows are not rejects


def test_rejects_keep_the_original_values(cli, tmp_path: Path) -> None:
    rejects = tmp_path / "rej.ndjson"
    cli(
        "validate",
        SAMPLES / "events.csv",
        "--mapping",
        MAPPINGS / "sample_events.yaml",
        "--rejects",
        rejects,
        "-q",
    )
    bot = next(r for r in map(json.loads, rejects.read_text().splitlines()) if r["field"] == "userAgent")
    assert "user_agent" in bot["values"] and bot["values"]["visitor_id"]


def test_import_without_host_is_a_dry_run_and_says_so_first(cli, tmp_path: Path) -> None:
    result = cli(
        "import",
        SAMPLES / "events.csv",
        "--mapping",
        "sample_events",
        "--rejects",
        tmp_path / "r.ndjson",
        cwd=tmp_path,
    )
    assert result.stdout.splitlines()[0].startswith("DRY RUN")
    assert "adds up" in result.stdout
    assert result.code == 1


def test_misspelt_column_fails_before_reading(cli, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    text = (MAPPINGS / "sample_events.yaml").read_text().replace("column: timestamp", "column: timestmp")
    assert "timestmp" in text
    mapping.write_text(text)
    rejects = tmp_path / "r.ndjson"
    result = cli("validate", SAMPLES / "events.csv", "--mapping", mapping, "--rejects", rejects)
    assert result.code == 2
    assert "did you mean 'timestamp'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not rejects.exists()


def test_limit_and_since_are_counted(cli, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    cli(
        "validate",
        SAMPLES / "events.csv",
        "--mapping",
        "sample_events",
        "--limit",
        "200",
        "--since",
        "2024-03-05",
        "--report",
        report,
        "--rejects",
        tmp_path / "x",
        "-q",
    )
    led = json.loads(report.read_text())["ledger"]
    assert led["read"] == 200
    assert led["skipped_by_filter"].get("--since", 0) > 0
    assert led["balances"]


def test_inspect_suggests_a_loadable_mapping(cli, tmp_path: Path) -> None:
    result = cli("inspect", SAMPLES / "events.csv")
    assert result.code == 0, result.stderr
    assert "timestamp" in result.stderr and "time ranges" in result.stderr
    suggestion = yaml.safe_load(result.stdout)
    assert suggestion["timestamp"]["column"] == "timestamp"
    assert suggestion["visitor"]["columns"] == ["visitor_id"]
    path = tmp_path / "s.yaml"
    path.write_text(result.stdout)
    check = cli("validate", SAMPLES / "events.csv", "--mapping", path, "--rejects", tmp_path / "r", "-q")
    assert check.code in (0, 1), check.stderr


def test_help_answers_for_every_command(cli) -> None:
    for command in ("import", "validate", "inspect"):
        result = cli(command, "--help")
        assert result.code == 0 and "usage: backfill" in result.stdout
    assert "--resend-in-doubt" in cli("import", "--help").stdout
