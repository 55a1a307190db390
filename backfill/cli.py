"""The ``backfill`` command: parse flags, call the library once, print, exit.

Exit status: 0 every row accepted (or would be) or skipped by a filter you
asked for; 1 some rows were rejected or are in doubt (see the rejects and
in-doubt files); 2 configuration, mapping or input error (nothing was sent);
3 the run stopped early (Umami refused the run, an error persisted, or it was
interrupted): run the same command again to resume.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REJECTS,
    DEFAULT_USER_AGENT,
    MAX_BATCH_SIZE,
    RunConfig,
)
from .errors import BackfillError, ConfigError, SendError
from .report import Summary
from .sources import known_formats

EXIT_OK, EXIT_REJECTED, EXIT_CONFIG, EXIT_STOPPED = 0, 1, 2, 3

EPILOG = """exit status: 0 clean; 1 some rows rejected or in doubt; 2 configuration,
mapping or input error (nothing sent); 3 stopped early (run the same command
again to resume).
environment: UMAMI_HOST, UMAMI_WEBSITE_ID (for --host/--website); UMAMI_API_KEY or
UMAMI_USERNAME + UMAMI_PASSWORD (for --check-website; never printed or stored)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _time_arg(value: str) -> int:
    """--since/--until: a date or ISO time; naive values are UTC (said in --help)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date or ISO time (e.g. 2024-01-01 or 2024-01-01T00:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return number


def _add_read_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading")
    group.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="files, globs or directories (.gz/.zst read directly)",
    )
    group.add_argument("--format", choices=known_formats(), help="input format (default: detect)")
    group.add_argument("--delimiter", help="CSV field delimiter (default ',' or tab for .tsv)")
    group.add_argument("--encoding", help="CSV text encoding, e.g. latin-1, utf-16 (default utf-8)")


def _add_run_options(parser: argparse.ArgumentParser, *, rejects_default: str) -> None:
    parser.add_argument("--mapping", "-m", required=True, help="mapping YAML file, or a preset name from mappings/")
    group = parser.add_argument_group("selecting rows")
    group.add_argument("--since", type=_time_arg, help="only events at or after this time (UTC if naive)")
    group.add_argument("--until", type=_time_arg, help="only events before this time (UTC if naive)")
    group.add_argument("--limit", type=_positive_int, help="read at most N rows in all")
    out = parser.add_argument_group("output")
    out.add_argument("--rejects", type=Path, default=Path(rejects_default), help="file of refused rows")
    out.add_argument("--rejects-format", choices=["ndjson", "csv"], default="ndjson", help="format of the rejects file")
    out.add_argument("--out", type=Path, help="write the exact payloads (one /api/batch element per line)")
    out.add_argument("--report", type=Path, help="write the summary as JSON")
    verbosity = out.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="print more detail")


def _add_send_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sending")
    group.add_argument(
        "--host",
        default=os.environ.get("UMAMI_HOST"),
        help="Umami URL (env UMAMI_HOST); none = dry run",
    )
    group.add_argument(
        "--website",
        default=os.environ.get("UMAMI_WEBSITE_ID"),
        help="website UUID (env UMAMI_WEBSITE_ID)",
    )
    group.add_argument(
        "--state",
        type=Path,
        help="checkpoint directory (default: .backfill-state next to --rejects)",
    )
    group.add_argument(
        "--restart",
        action="store_true",
        help="discard the checkpoint and import from the start (duplicates what was sent)",
    )
    group.add_argument(
        "--resend-in-doubt",
        action="store_true",
        help="send rows left in doubt by a crash again: risks duplicates (not resending risks gaps)",
    )
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"events per request (max {MAX_BATCH_SIZE})",
    )
    group.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="request body cap (proxy limit)",
    )
    group.add_argument("--concurrency", type=_positive_int, help="requests in flight (default: adaptive, from 2)")
    group.add_argument("--rate", type=float, help="cap in events per second (default: none)")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")
    group.add_argument(
        "--on-error",
        choices=["stop", "reject"],
        default="stop",
        help="when retries run out: stop the run, or reject the batch's rows",
    )
    group.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    group.add_argument(
        "--check-website",
        action="store_true",
        help="before sending, confirm the website exists (needs UMAMI_API_KEY, or UMAMI_USERNAME and UMAMI_PASSWORD)",
    )
    group.add_argument(
        "--user-agent",
        default=DEFAULT_USER_AGENT,
        help="User-Agent for rows without one (must pass Umami's bot check)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backfill",
        description="Move historical analytics into Umami through its HTTP API.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"umami-backfill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser(
        "import",
        help="send events to Umami (a dry run when no --host is set)",
        description="Read SOURCE files, map and validate them, and send them to Umami's /api/batch. "
        "With no --host (or UMAMI_HOST) this is a dry run and says so. Re-running the same command "
        "resumes an interrupted import.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _add_read_options(imp)
    _add_run_options(imp, rejects_default=DEFAULT_REJECTS)
    _add_send_options(imp)

    val = sub.add_parser(
        "validate",
        help="dry run: read, map and validate everything, send nothing, report",
        description="Read every row, apply the mapping, check it against Umami's rules and print the "
        "ledger. Nothing is sent. --out writes the payloads an import would send.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _add_read_options(val)
    _add_run_options(val, rejects_default="validate-rejects.ndjson")
    val.add_argument(
        "--website",
        default=os.environ.get("UMAMI_WEBSITE_ID"),
        help="website UUID for --out payloads",
    )

    ins = sub.add_parser(
        "inspect",
        help="describe a file and suggest a mapping",
        description="Columns, types, null counts, sample rows and time ranges of a source, then a "
        "suggested mapping YAML on stdout (the description goes to stderr).",
        formatter_class=_Formatter,
    )
    ins.add_argument("source", metavar="SOURCE", help="a file (or a directory/glob: its first data file)")
    ins.add_argument("--format", choices=known_formats(), help="input format (default: detect)")
    ins.add_argument("--delimiter", help="CSV field delimiter (default ',' or tab for .tsv)")
    ins.add_argument("--encoding", help="CSV text encoding, e.g. latin-1, utf-16 (default utf-8)")
    ins.add_argument("--rows", type=_positive_int, default=10_000, help="rows to sample")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    host = getattr(args, "host", None)
    website = getattr(args, "website", None)
    if getattr(args, "batch_size", DEFAULT_BATCH_SIZE) > MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size is at most {MAX_BATCH_SIZE} (newer Umami refuses larger batches)")
    dry = args.command == "validate" or not host
    if not dry and not website:
        raise ConfigError("--website (or UMAMI_WEBSITE_ID) is required to send to " + str(host))
    return RunConfig(
        sources=tuple(args.sources),
        mapping=args.mapping,
        host=host.rstrip("/") if host else None,
        website=website,
        dry_run=dry,
        format=args.format,
        delimiter=args.delimiter,
        encoding=args.encoding,
        since=args.since,
        until=args.until,
        limit=args.limit,
        rejects=args.rejects,
        rejects_format=args.rejects_format,
        out=args.out,
        report=args.report,
        state_dir=getattr(args, "state", None),
        restart=getattr(args, "restart", False),
        resend_in_doubt=getattr(args, "resend_in_doubt", False),
        user_agent=getattr(args, "user_agent", DEFAULT_USER_AGENT),
        batch_size=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
        max_body_bytes=getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        concurrency=getattr(args, "concurrency", None),
        rate=getattr(args, "rate", None),
        timeout=getattr(args, "timeout", 60.0),
        insecure=getattr(args, "insecure", False),
        on_error=getattr(args, "on_error", "stop"),
        check_website=getattr(args, "check_website", False),
    )


class Console:
    """Progress and messages on stderr; a tqdm bar on a terminal, a log line every 10 s otherwise."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.tty = sys.stderr.isatty()
        self._bars: dict[str, Any] = {}
        self._last_log = time.monotonic()

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def progress(self, stage: str, done: int, total: int | None, extra: str = "") -> None:
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            bar = self._bars.get(stage)
            if bar is None:
                self.close()  # one stage at a time: reading is over once sending starts
                label = {"prepare": "reading", "send": "sending"}.get(stage, stage)
                bar = tqdm(
                    total=total,
                    desc=label,
                    unit=" rows",
                    unit_scale=True,
                    file=sys.stderr,
                    dynamic_ncols=True,
                )
                self._bars[stage] = bar
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            if extra:
                bar.set_postfix_str(extra, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= 10:
            self._last_log = now
            of = f" of {total:,}" if total else ""
            print(f"[{stage}] {done:,}{of} rows {extra}".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _install_stop_handlers(stop: threading.Event, console: Console) -> None:
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.say(
            f"\n{signal.Signals(signum).name}: finishing requests in flight and saving the checkpoint (again to abort)"
        )

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _exit_status(summary: Summary) -> int:
    if summary.stopped:
        return EXIT_STOPPED
    if summary.ledger.rejected_total or summary.ledger.in_doubt:
        return EXIT_REJECTED
    return EXIT_OK


def _finish(summary: Summary, config: RunConfig, console: Console) -> int:
    console.close()
    print(summary.render(), flush=True)
    if config.report is not None:
        config.report.parent.mkdir(parents=True, exist_ok=True)
        config.report.write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return _exit_status(summary)


def run_command(args: argparse.Namespace) -> int:
    from . import api

    console = Console(getattr(args, "quiet", False), getattr(args, "verbose", False))
    if args.command == "inspect":
        from .inspect import inspect_source

        text, suggestion = inspect_source(args.source, args.format, args.delimiter, args.encoding, args.rows)
        print(text, file=sys.stderr)
        print(suggestion)
        return EXIT_OK
    config = config_from_args(args)
    stop = threading.Event()
    _install_stop_handlers(stop, console)
    if config.dry_run:
        if args.command == "import":
            print(
                "DRY RUN: no Umami host configured (--host or UMAMI_HOST); nothing will be sent.",
                flush=True,
            )
        summary = api.dry_run(config, console.progress, stop)
        return _finish(summary, config, console)
    if config.insecure:
        console.say("warning: --insecure: TLS certificates are not verified")
    summary = api.run_import(config, console.progress, stop, say=console.say)
    if summary.stopped:
        summary.resume_command = "backfill " + shlex.join(sys.argv[1:])
    return _finish(summary, config, console)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except SendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except BackfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print(
            "interrupted: run the same command again to resume (an import keeps its checkpoint; "
            "one stopped while reading its input starts that reading over, nothing was sent yet)",
            file=sys.stderr,
        )
        return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
