"""ClickHouse's HTTP interface, the part an import uses: queries and Arrow inserts over httpx.

No ClickHouse client library: every row we insert is already a polars frame, and
polars writes it as an Arrow IPC stream (LZ4-compressed) in native code, which
ClickHouse reads as ``FORMAT ArrowStream``; what is left is one POST per
statement. Queries name their output format (``JSONEachRow`` for small answers,
``ArrowStream`` read back by polars for id lists), values travel as ``param_``
query parameters (never spliced into SQL), credentials as HTTP Basic auth (never
in the URL we print, the checkpoint or a message). Errors carry ClickHouse's
``X-ClickHouse-Exception-Code`` and the first line of its message.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import polars as pl

from ...config import DEFAULT_USER_AGENT
from ...errors import ConfigError

DEFAULT_PORTS = {"http": 8123, "https": 8443}


class ClickHouseError(Exception):
    """ClickHouse answered with an exception (``code`` is its error code, 0 if none was sent)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where ClickHouse listens, from a URL like Umami's ``CLICKHOUSE_URL``
    (``http[s]://user:password@host:8123/database``)."""

    base: str
    database: str
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ConfigError(
                f"--clickhouse-url must be an http:// or https:// URL of ClickHouse's HTTP interface (Umami's "
                f"CLICKHOUSE_URL, e.g. http://user:password@localhost:8123/umami), not a {parts.scheme or 'plain'} one"
            )
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ConfigError(f"--clickhouse-url has a port that is not a number ({exc})") from None
        host = parts.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        database = unquote(parts.path.strip("/")) or "default"
        return cls(
            base=f"{parts.scheme}://{host}:{port}",
            database=database,
            user=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
        )

    @property
    def redacted(self) -> str:
        """scheme://host:port/database, for messages and the checkpoint; never the user or password."""
        return f"{self.base}/{self.database}"


class ClickHouse:
    """One ClickHouse server and database, over HTTP."""

    def __init__(self, endpoint: Endpoint, timeout: float = 300.0, insecure: bool = False, arrow: bool = True) -> None:
        self.endpoint = endpoint
        self.arrow = arrow
        self.client = httpx.Client(
            base_url=endpoint.base,
            auth=(endpoint.user, endpoint.password),
            headers={"User-Agent": DEFAULT_USER_AGENT},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            verify=not insecure,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, sql: str, body: bytes | None, params: dict[str, Any] | None, settings: dict[str, Any]) -> bytes:
        query: dict[str, Any] = {"database": self.endpoint.database, **settings}
        for name, value in (params or {}).items():
            query[f"param_{name}"] = value
        headers: dict[str, str] = {}
        content: bytes | Iterator[memoryview]
        if body is None:
            content = sql.encode()
        else:
            query["query"] = sql
            content, headers = _pieces(body), {"Content-Length": str(len(body))}
        try:
            response = self.client.post("/", params=query, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise ClickHouseError(0, f"cannot reach ClickHouse at {self.endpoint.redacted}: {exc}") from None
        if response.status_code != 200 or "X-ClickHouse-Exception-Code" in response.headers:
            code = int(response.headers.get("X-ClickHouse-Exception-Code") or 0)
            text = response.text.strip().splitlines()
            raise ClickHouseError(code, text[0] if text else f"HTTP {response.status_code}")
        return response.content

    def rows(self, sql: str, params: dict[str, Any] | None = None, **settings: Any) -> list[dict[str, Any]]:
        """A small answer as dicts (``JSONEachRow``)."""
        raw = self._post(f"{sql}\nFORMAT JSONEachRow", None, params, settings)
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def frame(self, sql: str, params: dict[str, Any] | None = None, **settings: Any) -> pl.DataFrame:
        """A large answer as a polars frame (``ArrowStream``)."""
        settings = {"output_format_arrow_string_as_string": 1, **settings}
        raw = self._post(f"{sql}\nFORMAT ArrowStream", None, params, settings)
        return pl.read_ipc_stream(io.BytesIO(raw)) if raw else pl.DataFrame()

    def encode(self, frame: pl.DataFrame) -> bytes:
        return encode(frame, self.arrow)

    def insert(self, table: str, frame: pl.DataFrame, body: bytes | None = None, **settings: Any) -> None:
        """Insert a frame whose columns are named as the table's, as one block (its views
        see all rows at once); ``body`` is :meth:`encode` of it when already made."""
        if frame.height == 0:
            return
        columns = ", ".join(f"`{c}`" for c in frame.columns)
        fmt = "ArrowStream" if self.arrow else "CSV"
        if not self.arrow:
            settings = {"input_format_csv_empty_as_default": 0, "format_csv_allow_single_quotes": 0, **settings}
        body = body if body is not None else self.encode(frame)
        self._post(f"INSERT INTO `{table}` ({columns}) FORMAT {fmt}", body, None, settings)

    def takes_arrow(self) -> bool:
        """Whether the server reads a binary Arrow body: an insert of one row into the ``null``
        table function, which stores nothing. A front that reads bodies as text cannot."""
        frame = pl.DataFrame({"probe": [1]}, schema={"probe": pl.UInt8()})
        try:
            self._post("INSERT INTO FUNCTION null('probe UInt8') FORMAT ArrowStream", arrow_stream(frame), None, {})
        except ClickHouseError:
            return False
        return True

    def ping(self) -> None:
        try:
            response = self.client.get("/ping")
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach ClickHouse at {self.endpoint.redacted} ({exc})") from None
        if response.status_code != 200:
            raise ConfigError(f"{self.endpoint.redacted}/ping answered HTTP {response.status_code}: not ClickHouse?")


def encode(frame: pl.DataFrame, arrow: bool) -> bytes:
    """An insert's body: one Arrow stream of one record batch, or CSV text for a server
    that takes no binary body (:meth:`ClickHouse.takes_arrow`)."""
    return arrow_stream(frame) if arrow else csv_text(frame)


#: An insert body goes to the socket in pieces of this size: handed whole, the HTTP
#: stack re-copies the unsent rest after every partial send (quadratic in its size).
PIECE_BYTES = 1 << 20


def _pieces(body: bytes) -> Iterator[memoryview]:
    view = memoryview(body)
    for start in range(0, len(body), PIECE_BYTES):
        yield view[start : start + PIECE_BYTES]


def arrow_stream(frame: pl.DataFrame) -> bytes:
    """One Arrow IPC stream of one record batch, LZ4-compressed, in the oldest Arrow layout
    (plain strings, no views) that every ClickHouse release reads."""
    buffer = io.BytesIO()
    frame.rechunk().write_ipc_stream(buffer, compression="lz4", compat_level=pl.CompatLevel.oldest())
    return buffer.getvalue()


def csv_text(frame: pl.DataFrame) -> bytes:
    """CSV as ClickHouse reads it: every text quoted (so ``""`` is an empty string and an
    unquoted ``\\N`` is NULL), times as ``YYYY-MM-DD hh:mm:ss``."""
    buffer = io.BytesIO()
    frame.write_csv(
        buffer,
        include_header=False,
        quote_style="non_numeric",
        null_value="\\N",
        datetime_format="%Y-%m-%d %H:%M:%S",
    )
    return buffer.getvalue()
