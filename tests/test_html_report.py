"""The HTML report: the real CLI writes it (validate, import, verify, report merge/html) and
a real headless Chromium opens it.

In the browser: nothing is fetched (every request but the file itself is recorded and
aborted), no console error, the charts have one mark per day and series, a day that
differs is drawn in red at that day and its table row is highlighted, and the figures
in the page's tables are the ones the terminal printed and ``--report`` wrote.
A screenshot of each kind of report is written to ``.html-reports/`` for a person.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from backfill.daily import DistinctPerDay
from backfill.report_html import render_html
from backfill.report_html.charts import every_day
from backfill.report_html.sections import reason_fix
from tests.browser import Browser, OpenedPage, keep_copy, why_no_browser
from tests.conftest import ROOT, SAMPLES, import_into, run_cli
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami

EVENTS = SAMPLES / "events.csv"
GA4_GLOB = str(SAMPLES / "ga4" / "events_*")
LOGIN = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}
METRICS = ("pageviews", "visitors", "visits", "events")
needs_browser = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))


@pytest.fixture(scope="module")
def browser():
    opened = Browser()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    """One dry run of the sample with --report and --html: (CLI result, report, page)."""
    tmp = tmp_path_factory.mktemp("sample")
    html = tmp / "dry-run.html"
    result, report = validate(tmp, EVENTS, "sample_events", "--html", html)
    return result, report, html


def validate(tmp: Path, source: str | Path, mapping: str, *extra: str | Path) -> tuple[Any, dict[str, Any]]:
    result = run_cli(
        "validate", source, "-m", mapping, "--rejects", tmp / "rejects.ndjson", "--report", tmp / "r.json", *extra
    )
    assert result.code in (0, 1), result.stderr
    return result, json.loads((tmp / "r.json").read_text())


def cells(page: OpenedPage, table: str) -> list[list[str]]:
    """The text of each body row of a table, cell by cell."""
    return page.page.eval_on_selector_all(
        f"{table} tbody tr", "rows => rows.map(r => Array.from(r.children, c => c.textContent.trim()))"
    )


def number(text: str) -> int:
    return int(text.split(" ")[0].replace(",", ""))


def assert_offline_and_clean(opened: OpenedPage, path: Path) -> None:
    assert opened.blocked == [], f"the page reached for the network: {opened.blocked}"
    assert opened.requests == [path.resolve().as_uri()]
    assert opened.console == [] and opened.errors == []


# --------------------------------------------------------------------------- in the browser


@needs_browser
def test_dry_run_page_shows_the_terminal_and_json_figures_offline(browser: Browser, sample_run: Any) -> None:
    result, report, html = sample_run
    assert f"HTML report: {html}" in result.stderr
    opened = browser.open(html)
    assert_offline_and_clean(opened, html)
    ledger = report["ledger"]
    # The ledger table: the terminal's and the JSON's buckets, and they add up.
    rows = {r[0]: number(r[1]) for r in cells(opened, "table.ledger")}
    assert rows == {
        "would send": ledger["accepted"],
        "rejected": ledger["rejected"],
        "skipped by a filter": ledger["skipped"],
        "rows read": ledger["read"],
    }
    assert f"rows read            {ledger['read']:>12,}" in result.stdout
    reasons = cells(opened, "#rejects")
    assert {r[1]: number(r[0]) for r in reasons} == {
        k.replace("`", ""): v for k, v in ledger["rejected_by_reason"].items()
    }
    assert any("set overflow: {language: truncate}" in r[2] for r in reasons)  # the fix, in its own column
    # Per day: the table is the JSON's days; each chart a line and a point per day of the range.
    days = report["stats"]["days"]
    table = cells(opened, "#days-table")
    assert [[r[0], *map(number, r[1:])] for r in table[:-1]] == [[d["day"], *(d[m] for m in METRICS)] for d in days]
    span = len(every_day(days[0]["day"], days[-1]["day"]))
    for metric in METRICS:
        assert opened.count(f"#chart-{metric} g.series_marks > path") == 1
        assert opened.count(f"#chart-{metric} g.points_marks > path") == span
        assert opened.count(f"#chart-{metric} g.differs_marks > line") == 0
    assert sum(d["pageviews"] for d in days) == report["stats"]["events_by_name"]["(pageview)"]
    # Top lists: a bar per value, the values and counts of the JSON.
    paths = report["stats"]["top_paths"]
    assert opened.count("#top-top_paths + div g.bars_marks > path, #top-top_paths ~ div g.bars_marks > path") >= 1
    top_rows = cells(opened, "#top .pair table")[: min(15, len(paths))]
    assert [(r[0], number(r[1])) for r in top_rows] == list(paths.items())[:15]
    print("screenshot:", opened.screenshot("dry-run"), keep_copy(html, "dry-run"))


@needs_browser
def test_verify_page_marks_the_day_umami_lost(tmp_path: Path, browser: Browser) -> None:
    day = "2024-03-12"
    with FakeUmami() as server:
        site = server.add_website()
        import_page = tmp_path / "import.html"
        imported = import_into(
            server.url, site, EVENTS, "sample_events", tmp_path, "--state", tmp_path / "state", "--html", import_page
        )
        assert imported.code == 1, imported.stderr
        server.drop_events(site, lambda e: e["created_at"].startswith(day) and e["event_type"] == 1)
        html = tmp_path / "verify.html"
        verified = run_cli(
            "verify",
            EVENTS,
            "-m",
            "sample_events",
            "--host",
            server.url,
            "--website",
            site,
            "--report",
            tmp_path / "verify.json",
            "--html",
            html,
            env=LOGIN,
        )
    assert verified.code == 1, verified.stdout + verified.stderr
    # The import's own page: where the rows went (the host, never a credential), what Umami accepted.
    imported_report = json.loads((tmp_path / "report.json").read_text())
    opened = browser.open(import_page)
    assert_offline_and_clean(opened, import_page)
    assert opened.page.locator("h1").inner_text() == f"Import into {server.url}"
    ledger = {r[0]: number(r[1]) for r in cells(opened, "table.ledger")}
    assert ledger["accepted by Umami"] == imported_report["ledger"]["accepted"]
    assert ledger["in doubt"] == 0
    print("screenshot:", opened.screenshot("import"), keep_copy(import_page, "import"))
    report = json.loads((tmp_path / "verify.json").read_text())
    assert report["source_ledger"]["read"] == report["source_ledger"]["accepted"] + 32 + 6
    opened = browser.open(html)
    assert_offline_and_clean(opened, html)
    assert "DIFFERENT" in opened.page.locator("header .banner").inner_text()
    # Every day of the JSON in the table, sources and Umami side by side, as the terminal said.
    table = cells(opened, "#days-table")
    assert len(table) == len(report["days"])
    for row, d in zip(table, report["days"], strict=True):
        assert row[0] == d["day"]
        assert [number(x) for x in row[2:]] == [v for m in METRICS for v in (d["expected"][m], d["found"][m])]
    lost = next(d for d in report["days"] if d["day"] == day)
    assert f"{day} pageviews: expected {lost['expected']['pageviews']}, found 0" in verified.stdout
    # The day is marked: a red rule at its x in the pageviews chart, where Umami's point sits below the sources'.
    span = every_day(report["days"][0]["day"], report["days"][-1]["day"])
    index = span.index(day)
    chart = "#chart-pageviews"
    assert opened.count(f"{chart} g.series_marks > path") == 2
    assert opened.count(f"{chart} g.points_marks > path") == 2 * len(span)
    assert opened.count(f"{chart} g.differs_marks > line") == 1
    rule = opened.page.locator(f"{chart} g.differs_marks > line").first
    assert rule.get_attribute("stroke") == "#c62828"
    box = rule.bounding_box()
    points = opened.page.eval_on_selector_all(
        f"{chart} g.points_marks > path",
        "ps => ps.map(p => { const b = p.getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2]; })",
    )
    source_point, umami_point = points[index], points[len(span) + index]
    assert box is not None and box["height"] > 100
    assert abs(box["x"] + box["width"] / 2 - source_point[0]) < 3
    assert umami_point[1] > source_point[1] + 20  # found 0: drawn lower than the expected figure
    # ... and its table row is highlighted and linked from the list of differing days.
    row = opened.page.locator(f"#day-{day}").locator("xpath=ancestor::tr[1]")
    assert "differs" in (row.get_attribute("class") or "")
    background = row.locator("td").first.evaluate("c => getComputedStyle(c).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    assert opened.count(f'#days a[href="#day-{day}"]') == 1
    # Top lists side by side: the differing values of the JSON are the highlighted rows.
    differing = {r["value"] for r in report["top"]["paths"]["rows"] if r["differs"]}
    marked = opened.page.eval_on_selector_all(
        "#top-paths ~ .pair:first-of-type tr.differs", "rows => rows.map(r => r.children[0].textContent.trim())"
    )
    assert set(marked) == differing
    print("screenshot:", opened.screenshot("verify-mismatch"), keep_copy(html, "verify-mismatch"))
    # A saved report renders the same page again.
    again = tmp_path / "again.html"
    rendered = run_cli("report", "html", tmp_path / "verify.json", "-o", again)
    assert rendered.code == 0, rendered.stderr
    assert again.read_text() == html.read_text()


@needs_browser
def test_shard_reports_render_as_one_merged_page(tmp_path: Path, browser: Browser, sample_run: Any) -> None:
    _, whole, _ = sample_run
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    validate(one, EVENTS, "sample_events", "--shard", "1/2")
    validate(two, EVENTS, "sample_events", "--shard", "2/2")
    html, merged = tmp_path / "merged.html", tmp_path / "merged.json"
    rendered = run_cli("report", "merge", one / "r.json", two / "r.json", "--out", merged, "--html", html)
    assert rendered.code == 1, rendered.stderr  # the sample's rejects
    days = json.loads(merged.read_text())["stats"]["days"]
    assert days == whole["stats"]["days"]  # visitors and visits sum exactly: a visitor is in one shard
    opened = browser.open(html)
    assert_offline_and_clean(opened, html)
    assert "merged from 2 shards" in opened.page.locator("h1").inner_text()
    ledger = {r[0]: number(r[1]) for r in cells(opened, "table.ledger")}
    assert ledger["rows read"] == whole["ledger"]["read"]
    assert ledger["would send"] == whole["ledger"]["accepted"]
    table = cells(opened, "#days-table")
    assert [number(r[1]) for r in table[:-1]] == [d["pageviews"] for d in whole["stats"]["days"]]
    print("screenshot:", opened.screenshot("merged-shards"), keep_copy(html, "merged-shards"))


# --------------------------------------------------------------------------- without a browser


def test_per_day_figures_of_a_dry_run_equal_what_verify_expects(tmp_path: Path, sample_run: Any) -> None:
    from backfill.config import RunConfig
    from backfill.verify import collect_expected

    for source, mapping in ((EVENTS, "sample_events"), (GA4_GLOB, "ga4")):  # hourly and exact visits
        report = sample_run[1] if mapping == "sample_events" else validate(tmp_path, source, mapping)[1]
        config = RunConfig(sources=(str(source),), mapping=mapping, rejects=tmp_path / "x.ndjson", dry_run=True)
        expected, _ = collect_expected(config, "UTC")
        assert report["stats"]["days_exact"] is True
        assert report["stats"]["days"] == [
            {"day": day.isoformat(), **expected.day_figures(day)} for day in expected.days
        ], mapping


def test_distinct_visitors_per_day_turn_into_estimates_past_the_bound() -> None:
    import polars as pl

    counter = DistinctPerDay(exact_max=5_000)
    truth = {0: 4_000, 1: 20_000, 2: 300}
    for day, n in truth.items():
        for start in range(0, n, 1_000):  # chunk by chunk, each visitor twice
            ids = pl.Series("h", range(start, min(n, start + 1_000)), dtype=pl.UInt64).hash(seed=day)
            frame = pl.DataFrame({"day": pl.Series([day] * ids.len(), dtype=pl.Int32), "h": ids})
            counter.add(frame)
            counter.add(frame)
    assert not counter.exact
    counts = counter.counts()
    for day, n in truth.items():
        assert abs(counts[day] - n) / n < 0.1, (day, counts[day], n)


def test_the_page_is_self_contained_and_small_for_a_year_of_days() -> None:
    first = dt.date(2023, 1, 1)
    days = []
    for i in range(365):
        figures = {"pageviews": 900 + i % 50, "visitors": 300 + i % 7, "visits": 400 + i % 11, "events": 40 + i % 5}
        found = dict(figures, pageviews=figures["pageviews"] - (3 if i % 60 == 0 else 0))
        differs = ["pageviews"] if i % 60 == 0 else []
        days.append(
            {
                "day": (first + dt.timedelta(days=i)).isoformat(),
                "expected": figures,
                "found": found,
                "differs": differs,
                "events": {"signup": {"expected": 40 + i % 5, "found": 40 + i % 5}},
                "events_differ": [],
            }
        )
    top = {
        name: {
            "counted": "visitors",
            "compared": True,
            "unpredictable": None,
            "rows": [
                {"value": f"/page/{n}" * 3, "expected": 1000 - n, "found": 1000 - n, "differs": False}
                for n in range(20)
            ],
        }
        for name in ("paths", "referrers", "countries", "browsers", "os")
    }
    report = {
        "host": "https://umami.example.com",
        "website": "f035c8a7-c46d-4188-b104-62f13b89a9b8",
        "timezone": "Europe/Berlin",
        "tolerance": "exact",
        "visits": "hourly",
        "expected_rows": 400_000,
        "range": {"first_day": days[0]["day"], "last_day": days[-1]["day"]},
        "days": days,
        "top": top,
        "differences": [
            {"where": d["day"], "metric": "pageviews", "expected": 1, "found": 0} for d in days if d["differs"]
        ],
        "verdict": "different",
    }
    page = render_html(report)
    assert len(page.encode()) < 400_000, len(page.encode())
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!#)""", page) == []  # no link or source outside the page
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert page.count('class="mark-rule role-mark differs_marks"') == 1  # pageviews only
    assert "points_marks" not in page  # a year: lines only


def test_the_command_in_a_report_never_holds_credentials() -> None:
    from backfill.runinfo import command_line

    argv = ["import", "x.csv", "-m", "m.yaml", "--database-url", "postgresql://u:secret@db/umami"]
    argv += ["--app-secret=hush", "--host", "https://admin:pw@umami.example.com"]
    command = command_line(argv)
    assert "u:secret" not in command and "hush" not in command and "pw@" not in command
    assert '--database-url "$UMAMI_DATABASE_URL"' in command and '--app-secret="$APP_SECRET"' in command
    assert "--host https://umami.example.com" in command


def test_the_fix_a_reject_reason_names() -> None:
    assert (
        reason_fix("os: longer than 20 characters (Umami's limit); shorten it in the source, set `overflow: {os: x}`")
        == "shorten it in the source, set `overflow: {os: x}`"
    )
    assert reason_fix("timestamp: naive time (no offset) and no timezone: add `timezone:` under timestamp") == (
        "add `timezone:` under timestamp"
    )
    assert reason_fix("url: does not parse as a URL; Umami refuses it (fix the value or the template)") == (
        "fix the value or the template"
    )
    assert reason_fix("data.revenue: not a number") is None


def test_report_html_refuses_a_file_that_is_no_report(tmp_path: Path) -> None:
    other = tmp_path / "x.json"
    other.write_text('{"hello": 1}')
    result = run_cli("report", "html", other, "-o", tmp_path / "x.html", cwd=ROOT)
    assert result.code == 2 and "not a backfill report" in result.stderr
    assert not (tmp_path / "x.html").exists()


def test_an_aggregated_source_shows_what_it_reported_beside_what_was_synthesized(tmp_path: Path) -> None:
    html = tmp_path / "ga.html"
    _, report = validate(tmp_path, SAMPLES / "ga_reports" / "ga4_de_events.csv", "ga_report", "--html", html)
    reported = report["reported_days"]
    assert len(reported) == 7 and all(set(d) == {"day", *METRICS} for d in reported)
    assert reported == report["stats"]["days"]  # the synthesizer reproduces each day's totals
    page = html.read_text()
    assert page.count('class="mark-line role-mark series_marks"') == 2 * len(METRICS)  # reported, synthesized
    assert "<p>No day differs.</p>" in page and 'class="differs"' not in page
    assert f"{sum(d['pageviews'] for d in reported):,}" in page
