"""`backfill inspect`: our own export formats by name and preset, and a mapping for the rest
that validates as suggested, each line with its reason. Driven through the real CLI."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from backfill.sources import PLUGINS, FormatPlugin, register_format

from .conftest import MAPPINGS, SAMPLES, run_cli


def inspect(*args: str | Path, cwd: Path | None = None) -> tuple[str, str]:
    result = run_cli("inspect", *args, cwd=cwd)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr, result.stdout


# --------------------------------------------------------------------------- export formats


@pytest.mark.parametrize(
    ("path", "preset"),
    [
        ("ga4/events_20240301.json.gz", "ga4"),
        ("ga4/events_20240302.parquet", "ga4"),
        ("ga4/events_20240303.avro", "ga4"),
        ("ga_reports/ga4_de_events.csv", "ga_report"),
        ("ga_reports/ua_all_pages.csv", "ga_report"),
        ("plausible_events/events_v2.csv", "plausible-events"),
        ("plausible_events/events_v2.ndjson.gz", "plausible-events"),
        ("plausible_csv/example.com_20240305.zip", "plausible-csv"),
        ("plausible_csv/old-layout.example.com_20230101.zip", "plausible-csv"),
    ],
)
def test_each_export_we_read_is_named_with_its_preset(path: str, preset: str) -> None:
    text, mapping = inspect(SAMPLES / path)
    assert f"-m {preset}" in text and "next: backfill validate" in text, text
    assert f"what the {preset} preset keeps and drops" in text
    assert "keeps" in text and "drops" in text
    # the mapping printed is the preset itself, loadable as it is
    assert yaml.safe_load(mapping)["reader"]["format"] == PLUGINS_BY_PRESET[preset]


PLUGINS_BY_PRESET = {p.preset: p.name for p in PLUGINS.values() if p.preset}


def test_ga4_export_is_not_given_a_generic_mapping() -> None:
    """The case of the issue: no `os: platform` (WEB/IOS/ANDROID) from a flat guess."""
    text, mapping = inspect(SAMPLES / "ga4" / "events_20240301.json.gz")
    assert "os: platform" not in mapping and "Suggested by" not in mapping
    assert "the columns the ga4 reader gives" in text and "page_location" in text


def test_an_export_folder_gives_a_command_that_leaves_side_files_out(tmp_path: Path) -> None:
    text, _ = inspect(SAMPLES / "ga4")
    assert "3 of 4 files are this export" in text and "expected.json" in text
    command = next(line for line in text.splitlines() if line.startswith("next: "))
    files = command.split("validate ", 1)[1].rsplit(" -m ", 1)[0].strip("'")
    assert files.endswith("events_*")
    # the printed command works
    result = run_cli("validate", files, "-m", "ga4", "--rejects", tmp_path / "r.ndjson", "-q")
    assert result.code in (0, 1), result.stdout + result.stderr


def test_a_folder_of_unzipped_plausible_tables_is_recognised_as_a_whole(tmp_path: Path) -> None:
    export = tmp_path / "unzipped"
    with zipfile.ZipFile(SAMPLES / "plausible_csv" / "example.com_20240305.zip") as archive:
        archive.extractall(export)
    text, _ = inspect(export)
    assert f"next: backfill validate {export} -m plausible-csv" in text, text


def test_the_preset_summary_is_taken_from_the_preset_file(tmp_path: Path) -> None:
    """Edit the block in the preset and inspect prints the edit: nothing hard-coded."""
    text, _ = inspect(SAMPLES / "plausible_events" / "events_v2.ndjson.gz")
    block = MAPPINGS / "plausible-events.yaml"
    first_keep = next(line for line in block.read_text().splitlines() if line.startswith("#   keeps:"))
    assert first_keep.removeprefix("#   ") in text


def test_a_plugin_added_later_is_recognised_with_no_change_to_inspect(tmp_path: Path) -> None:
    """inspect asks every registered plugin; a new one only sets sniff and preset."""
    from backfill.inspect_exports import export_report, recognise

    path = tmp_path / "export.weird"
    path.write_text("WEIRD-EXPORT v1\n")
    plugin = FormatPlugin(
        name="weird_test_format",
        description="Weird analytics export",
        iter_frames=lambda source, options: iter(()),
        schema=lambda source, options: {},
        sniff=lambda p: Path(p).is_file() and Path(p).read_text().startswith("WEIRD-EXPORT"),
        preset="ga4",
    )
    register_format(plugin)
    try:
        found = recognise(str(path))
        assert found is not None and found.plugin is plugin
        text, _ = export_report(found)
        assert "Weird analytics export" in text and "-m ga4" in text
    finally:
        PLUGINS.pop("weird_test_format")


def test_a_sniff_that_raises_counts_as_not_recognised(tmp_path: Path) -> None:
    from backfill.inspect_exports import recognise

    def broken(_path: str) -> bool:
        raise RuntimeError("bug in a sniff")

    register_format(FormatPlugin("broken_test_format", "Broken", lambda s, o: iter(()), lambda s, o: {}, sniff=broken))
    try:
        assert recognise(str(SAMPLES / "events.csv")) is None
    finally:
        PLUGINS.pop("broken_test_format")


def test_plain_files_are_not_taken_for_exports() -> None:
    for name in ("events.ndjson.gz", "stripe_payments.csv"):  # events.csv: test_cli_validate
        _, mapping = inspect(SAMPLES / name)
        assert mapping.startswith("# Suggested by `backfill inspect`"), name


def test_a_gzipped_ga4_json_renamed_without_extension_is_still_recognised(tmp_path: Path) -> None:
    path = tmp_path / "download"
    shutil.copy(SAMPLES / "ga4" / "events_20240301.json.gz", path)
    text, _ = inspect(path)
    assert "-m ga4" in text


# --------------------------------------------------------------------------- generic files (issue 15)

EVENT_LOG = """\
occurred_at,user_id,session_id,event,page_url,referrer,country,amount,currency,plan
1709257736108,u1,s1,pageview,https://www.example.com/pricing?x=1,https://google.com/,DE,,,pro
1709257800000,u1,s1,purchase,https://www.example.com/checkout,,DE,49.90,eur,pro
1709257900000,u2,s2,pageview,https://www.example.com/,,us,,,free
1709258000000,u2,s2,signup,https://www.example.com/signup,,US,,,free
1709258100000,u3,s3,pageview,https://www.example.com/blog,,FR,,,free
"""


def suggested(tmp_path: Path, text: str, name: str = "log.csv") -> tuple[str, dict]:
    path = tmp_path / name
    path.write_text(text)
    _, mapping = inspect(path)
    return mapping, yaml.safe_load(mapping)


def line_of(mapping: str, key: str) -> str:
    return next(line for line in mapping.splitlines() if line.strip().startswith(f"{key}:"))


def test_event_log_gets_url_visit_country_revenue_and_the_epoch_unit(tmp_path: Path) -> None:
    mapping, parsed = suggested(tmp_path, EVENT_LOG)
    fields = parsed["fields"]
    assert fields["url"] == "page_url" and "full URLs" in line_of(mapping, "url")
    assert parsed["visitor"] == {"columns": ["user_id"], "visit": "session_id"}
    assert fields["country"] == {"column": "country", "case": "upper"}
    assert "ISO 3166-1" in line_of(mapping, "country")
    assert fields["data.revenue"] == {"column": "amount"} and fields["data.currency"]["column"] == "currency"
    assert parsed["timestamp"] == {"column": "occurred_at", "format": "epoch", "unit": "ms"}
    assert "2024-03-01" in line_of(mapping, "unit")
    assert fields["referrer"] == "referrer"
    assert fields["name"] == {"column": "event", "map": {"pageview": None}}
    # every mapped field line says why it was chosen
    field_lines = [line for line in mapping.split("fields:")[1].splitlines() if line.strip()]
    assert all("#" in line for line in field_lines[:-1]), field_lines
    # and it validates as suggested: every row sent
    (tmp_path / "m.yaml").write_text(mapping)
    result = run_cli("validate", tmp_path / "log.csv", "-m", tmp_path / "m.yaml", "--rejects", tmp_path / "r")
    assert result.code == 0, result.stdout + result.stderr
    assert "would send                    5" in result.stdout


@pytest.mark.parametrize(
    ("values", "unit"),
    [
        (["1709257736", "1709258000"], "s"),
        (["1709257736000", "1709258000000"], "ms"),
        (["1709257736000000", "1709258000000000"], "us"),
        (["1709257736000000000", "1709258000000000000"], "ns"),
    ],
)
def test_epoch_units_by_magnitude(tmp_path: Path, values: list[str], unit: str) -> None:
    text = "ts,visitor_id,path\n" + "".join(f"{v},v{i},/p\n" for i, v in enumerate(values))
    _, parsed = suggested(tmp_path, text)
    assert parsed["timestamp"]["unit"] == unit and parsed["timestamp"]["format"] == "epoch"


def test_a_session_column_alone_becomes_the_visitor_and_the_visit(tmp_path: Path) -> None:
    text = "time,visit_id,path\n2024-03-01T10:00:00Z,a,/x\n2024-03-01T10:01:00Z,a,/y\n"
    mapping, parsed = suggested(tmp_path, text)
    assert parsed["visitor"] == {"columns": ["visit_id"], "visit": "visit_id"}
    assert "no visitor column" in line_of(mapping, "visitor")
    assert parsed["fields"]["url"] == "path" and "paths in 'path'" in line_of(mapping, "url")


def test_country_names_are_not_mapped_as_codes(tmp_path: Path) -> None:
    text = "time,user_id,url,country\n2024-03-01T10:00:00Z,a,/x,Germany\n2024-03-01T10:01:00Z,b,/y,France\n"
    mapping, parsed = suggested(tmp_path, text)
    assert "country" not in parsed["fields"]
    assert "holds names" in mapping and "not ISO 3166-1" in mapping


def test_cents_and_a_missing_currency_are_explained(tmp_path: Path) -> None:
    text = "time,user_id,url,amount_cents\n2024-03-01T10:00:00Z,a,/x,4990\n"
    mapping, parsed = suggested(tmp_path, text)
    assert "data.revenue" not in parsed["fields"]  # commented out: no currency
    assert "scale: 0.01" in mapping and "no currency column" in mapping


def test_naive_and_offset_times_differ_in_the_timezone_line(tmp_path: Path) -> None:
    naive, parsed = suggested(tmp_path, "time,user_id,url\n2024-03-01 10:00:00,a,/x\n", "naive.csv")
    assert parsed["timestamp"]["timezone"] == "UTC" and "CHECK" in naive
    offset, parsed = suggested(tmp_path, "time,user_id,url\n2024-03-01T10:00:00+01:00,a,/x\n", "offset.csv")
    assert "timezone" not in parsed["timestamp"] and "offset" in offset


def test_a_file_with_no_page_column_says_so(tmp_path: Path) -> None:
    rows = [{"created": 1709257736, "customer": "c1", "status": "ok"}]
    path = tmp_path / "x.ndjson.gz"
    with gzip.open(path, "wt") as out:
        out.write("\n".join(json.dumps(r) for r in rows) + "\n")
    _, mapping = inspect(path)
    assert "url: {const: /}" in mapping and "no column of paths or URLs" in mapping
