"""Google Analytics Data API answers (``runReport``) as report tables: the same reader as the CSV downloads.

A ``RunReportResponse`` is a table: ``dimensionHeaders`` and ``metricHeaders`` name
its columns (``date``, ``pagePath``, ``screenPageViews``, ...; every value is text),
``rows`` hold the values. Each answer becomes a ``RawTable`` with those names as its
header, and from there it takes exactly the CSV path (``analyse_table``,
``assemble_days``, ``backfill.synthesize``), so a day pulled from the API and the
same day downloaded as CSV give the same events.

Read here: one ``RunReportResponse`` object, a list of them, or a
``batchRunReports`` answer (``{"reports": [...]}``). ``backfill.pull.ga4`` saves one
file per day in that last shape, with its own ``pull`` entry (property, day, the
name of each report, when it was pulled).

What Google changed in its answer is said in the run's summary, one note per kind
of change and report listing the days (``ReadOptions.note_in``):

* ``metadata.subjectToThresholding``: rows with few users may be withheld, so a
  breakdown can add up to less than the day's users;
* ``metadata.samplingMetadatas``: the figures were estimated from a sample;
* ``metadata.dataLossFromOtherRow``: rows beyond the report's cardinality limit
  were lumped into one ``(other)`` row (pages: sent as ``/(other)``; breakdowns:
  visitors without a value);
* ``metadata.schemaRestrictionResponse``: metrics withheld by the property's
  data access restrictions (revenue, cost);
* a day pulled less than 48 hours after it ended (GA4 may still have been
  processing it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from backfill.errors import SourceError
from backfill.sources.compression import UTF8_BOM
from backfill.sources.ga_report import ParsedReport, RawTable, analyse_table, assemble_days
from backfill.synthesize import OTHER_PAGE, UNKNOWN_PAGE

NoteIn = Callable[[str, str], None]

#: Page dimensions whose GA placeholders become the reader's page placeholders.
_PAGE_DIMENSIONS = frozenset({"pagePath", "pagePathPlusQueryString", "unifiedPagePathScreen", "landingPage"})
_PAGE_PLACEHOLDERS = {"(other)": OTHER_PAGE, "(not set)": UNKNOWN_PAGE, "": UNKNOWN_PAGE}
#: Labels of a page that GA fills with a placeholder when it has none: sent as no value.
_LABEL_DIMENSIONS = frozenset({"hostName", "pageTitle", "unifiedScreenName"})
_NO_LABEL = frozenset({"(not set)", "(other)", "(data not available)"})
#: GA4 may revise a day's figures for up to 48 hours after it ends.
PROCESSING_HOURS = 48

THRESHOLDED = (
    "Google Analytics applied thresholding (subjectToThresholding) to the {report} report: rows with "
    "few users may be withheld, so its figures can add up to less than the day's; days"
)
SAMPLED = "Google Analytics sampled the {report} report (samplingMetadatas): its figures are estimates; days"
OTHER_ROW = (
    "Google Analytics lumped rows beyond its cardinality limit into '(other)' in the {report} report "
    "(dataLossFromOtherRow; pages sent as /(other), other values left unknown); days"
)
RESTRICTED = (
    "Google Analytics withheld metrics of the {report} report by the property's data access "
    "restrictions (schemaRestrictionResponse: {metrics}); days"
)
EARLY = (
    "days pulled less than 48 hours after they ended: Google Analytics may still have been processing "
    "them (delete their files in the pull folder and run again to pull them anew)"
)


def is_api_answer(data: bytes) -> bool:
    """JSON rather than a CSV download (a CSV report starts with '#' or a header)."""
    return data.removeprefix(UTF8_BOM).lstrip()[:1] in (b"{", b"[")


def parse_api_report(data: bytes, name: str, note_in: NoteIn | None = None) -> ParsedReport:
    """The answers in one JSON file -> tables and per-day aggregates, flags said through ``note_in``."""
    try:
        document = json.loads(data.removeprefix(UTF8_BOM))
    except ValueError as exc:
        raise SourceError(f"{name}: not JSON ({exc}); a Data API answer saved whole is expected") from exc
    answers, titles, pull = _answers(document, name)
    raws = [_raw_table(i, answer, title) for i, (answer, title) in enumerate(zip(answers, titles, strict=True), 1)]
    tables = [analyse_table(raw, ".") for raw in raws]
    for table, answer in zip(tables, answers, strict=True):
        currency = (answer.get("metadata") or {}).get("currencyCode")
        if currency and table.currency is None:
            table.currency = str(currency).upper()
    key = hashlib.sha256(json.dumps(answers, sort_keys=True, ensure_ascii=False).encode()).digest()
    report = ParsedReport(name=name, key=key, tables=tables, days=[])
    report.days = assemble_days(report)
    if note_in is not None:
        for answer, title in zip(answers, titles, strict=True):
            _say_flags(answer, title, _days_of(answer, pull), note_in)
        _say_early(pull, note_in)
    return report


def _answers(document: Any, name: str) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """(answers, their titles, the pull entry or {}) from any of the accepted shapes."""
    pull: dict[str, Any] = {}
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        raise SourceError(f"{name}: the file is Google's error answer, not a report: {error.get('message')!r}")
    if isinstance(document, dict) and isinstance(document.get("reports"), list):
        pull = document.get("pull") if isinstance(document.get("pull"), dict) else {}
        answers = document["reports"]
    elif isinstance(document, dict):
        answers = [document]
    elif isinstance(document, list):
        answers = document
    else:
        answers = []
    if not answers or not all(
        isinstance(a, dict) and ("dimensionHeaders" in a or "metricHeaders" in a) for a in answers
    ):
        raise SourceError(
            f"{name}: not a Google Analytics Data API answer (runReport or batchRunReports JSON with "
            "dimensionHeaders and metricHeaders)"
        )
    names = pull.get("reports") if isinstance(pull.get("reports"), list) else []
    titles = [str(names[i]) if i < len(names) else _title(a) for i, a in enumerate(answers)]
    return answers, titles, pull


def _title(answer: dict[str, Any]) -> str:
    dims = [h.get("name", "") for h in answer.get("dimensionHeaders") or [] if h.get("name") != "date"]
    return " / ".join(dims) or "totals"


def _raw_table(index: int, answer: dict[str, Any], title: str) -> RawTable:
    dims = [str(h.get("name", "")) for h in answer.get("dimensionHeaders") or []]
    metrics = [str(h.get("name", "")) for h in answer.get("metricHeaders") or []]
    pages = [i for i, d in enumerate(dims) if d in _PAGE_DIMENSIONS]
    labels = [i for i, d in enumerate(dims) if d in _LABEL_DIMENSIONS]
    rows: list[list[str]] = []
    for row in answer.get("rows") or []:
        values = [str((v or {}).get("value", "")) for v in row.get("dimensionValues") or []]
        for i in pages:
            if i < len(values):
                values[i] = _PAGE_PLACEHOLDERS.get(values[i], values[i])
        for i in labels:
            if i < len(values) and values[i] in _NO_LABEL:
                values[i] = ""
        values += [str((v or {}).get("value", "")) for v in row.get("metricValues") or []]
        rows.append(values)
    return RawTable(index, 0, title, dims + metrics, rows, None, None)


def _days_of(answer: dict[str, Any], pull: dict[str, Any]) -> list[str]:
    """The ISO days an answer covers: the pulled day, else its date values."""
    if pull.get("date"):
        return [str(pull["date"])]
    dims = [h.get("name") for h in answer.get("dimensionHeaders") or []]
    if "date" not in dims:
        return ["(undated answer)"]
    at = dims.index("date")
    days = set()
    for row in answer.get("rows") or []:
        text = str(((row.get("dimensionValues") or [])[at] or {}).get("value", ""))
        if len(text) == 8 and text.isdigit():
            days.add(f"{text[:4]}-{text[4:6]}-{text[6:]}")
    return sorted(days)


def _say_flags(answer: dict[str, Any], title: str, days: list[str], note_in: NoteIn) -> None:
    metadata = answer.get("metadata") or {}
    said: list[str] = []
    if metadata.get("subjectToThresholding"):
        said.append(THRESHOLDED.format(report=title))
    if metadata.get("samplingMetadatas"):
        said.append(SAMPLED.format(report=title))
    if metadata.get("dataLossFromOtherRow"):
        said.append(OTHER_ROW.format(report=title))
    restriction = metadata.get("schemaRestrictionResponse") or {}
    restricted = sorted(
        {str(name) for r in restriction.get("activeMetricRestrictions") or [] for name in [r.get("metricName")] if name}
    )
    if restricted:
        said.append(RESTRICTED.format(report=title, metrics=", ".join(restricted)))
    for topic in said:
        for day in days:
            note_in(topic, day)


def _say_early(pull: dict[str, Any], note_in: NoteIn) -> None:
    """A day pulled before GA4 stopped revising it."""
    try:
        day = dt.date.fromisoformat(str(pull["date"]))
        pulled = dt.datetime.fromisoformat(str(pull["pulledAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return
    ended = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    if pulled < ended + dt.timedelta(hours=PROCESSING_HOURS):
        note_in(EARLY, day.isoformat())


__all__ = ["is_api_answer", "parse_api_report"]
