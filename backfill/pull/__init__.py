"""Pulling history out of an analytics API into local files, which the readers then read.

A SOURCE written ``ga4-api:PROPERTY_ID`` or ``matomo-api:URL?idSite=N`` is not a
file: before anything is read, its days are pulled, one at a time, into a folder
of their own under ``--pull-dir`` (default ``.backfill-pulls`` next to
``--rejects``), and the run then reads those files like any export:

* ``ga4-api``: one JSON file per day holding the Data API's ``runReport``
  answers (``backfill.pull.ga4``), read by the ``ga_report`` reader, so the
  events are synthesized exactly as from report CSVs (preset ``ga_report``);
* ``matomo-api``: the day's ``Live.getLastVisitsDetails`` pages, one file each
  (``backfill.pull.matomo``), read by the ``matomo_live`` reader exactly as
  saved Live pages (preset ``matomo-live``).

A day's file appears only once the day is complete (written atomically), so a
pull stopped at any point (Ctrl-C, a crash, Google's daily quota) continues
where it stood when the same command runs again, and ``validate`` followed by
``import`` pulls once. Nothing here sends anything to Umami, and no credential
is ever written to a file or printed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backfill.errors import BackfillError, ConfigError


@dataclass(frozen=True)
class Scheme:
    """One kind of API source: what it is, an example, and the reader and preset of its files."""

    what: str
    example: str
    format: str
    preset: str


SCHEMES: dict[str, Scheme] = {
    "ga4-api": Scheme("Google Analytics 4 Data API", "ga4-api:123456789", "ga_report", "ga_report"),
    "matomo-api": Scheme(
        "Matomo HTTP API", "matomo-api:https://example.matomo.cloud/?idSite=1", "matomo_live", "matomo-live"
    ),
    "matomo-reports": Scheme(
        "Matomo's reports, for days whose visit log is gone",
        "matomo-reports:https://example.matomo.cloud/?idSite=1",
        "ga_report",
        "ga_report",
    ),
}
DEFAULT_PULL_DIR = ".backfill-pulls"

ProgressFn = Callable[..., None]
SayFn = Callable[[str], None]


class PullStopped(BackfillError):
    """The pull stopped cleanly before its end (a quota spent, the API unreachable):
    the days pulled so far are kept, and the same command continues from there."""


@dataclass(frozen=True)
class PullSettings:
    """How to pull, from the command line (``backfill.cli``) or a Python caller."""

    folder: Path  # --pull-dir
    since: int | None = None  # unix seconds, UTC (the run's --since/--until)
    until: int | None = None
    google_credentials: str | None = None  # --google-credentials FILE
    ga4_endpoint: str | None = None  # --ga4-endpoint URL (a proxy or a test server)
    matomo_token_file: str | None = None  # --matomo-token-file FILE (else MATOMO_TOKEN_AUTH)
    page_size: int | None = None  # --page-size: rows per runReport / visits per Live request
    quota_wait: float = 3600.0  # --quota-wait: seconds to wait for an hourly quota before stopping
    timeout: float = 60.0
    insecure: bool = False


@dataclass
class Pulled:
    """What a pull produced: the files to read, their reader and preset, and what it noticed."""

    files: list[str]
    format: str
    preset: str
    notes: list[str] = field(default_factory=list)


def api_source(text: str) -> tuple[str, str] | None:
    """(scheme, rest) for ``ga4-api:...`` / ``matomo-api:...``; None for a file, glob or folder."""
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in SCHEMES and not os.path.exists(text):
        return scheme.lower(), rest.strip()
    return None


def pull_sources(
    sources: tuple[str, ...] | list[str],
    settings: PullSettings,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    say: SayFn | None = None,
) -> Pulled | None:
    """Pull the API source among ``sources``, or None when every source is a file.

    Raises:
        ConfigError: the source or the credentials are wrong, or API and file sources are mixed.
        PullStopped: a quota or an unreachable API stopped the pull (the same command continues it).
    """
    specs = [api_source(s) for s in sources]
    if not any(specs):
        return None
    if len(sources) != 1:
        raise ConfigError(
            "an API source (" + ", ".join(SCHEMES) + ") is pulled and imported on its own: run one command per source"
        )
    scheme, rest = specs[0]  # type: ignore[misc]
    stop = stop or threading.Event()
    say = say or (lambda _m: None)
    if scheme == "ga4-api":
        from backfill.pull.ga4 import pull_ga4

        return pull_ga4(rest, settings, progress, stop, say)
    if scheme == "matomo-reports":
        from backfill.pull.matomo_reports import pull_matomo_reports

        return pull_matomo_reports(rest, settings, progress, stop, say)
    from backfill.pull.matomo import pull_matomo

    return pull_matomo(rest, settings, progress, stop, say)


def pull_for(
    config: Any,
    mapping: Any,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    say: SayFn | None = None,
) -> tuple[Any, list[str]]:
    """A run's config with its API source pulled and replaced by the pulled files (and their
    reader), and the pull's notes; the config unchanged and no notes for file sources."""
    import dataclasses

    settings = PullSettings(
        folder=config.resolved_pull_dir,
        since=config.since,
        until=config.until,
        google_credentials=config.google_credentials,
        ga4_endpoint=config.ga4_endpoint,
        matomo_token_file=config.matomo_token_file,
        page_size=config.page_size,
        quota_wait=config.quota_wait,
        timeout=config.timeout,
        insecure=config.insecure,
    )
    specs = [api_source(s) for s in config.sources]
    if not any(specs):
        return config, []
    scheme = SCHEMES[next(s for s in specs if s)[0]]
    wanted = config.format or mapping.reader.get("format")
    if wanted and wanted != scheme.format:
        raise ConfigError(
            f"{config.sources[0]} is read as {scheme.format} (the files it pulls), but "
            f"{'--format' if config.format else 'the mapping'} says {wanted}: use -m {scheme.preset} "
            f"(or a mapping with `reader: {{format: {scheme.format}}}`)"
        )
    pulled = pull_sources(config.sources, settings, progress, stop, say)
    assert pulled is not None
    return dataclasses.replace(config, sources=tuple(pulled.files), format=pulled.format), pulled.notes


# --------------------------------------------------------------------------- days


def day_range(
    since: int | None, until: int | None, zone: dt.tzinfo, default_first: dt.date | None = None
) -> list[dt.date]:
    """The days (in ``zone``) that hold the instants of [since, until).

    Without ``until``: up to yesterday in ``zone`` (today is not over). Without
    ``since``: from ``default_first``, which the caller must then know.
    """
    today = dt.datetime.now(zone).date()
    if since is None:
        if default_first is None:
            raise ConfigError("pass --since: the first day to pull (e.g. --since 2023-01-01)")
        first = default_first
    else:
        first = dt.datetime.fromtimestamp(since, dt.UTC).astimezone(zone).date()
    if until is None:
        last = today - dt.timedelta(days=1)
    else:
        last = dt.datetime.fromtimestamp(until - 1, dt.UTC).astimezone(zone).date()
    if last < first:
        raise ConfigError(f"no whole day to pull between {first} and {last} (--since / --until)")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def safe_name(text: str) -> str:
    """A folder name made of ``text``: letters, digits, dot, dash; the rest as '-'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "source"


def read_secret_file(path: str, what: str) -> str:
    """The first line of a credentials file (never echoed in a message)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if not text:
        raise ConfigError(f"{path}: the {what} file is empty")
    return text.splitlines()[0].strip()


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced, so an echoed answer never shows one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


__all__ = [
    "SCHEMES",
    "PullSettings",
    "PullStopped",
    "Pulled",
    "api_source",
    "day_range",
    "pull_sources",
]
