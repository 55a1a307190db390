"""The HTML report: one self-contained page a person opens, for a dry run, an import,
a merge of shard reports or a ``verify`` run.

It is rendered from the report's JSON dict, the same one ``--report`` writes
(``Summary.to_dict``, ``Merged.to_dict``, ``VerifyResult.to_dict``, plus the
``run`` section), so the page shows the terminal's and the JSON's figures and a
saved report renders the same page later (``backfill report html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .run import run_page
from .verify import verify_page

__all__ = ["render_html", "report_kind", "write_html"]


def report_kind(report: dict[str, Any]) -> str:
    """``verify`` or ``run``; a ConfigError for anything else."""
    if isinstance(report, dict) and "verdict" in report and "days" in report:
        return "verify"
    if isinstance(report, dict) and isinstance(report.get("ledger"), dict):
        return "run"
    raise ConfigError("not a backfill report (neither a run's --report nor verify's)")


def render_html(report: dict[str, Any]) -> str:
    """The whole page as text."""
    page = verify_page(report) if report_kind(report) == "verify" else run_page(report)
    return page.render()


def write_html(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
