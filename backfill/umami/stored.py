"""What Umami 3.1 stores for a block of ``/api/batch`` elements: the one derivation
every database sink lays out in its own tables.

The input is exactly what the HTTP sink sends: each row's ``/api/batch``
element (``_json``), its location key (``_geo``), time, visitor and source
position. Each derivation follows Umami's ``/api/send`` route (3.1), cited where
it is not obvious, so a database import stores what an API import of the same
rows would (ids aside; see :mod:`.ids`). The values are the same whichever
store Umami runs on; only their layout differs:

- PostgreSQL (``sinks.postgres``): a ``session`` row from the first element of
  each session, ``website_event`` rows that point at it, ``event_data``,
  ``revenue`` (``data.revenue > 0`` and a currency) and ``session_data``;
- ClickHouse (``sinks.clickhouse``): no session table; each event row carries its
  own element's browser, OS, device, screen, language, location and distinct id,
  event data rows carry the event's session, path and name, and revenue is made
  by Umami's materialized view from the event data.

So :class:`Stored` keeps, per event, both the event's values and the session
values of its own element. Flat payload fields are decoded column-wise; URLs,
ids and client detection are computed once per distinct value; only event
data, a JSON object per row, is walked row by row.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import ConfigError
from ..geo import LOCATED_CLIENT_IP, SEPARATOR, UNLOCATED_CLIENT_IP
from ..schema import (
    COL_DATA,
    COL_FILE,
    COL_GEO,
    COL_JSON,
    COL_ROW,
    COL_TS,
    COL_VISITOR,
    COL_VKEY,
    PAYLOAD_STRING_FIELDS,
    QUERY_PARAMS_LIMITED,
    SESSION_TABLE_COLUMNS,
)
from ..transform import map_distinct, map_unique
from ..visits import CrossingVisits
from . import eventdata, ids
from .js import js_substring, parse_url, safe_decode_uri, safe_decode_uri_component, search_param

URL_LENGTH = 500  # Umami's URL_LENGTH and PAGE_TITLE_LENGTH
EVENT_NAME_LENGTH = 50
#: website_event columns Umami fills from the url's query string (the parameter of the same name).
QUERY_COLUMNS = QUERY_PARAMS_LIMITED
_PAYLOAD_FIELDS = ("website", *PAYLOAD_STRING_FIELDS)
ELEMENT_DTYPE = pl.Struct({"type": pl.String(), "payload": pl.Struct({name: pl.String() for name in _PAYLOAD_FIELDS})})
_WWW_ANY = re.compile(r"^www.")  # Umami's urlDomain regex: the dot is any character
_WWW = re.compile(r"^www\.")

SESSION_COLUMNS = SESSION_TABLE_COLUMNS
#: The session values of an event's own element (ClickHouse keeps them on every event row).
CLIENT_COLUMNS = ("browser", "os", "device", "screen", "language", "country", "region", "city", "distinct_id")
EVENT_COLUMNS = (
    "event_id",
    "website_id",
    "session_id",
    "visit_id",
    "created_at",
    "url_path",
    "url_query",
    *QUERY_COLUMNS,
    "referrer_path",
    "referrer_query",
    "referrer_domain",
    "page_title",
    "event_type",
    "event_name",
    "tag",
    "hostname",
)
DATA_COLUMNS = (
    "string_value",
    "number_value",
    "date_value",
    "data_type",
)
EVENT_DATA_COLUMNS = ("event_data_id", "website_id", "website_event_id", "data_key", *DATA_COLUMNS, "created_at")
SESSION_DATA_COLUMNS = (
    "session_data_id",
    "website_id",
    "session_id",
    "data_key",
    *DATA_COLUMNS,
    "distinct_id",
    "created_at",
)
REVENUE_COLUMNS = (
    "revenue_id",
    "website_id",
    "session_id",
    "event_id",
    "event_name",
    "currency",
    "revenue",
    "created_at",
)

#: (user agent, screen) -> (browser, os, device), Umami's detection when the payload sets none.
DetectFn = Callable[[str | None, str | None], tuple[str | None, str | None, str | None]]
#: ip -> (country, region, city) from a GeoIP database, or None.
LookupFn = Callable[[str], tuple[str | None, str | None, str | None] | None]


@dataclass(frozen=True)
class Derivation:
    """What the rows of one import share: where they go and how ids are salted."""

    website: str
    secret: str  # umami_secret(APP_SECRET) or ours, see ids.py
    user_agent: str  # the request's User-Agent: used when a row has no payload userAgent
    file_keys: tuple[str, ...]  # a stable identity per source file (by index), for row ids
    detect: DetectFn
    geoip: LookupFn | None = None
    exact_visits: bool = False
    crossing: CrossingVisits | None = None  # source visits crossing hh:00, with their first hour


@dataclass
class Stored:
    """What Umami stores for one block, plus the rows it would have refused (and why).

    ``events`` holds every column of both layouts: the event's own
    (:data:`EVENT_COLUMNS`), the session values of its element
    (:data:`CLIENT_COLUMNS`, which ClickHouse keeps on every event row) and its
    source position (``_file``, ``_row``). ``sessions`` is the first element of
    each session (PostgreSQL's ``session`` table); ``revenue`` follows the
    PostgreSQL route's rule (``data.revenue > 0`` and a currency), where ClickHouse
    derives its own from ``event_data`` by a materialized view.
    """

    sessions: pl.DataFrame
    events: pl.DataFrame
    event_data: pl.DataFrame
    revenue: pl.DataFrame
    session_data: pl.DataFrame
    refused: list[Refusal] = field(default_factory=list)

    def without(self, refused: list[Refusal]) -> Stored:
        """The same block with more rows refused whole: their events, event data, revenue
        and session data dropped (a store's own limits, found after the derivation)."""
        if not refused:
            return self
        gone = positions(refused)
        events = self.events.join(gone, on=[COL_FILE, COL_ROW], how="anti", maintain_order="left")
        kept = events["event_id"].implode()
        return Stored(
            sessions=self.sessions,
            events=events,
            event_data=self.event_data.filter(pl.col("website_event_id").is_in(kept)),
            revenue=self.revenue.filter(pl.col("event_id").is_in(kept)),
            session_data=self.session_data.join(gone, on=[COL_FILE, COL_ROW], how="anti", maintain_order="left"),
            refused=[*self.refused, *refused],
        )


#: (file index, row, field, reason) of a row Umami fails on.
Refusal = tuple[int, int, str, str]


def positions(refused: list[Refusal]) -> pl.DataFrame:
    """The (file, row) of each refused row, to join a block on."""
    return pl.DataFrame(
        [(f, r) for f, r, _, _ in refused], schema={COL_FILE: pl.UInt32(), COL_ROW: pl.UInt64()}, orient="row"
    )


def derive(block: pl.DataFrame, how: Derivation) -> Stored:
    """What Umami stores for one block of prepared rows (in send order)."""
    frame = _decoded(block)
    frame = frame.with_columns(_client_columns(frame, how))
    frame = frame.with_columns(_location_columns(frame, how))
    frame = frame.with_columns(_session_ids(frame, how))
    frame = frame.with_columns(_visit_ids(frame, how))
    events = _event_rows(frame.filter(pl.col("type") == "event"), how)
    event_data, revenue, refused = _event_data_rows(events.filter(pl.col("_refusal").is_null()), how)
    refused.extend(
        events.filter(pl.col("_refusal").is_not_null()).select(COL_FILE, COL_ROW, "_field", "_refusal").rows()
    )
    session_data, identify_refused = _session_data_rows(frame.filter(pl.col("type") == "identify"), how)
    refused.extend(identify_refused)
    if refused:  # a row Umami fails on is rejected whole: none of its rows are written
        gone = positions(refused)
        frame = frame.join(gone, on=[COL_FILE, COL_ROW], how="anti", maintain_order="left")
        events = events.join(gone, on=[COL_FILE, COL_ROW], how="anti", maintain_order="left")
        kept = events["event_id"].implode()
        event_data = event_data.filter(pl.col("website_event_id").is_in(kept))
        revenue = revenue.filter(pl.col("event_id").is_in(kept))
        session_data = session_data.filter(pl.col("session_id").is_in(frame["session_id"].implode()))
    return Stored(
        sessions=_session_rows(frame, how),
        events=events.select(*EVENT_COLUMNS, *CLIENT_COLUMNS, COL_FILE, COL_ROW),
        event_data=event_data,
        revenue=revenue,
        session_data=session_data,
        refused=refused,
    )


# --------------------------------------------------------------------------- decoding


def _decoded(block: pl.DataFrame) -> pl.DataFrame:
    """The payload's flat fields as columns; ``data`` kept as JSON text (walked later).

    A database import spills them as columns already (``PREPARED_COLUMNS_SCHEMA``);
    a block of JSON elements (the recorded cases, a state prepared by an older
    version) is decoded."""
    if COL_JSON not in block.columns:
        return block.select(
            COL_FILE,
            COL_ROW,
            COL_TS,
            COL_GEO,
            COL_VKEY,
            "type",
            *(pl.col(COL_VISITOR if name == "id" else name).alias(name) for name in PAYLOAD_STRING_FIELDS),
            pl.col(COL_DATA).alias("data"),
        )
    element = block[COL_JSON].str.json_decode(ELEMENT_DTYPE)
    fields = element.struct.field("payload").struct.unnest()
    return pl.concat(
        [
            block.select(COL_FILE, COL_ROW, COL_TS, COL_GEO, COL_VKEY),
            element.struct.field("type").to_frame("type"),
            fields,
            block[COL_JSON].str.json_path_match("$.payload.data").to_frame("data"),
        ],
        how="horizontal",
    )


_ABSENT = "\x01"  # a null inside a pair key


def _pair_key(first: pl.Expr, second: pl.Expr) -> pl.Expr:
    """One text key per (first, second) pair of nullable strings, so a Python function
    runs once per distinct pair (``map_unique``); :func:`_split_pair` reverses it."""
    return pl.concat_str([first.fill_null(_ABSENT), second.fill_null(_ABSENT)], separator="\x00")


def _split_pair(key: str) -> tuple[str | None, str | None]:
    first, _, second = key.partition("\x00")
    return (None if first == _ABSENT else first), (None if second == _ABSENT else second)


def _truthy(column: str) -> pl.Expr:
    """JavaScript truthiness of an optional string field (absent and "" are false)."""
    return pl.col(column).is_not_null() & (pl.col(column) != "")


# --------------------------------------------------------------------------- session


def _client_columns(frame: pl.DataFrame, how: Derivation) -> list[pl.Series]:
    """browser/os/device: the payload's (``??``: an empty string counts), else detected."""
    ua = frame.select(
        pl.when(_truthy("userAgent")).then(pl.col("userAgent")).otherwise(pl.lit(how.user_agent)).alias("ua")
    )["ua"]
    key = frame.select(_pair_key(pl.lit(ua), pl.col("screen"))).to_series()
    detected = map_unique(key, lambda k: list(how.detect(*_split_pair(k))), pl.List(pl.String()))
    out = [
        frame[name].fill_null(detected.list.get(i, null_on_oob=True)).alias(f"s_{name}")
        for i, name in enumerate(("browser", "os", "device"))
    ]
    out.append(ua.alias("s_ua"))
    return out


def _location_columns(frame: pl.DataFrame, how: Derivation) -> list[pl.Series]:
    """country/region/city: a payload ip is looked up (as Umami does, ignoring headers);
    otherwise the location the HTTP sink would send as CDN headers, as Umami reads them."""
    from_headers = map_unique(frame[COL_GEO].fill_null(""), _header_location, pl.List(pl.String()))
    lookup = how.geoip
    from_ip = map_unique(
        frame["ip"],
        (lambda ip: list(_ip_location(ip, lookup) or (None, None, None))),
        pl.List(pl.String()),
    )
    has_ip = frame["ip"].is_not_null() & (frame["ip"] != "")
    chosen = pl.select(pl.when(has_ip).then(from_ip).otherwise(from_headers)).to_series()
    return [chosen.list.get(i, null_on_oob=True).alias(f"s_{n}") for i, n in enumerate(("country", "region", "city"))]


def _header_location(key: str) -> list[str | None]:
    """What Umami stores from the headers ``geo.request_headers`` makes of a location key."""
    if not key:
        return [None, None, None]
    country, region, city = key.split(SEPARATOR)
    # geo.request_headers sends the region without its country prefix
    return list(_stored_location(country, region.split("-", 1)[-1] or None, city or None))


def _ip_location(ip: str, lookup: LookupFn | None) -> tuple[str | None, str | None, str | None] | None:
    if lookup is None or _is_local(ip):
        return None
    found = lookup(ip)
    if not found:
        return None
    return _stored_location(*found)


def _stored_location(
    country: str | None, region: str | None, city: str | None
) -> tuple[str | None, str | None, str | None]:
    """What getLocation/getClientInfo keep of a location, headers or GeoIP alike:
    getRegionCode ("CC-" unless the region holds a "-"; none without a country),
    then safeDecodeURIComponent of each part."""
    region = (region if "-" in region else f"{country}-{region}") if country and region else None
    return (
        safe_decode_uri_component(country),
        safe_decode_uri_component(region),
        safe_decode_uri_component(city),
    )


def _is_local(ip: str) -> bool:
    """is-localhost-ip: loopback, private, link-local and unspecified addresses get no location."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


def _session_ids(frame: pl.DataFrame, how: Derivation) -> pl.Series:
    """``id ? uuid(website, id) : uuid(website, ip, userAgent, monthly salt)``, hashed once per session."""
    website = how.website
    named = frame.select(pl.when(_truthy("id")).then(pl.concat_str(pl.lit(website), pl.col("id")))).to_series()
    if named.null_count() == 0:
        return _umami_uuids(named, how.secret).alias("session_id")
    client_ip = pl.when(pl.col(COL_GEO).fill_null("") != "").then(pl.lit(LOCATED_CLIENT_IP))
    salt = map_unique(frame[COL_TS], ids.month_salt, pl.String())
    anonymous = frame.select(
        pl.when(pl.lit(named).is_null()).then(
            pl.concat_str(
                pl.lit(website),
                pl.when(_truthy("ip")).then(pl.col("ip")).otherwise(client_ip.otherwise(pl.lit(UNLOCATED_CLIENT_IP))),
                pl.col("s_ua"),
                pl.lit(salt),
            )
        )
    ).to_series()
    return _umami_uuids(named.fill_null(anonymous), how.secret).alias("session_id")


def _visit_ids(frame: pl.DataFrame, how: Derivation) -> pl.Series:
    """Umami's visit: ``uuid(session, hash(startOfHour(createdAt).toUTCString()))``, hashed
    once per (session, hour).

    With ``--visits exact`` the HTTP sink keeps a source visit that crosses hh:00 in the
    visit of its first event (Umami's cache token); here that is the same id, taken from
    the hour of the visit's first event (``crossing``), so both paths store the same
    visits: whole across hours, and two source visits in one clock hour share one, as
    Umami's own rule makes them.
    """
    hour = pl.col(COL_TS) // 3600
    if how.exact_visits and how.crossing is not None and how.crossing.count:
        first = how.crossing.first_hours(frame[COL_VKEY])
        hour = pl.coalesce(pl.lit(first), hour)
    starts = frame.select((hour * 3600).alias("start")).to_series()
    salt = map_unique(starts, ids.hour_salt, pl.String())
    return _umami_uuids(frame.select(pl.concat_str(pl.col("session_id"), pl.lit(salt))).to_series(), how.secret).alias(
        "visit_id"
    )


def _umami_uuids(joined: pl.Series, secret: str) -> pl.Series:
    """``uuid(...parts)`` of each row's joined parts, computed once per distinct value."""
    return map_distinct(joined, lambda keys: ids.umami_uuids(secret, keys))


def _session_rows(frame: pl.DataFrame, how: Derivation) -> pl.DataFrame:
    """The first row Umami sees of each session creates it (``on conflict do nothing``)."""
    firsts = frame.unique(subset="session_id", keep="first", maintain_order=True)
    return firsts.select(
        "session_id",
        pl.lit(how.website).alias("website_id"),
        pl.col("s_browser").alias("browser"),
        pl.col("s_os").alias("os"),
        pl.col("s_device").alias("device"),
        "screen",
        "language",
        pl.col("s_country").alias("country"),
        pl.col("s_region").alias("region"),
        pl.col("s_city").alias("city"),
        pl.col("id").alias("distinct_id"),
        _timestamp(pl.col(COL_TS)).alias("created_at"),
    )


def _timestamp(seconds: pl.Expr) -> pl.Expr:
    return pl.from_epoch(seconds, time_unit="s").dt.replace_time_zone("UTC")


# --------------------------------------------------------------------------- website_event


def _event_ids(events: pl.DataFrame, how: Derivation) -> pl.Series:
    """Ours, from the website and the source row: a replayed row hits its primary key."""
    keys = events.select(
        pl.concat_str(
            [
                pl.lit(how.website),
                pl.col(COL_FILE).replace_strict(
                    list(range(len(how.file_keys))), list(how.file_keys), return_dtype=pl.String
                ),
                pl.col(COL_ROW).cast(pl.String),
            ],
            separator="\x1f",
        )
    ).to_series()
    return ids.marked_ids(events[COL_TS] * 1000, keys)


def _parsed_url(url: str | None, hostname: str | None) -> dict[str, Any] | None:
    """``new URL(url, base)`` and what Umami takes from it; None where Node throws."""
    base = f"https://{hostname}" if hostname else "https://localhost"
    parsed = parse_url(url if url is not None else "undefined", base)
    if parsed is None:
        return None
    pathname = parsed.pathname
    path = "" if pathname == "/undefined" else pathname + parsed.hash
    search = parsed.search
    out: dict[str, Any] = {
        "url_path": js_substring(safe_decode_uri(path) or "", URL_LENGTH),
        "url_query": js_substring(search[1:], URL_LENGTH),
        "url_domain": _WWW_ANY.sub("", parsed.hostname),
    }
    for column in QUERY_COLUMNS:
        out[column] = search_param(search, column)
    return out


def _parsed_referrer(referrer: str | None, hostname: str | None) -> dict[str, Any] | None:
    if not referrer:
        return {"referrer_path": None, "referrer_query": None, "referrer_domain": None}
    base = f"https://{hostname}" if hostname else "https://localhost"
    parsed = parse_url(referrer, base)
    if parsed is None:
        return None
    return {
        "referrer_path": js_substring(safe_decode_uri(parsed.pathname) or "", URL_LENGTH),
        "referrer_query": js_substring(parsed.search[1:], URL_LENGTH),
        "referrer_domain": js_substring(_WWW.sub("", parsed.hostname), URL_LENGTH),
    }


_URL_DTYPE = pl.Struct(
    {"url_path": pl.String(), "url_query": pl.String(), "url_domain": pl.String()}
    | {column: pl.String() for column in QUERY_COLUMNS}
)
_REFERRER_DTYPE = pl.Struct({name: pl.String() for name in ("referrer_path", "referrer_query", "referrer_domain")})


def _event_rows(events: pl.DataFrame, how: Derivation) -> pl.DataFrame:
    """One ``website_event`` row per event, with ``_field``/``_refusal`` set where Node's URL parser throws."""
    hostname = pl.when(_truthy("hostname")).then(pl.col("hostname"))
    url_key = events.select(_pair_key(pl.col("url"), hostname)).to_series()
    urls = map_unique(url_key, lambda k: _parsed_url(*_split_pair(k)), _URL_DTYPE)
    referrer_key = events.select(_pair_key(pl.col("referrer"), hostname)).to_series()
    referrers = map_unique(referrer_key, lambda k: _parsed_referrer(*_split_pair(k)), _REFERRER_DTYPE)
    name_truthy = _truthy("name")
    frame = pl.concat([events, urls.struct.unnest(), referrers.struct.unnest()], how="horizontal")
    frame = frame.with_columns(
        _event_ids(events, how).alias("event_id"),
        pl.lit(how.website).alias("website_id"),
        _timestamp(pl.col(COL_TS)).alias("created_at"),
        map_unique(
            events["title"], lambda t: js_substring(safe_decode_uri_component(t) or "", URL_LENGTH), pl.String()
        ).alias("page_title"),
        pl.when(name_truthy).then(2).otherwise(1).cast(pl.Int32).alias("event_type"),
        pl.when(name_truthy)
        .then(map_unique(events["name"], lambda n: js_substring(n, EVENT_NAME_LENGTH), pl.String()))
        .alias("event_name"),
        pl.when(_truthy("hostname")).then(pl.col("hostname")).otherwise(pl.col("url_domain")).alias("hostname"),
        *(pl.col(f"s_{name}").alias(name) for name in ("browser", "os", "device", "country", "region", "city")),
        pl.col("id").alias("distinct_id"),
        pl.when(urls.is_null()).then(pl.lit("url")).otherwise(pl.lit("referrer")).alias("_field"),
        pl.when(urls.is_null() | referrers.is_null())
        .then(pl.lit("Umami cannot parse it against https://<hostname> (it answers 500 after storing the session)"))
        .alias("_refusal"),
    )
    return frame


# --------------------------------------------------------------------------- event data, revenue, session data


def _event_data_rows(
    events: pl.DataFrame, how: Derivation
) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple[int, int, str, str]]]:
    """``event_data`` rows (flattened) and ``revenue`` rows (``revenue > 0 && currency``).

    Each distinct data object is parsed and flattened once (:func:`_parsed_data`); the
    rows of every event that sent it are then laid out column-wise."""
    with_data = events.filter(pl.col("data").is_not_null()).select(
        COL_FILE, COL_ROW, COL_TS, "event_id", "session_id", "event_name", "data"
    )
    objects, values = _parsed_data(with_data["data"])
    parsed = with_data.join(objects, on="data", how="left", maintain_order="left")
    refused = parsed.filter(pl.col("_refusal").is_not_null()).select(COL_FILE, COL_ROW, pl.lit("data"), "_refusal")
    kept = parsed.filter(pl.col("_refusal").is_null()).with_row_index("_position")
    created = _timestamp(pl.col(COL_TS)).cast(pl.Datetime("us", "UTC")).alias("created_at")
    flat = kept.join(values, on="data", how="inner").sort("_position", "_index")
    data_keys = pl.concat_str(pl.col("event_id"), pl.lit("data"), pl.col("_index").cast(pl.String), separator="\x1f")
    event_data = flat.select(
        ids.marked_ids(flat[COL_TS] * 1000, flat.select(data_keys).to_series()).alias("event_data_id"),
        pl.lit(how.website).alias("website_id"),
        pl.col("event_id").alias("website_event_id"),
        "data_key",
        *DATA_COLUMNS,
        created,
    )
    paid = kept.filter(_truthy("event_name") & pl.col("_revenue").is_not_null())
    revenue_keys = paid.select(pl.concat_str(pl.col("event_id"), pl.lit("revenue"), separator="\x1f")).to_series()
    revenue = paid.select(
        ids.marked_ids(paid[COL_TS] * 1000, revenue_keys).alias("revenue_id"),
        pl.lit(how.website).alias("website_id"),
        "session_id",
        "event_id",
        "event_name",
        pl.col("_currency").alias("currency"),
        pl.col("_revenue").alias("revenue"),
        created,
    )
    return (
        event_data.cast(_data_schema(EVENT_DATA_COLUMNS)),  # type: ignore[arg-type]
        revenue.cast(_revenue_schema()),  # type: ignore[arg-type]
        list(refused.iter_rows()),
    )


def _parsed_data(texts: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each distinct data object parsed once: per object, why Umami fails on it (or null)
    and the revenue and currency Umami's PostgreSQL route would store from it; and its
    flattened values, one row per key (``_index`` is the key's position)."""
    objects: dict[str, list[Any]] = {"data": [], "_refusal": [], "_revenue": [], "_currency": []}
    values: dict[str, list[Any]] = {"data": [], "_index": [], "data_key": [], **{c: [] for c in DATA_COLUMNS}}
    for text in texts.unique().to_list():
        data = json.loads(text)
        objects["data"].append(text)
        try:
            flat = eventdata.flatten(data)
        except eventdata.UnstorableValue as exc:
            objects["_refusal"].append(str(exc))
            objects["_revenue"].append(None)
            objects["_currency"].append(None)
            continue
        revenue, currency = data.get("revenue"), data.get("currency")
        amount = eventdata.revenue_text(revenue) if eventdata.js_positive(revenue) and currency else None
        objects["_refusal"].append(None)
        objects["_revenue"].append(amount)
        objects["_currency"].append(str(currency) if amount is not None else None)
        for index, value in enumerate(flat):
            values["data"].append(text)
            values["_index"].append(index)
            values["data_key"].append(value.key)
            values["string_value"].append(value.string_value)
            values["number_value"].append(value.number_value)
            values["date_value"].append(value.date_value)
            values["data_type"].append(value.data_type)
    object_schema = {name: pl.String() for name in objects}
    value_schema = _data_schema(("data", "data_key", *DATA_COLUMNS)) | {"_index": pl.Int64()}
    return pl.DataFrame(objects, schema=object_schema), pl.DataFrame(values, schema=value_schema)


def _data_value_columns(values: list[eventdata.DataValue]) -> dict[str, list[Any]]:
    return {
        "string_value": [v.string_value for v in values],
        "number_value": [v.number_value for v in values],
        "date_value": [v.date_value for v in values],
        "data_type": [v.data_type for v in values],
    }


def _data_schema(columns: tuple[str, ...]) -> dict[str, pl.DataType]:
    types: dict[str, pl.DataType] = {
        "date_value": pl.Datetime("us", "UTC"),
        "created_at": pl.Datetime("us", "UTC"),
        "data_type": pl.Int32(),
    }
    return {c: types.get(c, pl.String()) for c in columns}


def _revenue_schema() -> dict[str, pl.DataType]:
    return {c: (pl.Datetime("us", "UTC") if c == "created_at" else pl.String()) for c in REVENUE_COLUMNS}


def _session_data_rows(
    identifies: pl.DataFrame, how: Derivation
) -> tuple[pl.DataFrame, list[tuple[int, int, str, str]]]:
    """Identify rows: one row per (session, key), the last value sent winning (Umami updates in place)."""
    latest: dict[tuple[str, str], tuple[Any, ...]] = {}
    refused: list[tuple[int, int, str, str]] = []
    for file_index, row, ts, session_id, distinct_id, data_text in (
        identifies.filter(pl.col("data").is_not_null())
        .select(COL_FILE, COL_ROW, COL_TS, "session_id", "id", "data")
        .iter_rows()
    ):
        created = datetime.fromtimestamp(ts, UTC)
        try:
            values = eventdata.flatten(json.loads(data_text))
        except eventdata.UnstorableValue as exc:
            refused.append((file_index, row, "data", str(exc)))
            continue
        for value in values:
            data_id = ids.marked_id(ts * 1000, ids.row_digest(how.website, session_id, "session data", value.key))
            latest[(session_id, value.key)] = (data_id, session_id, value, distinct_id, created, file_index, row)
    rows = list(latest.values())
    frame = pl.DataFrame(
        {
            "session_data_id": [r[0] for r in rows],
            "website_id": [how.website] * len(rows),
            "session_id": [r[1] for r in rows],
            "data_key": [r[2].key for r in rows],
            **_data_value_columns([r[2] for r in rows]),
            "distinct_id": [r[3] for r in rows],
            "created_at": [r[4] for r in rows],
            COL_FILE: [r[5] for r in rows],
            COL_ROW: [r[6] for r in rows],
        },
        schema=_data_schema(SESSION_DATA_COLUMNS) | {COL_FILE: pl.UInt32(), COL_ROW: pl.UInt64()},
    )
    return frame, refused


# --------------------------------------------------------------------------- Umami's GeoIP lookup


def geoip_lookup(path: Path) -> Callable[[str], tuple[str | None, str | None, str | None] | None]:
    """Umami's GeoLite2 lookup: country ISO code (else the registered country's),
    the first subdivision's ISO code, the English city name."""
    import maxminddb

    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"--geoip-db {path}: cannot read it as a MaxMind database ({exc})") from exc

    def lookup(ip: str) -> tuple[str | None, str | None, str | None] | None:
        try:
            found = reader.get(ip.strip())
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        country = (found.get("country") or {}).get("iso_code") or (found.get("registered_country") or {}).get(
            "iso_code"
        )
        subdivisions = found.get("subdivisions") or [{}]
        region = subdivisions[0].get("iso_code")
        city = ((found.get("city") or {}).get("names") or {}).get("en")
        return country, region, city

    return lookup
