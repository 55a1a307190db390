"""The expected side: the figures Umami should show, folded from the rows ``import`` would send."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import tempfile
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..aggregate import Fold
from ..config import DEFAULT_USER_AGENT, RunConfig
from ..geo import SEPARATOR as GEO_SEPARATOR
from ..geo import geo_key_expr, sends_ip
from ..ledger import Ledger
from ..rejects import RecordFile
from ..schema import COL_FILE, COL_ROW, COL_TS, COL_VISIT, COL_VISITOR, COL_VKEY
from ..umami.detect import client_columns
from ..umami.limits import CLICKHOUSE, POSTGRES
from ..visits import visit_key_expr

#: Merge the partial sets once they hold this many rows.
_MERGE_ROWS = 1 << 21
_SEED = 0x5EED_B00C


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


def _referrer_domain(referrer: str, stored_host: str, store: str = POSTGRES) -> str | None:
    """The referrer domain Umami lists (a leading ``www.`` dropped); None when it leaves it
    out (empty, or the page's own hostname as that store compares it)."""
    try:
        host = urllib.parse.urlsplit(urllib.parse.urljoin(f"https://{stored_host}/", referrer.strip())).hostname
    except ValueError:
        return None
    domain = (host or "").removeprefix("www.")
    if not domain:
        return None
    if store == CLICKHOUSE:
        # The hourly view keeps `x != '' and x != hostname`: the stored hostname, www. and all.
        return None if domain == stored_host else domain
    # Umami 3's referrer list: `referrer_domain != regexp_replace(hostname, '^www.', '')`
    if not stored_host or domain == re.sub(r"^www.", "", stored_host):
        return None
    return domain


def _device_by_screen(frame: pl.DataFrame) -> pl.Series:
    """The device Umami gives a session whose user agent names none: ``laptop`` up to 1920 pixels
    wide, else ``desktop`` (its ``getDevice``), from each row's screen."""
    rows = frame.with_columns(  # with_columns, not select: a missing screen's literal fills every row
        pl.lit(None, dtype=pl.String).alias("_ua"), _col(frame, "screen").cast(pl.String).alias("_screen")
    )
    return client_columns(rows, "_ua", "_screen")["device"]


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
    store: str = POSTGRES
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
    #: How the rows read were accounted for (read = would send + rejected + skipped), when known.
    ledger: Ledger | None = None

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
    """Folds every chunk's sendable rows (``api.prepare``'s ``observe``) into ``Expected``.

    ``store`` is where the Umami keeps its data; its unfiltered reports count differently:

    - PostgreSQL: days by each event's time; a session's browser, OS and country are its
      first event's; the referrer list leaves out the page's hostname with ``www.`` dropped;
    - ClickHouse: the reports read ``website_event_stats_hourly``, whose rows start at the
      hour, so an event counts on the day of its hour's start; every event row carries its
      own element's browser, OS and country, and a session counts under each value of its
      pageviews; the view leaves out a referrer equal to the stored hostname as it is.
    """

    def __init__(
        self,
        timezone: str,
        *,
        exact_visits: bool,
        geo: str = "auto",
        user_agent: str = DEFAULT_USER_AGENT,
        store: str = POSTGRES,
    ) -> None:
        self.timezone = timezone
        self.store = store
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
        #: the first row of each visitor (PostgreSQL), or each (visitor, values) of pageviews (ClickHouse)
        self._sessions = Fold(_first_per_visitor if store == POSTGRES else _unique, min_rows=_MERGE_ROWS)
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
        at = pl.col(COL_TS) - pl.col(COL_TS) % 3600 if self.store == CLICKHOUSE else pl.col(COL_TS)
        day = (
            pl.from_epoch(at, time_unit="s")
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
        if self.store == CLICKHOUSE:
            self._add_sessions(pv)
        else:
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
            domains = [_referrer_domain(r, h, self.store) for r, h in combos.iter_rows()]
            combos = combos.with_columns(pl.Series("domain", domains, dtype=pl.String))
            joined = refs.join(combos, on=["referrer", "_host"], how="left")
            self._referrers.add(joined.filter(pl.col("domain").is_not_null()).select("domain", "vh").unique())

    def _add_sessions(self, frame: pl.DataFrame) -> None:
        """Each visitor's first row of this chunk, with the session attributes it gives."""
        cols = frame.columns
        ua = _col(frame, "userAgent")
        sent_ua = pl.coalesce(ua, pl.lit(self.user_agent))
        attrs = []
        by_default_ua = ua.is_null() & pl.lit(self._default_ua)
        for name in ("browser", "os", "device"):
            value = _col(frame, name)
            if name == "device":  # the default UA names no device: Umami tells desktop from laptop by the screen
                value = pl.coalesce(value, pl.when(by_default_ua).then(_device_by_screen(frame)))
            # An explicit value wins; else Umami parses the UA: the importer's default UA gives none.
            known = value.is_not_null() | by_default_ua
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
        if self.store == CLICKHOUSE:  # every pageview's own values: (visitor, values) pairs
            self._sessions.add(first.drop("_t", "_f", "_r").unique())
        else:
            self._sessions.add(_first_per_visitor(first))

    def finish(self) -> Expected:
        tz = self.timezone
        out = Expected(
            timezone=tz, visits_mode="exact" if self.exact_visits else "hourly", store=self.store, rows=self.rows
        )
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
            ("devices", "device", "they come from user agents Umami parses (map `device` to compare)"),
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
                listed = listed.select(column, "vh").unique()
                out.top[name] = TopExpected(Counter(dict(listed.group_by(column).len().iter_rows())))
        if sessions.height:
            firsts = sessions.unique(subset="vh", keep="first")
            out.user_agents = Counter(dict(firsts.group_by("ua").len().iter_rows()))
        return out


def collect_expected(
    config: RunConfig,
    timezone: str,
    progress: Callable[..., None] | None = None,
    stop: threading.Event | None = None,
    store: str = POSTGRES,
) -> tuple[Expected, str | None]:
    """Read the sources as ``import`` would; return the expected figures and the reader format."""
    from .. import api

    plan_ = api.plan(dataclasses.replace(config, store=store))  # the rows that store keeps
    exact = api.visits_mode(config, plan_.mapping) == "exact"
    collector = ExpectedCollector(
        timezone, exact_visits=exact, geo=config.geo, user_agent=config.user_agent, store=store
    )
    scratch = Path(tempfile.mkdtemp(prefix="backfill-verify-"))
    try:
        rejects = RecordFile(scratch / "rejects.ndjson")
        try:
            prepared = api.prepare(plan_, scratch / "spill", rejects, progress, stop, spill=False, observe=collector)
        finally:
            rejects.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    expected = collector.finish()
    expected.ledger = prepared.ledger
    return expected, plan_.read_options.format
