"""Matomo Live API exports: ``--format matomo_live``.

``Live.getLastVisitsDetails`` with ``format=json`` answers one JSON array of
visits per request; a history is saved as many pages (``filter_limit`` /
``filter_offset``), one file each (``.json``, ``.gz``/``.zst`` read). Each
visit carries its visitor (``visitorId``, ``userId``), device
(``browserCode``, ``operatingSystemCode``, ``deviceType``), location
(``countryCode``, ``regionCode``, ``city``), ``referrerUrl``, ``resolution``,
``languageCode``, ``siteCurrency`` and its ``actionDetails``: page views
(``action``), ``event``, ``outlink``, ``download``, ``search``, ``goal``,
``ecommerceOrder``, ``ecommerceAbandonedCart``, content impressions. The rows
of the import are the action details, in the file's order (``_row`` counts
them from 1 across the file's visits).

Why each choice:

* **Parsed by polars with an explicit schema**, every scalar as text: the API
  writes numbers as numbers or as strings depending on the Matomo version and
  field (``revenue``, ``goalId``), and a text field takes both. Fields not
  listed are never materialised. JSON lines of visits (``jq -c '.[]'``) are
  read too.
* **Action times**: the Live API turns each action's ``timestamp`` into the
  SITE's time zone (server time + the site's UTC offset), while the visit's
  ``firstActionTimestamp`` stays UTC. The offset is therefore taken back out,
  per visit: the first action's ``timestamp`` minus ``firstActionTimestamp``,
  when that is a whole number of quarter hours (every zone's offset is) of at
  most 14 hours. For a site in UTC, and for an export whose action times are
  already UTC, it is 0.
* **The page of a click**: outlinks, downloads, site searches and orders carry
  no page URL of their own (an outlink's ``url`` is its target); they get the
  URL of the visit's last page view before them.
* **Memory**: one saved page (``filter_limit`` visits) at a time, plus the
  visit ids of the folder's earlier pages (to catch pages that overlap), each
  page scanned once per run.

A file that is not such an export is refused, naming it: an API error answer
(``{"result": "error", ...}``), a truncated download (with the line and
column where the JSON stops), JSON whose elements are not visits. A visit
that appears twice in one file, or again in a later page of the same folder
(pages saved while the period still received visits overlap), and an action
of a kind Matomo added later, are rejected with that reason, never dropped
and never imported twice.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources.compression import UTF8_BOM, iter_decompressed, take_head
from backfill.sources.matomo_codes import (
    EVENT_NAMES,
    FLAT_SCHEMA,
    browser_expr,
    country_expr,
    device_expr,
    finish,
    hostname_expr,
    language_expr,
    os_expr,
    positive,
    region_expr,
    screen_expr,
    text,
    visitor_expr,
)

S = pl.String()

ACTION_FIELDS = (
    "type",
    "url",
    "pageTitle",
    "timestamp",
    "eventCategory",
    "eventAction",
    "eventName",
    "eventValue",
    "siteSearchKeyword",
    "siteSearchCategory",
    "siteSearchCount",
    "goalId",
    "goalName",
    "revenue",
    "orderId",
)
VISIT_FIELDS = (
    "idSite",
    "idVisit",
    "visitorId",
    "userId",
    "firstActionTimestamp",
    "siteCurrency",
    "referrerUrl",
    "browserCode",
    "operatingSystemCode",
    "operatingSystemVersion",
    "deviceType",
    "resolution",
    "languageCode",
    "countryCode",
    "regionCode",
    "city",
)
#: One visit of the export: the fields read, all as text.
VISIT_SCHEMA: dict[str, pl.DataType] = {
    **dict.fromkeys(VISIT_FIELDS, S),
    "actionDetails": pl.List(pl.Struct(dict.fromkeys(ACTION_FIELDS, S))),
}
#: Live action type -> our kind (see matomo_codes.FLAT_SCHEMA).
KINDS: dict[str, str] = {
    "action": "pageview",
    "event": "event",
    "outlink": "outlink",
    "download": "download",
    "search": "site_search",
    "goal": "goal",
    "ecommerceOrder": "ecommerce_order",
    "ecommerceAbandonedCart": "abandoned_cart",
    "content": "content",
    "contentImpression": "content",
    "contentInteraction": "content",
    "13": "content",  # Action::TYPE_CONTENT, left numeric by some Matomo versions
}
QUARTER_HOUR = 900
#: Saved pages that can overlap one another: JSON files in the same folder.
_PAGE_ENDINGS = (".json", ".ndjson", ".jsonl")
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_VISIT_ID = re.compile(rb'"idVisit"\s*:\s*"?(\d+)')
MAX_OFFSET = 14 * 3600  # UTC+14, the largest offset of any time zone
_SNIFF_BYTES = 4096


# --------------------------------------------------------------------------- reading a page


def read_page(source: SourceFile) -> pl.DataFrame:
    """The visits of one saved page (or JSON lines of visits); SourceError naming what is wrong."""
    data = b"".join(iter_decompressed(source.path, source.compression)).removeprefix(UTF8_BOM)
    start = data.lstrip()[:1]
    if not start:
        return pl.DataFrame(schema=VISIT_SCHEMA)
    if start == b"{" and b"\n{" not in data.strip():
        _refuse_object(source.path, data)
    try:
        if start == b"[":
            visits = pl.read_json(io.BytesIO(data), schema=VISIT_SCHEMA)
        else:
            visits = pl.read_ndjson(io.BytesIO(data), schema=VISIT_SCHEMA)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise _json_error(source.path, data, exc) from exc
    missing = visits.select(pl.col("idVisit").is_null().arg_true().first()).item()
    if missing is not None:
        raise SourceError(
            f"{source.path}: element {missing + 1} has no idVisit: not a Live.getLastVisitsDetails "
            "export (save the API's answer with format=json, one page per file)"
        )
    return visits


def _refuse_object(path: str, data: bytes) -> None:
    """A single JSON object: the API's error answer, or another method's output."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise _json_error(path, data, exc) from exc
    if isinstance(value, dict) and value.get("result") == "error":
        raise SourceError(f"{path}: the file is Matomo's error answer, not visits: {value.get('message')!r}")
    raise SourceError(
        f"{path}: one JSON object, not a list of visits: not a Live.getLastVisitsDetails export "
        "(save the API's answer with format=json, one page per file)"
    )


def _json_error(path: str, data: bytes, exc: Exception) -> SourceError:
    """Where the JSON breaks (line and column), from Python's parser; polars only says it failed."""
    try:
        text_data = data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return SourceError(f"{path}: line {line}: not UTF-8 text ({bad.reason})")
    lines = text_data.splitlines() or [""]
    decoder = json.JSONDecoder()
    position = 0
    try:
        if text_data.lstrip().startswith("["):
            decoder.decode(text_data)
        else:
            for position, line in enumerate(lines):  # noqa: B007 - the position names the line
                if line.strip():
                    decoder.decode(line)
    except json.JSONDecodeError as bad:
        line_no = bad.lineno + position
        return SourceError(
            f"{path}: line {line_no} column {bad.colno}: {bad.msg}; the export is cut short or "
            "damaged (a download that stopped?): save that page again"
        )
    return SourceError(f"{path}: not a Live.getLastVisitsDetails export: {exc}")


# --------------------------------------------------------------------------- visits -> events


def flatten(visits: pl.DataFrame, first_row: int = 1, seen: pl.DataFrame | None = None) -> pl.DataFrame:
    """Visits -> one row per action detail, in FLAT_SCHEMA (plus ``_row`` and reject columns).

    ``seen`` (idVisit, page) names the visits already in an earlier page (see
    :func:`earlier_visits`); their actions are rejected, not imported twice.
    """
    duplicate = pl.col("idVisit").is_duplicated() & (pl.int_range(pl.len()).over("idVisit") > 0)
    visits = visits.with_columns(duplicate.alias("_duplicate"))
    if seen is None:
        seen = pl.DataFrame(schema={"idVisit": S, "_seen_in": S})
    visits = visits.join(seen, on="idVisit", how="left", maintain_order="left")
    rows = (
        visits.explode("actionDetails")
        .filter(pl.col("actionDetails").is_not_null())
        .unnest("actionDetails")
        .with_columns((pl.int_range(pl.len(), dtype=pl.UInt64) + first_row).alias(COL_ROW))
    )
    ts = text(pl.col("timestamp")).cast(pl.Int64, strict=False)
    first = text(pl.col("firstActionTimestamp")).cast(pl.Int64, strict=False)
    offset = _site_offset(ts.min().over("idVisit") - first)
    rows = rows.with_columns(
        text(pl.col("type")).replace_strict(KINDS, default=None, return_dtype=S).alias("kind"),
        (ts - offset.fill_null(0)).alias("timestamp"),
    )
    rows = rows.with_columns(*_columns())
    return rows.with_columns(_error().alias(COL_SOURCE_ERROR), _raw().alias(COL_SOURCE_RAW))


def _site_offset(difference: pl.Expr) -> pl.Expr:
    """The site's UTC offset in a visit's action times, from (first action - firstActionTimestamp).

    Only a difference within 2 seconds of a quarter hour, and at most 14 hours, is
    an offset; anything else (an export whose times are already UTC, a first action
    that is gone) leaves the times as they are.
    """
    offset = (difference / QUARTER_HOUR).round(0).cast(pl.Int64) * QUARTER_HOUR
    plausible = ((difference - offset).abs() <= 2) & (offset.abs() <= MAX_OFFSET)
    return pl.when(plausible).then(offset).otherwise(0)


def _columns() -> list[pl.Expr]:
    kind = pl.col("kind")
    is_event = kind == "event"
    link = kind.is_in(["outlink", "download"])
    page = pl.when(kind == "pageview").then(text(pl.col("url"))).forward_fill().over("idVisit")
    own_url = is_event | (kind == "pageview") | (kind == "goal")
    url = pl.when(own_url).then(pl.coalesce(text(pl.col("url")), page)).otherwise(page)
    first = pl.col("timestamp") == pl.col("timestamp").min().over("idVisit")
    country = country_expr(pl.col("countryCode"))
    goal = text(pl.col("goalId"))
    return [
        pl.when(is_event)
        .then(text(pl.col("eventAction")))
        .when(kind == "goal")
        .then(pl.concat_str(pl.lit("goal_"), goal.fill_null("unknown")))  # a deleted goal has no id
        .otherwise(kind.replace_strict(EVENT_NAMES, default=None, return_dtype=S))
        .alias("event_name"),
        visitor_expr(pl.col("userId"), pl.col("visitorId")).alias("visitor_id"),
        text(pl.col("idVisit")).alias("visit_id"),
        text(pl.col("idSite")).alias("site_id"),
        url.alias("url"),
        hostname_expr(url).alias("hostname"),
        pl.when(kind == "pageview").then(text(pl.col("pageTitle"))).alias("title"),
        pl.when(first).then(text(pl.col("referrerUrl"))).alias("referrer"),
        pl.when(link).then(text(pl.col("url"))).alias("link_url"),
        pl.when(is_event)
        .then(text(pl.col("eventCategory")))
        .when(kind == "site_search")
        .then(text(pl.col("siteSearchCategory")))
        .alias("category"),
        pl.when(is_event).then(text(pl.col("eventAction"))).alias("action"),
        pl.when(is_event).then(text(pl.col("eventName"))).alias("label"),
        pl.when(is_event).then(text(pl.col("eventValue")).cast(pl.Float64, strict=False)).alias("value"),
        pl.when(kind == "site_search").then(text(pl.col("siteSearchKeyword"))).alias("keyword"),
        pl.when(kind == "site_search")
        .then(text(pl.col("siteSearchCount")).cast(pl.Int64, strict=False))
        .alias("search_count"),
        pl.when(kind == "goal").then(goal).alias("goal_id"),
        pl.when(kind == "goal").then(text(pl.col("goalName"))).alias("goal_name"),
        pl.when(kind == "ecommerce_order").then(text(pl.col("orderId"))).alias("order_id"),
        positive(pl.col("revenue")).alias("revenue"),
        pl.when(positive(pl.col("revenue")).is_not_null())
        .then(text(pl.col("siteCurrency")).str.to_uppercase())
        .alias("currency"),
        screen_expr(pl.col("resolution")).alias("screen"),
        language_expr(pl.col("languageCode")).alias("language"),
        browser_expr(pl.col("browserCode"), pl.col("operatingSystemCode")).alias("browser"),
        os_expr(pl.col("operatingSystemCode"), pl.col("operatingSystemVersion")).alias("os"),
        device_expr(pl.col("deviceType")).alias("device"),
        country.alias("country"),
        region_expr(country, pl.col("regionCode")).alias("region"),
        text(pl.col("city")).alias("city"),
    ]


def _error() -> pl.Expr:
    """Why an action detail cannot become an event, or null."""
    return pl.coalesce(
        pl.when(pl.col("_duplicate")).then(
            pl.format("idVisit {} appears twice in this file (a page saved twice?)", pl.col("idVisit"))
        ),
        pl.when(pl.col("_seen_in").is_not_null()).then(
            pl.format(
                "idVisit {} is also in the earlier page {} (pages that overlap: it is imported from there)",
                pl.col("idVisit"),
                pl.col("_seen_in"),
            )
        ),
        pl.when(pl.col("kind").is_null()).then(
            pl.format("action type {} is not one this reader imports", text(pl.col("type")).fill_null("(none)"))
        ),
        pl.when(pl.col("timestamp").is_null()).then(pl.lit("the action has no timestamp")),
        pl.when(pl.col("event_name").is_null() & pl.col("kind").is_in(["pageview", "content"]).not_()).then(
            pl.format("a {} without a name (eventAction is empty)", pl.col("kind"))
        ),
    )


def _raw() -> pl.Expr:
    """The action's place in the export, to find it: visit id and action type."""
    described = pl.format("idVisit={} type={}", pl.col("idVisit"), text(pl.col("type")).fill_null(""))
    return pl.when(_error().is_not_null()).then(described)


# --------------------------------------------------------------------------- plugin entry points


def earlier_visits(path: str) -> pl.DataFrame:
    """(idVisit, page) of the visits in the pages saved next to ``path`` whose names sort before it.

    Pages of a period that still receives visits shift while they are saved, so
    one visit can be in two files. The first page (by name) that holds a visit
    is where it is imported from; later copies are rejected, naming that page.
    """
    folder, name = os.path.split(os.path.abspath(path))
    frames = []
    for other in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(other)
        compression = _COMPRESSION.get(ext.lower())
        if compression:
            stem, ext = os.path.splitext(stem)
        if other >= name or ext.lower() not in _PAGE_ENDINGS:
            continue
        full = os.path.join(folder, other)
        info = os.stat(full)
        ids = _page_visit_ids(full, compression, info.st_size, info.st_mtime_ns)
        frames.append(pl.DataFrame({"idVisit": ids, "_seen_in": pl.Series([other] * len(ids), dtype=S)}))
    if not frames:
        return pl.DataFrame(schema={"idVisit": S, "_seen_in": S})
    return pl.concat(frames).unique("idVisit", keep="first", maintain_order=True)


@functools.lru_cache(maxsize=4096)
def _page_visit_ids(path: str, compression: str | None, size: int, mtime_ns: int) -> pl.Series:
    """The idVisit values of one saved page (a text scan: a damaged page is refused when it is read)."""
    try:
        data = b"".join(iter_decompressed(path, compression))
    except SourceError:
        return pl.Series([], dtype=S)
    return pl.Series([m.decode() for m in _VISIT_ID.findall(data)], dtype=S)


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """The file's action details as flat frames of at most ``chunk_rows`` rows."""
    visits = read_page(source)
    rows = finish(flatten(visits, seen=earlier_visits(source.path)), (COL_SOURCE_ERROR, COL_SOURCE_RAW))
    for start in range(0, rows.height, options.chunk_rows):
        yield rows.slice(start, options.chunk_rows)


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns, after checking that the file starts like an export."""
    head, _ = take_head(iter_decompressed(source.path, source.compression), _SNIFF_BYTES)
    start = head.removeprefix(UTF8_BOM).lstrip()[:1]
    if start not in (b"[", b"{", b""):
        raise SourceError(
            f"{source.path}: not JSON (it starts with {head[:20]!r}): not a Live.getLastVisitsDetails "
            "export saved with format=json"
        )
    return dict(FLAT_SCHEMA)


def sniff(path: str) -> bool:
    """A JSON file whose first KiB looks like Live visits (idVisit and actionDetails keys)."""
    try:
        head, _ = take_head(iter_decompressed(path, "gzip" if path.endswith(".gz") else None), _SNIFF_BYTES)
    except (OSError, SourceError):
        return False
    head = head.removeprefix(UTF8_BOM).lstrip()
    return head[:1] in (b"[", b"{") and b'"idVisit"' in head and (b'"actionDetails"' in head or b'"visitorId"' in head)


PLUGIN = FormatPlugin(
    name="matomo_live",
    description="Matomo Live.getLastVisitsDetails (format=json) pages: visits with their actionDetails",
    iter_frames=iter_frames,
    schema=flat_schema,
    sniff=sniff,
    preset="matomo-live",
)

__all__ = ["ACTION_FIELDS", "KINDS", "PLUGIN", "VISIT_SCHEMA", "flatten", "read_page"]
