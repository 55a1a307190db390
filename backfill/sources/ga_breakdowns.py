"""Per-day breakdowns of a Google Analytics report (country, device, browser, ...) as Umami values.

A report table split by date and ONE of these dimensions, with a users metric,
says how many users had each value on each day; ``backfill.synthesize`` then gives
that many synthetic visitors the value. This module names the breakdowns, picks
the one a table holds, and turns GA's values into what Umami stores:

* country: ISO 3166-1 alpha-2 (the Data API's ``countryId``, or GA's English name);
* region: ISO 3166-2 from GA's English name (``California`` -> ``US-CA``), when
  pycountry knows it; city: GA's English name;
* device, OS and browser in one table (``technology``): drawn together, so a
  visitor's browser fits its OS (Chrome on iOS is Umami's ``crios``);
* OS: GA's name, with the version for the Windows releases Umami names apart
  (``Windows`` + ``7`` -> ``Windows 7``); browser and device: GA's names (the
  mapping's ``normalize`` turns them into Umami's);
* language: a tag in lower case (``en-us``); GA's English language names
  (``English``) become their ISO 639-1 code;
* screen: ``1920x1080`` as written.

GA's placeholders (``(not set)``, ``(other)``, ...) become "no value".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import polars as pl

from backfill.sources.ga4 import PLACEHOLDERS, country_code, region_code

#: Canonical column -> the breakdown it belongs to (see ``backfill.synthesize.BREAKDOWNS``).
DIMENSION_OF: dict[str, str] = {
    "country_id": "countries",
    "country": "countries",
    "region": "places",
    "city": "places",
    "device": "devices",
    "browser": "browsers",
    "os": "oses",
    "os_version": "oses",
    "language": "languages",
    "screen": "screens",
}
ATTRIBUTE_DIMS = tuple(DIMENSION_OF)
TECHNOLOGY = frozenset({"devices", "browsers", "oses"})
#: Windows releases Umami stores under their own name (``Windows`` alone is Windows 10/11).
_WINDOWS_VERSIONS = frozenset({"7", "8", "8.1", "Vista", "XP", "2000", "ME", "98", "95"})
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]{2,8})*$")


def breakdown_of(dims: Iterable[str]) -> tuple[str | None, str | None]:
    """(breakdown name, None), or (None, why not) for a table's attribute dimensions."""
    found = {DIMENSION_OF[d] for d in dims if d in DIMENSION_OF}
    if "places" in found:
        found.discard("countries")  # country, region, city together: one breakdown
    if len(found & TECHNOLOGY) >= 2:  # device, OS and browser together: real combinations
        found = (found - TECHNOLOGY) | {"technology"}
    if len(found) == 1:
        return found.pop(), None
    if not found:
        return None, None
    return None, f"split by {' and '.join(sorted(found))} together: one breakdown per table is read"


def _blank(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text in PLACEHOLDERS else text


@functools.cache
def language_tag(value: str) -> str | None:
    """``en-US`` -> ``en-us``; an English language name -> its ISO 639-1 code; else None."""
    import pycountry

    text = value.strip().lower().replace("_", "-")
    if _LANGUAGE_TAG.match(text):
        return text
    try:
        language = pycountry.languages.lookup(value.strip())
    except LookupError:
        return None
    return getattr(language, "alpha_2", None) or getattr(language, "alpha_3", None)


def os_name(name: str | None, version: str | None) -> str | None:
    """GA's OS and version -> the name Umami would store (``Windows 7``), else GA's name."""
    if name == "Windows" and version in _WINDOWS_VERSIONS:
        return f"Windows {version}"
    return name


def breakdown_rows(name: str, frame: pl.DataFrame) -> list[tuple[object, tuple[str | None, ...], int]]:
    """(date, values, users) per row of an aggregated breakdown table, in Umami's values."""
    rows: list[tuple[object, tuple[str | None, ...], int]] = []
    for row in frame.iter_rows(named=True):
        users = int(row.get("users") or 0)
        values = _values(name, row)
        if values is not None:
            rows.append((row["date"], values, users))
    return rows


def _values(name: str, row: dict[str, object]) -> tuple[str | None, ...] | None:
    if name in ("countries", "places"):
        country = _blank(row.get("country_id"))
        country = country.upper() if country and len(country) == 2 else None
        if country is None and _blank(row.get("country")):
            country = country_code(str(row["country"]).strip())
        if name == "countries":
            return (country,)
        region = _blank(row.get("region"))
        code = region_code(country, region) if country and region else None
        return (country, code, _blank(row.get("city")))
    if name == "oses":
        return (os_name(_blank(row.get("os")), _blank(row.get("os_version"))),)
    if name == "technology":
        os = os_name(_blank(row.get("os")), _blank(row.get("os_version")))
        return (_blank(row.get("device")), os, _blank(row.get("browser")))
    if name == "languages":
        text = _blank(row.get("language"))
        return (language_tag(text) if text else None,)
    column = {"devices": "device", "browsers": "browser", "screens": "screen"}[name]
    return (_blank(row.get(column)),)


__all__ = ["ATTRIBUTE_DIMS", "DIMENSION_OF", "breakdown_of", "breakdown_rows", "language_tag", "os_name"]
