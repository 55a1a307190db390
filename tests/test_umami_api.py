"""Authenticated read API: login or API key, website check; credentials never leak."""

from __future__ import annotations

import httpx
import pytest

from backfill.errors import ConfigError, TerminalSendError
from backfill.umami.api import check_website
from tests.conftest import SAMPLES, run_cli
from tests.fake_umami import DEFAULT_PASSWORD, DEFAULT_USERNAME, FakeUmami

LOGIN = {"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": DEFAULT_PASSWORD}


def test_login_and_check_website() -> None:
    with FakeUmami() as server, httpx.Client() as client:
        site = server.add_website()
        assert check_website(client, server.url + "/api", site, LOGIN)
        with pytest.raises(TerminalSendError, match="does not exist"):
            check_website(client, server.url + "/api", "6f0c6c7e-4f0e-4e2a-9f59-1b1d7c5e2a11", LOGIN)
        with pytest.raises(TerminalSendError, match="refused the login"):
            check_website(client, server.url + "/api", site, {**LOGIN, "UMAMI_PASSWORD": "wrong"})
        with pytest.raises(ConfigError, match="needs credentials"):
            check_website(client, server.url + "/api", site, {})


def test_api_key() -> None:
    with FakeUmami(api_key="k-123") as server, httpx.Client() as client:
        site = server.add_website()
        assert check_website(client, server.url + "/api", site, {"UMAMI_API_KEY": "k-123"})
        with pytest.raises(TerminalSendError, match="401"):
            check_website(client, server.url + "/api", site, {"UMAMI_API_KEY": "nope"})


def test_cli_check_website_keeps_password_out_of_output_and_state(tmp_path) -> None:
    secret = "s3cret-pass-word"
    with FakeUmami(password=secret) as server:
        site = server.add_website()
        report = tmp_path / "report.json"
        result = run_cli(
            "import",
            SAMPLES / "api_actions.ndjson",
            "-m",
            "api_actions",
            "--host",
            server.url,
            "--website",
            site,
            "--check-website",
            "--rejects",
            tmp_path / "r.ndjson",
            "--report",
            report,
            env={"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": secret},
        )
        assert result.code in (0, 1), result.stderr
        assert server.event_count(site) > 0
        wrong = run_cli(
            "import",
            SAMPLES / "api_actions.ndjson",
            "-m",
            "api_actions",
            "--host",
            server.url,
            "--website",
            site,
            "--check-website",
            "--rejects",
            tmp_path / "w" / "r.ndjson",
            env={"UMAMI_USERNAME": DEFAULT_USERNAME, "UMAMI_PASSWORD": "bad-" + secret},
        )
        assert wrong.code == 3 and "refused the login" in wrong.stderr
    written = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in [result.stdout, result.stderr, wrong.stdout, wrong.stderr, *written]:
        assert secret not in text


def test_the_read_api_of_umami_cloud_is_its_own_host() -> None:
    from backfill.umami.api import read_api_url, visible_since

    assert read_api_url("https://cloud.umami.is", env={}) == "https://api.umami.is/v1"
    assert read_api_url("https://umami.example.com/", env={}) == "https://umami.example.com/api"
    assert read_api_url("https://cloud.umami.is", "https://eu.example/v1/", env={}) == "https://eu.example/v1"
    assert read_api_url("https://x.example", env={"UMAMI_API_CLIENT_ENDPOINT": "https://api.umami.is/v1"}) == (
        "https://api.umami.is/v1"
    )
    with pytest.raises(ConfigError, match="API key only"):
        check_website(httpx.Client(), "https://api.umami.is/v1", "w", LOGIN)
    # 2026-08-15: the start of the month six months back, 2026-02-01, is the oldest Cloud shows.
    assert visible_since("https://api.umami.is/v1", now=1_786_752_000) == 1_769_904_000
    assert visible_since("https://umami.example.com/api", now=1_786_752_000) is None
