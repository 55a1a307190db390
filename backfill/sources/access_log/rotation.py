"""Rotated logs: which files are one log, and their order from oldest to newest.

logrotate and the servers name rotations ``access.log``, ``access.log.1``,
``access.log.2.gz`` (higher number = older), or with a date
(``access.log-20240301.gz``, ``access.log.2024-03-01``). Visits continue from
one rotation into the next, so the files of one log are read oldest first and
share one visit state; files of different logs (``site-a.log``, ``site-b.log``)
keep separate states.
"""

from __future__ import annotations

import os
import re

_COMPRESSION = re.compile(r"\.(gz|zst|zstd|bz2)$", re.IGNORECASE)
_NUMBER = re.compile(r"\.(\d{1,4})$")
_DATE = re.compile(r"[-._](\d{4})-?(\d{2})-?(\d{2})(?:[-_T]?(\d{2})?(\d{2})?(\d{2})?)?$")


def rotation(path: str) -> tuple[str, tuple[int, str, int]]:
    """(the log the file belongs to, its age key: smaller = older).

    ``access.log.2.gz`` -> (``.../access.log``, (1, "", -2)); ``access.log`` -> (..., (2, "", 0));
    a dated rotation sorts by its date before the numbered and live files of the same log.
    """
    name = _COMPRESSION.sub("", path)
    number = _NUMBER.search(name)
    if number:
        return name[: number.start()], (1, "", -int(number.group(1)))
    date = _DATE.search(os.path.basename(name))
    if date:
        stamp = "".join(g or "" for g in date.groups())
        return name[: len(name) - len(date.group(0))], (0, stamp, 0)
    return name, (2, "", 0)


def log_group(path: str) -> str:
    return rotation(path)[0]


def sort_key(path: str) -> tuple[str, tuple[int, str, int]]:
    """Files of one log together, oldest first; logs by name."""
    return rotation(path)
