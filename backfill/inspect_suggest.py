"""The mapping ``backfill inspect`` suggests for a generic file, each line with why it was chosen.

Guesses come from column names AND values: a column is the page only if its
values are paths or full URLs, a country only if they are two-letter codes, a
revenue only if it is a number with a currency beside it, an epoch time gets
the unit its magnitude implies. Every line carries a comment saying which
evidence chose it, so the user can check the guess rather than trust it.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

#: Column-name hints, most specific first (compared lower-case).
HINTS: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "event_timestamp",
        "created_at",
        "created",
        "occurred_at",
        "time",
        "date",
        "datetime",
        "ts",
    ),
    "visitor": (
        "visitor_id",
        "user_pseudo_id",
        "user_id",
        "customer_id",
        "customer",
        "client_id",
        "anonymous_id",
        "distinct_id",
        "device_id",
        "uid",
        "user",
    ),
    "visit": ("session_id", "visit_id", "ga_session_id", "sessionid", "visitid", "session", "visit", "sid"),
    "url": ("url", "page_url", "page_location", "page", "path", "pathname", "request_path", "page_path", "href"),
    "hostname": ("hostname", "host", "domain"),
    "referrer": ("referrer", "referer", "page_referrer", "referrer_url", "ref"),
    "title": ("title", "page_title"),
    "name": ("event_name", "event", "name", "type", "action"),
    "userAgent": ("user_agent", "useragent", "ua"),
    "language": ("language", "lang", "locale"),
    "screen": ("screen", "screen_resolution", "resolution"),
    "browser": ("browser",),
    "os": ("os", "operating_system"),
    "device": ("device", "device_category", "device_type"),
    "ip": ("ip", "ip_address", "client_ip", "remote_addr"),
    "country": ("country", "country_code", "geo_country", "countrycode", "iso_country", "cc"),
    "region": ("region", "region_code", "subdivision", "subdivision_code", "state"),
    "city": ("city", "geo_city", "city_name"),
    "amount": ("revenue", "amount", "amount_cents", "revenue_cents", "price", "total", "order_total", "value", "sum"),
    "currency": ("currency", "currency_code", "cur"),
}
#: Payload fields suggested plainly by name (after the ones with their own evidence).
PLAIN_FIELDS = ("title", "userAgent", "language", "screen", "browser", "os", "device", "ip")
#: Share of a column's values that must fit a pattern for the guess to be made.
VALUE_SHARE = 0.9

_FULL_URL = r"^https?://[^\s/]+"
_PATH = r"^/"
_ISO_COUNTRY = r"^[A-Za-z]{2}$"
_ISO_REGION = r"^[A-Za-z]{2}-[A-Za-z0-9]{1,3}$"
_ISO_CURRENCY = r"^[A-Za-z]{3}$"
_OFFSET = r"(Z|[+-]\d\d:?\d\d)$"
_NUMBER = r"^-?\d+([.,]\d+)?$"
#: An amount column may hold a few broken values (validate rejects those rows).
AMOUNT_SHARE = 0.75
_TIME_LIKE = re.compile(r"(time|date|created|updated|_at$|^ts$)", re.IGNORECASE)
#: (unit, smallest, largest magnitude) for epoch values between about 2001 and 2100.
_EPOCH_UNITS = (("s", 1e9, 4.2e9), ("ms", 1e12, 4.2e12), ("us", 1e15, 4.2e15), ("ns", 1e18, 4.2e18))


def epoch_unit(value: object) -> str | None:
    """The unit in which ``value`` is a time between 2001 and 2100, or None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    magnitude = abs(value)
    return next((unit for unit, low, high in _EPOCH_UNITS if low <= magnitude < high), None)


def epoch_guess(value: object) -> str:
    """Human words for what an epoch-like number is (for the time-range listing)."""
    unit = epoch_unit(value)
    return f"looks like epoch {unit}" if unit else "not an epoch time (2001-2100) in s, ms, us or ns?"


class _Columns:
    """The sampled frame (types inferred) and its raw text, with the checks the guesses use."""

    def __init__(self, frame: pl.DataFrame, raw: pl.DataFrame | None) -> None:
        self.frame = frame
        self.raw = raw if raw is not None else frame
        self.lowered = {c.lower(): c for c in frame.columns}
        self.used: set[str] = set()

    def named(self, target: str) -> list[str]:
        return [self.lowered[h] for h in HINTS[target] if h in self.lowered and self.lowered[h] not in self.used]

    def share(self, column: str, pattern: str) -> float:
        """Share of the non-null values of ``column`` (as text) that match ``pattern``."""
        values = self.raw[column].drop_nulls().cast(pl.String).str.strip_chars()
        values = values.filter(values != "")
        if values.len() == 0:
            return 0.0
        return float(values.str.contains(pattern).mean() or 0.0)

    def is_text(self, column: str) -> bool:
        return self.frame[column].dtype == pl.String

    def is_number(self, column: str) -> bool:
        return self.frame[column].dtype.is_numeric()

    def example(self, column: str) -> str:
        values = self.raw[column].drop_nulls().cast(pl.String)
        return values[0][:40] if values.len() else ""


def _line(key: str, value: str, why: str) -> str:
    return f"  {key}: {value}   # {why}"


def suggest_mapping(frame: pl.DataFrame, raw: pl.DataFrame | None = None) -> str:
    """A mapping to start from; ``raw`` is the sample as read (text), ``frame`` with types inferred."""
    cols = _Columns(frame, raw)
    lines = [
        "# Suggested by `backfill inspect`: each line says why it was chosen; check them,",
        "# then run `backfill validate`.",
        "version: 1",
    ]
    lines += _timestamp(cols)
    lines += _visitor(cols)
    lines.append("type: event")
    lines.append("fields:")
    lines += _pages(cols)
    lines += _event_name(cols)
    lines += _location(cols)
    lines += _revenue(cols)
    for target in PLAIN_FIELDS:
        named = cols.named(target)
        if named:
            cols.used.add(named[0])
            lines.append(_line(target, named[0], f"column name '{named[0]}'"))
    extra = [c for c in frame.columns if c not in cols.used][:10]
    for column in extra:
        lines.append(f"  # data.{column}: {column}   # not recognised: keep it as event data?")
    lines.append("normalize: true")
    return "\n".join(lines) + "\n"


def _timestamp(cols: _Columns) -> list[str]:
    frame = cols.frame
    candidates = cols.named("timestamp")
    candidates += [c for c in frame.columns if isinstance(frame[c].dtype, pl.Datetime) and c not in candidates]
    candidates += [c for c in frame.columns if cols.is_number(c) and _TIME_LIKE.search(c) and c not in candidates]
    chosen = next((c for c in candidates if isinstance(frame[c].dtype, pl.Datetime) or cols.is_number(c)), None)
    chosen = chosen or (candidates[0] if candidates else None)
    if chosen is None:
        return ["timestamp:", "  column: CHANGE_ME   # no time column found", "  format: iso8601"]
    cols.used.add(chosen)
    if cols.is_number(chosen):
        median = frame[chosen].median()
        unit = epoch_unit(median)
        when = ""
        if unit:
            seconds = float(median) / {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]  # type: ignore[arg-type]
            when = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        why = (
            f"numbers like {median:.0f}: {when} as epoch {unit}"
            if unit
            else f"numbers like {median:.0f} are no epoch time between 2001 and 2100 in s/ms/us/ns: CHECK"
        )
        return [
            "timestamp:",
            f"  column: {chosen}",
            "  format: epoch",
            f"  unit: {unit or 's'}   # {why}",
        ]
    raw_dtype = cols.raw[chosen].dtype
    if isinstance(raw_dtype, pl.Datetime):
        with_offset = raw_dtype.time_zone is not None
    else:
        with_offset = cols.share(chosen, _OFFSET) >= VALUE_SHARE
    lines = ["timestamp:", f"  column: {chosen}   # ISO 8601 times, e.g. {cols.example(chosen)}", "  format: iso8601"]
    if with_offset:
        lines.append("  # every sampled value carries its UTC offset: no timezone needed")
    else:
        lines.append("  timezone: UTC   # values without an offset are in this zone: CHECK")
    return lines


def _visitor(cols: _Columns) -> list[str]:
    visitors, visits = cols.named("visitor"), cols.named("visit")
    visitor = visitors[0] if visitors else None
    visit = visits[0] if visits else None
    if visitor and visit:
        cols.used.update((visitor, visit))
        return [
            f"visitor: {{columns: [{visitor}], visit: {visit}}}   # who: column '{visitor}';"
            f" the source's own visits: '{visit}' (kept whole across clock hours)"
        ]
    if visitor:
        cols.used.add(visitor)
        return [f"visitor: {{columns: [{visitor}]}}   # who: column '{visitor}'"]
    if visit:
        cols.used.add(visit)
        return [
            f"visitor: {{columns: [{visit}], visit: {visit}}}   # no visitor column: each session"
            f" '{visit}' becomes a visitor (returning visitors are not recognised)"
        ]
    ips, agents = cols.named("ip"), cols.named("userAgent")
    if ips and agents:
        return [
            f"visitor: {{strategy: ip_ua_day, ip: {ips[0]}, user_agent: {agents[0]}}}"
            "   # no visitor column: one visitor per IP, browser and day, as log analyzers count"
        ]
    return ["visitor: {strategy: per_row}   # no visitor column found: every row its own visitor: CHECK"]


def _url_columns(cols: _Columns, target: str) -> list[tuple[str, str]]:
    """(column, kind) for ``target`` (url or referrer): named ones whose values are URLs or paths,
    then any text column whose values are full URLs (by name: url, page or location first)."""
    found = []
    for column in cols.named(target):
        if not cols.is_text(column):
            continue
        if cols.share(column, _FULL_URL) >= VALUE_SHARE:
            found.append((column, "full"))
        elif target == "url" and cols.share(column, _PATH) >= VALUE_SHARE:
            found.append((column, "path"))
    referrer_like = re.compile(r"refer|^ref$|source", re.IGNORECASE)
    for column in cols.frame.columns:
        if column in cols.used or any(column == c for c, _ in found) or not cols.is_text(column):
            continue
        if (target == "referrer") != bool(referrer_like.search(column)):
            continue
        if cols.share(column, _FULL_URL) >= VALUE_SHARE:
            found.append((column, "full"))
    return found


def _pages(cols: _Columns) -> list[str]:
    lines = []
    hosts = cols.named("hostname")
    urls = _url_columns(cols, "url")
    if urls:
        column, kind = urls[0]
        cols.used.add(column)
        if kind == "full":
            why = f"full URLs in '{column}' (e.g. {cols.example(column)}): Umami keeps path and query"
            if not hosts:
                why += "; no hostname column: the host comes from the URL"
        else:
            why = f"paths in '{column}' (e.g. {cols.example(column)})"
        lines.append(_line("url", column, why))
    else:
        lines.append(_line("url", "{const: /}", "no column of paths or URLs found: CHECK"))
    if hosts:
        cols.used.add(hosts[0])
        lines.insert(0, _line("hostname", hosts[0], f"column name '{hosts[0]}'"))
    referrers = _url_columns(cols, "referrer")
    if referrers:
        cols.used.add(referrers[0][0])
        lines.append(_line("referrer", referrers[0][0], f"full URLs in '{referrers[0][0]}'"))
    return lines


def _event_name(cols: _Columns) -> list[str]:
    named = [c for c in cols.named("name") if cols.is_text(c)]
    if not named:
        return []
    column = named[0]
    cols.used.add(column)
    values = set(cols.raw[column].drop_nulls().cast(pl.String).to_list())
    views = [v for v in ("pageview", "page_view", "PageView", "pageView") if v in values]
    if views:
        return [
            f"  name: {{column: {column}, map: {{{views[0]}: null}}}}"
            f"   # event names in '{column}'; '{views[0]}' rows are pageviews (no name)"
        ]
    return [_line("name", column, f"event names in '{column}': every row a custom event; map page views to null")]


def _location(cols: _Columns) -> list[str]:
    lines = []
    for column in cols.named("country"):
        if not cols.is_text(column):
            continue
        cols.used.add(column)
        if cols.share(column, _ISO_COUNTRY) >= VALUE_SHARE:
            lowercase = cols.share(column, r"[a-z]") > 0
            value = f"{{column: {column}, case: upper}}" if lowercase else column
            lines.append(_line("country", value, f"two-letter ISO 3166-1 codes in '{column}'"))
        else:
            lines.append(
                f"  # country: {column}   # '{column}' holds names (e.g. {cols.example(column)}),"
                " not ISO 3166-1 alpha-2 codes: map them (map: {Germany: DE, ...})"
            )
        break
    for column in cols.named("region"):
        if cols.is_text(column) and cols.share(column, _ISO_REGION) >= VALUE_SHARE:
            cols.used.add(column)
            lines.append(_line("region", column, f"ISO 3166-2 codes in '{column}' (e.g. {cols.example(column)})"))
            break
    for column in cols.named("city"):
        if cols.is_text(column):
            cols.used.add(column)
            lines.append(_line("city", column, f"column name '{column}' (English names expected)"))
            break
    return lines


def _revenue(cols: _Columns) -> list[str]:
    amounts = [c for c in cols.named("amount") if cols.is_number(c) or cols.share(c, _NUMBER) >= AMOUNT_SHARE]
    currencies = [c for c in cols.named("currency") if cols.is_text(c) and cols.share(c, _ISO_CURRENCY) >= VALUE_SHARE]
    if not amounts:
        return []
    amount = amounts[0]
    cols.used.add(amount)
    cents = "cent" in amount.lower() or "minor" in amount.lower()
    value = f"{{column: {amount}, scale: 0.01}}" if cents else f"{{column: {amount}}}"
    why = f"amounts in '{amount}'" + (" (cents, by its name)" if cents else "")
    if not currencies:
        return [
            f"  # data.revenue: {value}   # {why}; no currency column: revenue needs one,"
            " e.g. data.currency: {const: EUR}"
        ]
    currency = currencies[0]
    cols.used.add(currency)
    integral = cols.frame[amount].drop_nulls()
    if not cents and cols.is_number(amount) and integral.len() and bool((integral == integral.round(0)).all()):
        why += "; all whole numbers: if they are cents, add scale: 0.01"
    return [
        _line("data.revenue", value, why),
        _line("data.currency", f"{{column: {currency}, case: upper}}", f"ISO 4217 codes in '{currency}'"),
    ]
