"""The library entry points: wire read -> map -> validate -> order -> (send | write).

``plan`` checks everything that can be checked before a row is read;
``prepare`` reads every row once, writes client-side rejects and spills the
sendable rows as sorted runs; ``dry_run`` stops there (or writes the payloads)
and returns a Summary whose ledger adds up. An import, which sends them, is
:mod:`backfill.importing`.
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
from .errors import ConfigError
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
from .umami.limits import LIMITS, POSTGRES, StoreLimits
from .validate import validate
from .visits import CrossingVisits, VisitSpans, visit_key_expr

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
    summary.notes.extend(visit_notes(prepared, sending=False))
    if config.out is not None and not config.website:
        summary.notes.append(
            f"note: the payloads carry the placeholder website id {PLACEHOLDER_WEBSITE}; "
            "pass --website (or UMAMI_WEBSITE_ID) to write the real one"
        )
    return summary


def visit_notes(prepared: Prepared, *, sending: bool) -> list[str]:
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
