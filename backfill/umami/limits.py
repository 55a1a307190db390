"""What Umami refuses, per store: the API's own limits hold everywhere, column sizes only on PostgreSQL.

Umami 3.1's ``/api/send`` schema caps ``name`` and ``tag`` at 50 characters, ``hostname``
at 100, ``language`` at 35 and ``screen`` at 11, whatever the store (an answer 400). The
other limits are PostgreSQL's column sizes: ``browser``, ``os`` and ``device`` varchar(20),
utm values and click ids varchar(255), ``city`` varchar(50), event data text varchar(500),
numbers decimal(19,4). Umami on ClickHouse writes the same values into ``String`` and
``Decimal(22, 4)`` columns and stores them whole (its save path cuts only url parts, titles
and event names, as on PostgreSQL), so rejecting them there would lose rows Umami keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import DATA_NUMBER_MAX_ABS, DATA_STRING_LIMIT, FIELD_LIMITS, LOCATION_LIMITS, QUERY_PARAM_LIMIT

POSTGRES, CLICKHOUSE = "postgres", "clickhouse"
STORES = (POSTGRES, CLICKHOUSE)

#: The payload fields /api/send's schema limits itself (src/app/api/send/route.ts).
API_FIELD_LIMITS: dict[str, int] = {"name": 50, "tag": 50, "hostname": 100, "language": 35, "screen": 11}


@dataclass(frozen=True)
class StoreLimits:
    """The lengths and sizes over which a row is lost in one of Umami's stores (None: no limit)."""

    store: str
    fields: dict[str, int]
    city: int | None
    query_param: int | None
    data_string: int | None
    data_number_max_abs: int


LIMITS: dict[str, StoreLimits] = {
    POSTGRES: StoreLimits(
        POSTGRES, dict(FIELD_LIMITS), LOCATION_LIMITS["city"], QUERY_PARAM_LIMIT, DATA_STRING_LIMIT, DATA_NUMBER_MAX_ABS
    ),
    # Decimal(22, 4): 18 digits before the point.
    CLICKHOUSE: StoreLimits(CLICKHOUSE, dict(API_FIELD_LIMITS), None, None, None, 10**18),
}
