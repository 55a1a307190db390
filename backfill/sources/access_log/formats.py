"""The access log formats: one regular expression (or JSON key table) per format.

Every format turns a line into the same named parts (``ip``, ``time``,
``request``, ``status``, ...; see :data:`PARTS`), so everything after parsing
is shared. Formats are plain data, not classes, so a user's own
``--log-format`` (nginx ``log_format`` or Apache ``LogFormat`` syntax, see
``custom.py``) and a W3C ``#Fields:`` line (``w3c.py``) become more of them.

The named formats are those of Matomo's log importer (``import_logs.py``), so
logs kept for Matomo read here as they are, each detected from its first
lines: nginx/Apache ``combined`` and ``common`` with or without a virtual host,
OVH and Gandi hosting logs, AWS ALB, Classic ELB, S3 and CloudFront, HAProxy
(with its syslog prefix), IIS and other W3C extended logs (IIS Advanced
Logging, Incapsula, Netscaler), and JSON lines (nginx ``escape=json`` with the
keys Matomo's README recommends or nginx's own names, Caddy, Traefik).

Why regexes and not a tokenizer: ``polars``' ``str.extract_groups`` runs one
regex over a whole chunk in Rust (about a million combined lines a second on
one core); a Python loop over the lines would cost more than all the rest. The patterns use ``[^ ]``
rather than ``\\S`` (Unicode classes cost twice as much) and an unrolled
quoted-string pattern that reads both nginx's ``\\x22`` and Apache's ``\\"``.
Every pattern is written for both Python's ``re`` (detection) and Rust's
``regex`` (parsing): no look-arounds, no back-references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The named parts a format may give; a format gives a subset.
PARTS = (
    "host",  # the virtual host (vhost field, Host header, CDN host header)
    "ip",  # the connecting client (may be a proxy: see xff and client_ip)
    "user",
    "time",  # one text time; see LineFormat.time_kind
    "date",  # W3C: date and clock in two fields
    "clock",
    "request",  # "GET /path?q HTTP/1.1"
    "method",
    "path",  # request target with its query
    "path_only",  # without the query (W3C cs-uri-stem, Apache %U, nginx $uri)
    "query",
    "uri",  # W3C cs-uri: an absolute URL, or host and path without the scheme (Incapsula)
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
    "captured",  # HAProxy: the captured request headers, "host|user agent|referer" in the admin's order
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
    ``detect_pattern``: a stricter pattern that decides detection where ``pattern``
    alone would also take another format's lines (OVH's second field is a host,
    which ``combined``'s ident field never is).
    """

    name: str
    description: str
    kind: str = "regex"
    pattern: str = ""
    #: clf 05/Mar/2024:14:22:10 +0100 | clf_naive 25/Sep/2018:06:05:27.584 (no offset) |
    #: iso | epoch seconds | w3c date + clock | any (the first of clf, iso, epoch that reads)
    time_kind: str = "clf"
    json_paths: dict[str, tuple[str | int, ...]] = field(default_factory=dict)
    #: W3C flavours: how the user agent is escaped in the file.
    decode: str = ""  # "" | "plus" (IIS: spaces as +) | "percent" (CloudFront: %20, older logs %2520)
    fields: tuple[str, ...] = ()  # W3C: the #Fields names, in order (lower case)
    #: The times carry no UTC offset and are the server's clock (HAProxy, IIS date-local):
    #: read in --log-timezone (UTC by default, said in a note).
    local_time: bool = False
    detect_pattern: str = ""
    #: A format whose lines another one also matches (OVH's are combined lines to
    #: combined's regex): this one wins where its ``detect_pattern`` takes most of them.
    refines: str = ""

    @property
    def regex(self) -> re.Pattern[str]:
        return compiled(self.pattern)

    @property
    def detect_regex(self) -> re.Pattern[str]:
        return compiled(self.detect_pattern or self.pattern)

    def parts(self) -> tuple[str, ...]:
        if self.kind == "json":
            return tuple(p for p in self.json_paths if not p.endswith(FALLBACK))
        return tuple(self.regex.groupindex)


_CACHE: dict[str, re.Pattern[str]] = {}


def compiled(pattern: str) -> re.Pattern[str]:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern)
    return _CACHE[pattern]


def _q(name: str) -> str:
    return f'"(?P<{name}>{QUOTED})"'


#: The client field may be an X-Forwarded-For list (Apache ``%{X-Forwarded-For}i`` in place
#: of ``%h`` behind a proxy): ``203.0.113.9, 10.0.0.1``.
_CLIENT = r"(?P<ip>[^ ,]+(?:, [^ ,]+)*)"
_TIME = r"\[(?P<time>[^\]]+)\]"
_STATUS_BYTES = r"(?P<status>\d{3}|-) (?P<bytes>\d+|-)"
_CLF = rf"{_CLIENT} {TOKEN} (?P<user>{TOKEN}) {_TIME} {_q('request')} {_STATUS_BYTES}"
#: nginx often appends "$http_x_forwarded_for" to combined: read it when it looks like one.
_XFF = r'(?: "(?P<xff>-|[0-9A-Fa-f.:, ]+)")?'
_REFERRER_AGENT = rf"{_q('referrer')} {_q('user_agent')}"
COMBINED = rf"{_CLF} {_REFERRER_AGENT}{_XFF}"
_VHOST = r"(?P<host>[^ :]+)(?::\d+)? "
#: A host name as a log's host field holds it (OVH's second field): letters, digits, dots.
_HOSTNAME = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.[A-Za-z][A-Za-z0-9-]*"
#: ELB / ALB: client and target as ip:port ([v6]:port or v6:port).
_PEER = r"(?P<ip>[^ ]+):\d+"
_ISO_TIME = r"(?P<time>\d{4}-\d\d-\d\dT[^ ]+)"
#: A syslog prefix before a program's message: "Sep  5 06:05:27 host haproxy[6801]: ",
#: "2018-09-25T06:05:27+02:00 host haproxy[6801]: ", RFC 5424 "<134>1 ... haproxy 6801 - - ",
#: or none (stdout): anything up to a space, as what follows (ip:port [date]) is unmistakable.
_SYSLOG = r"(?:.*? )?"

BUILTIN: tuple[LineFormat, ...] = (
    LineFormat(
        "vhost_combined",
        "Apache vhost_combined / nginx with a $host prefix: host[:port] then the combined fields",
        pattern=rf"^{_VHOST}{COMBINED}{TAIL}",
    ),
    LineFormat(
        "gandi",
        "Gandi hosting: host, then the combined fields with the time taken in parentheses",
        pattern=(
            rf"^{_VHOST}{_CLIENT} {TOKEN} (?P<user>{TOKEN}) {_TIME} \([^)]*\) {_q('request')} {_STATUS_BYTES} "
            rf"{_REFERRER_AGENT}{TAIL}"
        ),
    ),
    LineFormat(
        "ovh",
        "OVH hosting: client ip, then the host, then the combined fields",
        pattern=rf"^{_CLIENT} (?P<host>{TOKEN}) (?P<user>{TOKEN}) {_TIME} {_q('request')} {_STATUS_BYTES} "
        rf"{_REFERRER_AGENT}{TAIL}",
        detect_pattern=rf"^[^ ]+ {_HOSTNAME} {TOKEN} {_TIME} ",
        refines="combined",
    ),
    LineFormat("combined", "nginx / Apache combined (NCSA extended)", pattern=rf"^{COMBINED}{TAIL}"),
    LineFormat("vhost_common", "Apache common with a %v:%p prefix", pattern=rf'^{_VHOST}{_CLF}(?: [^"]*)?$'),
    #: Fields after the size are allowed (%D, %T) but no quoted ones: a combined line cut
    #: short is a bad line of a combined log, not a common one.
    LineFormat("common", "nginx / Apache common (NCSA)", pattern=rf'^{_CLF}(?: [^"]*)?$'),
    LineFormat(
        "alb",
        "AWS Application Load Balancer access log",
        pattern=(
            rf"^(?:https?|h2|grpcs?|wss?) {_ISO_TIME} {TOKEN} {_PEER} {TOKEN} {TOKEN} {TOKEN} {TOKEN} "
            rf"(?P<status>\d{{3}}|-) {TOKEN} {TOKEN} (?P<bytes>\d+|-) {_q('request')} {_q('user_agent')}"
            rf'(?: {TOKEN} {TOKEN} {TOKEN} "[^"]*"(?: "(?P<host>[^"]*)")?)?{TAIL}'
        ),
        time_kind="iso",
    ),
    LineFormat(
        "elb",
        "AWS Classic Load Balancer (ELB) access log",
        pattern=(
            rf"^{_ISO_TIME} {TOKEN} {_PEER} {TOKEN} {TOKEN} {TOKEN} {TOKEN} "
            rf"(?P<status>\d{{3}}|-) {TOKEN} {TOKEN} (?P<bytes>\d+|-) {_q('request')}(?: {_q('user_agent')})?{TAIL}"
        ),
        time_kind="iso",
    ),
    LineFormat(
        "s3",
        "AWS S3 server access log",
        pattern=(
            rf"^[0-9a-f-]+ (?P<bucket>{TOKEN}) {_TIME} (?P<ip>{TOKEN}) {TOKEN} {TOKEN} {TOKEN} {TOKEN} "
            rf"{_q('request')} (?P<status>\d{{3}}|-) {TOKEN} (?P<bytes>\d+|-) {TOKEN} {TOKEN} {TOKEN} "
            rf"{_REFERRER_AGENT}"
            # version id, host id, signature version, cipher, auth type, Host header, ...:
            # each added to the format over the years, so older logs end sooner
            rf"(?: {TOKEN}(?: {TOKEN} {TOKEN} {TOKEN} {TOKEN} (?P<host>{TOKEN}))?)?{TAIL}"
        ),
    ),
    LineFormat(
        "haproxy",
        "HAProxy HTTP log (option httplog), with or without its syslog prefix",
        # a TCP frontend's lines (option tcplog) in the same file have no status and no request:
        # rows without a method (skipped as such), not unreadable lines
        pattern=(
            rf"^{_SYSLOG}(?P<ip>[^ \[]+?):\d+ \[(?P<time>\d\d/[A-Za-z]{{3}}/\d{{4}}:\d\d:\d\d:\d\d(?:\.\d+)?)\] "
            rf"{TOKEN} {TOKEN} {TOKEN} (?:(?P<status>-?\d+) \+?(?P<bytes>\d+) {TOKEN} {TOKEN} {TOKEN} {TOKEN} {TOKEN}"
            rf"(?: \{{(?P<captured>[^}}]*)\}})?(?: \{{[^}}]*\}})? {_q('request')}"
            rf"|\+?\d+ {TOKEN} {TOKEN} {TOKEN}$){TAIL}"
        ),
        time_kind="clf_naive",
        local_time=True,
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
#: nginx ``escape=json`` logs name their keys as the admin liked: the usual names per part,
#: nginx's own variable names first, then the keys of the log_format Matomo's README gives
#: (ip, host, path, status, referrer, user_agent, length, date).
NGINX_JSON_KEYS: dict[str, tuple[str, ...]] = {
    "time": ("time_iso8601", "time_local", "@timestamp", "timestamp", "time", "date", "msec", "ts", "datetime"),
    "ip": ("remote_addr", "remote_ip", "client_ip", "client", "ip", "realip_remote_addr", "clientip"),
    "client_ip": ("http_cf_connecting_ip", "http_true_client_ip", "http_x_real_ip"),
    "request": ("request",),
    "method": ("request_method", "method", "verb"),
    "path": ("request_uri", "uri", "path", "url"),
    "host": ("host", "http_host", "server_name", "vhost", "hostname"),
    "protocol": ("server_protocol", "protocol"),
    "status": ("status", "status_code", "response_status"),
    "bytes": ("body_bytes_sent", "bytes_sent", "bytes", "size", "length"),
    "referrer": ("http_referer", "http_referrer", "referer", "referrer"),
    "user_agent": ("http_user_agent", "user_agent", "agent", "ua", "useragent"),
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


# --------------------------------------------------------------------------- names

#: Names that ``--log-format`` takes besides a format string: ours, and Matomo's
#: ``--log-format-name`` values (people leaving Matomo pass those).
NAMED = {f.name: f for f in (*BUILTIN, CADDY, TRAEFIK)}
ALIASES = {
    "ncsa_extended": "combined",
    "common_complete": "vhost_combined",
    "common_vhost": "vhost_common",
    "amazon_cloudfront": "cloudfront",
    "w3c_extended": "w3c",
    "incapsula_w3c": "w3c",
    "caddy_json": "caddy",
    "traefik_json": "traefik",
}
#: Names read from the file itself (its #Fields line, its JSON keys).
SELF_DESCRIBING = ("w3c", "iis", "cloudfront", "json", "nginx_json")
FORMAT_NAMES = (*NAMED, *SELF_DESCRIBING, *ALIASES)


def canonical_name(name: str) -> str:
    lowered = name.strip().lower()
    return ALIASES.get(lowered, lowered)


def by_name(name: str) -> LineFormat | None:
    return NAMED.get(canonical_name(name))


def names_listing() -> str:
    """The ``--log-format`` names, for help and errors."""
    aliases = ", ".join(f"{alias} (= {target})" for alias, target in ALIASES.items())
    return f"{', '.join(NAMED)}, {', '.join(SELF_DESCRIBING)}; Matomo's names: {aliases}"


def streaming_message(server: str, *, override: bool = False) -> str:
    """Why a streaming server's log (Icecast, SHOUTcast, CloudFront RTMP) is not read; ``override``:
    the file was told from lines a web server could write too, so say how to read it anyway."""
    anyway = (
        " (if it is a web server's log after all, name its format with --log-format, e.g. --log-format combined)"
        if override
        else ""
    )
    return (
        f"this is a streaming server's log ({server}): its lines are listeners of a stream, not page views "
        f"of a web site, so it is not imported{anyway}"
    )
