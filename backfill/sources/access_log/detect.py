"""Which format a log file is in, from its first lines (or the user's --log-format).

A file whose first lines match no format is refused, naming every format
tried, rather than turned into one reject per line (``file_format`` in
``__init__.py`` refuses one most of whose first lines the format found cannot
read, so ``inspect`` never names a format ``validate`` refuses). A line later in the file that matches
a different format than the file's (two logs concatenated, a format changed in
the server config) refuses the file with its line number, because the lines
after it would all be misread.

Streaming servers (Icecast, SHOUTcast, CloudFront RTMP) write logs that look
like web logs, but each line is a listener of a stream: such a file is refused
by name, never read as page views.
"""

from __future__ import annotations

import json
import os
import re

from backfill.errors import ConfigError, SourceError
from backfill.sources.access_log import w3c
from backfill.sources.access_log.custom import custom_format
from backfill.sources.access_log.formats import (
    BUILTIN,
    COMBINED,
    LineFormat,
    by_name,
    canonical_name,
    json_format,
    streaming_message,
)
from backfill.sources.records import MOSTLY_BAD_SHARE

W3C_FIELDS_PREFIX = w3c.W3C_FIELDS_PREFIX
TRIED = ", ".join(f.name for f in BUILTIN) + ", W3C (IIS, CloudFront, Incapsula, ...), JSON (nginx, Caddy, Traefik)"

#: An Icecast access log: combined, then the seconds the listener stayed connected.
_ICECAST_LINE = re.compile(rf"^{COMBINED} \d+$")
#: What gives a combined-plus-a-number log away as Icecast's: audio mounts, its admin
#: pages, media players. (Apache's combined with %D appended looks the same otherwise.)
_STREAM_SIGNS = re.compile(
    r'(?i)"[A-Z]+ [^ "]*(\.(mp3|ogg|oga|opus|aac|m3u|pls|xspf|flac)|/admin/(stats|listclients|metadata)|'
    r'/status(-json)?\.xsl)[ ?"]|"[^"]*(vlc|winamp|itunes|nsplayer|lavf|foobar2000|libmpv|icecast|'
    r'applecoremedia|streamripper|xmms|audacious)[^"]*"( \d+)$'
)
_STREAMING_NAMES = {"icecast": "Icecast", "icecast2": "Icecast", "shoutcast": "SHOUTcast"}


def detect(
    name: str, head: list[tuple[int, str]], log_format: str | None, renames: dict[str, str] | None = None
) -> LineFormat:
    """The format of a file whose first non-blank lines are ``head``."""
    if not head:
        raise SourceError(f"{name}: no lines")
    wanted = canonical_name(log_format) if log_format else "auto"
    if wanted in _STREAMING_NAMES:
        raise ConfigError(streaming_message(_STREAMING_NAMES[wanted]))
    if wanted not in ("auto", "w3c", "iis", "cloudfront", "json", "nginx_json"):
        fmt = by_name(wanted) or custom_format(log_format or "")
        return _check_explicit(name, head, fmt)
    first = head[0][1].lstrip()
    if wanted in ("w3c", "iis", "cloudfront") or first.startswith("#") or w3c.header_of(head)[0] is not None:
        return w3c.w3c_of(name, head, renames)
    if first.startswith("{") or wanted in ("json", "nginx_json"):
        return _json_of(name, head)
    return _best_regex(name, head)


def _check_explicit(name: str, head: list[tuple[int, str]], fmt: LineFormat) -> LineFormat:
    if fmt.kind == "json":
        return fmt
    if not any(fmt.regex.match(text) for _, text in head):
        number, text = head[0]
        raise SourceError(
            f"{name}: none of the first {len(head)} lines matches the format {fmt.description!r} "
            f"(regex {fmt.pattern}); line {number}: {text[:200]!r}. Check --log-format against the "
            "server's configuration, or leave it out to detect the format"
        )
    return fmt


def _json_of(name: str, head: list[tuple[int, str]]) -> LineFormat:
    keys: set[str] = set()
    sample: dict[str, object] = {}
    for _, text in head[:10]:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            keys |= set(value)
            sample = sample or value
    fmt = json_format(keys, sample)
    if fmt is None:
        raise SourceError(
            f"{name}: JSON lines, but not an access log this reader knows (Caddy, Traefik, or nginx "
            f"escape=json with keys such as time_iso8601/date, request or request_uri/path, status); "
            f"the first line has the keys {', '.join(sorted(keys)[:15])}. Pass the server's log_format "
            "line with --log-format to name its keys"
        )
    return fmt


def _best_regex(name: str, head: list[tuple[int, str]]) -> LineFormat:
    counts = [(sum(1 for _, t in head if fmt.detect_regex.match(t)), -i, fmt) for i, fmt in enumerate(BUILTIN)]
    hits, _, best = max(counts, key=lambda c: (c[0], c[1]))
    finer = [fmt for n, _, fmt in counts if fmt.refines == best.name and n > hits * MOSTLY_BAD_SHARE]
    best = finer[0] if finer else best
    if hits == 0:
        number, text = head[0]
        raise SourceError(
            f"{name}: the first {len(head)} lines match no access log format (tried {TRIED}); "
            f"line {number}: {text[:200]!r}. If the server uses its own format, pass it with "
            "--log-format '<the log_format / LogFormat string>'"
        )
    if best.name in ("combined", "ovh", "vhost_combined") and _is_icecast(name, head):
        raise SourceError(f"{name}: {streaming_message('Icecast', override=True)}")
    return best


def _is_icecast(name: str, head: list[tuple[int, str]]) -> bool:
    """Combined lines ending in the seconds a listener stayed, in a file that shows a stream."""
    ending = [t for _, t in head if _ICECAST_LINE.match(t) or _ICECAST_LINE.match(t.split(" ", 1)[-1])]
    if not ending or len(ending) < len(head) * MOSTLY_BAD_SHARE:
        return False
    return "icecast" in os.path.basename(name).lower() or any(_STREAM_SIGNS.search(t) for t in ending)


def other_format(text: str, fmt: LineFormat) -> str | None:
    """The name of another format that ``text`` is written in, if any (a mixed file)."""
    stripped = text.lstrip()
    if fmt.kind != "json" and stripped.startswith("{") and stripped.rstrip().endswith("}"):
        try:
            if isinstance(json.loads(stripped), dict):
                return "JSON"
        except ValueError:
            pass
    if fmt.time_kind != "w3c" and stripped.startswith(W3C_FIELDS_PREFIX):
        return "W3C extended (#Fields)"
    for other in BUILTIN:
        if other.name != fmt.name and other.detect_regex.match(text):
            return other.name
    return None
