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

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from ...errors import ConfigError, SendError
from ...ordering import emit
from ...schema import COL_FILE, COL_JSON, COL_ROW
from ...umami import ids
from .. import Delivery
from ..outcome import SendOutcome, SendProgress
from . import database
from .rows import Derivation, Tables, derive, positions

SEQ = "_seq"
#: Rows per transaction: large enough that commits and per-block work cost little, small
#: enough that a replayed transaction is quick. Inserts take no lock that blocks Umami's own.
DEFAULT_TRANSACTION_ROWS = 20_000
#: Bytes read from each end of an input to tell files apart in row ids (see file_key).
FILE_KEY_BYTES = 1 << 20


@dataclass(frozen=True)
class PostgresSettings:
    """Where to write and how to derive what Umami would (``--database-url`` and friends)."""

    url: str
    website: str
    user_agent: str
    app_secret: str | None = None
    geoip_db: Path | None = None
    exact_visits: bool = False
    transaction_rows: int = DEFAULT_TRANSACTION_ROWS

    def __post_init__(self) -> None:
        if self.transaction_rows < 1:
            raise ConfigError("--transaction-rows must be at least 1")
        from ...umami.api import website_id_problem

        problem = website_id_problem(self.website)
        if problem:
            raise ConfigError(problem)
        scheme = urlsplit(self.url).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ConfigError(
                f"--database-url must be a postgresql:// URL (Umami's DATABASE_URL), not a {scheme or 'plain'} one"
            )

    @property
    def redacted_url(self) -> str:
        """host:port/database, for messages and the checkpoint; never the user or password."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{host}{port}{parts.path}"


def file_key(path: str) -> str:
    """A file's identity for row ids: its name, size and first and last MiB.

    Re-importing the same file (renamed folders, --restart, another state
    directory) gives the same ids, so nothing is stored twice; two different
    files never share ids unless they are identical.
    """
    digest = hashlib.blake2b(digest_size=16)
    target = Path(path)
    if target.is_dir():
        for child in sorted(target.rglob("*")):
            if child.is_file():
                digest.update(f"{child.relative_to(target)}\0{child.stat().st_size}\0".encode())
        return digest.hexdigest()
    size = target.stat().st_size
    digest.update(f"{size}\0".encode())
    with open(target, "rb") as fh:
        digest.update(fh.read(FILE_KEY_BYTES))
        if size > 2 * FILE_KEY_BYTES:
            fh.seek(size - FILE_KEY_BYTES)
            digest.update(fh.read(FILE_KEY_BYTES))
    return digest.hexdigest()


def geoip_lookup(path: Path) -> Callable[[str], tuple[str | None, str | None, str | None] | None]:
    """Umami's GeoLite2 lookup: country ISO code (else the registered country's),
    the first subdivision's ISO code, the English city name."""
    import maxminddb

    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"--geoip-db {path}: cannot read it as a MaxMind database ({exc})") from exc

    def lookup(ip: str) -> tuple[str | None, str | None, str | None] | None:
        try:
            found = reader.get(ip.strip())
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        country = (found.get("country") or {}).get("iso_code") or (found.get("registered_country") or {}).get(
            "iso_code"
        )
        subdivisions = found.get("subdivisions") or [{}]
        region = subdivisions[0].get("iso_code")
        city = ((found.get("city") or {}).get("names") or {}).get("en")
        return country, region, city

    return lookup


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
            say(
                "note: no --app-secret (APP_SECRET): session ids use umami-backfill's own salt, so later API "
                "imports or live traffic with the same distinct ids start new sessions"
            )

    def deliver(self, delivery: Delivery) -> SendOutcome:
        """Write every block past the checkpoint; the checkpoint moves only after a commit."""
        return _Run(self, delivery).execute(emit(delivery.prepared.runs))


class _Run:
    """One delivery: the connection, the derivation and the counters."""

    def __init__(self, sink: PostgresSink, delivery: Delivery) -> None:
        settings = sink.settings
        files = delivery.prepared.files
        self.settings = settings
        self.files = files
        self.file_names = [os.path.basename(f) for f in files]
        self.cp = delivery.checkpoint
        self.cp_path = delivery.checkpoint_path
        self.rejects = delivery.rejects
        self.ledger = delivery.run_ledger
        self.progress = delivery.progress
        self.stop = delivery.stop
        self.how = Derivation(
            website=settings.website,
            secret=ids.umami_secret(settings.app_secret),
            user_agent=settings.user_agent,
            file_keys=tuple(file_key(f) for f in files),
            detect=_detector(),
            geoip=sink._lookup,
            exact_visits=settings.exact_visits,
            crossing=delivery.prepared.visits,
        )
        self.written: dict[str, int] = {}
        self.started = time.monotonic()
        self.commits = 0
        self.commit_s = 0.0
        self.skipped = 0

    def execute(self, blocks: Iterator[pl.DataFrame]) -> SendOutcome:
        # Rejects written after the last checkpoint belong to a block that will be replayed.
        self.rejects.truncate(self.cp.rejects_offset)
        conn = database.connect(self.settings.url)
        derived = _prefetch(self._derived(blocks), self.stop)
        interrupted = False
        try:
            for piece, tables in derived:
                if self.stop.is_set():
                    interrupted = True
                    break
                self._write(conn, piece, tables)
            else:
                interrupted = self.stop.is_set()
        except Exception as exc:  # psycopg errors: the open transaction was rolled back
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise SendError(
                    f"the database refused or lost the connection ({database.first_line(exc)}); every committed "
                    "block is in the checkpoint: run the same command again to resume"
                ) from exc
            raise
        finally:
            derived.close()
            conn.close()
        completed = not interrupted
        if completed:
            self.cp.phase = "complete"
            self.cp.save(self.cp_path)
        return SendOutcome(
            completed=completed,
            interrupted=interrupted,
            error=None,
            ledger=self.ledger,
            cumulative=self.cp.send_ledger,
            rows_seen=self.ledger.read,
            rows_skipped=self.skipped,
            requests=self.commits,
            elapsed_s=time.monotonic() - self.started,
            request_s=self.commit_s,
            notes=self._notes(),
        )

    def _derived(self, blocks: Iterator[pl.DataFrame]) -> Iterator[tuple[pl.DataFrame, Tables]]:
        """Transaction-sized pieces past the checkpoint, each with the rows it becomes."""
        committed = self.cp.lane_acked[0]
        for block in blocks:
            fresh = block.filter(pl.col(SEQ) > committed) if committed >= 0 else block
            self.skipped += block.height - fresh.height
            for piece in fresh.iter_slices(self.settings.transaction_rows):
                yield piece, derive(piece, self.how)

    def _write(self, conn: Any, block: pl.DataFrame, tables: Tables | None = None) -> None:
        """Commit one block; a block the database refuses is split until the refused
        row is alone, and that row becomes a reject with the database's message."""
        import psycopg

        tables = tables if tables is not None else derive(block, self.how)
        began = time.monotonic()
        try:
            added = database.write_tables(conn, tables)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if block.height == 1:
                self._record(block, tables, refused_by_db=database.first_line(exc))
                return
            half = block.height // 2
            self._write(conn, block.slice(0, half))
            self._write(conn, block.slice(half))
            return
        self.commit_s += time.monotonic() - began
        self.commits += 1
        for table, count in added.items():
            self.written[table] = self.written.get(table, 0) + count
        self._record(block, tables)

    def _record(self, block: pl.DataFrame, tables: Tables, refused_by_db: str | None = None) -> None:
        """Count the block, write its rejects, then move the checkpoint past it."""
        refused = list(tables.refused)
        if refused_by_db is not None:
            file_index, row = block[COL_FILE][0], block[COL_ROW][0]
            refused = [(file_index, row, "(database)", f"the database refused the row: {refused_by_db}")]
        self.ledger.read += block.height
        self.cp.send_ledger.read += block.height
        accepted = block.height - len(refused)
        self.ledger.accepted += accepted
        self.cp.send_ledger.accepted += accepted
        if refused:
            self._reject(block, refused)
        self.cp.lane_acked[0] = int(block[SEQ].max())  # type: ignore[arg-type]
        self.cp.rejects_offset = self.rejects.sync()
        self.cp.save(self.cp_path)
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            self.progress(
                SendProgress(
                    rows_done=self.ledger.read,
                    accepted=self.ledger.accepted,
                    rejected=self.ledger.rejected_total,
                    in_doubt=0,
                    rows_skipped=self.skipped,
                    events_per_second=self.ledger.read / elapsed,
                    concurrency=1,
                    last_latency=None,
                )
            )

    def _reject(self, block: pl.DataFrame, refused: list[tuple[int, int, str, str]]) -> None:
        where = {(int(f), int(r)): (field_name, reason) for f, r, field_name, reason in refused}
        picked = block.join(positions(refused), on=[COL_FILE, COL_ROW], how="semi", maintain_order="left")
        records = []
        by_reason: dict[str, list[str]] = {}
        for file_index, row, element in picked.select(COL_FILE, COL_ROW, COL_JSON).iter_rows():
            field_name, reason = where[(file_index, row)]
            records.append(
                {"file": self.files[file_index], "row": row, "field": field_name, "reason": reason, "values": element}
            )
            by_reason.setdefault(reason, []).append(f"{self.file_names[file_index]}:{row}")
        self.rejects.write_records(records)
        for reason, examples in by_reason.items():
            self.ledger.reject(reason, len(examples), examples)
            self.cp.send_ledger.reject(reason, len(examples), examples)

    def _notes(self) -> list[str]:
        if not self.written:
            return []
        rows = ", ".join(f"{table} {count:,}" for table, count in self.written.items() if count)
        return [f"new rows in the database this run: {rows}"]


def _prefetch(
    items: Iterator[tuple[pl.DataFrame, Tables]], stop: threading.Event
) -> Generator[tuple[pl.DataFrame, Tables], None, None]:
    """Derive the next block in a thread while the database writes this one: the
    derivation is Python, the writing is PostgreSQL's own process, so they overlap."""
    slot: queue.Queue[Any] = queue.Queue(maxsize=1)
    cancel = threading.Event()
    done = object()

    def hand_over(item: Any) -> bool:
        while not (cancel.is_set() or stop.is_set()):
            try:
                slot.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
            hand_over(done)
        except BaseException as exc:  # handed to the consumer, raised there
            hand_over(exc)

    worker = threading.Thread(target=produce, name="derive", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = slot.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set() or not worker.is_alive():
                    return
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        worker.join(timeout=30)


def _detector() -> Callable[[str | None, str | None], tuple[str | None, str | None, str | None]]:
    from ...umami.detect import detect_client

    return detect_client
