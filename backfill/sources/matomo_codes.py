"""What the two Matomo readers share: Matomo's codes in Umami's vocabulary, and the flat columns.

Matomo stores a visitor's browser, OS and device as device-detector CODES
(``CH``, ``FF``, ``WIN``, ``MAC``, device type numbers), in both the raw
``log_visit`` table and the Live API (``browserCode``, ``operatingSystemCode``;
the Live API gives the device type as its English label). Umami stores its own
keys (``chrome``, ``Mac OS``, ``mobile``), so a code is turned into the name
device-detector gives it, and that name goes through ``backfill.umami.vocabulary``,
the same table every other source uses (so iOS browsers become ``crios``,
``ios``, ... from the OS, as Umami's own detection would store them).

Only the codes of browsers and systems people actually use are listed here
(device-detector knows about 700 browsers); any other code is sent as it is
(``OB``, ``TIZ``), so it is visible in Umami and can be fixed, never lost.
Chromium browsers that Umami's detection calls ``chrome`` (Brave, Vivaldi,
Whale: their user agents carry ``Chrome/``) are Chrome here too.

Both readers give frames of :data:`FLAT_SCHEMA`, so their presets read the same
columns and a visit gives the same Umami events from either export.
"""

from __future__ import annotations

import polars as pl

from backfill.umami.vocabulary import normalize_browser, normalize_device, normalize_os

S = pl.String()
F64 = pl.Float64()

#: device-detector browser code -> a name ``backfill.umami.vocabulary`` knows.
BROWSER_NAMES: dict[str, str] = {
    "CH": "Chrome",
    "CM": "Chrome Mobile",
    "CR": "Chromium",
    "CI": "Chrome Mobile iOS",
    "CV": "Chrome Webview",
    "CF": "Chrome",  # Chrome Frame
    "BR": "Chrome",  # Brave: a Chrome user agent
    "VI": "Chrome",  # Vivaldi: "Chrome/" in its user agent, chrome for Umami
    "WH": "Chrome",  # Whale
    "FF": "Firefox",
    "FM": "Firefox Mobile",
    "F1": "Firefox Mobile iOS",
    "FK": "Firefox",  # Firefox Focus
    "SF": "Safari",
    "MF": "Mobile Safari",
    "PV": "Safari",  # Safari Technology Preview
    "PS": "Microsoft Edge",
    "EW": "Chrome Webview",  # Edge WebView (Chromium)
    "OP": "Opera",
    "OM": "Opera Mobile",
    "OX": "Opera GX",
    "OO": "Opera",  # Opera Touch
    "OI": "Opera Mini",
    "SB": "Samsung Browser",
    "3L": "Samsung Browser",  # Samsung Browser Lite
    "YA": "Yandex Browser",
    "YL": "Yandex Browser Lite",
    "IE": "Internet Explorer",
    "IM": "IE Mobile",
    "AN": "Android Browser",
    "MU": "MIUI Browser",  # Mi Browser
    "AD": "AOL Shield",
    "BB": "BlackBerry",  # BlackBerry Browser: Umami's detection has no key for it
    "PM": "Firefox",  # Pale Moon: "Firefox/" in its user agent
}

#: device-detector OS code -> a name ``backfill.umami.vocabulary`` knows (Windows: see os_expr).
OS_NAMES: dict[str, str] = {
    "MAC": "Mac",
    "IOS": "iOS",
    "IPA": "iPadOS",
    "AND": "Android",
    "FIR": "Fire OS",
    "LIN": "GNU/Linux",
    "UBT": "Ubuntu",
    "DEB": "Debian",
    "FED": "Fedora",
    "MIN": "Linux Mint",
    "ARL": "Arch Linux",
    "SSE": "Linux",  # SUSE
    "CES": "Linux",  # CentOS
    "RHT": "Linux",  # Red Hat
    "GNT": "Linux",  # Gentoo
    "MDR": "Linux",  # Mandriva
    "COS": "Chrome OS",
    "CRS": "Chromium OS",
    "BLB": "BlackBerry OS",
    "QNX": "BlackBerry Tablet OS",
    "WPH": "Windows Phone",
    "WMO": "Windows Mobile",
    "WCE": "Windows CE",
    "OBS": "OpenBSD",
    "SOS": "Solaris",
    "BEO": "BeOS",
    "OS2": "OS/2",
}
#: The code device-detector stores when it does not know (browser ``UNK``, OS ``UNK``).
UNKNOWN_CODES = ("UNK", "", "unknown", "Unknown")

#: Matomo's device type number -> Umami's device (ua-parser's types).
DEVICE_TYPES: dict[int, str] = {
    0: "desktop",
    1: "mobile",  # smartphone
    2: "tablet",
    3: "mobile",  # feature phone
    4: "console",
    5: "smarttv",  # TVs and set-top boxes
    6: "embedded",  # car browser
    7: "embedded",  # smart display
    8: "embedded",  # camera
    9: "mobile",  # portable media player (ua-parser: mobile)
    10: "mobile",  # phablet
    11: "embedded",  # smart speaker
    12: "wearable",
    13: "embedded",  # peripheral
}
#: The Live API's English device type labels -> Matomo's device type number.
DEVICE_LABELS: dict[str, int] = {
    "desktop": 0,
    "smartphone": 1,
    "tablet": 2,
    "feature phone": 3,
    "console": 4,
    "tv": 5,
    "car browser": 6,
    "smart display": 7,
    "camera": 8,
    "portable media player": 9,
    "phablet": 10,
    "smart speaker": 11,
    "wearable": 12,
    "peripheral": 13,
}

#: Action URL prefixes (``log_action.url_prefix``): Matomo stores URLs without them.
URL_PREFIXES: dict[int, str] = {0: "http://", 1: "http://www.", 2: "https://", 3: "https://www."}

#: Umami event name per kind of Matomo action that is not a page view (events use
#: their own action, goals ``goal_<id>``; see docs/mapping.md).
EVENT_NAMES: dict[str, str] = {
    "outlink": "outlink",
    "download": "download",
    "site_search": "site_search",
    "ecommerce_order": "ecommerce_order",
    "abandoned_cart": "abandoned_cart",
}

#: The columns of every frame both readers yield (plus ``_row``, and ``_source_error`` /
#: ``_source_raw`` on rows that cannot be imported, e.g. an action id log_action lacks).
FLAT_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Int64(),  # unix seconds (server_time is UTC)
    "kind": S,  # pageview | event | outlink | download | site_search | goal | ecommerce_order |
    # abandoned_cart | content
    "event_name": S,  # the Umami event name; null for a page view
    "visitor_id": S,  # user_id, else idvisitor as 16 lower-case hex digits
    "visit_id": S,  # idvisit
    "site_id": S,  # idsite: a dump of all sites holds them all (filter on it to import one)
    "hostname": S,  # host of url, as the page had it (www. kept, like Umami's tracker)
    "url": S,  # the page (for outlinks and downloads: the page they were clicked on)
    "title": S,  # page title (page views)
    "referrer": S,  # the visit's referrer URL, on its first action only
    "link_url": S,  # outlink / download target
    "category": S,  # event category, or site search category
    "action": S,  # event action
    "label": S,  # event name (Matomo's e_n)
    "value": F64,  # event value
    "keyword": S,  # site search keyword
    "search_count": pl.Int64(),  # site search result count
    "goal_id": S,
    "goal_name": S,  # Live API only
    "order_id": S,
    "revenue": F64,  # null when 0
    "currency": S,  # the site's currency (Matomo keeps one per site)
    "screen": S,  # resolution, e.g. 1920x1080
    "language": S,  # first browser language, e.g. en-US
    "browser": S,  # Umami browser key (unknown codes as they are)
    "os": S,  # Umami OS name
    "device": S,  # Umami device
    "country": S,  # ISO 3166-1 alpha-2
    "region": S,  # ISO 3166-2 (DE-BE)
    "city": S,
}


def text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text; empty, ``\\N`` and ``NULL`` (a MySQL null written out) become null."""
    value = expr.cast(S).str.strip_chars()
    return pl.when(value.is_in(["", r"\N", "NULL"])).then(None).otherwise(value)


def browser_expr(code: pl.Expr, os_code: pl.Expr) -> pl.Expr:
    """Umami's browser key from a device-detector browser code (and the OS code, for iOS)."""
    code = text(code)
    known = code.replace_strict(BROWSER_NAMES, default=code, return_dtype=S)
    name = pl.when(code.is_in(UNKNOWN_CODES)).then(None).otherwise(known)
    return normalize_browser(name, os=os_name(os_code, pl.lit(None, S)))


def os_name(code: pl.Expr, version: pl.Expr) -> pl.Expr:
    """A name ``backfill.umami.vocabulary`` knows for an OS code; Windows with its version
    (``WIN`` + ``7`` is Windows 7; 10, 11 and none are Umami's Windows 10)."""
    code = text(code)
    version = text(version)
    windows = pl.concat_str(pl.lit("Windows "), version.fill_null("10"))
    known = code.replace_strict(OS_NAMES, default=code, return_dtype=S)
    return pl.when(code.is_in(UNKNOWN_CODES)).then(None).when(code == "WIN").then(windows).otherwise(known)


def os_expr(code: pl.Expr, version: pl.Expr) -> pl.Expr:
    """Umami's OS name from a device-detector OS code and version."""
    return normalize_os(os_name(code, version))


def device_expr(device_type: pl.Expr) -> pl.Expr:
    """Umami's device from Matomo's device type number (or the Live API's English label)."""
    raw = text(device_type)
    number = raw.cast(pl.Int64, strict=False)
    label = raw.str.to_lowercase().replace_strict(DEVICE_LABELS, default=None, return_dtype=pl.Int64)
    return normalize_device(pl.coalesce(number, label).replace_strict(DEVICE_TYPES, default=None, return_dtype=S))


def language_expr(accept_language: pl.Expr) -> pl.Expr:
    """The first language of an Accept-Language value, as browsers name it: ``en-us,en;q=0.9`` -> ``en-US``."""
    first = text(accept_language).str.split(",").list.first().str.split(";").list.first().str.strip_chars()
    parts = first.str.split("-")
    lang = parts.list.first().str.to_lowercase()
    region = parts.list.get(1, null_on_oob=True).str.to_uppercase()
    tagged = pl.when(region.is_null() | (region == "")).then(lang).otherwise(pl.concat_str(lang, pl.lit("-"), region))
    return pl.when(lang.is_in(["", "xx"])).then(None).otherwise(tagged)


def country_expr(code: pl.Expr) -> pl.Expr:
    """ISO 3166-1 alpha-2 in upper case; Matomo's unknown ``xx`` and anything else not two letters -> null."""
    upper = text(code).str.to_uppercase()
    return pl.when(upper.str.contains(r"^[A-Z]{2}$") & (upper != "XX")).then(upper)


def region_expr(country: pl.Expr, region: pl.Expr) -> pl.Expr:
    """ISO 3166-2 from the country and Matomo's region code within it: ``DE`` + ``BE`` -> ``DE-BE``.

    A region Matomo stores in a form that is not a subdivision code (1-3 letters or
    digits) is left out, rather than rejecting the row over it.
    """
    code = text(region).str.to_uppercase()
    code = pl.when(code.str.contains(r"^[A-Z0-9]{1,3}$")).then(code)
    return pl.when(country.is_not_null() & code.is_not_null()).then(pl.concat_str(country, pl.lit("-"), code))


def screen_expr(resolution: pl.Expr) -> pl.Expr:
    """``1920x1080``; Matomo's ``unknown`` -> null."""
    value = text(resolution)
    return pl.when(value.str.contains(r"^\d+x\d+$")).then(value)


def hostname_expr(url: pl.Expr) -> pl.Expr:
    """The host of an absolute URL, lower case, as the page had it (``www.`` kept)."""
    return url.str.extract(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#:]+)", 1).str.to_lowercase()


def visitor_expr(user_id: pl.Expr, idvisitor: pl.Expr) -> pl.Expr:
    """user_id when the site set one, else idvisitor as lower-case hex digits.

    idvisitor is BINARY(8): exported as hex (``HEX(idvisitor)``, or ``0x...`` from
    ``mysql --binary-as-hex``) it is used as it is; exported raw, its bytes are
    hex-encoded here, so the id stays the same visitor on every run either way.
    """
    raw = text(idvisitor)
    lower = raw.str.to_lowercase().str.strip_prefix("0x")
    hex_id = pl.when(lower.str.contains(r"^[0-9a-f]+$")).then(lower).otherwise(raw.str.encode("hex"))
    return pl.coalesce(text(user_id), hex_id)


def positive(expr: pl.Expr) -> pl.Expr:
    """A number > 0, else null (Matomo writes 0 for "no revenue")."""
    value = text(expr).cast(F64, strict=False)
    return pl.when(value > 0).then(value)


def finish(frame: pl.DataFrame, extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """The frame in :data:`FLAT_SCHEMA` order and types, then ``_row`` and ``extra`` columns."""
    missing = [pl.lit(None, t).alias(c) for c, t in FLAT_SCHEMA.items() if c not in frame.columns]
    frame = frame.with_columns(missing) if missing else frame
    tail = [c for c in extra if c in frame.columns]
    return frame.select(*(pl.col(c).cast(t) for c, t in FLAT_SCHEMA.items()), "_row", *tail)


__all__ = [
    "BROWSER_NAMES",
    "DEVICE_LABELS",
    "DEVICE_TYPES",
    "EVENT_NAMES",
    "FLAT_SCHEMA",
    "OS_NAMES",
    "URL_PREFIXES",
    "browser_expr",
    "country_expr",
    "device_expr",
    "finish",
    "hostname_expr",
    "language_expr",
    "os_expr",
    "positive",
    "region_expr",
    "screen_expr",
    "text",
    "visitor_expr",
]
