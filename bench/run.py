"""`make bench`: throughput and peak memory of the real CLI, printed as a table and saved as JSON.

    python bench/run.py                                  # everything, full sizes (takes a while)
    python bench/run.py --quick                          # 100k rows everywhere: checks it all runs
    python bench/run.py --sizes 1m,5m --only dry         # some sizes, some cases
    make bench BENCH_ARGS="--sizes 1m --only dry,send"

Cases (``--only``, comma-separated; default all):

- ``dry``: ``backfill validate`` of generated CSV, Parquet and NDJSON.gz files
  (``--sizes``, ``--formats``); rows/s by the child's wall clock, peak RSS;
- ``ga4``: ``backfill validate -m ga4`` of a generated GA4 export (NDJSON.gz, nested params);
- ``access_log``: ``backfill validate -m access-log`` of a gzipped combined access log
  from ``sample_data/make_access_log_samples.py --bench`` (``--access-log-lines``);
- ``send``: ``backfill import`` into ``bench/receiver.py`` answering at once: the send
  phase's rows/s (from the report's timings) and the checkpoint saves' share of it;
- ``latency``: the same with ``--latency-ms`` (300) per request: adaptive concurrency
  against fixed ``--concurrency`` levels;
- ``baseline``: the same events, one per request to ``/api/send`` in a sequential
  loop (``bench/baseline.py``), against the same receiver settings;
- ``requests``: requests and events per request of imports with every feature on
  (a country per visitor, whole visits): generated events with ``--countries``, a
  generated GA4 export, and the shipped GA4, Plausible and events samples
  (``--requests-rows``); Umami charges per request, so fewer is faster there.

Every figure comes from a child process (one per measurement: wall clock, and
peak RSS and CPU from its own ``wait4`` rusage), so it measures exactly what a
user runs. The receiver runs in its own process, pinned to the last CPU; the
importer and the baseline are pinned to the others (``--pin``). Targets are
printed next to the measured numbers as PASS/MISS; nothing is asserted.

Generated inputs are cached in bench/out/ by size, format and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
WEBSITE = "5f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11"
MAPPING = BENCH / "events.yaml"
CASES = ("dry", "ga4", "access_log", "send", "latency", "baseline", "requests")
FORMATS = ("csv", "parquet", "ndjson.gz")
SUFFIX = {"csv": "csv", "parquet": "parquet", "ndjson.gz": "ndjson.gz"}

# Targets (printed as PASS/MISS next to the measured figure).
DRY_TARGET = {"csv": 500_000, "parquet": 500_000}
GA4_TARGET = 150_000
ACCESS_LOG_TARGET = 200_000
ACCESS_LOG_HOST = "www.bakery-demo.example"
RSS_GROWTH_MAX = 1.3
#: Events per request of an import with countries per visitor and whole visits (issue 15).
REQUESTS_TARGET = 100
SEND_TARGET = 20_000
CHECKPOINT_MAX_SHARE = 0.05
ADAPTIVE_MIN_SHARE = 0.90


def parse_count(text: str) -> int:
    """'100k', '1m', '20M', '2000', '1_000_000' -> an int."""
    match = re.fullmatch(r"\s*([\d_.]+)\s*([kKmM]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 2000, 100k, 1m)")
    number = float(match.group(1).replace("_", ""))
    return int(number * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()])


def count_list(text: str) -> list[int]:
    return [parse_count(part) for part in text.split(",") if part.strip()]


def _checkpoint_share(timings: dict[str, Any]) -> float | None:
    """Share of the workers' time spent waiting for a checkpoint write before a request."""
    wait, request = timings.get("checkpoint_wait_s"), timings.get("request_s")
    if wait is None or not request:
        return None
    return wait / (wait + request)


def human(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# --------------------------------------------------------------------------- child processes


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.receiver_cpu: int | None = None
        self.client_cpus: set[int] | None = None
        if args.pin != "none" and len(cpus) >= 2:
            self.receiver_cpu = cpus[-1]
            if args.pin == "split":
                self.client_cpus = set(cpus[:-1])
        self.pinning = (
            f"receiver on CPU {self.receiver_cpu}; importer/baseline on CPU(s) "
            + (",".join(map(str, sorted(self.client_cpus))) if self.client_cpus else "any")
            if self.receiver_cpu is not None
            else "none (" + ("--pin none" if args.pin == "none" else f"{len(cpus) or 'unknown'} CPU(s)") + ")"
        )

    def say(self, text: str) -> None:
        print(text, flush=True)

    def measure(self, args: list[str], *, pinned: bool = False, ok: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
        """Run one child; its wall seconds, its own peak RSS (MB) and CPU seconds (wait4's rusage)."""
        cpus = self.client_cpus if pinned else None
        preexec: Callable[[], None] | None = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.perf_counter()
            proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, preexec_fn=preexec)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the sum of all children
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code not in ok:
            raise SystemExit(f"failed ({code}): {' '.join(args)}\n{stderr[-3000:]}")
        return {
            "wall_s": round(wall, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "exit": code,
            "stdout": stdout,
        }

    # ----------------------------------------------------------------------- inputs

    def events_file(self, rows: int, fmt: str) -> Path:
        path = self.out / f"events-{human(rows)}-seed{self.args.seed}.{SUFFIX[fmt]}"
        if not path.exists():
            self._generate(
                path,
                [BENCH / "generate.py", "--rows", rows, "--format", fmt, "--seed", self.args.seed],
                f"{rows:,} rows of {fmt}",
            )
        return path

    def ga4_file(self, events: int) -> Path:
        path = self.out / f"ga4-{human(events)}-seed{self.args.seed}.json.gz"
        if not path.exists():
            self._generate(
                path,
                [BENCH / "generate_ga4.py", "--events", events, "--seed", self.args.seed],
                f"a GA4 export of {events:,} events",
            )
        return path

    def access_log_file(self, lines: int) -> Path:
        path = self.out / f"access-{human(lines)}.log.gz"
        if not path.exists():
            tmp = path.with_name(path.name + ".part.gz")
            self.say(f"  generating a combined access log of {lines:,} lines -> {path.name} (cached for later runs)")
            generator = ROOT / "sample_data" / "make_access_log_samples.py"
            subprocess.run([PY, str(generator), "--bench", str(tmp), "--lines", str(lines)], check=True, cwd=ROOT)
            os.replace(tmp, path)
        return path

    def _generate(self, path: Path, command: list[Any], what: str) -> None:
        """Write to a temporary name, then rename: an interrupted generation is never reused."""
        tmp = path.with_name(path.name + ".part" + "".join(path.suffixes[-1:]))
        self.say(f"  generating {what} -> {path.name} (cached for later runs)")
        began = time.perf_counter()
        subprocess.run([PY, *map(str, command), "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        os.replace(tmp, path)
        size = path.stat().st_size / 1e6
        self.say(f"  generated in {time.perf_counter() - began:.1f} s ({size:,.0f} MB)")

    # ----------------------------------------------------------------------- dry runs

    def validate(
        self, path: Path, rows: int, label: str, mapping: str, kind: str, extra: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        report = self.out / "validate-report.json"
        result = self.measure(
            [
                PY,
                "-m",
                "backfill",
                "validate",
                str(path),
                "-m",
                mapping,
                "--rejects",
                str(self.out / "validate-rejects.ndjson"),
                "--report",
                str(report),
                "-q",
                *extra,
            ]
        )
        data = json.loads(report.read_text())
        read = data["ledger"]["read"]
        if read != rows:
            self.say(f"  warning: {label}: {read:,} rows read, {rows:,} generated")
        record = {
            "case": label,
            "kind": kind,
            "rows": read,
            "rows_per_s": read / result["wall_s"],
            "rows_per_s_in_process": read / data["elapsed_s"] if data.get("elapsed_s") else None,
            "would_send": data["ledger"]["accepted"],
            "distinct_visitors": data["stats"]["distinct_visitors"],
            **{k: v for k, v in result.items() if k != "stdout"},
        }
        self.results.append(record)
        self.say(
            f"  {label:<34} {record['rows_per_s']:>10,.0f} rows/s  {result['wall_s']:>7.1f} s"
            f"  peak RSS {result['peak_rss_mb']:>6,.0f} MB"
        )
        return record

    def run_dry(self) -> None:
        self.say("== dry run (backfill validate) ==")
        by_format: dict[str, dict[int, dict[str, Any]]] = {}
        for rows in self.args.sizes:
            for fmt in self.args.formats:
                path = self.events_file(rows, fmt)
                rec = self.validate(path, rows, f"validate {fmt} {human(rows)}", str(MAPPING), "dry")
                rec["format"] = fmt
                by_format.setdefault(fmt, {})[rows] = rec
                target = DRY_TARGET.get(fmt)
                self.target(
                    f"dry run {fmt} {human(rows)}",
                    rec["rows_per_s"],
                    f">= {target:,} rows/s" if target else "(no target)",
                    None if target is None else rec["rows_per_s"] >= target,
                    "rows/s",
                )
        for fmt, runs in by_format.items():
            if len(runs) < 2:
                continue
            small, large = min(runs), max(runs)
            ratio = runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"]
            self.target(
                f"peak RSS {fmt} {human(large)} / {human(small)}",
                ratio,
                f"<= {RSS_GROWTH_MAX}x",
                ratio <= RSS_GROWTH_MAX,
                "x",
                detail=f"{runs[large]['peak_rss_mb']:,.0f} MB vs {runs[small]['peak_rss_mb']:,.0f} MB",
            )

    def run_ga4(self) -> None:
        self.say("== dry run, GA4 export (backfill validate -m ga4) ==")
        events = self.args.ga4_events
        path = self.ga4_file(events)
        rec = self.validate(path, events, f"validate GA4 ndjson.gz {human(events)}", "ga4", "ga4")
        self.target(
            f"dry run GA4 ndjson.gz {human(events)}",
            rec["rows_per_s"],
            f">= {GA4_TARGET:,} events/s",
            rec["rows_per_s"] >= GA4_TARGET,
            "events/s",
        )

    def run_access_log(self) -> None:
        self.say("== dry run, gzipped combined access log (backfill validate -m access-log) ==")
        lines = self.args.access_log_lines
        path = self.access_log_file(lines)
        extra = ("--hostname", ACCESS_LOG_HOST)
        rec = self.validate(path, lines, f"validate access log .gz {human(lines)}", "access-log", "access_log", extra)
        self.target(
            f"dry run access log .gz {human(lines)}",
            rec["rows_per_s"],
            f">= {ACCESS_LOG_TARGET:,} lines/s",
            rec["rows_per_s"] >= ACCESS_LOG_TARGET,
            "lines/s",
        )

    # ----------------------------------------------------------------------- sending

    @contextmanager
    def receiver(self, latency_ms: float) -> Any:
        command = [PY, str(BENCH / "receiver.py"), "--port", "0", "--latency-ms", str(latency_ms)]
        if self.receiver_cpu is not None:
            command += ["--cpu", str(self.receiver_cpu)]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("listening on "):
                raise SystemExit(f"bench/receiver.py did not start: {line!r}")
            yield Receiver(line.removeprefix("listening on "))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def send_input(self) -> Path:
        return self.events_file(self.args.send_rows, "csv")

    def import_once(
        self, url: str, rows: int, concurrency: int | None, label: str, receiver: Receiver
    ) -> dict[str, Any]:
        state = self.out / "send-state"
        shutil.rmtree(state, ignore_errors=True)
        report = state / "report.json"
        command = [
            PY,
            "-m",
            "backfill",
            "import",
            str(self.send_input()),
            "-m",
            str(MAPPING),
            "--host",
            url,
            "--website",
            WEBSITE,
            "--state",
            str(state),
            "--rejects",
            str(state / "rejects.ndjson"),
            "--report",
            str(report),
            "-q",
        ]
        if rows < self.args.send_rows:
            command += ["--limit", str(rows)]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        before = receiver.stats()
        result = self.measure(command, pinned=True)
        after = receiver.stats()
        data = json.loads(report.read_text())
        timings = data.get("timings") or {}
        accepted = data["ledger"]["accepted"]
        send_s = timings.get("send_s")
        received = after["elements"] - before["elements"]
        record = {
            "case": label,
            "kind": "send",
            "rows": data["ledger"]["read"],
            "accepted": accepted,
            "received_by_receiver": received,
            "concurrency": concurrency or "adaptive",
            "send_s": send_s,
            "prepare_s": timings.get("prepare_s"),
            "rows_per_s": accepted / send_s if send_s else None,
            "requests": timings.get("requests"),
            "checkpoint_saves": timings.get("checkpoint_saves"),
            "checkpoint_save_s": timings.get("checkpoint_save_s"),
            "checkpoint_wait_s": timings.get("checkpoint_wait_s"),
            # The checkpoint's cost on the critical path: the share of the workers' time spent
            # waiting for a checkpoint write before a request (writes overlap requests in flight).
            "checkpoint_share": _checkpoint_share(timings),
            "receiver_cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
            "receiver_max_connections": after["max_open_connections"],
            **{k: v for k, v in result.items() if k != "stdout"},
        }
        if send_s:
            record["receiver_cpu_share"] = record["receiver_cpu_s"] / send_s
        if received != accepted:
            self.say(f"  warning: the receiver got {received:,} elements, the importer counts {accepted:,} accepted")
        if send_s is None:
            self.say("  warning: the report has no timings.send_s (an older backfill?): no send rate")
        self.results.append(record)
        rate = f"{record['rows_per_s']:>10,.0f} rows/s" if record["rows_per_s"] else "   (no rate)"
        self.say(
            f"  {label:<44} {rate}  send {send_s or 0:>6.1f} s"
            f"  checkpoint {100 * (record['checkpoint_share'] or 0):.1f}%"
            f"  receiver CPU {record['receiver_cpu_s']:.1f} s"
        )
        return record

    def run_send(self) -> None:
        self.say("== send phase, instant receiver ==")
        rows = self.args.send_rows
        with self.receiver(0) as rec:
            record = self.import_once(rec.url, rows, None, f"import {human(rows)}, instant, adaptive", rec)
        rate = record["rows_per_s"] or 0
        self.target(
            f"send ceiling (instant receiver, {human(rows)})",
            rate,
            f">= {SEND_TARGET:,} events/s",
            rate >= SEND_TARGET,
            "events/s",
        )
        share = record["checkpoint_share"]
        if share is not None:
            self.target(
                "checkpoint wait / worker time (instant)",
                100 * share,
                f"< {100 * CHECKPOINT_MAX_SHARE:g}%",
                share < CHECKPOINT_MAX_SHARE,
                "%",
                detail=f"{record['checkpoint_saves']:,} saves for {record['requests']:,} requests;"
                f" {record['checkpoint_wait_s']:.2f} s waited",
            )
        self.instant_send = record

    def run_latency(self) -> None:
        latency = self.args.latency_ms
        self.say(f"== send phase, {latency:g} ms per request: adaptive vs fixed concurrency ==")
        rows = self.args.latency_rows
        levels = self.args.concurrency_levels
        fixed: dict[int, dict[str, Any]] = {}
        with self.receiver(latency) as rec:
            adaptive = self.import_once(rec.url, rows, None, f"import {human(rows)}, {latency:g} ms, adaptive", rec)
            for level in levels:
                # The same rows for every level: batches form per lane, so fewer rows would
                # mean smaller batches (more requests per row), not the same run made shorter.
                fixed[level] = self.import_once(
                    rec.url, rows, level, f"import {human(rows)}, {latency:g} ms, --concurrency {level}", rec
                )
        best_level = max(fixed, key=lambda k: fixed[k]["rows_per_s"] or 0)
        best = fixed[best_level]["rows_per_s"] or 0
        share = (adaptive["rows_per_s"] or 0) / best if best else 0
        adaptive["share_of_best_fixed"] = share
        self.target(
            f"adaptive vs best fixed ({latency:g} ms)",
            100 * share,
            f">= {100 * ADAPTIVE_MIN_SHARE:g}%",
            share >= ADAPTIVE_MIN_SHARE,
            "%",
            detail=f"adaptive {adaptive['rows_per_s'] or 0:,.0f} vs --concurrency {best_level} {best:,.0f} events/s;"
            f" adaptive opened at most {adaptive['receiver_max_connections']} connections",
        )
        self.latency_adaptive = adaptive
        if adaptive["checkpoint_share"] is not None:
            self.target(
                f"checkpoint wait / worker time ({latency:g} ms, adaptive)",
                100 * adaptive["checkpoint_share"],
                f"< {100 * CHECKPOINT_MAX_SHARE:g}%",
                adaptive["checkpoint_share"] < CHECKPOINT_MAX_SHARE,
                "%",
            )

    def run_baseline(self) -> None:
        self.say("== baseline: one event per request to /api/send, sequential (httpx.Client) ==")
        need = max(self.args.baseline_events, self.args.baseline_slow_events)
        payloads = self.out / f"payloads-{human(need)}-seed{self.args.seed}.ndjson"
        if not payloads.exists():
            self.measure(
                [
                    PY,
                    "-m",
                    "backfill",
                    "validate",
                    str(self.send_input()),
                    "-m",
                    str(MAPPING),
                    "--website",
                    WEBSITE,
                    "--limit",
                    str(need),
                    "--rejects",
                    str(self.out / "validate-rejects.ndjson"),
                    "--out",
                    str(payloads),
                    "-q",
                ]
            )
        for latency, events in (
            (0.0, self.args.baseline_events),
            (self.args.latency_ms, self.args.baseline_slow_events),
        ):
            with self.receiver(latency) as rec:
                result = self.measure(
                    [
                        PY,
                        str(BENCH / "baseline.py"),
                        "--url",
                        rec.url,
                        "--payloads",
                        str(payloads),
                        "--events",
                        str(events),
                    ],
                    pinned=True,
                    ok=(0,),
                )
            data = json.loads(result["stdout"].strip().splitlines()[-1])
            label = f"baseline /api/send x{events:,}, {latency:g} ms"
            record = {
                "case": label,
                "kind": "baseline",
                "latency_ms": latency,
                "rows": data["events"],
                "send_s": data["seconds"],
                "rows_per_s": data["events_per_s"],
                "extrapolated_from_sample": latency > 0,
                **{k: v for k, v in result.items() if k != "stdout"},
            }
            self.results.append(record)
            self.say(f"  {label:<44} {record['rows_per_s']:>10,.1f} rows/s  ({data['seconds']:.1f} s)")
            ours = getattr(self, "instant_send", None) if latency == 0 else getattr(self, "latency_adaptive", None)
            if ours and ours.get("rows_per_s"):
                speedup = ours["rows_per_s"] / record["rows_per_s"]
                record["importer_speedup"] = speedup
                self.target(
                    f"speed-up over /api/send loop ({latency:g} ms)",
                    speedup,
                    "(no target)",
                    None,
                    "x",
                    detail=f"{ours['rows_per_s']:,.0f} vs {record['rows_per_s']:,.1f} events/s"
                    + (f"; baseline rate from a {events}-event sample" if latency > 0 else ""),
                )

    # ----------------------------------------------------------------------- targets and output

    def run_requests(self) -> None:
        self.say("== requests per import, instant receiver (countries per visitor, whole visits) ==")
        rows = self.args.requests_rows
        geo = self.out / f"events-geo-{human(rows)}-seed{self.args.seed}.csv"
        if not geo.exists():
            command = [BENCH / "generate.py", "--rows", rows, "--format", "csv", "--seed", self.args.seed]
            self._generate(geo, [*command, "--countries", "--visitors", max(1, rows // 4)], f"{rows:,} rows")
        samples = ROOT / "sample_data"
        inputs = [
            (f"generated {human(rows)}, countries", str(geo), str(BENCH / "events-geo.yaml"), True),
            (f"GA4 generated {human(rows)} events", str(self.ga4_file(rows)), "ga4", False),
            ("GA4 sample", str(samples / "ga4" / "events_*"), "ga4", False),
            ("Plausible events sample", str(samples / "plausible_events" / "events_v2.csv"), "plausible-events", False),
            ("events.csv sample", str(samples / "events.csv"), str(ROOT / "mappings" / "sample_events.yaml"), False),
        ]
        with self.receiver(0) as rec:
            for label, source, mapping, targeted in inputs:
                state = self.out / "requests-state"
                shutil.rmtree(state, ignore_errors=True)
                command = [PY, "-m", "backfill", "import", source, "-m", mapping, "--host", rec.url]
                command += ["--website", WEBSITE, "--state", str(state), "--rejects", str(state / "rejects.ndjson")]
                command += ["--report", str(state / "report.json"), "-q"]
                self.measure(command, pinned=True)
                data = json.loads((state / "report.json").read_text())
                accepted, requests = data["ledger"]["accepted"], (data.get("timings") or {}).get("requests") or 0
                per = accepted / requests if requests else 0.0
                crossing = next((n for n in data.get("notes", []) if n.startswith("visits: ")), "")
                self.results.append(
                    {"case": label, "kind": "requests", "accepted": accepted, "requests": requests, "per_request": per}
                )
                self.say(f"  {label:<40} {accepted:>8,} events {requests:>6,} requests {per:>7.1f} per request")
                self.target(
                    f"events per request: {label}",
                    per,
                    f">= {REQUESTS_TARGET}" if targeted else "(reported)",
                    per >= REQUESTS_TARGET if targeted else None,
                    "",
                    detail=f"{accepted:,} events in {requests:,} requests. {crossing}".strip(),
                )

    def target(self, name: str, value: float, target: str, passed: bool | None, unit: str, *, detail: str = "") -> None:
        self.targets.append(
            {"name": name, "value": value, "unit": unit, "target": target, "pass": passed, "detail": detail}
        )

    def table(self) -> str:
        lines = [f"{'measure':<46} {'value':>14}  {'target':<22} verdict"]
        for t in self.targets:
            value = t["value"]
            if t["unit"] in ("rows/s", "events/s"):
                shown = f"{value:,.0f} {t['unit'].split('/')[0]}/s"
            elif t["unit"] == "%":
                shown = f"{value:.1f}%"
            else:
                shown = f"{value:,.2f}{t['unit']}"
            verdict = "-" if t["pass"] is None else "PASS" if t["pass"] else "MISS"
            lines.append(f"{t['name']:<46} {shown:>14}  {t['target']:<22} {verdict}")
            if t["detail"]:
                lines.append(f"{'':<48}{t['detail']}")
        return "\n".join(lines)


class Receiver:
    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/__stats", timeout=10).json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (100k rows): checks it all runs")
    parser.add_argument("--only", default=",".join(CASES), help=f"cases to run, comma-separated: {','.join(CASES)}")
    parser.add_argument("--sizes", type=count_list, help="dry-run sizes (default 1m,5m,20m; --quick: 100k)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="dry-run formats")
    parser.add_argument("--ga4-events", type=parse_count, help="GA4 export size (default 1m; --quick: 100k)")
    parser.add_argument("--access-log-lines", type=parse_count, help="access log size (default 1m; --quick: 100k)")
    parser.add_argument("--send-rows", type=parse_count, help="rows imported into the instant receiver (default 1m)")
    parser.add_argument("--latency-rows", type=parse_count, help="rows of the adaptive run at --latency-ms (200k)")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="receiver latency per request")
    parser.add_argument("--concurrency-levels", type=count_list, default=[2, 4, 8, 16], help="fixed levels to compare")
    parser.add_argument("--baseline-events", type=parse_count, help="events of the instant baseline (default 20k)")
    parser.add_argument(
        "--baseline-slow-events", type=parse_count, help="events of the baseline at --latency-ms (default 60)"
    )
    parser.add_argument("--requests-rows", type=parse_count, help="generated rows of the requests case (20k)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated inputs (part of the cache key)")
    parser.add_argument(
        "--pin",
        choices=["split", "receiver", "none"],
        default="split",
        help="split: receiver on the last CPU, importer on the others; receiver: pin the receiver only",
    )
    parser.add_argument("--out-dir", type=Path, default=BENCH / "out", help="inputs cache and results.json")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([100_000] if quick else [1_000_000, 5_000_000, 20_000_000])
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = set(args.formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats: {', '.join(sorted(unknown))}")
    args.ga4_events = args.ga4_events or (100_000 if quick else 1_000_000)
    args.access_log_lines = args.access_log_lines or (100_000 if quick else 1_000_000)
    args.send_rows = args.send_rows or (100_000 if quick else 1_000_000)
    args.latency_rows = min(args.send_rows, args.latency_rows or (20_000 if quick else 200_000))
    args.requests_rows = args.requests_rows or 20_000
    args.baseline_events = min(args.send_rows, args.baseline_events or (2_000 if quick else 20_000))
    args.baseline_slow_events = min(args.send_rows, args.baseline_slow_events or (20 if quick else 60))
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if set(only) - set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(set(only) - set(CASES)))} (known: {', '.join(CASES)})")

    bench = Bench(args)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "pinning": bench.pinning,
        "load_average_start": os.getloadavg(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rates": "dry/ga4: rows read / the child's wall clock (startup included); send: accepted / "
        "the report's timings.send_s (the send phase only)",
    }
    bench.say(f"pinning: {bench.pinning}; load average {meta['load_average_start']}")
    began = time.perf_counter()
    for case in CASES:  # a fixed order: the baseline compares with the send runs before it
        if case in only:
            getattr(bench, f"run_{case}")()
    meta["load_average_end"] = os.getloadavg()
    meta["total_s"] = round(time.perf_counter() - began, 1)
    table = bench.table()
    print("\n" + table)
    results_path = args.out_dir / "results.json"
    results_path.write_text(
        json.dumps({"meta": meta, "results": bench.results, "targets": bench.targets, "table": table}, indent=2) + "\n"
    )
    print(f"\nwritten to {results_path} ({meta['total_s']} s; load average at the end {meta['load_average_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
