"""``make bench`` for the database sink: end-to-end import speed, against a plain COPY.

    python bench/database.py                 # 3M rows (countries, revenue), 1M for the memory comparison
    python bench/database.py --rows 200k     # smaller
    make bench-db BENCH_DB_ARGS="--rows 200k"

Starts a throwaway PostgreSQL server with fsync on (tests/pg), creates Umami 3.1's
tables, and measures in one run, on the same machine:

- ``import``: ``backfill import FILE --database-url ...`` as a user runs it (a child
  process: read, check, derive, write, commit), events/s from its wall clock, and
  its peak RSS;
- ``copy``: a plain ``COPY`` of the same ``website_event`` rows (read back from the
  import) into an empty ``website_event`` with all of Umami's indexes: the floor
  a database writer cannot beat; the ratio import/copy says how close we are;
- memory at two sizes (peak RSS should not grow with the input).

Targets (issue 12): >= 8,000 events/s end to end on a 2-core machine. Nothing is
asserted; PASS/MISS is printed next to each figure and results go to
``bench/out/database.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import parse_count  # noqa: E402
from tests.pg import Cluster, why_no_postgres  # noqa: E402

MAPPING = ROOT / "bench" / "events-db.yaml"
TARGET_EVENTS_PER_S = 8_000


def generate(rows: int, out_dir: Path, seed: int) -> Path:
    path = out_dir / f"db-events-{rows}-s{seed}-countries.parquet"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench/generate.py"),
                "--rows",
                str(rows),
                "--visitors",
                str(max(1, rows // 8)),
                "--countries",
                "--format",
                "parquet",
                "--seed",
                str(seed),
                "--out",
                str(path),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def run_import(cluster: Cluster, source: Path, work: Path) -> dict[str, Any]:
    url, website = cluster.new_umami_database()
    report = work / f"report-{source.stem}.json"
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
                "--database-url",
                url,
                "--website",
                website,
                "--rejects",
                str(work / "rejects.ndjson"),
                "--state",
                str(work / f"state-{source.stem}"),
                "--report",
                str(report),
                "--quiet",
                "--restart",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,  # a file, not a pipe: wait4 must not wait on a full pipe
        )
        # This child's own rusage (wait4), not RUSAGE_CHILDREN: the generator ran as a child too.
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    stderr = (work / "stderr.txt").read_text(errors="replace")
    if code not in (0, 1):
        raise SystemExit(f"import failed ({code}): {stderr[-2000:]}")
    data = json.loads(report.read_text())
    accepted = data["ledger"]["accepted"]
    return {
        "url": url,
        "website": website,
        "rows_read": data["ledger"]["read"],
        "accepted": accepted,
        "wall_s": round(wall, 2),
        "events_per_s": round(accepted / wall),
        "write_phase_s": data.get("timings", {}).get("send_s"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }


def plain_copy(cluster: Cluster, source_url: str) -> dict[str, Any]:
    """COPY the imported website_event rows into an empty Umami schema: the database's own floor."""
    import psycopg

    buffer = io.BytesIO()
    with psycopg.connect(source_url) as conn, conn.cursor().copy("COPY website_event TO STDOUT") as copy:
        for chunk in copy:
            buffer.write(chunk)
    rows = buffer.getvalue().count(b"\n")
    target, _ = cluster.new_umami_database()
    began = time.perf_counter()
    with psycopg.connect(target) as conn:
        with conn.cursor().copy("COPY website_event FROM STDIN") as copy:
            view = buffer.getbuffer()
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        conn.commit()
    wall = time.perf_counter() - began
    return {"rows": rows, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=parse_count, default=3_000_000, help="rows of the main run (default 3m)")
    parser.add_argument("--small", type=parse_count, default=1_000_000, help="rows of the memory comparison run (1m)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    reason = why_no_postgres()
    if reason:
        print(f"skipped: {reason}")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = args.out_dir / "database-work"
    work.mkdir(exist_ok=True)
    load_start = os.getloadavg()
    cluster = Cluster.start(durable=True)
    try:
        small = run_import(cluster, generate(args.small, args.out_dir, args.seed), work)
        big = run_import(cluster, generate(args.rows, args.out_dir, args.seed), work)
        copy = plain_copy(cluster, big["url"])
    finally:
        cluster.stop()
    ratio = big["events_per_s"] / copy["rows_per_s"]
    rss_growth = big["peak_rss_mb"] / max(1, small["peak_rss_mb"])
    lines = [
        f"load average at start {load_start}, at end {os.getloadavg()}",
        f"import {big['accepted']:,} events: {big['wall_s']} s, {big['events_per_s']:,} events/s end to end "
        f"({'PASS' if big['events_per_s'] >= TARGET_EVENTS_PER_S else 'MISS'} >= {TARGET_EVENTS_PER_S:,})",
        f"plain COPY of the same {copy['rows']:,} website_event rows: {copy['rows_per_s']:,} rows/s; "
        f"import / COPY = {ratio:.2f}",
        f"peak RSS {small['peak_rss_mb']} MB at {small['accepted']:,} events, {big['peak_rss_mb']} MB at "
        f"{big['accepted']:,}: x{rss_growth:.2f} ({'PASS' if rss_growth <= 1.3 else 'MISS'} <= 1.3)",
    ]
    print("\n".join(lines))
    result = {"small": small, "big": big, "copy": copy, "ratio_to_copy": round(ratio, 3), "rss_growth": rss_growth}
    for run in ("small", "big"):
        result[run].pop("url", None)
    (args.out_dir / "database.json").write_text(json.dumps({"summary": lines, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
