"""The offline bot check must agree with isbot 5.1.37 as Umami 3.1 runs it.

Expected answers marked "node" were produced by ``require("isbot").isbot(ua)``
from the npm package isbot@5.1.37 under Node 20.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import polars as pl
import pytest
import regex

from backfill.umami import bots as botcheck
from backfill.umami.bots import ISBOT_VERSION, PATTERNS, _js_to_python, bot_mask, is_bot

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

BOTS = [
    "Mozilla/5.0 (Server)",
    "MyApp/1.0",
    "python-httpx/0.28.1",
    "python-requests/2.31",
    "curl/8.0",
    "Backfill/1.0",
    "Mozilla/5.0 (compatible; anything/1.0)",
    "Googlebot/2.1",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
]

HUMANS = [
    "Mozilla/5.0 umami-backfill/0.1",
    "Mozilla/5.0 umami-backfill/0.1.0",
    CHROME_WINDOWS,
    SAFARI_IPHONE,
    FIREFOX_LINUX,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    CHROME_WINDOWS + " Edg/131.0.0.0",
    "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
    # "(?<! cu)bots?" and "google(?!(app|...))": lookarounds that spare real phones.
    "Mozilla/5.0 (Linux; Android 9; CUBOT P30)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36 GoogleApp/1",
]


@pytest.mark.parametrize("ua", BOTS)
def test_bots_are_dropped(ua: str) -> None:
    assert is_bot(ua) is True


@pytest.mark.parametrize("ua", HUMANS)
def test_browsers_pass(ua: str) -> None:
    assert is_bot(ua) is False


def test_empty_and_missing_are_not_bots() -> None:
    # isbot: isNonEmptyString(ua) && pattern.test(ua)
    assert is_bot("") is False
    assert is_bot(None) is False


# Cases where a naive Python port (re/regex with default flags) answers
# differently from JavaScript; every answer checked against node + isbot 5.1.37.
JS_SEMANTICS = [
    (" ", True),  # not empty, so it goes to the regex: "^\W"
    ("MyApp/1.0\n", False),  # JS "$" is end of input only, Python's also before "\n"
    ("Mozilla/5.0 umami-backfill/0.1\n", False),
    (CHROME_WINDOWS + "\n", False),
    ("Mozilla/5.0\u00a0foo", True),  # JS "\s" includes NBSP
    ("Mozilla/5.0\u3000(compatible;\u3000x/1.0)", True),  # ... and U+3000
    ("a" * 48 + "\U0001f600", True),  # 50 UTF-16 units: "^[^ ]{50,}$"
    ("a" * 47 + "\U0001f600", False),  # 49 units
    ("x" * 50, True),
    ("Mozilla/5.0 (X) \u017ferver", False),  # long s is not "s" without the u flag
    ("Mozilla/5.0 (X) \u212aatalog/1 server", True),
    ("Mozilla/5.0 (compatible; a-b.c/1.0)", True),  # "[\w\d-.]" reads "-" literally
]


@pytest.mark.parametrize(("ua", "expected"), JS_SEMANTICS)
def test_javascript_semantics(ua: str, expected: bool) -> None:
    assert is_bot(ua) is expected


# sha256 of the package's own `fullPattern` string (index.js), which equals
# list.join("|"); guards against edits to the vendored file.
FULL_PATTERN_SHA256 = "e3a56c48bf5cd2eb8f8ebd44050e20a7ad1cd812910de1cdc9c17f8210caa90d"


def test_vendored_list_is_verbatim() -> None:
    path = resources.files("backfill.umami") / "data" / f"isbot-{ISBOT_VERSION}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["source"] == "isbot@5.1.37 (npm), Unlicense"
    assert tuple(data["patterns"]) == PATTERNS
    assert len(PATTERNS) == 178
    digest = hashlib.sha256("|".join(PATTERNS).encode()).hexdigest()
    assert digest == FULL_PATTERN_SHA256


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_compiles(pattern: str) -> None:
    compiled = regex.compile(_js_to_python(pattern), regex.IGNORECASE | regex.ASCII)
    assert compiled.pattern


def test_translation_rules() -> None:
    assert _js_to_python("^a$") == "^a\\Z"
    assert _js_to_python("a\\sb").startswith("a[\\t\\n")
    assert _js_to_python("[\\w\\d-.]") == "[\\w\\d\\-.]"
    assert _js_to_python("[a-\\d]") == "[a\\-\\d]"
    assert _js_to_python("[a-z]") == "[a-z]"
    assert _js_to_python("[\\w\\.\\-]") == "[\\w\\.\\-]"
    assert _js_to_python("a.b") == "a[^\\n\\r\\u2028\\u2029]b"
    assert _js_to_python("(?<!x)(?<=y)(?!z)") == "(?<!x)(?<=y)(?!z)"
    assert _js_to_python("bit\\.ly\\/") == "bit\\.ly\\/"


@pytest.mark.parametrize("pattern", ["\\u00e9", "(?<name>x)", "[^]", "\\1", "[abc", "\\p{L}"])
def test_translation_refuses_unknown_syntax(pattern: str) -> None:
    with pytest.raises(ValueError):
        _js_to_python(pattern)


def test_bot_mask_nulls_and_repeats() -> None:
    s = pl.Series(
        "ua",
        [SAFARI_IPHONE, None, "curl/8.0", SAFARI_IPHONE, "", None, "curl/8.0", FIREFOX_LINUX],
    )
    mask = bot_mask(s)
    assert mask.dtype == pl.Boolean
    assert mask.name == "ua"
    assert mask.to_list() == [False, False, True, False, False, False, True, False]


def test_bot_mask_runs_regex_once_per_distinct_value(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(ua: str) -> bool:
        calls.append(ua)
        return ua.startswith("curl")

    monkeypatch.setattr(botcheck, "is_bot", counting)
    s = pl.Series(["curl/8.0", CHROME_WINDOWS, None] * 10_000)
    mask = bot_mask(s)
    assert sorted(calls) == sorted([CHROME_WINDOWS, "curl/8.0"])
    assert mask.sum() == 10_000
    assert mask.len() == 30_000
    assert mask.null_count() == 0


def test_bot_mask_empty_all_null_and_categorical() -> None:
    assert bot_mask(pl.Series("ua", [], dtype=pl.String)).to_list() == []
    assert bot_mask(pl.Series([None, None], dtype=pl.String)).to_list() == [False, False]
    cat = pl.Series(["curl/8.0", FIREFOX_LINUX, "curl/8.0"], dtype=pl.Categorical)
    assert bot_mask(cat).to_list() == [True, False, True]
