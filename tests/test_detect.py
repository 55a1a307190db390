"""Browser / OS / device detection must store what Umami 3.1 stores.

``tests/data/umami_ua_cases.json`` holds 5,034 cases recorded from a live
Umami 3.1.0 (839 real user agents x 6 screens, sent through /api/batch and
read back from the session table). Expected answers in HAND_CASES were
produced under Node 20 by Umami 3.1's ``getDevice`` code over the npm
packages detect-browser@5.3.0 and ua-parser-js@2.0.9 (``browserName``,
``detectOS``, ``UAParser(ua).device.type``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from backfill.umami import detect
from backfill.umami.bots import _js_to_python, is_bot
from backfill.umami.detect import client_columns, detect_client, js_number

CASES_PATH = Path(__file__).parent / "data" / "umami_ua_cases.json"

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
IPHONE_TOKEN = " (iPhone; CPU iPhone OS 17_5 like Mac OS X)"

HAND_CASES = [
    # Tablets keep their type whatever the screen.
    (IPAD, None, ("ios", "iOS", "tablet")),
    (IPAD, "2560x1440", ("ios", "iOS", "tablet")),
    # iPadOS in desktop mode sends a Mac UA: Umami cannot tell, neither can we.
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Safari/605.1.15",
        "1024x1366",
        ("safari", "Mac OS", "laptop"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "1600x2560",
        ("chrome", "Android OS", "tablet"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        None,
        ("chrome", "Android OS", "tablet"),
    ),
    # Smart TVs: Samsung Tizen, LG webOS, Fire TV (which says "Mobile Safari").
    (
        "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 "
        "TV Safari/537.36",
        "1920x1080",
        (None, None, "smarttv"),
    ),
    (
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 "
        "Safari/537.36 WebAppManager",
        "1920x1080",
        ("chrome", "Linux", "smarttv"),
    ),
    (
        "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7633; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/130.0.6723.102 Mobile Safari/537.36",
        None,
        ("chromium-webview", "Android OS", "smarttv"),
    ),
    # Consoles and a headset.
    (
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.0 Safari/605.1.15",
        "1920x1080",
        ("safari", None, "console"),
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/70.0.3538.102 Safari/537.36 Edge/18.19041",
        "1920x1080",
        ("edge", "Windows 10", "console"),
    ),
    (
        "Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) "
        "NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393",
        None,
        (None, None, "console"),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 "
        "OculusBrowser/31.0 Quest 3 VR",
        None,
        ("chrome", "Linux", "xr"),
    ),
    # No user agent: detect-browser finds nothing in "" (nor in JavaScript's "null").
    (None, None, (None, None, "desktop")),
    (None, "1920x1080", (None, None, "laptop")),
    ("", None, (None, None, "desktop")),
    ("", "1366x768", (None, None, "laptop")),
    ("Mozilla/5.0 umami-backfill/0.1", None, (None, None, "desktop")),
    # The screen rule: only a typeless (desktop) device, only with a screen, width <= 1920.
    (CHROME_WINDOWS, None, ("chrome", "Windows 10", "desktop")),
    (CHROME_WINDOWS, "", ("chrome", "Windows 10", "desktop")),
    (CHROME_WINDOWS, "1920x1080", ("chrome", "Windows 10", "laptop")),
    (CHROME_WINDOWS, "1921x1080", ("chrome", "Windows 10", "desktop")),
    (CHROME_WINDOWS, "2560x1440", ("chrome", "Windows 10", "desktop")),
    (CHROME_WINDOWS, "1920", ("chrome", "Windows 10", "laptop")),
    (CHROME_WINDOWS, "wide", ("chrome", "Windows 10", "desktop")),
    # The width is read as a JavaScript number: spaces trimmed, hex and exponents read.
    (CHROME_WINDOWS, " 1920 x1080", ("chrome", "Windows 10", "laptop")),
    (CHROME_WINDOWS, "0X400x300", ("chrome", "Windows 10", "laptop")),
    (CHROME_WINDOWS, "1e3x1", ("chrome", "Windows 10", "laptop")),
    (CHROME_WINDOWS, "1_000x1", ("chrome", "Windows 10", "desktop")),
    (IPHONE, "2560x1440", ("ios", "iOS", "mobile")),
    ("  " + IPHONE, None, ("ios", "iOS", "mobile")),
    # ua-parser reads the first 500 characters only; detect-browser reads all.
    (CHROME_WINDOWS + IPHONE_TOKEN, None, ("chrome", "iOS", "mobile")),
    (CHROME_WINDOWS + " " + "x" * 500 + IPHONE_TOKEN, None, ("chrome", "iOS", "desktop")),
]


def _load_cases() -> list[dict]:
    return json.loads(CASES_PATH.read_text(encoding="utf-8"))["cases"]


def _mismatch_report(kind: str, mismatches: list[str], total: int) -> str:
    """All mismatches counted, the first 10 shown: one failing case must not hide the rest."""
    return f"{len(mismatches)} of {total} {kind} disagree with Umami 3.1; first 10:\n" + "\n".join(mismatches[:10])


def test_recorded_cases_cover_what_the_file_says() -> None:
    cases = _load_cases()
    assert len(cases) == 5034
    assert len({c["userAgent"] for c in cases}) == 839
    assert Counter(c["stored"] for c in cases) == {True: 5028, False: 6}


def test_every_stored_case_gets_umamis_browser_os_and_device() -> None:
    cases = [c for c in _load_cases() if c["stored"]]
    mismatches = []
    for c in cases:
        expected = (c["browser"], c["os"], c["device"])
        got = detect_client(c["userAgent"], c["screen"])
        if got != expected:
            mismatches.append(f"{c['userAgent']!r} screen={c['screen']!r}: expected {expected}, got {got}")
    assert not mismatches, _mismatch_report("stored cases", mismatches, len(cases))


def test_the_bot_check_agrees_with_what_umami_stored() -> None:
    """Dropped rows are bots by ``umami.bots``; stored rows are not (Umami stores only what isbot lets through)."""
    cases = _load_cases()
    mismatches = [
        f"{c['userAgent']!r}: stored={c['stored']}, is_bot={is_bot(c['userAgent'])}"
        for c in cases
        if is_bot(c["userAgent"]) == c["stored"]
    ]
    assert not mismatches, _mismatch_report("cases", mismatches, len(cases))


@pytest.mark.parametrize(("user_agent", "screen", "expected"), HAND_CASES)
def test_hand_cases(user_agent: str | None, screen: str | None, expected: tuple) -> None:
    assert detect_client(user_agent, screen) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", 0.0),
        ("  ", 0.0),
        ("1366", 1366.0),
        (" 1920\t", 1920.0),
        ("+5", 5.0),
        ("-5", -5.0),
        ("5.", 5.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("0b11", 3.0),
        ("0o17", 15.0),
        ("0X1f", 31.0),
        ("-Infinity", float("-inf")),
    ],
)
def test_js_number_reads_like_javascript(text: str, value: float) -> None:
    assert js_number(text) == value


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "infinity", "1_000", "1,5", "0x", "-0x10", "1e", "1 2"])
def test_js_number_refuses_what_javascript_refuses(text: str) -> None:
    assert js_number(text) != js_number(text)  # NaN


def test_client_columns_answers_each_row_once_per_distinct_pair() -> None:
    uas = [IPHONE, None, CHROME_WINDOWS, IPHONE, "", CHROME_WINDOWS, None, IPAD]
    screens = ["390x844", "1920x1080", "2560x1440", "390x844", None, "1366x768", "1920x1080", None]
    frame = pl.DataFrame({"ua": uas, "screen": screens, "other": range(len(uas))})
    detect.detect_client.cache_clear()

    out = client_columns(frame, "ua", "screen")

    assert out.columns == ["browser", "os", "device"]
    assert out.schema == {"browser": pl.String, "os": pl.String, "device": pl.String}
    assert out.rows() == [detect_client(ua, screen) for ua, screen in zip(uas, screens, strict=True)]
    assert out["device"].to_list() == ["mobile", "laptop", "desktop", "mobile", "desktop", "laptop", "laptop", "tablet"]
    # 8 rows, 6 distinct (ua, screen) pairs: the list comprehension above only hit the cache.
    assert detect.detect_client.cache_info().misses == 6


def test_client_columns_without_a_screen_column() -> None:
    frame = pl.DataFrame({"agent": [CHROME_WINDOWS, IPAD, None]})
    out = client_columns(frame, "agent", None)
    assert out.rows() == [("chrome", "Windows 10", "desktop"), ("ios", "iOS", "tablet"), (None, None, "desktop")]


def test_client_columns_on_an_empty_frame() -> None:
    frame = pl.DataFrame({"ua": [], "screen": []}, schema={"ua": pl.String, "screen": pl.String})
    out = client_columns(frame, "ua", "screen")
    assert out.height == 0
    assert out.columns == ["browser", "os", "device"]


def test_vendored_detect_browser_lists_are_complete_and_licensed() -> None:
    path = resources.files("backfill.umami") / "data" / f"detect-browser-{detect.DETECT_BROWSER_VERSION}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert "Copyright (c) 2019 Damon Oehlman" in "\n".join(data["license"])
    assert data["license"][0] == "The MIT License (MIT)"
    # detect-browser 5.3.0 has 35 browser rules (ending with the search-bot catch-all) and 26 OS rules.
    assert len(detect.BROWSER_RULES) == 35
    assert [detect.BROWSER_RULES[0][0], detect.BROWSER_RULES[-1][0]] == ["aol", "searchbot"]
    assert len(detect.OS_RULES) == 26
    assert [detect.OS_RULES[0][0], detect.OS_RULES[-1][0]] == ["iOS", "OS/2"]
    assert max(len(name) for name, _ in detect.BROWSER_RULES + detect.OS_RULES) <= 20  # session columns are varchar(20)


def test_device_names_fit_the_session_column() -> None:
    kinds = {kind for kind, _ in detect.DEVICE_RULES} | {kind for kind, _ in detect.GENERIC_RULES}
    assert kinds - {None} <= {
        "desktop",
        "laptop",
        "mobile",
        "tablet",
        "smarttv",
        "console",
        "wearable",
        "xr",
        "embedded",
    }


TRIDENT_STRINGS = [
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; SLCC2; rv:11.0) like Gecko ",
    "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko\n",
    "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0 like Gecko",
    "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:) like Gecko",
    "Trident/7.0 rv:1 ) Gecko",
    "Trident/7.0)rv:1Gecko",
    "Trident/7.0 rv:1\n) Gecko",
    "Trident/7.0 rv:1 )\nTrident/7.0 rv:1 ) Gecko",
    "rv:1 ) Trident/7.0 Gecko",
    "Trident/7.0 rv:.) Gecko",
    "Trident/7.0 ) rv:1 Gecko",
    "Trident/7.0 rv:1 ) rv:2 Gecko",
]


@pytest.mark.parametrize("text", TRIDENT_STRINGS)
def test_linear_rewrite_of_the_ie_rule_answers_like_the_vendored_one(text: str) -> None:
    ((original, linear),) = detect.LINEAR_EQUIVALENTS.items()
    slow = re.compile(_js_to_python(original), re.ASCII)
    fast = re.compile(_js_to_python(linear), re.ASCII)
    assert (slow.search(text) is None) == (fast.search(text) is None)


def test_a_long_hostile_user_agent_is_answered() -> None:
    """8,000 characters of ``rv:1 )`` after ``Trident/7.0``: the vendored IE rule backtracks for ~20 s on it."""
    hostile = "Trident/7.0 " + "rv:1 ) " * 1150 + "x"
    assert detect._ua_facts.__wrapped__(hostile) == (None, None, None)


def test_device_rules_are_lower_case() -> None:
    """They run on an ASCII-lowercased user agent, so an upper-case letter could never match."""
    patterns = [p.pattern for _, p in detect.DEVICE_RULES + detect.GENERIC_RULES]
    patterns += [detect._ANDROID_MODEL.pattern, detect._ANDROID_FORM.pattern]
    assert [p for p in patterns if p != p.lower()] == []
