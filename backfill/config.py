"""Run settings as frozen values, built by the CLI (or a Python caller) once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .schema import DEFAULT_USER_AGENT_TEMPLATE

DEFAULT_USER_AGENT = DEFAULT_USER_AGENT_TEMPLATE.format(version=__version__)
DEFAULT_REJECTS = "backfill-rejects.ndjson"
DEFAULT_BATCH_SIZE = 200
MAX_BATCH_SIZE = 500
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class RunConfig:
    sources: tuple[str, ...]
    mapping: str
    host: str | None = None
    website: str | None = None
    dry_run: bool = True
    format: str | None = None
    delimiter: str | None = None
    encoding: str | None = None
    decimal_comma: bool = False  # --decimal-comma: as `decimal_comma: true` in the mapping's reader section
    log_format: str | None = None  # --log-format (access_log): a format name or the server's format string
    hostname: str | None = None  # --hostname (access_log): the site, for logs without a virtual host field
    search_params: str | None = None  # --search-param (access_log): query keys of the site search, "q,s"
    matomo_site: str | None = None  # --matomo-site (matomo_logs / matomo_live): the Matomo idsite to import
    w3c_fields: str | None = None  # --w3c-field (access_log): W3C fields under other names, "x-client=c-ip"
    log_timezone: str | None = None  # --log-timezone (access_log): zone of times logged without an offset
    since: int | None = None
    until: int | None = None
    limit: int | None = None
    rejects: Path = Path(DEFAULT_REJECTS)
    rejects_format: str = "ndjson"
    out: Path | None = None
    report: Path | None = None
    state_dir: Path | None = None
    restart: bool = False
    resend_in_doubt: bool = False
    endpoint: str = "auto"  # --endpoint: auto | batch | send (HTTP sink)
    api_url: str | None = None  # --api-url: Umami's read API when not {host}/api (Umami Cloud)
    read_back_timeout: float = 300.0  # --read-back-timeout: seconds for reading rows in doubt back
    user_agent: str = DEFAULT_USER_AGENT
    batch_size: int = DEFAULT_BATCH_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    concurrency: int | None = None
    rate: float | None = None
    timeout: float = 60.0
    max_attempts: int = 6
    insecure: bool = False
    on_error: str = "stop"
    check_website: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    geo: str = "auto"  # auto | ip | headers | off, see geo.py
    visits: str | None = None  # exact | hourly; None: exact when the mapping names a visit column
    shard: tuple[int, int] | None = None  # (K, N): only the visitors of shard K of N
    database_url: str | None = None  # --database-url: write Umami's tables instead of calling its API
    app_secret: str | None = None  # --app-secret: the server's APP_SECRET, for Umami's own session ids
    geoip_db: Path | None = None  # --geoip-db: the GeoLite2 City file Umami uses, for payload ips
    transaction_rows: int = 20_000  # --transaction-rows: rows per database transaction
    # pulling from an API (ga4-api:..., matomo-api:...; see backfill/pull)
    pull_dir: Path | None = None  # --pull-dir; None: .backfill-pulls next to --rejects
    google_credentials: str | None = None  # --google-credentials FILE
    ga4_endpoint: str | None = None  # --ga4-endpoint URL
    matomo_token_file: str | None = None  # --matomo-token-file FILE (else MATOMO_TOKEN_AUTH)
    page_size: int | None = None  # --page-size: rows / visits per API request
    quota_wait: float = 3600.0  # --quota-wait: seconds to wait for an hourly API quota
    clickhouse_url: str | None = None  # --clickhouse-url: write Umami's ClickHouse tables (Umami's CLICKHOUSE_URL)
    insert_rows: int = 100_000  # --insert-rows: rows per ClickHouse insert
    parallel_inserts: int = 2  # --parallel-inserts: ClickHouse inserts in flight at once
    skip_website_check: bool = False  # --skip-website-check: ClickHouse without Umami's PostgreSQL to check in
    store: str = "postgres"  # --store: whose limits rows are checked against (backfill/umami/limits.py)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def in_doubt_path(self) -> Path:
        """Next to the rejects file, so both lists of rows are found together."""
        return self.rejects.with_name(self.rejects.stem + ".in-doubt.ndjson")

    @property
    def resolved_pull_dir(self) -> Path:
        """Where API sources are pulled to: shared by validate and import run from one folder."""
        return self.pull_dir if self.pull_dir is not None else self.rejects.parent / ".backfill-pulls"

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        return self.rejects.parent / ".backfill-state"
