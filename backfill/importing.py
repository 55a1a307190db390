"""An import: prepare the input (or resume a prepared one), deliver it to the chosen
sink, and sum up what happened.

``run_import`` resumes from the checkpoint of an earlier run of the same import
(refusing one that belongs to another import), prepares the input with
:func:`backfill.api.prepare` when it has not been, hands the sorted runs to the sink
(a database sink may take them while they are prepared: :mod:`.early_delivery`) and
returns an :class:`ImportSummary` whose ledger adds up across resumed runs. The
sinks themselves live in :mod:`.sinks`; this module only chooses one and keeps the
books around it.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import Plan, Prepared, ProgressFn, plan, prepare, visit_notes, visits_mode
from .config import RunConfig
from .errors import ConfigError, SendError
from .geo import sends_ip
from .ledger import Ledger
from .mapping import Mapping
from .rejects import RecordFile
from .report import Summary
from .transform import DEFAULT_LANES
from .umami.api import RunRefusedError

#: Sinks that write Umami's database directly (every row once, no "in doubt").
DATABASE_SINKS = ("postgres", "clickhouse")


@dataclass
class ImportSummary(Summary):
    """A run summary that also says whether running the same command again can help."""

    #: False after a refusal that only a changed command can get past (wrong website,
    #: User-Agent or host): then no "to resume" line is printed, only what to change.
    resumable: bool = True
    #: Umami refused the run as a whole before storing anything of it (exit 2).
    refused: bool = False


def run_import(
    config: RunConfig,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> Summary:
    """Send to Umami, resuming from the checkpoint of an earlier run of the same import."""
    from . import early_delivery
    from .checkpoint import Checkpoint, compare_fingerprint, fingerprint_files
    from .early_delivery import EarlyDelivery
    from .sinks import Delivery, SendOutcome, SendProgress

    started = time.monotonic()
    stop = stop or threading.Event()
    say = say or (lambda _m: None)
    plan_ = plan(config, progress, stop, say)
    sink = choose_sink(config, plan_.mapping)
    sink.preflight(say)
    state_dir = config.resolved_state_dir
    checkpoint_path = state_dir / "checkpoint.json"
    fingerprint = {
        "files": fingerprint_files([f.path for f in plan_.files]),
        "mapping": plan_.mapping.digest,
        **sink.destination(),
        "lanes": DEFAULT_LANES,
        "selection": {"since": config.since, "until": config.until, "limit": config.limit},
        "user_agent": config.user_agent,
        "geo": config.geo,
        "visits": visits_mode(config, plan_.mapping),
        "shard": list(config.shard) if config.shard else None,
    }
    if config.decimal_comma:  # --decimal-comma reads numbers differently: like a mapping edit
        fingerprint["decimal_comma"] = True
    reader = {k: v for k, v in plan_.read_options.plugin_options if k != "send_ip"}  # (--geo is there)
    if reader:  # --log-format, --hostname, ...: they change what is read
        fingerprint["reader"] = reader
    rejects = RecordFile(config.rejects, config.rejects_format)
    in_doubt = RecordFile(config.in_doubt_path)
    checkpoint = None if config.restart else Checkpoint.load(checkpoint_path)
    carried: tuple[int, int] | None = None  # record-file offsets of a checkpoint that sent nothing
    if checkpoint is not None:
        changes = compare_fingerprint(checkpoint.fingerprint, fingerprint)
        if changes and _sent_nothing(checkpoint, state_dir):
            say(
                f"the import in {state_dir} never reached Umami ({'; '.join(changes)}):"
                " preparing it again with the new settings"
            )
            carried = (checkpoint.rejects_offset, checkpoint.in_doubt_offset)
            checkpoint = None
        elif changes:
            raise ConfigError(
                f"the checkpoint in {state_dir} belongs to a different import: "
                + "; ".join(changes)
                + ". Resuming would mix two imports. Run with --restart to start over "
                "(rows already sent would be sent again), or use another --state directory."
            )
    if config.restart:
        _start_over(state_dir, [config.rejects, config.in_doubt_path], say)
    if (
        checkpoint is not None
        and checkpoint.phase == "complete"
        and not (config.resend_in_doubt and checkpoint.in_doubt_ranges)
    ):
        prepared = Prepared.from_dict(checkpoint.prepared)
        summary = _import_summary(config, plan_, prepared, checkpoint.send_ledger, Ledger(), 0)
        summary.destination = sink.destination()
        again = (
            "--restart writes it again and adds nothing (every row's id is already there)"
            if sink.kind in DATABASE_SINKS
            else "--restart imports again and duplicates what was sent"
        )
        summary.notes.append(f"nothing to do: this import already completed (checkpoint {checkpoint_path}); {again}")
        return summary
    prepared_now = False
    prepare_s: float | None = None
    early: EarlyDelivery | None = None

    def send_progress(p: SendProgress) -> None:
        if progress:
            extra = f"{p.events_per_second:,.0f} ev/s"
            if sink.kind == "http":
                extra += f", {p.concurrency} in flight"
            if p.rejected or p.in_doubt:
                extra += f", {p.rejected:,} rejected, {p.in_doubt:,} in doubt"
            progress("send", _sent_so_far(checkpoint), prepared.runs.rows, extra)

    if checkpoint is not None and checkpoint.phase in ("sending", "complete"):
        prepared = Prepared.from_dict(checkpoint.prepared)
        missing = prepared.runs.missing()
        if missing:
            raise ConfigError(f"prepared data of the checkpoint is missing ({missing[0]}); run with --restart")
        say(f"resuming the import from {checkpoint_path}")
        if note := prepared.visits.foreign_hash_note():
            say(note)
    else:
        if checkpoint is None:
            checkpoint = Checkpoint.new(fingerprint, DEFAULT_LANES)
            checkpoint.rejects_offset, checkpoint.in_doubt_offset = carried or (rejects.offset(), in_doubt.offset())
            checkpoint.save(checkpoint_path)
        # A prepare cut short by a crash is redone from scratch: drop what it wrote.
        rejects.truncate(checkpoint.rejects_offset)
        spill = state_dir / "prepared"
        shutil.rmtree(spill, ignore_errors=True)
        began = time.monotonic()
        if early_delivery.suits(sink, exact_visits=visits_mode(config, plan_.mapping) == "exact"):
            paths = [f.path for f in plan_.files]
            early = EarlyDelivery.start(sink, paths, checkpoint, state_dir, config.rejects_format, in_doubt)
        try:
            prepared = prepare(
                plan_,
                spill,
                rejects,
                progress,
                stop,
                as_columns=sink.kind in DATABASE_SINKS,
                on_run=early.feed.add if early is not None else None,
            )
        except BaseException:
            if early is not None:
                early.abandon()
            raise
        prepare_s = time.monotonic() - began
        prepared_now = True
        checkpoint.rejects_offset = rejects.sync()
        checkpoint.prepared = prepared.to_dict()
        checkpoint.phase = "sending"
        if early is None:
            checkpoint.save(checkpoint_path)
        else:  # saves the checkpoint (and from now on the early run does)
            early.finish(prepared.runs.ordered, checkpoint, checkpoint_path, rejects, send_progress)

    carrying_on = early if early is not None and early.adopted else None  # the early run goes on
    run_ledger = carrying_on.run_ledger if carrying_on is not None else Ledger()
    sendable = prepared.runs.rows

    stopped: str | None = None
    refused = False
    outcome: SendOutcome | None = None
    try:
        delivery = Delivery(prepared, checkpoint, checkpoint_path, rejects, in_doubt, run_ledger, send_progress, stop)
        outcome = carrying_on.deliver_rest(delivery, stop) if carrying_on is not None else sink.deliver(delivery)
        if outcome.interrupted:
            stopped = "interrupted: the checkpoint is saved"
        elif outcome.error:
            stopped = outcome.error
    except SendError as exc:
        stopped = str(exc)
        refused = isinstance(exc, RunRefusedError)
        outcome = getattr(exc, "outcome", None)
    finally:
        rejects.close()
        in_doubt.close()
    pending = max(0, sendable - _sent_so_far(checkpoint))
    if prepared_now:  # this run's own rejects and skips count in "this run" too
        run_ledger.skipped.update(prepared.ledger.skipped)
        for reason, count in prepared.ledger.rejected.items():
            run_ledger.reject(reason, count, prepared.ledger.examples.get(reason))
    summary = _import_summary(config, plan_, prepared, checkpoint.send_ledger, run_ledger, pending)
    summary.destination = sink.destination()
    summary.elapsed_s = time.monotonic() - started
    summary.stopped = stopped
    if sink.kind in DATABASE_SINKS:
        summary.accepted_label = "stored in database"
    if refused:
        summary.refused, summary.resumable = True, False
        summary.stopped = f"Umami refused the run: {stopped}"
        if run_ledger.accepted == 0 and not run_ledger.in_doubt:
            summary.notes.append(
                "nothing of this run was stored and Umami rejected no row: correct the value named"
                " below and run the corrected command (it continues this import; the rows are not sent yet)"
            )
    summary.notes.extend(prepared.notes)
    summary.notes.extend(visit_notes(prepared, sending=True))
    if early is not None:
        summary.notes.append(early.note())
    if outcome is not None:
        summary.notes.extend(outcome.notes)
    summary.timings = _send_timings(prepare_s, outcome)
    return summary


def choose_sink(config: RunConfig, mapping: Mapping) -> Any:
    """The import's destination: Umami's ClickHouse with --clickhouse-url, its PostgreSQL with
    --database-url, else its HTTP API."""
    writes_database = bool(config.database_url or config.clickhouse_url)
    if writes_database and sends_ip(config.geo) and "ip" in mapping.fields and config.geoip_db is None:
        raise ConfigError(
            "the mapping sends an ip, which Umami looks up in its GeoLite2 database; writing into the "
            "database needs the same file: pass --geoip-db PATH (GeoLite2-City.mmdb), or --geo headers "
            "(location from mapped country/region/city) or --geo off"
        )
    # What both database sinks derive Umami's rows with (DatabaseSettings).
    derivation = {
        "website": str(config.website),
        "user_agent": config.user_agent,
        "app_secret": config.app_secret,
        "geoip_db": config.geoip_db,
        "exact_visits": visits_mode(config, mapping) == "exact",
    }
    if config.clickhouse_url:
        from .sinks.clickhouse import ClickHouseSettings, ClickHouseSink

        return ClickHouseSink(
            ClickHouseSettings(
                url=config.clickhouse_url,
                **derivation,
                insert_rows=config.insert_rows,
                parallel_inserts=config.parallel_inserts,
                database_url=config.database_url,
                skip_website_check=config.skip_website_check,
                timeout=max(config.timeout, 300.0),
                insecure=config.insecure,
            )
        )
    if config.database_url:
        from .sinks.postgres import PostgresSettings, PostgresSink

        return PostgresSink(
            PostgresSettings(url=config.database_url, **derivation, transaction_rows=config.transaction_rows)
        )
    from .sinks.http import HttpSink, SendSettings

    settings = SendSettings(
        host=str(config.host),
        website=str(config.website),
        user_agent=config.user_agent,
        batch_size=config.batch_size,
        max_body_bytes=config.max_body_bytes,
        concurrency=config.concurrency,
        rate=config.rate,
        max_attempts=config.max_attempts,
        timeout=config.timeout,
        insecure=config.insecure,
        on_error=config.on_error,
        resend_in_doubt=config.resend_in_doubt,
        lanes=DEFAULT_LANES,
        endpoint=config.endpoint,
        api_url=config.api_url,
        read_back_timeout=config.read_back_timeout,
    )
    return HttpSink(settings, check_website=config.check_website)


def _send_timings(prepare_s: float | None, outcome: Any) -> dict[str, float]:
    """Phase durations for the report: this run's prepare (if it ran) and send phase,
    and how much of the send phase went into checkpoint saves."""
    timings: dict[str, float] = {} if prepare_s is None else {"prepare_s": prepare_s}
    if outcome is not None:
        timings |= {
            "send_s": outcome.elapsed_s,
            "requests": outcome.requests,
            "checkpoint_saves": outcome.checkpoint_saves,
            "checkpoint_save_s": outcome.checkpoint_save_s,
            "checkpoint_wait_s": outcome.checkpoint_wait_s,
            "request_s": outcome.request_s,
        }
    return timings


def _start_over(state_dir: Path, record_files: list[Path], say: Callable[[str], None]) -> None:
    """--restart: a new import gets a new ledger, so its record files start empty too;
    the old ones are kept beside them, renamed, never deleted."""
    if state_dir.exists():
        say(f"--restart: discarding the checkpoint in {state_dir}")
        shutil.rmtree(state_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in record_files:
        if path.exists() and path.stat().st_size > 0:
            kept = path.with_name(f"{path.name}.before-restart-{stamp}")
            path.rename(kept)
            say(f"--restart: the earlier {path.name} is kept as {kept}")


def _sent_nothing(checkpoint: Any, state_dir: Path) -> bool:
    """Whether no row of this import ever reached Umami (or may have): then a changed
    website, host, User-Agent or mapping mixes nothing, and the import can be prepared
    again instead of refused as "a different import". A run killed while it wrote
    during prepare counted nothing in the checkpoint, but may have stored rows."""
    from .early_delivery import may_have_written

    return (
        _sent_so_far(checkpoint) == 0
        and not checkpoint.in_doubt_ranges
        and not any(entry is not None for entry in checkpoint.lane_inflight)
        and not may_have_written(state_dir)
    )


def _sent_so_far(checkpoint: Any) -> int:
    led = checkpoint.send_ledger
    return int(led.accepted + led.rejected_total + led.in_doubt)


def _import_summary(
    config: RunConfig,
    plan_: Plan,
    prepared: Prepared,
    send_ledger: Ledger,
    run_ledger: Ledger,
    pending: int,
) -> ImportSummary:
    """Cumulative ledger: prepare's rejects and skips, plus what Umami answered so far."""
    total = Ledger(read=prepared.ledger.read)
    total.skipped.update(prepared.ledger.skipped)
    total.merge_flags(prepared.ledger)
    for reason, count in prepared.ledger.rejected.items():
        total.reject(reason, count, prepared.ledger.examples.get(reason))
    total.accepted = send_ledger.accepted
    total.in_doubt = send_ledger.in_doubt
    for reason, count in send_ledger.rejected.items():
        total.reject(reason, count, send_ledger.examples.get(reason))
    return ImportSummary(
        mode="import",
        ledger=total,
        stats=prepared.stats,
        this_run=run_ledger,
        pending=pending,
        files=prepared.files,
        skipped_files=plan_.skipped_files,
        rejects_path=str(config.rejects),
        in_doubt_path=str(config.in_doubt_path),
        reported_days=prepared.reported_days,
    )
