"""Check canonical rows against what Umami accepts, before anything is sent.

Each rule is (field, condition, reason). A row gets the FIRST rule it breaks
as ``_reject_field``/``_reject_reason``; the reasons are fixed strings so the
report can group them, and each says how to fix the row or the mapping.
Umami answers some of these with a 400, some with a 500 after a partial write,
and a bot user agent with a 200 that stores nothing: only checking here keeps
the ledger honest.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass

import polars as pl

from .mapping import Mapping
from .payload import DATA_OBJECT, build_elements
from .schema import (
    COL_REJECT_FIELD,
    COL_REJECT_REASON,
    COL_SKIP,
    COL_SOURCE_ERROR,
    COL_TITLE_CUT,
    COL_TS,
    COL_VISITOR,
    CURRENCY_LIMIT,
    EVENT_TYPES,
    PAYLOAD_STRING_FIELDS,
    QUERY_PARAM_LIMIT,
    QUERY_PARAMS_LIMITED,
    TITLE_LIMIT,
)
from .transform import COL_TS_ERROR, RAW_PREFIX
from .umami.bots import bot_mask
from .umami.limits import LIMITS, POSTGRES, StoreLimits

#: Earliest event time accepted: older values are almost surely a unit or parsing error.
EARLIEST_TIMESTAMP = 631_152_000  # 1990-01-01T00:00:00Z
#: Events this far in the future are refused (a historical import has none).
FUTURE_TOLERANCE_S = 86_400

_HINTS = {
    "browser": " or set `normalize: true` to map names like 'Samsung Internet' to Umami's",
    "os": " or set `normalize: true` to map names like 'Macintosh' to Umami's",
    "device": " or set `normalize: true`",
}


@dataclass(frozen=True)
class Rule:
    field: str
    broken: pl.Expr
    reason: pl.Expr | str


#: The reject field of a record the reader could not read (``_source_error``).
RECORD_FIELD = "(record)"


def validate(
    frame: pl.DataFrame,
    mapping: Mapping,
    *,
    now: int | None = None,
    max_body_bytes: int | None = None,
    limits: StoreLimits = LIMITS[POSTGRES],
) -> pl.DataFrame:
    """Add ``_reject_field``/``_reject_reason`` (null when the row is fine); apply truncation.

    Rows already skipped by a filter are not judged. A row the reader could not
    read (``_source_error`` set) is never skipped: it is rejected with that reason,
    before every other rule. A title is cut to Umami's length (``_title_cut`` says
    where). With ``max_body_bytes`` (the sender's request body cap), a row whose
    /api/batch element alone would not fit a request is rejected, so a dry run
    counts exactly what an import sends. ``limits``: the store's (PostgreSQL's column sizes
    refuse more than ClickHouse's, see :mod:`backfill.umami.limits`).
    """
    if COL_SOURCE_ERROR in frame.columns:
        unread = pl.col(COL_SOURCE_ERROR).is_not_null()
        frame = frame.with_columns(pl.when(unread).then(None).otherwise(pl.col(COL_SKIP)).alias(COL_SKIP))
    frame = apply_truncation(frame, mapping, limits)
    rules = build_rules(frame, mapping, now=now, limits=limits)
    if max_body_bytes is not None:
        rules.extend(body_size_rules(frame, max_body_bytes))
    # Each condition is evaluated once, side by side; the first-broken-rule chain
    # then runs only over the rules some row of this chunk actually breaks.
    active = pl.col(COL_SKIP).is_null()
    broken = (
        frame.lazy()
        .select([(active & rule.broken).fill_null(False).alias(f"r{i}") for i, rule in enumerate(rules)])
        .collect()
    )
    hits = [i for i, name in enumerate(broken.columns) if broken[name].any()]
    if not hits:
        return frame.with_columns(
            pl.lit(None, dtype=pl.String).alias(COL_REJECT_FIELD),
            pl.lit(None, dtype=pl.String).alias(COL_REJECT_REASON),
        )
    with_flags = frame.with_columns([broken[f"r{i}"] for i in hits])
    field = pl.when(pl.col(f"r{hits[0]}")).then(pl.lit(rules[hits[0]].field))
    reason = pl.when(pl.col(f"r{hits[0]}")).then(_lit(rules[hits[0]].reason))
    for i in hits[1:]:
        field = field.when(pl.col(f"r{i}")).then(pl.lit(rules[i].field))
        reason = reason.when(pl.col(f"r{i}")).then(_lit(rules[i].reason))
    return (
        with_flags.lazy()
        .with_columns(
            field.otherwise(None).alias(COL_REJECT_FIELD),
            reason.otherwise(None).alias(COL_REJECT_REASON),
        )
        .drop([f"r{i}" for i in hits])
        .collect()
    )


def _lit(reason: pl.Expr | str) -> pl.Expr:
    return pl.lit(reason) if isinstance(reason, str) else reason


def apply_truncation(frame: pl.DataFrame, mapping: Mapping, limits: StoreLimits = LIMITS[POSTGRES]) -> pl.DataFrame:
    """Cut over-long values where the mapping says ``truncate``, and titles always
    (Umami cuts them itself, so the cut changes nothing it stores)."""
    cuts = []
    if "title" in frame.columns:
        too_long = pl.col("title").str.len_chars() > TITLE_LIMIT
        frame = frame.with_columns(too_long.fill_null(False).alias(COL_TITLE_CUT))
        cuts.append(pl.col("title").str.slice(0, TITLE_LIMIT))
    for name in frame.columns:
        if mapping.overflow_policy(name) != "truncate" or frame.schema[name] != pl.String:
            continue
        limit = limits.fields.get(name)
        if name == DATA_OBJECT:
            continue  # a whole JSON object: cutting it would break it
        if name.startswith("data."):
            limit = limits.data_string
        if name in ("title", "url", "referrer"):
            continue  # Umami cuts these itself at 500
        if limit is not None:
            cuts.append(pl.col(name).str.slice(0, limit))
    return frame.with_columns(cuts) if cuts else frame


def build_rules(
    frame: pl.DataFrame, mapping: Mapping, *, now: int | None = None, limits: StoreLimits = LIMITS[POSTGRES]
) -> list[Rule]:
    now = int(time.time()) if now is None else now
    cols = set(frame.columns)
    rules = []
    if COL_SOURCE_ERROR in cols:
        rules.append(Rule(RECORD_FIELD, pl.col(COL_SOURCE_ERROR).is_not_null(), pl.col(COL_SOURCE_ERROR)))
    rules += [
        Rule("timestamp", pl.col(COL_TS).is_null(), pl.col(COL_TS_ERROR)),
        Rule(
            "timestamp",
            pl.col(COL_TS) < EARLIEST_TIMESTAMP,
            "timestamp: before 1990, almost surely a wrong unit or format in the mapping",
        ),
        Rule(
            "timestamp",
            pl.col(COL_TS) > now + FUTURE_TOLERANCE_S,
            "timestamp: in the future (wrong unit or timezone in the mapping?)",
        ),
        Rule(
            "id",
            pl.col(COL_VISITOR).is_null(),
            "id: the visitor column(s) are empty for this row; every event needs a visitor id",
        ),
        Rule(
            "type",
            pl.col("type").is_null() | pl.col("type").is_in(EVENT_TYPES).not_(),
            "type: must be event or identify (check the mapping's type:)",
        ),
    ]
    derived_host = "hostname" in cols and "hostname" not in mapping.fields
    for name, limit in limits.fields.items():
        if name == "hostname" and derived_host and mapping.overflow_policy(name) == "reject":
            rules.append(
                Rule(
                    "url",
                    pl.col(name).str.len_chars() > limit,
                    f"url: its host is longer than {limit} characters; it is sent as the hostname "
                    "(Umami's limit), and Umami would store the session, then refuse the event: fix the "
                    "url, or map `hostname:` to a shorter value",
                )
            )
        elif name in cols and name != "id" and mapping.overflow_policy(name) == "reject":
            rules.append(
                Rule(
                    name,
                    pl.col(name).str.len_chars() > limit,
                    f"{name}: longer than {limit} characters (Umami's limit); shorten it in the "
                    f"source, set `overflow: {{{name}: truncate}}`"
                    f"{'' if mapping.normalize else _HINTS.get(name, '')}",
                )
            )
    for name in ("url", "referrer"):
        if name in cols:
            rules.append(
                Rule(
                    name,
                    unparseable_urls(frame[name]),
                    f"{name}: does not parse as a URL; Umami refuses it (fix the value or the template)",
                )
            )
    if "url" in cols:
        name = pl.col("name") if "name" in cols else pl.lit(None, dtype=pl.String)
        rules.append(
            Rule(
                "url",
                (pl.col("type") == "event") & name.is_null() & pl.col("url").is_null(),
                "url: a page view (no event name) without a url, e.g. a GA4 page_view without "
                "page_location; Umami would store a view of no page: fix the source, give the url a "
                "fallback (`url: [<column>, {const: /}]`) or filter these rows out",
            )
        )
    rules.extend(_location_rules(cols, limits.city))
    if "hostname" in cols:
        rules.append(
            Rule(
                "url" if derived_host else "hostname",
                unparseable_urls(frame["hostname"], as_host=True),
                "hostname: not a valid host name; Umami resolves the url against https://{hostname} "
                "and would fail after storing the session",
            )
        )
    if "url" in cols and limits.query_param is not None:
        rules.extend(_query_param_rules(frame))
    rules.extend(_data_rules(frame, mapping, limits))
    if "userAgent" in cols and not mapping.keep_bots:
        rules.append(
            Rule(
                "userAgent",
                bot_mask(frame["userAgent"]),
                "userAgent: bot user agent: Umami would drop it silently (set `keep_bots: true` "
                "only if the server runs with DISABLE_BOT_CHECK)",
            )
        )
    return rules


#: Any website id: every one is a UUID of this length, so an element's size does not depend on it.
_SIZING_WEBSITE = "00000000-0000-0000-0000-000000000000"
#: JSON escaping makes at most this many bytes of one byte of text (``\u001f``).
_ESCAPE_FACTOR = 6
#: Bytes of an element besides its strings: keys, numbers, punctuation (generous).
_ELEMENT_OVERHEAD = 4096


def body_size_rules(frame: pl.DataFrame, max_body_bytes: int) -> list[Rule]:
    """Rows whose element alone exceeds a request body (``[`` + element + ``]``).

    The sender could only reject such a row at send time, after a dry run counted
    it as sendable. A cheap bound on the strings' bytes finds the candidates; only
    those are encoded, with the sender's own encoder. The reject names the row's
    longest field.
    """
    texts = [
        c
        for c in frame.columns
        if frame.schema[c] == pl.String and (c in PAYLOAD_STRING_FIELDS or c.startswith("data."))
    ]
    if not texts:
        return []
    bound = pl.sum_horizontal(pl.col(c).str.len_bytes().fill_null(0) for c in texts)
    candidates = frame.select(bound * _ESCAPE_FACTOR + _ELEMENT_OVERHEAD + 2 > max_body_bytes).to_series()
    if not candidates.any():
        return []
    rows = frame.filter(candidates)
    sizes = build_elements(rows, _SIZING_WEBSITE).str.len_bytes() + 2
    lengths = rows.select(pl.col(c).str.len_bytes().fill_null(0) for c in texts)
    longest = [texts[max(range(len(texts)), key=lambda i, r=r: r[i])] for r in lengths.iter_rows()]
    at = candidates.arg_true()
    rules = []
    for name in dict.fromkeys(n for n, size in zip(longest, sizes, strict=True) if size > max_body_bytes):
        hit = [size > max_body_bytes and n == name for n, size in zip(longest, sizes, strict=True)]
        broken = pl.Series([False] * frame.height).scatter(at, pl.Series(hit))
        rules.append(
            Rule(
                name,
                pl.lit(broken),
                f"{name}: the event alone is larger than the request body limit of {max_body_bytes:,} "
                "bytes (--max-body-bytes), so it cannot be sent; this field is its longest: shorten "
                "it in the source (or raise the limit, if Umami's proxy takes larger bodies)",
            )
        )
    return rules


_LONG_QUERY_VALUE = rf"[?&](?:{'|'.join(QUERY_PARAMS_LIMITED)})=[^&#]{{{QUERY_PARAM_LIMIT + 1},}}"


def _location_rules(cols: set[str], city_limit: int | None) -> list[Rule]:
    checks = {
        "country": (
            pl.col("country").str.contains(r"^[A-Z]{2}$").not_(),
            "country: not an ISO 3166-1 alpha-2 code like DE (map names to codes in the mapping)",
        ),
        "region": (
            pl.col("region").str.contains(r"^[A-Z]{2}-[A-Z0-9]{1,3}$").not_(),
            "region: not an ISO 3166-2 code like DE-BE (Umami stores region codes)",
        ),
    }
    if city_limit is not None:
        checks["city"] = (
            pl.col("city").str.len_chars() > city_limit,
            f"city: longer than {city_limit} characters (Umami's limit)",
        )
    return [Rule(name, broken, reason) for name, (broken, reason) in checks.items() if name in cols]


def _query_param_rules(frame: pl.DataFrame) -> list[Rule]:
    """One regex finds candidate rows; the per-parameter rules run only when there are some."""
    if not frame.select(pl.col("url").str.contains(_LONG_QUERY_VALUE).any()).item():
        return []
    rules = []
    for param in QUERY_PARAMS_LIMITED:
        value = pl.col("url").str.extract(rf"[?&]{param}=([^&#]*)", 1)
        # Umami stores the decoded value: each %XX escape is one character.
        decoded_len = value.str.len_chars() - 2 * value.str.count_matches("%[0-9A-Fa-f]{2}")
        rules.append(
            Rule(
                "url",
                decoded_len > QUERY_PARAM_LIMIT,
                f"url: {param} in the query is longer than {QUERY_PARAM_LIMIT} characters; Umami "
                "would store the session but lose the event (database error)",
            )
        )
    return rules


def _data_rules(frame: pl.DataFrame, mapping: Mapping, limits: StoreLimits) -> list[Rule]:
    rules = []
    for name in frame.columns:
        if not name.startswith("data."):
            continue
        dtype = frame.schema[name]
        raw = RAW_PREFIX + name
        if name == DATA_OBJECT:
            # the reader's JSON object of properties (see backfill.payload): its values were
            # stored by Umami once, so only its shape is checked here
            text = pl.col(name).str.strip_chars()
            rules.append(
                Rule(
                    name,
                    text.str.starts_with("{").not_() | text.str.ends_with("}").not_(),
                    f"{name}: not a JSON object of properties",
                )
            )
            continue
        if dtype == pl.String:
            rules.extend(_impossible_date_rules(frame, name))
            if mapping.overflow_policy(name) == "reject" and limits.data_string is not None:
                rules.append(
                    Rule(
                        name,
                        pl.col(name).str.len_chars() > limits.data_string,
                        f"{name}: longer than {limits.data_string} characters; Umami would store the "
                        f"event without its data (set `overflow: {{{name}: truncate}}` to cut it)",
                    )
                )
            continue
        if raw in frame.columns:
            comma = dtype != pl.Boolean and mapping.reader.get("decimal_comma")
            rules.append(
                Rule(
                    name,
                    pl.col(raw).is_not_null() & pl.col(name).is_null(),
                    f"{name}: not a {'true/false value' if dtype == pl.Boolean else 'number'}"
                    f"{' (with decimal_comma: 1234,5 or 1.234,5)' if comma else ''}",
                )
            )
        if dtype.is_numeric():
            rules.append(
                Rule(
                    name,
                    pl.col(name).cast(pl.Float64, strict=False).abs() >= limits.data_number_max_abs,
                    f"{name}: too large for Umami's "
                    f"{'decimal(19,4)' if limits.store == POSTGRES else 'Decimal(22, 4)'} column",
                )
            )
    if "data.revenue" in frame.columns:
        rules.extend(_revenue_rules(frame))
    return rules


#: Umami's DATETIME_REGEX: event-data strings of this shape are stored as dates.
_DATETIME_SHAPE = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{3})?(Z|\+([0-9]{2}):([0-9]{2}))?$"
)


def _impossible_date_rules(frame: pl.DataFrame, name: str) -> list[Rule]:
    """A data string Umami takes for a date but cannot parse: it stores the event, then
    fails on the data (HTTP 500). Checked only when some value has the shape."""
    shaped = pl.col(name).str.contains(_DATETIME_SHAPE)
    if not frame.select(shaped.any()).item():
        return []
    parts = pl.col(name).str.extract_groups(_DATETIME_SHAPE)

    def part(i: int) -> pl.Expr:
        return parts.struct.field(str(i)).cast(pl.Int64, strict=False)

    valid = (
        part(2).is_between(1, 12)
        & part(3).is_between(1, 31)
        & (part(4) <= 24)
        & (part(5) <= 59)
        & (part(6) <= 59)
        & (part(9).fill_null(0) <= 23)
        & (part(10).fill_null(0) <= 59)
    )
    return [
        Rule(
            name,
            shaped & valid.not_(),
            f"{name}: shaped like an ISO date but not a valid one; Umami would store the event "
            "and then fail on its data (fix the value, or send it in another format)",
        )
    ]


def _revenue_rules(frame: pl.DataFrame) -> list[Rule]:
    revenue = pl.col("data.revenue")
    has_currency = "data.currency" in frame.columns
    currency = pl.col("data.currency") if has_currency else pl.lit(None, dtype=pl.String)
    name = pl.col("name") if "name" in frame.columns else pl.lit(None, dtype=pl.String)
    return [
        Rule(
            "data.revenue",
            revenue.is_not_null() & name.is_null() & (pl.col("type") == "event"),
            "data.revenue: revenue on a pageview (no event name); Umami's revenue table needs an "
            "event name and would fail after storing the event: map `name` for these rows",
        ),
        Rule(
            "data.revenue",
            revenue.is_not_null() & (revenue.cast(pl.Float64, strict=False) <= 0),
            "data.revenue: must be greater than 0; Umami keeps no revenue row for 0 or "
            "refunds (filter them out, or map them to another data key)",
        ),
        Rule(
            "data.currency",
            revenue.is_not_null() & currency.is_null(),
            "data.currency: revenue without a currency; Umami would store no revenue row "
            "(map data.currency, e.g. {const: USD})",
        ),
        Rule(
            "data.currency",
            currency.str.len_chars() > CURRENCY_LIMIT,
            f"data.currency: longer than {CURRENCY_LIMIT} characters (use an ISO code like USD)",
        ),
    ]


def unparseable_urls(values: pl.Series, *, as_host: bool = False) -> pl.Series:
    """True where Umami's URL parser would refuse the value; checked on unique values.

    ``as_host``: the value is a hostname, which Umami uses as the base ``https://{hostname}``.
    """
    uniques = values.drop_nulls().unique()
    check = host_parses if as_host else url_parses
    bad = [v for v in uniques.to_list() if not check(v)]
    if not bad:
        return pl.Series(values.name, [False] * values.len(), dtype=pl.Boolean)
    return values.is_in(bad).fill_null(False)


#: Characters WHATWG URL parsing forbids in a host of an http(s) URL.
_FORBIDDEN_HOST_CHARS = frozenset(" \t\n\r#%/<>?@\\^|")


def url_parses(value: str) -> bool:
    """Mirror of ``new URL(value, 'https://localhost')`` for the failures that matter."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
        _ = parts.port  # a non-numeric or out-of-range port raises
    except ValueError:
        return False
    has_authority = value.strip().startswith("//") or (
        parts.scheme in ("http", "https") and value.split(":", 1)[1].startswith("//")
    )
    if has_authority or parts.scheme in ("http", "https"):
        host = parts.netloc.rsplit("@", 1)[-1]
        if host.startswith("["):
            return host.split("]", 1)[0].count(":") >= 2
        host = host.split(":", 1)[0]
        if not host or any(ch in _FORBIDDEN_HOST_CHARS for ch in host):
            return False
    return True


def host_parses(value: str) -> bool:
    """A hostname Umami can resolve urls against (``https://{hostname}``)."""
    if not value or any(ch in _FORBIDDEN_HOST_CHARS for ch in value.split(":", 1)[0]):
        return False
    return url_parses(f"https://{value}/")
