"""Exceptions raised by the library; only ``cli`` turns them into messages and exit codes.

BackfillError
 +-- ConfigError        bad flags, environment or state: exit 2, before any data is read
 |    +-- MappingError  the mapping YAML is wrong (carries file and line)
 +-- SourceError        an input file cannot be read as declared: exit 2
 +-- SendError          Umami refused the run as a whole
      +-- TerminalSendError   retrying cannot help (401/403, unknown website, bot drop)
      +-- TransientSendError  retrying may help (429, 502/503, connection refused)
"""

from __future__ import annotations


class BackfillError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BackfillError):
    """The configuration (flags, environment, state directory) cannot work."""


class MappingError(ConfigError):
    """The mapping file is wrong; the message names the file, line and fix."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class SourceError(BackfillError):
    """An input file cannot be read; the message names the file and what to do."""


class SendError(BackfillError):
    """Umami refused the run as a whole."""


class TerminalSendError(SendError):
    """A refusal that retrying cannot fix (credentials, website id, bot filter)."""


class TransientSendError(SendError):
    """A refusal that may pass on a later attempt (rate limit, overload, restart)."""
