"""A ClickHouse HTTP server for tests: the real engine (chdb, in process) behind the part of
ClickHouse's HTTP interface a client uses.

- ``GET /ping`` answers ``Ok.``; ``GET``/``POST /?query=...`` runs the query, whose text
  is the ``query`` parameter or the body (for ``POST`` with both, the body is the data of
  ``INSERT ... FORMAT f``, streamed into the engine as it would be into a server);
- ``database`` picks the current database, ``param_NAME`` binds ``{NAME:Type}``,
  ``default_format`` the output format (``TabSeparated`` otherwise); known settings
  in the URL are applied to the statement (``SETTINGS ...``);
- every answer has ``X-ClickHouse-Summary``, ``X-ClickHouse-Query-Id`` and
  ``X-ClickHouse-Format``; an exception is HTTP 500 (404 for an unknown table or
  database, 400 for a syntax error) with ``X-ClickHouse-Exception-Code`` and
  ClickHouse's ``Code: N. DB::Exception: ...`` text.

One engine per process (chdb allows one); each request in flight has a connection of
its own to it, so concurrent inserts run in parallel as on a server (chdb runs one
statement at a time per connection). Tests share the engine and isolate themselves
in databases of their own
(:func:`load_schema`). ``python tests/chdb_server.py --port N --schema`` runs it
alone (the benchmark does, so the engine's work is not counted in the importer).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import queue
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SCHEMA = Path(__file__).parent / "data" / "umami_clickhouse_schema.sql"
#: URL parameters that are not settings.
_NOT_SETTINGS = {"query", "database", "default_format", "user", "password", "query_id", "session_id", "compress"}
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<format>\w+)\s*(?P<inline>.*)$", re.I | re.S)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)
_STATUS_BY_CODE = {60: 404, 81: 404, 62: 400, 516: 403}

_engine: Any = None
_engine_lock = threading.Lock()


_workdir: str | None = None
#: Connections not in use by a request (more are opened while requests overlap).
_idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
_opened: list[Any] = []
#: A fault for tests: the next insert into TABLE waits this many seconds first (an insert
#: slow on the server, so one sent after it ends before it).
STALL_NEXT_INSERT: dict[str, float] = {}


def engine() -> Any:
    """The process's one chdb connection, in a temporary folder removed when the process ends.

    chdb keeps a session's tables on disk even for ``":memory:"``, in a
    ``clickhouse-embedded-*`` folder of the temp directory that nothing removes: every
    test run and benchmark left one behind (gigabytes for the benchmark)."""
    global _engine, _workdir
    with _engine_lock:
        if _engine is None:
            import chdb

            _workdir = tempfile.mkdtemp(prefix="backfill-chdb-")
            _engine = chdb.connect(_workdir)
            atexit.register(_remove_engine)
        return _engine


@contextlib.contextmanager
def connection() -> Any:
    """A connection to the engine for one request, used by nothing else meanwhile."""
    engine()
    try:
        conn = _idle.get_nowait()
    except queue.Empty:
        import chdb

        with _engine_lock:
            conn = chdb.connect(_workdir)
            _opened.append(conn)
    try:
        yield conn
    finally:
        _idle.put(conn)


def _remove_engine() -> None:
    for conn in [*_opened, _engine]:
        with contextlib.suppress(Exception):
            conn.close()
    if _workdir is not None:
        shutil.rmtree(_workdir, ignore_errors=True)


def load_schema(database: str, schema: Path = SCHEMA) -> None:
    """Create ``database`` with Umami's ClickHouse tables and views (the file names them ``umami.``)."""
    text = "\n".join(line for line in schema.read_text().splitlines() if not line.strip().startswith("--"))
    text = text.replace("umami.", f"{database}.")
    conn = engine()
    with _engine_lock:
        for statement in text.split(";"):
            if statement.strip():
                conn.query(statement.replace("CREATE DATABASE IF NOT EXISTS umami", f"CREATE DATABASE {database}"))


def run(sql: str, fmt: str = "JSONEachRow", params: dict[str, str] | None = None) -> bytes:
    """One statement on the shared engine (for tests that read or change tables directly)."""
    conn = engine()
    with _engine_lock:
        return conn.query(sql, fmt, params=params or None).bytes()


def rows(sql: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run(sql, "JSONEachRow", params).splitlines() if line.strip()]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def _handle(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") == "/ping" or (url.path == "/" and not url.query and not body):
            self._reply(200, b"Ok.\n", {})
            return
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = args.get("query_id") or str(uuid.uuid4())
        started = time.monotonic()
        try:
            written, output, fmt = self._execute(args, body)
        except Exception as exc:  # the engine's exception, answered as ClickHouse does
            message = str(exc).strip()
            match = re.search(r"Code: (\d+)", message)
            code = int(match.group(1)) if match else 1001
            text = message[message.index("Code:") :] if "Code:" in message else f"Code: {code}. {message}"
            headers = {"X-ClickHouse-Exception-Code": str(code), "X-ClickHouse-Query-Id": query_id}
            self._reply(_STATUS_BY_CODE.get(code, 500), (text + "\n").encode(), headers)
            return
        summary = {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(written),
            "written_bytes": str(len(body) if written else 0),
            "total_rows_to_read": "0",
            "result_rows": str(output.count(b"\n")),
            "result_bytes": str(len(output)),
            "elapsed_ns": str(int((time.monotonic() - started) * 1e9)),
        }
        headers = {
            "X-ClickHouse-Summary": json.dumps(summary),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": "UTC",
        }
        self._reply(200, output, headers)

    def _execute(self, args: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        settings = {k: v for k, v in args.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
        settings = {k: v for k, v in settings.items() if _SETTING_NAME.match(k)}
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        sql = args.get("query")
        data = body
        if sql is None:
            sql, data = body.decode(), b""
        insert = _INSERT.match(sql)
        if insert:
            table = re.sub(r"[`\s(].*", "", insert.group("target").lstrip("`")).split(".")[-1]
            time.sleep(STALL_NEXT_INSERT.pop(table, 0.0))
        with connection() as conn:
            conn.query(f"USE `{args.get('database') or 'default'}`")  # pooled: never the last request's
            if insert and (data or insert.group("inline").strip()):
                target = insert.group("target")
                if settings:
                    target += " SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items())
                payload = data or insert.group("inline").encode()
                with conn.send_insert(f"INSERT INTO {target}", insert.group("format")) as inserter:
                    inserter.append(payload)
                    result = inserter.finish()
                return int(result.rows_written), b"", insert.group("format")
            if data:
                sql = f"{sql}\n{data.decode()}"
            found = _TRAILING_FORMAT.search(sql)
            fmt = found.group(1) if found else args.get("default_format", "TabSeparated")
            if found:
                sql = sql[: found.start()]
            if settings and re.match(r"\s*(SELECT|WITH)\b", sql, re.I):
                sql += " SETTINGS " + ", ".join(f"{k} = '{v}'" for k, v in settings.items())
            return 0, conn.query(sql, fmt, params=params or None).bytes(), fmt

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client killed mid-request (the kill tests do it on purpose)


class ChdbServer:
    """The HTTP front on 127.0.0.1 (an ephemeral port unless given), serving in a thread."""

    def __init__(self, port: int = 0) -> None:
        engine()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, database: str = "default", user: str = "default", password: str = "") -> str:
        auth = f"{user}:{password}@" if password else ""
        return f"http://{auth}127.0.0.1:{self.port}/{database}"

    def start(self) -> ChdbServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--schema", metavar="DATABASE", help="create DATABASE with Umami's tables first")
    args = parser.parse_args(argv)
    if args.schema:
        load_schema(args.schema)
    server = ChdbServer(args.port)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated front still removes its engine's folder
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever(poll_interval=0.05)
    return 0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
