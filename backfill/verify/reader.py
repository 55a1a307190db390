"""The found side: what Umami shows, read through its authenticated API."""

from __future__ import annotations

import datetime as dt
import threading
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx

from ..config import DEFAULT_USER_AGENT
from ..errors import ConfigError, TerminalSendError
from ..umami.api import ReadApi, auth_headers, read_api_url

#: Values asked for per /metrics list (Umami's own default is 500).
METRICS_LIMIT = 1000
#: /stats requests in flight.
STATS_WORKERS = 4


class ReadError(ConfigError):
    """Umami could not be read (connection, credentials, website): exit status 2."""


class EndpointMissing(ReadError):
    """The server has no such read endpoint (an older or newer Umami)."""


class UmamiReader:
    """Umami's read API for one website; credentials stay in this object's headers."""

    def __init__(
        self,
        host: str,
        website: str,
        *,
        api_url: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.website = website
        self.requests = 0
        self._lock = threading.Lock()
        api = read_api_url(self.host, api_url, env)
        self.client = httpx.Client(
            headers={"User-Agent": DEFAULT_USER_AGENT},
            verify=not insecure,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=STATS_WORKERS + 1, max_keepalive_connections=STATS_WORKERS + 1),
            transport=transport,
        )
        try:
            self.api = ReadApi(self.client, api, auth_headers(self.client, api, env))
        except TerminalSendError as exc:
            self.client.close()
            raise ReadError(str(exc)) from None
        except BaseException:
            self.client.close()
            raise

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> UmamiReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = f"{self.api.base}/websites/{self.website}{path}"
        with self._lock:
            self.requests += 1
        try:
            response = self.api.get(f"/websites/{self.website}{path}", params)
        except httpx.HTTPError as exc:
            raise ReadError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise ReadError(f"{url} answered {response.status_code}: these credentials may not read this website")
        if response.status_code == 404:
            if not path:
                raise ReadError(f"website {self.website} does not exist on {self.host}: check --website")
            raise EndpointMissing(f"{url} answered 404: this Umami has no such endpoint")
        if response.status_code != 200:
            raise ReadError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise ReadError(f"{url} did not answer JSON (is --host Umami itself?)") from None

    def website_info(self) -> dict[str, Any]:
        return self.get("")

    def stats(self, start_ms: int, end_ms: int) -> dict[str, int]:
        body = self.get("/stats", {"startAt": start_ms, "endAt": end_ms})
        return {k: _stat_value(body.get(k)) for k in ("pageviews", "visitors", "visits", "bounces", "totaltime")}

    def pageview_days(self, start_ms: int, end_ms: int, timezone: str) -> dict[dt.date, tuple[int, int]]:
        params = {"startAt": start_ms, "endAt": end_ms, "unit": "day", "timezone": timezone}
        body = self.get("/pageviews", params)
        out: dict[dt.date, list[int]] = {}
        for key, index in (("pageviews", 0), ("sessions", 1)):
            for point in body.get(key) or []:
                day = _bucket_day(point.get("x"), timezone)
                out.setdefault(day, [0, 0])[index] += int(point.get("y") or 0)
        return {d: (v[0], v[1]) for d, v in out.items()}

    def event_days(self, start_ms: int, end_ms: int, timezone: str) -> dict[dt.date, Counter[str]]:
        params = {"startAt": start_ms, "endAt": end_ms, "unit": "day", "timezone": timezone}
        out: dict[dt.date, Counter[str]] = {}
        for point in self.get("/events/series", params) or []:
            day = _bucket_day(point.get("t"), timezone)
            out.setdefault(day, Counter())[str(point.get("x"))] += int(point.get("y") or 0)
        return out

    def store(self, now_ms: int) -> str | None:
        """Which database the server keeps its data in, told by how it labels time buckets:
        on PostgreSQL a local time (``2024-03-01 00:00:00``), on ClickHouse the bucket's start
        as a UTC instant (``2024-02-29T23:00:00Z``). None when the website has no pageview."""
        # Any zone but "utc" (which PostgreSQL labels as an instant too): Etc/UTC.
        body = self.get("/pageviews", {"startAt": 0, "endAt": now_ms, "unit": "year", "timezone": "Etc/UTC"})
        for point in body.get("pageviews") or []:
            label = str(point.get("x"))
            return "clickhouse" if label.endswith("Z") else "postgres"
        return None

    def metrics(self, kind: str, start_ms: int, end_ms: int, limit: int = METRICS_LIMIT) -> list[tuple[Any, int]]:
        params = {"startAt": start_ms, "endAt": end_ms, "type": kind, "limit": limit}
        return [(row.get("x") or None, int(row.get("y") or 0)) for row in self.get("/metrics", params) or []]


def _stat_value(value: Any) -> int:
    """Umami 3 answers numbers; Umami 2 answered ``{"value": n, "prev": m}``."""
    if isinstance(value, dict):
        value = value.get("value")
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _bucket_day(label: Any, timezone: str) -> dt.date:
    """A day bucket's date: ``2024-03-01 00:00:00`` (a local time: Umami on PostgreSQL) or
    ``2024-02-29T23:00:00Z`` (the local day's start as a UTC instant: Umami on ClickHouse)."""
    text = str(label)
    try:
        if text.endswith("Z"):
            instant = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return instant.astimezone(zoneinfo.ZoneInfo(timezone)).date()
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ReadError(f"Umami answered a day bucket {text!r} that is not a date") from None
