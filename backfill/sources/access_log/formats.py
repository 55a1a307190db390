"""The access log formats: one regular expression (or JSON key table) per format.

Every format turns a line into the same named parts (``ip``, ``time``,
``request``, ``status``, ...; see :data:`PARTS`), so everything after parsing
is shared. Formats are plain data, not classes, so a user's own
``--log-format`` (nginx ``log_format`` or Apache ``LogFormat`` syntax) becomes
one more of them, built by :func:`custom_format`.

Why regexes and not a tokenizer: ``polars``' ``str.extract_groups`` runs one
regex over a whole chunk in Rust (about a million combined lines a second on
one core); a Python loop over the lines would cost more than all the rest. The patterns use ``[^ ]``
rather than ``\\S`` (Unicode classes cost twice as much) and an unrolled
quoted-string pattern that reads both nginx's ``\\x22`` and Apache's ``\\"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backfill.errors import ConfigError

#: The named parts a format may give; a format gives a subset.
PARTS = (
    "host",  # the virtual host (vhost field, Host header, CDN host header)
    "ip",  # the connecting client (may be a proxy: see xff and client_ip)
    "user",
    "time",  # one text time; see LineFormat.time_kind
    "date",  # W3C: date and clock in two fields (UTC)
    "clock",
    "request",  # "GET /path?q HTTP/1.1"
    "method",
    "path",  # request target with its query
    "path_only",  # without the query (W3C cs-uri-stem, Apache %U, nginx $uri)
    "query",
    "protocol",
    "status",
    "bytes",
    "referrer",
    "user_agent",
    "xff",  # X-Forwarded-For as logged
    "client_ip",  # a CDN's client ip field (CF-Connecting-IP, True-Client-IP, X-Real-IP)
    "content_type",  # of the response, where logged
    "purpose",  # Purpose / Sec-Purpose / X-Moz request header: prefetch, prerender
    "bucket",  # S3: the bucket (and the path-style prefix of its paths)
)

#: A double-quoted field, nginx (``\\x22``) or Apache (``\\"``) escaping, without the quotes.
QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
TOKEN = r"[^ ]+"
#: Servers often append fields to a standard format: whatever follows is allowed. Left
#: unanchored rather than ``(?: .*)?$``, which makes the regex three times slower.
TAIL = ""

#: A JSON key path used when the part's first path is missing (``"ip" + FALLBACK``).
FALLBACK = "#fallback"


@dataclass(frozen=True)
class LineFormat:
    """One way of writing a log line.

    ``kind`` "regex": ``pattern`` has named groups from :data:`PARTS`.
    ``kind`` "json": ``json_paths`` maps a part to its key path in each line's object.
    """

    name: str
    description: str
    kind: str = "regex"
    pattern: str = ""
    time_kind: str = "clf"  # clf 05/Mar/2024:14:22:10 +0100 | iso | epoch seconds | w3c date+clock UTC | any
    json_paths: dict[str, tuple[str | int, ...]] = field(default_factory=dict)
    #: W3C flavours: how the user agent (and referrer) are escaped in the file.
    decode: str = ""  # "" | "plus" (IIS: spaces as +) | "percent" (CloudFront: %20)
    fields: tuple[str, ...] = ()  # W3C: the #Fields names, in order

    @property
    def regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)

    def parts(self) -> tuple[str, ...]:
        if self.kind == "json":
            return tuple(p for p in self.json_paths if not p.endswith(FALLBACK))
        return tuple(self.regex.groupindex)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern)
    return _CACHE[pattern]


def _q(name: str) -> str:
    return f'"(?P<{name}>{QUOTED})"'


#: The client field may be an X-Forwarded-For list (Apache ``%{X-Forwarded-For}i`` in place
#: of ``%h`` behind a proxy): ``203.0.113.9, 10.0.0.1``.
_CLIENT = r"(?P<ip>[^ ,]+(?:, [^ ,]+)*)"
_CLF = (
    rf"{_CLIENT} {TOKEN} (?P<user>{TOKEN}) \[(?P<time>[^\]]+)\] {_q('request')} "
    rf"(?P<status>\d{{3}}|-) (?P<bytes>\d+|-)"
)
#: nginx often appends "$http_x_forwarded_for" to combined: read it when it looks like one.
_XFF = r'(?: "(?P<xff>-|[0-9A-Fa-f.:, ]+)")?'
_COMBINED = rf"{_CLF} {_q('referrer')} {_q('user_agent')}{_XFF}"
_VHOST = r"(?P<host>[^ :]+)(?::\d+)? "

BUILTIN: tuple[LineFormat, ...] = (
    LineFormat(
        "vhost_combined",
        "Apache vhost_combined / nginx with a $host prefix: host[:port] then the combined fields",
        pattern=rf"^{_VHOST}{_COMBINED}{TAIL}",
    ),
    LineFormat("combined", "nginx / Apache combined (NCSA extended)", pattern=rf"^{_COMBINED}{TAIL}"),
    LineFormat("vhost_common", "Apache common with a %v:%p prefix", pattern=rf"^{_VHOST}{_CLF}$"),
    LineFormat("common", "nginx / Apache common (NCSA)", pattern=rf"^{_CLF}$"),
    LineFormat(
        "alb",
        "AWS Application Load Balancer access log",
        pattern=(
            rf"^(?:https?|h2|grpcs?|wss?) (?P<time>{TOKEN}) {TOKEN} (?P<ip>{TOKEN}) {TOKEN} {TOKEN} {TOKEN} {TOKEN} "
            rf"(?P<status>\d{{3}}|-) {TOKEN} {TOKEN} (?P<bytes>\d+|-) {_q('request')} {_q('user_agent')} "
            rf'{TOKEN} {TOKEN} {TOKEN} "[^"]*" "(?P<host>[^"]*)"{TAIL}'
        ),
        time_kind="iso",
    ),
    LineFormat(
        "s3",
        "AWS S3 server access log",
        pattern=(
            rf"^[0-9a-f-]+ (?P<bucket>{TOKEN}) \[(?P<time>[^\]]+)\] (?P<ip>{TOKEN}) {TOKEN} {TOKEN} {TOKEN} {TOKEN} "
            rf"{_q('request')} (?P<status>\d{{3}}|-) {TOKEN} (?P<bytes>\d+|-) {TOKEN} {TOKEN} {TOKEN} "
            rf"{_q('referrer')} {_q('user_agent')} {TOKEN}"
            rf"(?: {TOKEN} {TOKEN} {TOKEN} {TOKEN} (?P<host>{TOKEN}))?{TAIL}"
        ),
    ),
)

# --------------------------------------------------------------------------- JSON lines

CADDY = LineFormat(
    "caddy",
    "Caddy structured access log (JSON)",
    kind="json",
    time_kind="any",
    json_paths={
        "time": ("ts",),
        "ip": ("request", "remote_ip"),
        "ip" + FALLBACK: ("request", "remote_addr"),  # Caddy before 2.5: "1.2.3.4:5678"
        "client_ip": ("request", "client_ip"),
        "method": ("request", "method"),
        "path": ("request", "uri"),
        "host": ("request", "host"),
        "protocol": ("request", "proto"),
        "status": ("status",),
        "bytes": ("size",),
        "referrer": ("request", "headers", "Referer", 0),
        "user_agent": ("request", "headers", "User-Agent", 0),
        "xff": ("request", "headers", "X-Forwarded-For", 0),
        "purpose": ("request", "headers", "Sec-Purpose", 0),
        "content_type": ("resp_headers", "Content-Type", 0),
    },
)
TRAEFIK = LineFormat(
    "traefik",
    "Traefik access log (JSON)",
    kind="json",
    time_kind="any",
    json_paths={
        "time": ("StartUTC",),
        "time" + FALLBACK: ("time",),
        "ip": ("ClientHost",),
        "method": ("RequestMethod",),
        "path": ("RequestPath",),
        "host": ("RequestHost",),
        "protocol": ("RequestProtocol",),
        "status": ("DownstreamStatus",),
        "bytes": ("DownstreamContentSize",),
        "referrer": ("request_Referer",),
        "user_agent": ("request_User-Agent",),
        "xff": ("request_X-Forwarded-For",),
        "purpose": ("request_Sec-Purpose",),
        "content_type": ("downstream_Content-Type",),
    },
)
#: nginx ``escape=json`` logs name their keys as the admin liked: the usual names per part.
NGINX_JSON_KEYS: dict[str, tuple[str, ...]] = {
    "time": ("time_iso8601", "time_local", "@timestamp", "timestamp", "time", "msec", "ts"),
    "ip": ("remote_addr", "remote_ip", "client_ip", "client", "ip", "realip_remote_addr"),
    "client_ip": ("http_cf_connecting_ip", "http_true_client_ip", "http_x_real_ip"),
    "request": ("request",),
    "method": ("request_method", "method"),
    "path": ("request_uri", "uri", "path", "url"),
    "host": ("host", "http_host", "server_name", "vhost"),
    "protocol": ("server_protocol", "protocol"),
    "status": ("status", "status_code", "response_status"),
    "bytes": ("body_bytes_sent", "bytes_sent", "bytes", "size"),
    "referrer": ("http_referer", "http_referrer", "referer", "referrer"),
    "user_agent": ("http_user_agent", "user_agent", "agent", "ua"),
    "xff": ("http_x_forwarded_for", "x_forwarded_for", "xff"),
    "purpose": ("http_sec_purpose", "http_purpose", "http_x_moz", "http_x_purpose"),
    "content_type": ("sent_http_content_type", "content_type"),
}


def nginx_json_format(keys: set[str]) -> LineFormat | None:
    """The nginx JSON format for the keys seen in a file's first lines; None if it is not a log."""
    paths: dict[str, tuple[str | int, ...]] = {}
    for part, names in NGINX_JSON_KEYS.items():
        found = next((name for name in names if name in keys), None)
        if found is not None:
            paths[part] = (found,)
    if "time" not in paths or not ({"request", "path"} & set(paths)) or "status" not in paths:
        return None
    if "method" in paths and "request" in paths:
        del paths["method"]  # the request line has it
    return LineFormat("nginx_json", "nginx log_format with escape=json", kind="json", time_kind="any", json_paths=paths)


def json_format(keys: set[str], sample: dict[str, object]) -> LineFormat | None:
    """Which JSON access log a first line's keys say (Caddy, Traefik, nginx), if any."""
    request = sample.get("request")
    if isinstance(request, dict) and "uri" in request and ("ts" in keys or "logger" in keys):
        return CADDY
    if "RequestPath" in keys or "RequestMethod" in keys:
        return TRAEFIK
    return nginx_json_format(keys)


# --------------------------------------------------------------------------- W3C extended (IIS, CloudFront)

#: W3C field name (lower case) -> part.
W3C_FIELDS = {
    "date": "date",
    "time": "clock",
    "c-ip": "ip",
    "cs-method": "method",
    "cs-uri-stem": "path_only",
    "cs-uri-query": "query",
    "sc-status": "status",
    "sc-bytes": "bytes",
    "cs(referer)": "referrer",
    "cs(referrer)": "referrer",
    "cs(user-agent)": "user_agent",
    "x-host-header": "host",  # CloudFront: the Host the viewer asked for
    "cs-host": "host",
    "cs(host)": "host",  # IIS; in CloudFront it is the distribution's domain (x-host-header wins)
    "x-forwarded-for": "xff",
    "cs(x-forwarded-for)": "xff",
    "sc-content-type": "content_type",
    "cs-protocol-version": "protocol",
    "cs(purpose)": "purpose",
    "cs(sec-purpose)": "purpose",
}


def w3c_format(fields: list[str], separator: str) -> LineFormat:
    """The format of a W3C extended log (``#Fields:`` header): IIS (spaces) or CloudFront (tabs)."""
    lower = [f.lower() for f in fields]
    cloudfront = "x-edge-location" in lower or separator == "\t"
    value = "[^\t]*" if separator == "\t" else TOKEN
    used: set[str] = set()
    groups = []
    for name in lower:
        part = W3C_FIELDS.get(name)
        if part == "host" and "x-host-header" in lower and name != "x-host-header":
            part = None
        if part and part not in used:
            used.add(part)
            groups.append(f"(?P<{part}>{value})")
        else:
            groups.append(f"(?:{value})")
    if not {"date", "clock", "path_only"} <= used:
        raise ConfigError(
            f"W3C log without date, time and cs-uri-stem fields (#Fields: {' '.join(fields)}); "
            "these are needed to make page views"
        )
    sep = "\t" if separator == "\t" else " "
    return LineFormat(
        "cloudfront" if cloudfront else "iis",
        "AWS CloudFront standard log (W3C, tabs)" if cloudfront else "IIS W3C extended log",
        pattern="^" + sep.join(groups) + "$",
        time_kind="w3c",
        decode="percent" if cloudfront else "plus",
        fields=tuple(lower),
    )


# --------------------------------------------------------------------------- --log-format

#: nginx variable -> part (and a tighter pattern where the value's shape is known).
NGINX_VARS = {
    "remote_addr": "ip",
    "realip_remote_addr": "ip",
    "binary_remote_addr": None,
    "remote_user": "user",
    "time_local": "time",
    "time_iso8601": "time",
    "msec": "time",
    "request": "request",
    "request_method": "method",
    "request_uri": "path",
    "uri": "path_only",
    "document_uri": "path_only",
    "args": "query",
    "query_string": "query",
    "server_protocol": "protocol",
    "status": "status",
    "body_bytes_sent": "bytes",
    "bytes_sent": "bytes",
    "http_referer": "referrer",
    "http_user_agent": "user_agent",
    "http_x_forwarded_for": "xff",
    "proxy_add_x_forwarded_for": "xff",
    "http_cf_connecting_ip": "client_ip",
    "http_true_client_ip": "client_ip",
    "http_x_real_ip": "client_ip",
    "host": "host",
    "http_host": "host",
    "server_name": "host",
    "sent_http_content_type": "content_type",
    "http_purpose": "purpose",
    "http_sec_purpose": "purpose",
    "http_x_moz": "purpose",
}
#: Apache directive (letter, with its {argument} lower-cased) -> part.
APACHE_DIRECTIVES = {
    "h": "ip",
    "a": "ip",
    "{c}a": "ip",
    "u": "user",
    "t": "time",
    "r": "request",
    "m": "method",
    "U": "path_only",
    "q": "query",
    "H": "protocol",
    "s": "status",
    "b": "bytes",
    "B": "bytes",
    "O": "bytes",
    "v": "host",
    "V": "host",
    "{host}i": "host",
    "{referer}i": "referrer",
    "{user-agent}i": "user_agent",
    "{x-forwarded-for}i": "xff",
    "{cf-connecting-ip}i": "client_ip",
    "{true-client-ip}i": "client_ip",
    "{x-real-ip}i": "client_ip",
    "{content-type}o": "content_type",
    "{purpose}i": "purpose",
    "{sec-purpose}i": "purpose",
    "{x-moz}i": "purpose",
}
_NGINX_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_APACHE_DIRECTIVE = re.compile(r"%(?:!?[\d,]*)?[<>]?(\{[^}]*\})?([a-zA-Z%])")
_PART_PATTERN = {"status": r"\d{3}|-", "bytes": r"\d+|-"}


def custom_format(spec: str) -> LineFormat:
    """A regex format from an nginx ``log_format`` or Apache ``LogFormat`` string.

    Each variable becomes a group that runs up to the next literal character
    (a quoted variable up to its closing quote, escapes allowed), so the
    pattern needs no knowledge of the variable beyond the part it gives.
    """
    spec = _format_string(spec)
    if _NGINX_VAR.search(spec):
        pieces = _split(spec, _NGINX_VAR, lambda m: NGINX_VARS.get(m.group(1) or m.group(2)), "nginx")
    elif _APACHE_DIRECTIVE.search(spec):
        spec = spec.replace('\\"', '"')
        pieces = _split(spec, _APACHE_DIRECTIVE, _apache_part, "apache")
    else:
        raise ConfigError(
            f"--log-format {spec!r} has no nginx $variable and no Apache %directive; "
            "give the format string from your server's configuration"
        )
    pattern = _pattern(pieces)
    parts = set(_compiled(pattern).groupindex)
    if "time" not in parts or not ({"request", "path", "path_only"} & parts):
        raise ConfigError(
            f"--log-format {spec!r} logs no time or no request: it needs $time_local (or %t) and "
            "$request (or %r, $request_uri) to make page views"
        )
    return LineFormat("custom", f"--log-format {spec}", pattern=pattern, time_kind="any")


_NGINX_DIRECTIVE = re.compile(r"^\s*log_format\s+\S+\s+(?:escape=\S+\s+)?(.*?);?\s*$", re.DOTALL)
_APACHE_LOGFORMAT = re.compile(r'^\s*LogFormat\s+"((?:[^"\\]|\\.)*)"')


def _format_string(spec: str) -> str:
    """The format string itself, also when given as the whole config line
    (``log_format main '...' '...';`` or ``LogFormat "..." combined``)."""
    nginx = _NGINX_DIRECTIVE.match(spec)
    if nginx:
        quoted = re.findall(r"'([^']*)'", nginx.group(1))
        return "".join(quoted) if quoted else nginx.group(1)
    apache = _APACHE_LOGFORMAT.match(spec)
    if apache:
        return apache.group(1)
    return spec.strip().strip("'")


def _apache_part(match: re.Match[str]) -> str | None:
    argument, letter = match.group(1), match.group(2)
    if letter == "t" and argument and argument.lower() == "{sec}":
        return "time"  # epoch seconds
    if letter == "t" and argument:
        raise ConfigError(
            f"--log-format: {match.group(0)} (a custom time format) is not supported; log %t or %{{sec}}t"
        )
    key = f"{argument.lower()}{letter}" if argument else letter
    return APACHE_DIRECTIVES.get(key)


def _split(spec: str, variable: re.Pattern[str], part_of, flavour: str) -> list[tuple[str, str | None]]:
    """The format as ("lit", text) and ("var", part or None) pieces."""
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for match in variable.finditer(spec):
        if match.start() > position:
            pieces.append(("lit", spec[position : match.start()]))
        if flavour == "apache" and match.group(2) == "%":
            pieces.append(("lit", "%"))
        elif flavour == "apache" and match.group(2) == "t" and not match.group(1):
            pieces += [("lit", "["), ("var", "time"), ("lit", "]")]  # %t writes [05/Mar/2024:14:22:10 +0100]
        else:
            pieces.append(("var", part_of(match)))
        position = match.end()
    if position < len(spec):
        pieces.append(("lit", spec[position:]))
    return pieces


def _pattern(pieces: list[tuple[str, str | None]]) -> str:
    out = ["^"]
    used: set[str] = set()
    for index, (kind, value) in enumerate(pieces):
        if kind == "lit":
            out.append(re.escape(value or ""))
            continue
        following = next((v for k, v in pieces[index + 1 :] if k == "lit" and v), None)
        previous = pieces[index - 1][1] if index and pieces[index - 1][0] == "lit" else ""
        stop = following[0] if following else None
        if stop == '"' and (previous or "").endswith('"'):
            body = QUOTED
        elif value in _PART_PATTERN and stop is not None:
            body = _PART_PATTERN[value]
        elif stop is None:
            body = ".*"
        else:
            body = "[^" + re.escape(stop) + "]*"
        if value and value not in used:
            used.add(value)
            out.append(f"(?P<{value}>{body})")
        else:
            out.append(f"(?:{body})")
    out.append("$")
    return "".join(out)


def by_name(name: str) -> LineFormat | None:
    return next((f for f in (*BUILTIN, CADDY, TRAEFIK) if f.name == name), None)


#: Names accepted by ``--log-format`` besides a format string.
FORMAT_NAMES = (*tuple(f.name for f in BUILTIN), "caddy", "traefik", "nginx_json", "iis", "cloudfront")
