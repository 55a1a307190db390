"""Location and whole visits through the API, end to end against the fake Umami.

The fake takes location from CDN headers (with a public client ip) or a GeoIP
table for payload ips, and makes visits of "session x clock hour" unless a
request carries a cache token, as the contract describes.
"""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import polars as pl
import pytest

from backfill.geo import geo_key_expr, request_headers
from backfill.sinks.http import regroup
from backfill.sources import ReadOptions, expand_sources, iter_chunks
from backfill.visits import CrossingVisits, VisitSpans
from tests.conftest import MAPPINGS, SAMPLES, import_into, run_cli
from tests.fake_umami import FakeUmami

T0 = 1_709_280_000  # 2024-03-01 08:00:00 UTC, on the hour

MAPPING = """
version: 1
timestamp: {column: ts, format: epoch, unit: s}
visitor: {columns: [user], visit: session}
fields:
  url: url
  hostname: {const: example.com}
  country: country
  region: region
  city: city
  ip: ip
"""


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    columns = ["ts", "user", "session", "url", "country", "region", "city", "ip"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def _visit_rows() -> list[dict[str, object]]:
    """u-cross: one source visit 10:50 -> 11:20 (crosses 11:00); u-inside: one visit inside 10:xx."""
    ten = T0 + 2 * 3600
    return [
        {"ts": ten + 50 * 60, "user": "u-cross", "session": "s1", "url": "/a", "country": "FR", "region": "FR-IDF"},
        {"ts": ten + 65 * 60, "user": "u-cross", "session": "s1", "url": "/b", "country": "FR", "region": "FR-IDF"},
        {"ts": ten + 80 * 60, "user": "u-cross", "session": "s1", "url": "/c", "country": "FR", "region": "FR-IDF"},
        {"ts": ten + 10 * 60, "user": "u-inside", "session": "s9", "url": "/a", "country": "DE"},
        {"ts": ten + 20 * 60, "user": "u-inside", "session": "s9", "url": "/b", "country": "DE"},
    ]


def _mapping(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING)
    return path


def _visits_of(server: FakeUmami, site: str) -> dict[str, int]:
    by_user: dict[str, set[str]] = collections.defaultdict(set)
    for event in server.events(site):
        by_user[event["distinct_id"]].add(event["visit_id"])
    return {user: len(v) for user, v in by_user.items()}


@pytest.mark.parametrize(("mode", "expected_cross_visits"), [("exact", 1), ("hourly", 2)])
def test_a_visit_crossing_the_hour_stays_whole_only_in_exact_mode(
    tmp_path: Path, mode: str, expected_cross_visits: int
) -> None:
    source = _write(tmp_path / "events.csv", _visit_rows())
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, _mapping(tmp_path), tmp_path, "--visits", mode)
        assert result.code == 0, result.stderr
        assert server.event_count(site) == 5
        assert _visits_of(server, site) == {"u-cross": expected_cross_visits, "u-inside": 1}
        cached = [e for e in server.request_log if "x-umami-cache" in e["headers"]]
    report = json.loads((tmp_path / "report.json").read_text())
    if mode == "exact":
        assert len(cached) == 1 and cached[0]["elements"] == 2  # the rest of the visit, alone
        assert any("1 source visits crossed a clock hour" in n for n in report["notes"])
    else:
        assert cached == []


def test_exact_is_the_default_when_the_mapping_names_a_visit_and_dry_run_counts_them(tmp_path: Path) -> None:
    source = _write(tmp_path / "events.csv", _visit_rows())
    result = run_cli("validate", source, "-m", _mapping(tmp_path), "--rejects", tmp_path / "r.ndjson")
    assert result.code == 0, result.stderr
    assert "2 source visits, 1 (50.0%) cross a clock hour" in result.stdout


def test_visits_exact_without_a_visit_column_is_a_config_error(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING.replace(", visit: session", ""))
    source = _write(tmp_path / "events.csv", _visit_rows())
    result = run_cli("validate", source, "-m", mapping, "--visits", "exact", "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2
    assert "visit: <column>" in result.stderr


def _located_rows(visitors: int = 300) -> list[dict[str, object]]:
    places = [
        {"country": "FR", "region": "FR-IDF", "city": "Paris"},
        {"country": "DE", "region": "DE-BY", "city": "München"},
        {"country": "US", "region": "US-CA", "city": "San José"},
        {"country": "", "region": "", "city": ""},
        {"country": "JP", "region": "", "city": ""},
    ]
    rows = []
    for v in range(visitors):
        place = places[v % len(places)]
        for k in range(4):
            rows.append({"ts": T0 + v * 7 + k * 60, "user": f"u{v}", "url": f"/p{k}", **place})
    return rows


def test_each_session_lands_with_its_source_location_in_few_requests(tmp_path: Path) -> None:
    rows = _located_rows()
    source = _write(tmp_path / "events.csv", rows)
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, _mapping(tmp_path), tmp_path, "--visits", "hourly")
        assert result.code == 0, result.stderr
        sessions = {s["distinct_id"]: s for s in server.sessions(site)}
        batches = [e for e in server.request_log if e["path"] == "/api/batch"]
        assert server.event_count(site) == len(rows)
    for row in rows[::4]:
        session = sessions[row["user"]]
        assert session["country"] == (row["country"] or None)
        assert session["region"] == (row["region"] or None)
        assert session["city"] == (row["city"] or None)  # München, San José: UTF-8 survived
    # 1,200 rows in 5 locations over 64 lanes: grouping must not send a request per row.
    assert len(batches) < len(rows) / 4
    located = [b for b in batches if b["headers"].get("cf-ipcountry")]
    assert located and all(b["headers"]["cf-connecting-ip"] == "203.0.113.7" for b in located)
    unlocated = [b for b in batches if not b["headers"].get("cf-ipcountry")]
    assert all(b["headers"]["cf-connecting-ip"] == "127.0.0.1" for b in unlocated)


@pytest.mark.parametrize(("geo", "country", "ip_sent"), [("auto", "GB", True), ("headers", "FR", False)])
def test_payload_ip_wins_in_auto_and_is_never_sent_with_headers(
    tmp_path: Path, geo: str, country: str, ip_sent: bool
) -> None:
    row = {"ts": T0, "user": "u1", "url": "/", "country": "FR", "region": "FR-IDF", "ip": "81.2.69.142"}
    source = _write(tmp_path / "events.csv", [row])
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, _mapping(tmp_path), tmp_path, "--geo", geo)
        assert result.code == 0, result.stderr
        (session,) = server.sessions(site)
    assert session["country"] == country  # the fake's GeoIP puts 81.2.69.142 in GB
    out = tmp_path / "payloads.ndjson"
    dry = run_cli("validate", source, "-m", _mapping(tmp_path), "--geo", geo, "--out", out, "--rejects", tmp_path / "r")
    assert dry.code == 0, dry.stderr
    assert ('"ip":"81.2.69.142"' in out.read_text()) == ip_sent


def test_geo_off_sends_no_location(tmp_path: Path) -> None:
    source = _write(tmp_path / "events.csv", _located_rows(10))
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, _mapping(tmp_path), tmp_path, "--geo", "off")
        assert result.code == 0, result.stderr
        assert {s["country"] for s in server.sessions(site)} == {None}


def test_ga4_sample_lands_with_its_countries_and_regions(tmp_path: Path) -> None:
    source = SAMPLES / "ga4" / "events_20240301.json.gz"
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, MAPPINGS / "ga4.yaml", tmp_path)
        assert result.code == 0, result.stderr
        sessions = server.sessions(site)
    (source_file,) = expand_sources([str(source)], ReadOptions(format="ga4"))[0]
    rows = pl.concat(list(iter_chunks(source_file, 0, ReadOptions(format="ga4"))))
    first = (
        rows.filter(~pl.col("event_name").is_in(["session_start", "first_visit", "user_engagement", "scroll"]))
        .sort("event_timestamp")
        .group_by("visitor_id", maintain_order=True)
        .first()
    )
    expected = collections.Counter(first["geo_country_code"].to_list())
    found = collections.Counter(s["country"] for s in sessions)
    assert found == expected
    assert collections.Counter(s["region"] for s in sessions) == collections.Counter(first["geo_region_code"].to_list())


def test_plausible_export_lands_with_countries_regions_and_city_names(tmp_path: Path) -> None:
    source = SAMPLES / "plausible_events" / "events_v2.ndjson.gz"
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, MAPPINGS / "plausible-events.yaml", tmp_path)
        assert result.code in (0, 1), result.stderr
        sessions = server.sessions(site)
    countries = {s["country"] for s in sessions}
    assert len(countries - {None}) >= 2
    assert all(s["region"] is None or s["region"].startswith(s["country"] + "-") for s in sessions)
    assert any(s["city"] for s in sessions)


# --------------------------------------------------------------------------- units


def test_location_headers_carry_utf8_city_and_cloudflare_style_region() -> None:
    headers = request_headers("DE\x1fDE-BY\x1fMünchen")
    assert headers == {
        "cf-connecting-ip": b"203.0.113.7",
        "cf-ipcountry": b"DE",
        "cf-region-code": b"BY",
        "cf-ipcity": "München".encode(),
    }
    assert request_headers("") == {"cf-connecting-ip": b"127.0.0.1"}


def test_geo_key_takes_the_country_from_the_region_and_ignores_rows_with_an_ip() -> None:
    frame = pl.DataFrame(
        {
            "country": [None, "FR", None, "US"],
            "region": ["DE-BE", None, None, "US-CA"],
            "city": [None, "Paris", "Nowhere", None],
            "ip": [None, None, None, "81.2.69.142"],
        }
    )
    keys = frame.select(geo_key_expr("auto", frame.columns)).to_series().to_list()
    assert keys == ["DE\x1fDE-BE\x1f", "FR\x1f\x1fParis", "", ""]
    assert frame.select(geo_key_expr("headers", frame.columns)).to_series()[3] == "US\x1fUS-CA\x1f"
    assert set(frame.select(geo_key_expr("off", frame.columns)).to_series()) == {""}


def test_visit_spans_find_the_crossing_visits_across_chunks() -> None:
    spans = VisitSpans()
    spans.add(pl.DataFrame({"_ts": [3600 * 10 + 3000, 100], "_vkey": [1, 2]}, schema_overrides={"_vkey": pl.UInt64}))
    spans.add(pl.DataFrame({"_ts": [3600 * 11 + 60, 200], "_vkey": [1, 2]}, schema_overrides={"_vkey": pl.UInt64}))
    found = spans.finish()
    assert found.visits == 2 and found.keys.to_list() == [1]
    assert found.contains(pl.Series([2, 1, None], dtype=pl.UInt64)).to_list() == [False, True, False]


def test_regroup_keeps_each_visitors_order_and_numbers_the_block_again() -> None:
    frame = pl.DataFrame(
        {
            "_seq": [10, 11, 12, 13, 14],
            "_lane": [0, 0, 0, 0, 0],
            "_visitor": ["a", "b", "a", "c", "b"],
            "_geo": ["FR", "DE", "", "FR", ""],
            "_vkey": [None, None, None, None, None],
            "_ts": [1, 2, 3, 4, 5],
        },
        schema_overrides={"_vkey": pl.UInt64},
    )
    out = regroup(frame, CrossingVisits.empty())
    assert out["_seq"].to_list() == [10, 11, 12, 13, 14]
    # visitors grouped by the location of their first row; each visitor's rows in time order
    assert out["_visitor"].to_list() == ["b", "b", "a", "a", "c"]
    assert out["_ts"].to_list() == [2, 5, 1, 3, 4]
    assert out["_seg"].to_list() == ["gDE|0", "gDE|0", "gFR|0", "gFR|0", "gFR|0"]
    assert out["_lane"].to_list() == [0, 0, 1, 1, 1]  # one piece of each location, a lane each


def _sessions_rows(visitors: int, seed: int) -> list[dict[str, object]]:
    """Visitors with 1-3 visits of 2-6 events, a few minutes apart, many crossing hh:00."""
    import random

    rnd = random.Random(seed)
    places = [("FR", "FR-IDF", "Paris"), ("DE", "DE-BY", "München"), ("", "", ""), ("BR", "BR-SP", "São Paulo")]
    rows: list[dict[str, object]] = []
    for v in range(visitors):
        country, region, city = places[v % len(places)]
        start = T0 + rnd.randrange(5 * 86_400)
        for s in range(rnd.randint(1, 3)):
            t = start + s * 86_400
            for _ in range(rnd.randint(2, 6)):
                rows.append(
                    {
                        "ts": t,
                        "user": f"u{v}",
                        "session": f"s{v}-{s}",
                        "url": f"/p/{len(rows)}",
                        "country": country,
                        "region": region,
                        "city": city,
                    }
                )
                t += rnd.randrange(60, 900)
    rnd.shuffle(rows)
    return rows


def test_killed_and_resumed_import_keeps_locations_and_loses_or_doubles_nothing(tmp_path: Path) -> None:
    from tests.test_e2e_import import Paths, Processes, import_args, kill_after_batches

    rows = _sessions_rows(400, seed=11)
    source = _write(tmp_path / "events.csv", rows)
    paths = Paths.under(tmp_path)
    procs = Processes(tmp_path)
    with FakeUmami() as server:
        site = server.add_website()
        server.faults.latency_ms = 20
        args = import_args(source, _mapping(tmp_path), server, site, paths, "--batch-size", "20")
        kill_after_batches(procs, args, server, 40)
        server.faults.latency_ms = 0
        final = run_cli(*args, timeout=90)
        assert final.code in (0, 1), final.stdout + final.stderr
        report = paths.report_json()
        stored = collections.Counter(e["url_path"] for e in server.events(site))
        sessions = {s["distinct_id"]: s for s in server.sessions(site)}
        visits = _visits_of(server, site)
    in_doubt = {r["row"] for r in paths.in_doubt_records()}
    assert report["ledger"]["balances"]
    assert report["ledger"]["accepted"] + len(in_doubt) == len(rows)
    for i, row in enumerate(rows, start=1):
        expected = 1 if i not in in_doubt else stored[row["url"]]
        assert stored[row["url"]] == expected, (i, row)
    first_place = {}
    for row in sorted(rows, key=lambda r: r["ts"]):
        first_place.setdefault(row["user"], (row["country"] or None, row["region"] or None, row["city"] or None))
    for user, place in first_place.items():
        if user not in sessions:  # nothing of this visitor landed: all its rows must be in doubt
            assert all(i in in_doubt for i, r in enumerate(rows, start=1) if r["user"] == user), user
            continue
        s = sessions[user]
        assert (s["country"], s["region"], s["city"]) == place, user
    # Every source visit is one Umami visit, except visits cut by the kill (at most one per lane).
    hours: dict[tuple[object, object], set[int]] = collections.defaultdict(set)
    for r in rows:
        hours[(r["user"], r["session"])].add(int(r["ts"]) // 3600)
    crossing = sum(1 for h in hours.values() if len(h) > 1)
    assert crossing > 50, crossing  # the data does exercise whole visits
    source_visits = collections.Counter(user for user, _ in hours)
    split = sum(max(0, visits.get(u, 0) - n) for u, n in source_visits.items())
    assert split <= 64, (split, crossing)
