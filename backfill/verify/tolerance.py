"""Tolerances: how far a found figure may be from the expected one."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

#: Reader formats whose events are synthesized from per-day totals.
AGGREGATED_FORMATS = ("ga_report", "plausible_csv")
#: Their default tolerance (see ``default_tolerance``).
AGGREGATED_TOLERANCE = "1%"


@dataclass(frozen=True)
class Tolerance:
    """How far a found figure may be from the expected one: ``0`` (exact), ``N``
    (absolute) or ``P%`` (relative to the expected figure)."""

    absolute: float = 0.0
    relative: float = 0.0
    text: str = "0"

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                value = float(raw[:-1])
                if not (0 <= value < 100) or math.isnan(value):
                    raise ValueError
                return cls(relative=value / 100, text=raw)
            value = float(raw)
            if value < 0 or math.isnan(value) or math.isinf(value):
                raise ValueError
            return cls(absolute=value, text=raw)
        except ValueError:
            raise ConfigError(
                f"--tolerance {text!r}: use 0 (exact), a count (e.g. 2) or a percentage (e.g. 1%)"
            ) from None

    @property
    def exact(self) -> bool:
        return self.absolute == 0 and self.relative == 0

    def allows(self, expected: float, found: float) -> bool:
        return abs(found - expected) <= max(self.absolute, self.relative * abs(expected)) + 1e-9

    def describe(self) -> str:
        return "exact" if self.exact else self.text


def default_tolerance(reader_format: str | None) -> Tolerance:
    """Exact for event sources. Aggregated sources (GA reports, Plausible's CSV export)
    get 1%: their events are synthesized so that Umami's counts reproduce the report,
    which they do only as closely as the report's tables allow (the synthesizers print
    the residuals); verify compares with the synthesized events, and the margin keeps
    it about lost or misplaced data. ``--tolerance 0`` asks for exact agreement."""
    if reader_format in AGGREGATED_FORMATS:
        return Tolerance.parse(AGGREGATED_TOLERANCE)
    return Tolerance()
