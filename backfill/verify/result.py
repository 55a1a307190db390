"""What ``verify`` found: per-day rows, top lists, differences and diagnoses (the JSON and the text render these)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..ledger import Ledger
from .tolerance import Tolerance

DEFAULT_TOP = 10
DAY_METRICS = ("pageviews", "visitors", "visits", "events")
TOP_LISTS: dict[str, tuple[str, str]] = {
    "paths": ("path", "visitors per URL path"),
    "referrers": ("referrer", "visitors per referrer domain"),
    "countries": ("country", "sessions per country"),
    "browsers": ("browser", "sessions per browser"),
    "os": ("os", "sessions per OS"),
    "devices": ("device", "sessions per device"),
}
NONE_LABEL = "(none)"


@dataclass
class DayRow:
    day: dt.date
    expected: dict[str, int]
    found: dict[str, int]
    differs: list[str] = field(default_factory=list)
    events_expected: Counter[str] = field(default_factory=Counter)
    events_found: Counter[str] = field(default_factory=Counter)
    events_differ: list[str] = field(default_factory=list)


@dataclass
class TopRow:
    value: Any
    expected: int
    found: int
    differs: bool


@dataclass
class TopList:
    name: str
    counted: str
    rows: list[TopRow] = field(default_factory=list)
    unpredictable: str | None = None
    found_total: int = 0


@dataclass
class Difference:
    where: str  # a day (YYYY-MM-DD) or "top <list>"
    metric: str
    expected: int
    found: int

    def text(self) -> str:
        delta = self.found - self.expected
        return f"{self.where} {self.metric}: expected {self.expected:,}, found {self.found:,} ({delta:+,})"


@dataclass
class Diagnosis:
    kind: str
    title: str
    text: str


@dataclass
class VerifyResult:
    host: str
    website: str
    timezone: str
    tolerance: Tolerance
    visits_mode: str
    expected_rows: int
    first_day: dt.date | None
    last_day: dt.date | None
    days: list[DayRow] = field(default_factory=list)
    top: list[TopList] = field(default_factory=list)
    revenue: dict[str, float] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)  # found after the range, in the last RECENT_DAYS
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    requests: int = 0
    elapsed_s: float = 0.0
    source_ledger: Ledger | None = None  # how the sources' rows were accounted for

    @property
    def matches(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "website": self.website,
            "timezone": self.timezone,
            "tolerance": self.tolerance.describe(),
            "visits": self.visits_mode,
            "expected_rows": self.expected_rows,
            "range": {
                "first_day": self.first_day.isoformat() if self.first_day else None,
                "last_day": self.last_day.isoformat() if self.last_day else None,
            },
            "days": [
                {
                    "day": r.day.isoformat(),
                    "expected": r.expected,
                    "found": r.found,
                    "differs": r.differs,
                    "events": {
                        name: {"expected": r.events_expected.get(name, 0), "found": r.events_found.get(name, 0)}
                        for name in sorted(set(r.events_expected) | set(r.events_found))
                    },
                    "events_differ": r.events_differ,
                }
                for r in self.days
            ],
            "top": {
                t.name: {
                    "counted": t.counted,
                    "compared": t.unpredictable is None,
                    "unpredictable": t.unpredictable,
                    "rows": [
                        {
                            "value": r.value,
                            "expected": r.expected if t.unpredictable is None else None,
                            "found": r.found,
                            "differs": r.differs,
                        }
                        for r in t.rows
                    ],
                }
                for t in self.top
            },
            "revenue_expected": self.revenue,
            "revenue_compared": False,
            "after_range_recent": self.recent,
            "diagnoses": [{"kind": d.kind, "title": d.title, "text": d.text} for d in self.diagnoses],
            "notes": self.notes,
            "differences": [
                {"where": d.where, "metric": d.metric, "expected": d.expected, "found": d.found}
                for d in self.differences
            ],
            "verdict": "match" if self.matches else "different",
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "source_ledger": self.source_ledger.to_dict() if self.source_ledger else None,
        }


def display_label(value: Any) -> str:
    if value is None:
        return NONE_LABEL
    return "(empty)" if value == "" else str(value)
