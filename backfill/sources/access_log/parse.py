"""Matched log parts -> the reader's fixed columns (:data:`SCHEMA`), column-wise.

Every format's parts (see ``formats.PARTS``) end in the same columns, so the
mapping and the named filters of the preset work for all of them. Which
request is a page and which traffic is not a person is decided here, into the
``kind`` and ``agent`` columns, and the preset's filters skip on them: one
named filter per rule, so the ledger says how many lines each took and a user
can switch one off by deleting it from a copy of the preset.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import replace

import polars as pl

from backfill.sources.access_log import w3c
from backfill.sources.access_log.formats import PARTS, LineFormat
from backfill.sources.access_log.signs import BROWSER, captured_headers, looks_like_person
from backfill.transform import map_unique
from backfill.umami.bots import bot_mask

S = pl.String()
TIME = pl.Datetime("us", "UTC")

#: The columns of every chunk the reader yields (plus ``_row``).
SCHEMA: dict[str, pl.DataType] = {
    "time": TIME,  # when the request was logged, UTC
    "host": S,  # the site: --hostname, else the line's virtual host (lower case, no port)
    "ip": S,  # the client: CDN client-ip field, else the first X-Forwarded-For entry, else the peer
    "geo_ip": S,  # = ip with --geo ip (sent for Umami's GeoIP lookup), else null: never sent by default
    "method": S,  # upper case; null when the request line is not HTTP (scanners, TLS on port 80)
    "path": S,  # request target with its query, relative (/blog?utm_source=x)
    "url_path": S,  # without the query
    "ext": S,  # lower-case file extension of url_path, null if none
    "status": pl.Int32(),
    "bytes": pl.Int64(),
    "referrer": S,  # null for "-" and empty
    "user_agent": S,
    "visitor_ua": S,  # user_agent, or "-" when the log has none (common): the visitor is then ip + day
    "content_type": S,  # response media type where logged (text/html), else null
    "kind": S,  # page | asset | site file | health check | api | admin | feed | tracker
    "agent": S,  # uptime monitor | feed reader | prefetch | bot (Umami's isbot list), else null
    "search": S,  # the site-search query (from the --search-param query keys), else null
    #: a request that is no page but looks like a person's (signs.py): "/api/docs (from google.com)"
    "looks_like_person": S,
    "visit": S,  # visit id: 30 minutes without a page view start a new one (sessions.py)
}

#: Extensions that are pages; any other extension is a file (asset, download, feed, data).
PAGE_EXTENSIONS = ("html", "htm", "xhtml", "shtml", "php", "asp", "aspx", "jsp", "jspx", "cfm", "cgi", "do", "action")

_I = "(?i)"
SITE_FILES = (
    _I + r"^/(robots\.txt|sitemap[^/]*\.xml(\.gz)?|favicon\.ico|apple-touch-icon[^/]*\.png|ads\.txt|"
    r"app-ads\.txt|humans\.txt|security\.txt|browserconfig\.xml|crossdomain\.xml|manifest\.json|"
    r"site\.webmanifest|\.well-known/.*)$"
)
HEALTH_CHECKS = (
    _I + r"^/(health|healthz|healthcheck|health-check|_health|status|ping|ready|readyz|live|livez|"
    r"heartbeat|metrics|server-status|nginx_status)(/.*)?$"
)
API = _I + r"^/(api|graphql|wp-json|_next/data|ajax|rest|xmlrpc\.php|wp-cron\.php|wp-admin/admin-ajax\.php)(/|$)"
ADMIN = _I + r"^/(admin|wp-admin|wp-login\.php|administrator|phpmyadmin|ghost|typo3|umbraco)(/|$)"
FEEDS = _I + r"(^|/)(feed|rss|atom)(/|\.xml|\.rss|\.atom)?$|\.(rss|atom)$"
#: A self-hosted Matomo (Piwik) tracker's hits: a page's JavaScript reporting a view, not a page.
TRACKERS = _I + r"(^|/)(matomo|piwik)\.php$"

UPTIME_MONITORS = (
    _I + r"uptimerobot|pingdom|statuscake|site24x7|uptime-?kuma|better ?uptime|betterstack|freshping|"
    r"hetrixtools|nodeping|updown\.io|monitis|newrelicpinger|datadog|checkly|cron-job\.org|"
    r"elb-healthchecker|kube-probe|googlehc|gce-health|consul health|blackbox|zabbix|nagios|check_http|"
    r"uptime\.com|pingbreak|ohdear|oh dear|hyperping|upptime|gatus|healthchecks\.io"
)
FEED_READERS = (
    _I + r"feedly|inoreader|newsblur|feedbin|tiny tiny rss|tt-rss|freshrss|netnewswire|feedburner|"
    r"feedfetcher|newsboat|miniflux|theoldreader|old reader|bazqux|nextcloud-news|feedparser|reeder|"
    r"feedspot|feedreader|rss ?reader|rssowl|liferea|quiterss|feedvalidator|simplepie|selfoss|"
    r"commafeed|akregator|feedbot|rssbot"
)
PREFETCH = _I + r"prefetch|prerender|preview"

_ABSOLUTE = r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)(.*)$"


def normalize(
    parts: pl.DataFrame,
    fmt: LineFormat,
    hostname: str | None,
    search_params: tuple[str, ...],
    timezone: str = "UTC",
) -> pl.DataFrame:
    """A frame of a format's text parts (+ ``_row``) -> SCHEMA columns (without ``visit``).

    ``timezone``: the zone of times written without an offset (``fmt.local_time``).
    Built in stages of plain columns: an expression used twice in one stage
    would be evaluated twice (and nested ones multiply).
    """
    if fmt.time_kind == "w3c":
        parts = w3c.unquoted(parts, fmt)
    if fmt.decode == "percent":
        parts = _percent_decoded(parts)
    if "captured" in parts.columns:
        parts = captured_headers(parts)
    cols = {c: pl.col(c) if c in parts.columns else pl.lit(None, S) for c in PARTS}
    text = {c: _dash_null(e) for c, e in cols.items()}
    request = cols["request"]
    given = set(parts.columns)
    method = pl.coalesce(text["method"], request.str.extract(r"^([A-Za-z]+) ", 1)).str.to_uppercase()
    if not {"method", "request"} & given:
        method = pl.lit("GET", S)  # a log without the method logs page views the browser fetched: GET
    frame = parts.select(
        _time(cols, fmt, timezone).alias("time"),
        text["host"].alias("_host"),
        text["bucket"].alias("_bucket"),
        _client_ip(text, given).alias("ip"),
        method.alias("method"),
        pl.coalesce(
            text["path"],
            request.str.extract(r"^[A-Za-z]+ ([^ ]+)", 1),  # not ELB's TCP lines: "- - - "
            *([_stem_and_query(text)] if "path_only" in given else []),
            *([_uri_target(text)] if "uri" in given else []),
        ).alias("_target"),
        cols["status"].cast(pl.Int32, strict=False).alias("status"),
        cols["bytes"].cast(pl.Int64, strict=False).alias("bytes"),
        text["referrer"].alias("referrer"),
        text["user_agent"].alias("user_agent"),
        text["content_type"].str.extract(r"^\s*([^;\s]+)", 1).str.to_lowercase().alias("content_type"),
        text["purpose"].alias("purpose"),
        pl.col("_row"),
    )
    if frame["ip"].str.contains(",", literal=True).any():  # a forwarded-for list in the client field
        frame = frame.with_columns(pl.col("ip").str.split(",").list.first().str.strip_chars())
    if fmt.time_kind == "clf" and frame["time"].null_count() > parts["time"].null_count():
        # e.g. nginx with $time_iso8601 in place of $time_local: read the chunk's times as any shape
        any_time = _time(cols, replace(fmt, time_kind="any"), timezone)
        frame = frame.with_columns(parts.select(any_time).to_series().alias("time"))
    if frame["ip"].str.contains(":", literal=True).any():
        frame = frame.with_columns(_without_port(pl.col("ip")).alias("ip"))
    escaped = [c for c in ("referrer", "user_agent") if frame[c].str.contains("\\", literal=True).any()]
    if escaped:
        frame = frame.with_columns(_unescape(pl.col(c)).alias(c) for c in escaped)
    frame = frame.with_columns(pl.col("_target").str.extract(_ABSOLUTE, 1).alias("_url_host"))
    relative = pl.when(pl.col("_url_host").is_not_null()).then(pl.col("_target").str.extract(_ABSOLUTE, 2))
    frame = frame.with_columns(relative.otherwise(pl.col("_target")).alias("_target"))
    frame = frame.with_columns(
        pl.when(pl.col("_target") == "").then(pl.lit("/")).otherwise(pl.col("_target")).alias("_target")
    )
    frame = frame.with_columns(
        _strip_bucket(pl.col("_target"), pl.col("_bucket")).alias("path"), _host(hostname).alias("host")
    )
    frame = frame.with_columns(pl.col("path").str.replace(r"[?#].*$", "").alias("url_path"))
    frame = frame.with_columns(
        pl.col("user_agent").fill_null("-").alias("visitor_ua"),
        pl.col("url_path").str.extract(r"\.([A-Za-z0-9]{1,10})$", 1).str.to_lowercase().alias("ext"),
    )
    frame = _by_unique(frame, ["url_path", "ext", "content_type"], lambda t: t.with_columns(_kind().alias("kind")))
    frame = _by_unique(frame, ["user_agent", "purpose"], _agents)
    frame = frame.with_columns(_search(search_params).alias("search"))
    frame = frame.with_columns(looks_like_person(frame).alias("looks_like_person"))
    if search_params:
        frame = frame.with_columns(_url_decoded(frame["search"], plus=True).alias("search"))
    return frame.drop("purpose", "_target", "_url_host", "_host", "_bucket", BROWSER)


def _by_unique(frame: pl.DataFrame, keys: list[str], derive: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """Columns derived from ``keys`` once per distinct combination (a chunk has few
    distinct paths and user agents; the regexes are the expensive part)."""
    table = derive(frame.select(keys).unique())
    return frame.join(table, on=keys, how="left", nulls_equal=True, maintain_order="left")


def _dash_null(expr: pl.Expr) -> pl.Expr:
    """Log writers put "-" (or nothing) for a missing value."""
    text = expr.cast(S)
    return pl.when(text.is_in(["-", "", '""'])).then(None).otherwise(text)


def _stem_and_query(text: dict[str, pl.Expr]) -> pl.Expr:
    """W3C / Apache %U%q / nginx $uri?$args: path and query in two fields."""
    query = text["query"].str.strip_chars_start("?")
    with_query = pl.concat_str(text["path_only"], pl.lit("?"), query)
    return pl.when(query.is_not_null() & (query != "")).then(with_query).otherwise(text["path_only"])


def _uri_target(text: dict[str, pl.Expr]) -> pl.Expr:
    """W3C cs-uri: a path, an absolute URL, or host and path without a scheme (Incapsula:
    ``www.example.com/page.php``), with cs-uri-query apart."""
    uri = text["uri"]
    absolute = (
        pl.when(uri.str.starts_with("/") | uri.str.contains("://", literal=True))
        .then(uri)
        .otherwise(pl.concat_str(pl.lit("http://"), uri))
    )
    query = text["query"].str.strip_chars_start("?")
    has_query = query.is_not_null() & (query != "") & ~uri.str.contains("?", literal=True)
    return pl.when(has_query).then(pl.concat_str(absolute, pl.lit("?"), query)).otherwise(absolute)


def _percent_decoded(parts: pl.DataFrame) -> pl.DataFrame:
    """CloudFront percent-encodes the user agent: once (``%20``), or twice in older logs
    (``%2520``). A line encoded twice has the second layer on its referrer, path and query
    too (``%2520`` for a ``%20`` the browser sent): that layer is taken off them."""
    if "user_agent" not in parts.columns:
        return parts
    twice = pl.col("user_agent").str.contains("%25", literal=True).fill_null(False)
    layered = [c for c in ("referrer", "path_only", "query") if c in parts.columns]
    parts = parts.with_columns(
        pl.when(twice).then(pl.col(c).str.replace_all(r"%25([0-9A-Fa-f]{2})", "%$1")).otherwise(pl.col(c)).alias(c)
        for c in layered
    )
    once = _url_decoded(parts["user_agent"])
    return parts.with_columns(pl.when(twice).then(_url_decoded(once)).otherwise(once).alias("user_agent"))


def _strip_bucket(target: pl.Expr, bucket: pl.Expr) -> pl.Expr:
    """S3 path-style requests name the bucket first (/bucket/key): the site's path is /key."""
    prefix = pl.concat_str(pl.lit("/"), bucket)
    rest = target.str.slice(prefix.str.len_chars())
    starts = target.str.starts_with(prefix) & (rest.str.slice(0, 1).is_in(["/", "?", ""]))
    stripped = pl.when(rest.str.starts_with("/")).then(rest).otherwise(pl.concat_str(pl.lit("/"), rest))
    return pl.when(bucket.is_not_null() & starts.fill_null(False)).then(stripped).otherwise(target)


def _host(hostname: str | None) -> pl.Expr:
    """--hostname, else the line's host (a domain-named S3 bucket is the site), else the URL's."""
    if hostname:
        return pl.lit(hostname.lower(), S)
    bucket_site = pl.when(pl.col("_bucket").str.contains(".", literal=True)).then(pl.col("_bucket"))
    host = pl.coalesce(bucket_site, pl.col("_host"), pl.col("_url_host"))
    return host.str.to_lowercase().str.replace(r":\d+$", "")


def _client_ip(text: dict[str, pl.Expr], given: set[str]) -> pl.Expr:
    """The visitor's address: a CDN's client-ip field, else the first X-Forwarded-For entry
    (the client as the first proxy saw it), else the connecting address; without a port."""
    ip = text["ip"]
    if "xff" in given:
        first = text["xff"].str.split(",").list.first().str.strip_chars()
        ip = pl.coalesce(pl.when(~first.str.to_lowercase().is_in(["-", "", "unknown"])).then(first), ip)
    if "client_ip" in given:
        ip = pl.coalesce(text["client_ip"], ip)
    return ip


def _without_port(ip: pl.Expr) -> pl.Expr:
    """ALB and Traefik log ``ip:port`` (``[v6]:port``)."""
    v4_port = ip.str.extract(r"^(\d+\.\d+\.\d+\.\d+):\d+$", 1)
    v6_port = ip.str.extract(r"^\[([0-9A-Fa-f:.]+)\](?::\d+)?$", 1)
    return pl.coalesce(v4_port, v6_port, ip)


def _unescape(expr: pl.Expr) -> pl.Expr:
    """nginx writes a quote inside a field as \\x22, Apache as \\"."""
    return expr.str.replace_all(r"\x22", '"', literal=True).str.replace_all(r"\"", '"', literal=True)


def _time(cols: dict[str, pl.Expr], fmt: LineFormat, timezone: str) -> pl.Expr:
    zone = timezone if fmt.local_time else "UTC"
    if fmt.time_kind == "w3c":
        text = pl.concat_str(cols["date"], pl.lit(" "), cols["clock"])
        return _zoned(text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"), zone)
    text = cols["time"].cast(S).str.strip_chars().str.strip_chars("[]")
    if fmt.time_kind == "clf_naive":
        return _zoned(text.str.to_datetime("%d/%b/%Y:%H:%M:%S%.f", strict=False, time_unit="us"), zone)
    parsers = {"clf": _clf, "iso": _iso, "epoch": _epoch}
    if fmt.time_kind in parsers:
        return parsers[fmt.time_kind](text)
    return pl.coalesce(_clf(text), _iso(text), _epoch(text))


def _zoned(naive: pl.Expr, zone: str) -> pl.Expr:
    """A time without an offset, read in ``zone`` (the hour repeated when clocks go back: the first)."""
    if zone == "UTC":
        return naive.dt.replace_time_zone("UTC")
    local = naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
    return local.dt.convert_time_zone("UTC")


def _clf(text: pl.Expr) -> pl.Expr:
    parsed = text.str.to_datetime("%d/%b/%Y:%H:%M:%S %z", strict=False, time_unit="us")
    return parsed.dt.convert_time_zone("UTC")


def _iso(text: pl.Expr) -> pl.Expr:
    zoned = text.str.replace(r"Z$", "+00:00").str.replace(" ", "T", literal=True)
    parsed = zoned.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
    return parsed.dt.convert_time_zone("UTC")


def _epoch(text: pl.Expr) -> pl.Expr:
    seconds = text.cast(pl.Float64, strict=False)
    micros = pl.when((seconds > 0) & (seconds < 1e11)).then((seconds * 1_000_000).round(0)).cast(pl.Int64)
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _url_decoded(values: pl.Series, *, plus: bool = False) -> pl.Series:
    """Percent-decoded (and ``+`` as a space where ``plus``: a query's form encoding)."""
    if values.null_count() == len(values):
        return values
    if plus:
        decoded = map_unique(values, lambda v: urllib.parse.unquote_plus(v) if "%" in v or "+" in v else v, S)
    else:
        decoded = map_unique(values, lambda v: urllib.parse.unquote(v) if "%" in v else v, S)
    return decoded.alias(values.name)


def _kind() -> pl.Expr:
    """What a request is for, by its path and, where logged, the response's media type."""
    path, ext, media = pl.col("url_path"), pl.col("ext"), pl.col("content_type")
    not_html = media.is_not_null() & ~media.is_in(["text/html", "application/xhtml+xml"])
    return (
        pl.when(path.str.contains(SITE_FILES))
        .then(pl.lit("site file"))
        .when(path.str.contains(HEALTH_CHECKS))
        .then(pl.lit("health check"))
        .when(path.str.contains(API))
        .then(pl.lit("api"))
        .when(path.str.contains(ADMIN))
        .then(pl.lit("admin"))
        .when(path.str.contains(FEEDS))
        .then(pl.lit("feed"))
        .when(path.str.contains(TRACKERS))
        .then(pl.lit("tracker"))
        .when((ext.is_not_null() & ~ext.is_in(PAGE_EXTENSIONS)) | not_html)
        .then(pl.lit("asset"))
        .otherwise(pl.lit("page"))
    )


def _agents(table: pl.DataFrame) -> pl.DataFrame:
    """``agent`` of distinct (user agent, purpose): log-specific traffic first, then
    Umami's own bot list (the isbot patterns), so crawlers are a named skip, not sent."""
    table = table.with_columns(_agent().alias("agent"))
    bots = bot_mask(table["user_agent"])
    agent = pl.when(pl.col("agent").is_null() & bots).then(pl.lit("bot")).otherwise("agent")
    return table.with_columns(agent.alias("agent")).with_columns(
        (pl.col("agent").is_null() & pl.col("user_agent").str.starts_with("Mozilla/")).alias(BROWSER)
    )


def _agent() -> pl.Expr:
    """Traffic that is no person reading a page and that Umami's bot list misses."""
    ua = pl.col("user_agent")
    return (
        pl.when(pl.col("purpose").str.contains(PREFETCH))
        .then(pl.lit("prefetch"))
        .when(ua.str.contains(UPTIME_MONITORS))
        .then(pl.lit("uptime monitor"))
        .when(ua.str.contains(FEED_READERS))
        .then(pl.lit("feed reader"))
        .otherwise(pl.lit(None, S))
    )


def _search(params: tuple[str, ...]) -> pl.Expr:
    if not params:
        return pl.lit(None, S)
    keys = "|".join(map(re.escape, params))
    return pl.col("path").str.extract(rf"[?&](?:{keys})=([^&#]*)", 1)
