"""How to reach Umami and how hard to push it: the settings, the HTTP client, the checks before the first row."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from ...errors import ConfigError, TerminalSendError
from ...throttle import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_CONCURRENCY_ONE_PER_REQUEST
from ...umami.api import read_api_url, website_id_problem

MAX_BATCH_SIZE = 500
#: ``--endpoint``: ``auto`` sends to ``/api/batch`` and falls back to ``/api/send`` when the
#: server has no batch endpoint; ``batch`` and ``send`` force one.
ENDPOINTS = ("auto", "batch", "send")
#: What a server without ``/api/batch`` answers to the first request: 404 (Umami before 2.17,
#: or a proxy that routes only ``/api/send``), 405 (Umami Cloud), 501 (some proxies).
NO_BATCH_ENDPOINT = frozenset({404, 405, 501})
#: Node's default keep-alive timeout is 5 s: reusing a connection idle for longer races the
#: server closing it, which would turn a harmless retry into a batch in doubt.
KEEPALIVE_EXPIRY = 2.0


@dataclass(frozen=True)
class SendSettings:
    """How to reach Umami and how hard to push it."""

    host: str
    website: str
    user_agent: str
    batch_size: int = 200
    max_body_bytes: int = 1_048_576
    concurrency: int | None = None
    rate: float | None = None
    max_attempts: int = 6
    timeout: float = 60.0
    insecure: bool = False
    on_error: str = "stop"
    resend_in_doubt: bool = False
    lanes: int = 64
    backoff_base: float = 1.0
    endpoint: str = "auto"
    api_url: str | None = None  # the read API's base (Umami Cloud); default {host}/api
    read_back_timeout: float = 300.0  # seconds the read-back of rows in doubt may take at most

    def __post_init__(self) -> None:
        if not self.host.startswith(("http://", "https://")):
            raise ConfigError(f"--host {self.host!r} must start with http:// or https://")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}")
        if self.max_body_bytes < 256:
            raise ConfigError("--max-body-bytes must be at least 256")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("--rate must be positive")
        if self.max_attempts < 1:
            raise ConfigError("--max-attempts must be at least 1")
        if self.on_error not in ("stop", "reject"):
            raise ConfigError("--on-error must be 'stop' or 'reject'")
        if self.lanes < 1:
            raise ConfigError("lanes must be at least 1")
        if self.read_back_timeout <= 0:
            raise ConfigError("--read-back-timeout must be positive")
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(f"--endpoint must be one of {', '.join(ENDPOINTS)}")

    @property
    def base_url(self) -> str:
        return self.host.rstrip("/")

    @property
    def batch_url(self) -> str:
        return f"{self.base_url}/api/batch"

    @property
    def read_api(self) -> str:
        """The base URL of Umami's read API (see :func:`~backfill.umami.api.read_api_url`)."""
        return read_api_url(self.base_url, self.api_url)

    @property
    def send_url(self) -> str:
        return f"{self.base_url}/api/send"

    def url_for(self, endpoint: str) -> str:
        """The collection URL of ``endpoint`` (``batch`` or ``send``)."""
        return self.send_url if endpoint == "send" else self.batch_url

    @property
    def workers(self) -> int:
        """Threads in the pool: the most requests that may ever be in flight."""
        return self.most_in_flight(self.endpoint)  # auto may go over to /api/send

    def most_in_flight(self, endpoint: str) -> int:
        """The adaptive limit's ceiling on ``endpoint`` (``batch`` or ``send``)."""
        if self.concurrency is not None:
            return self.concurrency
        return DEFAULT_MAX_CONCURRENCY if endpoint == "batch" else DEFAULT_MAX_CONCURRENCY_ONE_PER_REQUEST


def make_client(settings: SendSettings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A keep-alive client sized to the worker pool; never sends ``x-umami-cache``."""
    pool = settings.workers + 1
    return httpx.Client(
        headers={"User-Agent": settings.user_agent, "Content-Type": "application/json"},
        verify=not settings.insecure,
        timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=KEEPALIVE_EXPIRY),
        follow_redirects=False,
        transport=transport,
    )


def preflight(settings: SendSettings, client: httpx.Client | None = None) -> None:
    """Check what can be checked before the first row is sent.

    Without ``client``, one is made from ``settings`` (and closed) for the check.

    Raises:
        ConfigError: the website id is not one Umami accepts (checked exactly as Umami
            checks it), or Umami would drop the User-Agent as a bot.
        TerminalSendError: ``/api/heartbeat`` does not answer 2xx (wrong host, server down).
    """
    problem = website_id_problem(settings.website)
    if problem:
        raise ConfigError(problem)
    from ...umami.bots import is_bot  # imported here: only a real send needs the pattern list

    if is_bot(settings.user_agent):
        raise ConfigError(
            f"the User-Agent {settings.user_agent!r} matches Umami's bot filter (isbot):"
            " Umami would answer 200 and store nothing; pass another --user-agent"
        )
    url = f"{settings.base_url}/api/heartbeat"
    try:
        if client is None:
            with make_client(settings) as own:
                response = own.get(url)
        else:
            response = client.get(url)
    except httpx.HTTPError as exc:
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            hint = " (the TLS certificate is not trusted: fix it, or pass --insecure)"
        raise TerminalSendError(
            f"cannot reach Umami at {url}: {exc}{hint}; check --host and that the server is up"
        ) from exc
    if not 200 <= response.status_code < 300:
        raise TerminalSendError(
            f"{url} answered HTTP {response.status_code}: the host is wrong or Umami is down (check --host)"
        )
