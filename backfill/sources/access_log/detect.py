"""Which format a log file is in, from its first lines (or the user's --log-format).

A file whose first lines match no format is refused, naming every format
tried, rather than turned into one reject per line; a line later in the file
that matches a different format than the file's (two logs concatenated, a
format changed in the server config) refuses the file with its line number,
because the lines after it would all be misread.
"""

from __future__ import annotations

import json

from backfill.errors import ConfigError, SourceError
from backfill.sources.access_log.formats import (
    BUILTIN,
    FORMAT_NAMES,
    LineFormat,
    by_name,
    custom_format,
    json_format,
    w3c_format,
)

W3C_FIELDS_PREFIX = "#Fields:"


def detect(name: str, head: list[tuple[int, str]], log_format: str | None) -> LineFormat:
    """The format of a file whose first non-blank lines are ``head``."""
    if not head:
        raise SourceError(f"{name}: no lines")
    if log_format and log_format not in ("auto", "w3c", "json"):
        fmt = by_name(log_format) or (custom_format(log_format) if log_format not in FORMAT_NAMES else None)
        if fmt is not None:
            return _check_explicit(name, head, fmt)
    first = head[0][1].lstrip()
    if first.startswith("#") or any(text.startswith(W3C_FIELDS_PREFIX) for _, text in head):
        return w3c_of(name, head)
    if first.startswith("{"):
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


def w3c_of(name: str, head: list[tuple[int, str]]) -> LineFormat:
    """IIS / CloudFront: the ``#Fields:`` directive names the columns."""
    fields_line = next((text for _, text in head if text.startswith(W3C_FIELDS_PREFIX)), None)
    if fields_line is None:
        raise SourceError(f"{name}: starts with '#' lines but has no {W3C_FIELDS_PREFIX} line (W3C extended log?)")
    data = next((text for _, text in head if not text.startswith("#")), "")
    separator = "\t" if "\t" in data else " "
    try:
        return w3c_format(fields_line[len(W3C_FIELDS_PREFIX) :].split(), separator)
    except ConfigError as exc:
        raise SourceError(f"{name}: {exc}") from exc


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
            f"escape=json with keys such as time_local/time_iso8601, request or request_uri, status); "
            f"the first line has the keys {', '.join(sorted(keys)[:15])}"
        )
    return fmt


def _best_regex(name: str, head: list[tuple[int, str]]) -> LineFormat:
    counts = [(sum(1 for _, text in head if fmt.regex.match(text)), -i, fmt) for i, fmt in enumerate(BUILTIN)]
    hits, _, best = max(counts, key=lambda c: (c[0], c[1]))
    if hits == 0:
        number, text = head[0]
        tried = ", ".join(f.name for f in BUILTIN) + ", W3C (IIS, CloudFront), JSON (nginx, Caddy, Traefik)"
        raise SourceError(
            f"{name}: the first {len(head)} lines match no access log format (tried {tried}); "
            f"line {number}: {text[:200]!r}. If the server uses its own format, pass it with "
            "--log-format '<the log_format / LogFormat string>'"
        )
    return best


def other_format(text: str, fmt: LineFormat) -> str | None:
    """The name of another format that ``text`` is written in, if any (a mixed file)."""
    stripped = text.lstrip()
    if fmt.kind != "json" and stripped.startswith("{") and stripped.rstrip().endswith("}"):
        try:
            if isinstance(json.loads(stripped), dict):
                return "JSON"
        except ValueError:
            pass
    if fmt.name not in ("iis", "cloudfront") and stripped.startswith(W3C_FIELDS_PREFIX):
        return "W3C extended (#Fields)"
    for other in BUILTIN:
        if other.name != fmt.name and other.regex.match(text):
            return other.name
    return None
