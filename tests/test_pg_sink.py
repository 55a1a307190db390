"""The database sink against a real, throwaway PostgreSQL with Umami 3.1's tables.

- every recorded case Umami stored: our sink stores the same rows;
- whole imports through the real CLI: the same rows as the fake Umami stores
  for the same file through /api/batch (ids aside), and a replay adds nothing;
- a schema, website or flag we must refuse is refused before any write;
- SIGKILL at random points of a 20,000-row import, three times, then resume:
  every row exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import pg_cases
from tests.conftest import MAPPINGS, ROOT, SAMPLES, run_cli
from tests.fake_umami import FakeUmami
from tests.pg import Cluster, why_no_postgres

pytestmark = pytest.mark.skipif(why_no_postgres() is not None, reason=f"no PostgreSQL: {why_no_postgres()}")

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def pg() -> Any:
    cluster = Cluster.start()
    yield cluster
    cluster.stop()


def rows_of(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args or None).fetchall()


def count(url: str, table: str) -> int:
    return rows_of(url, f'SELECT count(*) FROM "{table}"')[0][0]


def db_import(url: str, website: str, source: Path | str, mapping: Path | str, tmp: Path, *extra: str) -> Any:
    return run_cli(
        "import",
        source,
        "-m",
        mapping,
        "--database-url",
        url,
        "--website",
        website,
        "--rejects",
        tmp / "rejects.ndjson",
        "--report",
        tmp / "report.json",
        *extra,
    )


# --------------------------------------------------------------------------- recorded cases


@pytest.mark.parametrize("case", pg_cases.stored_cases(), ids=lambda c: c["name"])
def test_recorded_case_stores_what_umami_stored(pg: Cluster, case: dict[str, Any]) -> None:
    from backfill.sinks.postgres import database, rows
    from backfill.umami import ids
    from backfill.umami.detect import detect_client

    default_ua, _ = pg_cases.load_cases()
    url, website = pg.new_umami_database()
    how = rows.Derivation(
        website=website,
        secret=ids.umami_secret(None),
        user_agent=pg_cases.user_agent_of(case, default_ua),
        file_keys=("recorded",),
        detect=detect_client,
        # The recording's GeoIP answer for its one payload ip (the --geoip-db path is tested below).
        geoip=lambda ip: ("GB", "ENG", "East Finchley") if ip == "81.2.69.142" else None,
    )
    block = pg_cases.block_for(case, website)
    with psycopg.connect(url) as conn:
        database.write_tables(conn, rows.derive(block, how))
        database.write_tables(conn, rows.derive(block, how))  # a replayed block adds nothing
        got = pg_cases.read_back(conn, website)
    for table, want in case["stored"].items():
        keys = sorted(want[0]) if want else []
        compared = [k for k in keys if k != "visit_no"]
        assert pg_cases.as_multiset(got[table], compared) == pg_cases.as_multiset(want, compared), table
    assert pg_cases.visit_partition(got["events"]) == pg_cases.visit_partition(case["stored"]["events"])


def test_every_recorded_user_agent_gives_the_stored_browser_os_and_device(pg: Cluster) -> None:
    """All of umami_ua_cases.json that Umami stored, through the sink's own derivation."""
    import polars as pl

    from backfill.sinks.postgres import database, rows
    from backfill.umami import ids
    from backfill.umami.detect import detect_client

    cases = [c for c in json.loads((ROOT / "tests/data/umami_ua_cases.json").read_text())["cases"] if c["stored"]]
    url, website = pg.new_umami_database()
    elements = []
    for i, case in enumerate(cases):
        payload = {
            "website": website,
            "url": "/",
            "id": f"ua-{i}",
            "timestamp": 1709280000,
            "userAgent": case["userAgent"],
        }
        if case["screen"]:
            payload["screen"] = case["screen"]
        elements.append({"type": "event", "payload": payload})
    block = pl.DataFrame(
        {
            "_ts": [1709280000] * len(cases),
            "_file": pl.Series([0] * len(cases), dtype=pl.UInt32),
            "_row": pl.Series(range(1, len(cases) + 1), dtype=pl.UInt64),
            "_visitor": [e["payload"]["id"] for e in elements],
            "_json": [json.dumps(e) for e in elements],
            "_geo": [""] * len(cases),
            "_vkey": pl.Series([None] * len(cases), dtype=pl.UInt64),
            "_seq": pl.Series(range(len(cases)), dtype=pl.UInt64),
        }
    )
    how = rows.Derivation(website, ids.umami_secret(None), "Mozilla/5.0 umami-backfill/0.1", ("ua",), detect_client)
    with psycopg.connect(url) as conn:
        database.write_tables(conn, rows.derive(block, how))
        stored = {
            d: (b, o, dev) for d, b, o, dev in conn.execute("SELECT distinct_id, browser, os, device FROM session")
        }
    wrong = [
        (c["userAgent"], c["screen"], stored[f"ua-{i}"], (c["browser"], c["os"], c["device"]))
        for i, c in enumerate(cases)
        if stored[f"ua-{i}"] != (c["browser"], c["os"], c["device"])
    ]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ, e.g. {wrong[:5]}"


# --------------------------------------------------------------------------- whole imports


IMPORTS = [
    ("sample events (bad rows, revenue, data)", SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml"),
    ("GA4 export", SAMPLES / "ga4/events_20240301.json.gz", "ga4"),
    ("Plausible events", SAMPLES / "plausible_events/events_v2.ndjson.gz", "plausible-events"),
]


EDGE_CSV = """ts,user,url,referrer,title
2024-03-01T08:00:00Z,e1,/landing?utm_source=news&utm_term=%E2%9C,,Caf%C3%A9 100%
2024-03-01T08:05:00Z,e1,https://Shop.Example:8443/a%20b/../c?x=1+2#top,https://www.google.com/search?q=a,
2024-03-01T08:10:00Z,e2,/caf\u00e9/\U0001f600,/internal/page?from=1,Title
2024-03-01T08:11:00Z,e2,https://www.shop.example/,//cdn.example/x,
"""
EDGE_MAPPING = """timestamp: {column: ts}
visitor: {columns: [user]}
fields:
  url: url
  referrer: referrer
  title: title
"""
COMPARED = [
    *[(*entry, "hourly") for entry in IMPORTS],
    ("GA4 export, whole visits", SAMPLES / "ga4/events_20240301.json.gz", "ga4", "exact"),
    ("Plausible events, whole visits", SAMPLES / "plausible_events/events_v2.ndjson.gz", "plausible-events", "exact"),
    ("urls without a hostname, bad escapes", None, None, "hourly"),
]


@pytest.mark.parametrize(("label", "source", "mapping", "visits"), COMPARED, ids=[c[0] for c in COMPARED])
def test_database_import_equals_the_api_import(
    pg: Cluster, tmp_path: Path, label: str, source: Path | None, mapping: str | None, visits: str
) -> None:
    """The same file through /api/batch (fake Umami) and through --database-url: the same rows."""
    if source is None:
        source, mapping = tmp_path / "edge.csv", tmp_path / "edge.yaml"
        source.write_text(EDGE_CSV, encoding="utf-8")
        mapping.write_text(EDGE_MAPPING)
    url, website = pg.new_umami_database()
    (tmp_path / "api").mkdir()
    (tmp_path / "db").mkdir()
    with FakeUmami() as fake:
        site = fake.add_website(website)
        api = run_cli(
            "import",
            source,
            "-m",
            mapping,
            "--host",
            fake.url,
            "--website",
            site,
            "--visits",
            visits,
            "--rejects",
            tmp_path / "api/rejects.ndjson",
            "--report",
            tmp_path / "api/report.json",
        )
        assert api.code in (0, 1), api.stderr
        expected = pg_cases.canonical_from_fake(fake, site)
    db = db_import(url, website, source, mapping, tmp_path / "db", "--visits", visits)
    assert db.code == api.code, db.stderr
    api_report = json.loads((tmp_path / "api/report.json").read_text())
    db_report = json.loads((tmp_path / "db/report.json").read_text())
    assert db_report["ledger"] == api_report["ledger"]
    with psycopg.connect(url) as conn:
        got = pg_cases.canonical_from_database(conn, website)
    assert got["website_event"], "nothing was imported"
    for table in expected:
        assert got[table] == expected[table], f"{label}: {table} differs"


def test_exact_visits_keep_each_source_visit_whole(pg: Cluster, tmp_path: Path) -> None:
    """GA4 sessions crossing hh:00 stay one visit each, and visits never merge across source visits."""
    url, website = pg.new_umami_database()
    result = db_import(url, website, SAMPLES / "ga4/events_20240301.json.gz", "ga4", tmp_path)
    assert result.code in (0, 1), result.stderr
    per_source = rows_of(
        url,
        "SELECT count(DISTINCT e.visit_id) FROM website_event e JOIN session s USING (session_id) "
        "GROUP BY s.distinct_id, date_trunc('day', e.created_at)",
    )
    assert per_source
    spans = rows_of(
        url,
        "SELECT count(*) FROM (SELECT visit_id FROM website_event GROUP BY visit_id "
        "HAVING date_trunc('hour', min(created_at)) <> date_trunc('hour', max(created_at))) v",
    )[0][0]
    assert spans > 0, "no visit crosses an hour: the sample should have some"


def test_a_second_run_of_the_same_import_adds_nothing(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    first = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert first.code == 1, first.stderr  # the sample's bad rows are rejected on purpose
    before = {t: count(url, t) for t in ("session", "website_event", "event_data", "revenue")}
    again = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path, "--restart")
    assert again.code == 1, again.stderr
    assert {t: count(url, t) for t in before} == before
    assert before["website_event"] > 0 and before["revenue"] > 0
    marked = rows_of(url, "SELECT count(*) FROM website_event WHERE event_id::text LIKE '________-____-8b4c-%'")
    assert marked[0][0] == before["website_event"]


def test_the_ledger_adds_up_and_names_the_database(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    result = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 1, result.stderr  # the sample's bad rows are rejected on purpose
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["read"] == ledger["accepted"] + ledger["rejected"] + ledger["skipped"] + ledger["in_doubt"]
    assert ledger["in_doubt"] == 0 and ledger["accepted"] > 0
    rejected_lines = (tmp_path / "rejects.ndjson").read_text().splitlines()
    assert len(rejected_lines) == ledger["rejected"]
    stored = count(url, "website_event") + rows_of(url, "SELECT count(*) FROM session_data")[0][0]
    assert count(url, "website_event") <= ledger["accepted"] <= stored + ledger["accepted"]
    assert f"127.0.0.1:{pg.port}" in result.stderr  # the database it wrote to is named (without credentials)


# --------------------------------------------------------------------------- refusals before any write


def test_unknown_schema_version_is_refused_before_any_write(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) "
            "VALUES ('x', 'y', now(), '20_something_new', 1)"
        )
    result = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 2
    assert "20_something_new" in result.stderr
    assert count(url, "website_event") == 0 and count(url, "session") == 0


def test_a_database_that_is_not_umami_is_refused(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database(schema_sql="CREATE TABLE website (website_id uuid)")
    result = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 2
    assert "_prisma_migrations" in result.stderr


@pytest.mark.parametrize("problem", ["missing", "deleted"])
def test_a_missing_or_deleted_website_is_refused(pg: Cluster, tmp_path: Path, problem: str) -> None:
    url, website = pg.new_umami_database()
    if problem == "missing":
        website = "6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f"
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE website SET deleted_at = now()")
    result = db_import(url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 2
    assert ("does not exist" if problem == "missing" else "was deleted") in result.stderr
    assert count(url, "session") == 0


def test_credentials_are_never_printed_or_stored(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    secret_url = url.replace("postgres@", "postgres:s3cret-pw@")
    result = db_import(secret_url, website, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 1, result.stderr
    state = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson"))
    assert "s3cret-pw" not in result.stderr + result.stdout + state


def test_an_ip_mapping_without_geoip_db_is_refused(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    source = tmp_path / "ips.csv"
    source.write_text("ts,user,ip,path\n2024-03-01T08:00:00Z,u1,81.2.69.142,/a\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "timestamp: {column: ts}\nvisitor: {columns: [user]}\nfields:\n  url: path\n  hostname: {const: example.com}\n"
        "  ip: ip\n"
    )
    result = db_import(url, website, source, mapping, tmp_path)
    assert result.code == 2
    assert "--geoip-db" in result.stderr


def test_geoip_db_locates_payload_ips_as_umami_does(pg: Cluster, tmp_path: Path) -> None:
    mmdb_writer = pytest.importorskip("mmdb_writer")
    from netaddr import IPSet

    database_file = tmp_path / "city.mmdb"
    writer = mmdb_writer.MMDBWriter(ip_version=4, database_type="GeoLite2-City")
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB"},
            "subdivisions": [{"iso_code": "ENG"}],
            "city": {"names": {"en": "East Finchley"}},
        },
    )
    writer.to_db_file(str(database_file))
    url, website = pg.new_umami_database()
    source = tmp_path / "ips.csv"
    source.write_text("ts,user,ip,path\n2024-03-01T08:00:00Z,u1,81.2.69.142,/a\n2024-03-01T08:00:00Z,u2,10.0.0.1,/b\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "timestamp: {column: ts}\nvisitor: {columns: [user]}\nfields:\n  url: path\n  hostname: {const: example.com}\n"
        "  ip: ip\n"
    )
    result = db_import(url, website, source, mapping, tmp_path, "--geoip-db", str(database_file))
    assert result.code == 0, result.stderr
    located = dict(
        (d, (c, r, city)) for d, c, r, city in rows_of(url, "SELECT distinct_id, country, region, city FROM session")
    )
    assert located == {"u1": ("GB", "GB-ENG", "East Finchley"), "u2": (None, None, None)}


# --------------------------------------------------------------------------- kill -9 and resume


def _write_big_source(path: Path, rows: int) -> None:
    rng = random.Random(12)
    start = 1709280000
    lines = ["ts,user,path,event,amount,currency,country"]
    for i in range(rows):
        user = f"u{rng.randrange(2000)}"
        event = "purchase" if i % 7 == 0 else ""
        amount = f"{rng.randrange(100, 9999) / 100}" if event else ""
        currency = "EUR" if event else ""
        country = rng.choice(["DE", "FR", "US", ""])
        lines.append(f"{start + i * 13},{user},/p/{i % 97},{event},{amount},{currency},{country}")
    path.write_text("\n".join(lines) + "\n")


BIG_MAPPING = """
timestamp: {column: ts, format: epoch, unit: s}
visitor: {columns: [user]}
fields:
  url: path
  hostname: {const: example.com}
  name: event
  country: country
  data.revenue: amount
  data.currency: currency
"""


def test_sigkill_three_times_then_resume_stores_every_row_once(pg: Cluster, tmp_path: Path) -> None:
    url, website = pg.new_umami_database()
    source = tmp_path / "big.csv"
    _write_big_source(source, 20_000)
    mapping = tmp_path / "big.yaml"
    mapping.write_text(BIG_MAPPING)
    command = [
        sys.executable,
        "-m",
        "backfill",
        "import",
        str(source),
        "-m",
        str(mapping),
        "--database-url",
        url,
        "--website",
        website,
        "--rejects",
        str(tmp_path / "rejects.ndjson"),
        "--report",
        str(tmp_path / "report.json"),
        "--transaction-rows",
        "500",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UMAMI_")}
    rng = random.Random(7)
    at_kill: list[int] = []
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        target = rng.randrange(1, 15_000)
        while time.monotonic() < deadline and proc.poll() is None:
            if count(url, "website_event") >= target:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            at_kill.append(count(url, "website_event"))
        proc.wait()
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert any(0 < n < 20_000 for n in at_kill), f"no kill landed mid-import: {at_kill}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ledger"]["accepted"] == 20_000 and report["ledger"]["in_doubt"] == 0
    assert count(url, "website_event") == 20_000
    distinct = rows_of(url, "SELECT count(DISTINCT (created_at, url_path, session_id)) FROM website_event")[0][0]
    assert distinct == 20_000
    assert count(url, "revenue") == sum(1 for i in range(20_000) if i % 7 == 0)


def test_an_explicit_flag_wins_over_the_other_destinations_environment(pg: Cluster, tmp_path: Path) -> None:
    """UMAMI_HOST is often exported for verify: --database-url on the command line still writes the database,
    and both flags on the command line are refused."""
    url, website = pg.new_umami_database()
    source, mapping = SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml"
    both = run_cli(
        "import",
        source,
        "-m",
        mapping,
        "--host",
        "http://127.0.0.1:9",
        "--database-url",
        url,
        "--website",
        website,
        "--rejects",
        tmp_path / "r.ndjson",
    )
    assert both.code == 2 and "not both" in both.stderr
    assert count(url, "session") == 0
    result = run_cli(
        "import",
        source,
        "-m",
        mapping,
        "--database-url",
        url,
        "--website",
        website,
        "--rejects",
        tmp_path / "r.ndjson",
        env={"UMAMI_HOST": "http://127.0.0.1:9"},
    )
    assert result.code == 1, result.stderr
    assert count(url, "website_event") > 0
