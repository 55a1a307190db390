"""Property-based fuzzing of the readers and the mapping parser with hypothesis.

Whatever bytes a CSV or NDJSON file holds (random ones, or a valid file with flipped
bytes, cut short, or with quotes, delimiters and line breaks thrown in), reading it
either gives rows or raises one of the project's own errors (``BackfillError``):
never another exception, never a row without its number. Where it gives rows,
each has a distinct ``_row``, and a row the reader could not read carries its
reason and no data. The whole dry run (map, validate, count) is fuzzed too: its
ledger always adds up. Random text as a mapping raises ``MappingError`` or loads.

Deterministic (``derandomize=True``: the same examples on every run) and fast
(about 150 examples per property, a few seconds in all).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from backfill.api import dry_run
from backfill.config import RunConfig
from backfill.errors import BackfillError, MappingError
from backfill.mapping import load_mapping, parse_mapping
from backfill.schema import COL_FILE, COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import ReadOptions, SourceFile, iter_chunks, read_schema

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="backfill-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- inputs

CSV_HEADER = "ts,vid,url,amount,note\n"
CSV_ROWS = [
    '2024-03-01T08:00:00Z,v1,/a,1.5,"with, comma"\n',
    '2024-03-01T08:01:00Z,v2,/b,2,"two\nlines"\n',
    '2024-03-01T08:02:00Z,v3,/c,,"a ""quoted"" word"\n',
    "2024-03-01T08:03:00Z,v4,/d,x,plain\n",
    "\n",
    "2024-03-01T08:04:00Z,,/e,3,\n",
    "2024-03-01 08:05:00,v6,/f?utm_source=x,4,\xfcml\xe4ut\n",
]
NDJSON_ROWS = [
    '{"ts":"2024-03-01T08:00:00Z","vid":"v1","url":"/a","amount":1.5}\n',
    '{"ts":"2024-03-01T08:01:00Z","vid":"v2","url":"/b","amount":"2","note":{"k":[1,2]}}\n',
    "\n",
    '{"ts":"2024-03-01T08:02:00Z","vid":null,"url":"/c","amount":null}\n',
    '{"ts":1709280180,"vid":"v4","url":"/d","amount":true,"extra":[{"a":1}]}\n',
    '{"ts":"2024-03-01T08:04:00Z","vid":"v5","url":"/\\u00fc","amount":-3e2}\n',
]
MAPPING = """version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [vid]}
fields:
  url: url
  data.amount: {column: amount, type: number}
filters:
  - {name: no e, drop: "url = '/e'"}
"""
INSERTS = [b'"', b",", b"\n", b"\r", b"\r\n", b'""', b"{", b"}", b"[", b":", b"\x00", b"\xff", b"\xef\xbb\xbf"]


def valid_file(rows: list[str], header: str = "") -> st.SearchStrategy[bytes]:
    """A valid file: the header, then 0-12 of the sample rows in any order."""
    return st.lists(st.sampled_from(rows), max_size=12).map(lambda picked: (header + "".join(picked)).encode())


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid file with 1-4 edits: byte flips, cuts, inserted quotes/delimiters/newlines, deletions."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 3))]
        elif kind == "duplicate":
            end = data.find(b"\n", at)
            if end >= 0:
                data[at:at] = data[at : end + 1]
    return bytes(data)


def source_file(path: Path, fmt: str) -> SourceFile:
    stat = path.stat()
    return SourceFile(str(path), fmt, None, stat.st_size, stat.st_mtime_ns)


def read_everything(path: Path, fmt: str, **options: object) -> list[pl.DataFrame] | None:
    """Frames of the file, or None when it is refused with one of the project's errors."""
    read_options = ReadOptions(format=fmt, **options)  # type: ignore[arg-type]
    source = source_file(path, fmt)
    try:
        read_schema(source, read_options)
        return list(iter_chunks(source, 3, read_options))
    except BackfillError:
        return None


def check_frames(frames: list[pl.DataFrame] | None, data: bytes) -> None:
    if frames is None:
        event("refused")
        return
    event("read, with unreadable rows" if any(COL_SOURCE_ERROR in f.columns for f in frames) else "read")
    rows: list[int] = []
    for frame in frames:
        assert frame.height > 0
        assert frame.schema[COL_ROW] == pl.UInt64 and frame.schema[COL_FILE] == pl.UInt32
        assert set(frame[COL_FILE]) == {3}
        rows += frame[COL_ROW].to_list()
        if COL_SOURCE_ERROR in frame.columns:
            bad = frame.filter(pl.col(COL_SOURCE_ERROR).is_not_null())
            data_columns = [c for c in frame.columns if not c.startswith("_")]
            assert bad.select(pl.all_horizontal(pl.col(data_columns).is_null())).to_series().all()
            assert bad[COL_SOURCE_RAW].is_not_null().all()
    assert rows == sorted(set(rows)), "row numbers must be distinct and in file order"
    assert all(row >= 1 for row in rows)
    assert len(rows) <= data.count(b"\n") + 1


# --------------------------------------------------------------------------- readers


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_as_csv_and_ndjson(workdir: Path, data: bytes) -> None:
    for fmt, name in (("csv", "random.csv"), ("ndjson", "random.ndjson")):
        path = workdir / name
        path.write_bytes(data)
        check_frames(read_everything(path, fmt), data)


@FUZZ
@given(data=mutated(valid_file(CSV_ROWS, CSV_HEADER)), chunk_rows=st.sampled_from([1, 3, 100]))
def test_mutated_csv(workdir: Path, data: bytes, chunk_rows: int) -> None:
    path = workdir / "mutated.csv"
    path.write_bytes(data)
    check_frames(read_everything(path, "csv", chunk_rows=chunk_rows), data)


@FUZZ
@given(data=mutated(valid_file(CSV_ROWS, CSV_HEADER)), encoding=st.sampled_from(["latin-1", "cp1252", "utf-16"]))
def test_mutated_csv_in_other_encodings(workdir: Path, data: bytes, encoding: str) -> None:
    path = workdir / "encoded.csv"
    path.write_bytes(data)
    check_frames(read_everything(path, "csv", encoding=encoding), data)


@FUZZ
@given(data=mutated(valid_file(CSV_ROWS, CSV_HEADER)), delimiter=st.sampled_from([";", "\t", "|"]))
def test_mutated_csv_with_other_delimiters(workdir: Path, data: bytes, delimiter: str) -> None:
    data = data.replace(b",", delimiter.encode())
    path = workdir / "delimited.csv"
    path.write_bytes(data)
    check_frames(read_everything(path, "csv", delimiter=delimiter), data)
    check_frames(read_everything(path, "csv"), data)  # the delimiter not given


@FUZZ
@given(data=mutated(valid_file(NDJSON_ROWS)), chunk_rows=st.sampled_from([1, 2, 100]))
def test_mutated_ndjson(workdir: Path, data: bytes, chunk_rows: int) -> None:
    path = workdir / "mutated.ndjson"
    path.write_bytes(data)
    check_frames(read_everything(path, "ndjson", chunk_rows=chunk_rows), data)


@FUZZ
@given(
    data=st.one_of(mutated(valid_file(CSV_ROWS, CSV_HEADER)), mutated(valid_file(NDJSON_ROWS))),
    chunk_rows=st.sampled_from([2, 100]),
)
def test_dry_run_ledger_always_adds_up(workdir: Path, data: bytes, chunk_rows: int) -> None:
    """Map, validate and count every row: a BackfillError or a ledger that balances, and a
    rejects file with one line per rejected row."""
    mapping = workdir / "fuzz.yaml"
    mapping.write_text(MAPPING)
    for name in ("dry.csv", "dry.ndjson"):
        path = workdir / name
        path.write_bytes(data)
        rejects = workdir / "rejects.ndjson"
        config = RunConfig(sources=(str(path),), mapping=str(mapping), rejects=rejects, chunk_rows=chunk_rows)
        try:
            summary = dry_run(config)
        except BackfillError:
            event("refused")
            continue
        ledger = summary.ledger
        assert ledger.balances(), ledger.to_dict()
        lines = rejects.read_text().splitlines() if rejects.exists() else []
        assert len(lines) == ledger.rejected_total
        event("read, with unreadable rows" if any('"(record)"' in line for line in lines) else "read")
        for line in lines:
            record = json.loads(line)
            assert record["row"] >= 1 and record["reason"]
            if record["field"] == "(record)":
                assert set(record["values"]) == {"_source_raw"}


# --------------------------------------------------------------------------- mapping parser

VALID_MAPPING = """version: 1
reader: {delimiter: ";", encoding: latin-1, decimal_comma: true}
timestamp: {column: ts, format: epoch, unit: ms}
visitor: {columns: [vid, account]}
type: event
fields:
  url: {template: "/p/{path}"}
  name: {column: event, map: {pageview: null, "true": yes}}
  data.revenue: {column: amount, scale: 0.01}
  data.currency: {column: currency, case: upper}
filters:
  - {name: test, drop: "is_test = 'true'"}
on_overflow: truncate
overflow: {data.*: reject}
normalize: true
"""

YAML_PIECES = [
    ":",
    " ",
    "\n",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    '"',
    "'",
    "&a",
    "*a",
    "!!python/object:os.system",
    "!!binary",
    "<<: *a",
    "? ",
    "|",
    ">",
    "%",
    "@",
    "\t",
    "version",
    "timestamp",
    "visitor",
    "fields",
    "filters",
    "reader",
    "format",
    "column",
    "unit",
    "strategy",
    "map",
    "scale",
    "type",
    "const",
    "template",
    "coalesce",
    "null",
    "true",
    "1e400",
    "-1",
    "0x10",
    ".nan",
    "2024-01-01",
    "data.x",
    "{column}",
    "%Y",
    "\u00fc",
    "\x00",
    "\ufeff",
]


@st.composite
def mutated_mapping(draw: st.DrawFn) -> str:
    text = VALID_MAPPING
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace_value"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(YAML_PIECES)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            line_start = text.rfind("\n", 0, at) + 1
            colon = text.find(":", line_start)
            end = text.find("\n", line_start)
            if 0 <= colon < end:
                text = text[: colon + 1] + " " + draw(st.sampled_from(YAML_PIECES)) + text[end:]
    return text


def structured_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.sampled_from(YAML_PIECES)
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(YAML_PIECES), inner, max_size=3)
        ),
        max_leaves=8,
    )


@FUZZ
@given(text=st.one_of(st.text(max_size=300), mutated_mapping()))
def test_mapping_parser_never_crashes(text: str) -> None:
    try:
        mapping = parse_mapping(text, "fuzz.yaml")
    except MappingError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    assert mapping.timestamp.column and mapping.fields


@FUZZ
@given(
    section=st.sampled_from(["reader", "timestamp", "visitor", "type", "fields", "filters", "overflow", "normalize"]),
    value=structured_values(),
)
def test_mapping_sections_with_any_value(section: str, value: object) -> None:
    """Every section given a value of any shape: a MappingError naming the file, or a mapping."""
    raw = yaml.safe_load(VALID_MAPPING)
    raw[section] = value
    try:
        text = yaml.safe_dump(raw, allow_unicode=True)
    except yaml.YAMLError:
        assume(False)
    try:
        parse_mapping(text, "fuzz.yaml")
    except MappingError as exc:
        assert str(exc).startswith("fuzz.yaml")


@FUZZ
@given(data=st.binary(max_size=300))
def test_mapping_file_of_random_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "bytes.yaml"
    path.write_bytes(data)
    try:
        load_mapping(str(path))
    except MappingError as exc:
        assert str(path) in str(exc)
