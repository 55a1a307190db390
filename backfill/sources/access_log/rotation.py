"""Rotated logs: which files are one log, and their order from oldest to newest.

logrotate and the servers name rotations ``access.log``, ``access.log.1``,
``access.log.2.gz`` (higher number = older), or with a date
(``access.log-20240301.gz``, ``access.log.2024-03-01``); CDNs and load
balancers write one file per period with a time stamp in its name (CloudFront
``E2ABC.2024-03-04-14.918cb8a4.gz``, S3 ``2024-03-04-14-22-10-ABCDEF0123456789``,
ALB ``..._app.lb.50dc6c495c0c9188_20240304T1420Z_10.0.0.1_x.log.gz``). Visits
continue from one file into the next, so the files of one log are read
oldest first and share one visit state; files of different logs
(``site-a.log``, ``site-b.log``) keep separate states.
"""

from __future__ import annotations

import os
import re

_COMPRESSION = re.compile(r"\.(gz|zst|zstd|bz2|xz)$", re.IGNORECASE)
_NUMBER = re.compile(r"\.(\d{1,4})$")
#: A date, optionally with a time, inside a file name: 20240301, 2024-03-01-14, 20240304T1420Z.
_STAMP = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:[-T_]?(\d{2})(?:-?(\d{2}))?(?:-?(\d{2}))?Z?)?(?!\d)")
_SEPARATORS = "-._"


def rotation(path: str) -> tuple[str, tuple[int, str, int]]:
    """(the log the file belongs to, its age key: smaller = older).

    ``access.log.2.gz`` -> (``.../access.log``, (1, "", -2)); ``access.log`` -> (..., (2, "", 0));
    a dated file sorts by its date and time before the numbered and live files of the same log.
    """
    name = _COMPRESSION.sub("", path)
    number = _NUMBER.search(name)
    if number:
        return name[: number.start()], (1, "", -int(number.group(1)))
    directory, base = os.path.split(name)
    stamp = _STAMP.search(base)
    if stamp:
        log = base[: stamp.start()].rstrip(_SEPARATORS)
        return os.path.join(directory, log), (0, "".join(g or "00" for g in stamp.groups()), 0)
    return name, (2, "", 0)


def log_group(path: str) -> str:
    return rotation(path)[0]


def sort_key(path: str) -> tuple[str, tuple[int, str, int], str]:
    """Files of one log together, oldest first (files of one period by name); logs by name."""
    log, age = rotation(path)
    return log, age, path
