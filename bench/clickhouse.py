"""``make bench`` for the ClickHouse sink: end-to-end import speed against a plain insert
of the same rows and against the PostgreSQL sink on the same file, in one run.

    python bench/clickhouse.py                  # 1M rows (countries, revenue), 2M for the memory comparison
    python bench/clickhouse.py --rows 200k      # smaller
    make bench-ch BENCH_CH_ARGS="--rows 200k"

Starts the ClickHouse engine (chdb) behind our HTTP front (``tests/chdb_server.py``) in
a process of its own with Umami 3.1's full ClickHouse schema (both materialized views
and both projections active), and measures in one run, on the same machine:

- ``import``: ``backfill import FILE --clickhouse-url ...`` as a user runs it (a child
  process: read, check, derive, insert), events/s from its wall clock, its peak RSS and
  CPU time, and the engine's CPU time over the same interval;
- ``one insert at a time``: the same import with ``--parallel-inserts 1`` (the
  default keeps two in flight), side by side;
- ``plain insert``: the same ``website_event`` rows, read back from the import, inserted
  again into an empty schema as Arrow streams of ``--insert-rows`` rows (the engine's
  own floor for these rows, views and projections included);
- ``postgres``: ``backfill import FILE --database-url ...`` of the same file into a
  throwaway PostgreSQL with Umami's tables (skipped without PostgreSQL);
- memory at two sizes, ``--rows`` and ``--large`` (peak RSS should not grow with the
  input). Both must be past the start-up: while the input is still read the import
  also writes (``backfill/early_delivery.py``) and holds both stages' blocks, a level
  a 250k-row input does not last long enough to reach.

Targets: >= 50,000 events/s end to end on a 2-core machine, >= 2x the PostgreSQL sink.
Nothing is asserted; PASS/MISS is printed next to each figure and results go to
``bench/out/clickhouse.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.database import MAPPING, generate  # noqa: E402
from bench.database import run_import as run_postgres_import  # noqa: E402
from bench.run import parse_count  # noqa: E402

TARGET_EVENTS_PER_S = 50_000
TARGET_VS_POSTGRES = 2.0
WEBSITE = "6f1d2c3b-4a59-4e8f-9d7c-1b2a3c4d5e6f"
SCHEMA = ROOT / "tests" / "data" / "umami_clickhouse_schema.sql"


class Engine:
    """The chdb HTTP front in a child process."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "chdb_server.py"), "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the chdb HTTP front did not start")

    def post(self, sql: str, body: bytes | None = None, **params: str) -> bytes:
        query = {"database": "default", **params}
        if body is not None:
            query["query"] = sql
        url = f"http://127.0.0.1:{self.port}/?{urllib.parse.urlencode(query)}"
        data = body if body is not None else sql.encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=3600) as answer:
            return answer.read()

    def new_schema(self, database: str) -> str:
        text = "\n".join(line for line in SCHEMA.read_text().splitlines() if not line.strip().startswith("--"))
        text = text.replace("CREATE DATABASE IF NOT EXISTS umami", f"CREATE DATABASE {database}")
        for statement in text.replace("umami.", f"{database}.").split(";"):
            if statement.strip():
                self.post(statement)
        return f"http://127.0.0.1:{self.port}/{database}"

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_import(
    engine: Engine, source: Path, work: Path, database: str, insert_rows: int, *extra: str
) -> dict[str, Any]:
    url = engine.new_schema(database)
    report = work / f"report-{database}.json"
    engine_cpu = engine.cpu_s()
    began = time.perf_counter()
    with open(work / "stderr.txt", "wb") as errors:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backfill",
                "import",
                str(source),
                "-m",
                str(MAPPING),
                "--clickhouse-url",
                url,
                "--skip-website-check",
                "--website",
                WEBSITE,
                "--insert-rows",
                str(insert_rows),
                "--rejects",
                str(work / "rejects.ndjson"),
                "--state",
                str(work / f"state-{database}"),
                "--report",
                str(report),
                "--quiet",
                "--restart",
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,  # a file, not a pipe: wait4 must not wait on a full pipe
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"import failed ({code}): {(work / 'stderr.txt').read_text(errors='replace')[-2000:]}")
    data = json.loads(report.read_text())
    accepted = data["ledger"]["accepted"]
    return {
        "database": database,
        "accepted": accepted,
        "wall_s": round(wall, 2),
        "events_per_s": round(accepted / wall),
        "prepare_s": data.get("timings", {}).get("prepare_s"),
        "write_phase_s": data.get("timings", {}).get("send_s"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "engine_cpu_s": round(engine.cpu_s() - engine_cpu, 1),
    }


def plain_insert(engine: Engine, database: str, insert_rows: int) -> dict[str, Any]:
    """The imported website_event rows, inserted again into an empty schema as Arrow streams."""
    import polars as pl

    from backfill.sinks.clickhouse.rows import EVENT_STRINGS

    ids = ("website_id", "session_id", "visit_id", "event_id")
    columns = ", ".join([*(f"toString({c}) AS {c}" for c in ids), *EVENT_STRINGS, "event_type", "created_at"])
    raw = engine.post(
        f"SELECT {columns} FROM {database}.website_event FORMAT ArrowStream", output_format_arrow_string_as_string="1"
    )
    frame = pl.read_ipc_stream(io.BytesIO(raw))
    engine.new_schema(f"{database}_plain")
    from backfill.sinks.clickhouse.client import arrow_stream

    bodies = [arrow_stream(frame.slice(start, insert_rows)) for start in range(0, frame.height, insert_rows)]
    columns = ", ".join(frame.columns)
    began = time.perf_counter()
    for body in bodies:
        engine.post(f"INSERT INTO {database}_plain.website_event ({columns}) FORMAT ArrowStream", body)
    wall = time.perf_counter() - began
    return {"rows": frame.height, "wall_s": round(wall, 2), "rows_per_s": round(frame.height / wall)}


def postgres(source: Path, work: Path) -> dict[str, Any] | None:
    from tests.pg import Cluster, why_no_postgres

    if why_no_postgres():
        return None
    cluster = Cluster.start(durable=True)
    try:
        result = run_postgres_import(cluster, source, work)
    finally:
        cluster.stop()
    result.pop("url", None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=parse_count, default=1_000_000, help="rows of the main run (default 1m)")
    parser.add_argument(
        "--large", type=parse_count, default=2_000_000, help="rows of the memory comparison against --rows (2m)"
    )
    parser.add_argument("--insert-rows", type=parse_count, default=100_000, help="rows per insert (100k)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL sink's run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    # Every run starts from bytecode, as an installed tool does from its second run on:
    # without this, a shell that sets PYTHONDONTWRITEBYTECODE makes each import compile
    # some 600 modules again (0.5-0.9 s of a 200k run, the same for both sinks).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = args.out_dir / "clickhouse-work"
    work.mkdir(exist_ok=True)
    big_file, large_file = generate(args.rows, args.out_dir, args.seed), generate(args.large, args.out_dir, args.seed)
    load_start = os.getloadavg()
    engine = Engine()
    try:
        big = run_import(engine, big_file, work, "bench_big", args.insert_rows)
        serial = run_import(engine, big_file, work, "bench_serial", args.insert_rows, "--parallel-inserts", "1")
        large = run_import(engine, large_file, work, "bench_large", args.insert_rows)
        # Last: it leaves this process holding the rows it read back, and an import
        # started after it would inherit that memory in its peak RSS (fork).
        plain = plain_insert(engine, "bench_big", args.insert_rows)
    finally:
        engine.stop()
    pg = None if args.no_postgres else postgres(big_file, work)
    rss_growth = large["peak_rss_mb"] / max(1, big["peak_rss_mb"])
    lines = [
        f"load average at start {load_start}, at end {os.getloadavg()}",
        f"clickhouse import of {big['accepted']:,} events: {big['wall_s']} s, {big['events_per_s']:,} events/s end "
        f"to end ({'PASS' if big['events_per_s'] >= TARGET_EVENTS_PER_S else 'MISS'} >= {TARGET_EVENTS_PER_S:,}); "
        f"CPU: importer {big['cpu_s']} s, engine {big['engine_cpu_s']} s",
        f"the same import one insert at a time (--parallel-inserts 1): {serial['events_per_s']:,} events/s; "
        f"two in flight / one = {big['events_per_s'] / serial['events_per_s']:.2f}",
        f"plain insert of the same {plain['rows']:,} website_event rows (Arrow, {args.insert_rows:,} per insert): "
        f"{plain['rows_per_s']:,} rows/s; import / plain insert = {big['events_per_s'] / plain['rows_per_s']:.2f}",
        f"peak RSS {big['peak_rss_mb']} MB at {big['accepted']:,} events, {large['peak_rss_mb']} MB at "
        f"{large['accepted']:,}: x{rss_growth:.2f} ({'PASS' if rss_growth <= 1.3 else 'MISS'} <= 1.3)",
    ]
    if pg is not None:
        ratio = big["events_per_s"] / max(1, pg["events_per_s"])
        lines.append(
            f"postgres import of the same file: {pg['events_per_s']:,} events/s; clickhouse / postgres = {ratio:.1f}x "
            f"({'PASS' if ratio >= TARGET_VS_POSTGRES else 'MISS'} >= {TARGET_VS_POSTGRES:.0f}x)"
        )
    print("\n".join(lines))
    result = {"summary": lines, "big": big, "one_at_a_time": serial, "plain_insert": plain, "large": large}
    result["postgres"] = pg
    (args.out_dir / "clickhouse.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
