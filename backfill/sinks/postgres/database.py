"""Umami's PostgreSQL database: what we check before writing, and how a block is written.

Safety rules (README, "Writing into Umami's database"): we read
``_prisma_migrations`` and the columns of the five tables we write and refuse a
schema we were not built for; we refuse a website that does not exist or was
deleted; we never create, alter or drop anything in Umami's schema (temporary
tables live in the session's own ``pg_temp`` schema); and we take no lock but
the ``ROW EXCLUSIVE`` every ``INSERT`` takes, which never blocks Umami's own
inserts.

A block is written in one transaction: ``COPY`` into temporary tables, then
``INSERT ... SELECT ... ON CONFLICT (primary key) DO NOTHING``. Our ids are
deterministic (see ids.py), so replaying a block that was committed before a
crash, or importing the same rows again, adds nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from ...errors import ConfigError
from .rows import (
    EVENT_COLUMNS,
    EVENT_DATA_COLUMNS,
    REVENUE_COLUMNS,
    SESSION_COLUMNS,
    SESSION_DATA_COLUMNS,
    Tables,
)

#: Umami 3.0.0 .. 3.1.x: the migrations that must be there (01..14 made every column we
#: write) and the later ones we know. Any other name is a schema we were not built for.
REQUIRED_MIGRATIONS = (
    "01_init",
    "02_report_schema_session_data",
    "03_metric_performance_index",
    "04_team_redesign",
    "05_add_visit_id",
    "06_session_data",
    "07_add_tag",
    "08_add_utm_clid",
    "09_update_hostname_region",
    "10_add_distinct_id",
    "11_add_segment",
    "12_update_report_parameter",
    "13_add_revenue",
    "14_add_link_and_pixel",
)
KNOWN_MIGRATIONS = (
    *REQUIRED_MIGRATIONS,
    "15_add_share",
    "16_boards",
    "17_remove_duplicate_key",
    "18_add_performance",
    "19_add_session_replay",
)
#: (table, primary key, columns we write).
TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("session", "session_id", SESSION_COLUMNS),
    ("website_event", "event_id", EVENT_COLUMNS),
    ("event_data", "event_data_id", EVENT_DATA_COLUMNS),
    ("revenue", "revenue_id", REVENUE_COLUMNS),
    ("session_data", "session_data_id", SESSION_DATA_COLUMNS),
)
#: Column types and lengths our checks assume (Umami 3.1's schema); a database whose
#: columns differ would refuse rows after our validation passed them.
EXPECTED_TYPES: dict[tuple[str, str], tuple[str, int | None]] = {
    ("session", "browser"): ("character varying", 20),
    ("session", "os"): ("character varying", 20),
    ("session", "device"): ("character varying", 20),
    ("session", "screen"): ("character varying", 11),
    ("session", "language"): ("character varying", 35),
    ("session", "country"): ("character", 2),
    ("session", "region"): ("character varying", 20),
    ("session", "city"): ("character varying", 50),
    ("session", "distinct_id"): ("character varying", 50),
    ("website_event", "url_path"): ("character varying", 500),
    ("website_event", "hostname"): ("character varying", 100),
    ("website_event", "event_name"): ("character varying", 50),
    ("website_event", "utm_source"): ("character varying", 255),
    ("event_data", "string_value"): ("character varying", 500),
    ("revenue", "currency"): ("character varying", 10),
}


@dataclass(frozen=True)
class SchemaInfo:
    migrations: tuple[str, ...]

    @property
    def describe(self) -> str:
        latest = self.migrations[-1] if self.migrations else "none"
        return f"Umami schema with {len(self.migrations)} migrations (latest {latest})"


def connect(url: str) -> Any:
    """A psycopg connection; its errors name the host, never the password."""
    import psycopg

    try:
        return psycopg.connect(url, application_name="umami-backfill", connect_timeout=15)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to the database ({first_line(exc)})") from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"--database-url is not a valid PostgreSQL URL ({first_line(exc)})") from exc


def redacted(url: str) -> str:
    """postgresql://host:port/database of a URL, for messages and the checkpoint; never the user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path}"


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_schema(conn: Any) -> SchemaInfo:
    """Refuse (ConfigError, exit 2) any schema but Umami 3.0-3.1's, naming what was found."""
    found = conn.execute("SELECT to_regclass('_prisma_migrations') IS NOT NULL").fetchone()[0]
    if not found:
        raise ConfigError(
            "this database has no _prisma_migrations table: it is not an Umami (PostgreSQL) database. "
            "Check --database-url (the database Umami's DATABASE_URL names)"
        )
    rows = conn.execute(
        "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL "
        "FROM _prisma_migrations ORDER BY migration_name"
    ).fetchall()
    applied = tuple(name for name, finished, rolled_back in rows if finished and not rolled_back)
    unfinished = [name for name, finished, rolled_back in rows if not finished and not rolled_back]
    if unfinished:
        raise ConfigError(
            f"Umami's migration {unfinished[0]} has not finished: the schema is mid-upgrade. "
            "Let Umami finish starting up (or fix the failed migration), then run again"
        )
    unknown = [name for name in applied if name not in KNOWN_MIGRATIONS]
    if unknown:
        raise ConfigError(
            f"this Umami database has migrations this version of umami-backfill was not built for: "
            f"{', '.join(unknown)} (known: up to {KNOWN_MIGRATIONS[-1]}, Umami 3.1). Writing rows into a schema "
            "we do not know could store them wrongly: use the HTTP import (--host), or a newer umami-backfill"
        )
    missing = [name for name in REQUIRED_MIGRATIONS if name not in applied]
    if missing:
        raise ConfigError(
            f"this Umami database lacks migrations {', '.join(missing)}: it is older than Umami 3.0. "
            "Upgrade Umami first (it migrates on start), or use the HTTP import (--host)"
        )
    _check_columns(conn)
    return SchemaInfo(applied)


def _check_columns(conn: Any) -> None:
    rows = conn.execute(
        "SELECT table_name, column_name, data_type, character_maximum_length FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        ([table for table, _, _ in TABLES],),
    ).fetchall()
    present = {(table, column): (kind, length) for table, column, kind, length in rows}
    for table, _, columns in TABLES:
        lacking = [c for c in columns if (table, c) not in present]
        if lacking:
            raise ConfigError(
                f"table {table} lacks column(s) {', '.join(lacking)}: not the Umami 3.1 schema. Nothing was written"
            )
    for key, expected in EXPECTED_TYPES.items():
        if present[key] != expected:
            raise ConfigError(
                f"column {key[0]}.{key[1]} is {present[key][0]}({present[key][1]}), Umami 3.1 has "
                f"{expected[0]}({expected[1]}): not the schema our checks assume. Nothing was written"
            )


def check_website(conn: Any, website: str) -> str:
    """The website's name; ConfigError when it does not exist or was deleted."""
    row = conn.execute("SELECT name, deleted_at FROM website WHERE website_id = %s", (website,)).fetchone()
    if row is None:
        raise ConfigError(
            f"website {website} does not exist in this database: check --website (Umami shows the id under "
            "Settings > Websites > Edit) and --database-url"
        )
    name, deleted_at = row
    if deleted_at is not None:
        raise ConfigError(
            f"website {website} ({name}) was deleted on {deleted_at:%Y-%m-%d}: rows written to it stay hidden"
        )
    conn.rollback()
    return str(name)


# --------------------------------------------------------------------------- writing


#: Tables whose rows are new on a first write: COPY straight into them (no staging copy),
#: and only when a key already exists (a replayed block) go through ON CONFLICT instead.
_FAST = ("website_event", "event_data", "revenue")


def write_tables(conn: Any, tables: Tables) -> dict[str, int]:
    """Write one block's rows in one transaction; a replayed block adds nothing.

    Sessions may exist already (an earlier block, live traffic) and session data is an
    update-or-insert, so both always go through a staging table. Events, event data and
    revenue rows carry ids of ours: they are copied straight into their tables inside a
    savepoint, and only a key that is already there (a block replayed after a crash,
    or an import run again) sends them through the staging path.
    """
    import psycopg

    added: dict[str, int] = {}
    with conn.transaction():
        for table, key, columns in TABLES:
            frame: pl.DataFrame = getattr(tables, table)
            if table == "session" and frame.height:
                frame = _new_sessions(conn, frame)
            if frame.height == 0:
                continue
            if table in _FAST or table == "session":
                try:
                    with conn.transaction():  # a savepoint
                        _copy(conn, f'"{table}"', columns, frame)
                    added[table] = frame.height
                    continue
                except psycopg.errors.UniqueViolation:
                    pass
            staging = f"backfill_{table}"
            conn.execute(f'CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE "{table}") ON COMMIT DELETE ROWS')
            _copy(conn, staging, columns, frame)
            names = ", ".join(f'"{c}"' for c in columns)
            if table == "session_data":
                added[table] = _upsert_session_data(conn, staging, columns)
            else:
                cursor = conn.execute(
                    f'INSERT INTO "{table}" ({names}) SELECT {names} FROM {staging} ON CONFLICT ("{key}") DO NOTHING'
                )
                added[table] = max(cursor.rowcount, 0)
    return added


def _new_sessions(conn: Any, sessions: pl.DataFrame) -> pl.DataFrame:
    """The block's sessions that are not in the table yet (a primary key lookup each):
    those are copied straight in; the first row Umami saw of the others stays as it is."""
    found = conn.execute(
        "SELECT session_id::text FROM session WHERE session_id = ANY(%s::uuid[])", (sessions["session_id"].to_list(),)
    ).fetchall()
    if not found:
        return sessions
    return sessions.filter(~pl.col("session_id").is_in([row[0] for row in found]))


def _upsert_session_data(conn: Any, staging: str, columns: Iterable[str]) -> int:
    """Umami updates the (session, key) row in place, else inserts it: the last value wins.
    Returns the rows inserted (updates are not new rows)."""
    settable = [c for c in columns if c not in ("session_id", "data_key", "session_data_id")]
    assignments = ", ".join(f'"{c}" = s."{c}"' for c in settable)
    names = ", ".join(f'"{c}"' for c in columns)
    conn.execute(
        f"UPDATE session_data d SET {assignments} FROM {staging} s "
        "WHERE d.session_id = s.session_id AND d.data_key = s.data_key"
    )
    cursor = conn.execute(
        f"INSERT INTO session_data ({names}) SELECT {names} FROM {staging} s WHERE NOT EXISTS "
        "(SELECT 1 FROM session_data d WHERE d.session_id = s.session_id AND d.data_key = s.data_key) "
        "ON CONFLICT (session_data_id) DO NOTHING"
    )
    return max(cursor.rowcount, 0)


def _copy(conn: Any, table: str, columns: tuple[str, ...], frame: pl.DataFrame) -> None:
    """COPY ... FROM STDIN in CSV: polars writes null as an empty field and "" as ``""``."""
    buffer = io.BytesIO()
    frame.select(columns).write_csv(
        buffer, include_header=False, datetime_format="%Y-%m-%d %H:%M:%S%.f+00:00", null_value=""
    )
    names = ", ".join(f'"{c}"' for c in columns)
    with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())
