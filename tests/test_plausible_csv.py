"""Plausible CSV exports: reading (ZIP, folder), synthesis exactness, and an import into the fake Umami."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backfill.sources import PLUGINS, ReadOptions, expand_sources, iter_chunks, read_schema
from backfill.sources.plausible_csv import assemble_days, iter_export_frames, read_export
from backfill.synthesize_plausible import OUTPUT_SCHEMA, PlausibleDay, plan_day, synthesize_day
from tests.conftest import MAPPINGS, SAMPLES, import_into, run_cli
from tests.fake_umami import FakeUmami

PL_DIR = SAMPLES / "plausible_csv"
ZIP = PL_DIR / "example.com_20240305.zip"
PRESET = MAPPINGS / "plausible-csv.yaml"
DAY_MS = 86_400_000


OLD_ZIP = PL_DIR / "old-layout.example.com_20230101.zip"


def expected_days(path: Path = ZIP) -> dict[str, Any]:
    return json.loads((PL_DIR / "expected.json").read_text())[path.name]["days"]


def frames_of(path: Path) -> pl.DataFrame:
    export = read_export(str(path))
    return pl.concat(list(iter_export_frames(export)))


def umami_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Umami's stats query on these events: pageviews grouped by (visitor, clock hour)."""
    views = frame.filter(pl.col("event_name").is_null()).with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%SZ").alias("t")
    )
    visits = views.group_by("visitor_id", pl.col("t").dt.truncate("1h")).agg(
        pl.len().alias("n"), (pl.col("t").max() - pl.col("t").min()).dt.total_seconds().alias("d")
    )
    return {
        "visitors": views.get_column("visitor_id").n_unique(),
        "visits": visits.height,
        "pageviews": views.height,
        "bounces": visits.filter(pl.col("n") == 1).height,
        "visit_duration": int(visits.get_column("d").sum()),
    }


def by_day(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {k[0]: f for k, f in frame.group_by(pl.col("timestamp").str.slice(0, 10), maintain_order=True)}


def zip_bytes(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


SMALL = {
    "imported_visitors_20240301_20240301.csv": (
        '"date","visitors","pageviews","bounces","visits","visit_duration"\n"2024-03-01",3,10,2,5,400\n'
    ),
    "imported_pages_20240301_20240301.csv": '"date","hostname","page","pageviews"\n"2024-03-01","a.test","/",10\n',
}


# --------------------------------------------------------------------------- reader


def test_zip_and_folder_read_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    with zipfile.ZipFile(ZIP) as archive:
        for info in archive.infolist():
            (folder / info.filename).write_bytes(archive.read(info))
    from_zip, from_folder = read_export(str(ZIP)), read_export(str(folder))
    assert sorted(from_zip.tables) == sorted(from_folder.tables)
    assert from_zip.key == from_folder.key
    assert frames_of(ZIP).drop("hostname").equals(frames_of(folder).drop("hostname"))
    # through the plugin: the folder's visitors file stands for the export, the others give no rows
    options = ReadOptions(format="plausible_csv")
    files, _ = expand_sources([str(folder)], options)
    assert len(files) == 11
    rows = sum(f.height for src in files for f in iter_chunks(src, 0, options))
    assert rows == frames_of(ZIP).height


def test_unsafe_and_foreign_zip_entries_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "site.test_20240302.zip"
    path.write_bytes(
        zip_bytes(
            {
                **SMALL,
                "../imported_pages_x.csv": "date,page,pageviews\n",
                "/etc/imported_devices.csv": "x\n",
                "README.txt": "hi",
            }
        )
    )
    export = read_export(str(path))
    assert sorted(export.tables) == ["pages", "visitors"]
    assert export.domain == "site.test"
    assert sum("unsafe path" in n for n in export.notes) == 2
    assert any("README.txt" in n for n in export.notes)
    assert not any(p.name != path.name for p in tmp_path.iterdir())  # nothing extracted


def test_missing_numeric_columns_are_zero(tmp_path: Path) -> None:
    path = tmp_path / "old.test_20240302.zip"
    path.write_bytes(
        zip_bytes(
            {
                "imported_visitors.csv": '"date","visitors","pageviews"\n"2024-03-01",2,4\n',
                "visitors_20240301_20240301.csv.bak": "ignored",
            }
        )
    )
    export = read_export(str(path))
    row = export.tables["visitors"].row(0, named=True)
    assert (row["visits"], row["bounces"], row["visit_duration"]) == (0, 0, 0)
    assert any("no column bounces, visits, visit_duration" in n for n in export.notes)
    (day,) = assemble_days(export)
    assert (day.visitors, day.pageviews, day.visits) == (2, 4, 0)
    frame = pl.concat(list(iter_export_frames(export)))
    counts = umami_counts(frame)
    assert counts["visitors"] == 2 and counts["visits"] == 2 and counts["pageviews"] == 4  # visits clamped up
    assert export.residuals()["visitors"]["2024-03-01"]["diff"]["visits"] == 2


def test_plugin_schema_and_rows() -> None:
    assert "plausible_csv" in PLUGINS
    options = ReadOptions(format="plausible_csv", chunk_rows=100)
    files, _ = expand_sources([str(ZIP)], options)
    assert read_schema(files[0], options) == OUTPUT_SCHEMA
    frames = list(iter_chunks(files[0], 0, options))
    assert max(f.height for f in frames) <= 100
    rows = pl.concat(frames).get_column("_row")
    assert rows.to_list() == list(range(1, len(rows) + 1))


# --------------------------------------------------------------------------- synthesis


def test_sample_is_exact_per_day() -> None:
    expected = expected_days()
    days = by_day(frames_of(ZIP))
    assert sorted(days) == sorted(expected)
    for day, want in expected.items():
        frame = days[day]
        got = umami_counts(frame)
        assert got == {k: want[k] for k in got}, day
        views = frame.filter(pl.col("event_name").is_null())
        assert dict(Counter(views.get_column("url").str.split("?").list.first().to_list())) == want["pages"]
        assert dict(Counter(frame.get_column("event_name").drop_nulls().to_list())) == want["events"]
        assert "engagement" not in frame.get_column("event_name").to_list()
        first = views.unique("visitor_id", keep="first")
        assert dict(Counter(first.get_column("device").to_list())) == want["devices"]
        assert frame.get_column("synthetic").all()
        assert frame.get_column("visitor_id").str.starts_with(f"pl-syn-{day.replace('-', '')}-").all()


def test_sample_has_no_residuals_and_sources_match() -> None:
    export = read_export(str(ZIP))
    frame = pl.concat(list(iter_export_frames(export)))
    assert export.residuals() == {}
    days = by_day(frame)
    for day, want in expected_days().items():
        refs = Counter(days[day].get_column("referrer").drop_nulls().to_list())
        assert refs["https://www.google.com/"] == want["sources"].get("Google", 0)
        assert refs["https://news.ycombinator.com/item"] == want["sources"].get("Hacker News", 0)
        tagged = days[day].get_column("url").str.contains("utm_source=newsletter&utm_medium=email").sum()
        assert tagged == want["sources"].get("newsletter", 0)


@pytest.mark.parametrize(
    ("v", "s", "p", "b", "d"),
    [(1, 1, 1, 1, 0), (3, 5, 10, 2, 400), (10, 30, 31, 29, 7000), (5, 100, 500, 0, 10**6), (40, 40, 40, 40, 0)],
)
def test_visitors_table_exact_and_visits_inside_one_hour(v: int, s: int, p: int, b: int, d: int) -> None:
    day = PlausibleDay(dt.date(2024, 3, 1), v, s, p, b, d, has_totals=True, pages=[("h", "/", p)])
    frame, result = synthesize_day(day, b"k")
    want_s = min(s, 24 * v)
    want_d = min(d, 3599 * (want_s - b))
    assert umami_counts(frame) == {
        "visitors": v,
        "visits": want_s,
        "pageviews": p,
        "bounces": b,
        "visit_duration": want_d,
    }
    assert result.summary()["visits"] == want_s
    assert ("visitors" in result.residuals) == (want_s != s or want_d != d)


def test_clamps() -> None:
    assert plan_day(5, 9, 40, 0)[:3] == (5, 5, 5)  # bounces must be all visits when pageviews == visits
    assert plan_day(10, 2, 3, 3)[:3] == (2, 3, 2)  # extra pageviews need a visit of two or more
    assert plan_day(10, 2, 6, 0)[:3] == (2, 6, 2)  # six visits, ten pageviews: at least two bounces
    assert plan_day(0, 3, 3, 0)[:3] == (0, 0, 0)


def test_pages_residual_other_and_scaled() -> None:
    short = PlausibleDay(dt.date(2024, 3, 1), 2, 2, 10, 0, 0, True, pages=[("h", "/a", 4), ("h", "/b", 2)])
    frame, result = synthesize_day(short, b"k", "h")
    assert Counter(frame.get_column("url").to_list()) == {"/a": 4, "/b": 2, "/(other)": 4}
    assert result.residuals["pages"] == {"table": 6, "synthesized": 10, "diff": {"h//(other)": 4}}
    over = PlausibleDay(dt.date(2024, 3, 1), 2, 2, 10, 0, 0, True, pages=[("h", "/a", 15), ("h", "/b", 5)])
    frame, result = synthesize_day(over, b"k")
    assert Counter(frame.get_column("url").to_list()) == {"/a": 8, "/b": 2} or Counter(
        frame.get_column("url").to_list()
    ) == {"/a": 7, "/b": 3}
    assert result.residuals["pages"]["synthesized"] == 10


def test_events_exact_per_name_in_existing_visits() -> None:
    day = PlausibleDay(
        dt.date(2024, 3, 1),
        4,
        6,
        20,
        2,
        900,
        True,
        pages=[("h", "/", 20)],
        events=[("Signup", "/s", 7), ("engagement", "", 50), ("Click", "", 3)],
    )
    frame, _ = synthesize_day(day, b"k")
    assert Counter(frame.get_column("event_name").drop_nulls().to_list()) == {"Signup": 7, "Click": 3}
    views = frame.filter(pl.col("event_name").is_null())
    assert set(frame.get_column("visitor_id")) == set(views.get_column("visitor_id"))
    assert umami_counts(frame)["visits"] == 6


def event_visitors_of(frame: pl.DataFrame) -> dict[tuple[str, str], int]:
    """Distinct visitors per (day, event name)."""
    events = frame.filter(pl.col("event_name").is_not_null())
    per = events.group_by(pl.col("timestamp").str.slice(0, 10).alias("day"), "event_name").agg(
        pl.col("visitor_id").n_unique()
    )
    return {(d, name): n for d, name, n in per.iter_rows()}


def sample_days_with_event_visitors() -> tuple[Any, list[PlausibleDay]]:
    """The sample's days, each with custom_events' visitors per name."""
    export = read_export(str(ZIP))
    days = assemble_days(export)
    table = export.tables["custom_events"].group_by("date", "name").agg(pl.col("visitors").sum())
    wanted = {(d, name): n for d, name, n in table.iter_rows()}
    for day in days:
        day.event_visitors = {name: n for (d, name), n in wanted.items() if d == day.day}
    return export, days


def test_sample_distinct_visitors_per_event_name_match_the_table() -> None:
    export, days = sample_days_with_event_visitors()
    table = export.tables["custom_events"].filter(pl.col("name") != "engagement")
    want = {
        (d.isoformat(), name): n
        for d, name, n in table.group_by("date", "name").agg(pl.col("visitors").sum()).iter_rows()
    }
    assert any(n < e for n, e in table.select("visitors", "events").iter_rows())  # not one event per visitor
    frames = []
    for day in days:
        frame, result = synthesize_day(day, export.key, export.domain)
        assert "custom_events" not in result.residuals
        frames.append(frame)
    frame = pl.concat(frames)
    assert event_visitors_of(frame) == want
    for day, want_day in expected_days().items():  # events per name and the visitors table stay exact
        got = by_day(frame)[day]
        assert dict(Counter(got.get_column("event_name").drop_nulls().to_list())) == want_day["events"]
        assert umami_counts(got) == {k: want_day[k] for k in umami_counts(got)}
        views = got.filter(pl.col("event_name").is_null())
        assert set(got.get_column("visitor_id")) == set(views.get_column("visitor_id"))


def test_event_visitors_clamped_report_a_residual() -> None:
    day = PlausibleDay(
        dt.date(2024, 3, 1),
        4,
        6,
        20,
        2,
        900,
        True,
        pages=[("h", "/", 20)],
        events=[("Signup", "/s", 7), ("Signup", "/t", 2), ("Click", "", 3), ("Zero", "", 2)],
        event_visitors={"Signup": 9, "Click": 3, "Zero": 0},
    )
    frame, result = synthesize_day(day, b"k")
    assert Counter(frame.get_column("event_name").drop_nulls().to_list()) == {"Signup": 9, "Click": 3, "Zero": 2}
    made = {name: n for (_, name), n in event_visitors_of(frame).items()}
    assert made == {"Signup": 4, "Click": 3, "Zero": 1}  # 9 > the day's 4 visitors; 0 with events -> 1
    assert result.residuals["custom_events"] == {
        "table": 12,
        "synthesized": 8,
        "diff": {"Signup": -5, "Zero": 1},
    }
    assert umami_counts(frame)["visitors"] == 4 and "visitors" not in result.residuals
    fits = PlausibleDay(**{**day.__dict__, "event_visitors": {"Signup": 2, "Click": 1}})
    frame, result = synthesize_day(fits, b"k")
    assert "custom_events" not in result.residuals
    made = {name: n for (_, name), n in event_visitors_of(frame).items()}
    assert made["Signup"] == 2 and made["Click"] == 1


def test_determinism() -> None:
    first, second = frames_of(ZIP), frames_of(ZIP)
    assert first.equals(second)
    day = PlausibleDay(dt.date(2024, 3, 1), 3, 5, 10, 2, 400, True)
    assert synthesize_day(day, b"a")[0].equals(synthesize_day(day, b"a")[0])
    assert not synthesize_day(day, b"a")[0].equals(synthesize_day(day, b"b")[0])


# --------------------------------------------------------------------------- import


def test_import_into_fake_umami_matches_visitors_table(tmp_path: Path) -> None:
    expected = expected_days()
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, ZIP, PRESET, tmp_path, "--batch-size", "500")
        assert result.code == 0, result.stdout + result.stderr
        names: dict[str, Counter[str]] = {}
        for event in server.events(site):
            if event["event_name"]:
                names.setdefault(event["created_at"][:10], Counter())[event["event_name"]] += 1
        for day, want in expected.items():
            start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)
            stats = server.stats(site, start, start + DAY_MS - 1)
            assert {k: stats[k] for k in ("visitors", "visits", "pageviews", "bounces")} == {
                k: want[k] for k in ("visitors", "visits", "pageviews", "bounces")
            }, day
            assert stats["totaltime"] == want["visit_duration"]
            assert dict(names[day]) == want["events"]
        assert not server.internal_errors


# --------------------------------------------------------------------------- entry / exit pages


def visit_ends(frame: pl.DataFrame) -> tuple[Counter[str], Counter[str]]:
    """(entrances per page, exits per page): first and last pageview of each (visitor, clock hour)."""
    views = frame.filter(pl.col("event_name").is_null()).with_columns(
        pl.col("url").str.split("?").list.first().alias("path"),
        pl.col("timestamp").str.slice(0, 13).alias("hour"),
    )
    ends = views.group_by("visitor_id", "hour", maintain_order=True).agg(
        pl.col("path").first().alias("entry"), pl.col("path").last().alias("exit")
    )
    return Counter(ends.get_column("entry").to_list()), Counter(ends.get_column("exit").to_list())


@pytest.mark.parametrize("path", [ZIP, OLD_ZIP], ids=["current", "old-layout"])
def test_sample_entry_and_exit_pages_exact(path: Path) -> None:
    export = read_export(str(path))
    days = by_day(pl.concat(list(iter_export_frames(export))))
    assert export.residuals() == {}
    for day, want in expected_days(path).items():
        entries, exits = visit_ends(days[day])
        assert dict(entries) == want["entry_pages"], day
        assert dict(exits) == want["exit_pages"], day
        assert sum(entries.values()) == want["visits"]
        views = days[day].filter(pl.col("event_name").is_null())
        assert dict(Counter(views.get_column("url").str.split("?").list.first().to_list())) == want["pages"]


def test_entry_exit_bounces_land_on_their_entry_page() -> None:
    # 4 visits: 2 bounces (on /b), 2 visits of 3 pageviews entering on /a, leaving on /c
    day = PlausibleDay(
        dt.date(2024, 3, 1),
        4,
        4,
        8,
        2,
        200,
        True,
        pages=[("h", "/a", 2), ("h", "/b", 4), ("h", "/c", 2)],
        entries=[("/a", 2, 0), ("/b", 2, 2)],
        exits=[("/b", 2), ("/c", 2)],
    )
    frame, result = synthesize_day(day, b"k")
    entries, exits = visit_ends(frame)
    assert entries == {"/a": 2, "/b": 2} and exits == {"/b": 2, "/c": 2}
    views = frame.filter(pl.col("event_name").is_null())
    assert Counter(views.get_column("url").to_list()) == {"/a": 2, "/b": 4, "/c": 2}
    assert result.residuals == {}


def test_inconsistent_entry_exit_tables_report_residuals() -> None:
    # pages has no /x, so it cannot be an entry page; exits add up to more than the visits
    day = PlausibleDay(
        dt.date(2024, 3, 1),
        3,
        5,
        12,
        1,
        600,
        True,
        pages=[("h", "/a", 8), ("h", "/b", 4)],
        entries=[("/a", 2, 0), ("/x", 3, 1)],
        exits=[("/a", 6), ("/b", 4)],
    )
    frame, result = synthesize_day(day, b"k")
    counts = umami_counts(frame)
    assert counts == {"visitors": 3, "visits": 5, "pageviews": 12, "bounces": 1, "visit_duration": 600}
    views = frame.filter(pl.col("event_name").is_null())
    assert Counter(views.get_column("url").to_list()) == {"/a": 8, "/b": 4}  # pages before entry/exit
    assert "pages" not in result.residuals and "visitors" not in result.residuals
    entries, exits = visit_ends(frame)
    entry = result.residuals["entry_pages"]
    assert entry["table"] == 5 and entry["synthesized"] == 5
    assert entry["diff"]["/x"] == -3 and entry["diff"] == {
        k: entries.get(k, 0) - {"/a": 2, "/x": 3}.get(k, 0)
        for k in {"/a", "/x", *entries}
        if entries.get(k, 0) != {"/a": 2, "/x": 3}.get(k, 0)
    }
    assert entries["/a"] >= 2  # what the table allows is kept
    exit_ = result.residuals["exit_pages"]
    assert exit_["table"] == 10 and exit_["synthesized"] == 5
    assert sum(exits.values()) == 5
    # the export-level view: per table and day
    export = read_export(str(ZIP))
    export.results.append(result)
    assert export.residuals()["entry_pages"]["2024-03-01"] == entry


# --------------------------------------------------------------------------- custom props


def props_of(frame: pl.DataFrame) -> Counter[str]:
    out: Counter[str] = Counter()
    for text in frame.get_column("props_json").drop_nulls().to_list():
        for key, value in json.loads(text).items():
            out[f"{key}={value}"] += 1
    return out


def test_sample_props_on_custom_events() -> None:
    days = by_day(frames_of(ZIP))
    for day, want in expected_days().items():
        frame = days[day]
        assert dict(props_of(frame)) == want["props"], day
        tagged = frame.filter(pl.col("props_json").is_not_null())
        assert tagged.get_column("event_name").is_not_null().all()  # never on pageviews
        assert "engagement" not in tagged.get_column("event_name").to_list()


def test_props_beyond_custom_events_are_scaled_and_reported() -> None:
    day = PlausibleDay(
        dt.date(2024, 3, 1),
        2,
        2,
        4,
        0,
        60,
        True,
        pages=[("h", "/", 4)],
        events=[("Signup", "", 3)],
        props=[("plan", "pro", 4), ("plan", "free", 2), ("ref", "x", 1)],
    )
    frame, result = synthesize_day(day, b"k")
    got = props_of(frame)
    assert got["ref=x"] == 1 and got["plan=pro"] + got["plan=free"] == 3
    events = frame.filter(pl.col("event_name") == "Signup")
    assert all(json.loads(t)["plan"] for t in events.get_column("props_json").to_list())  # one plan per event
    residual = result.residuals["custom_props"]
    assert residual["table"] == 7 and residual["synthesized"] == 4
    none = PlausibleDay(dt.date(2024, 3, 1), 1, 1, 1, 1, 0, True, pages=[("h", "/", 1)], props=[("plan", "pro", 2)])
    frame, result = synthesize_day(none, b"k")
    assert frame.get_column("props_json").null_count() == frame.height
    assert result.residuals["custom_props"]["diff"] == {"plan/pro": -2}


# --------------------------------------------------------------------------- old layout


def test_old_layout_reads() -> None:
    export = read_export(str(OLD_ZIP))
    assert "custom_events" not in export.tables and "custom_props" not in export.tables
    assert export.domain == "old-layout.example.com"
    assert export.tables["pages"].columns[:3] == ["date", "hostname", "page"]
    assert any("no column referrer, utm_source, pageviews" in n for n in export.notes)
    assert any("exit_pages" in n and "no column visit_duration, bounces, pageviews" in n for n in export.notes)
    frame = pl.concat(list(iter_export_frames(export)))
    assert frame.get_column("event_name").null_count() == frame.height
    assert frame.get_column("props_json").null_count() == frame.height
    expected = expected_days(OLD_ZIP)
    days = by_day(frame)
    assert sorted(days) == sorted(expected)
    for day, want in expected.items():
        assert umami_counts(days[day]) == {k: want[k] for k in umami_counts(days[day])}, day
        first = days[day].unique("visitor_id", keep="first")
        assert dict(Counter(first.get_column("browser").to_list())) == want["browsers"]
        assert dict(Counter(first.get_column("os").to_list())) == want["operating_systems"]


def import_sample(path: Path, tmp_path: Path) -> tuple[FakeUmami, str]:
    server = FakeUmami().__enter__()
    site = server.add_website()
    result = import_into(server.url, site, path, PRESET, tmp_path, "--batch-size", "500")
    assert result.code == 0, result.stdout + result.stderr
    return server, site


def test_old_layout_import_matches_visitors_table(tmp_path: Path) -> None:
    server, site = import_sample(OLD_ZIP, tmp_path)
    try:
        for day, want in expected_days(OLD_ZIP).items():
            start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)
            stats = server.stats(site, start, start + DAY_MS - 1)
            assert {k: stats[k] for k in ("visitors", "visits", "pageviews", "bounces")} == {
                k: want[k] for k in ("visitors", "visits", "pageviews", "bounces")
            }, day
            assert stats["totaltime"] == want["visit_duration"]
        assert not server.internal_errors
    finally:
        server.__exit__(None, None, None)


def test_import_sends_props_as_event_data(tmp_path: Path) -> None:
    server, site = import_sample(ZIP, tmp_path)
    try:
        rows = [r for r in server.event_data(site) if r["data_key"] == "props"]
        got: Counter[str] = Counter()
        for r in rows:
            for key, value in json.loads(r["string_value"]).items():
                got[f"{key}={value}"] += 1
        want: Counter[str] = Counter()
        for day in expected_days().values():
            want.update(day["props"])
        assert got == want
        assert not server.internal_errors
    finally:
        server.__exit__(None, None, None)


def test_reader_matches_distinct_visitors_per_event_name_end_to_end() -> None:
    """Through the plugin (not the synthesizer alone): the table's visitors per name arrive."""
    import io
    import zipfile

    from backfill.sources import ReadOptions, expand_sources, iter_chunks
    from tests.conftest import SAMPLES

    path = str(SAMPLES / "plausible_csv" / "example.com_20240305.zip")
    options = ReadOptions(format="plausible_csv")
    files, _ = expand_sources([path], options)
    rows = pl.concat(list(iter_chunks(files[0], 0, options)))
    got = (
        rows.filter(pl.col("event_name").is_not_null())
        .group_by(pl.col("timestamp").str.slice(0, 10).alias("date"), pl.col("event_name").alias("name"))
        .agg(pl.col("visitor_id").n_unique().cast(pl.Int64).alias("visitors"), pl.len().cast(pl.Int64).alias("events"))
        .sort("date", "name")
    )
    with zipfile.ZipFile(path) as archive:
        entry = next(n for n in archive.namelist() if "custom_events" in n)
        table = pl.read_csv(io.BytesIO(archive.read(entry)))
    want = (
        table.filter(pl.col("name") != "engagement")
        .group_by("date", "name")
        .agg(pl.col("visitors").sum(), pl.col("events").sum())
        .sort("date", "name")
    )
    assert got.to_dicts() == want.to_dicts()


def test_windows_versions_stay_apart_and_other_os_versions_merge(tmp_path: Path) -> None:
    """Umami names Windows by version (Windows 7, Windows 10) and nothing else (Mac OS):
    each visitor gets the name Umami stored for that visitor's browser."""
    oses = (
        '"date","operating_system","operating_system_version","visitors","visits","visit_duration","bounces"\n'
        '"2024-03-01","Windows","7",4,4,0,4\n"2024-03-01","Windows","10",2,2,0,2\n'
        '"2024-03-01","Windows","11",1,1,0,1\n"2024-03-01","Mac","10.15",2,2,0,2\n"2024-03-01","Mac","14",1,1,0,1\n'
    )
    visitors = '"date","visitors","pageviews","bounces","visits","visit_duration"\n"2024-03-01",10,10,10,10,0\n'
    path = tmp_path / "site.test_20240302.zip"
    path.write_bytes(
        zip_bytes(
            {
                "imported_visitors_20240301_20240301.csv": visitors,
                "imported_operating_systems_20240301_20240301.csv": oses,
            }
        )
    )
    out = tmp_path / "payloads.ndjson"
    result = run_cli("validate", path, "-m", "plausible-csv", "--out", out)
    assert result.code == 0, result.stdout + result.stderr
    os_of = {p["payload"]["id"]: p["payload"].get("os") for p in map(json.loads, out.read_text().splitlines())}
    assert Counter(os_of.values()) == {"Windows 7": 4, "Windows 10": 3, "Mac OS": 3}
