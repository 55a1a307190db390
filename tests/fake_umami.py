"""A fake Umami 3.1 collection server: real HTTP on 127.0.0.1, pitfalls included.

Why a fake and not a mock: the importer's failure modes are all on the wire
(keep-alive connections, resets, 429/503 from a proxy, a 500 that stored half
an event) and in what the receiver silently does with what it accepts (bots
dropped with a 200, sessions frozen by their first event, visits cut at the
clock hour, duplicates on resend). A mock transport can't show any of that, so
the end-to-end tests and the benchmark run the real CLI against this server.

Every behaviour here is taken from ``UMAMI_CONTRACT.md`` and the 44 cases
recorded on a live Umami 3.1 (``tests/data/umami_cases.json``, replayed by
``tests/test_fake_umami_contract.py``). Where the recordings say nothing, the
fake follows Umami's source (zod 4 schema, ``getClientInfo``, ``saveEvent``,
``saveEventData``, ``saveRevenue``) and PostgreSQL's column types.

Choices the recordings don't pin down (change them here if a live server disagrees):

- A revenue row needs ``revenue > 0`` and a currency of 1-10 characters, as the
  contract says (Umami's migration declares ``currency VARCHAR(100)``; a longer
  currency is stored without a revenue row here). Revenue on an event without
  a ``name`` is a 500 (the revenue table's ``event_name`` is NOT NULL).
- A NUL character in any stored text is a 500 (PostgreSQL refuses 0x00).
- With a valid ``x-umami-cache`` token the website lookup and the session insert
  are skipped (Umami 3.1), and a visit older than 30 min is renewed when the
  element has no timestamp.
- Without an ip header the socket peer (127.0.0.1) is the client ip, as behind
  Next.js: CDN location headers count only with a public ``cf-connecting-ip``.
- GeoIP is a table (:data:`DEFAULT_GEOIP`); other public ips get no location.
- Browser/OS/device detection covers the common desktop and mobile browsers
  only; pass ``browser``/``os``/``device`` in the payload for anything else.
- Read-back follows Umami 3's queries: ``/stats`` (getWebsiteStats),
  ``/pageviews`` and ``/events/series`` bucketed in the ``timezone`` parameter
  (labels as PostgreSQL writes them; a unit too fine for the range is replaced
  like ``getRequestDateRange`` does), ``/metrics`` counting distinct sessions for
  path and referrer (empty and self referrers left out) and for session columns,
  and events for ``type=event``. No revenue report.

Usage::

    with FakeUmami() as server:
        site = server.add_website()
        server.faults.rate_limit(times=2, retry_after=1)
        ...  # run the importer against server.url
        assert len(server.events(site)) == 100

Standalone (manual runs, benchmarks)::

    python -m tests.fake_umami --port 8765 --website <uuid> --latency-ms 300
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
import math
import random
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "FakeUmami",
    "FaultRule",
    "Faults",
]

DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "umami"  # Umami's own first-run credentials

#: Routes that collect data; status/hang faults apply to these unless told otherwise.
COLLECT_PATHS: tuple[str, ...] = ("/api/send", "/api/batch")

_UNDEFINED: Any = type("_Undefined", (), {"__repr__": lambda self: "undefined"})()

# --------------------------------------------------------------------------- error bodies

#: The 500 body of a real Umami carries several KB of stack trace. It is a
#: constant here so that a batch full of DB errors stays cheap to build, and
#: long so that a client that logs or stores whole bodies is caught doing it.
_STACK_FRAMES = (
    "    at Un.handleRequestError (/app/node_modules/@prisma/client/runtime/library.js:121:7339)",
    "    at Un.handleAndLogRequestError (/app/node_modules/@prisma/client/runtime/library.js:121:6663)",
    "    at Un.request (/app/node_modules/@prisma/client/runtime/library.js:121:6370)",
    "    at async l (/app/node_modules/@prisma/client/runtime/library.js:130:9617)",
    "    at async createSession (/app/.next/server/chunks/8841.js:1:40512)",
    "    at async saveEvent (/app/.next/server/chunks/8841.js:1:43127)",
    "    at async POST (/app/.next/server/app/api/send/route.js:1:9921)",
    "    at async POST (/app/.next/server/app/api/batch/route.js:1:1642)",
    "    at async AppRouteRouteModule.do (/app/node_modules/next/dist/compiled/next-server/"
    "app-route.runtime.prod.js:5:38696)",
    "    at async AppRouteRouteModule.handle (/app/node_modules/next/dist/compiled/next-server/"
    "app-route.runtime.prod.js:5:45978)",
    "    at async doRender (/app/node_modules/next/dist/server/base-server.js:1452:42)",
    "    at async responseGenerator (/app/node_modules/next/dist/server/base-server.js:1814:28)",
    "    at async NextNodeServer.renderToResponseWithComponentsImpl "
    "(/app/node_modules/next/dist/server/base-server.js:1824:28)",
    "    at async NextNodeServer.renderPageComponent (/app/node_modules/next/dist/server/base-server.js:2240:24)",
    "    at async NextNodeServer.renderToResponseImpl (/app/node_modules/next/dist/server/base-server.js:2278:32)",
)
STACK_TRACE: str = (
    "PrismaClientKnownRequestError: \nInvalid `prisma.$executeRaw()` invocation:\n\n\n"
    "Raw query failed. Code: `22001`. Message: `value too long for type character varying`\n"
    + "\n".join(_STACK_FRAMES * 4)
)


def _bad_request(tree: dict[str, Any]) -> dict[str, Any]:
    """Umami's ``badRequest(z.treeifyError(...))`` body."""
    return {"error": {"message": "Bad request", "code": "bad-request", "status": 400, **tree}}


_WEBSITE_NOT_FOUND = {"error": {"message": "Website not found.", "code": "bad-request", "status": 400}}
_FORBIDDEN = {"error": {"message": "Forbidden", "code": "forbidden", "status": 403}}
#: Where Umami Cloud's read API lives (``https://api.umami.is/v1``), in cloud mode.
CLOUD_API_PREFIX = "/v1"
#: Umami Cloud's answer to ``POST /api/batch`` (umami-software/umami issue 3488: 405, a Vercel page).
_CLOUD_405_PAGE = b"<!DOCTYPE html><html><head><title>405: Method Not Allowed</title></head><body></body></html>"
_UNAUTHORIZED = {"error": {"message": "Unauthorized", "code": "unauthorized", "status": 401}}
_NOT_FOUND = {"error": {"message": "Not found", "code": "not-found", "status": 404}}


class _DBError(Exception):
    """A PostgreSQL refusal, surfaced by Umami as HTTP 500 after any earlier writes."""

    def __init__(
        self,
        message: str,
        *,
        prisma_code: str = "P2000",
        pg_code: str = "22001",
        kind: str = "LengthMismatch",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.prisma_code = prisma_code
        self.pg_code = pg_code
        self.kind = kind


class _JSError(Exception):
    """A JavaScript-level failure inside Umami (bad Date, Prisma validation): also a 500."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def _too_long(limit: int, prisma_code: str) -> _DBError:
    return _DBError(f"value too long for type character varying({limit})", prisma_code=prisma_code)


def _check_text(value: str, limit: int, prisma_code: str) -> None:
    """Raise like PostgreSQL for a varchar(limit) column (length counts code points)."""
    if len(value) > limit:
        raise _too_long(limit, prisma_code)
    if "\x00" in value:
        raise _DBError(
            'invalid byte sequence for encoding "UTF8": 0x00',
            prisma_code=prisma_code,
            pg_code="22021",
            kind="InvalidInputValue",
        )


# --------------------------------------------------------------------------- JavaScript semantics

_JS_WS = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\Z")
_JS_RADIX = re.compile(r"0([xXoObB])([0-9a-fA-F]+)\Z")
_MAX_SAFE_INT = 2**53 - 1


def _js_typeof(value: Any) -> str:
    """The ``received ...`` word of zod 4 messages."""
    if value is _UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "NaN" if value != value else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _js_to_number(value: Any) -> float:
    """JavaScript ``Number(value)``, which is what ``z.coerce.number()`` runs."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        s = value.strip(_JS_WS)
        if not s:
            return 0.0
        if _JS_DECIMAL.match(s):
            return float(s)
        if s in ("Infinity", "+Infinity"):
            return math.inf
        if s == "-Infinity":
            return -math.inf
        m = _JS_RADIX.match(s)
        if m:
            base = {"x": 16, "o": 8, "b": 2}[m.group(1).lower()]
            try:
                return float(int(m.group(2), base))
            except ValueError:
                return math.nan
        return math.nan
    if isinstance(value, list):
        if not value:
            return 0.0
        if len(value) == 1 and not isinstance(value[0], (list, dict)):
            inner = value[0]
            return _js_to_number("" if inner is None else _js_string(inner))
        return math.nan
    return math.nan


def _js_string(value: Any) -> str:
    """JavaScript ``String(value)`` for JSON values."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _js_number_str(float(value) if isinstance(value, int) else value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if v is None else _js_string(v) for v in value)
    return "[object Object]"


def _js_number_str(x: float) -> str:
    """``Number.prototype.toString()``: shortest round-trip digits, ECMAScript layout."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    if x.is_integer() and abs(x) <= _MAX_SAFE_INT:
        return str(int(x))
    sign = "-" if x < 0 else ""
    tup = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, tup.digits)).lstrip("0")
    exp = int(tup.exponent)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + exp
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits[0] + ("." + digits[1:] if k > 1 else "")
        out = f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + out


def _js_json(value: Any) -> str:
    """``JSON.stringify(value)``: compact, with JavaScript's number formatting."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _js_number_str(_js_to_number(value))
    if isinstance(value, float):
        return "null" if not math.isfinite(value) else _js_number_str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_js_json(v) for v in value) + "]"
    items = (json.dumps(str(k), ensure_ascii=False) + ":" + _js_json(v) for k, v in value.items())
    return "{" + ",".join(items) + "}"


def _js_len(s: str) -> int:
    """``string.length`` (UTF-16 code units), which zod's ``.max()`` counts."""
    return len(s) if s.isascii() else len(s.encode("utf-16-le", "surrogatepass")) // 2


def _js_substring(s: str, n: int) -> str:
    """``s.substring(0, n)`` as JavaScript cuts it (a split surrogate pair becomes U+FFFD)."""
    if len(s) <= n // 2 or s.isascii():
        return s[:n]
    raw = s.encode("utf-16-le", "surrogatepass")
    if len(raw) <= 2 * n:
        return s
    cut = raw[: 2 * n].decode("utf-16-le", "surrogatepass")
    if cut and "\ud800" <= cut[-1] <= "\udbff":
        cut = cut[:-1] + "\ufffd"
    return cut


def _to_fixed4(x: float) -> str:
    """``Number.prototype.toFixed(4)``: exact value, ties away from zero."""
    if not math.isfinite(x) or abs(x) >= 1e21:
        return _js_number_str(x)
    if x == 0:
        return "0.0000"
    return str(Decimal(x).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


_DECIMAL_19_4_MAX = Decimal(10) ** 15


def _numeric_19_4(text: str) -> str:
    """PostgreSQL ``decimal(19,4)`` input: round half away from zero, overflow is an error."""
    try:
        d = Decimal(text)
    except InvalidOperation as exc:
        raise _DBError(
            f'invalid input syntax for type numeric: "{text}"',
            prisma_code="P2007",
            pg_code="22P02",
            kind="InvalidInputValue",
        ) from exc
    if not d.is_finite():
        raise _DBError("numeric field overflow", pg_code="22003", kind="ValueOutOfRange")
    q = d.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    if abs(q) >= _DECIMAL_19_4_MAX:
        raise _DBError("numeric field overflow", prisma_code="P2020", pg_code="22003", kind="ValueOutOfRange")
    return f"{q:.4f}"


_URI_RESERVED = frozenset(";/?:@&=+$,#")
_HEX = frozenset("0123456789abcdefABCDEF")


def _hex_byte(s: str, i: int) -> int | None:
    if i + 2 < len(s) and s[i + 1] in _HEX and s[i + 2] in _HEX:
        return int(s[i + 1 : i + 3], 16)
    return None


def _js_decode(s: str, keep_reserved: bool) -> str | None:
    """``decodeURI`` (keep_reserved) / ``decodeURIComponent``; None where they throw URIError."""
    if "%" not in s:
        return s
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        b = _hex_byte(s, i)
        if b is None:
            return None
        if b < 0x80:
            ch = chr(b)
            out.append(s[i : i + 3] if keep_reserved and ch in _URI_RESERVED else ch)
            i += 3
            continue
        if b & 0xE0 == 0xC0:
            more = 1
        elif b & 0xF0 == 0xE0:
            more = 2
        elif b & 0xF8 == 0xF0:
            more = 3
        else:
            return None
        seq = [b]
        j = i + 3
        for _ in range(more):
            b2 = _hex_byte(s, j) if j < n and s[j] == "%" else None
            if b2 is None or b2 & 0xC0 != 0x80:
                return None
            seq.append(b2)
            j += 3
        try:
            out.append(bytes(seq).decode("utf-8"))
        except UnicodeDecodeError:
            return None
        i = j
    return "".join(out)


def _safe_decode_uri(s: str | None) -> str | None:
    if s is None:
        return None
    out = _js_decode(s, keep_reserved=True)
    return s if out is None else out


def _safe_decode_uri_component(s: str | None) -> str | None:
    if s is None:
        return None
    out = _js_decode(s, keep_reserved=False)
    return s if out is None else out


# --------------------------------------------------------------------------- dates


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Proleptic Gregorian date of a day number (any year: 56134 happens, see the cases)."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d)


def _days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _iso_seconds(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the form the recorded cases use for created_at."""
    secs = ms // 1000
    days, rem = divmod(secs, 86400)
    y, mo, d = _civil_from_days(days)
    return f"{y:04d}-{mo:02d}-{d:02d}T{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}Z"


def _iso_millis(ms: int) -> str:
    """``Date.prototype.toISOString()``."""
    secs, milli = divmod(ms, 1000)
    days, rem = divmod(secs, 86400)
    y, mo, d = _civil_from_days(days)
    year = f"{y:04d}" if 0 <= y <= 9999 else f"{'+' if y > 0 else '-'}{abs(y):06d}"
    return f"{year}-{mo:02d}-{d:02d}T{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}.{milli:03d}Z"


#: Umami's DATETIME_REGEX: strings that look like this become event data of type date.
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{3})?"
    r"(Z|\+([0-9]{2}):([0-9]{2}))?\Z"
)

_JS_DATE_MAX_MS = 8_640_000_000_000_000
#: PostgreSQL timestamptz starts at 4713 BC.
_PG_MIN_MS = _days_from_civil(-4712, 1, 1) * 86_400_000


def _parse_js_date(s: str) -> int | None:
    """V8's reading of an ISO date-time (lenient on day-of-month); None for Invalid Date."""
    m = _DATETIME_RE.match(s)
    if not m:
        return None
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    frac = int(m.group(7)[1:]) if m.group(7) else 0
    if not (1 <= mo <= 12 and 1 <= d <= 31 and mi <= 59 and ss <= 59):
        return None
    if hh > 24 or (hh == 24 and (mi or ss or frac)):
        return None
    days = _days_from_civil(y, mo, 1) + d - 1
    ms = ((days * 24 + hh) * 60 + mi) * 60_000 + ss * 1000 + frac
    if m.group(9) is not None:
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            return None
        ms -= (oh * 60 + om) * 60_000
    return ms if abs(ms) <= _JS_DATE_MAX_MS else None


# --------------------------------------------------------------------------- URLs

_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_FORBIDDEN_HOST = frozenset(" #%/:<>?@[\\]^|\t\n\r\x00")
_SIMPLE_PATH_RE = re.compile(r"/(?!/)[A-Za-z0-9\-._~!$&()*+,;=:@/]*(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*)?\Z")
_C0_SPACE = "".join(chr(c) for c in range(0x21))


_ENCODE_SETS: dict[str, re.Pattern[str]] = {}


def _pct_encode(s: str, extra: str) -> str:
    """WHATWG percent-encoding: C0 controls, DEL, non-ASCII and ``extra`` characters."""
    rx = _ENCODE_SETS.get(extra)
    if rx is None:
        rx = _ENCODE_SETS[extra] = re.compile("[^\x20-\x7e]|[" + re.escape(extra) + "]")
    if not rx.search(s):
        return s
    return rx.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), s)


def _remove_dot_segments(path: str) -> str:
    if "." not in path:
        return path
    segs = path.split("/")
    out: list[str] = []
    for i, seg in enumerate(segs[1:], 1):
        low = seg.lower()
        last = i == len(segs) - 1
        if low in (".", "%2e"):
            if last:
                out.append("")
        elif low in ("..", ".%2e", "%2e.", "%2e%2e"):
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


class _URL(NamedTuple):
    """The parts of a WHATWG URL that Umami reads."""

    hostname: str
    pathname: str
    search: str  # without '?', already percent-encoded
    hash: str  # with '#', or ''


#: Parsed URLs by (value, base host). A plain dict of tuples of strings, not
#: ``lru_cache``: the garbage collector stops tracking those, so a big cache
#: doesn't slow every collection down.
_URL_CACHE: dict[tuple[str, str], _URL | None] = {}


def _parse_url(value: str, base_host: str) -> _URL | None:
    """``new URL(value, 'https://' + base_host)``; None where it would throw (cached)."""
    key = (value, base_host)
    try:
        return _URL_CACHE[key]
    except KeyError:
        pass
    if len(_URL_CACHE) >= 1 << 16:
        _URL_CACHE.clear()
    out = _URL_CACHE[key] = _parse_url_uncached(value, base_host)
    return out


def _parse_url_uncached(value: str, base_host: str) -> _URL | None:
    """A pragmatic subset of the WHATWG URL parser.

    Enough to accept what browsers accept for http(s) and relative URLs, and
    to refuse what the recorded cases refuse (``http://[::1``).
    """
    if _SIMPLE_PATH_RE.match(value) and "/." not in value:
        path, _, query = value.partition("?")
        return _URL(base_host, path, query, "")
    s = value.strip(_C0_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    m = _SCHEME_RE.match(s)
    scheme = m.group(1).lower() if m else None
    if scheme is None or scheme in _SPECIAL_SCHEMES:
        head_end = min((i for i in (s.find("?"), s.find("#")) if i >= 0), default=len(s))
        s = s[:head_end].replace("\\", "/") + s[head_end:]
    if scheme in _SPECIAL_SCHEMES:
        rest = s[len(scheme) + 1 :]
        if not rest.startswith("//"):
            s = f"https://{base_host}/{rest.lstrip('/')}" if scheme == "https" else f"{scheme}://{rest.lstrip('/')}"
    try:
        if scheme is None:
            s = urllib.parse.urljoin(f"https://{base_host}/", s)
            scheme = "https"
        parts = urllib.parse.urlsplit(s)
        if scheme in _SPECIAL_SCHEMES:
            bracketed = parts.netloc.rpartition("@")[2].startswith("[")
            host = parts.hostname or ""
            if not host or (not bracketed and not _FORBIDDEN_HOST.isdisjoint(host)):
                return None
            _ = parts.port  # raises ValueError on a bad port
            path = _remove_dot_segments(parts.path or "/")
        else:
            host = parts.hostname or ""
            path = parts.path
    except ValueError:
        return None
    pathname = _pct_encode(path, ' "<>`{}')
    search = _pct_encode(parts.query, " \"<>'" if scheme in _SPECIAL_SCHEMES else ' "<>')
    frag = _pct_encode(parts.fragment, ' "<>`')
    return _URL(host, pathname, search, f"#{frag}" if frag else "")


@functools.lru_cache(maxsize=4096)
def _host_ok(host: str) -> bool:
    """Can ``https://{host}`` be a base URL? A bad one makes Umami throw after the session."""
    return _parse_url(f"https://{host}/", "localhost") is not None


#: Cheap pre-check before parsing a query: could it hold a utm_* or click id?
_PARAM_HINT = re.compile(r"utm_|clid|clkid|li_fat_id|%")


def _query_param(search: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """``url.searchParams.get(name)`` for several names at once (first value wins).

    Returns the shared ``_NO_PARAMS`` (never to be mutated) when the query can't hold any.
    """
    if not search or not _PARAM_HINT.search(search):
        return _NO_PARAMS
    out: dict[str, str | None] = dict.fromkeys(names)
    for part in search.split("&"):
        key, _, value = part.partition("=")
        if "%" in key or "+" in key:
            key = urllib.parse.unquote_plus(key, errors="replace")
        if key in out and out[key] is None:
            if "%" in value or "+" in value:
                value = urllib.parse.unquote_plus(value, errors="replace")
            out[key] = value
    return out


_UTM_AND_CLICK_IDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "li_fat_id",
    "twclid",
)

# --------------------------------------------------------------------------- user agents


def _detect_browser(ua: str) -> str | None:
    """A small subset of ``detect-browser``'s rules, in its order of precedence."""
    if "EdgiOS/" in ua:
        return "edge-ios"
    if "Edg/" in ua or "EdgA/" in ua:
        return "edge-chromium"
    if "Edge/" in ua:
        return "edge"
    if "SamsungBrowser/" in ua:
        return "samsung"
    if "YaBrowser/" in ua:
        return "yandexbrowser"
    if "Opera Mini" in ua:
        return "opera-mini"
    if "OPR/" in ua or "Opera" in ua:
        return "opera"
    if "CriOS/" in ua:
        return "crios"
    if "FxiOS/" in ua:
        return "fxios"
    if "Firefox/" in ua:
        return "firefox"
    if "Chrome/" in ua:
        return "chromium-webview" if "; wv)" in ua else "chrome"
    if "Safari/" in ua and "Version/" in ua:
        return "ios" if ("iPhone" in ua or "iPad" in ua or "iPod" in ua) else "safari"
    if ("iPhone" in ua or "iPad" in ua) and "AppleWebKit" in ua:
        return "ios-webview"
    if "MSIE " in ua or "Trident/" in ua:
        return "ie"
    if ua.startswith("curl/"):
        return "curl"
    return None


_WINDOWS_NT = {
    "10.0": "Windows 10",
    "6.3": "Windows 8.1",
    "6.2": "Windows 8",
    "6.1": "Windows 7",
    "6.0": "Windows Vista",
    "5.2": "Windows Server 2003",
    "5.1": "Windows XP",
    "5.0": "Windows 2000",
}
_WINDOWS_NT_RE = re.compile(r"Windows NT (\d+\.\d+)")


def _detect_os(ua: str) -> str | None:
    """A subset of ``detect-browser``'s ``detectOS``."""
    if "Windows Phone" in ua or "IEMobile" in ua:
        return "Windows Mobile"
    m = _WINDOWS_NT_RE.search(ua)
    if m:
        return _WINDOWS_NT.get(m.group(1))
    if "iPhone" in ua or "iPad" in ua or "iPod" in ua:
        return "iOS"
    if "CrOS" in ua:
        return "Chrome OS"
    if "Android" in ua:
        return "Android OS"
    if "Silk/" in ua or "Kindle" in ua:
        return "Amazon OS"
    if "Mac OS X" in ua or "Macintosh" in ua:
        return "Mac OS"
    if "OpenBSD" in ua:
        return "Open BSD"
    if "SunOS" in ua:
        return "Sun OS"
    if "Linux" in ua or "X11" in ua:
        return "Linux"
    return None


def _detect_device_type(ua: str) -> str | None:
    """ua-parser's device type for the common cases; None means a desktop browser."""
    if "iPad" in ua or "Tablet" in ua or ("Android" in ua and "Mobile" not in ua):
        return "tablet"
    if "Mobi" in ua or "iPhone" in ua or "iPod" in ua:
        return "mobile"
    return None


# --------------------------------------------------------------------------- validation (zod)

_UUID_RE = re.compile(
    r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)\Z"
)
_COLLECTION_TYPES = ("event", "identify", "performance")
_TYPE_ENUM_MSG = 'Invalid option: expected one of "event"|"identify"|"performance"'

# (kind, limit) per payload field, in the schema's key order (issues come out in this order).
_PAYLOAD_SCHEMA: dict[str, tuple[str, float | None]] = {
    "website": ("uuid", None),
    "link": ("uuid", None),
    "pixel": ("uuid", None),
    "data": ("record", None),
    "hostname": ("string", 100),
    "language": ("string", 35),
    "referrer": ("url", None),
    "screen": ("string", 11),
    "title": ("string", None),
    "url": ("url", None),
    "name": ("string", 50),
    "tag": ("string", 50),
    "ip": ("string", None),
    "userAgent": ("string", None),
    "timestamp": ("timestamp", None),
    "id": ("string", None),
    "browser": ("string", None),
    "os": ("string", None),
    "device": ("string", None),
    "lcp": ("number", 60000),
    "inp": ("number", 60000),
    "cls": ("number", 100),
    "fcp": ("number", 60000),
    "ttfb": ("number", 60000),
}
_SCHEMA_ORDER = {k: i for i, k in enumerate(_PAYLOAD_SCHEMA)}


def _type_msg(expected: str, value: Any) -> str:
    return f"Invalid input: expected {expected}, received {_js_typeof(value)}"


def _check_field(kind: str, limit: float | None, value: Any) -> tuple[Any, str | None, bool]:
    """Validate one payload field: (parsed value, message or None, aborting?)."""
    if kind == "string":
        if not isinstance(value, str):
            return value, _type_msg("string", value), True
        if limit is not None and _js_len(value) > limit:
            return value, f"Too big: expected string to have <={int(limit)} characters", False
        return value, None, False
    if kind == "uuid":
        if not isinstance(value, str):
            return value, _type_msg("string", value), True
        if not _UUID_RE.match(value):
            return value, "Invalid UUID", False
        return value, None, False
    if kind == "url":
        if not isinstance(value, str):
            return value, _type_msg("string", value), True
        if _parse_url(value, "localhost") is None:
            return value, "Invalid URL.", False
        return value, None, False
    if kind == "record":
        if not isinstance(value, dict):
            return value, _type_msg("record", value), True
        return value, None, False
    if kind == "timestamp":
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_SAFE_INT:
            return value, None, False
        num = _js_to_number(value)
        if num != num:
            return value, "Invalid input: expected number, received NaN", True
        if math.isinf(num):
            return value, "Invalid input: expected number, received Infinity", True
        if not num.is_integer():
            return value, "Invalid input: expected int, received number", True
        if num > _MAX_SAFE_INT:
            return value, f"Too big: expected number to be <={_MAX_SAFE_INT}", False
        if num < -_MAX_SAFE_INT:
            return value, f"Too small: expected number to be >=-{_MAX_SAFE_INT}", False
        return int(num), None, False
    # number (web vitals)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value, _type_msg("number", value), True
    if value < 0:
        return value, "Too small: expected number to be >=0", False
    if limit is not None and value > limit:
        return value, f"Too big: expected number to be <={_js_number_str(float(limit))}", False
    return value, None, False


_valid_uuids: set[str] = set()


def _validate(body: Any) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """zod ``safeParse`` of a /api/send body: (type, payload) or the 400 response body."""
    if not isinstance(body, dict):
        return _bad_request({"errors": [_type_msg("object", body)]})
    props: dict[str, Any] = {}
    kind = body.get("type", _UNDEFINED)
    if kind not in _COLLECTION_TYPES or not isinstance(kind, str):
        props["type"] = {"errors": [_TYPE_ENUM_MSG]}
    payload = body.get("payload", _UNDEFINED)
    if not isinstance(payload, dict):
        props["payload"] = {"errors": [_type_msg("object", payload)]}
        return _bad_request({"errors": [], "properties": props})
    issues: dict[str, list[str]] | None = None
    aborted = False
    parsed: dict[str, Any] = {}
    for key, value in payload.items():
        spec = _PAYLOAD_SCHEMA.get(key)
        if spec is None:
            continue  # zod strips unknown keys
        check, limit = spec
        if value.__class__ is str:  # fast paths for the common, valid case
            if check == "string":
                if limit is None or (len(value) <= limit and (value.isascii() or _js_len(value) <= limit)):
                    parsed[key] = value
                    continue
            elif check == "uuid":
                if value in _valid_uuids or (_UUID_RE.match(value) and len(_valid_uuids) < 100_000):
                    _valid_uuids.add(value)
                    parsed[key] = value
                    continue
            elif check == "url" and _parse_url(value, "localhost") is not None:
                parsed[key] = value
                continue
        elif check == "timestamp" and value.__class__ is int and abs(value) <= _MAX_SAFE_INT:
            parsed[key] = value
            continue
        val, msg, abort = _check_field(check, limit, value)
        if msg is None:
            parsed[key] = val
        else:
            if issues is None:
                issues = {}
            issues.setdefault(key, []).append(msg)
            aborted = aborted or abort
    if not aborted:
        count = sum(1 for k in ("website", "link", "pixel") if payload.get(k))
        if count != 1:
            if issues is None:
                issues = {}
            issues.setdefault("website", []).append("Exactly one of website, link, or pixel must be provided")
    if issues:
        ordered = sorted(issues.items(), key=lambda kv: _SCHEMA_ORDER[kv[0]])
        props["payload"] = {
            "errors": [],
            "properties": {k: {"errors": v} for k, v in ordered},
        }
    if props:
        return _bad_request({"errors": [], "properties": props})
    return kind, parsed


# --------------------------------------------------------------------------- event data


def _flatten(data: dict[str, Any], parent: str = "") -> Iterator[tuple[str, Any, int]]:
    """Umami's ``flattenJSON`` + ``createKeyValue``: (key, value, data_type)."""
    for key, value in data.items():
        full = f"{parent}.{key}" if parent else key
        if isinstance(value, dict) and value:
            yield from _flatten(value, full)
        elif isinstance(value, dict):
            continue  # an empty object flattens to nothing
        elif isinstance(value, bool):
            yield full, "true" if value else "false", 3
        elif isinstance(value, (int, float)):
            yield full, value, 2
        elif isinstance(value, str):
            yield full, value, 4 if _DATETIME_RE.match(value) else 1
        else:  # arrays and null (typeof null === 'object')
            yield full, _js_json(value), 5


def _with_raw(rows: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows with what Umami on ClickHouse sends instead of PostgreSQL's values: the number
    as JavaScript writes it in JSON (``_number``) and the date's milliseconds (``_date_ms``)."""
    out = []
    for row, (_, value, dtype) in zip(rows, _flatten(data), strict=True):
        date_ms = _parse_js_date(value) if dtype == 4 else None
        out.append({**row, "_number": value if dtype == 2 else None, "_date_ms": date_ms})
    return out


class _RawNumber(float):
    """A number written into JSON as JavaScript's ``JSON.stringify`` writes it."""

    def __new__(cls, value: Any) -> _RawNumber:
        made = super().__new__(cls, _js_to_number(value))
        made.text = _js_number_str(_js_to_number(value))
        return made


def _json_with_raw_numbers(message: dict[str, Any]) -> str:
    parts = []
    for key, value in message.items():
        text = value.text if isinstance(value, _RawNumber) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{json.dumps(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def _utc_string(ms: int) -> str:
    """``getUTCString``: ``yyyy-MM-dd HH:mm:ss`` in UTC."""
    return _iso_seconds(ms).replace("T", " ").rstrip("Z")


_CLICKHOUSE_COLUMNS = {
    "website_event": {
        "website_id",
        "session_id",
        "visit_id",
        "event_id",
        "country",
        "region",
        "city",
        "url_path",
        "url_query",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "referrer_path",
        "referrer_query",
        "referrer_domain",
        "page_title",
        "gclid",
        "fbclid",
        "msclkid",
        "ttclid",
        "li_fat_id",
        "twclid",
        "event_type",
        "event_name",
        "tag",
        "distinct_id",
        "browser",
        "os",
        "device",
        "screen",
        "language",
        "hostname",
    },
    "event_data": {"session_id", "event_id", "url_path", "event_name", "data_key", "data_type", "string_value"},
    "session_data": {"session_id", "data_key", "data_type", "string_value", "distinct_id"},
}


def _data_rows(data: dict[str, Any], varchar: bool = True) -> list[dict[str, Any]]:
    """Rows for event_data / session_data, or raise like the database would."""
    rows = []
    for key, value, dtype in _flatten(data):
        number_value = None
        date_ms = None
        if dtype == 2:
            string_value = _to_fixed4(_js_to_number(value))
        elif dtype == 4:
            date_ms = _parse_js_date(value)
            if date_ms is None:
                raise _JSError("RangeError", "Invalid time value")
            string_value = _iso_millis(date_ms)
        else:
            string_value = value
        rows.append(
            {
                "data_key": key,
                "string_value": string_value,
                "number_value": number_value,
                "date_value": None if date_ms is None else _iso_millis(date_ms),
                "data_type": dtype,
                "_num": value if dtype == 2 else None,
            }
        )
    # createMany is one statement: any bad row refuses them all
    for row in rows:
        if varchar:  # PostgreSQL's varchar(500); ClickHouse's String keeps any length
            _check_text(row["data_key"], 500, "P2000")
            _check_text(row["string_value"], 500, "P2000")
        num = row.pop("_num")
        if num is not None:
            row["number_value"] = _numeric_19_4(_js_number_str(_js_to_number(num)))
    return rows


# --------------------------------------------------------------------------- faults


_WWW_ANY = re.compile(r"^www.")  # Umami's SQL regexp: the dot is any character


@dataclass
class FaultRule:
    """One scripted misbehaviour, fired on requests that match it.

    ``action`` is ``"status"`` (answer ``status`` with a proxy-like body and an
    optional ``Retry-After``), ``"reset"`` (process the first ``k`` batch
    elements, then drop the TCP connection with a RST and no answer) or
    ``"hang"`` (never answer; drop the connection after ``seconds`` or at
    server stop; with ``process=True`` the batch is stored first, the classic
    "timed out but it did land" case).

    A rule sees only requests whose path is in ``paths`` and for which
    ``match(info)`` is true; it lets the first ``skip`` of those through, then
    fires ``times`` times (None: forever) and retires.
    """

    action: str
    status: int = 503
    retry_after: float | None = None
    k: int = 0
    seconds: float | None = None
    process: bool = False
    times: int | None = 1
    skip: int = 0
    paths: tuple[str, ...] = ("/api/batch",)
    match: Callable[[dict[str, Any]], bool] | None = None
    fired: int = 0


class Faults:
    """Fault injection for one server, changeable from any thread while it runs.

    Knobs: ``latency_ms`` (added to every request), ``max_body_bytes`` (HTTP
    413 above it, like nginx's ``client_max_body_size``), ``max_batch_elements``
    (HTTP 400 above it, like Umami releases after 3.1; None = no cap, as in
    3.1), and a list of :class:`FaultRule` added through the helpers below.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.latency_ms: float = 0.0
        #: Paths the latency applies to; None means every request.
        self.latency_paths: tuple[str, ...] | None = None
        self.max_body_bytes: int | None = None
        self.max_batch_elements: int | None = None

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def status(
        self,
        status: int,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        skip: int = 0,
        paths: tuple[str, ...] = COLLECT_PATHS,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> FaultRule:
        """Answer ``status`` instead of processing (nothing is stored)."""
        return self.add(
            FaultRule(
                "status",
                status=status,
                retry_after=retry_after,
                times=times,
                skip=skip,
                paths=paths,
                match=match,
            )
        )

    def rate_limit(self, *, times: int | None = 1, retry_after: float = 1, **kw: Any) -> FaultRule:
        """HTTP 429 with ``Retry-After`` for the next ``times`` collection requests."""
        return self.status(429, times=times, retry_after=retry_after, **kw)

    def unavailable(self, *, times: int | None = 1, **kw: Any) -> FaultRule:
        """HTTP 503 (a proxy with no upstream) for the next ``times`` collection requests."""
        return self.status(503, times=times, **kw)

    def reset_after(self, k: int, *, times: int | None = 1, skip: int = 0, **kw: Any) -> FaultRule:
        """Store the first ``k`` elements of the next batch, then reset the connection."""
        return self.add(FaultRule("reset", k=k, times=times, skip=skip, **kw))

    def hang(
        self,
        *,
        times: int | None = 1,
        seconds: float | None = None,
        process: bool = False,
        paths: tuple[str, ...] = COLLECT_PATHS,
        **kw: Any,
    ) -> FaultRule:
        """Accept the request and never answer (optionally after storing it)."""
        return self.add(FaultRule("hang", seconds=seconds, process=process, times=times, paths=paths, **kw))

    def clear(self) -> None:
        """Drop every rule and knob."""
        with self._lock:
            self._rules.clear()
            self.latency_ms = 0.0
            self.latency_paths = None
            self.max_body_bytes = None
            self.max_batch_elements = None

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def _take(self, info: dict[str, Any]) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if info["path"] not in rule.paths:
                    continue
                if rule.match is not None and not rule.match(info):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.fired += 1
                if rule.times is not None and rule.fired >= rule.times:
                    self._rules.remove(rule)
                return rule
        return None


# --------------------------------------------------------------------------- the store


_IP_HEADERS = (
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-forwarded-for",
    "do-connecting-ip",
    "fastly-client-ip",
    "x-nf-client-connection-ip",
    "x-real-ip",
    "x-cluster-client-ip",
    "x-forwarded",
    "forwarded",
    "x-appengine-user-ip",
)
_LOCAL_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_LOCATION_HEADERS = (
    ("cf-ipcountry", "cf-region-code", "cf-ipcity"),
    ("x-vercel-ip-country", "x-vercel-ip-country-region", "x-vercel-ip-city"),
    ("cloudfront-viewer-country", "cloudfront-viewer-country-region", "cloudfront-viewer-city"),
)
#: The fake can't do GeoIP; these stand in for the MaxMind database.
DEFAULT_GEOIP: dict[str, tuple[str | None, str | None, str | None]] = {
    "81.2.69.142": ("GB", "ENG", "East Finchley"),
}

Location = tuple[str | None, str | None, str | None]


@functools.lru_cache(maxsize=4096)
def _is_local(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip == "localhost"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in _LOCAL_NETS)


def _decode_header(value: str | None) -> str | None:
    """Umami's ``Buffer.from(s, 'latin1').toString('utf-8')`` on CDN headers."""
    if value is None:
        return None
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = bytes(ord(c) & 0xFF for c in value)
    return raw.decode("utf-8", "replace")


def _region_code(country: str | None, region: str | None) -> str | None:
    if not country or not region:
        return None
    return region if "-" in region else f"{country}-{region}"


@dataclass(slots=True)
class _RequestContext:
    """What every element of one request shares: its headers and their derivations."""

    headers: dict[str, str]
    header_ua: str | None
    header_ip: str | None
    header_location: Location | None
    cache_token: str | None
    #: The body holds a NUL character somewhere (JSON can only write it as \u0000).
    nul: bool = False


@dataclass(slots=True)
class _Stored:
    website_id: str | None
    session_id: str
    visit_id: str
    iat: int


class _Tables:
    """The rows a real Umami would hold, in memory."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.events_by_site: dict[str, list[dict[str, Any]]] = {}
        self.event_data: list[dict[str, Any]] = []
        self.revenue: list[dict[str, Any]] = []
        self.session_data: dict[tuple[str, str], dict[str, Any]] = {}
        #: Each event's own element's client values (what Umami on ClickHouse keeps on the event row).
        self.clients: dict[str, dict[str, Any]] = {}
        #: What Umami on ClickHouse would insert for each element, in order: (table, JSONEachRow line).
        self.clickhouse: list[tuple[str, str, str]] = []  # (website, table, line)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    ms = out.pop("created_at_ms", None)
    if ms is not None:
        out["created_at"] = _iso_seconds(ms)
    return out


# --------------------------------------------------------------------------- HTTP


class _Abort(Exception):
    """Unwind a handler that must drop its connection without answering."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer  # type: ignore[assignment]
    hold: FaultRule | None = None

    hdrs: dict[str, str]

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr
        pass

    def handle_one_request(self) -> None:
        """Parse one request without ``email.parser`` (the stdlib way costs ~100 us each)."""
        self.hold = None
        try:
            line = self.rfile.readline(65537)
            if not line:
                self.close_connection = True
                return
            self.raw_requestline = line
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                self.close_connection = True
                self.command, self.request_version = "GET", "HTTP/1.1"
                self.reply(400, b"Bad Request", "text/plain", close=True)
                return
            self.command, self.path, self.request_version = parts
            hdrs: dict[str, str] = {}
            count = 0
            while True:
                h = self.rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                count += 1
                if count > 200:
                    self.close_connection = True
                    return
                name, _, value = h.decode("latin-1").partition(":")
                hdrs[name.strip().lower()] = value.strip()
            self.hdrs = hdrs
            conn = hdrs.get("connection", "").lower()
            self.close_connection = conn == "close" or (self.request_version == "HTTP/1.0" and conn != "keep-alive")
            if hdrs.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.server.fake._handle(self, self.command)
        except _Abort:
            self.close_connection = True
        except (ConnectionError, TimeoutError, OSError, ValueError):
            self.close_connection = True

    def read_body(self) -> bytes:
        if "chunked" in self.hdrs.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.hdrs.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        if self.server.dead:
            self.reset()
        if self.hold is not None:  # a "hang after processing" fault: never answer
            self.server.stop_event.wait(self.hold.seconds)
            self.reset()
        reason = self.responses.get(status, ("",))[0]
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        if close:
            head.append("Connection: close")
            self.close_connection = True
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if self.command != "HEAD":
            data += body
        self.wfile.write(data)

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0) and no answer."""
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.wfile.close()
        with contextlib.suppress(OSError):
            sock.close()
        self.close_connection = True
        raise _Abort


class _HTTPServer(ThreadingHTTPServer):
    """One listening socket; ``FakeUmami.restart`` replaces it on the same port."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], fake: FakeUmami) -> None:
        self.fake = fake
        self.dead = False
        self.stop_event = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        if self.dead:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        if self.dead:
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_request(request)
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away is not our problem

    def kill(self) -> None:
        """Stop serving; every open connection ends with a reset, in-flight work is cut."""
        self.dead = True
        self.stop_event.set()
        self.shutdown()
        self.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)  # wakes a handler blocked on recv


# --------------------------------------------------------------------------- the server


_JWT_HEAD = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}


class FakeUmami:
    """A fake Umami 3.1 on 127.0.0.1: collection API, login, read-back, fault injection.

    Args:
        port: 0 for an ephemeral port.
        websites: ids to register at start (more with :meth:`add_website`).
        username, password: the account ``POST /api/auth/login`` accepts.
        api_key: accepted in ``x-umami-api-key`` (Umami Cloud style); None: off.
        disable_bot_check: like the DISABLE_BOT_CHECK server setting.
        bot_check: ``ua -> bool``; default ``backfill.umami.bots.is_bot`` (imported lazily).
        skip_location_headers: like SKIP_LOCATION_HEADERS (ignore CDN location headers).
        ignore_ips: like IGNORE_IP: these client ips get HTTP 403.
        geoip: ip -> (country, region, city) standing in for the GeoIP database.
        nested_error_meta: write the 500 body's driver error as nested
            ``meta.driverAdapterError.cause`` objects instead of the flat dotted key
            the recorded cases show, to check a client copes with both.
        store: "postgres" (default) or "clickhouse": how the read API answers (on
            ClickHouse the session list reads an hourly table: an event counts from the
            start of its hour, and a session is listed once per hourly row's hostnames).
        cloud: behave as Umami Cloud is documented and reported to: ``/api/batch`` answers
            405 (Vercel's page), the read API is served under ``/v1`` (``CLOUD_API_PREFIX``)
            for ``api_key`` only, ``cloud_calls`` calls per ``cloud_window`` seconds (429
            with ``Retry-After`` beyond; the docs say 50 per 15 s).
        latency_ms, max_body_bytes, max_batch_elements: initial :class:`Faults` knobs.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        websites: list[str] | tuple[str, ...] = (),
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        api_key: str | None = None,
        disable_bot_check: bool = False,
        bot_check: Callable[[str], bool] | None = None,
        skip_location_headers: bool = False,
        ignore_ips: list[str] | tuple[str, ...] = (),
        geoip: dict[str, Location] | None = None,
        nested_error_meta: bool = False,
        store: str = "postgres",
        cloud: bool = False,
        cloud_calls: int = 50,
        cloud_window: float = 15.0,
        latency_ms: float = 0.0,
        max_body_bytes: int | None = None,
        max_batch_elements: int | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        #: "clickhouse": the read API answers as Umami on ClickHouse does (reports read the hourly
        #: table: times at the hour's start, labels as UTC instants; each event's own client values;
        #: the referrer list leaves out the stored hostname as it is).
        self.store = store
        self.port = port
        self.username = username
        self.password = password
        self.api_key = api_key
        self.disable_bot_check = disable_bot_check
        self.skip_location_headers = skip_location_headers
        self.ignore_ips = frozenset(ignore_ips)
        self.geoip = dict(DEFAULT_GEOIP if geoip is None else geoip)
        self.nested_error_meta = nested_error_meta
        self.cloud = cloud
        self.cloud_calls = cloud_calls
        self.cloud_window = cloud_window
        self._cloud_calls: list[float] = []
        self.faults = Faults()
        self.faults.latency_ms = latency_ms
        self.faults.max_body_bytes = max_body_bytes
        self.faults.max_batch_elements = max_batch_elements
        #: One dict per request: method, path, headers, elements, status, fault, ...
        self.request_log: list[dict[str, Any]] = []
        #: Python exceptions the fake hit while handling requests (should stay empty).
        self.internal_errors: list[BaseException] = []
        self._bot_check = bot_check
        self._bot_cache: dict[str, bool] = {}
        self._ua_cache: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._lock = threading.RLock()
        self._websites: dict[str, dict[str, Any]] = {}
        self._tokens: set[str] = set()
        self._secret = secrets.token_bytes(32)
        self._session_key_cache: dict[str, str] = {}
        self._visit_cache: dict[tuple[str, int], str] = {}
        self._t = _Tables()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        for w in websites:
            self.add_website(w)

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeUmami:
        """Listen and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        if self._bot_check is None and not self.disable_bot_check:
            from backfill.umami.bots import is_bot  # imported here: it pulls in polars

            self._bot_check = is_bot
        self._serve(self.port)
        return self

    def stop(self) -> None:
        """Stop serving and drop every connection (hanging requests included)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def restart(self, downtime: float = 0.0) -> None:
        """Simulate a server restart: connections reset, same port, data kept.

        In-flight requests are cut where they stand (a batch keeps the prefix it
        had stored). For ``downtime`` seconds nothing listens (connection refused).
        """
        self.stop()
        if downtime > 0:
            time.sleep(downtime)
        self._serve(self.port)

    def __enter__(self) -> FakeUmami:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, port: int) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                httpd = _HTTPServer((self.host, port), self)
                break
            except OSError:
                if port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-umami-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ----------------------------------------------------------------- set-up and introspection

    def add_website(
        self, website_id: str | None = None, *, name: str = "Fake site", domain: str = "example.com"
    ) -> str:
        """Register a website and return its id (a fresh UUID by default)."""
        wid = (website_id or str(uuid.uuid4())).lower()
        with self._lock:
            self._websites[wid] = {
                "id": wid,
                "name": name,
                "domain": domain,
                "shareId": None,
                "resetAt": None,
                "userId": "41e2b680-648e-4b09-bcd7-3e2b10c06264",
                "teamId": None,
                "createdBy": "41e2b680-648e-4b09-bcd7-3e2b10c06264",
                "createdAt": _iso_millis(int(time.time() * 1000)),
                "updatedAt": None,
                "deletedAt": None,
            }
        return wid

    @property
    def websites(self) -> list[str]:
        with self._lock:
            return list(self._websites)

    def events(self, website: str | None = None) -> list[dict[str, Any]]:
        """website_event rows (copies), with ``created_at`` as ``YYYY-MM-DDTHH:MM:SSZ``."""
        with self._lock:
            by_site = self._t.events_by_site
            rows = self._t.events if website is None else by_site.get(website.lower(), [])
            return [_public(r) for r in rows]

    def sessions(self, website: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                _public(r) for r in self._t.sessions.values() if website is None or r["website_id"] == website.lower()
            ]

    def event_data(self, website: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [_public(r) for r in self._t.event_data if website is None or r["website_id"] == website.lower()]

    def revenue(self, website: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [_public(r) for r in self._t.revenue if website is None or r["website_id"] == website.lower()]

    def session_data(self, website: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                _public(r)
                for r in self._t.session_data.values()
                if website is None or r["website_id"] == website.lower()
            ]

    def event_count(self, website: str | None = None) -> int:
        """Cheap count for benchmarks (no copies)."""
        with self._lock:
            if website is None:
                return len(self._t.events)
            return len(self._t.events_by_site.get(website.lower(), []))

    def drop_events(self, website: str, where: Callable[[dict[str, Any]], bool]) -> int:
        """Delete the stored events (and their event data and revenue) for which ``where``
        is true, given the public row (``created_at`` as ``YYYY-MM-DDTHH:MM:SSZ``); returns
        how many. For tests that need a store that lost data."""
        wid = website.lower()
        with self._lock:
            t = self._t
            gone = {e["event_id"] for e in t.events_by_site.get(wid, []) if where(_public(e))}
            t.events = [e for e in t.events if e["event_id"] not in gone]
            t.events_by_site[wid] = [e for e in t.events_by_site.get(wid, []) if e["event_id"] not in gone]
            t.event_data = [r for r in t.event_data if r.get("website_event_id") not in gone]
            t.revenue = [r for r in t.revenue if r["event_id"] not in gone]
        return len(gone)

    def reset_store(self) -> None:
        """Forget every stored row and the request log; websites stay registered."""
        with self._lock:
            self._t = _Tables()
            self._session_key_cache.clear()
            self._visit_cache.clear()
            self.request_log.clear()
            self.internal_errors.clear()

    def stats(self, website: str, start_ms: int, end_ms: int) -> dict[str, int]:
        """What ``/api/websites/{id}/stats`` answers, computed as Umami's SQL does."""
        groups: dict[tuple[str, str], list[int]] = {}
        with self._lock:
            for e in self._t.events_by_site.get(website, ()):
                if e["event_type"] not in (1, 3, 4):
                    continue
                t = self._at(e)
                if t < start_ms or t > end_ms:
                    continue
                g = groups.get((e["session_id"], e["visit_id"]))
                if g is None:
                    groups[(e["session_id"], e["visit_id"])] = [1, t, t]
                else:
                    g[0] += 1
                    g[1] = min(g[1], t)
                    g[2] = max(g[2], t)
        return {
            "pageviews": sum(g[0] for g in groups.values()),
            "visitors": len({k[0] for k in groups}),
            "visits": len({k[1] for k in groups}),
            "bounces": sum(1 for g in groups.values() if g[0] == 1),
            "totaltime": sum((g[2] - g[1]) // 1000 for g in groups.values()),
        }

    # ----------------------------------------------------------------- ids and tokens

    def _uuid(self, *parts: str) -> str:
        """Umami's deterministic ``uuid(...parts)``: a v5-shaped hash of the parts and a secret."""
        h = hashlib.blake2b("".join(parts).encode(), digest_size=16, key=self._secret).hexdigest()
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _token(self, s: _Stored) -> str:
        """An opaque cache token (JWT-shaped) that carries the visit, signed per server."""
        claims = f"{s.website_id or ''}|{s.session_id}|{s.visit_id}|{s.iat}".encode()
        body = base64.urlsafe_b64encode(claims).rstrip(b"=")
        sig = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return f"{_JWT_HEAD}.{body.decode()}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"

    def _parse_token(self, token: str) -> dict[str, Any] | None:
        """The token's claims, or None if it is not one of this server's (Umami ignores those)."""
        try:
            _, body, sig = token.split(".")
            expected = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:16]
            if not hmac.compare_digest(base64.urlsafe_b64encode(expected).rstrip(b"=").decode(), sig):
                return None
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
            website_id, session_id, visit_id, iat = raw.split("|")
        except (ValueError, TypeError):
            return None
        return {
            "websiteId": website_id or None,
            "sessionId": session_id,
            "visitId": visit_id,
            "iat": int(iat),
        }

    # ----------------------------------------------------------------- request handling

    def _handle(self, h: _Handler, method: str) -> None:
        started = time.monotonic()
        path, _, query = h.path.partition("?")
        headers = h.hdrs
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "elements": None,
            "status": None,
            "fault": None,
            "bytes": 0,
            "time": time.time(),
            "duration": None,
        }
        with self._lock:
            self.request_log.append(entry)
        try:
            body = h.read_body()
            entry["bytes"] = len(body)
            self._route(h, method, path, query, headers, body, entry)
        except _Abort:
            raise
        except (ConnectionError, TimeoutError):
            raise _Abort from None
        except Exception as exc:
            self.internal_errors.append(exc)
            entry["status"] = 500
            h.reply(500, b'{"error":{"message":"fake server bug","code":"server-error","status":500}}')
        finally:
            entry["duration"] = time.monotonic() - started

    def _send_json(self, h: _Handler, entry: dict[str, Any], status: int, obj: Any, **kw: Any) -> None:
        entry["status"] = status
        h.reply(status, json.dumps(obj, separators=(",", ":")).encode(), **kw)

    def _route(
        self,
        h: _Handler,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        entry: dict[str, Any],
    ) -> None:
        faults = self.faults
        httpd = h.server
        if (
            faults.latency_ms > 0
            and (faults.latency_paths is None or path in faults.latency_paths)
            and httpd.stop_event.wait(faults.latency_ms / 1000)
        ):
            h.reset()
        limit = faults.max_body_bytes
        if limit is not None and len(body) > limit and method == "POST":
            entry["fault"] = "413"
            entry["status"] = 413
            entry["elements"] = _count_elements(path, body)
            h.reply(413, _nginx_page(413), "text/html", close=True)
            return
        rule = faults._take({"method": method, "path": path, "headers": headers, "body": body})
        reset_k: int | None = None
        if rule is not None:
            entry["fault"] = rule.action if rule.action != "status" else str(rule.status)
            if rule.action == "status":
                extra = {}
                if rule.retry_after is not None:
                    ra = rule.retry_after
                    extra["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
                entry["status"] = rule.status
                entry["elements"] = _count_elements(path, body)
                h.reply(rule.status, _nginx_page(rule.status), "text/html", extra)
                return
            if rule.action == "hang" and not rule.process:
                entry["elements"] = _count_elements(path, body)
                self._hang(h, rule)
            if rule.action == "hang":
                h.hold = rule
            if rule.action == "reset":
                reset_k = rule.k
        if self.cloud and path == "/api/batch":
            entry["status"] = 405
            h.reply(405, _CLOUD_405_PAGE, "text/html; charset=utf-8", {"X-Matched-Path": "/404", "Server": "Vercel"})
        elif self.cloud and path.startswith(CLOUD_API_PREFIX + "/websites"):
            if self._cloud_admits(h, headers, entry):  # Umami's routes, without "/api"
                self._route_websites(h, method, "/api" + path[len(CLOUD_API_PREFIX) :], query, headers, body, entry)
        elif path == "/api/heartbeat" and method in ("GET", "HEAD"):
            self._send_json(h, entry, 200, {"ok": True})
        elif path == "/api/send" and method == "POST":
            self._route_send(h, body, headers, entry, reset_k)
        elif path == "/api/batch" and method == "POST":
            self._route_batch(h, body, headers, entry, reset_k)
        elif path == "/api/auth/login" and method == "POST":
            self._route_login(h, body, entry)
        elif path.startswith("/api/websites"):
            self._route_websites(h, method, path, query, headers, body, entry)
        elif path in ("/api/send", "/api/batch", "/api/auth/login", "/api/heartbeat"):
            entry["status"] = 405
            h.reply(405, b"", "text/plain")
        else:
            entry["status"] = 404
            h.reply(404, b"Not Found", "text/plain")

    def _cloud_admits(self, h: _Handler, headers: dict[str, str], entry: dict[str, Any]) -> bool:
        """Umami Cloud's API (``https://api.umami.is/v1``) answers an ``x-umami-api-key`` only,
        each key ``cloud_calls`` times per ``cloud_window`` seconds; else 401 or 429 here."""
        key = headers.get("x-umami-api-key")
        if not (self.api_key and key == self.api_key):
            self._send_json(h, entry, 401, _UNAUTHORIZED)
            return False
        now = time.monotonic()
        with self._lock:
            recent = self._cloud_calls = [t for t in self._cloud_calls if t > now - self.cloud_window]
            limited = len(recent) >= self.cloud_calls
            if not limited:
                recent.append(now)
        if limited:
            wait = max(1, math.ceil(recent[0] + self.cloud_window - now))
            entry["status"] = 429
            h.reply(429, b'{"error":"Too many requests"}', extra={"Retry-After": str(wait)})
        return not limited

    def _hang(self, h: _Handler, rule: FaultRule) -> None:
        h.server.stop_event.wait(rule.seconds)
        h.reset()

    def _context(self, headers: dict[str, str], client_ip: str) -> _RequestContext:
        header_ip = None
        for name in _IP_HEADERS:
            v = headers.get(name)
            if v:
                header_ip = v
                if name == "x-forwarded-for":
                    header_ip = v.split(",")[0].strip()
                elif name == "forwarded":
                    m = re.search(r"for=(\[?[0-9a-fA-F:.]+\]?)", v)
                    header_ip = m.group(1) if m else v
                break
        if header_ip is None:
            header_ip = client_ip  # Next.js fills x-forwarded-for with the socket peer
        location: Location | None = None
        if not _is_local(header_ip):
            if not self.skip_location_headers:
                for c_name, r_name, city_name in _LOCATION_HEADERS:
                    if headers.get(c_name):
                        country = _decode_header(headers.get(c_name))
                        region = _decode_header(headers.get(r_name))
                        city = _decode_header(headers.get(city_name))
                        location = (country, _region_code(country, region), city)
                        break
            if location is None:
                location = self._geoip(header_ip)
        return _RequestContext(
            headers=headers,
            header_ua=headers.get("user-agent"),
            header_ip=header_ip,
            header_location=location,
            cache_token=headers.get("x-umami-cache"),
        )

    def _geoip(self, ip: str | None) -> Location | None:
        if not ip or _is_local(ip):
            return None
        hit = self.geoip.get(ip.strip("[]"))
        if hit is None:
            return None
        country, region, city = hit
        return (country, _region_code(country, region), city)

    def _is_bot(self, ua: str | None) -> bool:
        if not ua:
            return False
        hit = self._bot_cache.get(ua)
        if hit is None:
            check = self._bot_check
            if check is None:
                from backfill.umami.bots import is_bot

                check = self._bot_check = is_bot
            hit = self._bot_cache[ua] = bool(check(ua))
            if len(self._bot_cache) > 100_000:
                self._bot_cache.clear()
        return hit

    def _route_send(
        self,
        h: _Handler,
        raw: bytes,
        headers: dict[str, str],
        entry: dict[str, Any],
        reset_k: int | None,
    ) -> None:
        entry["elements"] = 1
        body = _loads(raw)
        ctx = self._context(headers, h.client_address[0])
        ctx.nul = b"\\u0000" in raw
        if reset_k is not None and reset_k < 1:
            h.reset()
        status, resp, stored = self._collect(body, ctx)
        if reset_k is not None:
            h.reset()
        if stored is not None:
            resp = {
                "cache": self._token(stored),
                "sessionId": stored.session_id,
                "visitId": stored.visit_id,
            }
        self._send_json(h, entry, status, resp)

    def _route_batch(
        self,
        h: _Handler,
        raw: bytes,
        headers: dict[str, str],
        entry: dict[str, Any],
        reset_k: int | None,
    ) -> None:
        body = _loads(raw)
        if not isinstance(body, list):
            self._send_json(h, entry, 400, _bad_request({"errors": [_type_msg("array", body)]}))
            return
        entry["elements"] = len(body)
        bad = [(i, el) for i, el in enumerate(body) if not isinstance(el, dict)]
        if bad:
            items: list[Any] = [None] * (bad[-1][0] + 1)
            for i, el in bad:
                items[i] = {"errors": [_type_msg("record", el)]}
            self._send_json(h, entry, 400, _bad_request({"errors": [], "items": items}))
            return
        cap = self.faults.max_batch_elements
        if cap is not None and len(body) > cap:
            msg = f"Too big: expected array to have <={cap} items"
            self._send_json(h, entry, 400, _bad_request({"errors": [msg]}))
            return
        ctx = self._context(headers, h.client_address[0])
        ctx.nul = b"\\u0000" in raw
        httpd = h.server
        details: list[dict[str, Any]] = []
        cache: Any = None
        for index, element in enumerate(body):
            if reset_k is not None and index >= reset_k:
                h.reset()
            if httpd.dead:
                h.reset()
            status, resp, stored = self._collect(element, ctx)
            if status != 200:
                details.append({"index": index, "response": resp})
            elif cache is None or cache is _UNDEFINED:
                cache = _UNDEFINED if stored is None else self._token(stored)
        if reset_k is not None:
            h.reset()
        out: dict[str, Any] = {
            "size": len(body),
            "processed": len(body) - len(details),
            "errors": len(details),
            "details": details,
        }
        if cache is not _UNDEFINED:
            out["cache"] = cache
        self._send_json(h, entry, 200, out)

    # ----------------------------------------------------------------- the /api/send logic

    def _server_error(self, exc: _DBError | _JSError) -> dict[str, Any]:
        if isinstance(exc, _JSError):
            obj: dict[str, Any] = {"name": exc.name, "message": exc.message, "stack": STACK_TRACE}
        else:
            cause = {"originalCode": exc.pg_code, "originalMessage": exc.message, "kind": exc.kind}
            obj = {"name": "PrismaClientKnownRequestError", "code": exc.prisma_code}
            if self.nested_error_meta:
                obj["meta"] = {"modelName": "Session", "driverAdapterError": {"cause": cause}}
            else:
                obj["meta.driverAdapterError.cause"] = cause
            obj["stack"] = STACK_TRACE
        return {
            "error": {
                "message": "Server error",
                "code": "server-error",
                "status": 500,
                "errorObject": obj,
            }
        }

    def _collect(self, body: Any, ctx: _RequestContext) -> tuple[int, dict[str, Any] | None, _Stored | None]:
        """One /api/send body: (status, error-or-beep body, what a success stored)."""
        checked = _validate(body)
        if isinstance(checked, dict):
            return 400, checked, None
        kind, p = checked
        try:
            with self._lock:
                return self._collect_valid(kind, p, ctx)
        except (_DBError, _JSError) as exc:
            return 500, self._server_error(exc), None
        except Exception as exc:  # a bug in the fake: answer like Umami would, keep a trace
            self.internal_errors.append(exc)
            return 500, self._server_error(_JSError(type(exc).__name__, str(exc))), None

    def _collect_valid(
        self, kind: str, p: dict[str, Any], ctx: _RequestContext
    ) -> tuple[int, dict[str, Any] | None, _Stored | None]:
        website_id = p.get("website")
        link_id = p.get("link")
        pixel_id = p.get("pixel")
        source_id = (website_id or pixel_id or link_id).lower()

        cache = None
        if website_id:
            if ctx.cache_token:
                cache = self._parse_token(ctx.cache_token)
            if not (cache and cache.get("websiteId")) and website_id.lower() not in self._websites:
                return 400, _WEBSITE_NOT_FOUND, None

        # client info
        ua = p.get("userAgent") or ctx.header_ua
        if p.get("ip"):
            ip = p["ip"]
            location = self._geoip(ip)
        else:
            ip = ctx.header_ip
            location = ctx.header_location
        screen = p.get("screen")
        if ua:
            parsed_ua = self._ua_cache.get(ua)
            if parsed_ua is None:
                parsed_ua = self._ua_cache[ua] = (
                    _detect_browser(ua),
                    _detect_os(ua),
                    _detect_device_type(ua),
                )
        else:
            parsed_ua = (None, None, None)
        browser = p["browser"] if "browser" in p else parsed_ua[0]
        os_name = p["os"] if "os" in p else parsed_ua[1]
        if "device" in p:
            device = p["device"]
        else:
            device = parsed_ua[2] or "desktop"
            if device == "desktop" and screen:
                width = _js_to_number(screen.split("x")[0])
                if width <= 1920:
                    device = "laptop"

        if not self.disable_bot_check and self._is_bot(ua):
            return 200, {"beep": "boop"}, None
        if ip and ip in self.ignore_ips:
            return 403, _FORBIDDEN, None

        timestamp = p.get("timestamp")
        now_ms = int(time.time() * 1000)
        created_ms = timestamp * 1000 if timestamp else now_ms
        if abs(created_ms) > _JS_DATE_MAX_MS:
            raise _JSError(
                "PrismaClientValidationError",
                "Invalid value for argument `createdAt`: Provided Date object is invalid.",
            )
        now = now_ms // 1000
        distinct_id = p.get("id")

        if distinct_id:
            key = source_id + distinct_id
        else:
            y, m, _ = _civil_from_days(created_ms // 86_400_000)
            key = f"{source_id}{ip or ''}{ua or ''}{y:04d}-{m:02d}"
        session_id = self._session_key_cache.get(key)
        if session_id is None:
            session_id = self._session_key_cache[key] = self._uuid(key)

        hour = created_ms // 3_600_000
        if cache and cache.get("visitId"):
            visit_id = str(cache["visitId"])
            iat = int(cache.get("iat") or now)
        else:
            visit_id = self._visit_id(session_id, hour)
            iat = now
        if not timestamp and now - iat > 1800:
            visit_id = self._visit_id(session_id, hour)
            iat = now

        t = self._t
        if not (cache and cache.get("sessionId")):
            country, region, city = location or (None, None, None)
            language = p.get("language")
            values = (
                browser,
                os_name,
                device,
                screen,
                language,
                country,
                region,
                city,
                distinct_id,
            )
            for v, (_col, limit) in zip(values, _SESSION_LIMITS, strict=True):
                if v is not None and (len(v) > limit or "\x00" in v) and self.store != "clickhouse":
                    _check_text(v, limit, "P2010")  # session columns; on ClickHouse, Strings
            if created_ms < _PG_MIN_MS:
                raise _DBError(
                    "timestamp out of range",
                    prisma_code="P2010",
                    pg_code="22008",
                    kind="ValueOutOfRange",
                )
            if session_id not in t.sessions:
                t.sessions[session_id] = {
                    "session_id": session_id,
                    "website_id": source_id,
                    "browser": browser,
                    "os": os_name,
                    "device": device,
                    "screen": screen,
                    "language": language,
                    "country": country,
                    "region": region,
                    "city": city,
                    "distinct_id": distinct_id,
                    "created_at_ms": created_ms,
                }

        stored = _Stored(website_id.lower() if website_id else None, session_id, visit_id, iat)
        data = p.get("data")
        if kind == "identify":
            if data is not None:
                rows = _data_rows(data, varchar=self.store != "clickhouse")
                for r in rows:
                    r.update(
                        website_id=source_id,
                        session_id=session_id,
                        distinct_id=distinct_id,
                        created_at_ms=created_ms,
                    )
                    t.session_data[(session_id, r["data_key"])] = r
                self._record_clickhouse(
                    "session_data", source_id, _with_raw(rows, data), session_id=session_id, distinct_id=distinct_id
                )
            return 200, None, stored

        hostname = p.get("hostname")
        base_host = hostname or "localhost"
        if hostname and not _host_ok(hostname):
            raise _JSError("TypeError", "Invalid URL")  # new URL(url, 'https://' + hostname)
        url = p.get("url")
        cur = _parse_url("undefined" if url is None else url, base_host)
        if cur is None:  # the schema checked against localhost; a hostname can still break it
            raise _JSError("TypeError", "Invalid URL")
        url_path = "" if cur.pathname == "/undefined" else cur.pathname + cur.hash
        if kind == "performance":
            event = self._event_row(source_id, session_id, visit_id, created_ms, 5, None, distinct_id)
            event.update(
                url_path=_js_substring(cur.pathname if cur.pathname != "/undefined" else "", 500),
                page_title=_opt_cut(_safe_decode_uri_component(p.get("title")), 500),
                hostname=hostname or cur.hostname.removeprefix("www."),
                **{k: p.get(k) for k in ("lcp", "inp", "cls", "fcp", "ttfb")},
            )
            _check_text(event["hostname"], 100, "P2000")
            self._insert_event(event)
            return 200, None, stored

        params = _query_param(cur.search, _UTM_AND_CLICK_IDS)
        referrer = p.get("referrer")
        ref_domain = ref_path = ref_query = None
        if referrer:
            ref = _parse_url(referrer, base_host)
            if ref is None:
                raise _JSError("TypeError", "Invalid URL")
            ref_path = ref.pathname
            ref_query = ref.search
            ref_domain = ref.hostname.removeprefix("www.")

        name = p.get("name") or None
        title = p.get("title")
        event = {
            "event_id": _new_id(),
            "website_id": source_id,
            "session_id": session_id,
            "visit_id": visit_id,
            "created_at_ms": created_ms,
            "event_type": 3 if link_id else 4 if pixel_id else 2 if name else 1,
            "event_name": name,
            "distinct_id": distinct_id,
            "url_path": _js_substring(_safe_decode_uri(url_path) or "", 500),
            "url_query": _js_substring(cur.search, 500),
            "hostname": hostname or cur.hostname.removeprefix("www."),
            "page_title": None if title is None else _js_substring(_safe_decode_uri_component(title) or "", 500),
            "referrer_domain": _opt_cut(ref_domain, 500),
            "referrer_path": _opt_cut(_safe_decode_uri(ref_path), 500),
            "referrer_query": _opt_cut(ref_query, 500),
            "tag": p.get("tag"),
            **params,
        }
        if (params is not _NO_PARAMS or len(event["hostname"]) > 100 or ctx.nul) and self.store != "clickhouse":
            for col, limit in _EVENT_LIMITS:
                v = event[col]
                if v is not None and (len(v) > limit or "\x00" in v):
                    _check_text(v, limit, "P2000")
        self._insert_event(event)
        client = {"browser": browser, "os": os_name, "device": device, "screen": screen, "language": p.get("language")}
        country, region, city = location or (None, None, None)
        client.update(country=country, region=region if country and region else None, city=city)
        t.clients[event["event_id"]] = client
        self._record_clickhouse("website_event", source_id, [{**event, **client}])

        if data is not None:
            rows = _data_rows(data, varchar=self.store != "clickhouse")
            for r in rows:
                r.update(
                    website_id=source_id,
                    website_event_id=event["event_id"],
                    session_id=session_id,
                    created_at_ms=created_ms,
                )
            t.event_data.extend(rows)
            owner = {"event_id": event["event_id"], "url_path": event["url_path"], "event_name": name}
            self._record_clickhouse("event_data", source_id, _with_raw(rows, data), **owner)
            revenue = data.get("revenue")
            currency = data.get("currency")
            if isinstance(revenue, (int, float, str)) and not isinstance(revenue, bool):
                amount = _js_to_number(revenue)
                if amount > 0 and isinstance(currency, str) and 0 < len(currency) <= 10:
                    if not name:
                        raise _JSError(
                            "PrismaClientValidationError",
                            "Invalid `prisma.revenue.create()` invocation: Argument `eventName` is missing.",
                        )
                    text = revenue.strip(_JS_WS) if isinstance(revenue, str) else _js_number_str(_js_to_number(revenue))
                    t.revenue.append(
                        {
                            "revenue_id": _new_id(),
                            "website_id": source_id,
                            "session_id": session_id,
                            "event_id": event["event_id"],
                            "event_name": name,
                            "currency": currency,
                            "revenue": _numeric_19_4(text),
                            "created_at_ms": created_ms,
                        }
                    )
        return 200, None, stored

    def _visit_id(self, session_id: str, hour: int) -> str:
        vid = self._visit_cache.get((session_id, hour))
        if vid is None:
            vid = self._visit_cache[(session_id, hour)] = self._uuid(session_id, f"h{hour}")
        return vid

    @staticmethod
    def _event_row(
        website_id: str,
        session_id: str,
        visit_id: str,
        created_ms: int,
        event_type: int,
        name: str | None,
        distinct_id: str | None,
    ) -> dict[str, Any]:
        return {
            "event_id": _new_id(),
            "website_id": website_id,
            "session_id": session_id,
            "visit_id": visit_id,
            "created_at_ms": created_ms,
            "event_type": event_type,
            "event_name": name,
            "distinct_id": distinct_id,
            "url_path": "",
            "url_query": None,
            "hostname": None,
            "page_title": None,
            "referrer_domain": None,
            "referrer_path": None,
            "referrer_query": None,
            "tag": None,
        }

    def _insert_event(self, event: dict[str, Any]) -> None:
        self._t.events.append(event)
        self._t.events_by_site.setdefault(event["website_id"], []).append(event)

    def _at(self, e: dict[str, Any]) -> int:
        """The time the reports see: the event's, or on ClickHouse its hour's start (the hourly table)."""
        t = e["created_at_ms"]
        return t - t % 3_600_000 if self.store == "clickhouse" else t

    def _record_clickhouse(self, table: str, website: str, rows: list[dict[str, Any]], **common: Any) -> None:
        """The ``JSONEachRow`` lines Umami 3.1 on ClickHouse inserts for these rows
        (``saveEvent``/``saveEventData``/``saveSessionData``, ClickHouse branch)."""
        for row in rows:
            row = {**row, **common}
            message = {k: v for k, v in row.items() if k in _CLICKHOUSE_COLUMNS[table]}
            message["website_id"] = website
            message["created_at"] = _utc_string(row["created_at_ms"])
            if table != "website_event":
                message["number_value"] = _RawNumber(row["_number"]) if row.get("_number") is not None else None
                message["date_value"] = _utc_string(row["_date_ms"]) if row.get("_date_ms") is not None else None
            self._t.clickhouse.append((website, table, _json_with_raw_numbers(message)))

    def clickhouse_inserts(self, website: str) -> dict[str, list[str]]:
        """Per table, the lines Umami on ClickHouse would have inserted for this website, in order."""
        out: dict[str, list[str]] = {"website_event": [], "event_data": [], "session_data": []}
        with self._lock:
            for site, table, line in self._t.clickhouse:
                if site == website.lower():
                    out[table].append(line)
        return out

    # ----------------------------------------------------------------- auth and read-back

    def _route_login(self, h: _Handler, raw: bytes, entry: dict[str, Any]) -> None:
        body = _loads(raw)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("username", "password")):
            props = {
                k: {
                    "errors": [
                        _type_msg(
                            "string",
                            body.get(k, _UNDEFINED) if isinstance(body, dict) else _UNDEFINED,
                        )
                    ]
                }
                for k in ("username", "password")
                if not (isinstance(body, dict) and isinstance(body.get(k), str))
            }
            self._send_json(h, entry, 400, _bad_request({"errors": [], "properties": props}))
            return
        if body["username"] != self.username or body["password"] != self.password:
            self._send_json(
                h,
                entry,
                401,
                {
                    "error": {
                        "message": "message.incorrect-username-password",
                        "code": "unauthorized",
                        "status": 401,
                    }
                },
            )
            return
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens.add(token)
        user = {
            "id": "41e2b680-648e-4b09-bcd7-3e2b10c06264",
            "username": self.username,
            "role": "admin",
            "isAdmin": True,
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
        self._send_json(h, entry, 200, {"token": token, "user": user})

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip() in self._tokens:
            return True
        key = headers.get("x-umami-api-key")
        return bool(self.api_key) and key == self.api_key

    def _route_websites(
        self,
        h: _Handler,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        raw: bytes,
        entry: dict[str, Any],
    ) -> None:
        if not self._authorized(headers):
            self._send_json(h, entry, 401, _UNAUTHORIZED)
            return
        parts = [p for p in path.split("/") if p][2:]  # after "api", "websites"
        if not parts:
            if method == "POST":
                body = _loads(raw)
                if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                    self._send_json(
                        h,
                        entry,
                        400,
                        _bad_request(
                            {
                                "errors": [],
                                "properties": {
                                    "name": {"errors": ["Invalid input: expected string, received undefined"]}
                                },
                            }
                        ),
                    )
                    return
                wid = self.add_website(
                    body.get("id") if isinstance(body.get("id"), str) else None,
                    name=body["name"],
                    domain=str(body.get("domain") or ""),
                )
                self._send_json(h, entry, 200, self._websites[wid])
                return
            with self._lock:
                data = list(self._websites.values())
            self._send_json(h, entry, 200, {"data": data, "count": len(data), "page": 1, "pageSize": len(data)})
            return
        wid = parts[0]
        if not _UUID_RE.match(wid):
            self._send_json(
                h,
                entry,
                400,
                _bad_request({"errors": [], "properties": {"websiteId": {"errors": ["Invalid UUID"]}}}),
            )
            return
        wid = wid.lower()
        with self._lock:
            site = self._websites.get(wid)
        if site is None:
            self._send_json(h, entry, 404, _NOT_FOUND)
            return
        sub = parts[1] if len(parts) > 1 else None
        if sub is None and method == "GET":
            self._send_json(h, entry, 200, site)
            return
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if sub == "sessions" and len(parts) > 2 and method == "GET":
            self._route_session_reads(h, wid, parts[2:], q, entry)
            return
        if sub == "events" and parts[2:] == ["series"]:
            sub = "events/series"
        elif len(parts) > 2:
            sub = None
        if sub == "sessions" and method == "GET":
            self._route_session_reads(h, wid, [], q, entry)
            return
        if method != "GET" or sub not in ("stats", "metrics", "pageviews", "events/series"):
            entry["status"] = 404
            h.reply(404, b"Not Found", "text/plain")
            return
        rng = _date_range(q)
        if isinstance(rng, dict):
            self._send_json(h, entry, 400, rng)
            return
        start, end = rng
        if sub == "stats":
            cur = self.stats(wid, start, end)
            span = end - start
            cur["comparison"] = self.stats(wid, start - span - 1, start - 1)  # type: ignore[assignment]
            self._send_json(h, entry, 200, cur)
        elif sub == "metrics":
            self._send_json(h, entry, 200, self._metrics(wid, start, end, q))
        elif sub == "events/series":
            self._send_json(h, entry, 200, self._event_series(wid, start, end, q))
        else:
            self._send_json(h, entry, 200, self._pageviews(wid, start, end, q.get("unit", "day"), q.get("timezone")))

    def _route_session_reads(
        self, h: _Handler, wid: str, rest: list[str], q: dict[str, str], entry: dict[str, Any]
    ) -> None:
        """Umami 3's session reads, as the Sessions page uses them:

        - ``sessions?startAt&endAt&search&page&pageSize``: sessions with events in the
          range whose distinct id (or city, browser, os, device) contains ``search``
          (case-insensitive), newest first, paged as ``{data, count, page, pageSize}``
          (no distinct id in the rows);
        - ``sessions/{id}``: one session, with ``distinctId``;
        - ``sessions/{id}/activity?startAt&endAt``: its events in the range, newest
          first, at most 500 (``createdAt``, ``urlPath``, ``eventType``, ``eventName``...).
        """
        if len(rest) == 1:
            with self._lock:
                s = self._t.sessions.get(rest[0])
            if s is None or s["website_id"] != wid:
                self._send_json(h, entry, 404, _NOT_FOUND)
                return
            body = {k: s[k] for k in ("browser", "os", "device", "screen", "language", "country", "region", "city")}
            body.update(id=s["session_id"], websiteId=wid, distinctId=s["distinct_id"])
            self._send_json(h, entry, 200, body)
            return
        rng = _date_range(q)
        if isinstance(rng, dict):
            self._send_json(h, entry, 400, rng)
            return
        start, end = rng
        if len(rest) == 2 and rest[1] == "activity":
            with self._lock:
                rows = [
                    e
                    for e in self._t.events_by_site.get(wid, ())
                    if e["session_id"] == rest[0] and start <= e["created_at_ms"] <= end
                ]
            rows.sort(key=lambda e: -e["created_at_ms"])
            data = [
                {
                    "createdAt": _iso_ms(e["created_at_ms"]),
                    "urlPath": e["url_path"],
                    "urlQuery": e["url_query"],
                    "referrerDomain": e["referrer_domain"],
                    "eventId": e["event_id"],
                    "eventType": e["event_type"],
                    "eventName": e["event_name"],
                    "visitId": e["visit_id"],
                }
                for e in rows[:500]
            ]
            self._send_json(h, entry, 200, data)
            return
        if rest:
            entry["status"] = 404
            h.reply(404, b"Not Found", "text/plain")
            return
        self._send_json(h, entry, 200, self._session_list(wid, start, end, q))

    def _session_list(self, wid: str, start: int, end: int, q: dict[str, str]) -> dict[str, Any]:
        """``getWebsiteSessions`` of Umami 3.1 (PostgreSQL): one row per session AND hostname
        of its events in the range, filtered by ``search`` (``ilike '%search%'`` on distinct
        id, city, browser, os, device: ``%`` and ``_`` are wildcards) and the ``distinctId``
        filter (``eq.a,b`` is any of a, b; ``neq.``, ``c.``), ordered by the last event
        time, newest first, paged by ``limit/offset`` with ``count`` over all rows.

        Rows with the same last time come in no fixed order (PostgreSQL's sort, and its
        top-N sort for a limit, is not stable): each request breaks such ties at random,
        so consecutive pages may repeat or skip a session, as they do on a real server.

        On ClickHouse (``store``) the list reads Umami's hourly table, whose rows carry the start
        of their hour: an event counts from the start of its hour.
        """
        search = q.get("search", "")
        like = _ilike(f"%{search}%") if search else None
        wanted = _filter_values(q.get("distinctId"))
        page = max(1, int(q["page"])) if q.get("page", "").isdigit() else 1
        size = int(q["pageSize"]) if q.get("pageSize", "").isdigit() and int(q["pageSize"]) > 0 else 20
        found: dict[tuple[Any, ...], dict[str, Any]] = {}
        with self._lock:
            on_clickhouse = self.store == "clickhouse"
            hourly = self._hourly_hostnames(wid) if on_clickhouse else {}
            for e in self._t.events_by_site.get(wid, ()):
                at = e["created_at_ms"] - e["created_at_ms"] % 3_600_000 if on_clickhouse else e["created_at_ms"]
                if not start <= at <= end:
                    continue
                s = self._t.sessions.get(e["session_id"])
                if s is None:
                    continue
                if like is not None and not any(
                    like.fullmatch(str(s[f])) for f in ("distinct_id", "city", "browser", "os", "device") if s[f]
                ):
                    continue
                if wanted is not None and not wanted(s["distinct_id"]):
                    continue
                key: tuple[Any, ...] = (s["session_id"], e["hostname"])
                if on_clickhouse:  # the hourly row's hostname array and the event's own location
                    client = self._t.clients.get(e["event_id"], {})
                    key = (
                        s["session_id"],
                        hourly[_hour_row(e)],
                        *(client.get(k) for k in ("country", "region", "city")),
                    )
                row = found.get(key)
                if row is None:
                    row = found[key] = {
                        "id": s["session_id"],
                        "websiteId": wid,
                        "hostname": e["hostname"],
                        **{k: s[k] for k in ("browser", "os", "device", "screen", "language", "country", "region")},
                        "city": s["city"],
                        "firstMs": e["created_at_ms"],
                        "lastMs": e["created_at_ms"],
                        "visitIds": set(),
                        "views": 0,
                        "events": 0,
                    }
                row["firstMs"] = min(row["firstMs"], e["created_at_ms"])
                row["lastMs"] = max(row["lastMs"], e["created_at_ms"])
                row["visitIds"].add(e["visit_id"])
                row["views" if e["event_type"] == 1 else "events"] += e["event_type"] in (1, 2)
        ordered = sorted(found.values(), key=lambda r: (-r["lastMs"], random.random()))
        data = []
        for r in ordered[(page - 1) * size : page * size]:
            out = {k: v for k, v in r.items() if k not in ("firstMs", "lastMs", "visitIds")}
            out.update(
                firstAt=_iso_ms(r["firstMs"]),
                lastAt=_iso_ms(r["lastMs"]),
                visits=len(r["visitIds"]),
                createdAt=_iso_ms(r["lastMs"]),
            )
            data.append(out)
        return {"data": data, "count": len(ordered), "page": page, "pageSize": size}

    def _hourly_hostnames(self, wid: str) -> dict[tuple[str, str, int, int], tuple[str, ...]]:
        """Umami on ClickHouse: ``website_event_stats_hourly`` keeps, per session, visit, event
        type and hour, the array of its events' hostnames (merged parts concatenate them), and
        the session list groups by that array: one session, as many rows as distinct arrays."""
        arrays: dict[tuple[str, str, int, int], list[str]] = {}
        for e in self._t.events_by_site.get(wid, ()):
            arrays.setdefault(_hour_row(e), []).append(e["hostname"] or "")
        return {k: tuple(v) for k, v in arrays.items()}

    def _metrics(self, wid: str, start: int, end: int, q: dict[str, str]) -> Any:
        mtype = q.get("type", "")
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else 500
        event_cols = {
            "path": "url_path",
            "entry": "url_path",
            "referrer": "referrer_domain",
            "title": "page_title",
            "query": "url_query",
            "hostname": "hostname",
            "tag": "tag",
            "event": "event_name",
        }
        session_cols = (
            "browser",
            "os",
            "device",
            "screen",
            "language",
            "country",
            "region",
            "city",
        )
        counts: dict[Any, Any] = {}
        with self._lock:
            for e in self._t.events_by_site.get(wid, ()):
                t = e["created_at_ms"] if mtype == "event" else self._at(e)  # event metrics read website_event
                if t < start or t > end:
                    continue
                if mtype == "event":
                    if e["event_type"] != 2:
                        continue
                    x = e["event_name"]
                    counts[x] = counts.get(x, 0) + 1  # getEventMetrics: count(*)
                elif mtype in event_cols:
                    if e["event_type"] != 1:
                        continue
                    x = e[event_cols[mtype]]
                    if x is None or x == "":
                        continue  # getPageviewMetrics: `and column != ''` (null fails it too)
                    if mtype == "referrer" and self.store == "clickhouse" and x == e["hostname"]:
                        continue  # the hourly view: `x != '' and x != hostname`
                    if (
                        mtype == "referrer"
                        and self.store != "clickhouse"
                        and (e["hostname"] is None or x == _WWW_ANY.sub("", e["hostname"]))
                    ):
                        continue  # `referrer_domain != regexp_replace(hostname, '^www.', '')`
                    # getPageviewMetrics (Umami 3): count(distinct session_id), not views
                    counts.setdefault(x, set()).add(e["session_id"])
                elif mtype in session_cols:
                    if e["event_type"] != 1:
                        continue
                    if self.store == "clickhouse":  # every event row carries its own element's values
                        x = self._t.clients.get(e["event_id"], {}).get(mtype)
                    else:
                        s = self._t.sessions.get(e["session_id"])
                        x = s[mtype] if s else None
                    if x is None or x == "":
                        continue  # getSessionMetrics: `and column != ''` (null fails it too)
                    if mtype == "language":
                        x = x[:2].lower()  # `lower(left(language, 2))`
                    counts.setdefault(x, set()).add(e["session_id"])
                else:
                    return _bad_request({"errors": [], "properties": {"type": {"errors": ["Invalid option"]}}})
        rows = [{"x": x, "y": y if isinstance(y, int) else len(y)} for x, y in counts.items()]
        rows.sort(key=lambda r: (-r["y"], str(r["x"])))
        return rows[:limit]

    def _pageviews(self, wid: str, start: int, end: int, unit: str, timezone: str | None = None) -> dict[str, Any]:
        bucket = _bucketer(_allowed_unit(start, end, unit), timezone, self.store)
        views: dict[str, int] = {}
        sess: dict[str, set[str]] = {}
        with self._lock:
            for e in self._t.events_by_site.get(wid, ()):
                t = self._at(e)
                if e["event_type"] != 1 or t < start or t > end:
                    continue
                b = bucket(t)
                views[b] = views.get(b, 0) + 1
                sess.setdefault(b, set()).add(e["session_id"])
        return {
            "pageviews": [{"x": b, "y": views[b]} for b in sorted(views)],
            "sessions": [{"x": b, "y": len(sess[b])} for b in sorted(sess)],
        }

    def _event_series(self, wid: str, start: int, end: int, q: dict[str, str]) -> list[dict[str, Any]]:
        """``/events/series`` (getEventStats): custom events per name and time bucket."""
        bucket = _bucketer(_allowed_unit(start, end, q.get("unit", "day")), q.get("timezone"), self.store)
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for e in self._t.events_by_site.get(wid, ()):
                t = self._at(e)
                if e["event_type"] != 2 or t < start or t > end:
                    continue
                key = (e["event_name"], bucket(t))
                counts[key] = counts.get(key, 0) + 1
        rows = [{"x": name, "t": t, "y": y} for (name, t), y in counts.items()]
        rows.sort(key=lambda r: (r["t"], r["x"]))
        return rows


_NO_PARAMS: dict[str, str | None] = dict.fromkeys(_UTM_AND_CLICK_IDS)

_SESSION_LIMITS = (
    ("browser", 20),
    ("os", 20),
    ("device", 20),
    ("screen", 11),
    ("language", 35),
    ("country", 2),
    ("region", 20),
    ("city", 50),
    ("distinct_id", 50),
)
_EVENT_LIMITS = (
    ("url_path", 500),
    ("url_query", 500),
    ("hostname", 100),
    ("page_title", 500),
    ("referrer_domain", 500),
    ("referrer_path", 500),
    ("referrer_query", 500),
    ("event_name", 50),
    ("tag", 50),
    ("utm_source", 255),
    ("utm_medium", 255),
    ("utm_campaign", 255),
    ("utm_content", 255),
    ("utm_term", 255),
    ("gclid", 255),
    ("fbclid", 255),
    ("msclkid", 255),
    ("ttclid", 255),
    ("li_fat_id", 255),
    ("twclid", 255),
)


def _new_id() -> str:
    """A random (v4) UUID string, cheaper than ``str(uuid.uuid4())``."""
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _opt_cut(s: str | None, n: int) -> str | None:
    return None if s is None else _js_substring(s, n)


def _count_elements(path: str, body: bytes) -> int | None:
    """How many elements a refused request carried, for the request log."""
    if path == "/api/send":
        return 1
    parsed = _loads(body) if path == "/api/batch" else None
    return len(parsed) if isinstance(parsed, list) else None


def _reject_constant(token: str) -> Any:
    raise ValueError(token)  # JSON.parse refuses NaN and Infinity


def _loads(raw: bytes) -> Any:
    """``request.json()`` as Umami reads it: an unparsable body is ``undefined``."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _UNDEFINED


def _hour_row(e: dict[str, Any]) -> tuple[str, str, int, int]:
    return (e["session_id"], e["visit_id"], e["event_type"], e["created_at_ms"] // 3_600_000)


def _ilike(pattern: str) -> re.Pattern[str]:
    """PostgreSQL's ``ilike``: ``%`` any text, ``_`` any one character, case-insensitive."""
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _filter_values(raw: str | None) -> Callable[[str | None], bool] | None:
    """Umami's filter parameter (``parseFilterValue``): ``op.value``, ``eq`` when no operator is
    given; equality operators split the value at commas (any of them)."""
    if raw is None:
        return None
    m = re.fullmatch(r"(eq|neq|c|dnc|re|nre)\.(.*)", raw, re.DOTALL)
    op, value = (m.group(1), m.group(2)) if m else ("eq", raw)
    if op in ("eq", "neq"):
        values = set(value.split(","))
        return (lambda v: v in values) if op == "eq" else (lambda v: v is not None and v not in values)
    like = _ilike(f"%{value}%")
    if op == "c":
        return lambda v: v is not None and bool(like.fullmatch(v))
    return lambda v: v is not None and not like.fullmatch(v)


def _iso_ms(ms: int) -> str:
    """A timestamp as Umami's JSON writes a PostgreSQL timestamptz: ``2024-03-01T10:50:00.000Z``."""
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _date_range(q: dict[str, str]) -> tuple[int, int] | dict[str, Any]:
    props = {}
    out = []
    for key in ("startAt", "endAt"):
        value = q.get(key)
        num = _js_to_number(value) if value is not None else math.nan
        if value is None or num != num or not math.isfinite(num):
            props[key] = {
                "errors": ["Invalid input: expected number, received " + ("undefined" if value is None else "NaN")]
            }
        else:
            out.append(int(num))
    if props:
        return _bad_request({"errors": [], "properties": props})
    return out[0], out[1]


def _allowed_unit(start_ms: int, end_ms: int, unit: str) -> str:
    """Umami's ``getRequestDateRange``: a unit finer than the range allows is replaced by
    the finest allowed one (``getMinimumUnit``: minute up to 60 min, hour up to 48 h, day
    up to 6 calendar months, month up to 24, else year)."""
    units = ["minute", "hour", "day", "month", "year"]
    span = end_ms - start_ms
    y0, m0, _ = _civil_from_days(start_ms // 86_400_000)
    y1, m1, _ = _civil_from_days(end_ms // 86_400_000)
    months = (y1 - y0) * 12 + (m1 - m0)
    if span <= 3_600_000:
        minimum = "minute"
    elif span <= 48 * 3_600_000:
        minimum = "hour"
    elif months <= 6:
        minimum = "day"
    elif months <= 24:
        minimum = "month"
    else:
        minimum = "year"
    allowed = units[units.index("month" if minimum == "year" else minimum) :]
    return unit if unit in allowed else minimum


def _bucketer(unit: str, timezone: str | None, store: str = "postgres") -> Callable[[int], str]:
    """Bucket labels as Umami's PostgreSQL ``getDateSQL`` writes them: in UTC
    ``YYYY-MM-DDTHH:00:00Z``; in another zone the local wall clock, ``YYYY-MM-DD HH:00:00``.
    On ClickHouse (``toDateTime(date_trunc(unit, t, zone), zone)`` printed as ISO): the local
    bucket's start as a UTC instant, ``2024-02-29T23:00:00Z`` for Berlin's 1 March."""
    utc = not timezone or timezone.lower() == "utc"
    zone = None if utc else zoneinfo.ZoneInfo(str(timezone))
    if store == "clickhouse":
        wall_clock = _bucketer(unit, "Etc/UTC" if utc else timezone)
        where = zone or zoneinfo.ZoneInfo("UTC")

        def instant(ms: int) -> str:
            start = dt.datetime.fromisoformat(wall_clock(ms)).replace(tzinfo=where)
            return start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return instant

    def bucket(ms: int) -> str:
        if zone is None:
            iso = _iso_seconds(ms)
            day, hour, minute = iso[:10], iso[11:13], iso[14:16]
        else:
            local = dt.datetime.fromtimestamp(ms / 1000, zone)
            day, hour, minute = local.strftime("%Y-%m-%d"), local.strftime("%H"), local.strftime("%M")
        if unit == "minute":
            label = f"{day} {hour}:{minute}:00"
        elif unit == "hour":
            label = f"{day} {hour}:00:00"
        elif unit == "month":
            label = f"{day[:7]}-01 00:00:00"
        elif unit == "year":
            label = f"{day[:4]}-01-01 00:00:00"
        else:
            label = f"{day} 00:00:00"
        return label.replace(" ", "T") + "Z" if zone is None else label

    return bucket


_REASONS = {
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def _nginx_page(status: int) -> bytes:
    """The HTML a reverse proxy answers with: a client must not expect JSON here."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


# --------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C, for manual runs and benchmarks."""
    ap = argparse.ArgumentParser(prog="python -m tests.fake_umami", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8765, help="0 for an ephemeral port")
    ap.add_argument("--website", action="append", default=[], help="website id to register (repeatable)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    ap.add_argument("--disable-bot-check", action="store_true")
    ap.add_argument("--max-batch-elements", type=int, default=None)
    ap.add_argument("--max-body-bytes", type=int, default=None)
    ap.add_argument("--username", default=DEFAULT_USERNAME)
    ap.add_argument("--password", default=DEFAULT_PASSWORD)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args(argv)
    server = FakeUmami(
        args.port,
        websites=args.website,
        username=args.username,
        password=args.password,
        api_key=args.api_key,
        disable_bot_check=args.disable_bot_check,
        latency_ms=args.latency_ms,
        max_body_bytes=args.max_body_bytes,
        max_batch_elements=args.max_batch_elements,
    )
    if not args.website:
        server.add_website()
    server.start()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # terminate() from a benchmark stops as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with '&' in a script
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"fake Umami listening on {server.url}", flush=True)
    for wid in server.websites:
        print(f"website {wid}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        n = server.event_count()
        server.stop()
        print(f"stopped; {n} events stored", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
