"""The database sink: prepared rows straight into Umami's PostgreSQL tables.

Everything before this stage is the same as for the HTTP sink (readers,
mapping, validation, rejects, ordering); only the last step changes. Each
block of the prepared stream (in ``_seq`` order) becomes the rows Umami would
store for it (:mod:`.rows`), written in one transaction (:mod:`.database`);
the checkpoint records the last committed ``_seq`` after the commit. A crash
between commit and checkpoint replays that block, which adds nothing (every id
is deterministic), so this path has no "in doubt" rows at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from ...errors import ConfigError, SendError
from ...ordering import emit
from ...schema import COL_FILE, COL_ROW
from ...umami.stored import geoip_lookup
from .. import Delivery
from ..blocks import NO_SECRET_NOTE, BlockRun, DatabaseSettings, derivation_for
from ..outcome import SendOutcome
from . import database
from .rows import Tables, derive

#: Rows per transaction: large enough that commits and per-block work cost little, small
#: enough that a replayed transaction is quick. Inserts take no lock that blocks Umami's own.
DEFAULT_TRANSACTION_ROWS = 20_000


@dataclass(frozen=True)
class PostgresSettings(DatabaseSettings):
    """Where to write and how to derive what Umami would (``--database-url`` and friends)."""

    transaction_rows: int = DEFAULT_TRANSACTION_ROWS

    def __post_init__(self) -> None:
        if self.transaction_rows < 1:
            raise ConfigError("--transaction-rows must be at least 1")
        super().__post_init__()
        scheme = urlsplit(self.url).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                f"--database-url must be a postgresql:// URL (Umami's DATABASE_URL), not a {scheme or 'plain'} one"
            )

    @property
    def redacted_url(self) -> str:
        """host:port/database, for messages and the checkpoint; never the user or password."""
        return database.redacted(self.url)


@dataclass
class PostgresSink:
    """Writes prepared blocks into Umami's tables; one transaction per block."""

    settings: PostgresSettings
    website_name: str | None = None
    schema: database.SchemaInfo | None = None
    _lookup: Any = field(default=None, repr=False)

    kind = "postgres"

    def destination(self) -> dict[str, Any]:
        """What a checkpoint must match to resume (the password is never part of it)."""
        return {"database": self.settings.redacted_url, "website": self.settings.website}

    def preflight(self, say: Callable[[str], None]) -> None:
        """Connect, check the schema and the website, open the GeoIP database: before any write."""
        if self.settings.geoip_db is not None:
            self._lookup = geoip_lookup(self.settings.geoip_db)
        conn = database.connect(self.settings.url)
        try:
            self.schema = database.check_schema(conn)
            self.website_name = database.check_website(conn, self.settings.website)
        finally:
            conn.close()
        say(f"database {self.settings.redacted_url}: {self.schema.describe}")
        say(f"website {self.settings.website} ({self.website_name})")
        if not self.settings.app_secret:
            say(NO_SECRET_NOTE)

    def deliver(self, delivery: Delivery) -> SendOutcome:
        """Write every block past the checkpoint; the checkpoint moves only after a commit."""
        return _Run(self, delivery).execute(emit(delivery.prepared.runs))


class _Run(BlockRun):
    """One delivery: the connection, the derivation and the counters."""

    def __init__(self, sink: PostgresSink, delivery: Delivery) -> None:
        how = derivation_for(sink.settings, delivery, sink._lookup)
        super().__init__(delivery, sink.settings.transaction_rows, how)
        self.settings = sink.settings
        self.conn: Any = None

    def open(self) -> None:
        self.conn = database.connect(self.settings.url)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def derive(self, block: pl.DataFrame) -> Tables:
        return derive(block, self.how)

    def failure(self, exc: Exception) -> Exception | None:
        import psycopg

        if isinstance(exc, psycopg.Error):  # the open transaction was rolled back
            return SendError(
                f"the database refused or lost the connection ({database.first_line(exc)}); every committed "
                "block is in the checkpoint: run the same command again to resume"
            )
        return None

    def write(self, block: pl.DataFrame, tables: Tables | None = None) -> None:
        """Commit one block; a block the database refuses is split until the refused
        row is alone, and that row becomes a reject with the database's message."""
        import psycopg

        tables = tables if tables is not None else derive(block, self.how)
        began = time.monotonic()
        try:
            added = database.write_tables(self.conn, tables)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if block.height == 1:
                file_index, row = block[COL_FILE][0], block[COL_ROW][0]
                reason = f"the database refused the row: {database.first_line(exc)}"
                self.record(block, [(file_index, row, "(database)", reason)])
                return
            half = block.height // 2
            self.write(block.slice(0, half))
            self.write(block.slice(half))
            return
        self.stored(added, began)
        self.record(block, list(tables.refused))
