"""``backfill verify``: read an import back from Umami and compare it with what the
source and the mapping imply.

Expected side
    The sources are read exactly as ``import`` reads them (``api.plan`` +
    ``api.prepare`` with the same mapping, selection and location/visit options),
    and every chunk's sendable rows are folded into the figures Umami should
    show, counted the way Umami counts (``UMAMI_CONTRACT.md``, "How Umami counts"):

    - per day (in ``--timezone``, from ``_ts``): pageviews (``type`` event, no
      ``name``); visitors (distinct payload ids among that day's pageviews);
      visits (distinct Umami visit ids among them: a visit id is (session, clock
      hour); with ``--visits hourly`` or without a source visit column the key is
      (visitor, hour of the row); with ``--visits exact`` it is (visitor, hour of
      the FIRST row of that source visit over the whole import), because the
      sender gives every event of a source visit the visit id of its first
      event); custom events per name (rows with a ``name``, which count as no
      visitor or visit); revenue per currency (``data.revenue`` > 0 with a
      ``data.currency``);
    - over the whole range: visitors per URL path and per referrer domain (Umami
      3's metrics count distinct sessions, leave out empty and self referrers),
      and sessions per country, browser and OS (a session's attributes come from
      its visitor's first row, any type, in send order).

    Memory: per-day counts are sums (a few numbers per day). Distinct counts
    need sets, so each chunk is reduced to its unique (day, visitor),
    (day, visitor, visit, hour), (path, visitor) and (referrer, visitor) pairs,
    with 64-bit hashes in place of the ids, and the parts are merged (made
    unique again) whenever they grow past a bound. Memory is therefore about
    12-24 bytes per distinct pair, not per row: 10,000 visitors a day for five
    years is ~18M (day, visitor) pairs, ~0.5 GB with the visit and path pairs.
    Two tables are kept per visitor and per source visit: the visitor's first
    row (its session attributes, ~60 bytes) and, with ``--visits exact``, the
    first time of every source visit (~16 bytes).

Found side (Umami's read API, authenticated with ``umami.api.auth_headers``)
    ``/stats`` once per day that has expected or found data (pageviews,
    visitors, visits: about 4 requests at a time, so a few thousand days take a
    few minutes against a real Umami), ``/pageviews?unit=day`` and
    ``/events/series?unit=day`` per window of at most 90 days (Umami replaces
    ``unit=day`` by a coarser unit on long ranges), ``/metrics`` once per list
    over the whole range, and ``/stats`` plus ``/metrics?type=event`` over the
    last 30 days after the range, to see events that landed "now".

    Revenue is NOT compared: Umami 3 reads it through ``POST /api/reports/revenue``,
    whose request and answer have changed between releases (and the fake server
    does not serve it); the expected revenue is printed and reported. Bounces,
    visit time, regions, cities, titles and event data are not compared.

Nothing here prints; ``render`` makes the text and ``to_dict`` the JSON.
"""

from .compare import VerifyResult, VerifySettings, run_verify
from .expected import Expected, ExpectedCollector, collect_expected
from .render import render
from .tolerance import Tolerance, default_tolerance

__all__ = [
    "Expected",
    "ExpectedCollector",
    "Tolerance",
    "VerifyResult",
    "VerifySettings",
    "collect_expected",
    "default_tolerance",
    "render",
    "run_verify",
]
