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

Old data keeps old codes, and they are read too: Piwik 1.x stored Windows as one
code per version (``WXP``, ``WI7``: :data:`LEGACY_OS`), and the GeoIP of those
years stored regions as FIPS 10-4 codes (``NL`` + ``11``), which are no ISO
3166-2 codes: a region is kept only when ``pycountry`` knows the code
(:func:`region_expr`), and the readers say how many were left out
(``matomo_visits.VisitNotes``). Matomo stores text the tracker sent HTML-escaped
(``It&#039;s``, ``Cakes &amp; tarts``); :func:`unsanitize` gives it back as the
page had it, as Matomo's own API does.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import polars as pl
import pycountry

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
#: Piwik 1.x's OS codes (one per Windows version, ``IPH`` for the iPhone, ...), which
#: Matomo still reads (``DevicesDetection/functions.php``, ``_mapLegacyOsShortCodes``).
LEGACY_OS: dict[str, str] = {
    "W10": "Windows 10",
    "W81": "Windows 8.1",
    "WI8": "Windows 8",
    "WI7": "Windows 7",
    "WVI": "Windows Vista",
    "WS3": "Windows Server 2003",
    "WXP": "Windows XP",
    "W2K": "Windows 2000",
    "WNT": "Windows NT 4.0",
    "WME": "Windows ME",
    "W98": "Windows 98",
    "W95": "Windows 95",
    "W31": "Windows 3.11",
    "IPH": "iOS",
    "IPD": "iOS",
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

#: The device type in the Live API's ``deviceTypeIcon`` (``plugins/Morpheus/icons/dist/devices/
#: smartphone.png``), which does not change with the language; ``deviceType`` is translated.
DEVICE_ICON = r"/devices/([a-z_]+)\.[a-z]+$"

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
    "items": S,  # an order's items as a JSON object for data.* (see items_object)
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


#: What Matomo's ``Common::sanitizeInputValue`` escapes, undone in this order (``&amp;`` last,
#: so ``&amp;lt;`` gives ``&lt;``, as PHP's ``htmlspecialchars_decode`` does).
_ESCAPED = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#039;", "'"), ("&#39;", "'"), ("&amp;", "&"))


def unsanitize(expr: pl.Expr) -> pl.Expr:
    """Text as the tracker sent it: Matomo stores action names, goal URLs, cities, user ids and
    site names HTML-escaped (``It&#039;s &lt;b&gt;``), and its API unescapes them."""
    for escaped, plain in _ESCAPED:
        expr = expr.str.replace_all(escaped, plain, literal=True)
    return expr


def _known(code: pl.Expr) -> pl.Expr:
    """The code, or null for device-detector's "unknown" (``UNK``)."""
    return pl.when(code.is_in(UNKNOWN_CODES)).then(None).otherwise(code)


def browser_name(code: pl.Expr) -> pl.Expr:
    """A name ``backfill.umami.vocabulary`` knows for a browser code (other codes as they are)."""
    code = _known(text(code))
    return code.replace_strict(BROWSER_NAMES, default=code, return_dtype=S)


def browser_expr(code: pl.Expr, os_code: pl.Expr) -> pl.Expr:
    """Umami's browser key from a device-detector browser code (and the OS code, for iOS)."""
    return normalize_browser(browser_name(code), os=os_name(os_code, pl.lit(None, S)))


def os_name(code: pl.Expr, version: pl.Expr) -> pl.Expr:
    """A name ``backfill.umami.vocabulary`` knows for an OS code; Windows with its version
    (``WIN`` + ``7`` is Windows 7; 10, 11 and none are Umami's Windows 10), Piwik 1.x's
    codes by :data:`LEGACY_OS` (``WXP``: Windows XP)."""
    code = _known(text(code))
    version = _known(text(version))
    windows = pl.concat_str(pl.lit("Windows "), version.fill_null("10"))
    known = code.replace_strict({**OS_NAMES, **LEGACY_OS}, default=code, return_dtype=S)
    return pl.when(code == "WIN").then(windows).otherwise(known)


def os_expr(code: pl.Expr, version: pl.Expr) -> pl.Expr:
    """Umami's OS name from a device-detector OS code and version."""
    return normalize_os(os_name(code, version))


def device_type(device: pl.Expr, icon: pl.Expr | None = None) -> pl.Expr:
    """Matomo's device type number from the number, the Live API's icon path or its English label."""
    raw = text(device)
    number = raw.cast(pl.Int64, strict=False)
    label = raw.str.to_lowercase().replace_strict(DEVICE_LABELS, default=None, return_dtype=pl.Int64)
    if icon is None:
        return pl.coalesce(number, label)
    named = text(icon).str.extract(DEVICE_ICON, 1).str.replace_all("_", " ")
    by_icon = named.replace_strict(DEVICE_LABELS, default=None, return_dtype=pl.Int64)
    return pl.coalesce(number, by_icon, label)


def device_expr(device: pl.Expr, icon: pl.Expr | None = None) -> pl.Expr:
    """Umami's device from Matomo's device type (number, icon path or English label)."""
    return normalize_device(device_type(device, icon).replace_strict(DEVICE_TYPES, default=None, return_dtype=S))


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


@functools.cache
def subdivision_codes() -> pl.Series:
    """Every ISO 3166-2 code (``DE-BE``), from pycountry."""
    return pl.Series("code", sorted(sub.code for sub in pycountry.subdivisions), dtype=S)


def region_code(country: pl.Expr, region: pl.Expr) -> pl.Expr:
    """Country and Matomo's region code joined (``DE`` + ``be`` -> ``DE-BE``), whatever the code is."""
    code = text(region).str.to_uppercase()
    return pl.when(country.is_not_null() & code.is_not_null()).then(pl.concat_str(country, pl.lit("-"), code))


def valid_region(joined: pl.Expr) -> pl.Expr:
    """The joined code when ISO 3166-2 has it, else null (see :func:`region_expr`)."""
    return pl.when(joined.is_in(subdivision_codes().implode())).then(joined)


def region_expr(country: pl.Expr, region: pl.Expr) -> pl.Expr:
    """ISO 3166-2 from the country and Matomo's region code within it: ``DE`` + ``BE`` -> ``DE-BE``.

    Only a code ISO 3166-2 has is kept: the legacy GeoIP's FIPS codes (``NL`` + ``11``)
    and anything else are left out (the readers count them in a note), rather than
    rejecting the row or sending a region Umami would show as nothing.
    """
    return valid_region(region_code(country, region))


def screen_expr(resolution: pl.Expr) -> pl.Expr:
    """``1920x1080``; Matomo's ``unknown`` -> null."""
    value = text(resolution)
    return pl.when(value.str.contains(r"^\d+x\d+$")).then(value)


#: A URL that starts with a host but no scheme (``example.com/page``): Matomo keeps one so
#: when it cannot tell the scheme (``log_action.url_prefix`` null).
_SCHEMELESS = r"^[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?)+(:\d+)?([/?#]|$)"


def absolute_url(url: pl.Expr) -> pl.Expr:
    """A page URL with its scheme: ``example.com/test-page`` -> ``http://example.com/test-page``
    (Matomo's default prefix; Umami keeps the host, path and query, not the scheme)."""
    return pl.when(url.str.contains(_SCHEMELESS)).then(pl.concat_str(pl.lit("http://"), url)).otherwise(url)


def hostname_expr(url: pl.Expr) -> pl.Expr:
    """The host of an absolute URL, lower case, as the page had it (``www.`` kept)."""
    return url.str.extract(r"^[A-Za-z][A-Za-z0-9+.\-]*://([^/?#:]+)", 1).str.to_lowercase()


#: What a visitor id is when Matomo does not know it (the Live API writes ``false``).
_NO_VISITOR = ("false", "0", "0000000000000000")


def visitor_hex(idvisitor: pl.Expr) -> pl.Expr:
    """idvisitor as lower-case hex digits; null when Matomo has none (``false``).

    idvisitor is BINARY(8): exported as hex (``HEX(idvisitor)``, or ``0x...`` from
    ``mysql --binary-as-hex``) it is used as it is; exported raw, its bytes are
    hex-encoded here, so the id stays the same visitor on every run either way.
    """
    raw = text(idvisitor)
    lower = raw.str.to_lowercase().str.strip_prefix("0x")
    hex_id = pl.when(lower.str.contains(r"^[0-9a-f]+$")).then(lower).otherwise(raw.str.encode("hex"))
    return pl.when(lower.is_in(_NO_VISITOR)).then(None).otherwise(hex_id)


def visitor_expr(user_id: pl.Expr, idvisitor: pl.Expr, visit: pl.Expr | None = None) -> pl.Expr:
    """user_id when the site set one, else idvisitor as hex, else (no visitor id at all) the
    visit itself (``visit-<idvisit>``): such visits are never merged into one visitor."""
    user = text(user_id)
    user = pl.when(user.is_in(["false"])).then(None).otherwise(user)
    own = [] if visit is None else [pl.concat_str(pl.lit("visit-"), text(visit))]
    return pl.coalesce(user, visitor_hex(idvisitor), *own)


def positive(expr: pl.Expr) -> pl.Expr:
    """A number > 0, else null (Matomo writes 0 for "no revenue")."""
    value = text(expr).cast(F64, strict=False)
    return pl.when(value > 0).then(value)


#: Event data strings longer than this fail in Umami's database (event_data.string_value).
DATA_TEXT_LIMIT = 500


def _json_member(name: str, value: pl.Expr) -> pl.Expr:
    """``"name":<value as JSON>`` (null when the value is null)."""
    encoded = pl.struct(value.alias(name)).struct.json_encode()
    return pl.when(value.is_not_null()).then(encoded.str.strip_prefix("{").str.strip_suffix("}"))


def item_lines(sku: pl.Expr, name: pl.Expr, category: pl.Expr, price: pl.Expr, quantity: pl.Expr) -> pl.Expr:
    """One ordered item as the members of a JSON object (``"sku":"A1","price":5.0,...``)."""
    members = [
        _json_member("sku", text(sku).str.slice(0, DATA_TEXT_LIMIT)),
        _json_member("name", text(name).str.slice(0, DATA_TEXT_LIMIT)),
        _json_member("category", text(category).str.slice(0, DATA_TEXT_LIMIT)),
        _json_member("price", text(price).cast(F64, strict=False)),
        _json_member("quantity", text(quantity).cast(F64, strict=False).cast(pl.Int64, strict=False)),
    ]
    return pl.concat_list(members).list.drop_nulls().list.join(",")


def items_object(lines: pl.Expr, count: pl.Expr) -> pl.Expr:
    """An order's items as one JSON object for ``data.*``, from a list of :func:`item_lines`:
    ``{"item_count":3,"item_1":{"sku":...},"item_2":{...}}`` (Umami stores ``item_1.sku``, ...)."""
    numbered = lines.list.eval(
        pl.concat_str(pl.lit('"item_'), (pl.int_range(pl.len()) + 1).cast(S), pl.lit('":{'), pl.element(), pl.lit("}"))
    )
    total = pl.concat_str(pl.lit('"item_count":'), count.cast(pl.Int64).cast(S))
    body = pl.concat_list(pl.coalesce(total, pl.lit(None, S)), numbered).list.drop_nulls().list.join(",")
    return pl.when(lines.list.len() > 0).then(pl.concat_str(pl.lit("{"), body, pl.lit("}")))


def finish(frame: pl.DataFrame, extra: Iterable[str] = ()) -> pl.DataFrame:
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
    "LEGACY_OS",
    "OS_NAMES",
    "URL_PREFIXES",
    "absolute_url",
    "browser_expr",
    "country_expr",
    "device_expr",
    "finish",
    "hostname_expr",
    "item_lines",
    "items_object",
    "language_expr",
    "os_expr",
    "positive",
    "region_code",
    "region_expr",
    "screen_expr",
    "text",
    "unsanitize",
    "valid_region",
    "visitor_expr",
    "visitor_hex",
]
