"""The Matomo readers (``--format matomo_logs`` / ``matomo_live``) and their presets.

The import tests run ``backfill import`` on the shipped samples against the fake
Umami and compare what it stored with ``sample_data/matomo/expected.json``, which
``sample_data/make_matomo_samples.py`` computes from its own visits, not through
a reader. The bad-input tests build small dumps by hand.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backfill.sources import PLUGINS, ReadOptions, SourceFile, expand_sources, iter_chunks
from backfill.sources.matomo_codes import browser_expr, device_expr, os_expr, visitor_expr
from backfill.sources.matomo_logs import iter_events
from tests.conftest import SAMPLES, import_into, run_cli, stored_figures
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami

MT = SAMPLES / "matomo"
LOGS = MT / "logs"
LIVE = MT / "live"
EXPECTED: dict[str, Any] = json.loads((MT / "expected.json").read_text())
LOGIN = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}
FILTERS = {
    "Matomo content impression or interaction": EXPECTED["skipped_content"],
    "Matomo abandoned cart (idgoal -1)": EXPECTED["skipped_abandoned_cart"],
}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_matomo_samples", SAMPLES / "make_matomo_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_all(fmt: str, *paths: str | Path, **reader: str) -> pl.DataFrame:
    """Every row the reader gives for these inputs, as a run reads them (knowing all its inputs)."""
    options = ReadOptions(format=fmt, plugin_options=tuple(reader.items()))
    files, _ = expand_sources([str(p) for p in paths], options)
    options = options.with_inputs(files)
    frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
    return pl.concat(frames, how="diagonal")


def copy_logs(tmp_path: Path, prefix: str = "matomo_") -> Path:
    """The sample dump, its files renamed to another table prefix."""
    dump = tmp_path / "dump"
    dump.mkdir()
    for path in LOGS.iterdir():
        shutil.copy(path, dump / path.name.replace("matomo_", prefix, 1))
    return dump


# --------------------------------------------------------------------------- the readers


def test_shipped_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    assert _generator().write(tmp_path) == EXPECTED
    for path in [*LOGS.iterdir(), *LIVE.iterdir()]:
        written = tmp_path / path.parent.name / path.name
        if path.suffix == ".gz":
            assert gzip.decompress(written.read_bytes()) == gzip.decompress(path.read_bytes()), path
        else:
            assert written.read_bytes() == path.read_bytes(), path


def test_both_shapes_give_the_same_rows() -> None:
    key = ["visit_id", "timestamp", "kind", "event_name", "url"]
    logs = read_all("matomo_logs", LOGS).drop("_file", "_row", "goal_name").sort(key)
    live = read_all("matomo_live", LIVE).drop("_file", "_row", "goal_name").sort(key)
    assert logs.height == EXPECTED["actions_total"] + EXPECTED["conversions_total"]
    assert_frame_equal(logs, live)
    assert logs["_source_error"].null_count() == logs.height
    # mysql --batch escapes a tab in a title as \t: read back as the tab
    assert "Sourdough\tloaf" in logs["title"].to_list()
    # the url_prefix code gives back the https://www. Matomo strips
    assert logs.filter(pl.col("kind") == "pageview")["url"].str.starts_with("https://www.").all()


def test_partitioned_join_equals_the_in_memory_one() -> None:
    """A large log_visit is joined partition by partition (on disk): the rows are the same."""
    options = ReadOptions(format="matomo_logs", chunk_rows=7)
    files, _ = expand_sources([str(LOGS)], options)
    lva = next(f for f in files if "link_visit_action" in f.path)
    whole = pl.concat(list(iter_events(lva, options, partitions=1)), how="diagonal")
    parts = pl.concat(list(iter_events(lva, options, partitions=4)), how="diagonal")
    assert whole.height == EXPECTED["actions_total"]
    assert_frame_equal(whole.sort("_row"), parts.sort("_row"))


@pytest.mark.parametrize("prefix", ["piwik_", ""])
def test_table_prefix_variants(tmp_path: Path, prefix: str) -> None:
    frame = read_all("matomo_logs", copy_logs(tmp_path, prefix))
    assert frame.height == EXPECTED["actions_total"] + EXPECTED["conversions_total"]


def test_inspect_hooks_name_the_format_and_preset(tmp_path: Path) -> None:
    logs, live = PLUGINS["matomo_logs"], PLUGINS["matomo_live"]
    assert (logs.preset, live.preset) == ("matomo-logs", "matomo-live")
    assert logs.sniff is not None and live.sniff is not None
    assert logs.sniff(str(LOGS)) and logs.sniff(str(LOGS / "matomo_log_visit.tsv"))
    assert live.sniff(str(LIVE / "visits_page1.json"))
    assert not logs.sniff(str(LIVE)) and not live.sniff(str(LOGS / "matomo_log_visit.tsv"))
    other = tmp_path / "events.json"
    other.write_text('[{"event": "x"}]')
    assert not live.sniff(str(other))


def test_codes_become_umami_names() -> None:
    frame = pl.DataFrame(
        {
            "browser": ["CH", "MF", "CI", "PS", "F1", "UNK", "ZZ"],
            "os": ["WIN", "IOS", "IOS", "WIN", "IOS", "AND", "TIZ"],
            "version": ["11", "17.3", "17.3", "7", "17", "14", None],
            "device": ["0", "Smartphone", "1", "2", "Phablet", None, "5"],
            "visitor": ["C4CF18B9AC039D09", "0xc4cf18b9ac039d09", "\u00e9\x01raw", None, "1", "1", "1"],
        }
    )
    out = frame.select(
        browser_expr(pl.col("browser"), pl.col("os")).alias("browser"),
        os_expr(pl.col("os"), pl.col("version")).alias("os"),
        device_expr(pl.col("device")).alias("device"),
        visitor_expr(pl.lit(None, pl.String), pl.col("visitor")).alias("visitor"),
    )
    assert out["browser"].to_list() == ["chrome", "ios", "crios", "edge-chromium", "fxios", None, "ZZ"]
    assert out["os"].to_list() == ["Windows 10", "iOS", "iOS", "Windows 7", "iOS", "Android OS", "TIZ"]
    assert out["device"].to_list() == ["desktop", "mobile", "mobile", "tablet", "mobile", None, "smarttv"]
    visitors = out["visitor"].to_list()
    assert visitors[0] == visitors[1] == "c4cf18b9ac039d09"  # HEX() and --binary-as-hex: one visitor
    assert visitors[2] == "\u00e9\x01raw".encode().hex() and visitors[3] is None  # raw bytes: hex-encoded


# --------------------------------------------------------------------------- bad input


def test_visit_missing_from_log_visit_is_rejected(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    visit = dump / "matomo_log_visit.tsv"
    lines = visit.read_text().splitlines(keepends=True)
    gone = lines[1].split("\t")[0]
    visit.write_text("".join([lines[0], *lines[2:]]))
    rejects = tmp_path / "r.ndjson"
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", rejects)
    assert result.code == 1, result.stdout + result.stderr
    reasons = {json.loads(line)["reason"] for line in rejects.read_text().splitlines()}
    assert any(f"idvisit {gone} has no row in log_visit" in r for r in reasons), reasons


def test_missing_log_action_refuses_the_run(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    (dump / "matomo_log_action.tsv").unlink()
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2, result.stdout + result.stderr
    assert "no table matomo_log_action" in result.stderr
    assert "matomo_log_link_visit_action.tsv.gz" in result.stderr


def test_orphan_action_id_is_rejected_naming_file_and_row(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    action = dump / "matomo_log_action.tsv"
    lines = action.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("2\t")]  # idaction 2: the title "Our bread"
    action.write_text("".join(kept))
    uses = sum(
        1
        for line in gzip.decompress((dump / "matomo_log_link_visit_action.tsv.gz").read_bytes()).decode().splitlines()
        if line.split("\t")[6] == "2"
    )
    rejects = tmp_path / "r.ndjson"
    report = tmp_path / "report.json"
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", rejects, "--report", report)
    assert result.code == 1, result.stdout + result.stderr
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(rows) == uses > 0
    text = json.dumps(rows[0])
    assert "idaction_name 2 has no row in log_action" in text
    assert "matomo_log_link_visit_action.tsv.gz" in text
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["balances"] is True and ledger["rejected"] == uses


def test_truncated_gzip_refuses_the_file(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    lva = dump / "matomo_log_link_visit_action.tsv.gz"
    lva.write_bytes(lva.read_bytes()[:-40])
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2, result.stdout + result.stderr
    assert "matomo_log_link_visit_action.tsv.gz" in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_last_line_and_mysql_nulls(tmp_path: Path) -> None:
    """A dump cut inside its last row rejects that row; NULL and \\N are both nulls."""
    dump = copy_logs(tmp_path)
    lva = dump / "matomo_log_link_visit_action.tsv.gz"
    text = gzip.decompress(lva.read_bytes()).decode().replace("\\N", "NULL", 30)
    cut = text.rstrip("\n").rsplit("\t", 5)[0] + "\n"  # the last row loses its last 5 fields
    lva.write_bytes(gzip.compress(cut.encode()))
    rejects = tmp_path / "r.ndjson"
    report = tmp_path / "report.json"
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", rejects, "--report", report)
    assert result.code == 1, result.stdout + result.stderr
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["row"] == EXPECTED["actions_total"]
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["read"] == EXPECTED["actions_total"] + EXPECTED["conversions_total"]
    assert ledger["balances"] is True


def test_revenue_without_a_currency_is_rejected_with_the_fix(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    (dump / "matomo_site.tsv").unlink()
    rejects = tmp_path / "r.ndjson"
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", rejects)
    assert result.code == 1
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    conversions = pl.read_csv(LOGS / "matomo_log_conversion.csv")
    with_revenue = conversions.filter((pl.col("revenue") > 0) & (pl.col("idgoal") >= 0)).height
    assert len(rows) == with_revenue > 0
    assert all("revenue without a currency" in json.dumps(r) for r in rows)


def test_unnamed_file_in_a_dump_is_refused(tmp_path: Path) -> None:
    dump = copy_logs(tmp_path)
    (dump / "notes.csv").write_text("a,b\n1,2\n")
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2
    assert "notes.csv: not a Matomo table" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"result":"error","message":"You can\'t access this resource"}', "Matomo's error answer"),
        ('[{"idVisit": 1, "actionDetails": [{"type": "action", "timestamp": 17', "line 1 column"),
        ('[{"label": "Chrome", "nb_visits": 3}]', "has no idVisit"),
    ],
)
def test_live_bad_pages_are_refused(tmp_path: Path, content: str, message: str) -> None:
    page = tmp_path / "visits.json"
    page.write_text(content)
    result = run_cli("validate", page, "-m", "matomo-live", "--rejects", tmp_path / "r.ndjson")
    assert result.code == 2, result.stdout + result.stderr
    assert message in result.stderr and "visits.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_live_duplicate_visit_and_unknown_action_are_rejected(tmp_path: Path) -> None:
    visits = json.loads((LIVE / "visits_page1.json").read_text())
    visits[0]["actionDetails"].append({"type": "media", "timestamp": visits[0]["actionDetails"][0]["timestamp"]})
    page = tmp_path / "visits.json"
    page.write_text(json.dumps([*visits, visits[1]]))
    source = SourceFile(str(page), "matomo_live", None, page.stat().st_size, 0)
    frame = pl.concat(list(PLUGINS["matomo_live"].iter_frames(source, ReadOptions(format="matomo_live"))))
    errors = Counter(e.split(" ")[0] for e in frame["_source_error"].drop_nulls().to_list())
    assert errors == {"idVisit": len(visits[1]["actionDetails"]), "action": 1}


# --------------------------------------------------------------------------- through the CLI into Umami


Rows = list[dict[str, Any]]


def stored_orders(server: FakeUmami, site: str) -> dict[str, dict[str, str]]:
    """Each stored order's event data (key -> value), by order id."""
    by_event: dict[str, dict[str, str]] = {}
    for row in server.event_data(site):
        by_event.setdefault(row["website_event_id"], {})[row["data_key"]] = row["string_value"]
    return {data["order_id"]: data for data in by_event.values() if "order_id" in data}


def assert_order_items(orders: dict[str, dict[str, str]], expected: dict[str, list[list[Any]]]) -> None:
    """Each order's items are in its event data: item_count, item_<n>.sku, .name, .category, ..."""
    assert set(orders) == set(expected) and orders
    for order, items in expected.items():
        data = orders[order]
        assert data["item_count"] == f"{sum(item[4] for item in items):.4f}"
        for n, (sku, name, category, price, quantity) in enumerate(items, 1):
            assert (data[f"item_{n}.sku"], data[f"item_{n}.name"]) == (sku, name)
            assert data.get(f"item_{n}.category") == category
            assert float(data[f"item_{n}.price"]) == price and float(data[f"item_{n}.quantity"]) == quantity


def _assert_figures(events: Rows, sessions: Rows, revenue: Rows) -> None:
    figures = stored_figures(events, revenue)
    assert figures.pageviews_by_day == EXPECTED["pageviews_by_day"]
    assert figures.visitors_by_day == EXPECTED["visitors_by_day"]
    assert figures.custom_events_by_name == EXPECTED["events_by_name"]
    assert figures.revenue_by_day == EXPECTED["revenue_by_day"]
    assert {r["currency"] for r in revenue} == {EXPECTED["revenue_currency"]}
    visits: dict[str, set[str]] = {}
    for e in figures.pageviews:
        visits.setdefault(e["created_at"][:10], set()).add(e["visit_id"])
    assert {d: len(v) for d, v in sorted(visits.items())} == EXPECTED["visits_by_day"]
    for column in ("country", "region", "browser", "os", "device"):
        counted = dict(sorted(Counter(s[column] for s in sessions if s[column] is not None).items()))
        assert counted == EXPECTED[f"sessions_by_{column}"], column


@pytest.mark.parametrize(("source", "preset"), [(LOGS, "matomo-logs"), (LIVE, "matomo-live")])
def test_import_into_fake_umami(tmp_path: Path, source: Path, preset: str) -> None:
    with FakeUmami() as server:
        site = server.add_website()
        result = import_into(server.url, site, source, preset, tmp_path, "--state", tmp_path / "state")
        assert result.code == 0, result.stdout + result.stderr
        events, sessions, revenue = server.events(site), server.sessions(site), server.revenue(site)
        orders = stored_orders(server, site)
        where = ("--host", server.url, "--website", site, "--report", tmp_path / "verify.json")
        verified = run_cli("verify", source, "-m", preset, *where, env=LOGIN)
    assert verified.code == 0, verified.stdout + verified.stderr
    _assert_figures(events, sessions, revenue)
    assert_order_items(orders, EXPECTED["order_items"])
    ledger = json.loads((tmp_path / "report.json").read_text())["ledger"]
    assert ledger["balances"] is True and ledger["rejected"] == 0
    assert ledger["skipped_by_filter"] == FILTERS


def test_live_goal_of_a_deleted_goal_keeps_its_revenue(tmp_path: Path) -> None:
    """Live joins goals to the goal table: a deleted goal comes without goalId and goalName."""
    visits = json.loads((LIVE / "visits_page1.json").read_text())
    visit = next(v for v in visits if any(d["type"] == "goal" and d["revenue"] for d in v["actionDetails"]))
    for detail in visit["actionDetails"]:
        if detail["type"] == "goal":
            detail["goalId"] = detail["goalName"] = None
    page = tmp_path / "visits.json"
    page.write_text(json.dumps([visit]))
    source = SourceFile(str(page), "matomo_live", None, page.stat().st_size, 0)
    options = ReadOptions(format="matomo_live")
    frame = pl.concat(list(PLUGINS["matomo_live"].iter_frames(source, options)))
    goals = frame.filter(pl.col("kind") == "goal")
    assert goals["event_name"].unique().to_list() == ["goal_unknown"]
    notes = options.notes.all()
    assert any(f"{goals.height} goal conversion(s) without goalId or goalName" in n for n in notes), notes
    assert goals["revenue"].drop_nulls().len() > 0 and frame["_source_error"].null_count() == frame.height


def test_live_json_lines_and_gzip_give_the_same_rows(tmp_path: Path) -> None:
    visits = json.loads((LIVE / "visits_page1.json").read_text())
    lines = tmp_path / "visits.ndjson.gz"
    lines.write_bytes(gzip.compress("".join(json.dumps(v) + "\n" for v in visits).encode()))
    from_array = read_all("matomo_live", LIVE / "visits_page1.json").drop("_file")
    from_lines = read_all("matomo_live", lines).drop("_file")
    assert from_array.height > len(visits)
    assert_frame_equal(from_array, from_lines)


def test_an_empty_table_file_is_an_empty_table(tmp_path: Path) -> None:
    """mysql --batch prints nothing at all for an empty table: no goals, no error."""
    dump = copy_logs(tmp_path)
    (dump / "matomo_log_conversion.csv").write_text("")
    frame = read_all("matomo_logs", dump)
    assert frame.height == EXPECTED["actions_total"]
    assert frame["_source_error"].null_count() == frame.height


@pytest.mark.parametrize("first_action", ["utc", "last"])
def test_live_times_already_in_utc_are_kept(tmp_path: Path, first_action: str) -> None:
    """The site offset is taken out only when the export has one (the samples: +1 h)."""
    visits = json.loads((LIVE / "visits_page1.json").read_text())
    shifted = _generator().SITE_OFFSET
    for visit in visits:
        for detail in visit["actionDetails"]:
            detail["timestamp"] -= shifted  # as if the site were in UTC
        if first_action == "last":  # an export whose firstActionTimestamp is something else
            visit["firstActionTimestamp"] = visit["lastActionTimestamp"] + 7
    page = tmp_path / "visits.json"
    page.write_text(json.dumps(visits))
    original = read_all("matomo_live", LIVE / "visits_page1.json").drop("_file")
    assert_frame_equal(read_all("matomo_live", page).drop("_file"), original)


def test_live_overlapping_pages_import_each_visit_once(tmp_path: Path) -> None:
    """Pages saved while visits arrive overlap: a visit again in a later page is rejected there."""
    first = json.loads((LIVE / "visits_page1.json").read_text())
    second = json.loads((LIVE / "visits_page2.json").read_text())
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "visits_page1.json").write_text(json.dumps(first))
    (pages / "visits_page2.json").write_text(json.dumps(first[-2:] + second))
    again = sum(len(v["actionDetails"]) for v in first[-2:])
    report = tmp_path / "report.json"
    result = run_cli("validate", pages, "-m", "matomo-live", "--rejects", tmp_path / "r.ndjson", "--report", report)
    assert result.code == 1, result.stdout + result.stderr
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["rejected"] == again and ledger["balances"] is True
    reasons = {json.loads(line)["reason"] for line in (tmp_path / "r.ndjson").read_text().splitlines()}
    assert all("is also in the earlier page visits_page1.json" in r for r in reasons), reasons
    original = read_all("matomo_live", LIVE / "visits_page1.json", LIVE / "visits_page2.json")
    read = read_all("matomo_live", pages)
    kept = read.filter(pl.col("_source_error").is_null())
    key = ["visit_id", "timestamp", "kind", "url"]
    assert_frame_equal(kept.drop("_row").sort(key), original.drop("_row").sort(key))
