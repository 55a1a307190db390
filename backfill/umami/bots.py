"""Would Umami's bot filter drop this User-Agent?

Umami 3.1 runs every event's user agent through the npm package ``isbot``
(pinned at 5.1.37). On a match it answers HTTP 200 ``{"beep": "boop"}`` and
stores nothing, so an import with a "bot" UA looks successful and is lost.
This module replays that check offline, from the pattern list vendored in
``data/isbot-<version>.json`` (copied verbatim from the npm package; never
fetched at run time).

isbot builds ``new RegExp(list.join("|"), "i")`` and returns
``typeof ua === "string" && ua !== "" && pattern.test(ua)``. The patterns are
JavaScript regexes (no ``u`` flag); :func:`_js_to_python` rewrites the few
constructs whose meaning differs in Python, and the ``regex`` module is used
because one lookbehind has alternatives of different lengths, which ``re``
refuses.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import polars as pl
import regex

ISBOT_VERSION = "5.1.37"

#: What JavaScript's ``\s`` matches (ECMA-262 WhiteSpace + LineTerminator),
#: written for use inside a character class. Python's ``\s`` under ASCII
#: matching would miss the Unicode spaces.
_JS_WHITESPACE = "\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"

#: What JavaScript's ``.`` matches without the ``s`` flag.
_JS_DOT = "[^\\n\\r\\u2028\\u2029]"

#: Escapes whose meaning is the same in JavaScript (no ``u`` flag) and in
#: Python under ``regex.ASCII``.
_SAME_ESCAPES = frozenset("dDwWbBtnrfv")
_CLASS_ESCAPES = frozenset("dDwWsS")


def _js_to_python(pattern: str) -> str:
    """Translate one JavaScript regex source (flags ``i``, no ``u``) to Python syntax.

    JavaScript anchors ``$`` only at the very end (Python's ``$`` also before a
    final newline), has a wider ``\\s``, and (Annex B) reads ``-`` next to a
    class escape such as ``[\\d-.]`` as a literal, which Python rejects. Any
    construct not handled here raises, so a future list cannot be silently
    mistranslated.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    prev_class_escape = False  # last class member was \d, \w, \s, ...
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"trailing backslash in {pattern!r}")
            e = pattern[i + 1]
            i += 2
            if e == "s":
                out.append(_JS_WHITESPACE if in_class else f"[{_JS_WHITESPACE}]")
            elif e == "S":
                if in_class:
                    raise ValueError(f"\\S inside a class is not supported: {pattern!r}")
                out.append(f"[^{_JS_WHITESPACE}]")
            elif e in _SAME_ESCAPES:
                out.append("\\" + e)
            elif not e.isalnum() and e != "_":
                out.append("\\" + e)  # identity escape: \. \/ \( \| ...
            else:
                raise ValueError(f"unsupported escape \\{e} in {pattern!r}")
            prev_class_escape = in_class and e in _CLASS_ESCAPES
            continue
        if in_class:
            if c == "]":
                in_class = False
                out.append(c)
            elif c == "-" and (
                prev_class_escape or (i + 2 < n and pattern[i + 1] == "\\" and pattern[i + 2] in _CLASS_ESCAPES)
            ):
                out.append("\\-")
            elif c == "[":
                out.append("\\[")
            else:
                out.append(c)
            prev_class_escape = False
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                raise ValueError(f"empty class [] / [^] is not supported: {pattern!r}")
            prev_class_escape = False
            continue
        if c == "$":
            out.append("\\Z")
        elif c == ".":
            out.append(_JS_DOT)
        elif c == "(" and pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            raise ValueError(f"named groups are not supported: {pattern!r}")
        else:
            out.append(c)
        i += 1
    if in_class:
        raise ValueError(f"unterminated class in {pattern!r}")
    return "".join(out)


def _load_patterns() -> list[str]:
    """The vendored isbot list, exactly as the npm package ships it."""
    path = resources.files("backfill.umami") / "data" / f"isbot-{ISBOT_VERSION}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    patterns = data["patterns"]
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{path}: 'patterns' must be a non-empty list of strings")
    return patterns


#: The JavaScript sources, in isbot's order (``isbot.list``).
PATTERNS: tuple[str, ...] = tuple(_load_patterns())

#: ``new RegExp(list.join("|"), "i")`` in Python. ASCII makes ``\w``, ``\d``,
#: ``\b`` and case folding ASCII-only, as in a JavaScript regex without ``u``.
_FLAGS = regex.IGNORECASE | regex.ASCII | regex.VERSION0
_PATTERN = regex.compile("|".join(_js_to_python(p) for p in PATTERNS), _FLAGS)


def _as_utf16_units(text: str) -> str:
    """Split characters outside the BMP into surrogate pairs.

    JavaScript strings are UTF-16, so an emoji counts as two characters for a
    quantifier such as ``^[^ ]{50,}$``; this keeps lengths equal to isbot's.
    """
    if all(ord(ch) <= 0xFFFF for ch in text):
        return text
    parts: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            parts.append(chr(0xD800 + (cp >> 10)) + chr(0xDC00 + (cp & 0x3FF)))
        else:
            parts.append(ch)
    return "".join(parts)


@lru_cache(maxsize=1 << 16)
def is_bot(user_agent: str | None) -> bool:
    """True when Umami would answer ``{"beep":"boop"}`` and store nothing for this UA.

    Mirrors ``isbot()``: a missing or empty user agent is not a bot.
    """
    if not isinstance(user_agent, str) or user_agent == "":
        return False
    return _PATTERN.search(_as_utf16_units(user_agent)) is not None


def bot_mask(user_agents: pl.Series) -> pl.Series:
    """Boolean mask of the rows Umami would drop as bots (null -> False).

    The regex runs once per distinct user agent, not per row: an export has
    few distinct UAs and many rows.
    """
    values = user_agents.cast(pl.String)
    uniques = values.drop_nulls().unique()
    flags = pl.Series([is_bot(ua) for ua in uniques], dtype=pl.Boolean)
    return values.replace_strict(uniques, flags, default=False, return_dtype=pl.Boolean).alias(user_agents.name)
