"""A Matomo visit's columns in Umami's vocabulary, and what the readers say about them.

Both readers turn a visit (a ``log_visit`` row, or a Live API visit) into the
same columns; :class:`VisitNotes` counts, over the visits read, the values that
map to nothing in Umami (an unknown browser code, a translated device type
without its icon, a legacy region code) and the visits Matomo knows no visitor
for, so the run's summary names them instead of losing them silently.
"""

from __future__ import annotations

from collections import Counter

import polars as pl

from backfill.sources.matomo_codes import (
    BROWSER_NAMES,
    DEVICE_ICON,
    LEGACY_OS,
    OS_NAMES,
    UNKNOWN_CODES,
    browser_expr,
    country_expr,
    device_expr,
    language_expr,
    os_expr,
    region_code,
    screen_expr,
    text,
    unsanitize,
    valid_region,
    visitor_hex,
)
from backfill.sources.matomo_tables import epoch_expr, id_expr, text_column

S = pl.String()

#: What each kind of unmapped value becomes, for the note.
_UNMAPPED = {
    "browser code": "not in the table of known browser codes: sent as it is (backfill/sources/matomo_codes.py)",
    "OS code": "not in the table of known OS codes: sent as it is (backfill/sources/matomo_codes.py)",
    "device type": "maps to no device type (by deviceTypeIcon, deviceType): sent without a device",
    "region": "is no ISO 3166-2 code (the old GeoIP's FIPS codes are not): sent without a region; "
    "Matomo's `console usercountry:convert-region-codes` converts them in its database",
}
_SHOWN = 8


def _known(code: pl.Expr, known: list[str]) -> pl.Expr:
    """Whether a code is in a table (or is device-detector's unknown, or absent)."""
    code = text(code)
    return code.is_null() | code.is_in(known) | code.is_in(UNKNOWN_CODES)


def unmapped(
    *,
    browser: pl.Expr,
    os: pl.Expr,
    device: pl.Expr,
    device_icon: pl.Expr | None,
    device_out: pl.Expr,
    region_joined: pl.Expr,
    region_out: pl.Expr,
) -> dict[str, pl.Expr]:
    """Per visit, the source value that maps to nothing (null when it maps), by kind.

    ``device_out``, ``region_joined`` (country-code) and ``region_out`` are what the
    visit's device and region became, computed once by the caller.
    """
    label = text(device)
    said_unknown = label.str.to_lowercase() == "unknown"  # Matomo's own "no device type"
    if device_icon is not None:  # a translated "Unknown" has the icon devices/unknown.png
        said_unknown = said_unknown | (text(device_icon).str.extract(DEVICE_ICON, 1) == "unknown")
    device_raw = label if device_icon is None else pl.coalesce(label, text(device_icon))
    no_device = device_out.is_null() & device_raw.is_not_null() & said_unknown.fill_null(False).not_()
    return {
        "browser code": pl.when(_known(browser, list(BROWSER_NAMES)).not_()).then(text(browser)),
        "OS code": pl.when(_known(os, [*OS_NAMES, *LEGACY_OS, "WIN"]).not_()).then(text(os)),
        "device type": pl.when(no_device).then(device_raw),
        "region": pl.when(region_out.is_null()).then(region_joined),
    }


class VisitNotes:
    """Counts over a file's visits: values that map to nothing, visits with no visitor id."""

    def __init__(self, path: str, unit: str, site: str | None = None) -> None:
        self.path, self.unit, self.site = path, unit, site
        self.unmapped: dict[str, Counter[str]] = {kind: Counter() for kind in _UNMAPPED}
        self.no_visitor = 0

    def add(self, visits: pl.DataFrame) -> None:
        """``visits``: one row per visit with ``site`` (text), ``no_visitor`` and one column per kind."""
        if self.site is not None:
            visits = visits.filter(pl.col("site").is_null() | (pl.col("site") == self.site))
        self.no_visitor += int(visits.get_column("no_visitor").sum())
        for kind, counter in self.unmapped.items():
            counts = visits.get_column(kind).drop_nulls().value_counts()
            counter.update(dict(counts.iter_rows()))

    def finish(self) -> list[str]:
        notes = []
        if self.no_visitor:
            notes.append(
                f"{self.path}: {self.no_visitor:,} {self.unit}(s) without a visitor id (Matomo's visitor id is "
                "empty or false, and no user id): each is its own Umami visitor (visit-<idvisit>), never merged"
            )
        for kind, counter in self.unmapped.items():
            if not counter:
                continue
            common = counter.most_common(_SHOWN)
            shown = ", ".join(f"{value!r} ({n:,} {self.unit}s)" for value, n in common)
            more = f" and {len(counter) - _SHOWN:,} more" if len(counter) > _SHOWN else ""
            notes.append(f"{self.path}: {kind} {shown}{more} {_UNMAPPED[kind]}")
        return notes


def shape_visits(raw: pl.DataFrame, tsv: bool, notes: VisitNotes) -> pl.DataFrame:
    """log_visit rows -> the visit columns each event gets (Umami's vocabulary); counts the notes."""
    raw = raw.with_columns(
        text_column(raw, c, tsv).alias(c) for c in ("referer_url", "location_city", "user_id", "idvisitor")
    )
    browser, os_code, device = pl.col("config_browser_name"), pl.col("config_os"), pl.col("config_device_type")
    user = unsanitize(text(pl.col("user_id")))
    visits = raw.with_columns(
        pl.when(user != "false").then(user).alias("_user"),
        visitor_hex(pl.col("idvisitor")).alias("_hex"),
        country_expr(pl.col("location_country")).alias("country"),
        device_expr(device).alias("device"),
    ).with_columns(region_code(pl.col("country"), pl.col("location_region")).alias("_region"))
    visits = visits.with_columns(valid_region(pl.col("_region")).alias("region"))
    found = unmapped(
        browser=browser,
        os=os_code,
        device=device,
        device_icon=None,
        device_out=pl.col("device"),
        region_joined=pl.col("_region"),
        region_out=pl.col("region"),
    )
    notes.add(
        visits.select(
            text(pl.col("idsite")).alias("site"),
            (pl.col("_user").is_null() & pl.col("_hex").is_null()).alias("no_visitor"),
            *(expr.alias(kind) for kind, expr in found.items()),
        )
    )
    own_visit = pl.concat_str(pl.lit("visit-"), text(pl.col("idvisit")))
    return visits.select(
        id_expr("idvisit").alias("idvisit"),
        text(pl.col("idsite")).alias("v_idsite"),
        pl.coalesce(pl.col("_user"), pl.col("_hex"), own_visit).alias("visitor_id"),
        epoch_expr("visit_first_action_time").alias("v_first"),
        text(pl.col("referer_url")).alias("v_referrer"),
        screen_expr(pl.col("config_resolution")).alias("screen"),
        language_expr(pl.col("location_browser_lang")).alias("language"),
        browser_expr(browser, os_code).alias("browser"),
        os_expr(os_code, pl.col("config_os_version")).alias("os"),
        "device",
        "country",
        "region",
        unsanitize(text(pl.col("location_city"))).alias("city"),
        pl.lit(True).alias("v_found"),
    )


__all__ = ["VisitNotes", "shape_visits", "unmapped"]
