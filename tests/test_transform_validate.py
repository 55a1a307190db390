"""Each rule of the Umami contract, checked on in-memory chunks (no files, no HTTP)."""

from __future__ import annotations

import json
import textwrap

import polars as pl

from backfill.mapping import parse_mapping
from backfill.payload import build_elements
from backfill.schema import COL_REJECT_FIELD, COL_REJECT_REASON, COL_TS, COL_VISITOR
from backfill.transform import TimeWindow, apply_mapping, lanes_for
from backfill.validate import validate

WEBSITE = "5f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11"
MAPPING = """\
version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [user]}
fields:
  url: url
  name: {column: event, map: {pageview: null}}
  os: os
  userAgent: ua
  data.revenue: revenue
  data.currency: {column: currency, case: upper}
"""


def chunk(rows: list[dict[str, object]]) -> pl.DataFrame:
    base = {
        "ts": "2024-03-01T08:00:00Z",
        "user": "u1",
        "url": "/a",
        "event": "pageview",
        "os": None,
        "ua": None,
        "revenue": None,
        "currency": None,
    }
    data = [base | r for r in rows]
    frame = pl.DataFrame(data, schema={k: pl.String for k in base})
    return frame.with_columns(
        pl.lit(0, dtype=pl.UInt32).alias("_file"),
        pl.int_range(1, frame.height + 1, dtype=pl.UInt64).alias("_row"),
    )


def run(rows: list[dict[str, object]], mapping_text: str = MAPPING) -> pl.DataFrame:
    mapping = parse_mapping(textwrap.dedent(mapping_text), "m.yaml")
    return validate(apply_mapping(chunk(rows), mapping, TimeWindow()), mapping, now=1_800_000_000)


def reasons(frame: pl.DataFrame) -> list[str | None]:
    return frame[COL_REJECT_REASON].to_list()


def test_good_row_makes_exact_payload() -> None:
    out = run([{"event": "purchase", "revenue": "49.99", "currency": "usd"}])
    assert reasons(out) == [None]
    element = json.loads(build_elements(out, WEBSITE)[0])
    assert element == {
        "type": "event",
        "payload": {
            "website": WEBSITE,
            "url": "/a",
            "name": "purchase",
            "id": "u1",
            "timestamp": 1709280000,
            "data": {"revenue": 49.99, "currency": "USD"},
        },
    }


def test_pageview_has_no_name_and_no_nulls() -> None:
    out = run([{}])
    text = build_elements(out, WEBSITE)[0]
    assert "null" not in text
    assert json.loads(text)["payload"] == {
        "website": WEBSITE,
        "url": "/a",
        "id": "u1",
        "timestamp": 1709280000,
    }


def test_offsets_are_converted_to_utc_seconds() -> None:
    out = run([{"ts": "2024-03-01T09:00:00+01:00"}, {"ts": "2024-03-01 08:00:00.750Z"}])
    assert out[COL_TS].to_list() == [1709280000, 1709280000]


def test_naive_time_without_timezone_is_rejected() -> None:
    out = run([{"ts": "2024-03-01T08:00:00"}])
    assert "naive time" in reasons(out)[0]
    assert out[COL_REJECT_FIELD][0] == "timestamp"


def test_naive_time_with_declared_timezone() -> None:
    text = MAPPING.replace("format: iso8601", "format: iso8601, timezone: Europe/Berlin")
    out = run([{"ts": "2024-03-01T09:00:00"}], text)
    assert out[COL_TS].to_list() == [1709280000]


def test_unparseable_time_is_rejected() -> None:
    assert "not an ISO 8601" in reasons(run([{"ts": "yesterday"}]))[0]


def test_float_epoch_seconds_are_floored() -> None:
    text = MAPPING.replace("format: iso8601", "format: epoch, unit: s")
    out = run([{"ts": "1709280000.9"}], text)
    assert out[COL_TS].to_list() == [1709280000]
    assert reasons(out) == [None]


def test_millisecond_epoch_declared_as_seconds_is_rejected() -> None:
    text = MAPPING.replace("format: iso8601", "format: epoch, unit: s")
    out = run([{"ts": "1709280000000"}], text)
    assert "(ms?)" in reasons(out)[0]


def test_millisecond_epoch_with_unit_ms() -> None:
    text = MAPPING.replace("format: iso8601", "format: epoch, unit: ms")
    assert run([{"ts": "1709280000123"}], text)[COL_TS].to_list() == [1709280000]


def test_bot_user_agent_is_rejected() -> None:
    out = run([{"ua": "python-requests/2.31"}, {"ua": "Mozilla/5.0 umami-backfill/0.1"}])
    assert "bot user agent" in reasons(out)[0]
    assert reasons(out)[1] is None


def test_long_visitor_id_is_hashed_not_rejected() -> None:
    out = run([{"user": "v" * 60}, {"user": "v" * 60}, {"user": "short"}])
    ids = out[COL_VISITOR].to_list()
    assert reasons(out) == [None, None, None]
    assert len(ids[0]) <= 50 and ids[0] == ids[1] and ids[2] == "short"


def test_empty_visitor_is_rejected() -> None:
    assert "visitor" in reasons(run([{"user": " "}]))[0]


def test_long_utm_source_is_rejected() -> None:
    out = run([{"url": "/l?utm_source=" + "u" * 300}, {"url": "/l?utm_source=" + "%20" * 200}])
    assert "utm_source" in reasons(out)[0]
    assert reasons(out)[1] is None  # 200 decoded characters


def test_long_os_is_rejected_unless_truncated() -> None:
    out = run([{"os": "o" * 25}])
    assert out[COL_REJECT_FIELD][0] == "os"
    out = run([{"os": "o" * 25}], MAPPING + "overflow: {os: truncate}\n")
    assert reasons(out) == [None] and out["os"][0] == "o" * 20


def test_string_revenue_becomes_a_number_and_garbage_is_rejected() -> None:
    out = run(
        [
            {"event": "purchase", "revenue": "12.5", "currency": "EUR"},
            {"event": "purchase", "revenue": "abc", "currency": "EUR"},
        ]
    )
    assert reasons(out)[0] is None
    assert json.loads(build_elements(out.head(1), WEBSITE)[0])["payload"]["data"]["revenue"] == 12.5
    assert out[COL_REJECT_FIELD][1] == "data.revenue"


def test_revenue_without_currency_is_rejected() -> None:
    assert "without a currency" in reasons(run([{"event": "purchase", "revenue": "10"}]))[0]


def test_unparseable_url_is_rejected() -> None:
    assert run([{"url": "http://[::1"}])[COL_REJECT_FIELD][0] == "url"


def test_long_name_is_rejected() -> None:
    assert run([{"event": "n" * 51}])[COL_REJECT_FIELD][0] == "name"


def test_nul_bytes_are_removed() -> None:
    out = run([{"url": "/a\x00b"}])
    assert out["url"][0] == "/ab"


def test_filters_skip_and_window() -> None:
    text = MAPPING + """filters:\n  - {name: no tests, drop: '"user" = ''test'''}\n"""
    mapping = parse_mapping(text, "m.yaml")
    frame = chunk([{"user": "test"}, {"ts": "2023-01-01T00:00:00Z"}, {}])
    out = apply_mapping(frame, mapping, TimeWindow(since=1_700_000_000))
    assert out["_skip"].to_list() == ["no tests", "--since", None]


def test_lanes_are_stable() -> None:
    lanes = lanes_for(pl.Series(["a", "b", "a", None]), 64).to_list()
    assert lanes[0] == lanes[2]
    assert lanes == lanes_for(pl.Series(["a", "b", "a", None]), 64).to_list()
    assert lanes[0] == 0xE8B7BE43 % 64  # crc32("a")


def test_template_and_constant() -> None:
    text = MAPPING.replace(
        "  url: url\n",
        "  url: {template: '/p/{user}?x={event}'}\n  hostname: {const: example.com}\n",
    )
    out = run([{}], text)
    payload = json.loads(build_elements(out, WEBSITE)[0])["payload"]
    assert payload["url"] == "/p/u1?x=pageview" and payload["hostname"] == "example.com"


def test_revenue_on_a_pageview_is_rejected() -> None:
    out = run([{"revenue": "10", "currency": "USD"}])  # event "pageview" maps to no name
    assert "revenue on a pageview" in reasons(out)[0]


def test_location_fields_are_checked_and_not_sent() -> None:
    text = MAPPING + "  country: c\n  region: r\n  city: t\n"
    mapping = parse_mapping(text, "m.yaml")
    frame = chunk([{}, {}, {}]).with_columns(
        pl.Series("c", ["de", "Germany", "FR"]),
        pl.Series("r", ["DE-BE", "DE-BE", "Ile"]),
        pl.Series("t", ["Berlin", "Berlin", "Paris"]),
    )
    out = validate(apply_mapping(frame, mapping, TimeWindow()), mapping, now=1_800_000_000)
    assert reasons(out)[0] is None and out["country"][0] == "DE"
    assert out[COL_REJECT_FIELD].to_list()[1:] == ["country", "region"]
    assert "country" not in json.loads(build_elements(out.head(1), WEBSITE)[0])["payload"]
