"""Matomo's raw log tables (a database dump): ``--format matomo_logs``.

A Matomo site's history is in its MySQL log tables, dumped one file per table
(``mysql --batch -e 'SELECT * FROM matomo_log_visit' > matomo_log_visit.tsv``,
or CSV with a header; ``.gz``/``.zst`` read directly; table prefix ``matomo_``,
``piwik_``, any other ``<prefix>_`` or none; see ``matomo_tables``):

* ``log_link_visit_action``: one row per action (page view, download, outlink,
  site search, event, content interaction), with ids into ``log_action``;
* ``log_action``: the dictionary of URLs, titles, event categories, ... (its
  ``url_prefix`` code gives back the ``https://www.`` Matomo strips);
* ``log_visit``: one row per visit: site, visitor, device, location, referrer;
* ``log_conversion``: goal conversions and ecommerce orders, with revenue;
* optionally ``goal`` (each goal's name), ``log_conversion_item`` (each order's
  items) and ``site`` (each site's name, URL and currency: Matomo keeps one
  currency per site, not per row). Matomo's other tables are ignored, with a note.

The rows of the import are the rows of ``log_link_visit_action`` and
``log_conversion``; the other tables are looked up (their files yield no rows).
Each action file finds its tables in its own folder, by the same prefix, so
pass the folder or all the files. A dump of several sites is refused until
one is chosen (``--matomo-site ID``, see ``matomo_sites``).

What the rows are, in Matomo's terms (``core/Tracker/Action.php`` types, and how
Matomo's own reports read them):

* ``idaction_url`` = 0 with no name, event or content: a page view whose URL
  Matomo did not record; its reports list it as "Page URL not defined". It is
  a page view with no URL here, which the presets skip by a named filter
  (Umami stores no page view without a page).
* Outlinks, downloads and site searches carry no page of their own: the page is
  ``idaction_url_ref``, the visit's last page view. Piwik 1.x set that column to
  the previous action of any kind, so a download after an outlink named the
  outlink's target: such a reference is followed back through the visit's earlier
  clicks to the page view (:class:`ClickPages`).

Memory, as the tables' sizes are very different:

* ``log_action`` is held whole, as a dictionary (id, type, text): roughly
  20 bytes plus the text per row (measured: 44 bytes a row with 24-character
  URLs); usually far smaller than the actions.
* ``log_visit``, reduced to the 13 columns used (measured: about 100 bytes a
  visit with short referrers and city names), is held
  whole when its (decompressed) file is under :data:`PARTITION_BYTES`. A larger
  one is hash-partitioned by ``idvisit`` into K Arrow files on disk, and the
  actions likewise as they are read; partition k of both is then joined on its
  own. Memory is then one partition of visits plus one chunk of actions; disk
  is about the size of both tables' used columns (``BACKFILL_TMPDIR``).
* ``log_link_visit_action`` and ``log_conversion`` stream in chunks; ``goal``,
  ``site`` and the orders' items (one JSON text per order) are held whole.

A row that cannot become an event names itself: an action id with no
``log_action`` row, an ``idvisit`` with no ``log_visit`` row, a ``server_time``
that is not a time, a row cut short (a truncated dump) are rejected with that
reason (``_source_error``), never dropped. A missing table, or a dictionary
table with an unreadable row, refuses the run before anything is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Iterator

import polars as pl

from backfill.errors import SourceError
from backfill.schema import COL_ROW, COL_SKIP, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import FormatPlugin, ReadOptions, SourceFile
from backfill.sources import matomo_sqldump as sqldump
from backfill.sources.compression import temp_dir
from backfill.sources.matomo_codes import (
    EVENT_NAMES,
    FLAT_SCHEMA,
    absolute_url,
    finish,
    hostname_expr,
    positive,
    text,
    unsanitize,
)
from backfill.sources.matomo_sites import check_sites, skip_other_sites
from backfill.sources.matomo_tables import (
    NEEDS,
    TABLE_COLUMNS,
    TableFile,
    dump_sites,
    epoch_expr,
    header,
    id_expr,
    ignored_note,
    load_actions,
    load_goals,
    load_items,
    load_sites,
    needed,
    own_table,
    read_table,
    sibling,
    table_file,
    text_column,
    unescape,
)
from backfill.sources.matomo_visits import VisitNotes, shape_visits

S = pl.String()
U64 = pl.UInt64()

#: A log_visit file larger than this (decompressed) is joined partition by partition.
PARTITION_BYTES = 256 << 20
#: Gzip/zstd dumps of these tables shrink about this much; used to estimate the size.
COMPRESSION_RATIO = 6
#: log_action types of a click: outlink, download (a page is a URL, 1, or a title, 4).
CLICK_TYPES = (2, 3)
#: Kinds whose page is the visit's last page view (``idaction_url_ref``), not their own URL.
REF_PAGE_KINDS = ("outlink", "download", "site_search")
_PART = "__part"
#: Links of a chain of clicks followed back at most (Piwik 1.x: click after click).
MAX_CLICK_CHAIN = 1000


# --------------------------------------------------------------------------- actions


def _lookup(frame: pl.DataFrame, actions: pl.DataFrame, column: str, prefix: str) -> pl.DataFrame:
    """Join one action id column to the dictionary: ``<prefix>_type``, ``<prefix>_text``."""
    table = actions.rename(
        {"idaction": column, "a_type": f"{prefix}_type", "a_text": f"{prefix}_text", "a_found": f"{column}__found"}
    )
    joined = frame.join(table, on=column, how="left", maintain_order="left")
    return joined.with_columns(pl.col(f"{column}__found").fill_null(False))


def _orphan(column: str) -> pl.Expr:
    """The reason a row's action id has no log_action row (null when it has one)."""
    missing = pl.col(column).is_not_null() & pl.col(f"{column}__found").not_()
    return pl.when(missing).then(pl.format(f"{column} {{}} has no row in log_action", pl.col(column)))


_IDS = ("idaction_url", "idaction_url_ref", "idaction_name", "idaction_event_category", "idaction_event_action")


def _kind(url_is_zero: pl.Expr) -> pl.Expr:
    """The action's kind, from its columns and the log_action types of its URL / name."""
    page_type = pl.col("page_type")
    return (
        pl.when(pl.col("idaction_event_category").is_not_null())
        .then(pl.lit("event"))
        .when(pl.col("content").is_not_null())
        .then(pl.lit("content"))
        .when(page_type.is_in([1, 4]))
        .then(pl.lit("pageview"))
        .when(page_type == 2)
        .then(pl.lit("outlink"))
        .when(page_type == 3)
        .then(pl.lit("download"))
        .when(page_type == 8)
        .then(pl.lit("site_search"))
        .when(url_is_zero & page_type.is_null())  # Matomo's "Page URL not defined"
        .then(pl.lit("pageview"))
    )


def shape_actions(raw: pl.DataFrame, actions: pl.DataFrame, tsv: bool, clicks: ClickPages) -> pl.DataFrame:
    """log_link_visit_action rows -> events (without the visit's columns yet)."""
    url_is_zero = text(pl.col("idaction_url")).cast(pl.Int64, strict=False) == 0
    frame = raw.with_columns(
        *(id_expr(c).alias(c) for c in _IDS),
        id_expr("idaction_content_name").alias("content"),
        id_expr("idvisit").alias("idvisit"),
        epoch_expr("server_time").alias("timestamp"),
        text(pl.col("idsite")).alias("a_idsite"),
        text_column(raw, "search_cat", tsv).alias("search_cat"),
        url_is_zero.fill_null(False).alias("_url_zero"),
    )
    for column, prefix in zip(_IDS, ("url", "ref", "nam", "cat", "act"), strict=True):
        frame = _lookup(frame, actions, column, prefix)
    frame = frame.with_columns(pl.coalesce(pl.col("url_type"), pl.col("nam_type")).alias("page_type"))
    frame = clicks.with_pages(frame.with_columns(_kind(pl.col("_url_zero")).alias("kind")))
    is_event = pl.col("kind") == "event"
    link = pl.col("kind").is_in(["outlink", "download"])
    value = text(pl.col("custom_float")).cast(pl.Float64, strict=False)
    return frame.with_columns(
        pl.when(is_event)
        .then(pl.col("act_text"))
        .otherwise(pl.col("kind").replace_strict(EVENT_NAMES, default=None, return_dtype=S))
        .alias("event_name"),
        absolute_url(
            pl.when(pl.col("kind").is_in(REF_PAGE_KINDS)).then(pl.col("page_text")).otherwise(pl.col("url_text"))
        ).alias("url"),
        pl.when(pl.col("kind") == "pageview").then(pl.col("nam_text")).alias("title"),
        pl.when(link).then(absolute_url(pl.col("url_text"))).alias("link_url"),
        pl.when(is_event).then(pl.col("cat_text")).otherwise(pl.col("search_cat")).alias("category"),
        pl.when(is_event).then(pl.col("act_text")).alias("action"),
        pl.when(is_event).then(pl.col("nam_text")).alias("label"),
        pl.when(is_event).then(value).alias("value"),
        pl.when(pl.col("kind") == "site_search").then(pl.col("nam_text")).alias("keyword"),
        pl.when(pl.col("kind") == "site_search")
        .then(text(pl.col("search_count")).cast(pl.Int64, strict=False))
        .alias("search_count"),
        _action_error().alias("_error"),
    )


def _action_error() -> pl.Expr:
    """Why an action row cannot become an event, or null."""
    shown = [pl.col(c).cast(S).fill_null("NULL") for c in ("idaction_url", "idaction_name")]
    return pl.coalesce(
        pl.when(pl.col("timestamp").is_null()).then(
            pl.format("server_time {} is not a time (YYYY-MM-DD HH:MM:SS)", text(pl.col("server_time")).fill_null(""))
        ),
        *(_orphan(c) for c in _IDS),
        pl.when(pl.col("kind").is_null()).then(
            pl.format(
                "an action with no page URL, name, event or content (idaction_url {}, idaction_name {}, "
                "log_action type {}): not a page view, download, outlink, site search or event",
                *shown,
                pl.col("page_type").cast(S).fill_null("none"),
            )
        ),
        pl.when((pl.col("kind") == "event") & pl.col("act_text").is_null()).then(
            pl.lit("an event without an action (idaction_event_action is empty)")
        ),
    )


class ClickPages:
    """The page view an outlink, download or site search was on, where the row does not say it.

    Matomo 2 and later write the visit's last page view into ``idaction_url_ref``;
    Piwik 1.x wrote the visit's last action of any kind, so a click after a click
    names the first click's target. Such a reference is followed back: the latest
    earlier click of the same visit with that target has the reference wanted (or
    one more click to follow). The clicks of the whole file are read for that, once,
    and only when a row needs it (never for a Matomo 2+ dump).
    """

    def __init__(self, own: TableFile, options: ReadOptions, actions: pl.DataFrame) -> None:
        self._own, self._options, self._actions = own, options, actions
        self._chain: pl.DataFrame | None = None

    def with_pages(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``page_text``: the page of the rows whose kind takes the visit's last page view."""
        frame = frame.with_columns(
            pl.when(pl.col("ref_type").is_in(CLICK_TYPES))
            .then(None)
            .otherwise(pl.col("idaction_url_ref"))
            .alias("_page")
        )
        follow = pl.col("kind").is_in(REF_PAGE_KINDS) & pl.col("ref_type").is_in(CLICK_TYPES)
        need = frame.filter(follow).select(
            COL_ROW, "idvisit", pl.col("idaction_url_ref").alias("target"), pl.col(COL_ROW).alias("pos")
        )
        if need.height:
            pages = self._follow(need)
            frame = frame.join(pages, on=COL_ROW, how="left", maintain_order="left").with_columns(
                pl.coalesce(pl.col("_page"), pl.col("_followed")).alias("_page")
            )
        texts = self._actions.select(pl.col("idaction").alias("_page"), pl.col("a_text").alias("page_text"))
        return frame.join(texts, on="_page", how="left", maintain_order="left")

    def _follow(self, need: pl.DataFrame) -> pl.DataFrame:
        chain = self._clicks()
        types = self._actions.select(pl.col("idaction").alias("c_ref"), pl.col("a_type").alias("c_type"))
        found = []
        for _ in range(MAX_CLICK_CHAIN):
            if need.height == 0:
                break
            hit = need.sort("pos").join_asof(
                chain,
                on="pos",
                by=["idvisit", "target"],
                strategy="backward",
                allow_exact_matches=False,
                check_sortedness=False,  # both sorted by pos just above / when built
            )
            hit = hit.join(types, on="c_ref", how="left")
            again = pl.col("c_type").is_in(CLICK_TYPES).fill_null(False)
            found.append(hit.filter(again.not_()).select(COL_ROW, pl.col("c_ref").alias("_followed")))
            need = hit.filter(again).select(
                COL_ROW, "idvisit", pl.col("c_ref").alias("target"), pl.col("c_pos").alias("pos")
            )
        return pl.concat(found) if found else pl.DataFrame(schema={COL_ROW: pl.UInt64(), "_followed": U64})

    def _clicks(self) -> pl.DataFrame:
        """(idvisit, target, pos, c_ref, c_pos) of every click of the file, in file order."""
        if self._chain is not None:
            return self._chain
        click_ids = self._actions.filter(pl.col("a_type").is_in(CLICK_TYPES)).get_column("idaction")
        frames = []
        columns = ("idvisit", "idaction_url", "idaction_url_ref")
        for raw in read_table(self._own, self._options, bad_records="reject", columns=columns):
            rows = raw.select(
                id_expr("idvisit").alias("idvisit"),
                id_expr("idaction_url").alias("target"),
                pl.col(COL_ROW).cast(pl.UInt64).alias("pos"),
                id_expr("idaction_url_ref").alias("c_ref"),
            )
            frames.append(rows.filter(pl.col("target").is_in(click_ids.implode())))
        schema = {"idvisit": U64, "target": U64, "pos": pl.UInt64(), "c_ref": U64}
        chain = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
        self._chain = chain.with_columns(pl.col("pos").alias("c_pos")).sort("pos")
        return self._chain


# --------------------------------------------------------------------------- conversions


def shape_conversions(raw: pl.DataFrame, tsv: bool) -> pl.DataFrame:
    """log_conversion rows -> goal / ecommerce order events (without the visit's columns yet)."""
    goal = text(pl.col("idgoal")).cast(pl.Int64, strict=False)
    kind = (
        pl.when(goal == 0)
        .then(pl.lit("ecommerce_order"))
        .when(goal == -1)
        .then(pl.lit("abandoned_cart"))
        .when(goal > 0)
        .then(pl.lit("goal"))
    )
    frame = raw.with_columns(unsanitize(text_column(raw, "url", tsv)).alias("url"), kind.alias("kind"))
    is_goal = pl.col("kind") == "goal"
    return frame.with_columns(
        id_expr("idvisit").alias("idvisit"),
        epoch_expr("server_time").alias("timestamp"),
        text(pl.col("idsite")).alias("c_idsite"),
        absolute_url(pl.col("url")).alias("url"),
        pl.when(is_goal).then(goal.cast(S)).alias("goal_id"),
        pl.when(pl.col("kind") == "ecommerce_order").then(text_column(raw, "idorder", tsv)).alias("order_id"),
        text(pl.col("items")).cast(pl.Int64, strict=False).alias("item_count"),
        positive(pl.col("revenue")).alias("revenue"),
        pl.coalesce(
            pl.when(pl.col("kind").is_null()).then(pl.format("idgoal {} is not a goal id", text(pl.col("idgoal")))),
            pl.when(epoch_expr("server_time").is_null()).then(
                pl.format("server_time {} is not a time (YYYY-MM-DD HH:MM:SS)", text(pl.col("server_time")))
            ),
        ).alias("_error"),
    )


class Conversions:
    """What a conversion row takes from the other tables: goal names, currencies, order items."""

    def __init__(self, own: TableFile, options: ReadOptions, actions: pl.DataFrame | None) -> None:
        self.goals = load_goals(own, options)
        self.currencies = load_sites(own, options).select(pl.col("idsite").alias("c_idsite"), "currency")
        self.items = None if actions is None else load_items(own, options, actions)

    def attach(self, conversions: pl.DataFrame) -> pl.DataFrame:
        frame = conversions.join(self.goals, on=["c_idsite", "goal_id"], how="left", maintain_order="left")
        frame = frame.join(self.currencies, on="c_idsite", how="left", maintain_order="left")
        is_goal, is_order = pl.col("kind") == "goal", pl.col("kind") == "ecommerce_order"
        columns = [
            pl.when(is_goal)
            .then(pl.coalesce(pl.col("goal_name"), pl.concat_str(pl.lit("goal_"), pl.col("goal_id"))))
            .otherwise(pl.col("kind").replace_strict(EVENT_NAMES, default=None, return_dtype=S))
            .alias("event_name"),
            pl.when(pl.col("revenue").is_not_null()).then(pl.col("currency")).alias("currency"),
        ]
        count_only = pl.when(pl.col("item_count") > 0).then(pl.format('{{"item_count":{}}}', pl.col("item_count")))
        if self.items is not None:
            frame = frame.join(self.items, on=["idvisit", "order_id"], how="left", maintain_order="left")
            columns.append(pl.when(is_order).then(pl.coalesce(pl.col("order_items"), count_only)).alias("items"))
        else:
            columns.append(pl.when(is_order).then(count_only).alias("items"))
        return frame.with_columns(columns)


# --------------------------------------------------------------------------- joining the visits


def attach_visits(events: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """Add each event's visit columns; an event whose visit is missing gets an error."""
    joined = events.join(visits, on="idvisit", how="left", maintain_order="left")
    first = pl.col("v_first").is_null() | (pl.col("timestamp") <= pl.col("v_first"))
    orphan = pl.when(pl.col("idvisit").is_not_null() & pl.col("v_found").is_null()).then(
        pl.format("idvisit {} has no row in log_visit", pl.col("idvisit"))
    )
    no_visit = pl.when(pl.col("idvisit").is_null()).then(pl.lit("no idvisit"))
    error = pl.coalesce(pl.col("_error"), no_visit, orphan)
    own_site = pl.col("a_idsite") if "a_idsite" in joined.columns else pl.col("c_idsite")
    return joined.with_columns(
        pl.col("idvisit").cast(S).alias("visit_id"),
        pl.coalesce(own_site, pl.col("v_idsite")).alias("site_id"),
        pl.when(first).then(pl.col("v_referrer")).alias("referrer"),
        hostname_expr(pl.col("url")).alias("hostname"),
        error.alias("_error"),
    )


def _with_errors(frame: pl.DataFrame) -> pl.DataFrame:
    """Set ``_source_error``/``_source_raw`` from ``_error`` (keeping a reader's own)."""
    own = pl.col(COL_SOURCE_ERROR) if COL_SOURCE_ERROR in frame.columns else pl.lit(None, S)
    own_raw = pl.col(COL_SOURCE_RAW) if COL_SOURCE_RAW in frame.columns else pl.lit(None, S)
    described = pl.concat_str(
        pl.lit("idvisit="),
        pl.col("idvisit").cast(S).fill_null(""),
        pl.lit(" server_time="),
        text(pl.col("server_time")).fill_null(""),
    )
    return frame.with_columns(
        pl.coalesce(own, pl.col("_error")).alias(COL_SOURCE_ERROR),
        pl.coalesce(own_raw, pl.when(pl.col("_error").is_not_null()).then(described)).alias(COL_SOURCE_RAW),
    )


def visit_partitions(tf: TableFile) -> int:
    """How many partitions log_visit is joined in (1: held whole), from its decompressed size."""
    size = os.path.getsize(tf.path) * (COMPRESSION_RATIO if tf.compression else 1)
    return max(1, math.ceil(size / PARTITION_BYTES))


def join_visits(
    events: Iterator[pl.DataFrame],
    visits_file: TableFile,
    options: ReadOptions,
    partitions: int | None = None,
    notes: VisitNotes | None = None,
) -> Iterator[pl.DataFrame]:
    """Each chunk of events with its visit's columns, holding at most one partition of visits."""
    parts = visit_partitions(visits_file) if partitions is None else partitions
    notes = notes or VisitNotes(visits_file.path, "visit")
    visit_chunks = (
        shape_visits(raw, visits_file.tsv, notes) for raw in read_table(visits_file, options, bad_records="raise")
    )
    if parts == 1:
        visits = _unique_visits(list(visit_chunks))
        for chunk in events:
            yield attach_visits(chunk, visits)
        return
    with tempfile.TemporaryDirectory(prefix="backfill-matomo-", dir=temp_dir()) as tmp:
        visit_files = _spill(visit_chunks, parts, os.path.join(tmp, "v"))
        event_files = _spill(events, parts, os.path.join(tmp, "e"))
        for k in range(parts):
            visits = _unique_visits([pl.read_ipc(p) for p in visit_files[k]])
            for path in event_files[k]:
                yield attach_visits(pl.read_ipc(path), visits)
                os.unlink(path)


def _unique_visits(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """One row per idvisit (a duplicated visit row must not duplicate its events)."""
    if not frames:
        empty = pl.DataFrame(schema=dict.fromkeys(sum(TABLE_COLUMNS["log_visit"], ()), S))
        return shape_visits(empty, False, VisitNotes("", "visit"))
    return pl.concat(frames).filter(pl.col("idvisit").is_not_null()).unique("idvisit", keep="first")


def _spill(chunks: Iterator[pl.DataFrame], parts: int, stem: str) -> list[list[str]]:
    """Write each chunk's rows into the Arrow file of their ``idvisit`` partition."""
    files: list[list[str]] = [[] for _ in range(parts)]
    for i, chunk in enumerate(chunks):
        keyed = chunk.with_columns((pl.col("idvisit").fill_null(0) % parts).cast(pl.Int64).alias(_PART))
        for (k,), part in keyed.partition_by(_PART, as_dict=True, include_key=False).items():
            path = f"{stem}-{k}-{i}.arrow"
            part.write_ipc(path)
            files[int(k)].append(path)
    return files


# --------------------------------------------------------------------------- plugin entry points


def _chosen_site(own: TableFile, options: ReadOptions) -> str | None:
    """``--matomo-site``, after checking the dump's sites (refused: several and none chosen)."""
    folder = os.path.dirname(own.path) or "."
    unknown = "" if sibling(own, "site") else " (names and URLs are in the site table, not in this dump)"
    return check_sites(folder, dump_sites(own, options), options, unknown=unknown)


def _table_notes(own: TableFile, options: ReadOptions) -> None:
    """What the dump lacks or holds beyond the tables read, said once per dump."""
    note = ignored_note(own)
    if note:
        options.note(note)
    absent = [t for t in ("log_conversion", "goal", "log_conversion_item", "site") if sibling(own, t) is None]
    folder = os.path.dirname(own.path) or "."
    said = {
        "log_conversion": "no goal conversions or ecommerce orders are imported",
        "goal": "goal conversions are named goal_<idgoal>, not by the goal's name",
        "log_conversion_item": "orders are imported without their items",
        "site": "revenue has no currency (rejected), and sites are known by id only",
    }
    for table in absent:
        if table != "log_conversion" and "log_conversion" in absent:
            continue
        dump = f"mysql --batch -e 'SELECT * FROM {own.prefix or 'matomo_'}{table}' > {own.prefix}{table}.tsv"
        options.note(f"{folder}: the dump has no table {own.prefix}{table}: {said[table]} (dump it too: {dump})")


def _dump_parts(source: SourceFile, options: ReadOptions) -> list[SourceFile]:
    """A mysqldump file's row tables, converted to the TSV files this reader reads."""
    parts = [dataclasses.replace(source, path=p) for p in sqldump.log_files(source.path, NEEDS)]
    _, converter = sqldump.converted(source.path)
    if converter.others:
        others = ", ".join(sorted(converter.others))
        options.note(f"{source.path}: {len(converter.others)} table(s) that are not Matomo's, ignored: {others}")
    if not any(sqldump.table_of(p.path) == "log_link_visit_action" for p in parts):
        raise SourceError(
            f"{source.path}: the dump has no log_link_visit_action table (no CREATE TABLE or INSERT for "
            "matomo_log_link_visit_action or another prefix): nothing to import"
        )
    return parts


def iter_events(source: SourceFile, options: ReadOptions, partitions: int | None = None) -> Iterator[pl.DataFrame]:
    """The events of one table file (none for the other tables), each with ``_row``.

    A mysqldump file gives the events of its actions, then of its conversions, numbered on
    (the conversions' ``_row`` continues after the last action row)."""
    if sqldump.is_dump(source.path):
        offset = 0
        for part in _dump_parts(source, options):
            for frame in iter_events(part, options, partitions):
                yield frame.with_columns(pl.col("_row") + offset) if offset else frame
            offset += sqldump.rows_of(part.path)
        return
    own = own_table(source.path)
    if not own.used:
        note = ignored_note(own)
        if note:
            options.note(note)
        return
    if own.table not in NEEDS:
        header(own, options.encoding)  # a broken dictionary file is named even if no action file is read
        return
    chosen = _chosen_site(own, options)
    _table_notes(own, options)
    visits_file = needed(own, "log_visit")
    notes = VisitNotes(visits_file.path, "visit", site=chosen)
    actions = load_actions(needed(own, "log_action"), options) if own.table == "log_link_visit_action" else None
    raw_chunks = read_table(own, options, bad_records="reject")
    if actions is not None:
        clicks = ClickPages(own, options, actions)
        events = (shape_actions(raw, actions, own.tsv, clicks) for raw in raw_chunks)
    else:
        dictionary = sibling(own, "log_action") if sibling(own, "log_conversion_item") else None
        conversions = Conversions(own, options, None if dictionary is None else load_actions(dictionary, options))
        events = (conversions.attach(shape_conversions(raw, own.tsv)) for raw in raw_chunks)
    for frame in join_visits(events, visits_file, options, partitions, notes):
        frame = skip_other_sites(_with_errors(frame), pl.col("site_id"), chosen)
        yield finish(frame, (COL_SOURCE_ERROR, COL_SOURCE_RAW, COL_SKIP))
    if own.table == "log_link_visit_action":
        for note in notes.finish():
            options.note(note)


def flat_schema(source: SourceFile, options: ReadOptions) -> dict[str, pl.DataType]:
    """The fixed flat columns, after checking that this file, the tables it needs and the sites are right."""
    if sqldump.is_dump(source.path):
        for part in _dump_parts(source, options):
            flat_schema(part, options)
        return dict(FLAT_SCHEMA)
    own = own_table(source.path)
    if not own.used:
        return dict(FLAT_SCHEMA)
    header(own, options.encoding)
    for table in NEEDS.get(own.table, ()):
        header(needed(own, table), options.encoding)
    if own.table in NEEDS:
        _chosen_site(own, options)
    return dict(FLAT_SCHEMA)


def sniff(path: str) -> bool:
    """A log table file, or a folder holding log_link_visit_action."""
    if os.path.isdir(path):
        with contextlib.suppress(OSError):
            return any(
                sqldump.is_dump(name) or ((tf := table_file(name)) is not None and tf.table == "log_link_visit_action")
                for name in os.listdir(path)
            )
        return False
    if sqldump.is_dump(path):
        return True
    found = table_file(path)
    return found is not None and found.used


PLUGIN = FormatPlugin(
    name="matomo_logs",
    description="Matomo raw log tables: log_link_visit_action, log_visit, log_action, log_conversion "
    "(+ goal, log_conversion_item, site; mysql --batch TSV or CSV, one file per table, .gz/.zst; "
    "or a mysqldump .sql file)",
    iter_frames=iter_events,
    schema=flat_schema,
    extensions=(".txt", ".sql"),
    sniff=sniff,
    preset="matomo-logs",
)

__all__ = [
    "PARTITION_BYTES",
    "PLUGIN",
    "TABLE_COLUMNS",
    "TableFile",
    "iter_events",
    "join_visits",
    "load_actions",
    "sibling",
    "table_file",
    "unescape",
]
