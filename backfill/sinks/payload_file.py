"""The payload file sink (``--out``): the exact ``/api/batch`` elements, one per line.

A dry run's output: the same elements, in the same order and grouping, that the HTTP
sink would send, so a file can be checked (or replayed by other tools) before any
request is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from ..ordering import emit
from ..schema import COL_JSON


def write_payload_file(prepared: Any, out: Path) -> int:
    """Write every prepared row's element to ``out`` in send order; returns the count."""
    from .http.grouping import regrouped  # the HTTP sink's request grouping decides the send order

    return write_payloads(regrouped(emit(prepared.runs), prepared.visits), out)


def write_payloads(frames: Iterator[pl.DataFrame], out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(out, "w", encoding="utf-8") as fh:
        for frame in frames:
            fh.write("\n".join(frame[COL_JSON].to_list()))
            fh.write("\n")
            written += frame.height
    return written
