"""JavaScript's string and URL semantics, where Umami's stored values depend on them.

Umami (Node.js) cuts strings with ``String.prototype.substring`` (UTF-16 code
units, not code points), decodes paths with ``decodeURI`` and titles with
``decodeURIComponent`` (keeping the input when either throws), parses URLs with
the WHATWG URL parser (``ada_url`` is Node's own parser), reads utm tags with
``URLSearchParams.get`` and writes arrays with ``JSON.stringify``. Python's
own versions differ on edge cases (astral characters, malformed escapes,
``+`` in queries, ``1.0`` vs ``1``), and each difference would be a row that
differs from what the API path stores.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import unquote_to_bytes

import ada_url

#: Characters ``decodeURI`` leaves encoded (its reserved set plus ``#``).
_DECODE_URI_RESERVED = frozenset(";/?:@&=+$,#")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def js_substring(text: str, length: int) -> str:
    """``text.substring(0, length)``: the first ``length`` UTF-16 code units.

    A cut through a surrogate pair leaves a lone surrogate in JavaScript, which
    PostgreSQL stores as U+FFFD after Prisma's UTF-8 encoding; the same here.
    """
    if len(text) <= length // 2 or (len(text) <= length and text.isascii()):
        return text
    units = text.encode("utf-16-le", "surrogatepass")
    if len(units) <= 2 * length:
        return text
    return units[: 2 * length].decode("utf-16-le", "replace")


def _decode(text: str, keep: frozenset[str]) -> str:
    """The shared body of decodeURI / decodeURIComponent; raises ValueError where JS throws."""
    if "%" not in text:
        return text

    def run(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group(0).replace("%", ""))
        out: list[str] = []
        i = 0
        while i < len(raw):
            byte = raw[i]
            width = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            if byte >= 0x80 and (byte >> 6 == 0b10 or byte >= 0xF8):
                raise ValueError("malformed URI sequence")
            chunk = raw[i : i + width]
            if len(chunk) < width:
                raise ValueError("malformed URI sequence")
            char = chunk.decode("utf-8")  # strict: overlong forms and surrogates raise, as in JS
            out.append(match.group(0)[i * 3 : i * 3 + 3] if char in keep else char)
            i += width
        return "".join(out)

    decoded = _ESCAPES.sub(run, text)
    # A '%' not followed by two hex digits is a URIError in JavaScript.
    if re.search(r"%(?![0-9A-Fa-f]{2})", _ESCAPES.sub("", text)):
        raise ValueError("malformed URI sequence")
    return decoded


def safe_decode_uri(text: str | None) -> str | None:
    """Umami's ``safeDecodeURI``: ``decodeURI(text)``, or ``text`` when that throws."""
    if text is None:
        return None
    try:
        return _decode(text, _DECODE_URI_RESERVED)
    except ValueError:
        return text


def safe_decode_uri_component(text: str | None) -> str | None:
    """Umami's ``safeDecodeURIComponent``: ``decodeURIComponent(text)``, or ``text`` when that throws."""
    if text is None:
        return None
    try:
        return _decode(text, frozenset())
    except ValueError:
        return text


def parse_url(url: str, base: str) -> ada_url.URL | None:
    """``new URL(url, base)`` as Node parses it; None where Node throws."""
    try:
        return ada_url.URL(url, base)
    except ValueError:
        return None


def search_param(search: str, key: str) -> str | None:
    """``new URL(...).searchParams.get(key)``: the first value, form-decoded, or None.

    WHATWG form decoding: ``+`` is a space, percent-escapes are bytes, and bytes that
    are not UTF-8 become U+FFFD (Node never throws here, so neither may we).
    """
    if not search or key not in search:
        return None
    for pair in (search[1:] if search.startswith("?") else search).split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if _form_decode(name) == key:
            return _form_decode(value)
    return None


def _form_decode(text: str) -> str:
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "replace")


def js_number_text(value: float | int) -> str:
    """``String(value)`` for a JavaScript number (``1`` not ``1.0``, ``1e+21``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" in text:
        mantissa, exponent = text.split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"
    return text


def json_stringify(value: Any) -> str:
    """``JSON.stringify(value)``: compact, numbers as JavaScript writes them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_text(value) if math.isfinite(float(value)) else "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(json_stringify(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{json_stringify(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    return json.dumps(value, ensure_ascii=False)


def to_fixed_4(value: float | int) -> str:
    """``parseFloat(value).toFixed(4)``: the exact binary value rounded half away from zero."""
    from decimal import ROUND_HALF_UP, Decimal

    number = float(value)
    if not math.isfinite(number):
        return js_number_text(number)
    if abs(number) >= 1e21:
        return js_number_text(number)
    if number == 0:  # -0 is not "< 0" in JavaScript
        return "0.0000"
    return str(Decimal(number).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))
