"""Which Matomo site an import is: ``--matomo-site ID`` (``reader: {matomo_site: ID}``).

Matomo keeps every site of an instance in the same log tables, and a Live export
names each visit's ``idSite``; an Umami website is one site. So when the input
holds more than one site and none is chosen, both readers refuse before reading
further, listing each site (id, name, main URL, visits: whatever the input
tells) and the option that chooses one. With a site chosen, the rows of the
other sites are read and counted as skipped (:data:`SKIP_NAME`), so the ledger
still adds up to the rows read; they are never sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_SKIP, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import ReadOptions

#: The reader option (``ReadOptions.plugin_options``) that chooses the site.
SITE_OPTION = "matomo_site"
#: The ledger's name for the rows of the sites not chosen.
SKIP_NAME = "another Matomo site (--matomo-site {site})"


@dataclass(frozen=True)
class Site:
    """One site found in the input; name and URL only when the input carries them."""

    id: str
    visits: int
    name: str | None = None
    url: str | None = None

    def describe(self) -> str:
        name = f'"{self.name}"' if self.name else "name unknown"
        url = f", {self.url}" if self.url else ""
        return f"--matomo-site {self.id}: {name}{url}, {self.visits:,} visits"


def chosen_site(options: ReadOptions) -> str | None:
    """The ``--matomo-site`` id, checked to be a site id (a positive whole number)."""
    value = dict(options.plugin_options).get(SITE_OPTION)
    if value is None:
        return None
    site = str(value).strip()
    if not site.isdigit() or int(site) == 0:
        raise ConfigError(f"--matomo-site must be a Matomo site id (idsite: 1, 2, ...), not {value!r}")
    return str(int(site))


def check_sites(where: str, sites: list[Site], options: ReadOptions, *, unknown: str = "") -> str | None:
    """The site to import (None: the input holds one site or none, all is imported).

    Refuses (SourceError, before anything is sent) an input of several sites
    with none chosen, and a chosen site the input does not hold.
    """
    chosen = chosen_site(options)
    ids = [s.id for s in sites]
    listing = "\n".join(f"  {s.describe()}" for s in sorted(sites, key=lambda s: int(s.id)))
    if chosen is not None and chosen not in ids and sites:
        raise SourceError(f"{where}: --matomo-site {chosen} is not in the input; it holds:\n{listing}")
    if chosen is None and len(sites) > 1:
        raise SourceError(
            f"{where}: the input holds {len(sites)} Matomo sites, and an Umami website is one site; "
            "choose one with --matomo-site ID (or `matomo_site: 'ID'` under `reader:` in the mapping), "
            f"and import each site into its own Umami website{unknown}:\n{listing}"
        )
    return chosen


def skip_other_sites(frame: pl.DataFrame, site: pl.Expr, chosen: str | None) -> pl.DataFrame:
    """Name the rows of the sites not chosen as skipped (``_skip``); nothing else is said of them."""
    if chosen is None:
        return frame
    other = site.is_not_null() & (site != chosen)
    named = pl.when(other).then(pl.lit(SKIP_NAME.format(site=chosen)))
    columns = [named.alias(COL_SKIP)]
    for column in (COL_SOURCE_ERROR, COL_SOURCE_RAW):  # a skipped row is not judged
        if column in frame.columns:
            columns.append(pl.when(other).then(None).otherwise(pl.col(column)).alias(column))
    return frame.with_columns(columns)


def sites_of(counts: pl.DataFrame, names: pl.DataFrame | None = None) -> list[Site]:
    """Sites from (idsite, visits) and optionally (idsite, name, main_url)."""
    if names is not None and names.height:
        counts = counts.join(names, on="idsite", how="left")
    rows = counts.filter(pl.col("idsite").is_not_null()).to_dicts()
    return [Site(str(r["idsite"]), int(r["visits"]), r.get("name"), r.get("main_url")) for r in rows]


__all__ = ["SITE_OPTION", "SKIP_NAME", "Site", "check_sites", "chosen_site", "sites_of", "skip_other_sites"]
