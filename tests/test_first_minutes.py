"""The first ten minutes of a new user: every typo caught before a row is spent.

Each test drives the real CLI against the fake Umami, as a user would run it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.sinks.http import BatchVerdict, SendSettings, read_batch_answer, run_wide_refusal
from backfill.umami.api import website_id_problem

from .conftest import MAPPINGS, SAMPLES, import_into, run_cli
from .fake_umami import FakeUmami

SOURCE = SAMPLES / "events.csv"
MAPPING = MAPPINGS / "sample_events.yaml"
#: Hex in UUID layout, but its fourth group starts with 4 (not an RFC 4122 variant).
MISTYPED = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def server() -> Iterator[FakeUmami]:
    with FakeUmami() as s:
        yield s


def batch_requests(server: FakeUmami, path: str = "/api/batch") -> list[dict[str, Any]]:
    return [r for r in list(server.request_log) if r["path"] == path]


def ledger(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "report.json").read_text())["ledger"]


def assert_nothing_spent(counts: dict[str, Any]) -> None:
    """Only our own checks rejected rows (the sample has some); Umami rejected none."""
    assert counts["accepted"] == 0 and counts["in_doubt"] == 0
    from_umami = [r for r in counts["rejected_by_reason"] if "Umami refused" in r or "dropped by Umami" in r]
    assert from_umami == []
    assert counts["not_sent_yet"] == counts["read"] - counts["rejected"] - counts["skipped"] > 0


# --------------------------------------------------------------------------- the website id


def test_mistyped_website_id_is_refused_before_any_request(server: FakeUmami, tmp_path: Path) -> None:
    result = import_into(server.url, MISTYPED, SOURCE, MAPPING, tmp_path)
    assert result.code == 2, result.stdout + result.stderr
    assert "RFC 4122" in result.stderr and "--website" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert server.request_log == []  # not even the heartbeat
    assert not (tmp_path / "rejects.ndjson").exists()


def test_mistyped_website_id_in_the_environment_is_named_too(server: FakeUmami, tmp_path: Path) -> None:
    result = run_cli(
        "import", SOURCE, "-m", MAPPING, "--host", server.url, env={"UMAMI_WEBSITE_ID": MISTYPED}, cwd=tmp_path
    )
    assert result.code == 2 and "UMAMI_WEBSITE_ID" in result.stderr, result.stderr
    assert server.request_log == []


@pytest.mark.parametrize(
    ("website", "accepted"),
    [
        ("6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10", True),  # v4, variant 9
        ("6f1b7c1e-0d4a-8c55-bA57-3f1d2b8e9c10", True),  # v8, variant b, mixed case
        ("00000000-0000-0000-0000-000000000000", True),  # nil: zod accepts it
        (MISTYPED, False),  # variant 4
        ("6f1b7c1e-0d4a-0c55-9a57-3f1d2b8e9c10", False),  # version 0
        ("6f1b7c1e-0d4a-9c55-9a57-3f1d2b8e9c10", False),  # version 9
        ("6f1b7c1e-0d4a-4c55-ca57-3f1d2b8e9c10", False),  # variant c
        ("6f1b7c1e0d4a4c559a573f1d2b8e9c10", False),  # no dashes
        ("6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10\n", False),
    ],
)
def test_website_ids_are_checked_as_umami_checks_them(website: str, accepted: bool) -> None:
    """The same answer as the fake's copy of Umami's zod check (recorded from a live server)."""
    from .fake_umami import _UUID_RE

    assert (website_id_problem(website) is None) is accepted
    assert (_UUID_RE.match(website) is not None) is accepted


def test_the_fake_refuses_a_non_rfc4122_website_as_umami_does(server: FakeUmami) -> None:
    import httpx

    element = {"type": "event", "payload": {"website": MISTYPED, "url": "/", "id": "v1"}}
    answer = httpx.post(f"{server.url}/api/batch", json=[element, element]).json()
    assert answer["errors"] == 2
    website = answer["details"][0]["response"]["error"]["properties"]["payload"]["properties"]["website"]
    assert website == {"errors": ["Invalid UUID"]}
    single = httpx.post(f"{server.url}/api/send", json=element)
    assert single.status_code == 400
    assert single.json()["error"]["properties"]["payload"]["properties"]["website"] == {"errors": ["Invalid UUID"]}
    verdict = read_batch_answer(answer, 2)
    settings = SendSettings(host=server.url, website=MISTYPED, user_agent="Mozilla/5.0")
    refusal = run_wide_refusal(verdict, 2, settings, first=True, rows_carry_user_agent=False)
    assert refusal is not None and "Invalid UUID" in refusal and "--website" in refusal
    # the same answer to a later batch, or to half of the first, is not the run's
    assert run_wide_refusal(verdict, 2, settings, first=False, rows_carry_user_agent=False) is None
    half = BatchVerdict({0: verdict.rejected[0]}, [], False)
    assert run_wide_refusal(half, 2, settings, first=True, rows_carry_user_agent=False) is None


def test_unknown_website_stops_after_one_request_rejects_nothing_and_prints_no_resume(
    server: FakeUmami, tmp_path: Path
) -> None:
    unknown = "6f1b7c1e-0d4a-4c55-9a57-3f1d2b8e9c10"
    result = import_into(server.url, unknown, SOURCE, MAPPING, tmp_path, "--concurrency", "4")
    assert result.code == 2, result.stdout + result.stderr
    assert len(batch_requests(server)) == 1
    assert "does not exist" in result.stdout and "--website" in result.stdout, result.stdout
    assert "to resume" not in result.stdout
    assert_nothing_spent(ledger(tmp_path))
    # the corrected command continues the same import and sends every row once
    site = server.add_website()
    fixed = import_into(server.url, site, SOURCE, MAPPING, tmp_path)
    assert fixed.code in (0, 1), fixed.stdout + fixed.stderr
    assert "never reached Umami" in fixed.stderr, fixed.stderr
    counts = ledger(tmp_path)
    assert counts["not_sent_yet"] == 0 and counts["in_doubt"] == 0
    assert len(server.events(site)) == counts["accepted"] > 0


def test_a_user_agent_umami_drops_as_a_bot_refuses_the_run(tmp_path: Path) -> None:
    """Our bot list passes the User-Agent, this Umami's does not: one request, nothing rejected."""
    source, mapping = SAMPLES / "job_results.csv", MAPPINGS / "job_results.yaml"  # rows without a userAgent
    with FakeUmami(bot_check=lambda ua: "umami-backfill" in ua) as server:
        site = server.add_website()
        result = import_into(server.url, site, source, mapping, tmp_path, "--concurrency", "4", "--batch-size", "50")
        assert result.code == 2, result.stdout + result.stderr
        assert len(batch_requests(server)) == 1
        assert "--user-agent" in result.stdout and "to resume" not in result.stdout, result.stdout
        assert_nothing_spent(ledger(tmp_path))
        # the corrected command sends them all
        fixed = import_into(
            server.url,
            site,
            source,
            mapping,
            tmp_path,
            "--batch-size",
            "50",
            "--user-agent",
            "Mozilla/5.0 (X11; Linux)",
        )
        assert fixed.code in (0, 1), fixed.stdout + fixed.stderr
        assert ledger(tmp_path)["not_sent_yet"] == 0
        assert len(server.events(site)) == ledger(tmp_path)["accepted"] > 0


def test_wrong_host_path_prints_what_to_change_not_a_resume(server: FakeUmami, tmp_path: Path) -> None:
    """A --host with no collection API at all (404 on /api/batch, then on /api/send, which a
    server without the batch endpoint would have) needs a changed command: exit 2."""
    site = server.add_website()
    server.faults.status(404, times=None, paths=("/api/batch", "/api/send"))
    result = import_into(server.url, site, SOURCE, MAPPING, tmp_path, "--concurrency", "4")
    assert result.code == 2, result.stdout + result.stderr
    assert len(batch_requests(server)) == 1 and len(batch_requests(server, "/api/send")) == 1
    assert "404" in result.stdout and "--host" in result.stdout, result.stdout
    assert "to resume" not in result.stdout


def test_a_transient_stop_keeps_its_resume_command(server: FakeUmami, tmp_path: Path) -> None:
    """Umami overloaded (503 until retries run out): the same command can succeed later."""
    site = server.add_website()
    server.faults.status(503, times=None, retry_after=0, paths=("/api/batch",))
    result = import_into(server.url, site, SOURCE, MAPPING, tmp_path)
    assert result.code == 3, result.stdout + result.stderr
    assert "to resume: backfill import" in result.stdout, result.stdout


# --------------------------------------------------------------------------- presets beside folders


def test_preset_name_beside_a_folder_of_the_same_name_loads_the_preset(tmp_path: Path) -> None:
    export = tmp_path / "ga4"
    export.mkdir()
    shutil.copy(SAMPLES / "ga4" / "events_20240301.json.gz", export)
    result = run_cli("validate", "ga4", "-m", "ga4", "--rejects", tmp_path / "r.ndjson", cwd=tmp_path)
    assert result.code in (0, 1), result.stdout + result.stderr
    assert "would send" in result.stdout and "Is a directory" not in result.stderr


def test_preset_name_beside_a_file_of_the_same_name_says_which_was_used(tmp_path: Path) -> None:
    (tmp_path / "ga4").write_text("not a mapping\n")
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(SAMPLES / "ga4" / "events_20240301.json.gz", export)
    result = run_cli("validate", export, "-m", "ga4", "--rejects", tmp_path / "r.ndjson", cwd=tmp_path)
    assert result.code in (0, 1), result.stdout + result.stderr
    assert "preset" in result.stderr and "./ga4" in result.stderr, result.stderr
    # the file is still reachable as a path
    as_file = run_cli("validate", export, "-m", "./ga4", "--rejects", tmp_path / "r.ndjson", cwd=tmp_path)
    assert as_file.code == 2 and "ga4" in as_file.stderr and "Traceback" not in as_file.stderr


def test_a_folder_given_as_mapping_is_named_clearly(tmp_path: Path) -> None:
    (tmp_path / "mymap").mkdir()
    result = run_cli("validate", SOURCE, "-m", "mymap", cwd=tmp_path)
    assert result.code == 2 and "is a directory" in result.stderr and "preset" in result.stderr, result.stderr
