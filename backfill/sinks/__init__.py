"""Sinks: where an import's prepared rows go. The last stage, behind one small interface.

An import reads, maps, validates and orders rows the same way whatever the
destination; choosing a sink is all the CLI and :mod:`backfill.importing` know of it:

- :class:`~backfill.sinks.http.HttpSink` sends ``/api/batch`` requests to a
  running Umami (``--host``): throttled, checkpointed, rows of a request cut
  off mid-flight listed "in doubt";
- :class:`~backfill.sinks.postgres.PostgresSink` writes Umami's own tables
  (``--database-url``): one transaction per block, deterministic ids, no
  "in doubt" at all;
- :func:`~backfill.sinks.payload_file.write_payload_file` writes the exact
  request elements to a file (``--out``, a dry run's output).

Every sink that imports offers :class:`Sink`: ``destination()`` joins the
checkpoint's fingerprint (resuming into another destination is refused),
``preflight()`` makes every check that can fail before the first write, and
``deliver()`` moves the prepared rows, resuming from the checkpoint, and
returns a :class:`~backfill.sinks.outcome.SendOutcome`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..checkpoint import Checkpoint
from ..ledger import Ledger
from ..rejects import RecordFile
from .outcome import ProgressCallback, SendOutcome, SendProgress

__all__ = ["Delivery", "ProgressCallback", "SendOutcome", "SendProgress", "Sink"]


@dataclass
class Delivery:
    """What every sink is handed for one run: the prepared rows and where to account for them."""

    prepared: Any  # api.Prepared: the sorted runs, crossing visits and source files
    checkpoint: Checkpoint
    checkpoint_path: Path
    rejects: RecordFile
    in_doubt: RecordFile
    run_ledger: Ledger
    progress: ProgressCallback | None
    stop: threading.Event


class Sink(Protocol):
    """The interface of an import's destination."""

    kind: str

    def destination(self) -> dict[str, Any]: ...

    def preflight(self, say: Callable[[str], None]) -> None: ...

    def deliver(self, delivery: Delivery) -> SendOutcome: ...
