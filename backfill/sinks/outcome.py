"""What a sink reports: progress snapshots while it runs, and the outcome at the end.

Shared by every sink (HTTP, database) so the import's summary, report and
progress display read one shape whatever the destination.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ledger import Ledger


@dataclass(frozen=True)
class SendProgress:
    """A snapshot for the progress display, taken after each finished batch."""

    rows_done: int  # rows whose fate was decided in this run
    accepted: int
    rejected: int
    in_doubt: int
    rows_skipped: int  # rows already finished by an earlier run
    events_per_second: float
    concurrency: int
    last_latency: float | None


@dataclass
class SendOutcome:
    """What the send phase did; ``ledger`` is this run's, ``cumulative`` the checkpoint's."""

    completed: bool
    interrupted: bool
    error: str | None
    ledger: Ledger
    cumulative: Ledger
    rows_seen: int = 0
    rows_skipped: int = 0
    in_doubt_recorded_on_resume: int = 0
    in_doubt_resent: int = 0
    requests: int = 0
    elapsed_s: float = 0.0
    checkpoint_saves: int = 0
    checkpoint_save_s: float = 0.0
    visit_first_requests: int = 0  # lone requests that opened a visit crossing a clock hour
    #: Worker time spent waiting for the checkpoint before a request, and on requests:
    #: the checkpoint's cost on the critical path is wait / (wait + request).
    checkpoint_wait_s: float = 0.0
    request_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "interrupted": self.interrupted,
            "error": self.error,
            "ledger": self.ledger.to_dict(),
            "cumulative": self.cumulative.to_dict(),
            "rows_seen": self.rows_seen,
            "rows_skipped": self.rows_skipped,
            "in_doubt_recorded_on_resume": self.in_doubt_recorded_on_resume,
            "in_doubt_resent": self.in_doubt_resent,
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "checkpoint_saves": self.checkpoint_saves,
            "checkpoint_save_s": round(self.checkpoint_save_s, 3),
            "visit_first_requests": self.visit_first_requests,
            "checkpoint_wait_s": round(self.checkpoint_wait_s, 3),
            "request_s": round(self.request_s, 3),
            "notes": self.notes,
        }


ProgressCallback = Callable[[SendProgress], None]
