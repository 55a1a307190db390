"""A format from the server's own configuration (``--log-format``).

An nginx ``log_format`` or Apache ``LogFormat`` string, or the whole directive
line pasted from the config, becomes one more :class:`LineFormat`: each
variable a named part (``$http_user_agent`` -> ``user_agent``), each literal
between them a separator. An nginx ``log_format`` that writes JSON (the one
Matomo's README recommends, ``'{"ip": "$remote_addr", "host": "$host", ...}'``)
becomes a JSON format whose keys are read by the variable they hold.
"""

from __future__ import annotations

import re

from backfill.errors import ConfigError
from backfill.sources.access_log.formats import QUOTED, LineFormat, compiled, names_listing

#: nginx variable -> part (and a tighter pattern where the value's shape is known).
NGINX_VARS = {
    "remote_addr": "ip",
    "realip_remote_addr": "ip",
    "binary_remote_addr": None,
    "remote_user": "user",
    "time_local": "time",
    "time_iso8601": "time",
    "msec": "time",
    "request": "request",
    "request_method": "method",
    "request_uri": "path",
    "uri": "path_only",
    "document_uri": "path_only",
    "args": "query",
    "query_string": "query",
    "server_protocol": "protocol",
    "status": "status",
    "body_bytes_sent": "bytes",
    "bytes_sent": "bytes",
    "http_referer": "referrer",
    "http_user_agent": "user_agent",
    "http_x_forwarded_for": "xff",
    "proxy_add_x_forwarded_for": "xff",
    "http_cf_connecting_ip": "client_ip",
    "http_true_client_ip": "client_ip",
    "http_x_real_ip": "client_ip",
    "host": "host",
    "http_host": "host",
    "server_name": "host",
    "sent_http_content_type": "content_type",
    "http_purpose": "purpose",
    "http_sec_purpose": "purpose",
    "http_x_moz": "purpose",
}
#: Apache directive (letter, with its {argument} lower-cased) -> part.
APACHE_DIRECTIVES = {
    "h": "ip",
    "a": "ip",
    "{c}a": "ip",
    "u": "user",
    "t": "time",
    "r": "request",
    "m": "method",
    "U": "path_only",
    "q": "query",
    "H": "protocol",
    "s": "status",
    "b": "bytes",
    "B": "bytes",
    "O": "bytes",
    "v": "host",
    "V": "host",
    "{host}i": "host",
    "{referer}i": "referrer",
    "{user-agent}i": "user_agent",
    "{x-forwarded-for}i": "xff",
    "{cf-connecting-ip}i": "client_ip",
    "{true-client-ip}i": "client_ip",
    "{x-real-ip}i": "client_ip",
    "{content-type}o": "content_type",
    "{purpose}i": "purpose",
    "{sec-purpose}i": "purpose",
    "{x-moz}i": "purpose",
}
_NGINX_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_APACHE_DIRECTIVE = re.compile(r"%(?:!?[\d,]*)?[<>]?(\{[^}]*\})?([a-zA-Z%])")
_PART_PATTERN = {"status": r"\d{3}|-", "bytes": r"\d+|-"}


def custom_format(spec: str) -> LineFormat:
    """A regex format from an nginx ``log_format`` or Apache ``LogFormat`` string.

    Each variable becomes a group that runs up to the next literal character
    (a quoted variable up to its closing quote, escapes allowed), so the
    pattern needs no knowledge of the variable beyond the part it gives.
    """
    spec = _format_string(spec)
    if spec.lstrip().startswith("{") and _NGINX_VAR.search(spec):
        return _json_format(spec)
    if _NGINX_VAR.search(spec):
        pieces = _split(spec, _NGINX_VAR, lambda m: NGINX_VARS.get(m.group(1) or m.group(2)), "nginx")
    elif _APACHE_DIRECTIVE.search(spec):
        spec = spec.replace('\\"', '"')
        pieces = _split(spec, _APACHE_DIRECTIVE, _apache_part, "apache")
    elif re.fullmatch(r"[\w.-]+", spec):
        raise ConfigError(f"--log-format {spec!r} is not a format name; the names are: {names_listing()}")
    else:
        raise ConfigError(
            f"--log-format {spec!r} has no nginx $variable and no Apache %directive; give a format "
            f"name ({names_listing()}) or the format string from your server's configuration"
        )
    pattern = _pattern(pieces)
    parts = set(compiled(pattern).groupindex)
    if "time" not in parts or not ({"request", "path", "path_only"} & parts):
        raise ConfigError(
            f"--log-format {spec!r} logs no time or no request: it needs $time_local (or %t) and "
            "$request (or %r, $request_uri) to make page views"
        )
    return LineFormat("custom", f"--log-format {spec}", pattern=pattern, time_kind="any")


#: "key": "$variable" (or "key": $variable, unquoted numbers) in a JSON log_format.
_JSON_KEY_VAR = re.compile(r'"([^"\\]+)"\s*:\s*"?\$\{?(\w+)\}?"?')


def _json_format(spec: str) -> LineFormat:
    """An nginx log_format that writes one JSON object per line: each key read as the
    part its variable gives (``"referrer": "$http_referer"`` -> referrer)."""
    paths: dict[str, tuple[str | int, ...]] = {}
    for key, variable in _JSON_KEY_VAR.findall(spec):
        part = NGINX_VARS.get(variable)
        if part is not None and part not in paths:
            paths[part] = (key,)
    if "path_only" in paths and "path" not in paths:
        paths["path"] = paths.pop("path_only")
    if "time" not in paths or not ({"request", "path"} & set(paths)):
        raise ConfigError(
            f"--log-format {spec!r} writes JSON but logs no time or no request: it needs $time_iso8601 "
            "(or $time_local, $msec) and $request or $request_uri to make page views"
        )
    if "method" in paths and "request" in paths:
        del paths["method"]
    return LineFormat("nginx_json", f"--log-format {spec}", kind="json", time_kind="any", json_paths=paths)


_NGINX_DIRECTIVE = re.compile(r"^\s*log_format\s+\S+\s+(?:escape=\S+\s+)?(.*?);?\s*$", re.DOTALL)
_APACHE_LOGFORMAT = re.compile(r'^\s*LogFormat\s+"((?:[^"\\]|\\.)*)"')


def _format_string(spec: str) -> str:
    """The format string itself, also when given as the whole config line
    (``log_format main '...' '...';`` or ``LogFormat "..." combined``)."""
    nginx = _NGINX_DIRECTIVE.match(spec)
    if nginx:
        quoted = re.findall(r"'([^']*)'", nginx.group(1))
        return "".join(quoted) if quoted else nginx.group(1)
    apache = _APACHE_LOGFORMAT.match(spec)
    if apache:
        return apache.group(1)
    return spec.strip().strip("'")


def _apache_part(match: re.Match[str]) -> str | None:
    argument, letter = match.group(1), match.group(2)
    if letter == "t" and argument and argument.lower() == "{sec}":
        return "time"  # epoch seconds
    if letter == "t" and argument:
        raise ConfigError(
            f"--log-format: {match.group(0)} (a custom time format) is not supported; log %t or %{{sec}}t"
        )
    key = f"{argument.lower()}{letter}" if argument else letter
    return APACHE_DIRECTIVES.get(key)


def _split(spec: str, variable: re.Pattern[str], part_of, flavour: str) -> list[tuple[str, str | None]]:
    """The format as ("lit", text) and ("var", part or None) pieces."""
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for match in variable.finditer(spec):
        if match.start() > position:
            pieces.append(("lit", spec[position : match.start()]))
        if flavour == "apache" and match.group(2) == "%":
            pieces.append(("lit", "%"))
        elif flavour == "apache" and match.group(2) == "t" and not match.group(1):
            pieces += [("lit", "["), ("var", "time"), ("lit", "]")]  # %t writes [05/Mar/2024:14:22:10 +0100]
        else:
            pieces.append(("var", part_of(match)))
        position = match.end()
    if position < len(spec):
        pieces.append(("lit", spec[position:]))
    return pieces


def _pattern(pieces: list[tuple[str, str | None]]) -> str:
    out = ["^"]
    used: set[str] = set()
    for index, (kind, value) in enumerate(pieces):
        if kind == "lit":
            out.append(re.escape(value or ""))
            continue
        following = next((v for k, v in pieces[index + 1 :] if k == "lit" and v), None)
        previous = pieces[index - 1][1] if index and pieces[index - 1][0] == "lit" else ""
        stop = following[0] if following else None
        if stop == '"' and (previous or "").endswith('"'):
            body = QUOTED
        elif value in _PART_PATTERN and stop is not None:
            body = _PART_PATTERN[value]
        elif stop is None:
            body = ".*"
        else:
            body = "[^" + re.escape(stop) + "]*"
        if value and value not in used:
            used.add(value)
            out.append(f"(?P<{value}>{body})")
        else:
            out.append(f"(?:{body})")
    out.append("$")
    return "".join(out)
