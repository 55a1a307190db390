"""Shared fixtures: paths to the shipped samples and a runner for the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data"
MAPPINGS = ROOT / "mappings"
_SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the screenshots of HTML reports the browser tests wrote, for a person to look at."""
    shots = ROOT / ".html-reports"
    fresh = sorted(p for p in shots.glob("*.png") if p.stat().st_mtime >= _SESSION_START) if shots.is_dir() else []
    if fresh:
        terminalreporter.write_line("screenshots of the HTML reports: " + ", ".join(str(p) for p in fresh))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self, path: Path) -> Any:
        return json.loads(path.read_text())


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run ``python -m backfill`` as a user would: a real process, real files."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UMAMI_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "backfill", *map(str, args)],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def expected() -> dict[str, Any]:
    return json.loads((SAMPLES / "expected.json").read_text())


def import_into(
    server_url: str,
    site: str,
    source: str | os.PathLike[str],
    mapping: str | os.PathLike[str],
    tmp_path: Path,
    *extra: str | os.PathLike[str],
    cwd: Path | None = None,
    timeout: float = 60,
) -> CliResult:
    """``backfill import`` of one source into a (fake) Umami, rejects and report in ``tmp_path``."""
    return run_cli(
        "import",
        source,
        "-m",
        mapping,
        "--host",
        server_url,
        "--website",
        site,
        "--rejects",
        tmp_path / "rejects.ndjson",
        "--report",
        tmp_path / "report.json",
        *extra,
        cwd=cwd,
        timeout=timeout,
    )


@dataclass
class StoredFigures:
    """What a (fake) Umami stored, counted per UTC day the way its dashboard does."""

    pageviews: list[dict[str, Any]]
    pageviews_by_day: dict[str, int]
    visitors_by_day: dict[str, int]  # distinct sessions with a pageview
    custom_events_by_name: dict[str, int]
    revenue_by_day: dict[str, float]  # rounded to 4 places, as Umami's decimal(19,4)


def stored_day(row: dict[str, Any]) -> str:
    return row["created_at"][:10]


def stored_figures(events: list[dict[str, Any]], revenue: list[dict[str, Any]]) -> StoredFigures:
    from collections import Counter, defaultdict

    pageviews = [e for e in events if e["event_type"] == 1]
    custom = [e for e in events if e["event_type"] == 2]
    sessions: dict[str, set[str]] = defaultdict(set)
    for e in pageviews:
        sessions[stored_day(e)].add(e["session_id"])
    by_day: dict[str, float] = defaultdict(float)
    for r in revenue:
        by_day[stored_day(r)] += float(r["revenue"])
    return StoredFigures(
        pageviews=pageviews,
        pageviews_by_day=dict(sorted(Counter(map(stored_day, pageviews)).items())),
        visitors_by_day={d: len(s) for d, s in sorted(sessions.items())},
        custom_events_by_name=dict(sorted(Counter(e["event_name"] for e in custom).items())),
        revenue_by_day={d: round(v, 4) for d, v in sorted(by_day.items())},
    )
