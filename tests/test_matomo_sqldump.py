# ruff: noqa: E501  (the fixture dumps keep mysqldump's long INSERT lines)
"""Matomo tables read from a mysqldump file give the rows the TSV export of the same tables gives."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backfill.sources.matomo_sqldump import sql_unescape, tsv_value
from tests.conftest import SAMPLES, run_cli
from tests.test_matomo import read_all

LOGS = SAMPLES / "matomo" / "logs"
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_BATCH_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\"}
HEADER = b"""-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
--
-- Host: localhost    Database: matomo
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
"""


# --------------------------------------------------------------------------- a small mysqldump


def sql_quote(raw: bytes) -> bytes:
    """A value as mysqldump quotes it (mysql_real_escape_string's set)."""
    out = raw.replace(b"\\", b"\\\\").replace(b"'", b"\\'").replace(b"\0", b"\\0")
    out = out.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\x1a", b"\\Z")
    return b"'" + out + b"'"


def batch_value(cell: str | None) -> str | None:
    """A mysql --batch cell's value (None for NULL)."""
    if cell is None or cell in ("\\N", "NULL"):
        return None
    return re.sub(r"\\(.)", lambda m: _BATCH_ESCAPES.get(m[1], m[1]), cell)


def sql_value(value: str | None, column: str, binary: str) -> bytes:
    """One value as a dump writes it; ``binary`` says how the binary column idvisitor is written."""
    if value is None:
        return b"NULL"
    if column == "idvisitor":
        raw = bytes.fromhex(value.removeprefix("0x"))
        return {
            "_binary": b"_binary " + sql_quote(raw),
            "hex": b"0x" + raw.hex().upper().encode(),
            "raw": sql_quote(raw),
        }[binary]
    if _NUMBER.fullmatch(value):
        return value.encode()
    return sql_quote(value.encode())


def table_sql(name: str, frame: pl.DataFrame, *, binary: str, rows_per_insert: int, columns_listed: bool) -> bytes:
    """CREATE TABLE and extended INSERTs for a table, as mysqldump writes them."""
    defs = [
        f"  `{c}` binary(8) NOT NULL" if c == "idvisitor" else f"  `{c}` varchar(255) DEFAULT NULL"
        for c in frame.columns
    ]
    body = ",\n".join(defs)
    out = [
        f"--\n-- Table structure for table `{name}`\n--\n\nDROP TABLE IF EXISTS `{name}`;\n".encode(),
        b"/*!40101 SET @saved_cs_client     = @@character_set_client */;\n",
        f"CREATE TABLE `{name}` (\n{body},\n  PRIMARY KEY (`{frame.columns[0]}`)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n".encode(),
        f"LOCK TABLES `{name}` WRITE;\n/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;\n".encode(),
    ]
    listed = f" ({','.join(f'`{c}`' for c in frame.columns)})" if columns_listed else ""
    rows = [
        b"(" + b",".join(sql_value(v, c, binary) for c, v in row.items()) + b")" for row in frame.iter_rows(named=True)
    ]
    for start in range(0, len(rows), rows_per_insert):
        out.append(
            f"INSERT INTO `{name}`{listed} VALUES ".encode() + b",".join(rows[start : start + rows_per_insert]) + b";\n"
        )
    out.append(f"/*!40000 ALTER TABLE `{name}` ENABLE KEYS */;\nUNLOCK TABLES;\n\n".encode())
    return b"".join(out)


def read_export(path: Path) -> pl.DataFrame:
    """A table file of the sample export, its cells as values (escapes undone, NULL as None)."""
    tsv = ".tsv" in path.name
    frame = pl.read_csv(path, separator="\t" if tsv else ",", quote_char=None if tsv else '"', infer_schema=False)
    if not tsv:
        return frame
    return frame.with_columns(pl.col(c).map_elements(batch_value, return_dtype=pl.String) for c in frame.columns)


def dump_of(folder: Path, *, binary: str = "_binary", rows_per_insert: int = 3, columns_listed: bool = False) -> bytes:
    """The folder's tables as one mysqldump file."""
    parts = [HEADER]
    for path in sorted(folder.iterdir()):
        name = path.name.split(".")[0]
        parts.append(
            table_sql(
                name, read_export(path), binary=binary, rows_per_insert=rows_per_insert, columns_listed=columns_listed
            )
        )
    return b"".join(parts)


def sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    data = frame.drop("_file", "_row")
    return data.sort(data.columns, nulls_last=True)


# --------------------------------------------------------------------------- the values


@pytest.mark.parametrize(
    ("token", "binary", "cell"),
    [
        ("'it\\'s'", False, "it's"),
        ("'it''s'", False, "it's"),
        ("'a\\\\b'", False, "a\\\\b"),
        ("'line\\nbreak\\ttab'", False, "line\\nbreak\\ttab"),
        ("'raw\ttab'", False, "raw\\ttab"),
        ("'\\Z'", False, "\x1a"),
        ("'Café — 日本'", False, "Café — 日本"),
        ("NULL", False, "\\N"),
        ("-12.50", False, "-12.50"),
        ("0xc4cf18b9ac039d09", True, "0xC4CF18B9AC039D09"),
        ("_binary '\\0\\'A\\\\'", False, "0x0027415C"),
        ("_utf8mb4 'x'", False, "x"),
    ],
)
def test_sql_values_become_mysql_batch_cells(token: str, binary: bool, cell: str) -> None:
    assert tsv_value(token, binary) == cell


def test_sql_unescape_follows_mysql() -> None:
    assert sql_unescape("a\\'b''c\\\\d\\0\\%") == "a'b'c\\d\0%"


# --------------------------------------------------------------------------- the same rows


@pytest.mark.parametrize(
    ("binary", "rows_per_insert", "columns_listed", "name"),
    [
        ("_binary", 3, False, "backup.sql"),
        ("hex", 1000, True, "backup.sql.gz"),  # --hex-blob --complete-insert, gzip
        ("raw", 1, False, "backup.sql"),  # MariaDB / MySQL 5.x: binary bytes quoted as they are
    ],
)
def test_a_dump_gives_the_rows_of_the_tsv_export(
    tmp_path: Path, binary: str, rows_per_insert: int, columns_listed: bool, name: str
) -> None:
    data = dump_of(LOGS, binary=binary, rows_per_insert=rows_per_insert, columns_listed=columns_listed)
    dump = tmp_path / name
    dump.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    from_tsv = read_all("matomo_logs", LOGS)
    from_sql = read_all("matomo_logs", dump)
    assert from_sql.height == from_tsv.height > 0
    assert_frame_equal(sorted_rows(from_sql), sorted_rows(from_tsv))


def _report_figures(path: Path) -> dict:
    """What a report says about the rows (not about the files, times or paths)."""
    report = json.loads(path.read_text())
    return {"ledger": report["ledger"], "stats": report["stats"], "notes": len(report["notes"])}


def test_validate_report_is_the_same_for_the_dump_and_the_tsv_folder(tmp_path: Path) -> None:
    dump = tmp_path / "backup.sql"
    dump.write_bytes(dump_of(LOGS))
    results = {}
    for label, source in (("tsv", LOGS), ("sql", dump)):
        report = tmp_path / f"{label}.json"
        payload = tmp_path / f"{label}.ndjson"
        result = run_cli(
            "validate", source, "-m", "matomo-logs", "--out", payload, "--rejects", tmp_path / f"{label}-r.ndjson",
            "--report", report,
        )  # fmt: skip
        assert result.code == 0, result.stderr
        lines = sorted(json.dumps(json.loads(line), sort_keys=True) for line in payload.read_text().splitlines())
        results[label] = (lines, _report_figures(report))
    assert results["sql"] == results["tsv"]
    assert results["sql"][0]


# --------------------------------------------------------------------------- real shapes


SHAPES = b"""-- MySQL dump 10.13
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `piwik_log_action`;
CREATE TABLE `piwik_log_action` (
  `idaction` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `name` text,
  `hash` int(10) unsigned NOT NULL,
  `type` tinyint(3) unsigned DEFAULT NULL,
  `url_prefix` tinyint(2) DEFAULT NULL,
  PRIMARY KEY (`idaction`)
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8;
LOCK TABLES `piwik_log_action` WRITE;
INSERT INTO `piwik_log_action` VALUES (1,'shop.example/caf\xc3\xa9?q=a\\'b\\\\c',1,1,1),
(2,'L\\'atelier \xe2\x80\x94 \\"two\\"\nlines;\nend',2,4,NULL),(3,'other.example/',3,1,0),(4,'Other home',4,4,NULL);
UNLOCK TABLES;
CREATE TABLE `piwik_log_visit` (
  `idvisit` bigint(10) unsigned NOT NULL AUTO_INCREMENT,
  `idsite` int(10) unsigned NOT NULL,
  `idvisitor` binary(8) NOT NULL,
  `visit_first_action_time` datetime NOT NULL,
  `config_id` binary(8) NOT NULL,
  `location_ip` varbinary(16) NOT NULL,
  `referer_url` text,
  PRIMARY KEY (`idvisit`)
) ENGINE=InnoDB;
INSERT INTO `piwik_log_visit` VALUES (1,1,_binary '\\0\\'\\\\\\n\xff\x01AB','2024-03-01 10:00:00',_binary 'abcdefgh',_binary '\x7f\\0\\0\x01','https://ref.example/?a=1&b=\\'x\\''),(2,2,0xC4CF18B9AC039D09,'2024-03-01 11:00:00',0x00,0x7F000001,NULL);
CREATE TABLE `piwik_log_link_visit_action` (
  `idlink_va` bigint(10) unsigned NOT NULL AUTO_INCREMENT,
  `idsite` int(10) unsigned NOT NULL,
  `idvisitor` binary(8) NOT NULL,
  `idvisit` bigint(10) unsigned NOT NULL,
  `idaction_url` int(10) unsigned DEFAULT NULL,
  `idaction_name` int(10) unsigned DEFAULT NULL,
  `server_time` datetime NOT NULL,
  `time_spent` int(10) unsigned DEFAULT NULL,
  PRIMARY KEY (`idlink_va`)
) ENGINE=InnoDB;
/*!40000 ALTER TABLE `piwik_log_link_visit_action` DISABLE KEYS */;
INSERT INTO `piwik_log_link_visit_action` VALUES (1,1,_binary '\\0\\'\\\\\\n\xff\x01AB',1,1,2,'2024-03-01 10:00:00',5),(2,1,_binary '\\0\\'\\\\\\n\xff\x01AB',1,1,2,'2024-03-01 10:00:07',NULL);
INSERT INTO `piwik_log_link_visit_action` VALUES (3,2,0xC4CF18B9AC039D09,2,3,4,'2024-03-01 11:00:00',NULL);
CREATE TABLE `piwik_site` (
  `idsite` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(90) NOT NULL,
  `main_url` varchar(255) NOT NULL,
  `currency` char(3) NOT NULL,
  PRIMARY KEY (`idsite`)
);
INSERT INTO `piwik_site` VALUES (1,'Caf\xc3\xa9 shop','https://shop.example','EUR'),(2,'Other','https://other.example','USD');
CREATE TABLE `piwik_option` (`option_name` varchar(191) NOT NULL, `option_value` longtext NOT NULL);
INSERT INTO `piwik_option` VALUES ('version_core','1.12');
CREATE TABLE `wp_posts` (`ID` bigint(20) NOT NULL, `post_title` text);
INSERT INTO `wp_posts` VALUES (1,'Hello; world');
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
"""

SHAPES_TSV = {
    "piwik_log_action.tsv": "idaction\tname\thash\ttype\turl_prefix\n"
    "1\tshop.example/café?q=a'b\\\\c\t1\t1\t1\n"
    '2\tL\'atelier — "two"\\nlines;\\nend\t2\t4\t\\N\n'
    "3\tother.example/\t3\t1\t0\n4\tOther home\t4\t4\t\\N\n",
    "piwik_log_visit.tsv": "idvisit\tidsite\tidvisitor\tvisit_first_action_time\treferer_url\n"
    "1\t1\t0x00275C0AFF014142\t2024-03-01 10:00:00\thttps://ref.example/?a=1&b='x'\n"
    "2\t2\t0xC4CF18B9AC039D09\t2024-03-01 11:00:00\t\\N\n",
    "piwik_log_link_visit_action.tsv": "idlink_va\tidsite\tidvisit\tidaction_url\tidaction_name\tserver_time\n"
    "1\t1\t1\t1\t2\t2024-03-01 10:00:00\n2\t1\t1\t1\t2\t2024-03-01 10:00:07\n3\t2\t2\t3\t4\t2024-03-01 11:00:00\n",
    "piwik_site.tsv": "idsite\tname\tmain_url\tcurrency\n1\tCafé shop\thttps://shop.example\tEUR\n"
    "2\tOther\thttps://other.example\tUSD\n",
    "piwik_option.tsv": "option_name\toption_value\nversion_core\t1.12\n",
}


@pytest.fixture
def shapes(tmp_path: Path) -> tuple[Path, Path]:
    """The same two-site Piwik tables as a dump (gzip) and as a TSV folder."""
    dump = tmp_path / "piwik.sql.gz"
    dump.write_bytes(gzip.compress(SHAPES))
    folder = tmp_path / "tsv"
    folder.mkdir()
    for name, text in SHAPES_TSV.items():
        (folder / name).write_text(text, encoding="utf-8")
    return dump, folder


def test_escapes_binary_ids_and_statements_over_lines_read_as_the_tsv(shapes: tuple[Path, Path]) -> None:
    dump, folder = shapes
    from_sql = read_all("matomo_logs", dump, matomo_site="1")
    assert_frame_equal(sorted_rows(from_sql), sorted_rows(read_all("matomo_logs", folder, matomo_site="1")))
    assert from_sql.height == 3
    urls = from_sql.filter(pl.col("site_id") == "1")
    assert urls.get_column("title").to_list() == ['L\'atelier — "two"\nlines;\nend'] * 2
    assert urls.get_column("visitor_id").unique().to_list() == ["00275c0aff014142"]


def test_two_sites_in_a_dump_are_refused_then_chosen(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    dump, _ = shapes
    refused = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson")
    assert refused.code != 0
    assert "Café shop" in refused.stderr + refused.stdout and "--matomo-site" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    chosen = run_cli("validate", dump, "-m", "matomo-logs", "--matomo-site", "2", "--rejects", tmp_path / "r.ndjson")
    assert chosen.code == 0, chosen.stderr
    said = chosen.stdout + chosen.stderr
    assert "piwik_option" in said  # an unused Matomo table, named
    assert "wp_posts" in said  # another application's table, named


def test_a_folder_with_a_dump_reads_it(shapes: tuple[Path, Path], tmp_path: Path) -> None:
    dump, _ = shapes
    folder = tmp_path / "backups"
    folder.mkdir()
    shutil.copy(dump, folder / dump.name)
    (folder / "matomo_option.tsv").write_text("option_name\toption_value\nversion_core\t5.1.0\n")
    from_folder = read_all("matomo_logs", folder, matomo_site="2")
    assert from_folder.height == 3
    assert from_folder.filter(pl.col("site_id") == "2").get_column("title").to_list() == ["Other home"]


@pytest.mark.parametrize(
    ("statement", "said"),
    [
        (b"INSERT INTO `piwik_log_action` VALUES (9,'x',1,1),(10,'y',1,1,NULL);\n", "line 12, table piwik_log_action"),
        (b"INSERT INTO `piwik_log_action` VALUES (9,'x',1,1,NULL) (10,'y',1,1,NULL);\n", "table piwik_log_action"),
        (b"INSERT INTO `piwik_log_action` VALUES (9,'never closed,1,1,NULL);\n", "ends inside a statement"),
    ],
)
def test_an_unreadable_statement_names_file_line_and_table(tmp_path: Path, statement: bytes, said: str) -> None:
    head = SHAPES.split(b"LOCK TABLES")[0]
    dump = tmp_path / "broken.sql"
    assert head.count(b"\n") == 11
    dump.write_bytes(head + statement)
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson")
    assert result.code != 0
    assert str(dump) in result.stderr and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
