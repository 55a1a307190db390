"""Umami's authenticated API, for checks and read-back (never for sending events).

Credentials come from the environment only (UMAMI_API_KEY for Umami Cloud, or
UMAMI_USERNAME + UMAMI_PASSWORD for a self-hosted login) and live in memory:
they are never printed, logged, or written to reports and checkpoints.

Where the API lives: a self-hosted Umami serves it under ``{host}/api``. Umami
Cloud collects at ``https://cloud.umami.is`` but serves its API at
``https://api.umami.is/v1`` (the same routes, without ``/api``), authenticated
with the ``x-umami-api-key`` header and limited to 50 calls every 15 seconds
per key (umami.is docs, "Cloud / API key"). ``--api-url`` (or
``UMAMI_API_CLIENT_ENDPOINT``, the name Umami's API client reads) sets it.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError, TerminalSendError
from ..throttle import RateLimiter, retry_after_seconds

ENV_API_KEY = "UMAMI_API_KEY"
ENV_USERNAME = "UMAMI_USERNAME"
ENV_PASSWORD = "UMAMI_PASSWORD"
ENV_API_URL = "UMAMI_API_CLIENT_ENDPOINT"
#: Umami Cloud's API, for websites collected at ``cloud.umami.is`` (or a regional ``*.umami.is``).
CLOUD_API_URL = "https://api.umami.is/v1"
#: Umami Cloud allows each API key 50 calls every 15 seconds.
CLOUD_API_CALLS_PER_SECOND = 50 / 15
#: Attempts of one read answered 429, 502 or 503 (each after its Retry-After, or a backoff).
READ_ATTEMPTS = 6
#: Longest wait between two attempts of one read (seconds).
MAX_READ_BACKOFF = 30.0

#: Umami's own check of a website id (zod's ``uuid()``): RFC 4122 layout, version
#: nibble 1-8, variant 8-b, or the nil / max UUID. Any other 8-4-4-4-12 hex string
#: is answered ``400 website: Invalid UUID`` for every element sent.
_UMAMI_UUID = re.compile(
    r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)\Z"
)
_HEX_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


class RunRefusedError(TerminalSendError):
    """Umami refused the run because of a value every row shares (website, User-Agent,
    host): nothing was stored and no row is rejected; the same command cannot succeed,
    a corrected one can (the rows stay "not sent yet")."""


def website_id_problem(website: str) -> str | None:
    """Why Umami would refuse ``website`` as an id, or None when it passes Umami's check."""
    if _UMAMI_UUID.match(website):
        return None
    where = "(--website / UMAMI_WEBSITE_ID)"
    if not _HEX_UUID.match(website):
        return f"website id {website!r} is not a UUID: copy it from Umami's website settings {where}"
    return (
        f"website id {website!r} is not an id Umami accepts: Umami checks ids as RFC 4122 UUIDs"
        f" (the first digit of the third group 1-8, of the fourth group 8, 9, a or b) and would"
        f" refuse every row with 'website: Invalid UUID'; a digit is probably mistyped: copy the"
        f" id from Umami's website settings {where}"
    )


def read_api_url(host: str, api_url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The base URL of Umami's read API (no trailing slash): ``api_url``, else
    ``UMAMI_API_CLIENT_ENDPOINT``, else Umami Cloud's API for a ``*.umami.is`` host, else ``{host}/api``."""
    env = os.environ if env is None else env
    chosen = api_url or env.get(ENV_API_URL)
    if chosen:
        if not chosen.startswith(("http://", "https://")):
            raise ConfigError(f"--api-url {chosen!r} must start with http:// or https://")
        return chosen.rstrip("/")
    if is_umami_cloud(host):
        return CLOUD_API_URL
    return f"{host.rstrip('/')}/api"


def is_umami_cloud(url: str) -> bool:
    """Whether ``url`` is one of Umami Cloud's hosts (``cloud.umami.is``, ``api.umami.is``, ...)."""
    host = urlsplit(url).hostname or ""
    return host == "umami.is" or host.endswith(".umami.is")


def visible_since(api: str, now: float | None = None) -> int | None:
    """The oldest time (unix seconds) the read API at ``api`` may show, or None (no limit).

    Umami Cloud shows an account without a subscription the data from the start of
    the month six months back only (Umami's ``setWebsiteDate`` in CLOUD_MODE); whether
    the account has one cannot be read, so older data counts as not visible.
    """
    if not is_umami_cloud(api):
        return None
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    months = today.year * 12 + today.month - 1 - 6
    return int(datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC).timestamp())


def have_credentials(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get(ENV_API_KEY) or (env.get(ENV_USERNAME) and env.get(ENV_PASSWORD)))


def auth_headers(client: httpx.Client, api: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers that authenticate read requests to the API at ``api`` (see :func:`read_api_url`);
    logs in when a username is given."""
    env = os.environ if env is None else env
    if env.get(ENV_API_KEY):
        return {"x-umami-api-key": env[ENV_API_KEY]}
    if is_umami_cloud(api):
        raise ConfigError(f"Umami Cloud's API takes an API key only: set {ENV_API_KEY} (Settings > API keys)")
    username, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if not (username and password):
        raise ConfigError(
            f"reading from Umami needs credentials: set {ENV_API_KEY} (Umami Cloud) or "
            f"{ENV_USERNAME} and {ENV_PASSWORD} (self-hosted)"
        )
    url = f"{api}/auth/login"
    try:
        response = client.post(url, json={"username": username, "password": password})
    except httpx.HTTPError as exc:
        raise TerminalSendError(f"cannot log in at {url}: {type(exc).__name__}") from None
    if response.status_code in (401, 403):
        raise TerminalSendError(f"{url} refused the login: check {ENV_USERNAME} / {ENV_PASSWORD}")
    if response.status_code != 200:
        raise TerminalSendError(f"{url} answered HTTP {response.status_code} to the login")
    token = response.json().get("token")
    if not token:
        raise TerminalSendError(f"{url} answered without a token")
    return {"Authorization": f"Bearer {token}"}


def check_website(client: httpx.Client, api: str, website: str, env: Mapping[str, str] | None = None) -> str:
    """The website's name and domain, or a TerminalSendError saying what to fix."""
    headers = auth_headers(client, api, env)
    url = f"{api}/websites/{website}"
    try:
        response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise TerminalSendError(f"cannot read {url}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise TerminalSendError(f"website {website} does not exist on {api}: check --website / UMAMI_WEBSITE_ID")
    if response.status_code in (401, 403):
        raise TerminalSendError(f"{url} answered {response.status_code}: these credentials may not read this website")
    if response.status_code != 200:
        raise TerminalSendError(f"{url} answered HTTP {response.status_code}")
    body = response.json()
    return f"{body.get('name', '?')} ({body.get('domain', '?')})"


class ReadTimeUp(Exception):
    """The read's deadline passed before Umami answered."""


class ReadApi:
    """GETs under Umami's read API, shared by ``verify`` and the read-back of rows in doubt.

    Paced to Umami Cloud's documented limit when the API is Cloud's; an answer
    429, 502 or 503 is tried again after its ``Retry-After`` (or a backoff); an
    optional ``deadline`` (a :func:`time.monotonic` instant) bounds every wait
    and request, after which :class:`ReadTimeUp` is raised. Other answers are
    returned as they are: what a status means is the caller's to say.
    """

    def __init__(
        self,
        client: httpx.Client,
        base: str,
        headers: Mapping[str, str],
        *,
        calls_per_second: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self.client = client
        self.base = base.rstrip("/")
        self.headers = dict(headers)
        if calls_per_second is None and is_umami_cloud(self.base):
            calls_per_second = CLOUD_API_CALLS_PER_SECOND
        self.pace = RateLimiter(calls_per_second, burst=5.0) if calls_per_second else None
        self.deadline = deadline
        self.waited_s = 0.0  # time spent waiting on Retry-After and the pace

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """``GET {base}{path}``; raises :class:`httpx.HTTPError` or :class:`ReadTimeUp`."""
        url = self.base + path
        for attempt in range(1, READ_ATTEMPTS + 1):
            if self.pace is not None:
                self._sleep(self.pace.reserve(1))
            try:
                response = self.client.get(url, params=params, headers=self.headers, timeout=self._timeout())
            except httpx.TimeoutException:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise ReadTimeUp from None  # cut short by the deadline, not by the server
                raise
            if response.status_code not in (429, 502, 503) or attempt == READ_ATTEMPTS:
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"), MAX_READ_BACKOFF * 10)
            self._sleep(wait if wait is not None else min(MAX_READ_BACKOFF, 2.0**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _timeout(self) -> httpx.Timeout:
        timeout = self.client.timeout
        if self.deadline is None:
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ReadTimeUp
        read = min(timeout.read or left, left)
        return httpx.Timeout(read, connect=min(timeout.connect or left, left))

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.deadline is not None and time.monotonic() + seconds > self.deadline:
            raise ReadTimeUp
        self.waited_s += seconds
        time.sleep(seconds)
