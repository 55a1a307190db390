"""Write the web server access log samples (sample_data/access_logs/): the same requests in every format.

    python sample_data/make_access_log_samples.py                  # the samples
    python sample_data/make_access_log_samples.py --bench FILE.gz --lines 2000000   # a big gzipped combined log

One simulated site (``www.bakery-demo.example``) over three days: people
visiting pages (visits of a few page views seconds to minutes apart, visits
of one person hours apart), each page followed by its assets, some 304s,
redirects (``/menu`` -> ``/menu/``), 404s, a contact form POST, API calls, a
site search; crawlers, scripts, an uptime monitor, a feed reader, health
checks and a few TLS handshakes on the HTTP port. The requests are rendered in
each format under its own folder, as the servers write them:

* ``combined/access.log``, ``access.log.1``, ``access.log.2.gz``: nginx
  default, rotated daily at local midnight (+01:00), oldest compressed;
  plus one truncated line (a reject);
* ``common/access.log``: no referrer, no user agent;
* ``vhost_combined/other_vhosts_access.log``: Apache, ``host:port`` first;
* ``nginx_custom/access.log``: behind a load balancer (peer 10.0.0.2, the
  client in X-Forwarded-For), format in ``nginx_custom/log_format.txt``;
* ``apache_custom/access.log``: format in ``apache_custom/log_format.txt``;
* ``nginx_json/access.log.gz``, ``caddy/access.log.gz``, ``traefik/access.log.gz``: JSON lines;
* ``cloudfront/distribution.log.gz``, ``iis/u_ex240304.log``: W3C (``#Fields:``);
* ``iis_advanced/advanced.log.gz``: IIS Advanced Logging (local time, quoted values,
  a padded header), ``incapsula/incapsula.log.gz``: Incapsula (every value quoted);
* ``alb/elb.log.gz``, ``elb/classic.log.gz``, ``s3/bucket.log.gz``: AWS (ALB, Classic ELB, S3);
* ``haproxy/haproxy.log.gz``: HAProxy behind syslog, Host/User-Agent/Referer captured,
  local time; ``ovh/ovh.log.gz``, ``gandi/gandi.log.gz``: hosting providers' logs.

``expected.json``: computed here from the generator's own labels, never
through the reader: page views per UTC day and per path, visitors and visits
per UTC day (a visit split at UTC midnight counts on both days, as an ip + ua
+ day visitor sees it), and the same for ``common`` logs, which carry no user
agent (bots cannot be told from people there, so their page views count).

Seeded: running it again writes the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import urllib.parse
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "access_logs"
SEED = 20240304
START = dt.datetime(2024, 3, 4, tzinfo=dt.UTC)
DAYS = 3
HOST = "www.bakery-demo.example"
LOCAL = dt.timezone(dt.timedelta(hours=1))
PEOPLE = 20

BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.64 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.2277.128",
)
CRAWLERS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/8.4.0",
    "python-requests/2.31.0",
)
MONITOR = "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"
FEED_READER = "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 12 subscribers; like FeedFetcher-Google)"
PROBE = "kube-probe/1.29"

PAGES = ("/", "/menu/", "/about", "/blog/", "/blog/sourdough-starter", "/blog/rye-bread", "/order", "/contact")
ASSETS = ("/static/site.css", "/static/app.js", "/img/hero.webp", "/img/logo.svg", "/fonts/inter.woff2")
REFERRERS = ("https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/item?id=39600001")
CONTENT_TYPES = {
    ".css": "text/css",
    ".js": "application/javascript",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".xml": "application/rss+xml",
    ".txt": "text/plain",
}


@dataclass
class Request:
    time: dt.datetime  # UTC
    ip: str
    ua: str | None
    method: str
    path: str  # with query
    status: int
    size: int
    referrer: str | None
    label: str  # page | asset | redirect | error | post | api | robots | health | feed | junk
    client: str  # person | crawler | monitor | feed reader | probe | scanner
    visit: str | None = None  # person visits: "<person>-<n>"
    content_type: str | None = None


# --------------------------------------------------------------------------- the requests


def simulate(rng: random.Random) -> list[Request]:
    requests: list[Request] = []
    for person in range(PEOPLE):
        ip = f"203.0.113.{10 + person}" if person % 9 else f"2001:db8::{person:x}"
        ua = BROWSERS[person % len(BROWSERS)]
        _person(rng, requests, person, ip, ua)
    _robots(rng, requests)
    requests.sort(key=lambda r: r.time)
    return requests


def _person(rng: random.Random, out: list[Request], person: int, ip: str, ua: str) -> None:
    end = START + dt.timedelta(days=DAYS)
    clock = START + dt.timedelta(minutes=rng.randrange(0, 20 * 60))
    visit = 0
    while clock < end - dt.timedelta(hours=1):
        visit += 1
        clock = _visit(rng, out, f"{person}-{visit}", ip, ua, clock)
        clock += dt.timedelta(hours=rng.uniform(2.1, 20))  # the next visit: other clock hour, > 30 min


def _visit(rng: random.Random, out: list[Request], visit: str, ip: str, ua: str, clock: dt.datetime) -> dt.datetime:
    referrer = rng.choice((None, *REFERRERS))
    views = rng.randint(1, 6)
    previous: str | None = None
    for n in range(views):
        page = rng.choice(PAGES)
        query = ""
        if n == 0 and rng.random() < 0.3:
            query = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
        ref = referrer if n == 0 else f"https://{HOST}{previous}"
        if page == "/menu/" and rng.random() < 0.4:  # an old link: redirected, then the page
            out.append(Request(clock, ip, ua, "GET", "/menu", 301, 162, ref, "redirect", "person", visit, "text/html"))
            clock += dt.timedelta(seconds=rng.uniform(0.05, 0.4))
        status = 304 if rng.random() < 0.1 else 200
        size = 0 if status == 304 else rng.randint(8_000, 40_000)
        kind = None if status == 304 else "text/html"
        out.append(Request(clock, ip, ua, "GET", page + query, status, size, ref, "page", "person", visit, kind))
        for asset in rng.sample(ASSETS, rng.randint(0, 3)):
            moment = clock + dt.timedelta(seconds=rng.uniform(0.1, 2))
            ctype = CONTENT_TYPES[Path(asset).suffix]
            out.append(
                Request(
                    moment,
                    ip,
                    ua,
                    "GET",
                    asset,
                    200,
                    rng.randint(500, 90_000),
                    f"https://{HOST}{page}",
                    "asset",
                    "person",
                    visit,
                    ctype,
                )
            )
        if page == "/order" and rng.random() < 0.5:
            moment = clock + dt.timedelta(seconds=rng.uniform(1, 3))
            out.append(
                Request(
                    moment,
                    ip,
                    ua,
                    "GET",
                    "/api/cart",
                    200,
                    412,
                    f"https://{HOST}/order",
                    "api",
                    "person",
                    visit,
                    "application/json",
                )
            )
        if page == "/contact" and rng.random() < 0.5:
            clock += dt.timedelta(seconds=rng.uniform(20, 90))
            out.append(
                Request(
                    clock,
                    ip,
                    ua,
                    "POST",
                    "/contact",
                    303,
                    0,
                    f"https://{HOST}/contact",
                    "post",
                    "person",
                    visit,
                    "text/html",
                )
            )
            clock += dt.timedelta(seconds=0.2)
            out.append(
                Request(
                    clock,
                    ip,
                    ua,
                    "GET",
                    "/contact/thanks",
                    200,
                    5_120,
                    f"https://{HOST}/contact",
                    "page",
                    "person",
                    visit,
                    "text/html",
                )
            )
            page = "/contact/thanks"
        if rng.random() < 0.08:
            clock += dt.timedelta(seconds=rng.uniform(5, 40))
            out.append(
                Request(
                    clock,
                    ip,
                    ua,
                    "GET",
                    "/blog/old-post",
                    404,
                    1_024,
                    f"https://{HOST}{page}",
                    "error",
                    "person",
                    visit,
                    "text/html",
                )
            )
        if rng.random() < 0.1:
            clock += dt.timedelta(seconds=rng.uniform(5, 40))
            out.append(
                Request(
                    clock,
                    ip,
                    ua,
                    "GET",
                    "/search?q=rye+bread",
                    200,
                    9_000,
                    f"https://{HOST}{page}",
                    "page",
                    "person",
                    visit,
                    "text/html",
                )
            )
            page = "/search?q=rye+bread"
        previous = page
        clock += dt.timedelta(seconds=rng.uniform(10, 8 * 60))
    return clock


def _robots(rng: random.Random, out: list[Request]) -> None:
    end = START + dt.timedelta(days=DAYS)
    for i, ua in enumerate(CRAWLERS):
        ip = f"66.249.{64 + i}.{rng.randint(1, 250)}"
        clock = START + dt.timedelta(minutes=rng.randrange(0, 120))
        while clock < end:
            out.append(
                Request(clock, ip, ua, "GET", "/robots.txt", 200, 68, None, "robots", "crawler", None, "text/plain")
            )
            for page in rng.sample(PAGES, 3):
                clock += dt.timedelta(seconds=rng.uniform(1, 30))
                out.append(Request(clock, ip, ua, "GET", page, 200, 20_000, None, "page", "crawler", None, "text/html"))
            clock += dt.timedelta(hours=rng.uniform(3, 9))
    clock = START + dt.timedelta(minutes=2)
    while clock < end:  # uptime monitor: HEAD / every 30 minutes; kube probe on /healthz
        out.append(
            Request(clock, "198.51.100.7", MONITOR, "HEAD", "/", 200, 0, None, "page", "monitor", None, "text/html")
        )
        out.append(
            Request(
                clock + dt.timedelta(seconds=5),
                "10.0.0.9",
                PROBE,
                "GET",
                "/healthz",
                200,
                2,
                None,
                "health",
                "probe",
                None,
                "text/plain",
            )
        )
        clock += dt.timedelta(minutes=30)
    clock = START + dt.timedelta(minutes=41)
    while clock < end:  # a feed reader: the feed, and now and then a page it follows
        out.append(
            Request(
                clock,
                "198.51.100.20",
                FEED_READER,
                "GET",
                "/blog/feed.xml",
                200,
                14_000,
                None,
                "feed",
                "feed reader",
                None,
                CONTENT_TYPES[".xml"],
            )
        )
        out.append(
            Request(
                clock + dt.timedelta(seconds=2),
                "198.51.100.20",
                FEED_READER,
                "GET",
                "/blog/rye-bread",
                200,
                20_000,
                None,
                "page",
                "feed reader",
                None,
                "text/html",
            )
        )
        clock += dt.timedelta(hours=4)
    for hour in (3, 27, 51):  # TLS handshakes on port 80: no HTTP request line
        moment = START + dt.timedelta(hours=hour, minutes=17)
        out.append(Request(moment, "192.0.2.66", None, "\\x16\\x03\\x01", "", 400, 157, None, "junk", "scanner"))


# --------------------------------------------------------------------------- rendering


def _local(t: dt.datetime, tz: dt.tzinfo = LOCAL) -> str:
    return t.astimezone(tz).strftime("%d/%b/%Y:%H:%M:%S %z")


def _request_line(r: Request) -> str:
    return r.method if r.label == "junk" else f"{r.method} {r.path} HTTP/1.1"


def _dash(value: str | None) -> str:
    return value if value else "-"


def combined(r: Request) -> str:
    return (
        f'{r.ip} - - [{_local(r.time)}] "{_request_line(r)}" {r.status} {r.size} "{_dash(r.referrer)}" "{_dash(r.ua)}"'
    )


def common(r: Request) -> str:
    return f'{r.ip} - - [{_local(r.time)}] "{_request_line(r)}" {r.status} {r.size}'


def vhost_combined(r: Request) -> str:
    return f"{HOST}:443 {combined(r)}"


NGINX_CUSTOM = (
    'log_format main \'$host $remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time xff="$http_x_forwarded_for"\';'
)
NGINX_CUSTOM_FORMAT = (
    '$host $remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time xff="$http_x_forwarded_for"'
)


def nginx_custom(r: Request) -> str:
    iso = r.time.astimezone(LOCAL).isoformat(timespec="seconds")
    return (
        f'{HOST} 10.0.0.2 [{iso}] "{_request_line(r)}" {r.status} {r.size} "{_dash(r.referrer)}" '
        f'"{_dash(r.ua)}" rt=0.0{r.size % 90:02d} xff="{r.ip}, 10.0.0.1"'
    )


APACHE_CUSTOM_FORMAT = '%v %a %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\" %D'


def apache_custom(r: Request) -> str:
    return (
        f'{HOST} {r.ip} - - [{_local(r.time)}] "{_request_line(r)}" {r.status} {r.size} '
        f'"{_dash(r.referrer)}" "{_dash(r.ua)}" {1000 + r.size % 5000}'
    )


def nginx_json(r: Request) -> str:
    return json.dumps(
        {
            "time_iso8601": r.time.astimezone(LOCAL).isoformat(timespec="seconds"),
            "remote_addr": r.ip,
            "host": HOST,
            "request": _request_line(r),
            "status": str(r.status),
            "body_bytes_sent": str(r.size),
            "http_referer": r.referrer or "",
            "http_user_agent": r.ua or "",
            "sent_http_content_type": r.content_type or "",
        }
    )


def caddy(r: Request) -> str:
    headers: dict[str, list[str]] = {}
    if r.ua:
        headers["User-Agent"] = [r.ua]
    if r.referrer:
        headers["Referer"] = [r.referrer]
    resp = (
        {"Content-Type": [r.content_type + ("; charset=utf-8" if r.content_type == "text/html" else "")]}
        if r.content_type and r.status != 304
        else {}
    )
    return json.dumps(
        {
            "level": "info",
            "ts": round(r.time.timestamp(), 6),
            "logger": "http.log.access.log0",
            "msg": "handled request",
            "request": {
                "remote_ip": r.ip,
                "remote_port": "52144",
                "client_ip": r.ip,
                "proto": "HTTP/2.0",
                "method": r.method,
                "host": HOST,
                "uri": r.path or "/",
                "headers": headers,
            },
            "bytes_read": 0,
            "duration": 0.0012,
            "size": r.size,
            "status": r.status,
            "resp_headers": resp,
        }
    )


def traefik(r: Request) -> str:
    record = {
        "ClientAddr": f"{r.ip}:52144" if ":" not in r.ip else f"[{r.ip}]:52144",
        "ClientHost": r.ip,
        "DownstreamContentSize": r.size,
        "DownstreamStatus": r.status,
        "RequestHost": HOST,
        "RequestMethod": r.method,
        "RequestPath": r.path or "/",
        "RequestProtocol": "HTTP/1.1",
        "RouterName": "bakery@docker",
        "StartUTC": r.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": "info",
        "msg": "",
    }
    if r.ua:
        record["request_User-Agent"] = r.ua
    if r.referrer:
        record["request_Referer"] = r.referrer
    if r.content_type and r.status != 304:
        record["downstream_Content-Type"] = r.content_type
    return json.dumps(record)


CLOUDFRONT_FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    "cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol "
    "cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
    "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end"
)


def cloudfront(r: Request) -> str:
    stem, _, query = r.path.partition("?")
    ua = urllib.parse.quote(r.ua, safe="/();:,.+") if r.ua else "-"
    fields = [
        r.time.strftime("%Y-%m-%d"),
        r.time.strftime("%H:%M:%S"),
        "FRA56-P1",
        str(r.size),
        r.ip,
        r.method,
        "d111111abcdef8.cloudfront.net",
        stem or "-",
        str(r.status),
        _dash(r.referrer),
        ua,
        _dash(query),
        "-",
        "Miss",
        "SOX4xwn4XV6Q4rgb7XiVGOHms_BGlTAC4KyHmureZmBNrjGdRLiNIQ==",
        HOST,
        "https",
        "412",
        "0.102",
        "-",
        "TLSv1.3",
        "TLS_AES_128_GCM_SHA256",
        "Miss",
        "HTTP/2.0",
        "-",
        "-",
        "52144",
        "0.101",
        "Miss",
        _dash(r.content_type),
        str(r.size),
        "-",
        "-",
    ]
    return "\t".join(fields)


IIS_FIELDS = (
    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
    "cs(Referer) sc-status sc-substatus sc-win32-status time-taken"
)


def iis(r: Request) -> str:
    stem, _, query = r.path.partition("?")
    ua = r.ua.replace(" ", "+") if r.ua else "-"
    method = r.method if r.label != "junk" else "-"
    return (
        f"{r.time:%Y-%m-%d %H:%M:%S} 10.0.0.5 {method} {stem or '-'} {_dash(query)} 443 - {r.ip} {ua} "
        f"{_dash(r.referrer)} {r.status} 0 0 {15 + r.size % 200}"
    )


def alb(r: Request) -> str:
    target = f"https://{HOST}:443{r.path}" if r.label != "junk" else ""
    request = f"{r.method} {target} HTTP/1.1" if target else r.method
    client = f"{r.ip}:52144" if ":" not in r.ip else f"[{r.ip}]:52144"
    return (
        f"https {r.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} app/bakery-lb/50dc6c495c0c9188 {client} "
        f"10.0.1.17:80 0.000 0.012 0.000 {r.status} {r.status} 412 {r.size} "
        f'"{request}" "{_dash(r.ua)}" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 '
        f"arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/bakery/73e2d6bc24d8a067 "
        f'"Root=1-58337281-1d84f3d73c47ec4e58577259" "{HOST}" "-" 0 '
        f'{r.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")} "forward" "-" "-" "10.0.1.17:80" "{r.status}" "-" "-"'
    )


def s3(r: Request) -> str:
    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    utc = r.time.strftime("%d/%b/%Y:%H:%M:%S +0000")
    operation = "WEBSITE.GET.OBJECT" if r.method == "GET" else f"WEBSITE.{r.method}.OBJECT"
    key = r.path.split("?")[0].lstrip("/") or "index.html"
    return (
        f'{owner} {HOST} [{utc}] {r.ip} - 3E57427F3EXAMPLE {operation} {key} "{_request_line(r)}" '
        f'{r.status} - {r.size} {r.size} 12 11 "{_dash(r.referrer)}" "{_dash(r.ua)}" - '
        f"s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= - - - "
        f"{HOST}.s3-website.eu-central-1.amazonaws.com - -"
    )


def elb_classic(r: Request) -> str:
    target = f"https://{HOST}:443{r.path}" if r.label != "junk" else ""
    request = f"{r.method} {target} HTTP/1.1" if target else "- - - "
    client = f"{r.ip}:52144"  # an IPv6 client too: address, colon, port, no brackets
    return (
        f"{r.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} bakery-elb {client} 10.0.1.17:80 0.000041 0.012 0.000025 "
        f'{r.status} {r.status} 0 {r.size} "{request}" "{_dash(r.ua)}" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2'
    )


def _local_millis(t: dt.datetime, date_format: str) -> str:
    """Local time to the millisecond, as HAProxy and IIS Advanced Logging write it (no offset)."""
    local = t.astimezone(LOCAL)
    return local.strftime(date_format) + f"{local.strftime('%H:%M:%S')}.{local.microsecond // 1000:03d}"


def haproxy(r: Request) -> str:
    """rsyslog's prefix, then HAProxy's httplog with captured Host, User-Agent and Referer; local times."""
    local = r.time.astimezone(LOCAL)
    accept = _local_millis(r.time, "%d/%b/%Y:")
    day = f"{local.day:>2}"
    captured = f"{HOST}|{r.ua or ''}|{r.referrer or ''}"
    request = _request_line(r) if r.label != "junk" else "<BADREQ>"
    return (
        f"{local:%b} {day} {local:%H:%M:%S} lb1 haproxy[2211]: {r.ip}:52144 [{accept}] www~ bk/web1 "
        f"0/0/1/{r.size % 50}/{r.size % 50 + 1} {r.status} {r.size} - - ---- 3/3/1/1/0 0/0 "
        f'{{{captured}}} {{}} "{request}"'
    )


def ovh(r: Request) -> str:
    return (
        f'{r.ip} {HOST} - [{_local(r.time)}] "{_request_line(r)}" {r.status} {r.size} "{_dash(r.referrer)}" '
        f'"{_dash(r.ua)}"'
    )


def gandi(r: Request) -> str:
    return (
        f'{HOST} {r.ip} - - [{_local(r.time)}] ({r.size % 3} s) "{_request_line(r)}" {r.status} {r.size} '
        f'"{_dash(r.referrer)}" "{_dash(r.ua)}"'
    )


IIS_ADVANCED_FIELDS = (
    "date-local time-local s-computername cs-method cs-uri-stem cs-uri-query c-ip cs(User-Agent) cs(Referer) "
    "cs(Host) sc-status sc-substatus TimeTakenMS"
)


def iis_advanced(r: Request) -> str:
    stem, _, query = r.path.partition("?")
    return (
        f'{_local_millis(r.time, "%Y-%m-%d ")} WEB01 {r.method} {stem} {_dash(query)} "{r.ip}" "{r.ua or ""}" '
        f'"{r.referrer or ""}" "{HOST}" {r.status} 0 {15 + r.size % 200}'
    )


INCAPSULA_FIELDS = (
    "date time cs-vid cs-clapp cs-browsertype c-ip cs(User-Agent) cs-sessionid s-siteid cs-countrycode "
    "s-computername cs-uri cs-version sc-action cs(Referrer) s-ip s-port cs-method cs-uri-query sc-status cs-bytes"
)


def incapsula(r: Request) -> str:
    stem, _, query = r.path.partition("?")
    values = [
        r.time.strftime("%Y-%m-%d"),
        r.time.strftime("%H:%M:%S"),
        f"v-{zlib.crc32(r.ip.encode()):08x}",
        "Browser" if r.client == "person" else "Bot",
        "Browser" if r.client == "person" else "Crawler",
        r.ip,
        r.ua or "",
        "6110009900217",
        "9876543",
        "DE",
        HOST,
        f"{HOST}{stem}",
        "HTTP/1.1",
        "REQ_PASSED",
        r.referrer or "",
        "192.0.2.15",
        "443",
        r.method,
        query,
        str(r.status),
        str(r.size),
    ]
    return " ".join('"' + v.replace('"', '""') + '"' for v in values)


# --------------------------------------------------------------------------- files


def _write(path: Path, lines: list[str], header: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (header + "".join(line + "\n" for line in lines)).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)


def write_samples(requests: list[Request]) -> None:
    renderers: dict[str, tuple[str, Callable[[Request], str]]] = {
        "common/access.log": ("", common),
        "vhost_combined/other_vhosts_access.log": ("", vhost_combined),
        "nginx_custom/access.log": ("", nginx_custom),
        "apache_custom/access.log": ("", apache_custom),
        "nginx_json/access.log.gz": ("", nginx_json),
        "caddy/access.log.gz": ("", caddy),
        "traefik/access.log.gz": ("", traefik),
        "alb/elb.log.gz": ("", alb),
        "elb/classic.log.gz": ("", elb_classic),
        "s3/bucket.log.gz": ("", s3),
        "haproxy/haproxy.log.gz": ("", haproxy),
        "ovh/ovh.log.gz": ("", ovh),
        "gandi/gandi.log.gz": ("", gandi),
    }
    for name, (header, render) in renderers.items():
        _write(OUT / name, [render(r) for r in _logged(requests, name)], header)
    cf_header = f"#Version: 1.0\n#Fields: {CLOUDFRONT_FIELDS}\n"
    _write(OUT / "cloudfront/distribution.log.gz", [cloudfront(r) for r in _logged(requests, "cloudfront")], cf_header)
    iis_header = (
        "#Software: Microsoft Internet Information Services 10.0\n#Version: 1.0\n"
        f"#Date: {START:%Y-%m-%d %H:%M:%S}\n#Fields: {IIS_FIELDS}\n"
    )
    _write(OUT / "iis/u_ex240304.log", [iis(r) for r in _logged(requests, "iis")], iis_header)
    advanced_header = (
        "#Software: IIS Advanced Logging Module\n\n#Version: 1.0\n    \n"
        f"#Start-Date: {START.astimezone(LOCAL):%Y-%m-%d %H:%M:%S}.000\n#Fields:   {IIS_ADVANCED_FIELDS}\n"
    )
    lines = [iis_advanced(r) for r in _logged(requests, "iis")]
    _write(OUT / "iis_advanced/advanced.log.gz", lines, advanced_header)
    incapsula_header = f"#Software: Incapsula LOGS API\n#Version: 1.1\n#Fields: {INCAPSULA_FIELDS}\n"
    _write(OUT / "incapsula/incapsula.log.gz", [incapsula(r) for r in _logged(requests, "iis")], incapsula_header)
    _write_rotated(requests)
    (OUT / "nginx_custom/log_format.txt").write_text(NGINX_CUSTOM + "\n")
    (OUT / "apache_custom/log_format.txt").write_text(f'LogFormat "{APACHE_CUSTOM_FORMAT}" custom\n')


def _logged(requests: list[Request], name: str) -> list[Request]:
    """nginx and Apache log a TLS handshake on the HTTP port; CDNs, load balancers, Caddy and IIS do not."""
    keeps_junk = name.split("/")[0] in (
        "common",
        "vhost_combined",
        "nginx_custom",
        "apache_custom",
        "nginx_json",
        "elb",
        "haproxy",
        "ovh",
        "gandi",
    )
    return [r for r in requests if keeps_junk or r.label != "junk"]


def _write_rotated(requests: list[Request]) -> None:
    """combined, rotated at local midnight: .2.gz the oldest day, .1, then the live file."""
    by_day: dict[dt.date, list[str]] = defaultdict(list)
    for r in requests:
        by_day[r.time.astimezone(LOCAL).date()].append(combined(r))
    days = sorted(by_day)
    names = ["access.log.2.gz", "access.log.1", "access.log"]
    groups = [days[:-2], days[-2:-1], days[-1:]]
    for name, group in zip(names, groups, strict=True):
        lines = [line for day in group for line in by_day[day]]
        if name == "access.log.1":
            lines.insert(len(lines) // 2, TRUNCATED)
        _write(OUT / "combined" / name, lines)


#: A line cut by a crash (disk full): matches no format, rejected with its text.
TRUNCATED = '203.0.113.77 - - [05/Mar/2024:12:00:00 +0100] "GET /blog/rye-br'


def expected(requests: list[Request]) -> dict[str, object]:
    """What an import must show, from the generator's labels."""

    def figures(counted: list[Request], with_ua: bool = True) -> dict[str, object]:
        day = lambda r: r.time.strftime("%Y-%m-%d")  # noqa: E731
        visitors: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
        visits: dict[str, set[tuple[str, str | None, int]]] = defaultdict(set)
        for r, visit in zip(counted, _visits(counted, with_ua), strict=True):
            visitors[day(r)].add((r.ip, r.ua if with_ua else None))
            visits[day(r)].add((r.ip, r.ua if with_ua else None, visit))
        return {
            "pageviews": len(counted),
            "pageviews_by_day": dict(sorted(Counter(map(day, counted)).items())),
            "pageviews_by_path": dict(sorted(Counter(r.path.split("?")[0] for r in counted).items())),
            "visitors_by_day": {d: len(v) for d, v in sorted(visitors.items())},
            "visits_by_day": {d: len(v) for d, v in sorted(visits.items())},
        }

    people = [r for r in requests if r.label == "page" and r.client == "person"]
    # common logs have no user agent: every client's page views count, one visitor per ip and day
    anonymous = [r for r in requests if r.label == "page"]
    return {
        "host": HOST,
        "lines": len(requests),
        "truncated_lines_in_combined": 1,
        **figures(people),
        "common": figures(anonymous, with_ua=False)
        | {"note": "no user agent: crawler and feed reader page views count"},
        "labels": dict(sorted(Counter(f"{r.client}:{r.label}" for r in requests).items())),
    }


def _visits(counted: list[Request], with_ua: bool) -> list[int]:
    """The 30-minute rule, per client, in time order: the visit number of each page view.

    For people it gives their simulated visits (pages minutes apart, visits hours
    apart); it is needed for the clients of a log without user agents.
    """
    last: dict[tuple[str, str | None], dt.datetime] = {}
    number: dict[tuple[str, str | None], int] = {}
    out = []
    for r in counted:
        key = (r.ip, r.ua if with_ua else None)
        if key not in last or (r.time - last[key]).total_seconds() > 30 * 60:
            number[key] = number.get(key, 0) + 1
        last[key] = r.time
        out.append(number[key])
    return out


def write_bench(path: Path, lines: int) -> None:
    """A big gzipped combined log: the sample's requests repeated day after day, with fresh ips."""
    rng = random.Random(SEED)
    base = simulate(rng)
    span = dt.timedelta(days=DAYS)
    rounds = lines // max(1, len(base)) + 1
    back = span * rounds + dt.timedelta(days=30)  # the whole log ends a month before the samples start
    written = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
        round_ = 0
        while written < lines:
            shift = span * round_ - back
            for r in base:
                if written >= lines:
                    break
                ip = r.ip if r.client != "person" else f"198.18.{round_ % 250}.{zlib.crc32(r.ip.encode()) % 250}"
                moved = Request(
                    r.time + shift, ip, r.ua, r.method, r.path, r.status, r.size, r.referrer, r.label, r.client
                )
                out.write(combined(moved) + "\n")
                written += 1
            round_ += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, help="write a big gzipped combined log here instead of the samples")
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines of the --bench log")
    args = parser.parse_args()
    if args.bench:
        write_bench(args.bench, args.lines)
        return
    requests = simulate(random.Random(SEED))
    write_samples(requests)
    (OUT / "expected.json").write_text(json.dumps(expected(requests), indent=2) + "\n")


if __name__ == "__main__":
    main()
