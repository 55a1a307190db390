"""The Matomo readers on the shapes real installations write, beyond the shipped samples.

A whole database of two sites (``make_matomo_samples.write_database``: the log
tables of both, goals one of which was deleted, order items, Matomo's other
tables), a Piwik 1.x dump, a Live export saved by a French Matomo with visits
Matomo knows no visitor for, URLs kept without their scheme, pages that overlap
a file the run was not given. Each fixture is written here, in the shape Matomo
writes (its test suite's dumps and API answers were read to learn them).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from backfill.sources import ReadOptions, expand_sources, iter_chunks
from tests.conftest import import_into, run_cli, stored_figures
from tests.fake_umami import FakeUmami
from tests.test_matomo import LIVE, _generator, assert_order_items, stored_orders

SKIP_SITE_1 = "another Matomo site (--matomo-site 2)"


def tsv(header: list[str], rows: list[list[Any]]) -> str:
    """A table as mysql --batch writes it (NULL as \\N)."""
    lines = ["\t".join(header), *("\t".join("\\N" if v is None else str(v) for v in row) for row in rows)]
    return "\n".join(lines) + "\n"


def read(fmt: str, *paths: Path, **reader: str) -> tuple[pl.DataFrame, list[str]]:
    """Every row a run would read from these inputs, and the reader's notes."""
    options = ReadOptions(format=fmt, plugin_options=tuple(reader.items()))
    files, _ = expand_sources([str(p) for p in paths], options)
    options = options.with_inputs(files)
    frames = [frame for i, source in enumerate(files) for frame in iter_chunks(source, i, options)]
    return pl.concat(frames, how="diagonal"), options.notes.all()


# --------------------------------------------------------------------------- a database of two sites


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("matomo-db")
    return folder, _generator().write_database(folder)


def test_a_dump_of_two_sites_is_refused_naming_each_site(database: tuple[Path, dict[str, Any]]) -> None:
    folder, expected = database
    result = run_cli("validate", folder / "logs", "-m", "matomo-logs", "--rejects", folder / "r.ndjson")
    assert result.code == 2, result.stdout + result.stderr
    visits = {site: f"{figures['visits_total']:,} visits" for site, figures in expected.items()}
    assert f'--matomo-site 1: "Bakery Demo", https://www.bakery-demo.example, {visits["1"]}' in result.stderr
    assert f'--matomo-site 2: "Bakery & Co shop", https://shop.bakery-demo.example, {visits["2"]}' in result.stderr
    assert "Traceback" not in result.stderr


def test_the_chosen_site_of_a_whole_database_is_imported_alone(
    tmp_path: Path, database: tuple[Path, dict[str, Any]]
) -> None:
    folder, expected = database
    site2, site1 = expected["2"], expected["1"]
    with FakeUmami() as server:
        website = server.add_website()
        result = import_into(server.url, website, folder / "logs", "matomo-logs", tmp_path, "--matomo-site", "2")
        assert result.code == 0, result.stdout + result.stderr
        events, revenue, orders = server.events(website), server.revenue(website), stored_orders(server, website)
    figures = stored_figures(events, revenue)
    assert figures.pageviews_by_day == site2["pageviews_by_day"]
    assert figures.visitors_by_day == site2["visitors_by_day"]
    assert figures.custom_events_by_name == site2["events_by_name"]
    assert "Newsletter signup" in figures.custom_events_by_name  # a deleted goal keeps its name
    assert figures.revenue_by_day == site2["revenue_by_day"]
    report = json.loads((tmp_path / "report.json").read_text())
    ledger = report["ledger"]
    assert ledger["balances"] is True and ledger["rejected"] == 0
    assert ledger["skipped_by_filter"][SKIP_SITE_1] == site1["actions_total"] + site1["conversions_total"]
    ignored = next(n for n in report["notes"] if "not used by the import, ignored" in n)
    for table in ("matomo_access", "matomo_option", "matomo_site_url", "matomo_tagmanager_container", "archive_*"):
        assert table in ignored, ignored
    assert_order_items(orders, site2["order_items"])


def test_live_pages_of_two_sites_need_a_site_and_skip_the_other(database: tuple[Path, dict[str, Any]]) -> None:
    folder, expected = database
    with pytest.raises(Exception, match=r"holds 2 Matomo sites(.|\n)*--matomo-site 2: \"Bakery & Co shop\""):
        read("matomo_live", folder / "live")
    rows, _ = read("matomo_live", folder / "live", matomo_site="2")
    site1 = expected["1"]
    assert (rows["_skip"] == SKIP_SITE_1).sum() == site1["actions_total"] + site1["conversions_total"]
    kept = rows.filter(pl.col("_skip").is_null())
    assert kept["site_id"].unique().to_list() == ["2"]
    assert kept["_source_error"].null_count() == kept.height
    # the Live API has no name for a deleted goal: goal_unknown, never another site's goal name
    assert set(kept.filter(pl.col("kind") == "goal")["event_name"]) <= {"goal_unknown"}


# --------------------------------------------------------------------------- Piwik 1.x


def piwik1_dump(folder: Path) -> Path:
    """A Piwik 1.x database: its log_visit has no device type and no OS version (one OS code per
    Windows version), regions are the old GeoIP's FIPS codes, idaction_url_ref names the previous
    action of any kind, and there is no log_conversion (goals were never set up)."""
    dump = folder / "piwik1"
    dump.mkdir()
    visit_header = ["idvisit", "idsite", "idvisitor", "visitor_localtime", "visitor_returning",
                    "visit_first_action_time", "visit_last_action_time", "visit_exit_idaction_url",
                    "visit_total_actions", "referer_type", "referer_name", "referer_url", "config_id", "config_os",
                    "config_browser_name", "config_browser_version", "config_resolution", "config_cookie",
                    "location_ip", "location_browser_lang", "location_country", "location_continent",
                    "location_region", "location_city"]  # fmt: skip
    visits = [
        [1, 1, "A1B2C3D4E5F60718", "12:34:06", 0, "2012-03-06 11:22:33", "2012-03-06 11:49:33", 6, 6, 1, "", "",
         "7C68513D435E", "WXP", "FF", "3.6", "1024x768", 1, "9C6E", "fr,en-us;q=0.5", "nl", "eur", "11", "Delft"],
        [2, 1, "0F0E0D0C0B0A0908", "08:00:00", 0, "2012-03-07 08:00:00", "2012-03-07 08:01:00", 0, 2, 1, "", "",
         "1A2B3C4D5E6F", "WI7", "IE", "9.0", "1280x800", 1, "0A0B", "en-us", "us", "amn", "CA", "Oakland"],
    ]  # fmt: skip
    (dump / "piwik_log_visit.tsv").write_text(tsv(visit_header, visits))
    actions = [
        [1, "example.org/a", 1, 0],
        [2, "Page A", 4, None],
        [3, "http://dev.piwik.org/svn", 2, None],
        [4, "http://piwik.org/latest.zip", 3, None],
        [5, "example.org/b", 1, 0],
        [6, "Page B", 4, None],
        [7, "http://piwik.org/docs.pdf", 3, None],
    ]
    (dump / "piwik_log_action.tsv").write_text(tsv(["idaction", "name", "type", "url_prefix"], actions))
    lva_header = ["idlink_va", "idsite", "idvisitor", "server_time", "idvisit", "idaction_url", "idaction_url_ref",
                  "idaction_name", "idaction_name_ref", "time_spent_ref_action", "custom_float"]  # fmt: skip
    lva = [
        [1, 1, "A1B2C3D4E5F60718", "2012-03-06 11:22:33", 1, 1, 0, 2, 0, 0, 234],  # page /a
        [2, 1, "A1B2C3D4E5F60718", "2012-03-06 11:25:33", 1, 3, 1, None, 2, 180, None],  # outlink on /a
        [3, 1, "A1B2C3D4E5F60718", "2012-03-06 11:28:33", 1, 4, 3, None, 2, 180, None],  # download: ref = outlink
        [4, 1, "A1B2C3D4E5F60718", "2012-03-06 11:30:33", 1, 3, 4, None, 2, 120, None],  # outlink: ref = download
        [5, 1, "A1B2C3D4E5F60718", "2012-03-06 11:40:33", 1, 5, 3, 6, 2, 600, 120],  # page /b
        [6, 1, "A1B2C3D4E5F60718", "2012-03-06 11:49:33", 1, 7, 5, None, 6, 540, None],  # download on /b
        [7, 1, "0F0E0D0C0B0A0908", "2012-03-07 08:00:00", 2, 5, 0, 6, 0, 0, 80],  # page /b
        [8, 1, "0F0E0D0C0B0A0908", "2012-03-07 08:01:00", 2, 0, 5, 0, 6, 60, None],  # a page view with no URL
    ]
    (dump / "piwik_log_link_visit_action.tsv").write_text(tsv(lva_header, lva))
    return dump


def test_a_piwik_1_dump_is_read_as_matomo_reads_it(tmp_path: Path) -> None:
    dump = piwik1_dump(tmp_path)
    rows, notes = read("matomo_logs", dump)
    clicks = rows.filter(pl.col("kind").is_in(["outlink", "download"])).sort("_row")
    assert clicks["url"].to_list() == ["http://example.org/a"] * 3 + ["http://example.org/b"]
    assert clicks["link_url"].to_list()[:2] == ["http://dev.piwik.org/svn", "http://piwik.org/latest.zip"]
    by_visit = rows.group_by("visit_id").agg(pl.col("os", "region", "browser").first()).sort("visit_id")
    assert by_visit["os"].to_list() == ["Windows XP", "Windows 7"]
    assert by_visit["browser"].to_list() == ["firefox", "ie"]
    assert by_visit["region"].to_list() == [None, "US-CA"]  # NL 11 is a FIPS code, no ISO 3166-2 one
    assert any("region 'NL-11' (1 visits) is no ISO 3166-2 code" in n for n in notes), notes
    assert any("no table piwik_log_conversion: no goal conversions or ecommerce orders" in n for n in notes), notes

    report = tmp_path / "report.json"
    result = run_cli("validate", dump, "-m", "matomo-logs", "--rejects", tmp_path / "r.ndjson", "--report", report)
    assert result.code == 0, result.stdout + result.stderr
    ledger = json.loads(report.read_text())["ledger"]
    assert ledger["skipped_by_filter"] == {'Matomo page view without a URL ("Page URL not defined")': 1}
    assert ledger["accepted"] == 7 and ledger["rejected"] == 0
    assert "no goal conversions or ecommerce orders are imported" in result.stdout + result.stderr


# --------------------------------------------------------------------------- Live: languages, visitors, URLs


def french_page(folder: Path) -> Path:
    """A page a French-speaking Matomo answers: translated labels beside codes and icon names,
    ``"visitorId": false`` for visits Matomo knows no visitor for, a URL kept without its scheme."""
    icon = "plugins/Morpheus/icons/dist/devices/{}.png"

    def visit(idvisit: int, visitor: Any, label: str, device_icon: str | None, url: str) -> dict[str, Any]:
        ts = 1_709_280_000 + idvisit * 600
        return {
            "idSite": "1",
            "idVisit": str(idvisit),
            "visitorId": visitor,
            "userId": None,
            "siteName": "Boulangerie",
            "firstActionTimestamp": ts,
            "deviceType": label,
            "deviceTypeIcon": device_icon,
            "browserCode": "FF",
            "browserName": "Firefox",
            "operatingSystemCode": "WIN",
            "operatingSystemName": "Windows",
            "operatingSystemVersion": "10",
            "countryCode": "fr",
            "country": "France",
            "regionCode": "IDF",
            "languageCode": "fr-fr",
            "language": "Français",
            "actionDetails": [
                {"type": "action", "url": url, "pageTitle": "Pain", "timestamp": ts, "title": "Action"},
                {"type": "outlink", "url": "partenaire.example.net/", "timestamp": ts + 30, "title": "Lien sortant"},
            ],
        }

    page = folder / "visites_fr.json"
    visits = [
        visit(1, False, "Bureau", icon.format("desktop"), "example.com/test-page"),
        visit(2, "c4cf18b9ac039d09", "Smartphone", icon.format("smartphone"), "https://example.com/"),
        visit(3, False, "Ordinateur portable", None, "https://example.com/pain?x=1"),
        visit(4, False, "Inconnu", icon.format("unknown"), "https://example.com/"),
    ]
    page.write_text(json.dumps(visits, ensure_ascii=False))
    return page


def test_a_french_live_export_keeps_devices_visitors_and_urls(tmp_path: Path) -> None:
    rows, notes = read("matomo_live", french_page(tmp_path))
    visits = rows.group_by("visit_id").agg(pl.col("device", "visitor_id").first()).sort("visit_id")
    assert visits["device"].to_list() == ["desktop", "mobile", None, None]
    assert visits["visitor_id"].to_list() == ["visit-1", "c4cf18b9ac039d09", "visit-3", "visit-4"]
    pages = rows.filter(pl.col("kind") == "pageview")
    assert pages["url"][0] == "http://example.com/test-page" and pages["hostname"][0] == "example.com"
    assert rows.filter(pl.col("kind") == "outlink")["link_url"][0] == "http://partenaire.example.net/"
    assert set(rows["language"]) == {"fr-FR"} and set(rows["region"]) == {"FR-IDF"}
    said = " ".join(notes)
    assert "3 visit(s) without a visitor id" in said
    assert "device type 'Ordinateur portable' (1 visits) maps to no device type" in said
    assert "Inconnu" not in said  # Matomo's own "unknown" (its icon says so) is no lost value


def test_live_pages_are_compared_with_the_given_pages_only(tmp_path: Path) -> None:
    """A page saved beside the input (a backup, a page a glob leaves out) is never read."""
    pages = tmp_path / "pages"
    pages.mkdir()
    first = json.loads((LIVE / "visits_page1.json").read_text())
    (pages / "visits_page1.json").write_text(json.dumps(first))
    (pages / "visits_page1.json.bak.json").write_text(json.dumps(first))
    with_backup, _ = read("matomo_live", pages)
    assert with_backup["_source_error"].null_count() < with_backup.height  # both given: the copy is rejected
    report = tmp_path / "report.json"
    result = run_cli(
        "validate", pages / "visits_page1.json.bak.json", "-m", "matomo-live", "--rejects", tmp_path / "r.ndjson",
        "--report", report,
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    assert json.loads(report.read_text())["ledger"]["rejected"] == 0


def test_live_pages_in_another_json_shape_are_read_the_same(tmp_path: Path) -> None:
    """An export whose fields are shaped otherwise (one action as an object, empty values as {},
    numbers as text) gives the same rows as the API's own JSON."""
    visits = json.loads((LIVE / "visits_page3.json").read_text())
    for visit in visits:
        visit["userId"] = visit["userId"] or {}
        visit["idVisit"] = str(visit["idVisit"])
        if len(visit["actionDetails"]) == 1:
            visit["actionDetails"] = visit["actionDetails"][0]
        visit["customVariables"] = {}
    page = tmp_path / "visits_page3.json.gz"
    page.write_bytes(gzip.compress(json.dumps(visits).encode()))
    original, _ = read("matomo_live", LIVE / "visits_page3.json")
    reshaped, _ = read("matomo_live", page)
    assert reshaped.drop("_file").equals(original.drop("_file"))
