"""The library entry points: wire read -> map -> validate -> order -> (send | write).

``plan`` checks everything that can be checked before a row is read;
``prepare`` reads every row once, writes client-side rejects and spills the
sendable rows as sorted runs; ``run`` sends them (or, in a dry run, writes
the payloads) and returns a Summary whose ledger adds up.
Nothing here prints: progress reaches the caller through callbacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import polars as pl

from .config import DEFAULT_MAX_BODY_BYTES, RunConfig
from .errors import ConfigError, SendError
from .geo import geo_key_expr, sends_ip
from .ledger import MAX_EXAMPLES, Ledger
from .mapping import PLUGIN_READER_KEYS, Mapping, check_against_schema, check_schemas_agree, load_mapping
from .ordering import RunSet
from .payload import build_elements, payload_columns
from .rejects import RecordFile
from .report import Stats, Summary
from .schema import (
    COL_FILE,
    COL_JSON,
    COL_LANE,
    COL_REJECT_FIELD,
    COL_REJECT_REASON,
    COL_ROW,
    COL_SKIP,
    COL_SOURCE_ERROR,
    COL_SOURCE_RAW,
    COL_TITLE_CUT,
    COL_TS,
    COL_VISITOR,
    COL_VKEY,
    TITLE_LIMIT,
)
from .sources import ReadOptions, SourceFile, estimate_rows, expand_sources, iter_chunks, read_schema
from .transform import DEFAULT_LANES, TimeWindow, apply_mapping, file_tag, lanes_for, shard_of
from .umami.api import RunRefusedError
from .umami.limits import LIMITS, POSTGRES, StoreLimits
from .validate import validate
from .visits import CrossingVisits, VisitSpans, visit_key_expr

#: Sinks that write Umami's database directly (every row once, no "in doubt").
DATABASE_SINKS = ("postgres", "clickhouse")
#: The website id written into dry-run payloads when none is given.
PLACEHOLDER_WEBSITE = "00000000-0000-0000-0000-000000000000"

ProgressFn = Callable[..., None]  # (stage, rows done, total or None, extra text="")


@dataclass
class Plan:
    """What a run will read and how, checked before the first row is read."""

    config: RunConfig
    mapping: Mapping
    files: list[SourceFile]
    skipped_files: list[str]
    read_options: ReadOptions


@dataclass
class Prepared:
    """The result of reading everything once: rejects written, sendable rows spilled."""

    ledger: Ledger
    stats: Stats
    runs: RunSet
    files: list[str] = field(default_factory=list)
    visits: CrossingVisits = field(default_factory=CrossingVisits.empty)
    visits_path: Path | None = None
    #: What the readers said (``ReadOptions.note``) and what validation changed without
    #: rejecting (titles cut): shown in the summary of every run of the import.
    notes: list[str] = field(default_factory=list)
    #: What aggregated sources reported per day (``ReportedDays``), beside what was made of it.
    reported_days: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reported_days": self.reported_days,
            "ledger": self.ledger.to_dict(),
            "stats": self.stats.to_dict(),
            "runs": self.runs.to_dict(),
            "files": self.files,
            "visits": self.visits.to_dict(self.visits_path),
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prepared:
        return cls(
            ledger=Ledger.from_dict(data["ledger"]),
            stats=Stats.from_dict(data["stats"]),
            runs=RunSet.from_dict(data["runs"]),
            files=list(data.get("files", [])),
            visits=CrossingVisits.from_dict(data.get("visits")),
            visits_path=Path(data["visits"]["path"]) if (data.get("visits") or {}).get("path") else None,
            notes=list(data.get("notes", [])),
            reported_days=list(data.get("reported_days") or []),
        )


def read_options_for(config: RunConfig, mapping: Mapping) -> ReadOptions:
    """CLI flags win over the mapping's ``reader:`` section."""
    reader = mapping.reader
    kwargs: dict[str, Any] = {"chunk_rows": config.chunk_rows}
    fmt = config.format or reader.get("format")
    if fmt:
        kwargs["format"] = fmt
    delimiter = config.delimiter or reader.get("delimiter")
    if delimiter:
        kwargs["delimiter"] = delimiter
    encoding = config.encoding or reader.get("encoding")
    if encoding:
        kwargs["encoding"] = encoding
    if "quote_char" in reader:
        kwargs["quote_char"] = reader["quote_char"]
    if "has_header" in reader:
        kwargs["has_header"] = bool(reader["has_header"])
    flags = {
        "log_format": config.log_format,
        "hostname": config.hostname,
        "search_params": config.search_params,
        "matomo_site": config.matomo_site,
        "w3c_fields": config.w3c_fields,
        "log_timezone": config.log_timezone,
    }
    plugin = {key: flags.get(key) or reader.get(key) for key in PLUGIN_READER_KEYS}
    plugin["send_ip"] = "true" if config.geo == "ip" else None  # access_log fills geo_ip only then
    kwargs["plugin_options"] = tuple((k, str(v)) for k, v in plugin.items() if v)
    return ReadOptions(**kwargs)


def plan(
    config: RunConfig,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> Plan:
    """Load the mapping, find the files and check every file's columns against the mapping.

    An API source (``ga4-api:``, ``matomo-api:``) is pulled first, into files that are
    then read like any other (``backfill.pull``).
    """
    mapping = load_mapping(config.mapping)
    from .pull import pull_for

    config, pulled_notes = pull_for(config, mapping, progress, stop, say)
    if config.decimal_comma:
        mapping = dataclasses.replace(mapping, reader={**mapping.reader, "decimal_comma": True})
    options = read_options_for(config, mapping)
    for note in pulled_notes:
        options.note(note)
    files, skipped = expand_sources(list(config.sources), options)
    if not files:
        raise ConfigError("no data files found in " + ", ".join(config.sources))
    options = options.with_inputs(files)
    schemas = {}
    for source in files:
        schema = read_schema(source, options)
        if not schema:  # nothing in it, not even a header: it gives no rows
            skipped.append(f"{source.path}: empty file (no header, no rows)")
            continue
        schemas[source.path] = schema
    for note in check_schemas_agree(mapping, schemas):  # before each file alone: one fix for all
        options.note(note)
    for path, schema in schemas.items():
        check_against_schema(mapping, schema, path)
    return Plan(config, mapping, files, skipped, options)


def prepare(
    plan_: Plan,
    spill_dir: Path,
    rejects: RecordFile,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    *,
    spill: bool = True,
    observe: Callable[[pl.DataFrame], None] | None = None,
    as_columns: bool = False,
    on_run: Callable[[str, bool], None] | None = None,
) -> Prepared:
    """Read every row once: count it, reject or skip it, or spill it for sending.

    ``spill=False`` (a dry run without --out) only counts: no payloads, no runs.
    ``as_columns`` spills the elements as columns, for a database sink.
    ``observe`` is called with each chunk's sendable rows (neither skipped nor
    rejected; payload columns, ``data.*``, ``_ts``, ``_visitor``, ...), in input
    order, on the calling thread: ``backfill verify`` computes its expected
    figures from it. ``on_run`` is told of each sorted run once it is spilled
    (:mod:`backfill.early_delivery`).
    """
    config, mapping = plan_.config, plan_.mapping
    window = TimeWindow(config.since, config.until)
    ledger, stats = Ledger(flag_label=mapping.skip_warning.says if mapping.skip_warning else ""), Stats()
    runs = RunSet(spill_dir, on_run=on_run)
    website = config.website or PLACEHOLDER_WEBSITE
    remaining = config.limit
    paths = [f.path for f in plan_.files]
    tags = [file_tag(p) for p in paths]
    estimate = _estimated_rows(plan_.files, config.limit)
    shaping = dataclasses.replace(ChunkShaping.of(config, mapping), elements=not as_columns)
    spans = VisitSpans() if shaping.exact_visits else None
    titles_cut = 0
    chunks = prefetch(_all_chunks(plan_))
    try:
        for chunk in chunks:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if remaining is not None:
                chunk = chunk.head(remaining)
                remaining -= chunk.height
            checked = _check_chunk(chunk, mapping, window, website, tags, spill, shaping)
            _record_chunk(checked, paths, ledger, stats, runs if spill else None, rejects)
            titles_cut += checked.titles_cut
            if observe is not None and checked.good.height:
                observe(checked.good)
            if spans is not None and checked.good.height:
                spans.add(checked.good.select(COL_TS, COL_VKEY))
            if progress:
                progress("prepare", ledger.read, estimate and max(estimate, ledger.read))
            if remaining is not None and remaining <= 0:
                break
    finally:
        chunks.close()
    prepared = Prepared(ledger=ledger, stats=stats, runs=runs, files=paths, notes=plan_.read_options.notes.all())
    prepared.reported_days = plan_.read_options.reported.rows()
    if titles_cut:
        prepared.notes.append(
            f"{titles_cut:,} titles longer than {TITLE_LIMIT} characters were cut to {TITLE_LIMIT} "
            "(Umami keeps no more of a title; the payloads carry the cut title)"
        )
    if spans is not None:
        prepared.visits = spans.finish()
        if spill:
            spill_dir.mkdir(parents=True, exist_ok=True)
            prepared.visits_path = spill_dir / "crossing-visits.parquet"
            prepared.visits.save(prepared.visits_path)
    return prepared


@dataclass
class ImportSummary(Summary):
    """A run summary that also says whether running the same command again can help."""

    #: False after a refusal that only a changed command can get past (wrong website,
    #: User-Agent or host): then no "to resume" line is printed, only what to change.
    resumable: bool = True
    #: Umami refused the run as a whole before storing anything of it (exit 2).
    refused: bool = False


def _estimated_rows(files: list[SourceFile], limit: int | None) -> int | None:
    """Rows to read, for the progress bar's ETA; None when any file cannot be estimated."""
    total = 0
    for source in files:
        rows = estimate_rows(source)
        if rows is None:
            return limit
        total += rows
    return min(total, limit) if limit is not None else total


def _all_chunks(plan_: Plan) -> Iterator[pl.DataFrame]:
    for index, source in enumerate(plan_.files):
        yield from iter_chunks(source, index, plan_.read_options)


def prefetch(chunks: Iterator[pl.DataFrame], depth: int = 1) -> Generator[pl.DataFrame, None, None]:
    """Read the next chunks in a thread while this one is transformed (polars
    releases the GIL while parsing), holding at most ``depth`` chunks in memory."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    done = threading.Event()

    def reader() -> None:
        try:
            for chunk in chunks:
                while not done.is_set():
                    try:
                        queue.put(("chunk", chunk), timeout=0.2)
                        break
                    except Full:
                        continue
                if done.is_set():
                    return
            queue.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(("error", exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=reader, name="backfill-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        done.set()
        while thread.is_alive():
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)


@dataclass(frozen=True)
class ChunkShaping:
    """How checked rows are shaped for sending: shard, location and visit options."""

    shard: tuple[int, int] | None = None
    geo: str = "auto"
    exact_visits: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a row whose element alone is larger is rejected
    #: Spill each element as JSON text (what the HTTP API and --out take), or as columns
    #: (a database sink derives Umami's rows from them: no JSON written, then decoded).
    elements: bool = True
    #: What the destination's store refuses (PostgreSQL's column sizes, or ClickHouse's fewer limits).
    limits: StoreLimits = LIMITS[POSTGRES]

    @classmethod
    def of(cls, config: RunConfig, mapping: Mapping) -> ChunkShaping:
        exact = visits_mode(config, mapping) == "exact"
        return cls(config.shard, config.geo, exact, config.max_body_bytes, limits=LIMITS[config.store])

    def not_in_shard(self, checked: pl.DataFrame) -> pl.DataFrame:
        """Rows of other shards are skipped before anything else counts (filters, rejects)."""
        if self.shard is None:
            return checked
        k, n = self.shard
        other = shard_of(checked, n) != k - 1
        reason = pl.when(other).then(pl.lit(f"not in shard {k}/{n}")).otherwise(pl.col(COL_SKIP))
        return checked.with_columns(reason.alias(COL_SKIP))


def visits_mode(config: RunConfig, mapping: Mapping) -> str:
    """exact when asked, or by default when the mapping names the source's visit column."""
    if config.visits == "exact" and not mapping.visitor.visit:
        raise ConfigError(
            "--visits exact needs the source's visit id: add `visit: <column>` under visitor "
            "in the mapping (e.g. ga_session_id), or use --visits hourly"
        )
    return config.visits or ("exact" if mapping.visitor.visit else "hourly")


@dataclass
class CheckedChunk:
    """One chunk mapped and validated: pure work, kept apart from the ledger and files."""

    source: pl.DataFrame
    checked: pl.DataFrame
    good: pl.DataFrame  # rows neither skipped nor rejected
    prepared: pl.DataFrame | None  # PREPARED_SCHEMA rows to spill, when spilling
    titles_cut: int = 0  # good rows whose title was cut to Umami's length
    flagged: pl.DataFrame | None = None  # filter, example: skipped rows the mapping's skip_warning marks


def _check_chunk(
    chunk: pl.DataFrame,
    mapping: Mapping,
    window: TimeWindow,
    website: str,
    tags: list[str],
    spill: bool,
    shaping: ChunkShaping | None = None,
) -> CheckedChunk:
    shaping = shaping or ChunkShaping()
    mapped = _mapped(chunk, mapping, window, tags)
    checked = shaping.not_in_shard(
        validate(mapped, mapping, max_body_bytes=shaping.max_body_bytes, limits=shaping.limits)
    )
    good = checked.filter(pl.col(COL_SKIP).is_null() & pl.col(COL_REJECT_REASON).is_null())
    titles_cut = int(good.get_column(COL_TITLE_CUT).sum()) if COL_TITLE_CUT in good.columns else 0
    if shaping.exact_visits:  # hashed once: spilled with the rows and folded into the visit spans
        good = good.with_columns(visit_key_expr())
    prepared = None
    if spill and good.height:
        payload_rows = good if sends_ip(shaping.geo) or "ip" not in good.columns else good.drop("ip")
        visit = pl.col(COL_VKEY) if shaping.exact_visits else pl.lit(None, dtype=pl.UInt64).alias(COL_VKEY)
        prepared = good.select(
            COL_TS,
            COL_FILE,
            COL_ROW,
            COL_VISITOR,
            geo_key_expr(shaping.geo, good.columns),
            visit,
        ).with_columns(lanes_for(good[COL_VISITOR], DEFAULT_LANES).alias(COL_LANE))
        if shaping.elements:
            prepared = prepared.with_columns(build_elements(payload_rows, website).alias(COL_JSON))
        else:
            prepared = pl.concat([prepared, payload_rows.select(payload_columns(payload_rows))], how="horizontal")
    return CheckedChunk(chunk, checked, good, prepared, titles_cut, _flagged(chunk, checked, mapping))


def _flagged(chunk: pl.DataFrame, checked: pl.DataFrame, mapping: Mapping) -> pl.DataFrame | None:
    """(filter, example) of the rows a mapping filter skipped that its skip_warning column marks."""
    warning = mapping.skip_warning
    if warning is None or warning.column not in chunk.columns:
        return None
    marks = chunk.get_column(warning.column).cast(pl.String)
    hit = checked[COL_SKIP].is_in([f.name for f in mapping.filters]) & marks.is_not_null()
    if not hit.any():
        return None
    return pl.DataFrame({"filter": checked[COL_SKIP].filter(hit), "example": marks.filter(hit)})


def _mapped(chunk: pl.DataFrame, mapping: Mapping, window: TimeWindow, tags: list[str]) -> pl.DataFrame:
    """``apply_mapping``, with the reader's ``_source_error`` carried over for ``validate``.

    A column the mapping reads that this chunk lacks (an NDJSON chunk where no line
    has the key, or where every line was unreadable) is all null here.
    """
    wanted = list(mapping.source_columns())
    for flt in mapping.filters:
        with contextlib.suppress(pl.exceptions.PolarsError):
            wanted += flt.polars_expr().meta.root_names()
    missing = [c for c in dict.fromkeys(wanted) if c not in chunk.columns]
    source = chunk.with_columns(pl.lit(None).alias(c) for c in missing) if missing else chunk
    mapped = apply_mapping(source, mapping, window, tags)
    if COL_SOURCE_ERROR in chunk.columns:
        mapped = mapped.with_columns(chunk.get_column(COL_SOURCE_ERROR))
    return mapped


def _record_chunk(
    result: CheckedChunk,
    paths: list[str],
    ledger: Ledger,
    stats: Stats,
    runs: RunSet | None,
    rejects: RecordFile,
) -> None:
    """Count, write rejects and spill, in input order (on the calling thread)."""
    checked = result.checked
    ledger.read += checked.height
    skip = checked[COL_SKIP]
    if skip.null_count() < checked.height:
        counts = skip.drop_nulls().value_counts()
        ledger.skipped.update(dict(zip(counts[COL_SKIP].to_list(), counts["count"].to_list(), strict=True)))
    if result.flagged is not None:
        for (name,), group in result.flagged.group_by("filter", maintain_order=True):
            ledger.flag(str(name), group.height, group["example"].head(MAX_EXAMPLES).to_list())
    refused = skip.is_null() & checked[COL_REJECT_REASON].is_not_null()
    if refused.any():
        _write_client_rejects(result.source.filter(refused), checked.filter(refused), paths, ledger, rejects)
    good = result.good
    if good.height == 0:
        return
    stats.update(good)
    ledger.accepted += good.height
    if runs is not None and result.prepared is not None:
        runs.add(result.prepared)


def _write_client_rejects(
    source_rows: pl.DataFrame,
    checked: pl.DataFrame,
    paths: list[str],
    ledger: Ledger,
    rejects: RecordFile,
) -> None:
    original = [c for c in source_rows.columns if not c.startswith("_")]
    values_expr = pl.struct(original).struct.json_encode() if original else pl.lit("{}")
    if COL_SOURCE_RAW in source_rows.columns:
        # A record the reader could not read has no values: its text, to fix and import again.
        raw = pl.struct(pl.col(COL_SOURCE_RAW)).struct.json_encode()
        values_expr = pl.when(pl.col(COL_SOURCE_RAW).is_not_null()).then(raw).otherwise(values_expr)
    values = source_rows.select(values_expr.alias("values"))["values"]
    records = checked.select(
        file_paths(pl.col(COL_FILE), paths).alias("file"),
        pl.col(COL_ROW).alias("row"),
        pl.col(COL_REJECT_FIELD).alias("field"),
        pl.col(COL_REJECT_REASON).alias("reason"),
    ).with_columns(values)
    rejects.write_frame(records)
    grouped = records.group_by("reason", maintain_order=True).agg(
        pl.len().alias("n"),
        pl.concat_str(pl.col("file").str.replace(r"^.*/", ""), pl.lit(":"), pl.col("row").cast(pl.String))
        .head(5)
        .alias("examples"),
    )
    for reason, n, examples in grouped.iter_rows():
        ledger.reject(reason, n, examples)


def file_paths(index: pl.Expr, paths: list[str]) -> pl.Expr:
    """The source path for a ``_file`` index column."""
    return index.replace_strict(list(range(len(paths))), paths, return_dtype=pl.String)


# --------------------------------------------------------------------------- dry run


def dry_run(
    config: RunConfig,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> Summary:
    """Read, map and validate everything; send nothing; optionally write the payloads."""
    started = time.monotonic()
    plan_ = plan(config, progress, stop, say)
    rejects = RecordFile(config.rejects, config.rejects_format)
    rejects.truncate(0)  # a dry run describes this input only; it keeps no history
    spill = Path(tempfile.mkdtemp(prefix="backfill-spill-"))
    timings: dict[str, float] = {}
    try:
        began = time.monotonic()
        prepared = prepare(plan_, spill, rejects, progress, stop, spill=config.out is not None)
        rejects.close()
        timings["prepare_s"] = time.monotonic() - began
        if config.out is not None:
            began = time.monotonic()
            from .sinks.payload_file import write_payload_file  # a dry run without --out needs no HTTP code

            write_payload_file(prepared, config.out)
            timings["write_s"] = time.monotonic() - began
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    summary = Summary(
        mode="dry run",
        ledger=prepared.ledger,
        stats=prepared.stats,
        files=prepared.files,
        skipped_files=plan_.skipped_files,
        rejects_path=str(config.rejects),
        out_path=str(config.out) if config.out else None,
        elapsed_s=time.monotonic() - started,
        timings=timings,
        reported_days=prepared.reported_days,
    )
    summary.notes.extend(prepared.notes)
    summary.notes.extend(_visit_notes(prepared, sending=False))
    if config.out is not None and not config.website:
        summary.notes.append(
            f"note: the payloads carry the placeholder website id {PLACEHOLDER_WEBSITE}; "
            "pass --website (or UMAMI_WEBSITE_ID) to write the real one"
        )
    return summary


def _visit_notes(prepared: Prepared, *, sending: bool) -> list[str]:
    """What --visits exact found: how many source visits Umami would split at hh:00."""
    visits = prepared.visits
    if not visits.visits:
        return []
    share = visits.count / visits.visits
    line = f"visits: {visits.visits:,} source visits, {visits.count:,} ({share:.1%}) cross a clock hour"
    if not sending:
        line += ": an import sends the first event of each alone (one extra request) to keep it one Umami visit"
    return [line]


# --------------------------------------------------------------------------- import


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
        if changes and _sent_nothing(checkpoint) and not early_delivery.may_have_written(state_dir):
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

    carried_on = early is not None and early.adopted
    run_ledger = early.run_ledger if early is not None and carried_on else Ledger()
    sendable = prepared.runs.rows

    stopped: str | None = None
    refused = False
    outcome: SendOutcome | None = None
    try:
        delivery = Delivery(prepared, checkpoint, checkpoint_path, rejects, in_doubt, run_ledger, send_progress, stop)
        outcome = early.deliver_rest(delivery, stop) if early is not None and carried_on else sink.deliver(delivery)
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
    summary.notes.extend(_visit_notes(prepared, sending=True))
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


def _sent_nothing(checkpoint: Any) -> bool:
    """Whether no request of this import ever reached Umami (or may have): then a
    changed website, host, User-Agent or mapping mixes nothing, and the import can
    be prepared again instead of refused as "a different import"."""
    return (
        _sent_so_far(checkpoint) == 0
        and not checkpoint.in_doubt_ranges
        and not any(entry is not None for entry in checkpoint.lane_inflight)
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
