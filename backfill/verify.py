"""``backfill verify``: read an import back from Umami and compare it with what the
source and the mapping imply.

Expected side
    The sources are read exactly as ``import`` reads them (``api.plan`` +
    ``api.prepare`` with the same mapping, selection and location/visit options),
    and every chunk's sendable rows are folded into the figures Umami should
    show, counted the way Umami counts (``UMAMI_CONTRACT.md``, "How Umami counts"):

    - per day (in ``--timezone``, from ``_ts``): pageviews (``type`` event, no
      ``name``); visitors (distinct payload ids among that day's pageviews);
      visits (distinct Umami visit ids among them: a visit id is (session, clock
      hour); with ``--visits hourly`` or without a source visit column the key is
      (visitor, hour of the row); with ``--visits exact`` it is (visitor, hour of
      the FIRST row of that source visit over the whole import), because the
      sender gives every event of a source visit the visit id of its first
      event); custom events per name (rows with a ``name``, which count as no
      visitor or visit); revenue per currency (``data.revenue`` > 0 with a
      ``data.currency``);
    - over the whole range: visitors per URL path and per referrer domain (Umami
      3's metrics count distinct sessions, leave out empty and self referrers),
      and sessions per country, browser and OS (a session's attributes come from
      its visitor's first row, any type, in send order).

    Memory: per-day counts are sums (a few numbers per day). Distinct counts
    need sets, so each chunk is reduced to its unique (day, visitor),
    (day, visitor, visit, hour), (path, visitor) and (referrer, visitor) pairs,
    with 64-bit hashes in place of the ids, and the parts are merged (made
    unique again) whenever they grow past a bound. Memory is therefore about
    12-24 bytes per distinct pair, not per row: 10,000 visitors a day for five
    years is ~18M (day, visitor) pairs, ~0.5 GB with the visit and path pairs.
    Two tables are kept per visitor and per source visit: the visitor's first
    row (its session attributes, ~60 bytes) and, with ``--visits exact``, the
    first time of every source visit (~16 bytes).

Found side (Umami's read API, authenticated with ``umami_api.auth_headers``)
    ``/stats`` once per day that has expected or found data (pageviews,
    visitors, visits: about 4 requests at a time, so a few thousand days take a
    few minutes against a real Umami), ``/pageviews?unit=day`` and
    ``/events/series?unit=day`` per window of at most 90 days (Umami replaces
    ``unit=day`` by a coarser unit on long ranges), ``/metrics`` once per list
    over the whole range, and ``/stats`` plus ``/metrics?type=event`` over the
    last 30 days after the range, to see events that landed "now".

    Revenue is NOT compared: Umami 3 reads it through ``POST /api/reports/revenue``,
    whose request and answer have changed between releases (and the fake server
    does not serve it); the expected revenue is printed and reported. Bounces,
    visit time, devices, regions, cities, titles and event data are not compared.

Nothing here prints; ``render`` makes the text and ``to_dict`` the JSON.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from .aggregate import Fold
from .config import DEFAULT_USER_AGENT, RunConfig
from .errors import ConfigError, TerminalSendError
from .geo import SEPARATOR as GEO_SEPARATOR
from .geo import geo_key_expr, sends_ip
from .rejects import RecordFile
from .schema import COL_FILE, COL_ROW, COL_TS, COL_VISIT, COL_VISITOR, COL_VKEY
from .umami_api import auth_headers
from .visits import visit_key_expr

#: Reader formats whose events are synthesized from per-day totals.
AGGREGATED_FORMATS = ("ga_report", "plausible_csv")
#: Their default tolerance (see ``default_tolerance``).
AGGREGATED_TOLERANCE = "1%"
#: Days per /pageviews and /events/series request (Umami demotes unit=day beyond ~6 months).
WINDOW_DAYS = 90
#: /stats requests in flight.
STATS_WORKERS = 4
#: Values asked for per /metrics list (Umami's own default is 500).
METRICS_LIMIT = 1000
#: How far back from now "landed now" looks, after the expected range.
RECENT_DAYS = 30
#: Lines of each top-N list.
DEFAULT_TOP = 10
#: Merge the partial sets once they hold this many rows.
_MERGE_ROWS = 1 << 21
_SEED = 0x5EED_B00C

DAY_METRICS = ("pageviews", "visitors", "visits", "events")
#: Top-N lists: name -> (Umami /metrics type, what is counted).
TOP_LISTS: dict[str, tuple[str, str]] = {
    "paths": ("path", "visitors per URL path"),
    "referrers": ("referrer", "visitors per referrer domain"),
    "countries": ("country", "sessions per country"),
    "browsers": ("browser", "sessions per browser"),
    "os": ("os", "sessions per OS"),
}
NONE_LABEL = "(none)"


# --------------------------------------------------------------------------- tolerance


@dataclass(frozen=True)
class Tolerance:
    """How far a found figure may be from the expected one: ``0`` (exact), ``N``
    (absolute) or ``P%`` (relative to the expected figure)."""

    absolute: float = 0.0
    relative: float = 0.0
    text: str = "0"

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                value = float(raw[:-1])
                if not (0 <= value < 100) or math.isnan(value):
                    raise ValueError
                return cls(relative=value / 100, text=raw)
            value = float(raw)
            if value < 0 or math.isnan(value) or math.isinf(value):
                raise ValueError
            return cls(absolute=value, text=raw)
        except ValueError:
            raise ConfigError(
                f"--tolerance {text!r}: use 0 (exact), a count (e.g. 2) or a percentage (e.g. 1%)"
            ) from None

    @property
    def exact(self) -> bool:
        return self.absolute == 0 and self.relative == 0

    def allows(self, expected: float, found: float) -> bool:
        return abs(found - expected) <= max(self.absolute, self.relative * abs(expected)) + 1e-9

    def describe(self) -> str:
        return "exact" if self.exact else self.text


def default_tolerance(reader_format: str | None) -> Tolerance:
    """Exact for event sources. Aggregated sources (GA reports, Plausible's CSV export)
    get 1%: their events are synthesized so that Umami's counts reproduce the report,
    which they do only as closely as the report's tables allow (the synthesizers print
    the residuals); verify compares with the synthesized events, and the margin keeps
    it about lost or misplaced data. ``--tolerance 0`` asks for exact agreement."""
    if reader_format in AGGREGATED_FORMATS:
        return Tolerance.parse(AGGREGATED_TOLERANCE)
    return Tolerance()


# --------------------------------------------------------------------------- expected side


def _hash(expr: pl.Expr) -> pl.Expr:
    return expr.hash(seed=_SEED)


def _unique(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.unique()


def _first_per_visitor(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(["_t", "_f", "_r"]).group_by("vh", maintain_order=True).first()


def _min_per_visit(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(COL_VKEY).agg(pl.col("first").min())


_DECODE_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_URI_RESERVED = set(";/?:@&=+$,#")


def _decode_uri(text: str) -> str:
    """JavaScript's ``decodeURI``: %XX runs decoded, reserved characters kept encoded."""
    if "%" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        run = match.group()
        try:
            decoded = bytes(int(run[i + 1 : i + 3], 16) for i in range(0, len(run), 3)).decode("utf-8")
        except UnicodeDecodeError:
            return run
        out, pos = [], 0
        for ch in decoded:
            width = len(ch.encode("utf-8")) * 3
            out.append(run[pos : pos + width] if ch in _URI_RESERVED else ch)
            pos += width
        return "".join(out)

    return _DECODE_RUN.sub(one, text)


def _split_url(url: str | None, hostname: str | None) -> tuple[str, str]:
    """(url_path, stored hostname) as Umami derives them from a payload's url and hostname."""
    base = hostname or "localhost"
    if url is None:
        return "", hostname or "localhost"
    try:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(f"https://{base}/", url.strip()))
    except ValueError:
        return "", hostname or "localhost"
    path = parts.path or "/"
    if parts.fragment:
        path += "#" + parts.fragment
    stored = hostname or (parts.hostname or "").removeprefix("www.")
    return _decode_uri(path)[:500], stored


def _referrer_domain(referrer: str, stored_host: str) -> str | None:
    """The referrer domain Umami lists (a leading ``www.`` dropped); None when it leaves it
    out (empty, or the page's own hostname)."""
    try:
        host = urllib.parse.urlsplit(urllib.parse.urljoin(f"https://{stored_host}/", referrer.strip())).hostname
    except ValueError:
        return None
    domain = (host or "").removeprefix("www.")
    # Umami 3's referrer list: `referrer_domain != regexp_replace(hostname, '^www.', '')`
    if not domain or not stored_host or domain == re.sub(r"^www.", "", stored_host):
        return None
    return domain


def _col(frame: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.String).alias(name)


@dataclass
class TopExpected:
    """An expected top list: full counts, or why it cannot be predicted."""

    counts: Counter[Any] = field(default_factory=Counter)
    unpredictable: str | None = None


@dataclass
class Expected:
    """What Umami should show for the imported rows."""

    timezone: str
    visits_mode: str
    rows: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    pageviews: dict[dt.date, int] = field(default_factory=dict)
    visitors: dict[dt.date, int] = field(default_factory=dict)
    visits: dict[dt.date, int] = field(default_factory=dict)
    events: dict[dt.date, Counter[str]] = field(default_factory=dict)
    revenue: dict[str, float] = field(default_factory=dict)
    top: dict[str, TopExpected] = field(default_factory=dict)
    #: session user agents by share (for "every session has the same OS" when the OS comes from them)
    user_agents: Counter[int] = field(default_factory=Counter)

    @property
    def days(self) -> list[dt.date]:
        return sorted(set(self.pageviews) | set(self.events))

    def day_figures(self, day: dt.date) -> dict[str, int]:
        return {
            "pageviews": self.pageviews.get(day, 0),
            "visitors": self.visitors.get(day, 0),
            "visits": self.visits.get(day, 0),
            "events": sum(self.events.get(day, Counter()).values()),
        }


class ExpectedCollector:
    """Folds every chunk's sendable rows (``api.prepare``'s ``observe``) into ``Expected``."""

    def __init__(
        self,
        timezone: str,
        *,
        exact_visits: bool,
        geo: str = "auto",
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.timezone = timezone
        self.exact_visits = exact_visits
        self.geo = geo
        #: Rows without a userAgent are sent with this UA: Umami detects no browser/OS in
        #: the importer's default one; another one's browser/OS cannot be predicted here.
        self.user_agent = user_agent
        self._default_ua = user_agent == DEFAULT_USER_AGENT
        self.rows = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.pageviews: Counter[int] = Counter()
        self.events: Counter[tuple[int, str]] = Counter()
        self.revenue: Counter[str] = Counter()
        self._visitors = Fold(_unique, min_rows=_MERGE_ROWS)  # (day, vh) of pageviews
        self._visits = Fold(_unique, min_rows=_MERGE_ROWS)  # (day, vh, _vkey, hour) of pageviews
        self._visit_first = Fold(_min_per_visit, min_rows=_MERGE_ROWS)  # (_vkey, first) of every row
        self._paths = Fold(_unique, min_rows=_MERGE_ROWS)  # (path, vh) of pageviews
        self._referrers = Fold(_unique, min_rows=_MERGE_ROWS)  # (referrer, vh) of pageviews
        self._sessions = Fold(_first_per_visitor, min_rows=_MERGE_ROWS)  # the first row of each visitor
        self._url_cache: dict[tuple[str | None, str | None], tuple[str, str]] = {}

    def __call__(self, good: pl.DataFrame) -> None:
        self.add(good)

    def add(self, good: pl.DataFrame) -> None:
        if good.height == 0:
            return
        self.rows += good.height
        lo, hi = good[COL_TS].min(), good[COL_TS].max()
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)  # type: ignore[type-var,assignment]
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)  # type: ignore[type-var,assignment]
        day = (
            pl.from_epoch(pl.col(COL_TS), time_unit="s")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(self.timezone)
            .dt.date()
            .cast(pl.Int32)
        )
        exact = self.exact_visits and COL_VISIT in good.columns
        vkey = visit_key_expr() if exact else pl.lit(None, dtype=pl.UInt64)
        is_event = pl.col("type") == "event" if "type" in good.columns else pl.lit(True)
        frame = good.with_columns(
            day.alias("day"),
            _hash(pl.col(COL_VISITOR)).alias("vh"),
            vkey.cast(pl.UInt64).alias(COL_VKEY),
            (pl.col(COL_TS) // 3600).alias("hour"),
            _col(good, "name").alias("name"),
            is_event.alias("_event"),
        )
        events = frame.filter(pl.col("_event"))
        pv = events.filter(pl.col("name").is_null())
        if pv.height:
            for d, n in pv.group_by("day").len().iter_rows():
                self.pageviews[d] += n
            self._visitors.add(pv.select("day", "vh").unique())
            hour = pl.when(pl.col(COL_VKEY).is_null()).then(pl.col("hour")).otherwise(None)
            self._visits.add(pv.select("day", "vh", COL_VKEY, hour.alias("hour")).unique())
            self._add_pages(pv)
        if exact:
            firsts = frame.filter(pl.col(COL_VKEY).is_not_null()).group_by(COL_VKEY).agg(pl.col(COL_TS).min())
            self._visit_first.add(firsts.rename({COL_TS: "first"}))
        custom = events.filter(pl.col("name").is_not_null())
        if custom.height:
            for d, name, n in custom.group_by("day", "name").len().iter_rows():
                self.events[(d, name)] += n
        if {"data.revenue", "data.currency"} <= set(good.columns):
            amount = pl.col("data.revenue").cast(pl.Float64, strict=False)
            paid = events.filter((amount > 0) & pl.col("data.currency").is_not_null())
            if paid.height:
                sums = paid.group_by("data.currency").agg(amount.sum())
                for currency, total in sums.iter_rows():
                    self.revenue[str(currency)] += float(total)
        self._add_sessions(frame)

    def _add_pages(self, pv: pl.DataFrame) -> None:
        """(path, visitor) and (referrer domain, visitor) pairs of one chunk's pageviews."""
        url, host = _col(pv, "url"), _col(pv, "hostname")
        pairs = pv.select(url.alias("url"), host.alias("hostname")).unique()
        cache = self._url_cache
        if len(cache) > 200_000:
            cache.clear()
        paths, stored = [], []
        for u, h in pairs.iter_rows():
            hit = cache.get((u, h))
            if hit is None:
                hit = cache[(u, h)] = _split_url(u, h)
            paths.append(hit[0])
            stored.append(hit[1])
        table = pairs.with_columns(pl.Series("path", paths, dtype=pl.String), pl.Series("_host", stored))
        rows = pv.select(url.alias("url"), host.alias("hostname"), "vh", _col(pv, "referrer").alias("referrer"))
        rows = rows.join(table, on=["url", "hostname"], how="left", nulls_equal=True)
        self._paths.add(rows.select("path", "vh").unique())
        refs = rows.filter(pl.col("referrer").is_not_null())
        if refs.height:
            combos = refs.select("referrer", "_host").unique()
            domains = [_referrer_domain(r, h) for r, h in combos.iter_rows()]
            combos = combos.with_columns(pl.Series("domain", domains, dtype=pl.String))
            joined = refs.join(combos, on=["referrer", "_host"], how="left")
            self._referrers.add(joined.filter(pl.col("domain").is_not_null()).select("domain", "vh").unique())

    def _add_sessions(self, frame: pl.DataFrame) -> None:
        """Each visitor's first row of this chunk, with the session attributes it gives."""
        cols = frame.columns
        ua = _col(frame, "userAgent")
        sent_ua = pl.coalesce(ua, pl.lit(self.user_agent))
        attrs = []
        for name in ("browser", "os"):
            value = _col(frame, name)
            # An explicit value wins; else Umami parses the UA: the importer's default UA gives none.
            known = value.is_not_null() | (ua.is_null() & pl.lit(self._default_ua))
            attrs += [value.alias(name), known.alias(f"{name}_known")]
        key = geo_key_expr(self.geo, cols)
        country = pl.when(key != "").then(key.str.split(GEO_SEPARATOR).list.first()).otherwise(None)
        ip_sent = (
            pl.col("ip").is_not_null() if sends_ip(self.geo) and "ip" in cols else pl.lit(False)
        )  # a payload ip: Umami's GeoIP decides, which cannot be predicted here
        attrs += [country.alias("country"), (~ip_sent).alias("country_known")]
        first = frame.select(
            "vh",
            pl.col(COL_TS).alias("_t"),
            pl.col(COL_FILE).alias("_f"),
            pl.col(COL_ROW).alias("_r"),
            *attrs,
            _hash(sent_ua).alias("ua"),
        )
        self._sessions.add(_first_per_visitor(first))

    def finish(self) -> Expected:
        tz = self.timezone
        out = Expected(timezone=tz, visits_mode="exact" if self.exact_visits else "hourly", rows=self.rows)
        out.first_ts, out.last_ts = self.first_ts, self.last_ts
        epoch = dt.date(1970, 1, 1)

        def date(d: int) -> dt.date:
            return epoch + dt.timedelta(days=int(d))

        out.pageviews = {date(d): n for d, n in self.pageviews.items()}
        for (d, name), n in self.events.items():
            out.events.setdefault(date(d), Counter())[name] += n
        out.revenue = {k: round(v, 4) for k, v in sorted(self.revenue.items())}
        visitors = self._visitors.result({"day": pl.Int32, "vh": pl.UInt64})
        out.visitors = {date(d): n for d, n in visitors.group_by("day").len().iter_rows()}
        visits = self._visits.result({"day": pl.Int32, "vh": pl.UInt64, COL_VKEY: pl.UInt64, "hour": pl.Int64})
        firsts = self._visit_first.result({COL_VKEY: pl.UInt64, "first": pl.Int64})
        if firsts.height:
            visits = visits.join(firsts, on=COL_VKEY, how="left").with_columns(
                pl.coalesce(pl.col("hour"), pl.col("first") // 3600).alias("hour")
            )
        per_day = visits.select("day", "vh", "hour").unique().group_by("day").len()
        out.visits = {date(d): n for d, n in per_day.iter_rows()}
        for name, fold, column in (("paths", self._paths, "path"), ("referrers", self._referrers, "domain")):
            pairs = fold.result({column: pl.String, "vh": pl.UInt64})
            out.top[name] = TopExpected(Counter(dict(pairs.group_by(column).len().iter_rows())))
        sessions = self._sessions.result({"vh": pl.UInt64})
        with_pageviews = visitors.select("vh").unique()
        if sessions.height:
            sessions = sessions.join(with_pageviews, on="vh", how="semi")
        for name, column, why in (
            ("browsers", "browser", "they come from user agents Umami parses (map `browser` to compare)"),
            ("os", "os", "they come from user agents Umami parses (map `os` to compare)"),
            ("countries", "country", "they come from Umami's GeoIP lookup of the payload ip"),
        ):
            if sessions.height == 0:
                out.top[name] = TopExpected()
                continue
            unknown = sessions.filter(~pl.col(f"{column}_known")).height
            if unknown:
                out.top[name] = TopExpected(unpredictable=f"{unknown:,} sessions: {why}")
            else:  # Umami's session metrics leave out empty values (`and column != ''`)
                listed = sessions.filter(pl.col(column).is_not_null() & (pl.col(column) != ""))
                out.top[name] = TopExpected(Counter(dict(listed.group_by(column).len().iter_rows())))
        if sessions.height:
            out.user_agents = Counter(dict(sessions.group_by("ua").len().iter_rows()))
        return out


def collect_expected(
    config: RunConfig,
    timezone: str,
    progress: Callable[..., None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[Expected, str | None]:
    """Read the sources as ``import`` would; return the expected figures and the reader format."""
    from . import api

    plan_ = api.plan(config)
    exact = api.visits_mode(config, plan_.mapping) == "exact"
    collector = ExpectedCollector(timezone, exact_visits=exact, geo=config.geo, user_agent=config.user_agent)
    scratch = Path(tempfile.mkdtemp(prefix="backfill-verify-"))
    try:
        rejects = RecordFile(scratch / "rejects.ndjson")
        try:
            api.prepare(plan_, scratch / "spill", rejects, progress, stop, spill=False, observe=collector)
        finally:
            rejects.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return collector.finish(), plan_.read_options.format


# --------------------------------------------------------------------------- found side


class ReadError(ConfigError):
    """Umami could not be read (connection, credentials, website): exit status 2."""


class EndpointMissing(ReadError):
    """The server has no such read endpoint (an older or newer Umami)."""


class UmamiReader:
    """Umami's read API for one website; credentials stay in this object's headers."""

    def __init__(
        self,
        host: str,
        website: str,
        *,
        insecure: bool = False,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.website = website
        self.requests = 0
        self._lock = threading.Lock()
        self.client = httpx.Client(
            headers={"User-Agent": DEFAULT_USER_AGENT},
            verify=not insecure,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=STATS_WORKERS + 1, max_keepalive_connections=STATS_WORKERS + 1),
            transport=transport,
        )
        try:
            self.headers = auth_headers(self.client, self.host, env)
        except TerminalSendError as exc:
            self.client.close()
            raise ReadError(str(exc)) from None
        except BaseException:
            self.client.close()
            raise

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> UmamiReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = f"{self.host}/api/websites/{self.website}{path}"
        with self._lock:
            self.requests += 1
        try:
            response = self.client.get(url, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise ReadError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise ReadError(f"{url} answered {response.status_code}: these credentials may not read this website")
        if response.status_code == 404:
            if not path:
                raise ReadError(f"website {self.website} does not exist on {self.host}: check --website")
            raise EndpointMissing(f"{url} answered 404: this Umami has no such endpoint")
        if response.status_code != 200:
            raise ReadError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise ReadError(f"{url} did not answer JSON (is --host Umami itself?)") from None

    def website_info(self) -> dict[str, Any]:
        return self.get("")

    def stats(self, start_ms: int, end_ms: int) -> dict[str, int]:
        body = self.get("/stats", {"startAt": start_ms, "endAt": end_ms})
        return {k: _stat_value(body.get(k)) for k in ("pageviews", "visitors", "visits", "bounces", "totaltime")}

    def pageview_days(self, start_ms: int, end_ms: int, timezone: str) -> dict[dt.date, tuple[int, int]]:
        params = {"startAt": start_ms, "endAt": end_ms, "unit": "day", "timezone": timezone}
        body = self.get("/pageviews", params)
        out: dict[dt.date, list[int]] = {}
        for key, index in (("pageviews", 0), ("sessions", 1)):
            for point in body.get(key) or []:
                day = _bucket_day(point.get("x"))
                out.setdefault(day, [0, 0])[index] += int(point.get("y") or 0)
        return {d: (v[0], v[1]) for d, v in out.items()}

    def event_days(self, start_ms: int, end_ms: int, timezone: str) -> dict[dt.date, Counter[str]]:
        params = {"startAt": start_ms, "endAt": end_ms, "unit": "day", "timezone": timezone}
        out: dict[dt.date, Counter[str]] = {}
        for point in self.get("/events/series", params) or []:
            out.setdefault(_bucket_day(point.get("t")), Counter())[str(point.get("x"))] += int(point.get("y") or 0)
        return out

    def metrics(self, kind: str, start_ms: int, end_ms: int, limit: int = METRICS_LIMIT) -> list[tuple[Any, int]]:
        params = {"startAt": start_ms, "endAt": end_ms, "type": kind, "limit": limit}
        return [(row.get("x") or None, int(row.get("y") or 0)) for row in self.get("/metrics", params) or []]


def _stat_value(value: Any) -> int:
    """Umami 3 answers numbers; Umami 2 answered ``{"value": n, "prev": m}``."""
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _bucket_day(label: Any) -> dt.date:
    """A day bucket's date: ``2024-03-01 00:00:00`` (local) or ``2024-03-01T00:00:00Z`` (UTC)."""
    text = str(label)
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ReadError(f"Umami answered a day bucket {text!r} that is not a date") from None


# --------------------------------------------------------------------------- comparison


@dataclass
class DayRow:
    day: dt.date
    expected: dict[str, int]
    found: dict[str, int]
    differs: list[str] = field(default_factory=list)
    events_expected: Counter[str] = field(default_factory=Counter)
    events_found: Counter[str] = field(default_factory=Counter)
    events_differ: list[str] = field(default_factory=list)


@dataclass
class TopRow:
    value: Any
    expected: int
    found: int
    differs: bool


@dataclass
class TopList:
    name: str
    counted: str
    rows: list[TopRow] = field(default_factory=list)
    unpredictable: str | None = None
    found_total: int = 0


@dataclass
class Difference:
    where: str  # a day (YYYY-MM-DD) or "top <list>"
    metric: str
    expected: int
    found: int

    def text(self) -> str:
        delta = self.found - self.expected
        return f"{self.where} {self.metric}: expected {self.expected:,}, found {self.found:,} ({delta:+,})"


@dataclass
class Diagnosis:
    kind: str
    title: str
    text: str


@dataclass
class VerifyResult:
    host: str
    website: str
    timezone: str
    tolerance: Tolerance
    visits_mode: str
    expected_rows: int
    first_day: dt.date | None
    last_day: dt.date | None
    days: list[DayRow] = field(default_factory=list)
    top: list[TopList] = field(default_factory=list)
    revenue: dict[str, float] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)  # found after the range, in the last RECENT_DAYS
    diagnoses: list[Diagnosis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    requests: int = 0
    elapsed_s: float = 0.0

    @property
    def matches(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "website": self.website,
            "timezone": self.timezone,
            "tolerance": self.tolerance.describe(),
            "visits": self.visits_mode,
            "expected_rows": self.expected_rows,
            "range": {
                "first_day": self.first_day.isoformat() if self.first_day else None,
                "last_day": self.last_day.isoformat() if self.last_day else None,
            },
            "days": [
                {
                    "day": r.day.isoformat(),
                    "expected": r.expected,
                    "found": r.found,
                    "differs": r.differs,
                    "events": {
                        name: {"expected": r.events_expected.get(name, 0), "found": r.events_found.get(name, 0)}
                        for name in sorted(set(r.events_expected) | set(r.events_found))
                    },
                    "events_differ": r.events_differ,
                }
                for r in self.days
            ],
            "top": {
                t.name: {
                    "counted": t.counted,
                    "compared": t.unpredictable is None,
                    "unpredictable": t.unpredictable,
                    "rows": [
                        {
                            "value": r.value,
                            "expected": r.expected if t.unpredictable is None else None,
                            "found": r.found,
                            "differs": r.differs,
                        }
                        for r in t.rows
                    ],
                }
                for t in self.top
            },
            "revenue_expected": self.revenue,
            "revenue_compared": False,
            "after_range_recent": self.recent,
            "diagnoses": [{"kind": d.kind, "title": d.title, "text": d.text} for d in self.diagnoses],
            "notes": self.notes,
            "differences": [
                {"where": d.where, "metric": d.metric, "expected": d.expected, "found": d.found}
                for d in self.differences
            ],
            "verdict": "match" if self.matches else "different",
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class VerifySettings:
    host: str
    website: str
    timezone: str = "UTC"
    tolerance: Tolerance | None = None  # None: default_tolerance(reader format)
    top: int = DEFAULT_TOP
    insecure: bool = False
    timeout: float = 60.0


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--timezone {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


def _day_bounds(day: dt.date, zone: zoneinfo.ZoneInfo) -> tuple[int, int]:
    """[start, end] of a local day in unix ms, both inclusive (Umami's ``between``)."""
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1


def _clip(bounds: tuple[int, int], since: int | None, until: int | None) -> tuple[int, int]:
    lo, hi = bounds
    if since is not None:
        lo = max(lo, since * 1000)
    if until is not None:
        hi = min(hi, until * 1000 - 1)
    return lo, hi


def _windows(first: dt.date, last: dt.date, size: int = WINDOW_DAYS) -> Iterable[tuple[dt.date, dt.date]]:
    day = first
    while day <= last:
        end = min(last, day + dt.timedelta(days=size - 1))
        yield day, end
        day = end + dt.timedelta(days=1)


def run_verify(
    config: RunConfig,
    settings: VerifySettings,
    progress: Callable[..., None] | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> VerifyResult:
    """Compute the expected figures, read Umami, compare and diagnose."""
    started = time.monotonic()
    say = say or (lambda _m: None)
    zone = check_timezone(settings.timezone)
    reader = UmamiReader(settings.host, settings.website, insecure=settings.insecure, timeout=settings.timeout, env=env)
    with reader:
        site = reader.website_info()  # fails fast on a wrong website or credentials, before reading sources
        expected, reader_format = collect_expected(config, settings.timezone, progress, stop)
        tolerance = settings.tolerance or default_tolerance(reader_format)
        result = VerifyResult(
            host=settings.host,
            website=settings.website,
            timezone=settings.timezone,
            tolerance=tolerance,
            visits_mode=expected.visits_mode,
            expected_rows=expected.rows,
            first_day=expected.days[0] if expected.days else None,
            last_day=expected.days[-1] if expected.days else None,
            revenue=expected.revenue,
        )
        if not expected.days:
            raise ConfigError("the sources hold no row that import would send: nothing to verify")
        if settings.tolerance is None and not tolerance.exact:
            result.notes.append(
                f"tolerance {tolerance.describe()} (the default for {reader_format}: its events are synthesized "
                "from per-day totals); --tolerance 0 compares exactly"
            )
        say(f"reading website {site.get('name', '?')} ({site.get('domain', '?')}) on {settings.host}")
        _read_and_compare(reader, config, settings, zone, expected, result, now)
        result.requests = reader.requests
    result.elapsed_s = time.monotonic() - started
    return result


def _read_and_compare(
    reader: UmamiReader,
    config: RunConfig,
    settings: VerifySettings,
    zone: zoneinfo.ZoneInfo,
    expected: Expected,
    result: VerifyResult,
    now: float | None,
) -> None:
    tz = settings.timezone
    since, until = config.since, config.until
    first, last = expected.days[0], expected.days[-1]
    one = dt.timedelta(days=1)
    # Per-day series over the range and one day either side (events shifted by a zone error land there).
    series_pv: dict[dt.date, tuple[int, int]] = {}
    series_ev: dict[dt.date, Counter[str]] | None = {}
    for w_first, w_last in _windows(first - one, last + one):
        lo, hi = _clip((_day_bounds(w_first, zone)[0], _day_bounds(w_last, zone)[1]), since, until)
        if lo > hi:
            continue
        series_pv.update(reader.pageview_days(lo, hi, tz))
        if series_ev is not None:
            try:
                for day, names in reader.event_days(lo, hi, tz).items():
                    series_ev.setdefault(day, Counter()).update(names)
            except EndpointMissing:
                series_ev = None
    active = set(expected.days)
    active |= {d for d, (pv, _s) in series_pv.items() if pv}
    if series_ev is not None:
        active |= {d for d, names in series_ev.items() if sum(names.values())}
    days = sorted(d for d in active if first - one <= d <= last + one)

    def day_stats(day: dt.date) -> tuple[dt.date, dict[str, int], Counter[str] | None]:
        lo, hi = _clip(_day_bounds(day, zone), since, until)
        stats = reader.stats(lo, hi)
        names = None
        if series_ev is None:  # no /events/series: this day's custom events from /metrics
            names = Counter({str(x): y for x, y in reader.metrics("event", lo, hi)})
        return day, stats, names

    with ThreadPoolExecutor(max_workers=STATS_WORKERS) as pool:
        answers = list(pool.map(day_stats, days))
    tol = result.tolerance
    bucket_mismatch: list[str] = []
    for day, stats, names in answers:
        events_found = names if names is not None else (series_ev or {}).get(day, Counter())
        row = DayRow(
            day=day,
            expected=expected.day_figures(day),
            found={
                "pageviews": stats["pageviews"],
                "visitors": stats["visitors"],
                "visits": stats["visits"],
                "events": sum(events_found.values()),
            },
            events_expected=expected.events.get(day, Counter()),
            events_found=events_found,
        )
        for metric in DAY_METRICS:
            if not tol.allows(row.expected[metric], row.found[metric]):
                row.differs.append(metric)
                result.differences.append(Difference(day.isoformat(), metric, row.expected[metric], row.found[metric]))
        for name in sorted(set(row.events_expected) | set(row.events_found)):
            exp_n, found_n = row.events_expected.get(name, 0), row.events_found.get(name, 0)
            if not tol.allows(exp_n, found_n):
                row.events_differ.append(name)
                if "events" not in row.differs:  # the total already names the day otherwise
                    result.differences.append(Difference(day.isoformat(), f"events '{name}'", exp_n, found_n))
        bucketed = series_pv.get(day, (0, 0))[0]
        if bucketed != stats["pageviews"]:
            bucket_mismatch.append(f"{day}: {bucketed:,} vs {stats['pageviews']:,}")
        result.days.append(row)
    if bucket_mismatch:
        result.notes.append(
            f"Umami's daily buckets (/pageviews?unit=day&timezone={tz}) disagree with its totals for the same "
            f"local days ({'; '.join(bucket_mismatch[:3])}): the server buckets days in another zone than "
            "the one asked for. The table uses the totals of each local day's own time range."
        )
    if series_ev is None:
        result.notes.append("this Umami has no /events/series: custom events read per day from /metrics?type=event")
    # Whole range: top lists.
    range_lo, range_hi = _clip((_day_bounds(first, zone)[0], _day_bounds(last, zone)[1]), since, until)
    for name, (kind, counted) in TOP_LISTS.items():
        top = _compare_top(reader, name, kind, counted, expected.top[name], (range_lo, range_hi), tol, settings.top)
        result.top.append(top)
    for top in result.top:
        for row in top.rows:
            if row.differs:
                result.differences.append(Difference(f"top {top.name}", _label(row.value), row.expected, row.found))
    # After the range: what landed "now".
    now_ms = int((time.time() if now is None else now) * 1000)
    after = max(range_hi + 1, now_ms - RECENT_DAYS * 86_400_000)
    if after < now_ms:
        recent = reader.stats(after, now_ms + 3_600_000)
        recent_events = sum(y for _x, y in reader.metrics("event", after, now_ms + 3_600_000))
        result.recent = {
            "from_ms": after,
            "pageviews": recent["pageviews"],
            "visitors": recent["visitors"],
            "events": recent_events,
        }
    result.diagnoses = diagnose(expected, result)


def _label(value: Any) -> str:
    if value is None:
        return NONE_LABEL
    return "(empty)" if value == "" else str(value)


def _compare_top(
    reader: UmamiReader,
    name: str,
    kind: str,
    counted: str,
    expected: TopExpected,
    bounds: tuple[int, int],
    tol: Tolerance,
    n: int,
) -> TopList:
    """One top list: the expected top n and the found top n, each with both counts."""
    out = TopList(name=name, counted=counted, unpredictable=expected.unpredictable)
    try:
        found_rows = reader.metrics(kind, *bounds)
    except EndpointMissing:
        out.unpredictable = out.unpredictable or f"this Umami has no /metrics?type={kind}"
        return out
    found: Counter[Any] = Counter()
    for value, count in found_rows:
        found[value] += count
    out.found_total = sum(found.values())
    exp = expected.counts
    keys: list[Any] = []
    for value, _c in sorted(exp.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]:
        keys.append(value)
    for value, _c in sorted(found.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]:
        if value not in keys:
            keys.append(value)
    compare = expected.unpredictable is None
    for value in keys:
        e, f = exp.get(value, 0), found.get(value, 0)
        out.rows.append(TopRow(value, e if compare else 0, f, compare and not tol.allows(e, f)))
    out.rows.sort(key=lambda r: (-max(r.expected, r.found), str(r.value)))
    return out


# --------------------------------------------------------------------------- diagnoses


def diagnose(expected: Expected, result: VerifyResult) -> list[Diagnosis]:
    """Plain explanations of the common ways an import goes wrong, when their signs show."""
    out: list[Diagnosis] = []
    days = [r for r in result.days if r.expected["pageviews"] or r.expected["events"]]
    exp_total = sum(r.expected["pageviews"] + r.expected["events"] for r in result.days)
    found_total = sum(r.found["pageviews"] + r.found["events"] for r in result.days)
    recent = result.recent.get("pageviews", 0) + result.recent.get("events", 0)
    if recent:
        since = dt.datetime.fromtimestamp(result.recent["from_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d")
        strong = exp_total and found_total < 0.5 * exp_total
        text = (
            f"{result.recent['pageviews']:,} pageviews and {result.recent['events']:,} custom events are stored "
            f"after the imported range (since {since}), where the sources have none. Umami stamps an event with "
            "the time it ARRIVES when its payload has no timestamp, a 0, or a value that is not whole unix "
            "seconds, so a historical import sent that way lands 'now', on the day of the import."
        )
        if strong:
            text += (
                f" Inside the range only {found_total:,} of {exp_total:,} expected events are there: this import "
                "(or the tool that made it) most likely sent events without their time. Delete them (Umami: "
                "website settings > Data > Reset, or a new website) and import again with backfill, which "
                "always sends the timestamp."
            )
        else:
            text += (
                " The imported range itself looks complete: if this website also receives live traffic, "
                "those are simply today's visitors; otherwise another tool imported into it without timestamps."
            )
        out.append(Diagnosis("landed_now", "events landing 'now' instead of in the past", text))
    if exp_total and found_total == 0 and not recent:
        out.append(
            Diagnosis(
                "nothing_found",
                "nothing found in the imported range",
                "Umami shows no pageview and no custom event on any imported day. Usual causes: the import "
                "was not run against this --website (or --host); every event was dropped as a bot (Umami "
                "answers 200 and stores nothing when the User-Agent is on its bot list); the website's data "
                "was reset after the import; or, on Umami Cloud without a subscription, the API does not "
                "return data older than about six months.",
            )
        )
    many = [r for r in days if r.expected["visitors"] >= 3 and r.found["pageviews"]]
    one = [r for r in many if r.found["visitors"] <= 1]
    if many and len(one) >= max(1, len(many) // 2):
        out.append(
            Diagnosis(
                "one_session",
                "everything in one session",
                f"On {len(one)} of {len(many)} days where the sources have several visitors, Umami counts a "
                "single visitor. Umami makes a session from the payload's `id`; without one it uses the "
                "sender's IP address and User-Agent with a salt that changes monthly, so everything an import "
                "sends from one machine becomes ONE visitor per month. The events were sent without `id`, or "
                "with the same `id` for everyone (a mapping whose visitor column is constant). backfill always "
                "sends the mapping's visitor as `id`: re-import with a visitor column that identifies people.",
            )
        )
    doubled = [
        r for r in days if r.expected["pageviews"] >= 2 and r.found["pageviews"] >= 1.9 * r.expected["pageviews"]
    ]
    if days and len(doubled) >= max(1, len(days) // 2):
        out.append(
            Diagnosis(
                "duplicates",
                "imported more than once",
                f"On {len(doubled)} of {len(days)} days Umami holds about twice (or more) the expected "
                "pageviews. Umami's API is not idempotent: every resend stores the events again. This happens "
                "with `--restart`, `--resend-in-doubt` after events did land, two imports of overlapping "
                "files or ranges, or an earlier import by another tool. Reset the website's data and import "
                "once.",
            )
        )
    short = [r for r in days if r.found["pageviews"] < r.expected["pageviews"] and "pageviews" in r.differs]
    if short and found_total and not any(d.kind in ("landed_now", "one_session") for d in out):
        missing = sum(r.expected["pageviews"] - r.found["pageviews"] for r in short)
        n_days = f"{len(short)} day{'s' if len(short) > 1 else ''}"
        empty = [r for r in short if r.found["pageviews"] == 0]
        where = ", ".join(r.day.isoformat() for r in short[:5]) + (" ..." if len(short) > 5 else "")
        out.append(
            Diagnosis(
                "missing",
                "pageviews missing",
                f"{missing:,} expected pageviews are not in Umami, on {n_days} ({where}"
                f"{'; ' + str(len(empty)) + ' of them empty' if empty else ''}). Usual causes: the import did "
                "not finish (run the same import command again: it resumes), rows in doubt were not resent "
                "(see the import's in-doubt file), the import ran with other --since/--until/--limit/--shard "
                "or mapping than this verify, or events were deleted in Umami.",
            )
        )
    for name, label in (("os", "OS"), ("browsers", "browser")):
        diagnosis = _same_value(expected, result, name, label)
        if diagnosis:
            out.append(diagnosis)
    location = _location_missing(expected, result)
    if location:
        out.append(location)
    return out


def _top(result: VerifyResult, name: str) -> TopList | None:
    return next((t for t in result.top if t.name == name), None)


def _same_value(expected: Expected, result: VerifyResult, name: str, label: str) -> Diagnosis | None:
    """Every session with the same OS (or browser) while the sources vary."""
    top = _top(result, name)
    if top is None or top.found_total < 10:
        return None
    found = Counter({r.value: r.found for r in top.rows})
    value, count = found.most_common(1)[0] if found else (None, 0)
    if value is None or count < 0.95 * top.found_total:
        return None
    exp = expected.top[name]
    if exp.unpredictable is None:
        total = sum(exp.counts.values())
        varied = total and len(exp.counts) >= 2 and max(exp.counts.values()) < 0.8 * total
        basis = "the sources' values vary"
    else:
        total = sum(expected.user_agents.values())
        varied = total and len(expected.user_agents) >= 2 and max(expected.user_agents.values()) < 0.8 * total
        basis = "the sources' user agents vary"
    if not varied:
        return None
    return Diagnosis(
        f"same_{'os' if name == 'os' else 'browser'}",
        f"every session with the same {label}",
        f"{count:,} of {top.found_total:,} sessions have {label} '{value}' while {basis}. Umami takes a session's "
        f"browser, OS and device from the payload's `browser`/`os`/`device` fields, else from the User-Agent of "
        f"the session's FIRST event. An importer that sends its own User-Agent (e.g. 'Mozilla/5.0 (X11; Linux "
        f"x86_64) ...') for rows without one makes every session 'Linux'. Map the source's user agent "
        f"(`userAgent:`) or its `browser`/`os`/`device` columns; without them backfill sends "
        f"'{DEFAULT_USER_AGENT}', which gives no browser and no OS rather than a wrong one.",
    )


def _location_missing(expected: Expected, result: VerifyResult) -> Diagnosis | None:
    """Expected countries, and none found."""
    exp = expected.top["countries"]
    top = _top(result, "countries")
    # Umami lists no session without a country, so "none found" is an empty list; it means
    # "location missing" only when the pageviews themselves are there.
    found_pageviews = sum(r.found["pageviews"] for r in result.days)
    if top is None or exp.unpredictable is not None or found_pageviews == 0:
        return None
    known = sum(c for v, c in exp.counts.items() if v)
    found_known = sum(r.found for r in top.rows if r.value)
    if known == 0 or found_known > 0.05 * known:
        return None
    return Diagnosis(
        "location_missing",
        "location missing",
        f"The sources give a country for {known:,} sessions, but Umami stores no location for them. Umami has "
        "no payload field for location: it reads it from CDN headers (cf-ipcountry, cf-region-code, "
        "cf-ipcity) that the importer sends with each request (--geo headers/auto), or from a GeoIP lookup of "
        "a payload ip. A reverse proxy or CDN in front of Umami that strips or overwrites those headers, or a "
        "server started with SKIP_LOCATION_HEADERS, drops them silently. Check the proxy (let cf-* headers "
        "through from the importer) or map an `ip` column, and re-import; --geo off sends no location at all.",
    )


# --------------------------------------------------------------------------- rendering


def _fmt_found(expected: int, found: int, differs: bool) -> str:
    if found == expected and not differs:
        return f"{found:,}"
    return f"{found:,} ({found - expected:+,})"


def render(result: VerifyResult, *, color: bool = False, all_days: bool = False, max_days: int = 100) -> str:
    """The comparison as text: per-day table, top lists, diagnoses, verdict."""
    red, bold, dim, reset = ("\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("", "", "", "")
    lines = [
        f"== verify: website {result.website} on {result.host} ==",
        f"days in {result.timezone}; visits: {result.visits_mode}; tolerance: {result.tolerance.describe()}; "
        f"{result.expected_rows:,} sendable rows ({result.first_day} .. {result.last_day})",
        "",
    ]
    headers = ("pageviews", "visitors", "visits", "custom events")
    rows = result.days
    shown = rows if all_days or len(rows) <= max_days else [r for r in rows if r.differs or r.events_differ]
    cells: list[tuple[str, list[str], bool]] = []
    for r in shown:
        values = []
        for metric in DAY_METRICS:
            values += [f"{r.expected[metric]:,}", _fmt_found(r.expected[metric], r.found[metric], metric in r.differs)]
        cells.append((r.day.isoformat(), values, bool(r.differs or r.events_differ)))
    widths = [max([len("expected")] + [len(c[1][i]) for c in cells]) for i in range(8)]
    group = [widths[2 * i] + widths[2 * i + 1] + 2 for i in range(4)]
    lines.append("  " + " " * 10 + "".join(f"  {h:^{g}}" for h, g in zip(headers, group, strict=True)))
    lines.append(
        "  " + " " * 10 + "".join(f"  {'expected':>{widths[2 * i]}}  {'found':>{widths[2 * i + 1]}}" for i in range(4))
    )
    for day, values, differs in cells:
        text = "".join(
            f"  {values[2 * i]:>{widths[2 * i]}}  {values[2 * i + 1]:>{widths[2 * i + 1]}}" for i in range(4)
        )
        line = f"{'!' if differs else ' '} {day}{text}"
        lines.append(f"{red}{line}{reset}" if differs and color else line)
    if len(shown) < len(rows):
        lines.append(f"  ({len(rows) - len(shown):,} matching days not shown; --verbose or --report for all)")
    total_e = {m: sum(r.expected[m] for r in rows) for m in ("pageviews", "events")}
    total_f = {m: sum(r.found[m] for r in rows) for m in ("pageviews", "events")}
    lines.append(
        f"  total pageviews expected {total_e['pageviews']:,}, found {total_f['pageviews']:,}; "
        f"custom events expected {total_e['events']:,}, found {total_f['events']:,}"
    )
    event_diffs = [(r, name) for r in rows for name in r.events_differ]
    if event_diffs:
        lines.append("")
        lines.append("custom events by name that differ:")
        for r, name in event_diffs[:30]:
            e, f = r.events_expected.get(name, 0), r.events_found.get(name, 0)
            lines.append(f"! {r.day}  {name}: expected {e:,}, found {_fmt_found(e, f, True)}")
        if len(event_diffs) > 30:
            lines.append(f"  ... and {len(event_diffs) - 30:,} more (see --report)")
    for top in result.top:
        lines.append("")
        head = f"top {top.name} ({top.counted}, whole range)"
        if top.unpredictable:
            lines.append(f"{head}: not compared, {top.unpredictable}")
            if top.rows:
                lines.append("  found: " + ", ".join(f"{_label(r.value)} {r.found:,}" for r in top.rows))
            continue
        lines.append(head + ":")
        if not top.rows:
            lines.append("  (none expected, none found)")
            continue
        width = min(60, max(len(_label(r.value)) for r in top.rows))
        for r in top.rows:
            label = _label(r.value)
            label = label if len(label) <= width else label[: width - 3] + "..."
            found = _fmt_found(r.expected, r.found, r.differs)
            line = f"{'!' if r.differs else ' '} {label:<{width}}  {r.expected:>8,}  {found:>12}"
            lines.append(f"{red}{line}{reset}" if r.differs and color else line)
    if result.revenue:
        lines.append("")
        lines.append(
            "revenue expected (not compared: Umami's revenue report endpoint differs between releases): "
            + ", ".join(f"{cur} {amount:,.2f}" for cur, amount in result.revenue.items())
        )
    for note in result.notes:
        lines.append("")
        lines.append(f"{dim}note: {note}{reset}")
    for d in result.diagnoses:
        lines.append("")
        lines.append(f"{bold}diagnosis: {d.title}{reset}")
        lines.append(d.text)
    lines.append("")
    if result.matches:
        lines.append(
            f"{bold}verdict: MATCH{reset}: {len(rows):,} days x {len(DAY_METRICS)} figures and "
            f"{sum(1 for t in result.top if not t.unpredictable)} top lists agree "
            f"(tolerance {result.tolerance.describe()}; {result.requests:,} requests)"
        )
    else:
        listed = "; ".join(d.text() for d in result.differences[:5])
        more = f"; ... {len(result.differences) - 5:,} more" if len(result.differences) > 5 else ""
        lines.append(
            f"{bold}{red}verdict: DIFFERENT{reset}: {len(result.differences):,} differences beyond tolerance "
            f"{result.tolerance.describe()}: {listed}{more}"
        )
    return "\n".join(lines)
