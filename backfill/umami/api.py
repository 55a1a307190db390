"""Umami's authenticated API, for checks and read-back (never for sending events).

Credentials come from the environment only (UMAMI_API_KEY for Umami Cloud, or
UMAMI_USERNAME + UMAMI_PASSWORD for a self-hosted login) and live in memory:
they are never printed, logged, or written to reports and checkpoints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import httpx

from ..errors import ConfigError, TerminalSendError

ENV_API_KEY = "UMAMI_API_KEY"
ENV_USERNAME = "UMAMI_USERNAME"
ENV_PASSWORD = "UMAMI_PASSWORD"

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


def have_credentials(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get(ENV_API_KEY) or (env.get(ENV_USERNAME) and env.get(ENV_PASSWORD)))


def auth_headers(client: httpx.Client, host: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers that authenticate read requests; logs in when a username is given."""
    env = os.environ if env is None else env
    if env.get(ENV_API_KEY):
        return {"x-umami-api-key": env[ENV_API_KEY]}
    username, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if not (username and password):
        raise ConfigError(
            f"reading from Umami needs credentials: set {ENV_API_KEY} (Umami Cloud) or "
            f"{ENV_USERNAME} and {ENV_PASSWORD} (self-hosted)"
        )
    url = f"{host}/api/auth/login"
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


def check_website(client: httpx.Client, host: str, website: str, env: Mapping[str, str] | None = None) -> str:
    """The website's name and domain, or a TerminalSendError saying what to fix."""
    headers = auth_headers(client, host, env)
    url = f"{host}/api/websites/{website}"
    try:
        response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise TerminalSendError(f"cannot read {url}: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise TerminalSendError(f"website {website} does not exist on {host}: check --website / UMAMI_WEBSITE_ID")
    if response.status_code in (401, 403):
        raise TerminalSendError(f"{url} answered {response.status_code}: these credentials may not read this website")
    if response.status_code != 200:
        raise TerminalSendError(f"{url} answered HTTP {response.status_code}")
    body = response.json()
    return f"{body.get('name', '?')} ({body.get('domain', '?')})"
