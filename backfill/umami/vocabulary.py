"""Browser, OS and device names from other tools, in Umami's own vocabulary.

Umami groups and labels sessions by the exact strings its detection stores
(``detect-browser`` keys such as ``crios`` or ``edge-chromium``, OS names
such as ``Mac OS``, ua-parser device types). An imported "Chrome" or "macOS"
would show as a separate, unlabelled row next to live traffic, so source
values are mapped onto those strings here. Unknown values pass through
unchanged (the payload validation rejects ones over 20 characters); "no
value" markers become null so that the payload omits the field.

Where the names come from:
  GA4 / UA  Google Analytics 4 and Universal Analytics "Browser",
            "Operating system" and "Device category" dimensions.
  Plausible Plausible's browser / OS / screen-size breakdowns (its names are
            Matomo's device-detector names, with "Chrome Mobile" folded into
            "Chrome" and so on).
  Matomo    Matomo's device-detector names (also used by Plausible).
  uap       ua-parser / uap-core families, what most log parsers emit.
  Umami     Umami's own keys and the labels its dashboard shows for them.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

#: Values that mean "no value" in the sources: stored as null, not as a name.
NULL_VALUES: tuple[str, ...] = ("", "(not set)", "(none)", "(other)", "(unknown)", "unknown")

#: Umami browser key -> names other tools use for it (matched case-insensitively).
#: The keys are what ``detect-browser`` 5.3 (used by Umami) returns.
BROWSER_ALIASES: dict[str, tuple[str, ...]] = {
    "chrome": (
        "Chrome",  # GA4 / UA, Plausible, Matomo, uap, Umami label
        "Google Chrome",
        "Chrome Mobile",  # Matomo, uap: Chrome on Android is "chrome" for Umami too
        "Chromium",  # Matomo, uap: detect-browser matches "Chromium/" as chrome
    ),
    "crios": (
        "crios",
        "Chrome (iOS)",  # Umami label
        "Chrome iOS",
        "Chrome Mobile iOS",  # Matomo, uap
    ),
    "chromium-webview": (
        "chromium-webview",
        "Android Webview",  # GA4 / UA
        "Chrome Webview",  # Matomo
        "Chrome Mobile WebView",  # uap
        "Chrome (webview)",  # Umami label
    ),
    "firefox": (
        "Firefox",  # all sources
        "Mozilla Firefox",
        "Firefox Mobile",  # Matomo, uap: Firefox on Android
    ),
    "fxios": (
        "fxios",
        "Firefox iOS",  # uap
        "Firefox Mobile iOS",  # Matomo
        "Firefox (iOS)",  # Umami label
    ),
    "safari": ("Safari",),  # all sources (desktop Safari; see normalize_browser's os=)
    "ios": (
        "Mobile Safari",  # Matomo, uap
        "Safari Mobile",
        "iOS",  # Umami label for its "ios" key
    ),
    "ios-webview": (
        "ios-webview",
        "Safari (in-app)",  # GA4 / UA
        "Mobile Safari UI/WKWebView",  # uap
        "iOS (webview)",  # Umami label
    ),
    # "Edge" in every current source is Chromium Edge; Umami's legacy "edge"
    # key (EdgeHTML, retired in 2021) is only reached by the explicit names below.
    "edge-chromium": (
        "edge-chromium",
        "Edge",  # GA4 / UA, uap
        "Microsoft Edge",  # Plausible, Matomo
        "Edge (Chromium)",  # Umami label
        "Edge Mobile",  # uap: Edge on Android ("EdgA/") is edge-chromium for Umami
    ),
    "edge": ("Edge Legacy", "Microsoft Edge Legacy", "EdgeHTML"),
    "edge-ios": ("edge-ios", "Edge (iOS)", "Edge iOS", "EdgiOS"),  # Umami label, uap
    "opera": (
        "Opera",  # all sources
        "Opera Mobile",  # Matomo, uap
        "Opera GX",  # Matomo: sends "OPR/", detected as opera
    ),
    "opera-mini": ("opera-mini", "Opera Mini"),  # GA4 / UA, Matomo, uap
    "samsung": (
        "samsung",  # Umami key and label ("Samsung")
        "Samsung Internet",  # GA4 / UA, uap
        "Samsung Browser",  # Plausible, Matomo
        "SamsungBrowser",
    ),
    "yandexbrowser": (
        "yandexbrowser",
        "Yandex Browser",  # Plausible, Matomo, uap
        "Yandex Browser Lite",  # Matomo
        "YaBrowser",  # GA4 / UA
        "Yandex",  # Umami label
    ),
    "silk": ("Silk", "Amazon Silk"),  # GA4 / UA, uap
    "miui": ("MIUI", "MIUI Browser", "MiuiBrowser"),  # Matomo, Umami label
    "android": ("Android", "Android Browser"),  # uap / Umami label, GA4 / UA, Matomo
    "facebook": ("Facebook", "Facebook App"),  # Matomo, uap
    "instagram": ("Instagram", "Instagram App"),  # Matomo, uap
    "kakaotalk": ("KakaoTalk", "Kakao Talk"),  # Matomo, Umami label "KaKaoTalk"
    "ie": (
        "ie",  # uap, Umami label "IE"
        "Internet Explorer",  # GA4 / UA, Matomo
        "MSIE",
        "IE Mobile",  # Matomo, uap: its UA carries "MSIE ...; Trident/"
    ),
    "aol": ("AOL", "AOL Shield"),
    "bb10": ("bb10", "BlackBerry 10"),  # Umami label
    "beaker": ("Beaker", "Beaker Browser"),
    "phantomjs": ("PhantomJS",),
    "curl": ("curl",),
    "searchbot": ("searchbot",),
    # detect-browser also knows these two; Umami stores them as they are.
    "pie": ("pie", "Pocket Internet Explorer"),
    "netfront": ("NetFront",),
}

#: Umami OS name -> names other tools use for it. Windows 11 sends the same
#: "Windows NT 10.0" as Windows 10, so Umami never stores "Windows 11".
OS_ALIASES: dict[str, tuple[str, ...]] = {
    "Windows 10": (
        "Windows 10",
        "Windows",  # GA4 / UA, Plausible, Matomo, uap: no version, today that is 10/11
        "Windows 11",
        "Windows 10/11",  # Umami label
    ),
    "Windows 8.1": ("Windows 8.1",),
    "Windows 8": ("Windows 8",),
    "Windows 7": ("Windows 7",),
    "Windows Vista": ("Windows Vista",),
    "Windows Server 2003": ("Windows Server 2003",),
    "Windows XP": ("Windows XP",),
    "Windows 2000": ("Windows 2000",),
    "Windows ME": ("Windows ME",),
    "Windows 98": ("Windows 98",),
    "Windows 95": ("Windows 95",),
    "Windows 3.11": ("Windows 3.11",),
    "Windows CE": ("Windows CE",),
    "Windows Mobile": (
        "Windows Mobile",
        "Windows Phone",  # GA4 / UA, Matomo, uap: its UA carries "IEMobile"
    ),
    "Mac OS": (
        "Mac OS",
        "Macintosh",  # GA4 / UA
        "Mac",  # Plausible, Matomo
        "macOS",  # Umami label
        "Mac OS X",  # uap
        "OS X",
    ),
    "iOS": ("iOS", "iPadOS", "iPhone OS"),  # all sources; iPadOS: Plausible, Matomo
    "Android OS": (
        "Android OS",
        "Android",  # all sources, Umami label
        "Fire OS",  # Matomo: Fire tablets send "Android", which Umami checks before "Kindle"
    ),
    "Linux": (
        "Linux",  # GA4 / UA, uap
        "GNU/Linux",  # Plausible, Matomo
        "Ubuntu",  # Matomo, uap: distributions send "X11; Linux" / "Linux"
        "Debian",
        "Fedora",
        "Linux Mint",
        "Arch Linux",
        "openSUSE",
    ),
    "Chrome OS": ("Chrome OS", "ChromeOS", "CrOS", "Chromium OS"),  # all sources
    "BlackBerry OS": ("BlackBerry OS", "BlackBerry", "BlackBerry Tablet OS"),  # GA4 / UA, Matomo
    "Amazon OS": ("Amazon OS", "Kindle"),
    "Open BSD": ("Open BSD", "OpenBSD"),  # Umami, Matomo / uap
    "Sun OS": ("Sun OS", "SunOS", "Solaris"),
    "QNX": ("QNX",),
    "BeOS": ("BeOS",),
    "OS/2": ("OS/2",),
}

#: Windows as Umami stores it, by the version a source reports beside "Windows" (lower
#: case): device-detector's names (Plausible, Matomo), the NT numbers some user agents
#: carry, and server releases, each mapped through the "Windows NT x.y" its browsers
#: send, which is all detect-browser reads. Windows 11 and the 2016+ servers send
#: NT 10.0, so Umami stores them as "Windows 10".
WINDOWS_VERSIONS: dict[str, str] = {
    **dict.fromkeys(("10", "11", "10.0", "server 2016", "server 2019", "server 2022", "server 2025"), "Windows 10"),
    **dict.fromkeys(("8.1", "6.3", "server 2012 r2"), "Windows 8.1"),
    **dict.fromkeys(("8", "6.2", "server 2012"), "Windows 8"),
    **dict.fromkeys(("7", "6.1", "server 2008 r2"), "Windows 7"),
    **dict.fromkeys(("vista", "6.0", "server 2008"), "Windows Vista"),
    **dict.fromkeys(("server 2003", "5.2"), "Windows Server 2003"),
    **dict.fromkeys(("xp", "5.1"), "Windows XP"),
    **dict.fromkeys(("2000", "5.0"), "Windows 2000"),
    **dict.fromkeys(("me", "4.90"), "Windows ME"),
    **dict.fromkeys(("98", "4.10"), "Windows 98"),
    "95": "Windows 95",
    **dict.fromkeys(("3.1", "3.11"), "Windows 3.11"),
}
#: OS names whose version decides Umami's name (Windows RT is Windows 8 / 8.1 on ARM).
_VERSIONED_OSES = ("windows", "windows rt")

#: Umami device -> names other tools use for it. Umami stores ua-parser's
#: device types, or desktop / laptop from the screen width.
DEVICE_ALIASES: dict[str, tuple[str, ...]] = {
    "desktop": ("Desktop", "Computer", "PC"),  # GA4 / UA, Plausible, Matomo
    "laptop": ("Laptop",),  # Plausible screen size
    "mobile": (
        "Mobile",  # GA4 / UA, Plausible, ua-parser
        "Smartphone",  # Matomo
        "Phone",
        "Mobile Phone",
        "Feature Phone",  # Matomo
        "Phablet",  # Matomo
        "Portable Media Player",  # Matomo: iPod and the like, "mobile" for ua-parser
    ),
    "tablet": ("Tablet",),  # all sources
    "smarttv": ("smarttv", "Smart TV", "TV", "Television"),  # ua-parser, GA4, Matomo
    "console": ("Console", "Game Console"),  # ua-parser, Matomo
    "wearable": ("Wearable", "Smartwatch", "Watch"),  # ua-parser, Matomo
    "xr": ("xr", "VR", "AR"),  # ua-parser
    "embedded": (
        "Embedded",  # ua-parser
        "Car Browser",  # Matomo: cars are "embedded" for ua-parser
        "Smart Speaker",  # Matomo
    ),
}

#: On iOS every browser engine is WebKit and detect-browser gives them their
#: own keys; sources such as GA4 and Plausible report the plain name instead.
_IOS_BROWSERS: dict[str, str] = {
    "chrome": "crios",
    "firefox": "fxios",
    "safari": "ios",
    "edge-chromium": "edge-ios",
}


def _build(aliases: Mapping[str, tuple[str, ...]]) -> dict[str, str | None]:
    """Flatten ``target -> names`` into ``lowercase name -> target`` (nulls included)."""
    table: dict[str, str | None] = dict.fromkeys(NULL_VALUES)
    for target, names in aliases.items():
        for name in names:
            key = name.strip().lower()
            if key in table and table[key] != target:
                raise ValueError(f"{name!r} maps to both {table[key]!r} and {target!r}")
            table[key] = target
    return table


BROWSERS: dict[str, str | None] = _build(BROWSER_ALIASES)
OPERATING_SYSTEMS: dict[str, str | None] = _build(OS_ALIASES)
DEVICES: dict[str, str | None] = _build(DEVICE_ALIASES)


def _normalize(expr: pl.Expr, table: Mapping[str, str | None]) -> pl.Expr:
    """Look the trimmed, lowercased value up in ``table``; keep it as it was if absent."""
    text = expr.cast(pl.String)
    return text.str.strip_chars().str.to_lowercase().replace_strict(table, default=text, return_dtype=pl.String)


def normalize_browser(expr: pl.Expr, os: pl.Expr | None = None) -> pl.Expr:
    """Map a source's browser name to Umami's browser key.

    Give ``os`` (the source's OS column, raw or normalised) when the source
    reports iOS browsers by their plain name, as GA4 and Plausible do: a
    "Chrome" on iOS is then ``crios`` and a "Safari" ``ios``, as Umami's own
    detection would have stored them.
    """
    browser = _normalize(expr, BROWSERS)
    if os is None:
        return browser
    on_ios = normalize_os(os) == "iOS"
    return pl.when(on_ios).then(browser.replace(_IOS_BROWSERS)).otherwise(browser).cast(pl.String)


def normalize_os(expr: pl.Expr) -> pl.Expr:
    """Map a source's operating system name to the one Umami stores."""
    return _normalize(expr, OPERATING_SYSTEMS)


def os_with_version(name: pl.Expr, version: pl.Expr) -> pl.Expr:
    """A source's OS name and version -> one OS name (still to be normalised): the name
    Umami gives that Windows version ("Windows" + "7" is "Windows 7"), else the name.

    Only Windows has versions in Umami's vocabulary; "Mac" + "10.15", "iOS" + "17.1",
    "Android" + "14" keep their name (Umami stores "Mac OS", "iOS", "Android OS").
    A Windows version it does not know ("NT") stays visible as "Windows NT" rather than
    being counted as Windows 10; no version at all is today's Windows (10).
    """
    text = name.cast(pl.String).str.strip_chars()
    ver = version.cast(pl.String).str.strip_chars()
    known = ver.str.to_lowercase().replace_strict(WINDOWS_VERSIONS, default=None, return_dtype=pl.String)
    windows = pl.coalesce(known, pl.concat_str(pl.lit("Windows "), ver))
    versioned = text.str.to_lowercase().is_in(_VERSIONED_OSES) & (ver.fill_null("") != "")
    return pl.when(versioned).then(windows).otherwise(text)


def normalize_device(expr: pl.Expr) -> pl.Expr:
    """Map a source's device category to the one Umami stores."""
    return _normalize(expr, DEVICES)
