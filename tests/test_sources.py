"""Source readers: formats, compression, row identity, chunking and file discovery."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from unittest.mock import ANY

import polars as pl
import pytest
import zstandard

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_FILE, COL_ROW, COL_SOURCE_ERROR, COL_SOURCE_RAW
from backfill.sources import (
    ReadOptions,
    SourceFile,
    SourceRecordError,
    count_rows_hint,
    expand_sources,
    iter_chunks,
    read_schema,
)
from backfill.sources import csv as csv_reader
from backfill.sources import ndjson as ndjson_reader

CSV_TEXT = b"id,url,code\n1,/a,00123\n2,/b,x\n3,/c,\n4,/d,7\n5,/e,8\n"
NDJSON_TEXT = b'{"id":1,"url":"/a"}\n{"id":2,"url":"/b"}\n{"id":3,"url":"/c"}\n'


def compress(data: bytes, compression: str | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


SUFFIX = {None: "", "gzip": ".gz", "zstd": ".zst"}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def source(path: Path, options: ReadOptions | None = None) -> SourceFile:
    files, _ = expand_sources([str(path)], options or ReadOptions())
    assert len(files) == 1
    return files[0]


def read_all(path: Path, options: ReadOptions | None = None, file_index: int = 0) -> pl.DataFrame:
    options = options or ReadOptions()
    frames = list(iter_chunks(source(path, options), file_index, options))
    assert all(frame.height <= options.chunk_rows for frame in frames)
    return pl.concat(frames) if frames else pl.DataFrame()


def rows(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return frame.select(*columns, COL_ROW).rows()


def parquet_bytes(frame: pl.DataFrame, tmp_path: Path) -> bytes:
    path = tmp_path / "scratch.parquet"
    frame.write_parquet(path, row_group_size=4)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture(autouse=True)
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temp copies go to a directory the tests can check is left empty."""
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setenv("BACKFILL_TMPDIR", str(spill))
    return spill


# --- every format, plain and compressed ---------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_csv_plain_and_compressed_keep_strings(tmp_path: Path, compression: str | None, private_tmpdir: Path) -> None:
    path = write(tmp_path / f"events.csv{SUFFIX[compression]}", compress(CSV_TEXT, compression))
    frame = read_all(path, ReadOptions(chunk_rows=2), file_index=7)
    assert frame.schema == {
        "id": pl.String,
        "url": pl.String,
        "code": pl.String,
        COL_FILE: pl.UInt32,
        COL_ROW: pl.UInt64,
    }
    assert frame["code"].to_list() == ["00123", "x", None, "7", "8"]
    assert frame[COL_ROW].to_list() == [1, 2, 3, 4, 5]
    assert set(frame[COL_FILE]) == {7}
    assert list(private_tmpdir.iterdir()) == []


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_ndjson_plain_and_compressed(tmp_path: Path, compression: str | None) -> None:
    path = write(tmp_path / f"e.jsonl{SUFFIX[compression]}", compress(NDJSON_TEXT, compression))
    frame = read_all(path, ReadOptions(chunk_rows=2))
    assert rows(frame, "id", "url") == [(1, "/a", 1), (2, "/b", 2), (3, "/c", 3)]


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_parquet_plain_and_compressed(tmp_path: Path, compression: str | None) -> None:
    data = parquet_bytes(pl.DataFrame({"n": range(10), "s": [f"v{i}" for i in range(10)]}), tmp_path)
    path = write(tmp_path / f"e.parquet{SUFFIX[compression]}", compress(data, compression))
    frame = read_all(path, ReadOptions(chunk_rows=3), file_index=2)
    assert frame["n"].to_list() == list(range(10))
    assert frame[COL_ROW].to_list() == list(range(1, 11))
    assert frame[COL_FILE].dtype == pl.UInt32 and set(frame[COL_FILE]) == {2}
    assert count_rows_hint(source(path)) == (10 if compression is None else None)


def test_concatenated_gzip_members_and_zstd_frames(tmp_path: Path) -> None:
    first, second = CSV_TEXT[:23], CSV_TEXT[23:]  # split after "1,/a,00123\n"
    gz = write(tmp_path / "a.csv.gz", gzip.compress(first) + gzip.compress(second))
    zctx = zstandard.ZstdCompressor()
    zst = write(tmp_path / "b.csv.zst", zctx.compress(first) + zctx.compress(second))
    assert read_all(gz)["code"].to_list() == read_all(zst)["code"].to_list()
    assert read_all(gz).height == 5


# --- row identity across chunk and block boundaries ----------------------------------


def test_csv_row_numbers_across_blocks_and_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_reader, "BLOCK_BYTES", 16)  # many tiny blocks
    body = b"".join(
        b'%d,"line one\nline two, with comma",x\n' % i if i % 3 == 0 else b"%d,plain,y\n" % i for i in range(1, 41)
    )
    path = write(tmp_path / "e.csv", b"id,text,flag\n" + body)
    frames = list(iter_chunks(source(path), 3, ReadOptions(chunk_rows=7)))
    assert [f.height for f in frames] == [7, 7, 7, 7, 7, 5]
    frame = pl.concat(frames)
    assert frame[COL_ROW].to_list() == list(range(1, 41))
    assert frame["id"].to_list() == [str(i) for i in range(1, 41)]
    assert frame["text"][2] == "line one\nline two, with comma"
    assert set(frame[COL_FILE]) == {3}


def test_ndjson_chunks_number_lines_with_blank_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ndjson_reader, "BLOCK_BYTES", 10)
    lines = []
    for i in range(1, 21):
        lines.append(json.dumps({"i": i}))
        if i % 4 == 0:
            lines.extend(["", "   "])
    path = write(tmp_path / "e.ndjson", ("\r\n".join(lines) + "\n").encode())
    frames = list(iter_chunks(source(path), 0, ReadOptions(chunk_rows=6)))
    assert [f.height for f in frames] == [6, 6, 6, 2]
    frame = pl.concat(frames)
    expected = [n for n, line in enumerate(lines, start=1) if line.strip()]
    assert frame[COL_ROW].to_list() == expected
    assert frame["i"].to_list() == list(range(1, 21))


# --- CSV details ------------------------------------------------------------------


def test_csv_bom_crlf_and_embedded_newlines(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbfid,note,last\r\n1,"two\r\nlines",a\r\n2,plain,b\r\n\r\n3,"q ""x""",c\r\n'
    frame = read_all(write(tmp_path / "e.csv", data))
    assert frame.columns[:3] == ["id", "note", "last"]
    assert rows(frame, "id", "note", "last") == [
        ("1", "two\r\nlines", "a", 1),
        ("2", "plain", "b", 2),
        ("3", 'q "x"', "c", 4),  # the blank line is record 3: skipped, still counted
    ]


def test_csv_semicolon_needs_the_delimiter_option(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", b"id;url\n1;/a\n")
    with pytest.raises(ConfigError, match=r"pass --delimiter ';'"):
        read_all(path)
    with pytest.raises(ConfigError, match=r"pass --delimiter ';'"):
        read_schema(source(path), ReadOptions())
    frame = read_all(path, ReadOptions(delimiter=";"))
    assert rows(frame, "id", "url") == [("1", "/a", 1)]


def test_tsv_defaults_to_tab(tmp_path: Path) -> None:
    frame = read_all(write(tmp_path / "e.tsv.gz", gzip.compress(b"a\tb\n1\t2,3\n")))
    assert rows(frame, "a", "b") == [("1", "2,3", 1)]


def test_csv_latin1_and_utf16_with_encoding(tmp_path: Path) -> None:
    text = "city,name\nMünchen,Zoë\n"
    latin = write(tmp_path / "latin.csv", text.encode("latin-1"))
    frame = read_all(latin, ReadOptions(encoding="latin-1"))
    assert rows(frame, "city", "name") == [("München", "Zoë", 1)]
    wide = write(tmp_path / "wide.csv", text.encode("utf-16"))
    assert read_all(wide, ReadOptions(encoding="utf-16"))["city"].to_list() == ["München"]
    with pytest.raises(SourceError, match="utf-16"):
        read_all(wide)


def test_csv_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    # One record with a byte that is not UTF-8 is a bad record, its bytes escaped;
    # a header that is not UTF-8 refuses the file.
    path = write(tmp_path / "e.csv", b"a,b\n1,ok\n2,caf\xe9\n3,ok\n")
    frame = read_all(path)
    assert frame["b"].to_list() == ["ok", None, "ok"]
    assert frame[COL_SOURCE_RAW].to_list() == [None, "2,caf\\xe9", None]
    header = write(tmp_path / "h.csv", b"a,caf\xe9\n1,ok\n")
    with pytest.raises(SourceRecordError, match=r"line 1: 0xe9 is not valid utf-8.*--encoding") as err:
        read_all(header)
    assert err.value.line == 1
    cp = write(tmp_path / "cp.csv", b"a,b\n1,ok\n2,\x81\n")
    with pytest.raises(SourceRecordError, match=r"line 3: 0x81 is not valid cp1252"):
        read_all(cp, ReadOptions(encoding="cp1252"))


def test_csv_duplicate_header_names(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", b"id,url,id\n1,/a,2\n")
    with pytest.raises(SourceError, match=r"duplicate column names.*'id' \(columns 1, 3\)"):
        read_all(path)


def test_csv_header_only_and_empty_files_yield_nothing(tmp_path: Path) -> None:
    header_only = write(tmp_path / "h.csv", b"id,url\r\n")
    assert list(iter_chunks(source(header_only), 0, ReadOptions())) == []
    assert read_schema(source(header_only), ReadOptions()) == {"id": pl.String, "url": pl.String}
    empty = write(tmp_path / "empty.csv", b"")
    assert list(iter_chunks(source(empty), 0, ReadOptions())) == []
    assert read_schema(source(empty), ReadOptions()) == {}


@pytest.mark.parametrize(("line", "fields"), [(b"3,/c\n", 2), (b"3,/c,x,extra\n", 4), (b"   \n", 1)])
def test_csv_ragged_rows_become_marked_rows(tmp_path: Path, line: bytes, fields: int) -> None:
    path = write(tmp_path / "e.csv", b'id,url,c\n1,"/a\nb",x\n2,/b,y\n' + line + b"4,/d,z\n")
    frame = read_all(path)
    assert rows(frame, "id", COL_SOURCE_ERROR) == [("1", None, 1), ("2", None, 2), (None, ANY, 3), ("4", None, 4)]
    assert frame[COL_SOURCE_ERROR][2].startswith(f"row has {fields} fields, the header has 3 (")
    assert frame[COL_SOURCE_RAW].to_list() == [None, None, line.decode().rstrip("\n"), None]
    assert frame.filter(pl.col(COL_ROW) == 3).select("url", "c").row(0) == (None, None)


def test_csv_projection_and_no_header(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", CSV_TEXT)
    frame = read_all(path, ReadOptions(columns=("code", "id")))
    assert frame.columns == ["code", "id", COL_FILE, COL_ROW]
    with pytest.raises(SourceError, match="no column 'nope'"):
        read_all(path, ReadOptions(columns=("nope",)))
    bare = read_all(path, ReadOptions(has_header=False))
    assert bare["column_1"].to_list()[:2] == ["id", "1"]
    assert bare[COL_ROW].to_list()[:2] == [1, 2]


def test_content_that_contradicts_the_name(tmp_path: Path) -> None:
    html = write(tmp_path / "export.csv", b"<!DOCTYPE html>\n<html><body>Login</body></html>\n")
    with pytest.raises(SourceError, match=r"export\.csv.*HTML page"):
        read_all(html)
    fake = write(tmp_path / "fake.parquet", CSV_TEXT)
    with pytest.raises(SourceError, match=r"fake\.parquet.*read as Parquet.*text"):
        read_all(fake)
    not_gz = write(tmp_path / "plain.csv.gz", CSV_TEXT)
    with pytest.raises(SourceError, match=r"read as gzip"):
        read_all(not_gz)
    gz_named_csv = write(tmp_path / "packed.csv", gzip.compress(CSV_TEXT))
    with pytest.raises(SourceError, match=r"gzip-compressed"):
        read_all(gz_named_csv)


# --- compression damage and temp files -----------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_archive_fails_before_any_row(tmp_path: Path, compression: str, private_tmpdir: Path) -> None:
    data = b"id,n\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(20_000))
    packed = compress(data, compression)
    path = write(tmp_path / f"e.csv{SUFFIX[compression]}", packed[: len(packed) // 2])
    chunks = iter_chunks(source(path), 0, ReadOptions(chunk_rows=10))
    with pytest.raises(SourceError, match=rf"truncated or corrupt {compression}.*re-download"):
        next(chunks)
    assert list(private_tmpdir.iterdir()) == []


def test_temp_copy_is_removed_when_the_iterator_is_closed(tmp_path: Path, private_tmpdir: Path) -> None:
    path = write(tmp_path / "e.ndjson.gz", gzip.compress(NDJSON_TEXT))
    chunks = iter_chunks(source(path), 0, ReadOptions(chunk_rows=1))
    next(chunks)
    assert len(list(private_tmpdir.iterdir())) == 1
    chunks.close()
    assert list(private_tmpdir.iterdir()) == []


def test_nothing_is_read_before_iteration(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", CSV_TEXT)
    found = source(path)
    path.unlink()
    chunks = iter_chunks(found, 0, ReadOptions())  # no error yet
    with pytest.raises(SourceError, match="cannot read"):
        next(chunks)


# --- NDJSON details -----------------------------------------------------------------


def test_ndjson_bad_lines_become_marked_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson", b'{"a":1}\n\n{"a":2\n{"a":3}\n')
    frame = read_all(path)
    assert rows(frame, "a", COL_SOURCE_ERROR, COL_SOURCE_RAW) == [
        (1, None, None, 1),
        (None, "line is not valid JSON: Expecting ',' delimiter", '{"a":2', 3),
        (3, None, None, 4),
    ]
    scalar = write(tmp_path / "s.ndjson", b'{"a":1}\n42\n')
    assert read_all(scalar)[COL_SOURCE_ERROR].to_list() == [None, "line is not a JSON object but a number"]
    nan = write(tmp_path / "n.ndjson", b'{"a":1}\n{"a":NaN}\n')
    assert read_all(nan)[COL_SOURCE_ERROR][1].startswith("line is not valid JSON: NaN")
    latin = write(tmp_path / "l.ndjson", b'{"a":1}\n{"a":"caf\xe9"}\n')
    with pytest.raises(SourceRecordError, match=r"line 2: 0xe9 is not valid utf-8"):
        read_all(latin)
    assert read_all(latin, ReadOptions(encoding="latin-1"))["a"].to_list() == ["1", "café"]


def test_ndjson_json_array_is_refused_with_a_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "export.json", b'\n  [{"a": 1},\n {"a": 2}]\n')
    with pytest.raises(SourceError, match=r"JSON array, not JSON lines.*jq -c '\.\[\]'"):
        read_all(path)
    with pytest.raises(SourceError, match="JSON array"):
        read_schema(source(path), ReadOptions())


def test_ndjson_mixed_number_and_string_field(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson", b'{"v":1}\n{"v":"x"}\n{"v":2.5,"extra":true}\n')
    frame = read_all(path)
    assert frame["v"].to_list() == ["1", "x", "2.5"]
    assert frame["extra"].to_list() == [None, None, True]
    assert frame[COL_ROW].to_list() == [1, 2, 3]


def test_ndjson_object_and_list_in_one_field_fall_back_to_text(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson", b'{"o":{"k":1},"n":1}\n{"o":[1,2],"n":2}\n')
    frame = read_all(path)
    assert frame["o"].to_list() == ['{"k": 1}', "[1, 2]"]
    assert frame["n"].to_list() == ["1", "2"]  # the whole chunk is read as text


def test_csv_stray_quote_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", b'a,b\n1,5" screen\n2,"multi\nline"\n3,z\n')
    with pytest.raises(SourceError, match=r"data rows from 1 \(line 2\) on.*quote character"):
        read_all(path)


def test_ndjson_schema_and_projection(tmp_path: Path) -> None:
    path = write(tmp_path / "e.ndjson.zst", compress(NDJSON_TEXT, "zstd"))
    assert read_schema(source(path), ReadOptions()) == {"id": pl.Int64, "url": pl.String}
    frame = read_all(path, ReadOptions(columns=("url", "missing")))
    assert frame.columns == ["url", COL_FILE, COL_ROW]


# --- Parquet details ----------------------------------------------------------------


def test_parquet_zero_rows_truncated_and_schema(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"a": []}, schema={"a": pl.Int32}).write_parquet(empty)
    assert list(iter_chunks(source(empty), 0, ReadOptions())) == []
    assert read_schema(source(empty), ReadOptions()) == {"a": pl.Int32}
    full = parquet_bytes(pl.DataFrame({"a": range(100)}), tmp_path)
    cut = write(tmp_path / "cut.parquet", full[: len(full) - 10])
    with pytest.raises(SourceError, match=r"cut\.parquet: truncated Parquet"):
        read_all(cut)
    projected = read_all(write(tmp_path / "ok.pq", full), ReadOptions(columns=("a",)))
    assert projected.columns == ["a", COL_FILE, COL_ROW]


# --- finding files ------------------------------------------------------------------


def test_expand_directory_with_mixed_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write(data / "b.csv", CSV_TEXT)
    write(data / "nested" / "a.ndjson.gz", gzip.compress(NDJSON_TEXT))
    pl.DataFrame({"a": [1]}).write_parquet(data / "c.parquet")
    write(data / "README.txt", b"about")
    write(data / ".DS_Store", b"\0")
    write(data / ".cache" / "x.csv", CSV_TEXT)
    files, skipped = expand_sources([str(data)], ReadOptions())
    assert [(Path(f.path).name, f.format, f.compression) for f in files] == [
        ("b.csv", "csv", None),
        ("c.parquet", "parquet", None),
        ("a.ndjson.gz", "ndjson", "gzip"),
    ]
    assert all(os.path.isabs(f.path) and f.size > 0 and f.mtime_ns > 0 for f in files)
    assert len(skipped) == 3
    assert any("README.txt" in m and "extension" in m for m in skipped)
    assert any(".DS_Store" in m and "hidden" in m for m in skipped)
    assert any(".cache" in m and "hidden" in m for m in skipped)


def test_expand_globs_and_duplicates(tmp_path: Path) -> None:
    a = write(tmp_path / "d" / "a.csv", CSV_TEXT)
    write(tmp_path / "d" / "sub" / "b.csv", CSV_TEXT)
    write(tmp_path / "d" / "notes.md", b"x")
    files, skipped = expand_sources([str(tmp_path / "d" / "*.csv")], ReadOptions())
    assert [Path(f.path).name for f in files] == ["a.csv"]
    files, skipped = expand_sources([str(tmp_path / "d" / "**" / "*.csv"), str(a), str(tmp_path / "d")], ReadOptions())
    assert [Path(f.path).name for f in files] == ["a.csv", "b.csv"]
    assert any("notes.md" in m for m in skipped)


def test_expand_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.csv.*no such file"):
        expand_sources([str(tmp_path / "nope.csv")], ReadOptions())
    with pytest.raises(ConfigError, match=r"\*\.csv.*no file matches"):
        expand_sources([str(tmp_path / "*.csv")], ReadOptions())
    write(tmp_path / "only" / "README.txt", b"x")
    with pytest.raises(ConfigError, match=r"no data files found.*README"):
        expand_sources([str(tmp_path / "only")], ReadOptions())


def test_explicit_unknown_extension(tmp_path: Path) -> None:
    dump = write(tmp_path / "events.dat", CSV_TEXT)
    with pytest.raises(ConfigError, match=r"events\.dat.*pass --format"):
        expand_sources([str(dump)], ReadOptions())
    assert read_all(dump, ReadOptions(format="csv")).height == 5
    sniffed = write(tmp_path / "events.log.gz", gzip.compress(NDJSON_TEXT))
    found = source(sniffed)
    assert (found.format, found.compression) == ("ndjson", "gzip")


def test_format_option_reads_named_and_globbed_files_but_not_directory_notes(
    tmp_path: Path,
) -> None:
    write(tmp_path / "in" / "a.log", CSV_TEXT)
    write(tmp_path / "in" / "README.txt", b"notes")
    csv_format = ReadOptions(format="csv")
    files, _ = expand_sources([str(tmp_path / "in" / "*.log")], csv_format)
    assert [Path(f.path).name for f in files] == ["a.log"]
    with pytest.raises(ConfigError, match="no data files found"):
        expand_sources([str(tmp_path / "in")], csv_format)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--format"):
        ReadOptions(format="xlsx")
    with pytest.raises(ConfigError, match="encoding"):
        ReadOptions(encoding="klingon")
    with pytest.raises(ConfigError, match="delimiter"):
        ReadOptions(delimiter=";;")
    with pytest.raises(ConfigError, match="chunk_rows"):
        ReadOptions(chunk_rows=0)
    assert ReadOptions(delimiter="\\t").delimiter == "\t"
