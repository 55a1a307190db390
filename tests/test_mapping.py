"""The mapping parser: every mistake fails before data is read, with a line and a fix."""

from __future__ import annotations

import textwrap

import polars as pl
import pytest

from backfill.errors import MappingError
from backfill.mapping import check_against_schema, load_mapping, parse_mapping

BASE = """\
version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [user]}
fields:
  url: path
  name: {column: event, map: {pageview: null}}
"""


def parse(text: str):
    return parse_mapping(textwrap.dedent(text), "m.yaml")


def test_minimal_mapping_parses() -> None:
    m = parse(BASE)
    assert m.timestamp.column == "ts"
    assert m.visitor.columns == ("user",)
    assert m.fields["url"].column == "path"
    assert m.fields["name"].value_map == {"pageview": None}
    assert m.event_type.const == "event"


def test_unknown_top_level_key_suggests_spelling() -> None:
    with pytest.raises(MappingError, match=r"m.yaml:7: unknown key 'filter' \(did you mean 'filters'\?\)"):
        parse(BASE + "filter: []\n")


def test_unknown_payload_field_has_line_and_suggestion() -> None:
    with pytest.raises(
        MappingError,
        match=r"m.yaml:6: unknown payload field 'referer' \(did you mean 'referrer'\?\)",
    ):
        parse(BASE.replace("  name:", "  referer: ref\n  name:"))


def test_epoch_needs_unit() -> None:
    with pytest.raises(MappingError, match="explicit unit"):
        parse(BASE.replace("format: iso8601", "format: epoch"))


def test_strftime_without_offset_needs_timezone() -> None:
    with pytest.raises(MappingError, match="naive times"):
        parse(BASE.replace("format: iso8601", "format: '%Y-%m-%d %H:%M'"))
    m = parse(BASE.replace("format: iso8601", "format: '%Y-%m-%d %H:%M', timezone: Europe/Berlin"))
    assert m.timestamp.timezone == "Europe/Berlin"


def test_unknown_timezone() -> None:
    with pytest.raises(MappingError, match="unknown timezone 'Mars/Base'"):
        parse(BASE.replace("format: iso8601", "format: iso8601, timezone: Mars/Base"))


def test_missing_visitor_is_explained() -> None:
    text = BASE.replace("visitor: {columns: [user]}\n", "")
    with pytest.raises(MappingError, match="ONE session per month"):
        parse(text)


def test_visitor_strategies() -> None:
    m = parse(BASE.replace("{columns: [user]}", "{strategy: per_row}"))
    assert m.visitor.strategy == "per_row"
    with pytest.raises(MappingError, match="ip_ua_day needs"):
        parse(BASE.replace("{columns: [user]}", "{strategy: ip_ua_day}"))


def test_id_is_not_a_field() -> None:
    with pytest.raises(MappingError, match="visitor:"):
        parse(BASE + "  id: user\n")


def test_spec_needs_exactly_one_source() -> None:
    with pytest.raises(MappingError, match="exactly one of"):
        parse(BASE + "  title: {column: a, const: b}\n")


def test_bad_filter_sql() -> None:
    with pytest.raises(MappingError, match="not a valid SQL condition"):
        parse(BASE + "filters:\n  - {name: x, drop: 'a = = 1'}\n")


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(MappingError, match="appears twice"):
        parse(BASE + "  url: other\n")


def test_invalid_yaml_has_line() -> None:
    with pytest.raises(MappingError, match=r"m.yaml:4: not valid YAML"):
        parse("version: 1\nfields:\n  url: [a\n")


def test_misspelt_column_against_schema() -> None:
    m = parse(BASE)
    schema = {"ts": pl.String(), "user": pl.String(), "path": pl.String(), "events": pl.String()}
    with pytest.raises(MappingError, match=r"m.yaml:6: column 'event' is not in f.csv \(did you mean 'events'\?\)"):
        check_against_schema(m, schema, "f.csv")


def test_naive_datetime_column_needs_timezone() -> None:
    m = parse(BASE)
    schema = {
        "ts": pl.Datetime("us"),
        "user": pl.String(),
        "path": pl.String(),
        "event": pl.String(),
    }
    with pytest.raises(MappingError, match="naive Datetime"):
        check_against_schema(m, schema, "f.parquet")


def test_overflow_policies() -> None:
    m = parse(BASE + "overflow: {name: truncate, data.*: truncate}\n")
    assert m.overflow_policy("name") == "truncate"
    assert m.overflow_policy("data.note") == "truncate"
    assert m.overflow_policy("tag") == "reject"


def test_every_shipped_mapping_loads() -> None:
    from backfill.mapping import MAPPINGS_DIR

    presets = sorted(MAPPINGS_DIR.glob("*.yaml"))
    for path in presets:
        load_mapping(str(path))
