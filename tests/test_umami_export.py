"""Umami's own export as a source (``--format umami``, preset ``umami-export``).

The samples come from ``sample_data/make_umami_export_samples.py``; what Umami
must hold after an import is computed from the generator's own sessions (never
through the reader). The round trip: import the sample into website A of the
fake Umami, export A as Umami's export route writes it, import that into B, and
compare A and B table by table.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import zipfile
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from backfill.sources import PLUGINS, ReadOptions, expand_sources, iter_chunks
from backfill.sources.umami_export import describe, sniff
from tests.conftest import SAMPLES, import_into, run_cli, stored_figures
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami

UE = SAMPLES / "umami_export"
ZIP = UE / "umami-export.zip"
PG = UE / "postgres"
EXPECTED: dict[str, Any] = json.loads((UE / "expected.json").read_text())
REPEAT_FILTER = "event already read (an event_id seen twice in the export; exports that overlap)"
LINK_FILTER = "Umami link, pixel, performance or other non-page event (event_type not 1 or 2)"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_umami_export_samples", SAMPLES / "make_umami_export_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def read_all(path: Path, chunk_rows: int = 100_000) -> pl.DataFrame:
    options = ReadOptions(format="umami", chunk_rows=chunk_rows)
    files, _ = expand_sources([str(path)], options)
    return pl.concat([f for i, s in enumerate(files) for f in iter_chunks(s, i, options)], how="diagonal")


def _blank(value: Any) -> Any:
    return None if value == "" else value


# --------------------------------------------------------------------------- what Umami stored, canonically


def stored_tables(server: FakeUmami, site: str) -> dict[str, list[tuple[Any, ...]]]:
    """The site's tables without Umami's own ids: sessions by distinct_id, visits by
    (session, first event time), events by (session, time, type, name, path)."""
    sessions = {s["session_id"]: s for s in server.sessions(site)}
    events = server.events(site)
    visit_start: dict[str, str] = {}
    for e in events:
        visit_start[e["visit_id"]] = min(visit_start.get(e["visit_id"], e["created_at"]), e["created_at"])

    def who(session_id: str) -> str:
        return sessions[session_id]["distinct_id"]

    event_key = {
        e["event_id"]: (who(e["session_id"]), e["created_at"], e["event_type"], e["event_name"], e["url_path"])
        for e in events
    }
    return {
        "session": sorted(tuple(_blank(s[c]) for c in ("distinct_id", *GEN_SESSION_ATTRS)) for s in sessions.values()),
        "website_event": sorted(
            (
                *event_key[e["event_id"]],
                *(_blank(e[c]) for c in EVENT_COLUMNS),
                (who(e["session_id"]), visit_start[e["visit_id"]]),
            )
            for e in events
        ),
        "event_data": sorted(
            (event_key[d["website_event_id"]], *(d[c] for c in DATA_COLUMNS)) for d in server.event_data(site)
        ),
        "session_data": sorted(
            (who(d["session_id"]), *(d[c] for c in DATA_COLUMNS)) for d in server.session_data(site)
        ),
        "revenue": sorted(
            (event_key[r["event_id"]], r["event_name"], r["currency"], r["revenue"]) for r in server.revenue(site)
        ),
    }


GEN_SESSION_ATTRS = ("browser", "os", "device", "screen", "language", "country", "region", "city")
EVENT_COLUMNS = ("url_query", "referrer_domain", "referrer_path", "referrer_query", "page_title", "hostname", "tag")
DATA_COLUMNS = ("data_key", "string_value", "number_value", "date_value", "data_type")


def source_tables() -> dict[str, list[tuple[Any, ...]]]:
    """The same canonical tables, from the generator's sessions (what website A held)."""
    events, event_data, session_data = GEN.make_sessions()
    kept = [e for e in events if e["event_type"] in (1, 2)]

    def who(e: dict[str, Any]) -> str:
        return e["distinct_id"] or e["session_id"]

    def at(value: datetime) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")

    visit_start: dict[str, str] = {}
    for e in kept:
        visit_start[e["visit_id"]] = min(visit_start.get(e["visit_id"], at(e["created_at"])), at(e["created_at"]))
    key = {e["event_id"]: (who(e), at(e["created_at"]), e["event_type"], e["event_name"], e["url_path"]) for e in kept}
    sessions = {who(e): e for e in kept}
    for r in session_data:  # a session with data only (none here) would still be a session
        assert who(r) in sessions

    def data_row(r: dict[str, Any]) -> tuple[Any, ...]:
        date = r["date_value"].strftime("%Y-%m-%dT%H:%M:%S.000Z") if r["date_value"] else None
        string = date if date else r["string_value"]
        return (r["data_key"], string, r["number_value"], date, r["data_type"])

    return {
        "session": sorted((k, *(s[c] for c in GEN_SESSION_ATTRS)) for k, s in sessions.items()),
        "website_event": sorted(
            (*key[e["event_id"]], *(e[c] for c in EVENT_COLUMNS), (who(e), visit_start[e["visit_id"]])) for e in kept
        ),
        "event_data": sorted((key[r["event_id"]], *data_row(r)) for r in event_data if r["event_id"] in key),
        "session_data": sorted((who(r), *data_row(r)) for r in session_data),
        "revenue": sorted(
            (key[r["event_id"]], "purchase", c["string_value"], r["number_value"])
            for r in event_data
            if r["data_key"] == "revenue"
            for c in event_data
            if c["event_id"] == r["event_id"] and c["data_key"] == "currency"
        ),
    }


def export_zip(server: FakeUmami, site: str, path: Path) -> Path:
    """Website ``site`` as Umami's export route writes it (Cloud columns, ' before formula triggers)."""
    sessions = {s["session_id"]: s for s in server.sessions(site)}
    events = [{**sessions[e["session_id"]], **e} for e in server.events(site)]
    event_data = [{**d, "event_id": d["website_event_id"]} for d in server.event_data(site)]
    session_data = server.session_data(site)

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and text else text

    def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(r.get(c)) for c in columns] for r in rows)
        return out.getvalue()

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("website_event.csv", table(events, GEN.CLOUD_EVENT_COLUMNS))
        archive.writestr("event_data.csv", table(event_data, GEN.CLOUD_EVENT_DATA_COLUMNS))
        archive.writestr("session_data.csv", table(session_data, GEN.CLOUD_SESSION_DATA_COLUMNS))
    return path


def _import(server: FakeUmami, source: Path, tmp_path: Path, *extra: str) -> tuple[str, dict[str, Any]]:
    site = server.add_website()
    result = import_into(server.url, site, source, "umami-export", tmp_path, "--state", tmp_path / "state", *extra)
    assert result.code == 0, result.stdout + result.stderr
    return site, json.loads((tmp_path / "report.json").read_text())


# --------------------------------------------------------------------------- the samples


def test_shipped_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    GEN.write(tmp_path)
    for path in sorted(p.relative_to(UE) for p in UE.rglob("*") if p.is_file()):
        assert (tmp_path / path).read_bytes() == (UE / path).read_bytes(), path


@pytest.mark.parametrize("source", [ZIP, PG / "website_event.csv"], ids=["cloud-zip", "postgres-tables"])
def test_import_keeps_every_row(source: Path, tmp_path: Path) -> None:
    """Each shape, through the CLI into the fake: the stored tables equal the source's, row by row."""
    with FakeUmami() as server:
        site, report = _import(server, source, tmp_path)
        stored = stored_tables(server, site)
        figures = stored_figures(server.events(site), server.revenue(site))
        sessions = server.sessions(site)
    expected = source_tables()
    for table in expected:
        assert stored[table] == expected[table], table
    ledger = report["ledger"]
    assert ledger["skipped_by_filter"] == {LINK_FILTER: EXPECTED["skipped_link_pixel_performance"]}
    assert ledger["read"] == EXPECTED["website_event_rows"] + EXPECTED["identify_rows"]
    assert figures.pageviews_by_day == EXPECTED["pageviews_by_day"]
    assert figures.visitors_by_day == EXPECTED["visitors_by_day"]
    assert figures.custom_events_by_name == EXPECTED["events_by_name"]
    assert figures.revenue_by_day == EXPECTED["revenue_by_day"]
    visits: dict[str, set[str]] = defaultdict(set)
    for e in figures.pageviews:
        visits[e["created_at"][:10]].add(e["visit_id"])
    assert {d: len(v) for d, v in sorted(visits.items())} == EXPECTED["visits_by_day"]
    for attr in ("country", "browser", "os", "device"):
        counts = dict(sorted(Counter(s[attr] for s in sessions if s[attr]).items()))
        assert counts == EXPECTED[f"sessions_by_{attr}"], attr


def test_round_trip_a_to_b_is_equal_table_by_table(tmp_path: Path) -> None:
    """Website A (the sample imported), exported as Umami does, imported into B: B == A."""
    with FakeUmami() as server:
        site_a, _ = _import(server, ZIP, tmp_path / "a")
        exported = export_zip(server, site_a, tmp_path / "export-a.zip")
        site_b, report = _import(server, exported, tmp_path / "b")
        a, b = stored_tables(server, site_a), stored_tables(server, site_b)
        login = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}
        checked = run_cli(
            "verify", exported, "-m", "umami-export", "--host", server.url, "--website", site_b, env=login
        )
    assert checked.code == 0 and "verdict: MATCH" in checked.stdout, checked.stdout + checked.stderr
    assert report["ledger"]["rejected"] == 0
    for table in a:
        assert a[table], table
        assert b[table] == a[table], table


def test_reader_columns_on_the_two_shapes_agree() -> None:
    """The Cloud ZIP and the PostgreSQL tables hold the same data: the reader gives the same rows."""
    cloud = read_all(ZIP).drop("_file", "_row").sort("kind", "created_ms", "event_id", "visitor")
    pg = read_all(PG / "website_event.csv").drop("_file", "_row").sort("kind", "created_ms", "event_id", "visitor")
    assert cloud.equals(pg)
    assert cloud.filter(pl.col("title") == "-50% on everything").height > 0  # the export's ' quote is gone
    docs = cloud.filter(pl.col("url").str.contains("#install"))
    assert docs.height > 0 and docs.get_column("url").str.starts_with("/docs/start").all()


def test_small_chunks_and_many_buckets_give_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory is one bucket: splitting the export into many buckets must not change a row."""
    whole = read_all(ZIP).sort("_row")
    monkeypatch.setattr("backfill.sources.umami_export.BUCKET_BYTES", 2_000)
    parts = read_all(ZIP, chunk_rows=7).sort("_row")
    assert parts.equals(whole)


def test_sniff_and_preset(tmp_path: Path) -> None:
    plugin = PLUGINS["umami"]
    assert plugin.preset == "umami-export" and plugin.sniff is not None
    assert sniff(str(ZIP)) and sniff(str(PG / "website_event.csv")) and sniff(str(PG))
    assert not sniff(str(PG / "session.csv"))
    assert not sniff(str(SAMPLES / "events.csv"))


# --------------------------------------------------------------------------- bad input


def _zip(path: Path, tables: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in tables.items():
            archive.writestr(name, text)
    return path


def _validate(source: Path, tmp_path: Path) -> tuple[int, str, list[dict[str, Any]]]:
    result = run_cli(
        "validate", source, "-m", "umami-export", "--rejects", tmp_path / "rejects.ndjson",
        "--report", tmp_path / "report.json",
    )  # fmt: skip
    rejects_path = tmp_path / "rejects.ndjson"
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()] if rejects_path.exists() else []
    return result.code, result.stdout + result.stderr, rejects


def _cloud_tables() -> dict[str, str]:
    with zipfile.ZipFile(ZIP) as archive:
        return {n: archive.read(n).decode() for n in archive.namelist()}


def test_missing_website_event_table_is_refused(tmp_path: Path) -> None:
    tables = _cloud_tables()
    del tables["website_event.csv"]
    code, out, _ = _validate(_zip(tmp_path / "x.zip", tables), tmp_path)
    assert code == 2 and "no website_event table" in out and "x.zip" in out


def test_session_table_alone_is_refused(tmp_path: Path) -> None:
    (tmp_path / "session.csv").write_text((PG / "session.csv").read_text())
    code, out, _ = _validate(tmp_path / "session.csv", tmp_path)
    assert code == 2 and "website_event" in out and "session.csv" in out


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    data = ZIP.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    code, out, _ = _validate(tmp_path / "cut.zip", tmp_path)
    assert code == 2 and "cut.zip" in out and "Traceback" not in out


def test_truncated_table_and_orphan_event_data_are_rejected_by_row(tmp_path: Path) -> None:
    """A website_event.csv cut mid-line: that line is rejected, and the event data of the
    events cut off is rejected naming event_data.csv and its row; the ledger adds up."""
    tables = _cloud_tables()
    lines = tables["website_event.csv"].splitlines()
    purchases = [i for i, line in enumerate(lines) if ",purchase," in line]
    cut = purchases[-1]  # keep the lines before the last purchase, and half of it
    tables["website_event.csv"] = "\n".join(lines[:cut]) + "\n" + lines[cut][: len(lines[cut]) // 2] + "\n"
    code, out, rejects = _validate(_zip(tmp_path / "cut.zip", tables), tmp_path)
    assert code == 1, out
    report = json.loads((tmp_path / "report.json").read_text())["ledger"]
    reasons = [r["reason"] for r in rejects]
    assert any("event_data.csv row" in r and "in no website_event row" in r for r in reasons), reasons
    assert any(r["field"] == "(record)" and r["row"] == cut for r in rejects), rejects
    skipped = sum(report["skipped_by_filter"].values())
    assert report["read"] == report["accepted"] + report["rejected"] + skipped


def test_unknown_column_noted_and_missing_ones_absent(tmp_path: Path) -> None:
    tables = _cloud_tables()
    text = tables["website_event.csv"].replace("website_id,", "website_id,colour,", 1)
    rows = text.splitlines()
    rows[1:] = [r.replace(",", ",blue,", 1) for r in rows[1:]]
    tables["website_event.csv"] = "\n".join(rows) + "\n"
    reader = csv.reader(io.StringIO(tables["session_data.csv"]))
    header, *body = list(reader)
    keep = [i for i, c in enumerate(header) if c != "distinct_id"]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[i] for i in keep] for r in [header, *body]])
    tables["session_data.csv"] = out.getvalue()
    path = _zip(tmp_path / "x.zip", tables)
    described = describe(str(path))
    assert any("colour" in n and "not used" in n for n in described["notes"]), described["notes"]
    assert any("session_data.csv" in n and "distinct_id" in n for n in described["notes"]), described["notes"]
    code, out, rejects = _validate(path, tmp_path)
    assert code == 0, out
    assert not rejects


def test_mixed_export_of_two_websites_is_refused(tmp_path: Path) -> None:
    tables = _cloud_tables()
    lines = tables["website_event.csv"].splitlines()
    lines[-1] = lines[-1].replace(GEN.WEBSITE, "00000000-1111-2222-3333-444444444444", 1)
    tables["website_event.csv"] = "\n".join(lines) + "\n"
    code, out, _ = _validate(_zip(tmp_path / "mixed.zip", tables), tmp_path)
    assert code == 2 and "2 websites" in out


def test_overlapping_exports_import_an_event_once(tmp_path: Path) -> None:
    """An event_id seen twice (two overlapping exports in one ZIP) is sent once; the copy is
    skipped by the preset's named filter and counted."""
    tables = _cloud_tables()
    lines = tables["website_event.csv"].splitlines()
    tables["website_event.csv"] = "\n".join([*lines, lines[1]]) + "\n"
    code, out, rejects = _validate(_zip(tmp_path / "twice.zip", tables), tmp_path)
    assert code == 0 and not rejects, out
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["skipped_by_filter"][REPEAT_FILTER] == 1
    frame = read_all(tmp_path / "twice.zip")
    assert frame.filter(pl.col("repeat_of").is_not_null()).get_column("repeat_of").to_list() == [1]


def test_bad_created_at_and_bad_data_value_name_file_and_row(tmp_path: Path) -> None:
    tables = _cloud_tables()
    lines = tables["website_event.csv"].splitlines()
    lines[3] = lines[3].replace("2024-03-0", "2024-13-0", 1)
    download = next(i for i, line in enumerate(lines) if ",2,download," in line)
    lines[download] = lines[download].replace(",2,download,", ",2,,", 1)
    tables["website_event.csv"] = "\n".join(lines) + "\n"
    data = tables["event_data.csv"].splitlines()
    seats = next(i for i, line in enumerate(data) if ",seats," in line)
    data[seats] = data[seats].replace("3.0000,3.0000", "three,three")
    tables["event_data.csv"] = "\n".join(data) + "\n"
    code, out, rejects = _validate(_zip(tmp_path / "bad.zip", tables), tmp_path)
    assert code == 1, out
    reasons = sorted(r["reason"] for r in rejects)
    assert len(rejects) == 3, reasons
    assert any(f"row {download}: a custom event (event_type 2) without event_name" in r for r in reasons)
    assert any("website_event.csv row 3: created_at 2024-13-0" in r for r in reasons), reasons
    assert any(f'event_data.csv row {seats}: data_key "seats"' in r and "needs a number" in r for r in reasons)


def test_cloud_zip_without_event_data_is_refused(tmp_path: Path) -> None:
    tables = _cloud_tables()
    del tables["event_data.csv"]
    code, out, _ = _validate(_zip(tmp_path / "x.zip", tables), tmp_path)
    assert code == 2 and "no event_data.csv" in out


def test_postgres_events_without_sessions_are_refused(tmp_path: Path) -> None:
    """The dump's website_event has no browser, os, ...: without session.csv they would be lost."""
    (tmp_path / "website_event.csv").write_text((PG / "website_event.csv").read_text())
    code, out, _ = _validate(tmp_path / "website_event.csv", tmp_path)
    assert code == 2 and "no session.csv" in out and "website_event.csv" in out


def test_one_joined_dump_file_alone(tmp_path: Path) -> None:
    """A \\copy of website_event joined with session, under any name, without other tables."""
    (tmp_path / "dump").mkdir()
    joined = tmp_path / "dump" / "site-events.csv"
    joined.write_text(_cloud_tables()["website_event.csv"])
    with FakeUmami() as server:
        site, report = _import(server, joined, tmp_path, "--format", "umami")
        stored = stored_tables(server, site)
    expected = source_tables()
    assert stored["session"] == expected["session"]
    assert stored["website_event"] == expected["website_event"]
    assert stored["event_data"] == stored["session_data"] == []
    assert report["ledger"]["read"] == EXPECTED["website_event_rows"]


def test_event_types_of_later_versions_are_skipped_not_sent_as_pageviews(tmp_path: Path) -> None:
    tables = _cloud_tables()
    lines = tables["website_event.csv"].splitlines()
    pageview = next(i for i, line in enumerate(lines) if i and ",1,,," in line)
    lines[pageview] = lines[pageview].replace(",1,,,", ",6,,,", 1)
    tables["website_event.csv"] = "\n".join(lines) + "\n"
    code, out, _ = _validate(_zip(tmp_path / "x.zip", tables), tmp_path)
    assert code == 0, out
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["skipped_by_filter"] == {LINK_FILTER: EXPECTED["skipped_link_pixel_performance"] + 1}


@pytest.mark.parametrize(
    ("props", "revenue", "data"),
    [
        ('{"a.b":1.5000,"flag":true,"when":"2024-03-01T08:00:00.000Z","list":[1,2],"n":null}', None,
         {"a.b": 1.5, "flag": True, "when": "2024-03-01T08:00:00.000Z", "list": [1, 2], "n": None}),
        ('{"plan":"pro"}', 9.5, {"revenue": 9.5, "plan": "pro"}),
        (None, 9.5, {"revenue": 9.5}),
        ("{}", None, None),
        (None, None, None),
    ],
)  # fmt: skip
def test_data_object_column_is_spliced_into_data(props: str | None, revenue: float | None, data: Any) -> None:
    """``data.*`` (a JSON object per row) and ``data.<key>`` columns make one ``data``; nulls
    inside the object stay (Umami stores them), an empty or absent one sends no ``data``."""
    from backfill.payload import build_elements

    frame = pl.DataFrame(
        {"type": ["event"], "_visitor": ["v"], "_ts": [1709280000], "url": ["/"], "data.*": [props],
         "data.revenue": [revenue]},
        schema={"type": pl.String, "_visitor": pl.String, "_ts": pl.Int64, "url": pl.String, "data.*": pl.String,
                "data.revenue": pl.Float64},
    )  # fmt: skip
    element = json.loads(build_elements(frame, "site")[0])
    assert element["payload"].get("data") == data
    assert element["payload"]["url"] == "/" and element["payload"]["id"] == "v"
