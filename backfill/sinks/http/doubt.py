"""Rows whose fate is unknown: what an earlier run left in doubt or in flight, and the in-doubt file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

IN_DOUBT_KILLED = (
    "in doubt: the process stopped while this batch was on the wire; Umami may have stored all, some or none of it"
)

# Where a queued row comes from (column ``_origin``).
FRESH = 0  # never sent before
EARLIER_IN_DOUBT = 1  # in an ``in_doubt_ranges`` entry of an earlier run, sent again on request
KILLED_IN_FLIGHT = 2  # in a ``lane_inflight`` entry a killed process left behind


@dataclass
class DoubtRange:
    """An ``in_doubt_ranges`` entry from an earlier run, tracked while its rows are resent."""

    lane: int
    first: int
    last: int
    count: int
    seen: list[int] = field(default_factory=list)  # its rows' _seq, as the stream passed them
    resolved: set[int] = field(default_factory=set)  # resent and answered: no longer in doubt

    def pieces(self) -> list[list[int]]:
        """What is still in doubt, as ranges of rows consecutive in the lane."""
        if not self.resolved:
            return [[self.lane, self.first, self.last, self.count]]
        pieces: list[list[int]] = []
        run: list[int] = []
        for seq in self.seen:
            if seq in self.resolved:
                if run:
                    pieces.append([self.lane, run[0], run[-1], len(run)])
                run = []
            else:
                run.append(seq)
        unseen = self.count - len(self.seen)
        if unseen > 0:
            if run:
                pieces.append([self.lane, run[0], self.last, len(run) + unseen])
            else:
                pieces.append([self.lane, self.seen[-1] + 1, self.last, unseen])
        elif run:
            pieces.append([self.lane, run[0], run[-1], len(run)])
        return pieces


@dataclass
class KilledInFlight:
    """A ``lane_inflight`` entry left by a killed process, finalized as the stream passes it."""

    lane: int
    first: int
    last: int
    count: int
    parts: list[pl.DataFrame] = field(default_factory=list)  # rows not yet in doubt otherwise
    seen: int = 0  # rows of the entry the stream gave, including those already in doubt


def filter_records(data: bytes, fmt: str, wanted: Callable[[str, Any], bool]) -> bytes:
    """Keep the records of an NDJSON or CSV record file for which ``wanted(file, row)``.

    Of several records for the same (file, row) only the last is kept.
    """
    if fmt == "csv":
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        records = [(r[0], r[1], r) for r in reader if len(r) >= 2]
    else:
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        parsed = [json.loads(line) for line in lines]
        records = [(p.get("file"), p.get("row"), line) for p, line in zip(parsed, lines, strict=True)]
    last_index = {(f, str(r)): i for i, (f, r, _) in enumerate(records)}
    chosen = [rec for i, (f, r, rec) in enumerate(records) if last_index[(f, str(r))] == i and wanted(f, r)]
    if fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(chosen)
        return out.getvalue().encode("utf-8")
    return "".join(f"{line}\n" for line in chosen).encode("utf-8")
