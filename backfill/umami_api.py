"""Umami's authenticated API, for checks and read-back (never for sending events).

Credentials come from the environment only (UMAMI_API_KEY for Umami Cloud, or
UMAMI_USERNAME + UMAMI_PASSWORD for a self-hosted login) and live in memory:
they are never printed, logged, or written to reports and checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import httpx

from .errors import ConfigError, TerminalSendError

ENV_API_KEY = "UMAMI_API_KEY"
ENV_USERNAME = "UMAMI_USERNAME"
ENV_PASSWORD = "UMAMI_PASSWORD"


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
