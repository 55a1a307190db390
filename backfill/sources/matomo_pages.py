"""Saved pages of Matomo's ``Live.getLastVisitsDetails`` (format=json): reading one, and what the
run's pages hold together (their visits, their sites).

A page is parsed by polars with an explicit schema, every scalar as text: the
API writes numbers as numbers or as strings depending on the Matomo version and
field (``revenue``, ``goalId``), and a text field takes both; fields not listed
are never materialised. Where polars' strict typing meets another shape (a
field that is an object in one export and text in another, an empty element
written as ``{}``, a single action written as an object rather than a list of
one), the page is read again through Python's ``json`` and each listed field is
brought to the schema's shape, so a valid JSON page is never refused for it.

Pages saved while the period still receives visits overlap, so one visit can be
in two files. The run's inputs (``ReadOptions.inputs``), and only those, are
looked at: the first input that holds a visit is where it is imported from.
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Any

import polars as pl

from backfill.errors import SourceError
from backfill.sources import ReadOptions, SourceFile
from backfill.sources.compression import UTF8_BOM, iter_decompressed
from backfill.sources.matomo_codes import country_expr, device_expr, region_code, text, valid_region, visitor_hex
from backfill.sources.matomo_sites import Site, sites_of
from backfill.sources.matomo_visits import VisitNotes, unmapped

S = pl.String()

#: An item of an ecommerce order (``itemDetails``).
ITEM_FIELDS = ("itemSKU", "itemName", "itemCategory", "price", "quantity")
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
    "items",
)
VISIT_FIELDS = (
    "idSite",
    "siteName",
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
    "deviceTypeIcon",
    "resolution",
    "languageCode",
    "countryCode",
    "regionCode",
    "city",
)
ITEM_SCHEMA = pl.List(pl.Struct(dict.fromkeys(ITEM_FIELDS, S)))
#: One visit of the export: the fields read, all as text.
VISIT_SCHEMA: dict[str, pl.DataType] = {
    **dict.fromkeys(VISIT_FIELDS, S),
    "actionDetails": pl.List(pl.Struct({**dict.fromkeys(ACTION_FIELDS, S), "itemDetails": ITEM_SCHEMA})),
}
_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
#: What the run's pages are looked at for: a visit's id and site, and what the notes count.
_INDEX_SCHEMA: dict[str, pl.DataType] = dict.fromkeys(
    (
        "idVisit",
        "idSite",
        "siteName",
        "visitorId",
        "userId",
        "browserCode",
        "operatingSystemCode",
        "deviceType",
        "deviceTypeIcon",
        "countryCode",
        "regionCode",
    ),
    S,
)


# --------------------------------------------------------------------------- one page


def read_page(source: SourceFile) -> pl.DataFrame:
    """The visits of one saved page (or JSON lines of visits); SourceError naming what is wrong."""
    return _parse(source.path, _page_bytes(source.path, source.compression), VISIT_SCHEMA)


def _page_bytes(path: str, compression: str | None) -> bytes:
    return b"".join(iter_decompressed(path, compression)).removeprefix(UTF8_BOM)


def _parse(path: str, data: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    start = data.lstrip()[:1]
    if not start:
        return pl.DataFrame(schema=schema)
    if start == b"{" and b"\n{" not in data.strip():
        _refuse_object(path, data)
    try:
        if start == b"[":
            visits = pl.read_json(io.BytesIO(data), schema=schema)
        else:
            visits = pl.read_ndjson(io.BytesIO(data), schema=schema)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        visits = _parse_loosely(path, data, schema, exc)
    missing = visits.select(pl.col("idVisit").is_null().arg_true().first()).item()
    if missing is not None:
        raise SourceError(
            f"{path}: element {missing + 1} has no idVisit: not a Live.getLastVisitsDetails "
            "export (save the API's answer with format=json, one page per file)"
        )
    return visits


def _parse_loosely(path: str, data: bytes, schema: dict[str, pl.DataType], exc: Exception) -> pl.DataFrame:
    """The page through Python's json, each field brought to the schema's shape (see the module)."""
    try:
        text = data.decode("utf-8")
        if text.lstrip().startswith("["):
            values = json.loads(text)
        else:
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError:
        raise _json_error(path, data, exc) from exc
    if not isinstance(values, list):
        raise _json_error(path, data, exc)
    rows = [_conform(v, schema) if isinstance(v, dict) else dict.fromkeys(schema) for v in values]
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _conform(value: dict[str, Any], schema: dict[str, pl.DataType]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, dtype in schema.items():
        item = value.get(key)
        if isinstance(dtype, pl.List):
            inner = dtype.inner
            assert isinstance(inner, pl.Struct)
            fields = {f.name: f.dtype for f in inner.fields}
            out[key] = [_conform(row, fields) for row in _rows(item)]
        else:
            out[key] = _scalar(item)
    return out


def _rows(value: Any) -> list[dict[str, Any]]:
    """A list of objects however it was written: a list, one object, ``{"row": [...]}``, ``{"0": ...}``."""
    if isinstance(value, list):
        return [row for v in value for row in _rows(v)] if any(not isinstance(v, dict) for v in value) else value
    if isinstance(value, dict) and value:
        if set(value) == {"row"}:
            return _rows(value["row"])
        if all(str(k).isdigit() for k in value):
            return _rows(list(value.values()))
        return [value]
    return []


def _scalar(value: Any) -> str | None:
    """A field as text, as polars reads it: ``false`` -> ``"false"``, ``{}``/``[]``/``""`` -> null."""
    if value is None or value == "" or value == {} or value == []:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


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


# --------------------------------------------------------------------------- the run's pages


def _page_index(path: str) -> pl.DataFrame:
    """Per visit of one saved page: idVisit, idSite, siteName and what the notes count (see
    ``matomo_visits.VisitNotes``); empty for a page that cannot be read (it is refused,
    naming the problem, when it is read itself)."""
    try:
        visits = _parse(path, _page_bytes(path, _COMPRESSION.get(os.path.splitext(path)[1].lower())), _INDEX_SCHEMA)
    except SourceError:
        visits = pl.DataFrame(schema=_INDEX_SCHEMA)
    device, icon = pl.col("deviceType"), pl.col("deviceTypeIcon")
    shaped = visits.with_columns(
        device_expr(device, icon).alias("_device"),
        region_code(country_expr(pl.col("countryCode")), pl.col("regionCode")).alias("_region"),
    )
    found = unmapped(
        browser=pl.col("browserCode"),
        os=pl.col("operatingSystemCode"),
        device=device,
        device_icon=icon,
        device_out=pl.col("_device"),
        region_joined=pl.col("_region"),
        region_out=valid_region(pl.col("_region")),
    )
    user = text(pl.col("userId"))
    no_visitor = (user.is_null() | (user == "false")) & visitor_hex(pl.col("visitorId")).is_null()
    return shaped.select(
        "idVisit",
        "idSite",
        "siteName",
        no_visitor.alias("no_visitor"),
        *(expr.alias(kind) for kind, expr in found.items()),
    )


def _run_key(source: SourceFile, options: ReadOptions) -> tuple[tuple[str, int, int], ...]:
    """The run's pages in reading order, each with its size and time (only this page when
    the run's inputs are not known)."""
    pages = list(options.inputs) if source.path in options.inputs else [source.path]
    return tuple((page, (info := os.stat(page)).st_size, info.st_mtime_ns) for page in pages)


@functools.lru_cache(maxsize=8)
def _run_index(pages: tuple[tuple[str, int, int], ...]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Scanned once per run: (the visits again in a later page: idVisit, page, first page),
    the visits of each site (idSite, siteName, visits), and the visits the notes name."""
    frames = [
        _page_index(path).with_columns(pl.lit(k, pl.UInt32).alias("page")) for k, (path, _, _) in enumerate(pages)
    ]
    index = pl.concat(frames)
    first = index.group_by("idVisit").agg(pl.col("page").min().alias("first"))
    again = (
        index.join(first, on="idVisit")
        .filter(pl.col("page") > pl.col("first"))
        .select("idVisit", "page", "first")
        .unique(["idVisit", "page"])
    )
    sites = index.group_by("idSite").agg(
        pl.col("siteName").drop_nulls().first().alias("siteName"), pl.col("idVisit").n_unique().alias("visits")
    )
    kinds = [c for c in index.columns if c not in ("idVisit", "idSite", "siteName", "no_visitor", "page")]
    said = pl.col("no_visitor") | pl.any_horizontal(pl.col(kinds).is_not_null())
    notes = (
        index.unique("idVisit", keep="first").filter(said).select(pl.col("idSite").alias("site"), "no_visitor", *kinds)
    )
    return again, sites, notes


def run_notes(source: SourceFile, options: ReadOptions, site: str | None) -> list[str]:
    """What the run's visits (of the chosen site) hold that maps to nothing, said once for all pages."""
    key = _run_key(source, options)
    folders = {os.path.dirname(page) for page, _, _ in key}
    where = folders.pop() + os.sep if len(folders) == 1 else "the Live pages"
    notes = VisitNotes(where if len(key) > 1 else source.path, "visit", site=site)
    notes.add(_run_index(key)[2])
    return notes.finish()


def earlier_visits(source: SourceFile, options: ReadOptions) -> pl.DataFrame:
    """(idVisit, _seen_in) of this page's visits that an input read before it holds too.

    The first input that holds a visit is where it is imported from; later copies
    are rejected, naming that page. Files that are not inputs are never looked at.
    """
    key = _run_key(source, options)
    mine = [page for page, _, _ in key].index(source.path)
    again = _run_index(key)[0].filter(pl.col("page") == mine)
    names = {k: os.path.basename(page) for k, (page, _, _) in enumerate(key)}
    return again.select("idVisit", pl.col("first").replace_strict(names, return_dtype=S).alias("_seen_in"))


def run_sites(source: SourceFile, options: ReadOptions) -> list[Site]:
    """The sites of the run's pages (idSite, siteName), each with its number of visits."""
    sites = _run_index(_run_key(source, options))[1]
    counts = sites.select(pl.col("idSite").alias("idsite"), "visits")
    names = sites.select(pl.col("idSite").alias("idsite"), pl.col("siteName").alias("name"), main_url=pl.lit(None, S))
    return sites_of(counts, names)


__all__ = ["ACTION_FIELDS", "ITEM_FIELDS", "VISIT_SCHEMA", "earlier_visits", "read_page", "run_notes", "run_sites"]
