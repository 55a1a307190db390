"""Google credentials, found the way Google's own client libraries find them, through google-auth.

In order: ``--google-credentials FILE``, the file named by
``GOOGLE_APPLICATION_CREDENTIALS``, then google-auth's application default
credentials (``gcloud auth application-default login``, a Compute Engine or
Cloud Run service account), then a bare access token in
``GOOGLE_OAUTH_ACCESS_TOKEN`` (``gcloud auth print-access-token``; it cannot be
refreshed). A file is a service-account key (``"type": "service_account"``, the
key signs a JWT sent to its ``token_uri``) or an authorized-user file
(``"type": "authorized_user"``: a refresh token, as gcloud and google-auth-oauthlib
write them; a ``token_uri`` in it is honoured). Other types (workload identity
federation, impersonation) go to google-auth as they are.

google-auth makes its token requests through ``HttpxRequest``, an adapter to the
same httpx client the pull uses (google-auth's own transports need requests or
urllib3). Tokens live in memory only; messages name where the credentials came
from, never what they hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from backfill.errors import ConfigError

SCOPE = "https://www.googleapis.com/auth/analytics.readonly"
ACCESS_TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"


class HttpxResponse:
    """google.auth.transport.Response over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._response.headers)

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest:
    """google.auth.transport.Request made with httpx (google-auth calls it to fetch tokens)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **_kwargs: Any,
    ) -> HttpxResponse:
        from google.auth import exceptions

        try:
            response = self._client.request(method, url, content=body, headers=headers, timeout=timeout or 60)
        except httpx.HTTPError as exc:
            raise exceptions.TransportError(f"{type(exc).__name__} calling the token endpoint") from exc
        return HttpxResponse(response)


class GoogleCredentials:
    """Access tokens for the Data API, refreshed when they expire or are refused."""

    def __init__(self, credentials: Any, origin: str, client: httpx.Client) -> None:
        self._credentials = credentials
        self.origin = origin  # where they came from, for messages
        self._request = HttpxRequest(client)

    @classmethod
    def find(cls, path: str | None, client: httpx.Client) -> GoogleCredentials:
        """The credentials of ``path``, else of the environment (see the module docstring)."""
        if path:
            return cls(_from_file(Path(path).expanduser()), f"--google-credentials {path}", client)
        env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if env:
            return cls(_from_file(Path(env).expanduser()), f"GOOGLE_APPLICATION_CREDENTIALS ({env})", client)
        import google.auth
        from google.auth import exceptions

        try:
            credentials, _project = google.auth.default(scopes=[SCOPE])
            return cls(credentials, "the application default credentials", client)
        except exceptions.DefaultCredentialsError:
            pass
        token = os.environ.get(ACCESS_TOKEN_ENV)
        if token:
            from google.oauth2.credentials import Credentials

            return cls(Credentials(token=token.strip()), ACCESS_TOKEN_ENV, client)
        raise ConfigError(
            "no Google credentials: pass --google-credentials KEY.json (a service account with Viewer "
            "access to the property), set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth "
            f"application-default login --scopes={SCOPE},https://www.googleapis.com/auth/cloud-platform`"
        )

    def headers(self) -> dict[str, str]:
        """Authorization (and quota project) headers with a valid token, fetching one if needed."""
        if not self._credentials.valid:
            self.refresh()
        headers: dict[str, str] = {}
        self._credentials.apply(headers)
        return headers

    def refresh(self) -> None:
        """A new access token (after an expiry or a 401).

        Raises:
            ConfigError: the token endpoint refused the credentials (or they cannot be refreshed).
            httpx.TransportError: the token endpoint could not be reached (retried by the caller).
        """
        from google.auth import exceptions

        try:
            self._credentials.refresh(self._request)
        except exceptions.TransportError as exc:
            raise httpx.TransportError(str(exc)) from exc
        except exceptions.RefreshError as exc:
            raise ConfigError(
                f"Google refused the credentials from {self.origin} ({_first_line(exc)}): "
                "renew them (a new key or `gcloud auth application-default login`) and run the "
                "same command again; the days pulled so far are kept"
            ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:200]


def _from_file(path: Path) -> Any:
    """Credentials from a JSON file, by its ``type``."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Google credentials ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not a Google credentials file (not JSON)") from exc
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        if kind == "authorized_user":
            from google.oauth2.credentials import Credentials

            credentials = Credentials.from_authorized_user_info(info)
            token_uri = info.get("token_uri")
            return credentials.with_token_uri(token_uri) if token_uri else credentials
        import google.auth

        return google.auth.load_credentials_from_dict(info, scopes=[SCOPE])[0]
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not usable Google credentials ({_first_line(exc)})") from exc
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError for unknown types
        raise ConfigError(f"{path}: not usable Google credentials ({_first_line(exc)})") from exc


__all__ = ["SCOPE", "GoogleCredentials", "HttpxRequest"]
