"""Hostile and broken input files, each run through the real CLI (``backfill validate``,
and where it matters a dry-run ``backfill import``).

For every broken file the importer either refuses it (exit 2, one ``error:`` line
naming the file, the line or row, what is wrong and what to do) or imports what is
sound and accounts for the rest: the ledger adds up, every refused row is in the
rejects file with its data row number, and a record the reader could not read
carries its text there (``values: {"_source_raw": ...}``). Never a traceback, never
a hang, never memory that grows with the bad file.

The files are made here, small; each test takes a second or two.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backfill.api import dry_run
from backfill.config import RunConfig
from tests.conftest import MAPPINGS, ROOT, SAMPLES, import_into, run_cli
from tests.fake_umami import FakeUmami

pytestmark = pytest.mark.timeout(120)

MAPPING = """version: 1
timestamp: {column: ts, format: iso8601}
visitor: {columns: [vid]}
fields:
  url: url
  data.amount: {column: amount, type: number}
"""
HEADER = "ts,vid,url,amount\n"


def rows(n: int, start: int = 1, delimiter: str = ",", decimal: str = ".") -> str:
    """n sound data rows: a time, a visitor, a path and an amount."""
    return "".join(
        delimiter.join([f"2024-03-01T08:{i % 60:02d}:00Z", f"v{i}", f"/p{i}", f"{i}{decimal}5"]) + "\n"
        for i in range(start, start + n)
    )


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    ledger: dict[str, Any] | None
    report: dict[str, Any] | None
    rejects: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)


def run(
    tmp_path: Path,
    *sources: Path | str,
    mapping: str | Path = MAPPING,
    command: str = "validate",
    extra: tuple[str, ...] = (),
    out: bool = False,
) -> Outcome:
    """The CLI on ``sources``; ``mapping`` is YAML text, or a path / preset name."""
    if isinstance(mapping, str) and "\n" in mapping:
        (tmp_path / "mapping.yaml").write_text(mapping)
        mapping = tmp_path / "mapping.yaml"
    report, rejects, payloads = tmp_path / "report.json", tmp_path / "rejects.ndjson", tmp_path / "out.ndjson"
    for path in (report, rejects, payloads):
        path.unlink(missing_ok=True)
    args = [command, *sources, "-m", mapping, "--report", report, "--rejects", rejects, *extra]
    if out:
        args += ["--out", payloads]
    if command == "import":
        args += ["--state", tmp_path / "state"]
    result = run_cli(*args, timeout=90)
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout
    data = json.loads(report.read_text()) if report.exists() else None
    return Outcome(
        result.code,
        result.stdout,
        result.stderr,
        data["ledger"] if data else None,
        data,
        [json.loads(line) for line in rejects.read_text().splitlines()]
        if rejects.exists() and "--rejects-format" not in extra
        else [],
        [json.loads(line) for line in payloads.read_text().splitlines()] if payloads.exists() else [],
    )


def refused(outcome: Outcome, *fragments: str) -> None:
    """Exit 2 with one error line that holds every fragment (file name, line/row, the fix)."""
    assert outcome.code == 2, (outcome.code, outcome.stdout, outcome.stderr)
    assert outcome.stderr.startswith("error: "), outcome.stderr
    assert outcome.ledger is None  # nothing was counted, nothing sent
    for fragment in fragments:
        assert fragment in outcome.stderr, (fragment, outcome.stderr)


def balanced(outcome: Outcome, read: int, accepted: int, rejected: int = 0, skipped: int = 0) -> None:
    led = outcome.ledger
    assert led is not None, outcome.stderr
    assert (led["read"], led["accepted"], led["rejected"], led["skipped"]) == (read, accepted, rejected, skipped), led
    assert led["balances"] is True
    assert len(outcome.rejects) == rejected
    assert outcome.code == (1 if rejected else 0), outcome.stderr


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def record_rejects(outcome: Outcome) -> list[tuple[int, str, str]]:
    """(row, reason, raw text) of the rows the reader could not read."""
    return [(r["row"], r["reason"], r["values"]["_source_raw"]) for r in outcome.rejects if r["field"] == "(record)"]


# --------------------------------------------------------------------------- CSV: whole files


def test_empty_csv_reads_nothing_and_says_so(tmp_path: Path) -> None:
    outcome = run(tmp_path, write(tmp_path / "empty.csv", b""))
    balanced(outcome, 0, 0)
    assert "empty.csv: empty file (no header, no rows)" in outcome.stdout


def test_header_only_csv(tmp_path: Path) -> None:
    balanced(run(tmp_path, write(tmp_path / "header.csv", HEADER)), 0, 0)


def test_utf8_bom_and_crlf_leave_no_stray_characters(tmp_path: Path) -> None:
    text = "\ufeff" + "ts,vid,amount,url\r\n" + "".join(f"2024-03-01T08:0{i}:00Z,v{i},{i},/p{i}\r\n" for i in range(5))
    outcome = run(tmp_path, write(tmp_path / "bom_crlf.csv", text.encode()), out=True)
    balanced(outcome, 5, 5)
    assert [p["payload"]["url"] for p in outcome.payloads] == [f"/p{i}" for i in range(5)]  # no "\r" at the end


@pytest.mark.parametrize(("delimiter", "flag"), [(";", ";"), ("\t", "\\t"), ("|", "|")])
def test_other_delimiters_are_named_and_read_when_declared(tmp_path: Path, delimiter: str, flag: str) -> None:
    path = write(tmp_path / "semi.csv", HEADER.replace(",", delimiter) + rows(4, delimiter=delimiter))
    refused(run(tmp_path, path), "semi.csv", "does not split on ','", f"--delimiter '{flag}'")
    balanced(run(tmp_path, path, extra=("--delimiter", flag)), 4, 4)


def test_ambiguous_delimiter_is_refused_with_both_choices(tmp_path: Path) -> None:
    path = write(tmp_path / "ambiguous.csv", "ts;vid,url;amount\n" + rows(2, delimiter=";"))
    refused(run(tmp_path, path), "ambiguous.csv", "ambiguous", "--delimiter ','", "--delimiter ';'")


def test_decimal_commas_need_declaring(tmp_path: Path) -> None:
    text = HEADER.replace(",", ";") + rows(3, delimiter=";", decimal=",") + "2024-03-01T09:00:00Z;v9;/p9;1.234,5\n"
    path = write(tmp_path / "european.csv", text)
    plain = run(tmp_path, path, extra=("--delimiter", ";"))
    balanced(plain, 4, 0, rejected=4)  # never read as something else: each row says why
    assert {r["reason"] for r in plain.rejects} == {"data.amount: not a number"}
    declared = run(tmp_path, path, extra=("--delimiter", ";", "--decimal-comma"), out=True)
    balanced(declared, 4, 4)
    assert sorted(p["payload"]["data"]["amount"] for p in declared.payloads) == [1.5, 2.5, 3.5, 1234.5]
    in_mapping = MAPPING.replace("version: 1\n", 'version: 1\nreader: {delimiter: ";", decimal_comma: true}\n')
    balanced(run(tmp_path, path, mapping=in_mapping), 4, 4)
    # a dot that is not a thousands separator is not silently read as a decimal point
    odd = write(tmp_path / "odd.csv", HEADER.replace(",", ";") + "2024-03-01T09:00:00Z;v1;/a;1.5\n")
    outcome = run(tmp_path, odd, mapping=in_mapping)
    balanced(outcome, 1, 0, rejected=1)
    assert "decimal_comma" in outcome.rejects[0]["reason"]


def test_latin1_file_without_encoding_names_the_line(tmp_path: Path) -> None:
    # Many records that are not UTF-8: the encoding is wrong as a whole (one such
    # record is rejected alone, see tests/test_fidelity_15.py).
    munich = "".join(f"2024-03-01T09:{i:02d}:00Z,v9{i},/M\u00fcnchen{i},1\n" for i in range(12))
    text = HEADER + rows(2) + munich
    path = write(tmp_path / "latin.csv", text.encode("latin-1"))
    refused(run(tmp_path, path), "latin.csv: line 4: 0xfc is not valid utf-8", "as a whole", "--encoding")
    outcome = run(tmp_path, path, extra=("--encoding", "latin-1"), out=True)
    balanced(outcome, 14, 14)
    assert "/M\u00fcnchen0" in {p["payload"]["url"] for p in outcome.payloads}


def test_utf16_files(tmp_path: Path) -> None:
    text = HEADER + rows(2) + "2024-03-01T09:00:00Z,v9,/M\u00fcnchen,1\n"
    bom = write(tmp_path / "wide.csv", text.encode("utf-16"))
    refused(run(tmp_path, bom), "wide.csv", "UTF-16", "--encoding utf-16")
    balanced(run(tmp_path, bom, extra=("--encoding", "utf-16")), 3, 3)
    bare = write(tmp_path / "bare.csv", text.encode("utf-16-le"))
    refused(run(tmp_path, bare), "bare.csv", "without a byte order mark", "--encoding utf-16-le")
    refused(run(tmp_path, bare, extra=("--encoding", "utf-16")), "bare.csv", "byte order mark", "utf-16-le")
    balanced(run(tmp_path, bare, extra=("--encoding", "utf-16-le")), 3, 3)


def test_a_wrong_encoding_is_refused_not_turned_into_mojibake(tmp_path: Path) -> None:
    path = write(tmp_path / "utf8.csv", (HEADER + rows(2) + "2024-03-01T09:00:00Z,v9,/M\u00fcnchen,1\n").encode())
    refused(
        run(tmp_path, path, extra=("--encoding", "latin-1")),
        "utf8.csv: line 4: the file is UTF-8 ('/M\u00fcnchen')",
        "'/M\u00c3\u00bcnchen'",
        "drop --encoding",
    )
    refused(run(tmp_path, path, extra=("--encoding", "utf-16")), "utf8.csv", "no NUL bytes", "not utf-16")


def test_duplicate_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.csv", "ts,vid,url,url\n" + rows(2))
    refused(run(tmp_path, path), "dup.csv", "duplicate column names", "'url' (columns 3, 4)", "rename them")


def test_html_page_saved_as_csv(tmp_path: Path) -> None:
    for name, text in (
        ("login.csv", "<!DOCTYPE html>\n<html><body>Sign in</body></html>\n"),
        ("error.csv", "\n\n  <head><title>502 Bad Gateway</title></head>\n"),
    ):
        refused(run(tmp_path, write(tmp_path / name, text)), name, "an HTML page")


def test_classic_mac_line_ends(tmp_path: Path) -> None:
    path = write(tmp_path / "mac.csv", (HEADER + rows(3)).replace("\n", "\r"))
    refused(run(tmp_path, path), "mac.csv", "bare carriage return", "tr '\\r' '\\n'")


def test_unterminated_quote_at_the_end_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.csv", HEADER + rows(4) + '2024-03-01T09:00:00Z,v9,"/never closed,1\n')
    refused(run(tmp_path, path), "cut.csv: data row 5 (line 6)", "never closed", "quote_char")


def test_every_row_with_a_trailing_delimiter_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "trailing.csv", HEADER + rows(6).replace("\n", ",\n"))
    refused(
        run(tmp_path, path),
        "trailing.csv: 6 of the first 6 data rows cannot be read",
        "refused as a whole",
        "data row 1: row has 5 fields, the header has 4",
        "--delimiter",
    )


def test_multi_megabyte_field(tmp_path: Path) -> None:
    big = "x" * (5 << 20)
    path = write(tmp_path / "big.csv", "ts,vid,url,amount,note\n" + f'2024-03-01T08:00:00Z,v1,/a,1,"{big}"\n' * 2)
    mapping = MAPPING + "  data.note: note\n"
    outcome = run(tmp_path, path, mapping=mapping)
    balanced(outcome, 2, 0, rejected=2)
    assert {r["reason"].split(";")[0] for r in outcome.rejects} == {"data.note: longer than 500 characters"}


# --------------------------------------------------------------------------- CSV: bad rows become rejects


def test_ragged_rows_are_rejected_with_their_text_and_data_row_numbers(tmp_path: Path) -> None:
    text = (
        HEADER
        + '2024-03-01T08:00:00Z,v0,"/a\nwith a line break",1\n'  # data row 1, lines 2-3
        + rows(2)  # rows 2-3
        + "2024-03-01T08:10:00Z,v10,/short\n"  # row 4 (line 6): too few fields
        + "\n"  # row 5: blank, skipped but counted
        + "2024-03-01T08:11:00Z,v11,/a,b,1\n"  # row 6 (line 8): too many
        + rows(2, start=20)  # rows 7-8
    )
    path = write(tmp_path / "ragged.csv", text)
    for command in ("validate", "import"):
        outcome = run(tmp_path, path, command=command)
        balanced(outcome, 7, 5, rejected=2)
        assert record_rejects(outcome) == [
            (
                4,
                "row has 3 fields, the header has 4 (cut short, or a line break inside an unquoted value?)",
                text.split("\n")[5],
            ),
            (
                6,
                "row has 5 fields, the header has 4 (a delimiter inside an unquoted value? quote it)",
                text.split("\n")[7],
            ),
        ]
        assert outcome.ledger["reject_examples"][outcome.rejects[0]["reason"]] == ["ragged.csv:4"]
        assert "row has 3 fields" in outcome.stdout
    assert "DRY RUN" in outcome.stdout


def test_an_import_sends_the_sound_rows_only(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", HEADER + rows(3) + "2024-03-01T09:00:00Z,v9,/x,1,2\n" + rows(2, start=4))
    mapping = write(tmp_path / "m.yaml", MAPPING)
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, path, mapping, tmp_path)
        assert "Traceback" not in result.stderr
        assert result.code == 1, result.stderr
        assert server.event_count(site) == 5
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert (ledger["read"], ledger["accepted"], ledger["rejected"], ledger["balances"]) == (6, 5, 1, True)
    (record,) = [json.loads(line) for line in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert (record["row"], record["field"]) == (4, "(record)")


def test_rows_whose_errors_cancel_out_are_both_rejected(tmp_path: Path) -> None:
    """One row short of a field and one with a field too many: the delimiter count of the
    block is right, the rows are not."""
    path = write(
        tmp_path / "even.csv", HEADER + rows(3) + "2024-03-01T09:00:00Z,v8,/x\n" + "2024-03-01T09:00:00Z,v9,/y,1,2\n"
    )
    outcome = run(tmp_path, path)
    balanced(outcome, 5, 3, rejected=2)
    assert [row for row, _, _ in record_rejects(outcome)] == [4, 5]


def test_rejects_csv_format_carries_the_raw_record(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", HEADER + rows(3) + '2024-03-01T09:00:00Z,v9,"/q, ""x""",1,extra\n')
    outcome = run(tmp_path, path, extra=("--rejects-format", "csv"))
    assert outcome.code == 1 and outcome.ledger is not None and outcome.ledger["rejected"] == 1
    table = pl.read_csv(tmp_path / "rejects.ndjson", infer_schema=False)
    assert table.columns == ["file", "row", "field", "reason", "values"]
    record = table.row(0, named=True)
    assert (record["row"], record["field"]) == ("4", "(record)")
    assert json.loads(record["values"]) == {"_source_raw": '2024-03-01T09:00:00Z,v9,"/q, ""x""",1,extra'}


def test_blank_and_delimiter_only_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "blank.csv", HEADER + rows(2) + "\n\r\n,,,\n" + rows(2, start=5))
    outcome = run(tmp_path, path)
    balanced(outcome, 5, 4, rejected=1)  # blank lines are no rows; an all-empty row is one
    assert [(r["row"], r["field"]) for r in outcome.rejects] == [(5, "timestamp")]


def test_header_repeated_in_the_middle(tmp_path: Path) -> None:
    path = write(tmp_path / "joined.csv", HEADER + rows(3) + HEADER + rows(3, start=4))
    outcome = run(tmp_path, path)
    balanced(outcome, 7, 6, rejected=1)
    assert record_rejects(outcome) == [
        (4, "row repeats the header line (two exports joined into one file?); it is not data", HEADER.strip())
    ]


def test_unreadable_rows_are_never_skipped_by_filters_or_the_time_window(tmp_path: Path) -> None:
    mapping = MAPPING + "filters:\n  - {name: only v1, keep: \"vid = 'v1'\"}\n"
    path = write(tmp_path / "f.csv", HEADER + rows(3) + "2024-03-01T08:00:00Z,v1\n")
    outcome = run(tmp_path, path, mapping=mapping, extra=("--since", "2024-03-01T08:01:00Z"))
    balanced(outcome, 4, 1, rejected=1, skipped=2)  # v2 and v3 by the filter; row 4 (v1, 08:00) would be both
    assert [row for row, _, _ in record_rejects(outcome)] == [4]


# --------------------------------------------------------------------------- NDJSON

JSON_MAPPING = MAPPING


def ndjson_line(i: int, amount: object = None) -> str:
    return json.dumps({"ts": f"2024-03-01T08:{i:02d}:00Z", "vid": f"v{i}", "url": f"/p{i}", "amount": amount or i})


def test_truncated_gzip(tmp_path: Path) -> None:
    packed = gzip.compress("\n".join(ndjson_line(i % 60) for i in range(3000)).encode())
    path = write(tmp_path / "cut.ndjson.gz", packed[: len(packed) - 40])
    refused(run(tmp_path, path, mapping=JSON_MAPPING), "cut.ndjson.gz: truncated or corrupt gzip", "re-download")


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    first = gzip.compress(("\n".join(ndjson_line(i) for i in range(3)) + "\n").encode())
    second = gzip.compress(("\n".join(ndjson_line(i) for i in range(3, 7)) + "\n").encode())
    balanced(run(tmp_path, write(tmp_path / "cat.ndjson.gz", first + second), mapping=JSON_MAPPING), 7, 7)


def test_bad_lines_are_rejected_by_line_number(tmp_path: Path) -> None:
    lines = [ndjson_line(1), "", ndjson_line(2), '{"ts": "2024-03-01T08:03:00Z", "vid": ', '"just a string"', "[1, 2]"]
    lines += [ndjson_line(i) for i in range(4, 8)]
    path = write(tmp_path / "lines.ndjson", "\n".join(lines) + "\n")
    for command in ("validate", "import"):
        outcome = run(tmp_path, path, mapping=JSON_MAPPING, command=command)
        balanced(outcome, 9, 6, rejected=3)
        assert record_rejects(outcome) == [
            (4, "line is not valid JSON: Expecting value", lines[3].strip()),
            (5, "line is not a JSON object but a string", lines[4]),
            (6, "line is not a JSON object but an array", lines[5]),
        ]


def test_json_array_file(tmp_path: Path) -> None:
    path = write(tmp_path / "export.json", json.dumps([json.loads(ndjson_line(i)) for i in range(3)], indent=2))
    refused(run(tmp_path, path, mapping=JSON_MAPPING), "export.json", "JSON array", "jq -c '.[]'")


def test_pretty_printed_json_document(tmp_path: Path) -> None:
    path = write(
        tmp_path / "doc.ndjson", json.dumps({"rows": [json.loads(ndjson_line(i)) for i in range(3)]}, indent=2)
    )
    refused(run(tmp_path, path, mapping=JSON_MAPPING), "doc.ndjson", "none of the first", "line 1", "jq -c .")
    mostly = write(tmp_path / "mostly.ndjson", "\n".join([ndjson_line(1), ndjson_line(2)] + ["not json"] * 3))
    refused(
        run(tmp_path, mostly, mapping=JSON_MAPPING),
        "mostly.ndjson: 3 of the first 5 lines cannot be read, so the file is refused as a whole",
        "line 3: line is not valid JSON",
    )


def test_extremely_deep_nesting_is_rejected_quickly(tmp_path: Path) -> None:
    deep_arrays = '{"ts": "2024-03-01T08:00:00Z", "vid": "d", "url": "/d", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    deep_objects = '{"ts": "2024-03-01T08:00:00Z", "vid": "e", "x": ' + '{"k": ' * 900 + "1" + "}" * 900 + "}"
    lines = [ndjson_line(1), deep_arrays, ndjson_line(2), deep_objects, ndjson_line(3)]
    outcome = run(tmp_path, write(tmp_path / "deep.ndjson", "\n".join(lines)), mapping=JSON_MAPPING)
    balanced(outcome, 5, 3, rejected=2)
    assert [(row, reason) for row, reason, _ in record_rejects(outcome)] == [
        (2, "line nests objects or arrays more than 16 levels deep"),
        (4, "line nests objects or arrays more than 16 levels deep"),
    ]
    assert len(record_rejects(outcome)[0][2]) == 2000  # the text, cut


def test_a_field_that_is_a_number_in_some_lines_and_text_in_others(tmp_path: Path) -> None:
    lines = [ndjson_line(1, 1), ndjson_line(2, "2.5"), ndjson_line(3, 3.25), ndjson_line(4, "four")]
    outcome = run(tmp_path, write(tmp_path / "mixed.ndjson", "\n".join(lines)), mapping=JSON_MAPPING, out=True)
    balanced(outcome, 4, 3, rejected=1)
    assert sorted(p["payload"]["data"]["amount"] for p in outcome.payloads) == [1.0, 2.5, 3.25]
    assert outcome.rejects[0]["reason"] == "data.amount: not a number"


def test_a_chunk_of_only_bad_lines_and_keys_missing_from_a_chunk(tmp_path: Path) -> None:
    """Chunks of two lines: one chunk holds no readable line at all, another lacks the
    mapped keys; neither may stop the run."""
    lines = [ndjson_line(i) for i in range(1, 7)]
    lines[2:4] = ["{broken", "also broken"]
    lines.append(json.dumps({"ts": "2024-03-01T08:09:00Z", "vid": "v9"}))
    path = write(tmp_path / "chunks.ndjson", "\n".join(lines) + "\n")
    config = RunConfig(sources=(str(path),), mapping=str(write(tmp_path / "m.yaml", JSON_MAPPING)), chunk_rows=2)
    summary = dry_run(RunConfig(**{**config.__dict__, "rejects": tmp_path / "rej.ndjson"}))
    # the last line, without url, is a page view of no page: rejected as such
    assert (summary.ledger.read, summary.ledger.accepted, summary.ledger.rejected_total) == (7, 4, 3)
    assert any(
        reason.startswith("url: a page view (no event name) without a url") for reason in summary.ledger.rejected
    )
    assert summary.ledger.balances()


# --------------------------------------------------------------------------- Parquet and Avro


def test_truncated_and_zero_row_parquet_and_csv_named_parquet(tmp_path: Path) -> None:
    frame = pl.DataFrame({"ts": ["2024-03-01T08:00:00Z"] * 50, "vid": [f"v{i}" for i in range(50)]})
    frame = frame.with_columns(url=pl.lit("/a"), amount=pl.lit(1.5))
    frame.write_parquet(tmp_path / "full.parquet")
    data = (tmp_path / "full.parquet").read_bytes()
    cut = write(tmp_path / "cut.parquet", data[: len(data) // 2])
    refused(run(tmp_path, cut), "cut.parquet: truncated Parquet file", "re-download")
    frame.head(0).write_parquet(tmp_path / "zero.parquet")
    balanced(run(tmp_path, tmp_path / "zero.parquet"), 0, 0)
    fake = write(tmp_path / "fake.parquet", HEADER + rows(2))
    refused(run(tmp_path, fake), "fake.parquet: read as Parquet, but it looks like text (CSV?)")


def test_parquet_glob_with_incompatible_schemas(tmp_path: Path) -> None:
    base = pl.DataFrame({"ts": ["2024-03-01T08:00:00Z"], "vid": ["v1"], "url": ["/a"], "amount": [1]})
    folder = tmp_path / "parts"
    folder.mkdir()
    base.write_parquet(folder / "a.parquet")
    base.with_columns(pl.col("amount").cast(pl.String)).write_parquet(folder / "b.parquet")
    balanced(run(tmp_path, str(folder / "*.parquet")), 2, 2)  # the same column as Int64 and as text: both read
    base.drop("url").write_parquet(folder / "c.parquet")
    refused(run(tmp_path, str(folder / "*.parquet")), "column 'url' is not in", "c.parquet")
    (folder / "c.parquet").unlink()
    base.with_columns(pl.lit(1709280000).alias("ts")).write_parquet(folder / "d.parquet")
    refused(
        run(tmp_path, str(folder / "*.parquet")), "a.parquet", "d.parquet", "Int32", "convert the files to one type"
    )


def test_truncated_avro(tmp_path: Path) -> None:
    data = (SAMPLES / "ga4" / "events_20240303.avro").read_bytes()
    path = write(tmp_path / "events_20240303.avro", data[: len(data) * 2 // 3])
    refused(run(tmp_path, path, mapping="ga4"), "events_20240303.avro", "truncated", "records 1-35 were read")


# --------------------------------------------------------------------------- GA4 exports

GA4_WEB = {
    "event_date": "20240301",
    "platform": "WEB",
    "device": {"category": "desktop", "web_info": {"browser": "Chrome", "hostname": "www.shop.example"}},
}


def ga4_params(**values: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": v} if isinstance(v, str) else v} for k, v in values.items()]


def ga4_event(stamp: str | int, name: str, visitor: str, **more: Any) -> dict[str, Any]:
    return {**GA4_WEB, "event_timestamp": stamp, "event_name": name, "user_pseudo_id": visitor, **more}


def test_ga4_odd_rows_in_one_file(tmp_path: Path) -> None:
    page = ga4_params(page_location="https://www.shop.example/a")
    two_values = {"key": "outbound", "value": {"string_value": "true", "int_value": "1"}}
    events = [
        ga4_event("1709280000000000", "page_view", "1.1", event_params=page),  # event_timestamp as text
        ga4_event(1709280001000000, "page_view", "1.1", event_params=page),  # ... and as a number
        ga4_event("1709280002000000", "click", "2.2", event_params=[*page, two_values]),
        ga4_event("1709280003000000", "consent_update", "3.3"),  # no event_params at all
        {  # an app-stream row among web rows
            "event_date": "20240301",
            "event_timestamp": "1709280004000000",
            "event_name": "screen_view",
            "user_pseudo_id": "4.4",
            "platform": "ANDROID",
            "event_params": ga4_params(firebase_screen="Home"),
        },
    ]
    path = tmp_path / "events_20240301.json.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(e) for e in events) + "\n").encode()))
    outcome = run(tmp_path, path, mapping="ga4", out=True)
    led = outcome.ledger
    assert led is not None and led["balances"] and led["read"] == 5, outcome.stderr
    assert led["skipped_by_filter"] == {"app-stream event (no page_location)": 1}
    assert led["accepted"] == 4 and outcome.code == 0
    stamps = sorted(p["payload"]["timestamp"] for p in outcome.payloads)
    assert stamps == [1709280000, 1709280001, 1709280002, 1709280003]  # a number and a string read alike
    consent = next(p["payload"] for p in outcome.payloads if p["payload"].get("name") == "consent_update")
    assert "url" not in consent and consent["hostname"] == "www.shop.example"  # no event_params: no page
    click = next(p["payload"] for p in outcome.payloads if p["payload"].get("name") == "click")
    assert click["data"]["outbound"] == "true"  # string_value wins over int_value


def test_ga4_line_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    line = json.dumps(ga4_event("1709280000000000", "x", "1"))
    path = tmp_path / "events_20240302.json.gz"
    path.write_bytes(gzip.compress(f"{line}\n{{oops\n{line}\n".encode()))
    refused(run(tmp_path, path, mapping="ga4"), "events_20240302.json.gz: line 2: not valid JSON")


# --------------------------------------------------------------------------- Plausible ZIPs

VISITORS = '"date","visitors","pageviews","bounces","visits","visit_duration"\n"2024-03-01",3,10,2,5,400\n'
PAGES = '"date","hostname","page","pageviews"\n"2024-03-01","a.test","/",10\n'


def zip_of(path: Path, entries: dict[str, str | bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_plausible_zip_without_export_tables(tmp_path: Path) -> None:
    path = zip_of(tmp_path / "site.test_20240302.zip", {"README.txt": "hi", "data.csv": "a,b\n1,2\n"})
    refused(run(tmp_path, path, mapping="plausible-csv"), "site.test_20240302.zip: no visitors table")


def test_plausible_tables_of_two_export_versions(tmp_path: Path) -> None:
    old_days = '"date","visitors","pageviews","bounces","visits","visit_duration"\n"2024-02-01",2,4,1,2,60\n'
    path = zip_of(
        tmp_path / "site.test_20240302.zip",
        {"imported_visitors_20240301_20240301.csv": VISITORS, "visitors.csv": old_days, "pages.csv": PAGES},
    )
    outcome = run(tmp_path, path, mapping="plausible-csv")
    assert outcome.code == 0 and outcome.ledger["read"] == outcome.ledger["accepted"] == 14, outcome.stderr
    same_days = zip_of(
        tmp_path / "twice.test_20240302.zip",
        {"imported_visitors_20240301_20240301.csv": VISITORS, "visitors.csv": VISITORS},
    )
    refused(
        run(tmp_path, same_days, mapping="plausible-csv"),
        "twice.test_20240302.zip",
        "both hold visitors for 2024-03-01",
        "keep one",
    )


def test_plausible_unsafe_entry_names_are_never_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = zip_of(
        work / "site.test_20240302.zip",
        {
            "imported_visitors_20240301_20240301.csv": VISITORS,
            "../imported_pages_evil.csv": PAGES,
            "/tmp/imported_devices_evil.csv": "x\n",
            "C:/imported_browsers_evil.csv": "x\n",
            "sub/../../imported_sources_evil.csv": "x\n",
        },
    )
    before = {p.name for p in tmp_path.rglob("*")}
    outcome = run(work, path, mapping="plausible-csv")
    assert outcome.code == 0, outcome.stderr
    assert outcome.ledger["read"] == 10  # the visitors table alone
    assert {p.name for p in tmp_path.rglob("*")} - before <= {"mapping.yaml", "report.json", "rejects.ndjson"}
    assert not Path("/tmp/imported_devices_evil.csv").exists()


@pytest.mark.timeout(60)
def test_plausible_entry_of_hundreds_of_mb_is_streamed(tmp_path: Path) -> None:
    """72 MiB of padding rows inflated from a ~110 KB entry: read in blocks, so the peak
    memory stays that of a small export (it was 1.9 GB, and grew with the entry)."""
    path = tmp_path / "pad.test_20240302.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("imported_visitors_20240301_20240301.csv", "w") as entry:
            entry.write(VISITORS.encode())
            padding = b",,,,,\n" * (1 << 20)
            for _ in range(12):
                entry.write(padding)
        archive.writestr("imported_pages_20240301_20240301.csv", PAGES)
    assert path.stat().st_size < 1 << 20
    peak_kb, code, stdout = peak_rss_kb(
        ["validate", str(path), "-m", "plausible-csv", "--rejects", str(tmp_path / "r")]
    )
    assert code == 0, stdout
    assert peak_kb < 600_000, f"peak RSS {peak_kb} KB"


def peak_rss_kb(args: list[str]) -> tuple[int, int, str]:
    """Peak RSS (KB) of ``backfill ARGS`` alone: measured by a fresh parent whose only child it is."""
    probe = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.run([sys.executable, '-m', 'backfill', *sys.argv[1:]], capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.returncode)\n"
        "print(proc.stdout + proc.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("UMAMI_")}
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )
    first, _, rest = done.stdout.partition("\n")
    peak, code = map(int, first.split())
    assert "Traceback" not in rest, rest
    return peak, code, rest


def test_plausible_impossible_dates_in_file_names(tmp_path: Path) -> None:
    path = zip_of(
        tmp_path / "site.test_20240231.zip",
        {"imported_visitors_20240231_20240231.csv": VISITORS, "imported_pages_20240231_20240231.csv": PAGES},
    )
    outcome = run(tmp_path, path, mapping="plausible-csv", out=True)
    assert outcome.code == 0 and outcome.ledger["accepted"] == 10, outcome.stderr  # days come from the rows
    assert {p["payload"]["hostname"] for p in outcome.payloads} == {"a.test"}


def test_plausible_gzip_or_truncated_download_named_zip(tmp_path: Path) -> None:
    gz = write(tmp_path / "site.test_20240302.zip", gzip.compress(VISITORS.encode()))
    refused(run(tmp_path, gz, mapping="plausible-csv"), "site.test_20240302.zip", "gzip-compressed data, not a ZIP")
    full = zip_of(tmp_path / "full.zip", {"imported_visitors_20240301_20240301.csv": VISITORS * 50})
    cut = write(tmp_path / "cut.test_20240302.zip", full.read_bytes()[:-30])
    refused(run(tmp_path, cut, mapping="plausible-csv"), "cut.test_20240302.zip", "truncated ZIP", "re-download")


# --------------------------------------------------------------------------- directories and globs


def test_folder_mixing_formats_with_notes_and_overlapping_patterns(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    write(folder / "a.csv", HEADER + rows(3))
    write(folder / "b.ndjson", "\n".join(ndjson_line(i) for i in range(10, 14)) + "\n")
    pl.read_csv(io.BytesIO((HEADER + rows(2, start=20)).encode()), infer_schema=False).write_parquet(
        folder / "c.parquet"
    )
    write(folder / "README.txt", "exported 2024-03-02")
    write(folder / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(folder / "sub" / "d.csv.gz", gzip.compress((HEADER + rows(1, start=30)).encode()))
    outcome = run(tmp_path, folder, str(folder / "*.csv"), str(folder / "**" / "*.gz"), folder / "a.csv")
    balanced(outcome, 10, 10)  # 3 + 4 + 2 + 1: each file read once
    assert "README.txt: not a data file extension" in outcome.stdout
    assert ".DS_Store: hidden file" in outcome.stdout
    assert sorted(Path(f).name for f in outcome.report["files"]) == ["a.csv", "b.ndjson", "c.parquet", "d.csv.gz"]


def test_a_preset_mapping_on_a_foreign_file_is_refused_before_any_row(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", HEADER + rows(2))
    refused(run(tmp_path, path, mapping=MAPPINGS / "sample_events.yaml"), "column", "events.csv")


# --------------------------------------------------------------------------- limits that keep memory flat


def test_a_record_or_line_that_never_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quote that is never closed, or one endless JSON line, is refused once it passes the
    limit (64 MiB; lowered here), instead of being held in memory to the end of the file."""
    from backfill.errors import SourceError
    from backfill.sources import ReadOptions, expand_sources, iter_chunks
    from backfill.sources import csv as csv_reader
    from backfill.sources import ndjson as ndjson_reader

    monkeypatch.setattr(csv_reader, "BLOCK_BYTES", 1 << 10)
    monkeypatch.setattr(csv_reader, "MAX_RECORD_BYTES", 16 << 10)
    monkeypatch.setattr(ndjson_reader, "BLOCK_BYTES", 1 << 10)
    monkeypatch.setattr(ndjson_reader, "MAX_LINE_BYTES", 16 << 10)
    csv_path = write(tmp_path / "open.csv", HEADER + rows(3) + '2024-03-01T09:00:00Z,v9,"/open\n' + rows(2000))
    json_path = write(tmp_path / "long.ndjson", ndjson_line(1) + "\n" + '{"x": "' + "y" * (64 << 10) + '"}\n')
    for path, message in (
        (csv_path, r"open\.csv: data row 4 \(line 5\) does not end within 0 MiB: a quote character"),
        (json_path, r"long\.ndjson: line 2 is longer than 0 MiB; this is not JSON lines"),
    ):
        options = ReadOptions()
        (source,) = expand_sources([str(path)], options)[0]
        with pytest.raises(SourceError, match=message):
            list(iter_chunks(source, 0, options))


def test_inspect_leaves_unreadable_rows_out_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "ragged.csv", HEADER + rows(3) + "2024-03-01T09:00:00Z,v9\n")
    result = run_cli("inspect", path)
    assert result.code == 0 and "Traceback" not in result.stderr
    assert "3 rows sampled" in result.stderr
    assert "1 sampled rows could not be read" in result.stderr


def test_reader_options_of_the_wrong_type_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", HEADER + rows(1))
    for option, words in (("has_header: 'no'", "has_header must be true or false"), ("delimiter: 5", "must be text")):
        mapping = MAPPING.replace("version: 1\n", f"version: 1\nreader:\n  {option}\n")
        refused(run(tmp_path, path, mapping=mapping), "mapping.yaml:3:", words)
