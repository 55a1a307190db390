"""`make bench`: throughput and peak memory of the real CLI, printed as a table and saved as JSON.

    python bench/run.py                 # dry run at 1M and 5M CSV rows, send against the fake Umami
    python bench/run.py --rows 1000000  # one size only
    python bench/run.py --quick         # 200k rows, for a smoke run

Figures come from child processes (wall clock, and peak RSS from getrusage), so
they measure exactly what a user runs. Nothing here is asserted: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
WEBSITE = "5f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11"


def generate(rows: int, fmt: str) -> Path:
    suffix = {"csv": "csv", "parquet": "parquet", "ndjson.gz": "ndjson.gz"}[fmt]
    path = OUT / f"events-{rows}.{suffix}"
    if not path.exists():
        subprocess.run(
            [PY, str(ROOT / "bench" / "generate.py"), "--rows", str(rows), "--format", fmt, "--out", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def measure(args: list[str]) -> dict[str, float]:
    """Run one child; its wall seconds and its own peak RSS in MB (wait4's rusage)."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{err.decode()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def bench_validate(rows: int, fmt: str) -> dict[str, object]:
    path = generate(rows, fmt)
    result = measure(
        [
            PY,
            "-m",
            "backfill",
            "validate",
            str(path),
            "-m",
            str(ROOT / "bench" / "events.yaml"),
            "--rejects",
            str(OUT / "rejects.ndjson"),
            "-q",
        ]
    )
    return {"case": f"validate {fmt} {rows:,}", "rows": rows, "rows_per_s": rows / result["wall_s"], **result}


def bench_send(rows: int, latency_ms: float, concurrency: int | None) -> dict[str, object]:
    """Import against the fake Umami in another process (it answers from memory)."""
    path = generate(rows, "csv")
    port = 18765 + int(latency_ms) + (concurrency or 0)
    server = subprocess.Popen(
        [PY, "-m", "tests.fake_umami", "--port", str(port), "--website", WEBSITE, "--latency-ms", str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "listening on ..."
        state = OUT / f"state-{port}"
        subprocess.run(["rm", "-rf", str(state)], check=True)
        args = [
            PY,
            "-m",
            "backfill",
            "import",
            str(path),
            "-m",
            str(ROOT / "bench" / "events.yaml"),
            "--host",
            f"http://127.0.0.1:{port}",
            "--website",
            WEBSITE,
            "--state",
            str(state),
            "--rejects",
            str(OUT / f"send-rejects-{port}.ndjson"),
            "-q",
            "--report",
            str(state / "report.json"),
        ]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        result = measure(args)
        report = json.loads((state / "report.json").read_text())
    finally:
        server.terminate()
        server.wait(timeout=10)
    label = f"import csv {rows:,}, {latency_ms:g} ms latency, " + (
        f"concurrency {concurrency}" if concurrency else "adaptive"
    )
    accepted = report["ledger"]["accepted"]
    return {"case": label, "rows": rows, "rows_per_s": rows / result["wall_s"], "accepted": accepted, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="dry-run sizes (default 1M and 5M)")
    parser.add_argument("--quick", action="store_true", help="200k rows only")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = [200_000] if args.quick else (args.rows or [1_000_000, 5_000_000])
    results = []
    for rows in sizes:
        for fmt in ("csv", "parquet"):
            results.append(bench_validate(rows, fmt))
            print(_row(results[-1]), flush=True)
    send_rows = 50_000 if args.quick else 200_000
    for latency, concurrency in ((0, None), (300, None), (300, 4)):
        results.append(bench_send(send_rows if latency == 0 else send_rows // 10, latency, concurrency))
        print(_row(results[-1]), flush=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    (OUT / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwritten to {OUT / 'results.json'}")


def _row(r: dict[str, object]) -> str:
    return (
        f"{r['case']:<55} {r['rows_per_s']:>12,.0f} rows/s  {r['wall_s']:>7.1f} s  peak RSS {r['peak_rss_mb']:>6.0f} MB"
    )


if __name__ == "__main__":
    main()
