"""The ``backfill`` command: parse flags, call the library once, print, exit.

Exit status: 0 every row accepted (or would be) or skipped by a filter you
asked for; 1 some rows were rejected or are in doubt (see the rejects and
in-doubt files); 2 configuration, mapping or input error (nothing was sent),
or Umami refused the run at its first request for a value every row shares
(website, User-Agent, host, an endpoint it lacks): correct the command, no "to
resume" line; 3 the
run stopped early (an error persisted, a proxy refused, or it was interrupted):
run the same command again to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_options import build_parser
from .config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REJECTS,
    DEFAULT_USER_AGENT,
    MAX_BATCH_SIZE,
    RunConfig,
)
from .errors import BackfillError, ConfigError, SendError
from .pull import PullStopped
from .report import Summary, write_reports
from .runinfo import command_line, run_info
from .umami.limits import CLICKHOUSE, POSTGRES, STORES

EXIT_OK, EXIT_REJECTED, EXIT_CONFIG, EXIT_STOPPED = 0, 1, 2, 3


def _destination(args: argparse.Namespace, host: str | None) -> tuple[str | None, str | None, str | None]:
    """(host, database URL, ClickHouse URL). --host, --database-url or --clickhouse-url: a flag
    given on the command line wins over another's environment variable (UMAMI_HOST is often set
    for verify); --host with a database URL is an error. With --clickhouse-url, --database-url is
    Umami's PostgreSQL, read for the website only."""
    if args.command != "import":
        return host, None, None
    argv = getattr(args, "argv", sys.argv[1:])

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in argv)

    database_url = getattr(args, "database_url", None)
    clickhouse_url = getattr(args, "clickhouse_url", None)
    host_flag = given("--host")
    if not host_flag:
        if database_url is None:
            database_url = os.environ.get("UMAMI_DATABASE_URL")
        if clickhouse_url is None:
            clickhouse_url = os.environ.get("UMAMI_CLICKHOUSE_URL")
    if (database_url or clickhouse_url) and host and not host_flag:
        host = None  # UMAMI_HOST from the environment gives way to a database URL
    if host and clickhouse_url:
        raise ConfigError(
            "pass either --host (send through Umami's API) or --clickhouse-url (write its ClickHouse tables), not both"
        )
    if host and database_url:
        raise ConfigError(
            "pass either --host (send through Umami's API) or --database-url (write its database), not both"
        )
    return host, database_url, clickhouse_url


def config_from_args(args: argparse.Namespace) -> RunConfig:
    host = getattr(args, "host", None)
    website = getattr(args, "website", None)
    if getattr(args, "batch_size", DEFAULT_BATCH_SIZE) > MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size is at most {MAX_BATCH_SIZE} (newer Umami refuses larger batches)")
    host, database_url, clickhouse_url = _destination(args, host)
    dry = args.command == "validate" or not (host or database_url or clickhouse_url)
    if not dry and not website:
        raise ConfigError("--website (or UMAMI_WEBSITE_ID) is required to import into " + str(host or "the database"))
    return RunConfig(
        sources=tuple(args.sources),
        mapping=args.mapping,
        host=host.rstrip("/") if host else None,
        website=website,
        dry_run=dry,
        format=args.format,
        delimiter=args.delimiter,
        encoding=args.encoding,
        decimal_comma=getattr(args, "decimal_comma", False),
        log_format=getattr(args, "log_format", None),
        hostname=getattr(args, "hostname", None),
        search_params=getattr(args, "search_param", None),
        matomo_site=getattr(args, "matomo_site", None),
        w3c_fields=",".join(getattr(args, "w3c_field", None) or []) or None,
        log_timezone=getattr(args, "log_timezone", None),
        since=args.since,
        until=args.until,
        limit=args.limit,
        chunk_rows=getattr(args, "chunk_rows", DEFAULT_CHUNK_ROWS),
        rejects=getattr(args, "rejects", Path(DEFAULT_REJECTS)),
        rejects_format=getattr(args, "rejects_format", "ndjson"),
        out=getattr(args, "out", None),
        report=getattr(args, "report", None),
        state_dir=getattr(args, "state", None),
        restart=getattr(args, "restart", False),
        resend_in_doubt=getattr(args, "resend_in_doubt", False),
        endpoint=getattr(args, "endpoint", "auto"),
        read_back_timeout=getattr(args, "read_back_timeout", 300.0),
        api_url=getattr(args, "api_url", None),
        user_agent=getattr(args, "user_agent", DEFAULT_USER_AGENT),
        batch_size=getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
        max_body_bytes=getattr(args, "max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        concurrency=getattr(args, "concurrency", None),
        rate=getattr(args, "rate", None),
        timeout=getattr(args, "timeout", 60.0),
        insecure=getattr(args, "insecure", False),
        on_error=getattr(args, "on_error", "stop"),
        check_website=getattr(args, "check_website", False),
        geo=args.geo,
        visits=args.visits,
        shard=getattr(args, "shard", None),
        database_url=database_url if not dry else None,
        app_secret=getattr(args, "app_secret", None),
        geoip_db=getattr(args, "geoip_db", None),
        transaction_rows=getattr(args, "transaction_rows", 20_000),
        pull_dir=getattr(args, "pull_dir", None),
        google_credentials=getattr(args, "google_credentials", None),
        ga4_endpoint=getattr(args, "ga4_endpoint", None),
        matomo_token_file=getattr(args, "matomo_token_file", None),
        page_size=getattr(args, "page_size", None),
        quota_wait=getattr(args, "quota_wait", 3600.0),
        clickhouse_url=clickhouse_url if not dry else None,
        insert_rows=getattr(args, "insert_rows", 100_000),
        parallel_inserts=getattr(args, "parallel_inserts", 2),
        skip_website_check=getattr(args, "skip_website_check", False),
        store=_store(args, clickhouse_url),
    )


def _store(args: argparse.Namespace, clickhouse_url: str | None) -> str:
    """Whose limits the rows are checked against: --store, else the destination's."""
    chosen = getattr(args, "store", None)
    if chosen not in STORES:  # not given (verify's auto is resolved when it reads the server)
        return CLICKHOUSE if clickhouse_url else POSTGRES
    if clickhouse_url and chosen != CLICKHOUSE:
        raise ConfigError(f"--store {chosen} contradicts --clickhouse-url: leave --store out, or write elsewhere")
    return chosen


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
                label = {"prepare": "reading", "send": "sending", "pull": "pulling"}.get(stage, stage)
                bar = tqdm(
                    total=total,
                    desc=label,
                    unit=" days" if stage == "pull" else " rows",
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
            unit = "days" if stage == "pull" else "rows"
            print(f"[{stage}] {done:,}{of} {unit} {extra}".rstrip(), file=sys.stderr, flush=True)

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
    if getattr(summary, "refused", False):  # nothing of the run was stored: a configuration error
        return EXIT_CONFIG
    if summary.stopped:
        return EXIT_STOPPED
    if summary.ledger.rejected_total or summary.ledger.in_doubt:
        return EXIT_REJECTED
    return EXIT_OK


def _finish(
    summary: Summary, config: RunConfig, console: Console, args: argparse.Namespace, started: dt.datetime
) -> int:
    console.close()
    shard = getattr(config, "shard", None)  # (K, N) of a --shard K/N run
    if shard is not None and len(shard) == 2:
        summary.shard = (int(shard[0]), int(shard[1]))
    print(summary.render(), flush=True)
    write_reports(summary.to_dict() | {"run": run_info(args.argv, started)}, config.report, args.html)
    return _exit_status(summary)


def run_command(args: argparse.Namespace) -> int:
    if args.command == "verify":
        return _run_verify(args)
    if args.command == "report":  # reads report files only: no sources, no mapping
        from .report_merge import run_html, run_merge

        if args.report_command == "html":
            return run_html(args.reports, args.out)
        return run_merge(args.reports, args.out, args.html)
    from . import api, importing

    console = Console(getattr(args, "quiet", False), getattr(args, "verbose", False))
    if args.command == "inspect":
        from .inspect import inspect_source

        log_options = {
            "log_format": args.log_format,
            "hostname": args.hostname,
            "search_params": args.search_param,
            "w3c_fields": ",".join(args.w3c_field or []) or None,
            "log_timezone": args.log_timezone,
        }
        plugin_options = tuple((k, v) for k, v in log_options.items() if v)
        text, suggestion = inspect_source(
            args.source, args.format, args.delimiter, args.encoding, args.rows, plugin_options
        )
        print(text, file=sys.stderr)
        print(suggestion)
        return EXIT_OK
    started = dt.datetime.now(dt.UTC)
    config = config_from_args(args)
    _say_mapping_choice(args.mapping, console)
    stop = threading.Event()
    _install_stop_handlers(stop, console)
    if config.dry_run:
        if args.command == "import":
            print(
                "DRY RUN: no Umami host or database configured (--host/UMAMI_HOST or "
                "--database-url/UMAMI_DATABASE_URL); nothing will be sent.",
                flush=True,
            )
        summary = api.dry_run(config, console.progress, stop, say=console.say)
        return _finish(summary, config, console, args, started)
    if config.insecure:
        console.say("warning: --insecure: TLS certificates are not verified")
    summary = importing.run_import(config, console.progress, stop, say=console.say)
    if summary.stopped and getattr(summary, "resumable", True):  # only where the same command can succeed
        summary.resume_command = command_line(sys.argv[1:])
    return _finish(summary, config, console, args, started)


def _say_mapping_choice(name: str, console: Console) -> None:
    """Say which of a preset and a file of the same name ``-m`` took (nothing when only one exists)."""
    from .mapping import resolve_mapping

    note = resolve_mapping(name)[1]
    if note:
        console.say(f"note: {note}")


def _run_verify(args: argparse.Namespace) -> int:
    """``backfill verify``: 0 match, 1 differences, 2 configuration or connection errors."""
    from .verify import Tolerance, VerifySettings, render, run_verify

    if not args.host:
        raise ConfigError("verify reads Umami: pass --host (or set UMAMI_HOST)")
    if not args.website:
        raise ConfigError("verify needs the website: pass --website (or set UMAMI_WEBSITE_ID)")
    started = dt.datetime.now(dt.UTC)
    console = Console(args.quiet, False)
    _say_mapping_choice(args.mapping, console)
    # The same reading, selection and shaping as the import; verify's --report is its own.
    config = dataclasses.replace(config_from_args(args), dry_run=True, report=None, out=None)
    settings = VerifySettings(
        host=config.host or "",
        website=args.website,
        timezone=args.timezone,
        api_url=args.api_url,
        tolerance=Tolerance.parse(args.tolerance) if args.tolerance is not None else None,
        top=args.top,
        insecure=args.insecure,
        timeout=args.timeout,
        store=args.store,
    )
    if args.insecure:
        console.say("warning: --insecure: TLS certificates are not verified")
    try:
        result = run_verify(config, settings, console.progress, say=console.say)
    except SendError as exc:  # a refused login or read: nothing to compare
        console.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    console.close()
    print(render(result, color=sys.stdout.isatty(), all_days=args.verbose), flush=True)
    write_reports(result.to_dict() | {"run": run_info(args.argv, started)}, args.report, args.html)
    return EXIT_OK if result.matches else EXIT_REJECTED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_command(args)
    except PullStopped as exc:  # a quota or an unreachable API: the pulled days are kept
        print(f"stopped: {exc}", file=sys.stderr)
        print("to continue: " + command_line(args.argv), file=sys.stderr)
        return EXIT_STOPPED
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
