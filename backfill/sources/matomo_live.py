"""Matomo Live API exports: ``--format matomo_live``.

``Live.getLastVisitsDetails`` with ``format=json`` answers one JSON array of
visits per request; a history is saved as many pages (``filter_limit`` /
``filter_offset``), one file each (``.json``, ``.gz``/``.zst`` read; reading
them: ``matomo_pages``). Each visit carries its site (``idSite``,
``siteName``), visitor (``visitorId``, ``userId``), device (``browserCode``,
``operatingSystemCode``, ``deviceTypeIcon``, ``deviceType``), location
(``countryCode``, ``regionCode``, ``city``), ``referrerUrl``, ``resolution``,
``languageCode``, ``siteCurrency`` and its ``actionDetails``: page views
(``action``), ``event``, ``outlink``, ``download``, ``search``, ``goal``,
``ecommerceOrder`` (with its ``itemDetails``), ``ecommerceAbandonedCart``,
content impressions. The rows of the import are the action details, in the
file's order (``_row`` counts them from 1 across the file's visits).

Why each choice:

* **Language**: a Matomo answers in its user's language (``"deviceType":
  "Bureau"``); the codes and icon names beside each label do not change, so
  they are read: ``browserCode``, ``operatingSystemCode``, ``deviceTypeIcon``
  (``.../devices/desktop.png``), ``countryCode``, ``regionCode``. A value that
  maps to nothing is named in a note (``matomo_visits.VisitNotes``).
* **Visitor**: ``userId``, else ``visitorId``; Matomo writes ``"visitorId":
  false`` when it has none, and such a visit is its own visitor
  (``visit-<idVisit>``), said in a note, never one visitor for all of them.
* **Action times**: the Live API turns each action's ``timestamp`` into the
  SITE's time zone (server time + the site's UTC offset), while the visit's
  ``firstActionTimestamp`` stays UTC. The offset is therefore taken back out,
  per visit: the first action's ``timestamp`` minus ``firstActionTimestamp``,
  when that is a whole number of quarter hours (every zone's offset is) of at
  most 14 hours. For a site in UTC, and for an export whose action times are
  already UTC, it is 0.
* **The page of a click**: outlinks, downloads, site searches and orders carry
  no page URL of their own (an outlink's ``url`` is its target); they get the
  URL of the visit's last page view before them. A URL Matomo keeps without
  its scheme (``example.com/page``) gets ``http://`` back.
* **Sites**: pages of several sites are refused until one is chosen
  (``--matomo-site ID``); the other sites' actions are then skipped by name.
* **Memory**: one saved page (``filter_limit`` visits) at a time, plus the
  visit ids of the run's earlier pages (to catch pages that overlap), each
  page scanned once per run.

A file that is not such an export is refused, naming it: an API error answer
(``{"result": "error", ...}``), a truncated download (with the line and
column where the JSON stops), JSON whose elements are not visits. A visit
that appears twice in one file, or again in a later input page (pages saved
while the period still received visits overlap), and an action of a kind
Matomo added later, are rejected with that reason, never dropped and never
imported twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SKIP, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources.compression import UTF8_BOM, iter_decompressed, take_head
from backfill.sources.matomo_codes import (
    EVENT_NAMES,
    FLAT_SCHEMA,
    absolute_url,
    browser_expr,
    country_expr,
    device_expr,
    finish,
    hostname_expr,
    item_lines,
    items_object,
    language_expr,
    os_expr,
    positive,
    region_expr,
    screen_expr,
    text,
    visitor_expr,
)
from backfill.sources.matomo_pages import (
    ACTION_FIELDS,
    VISIT_SCHEMA,
    earlier_visits,
    read_page,
    run_notes,
    run_sites,
)
from backfill.sources.matomo_sites import check_sites, skip_other_sites

S = pl.String()

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
MAX_OFFSET = 14 * 3600  # UTC+14, the largest offset of any time zone
_SNIFF_BYTES = 4096


# --------------------------------------------------------------------------- visits -> events


def flatten(visits: pl.DataFrame, first_row: int = 1, seen: pl.DataFrame | None = None) -> pl.DataFrame:
    """Visits -> one row per action detail, in FLAT_SCHEMA (plus ``_row`` and reject columns).

    ``seen`` (idVisit, _seen_in) names the visits already in an earlier page (see
    ``matomo_pages.earlier_visits``); their actions are rejected, not imported twice.
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
    rows = rows.with_columns(*_columns()).with_columns(hostname_expr(pl.col("url")).alias("hostname"))
    rows = _with_items(rows)
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
    own_url = absolute_url(text(pl.col("url")))
    page = pl.when(kind == "pageview").then(own_url).forward_fill().over("idVisit")
    takes_own = is_event | (kind == "pageview") | (kind == "goal")
    url = pl.when(takes_own).then(pl.coalesce(own_url, pl.when(kind != "pageview").then(page))).otherwise(page)
    first = pl.col("timestamp") == pl.col("timestamp").min().over("idVisit")
    country = country_expr(pl.col("countryCode"))
    goal = text(pl.col("goalId"))
    goal_name = text(pl.col("goalName"))
    return [
        pl.when(is_event)
        .then(text(pl.col("eventAction")))
        .when(kind == "goal")  # a deleted goal has no name and no id in the Live API
        .then(pl.coalesce(goal_name, pl.concat_str(pl.lit("goal_"), goal.fill_null("unknown"))))
        .otherwise(kind.replace_strict(EVENT_NAMES, default=None, return_dtype=S))
        .alias("event_name"),
        visitor_expr(pl.col("userId"), pl.col("visitorId"), pl.col("idVisit")).alias("visitor_id"),
        text(pl.col("idVisit")).alias("visit_id"),
        text(pl.col("idSite")).alias("site_id"),
        url.alias("url"),
        pl.when(kind == "pageview").then(text(pl.col("pageTitle"))).alias("title"),
        pl.when(first).then(text(pl.col("referrerUrl"))).alias("referrer"),
        pl.when(link).then(own_url).alias("link_url"),
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
        pl.when(kind == "goal").then(goal_name).alias("goal_name"),
        pl.when(kind == "ecommerce_order").then(text(pl.col("orderId"))).alias("order_id"),
        positive(pl.col("revenue")).alias("revenue"),
        pl.when(positive(pl.col("revenue")).is_not_null())
        .then(text(pl.col("siteCurrency")).str.to_uppercase())
        .alias("currency"),
        screen_expr(pl.col("resolution")).alias("screen"),
        language_expr(pl.col("languageCode")).alias("language"),
        browser_expr(pl.col("browserCode"), pl.col("operatingSystemCode")).alias("browser"),
        os_expr(pl.col("operatingSystemCode"), pl.col("operatingSystemVersion")).alias("os"),
        device_expr(pl.col("deviceType"), pl.col("deviceTypeIcon")).alias("device"),
        country.alias("country"),
        region_expr(country, pl.col("regionCode")).alias("region"),
        text(pl.col("city")).alias("city"),
    ]


def _with_items(rows: pl.DataFrame) -> pl.DataFrame:
    """``items``: an order's ``itemDetails`` (and ``items``, their number) as one JSON object."""
    is_order = pl.col("kind") == "ecommerce_order"
    count = text(pl.col("items")).cast(pl.Int64, strict=False)
    lines = (
        rows.filter(is_order & (pl.col("itemDetails").list.len() > 0))
        .select(COL_ROW, "itemDetails")
        .explode("itemDetails")
        .unnest("itemDetails")
        .select(
            COL_ROW,
            item_lines(
                pl.col("itemSKU"), pl.col("itemName"), pl.col("itemCategory"), pl.col("price"), pl.col("quantity")
            ).alias("line"),
        )
        .group_by(COL_ROW, maintain_order=True)
        .agg(pl.col("line"))
    )
    rows = rows.join(lines, on=COL_ROW, how="left", maintain_order="left")
    count_only = pl.when(count > 0).then(pl.format('{{"item_count":{}}}', count))
    with_lines = items_object(pl.col("line").fill_null(pl.lit([], pl.List(S))), count)
    return rows.with_columns(pl.when(is_order).then(pl.coalesce(with_lines, count_only)).alias("items"))


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


def iter_frames(source: SourceFile, options: ReadOptions) -> Iterator[pl.DataFrame]:
    """The file's action details as flat frames of at most ``chunk_rows`` rows."""
    chosen = check_sites("the Live pages", run_sites(source, options), options)
    visits = read_page(source)
    for note in run_notes(source, options, chosen):
        options.note(note)
    rows = flatten(visits, seen=earlier_visits(source, options))
    nameless = _nameless_goals(rows, chosen)
    if nameless:
        options.note(
            f"{source.path}: {nameless:,} goal conversion(s) without goalId or goalName (a goal deleted in Matomo: "
            "the Live API no longer names it) sent as event goal_unknown, revenue kept; the database tables "
            "(goal, log_conversion) keep deleted goals' names"
        )
    rows = finish(skip_other_sites(rows, pl.col("site_id"), chosen), (COL_SOURCE_ERROR, COL_SOURCE_RAW, COL_SKIP))
    for start in range(0, rows.height, options.chunk_rows):
        yield rows.slice(start, options.chunk_rows)


def _nameless_goals(rows: pl.DataFrame, chosen: str | None) -> int:
    """Goal conversions the Live API gives neither an id nor a name (the goal was deleted), of the chosen site."""
    goals = rows.filter((pl.col("kind") == "goal") & pl.col("goal_id").is_null() & pl.col("goal_name").is_null())
    if chosen is not None:
        goals = goals.filter(pl.col("site_id").is_null() | (pl.col("site_id") == chosen))
    return goals.height


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns, after checking that the file starts like an export and the sites."""
    head, _ = take_head(iter_decompressed(source.path, source.compression), _SNIFF_BYTES)
    start = head.removeprefix(UTF8_BOM).lstrip()[:1]
    if start not in (b"[", b"{", b""):
        raise SourceError(
            f"{source.path}: not JSON (it starts with {head[:20]!r}): not a Live.getLastVisitsDetails "
            "export saved with format=json"
        )
    check_sites("the Live pages", run_sites(source, options), options)
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
