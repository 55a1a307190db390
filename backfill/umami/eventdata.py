"""Umami's ``flattenJSON`` and value typing for ``event_data`` and ``session_data`` rows.

From Umami 3.1 ``src/lib/data.ts``: nested objects become ``a.b`` keys; arrays
(and ``null``, whose ``typeof`` is ``"object"``) are stored as ``JSON.stringify``
text with data type 5; booleans as ``"true"``/``"false"`` (3); strings that
match ``DATETIME_REGEX`` as dates (4, ``string_value`` = ``toISOString()``);
numbers (2) with ``string_value = toFixed(4)`` and ``number_value`` the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .js import js_number_text, json_stringify, to_fixed_4

STRING, NUMBER, BOOLEAN, DATE, ARRAY = 1, 2, 3, 4, 5
DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3}(Z|\+[0-9]{2}:[0-9]{2})?)?$")
_JS_MAX_SAFE = 2**53
#: A plain decimal numeral (what JavaScript's Number() and decimal.js both read the same way).
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class DataValue:
    """One flattened key as Umami stores it (``number_value`` as decimal text)."""

    key: str
    string_value: str | None
    number_value: str | None
    date_value: datetime | None
    data_type: int


class UnstorableValue(ValueError):
    """A value Umami fails on (HTTP 500 after storing part of the element)."""


def flatten(data: dict[str, Any], parent: str = "") -> list[DataValue]:
    out: list[DataValue] = []
    for key, value in data.items():
        name = f"{parent}.{key}" if parent else key
        if isinstance(value, dict) and value:
            out.extend(flatten(value, name))
        elif isinstance(value, dict):  # {} is truthy in JavaScript: recursed into, adds nothing
            continue
        else:
            out.append(typed(name, value))
    return out


def typed(key: str, value: Any) -> DataValue:
    if isinstance(value, bool):
        return DataValue(key, "true" if value else "false", None, None, BOOLEAN)
    if isinstance(value, int | float):
        number = float(value) if isinstance(value, float) or abs(value) > _JS_MAX_SAFE else value
        return DataValue(key, to_fixed_4(number), js_number_text(number), None, NUMBER)
    if isinstance(value, str):
        if DATETIME.match(value):
            moment = parse_js_date(value)
            return DataValue(key, iso_string(moment), None, moment, DATE)
        return DataValue(key, value, None, None, STRING)
    return DataValue(key, json_stringify(value), None, None, ARRAY)


def parse_js_date(text: str) -> datetime:
    """``new Date(text)`` for the forms ``DATETIME_REGEX`` admits (no offset = server time, UTC)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnstorableValue(f"{text!r} looks like a date but is not one (Umami answers 500)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_string(moment: datetime) -> str:
    """``Date.prototype.toISOString()``: UTC, milliseconds, ``Z``."""
    moment = moment.astimezone(UTC)
    millis = moment.microsecond // 1000
    return moment.replace(microsecond=0, tzinfo=None).isoformat() + f".{millis:03d}Z"


def js_positive(value: Any) -> bool:
    """``value > 0`` in JavaScript, for numbers and numeric strings (Umami's revenue test)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    if isinstance(value, str):
        number = js_to_number(value)
        return number is not None and number > 0
    return False


def js_to_number(text: str) -> float | None:
    """``Number(text)`` for a string; None for NaN."""
    stripped = text.strip()
    if not stripped:
        return 0.0
    try:
        if stripped.lower().startswith(("0x", "0o", "0b")):
            return float(int(stripped, 0))
        if stripped in ("Infinity", "+Infinity", "-Infinity"):
            return float(stripped.replace("Infinity", "inf"))
        if not DECIMAL.fullmatch(stripped):
            return None
        return float(stripped)
    except ValueError:
        return None


def revenue_text(value: Any) -> str | None:
    """The decimal Umami writes into ``revenue.revenue`` (Prisma's Decimal of the value)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return js_number_text(value)
    if isinstance(value, str) and DECIMAL.fullmatch(value):
        return value
    return None


__all__ = ["DataValue", "UnstorableValue", "flatten", "iso_string", "js_positive", "revenue_text"]
