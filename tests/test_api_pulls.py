"""Pulling history from the GA4 Data API and Matomo's HTTP API, through the real CLI.

The APIs are fakes on 127.0.0.1 (``tests/fake_ga4.py``, ``tests/fake_matomo.py``)
answering in the shapes of Google's and Matomo's references, with their quirks:
thresholded and ``(other)`` rows, pages, quota errors, expiring tokens, pages that
shift while paging, purged raw logs. Umami is the fake Umami.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, import_into, run_cli
from tests.fake_ga4 import TECHNOLOGY, FakeGoogle, make_days, service_account_key
from tests.fake_matomo import FakeMatomo
from tests.fake_umami import FakeUmami

sys.path.insert(0, str(SAMPLES))
import make_matomo_samples

FIRST = dt.date(2024, 3, 1)
DAYS = 4
PROPERTY = "123456789"
MATOMO_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


@pytest.fixture
def google(tmp_path: Path):
    with FakeGoogle(make_days(7, FIRST, DAYS), property_id=PROPERTY) as fake:
        info, public = service_account_key(fake.token_uri, fake.client_email)
        fake.public_key = public
        (tmp_path / "key.json").write_text(json.dumps(info))
        yield fake


def ga4_args(google: FakeGoogle, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"ga4-api:{PROPERTY}",
        "--since",
        FIRST.isoformat(),
        "--until",
        (FIRST + dt.timedelta(days=DAYS)).isoformat(),
        "--google-credentials",
        str(tmp_path / "key.json"),
        "--ga4-endpoint",
        google.url,
        "--pull-dir",
        str(tmp_path / "pulls"),
        *extra,
    ]


def secrets_of(tmp_path: Path) -> list[str]:
    key = json.loads((tmp_path / "key.json").read_text()) if (tmp_path / "key.json").exists() else {}
    pem = key.get("private_key", "")
    return [line for line in pem.splitlines() if len(line) > 40][:3]


def assert_no_secret(tmp_path: Path, outputs: list[str], secrets: list[str]) -> None:
    """No secret in what was printed, nor in any file the runs left (the key file aside)."""
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("key.json", "user.json", "token.txt"):
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{secret[:8]}... in {path}"


def per_day(server: FakeUmami, site: str) -> dict[str, dict[str, Any]]:
    """What Umami shows per UTC day: stats, custom events, revenue, visitors per country and browser."""
    sessions = {s["session_id"]: s for s in server.sessions(site)}
    visitors: dict[str, set[str]] = defaultdict(set)
    names: dict[str, Counter[str]] = defaultdict(Counter)
    for e in server.events(site):
        if e["event_type"] == 1:
            visitors[e["created_at"][:10]].add(e["session_id"])
        elif e["event_name"]:
            names[e["created_at"][:10]][e["event_name"]] += 1
    revenue: dict[str, float] = defaultdict(float)
    for r in server.revenue(site):
        revenue[r["created_at"][:10]] += float(r["revenue"])
    out = {}
    for day, ids in visitors.items():
        start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)
        stats = server.stats(site, start, start + 86_400_000 - 1)
        out[day] = {
            **{k: stats[k] for k in ("pageviews", "visitors", "visits", "bounces")},
            "events": dict(names[day]),
            "revenue": round(revenue[day], 2),
            "countries": dict(Counter(sessions[i]["country"] for i in ids if sessions[i]["country"])),
            "browsers": dict(Counter(sessions[i]["browser"] for i in ids)),
        }
    return out


def reported(google: FakeGoogle, thresholded: dict[dt.date, int]) -> dict[str, dict[str, Any]]:
    """The same figures as the fake's reports give them (automatic events left out, as documented)."""
    out = {}
    for truth in google.days.values():
        limit = thresholded.get(truth.day, 0)
        out[truth.day.isoformat()] = {
            "pageviews": truth.pageviews,
            "visitors": truth.users,
            "visits": truth.sessions,
            "bounces": truth.bounces,
            "events": {n: c for n, c in truth.events if n not in ("page_view", "session_start")},
            "revenue": round(truth.revenue, 2),
            "countries": {cc: u for cc, u in truth.countries if u >= limit},
            "browsers": dict(sum((Counter({TECHNOLOGY[t]: u}) for t, u in truth.breakdowns["technology"]), Counter())),
        }
    return out


def test_ga4_import_shows_every_daily_figure_the_api_reported(google: FakeGoogle, tmp_path: Path) -> None:
    """Paged answers, an expiring access token, a 500 and a 429, thresholded countries and an
    (other) row: Umami's per-day figures equal the reports', and each flag is a note with its day."""
    thresholded = {FIRST + dt.timedelta(days=1): 3}
    google.quirks.thresholded = dict(thresholded)
    google.quirks.other_row = {FIRST + dt.timedelta(days=2): 4}
    google.quirks.sampled = {FIRST + dt.timedelta(days=3)}
    google.quirks.token_uses = 15
    google.quirks.fail_once = [500, 429]
    google.quirks.invalid = {"screenResolution"}
    with FakeUmami() as umami:
        site = umami.add_website()
        result = import_into(
            umami.url, site, f"ga4-api:{PROPERTY}", "ga_report", tmp_path, *ga4_args(google, tmp_path)[1:],
            "--page-size", "3", "--batch-size", "500",
        )  # fmt: skip
        assert result.code == 0, result.stdout + result.stderr
        got, want = per_day(umami, site), reported(google, thresholded)
        for day in want:
            for k in want[day]:
                assert got.get(day, {}).get(k) == want[day][k], (day, k)
        assert not umami.internal_errors
    assert len(google.token_grants) >= 2  # the expired token was replaced
    assert any(int(c["limit"]) == 3 and int(c["offset"]) > 0 for c in google.calls)  # pages were followed
    notes = json.loads((tmp_path / "report.json").read_text())["notes"]
    text = "\n".join(notes)
    assert "subjectToThresholding) to the countries report" in text and f"days: {FIRST + dt.timedelta(days=1)}" in text
    assert "into '(other)' in the pages report" in text and str(FIRST + dt.timedelta(days=2)) in text
    assert "refused the screens report" in text and "Field screenResolution is not a valid dimension" in text
    assert "sampled the pages report" in text and str(FIRST + dt.timedelta(days=3)) in text
    assert_no_secret(tmp_path, [result.stdout, result.stderr], [*secrets_of(tmp_path), *google.issued])


def test_ga4_spent_daily_quota_stops_cleanly_and_the_same_command_continues(google: FakeGoogle, tmp_path: Path) -> None:
    google.quirks.tokens_per_day = 7 * 21  # two days of 9 reports, then part of the third
    args = ["validate", *ga4_args(google, tmp_path)[:5], *ga4_args(google, tmp_path)[7:], "-m", "ga_report"]
    args += ["--rejects", tmp_path / "r.ndjson"]
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "key.json")}  # found as Google's libraries find it
    first = run_cli(*args, "--report", tmp_path / "first.json", env=env)
    assert first.code == 3, first.stdout + first.stderr
    assert "daily quota for the property is spent" in first.stderr
    assert "midnight Pacific time: continue after" in first.stderr and "to continue: backfill validate" in first.stderr
    pulled = sorted(p.name for p in (tmp_path / "pulls").rglob("*.json"))
    assert pulled == [f"{FIRST + dt.timedelta(days=n)}.json" for n in range(2)]
    asked = len(google.calls)
    google.new_day()
    second = run_cli(*args, "--report", tmp_path / "second.json", env=env)
    assert second.code == 0, second.stdout + second.stderr
    again = [c["dateRanges"][0]["startDate"] for c in google.calls[asked:]]
    assert min(again) == str(FIRST + dt.timedelta(days=2))  # pulled days are not asked for again
    ledger = json.loads((tmp_path / "second.json").read_text())["ledger"]
    automatic = ("page_view", "session_start")
    total = sum(t.pageviews + sum(c for n, c in t.events if n not in automatic) for t in google.days.values())
    assert ledger["read"] == total and ledger["rejected"] == 0


def test_ga4_hourly_quota_and_refused_credentials_say_what_to_do(google: FakeGoogle, tmp_path: Path) -> None:
    google.quirks.tokens_per_hour = 7 * 3
    base = ["validate", *ga4_args(google, tmp_path), "-m", "ga_report", "--rejects", tmp_path / "r.ndjson"]
    hourly = run_cli(*base, "--quota-wait", "0")
    assert hourly.code == 3 and "hourly quota for the property is spent" in hourly.stderr, hourly.stderr
    google.quirks.hour_seconds = 1.0  # the next hour comes soon: waiting for it goes on to the end
    google.quirks.tokens_per_hour = 7 * 30
    waited = run_cli(*base, "--quota-wait", "120")
    assert waited.code == 0 and "waiting" in waited.stderr, waited.stdout + waited.stderr
    user = {
        "type": "authorized_user",
        "client_id": "1234.apps.googleusercontent.com",
        "client_secret": "not-the-right-secret",
        "refresh_token": "1//refresh-token-secret",
        "token_uri": google.token_uri,
    }
    (tmp_path / "user.json").write_text(json.dumps(user))
    refused = run_cli(
        *base[:6], "--google-credentials", tmp_path / "user.json", *base[8:], "--pull-dir", tmp_path / "p2"
    )
    assert refused.code == 2
    assert "Google refused the credentials from --google-credentials" in refused.stderr
    assert_no_secret(tmp_path, [refused.stdout, refused.stderr], ["not-the-right-secret", "1//refresh-token-secret"])
    assert "refresh_token" not in google.token_grants  # the token endpoint refused it


def test_saved_data_api_answers_read_like_report_csvs(tmp_path: Path) -> None:
    """A runReport answer saved by hand is a GA report like a CSV download (--format ga_report)."""
    answer = {
        "dimensionHeaders": [{"name": "date"}, {"name": "pagePath"}],
        "metricHeaders": [{"name": "screenPageViews", "type": "TYPE_INTEGER"}],
        "rows": [
            {"dimensionValues": [{"value": "20240301"}, {"value": "/"}], "metricValues": [{"value": "3"}]},
            {"dimensionValues": [{"value": "20240302"}, {"value": "(other)"}], "metricValues": [{"value": "2"}]},
        ],
        "rowCount": 2,
        "metadata": {"currencyCode": "USD", "dataLossFromOtherRow": True, "timeZone": "UTC"},
        "kind": "analyticsData#runReport",
    }
    (tmp_path / "answer.json").write_text(json.dumps(answer))
    result = run_cli(
        "validate", tmp_path / "answer.json", "-m", "ga_report", "--rejects", tmp_path / "r.ndjson", "--out",
        tmp_path / "out.ndjson",
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    urls = Counter(json.loads(line)["payload"]["url"] for line in (tmp_path / "out.ndjson").read_text().splitlines())
    assert urls == {"/": 3, "/(other)": 2}
    assert "days: 2024-03-01..2024-03-02" in result.stdout  # the undated answer's days, as a range


# --------------------------------------------------------------------------- Matomo


def matomo_site() -> dict[str, Any]:
    return {
        "idsite": "1",
        "name": "Bakery demo",
        "main_url": make_matomo_samples.SITE,
        "ts_created": "2024-03-10 08:00:00",
        "timezone": "Europe/Berlin",
        "currency": "EUR",
    }


@pytest.fixture
def matomo():
    visits = [make_matomo_samples.live_visit(v) for v in make_matomo_samples.build_visits()]
    with FakeMatomo(visits, token=MATOMO_TOKEN, site=matomo_site(), offset_s=make_matomo_samples.SITE_OFFSET) as fake:
        yield fake


def matomo_args(matomo: FakeMatomo, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"matomo-api:{matomo.url}/?idSite=1",
        "-m",
        "matomo-live",
        "--until",
        "2024-03-14",
        "--pull-dir",
        str(tmp_path / "pulls"),
        "--page-size",
        "5",
        *extra,
    ]


def test_matomo_pull_gives_the_rows_of_saved_live_pages(matomo: FakeMatomo, tmp_path: Path) -> None:
    """The same visits pulled through the API (pages shifting, a 502) and read from saved pages:
    the same payloads; the token travels in POST bodies only and is stored nowhere."""
    last = matomo.visits[-1]
    late = copy.deepcopy(last) | {"idVisit": 99_999, "lastActionTimestamp": last["lastActionTimestamp"] + 60}
    matomo.quirks.arrive_after_first_page[matomo.local_day(last)] = late
    matomo.quirks.fail_once = [502]
    env = {"MATOMO_TOKEN_AUTH": MATOMO_TOKEN}
    pulled = run_cli(
        "validate", *matomo_args(matomo, tmp_path), "--rejects", tmp_path / "a.ndjson",
        "--out", tmp_path / "api.ndjson", "--report", tmp_path / "api.json", env=env,
    )  # fmt: skip
    assert pulled.code == 0, pulled.stdout + pulled.stderr
    saved = run_cli(
        "validate", SAMPLES / "matomo" / "live", "-m", "matomo-live", "--until", "2024-03-14", "--rejects",
        tmp_path / "b.ndjson", "--out", tmp_path / "files.ndjson", "--report", tmp_path / "files.json",
    )  # fmt: skip
    assert saved.code == 0, saved.stdout + saved.stderr
    assert sorted((tmp_path / "api.ndjson").read_text().splitlines()) == sorted(
        (tmp_path / "files.ndjson").read_text().splitlines()
    )
    api_report = json.loads((tmp_path / "api.json").read_text())
    assert api_report["ledger"] == json.loads((tmp_path / "files.json").read_text())["ledger"]
    assert any("came twice while paging" in n for n in api_report["notes"])
    assert all(r["path"].startswith("/index.php?module=API") for r in matomo.requests)
    assert not any("token" in r["path"].lower() for r in matomo.requests)  # the token is in no URL
    days = {r["form"]["date"] for r in matomo.requests if r["form"]["method"] == "Live.getLastVisitsDetails"}
    assert min(days) == "2024-03-10"  # --since defaults to the site's creation day
    assert_no_secret(tmp_path, [pulled.stdout, pulled.stderr], [MATOMO_TOKEN])


def test_matomo_purged_days_refused_token_and_resume_by_page(matomo: FakeMatomo, tmp_path: Path) -> None:
    """A day whose raw log is gone is named with its visits; a token that stops working stops
    the pull with Matomo's message; the same command continues at the page it stood at, after
    a timeout too."""
    matomo.quirks.purged = {"2024-03-11"}
    matomo.quirks.token_calls = 5
    (tmp_path / "token.txt").write_text(MATOMO_TOKEN + "\n")
    args = ["import", *matomo_args(matomo, tmp_path), "--matomo-token-file", tmp_path / "token.txt"]
    args += ["--rejects", tmp_path / "r.ndjson", "--report", tmp_path / "report.json", "--timeout", "0.5"]
    first = run_cli(*args)
    assert first.code == 2, first.stdout + first.stderr
    assert "Matomo refused Live.getLastVisitsDetails for site 1: Unable to authenticate" in first.stderr
    assert "Auth tokens" in first.stderr and "days are pulled" in first.stderr
    asked = len(matomo.requests)
    matomo.quirks.token_calls = None
    matomo.quirks.slow_once = 1.0
    second = run_cli(*args)
    assert second.code == 0, second.stdout + second.stderr
    live = [r["form"] for r in matomo.requests[asked:] if r["form"]["method"] == "Live.getLastVisitsDetails"]
    assert live[0]["date"] == "2024-03-10" and int(live[0]["filter_offset"]) > 0  # where it stood
    assert any(int(f["filter_limit"]) < 5 for f in live)  # a smaller page after the timeout
    notes = "\n".join(json.loads((tmp_path / "report.json").read_text())["notes"])
    purged = sum(1 for v in matomo.visits if matomo.local_day(v) == "2024-03-11")
    assert f"the visit log of 1 day(s) is empty while its reports count {purged} visits" in notes
    assert "2024-03-11" in notes and "backfill import 'matomo-reports:" in notes  # and how to get its reports
    assert_no_secret(tmp_path, [first.stdout, first.stderr, second.stdout, second.stderr], [MATOMO_TOKEN])


def test_api_sources_refuse_a_mapping_for_another_reader(tmp_path: Path) -> None:
    result = run_cli("validate", "ga4-api:123", "--since", "2024-01-01", "-m", "matomo-live", cwd=tmp_path)
    assert result.code == 2
    assert "use -m ga_report" in result.stderr
    assert not (tmp_path / ".backfill-pulls").exists()  # refused before anything was pulled


def test_matomo_days_without_a_visit_log_come_from_its_reports(matomo: FakeMatomo, tmp_path: Path) -> None:
    """matomo-reports: only the purged day is synthesized, and Umami shows Matomo's figures for it."""
    from tests.fake_matomo import REPORTS, _visits_summary

    matomo.quirks.purged = {"2024-03-11"}
    (tmp_path / "token.txt").write_text(MATOMO_TOKEN)
    with FakeUmami() as umami:
        site = umami.add_website()
        result = import_into(
            umami.url, site, f"matomo-reports:{matomo.url}/?idSite=1", "ga_report", tmp_path,
            "--since", "2024-03-10", "--until", "2024-03-13", "--pull-dir", tmp_path / "pulls",
            "--matomo-token-file", tmp_path / "token.txt",
        )  # fmt: skip
        assert result.code == 0, result.stdout + result.stderr
        days = per_day(umami, site)
    visits = [v for v in matomo.visits if matomo.local_day(v) == "2024-03-11"]
    summary, actions = _visits_summary(visits), REPORTS["Actions.get"](visits)
    assert list(days) == ["2024-03-11"]
    got = days["2024-03-11"]
    assert (got["visitors"], got["visits"], got["pageviews"], got["bounces"]) == (
        summary["nb_uniq_visitors"], summary["nb_visits"], actions["nb_pageviews"], summary["bounce_count"],
    )  # fmt: skip
    countries = Counter(v["countryCode"].upper() for v in {v["visitorId"]: v for v in visits}.values())
    assert got["countries"] == {c: n for c, n in countries.items() if c != "XX"}
    notes = "\n".join(json.loads((tmp_path / "report.json").read_text())["notes"])
    assert "still have their visit log were left out" in notes and "2024-03-10, 2024-03-12" in notes
    assert_no_secret(tmp_path, [result.stdout, result.stderr], [MATOMO_TOKEN])
