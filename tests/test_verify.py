"""``backfill verify``: the real CLI reads an import back from the fake Umami and compares.

Each scenario imports a shipped sample with ``backfill import`` (a subprocess, as
a user runs it), then runs ``backfill verify`` and checks the exit status, the
verdict line and the ``--report`` JSON against what the fake server stored.
Broken imports are made the way they happen in practice: data lost in Umami
(events deleted from the fake's store), events sent without a timestamp (they
land "now"), a constant visitor id (one session), an importer User-Agent that
makes every session Linux, a server that ignores location headers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from backfill.config import DEFAULT_USER_AGENT
from backfill.schema import COL_FILE, COL_ROW, COL_TS, COL_VISIT, COL_VISITOR
from backfill.verify import ExpectedCollector, Tolerance
from tests.conftest import MAPPINGS, ROOT, SAMPLES, CliResult, import_into, run_cli
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami

LOGIN = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}
EVENTS = SAMPLES / "events.csv"
GA4_GLOB = str(SAMPLES / "ga4" / "events_*")
LINUX_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36"


def verify(server: FakeUmami, site: str, source: str | Path, mapping: str | Path, tmp: Path, *extra: Any) -> CliResult:
    return run_cli(
        "verify",
        source,
        "-m",
        mapping,
        "--host",
        server.url,
        "--website",
        site,
        "--report",
        tmp / "verify.json",
        *extra,
        env=LOGIN,
        cwd=ROOT,
    )


def report(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "verify.json").read_text())


def verdict(result: CliResult) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("verdict:"))


def stored_by_day(server: FakeUmami, site: str) -> dict[str, dict[str, int]]:
    """Per UTC day, what the fake stored: pageviews, distinct sessions and visits among them."""
    views: Counter[str] = Counter()
    sessions: dict[str, set[str]] = defaultdict(set)
    visits: dict[str, set[str]] = defaultdict(set)
    for e in server.events(site):
        if e["event_type"] == 1:
            day = e["created_at"][:10]
            views[day] += 1
            sessions[day].add(e["session_id"])
            visits[day].add(e["visit_id"])
    return {d: {"pageviews": views[d], "visitors": len(sessions[d]), "visits": len(visits[d])} for d in views}


# --------------------------------------------------------------------------- end to end


def test_sample_import_verifies_then_a_lost_day_is_named(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        imported = import_into(server.url, site, EVENTS, "sample_events", tmp_path, "--state", tmp_path / "state")
        assert imported.code == 1, imported.stderr  # the sample's bad rows are rejected on purpose
        ok = verify(server, site, EVENTS, "sample_events", tmp_path)
        assert ok.code == 0, ok.stdout + ok.stderr
        assert verdict(ok).startswith("verdict: MATCH")
        good = report(tmp_path)
        stored = stored_by_day(server, site)
        # The expected side equals what the server really holds, day by day (not just "found").
        assert {d["day"]: {k: d["expected"][k] for k in ("pageviews", "visitors", "visits")} for d in good["days"]} == (
            stored
        )
        assert sum(d["expected"]["events"] for d in good["days"]) == sum(
            1 for e in server.events(site) if e["event_type"] == 2
        )
        assert good["verdict"] == "match" and good["differences"] == []
        assert {t: v["compared"] for t, v in good["top"].items()} == dict.fromkeys(
            ("paths", "referrers", "countries", "browsers", "os", "devices"), True
        )

        day = "2024-03-12"
        lost = server.drop_events(site, lambda e: e["created_at"].startswith(day) and e["event_type"] == 1)
        assert lost > 0
        bad = verify(server, site, EVENTS, "sample_events", tmp_path)
    assert bad.code == 1, bad.stdout + bad.stderr
    line = verdict(bad)
    assert line.startswith("verdict: DIFFERENT")
    assert f"{day} pageviews: expected {stored[day]['pageviews']}, found {stored[day]['pageviews'] - lost}" in line
    assert f"! {day}" in bad.stdout
    assert "diagnosis: pageviews missing" in bad.stdout
    differences = report(tmp_path)["differences"]
    expected = stored[day]["pageviews"]
    assert {"where": day, "metric": "pageviews", "expected": expected, "found": expected - lost} in differences
    assert {d["where"] for d in differences if not d["where"].startswith("top")} == {day}


def test_umami_cloud_import_through_send_verifies_with_an_api_key(tmp_path: Path) -> None:
    """Umami Cloud: no /api/batch (405), the read API on another base (/v1), an API key only,
    and few calls per window (429 + Retry-After beyond): the import falls back to /api/send
    and verify reads through the rate limit."""
    from tests.test_geo_visits import _mapping, _sessions_rows, _write

    source, mapping = _write(tmp_path / "events.csv", _sessions_rows(25, seed=2)), _mapping(tmp_path)
    with FakeUmami(cloud=True, api_key="k-cloud", cloud_calls=12, cloud_window=1.0) as server:
        site = server.add_website()
        imported = import_into(server.url, site, source, mapping, tmp_path)
        assert imported.code == 0, imported.stdout + imported.stderr
        assert imported.stdout.count("/api/send, one row per request") == 1
        result = run_cli(
            "verify", source, "-m", mapping, "--host", server.url, "--website", site,
            "--api-url", f"{server.url}/v1", env={"UMAMI_API_KEY": "k-cloud"}, cwd=ROOT,
        )  # fmt: skip
        limited = [e for e in server.request_log if e["status"] == 429]
    assert result.code == 0, result.stdout + result.stderr
    assert verdict(result).startswith("verdict: MATCH")
    assert limited  # the limit was reached and waited out


def test_ga4_import_verifies_with_exact_visits_and_not_hourly(tmp_path: Path) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        imported = import_into(server.url, site, GA4_GLOB, "ga4", tmp_path, "--state", tmp_path / "state", cwd=ROOT)
        assert imported.code == 0, imported.stdout + imported.stderr
        ok = verify(server, site, GA4_GLOB, "ga4", tmp_path)
        assert ok.code == 0, ok.stdout + ok.stderr
        good = report(tmp_path)
        assert good["visits"] == "exact"
        countries = good["top"]["countries"]
        assert countries["compared"] and any(r["value"] for r in countries["rows"])
        # Days counted in a zone with a half-hour offset: Umami buckets them the same way.
        kolkata = verify(server, site, GA4_GLOB, "ga4", tmp_path, "--timezone", "Asia/Kolkata")
        assert kolkata.code == 0, kolkata.stdout + kolkata.stderr
        assert report(tmp_path)["timezone"] == "Asia/Kolkata"
        # Counted hour by hour, the GA sessions that cross hh:00 would be two visits each;
        # the import kept them whole, so an hourly expectation must fail, and name visits.
        hourly = verify(server, site, GA4_GLOB, "ga4", tmp_path, "--visits", "hourly")
    assert hourly.code == 1, hourly.stdout
    metrics = {d["metric"] for d in report(tmp_path)["differences"]}
    assert metrics == {"visits"}


def test_an_umami_on_clickhouse_is_told_apart_and_counted_as_it_counts(tmp_path: Path) -> None:
    """The GA4 sample's pages are on www.ledgerly.example and many referrers are ledgerly.example:
    Umami on PostgreSQL drops those as self-referrals (www. stripped), on ClickHouse it lists them.
    Each store is recognised by its answers and modelled, so MATCH means the same on both."""
    with FakeUmami(store="clickhouse") as server:
        site = server.add_website()
        imported = import_into(server.url, site, GA4_GLOB, "ga4", tmp_path, "--state", tmp_path / "state", cwd=ROOT)
        assert imported.code == 0, imported.stdout + imported.stderr
        ok = verify(server, site, GA4_GLOB, "ga4", tmp_path)
        assert ok.code == 0, ok.stdout + ok.stderr
        assert "data in ClickHouse" in ok.stderr and "compared as Umami on ClickHouse counts" in ok.stdout
        referrers = {r["value"]: r["found"] for r in report(tmp_path)["top"]["referrers"]["rows"]}
        assert referrers.get("ledgerly.example", 0) > 0
        # Days in a zone with a half-hour offset: the hourly table's rows start at the UTC hour.
        kolkata = verify(server, site, GA4_GLOB, "ga4", tmp_path, "--timezone", "Asia/Kolkata")
        assert kolkata.code == 0, kolkata.stdout + kolkata.stderr
        # Modelled as PostgreSQL, the same store differs, and says where.
        wrong = verify(server, site, GA4_GLOB, "ga4", tmp_path, "--store", "postgres")
    assert wrong.code == 1, wrong.stdout
    assert "top referrers ledgerly.example" in verdict(wrong)


def test_events_sent_without_timestamp_land_now(tmp_path: Path) -> None:
    payloads = tmp_path / "payloads.ndjson"
    with FakeUmami() as server:
        site = server.add_website()
        dry = run_cli(
            "validate", EVENTS, "-m", "sample_events", "--website", site, "--out", payloads,
            "--rejects", tmp_path / "r.ndjson",
        )  # fmt: skip
        assert dry.code == 1, dry.stderr
        elements = [json.loads(line) for line in payloads.read_text().splitlines()]
        for element in elements:  # what an importer that forgets the time sends
            element["payload"].pop("timestamp")
        with httpx.Client(base_url=server.url, headers={"User-Agent": DEFAULT_USER_AGENT}) as client:
            for i in range(0, len(elements), 200):
                assert client.post("/api/batch", json=elements[i : i + 200]).json()["errors"] == 0
        result = verify(server, site, EVENTS, "sample_events", tmp_path)
    assert result.code == 1, result.stdout + result.stderr
    assert "diagnosis: events landing 'now' instead of in the past" in result.stdout
    assert "sent events without their time" in result.stdout
    data = report(tmp_path)
    assert data["after_range_recent"]["pageviews"] == sum(d["expected"]["pageviews"] for d in data["days"])
    assert all(d["found"]["pageviews"] == 0 for d in data["days"])


def test_constant_visitor_is_diagnosed_as_one_session(tmp_path: Path) -> None:
    mapping = (MAPPINGS / "sample_events.yaml").read_text()
    constant = tmp_path / "constant_visitor.yaml"
    constant.write_text(mapping.replace("columns: [visitor_id]", "columns: [is_test]"))  # "false" on every sent row
    with FakeUmami() as server:
        site = server.add_website()
        imported = import_into(server.url, site, EVENTS, constant, tmp_path, "--state", tmp_path / "state")
        assert imported.code == 1, imported.stderr
        result = verify(server, site, EVENTS, "sample_events", tmp_path)
    assert result.code == 1
    assert "diagnosis: everything in one session" in result.stdout
    days = report(tmp_path)["days"]
    assert all(d["found"]["visitors"] == 1 for d in days if d["found"]["pageviews"])
    assert any("visitors" in d["differs"] for d in days)


def test_importer_user_agent_makes_every_session_linux(tmp_path: Path) -> None:
    bare = tmp_path / "no_client_fields.yaml"
    text = (MAPPINGS / "sample_events.yaml").read_text()
    for line in ("  userAgent: user_agent", "  browser: browser", "  os: os", "  device: device"):
        text = "\n".join(row for row in text.splitlines() if not row.startswith(line)) + "\n"
    bare.write_text(text)
    with FakeUmami() as server:
        site = server.add_website()
        imported = import_into(
            server.url, site, EVENTS, bare, tmp_path, "--state", tmp_path / "state", "--user-agent", LINUX_UA
        )
        assert imported.code == 1, imported.stderr
        result = verify(server, site, EVENTS, "sample_events", tmp_path)
    assert result.code == 1
    assert "diagnosis: every session with the same OS" in result.stdout
    assert "'Linux'" in result.stdout
    os_rows = report(tmp_path)["top"]["os"]["rows"]
    assert any(r["value"] == "Linux" and r["differs"] for r in os_rows)


def test_devices_follow_the_screen_when_no_user_agent_names_one(tmp_path: Path) -> None:
    bare = tmp_path / "no_device.yaml"
    text = (MAPPINGS / "sample_events.yaml").read_text()
    for line in ("  userAgent: user_agent", "  device: device"):
        text = "\n".join(row for row in text.splitlines() if not row.startswith(line)) + "\n"
    bare.write_text(text)
    with FakeUmami() as server:
        site = server.add_website()
        imported = import_into(server.url, site, EVENTS, bare, tmp_path, "--state", tmp_path / "state")
        assert imported.code == 1, imported.stderr  # the sample's bad rows
        same = verify(server, site, EVENTS, bare, tmp_path)
        devices = report(tmp_path)["top"]["devices"]
        mapped = verify(server, site, EVENTS, "sample_events", tmp_path / "mapped")
        mapped_devices = report(tmp_path / "mapped")["top"]["devices"]
    assert same.code == 0, same.stdout
    assert devices["compared"] and {r["value"] for r in devices["rows"]} >= {"laptop", "desktop"}
    assert all(not r["differs"] and r["expected"] == r["found"] for r in devices["rows"])
    assert mapped.code == 1  # the sample's own device column says "Mobile", Umami holds what the screen gave
    assert any(r["value"] == "mobile" and r["differs"] and r["found"] == 0 for r in mapped_devices["rows"])


def test_location_headers_ignored_by_the_server(tmp_path: Path) -> None:
    with FakeUmami(skip_location_headers=True) as server:  # like SKIP_LOCATION_HEADERS, or a stripping proxy
        site = server.add_website()
        imported = import_into(server.url, site, GA4_GLOB, "ga4", tmp_path, "--state", tmp_path / "state", cwd=ROOT)
        assert imported.code == 0, imported.stderr
        result = verify(server, site, GA4_GLOB, "ga4", tmp_path)
    assert result.code == 1
    assert "diagnosis: location missing" in result.stdout
    assert {d["where"] for d in report(tmp_path)["differences"]} == {"top countries"}


def test_read_errors_exit_2_and_never_print_the_password(tmp_path: Path) -> None:
    secret = "s3cret-verify-pass"
    with FakeUmami(password=secret) as server:
        site = server.add_website()
        base = ("verify", EVENTS, "-m", "sample_events", "--host", server.url, "--report", tmp_path / "v.json")
        wrong = run_cli(*base, "--website", site, env={**LOGIN, "UMAMI_PASSWORD": "nope-" + secret})
        missing = run_cli(
            *base, "--website", "6f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11", env={**LOGIN, "UMAMI_PASSWORD": secret}
        )
        no_credentials = run_cli(*base, "--website", site)
        no_host = run_cli("verify", EVENTS, "-m", "sample_events", "--website", site, env=LOGIN)
        empty = run_cli(*base, "--website", site, env={**LOGIN, "UMAMI_PASSWORD": secret})
    assert (wrong.code, missing.code, no_credentials.code, no_host.code) == (2, 2, 2, 2)
    assert "refused the login" in wrong.stderr
    assert "does not exist" in missing.stderr
    assert "needs credentials" in no_credentials.stderr
    assert "--host" in no_host.stderr
    assert empty.code == 1 and "diagnosis: nothing found in the imported range" in empty.stdout
    written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    for text in [r.stdout + r.stderr for r in (wrong, missing, no_credentials, no_host, empty)] + written:
        assert secret not in text


def test_unreachable_host_exits_2(tmp_path: Path) -> None:
    with FakeUmami() as server:
        url = server.url
    result = run_cli(
        "verify",
        EVENTS,
        "-m",
        "sample_events",
        "--host",
        url,
        "--website",
        "6f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11",
        env=LOGIN,
    )
    assert result.code == 2
    assert "cannot log in" in result.stderr


# --------------------------------------------------------------------------- the expected side


def _rows(*rows: tuple[str, str | None, str, str | None]) -> pl.DataFrame:
    """(visitor, source visit, UTC time, event name) -> sendable rows as prepare hands them over."""
    ts = [int(dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC).timestamp()) for _v, _s, t, _n in rows]
    return pl.DataFrame(
        {
            COL_FILE: pl.Series([0] * len(rows), dtype=pl.UInt32),
            COL_ROW: pl.Series(range(1, len(rows) + 1), dtype=pl.UInt64),
            COL_TS: pl.Series(ts, dtype=pl.Int64),
            "type": ["event"] * len(rows),
            "url": ["/a"] * len(rows),
            "name": pl.Series([n for *_x, n in rows], dtype=pl.String),
            COL_VISIT: pl.Series([s for _v, s, _t, _n in rows], dtype=pl.String),
            COL_VISITOR: [v for v, *_x in rows],
        }
    )


def test_expected_visits_follow_the_first_row_of_each_source_visit() -> None:
    rows = _rows(
        ("a", "v1", "2024-03-01T10:50:00", None),
        ("a", "v1", "2024-03-01T11:10:00", None),  # crosses hh:00: one visit when kept whole
        ("a", "v2", "2024-03-01T10:55:00", "signup"),  # starts in v1's first hour: the same Umami visit
        ("a", "v2", "2024-03-01T12:05:00", None),
        ("b", None, "2024-03-01T23:30:00", None),  # no source visit: its own clock hour
        ("b", "v9", "2024-03-02T00:10:00", None),
    )
    exact = ExpectedCollector("UTC", exact_visits=True)
    hourly = ExpectedCollector("UTC", exact_visits=False)
    for half in (rows.head(3), rows.tail(3)):  # two chunks: the first row of v2 is in the first one
        exact.add(half)
        hourly.add(half)
    day1, day2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)
    e, h = exact.finish(), hourly.finish()
    assert e.pageviews == h.pageviews == {day1: 4, day2: 1}
    assert e.visitors == {day1: 2, day2: 1}
    assert e.events == {day1: Counter({"signup": 1})}
    assert e.visits == {day1: 2, day2: 1}  # a@10h (v1 and v2), b@23h; b@00h
    assert h.visits == {day1: 4, day2: 1}  # a@10h, a@11h, a@12h, b@23h; b@00h
    berlin = ExpectedCollector("Europe/Berlin", exact_visits=False)
    berlin.add(rows)
    assert berlin.finish().pageviews == {day1: 3, day2: 2}  # 23:30 UTC is 00:30 in Berlin


def test_tolerance_forms() -> None:
    assert Tolerance.parse("0").exact and Tolerance.parse("0").allows(5, 5) and not Tolerance.parse("0").allows(5, 4)
    assert Tolerance.parse("2").allows(10, 8) and not Tolerance.parse("2").allows(10, 7)
    assert Tolerance.parse("1%").allows(1000, 990) and not Tolerance.parse("1%").allows(1000, 989)


def test_fake_buckets_days_in_the_requested_timezone() -> None:
    with FakeUmami() as server, httpx.Client(base_url=server.url) as client:
        site = server.add_website()
        t0 = int(dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.UTC).timestamp())
        body = [
            {"type": "event", "payload": {"website": site, "url": "/", "id": "x", "timestamp": t0}},
            {"type": "event", "payload": {"website": site, "url": "/", "id": "x", "timestamp": t0, "name": "go"}},
        ]
        client.post("/api/batch", json=body, headers={"User-Agent": DEFAULT_USER_AGENT})
        token = client.post("/api/auth/login", json={"username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD})
        auth = {"Authorization": f"Bearer {token.json()['token']}"}
        rng = {"startAt": (t0 - 86_400) * 1000, "endAt": (t0 + 86_400) * 1000, "unit": "day"}
        utc = client.get(f"/api/websites/{site}/pageviews", params={**rng, "timezone": "UTC"}, headers=auth).json()
        berlin = client.get(
            f"/api/websites/{site}/pageviews", params={**rng, "timezone": "Europe/Berlin"}, headers=auth
        ).json()
        series = client.get(
            f"/api/websites/{site}/events/series", params={**rng, "timezone": "Europe/Berlin"}, headers=auth
        ).json()
    assert utc["pageviews"] == [{"x": "2024-03-01T00:00:00Z", "y": 1}]
    assert berlin["pageviews"] == [{"x": "2024-03-02 00:00:00", "y": 1}]
    assert series == [{"x": "go", "t": "2024-03-02 00:00:00", "y": 1}]
