"""Source names must land on the exact strings Umami's own detection stores."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from backfill.schema import FIELD_LIMITS
from backfill.umami.vocabulary import (
    BROWSER_ALIASES,
    BROWSERS,
    DEVICE_ALIASES,
    DEVICES,
    NULL_VALUES,
    OPERATING_SYSTEMS,
    OS_ALIASES,
    normalize_browser,
    normalize_device,
    normalize_os,
)

Normalizer = Callable[[pl.Expr], pl.Expr]

# Every value Umami's detection can store (detect-browser 5.3 and ua-parser),
# as listed in UMAMI_CONTRACT.md.
UMAMI_BROWSERS = {
    "chrome", "crios", "firefox", "fxios", "safari", "ios", "ios-webview", "edge",
    "edge-chromium", "edge-ios", "opera", "opera-mini", "samsung", "yandexbrowser", "silk",
    "miui", "android", "chromium-webview", "facebook", "instagram", "kakaotalk", "ie", "aol",
    "bb10", "beaker", "phantomjs", "curl", "searchbot", "pie", "netfront",
}  # fmt: skip
UMAMI_OS = {
    "Windows 10", "Windows 8.1", "Windows 8", "Windows 7", "Windows Vista",
    "Windows Server 2003", "Windows XP", "Windows 2000", "Windows ME", "Windows 98",
    "Windows 95", "Windows 3.11", "Windows CE", "Windows Mobile", "Mac OS", "iOS",
    "Android OS", "Linux", "Chrome OS", "BlackBerry OS", "Amazon OS", "Open BSD", "Sun OS",
    "QNX", "BeOS", "OS/2",
}  # fmt: skip
UMAMI_DEVICES = {
    "desktop", "laptop", "mobile", "tablet", "console", "smarttv", "wearable", "xr", "embedded",
}  # fmt: skip


def apply(fn: Normalizer, values: list[str | None]) -> list[str | None]:
    """Run one normaliser over a column and return the result as a list."""
    df = pl.DataFrame({"v": values}, schema={"v": pl.String})
    return df.select(fn(pl.col("v"))).to_series().to_list()


BROWSER_CASES = [
    # GA4 / Universal Analytics
    ("Chrome", "chrome"),
    ("Safari", "safari"),
    ("Safari (in-app)", "ios-webview"),
    ("Edge", "edge-chromium"),
    ("Firefox", "firefox"),
    ("Samsung Internet", "samsung"),
    ("Opera", "opera"),
    ("Android Webview", "chromium-webview"),
    ("Internet Explorer", "ie"),
    ("Opera Mini", "opera-mini"),
    ("Amazon Silk", "silk"),
    ("YaBrowser", "yandexbrowser"),
    ("Android Browser", "android"),
    # Plausible / Matomo
    ("Microsoft Edge", "edge-chromium"),
    ("Samsung Browser", "samsung"),
    ("Yandex Browser", "yandexbrowser"),
    ("Chrome Mobile", "chrome"),
    ("Chrome Mobile iOS", "crios"),
    ("Firefox Mobile iOS", "fxios"),
    ("Mobile Safari", "ios"),
    ("MIUI Browser", "miui"),
    ("Chrome Webview", "chromium-webview"),
    # uap / generic logs
    ("Chrome iOS", "crios"),
    ("Chrome (iOS)", "crios"),
    ("Firefox iOS", "fxios"),
    ("Mobile Safari UI/WKWebView", "ios-webview"),
    ("Chrome Mobile WebView", "chromium-webview"),
    ("Edge Mobile", "edge-chromium"),
    ("IE", "ie"),
    ("Facebook", "facebook"),
    ("Instagram", "instagram"),
    # Umami's own dashboard labels
    ("Edge (Chromium)", "edge-chromium"),
    ("Edge (iOS)", "edge-ios"),
    ("iOS (webview)", "ios-webview"),
    ("KaKaoTalk", "kakaotalk"),
    ("Edge Legacy", "edge"),
]

OS_CASES = [
    ("Windows", "Windows 10"),
    ("Windows 10", "Windows 10"),
    ("Windows 11", "Windows 10"),
    ("Windows 7", "Windows 7"),
    ("Windows 8.1", "Windows 8.1"),
    ("Windows XP", "Windows XP"),
    ("Windows Phone", "Windows Mobile"),
    ("Macintosh", "Mac OS"),
    ("Mac", "Mac OS"),
    ("macOS", "Mac OS"),
    ("Mac OS X", "Mac OS"),
    ("OS X", "Mac OS"),
    ("iOS", "iOS"),
    ("iPadOS", "iOS"),
    ("Android", "Android OS"),
    ("Linux", "Linux"),
    ("GNU/Linux", "Linux"),
    ("Ubuntu", "Linux"),
    ("Chrome OS", "Chrome OS"),
    ("ChromeOS", "Chrome OS"),
    ("CrOS", "Chrome OS"),
    ("BlackBerry", "BlackBerry OS"),
    ("OpenBSD", "Open BSD"),
]

DEVICE_CASES = [
    ("Desktop", "desktop"),
    ("Laptop", "laptop"),
    ("Mobile", "mobile"),
    ("smartphone", "mobile"),
    ("phone", "mobile"),
    ("feature phone", "mobile"),
    ("phablet", "mobile"),
    ("Tablet", "tablet"),
    ("Smart TV", "smarttv"),
    ("smarttv", "smarttv"),
    ("tv", "smarttv"),
    ("console", "console"),
    ("wearable", "wearable"),
    ("xr", "xr"),
    ("embedded", "embedded"),
    ("car browser", "embedded"),
]


@pytest.mark.parametrize(("source", "umami"), BROWSER_CASES)
def test_browser_table(source: str, umami: str) -> None:
    assert apply(normalize_browser, [source]) == [umami]


@pytest.mark.parametrize(("source", "umami"), OS_CASES)
def test_os_table(source: str, umami: str) -> None:
    assert apply(normalize_os, [source]) == [umami]


@pytest.mark.parametrize(("source", "umami"), DEVICE_CASES)
def test_device_table(source: str, umami: str) -> None:
    assert apply(normalize_device, [source]) == [umami]


@pytest.mark.parametrize(
    ("fn", "values", "expected"),
    [
        (normalize_browser, ["CHROME", "  chrome ", "sAfArI (In-App)", "\tEDGE\n"],
         ["chrome", "chrome", "ios-webview", "edge-chromium"]),
        (normalize_os, ["WINDOWS", " mac os x ", "IPADOS", "chromeos"],
         ["Windows 10", "Mac OS", "iOS", "Chrome OS"]),
        (normalize_device, ["DESKTOP", " Smart TV ", "SmartPhone"],
         ["desktop", "smarttv", "mobile"]),
    ],
)  # fmt: skip
def test_case_and_whitespace_insensitive(fn: Normalizer, values: list[str], expected: list[str]) -> None:
    assert apply(fn, values) == expected


@pytest.mark.parametrize("fn", [normalize_browser, normalize_os, normalize_device])
def test_unknown_values_pass_through_unchanged(fn: Normalizer) -> None:
    values = ["Brave", "UC Browser", "  Some Thing  ", "HarmonyOS", "x" * 30]
    assert apply(fn, values) == values


@pytest.mark.parametrize("fn", [normalize_browser, normalize_os, normalize_device])
def test_no_value_markers_and_nulls_become_null(fn: Normalizer) -> None:
    values = [None, "", "   ", "(not set)", "(NOT SET)", "(none)", "unknown", "Unknown", "(other)"]
    assert apply(fn, values) == [None] * len(values)


def test_all_targets_are_umami_values() -> None:
    assert set(BROWSER_ALIASES) == UMAMI_BROWSERS
    assert set(OS_ALIASES) == UMAMI_OS
    assert set(DEVICE_ALIASES) == UMAMI_DEVICES
    for table, limit in ((BROWSERS, "browser"), (OPERATING_SYSTEMS, "os"), (DEVICES, "device")):
        for target in table.values():
            assert target is None or len(target) <= FIELD_LIMITS[limit]


@pytest.mark.parametrize(
    ("fn", "targets"),
    [
        (normalize_browser, sorted(UMAMI_BROWSERS - {"edge"})),
        (normalize_os, sorted(UMAMI_OS)),
        (normalize_device, sorted(UMAMI_DEVICES)),
    ],
)
def test_umami_values_are_kept(fn: Normalizer, targets: list[str]) -> None:
    """Already-normalised data (or an Umami export) must come through as it is."""
    assert apply(fn, targets) == targets


def test_bare_edge_means_chromium_edge() -> None:
    # Every current source means Chromium Edge by "Edge"; legacy EdgeHTML is
    # only reached through an explicit name.
    assert apply(normalize_browser, ["edge", "EdgeHTML"]) == ["edge-chromium", "edge"]


def test_keys_are_lowercase_and_trimmed() -> None:
    for table in (BROWSERS, OPERATING_SYSTEMS, DEVICES):
        assert all(key == key.strip().lower() for key in table)
        assert all(table[value] is None for value in NULL_VALUES)


def test_browser_refined_by_os() -> None:
    df = pl.DataFrame(
        {
            "browser": ["Chrome", "Safari", "Firefox", "Edge", "Chrome", "Safari", "Opera",
                        "Safari (in-app)", None, "Chrome"],
            "os": ["iOS", "iPadOS", "ios", "iOS", "Android", "Macintosh", "iOS",
                   "iOS", "iOS", None],
        }
    )  # fmt: skip
    out = df.select(normalize_browser(pl.col("browser"), os=pl.col("os"))).to_series()
    assert out.name == "browser"
    assert out.to_list() == [
        "crios", "ios", "fxios", "edge-ios", "chrome", "safari", "opera",
        "ios-webview", None, "chrome",
    ]  # fmt: skip


def test_expressions_are_lazy_and_keep_names() -> None:
    lf = pl.LazyFrame(
        {"b": ["Chrome"], "o": ["Macintosh"], "d": ["Mobile"]},
        schema={"b": pl.Categorical, "o": pl.String, "d": pl.String},
    )
    out = lf.select(normalize_browser(pl.col("b")), normalize_os(pl.col("o")), normalize_device(pl.col("d"))).collect()
    assert out.columns == ["b", "o", "d"]
    assert out.row(0) == ("chrome", "Mac OS", "mobile")
    assert out.schema == pl.Schema({"b": pl.String, "o": pl.String, "d": pl.String})
