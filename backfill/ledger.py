"""The ledger: every row read ends in exactly one bucket, and the buckets add up.

Buckets: accepted (or, in a dry run, would send), rejected (by reason, with
the first examples), skipped (by filter name) and in doubt (a request that
died mid-flight: Umami may have stored all, some or none of it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_EXAMPLES = 5


@dataclass
class Ledger:
    read: int = 0
    accepted: int = 0
    in_doubt: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: Per filter, the skipped rows the mapping's ``skip_warning`` marks (e.g. requests that
    #: look like people), with the first examples; ``flag_label`` says what they are.
    flagged: Counter[str] = field(default_factory=Counter)
    flagged_examples: dict[str, list[str]] = field(default_factory=dict)
    flag_label: str = ""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def accounted(self) -> int:
        return self.accepted + self.rejected_total + self.skipped_total + self.in_doubt

    def balances(self) -> bool:
        return self.accounted == self.read

    def reject(self, reason: str, count: int, examples: list[str] | None = None) -> None:
        if count <= 0:
            return
        self.rejected[reason] += count
        seen = self.examples.setdefault(reason, [])
        for ex in examples or []:
            if len(seen) >= MAX_EXAMPLES:
                break
            seen.append(ex)

    def flag(self, name: str, count: int, examples: list[str]) -> None:
        """``count`` rows skipped by filter ``name`` are marked by the mapping's skip_warning."""
        if count <= 0:
            return
        self.flagged[name] += count
        seen = self.flagged_examples.setdefault(name, [])
        seen.extend(e for e in examples[: MAX_EXAMPLES - len(seen)] if e not in seen)

    def merge(self, other: Ledger) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.in_doubt += other.in_doubt
        self.skipped.update(other.skipped)
        for reason, count in other.rejected.items():
            self.reject(reason, count, other.examples.get(reason))
        self.merge_flags(other)

    def merge_flags(self, other: Ledger) -> None:
        self.flag_label = self.flag_label or other.flag_label
        for name, count in other.flagged.items():
            self.flag(name, count, other.flagged_examples.get(name, []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected_total,
            "rejected_by_reason": dict(self.rejected.most_common()),
            "reject_examples": self.examples,
            "skipped": self.skipped_total,
            "skipped_by_filter": dict(self.skipped.most_common()),
            "in_doubt": self.in_doubt,
            "balances": self.balances(),
        } | (
            {
                "skipped_flagged": {
                    "label": self.flag_label,
                    "by_filter": dict(self.flagged.most_common()),
                    "examples": self.flagged_examples,
                }
            }
            if self.flagged
            else {}
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ledger:
        return cls(
            read=int(data.get("read", 0)),
            accepted=int(data.get("accepted", 0)),
            in_doubt=int(data.get("in_doubt", 0)),
            rejected=Counter(data.get("rejected_by_reason", {})),
            skipped=Counter(data.get("skipped_by_filter", {})),
            examples={k: list(v) for k, v in data.get("reject_examples", {}).items()},
            flagged=Counter(data.get("skipped_flagged", {}).get("by_filter", {})),
            flagged_examples={k: list(v) for k, v in data.get("skipped_flagged", {}).get("examples", {}).items()},
            flag_label=str(data.get("skipped_flagged", {}).get("label", "")),
        )
