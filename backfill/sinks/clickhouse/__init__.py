"""The ClickHouse sink: prepared rows straight into the tables of an Umami that runs on ClickHouse.

Everything before this stage is the same as for the other sinks (readers,
mapping, validation, rejects, ordering). Each block of the prepared stream
(``--insert-rows``, in ``_seq`` order) becomes what Umami stores for it
(:mod:`backfill.umami.stored`, laid out by :mod:`.rows`), is checked against what
ClickHouse already holds and written as one insert per table (:mod:`.database`);
the checkpoint moves after the inserts. A run killed anywhere is resumed by the
same command: the block cut off is checked again and only its missing rows go
in, so nothing is stored twice and there is no "in doubt".

Umami on ClickHouse keeps websites in its PostgreSQL database: ``--database-url``
(read only: the website row) confirms the website exists, or
``--skip-website-check`` says it was checked by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ...errors import ConfigError, SendError
from ...ordering import emit
from ...schema import COL_FILE, COL_ROW
from ...umami import stored
from ...umami.stored import geoip_lookup
from .. import Delivery
from ..blocks import NO_SECRET_NOTE, BlockRun, DatabaseSettings, derivation_for
from ..outcome import SendOutcome
from . import database
from .client import ClickHouse, ClickHouseError, Endpoint, encode
from .rows import Rows, layout

#: Rows per insert: ClickHouse likes few large inserts (each makes parts to merge); a
#: block is derived while the previous one is written, so it also bounds memory.
DEFAULT_INSERT_ROWS = 100_000
#: Inserts in flight: ClickHouse writes an insert (its parts, projections and views) on
#: one core, so a second one in flight keeps another core busy. Blocks are recorded in
#: order whatever order their inserts end in, and a block's session data waits for the
#: blocks before it (Umami reads it FINAL: the last insert wins).
DEFAULT_PARALLEL_INSERTS = 2
#: ClickHouse error codes of a value an insert cannot take (the block is split to find the row).
_VALUE_ERRORS = {6, 27, 38, 41, 53, 69, 70, 72, 131, 190, 349, 407}


@dataclass(frozen=True)
class ClickHouseSettings(DatabaseSettings):
    """Where to write and how to derive what Umami would (``--clickhouse-url`` and friends)."""

    insert_rows: int = DEFAULT_INSERT_ROWS
    parallel_inserts: int = DEFAULT_PARALLEL_INSERTS
    database_url: str | None = None  # Umami's PostgreSQL, read for the website only
    skip_website_check: bool = False
    timeout: float = 300.0
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.insert_rows < 1:
            raise ConfigError("--insert-rows must be at least 1")
        if self.parallel_inserts < 1:
            raise ConfigError("--parallel-inserts must be at least 1")
        super().__post_init__()
        Endpoint.parse(self.url)
        if self.database_url is None and not self.skip_website_check:
            raise ConfigError(
                "writing into ClickHouse needs the website checked first: pass --database-url with Umami's "
                "PostgreSQL URL (its DATABASE_URL; only the website row is read), or --skip-website-check if you "
                f"have made sure website {self.website} exists in Umami"
            )

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.parse(self.url)


@dataclass
class ClickHouseSink:
    """Writes prepared blocks into Umami's ClickHouse tables, each row once."""

    settings: ClickHouseSettings
    website_name: str | None = None
    schema: database.SchemaInfo | None = None
    arrow: bool = True  # whether the server reads Arrow bodies (else CSV)
    _lookup: Any = field(default=None, repr=False)

    kind = "clickhouse"
    #: Takes runs while the import is still prepared (:mod:`backfill.early_delivery`): each
    #: event row carries its own session values and ids, so what is stored for a row does
    #: not depend on the rows written before it.
    early_delivery = True

    def destination(self) -> dict[str, Any]:
        """What a checkpoint must match to resume (the password is never part of it)."""
        return {"clickhouse": self.settings.endpoint.redacted, "website": self.settings.website}

    def preflight(self, say: Callable[[str], None]) -> None:
        """Reach ClickHouse, check its schema and the website, open the GeoIP database: before any write."""
        if self.settings.geoip_db is not None:
            self._lookup = geoip_lookup(self.settings.geoip_db)
        with self._client() as ch:
            ch.ping()
            try:
                self.schema = database.check_schema(ch)
            except ClickHouseError as exc:
                raise ConfigError(f"cannot read ClickHouse's schema at {ch.endpoint.redacted}: {exc}") from None
            self.arrow = ch.takes_arrow()
        say(f"clickhouse {self.settings.endpoint.redacted}: {self.schema.describe}")
        if not self.arrow:
            say("note: this server reads no binary (Arrow) insert body: inserting CSV text instead (slower)")
        if self.schema.distributed:
            say(
                "note: Distributed tables: every insert waits until all shards have it (insert_distributed_sync); "
                "shard event_data by event or session, or Umami's revenue view misses pairs split across shards"
            )
        self.website_name = self._check_website()
        say(f"website {self.settings.website} ({self.website_name})")
        if not self.settings.app_secret:
            say(NO_SECRET_NOTE)

    def _check_website(self) -> str:
        if self.settings.database_url is None:
            return "not checked: --skip-website-check"
        from ..postgres import database as pg

        conn = pg.connect(self.settings.database_url)
        try:
            return pg.check_website(conn, self.settings.website)
        except Exception as exc:
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise ConfigError(
                    f"cannot read website {self.settings.website} from {pg.redacted(self.settings.database_url)} "
                    f"({pg.first_line(exc)}): is it Umami's DATABASE_URL?"
                ) from None
            raise
        finally:
            conn.close()

    def _client(self) -> ClickHouse:
        settings = self.settings
        return ClickHouse(settings.endpoint, timeout=settings.timeout, insecure=settings.insecure, arrow=self.arrow)

    def deliver(self, delivery: Delivery) -> SendOutcome:
        """Write every block past the checkpoint; the checkpoint moves after a block's inserts."""
        return self.run_for(delivery).execute(emit(delivery.prepared.runs))

    def run_for(self, delivery: Delivery) -> BlockRun:
        """The delivery's run, to :meth:`~BlockRun.execute` with blocks of one's own choosing."""
        return _Run(self, delivery)


class _Run(BlockRun):
    """One delivery: the client, the derivation and the counters."""

    def __init__(self, sink: ClickHouseSink, delivery: Delivery) -> None:
        how = derivation_for(sink.settings, delivery, sink._lookup)
        super().__init__(delivery, sink.settings.insert_rows, how, writers=sink.settings.parallel_inserts)
        self.sink = sink
        self.website = sink.settings.website
        schema = sink.schema or database.SchemaInfo(sink.settings.endpoint.database, "", {})
        self.insert_settings = schema.insert_settings()
        self.ch: ClickHouse | None = None

    def open(self) -> None:
        self.ch = self.sink._client()

    def close(self) -> None:
        if self.ch is not None:
            self.ch.close()

    def derive(self, block: pl.DataFrame) -> Rows:
        """What Umami stores for the block, and each table's insert body (in the deriving
        thread, so the writer only sends while ClickHouse works)."""
        rows = layout(stored.derive(block, self.how))
        rows.bodies = {table: encode(frame, self.sink.arrow) for table, frame in rows.tables().items() if frame.height}
        return rows

    def failure(self, exc: Exception) -> Exception | None:
        if isinstance(exc, ClickHouseError):
            return SendError(
                f"ClickHouse refused a write or could not be reached ({exc}); every block before it is in the "
                "checkpoint and the next run writes only what that block lacks: run the same command again to resume"
            )
        return None

    def write(self, block: pl.DataFrame, rows: Rows | None = None) -> None:
        """Write one block; a block ClickHouse refuses for a value is split until the
        refused row is alone, and that row becomes a reject with ClickHouse's message."""
        assert self.ch is not None
        rows = rows if rows is not None else self.derive(block)
        began = time.monotonic()
        try:
            added = database.write_block(
                self.ch, rows, self.website, self.insert_settings, before_session_data=lambda: self.wait_turn(block)
            )
        except ClickHouseError as exc:
            if exc.code not in _VALUE_ERRORS:
                raise
            if block.height == 1:
                file_index, row = block[COL_FILE][0], block[COL_ROW][0]
                self.record(block, [(file_index, row, "(database)", f"ClickHouse refused the row: {exc}")])
                return
            half = block.height // 2
            self.write(block.slice(0, half))
            self.write(block.slice(half))
            return
        self.stored(added, began)
        self.record(block, list(rows.refused))
