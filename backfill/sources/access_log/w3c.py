"""W3C extended logs: the ``#Fields:`` line names the columns (IIS, CloudFront, Incapsula, Netscaler).

The format of such a file is built from its own header: one group per field
this reader knows (``c-ip`` -> ``ip``, ``cs(User-Agent)`` -> ``user_agent``,
...), any other field skipped. What the writers do differently:

* IIS and Netscaler separate fields with one space and write spaces inside a
  value as ``+`` (``Mozilla/5.0+(Windows+NT+10.0)``); IIS Advanced Logging
  quotes values instead (``"Mozilla/5.0 (Windows NT 10.0)"``), pads the header
  with blank lines and spaces, and logs ``date-local``/``time-local`` (the
  server's clock) or ``date``/``time`` (UTC). Any field may be a quoted string
  with spaces (``cs(Cookie)``), ``""`` standing for a quote inside it.
* CloudFront separates fields with tabs and percent-encodes the user agent,
  twice in older logs (``Mozilla/5.0%2520(Windows...``): then the referrer and
  query string carry the second layer too (``%2520``).
* Incapsula quotes every value and logs ``cs-uri`` as host and path together
  (``"www.example.com/page.php"``), the query apart.

Fields under other names (a proxy's own, ``x-client``) are mapped with
``--w3c-field NAME=STANDARD`` (``x-client=c-ip``). Streaming servers write W3C
logs too (SHOUTcast, CloudFront RTMP): their lines are listeners of a stream,
not page views, and such a file is refused by name.
"""

from __future__ import annotations

import urllib.parse

import polars as pl

from backfill.errors import ConfigError, SourceError
from backfill.schema import COL_ROW
from backfill.sources.access_log.formats import LineFormat, streaming_message
from backfill.transform import map_unique

W3C_FIELDS_PREFIX = "#Fields:"

#: W3C field name (lower case) -> part.
W3C_FIELDS = {
    "date": "date",
    "time": "clock",
    "c-ip": "ip",
    "cs-method": "method",
    "cs-uri-stem": "path_only",
    "cs-uri-query": "query",
    "cs-uri": "uri",
    "sc-status": "status",
    "c-status": "status",  # SHOUTcast-style headers without the #Software line
    "sc-bytes": "bytes",
    "cs(referer)": "referrer",
    "cs(referrer)": "referrer",
    "cs(user-agent)": "user_agent",
    "c-user-agent": "user_agent",
    "x-host-header": "host",  # CloudFront: the Host the viewer asked for
    "cs-host": "host",
    "cs(host)": "host",  # IIS; in CloudFront it is the distribution's domain (x-host-header wins)
    "x-forwarded-for": "xff",  # also an IIS custom field logged under the header's name
    "cs(x-forwarded-for)": "xff",
    "cs(x-real-ip)": "client_ip",
    "cs(cf-connecting-ip)": "client_ip",
    "cs(true-client-ip)": "client_ip",
    "x-real-ip": "client_ip",
    "cf-connecting-ip": "client_ip",
    "true-client-ip": "client_ip",
    "sc-content-type": "content_type",
    "sc(content-type)": "content_type",
    "cs-protocol-version": "protocol",
    "cs-version": "protocol",
    "cs(purpose)": "purpose",
    "cs(sec-purpose)": "purpose",
    "cs-username": "user",
}
#: Other names of the date and time fields, best first: UTC, then the server's clock.
_CLOCKS = {"date": ("date", "date-utc", "date-local"), "clock": ("time", "time-utc", "time-local")}
_LOCAL = ("date-local", "time-local")
#: Characters some writers leave in a #Fields line (a zero-width space, a BOM).
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\u00a0"), " ")


def field_names(fields_line: str) -> list[str]:
    """The field names of a ``#Fields:`` line (any spacing), as written."""
    return fields_line[len(W3C_FIELDS_PREFIX) :].translate(_INVISIBLE).split()


def parse_renames(text: str | None) -> dict[str, str]:
    """``--w3c-field`` text ``NAME=STANDARD[,NAME=STANDARD]`` -> {name: standard name}, lower case."""
    renames: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, standard = item.partition("=")
        standard = standard.strip().lower()
        known = standard in W3C_FIELDS or standard in _CLOCKS["date"] + _CLOCKS["clock"]
        if not sep or not name.strip() or not known:
            raise ConfigError(
                f"--w3c-field {item.strip()!r}: give NAME=STANDARD, where STANDARD is one of "
                f"{', '.join(sorted(set(W3C_FIELDS) | set(_CLOCKS['date'] + _CLOCKS['clock'])))} "
                "(e.g. --w3c-field x-client=c-ip,TimeTakenMS=time-taken)"
            )
        renames[name.strip().lower()] = standard
    return renames


def streaming_server(fields: list[str], software: str) -> str | None:
    """The streaming server that wrote this W3C log (its lines are no page views), if it is one."""
    lower = {f.lower() for f in fields}
    if "shoutcast" in software.lower():
        return "SHOUTcast"
    if {"x-event", "x-sname"} & lower or "x-sname-query" in lower:
        return "CloudFront RTMP (streaming distribution)"
    return None


def w3c_format(
    fields: list[str], separator: str, software: str = "", renames: dict[str, str] | None = None
) -> LineFormat:
    """The format of a W3C extended log from its ``#Fields:`` names and the data's separator."""
    lower = [(renames or {}).get(f.lower(), f.lower()) for f in fields]
    streaming = streaming_server(fields, software)
    if streaming:
        raise ConfigError(f"{streaming_message(streaming)}; #Fields: {' '.join(fields)}")
    cloudfront = "x-edge-location" in lower or "x-edge-request-id" in lower or separator == "\t"
    chosen = _chosen(lower)
    value = "[^\t]*" if separator == "\t" else r'"(?:[^"]|"")*"|[^ ]+'
    used: set[str] = set()
    groups = []
    for name in lower:
        part = chosen.get(name)
        if part and part not in used:
            used.add(part)
            groups.append(f"(?P<{part}>{value})")
        else:
            groups.append(f"(?:{value})")
    missing = _missing(used)
    if missing:
        raise ConfigError(_missing_message(missing, fields))
    sep = "\t" if separator == "\t" else " +"
    return LineFormat(
        "cloudfront" if cloudfront else "iis" if _is_iis(software, lower) else "w3c",
        _description(cloudfront, software),
        pattern="^ *" + sep.join(groups) + r"(?:[ \t].*)?$",
        time_kind="w3c",
        decode="percent" if cloudfront else "plus",
        fields=tuple(f.lower() for f in fields),
        local_time=bool(set(_LOCAL) & {n for n, p in chosen.items() if p in ("date", "clock")}),
    )


def _chosen(lower: list[str]) -> dict[str, str]:
    """field name -> part, for the fields used: the first of each part's names, the UTC
    clock before the local one, the viewer's Host before a CDN's own domain."""
    chosen: dict[str, str] = {}
    for part, names in _CLOCKS.items():
        found = next((n for n in names if n in lower), None)
        if found:
            chosen[found] = part
    for name in lower:
        part = W3C_FIELDS.get(name)
        if part in (None, "date", "clock") or name in chosen:
            continue
        if part == "host" and "x-host-header" in lower and name != "x-host-header":
            continue
        chosen[name] = part
    return chosen


def _missing(used: set[str]) -> list[str]:
    missing = []
    if "date" not in used:
        missing.append("date (date, date-local)")
    if "clock" not in used:
        missing.append("time (time, time-local)")
    if not {"path_only", "uri"} & used:
        missing.append("the requested path (cs-uri-stem or cs-uri)")
    return missing


def _missing_message(missing: list[str], fields: list[str]) -> str:
    unknown = [f for f in fields if f.lower() not in W3C_FIELDS and f.lower() not in _CLOCKS["date"] + _CLOCKS["clock"]]
    hint = (
        f"; if one of its other fields ({', '.join(unknown[:12])}) holds it, name it with "
        "--w3c-field NAME=STANDARD (e.g. --w3c-field x-uri=cs-uri-stem)"
        if unknown
        else ""
    )
    return (
        f"W3C log without a field for {' and '.join(missing)}: these are needed to make page views "
        f"(#Fields: {' '.join(fields)}){hint}"
    )


def _is_iis(software: str, lower: list[str]) -> bool:
    return "microsoft" in software.lower() or "iis" in software.lower() or "sc-win32-status" in lower


def _description(cloudfront: bool, software: str) -> str:
    if cloudfront:
        return "AWS CloudFront standard log (W3C, tabs)"
    written = software.strip()
    return f"W3C extended log ({written})" if written else "W3C extended log (#Fields)"


def header_of(head: list[tuple[int, str]]) -> tuple[str | None, str]:
    """(the #Fields line, the #Software text) of a file's first lines."""
    fields_line = next((text.strip() for _, text in head if text.lstrip().startswith(W3C_FIELDS_PREFIX)), None)
    software = next((text.split(":", 1)[1] for _, text in head if text.lstrip().startswith("#Software:")), "")
    return fields_line, software.strip()


def w3c_of(name: str, head: list[tuple[int, str]], renames: dict[str, str] | None = None) -> LineFormat:
    """IIS / CloudFront / any W3C extended log: the ``#Fields:`` directive names the columns."""
    fields_line, software = header_of(head)
    if fields_line is None:
        raise SourceError(f"{name}: starts with '#' lines but has no {W3C_FIELDS_PREFIX} line (W3C extended log?)")
    data = next((text for _, text in head if not text.lstrip().startswith("#")), "")
    separator = "\t" if "\t" in data else " "
    try:
        return w3c_format(field_names(fields_line), separator, software, renames)
    except ConfigError as exc:
        raise SourceError(f"{name}: {exc}") from exc


def data_lines(lines: pl.DataFrame, fmt: LineFormat, name: str) -> pl.DataFrame:
    """Drop W3C directives (#Version, #Date, ...); a #Fields line that changes the columns refuses the file."""
    text = pl.col("line").str.strip_chars_start()
    directive = text.str.starts_with("#")
    fields = lines.filter(directive & text.str.starts_with(W3C_FIELDS_PREFIX))
    for number, line in fields.select(COL_ROW, "line").iter_rows():
        if tuple(n.lower() for n in field_names(line.strip())) != fmt.fields:
            raise SourceError(
                f"{name}: line {number}: the #Fields header changes the columns ({line[:200]!r}); "
                "split the file at this line and import the parts separately"
            )
    return lines.filter(~directive)


def _plus_decoded(agents: pl.Series) -> pl.Series:
    """Unquoted W3C user agents: IIS writes spaces as ``+``; a streaming server percent-encodes
    (``NSPlayer%2F10.0%20WMFSDK``), which a ``%2X`` (an encoded space or sign) tells."""
    plus = agents.str.replace_all("+", " ", literal=True)
    encoded = agents.str.contains(r"%2[0-9A-Fa-f]").fill_null(False)
    if not encoded.any():
        return plus
    decoded = map_unique(agents, urllib.parse.unquote, pl.String())
    return decoded.zip_with(encoded, plus)


def unquoted(parts: pl.DataFrame, fmt: LineFormat) -> pl.DataFrame:
    """Values as written inside their quotes (``""`` is a quote); unquoted IIS user
    agents with ``+`` for spaces. A quoted value keeps its ``+``."""
    columns = []
    for column in parts.columns:
        values = parts[column]
        if column == COL_ROW or values.dtype != pl.String:
            continue
        plus = column == "user_agent" and fmt.decode == "plus"
        plain = _plus_decoded(values) if plus else values
        if values.str.starts_with('"').any():
            quoted = values.str.starts_with('"') & values.str.ends_with('"') & (values.str.len_bytes() >= 2)
            inner = values.str.slice(1, values.str.len_chars() - 2).str.replace_all('""', '"', literal=True)
            columns.append(inner.zip_with(quoted.fill_null(False), plain).alias(column))
        elif plus:
            columns.append(plain.alias(column))
    return parts.with_columns(columns) if columns else parts
