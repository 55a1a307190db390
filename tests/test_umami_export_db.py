"""The Umami export round trip through the database sink, on a throwaway PostgreSQL with Umami 3.1's tables.

Website A: the Cloud-export sample imported with ``--database-url``. A is then
dumped the way a self-hosted user would (``COPY ... TO STDOUT CSV HEADER`` of each
table, or of website_event joined with session), and the dump is imported into
website B of another database (and into the fake Umami through /api/batch).
B holds the same rows as A, table by table (ids aside: ``tests.pg_cases.canonical``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import pg_cases
from tests.conftest import SAMPLES, run_cli
from tests.fake_umami import FakeUmami
from tests.pg import Cluster, why_no_postgres

pytestmark = pytest.mark.skipif(why_no_postgres() is not None, reason=f"no PostgreSQL: {why_no_postgres()}")

psycopg = pytest.importorskip("psycopg")

ZIP = SAMPLES / "umami_export" / "umami-export.zip"
EXPECTED: dict[str, Any] = json.loads((SAMPLES / "umami_export" / "expected.json").read_text())
SESSION_COLUMNS = "browser, os, device, screen, language, country, region, city, distinct_id"


@pytest.fixture(scope="module")
def pg() -> Any:
    cluster = Cluster.start()
    yield cluster
    cluster.stop()


def db_import(url: str, website: str, source: Path, tmp: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    result = run_cli(
        "import", source, "-m", "umami-export", "--database-url", url, "--website", website,
        "--rejects", tmp / "rejects.ndjson", "--report", tmp / "report.json",
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    return json.loads((tmp / "report.json").read_text())


def dump(url: str, website: str, folder: Path, *, joined: bool = False) -> Path:
    """The site's tables as CSV files, as ``\\copy (...) to 'x.csv' csv header`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    queries = {
        "event_data": "SELECT * FROM event_data WHERE website_id = '{w}'",
        "session_data": "SELECT * FROM session_data WHERE website_id = '{w}'",
    }
    if joined:
        queries["website_event"] = (
            f"SELECT e.*, {', '.join('s.' + c for c in SESSION_COLUMNS.split(', '))} FROM website_event e "
            "JOIN session s USING (session_id) WHERE e.website_id = '{w}'"
        )
    else:
        queries["website_event"] = "SELECT * FROM website_event WHERE website_id = '{w}'"
        queries["session"] = "SELECT * FROM session WHERE website_id = '{w}'"
    with psycopg.connect(url) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for table, sql in queries.items():
            with (
                (folder / f"{table}.csv").open("wb") as out,
                conn.cursor().copy(f"COPY ({sql.format(w=website)}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy,
            ):
                for block in copy:
                    out.write(block)
    return folder / "website_event.csv"


def canonical(url: str, website: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return pg_cases.canonical_from_database(conn, website)


@pytest.mark.parametrize("joined", [False, True], ids=["tables", "joined"])
def test_database_round_trip_a_to_b(pg: Cluster, tmp_path: Path, joined: bool) -> None:
    url_a, site_a = pg.new_umami_database()
    report_a = db_import(url_a, site_a, ZIP, tmp_path / "a")
    assert report_a["ledger"]["rejected"] == 0
    source = dump(url_a, site_a, tmp_path / "dump", joined=joined)
    url_b, site_b = pg.new_umami_database()
    report_b = db_import(url_b, site_b, source, tmp_path / "b")
    a, b = canonical(url_a, site_a), canonical(url_b, site_b)
    assert len(a["website_event"]) == EXPECTED["website_event_rows"] - EXPECTED["skipped_link_pixel_performance"]
    assert len(a["session_data"]) == EXPECTED["session_data_rows"]
    for table in a:
        assert a[table], table
        assert b[table] == a[table], table
    assert report_b["ledger"]["read"] == report_b["ledger"]["accepted"]


def test_the_dump_through_the_api_stores_what_the_database_holds(pg: Cluster, tmp_path: Path) -> None:
    """The PostgreSQL dump of A, imported through /api/batch into the fake Umami: the same rows as A."""
    url_a, site_a = pg.new_umami_database()
    db_import(url_a, site_a, ZIP, tmp_path / "a")
    source = dump(url_a, site_a, tmp_path / "dump")
    with FakeUmami() as fake:
        site = fake.add_website()
        result = run_cli(
            "import", source, "-m", "umami-export", "--host", fake.url, "--website", site,
            "--rejects", tmp_path / "rejects.ndjson", "--report", tmp_path / "report.json",
        )  # fmt: skip
        assert result.code == 0, result.stdout + result.stderr
        via_api = pg_cases.canonical_from_fake(fake, site)
    a = canonical(url_a, site_a)
    for table in a:
        assert via_api[table] == a[table], table
