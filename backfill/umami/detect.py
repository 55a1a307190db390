"""The browser, OS and device Umami 3.1 would store for a session, computed offline.

A sink that writes sessions straight into Umami's tables must fill
``session.browser``, ``os`` and ``device`` exactly as ``/api/send`` would, or
imported sessions group apart from live ones. Umami 3.1.0 (``src/lib/detect.ts``,
``getClientInfo`` and ``getDevice``) derives them, when the payload does not
set them, as:

- browser = detect-browser 5.3.0 ``browserName(userAgent)``;
- os = detect-browser 5.3.0 ``detectOS(userAgent)``;
- device = ua-parser-js 2.0.9 ``UAParser(userAgent).device.type``, ``desktop``
  when it has none, and ``laptop`` for a desktop whose payload ``screen`` is
  set and whose width (the text before the first ``x``, read as a JavaScript
  number) is 1920 or less. Phones, tablets and the rest keep their type
  whatever the screen.

detect-browser's rule lists are MIT and are vendored verbatim in
``data/detect-browser-<version>.json`` (with its notice) and translated from
JavaScript regex syntax by the same translator as the bot check. ua-parser-js
is AGPL, so none of its code or patterns is used: :data:`DEVICE_RULES` are our
own, much shorter rules, checked against the 5,034 cases recorded from a live
Umami 3.1 in ``tests/data/umami_ua_cases.json``. They follow ua-parser's
categories (first matching rule wins; a few rules settle on "no type") but
cannot name every one of its thousands of device models, so an exotic UA may
get ``desktop`` or ``mobile`` where Umami would say otherwise (over the 3,359
distinct UAs of ua-parser-js's and isbot's test fixtures, mostly exotic
devices, 98% of device types agree; browser and OS agree on all of them).

Two things stay the caller's job: the payload's own ``browser`` / ``os`` /
``device`` fields take precedence (``payload.browser ?? browserName(ua)``),
and an empty or missing payload ``userAgent`` is replaced by the request's
User-Agent header (``payload.userAgent || header``) before any of this.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import polars as pl

from .bots import _js_to_python

UMAMI_VERSION = "3.1.0"
DETECT_BROWSER_VERSION = "5.3.0"
UA_PARSER_VERSION = "2.0.9"

#: ua-parser-js reads only this many UTF-16 units of a user agent.
UA_PARSER_MAX_LENGTH = 500
#: A desktop whose screen is at most this wide is stored as ``laptop``.
LAPTOP_MAX_WIDTH = 1920
DESKTOP = "desktop"
LAPTOP = "laptop"

#: What JavaScript's ``\\s`` and ``String.prototype.trim`` treat as white space.
_JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)

# --------------------------------------------------------------------------- detect-browser


def _load_detect_browser() -> dict[str, Any]:
    """The vendored detect-browser rule lists, exactly as the npm package ships them."""
    path = resources.files("backfill.umami") / "data" / f"detect-browser-{DETECT_BROWSER_VERSION}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for key in ("browsers", "operating_systems"):
        rules = data.get(key)
        if not rules or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in rules
        ):
            raise ValueError(f"{path}: {key!r} must be a non-empty list of [name, pattern] pairs")
    return data


#: Rules whose three ``.*`` make a backtracking engine take cubic time on a
#: failing input (an 8,000-character user agent of repeated ``rv:1 )`` takes
#: 20 s), mapped to a linear-time source with the same yes/no answer. Only
#: that answer matters: ``browserName`` drops the captured version. Taking
#: the first ``rv:<digit>`` and the first ``)`` after it (atomic groups) loses
#: no match, since a later one leaves less room for what follows.
LINEAR_EQUIVALENTS = {
    r"Trident\/7\.0.*rv\:([0-9\.]+).*\).*Gecko$": r"Trident\/7\.0(?>.*?rv\:[0-9\.])(?>.*?\)).*Gecko$",
}


def _compile(rules: list[list[str]]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """JavaScript sources (no flags) -> Python patterns; ASCII keeps ``\\b``/``\\w``/``\\d`` as in JavaScript."""
    return tuple(
        (name, re.compile(_js_to_python(LINEAR_EQUIVALENTS.get(source, source)), re.ASCII)) for name, source in rules
    )


_DETECT_BROWSER = _load_detect_browser()
#: ``userAgentRules``: the first rule that matches names the browser.
BROWSER_RULES = _compile(_DETECT_BROWSER["browsers"])
#: ``operatingSystemRules``: the first rule that matches names the OS.
OS_RULES = _compile(_DETECT_BROWSER["operating_systems"])


def _js_string(user_agent: str | None) -> str:
    """The text detect-browser's regexes see: JavaScript's ``RegExp.exec(null)`` tests ``"null"``.

    No rule matches ``"null"``, so a missing UA ends like an empty one: no
    browser, no OS. Kept explicit so the equivalence is not an accident.
    """
    return "null" if user_agent is None else user_agent


def browser_name(user_agent: str | None) -> str | None:
    """detect-browser's ``browserName``: the first matching rule's name; ``''`` gives None."""
    if user_agent == "":
        return None
    text = _js_string(user_agent)
    for name, pattern in BROWSER_RULES:
        if pattern.search(text):
            return name
    return None


def detect_os(user_agent: str | None) -> str | None:
    """detect-browser's ``detectOS``: the first matching rule's name, else None."""
    text = _js_string(user_agent)
    for name, pattern in OS_RULES:
        if pattern.search(text):
            return name
    return None


# --------------------------------------------------------------------------- device type

#: Device rules are written in lower case and run on an ASCII-lowercased user
#: agent (ua-parser's regexes carry the ``i`` flag): much faster than
#: ``re.IGNORECASE`` over long alternations.
_I = re.ASCII
#: ASCII letters only, as JavaScript's ``i`` flag without ``u``; ``str.lower``
#: would also change other letters (and some lengths).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

#: Our own rules for ua-parser-js's device type, in order; the first match
#: wins and ``None`` means "no type" (Umami's ``desktop``). Makers' model
#: codes come first because they say more than the generic words at the end
#: (many Android tablets say "Mobile Safari"); :func:`_android_kind` sits
#: between the two.
DEVICE_RULES: tuple[tuple[str | None, re.Pattern[str]], ...] = (
    # Samsung: tablets by model family, then every other SM-/GT-/SCH- code.
    ("tablet", re.compile(r"\b(?:sm-[ptx]\w{2,4}|gt-[pn]\d{2,4}|nexus 10)", _I)),
    ("mobile", re.compile(r"\b(?:s[cgp]h|gt|sm)-(?![lr])\w+|\bgalaxy nexus", _I)),
    # Apple: iPhone / iPod in the platform token, an iPad running iOS, then a Mac settles it.
    ("mobile", re.compile(r"[(/]ip(?:hone|od)[\w, ]*[/);]", _I)),
    ("tablet", re.compile(r"\bipad[\d,]*[;\] ].+(?:\bi(?:pad)?os|\bos)\b|\b(?:ios|apple\w+)/.+[(/]ipad", _I)),
    (None, re.compile(r"macintosh;|\bpixelbook", _I)),
    # Tablets known by name or model code (Kindle Fire, Lenovo, Xiaomi, Nexus, ...).
    (
        "tablet",
        re.compile(
            r"\bkf[a-z]{2}wi\b|\bkf[a-z]+(?: bui|\)).+silk/|\bkindle/|\bplaybook;|\bnexus [79]\b|\bxoom"
            r"|\bmediapad|\bpixel (?:c|tablet)\b|\b(?:xiao|red)?mi[-_ ]?pad|\blenovo ?(?:tab|tb|yt|pb-|b[68]0[08]0)"
            r"|\btb-?x?\d{3,4}[fx]|\bsurface duo|\bkobo|\btouchpad|\b(?:lg-?)?[vl]k-?\d{3} bui"
            # Huawei and Honor MediaPad / MatePad model families.
            r"|\b(?:agr|ags\d?|agm\d?|bah\d?|btv|bg2|brt|cpn|db[ry]2?|eln|gdi|gem|jdn2?|kob2|mon|scm|sht|vrd)-[a-z]{0,2}\d\d",
            _I,
        ),
    ),
    # Phones known by their maker's name (feature phones and early smartphones).
    (
        "mobile",
        re.compile(
            r"blackberry|\(bb10;|\bnokia(?! t[12]\d)|sonyericsson|\b(?:benq|samsung|zte)-"
            r"|\blg-?[a-z]{1,2}\d{3}|\bpalm-|\bhtc[_ ]",
            _I,
        ),
    ),
    # Screens that are not phones: TVs by name, consoles, watches, headsets, cars.
    (
        "smarttv",
        re.compile(
            r"smart-tv.+samsung|\bhbbtv|\bnetcast|\bapple ?tv|\bcrkey|droid.+\baft\w+(?: bui|\))|\bbravia|\broku"
            r"|aquos|\bmi(?:tv|box)|\bshield \w+ tv|\bportaltv|\bvizio\b",
            _I,
        ),
    ),
    (
        "console",
        re.compile(
            r"playstation \w|\bxbox(?: one)?(?!; xbox)[); ]|\bnintendo \w|\bouya|steam deck|\bretroid pocket"
            r"|droid.+; (?:shield|rgcube|gr0006)(?: bui|\))",
            _I,
        ),
    ),
    (
        "wearable",
        re.compile(
            r"\bsm-[lr]\d\d[0156]|\bgear live\b|\bwatch(?: ?os[,/]|\d,\d/)|\bmoto 360|smartwatch 3|\bg watch r"
            r"|\bop?wwe\d{3}|\bow(?:19|20)we?\d|\b(?:asus|google|lg|oppo|xiaomi) (?:pixel |zen)?watch[\w ]*(?: bui|\))",
            _I,
        ),
    ),
    ("xr", re.compile(r"\bquest(?: \d| pro)?.+vr|mobile vr; rv.+firefox|\bpico .+ os\d|droid.+; glass \d", _I)),
    ("embedded", re.compile(r"\btesla(?: qtcarbrowser|/)|\bhomepod.+mac os|windows iot|\baeobc\b", _I)),
    # TVs by the generic words only.
    (
        "smarttv",
        re.compile(
            r"droid.+; [\w -]+ (?:4k|android|smart|google)[- ]?tv|\b(?:4k|android|smart|opera)[- ]?tv\b|\btv; rv:"
            r"|large screen[\w ]+safari",
            _I,
        ),
    ),
)

#: Generic words, tried after :func:`_android_kind`.
GENERIC_RULES: tuple[tuple[str | None, re.Pattern[str]], ...] = (
    ("tablet", re.compile(r"\b(?:tablet|tab)[;/]", _I)),
    ("mobile", re.compile(r"phone|mobile(?:[;/]| [ \w/.]*safari)|pda(?=.+windows ce)", _I)),
)

#: An Android platform token naming a model: "Android 14; Pixel 8 Build/..." or "...; K) AppleWebKit".
_ANDROID_MODEL = re.compile(r"droid .+?; [^;]+?(?: build|; wv\)|\) applewebkit|; hmscore)", _I)
#: The word just before " Safari" on Android: "Mobile Safari" is a phone, "Chrome/120.0 Safari" a tablet.
_ANDROID_FORM = re.compile(r"(mobile|vr|\d) safari", _I)
_ANDROID_KINDS = {"mobile": "mobile", "vr": "xr"}


def _android_kind(text: str) -> str | None:
    """Phone, headset or tablet for an Android build that names its model, else None."""
    model = _ANDROID_MODEL.search(text)
    if model is None:
        return None
    form = _ANDROID_FORM.search(text, model.end() + 1)
    if form is None:
        return None
    return _ANDROID_KINDS.get(form.group(1), "tablet")


def _ua_parser_text(user_agent: str | None) -> str:
    """What ua-parser-js parses: leading white space dropped, then 500 UTF-16 units."""
    text = (user_agent or "").lstrip(_JS_WHITESPACE)
    if len(text) <= UA_PARSER_MAX_LENGTH // 2 or all(ord(ch) <= 0xFFFF for ch in text):
        return text[:UA_PARSER_MAX_LENGTH]
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units >= UA_PARSER_MAX_LENGTH:
            return text[: index + 1]
    return text


def device_type(user_agent: str | None) -> str | None:
    """ua-parser-js's device type by :data:`DEVICE_RULES`, or None (Umami: desktop)."""
    text = _ua_parser_text(user_agent).translate(_ASCII_LOWER)
    if not text:
        return None
    for kind, pattern in DEVICE_RULES:
        if pattern.search(text):
            return kind
    android = _android_kind(text)
    if android is not None:
        return android
    for kind, pattern in GENERIC_RULES:
        if pattern.search(text):
            return kind
    return None


# --------------------------------------------------------------------------- screen rule

_JS_NUMBER = re.compile(
    r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|0[bB][01]+|0[oO][0-7]+|0[xX][0-9a-fA-F]+",
    re.ASCII,
)


def js_number(text: str) -> float:
    """JavaScript's ``+text`` for a string: trimmed, ``''`` is 0, anything else unreadable is NaN.

    Python's ``float`` accepts ``"nan"``, ``"inf"`` and ``"1_000"``, which
    JavaScript does not, and refuses ``"0b11"``, which it reads.
    """
    body = text.strip(_JS_WHITESPACE)
    if body == "":
        return 0.0
    if not _JS_NUMBER.fullmatch(body):
        return float("nan")
    if body[:2].lower() in ("0b", "0o", "0x"):
        return float(int(body, 0))
    return float(body.replace("Infinity", "inf"))


def device_for_screen(kind: str | None, screen: str | None) -> str:
    """Umami's ``getDevice``: no type is ``desktop``, or ``laptop`` when the screen is at most 1920 wide.

    ``screen`` is the payload's string (Umami's default is ``''``, and an
    empty screen never makes a laptop); its width is the text before the
    first lowercase ``x``, so ``"1366x768"`` -> 1366 and ``"abc"`` -> NaN.
    """
    device = kind or DESKTOP
    if device == DESKTOP and screen and js_number(screen.split("x", 1)[0]) <= LAPTOP_MAX_WIDTH:
        return LAPTOP
    return device


# --------------------------------------------------------------------------- public API


@lru_cache(maxsize=1 << 16)
def _ua_facts(user_agent: str | None) -> tuple[str | None, str | None, str | None]:
    """(browser, os, device type) of one user agent: the regex work, done once per distinct UA."""
    return browser_name(user_agent), detect_os(user_agent), device_type(user_agent)


@lru_cache(maxsize=1 << 16)
def detect_client(user_agent: str | None, screen: str | None) -> tuple[str | None, str | None, str]:
    """(browser, os, device) as Umami 3.1 stores them for a payload without those fields.

    Mirrors Umami 3.1.0 ``getClientInfo`` with detect-browser 5.3.0 and
    ua-parser-js 2.0.9 (device type by our own rules, see the module
    docstring). A missing or empty user agent gives ``(None, None,
    "desktop")`` (``"laptop"`` with a screen up to 1920 wide), as Umami
    stores it when neither the payload nor the request header has one; the
    tool's own default header ``Mozilla/5.0 umami-backfill/<version>`` gives
    the same answer. Cached per distinct (user_agent, screen).
    """
    browser, os_name, kind = _ua_facts(user_agent)
    return browser, os_name, device_for_screen(kind, screen)


def client_columns(frame: pl.DataFrame, ua_col: str, screen_col: str | None = None) -> pl.DataFrame:
    """``browser``, ``os``, ``device`` for each row of ``frame``, in its row order.

    :func:`detect_client` runs once per distinct (user agent, screen) pair and
    the answers are joined back (an export has few distinct pairs and many
    rows). A null user agent or screen counts as absent, as in Umami.
    """
    keys = frame.select(
        pl.col(ua_col).cast(pl.String).alias("ua"),
        (pl.col(screen_col).cast(pl.String) if screen_col else pl.lit(None, dtype=pl.String)).alias("screen"),
    )
    pairs = keys.unique()
    answers = [detect_client(ua, screen) for ua, screen in pairs.iter_rows()]
    table = pairs.with_columns(
        pl.Series("browser", [a[0] for a in answers], dtype=pl.String),
        pl.Series("os", [a[1] for a in answers], dtype=pl.String),
        pl.Series("device", [a[2] for a in answers], dtype=pl.String),
    )
    joined = keys.join(table, on=["ua", "screen"], how="left", nulls_equal=True, maintain_order="left")
    return joined.select("browser", "os", "device")
