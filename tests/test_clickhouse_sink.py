"""The ClickHouse sink against the real engine (chdb behind our HTTP front) with Umami 3.1's tables.

- whole imports through the real CLI store what the fake Umami records Umami on
  ClickHouse would insert for the same file through /api/batch, every table
  (the views' hourly stats and revenue included) equal but for ids;
- a second run of the same import adds nothing; SIGKILL three times during an
  import, then the same command: every row once, derived rows included;
- a schema or a website we must refuse is refused before any write.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests import ch_cases, chdb_server
from tests.conftest import MAPPINGS, ROOT, SAMPLES, run_cli
from tests.fake_umami import FakeUmami

WEBSITE = "6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f"


@pytest.fixture(scope="module")
def server() -> Any:
    front = chdb_server.ChdbServer().start()
    yield front
    front.stop()


def ch_import(server: Any, database: str, source: Path | str, mapping: Path | str, tmp: Path, *extra: str) -> Any:
    return run_cli(
        "import",
        source,
        "-m",
        mapping,
        "--clickhouse-url",
        server.url(database),
        "--skip-website-check",
        "--website",
        WEBSITE,
        "--rejects",
        tmp / "rejects.ndjson",
        "--report",
        tmp / "report.json",
        *extra,
    )


COMPARED = [
    ("events CSV: revenue, event data, bad rows", SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", "hourly"),
    ("GA4 export, whole visits", SAMPLES / "ga4/events_20240301.json.gz", "ga4", "exact"),
]


def _compare_with_api(
    server: Any, tmp_path: Path, label: str, source: Path, mapping: Path | str, visits: str
) -> tuple[str, Any, dict[str, Any]]:
    """The same file through the fake Umami on ClickHouse and through the sink: every
    table equal but for ids, the same ledger, each reject once. The sink's database,
    the API import's result and the sink's report."""
    (tmp_path / "api").mkdir()
    (tmp_path / "ch").mkdir()
    with FakeUmami(store="clickhouse") as fake:  # an Umami on ClickHouse: no PostgreSQL column limits
        site = fake.add_website(WEBSITE)
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
            "--store",  # what Umami on ClickHouse refuses, as the sink checks
            "clickhouse",
            "--rejects",
            tmp_path / "api/rejects.ndjson",
            "--report",
            tmp_path / "api/report.json",
        )
        assert api.code in (0, 1), api.stderr
        through_api = ch_cases.new_database()
        ch_cases.insert_api_record(through_api, fake.clickhouse_inserts(site))
    direct = ch_cases.new_database()
    result = ch_import(server, direct, source, mapping, tmp_path / "ch", "--visits", visits, "--insert-rows", "300")
    assert result.code == api.code, result.stderr
    api_report = json.loads((tmp_path / "api/report.json").read_text())
    ch_report = json.loads((tmp_path / "ch/report.json").read_text())
    assert ch_report["ledger"] == api_report["ledger"]
    rejects_file = tmp_path / "ch/rejects.ndjson"
    rejects = rejects_file.read_text().splitlines() if rejects_file.exists() else []
    assert len(rejects) == ch_report["ledger"]["rejected"]
    assert len({(json.loads(r)["file"], json.loads(r)["row"]) for r in rejects}) == len(rejects)
    expected = ch_cases.canonical(through_api, WEBSITE)
    got = ch_cases.canonical(direct, WEBSITE)
    assert got["website_event"], "nothing was imported"
    for table in expected:
        assert got[table] == expected[table], f"{label}: {table} differs"
    return direct, api, ch_report


@pytest.mark.parametrize(("label", "source", "mapping", "visits"), COMPARED, ids=[c[0] for c in COMPARED])
def test_clickhouse_import_equals_what_umami_on_clickhouse_stores_through_the_api(
    server: Any, tmp_path: Path, label: str, source: Path, mapping: Path | str, visits: str
) -> None:
    direct, api, ch_report = _compare_with_api(server, tmp_path, label, source, mapping, visits)
    if visits == "hourly":  # written while prepared; the same import again (another state, --restart) adds nothing
        assert any("writing began while the input was prepared" in note for note in ch_report["notes"])
        tables = ("website_event", "event_data", "session_data", "website_revenue", "website_event_stats_hourly")
        before = {t: ch_cases.count(direct, t) for t in tables}
        again = ch_import(server, direct, source, mapping, tmp_path / "ch", "--visits", visits, "--restart")
        assert again.code == api.code, again.stderr
        assert {t: ch_cases.count(direct, t) for t in tables} == before
        assert before["website_revenue"] > 0
        assert "new rows in the database this run: none" in again.stdout
    else:  # exact visits: the crossing visits are known once every row is read
        assert not any("while prepar" in note for note in ch_report["notes"])


def test_files_out_of_time_order_are_written_in_time_order(server: Any, tmp_path: Path) -> None:
    """April's rows in the first file, March's in the second: writing while preparing
    starts on April, is dropped when March comes, and the import stores what the API
    path (which sends in time order) does; nothing written early is there twice."""
    folder = tmp_path / "export"
    folder.mkdir()
    header, *lines = (SAMPLES / "events.csv").read_text().splitlines()
    march = [line for line in lines if line.startswith("2024-03")]
    april = [line for line in lines if not line.startswith("2024-03")]
    assert march and april
    (folder / "1-april.csv").write_text("\n".join([header, *april]) + "\n")
    (folder / "2-march.csv").write_text("\n".join([header, *march]) + "\n")
    direct, _, ch_report = _compare_with_api(
        server, tmp_path, "two files", folder, MAPPINGS / "sample_events.yaml", "hourly"
    )
    assert any("not in time order" in note for note in ch_report["notes"])
    distinct = chdb_server.rows(f"SELECT count() AS n, uniqExact(event_id) AS m FROM {direct}.website_event")[0]
    assert distinct["n"] == distinct["m"] == ch_report["ledger"]["accepted"]


# --------------------------------------------------------------------------- kill -9 and resume


def _write_big_source(path: Path, rows: int, identify: bool) -> dict[str, str]:
    """Events with revenue in two keys of one event (and identifies), spread over two
    months; each identified user's last plan."""
    rng = random.Random(12)
    plans: dict[str, str] = {}
    start = 1709200000
    lines = ["ts,user,path,event,amount,currency,plan"]
    for i in range(rows):
        user = f"u{rng.randrange(800)}"
        event = "purchase" if i % 7 == 0 else ("identify" if identify and i % 11 == 0 else "")
        amount = f"{rng.randrange(100, 9999) / 100}" if event == "purchase" else ""
        currency = "EUR" if event == "purchase" else ""
        plan = rng.choice(["free", "pro", "team"]) if event == "identify" else ""
        if plan:
            plans[user] = plan
        lines.append(f"{start + i * 397},{user},/p/{i % 97},{event},{amount},{currency},{plan}")
    path.write_text("\n".join(lines) + "\n")
    return plans


BIG_MAPPING = """
timestamp: {column: ts, format: epoch, unit: s}
visitor: {columns: [user]}
type: {column: event, map: {identify: identify, purchase: event}, default: event}
fields:
  url: path
  hostname: {const: example.com}
  name: {column: event, map: {identify: null}}
  data.revenue: amount
  data.currency: currency
  data.plan: plan
"""


@pytest.mark.parametrize(
    "identify", [True, False], ids=["identify rows: written in order", "no identify: written while prepared"]
)
def test_sigkill_three_times_then_resume_stores_every_row_once(server: Any, tmp_path: Path, identify: bool) -> None:
    """Two inserts in flight (the default), so a kill can land with two blocks half
    written; without identify rows, writing starts while the input is prepared (small
    chunks make it take a while), so kills land there too."""
    database = ch_cases.new_database()
    rows = 4_000
    source = tmp_path / "big.csv"
    plans = _write_big_source(source, rows, identify)
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
        "--clickhouse-url",
        server.url(database),
        "--skip-website-check",
        "--website",
        WEBSITE,
        "--rejects",
        str(tmp_path / "rejects.ndjson"),
        "--report",
        str(tmp_path / "report.json"),
        "--insert-rows",
        "200",
        "--chunk-rows",
        "250",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UMAMI_")}
    rng = random.Random(7)
    at_kill: list[int] = []
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        target = rng.randrange(1, rows * 3 // 4)
        while time.monotonic() < deadline and proc.poll() is None:
            if ch_cases.count(database, "website_event") >= target:
                time.sleep(rng.random() * 0.05)  # anywhere: between two tables' inserts, inside one
                break
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            at_kill.append(ch_cases.count(database, "website_event"))
        proc.wait()
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert any(0 < n < rows for n in at_kill), f"no kill landed mid-import: {at_kill}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ledger"]["accepted"] == rows and report["ledger"]["in_doubt"] == 0
    events = sum(1 for i in range(rows) if not (identify and i % 7 and i % 11 == 0))
    purchases = sum(1 for i in range(rows) if i % 7 == 0)
    assert ch_cases.count(database, "website_event") == events
    distinct = chdb_server.rows(
        f"SELECT uniqExact(event_id) AS n, uniqExact(created_at, url_path, session_id) AS m "
        f"FROM {database}.website_event"
    )[0]
    assert distinct == {"n": events, "m": events}
    assert ch_cases.count(database, "event_data") == 2 * purchases
    assert ch_cases.count(database, "website_revenue") == purchases
    hourly = chdb_server.rows(f"SELECT sum(views) AS views FROM {database}.website_event_stats_hourly")[0]
    assert int(hourly["views"]) == events - purchases
    users = len(plans)
    assert ch_cases.count(database, "session_data", final=True) == users
    kept = chdb_server.rows(f"SELECT distinct_id AS user, string_value AS plan FROM {database}.session_data FINAL")
    # Umami reads session data FINAL: the last insert wins, so blocks written at once must
    # still insert it in order (each user's last identify is the plan that stays)
    assert {row["user"]: row["plan"] for row in kept} == plans
    once = chdb_server.rows(
        "SELECT count() AS n, uniqExact(session_id, data_key, created_at, string_value) AS m "
        f"FROM {database}.session_data"
    )[0]
    assert once["n"] == once["m"] >= users  # no row twice (a ReplacingMergeTree would hide it only after a merge)


def test_session_data_is_inserted_in_order_when_a_later_block_overtakes(server: Any, tmp_path: Path) -> None:
    """Umami reads session data FINAL (the last insert wins). The first block's event
    insert stalls on the server, so the second block, written at the same time, ends
    first; its identify (later, plan "pro") must still be inserted after the first
    block's (plan "free")."""
    database = ch_cases.new_database()
    source = tmp_path / "plans.csv"
    rows = ["ts,user,path,event,amount,currency,plan"]
    rows += ["1709200000,u1,/a,,,,", "1709200010,u1,,identify,,,free"]  # block 1 (2 rows)
    rows += ["1709200020,u1,/b,,,,", "1709200030,u1,,identify,,,pro"]  # block 2 (4 rows)
    rows += [f"{1709200040 + 10 * i},u{i},/c,,,," for i in range(2, 40)]
    source.write_text("\n".join(rows) + "\n")
    mapping = tmp_path / "plans.yaml"
    mapping.write_text(BIG_MAPPING)
    chdb_server.STALL_NEXT_INSERT["website_event"] = 1.5
    try:
        result = ch_import(server, database, source, mapping, tmp_path, "--insert-rows", "16")
    finally:
        chdb_server.STALL_NEXT_INSERT.clear()
    assert result.code == 0, result.stderr
    kept = chdb_server.rows(f"SELECT distinct_id AS user, string_value AS plan FROM {database}.session_data FINAL")
    assert kept == [{"user": "u1", "plan": "pro"}]


def test_a_changed_mapping_is_refused_after_a_run_killed_while_writing_early(server: Any, tmp_path: Path) -> None:
    """A run killed while it wrote during prepare leaves the import's checkpoint at
    "preparing" (nothing counted yet) and its early folder behind: rows may be stored,
    so another mapping is refused as another import, not prepared again over them."""
    database = ch_cases.new_database()
    mapping = tmp_path / "m.yaml"
    mapping.write_text((MAPPINGS / "sample_events.yaml").read_text())
    state = tmp_path / "state"
    first = ch_import(server, database, SAMPLES / "events.csv", mapping, tmp_path, "--state", state)
    assert first.code == 1, first.stderr  # rows rejected
    saved = json.loads((state / "checkpoint.json").read_text())
    zero = {"read": 0, "accepted": 0, "in_doubt": 0}
    saved.update(phase="preparing", lane_acked=[-1] * len(saved["lane_acked"]), send_ledger=zero)
    (state / "checkpoint.json").write_text(json.dumps(saved))  # as a kill during prepare leaves it
    mapping.write_text(mapping.read_text() + "\n# edited\n")
    (state / "early").mkdir()
    refused = ch_import(server, database, SAMPLES / "events.csv", mapping, tmp_path, "--state", state)
    assert refused.code == 2 and "belongs to a different import" in refused.stderr, refused.stderr
    (state / "early").rmdir()  # no early run began: nothing can be stored, so it is prepared again
    again = ch_import(server, database, SAMPLES / "events.csv", mapping, tmp_path, "--state", state)
    assert "preparing it again with the new settings" in again.stdout + again.stderr


# --------------------------------------------------------------------------- refused before any write


def test_a_different_schema_is_refused_naming_the_difference(server: Any, tmp_path: Path) -> None:
    from backfill.errors import ConfigError
    from backfill.sinks.clickhouse.client import ClickHouse, Endpoint
    from backfill.sinks.clickhouse.database import check_schema

    database = ch_cases.new_database()
    chdb_server.run(f"ALTER TABLE {database}.event_data MODIFY COLUMN number_value Nullable(Decimal(19, 4))", "CSV")
    result = ch_import(server, database, SAMPLES / "events.csv", MAPPINGS / "sample_events.yaml", tmp_path)
    assert result.code == 2
    assert "event_data.number_value is Nullable(Decimal(19, 4)), Umami 3.1 has Nullable(Decimal(22, 4))" in (
        result.stderr
    )
    assert ch_cases.count(database, "website_event") == 0
    changes = {
        "no materialized view website_revenue_mv": "DROP VIEW {db}.website_revenue_mv",
        "has no table website_event": "DROP TABLE {db}.website_event",
        "session_data is a MergeTree, Umami 3.1's is a ReplacingMergeTree": (
            "CREATE OR REPLACE TABLE {db}.session_data AS {db}.event_data ENGINE = MergeTree ORDER BY tuple()"
        ),
        "website_event has column(s) replay_id that Umami 3.1 does not have": (
            "ALTER TABLE {db}.website_event ADD COLUMN replay_id Nullable(UUID)"
        ),
    }
    for message, change in changes.items():
        name = ch_cases.new_database()
        chdb_server.run(change.format(db=name), "CSV")
        with ClickHouse(Endpoint.parse(server.url(name))) as ch, pytest.raises(ConfigError, match=re.escape(message)):
            check_schema(ch)
    with ClickHouse(Endpoint.parse(server.url(ch_cases.new_database()))) as ch:
        assert "Umami 3.1's tables" in check_schema(ch).describe


def test_the_website_must_be_checked_and_credentials_are_never_printed(server: Any, tmp_path: Path) -> None:
    database = ch_cases.new_database()
    url = server.url(database, user="default", password="s3cret-pw")
    unchecked = run_cli(
        "import",
        SAMPLES / "events.csv",
        "-m",
        MAPPINGS / "sample_events.yaml",
        "--clickhouse-url",
        url,
        "--website",
        WEBSITE,
        "--rejects",
        tmp_path / "r.ndjson",
    )
    assert unchecked.code == 2 and "--database-url" in unchecked.stderr and "--skip-website-check" in unchecked.stderr
    both = run_cli(
        "import",
        SAMPLES / "events.csv",
        "-m",
        MAPPINGS / "sample_events.yaml",
        "--clickhouse-url",
        url,
        "--host",
        "http://127.0.0.1:9",
        "--website",
        WEBSITE,
        "--rejects",
        tmp_path / "r.ndjson",
    )
    assert both.code == 2 and "not both" in both.stderr
    result = run_cli(
        "import",
        SAMPLES / "events.csv",
        "-m",
        MAPPINGS / "sample_events.yaml",
        "--skip-website-check",
        "--website",
        WEBSITE,
        "--rejects",
        tmp_path / "r.ndjson",
        "--report",
        tmp_path / "report.json",
        env={"UMAMI_CLICKHOUSE_URL": url, "UMAMI_HOST": "http://127.0.0.1:9"},
    )
    assert result.code == 1, result.stderr
    assert ch_cases.count(database, "website_event") > 0
    written = [result.stdout, result.stderr, (tmp_path / "report.json").read_text()]
    written += [p.read_text() for p in (tmp_path / ".backfill-state").rglob("*.json")]
    assert not any("s3cret-pw" in text for text in written)
    assert f"127.0.0.1:{server.port}/{database}" in result.stderr


def test_on_replicated_tables_a_retried_insert_is_dropped_by_the_engine(server: Any) -> None:
    """On a cluster the inserts carry a deduplication token derived from their rows; one node
    honours tokens where a MergeTree keeps a deduplication window, which stands in for replication."""
    import polars as pl

    from backfill.sinks.clickhouse.client import ClickHouse, Endpoint
    from backfill.sinks.clickhouse.database import SchemaInfo, _insert

    database = ch_cases.new_database()
    window = "MODIFY SETTING non_replicated_deduplication_window = 100"
    for table in ("event_data", "website_revenue"):  # on a cluster both are Replicated
        chdb_server.run(f"ALTER TABLE {database}.{table} {window}", "CSV")
    replicated = SchemaInfo(database, "26", {"event_data": "ReplicatedMergeTree"})
    settings = replicated.insert_settings()
    assert settings["insert_deduplicate"] == 1 and settings["async_insert"] == 0
    rows = pl.DataFrame(
        {
            "website_id": [WEBSITE] * 2,
            "session_id": [WEBSITE] * 2,
            "event_id": ["0190f1a2-0000-8b4c-8000-000000000001"] * 2,
            "data_key": ["revenue", "currency"],
            "string_value": ["12.5000", "EUR"],
            "data_type": pl.Series([2, 1], dtype=pl.UInt32),
            "created_at": pl.Series([1709280000] * 2).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
        }
    )
    with ClickHouse(Endpoint.parse(server.url(database))) as ch:
        _insert(ch, "event_data", rows, settings, "event_id")
        _insert(ch, "event_data", rows, settings, "event_id")  # a retry after a lost answer
    assert ch_cases.count(database, "event_data") == 2
    assert ch_cases.count(database, "website_revenue") == 1


# --------------------------------------------------------------------------- what each store refuses

LONG_VALUES_MAPPING = """\
version: 1
timestamp:
  column: ts
  format: iso8601
visitor:
  columns: [visitor]
type: event
fields:
  url: url
  os: os
  country: country
  city: city
  data.note: note
"""


def test_values_only_postgresql_refuses_are_stored_whole_on_clickhouse(server: Any, tmp_path: Path) -> None:
    """PostgreSQL's columns cut off a 21-character OS, a 256-character utm value, a 51-character
    city and a 501-character event data text; Umami on ClickHouse stores them whole."""
    long_os, utm, city, note = "Windows Server 2025 R2", "u" * 256, "C" * 51, "n" * 501
    source = tmp_path / "long.csv"
    source.write_text(
        "ts,visitor,url,os,country,city,note\n"
        f"2024-05-01T10:00:00Z,v1,https://example.com/a?utm_source={utm},{long_os},DE,{city},{note}\n"
        "2024-05-01T10:05:00Z,v2,https://example.com/b,Linux,DE,Berlin,short\n"
    )
    mapping = tmp_path / "long.yaml"
    mapping.write_text(LONG_VALUES_MAPPING)
    dry = run_cli("validate", source, "-m", mapping, "--rejects", tmp_path / "pg-rejects.ndjson")
    assert dry.code == 1 and "rejected" in dry.stdout  # PostgreSQL's limits: the long row is refused
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "pg-rejects.ndjson").read_text().splitlines()]
    assert len(reasons) == 1 and "20 characters" in reasons[0]
    dry_ch = run_cli("validate", source, "-m", mapping, "--store", "clickhouse", "--rejects", tmp_path / "r.ndjson")
    assert dry_ch.code == 0, dry_ch.stdout + dry_ch.stderr
    database = ch_cases.new_database()
    result = ch_import(server, database, source, mapping, tmp_path)
    assert result.code == 0, result.stdout + result.stderr
    stored = chdb_server.rows(
        f"SELECT os, city, utm_source, url_path FROM {database}.website_event WHERE url_path = '/a'"
    )
    assert stored == [{"os": long_os, "city": city, "utm_source": utm, "url_path": "/a"}]
    data = chdb_server.rows(f"SELECT string_value FROM {database}.event_data WHERE data_key = 'note'")
    assert sorted(len(r["string_value"]) for r in data) == [5, 501]
    contradiction = ch_import(server, database, source, mapping, tmp_path, "--store", "postgres")
    assert contradiction.code == 2 and "--store postgres contradicts --clickhouse-url" in contradiction.stderr
