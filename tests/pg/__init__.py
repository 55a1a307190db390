"""A throwaway PostgreSQL server with Umami 3.1's tables, for the database sink's tests.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port, and
``stop()`` removes everything. PostgreSQL refuses to run as root, so as root the
cluster belongs to the ``postgres`` system user (Debian's packages create it).
Nothing here needs a running system service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_SQL = Path(__file__).with_name("umami_3_1.sql")


def find_pg_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: PATH first, then Debian's layout (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def why_no_postgres() -> str | None:
    """None when a throwaway cluster can start here, else the reason (for a visible skip)."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries (initdb) not found; `make install` installs them on Debian"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own a throwaway cluster"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One running throwaway server; ``url(db)`` gives a connection URL."""

    directory: Path
    port: int
    bin: Path
    as_postgres: bool
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, *, durable: bool = False) -> Cluster:
        """Start a new cluster. ``durable=False`` turns fsync off (tests); benchmarks keep defaults."""
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise RuntimeError(why_no_postgres() or "no PostgreSQL")
        as_postgres = os.geteuid() == 0
        directory = Path(tempfile.mkdtemp(prefix="backfill-pg-"))
        os.chmod(directory, 0o755)
        data = directory / "data"
        data.mkdir()
        if as_postgres:
            shutil.chown(directory, "postgres", "postgres")
            shutil.chown(data, "postgres", "postgres")
        cluster = cls(directory, _free_port(), pg_bin, as_postgres)
        cluster._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {directory} -c max_connections=40"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        cluster._run("pg_ctl", "-D", str(data), "-l", str(directory / "log"), "-o", options, "-w", "start")
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_umami_database(self, *, website: str | None = None, schema_sql: str | None = None) -> tuple[str, str]:
        """A fresh database with Umami 3.1's tables and one website; (url, website id)."""
        import psycopg

        name = f"umami_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        website = website or str(uuid.uuid4())
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute(schema_sql if schema_sql is not None else SCHEMA_SQL.read_text())
            with contextlib.suppress(psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                conn.execute(
                    "INSERT INTO website (website_id, name, domain) VALUES (%s, 'imported', 'example.com')",
                    (website,),
                )
        return self.url(name), website

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
