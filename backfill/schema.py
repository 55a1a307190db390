"""The contract shared by transform, validation, payload and sender.

Limits come from Umami 3's request schema (HTTP 400 when broken) and from its
database columns (HTTP 500 when broken, sometimes after a partial write), see
``UMAMI_CONTRACT.md``. Checking them here is the only way not to lose rows.
"""

from __future__ import annotations

import polars as pl

#: Payload string fields in the order they are written into each JSON body.
PAYLOAD_STRING_FIELDS: tuple[str, ...] = (
    "hostname",
    "url",
    "referrer",
    "title",
    "name",
    "tag",
    "language",
    "screen",
    "browser",
    "os",
    "device",
    "ip",
    "userAgent",
    "id",
)

#: Where the visitor was. Umami has no payload field for these (it takes them from a
#: GeoIP lookup or CDN headers), so they are carried beside the payload: checked,
#: reported, and ready for a sender that groups requests by location.
LOCATION_FIELDS: tuple[str, ...] = ("country", "region", "city")
#: session.country / region / city column sizes; country is ISO 3166-1 alpha-2,
#: region ISO 3166-2 (``DE-BE``), city an English name.
LOCATION_LIMITS: dict[str, int] = {"country": 2, "region": 20, "city": 50}

#: Every mapping target that is not a ``data.<key>`` property.
TARGET_FIELDS: tuple[str, ...] = ("type", "timestamp", *PAYLOAD_STRING_FIELDS, *LOCATION_FIELDS)

EVENT_TYPES: tuple[str, ...] = ("event", "identify")

#: Maximum length (characters) per payload field; over it Umami answers 400 or 500.
FIELD_LIMITS: dict[str, int] = {
    "name": 50,
    "tag": 50,
    "hostname": 100,
    "language": 35,
    "screen": 11,
    "browser": 20,
    "os": 20,
    "device": 20,
    "id": 50,
}

#: utm_* parameters and click ids read from the url query: varchar(255) columns.
QUERY_PARAM_LIMIT = 255
QUERY_PARAMS_LIMITED: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "li_fat_id",
    "twclid",
)

#: website_event.page_title: Umami cuts a longer title itself (after URI-decoding it), so
#: a title is cut here to the same length (counted in the summary), never rejected.
TITLE_LIMIT = 500
#: url_path, url_query, referrer path/query/domain: Umami cuts each at 500 itself.
URL_PART_LIMIT = 500

#: Umami's ``session`` table columns (PostgreSQL), in its own order: what the database
#: sink writes and what an export of Umami's tables carries.
SESSION_TABLE_COLUMNS: tuple[str, ...] = (
    "session_id",
    "website_id",
    "browser",
    "os",
    "device",
    "screen",
    "language",
    "country",
    "region",
    "city",
    "distinct_id",
    "created_at",
)

#: event_data string values and keys are varchar(500).
DATA_STRING_LIMIT = 500
DATA_KEY_LIMIT = 500
#: event_data numbers are decimal(19,4): at most 15 digits before the point.
DATA_NUMBER_MAX_ABS = 10**15
CURRENCY_LIMIT = 10

#: Internal columns carried beside the payload fields (prefixed with ``_``).
COL_FILE = "_file"  # index into the run's list of source files (UInt32)
COL_ROW = "_row"  # 1-based data row number inside that file (UInt64)
COL_TS = "_ts"  # event time, integer unix seconds (Int64)
COL_VISITOR = "_visitor"  # the payload id (String)
COL_LANE = "_lane"  # sender lane, stable hash of the visitor (UInt16)
COL_JSON = "_json"  # the /api/batch element as JSON text (String)
COL_DATA = "_data"  # the element's data object as JSON text (String), null without one
COL_REJECT_FIELD = "_reject_field"
COL_REJECT_REASON = "_reject_reason"
COL_SKIP = "_skip"  # name of the filter that skipped the row
COL_TITLE_CUT = "_title_cut"  # True where validation cut the title to TITLE_LIMIT (Boolean)
#: Set by the readers on a record that could not be read (a CSV row with the wrong number
#: of fields, an NDJSON line that is not a JSON object): the reason (String), else null.
#: Such a row has null data columns and is rejected before any other rule.
COL_SOURCE_ERROR = "_source_error"
#: The record's text as found in the file (at most ``SOURCE_RAW_MAX`` characters), for
#: the rejects file, so the row can be fixed and imported again; null on sound rows.
COL_SOURCE_RAW = "_source_raw"
SOURCE_RAW_MAX = 2000
COL_VISIT = "_visit"  # the source's visit id (String), null when the mapping names none
COL_GEO = "_geo"  # the location a request must carry for this row ("" = none), see geo.py
COL_VKEY = "_vkey"  # hash of (visitor, source visit) (UInt64), null without a visit column

#: Schema of the prepared rows handed from the transform to the sender.
PREPARED_SCHEMA: dict[str, pl.DataType] = {
    COL_TS: pl.Int64(),
    COL_FILE: pl.UInt32(),
    COL_ROW: pl.UInt64(),
    COL_VISITOR: pl.String(),
    COL_LANE: pl.UInt16(),
    COL_JSON: pl.String(),
    COL_GEO: pl.String(),
    COL_VKEY: pl.UInt64(),
}
#: The same rows for a database sink: the element as columns (``type``, the payload's
#: string fields, ``id`` being ``_visitor``, and ``data`` as JSON text) instead of JSON
#: text, so what Umami would store is derived from columns without decoding each element.
PREPARED_COLUMNS_SCHEMA: dict[str, pl.DataType] = {
    **{name: dtype for name, dtype in PREPARED_SCHEMA.items() if name != COL_JSON},
    "type": pl.String(),
    **{name: pl.String() for name in PAYLOAD_STRING_FIELDS if name != "id"},
    COL_DATA: pl.String(),
}

#: The User-Agent sent when a row has none: passes Umami's bot check and makes it
#: detect no browser and no OS (so imported sessions are not all "Linux").
DEFAULT_USER_AGENT_TEMPLATE = "Mozilla/5.0 umami-backfill/{version}"
