"""``/api/batch`` against ``/api/send`` on a running Umami, side by side in one run.

    python bench/endpoints.py --host http://127.0.0.1:3000 \\
        --website-batch <uuid> --website-send <uuid> --rows 5000 --rounds 2

Imports the same generated file (``bench/generate.py --countries``: revenue,
event data, a country per visitor) with ``backfill import --endpoint batch``
into one website and ``--endpoint send`` into the other, alternating rounds so
both see the same server conditions (each round uses a fresh state directory;
the websites then hold the events once per round). ``--send-concurrency 4,8,16``
adds fixed-concurrency send runs next to the adaptive ones, to see where the
knee lies. Prints one line per import and a summary: events/s of the send phase
(from the report's ``timings``) and the hours a million events would take.
Needs a real Umami: the fake server answers far faster than Umami stores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--website-batch", required=True)
    parser.add_argument("--website-send", required=True)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--send-concurrency", default="", help="fixed levels for extra send runs, e.g. 4,8,16")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
    source = work / "events.csv"
    generate = [sys.executable, ROOT / "bench/generate.py", "--rows", str(args.rows), "--format", "csv"]
    generate += ["--countries", "--visitors", str(max(1, args.rows // 5)), "--out", str(source)]
    subprocess.run(generate, check=True, stdout=subprocess.DEVNULL)
    runs: list[tuple[str, list[str], str]] = [("batch", ["--endpoint", "batch"], args.website_batch)]
    runs.append(("send", ["--endpoint", "send"], args.website_send))
    for level in filter(None, args.send_concurrency.split(",")):
        runs.append((f"send c={level}", ["--endpoint", "send", "--concurrency", level], args.website_send))
    rates: dict[str, list[float]] = {}
    for round_no in range(args.rounds):
        for label, extra, website in runs:
            rate = _import(source, args.host, website, extra, work / f"{round_no}-{label.replace(' ', '')}")
            rates.setdefault(label, []).append(rate)
            print(f"round {round_no + 1} {label:12} {rate:8.1f} events/s", flush=True)
    print(f"\n{'endpoint':12} {'events/s (median)':>18} {'hours per million':>18}")
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"{label:12} {median:18.1f} {1e6 / median / 3600:18.1f}")
    return 0


def _import(source: Path, host: str, website: str, extra: list[str], state: Path) -> float:
    report = state / "report.json"
    command = [sys.executable, "-m", "backfill", "import", str(source), "-m", str(ROOT / "bench/events-geo.yaml")]
    command += ["--host", host, "--website", website, "--rejects", str(state / "rejects.ndjson")]
    command += ["--report", str(report), "--quiet", *extra]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, cwd=ROOT)
    summary = json.loads(report.read_text())
    accepted = summary["ledger"]["accepted"]
    return accepted / max(summary["timings"]["send_s"], 1e-9)


if __name__ == "__main__":
    sys.exit(main())
