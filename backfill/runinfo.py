"""What a report says about the run itself: the command (credentials replaced by the
environment variables that carry them), the versions, and when it ran."""

from __future__ import annotations

import datetime as dt
import platform
import re
import shlex
from importlib import metadata
from typing import Any

from . import __version__

#: Flags whose value is a credential, and the environment variable a printed command uses instead.
SECRET_FLAGS = {"--database-url": "$UMAMI_DATABASE_URL", "--app-secret": "$APP_SECRET"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def without_secrets(argv: list[str]) -> list[str]:
    """The command line with credentials replaced by the environment variables that carry them
    (and any ``user:password@`` of a URL left out)."""
    out: list[str] = []
    pending: str | None = None  # the placeholder for the value that follows a secret flag
    for arg in argv:
        if pending is not None:
            out.append(pending)
            pending = None
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS and eq:
            out.append(f"{flag}={SECRET_FLAGS[flag]}")
        else:
            out.append(_USERINFO.sub("", arg))
            pending = SECRET_FLAGS.get(arg)
    return out


def command_line(argv: list[str]) -> str:
    """``backfill ...`` as a shell would run it again, credentials left to the environment."""
    command = "backfill " + shlex.join(without_secrets(argv))
    for flag, placeholder in SECRET_FLAGS.items():  # let the shell expand them
        command = command.replace(f"'{placeholder}'", f'"{placeholder}"')
        command = command.replace(f"'{flag}={placeholder}'", f'{flag}="{placeholder}"')
    return command


def versions() -> dict[str, str]:
    """The versions that decide what a run reads and sends."""
    out = {"umami-backfill": __version__, "python": platform.python_version()}
    for package in ("polars", "pyarrow"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_info(argv: list[str], started: dt.datetime) -> dict[str, Any]:
    """The ``run`` section of a report: command, versions, start and end (UTC)."""
    return {
        "command": command_line(argv),
        "versions": versions(),
        "started_at": _iso(started),
        "finished_at": _iso(dt.datetime.now(dt.UTC)),
    }
