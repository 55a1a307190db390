"""Load and check a mapping YAML: how source columns become Umami payload fields.

Everything that can be checked without data is checked here, and the rest
(column names, dtypes) against the source schema in ``check_against_schema``,
so a wrong mapping fails before the first row is read, with the file, the
line and a "did you mean" for misspelt columns.
The format is documented in ``docs/mapping.md``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from .errors import MappingError
from .schema import DATA_KEY_LIMIT, FIELD_LIMITS, LOCATION_FIELDS, PAYLOAD_STRING_FIELDS

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"

TIMESTAMP_FORMATS = ("iso8601", "epoch")
EPOCH_UNITS = ("s", "ms", "us", "ns")
VISITOR_STRATEGIES = ("columns", "per_row", "ip_ua_day")
OVERFLOW_POLICIES = ("reject", "truncate")
DATA_TYPES = ("string", "number", "integer", "boolean")
CASES = ("lower", "upper")
TEMPLATE_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")

_SPEC_KEYS = {"column", "const", "template", "coalesce"}
_SPEC_MODIFIERS = {"map", "default", "type", "scale", "case", "part"}
#: ``part:`` takes one piece of a URL value (docs/mapping.md, "The modifiers").
URL_PARTS = ("host", "path", "query")
_TOP_KEYS = {
    "version",
    "description",
    "reader",
    "type",
    "timestamp",
    "visitor",
    "fields",
    "filters",
    "normalize",
    "keep_bots",
    "on_overflow",
    "overflow",
    "skip_warning",
}
#: Reader options of format plugins (text), passed on in ReadOptions.plugin_options (access_log,
#: matomo_logs / matomo_live).
PLUGIN_READER_KEYS = ("log_format", "hostname", "search_params", "w3c_fields", "log_timezone", "matomo_site")
_READER_KEYS = {"format", "delimiter", "quote_char", "encoding", "has_header", "decimal_comma", *PLUGIN_READER_KEYS}
_READER_FLAGS = {"has_header", "decimal_comma"}  # true/false; the other reader keys are text


@dataclass(frozen=True)
class ValueSpec:
    """Where one payload value comes from, and how it is shaped on the way."""

    kind: str  # "column" | "const" | "template" | "coalesce"
    column: str | None = None
    const: Any = None
    template: str | None = None
    parts: tuple[ValueSpec, ...] = ()
    value_map: dict[str, Any] | None = None
    default: Any = None
    dtype: str | None = None  # for data.* values: string | number | integer | boolean
    scale: float | None = None
    case: str | None = None
    part: str | None = None  # host | path | query: that piece of a URL value
    line: int | None = None

    def columns(self) -> list[str]:
        """Source columns this value reads."""
        if self.kind == "column" and self.column is not None:
            return [self.column]
        if self.kind == "template" and self.template is not None:
            return TEMPLATE_PLACEHOLDER.findall(self.template)
        if self.kind == "coalesce":
            return [c for part in self.parts for c in part.columns()]
        return []


@dataclass(frozen=True)
class TimestampSpec:
    column: str
    format: str = "iso8601"  # iso8601 | epoch | a strftime pattern
    unit: str | None = None  # epoch only
    timezone: str | None = None  # for naive values
    line: int | None = None

    @property
    def is_strftime(self) -> bool:
        return self.format not in TIMESTAMP_FORMATS

    @property
    def pattern_has_offset(self) -> bool:
        return self.is_strftime and "%z" in self.format


@dataclass(frozen=True)
class VisitorSpec:
    strategy: str  # columns | per_row | ip_ua_day
    columns: tuple[str, ...] = ()
    ip: str | None = None
    user_agent: str | None = None
    visit: str | None = None  # the source's visit (session) id column, e.g. GA4 ga_session_id
    line: int | None = None


@dataclass(frozen=True)
class SkipWarning:
    """Rows a filter skips although ``column`` marks them (its text is the example shown):
    counted per filter and shown in the summary, so a filter's cost is seen before importing."""

    column: str
    says: str  # what the marked rows are, e.g. "look like people (...)"
    line: int | None = None


@dataclass(frozen=True)
class FilterSpec:
    name: str
    expression: str
    keep: bool  # True: keep rows where it holds; False: drop rows where it holds
    line: int | None = None

    def polars_expr(self) -> pl.Expr:
        """The filter's condition; a row is skipped when this is True."""
        cond = pl.sql_expr(self.expression)
        if self.keep:
            return cond.fill_null(False).not_()
        return cond.fill_null(False)


@dataclass(frozen=True)
class Mapping:
    """A checked mapping: what the transform needs, nothing it must re-check."""

    path: str
    text: str
    timestamp: TimestampSpec
    visitor: VisitorSpec
    fields: dict[str, ValueSpec]  # payload field or "data.<key>" -> spec
    event_type: ValueSpec
    filters: tuple[FilterSpec, ...] = ()
    skip_warning: SkipWarning | None = None
    normalize: bool = False
    keep_bots: bool = False
    on_overflow: str = "reject"
    overflow: dict[str, str] = field(default_factory=dict)
    reader: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Identifies the mapping in checkpoints: any edit means a different import."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def data_keys(self) -> list[str]:
        return [k.split(".", 1)[1] for k in self.fields if k.startswith("data.")]

    def overflow_policy(self, target: str) -> str:
        if target in self.overflow:
            return self.overflow[target]
        if target.startswith("data.") and "data.*" in self.overflow:
            return self.overflow["data.*"]
        return self.on_overflow

    def source_columns(self) -> dict[str, int | None]:
        """Every source column the mapping reads, with the line that names it."""
        used: dict[str, int | None] = {}

        def add(col: str, line: int | None) -> None:
            used.setdefault(col, line)

        add(self.timestamp.column, self.timestamp.line)
        for col in self.visitor.columns:
            add(col, self.visitor.line)
        for col in (self.visitor.ip, self.visitor.user_agent, self.visitor.visit):
            if col:
                add(col, self.visitor.line)
        for spec in (*self.fields.values(), self.event_type):
            for col in spec.columns():
                add(col, spec.line)
        if self.skip_warning is not None:
            add(self.skip_warning.column, self.skip_warning.line)
        return used


# --------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    result: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (dict, list)):
            raise MappingError("a key must be a name, not a list or mapping", line=key_node.start_mark.line + 1)
        if key in result:
            raise MappingError(f"key {key!r} appears twice", line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        lines[str(key)] = key_node.start_mark.line + 1
    result["__lines__"] = lines
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _lines(node: dict[str, Any]) -> dict[str, int]:
    return node.get("__lines__", {})


def _plain(value: Any) -> Any:
    """Strip the line bookkeeping from a loaded YAML value."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "__lines__"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _preset(name: str) -> Path | None:
    """The shipped preset a bare name stands for (``plausible_events`` finds plausible-events.yaml)."""
    for stem in dict.fromkeys((name, name.replace("_", "-"), name.replace("-", "_"))):
        for suffix in (".yaml", ".yml"):
            candidate = MAPPINGS_DIR / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def preset_names() -> list[str]:
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))


def _is_path_like(name: str) -> bool:
    """Written as a path (``./ga4``, ``maps/x``, ``x.yaml``, ``~/m``): never a preset name."""
    return name.lower().endswith((".yaml", ".yml")) or "/" in name or "\\" in name or name.startswith(("~", "."))


def resolve_mapping(name: str) -> tuple[Path, str | None]:
    """(the mapping file ``-m NAME`` means, a note to show the user or None).

    The rule, so that an export folder named like a preset (``./ga4/``) never hides it:
    a name written as a path (with a ``/``, or ending in ``.yaml``/``.yml``, or
    starting with ``.`` or ``~``) is a file; a bare name is the preset of that name
    when there is one, else a file of that name. When a bare name is both a preset
    and a file here, the preset is used and the note says how to name the file.
    """
    path = Path(name).expanduser()
    preset = None if _is_path_like(name) else _preset(name)
    if preset is not None:
        note = None
        if path.is_file():
            note = f"-m {name}: using the preset {preset}; to use the file {name} here, write -m ./{name}"
        return preset, note
    if path.is_file():
        return path, None
    presets = ", ".join(preset_names()) or "none"
    if path.is_dir():
        raise MappingError(
            f"mapping {name!r} is a directory, not a mapping file; -m takes a mapping YAML file"
            f" or a preset name (presets: {presets})"
        )
    hint = _suggest(name, preset_names()) if not _is_path_like(name) else ""
    raise MappingError(f"mapping file {name!r} not found{hint} (presets: {presets})")


def resolve_mapping_path(name: str) -> Path:
    """A path, or the name of a preset shipped in ``mappings/`` (``ga4`` -> mappings/ga4.yaml)."""
    return resolve_mapping(name)[0]


def load_mapping(name: str) -> Mapping:
    """Read and check a mapping file or preset; raises MappingError with a line number."""
    path = resolve_mapping_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise MappingError("not UTF-8 text; save the mapping as UTF-8", path=str(path), line=line) from None
    except OSError as exc:
        raise MappingError(f"cannot read the mapping ({exc.strerror})", path=str(path)) from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, path: str = "<mapping>") -> Mapping:
    try:
        raw = yaml.load(text, Loader=_LineLoader)
    except MappingError as exc:
        raise MappingError(str(exc).split(": ", 1)[-1], path=path, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise MappingError(f"not valid YAML: {problem}", path=path, line=line) from None
    if not isinstance(raw, dict):
        raise MappingError("the mapping must be a YAML mapping (key: value lines)", path=path)
    return _MappingParser(raw, path, text).parse()


class _MappingParser:
    def __init__(self, raw: dict[str, Any], path: str, text: str) -> None:
        self.raw = raw
        self.path = path
        self.text = text
        self.top_lines = _lines(raw)

    def fail(self, message: str, line: int | None = None) -> MappingError:
        return MappingError(message, path=self.path, line=line)

    def parse(self) -> Mapping:
        raw = self.raw
        for key in raw:
            if key != "__lines__" and key not in _TOP_KEYS:
                raise self.fail(f"unknown key {key!r}{_suggest(key, _TOP_KEYS)}", self.top_lines.get(key))
        version = raw.get("version", 1)
        if version != 1:
            raise self.fail(f"version {version!r} is not supported (use 1)", self.top_lines.get("version"))
        fields = self.parse_fields(raw.get("fields"))
        on_overflow = self.parse_policy(raw.get("on_overflow", "reject"), "on_overflow")
        return Mapping(
            path=self.path,
            text=self.text,
            timestamp=self.parse_timestamp(raw.get("timestamp")),
            visitor=self.parse_visitor(raw.get("visitor")),
            fields=fields,
            event_type=self.parse_type(raw.get("type", "event")),
            filters=self.parse_filters(raw.get("filters")),
            skip_warning=self.parse_skip_warning(raw.get("skip_warning")),
            normalize=self.parse_bool(raw.get("normalize", False), "normalize"),
            keep_bots=self.parse_bool(raw.get("keep_bots", False), "keep_bots"),
            on_overflow=on_overflow,
            overflow=self.parse_overflow(raw.get("overflow"), fields),
            reader=self.parse_reader(raw.get("reader")),
            lines=dict(self.top_lines),
        )

    def parse_bool(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, not {value!r}", self.top_lines.get(key))
        return value

    def parse_policy(self, value: Any, key: str, line: int | None = None) -> str:
        if value not in OVERFLOW_POLICIES:
            raise self.fail(
                f"{key} must be one of {', '.join(OVERFLOW_POLICIES)}, not {value!r}",
                line or self.top_lines.get(key),
            )
        return str(value)

    def parse_reader(self, node: Any) -> dict[str, Any]:
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise self.fail("reader must be a mapping", self.top_lines.get("reader"))
        lines = _lines(node)
        for key in node:
            if key != "__lines__" and key not in _READER_KEYS:
                raise self.fail(f"unknown reader option {key!r}{_suggest(key, _READER_KEYS)}", lines.get(key))
            if key in _READER_FLAGS and not isinstance(node[key], bool):
                raise self.fail(f"reader option {key} must be true or false, not {node[key]!r}", lines.get(key))
            if key in _READER_KEYS - _READER_FLAGS and not isinstance(node[key], str):
                raise self.fail(f"reader option {key} must be text (quote it), not {node[key]!r}", lines.get(key))
        return _plain(node)

    # -- timestamp -------------------------------------------------------------------
    def parse_timestamp(self, node: Any) -> TimestampSpec:
        line = self.top_lines.get("timestamp")
        if node is None:
            raise self.fail(
                "no timestamp: add `timestamp: {column: <col>, format: iso8601}` "
                "(without it Umami stores every event at the time of the import)"
            )
        if isinstance(node, str):
            node = {"column": node, "__lines__": {}}
        if not isinstance(node, dict) or "column" not in node:
            raise self.fail("timestamp needs a column: `timestamp: {column: created_at}`", line)
        lines = _lines(node)
        allowed = {"column", "format", "unit", "timezone"}
        for key in node:
            if key != "__lines__" and key not in allowed:
                raise self.fail(f"unknown timestamp option {key!r}{_suggest(key, allowed)}", lines.get(key))
        fmt = str(node.get("format", "iso8601"))
        unit = node.get("unit")
        tz = node.get("timezone")
        if fmt == "epoch":
            if unit not in EPOCH_UNITS:
                raise self.fail(
                    "an epoch timestamp needs an explicit unit: s, ms, us or ns "
                    "(Umami takes seconds; a millisecond value sent as seconds lands in the year 56134)",
                    lines.get("unit", lines.get("format", line)),
                )
        elif unit is not None:
            raise self.fail("unit applies only to format: epoch", lines.get("unit"))
        if "%Z" in fmt:
            raise self.fail(
                "%Z (a zone NAME like CET) cannot be converted reliably: match it as literal text "
                "and declare `timezone:`, or use %z for numeric offsets like +01:00",
                lines.get("format", line),
            )
        if fmt not in TIMESTAMP_FORMATS and "%" not in fmt:
            raise self.fail(
                f"timestamp format {fmt!r} is not iso8601, epoch or a strftime pattern like '%Y-%m-%d %H:%M:%S'",
                lines.get("format", line),
            )
        if tz is not None:
            try:
                zoneinfo.ZoneInfo(str(tz))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise self.fail(
                    f"unknown timezone {tz!r}: use an IANA name like UTC or Europe/Berlin",
                    lines.get("timezone"),
                ) from None
        spec = TimestampSpec(
            column=str(node["column"]),
            format=fmt,
            unit=unit,
            timezone=str(tz) if tz is not None else None,
            line=lines.get("column", line),
        )
        if spec.is_strftime and not spec.pattern_has_offset and spec.timezone is None:
            raise self.fail(
                f"the pattern {fmt!r} gives naive times: declare the zone they are in with "
                "`timezone: UTC` (or e.g. Europe/Berlin); a naive time is never guessed",
                lines.get("format", line),
            )
        return spec

    # -- visitor ---------------------------------------------------------------------
    def parse_visitor(self, node: Any) -> VisitorSpec:
        line = self.top_lines.get("visitor")
        if node is None:
            raise self.fail(
                "no visitor: name the column(s) that identify a visitor, e.g. "
                "`visitor: {columns: [user_id]}`. Without an id Umami merges every event sent "
                "from this machine into ONE session per month. If the source has no visitor "
                "column, choose a strategy explicitly: `visitor: {strategy: per_row}` (each row "
                "its own visitor) or `visitor: {strategy: ip_ua_day, ip: <col>, user_agent: <col>}`"
            )
        if isinstance(node, str):
            node = {"columns": [node], "__lines__": {}}
        if not isinstance(node, dict):
            raise self.fail("visitor must be a mapping", line)
        lines = _lines(node)
        allowed = {"columns", "strategy", "ip", "user_agent", "visit"}
        for key in node:
            if key != "__lines__" and key not in allowed:
                raise self.fail(f"unknown visitor option {key!r}{_suggest(key, allowed)}", lines.get(key))
        strategy = node.get("strategy", "columns")
        if strategy not in VISITOR_STRATEGIES:
            raise self.fail(
                f"visitor strategy must be one of {', '.join(VISITOR_STRATEGIES)}, not {strategy!r}",
                lines.get("strategy", line),
            )
        columns = node.get("columns", [])
        if isinstance(columns, str):
            columns = [columns]
        if strategy == "columns" and not columns:
            raise self.fail("visitor needs `columns: [<col>, ...]` or a strategy", line)
        if strategy == "ip_ua_day" and not (node.get("ip") and node.get("user_agent")):
            raise self.fail("strategy ip_ua_day needs `ip: <col>` and `user_agent: <col>`", line)
        return VisitorSpec(
            strategy=strategy,
            columns=tuple(str(c) for c in columns),
            ip=node.get("ip"),
            user_agent=node.get("user_agent"),
            visit=str(node["visit"]) if node.get("visit") else None,
            line=lines.get("columns", line),
        )

    # -- fields ----------------------------------------------------------------------
    def parse_fields(self, node: Any) -> dict[str, ValueSpec]:
        line = self.top_lines.get("fields")
        if node is None:
            raise self.fail("no fields: map at least `url` (pageviews) or `name` (custom events)")
        if not isinstance(node, dict):
            raise self.fail("fields must be a mapping of payload field -> source", line)
        lines = _lines(node)
        out: dict[str, ValueSpec] = {}
        for target, value in node.items():
            if target == "__lines__":
                continue
            tline = lines.get(target)
            self.check_target(str(target), tline)
            out[str(target)] = self.parse_spec(value, str(target), tline)
        return out

    def check_target(self, target: str, line: int | None) -> None:
        if target == "id":
            raise self.fail("`id` comes from the `visitor:` section, not from fields", line)
        if target in ("type", "timestamp"):
            raise self.fail(f"`{target}` is a top-level key, not a field", line)
        if target == "data":
            raise self.fail("map event properties one by one: `data.<key>: <column>`", line)
        if target.startswith("data."):
            key = target[5:]
            if not key or len(key) > DATA_KEY_LIMIT:
                raise self.fail(f"data key must be 1 to {DATA_KEY_LIMIT} characters", line)
            return
        if target not in PAYLOAD_STRING_FIELDS and target not in LOCATION_FIELDS:
            choices = [f for f in (*PAYLOAD_STRING_FIELDS, *LOCATION_FIELDS) if f != "id"]
            raise self.fail(
                f"unknown payload field {target!r}{_suggest(target, choices)} "
                f"(fields: {', '.join(choices)}, data.<key>)",
                line,
            )

    def parse_spec(self, value: Any, target: str, line: int | None) -> ValueSpec:
        if isinstance(value, str):
            return ValueSpec(kind="column", column=value, line=line)
        if isinstance(value, list):
            return ValueSpec(
                kind="coalesce",
                parts=tuple(self.parse_spec(v, target, line) for v in value),
                line=line,
            )
        if not isinstance(value, dict):
            if value is None or isinstance(value, (int, float, bool)):
                return ValueSpec(kind="const", const=value, line=line)
            raise self.fail(f"{target}: cannot use {value!r} as a source", line)
        lines = _lines(value)
        keys = {k for k in value if k != "__lines__"}
        sources = keys & _SPEC_KEYS
        unknown = keys - _SPEC_KEYS - _SPEC_MODIFIERS
        if unknown:
            bad = sorted(unknown)[0]
            raise self.fail(
                f"{target}: unknown option {bad!r}{_suggest(bad, _SPEC_KEYS | _SPEC_MODIFIERS)}",
                lines.get(bad, line),
            )
        if len(sources) != 1:
            raise self.fail(
                f"{target}: give exactly one of column, const, template, coalesce "
                f"(found {', '.join(sorted(sources)) or 'none'})",
                line,
            )
        kind = sources.pop()
        dtype = value.get("type")
        if dtype is not None and dtype not in DATA_TYPES:
            raise self.fail(f"{target}: type must be one of {', '.join(DATA_TYPES)}", lines.get("type", line))
        if dtype is not None and not target.startswith("data."):
            raise self.fail(f"{target}: type applies only to data.<key> fields", lines.get("type", line))
        part = value.get("part")
        if part is not None and part not in URL_PARTS:
            raise self.fail(
                f"{target}: part must be one of {', '.join(URL_PARTS)} (a piece of a URL), not {part!r}",
                lines.get("part", line),
            )
        case = value.get("case")
        if case is not None and case not in CASES:
            raise self.fail(f"{target}: case must be lower or upper", lines.get("case", line))
        value_map = value.get("map")
        if value_map is not None:
            if not isinstance(value_map, dict):
                raise self.fail(f"{target}: map must be a mapping of old: new", lines.get("map", line))
            plain_map = _plain(value_map)
            odd = [k for k in plain_map if not isinstance(k, str)]
            if odd:
                raise self.fail(
                    f"{target}: map key {odd[0]!r} is not text: YAML reads unquoted true/false/yes/"
                    f"no/numbers as other types; quote it, e.g. '{odd[0]}': ...",
                    lines.get("map", line),
                )
            value_map = plain_map
        scale = value.get("scale")
        if scale is not None and not isinstance(scale, (int, float)):
            raise self.fail(f"{target}: scale must be a number (e.g. 0.01 for cents)", lines.get("scale", line))
        if scale is not None and not target.startswith("data."):
            raise self.fail(f"{target}: scale applies only to data.<key> numbers", lines.get("scale", line))
        if target == "data.revenue" and dtype not in (None, "number", "integer"):
            raise self.fail(
                "data.revenue must be a number (Umami's Revenue report needs a JSON number)",
                lines.get("type", line),
            )
        common = {
            "value_map": value_map,
            "default": value.get("default"),
            "dtype": dtype,
            "scale": float(scale) if scale is not None else None,
            "case": case,
            "part": part,
            "line": line,
        }
        if kind == "column":
            return ValueSpec(kind="column", column=str(value["column"]), **common)
        if kind == "const":
            return ValueSpec(kind="const", const=value["const"], **common)
        if kind == "template":
            template = str(value["template"])
            if not TEMPLATE_PLACEHOLDER.search(template):
                raise self.fail(f"{target}: template has no {{column}} placeholder; use const", line)
            return ValueSpec(kind="template", template=template, **common)
        parts = value["coalesce"]
        if not isinstance(parts, list) or not parts:
            raise self.fail(f"{target}: coalesce takes a list of columns or sources", line)
        return ValueSpec(kind="coalesce", parts=tuple(self.parse_spec(p, target, line) for p in parts), **common)

    def parse_type(self, node: Any) -> ValueSpec:
        line = self.top_lines.get("type")
        if node in ("event", "identify"):
            return ValueSpec(kind="const", const=node, line=line)
        if isinstance(node, str):
            raise self.fail(f"type must be event or identify (or a source spec), not {node!r}", line)
        return self.parse_spec(node, "type", line)

    def parse_filters(self, node: Any) -> tuple[FilterSpec, ...]:
        if node is None:
            return ()
        line = self.top_lines.get("filters")
        if not isinstance(node, list):
            raise self.fail("filters must be a list of {name, keep|drop}", line)
        out = []
        for i, item in enumerate(node, 1):
            if not isinstance(item, dict):
                raise self.fail(f"filter {i} must be a mapping {{name, keep|drop}}", line)
            lines = _lines(item)
            iline = min(lines.values()) if lines else line
            has_keep, has_drop = "keep" in item, "drop" in item
            if has_keep == has_drop:
                raise self.fail(f"filter {i} needs exactly one of keep: or drop: (an SQL condition)", iline)
            expression = str(item["keep"] if has_keep else item["drop"])
            try:
                pl.sql_expr(expression)
            except Exception as exc:
                raise self.fail(f"filter {i}: {expression!r} is not a valid SQL condition: {exc}", iline) from None
            name = str(item.get("name") or expression)
            out.append(FilterSpec(name=name, expression=expression, keep=has_keep, line=iline))
        return tuple(out)

    def parse_skip_warning(self, node: Any) -> SkipWarning | None:
        if node is None:
            return None
        line = self.top_lines.get("skip_warning")
        if not isinstance(node, dict) or not isinstance(node.get("column"), str):
            raise self.fail("skip_warning must be {column: COLUMN, says: TEXT}", line)
        unknown = set(node) - {"column", "says", "__lines__"}
        if unknown:
            raise self.fail(f"skip_warning: unknown key {sorted(unknown)[0]!r} (it takes column and says)", line)
        return SkipWarning(column=node["column"], says=str(node.get("says") or f"have {node['column']}"), line=line)

    def parse_overflow(self, node: Any, fields: dict[str, ValueSpec]) -> dict[str, str]:
        if node is None:
            return {}
        line = self.top_lines.get("overflow")
        if not isinstance(node, dict):
            raise self.fail("overflow must map field -> reject|truncate", line)
        lines = _lines(node)
        out = {}
        limited = set(FIELD_LIMITS) | {"title", "url", "referrer", "data.*"} | set(fields)
        for key, value in node.items():
            if key == "__lines__":
                continue
            if key not in limited:
                raise self.fail(f"overflow: unknown field {key!r}{_suggest(key, limited)}", lines.get(key))
            if key == "id":
                raise self.fail("overflow: ids longer than 50 are hashed, never cut", lines.get(key))
            if key in ("url", "title", "referrer"):
                raise self.fail(
                    f"overflow: Umami cuts {key} at 500 characters itself; there is nothing to set "
                    "(utm_* values over 255 in the url are always rejected)",
                    lines.get(key),
                )
            out[key] = self.parse_policy(value, f"overflow.{key}", lines.get(key))
        return out


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_against_schema(mapping: Mapping, schema: dict[str, pl.DataType], source: str) -> None:
    """Every column the mapping reads exists in the source; types fit the timestamp format.

    Runs on the schema alone (a CSV header, Parquet metadata) so a misspelt
    column fails before any row is read.
    """
    names = list(schema)
    for column, line in mapping.source_columns().items():
        if column not in schema:
            raise MappingError(
                f"column {column!r} is not in {source}{_suggest(column, names)}; "
                f"its columns are: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''}",
                path=mapping.path,
                line=line,
            )
    for flt in mapping.filters:
        for column in _sql_columns(flt.expression):
            if column not in schema:
                raise MappingError(
                    f"filter {flt.name!r} uses column {column!r}, which is not in {source}{_suggest(column, names)}",
                    path=mapping.path,
                    line=flt.line,
                )
    ts = mapping.timestamp
    dtype = schema[ts.column]
    naive = (isinstance(dtype, pl.Datetime) and dtype.time_zone is None) or dtype == pl.Date
    if naive and ts.timezone is None:
        raise MappingError(
            f"column {ts.column!r} holds naive {dtype} values in {source}: declare their zone with "
            "`timezone:` under timestamp (a naive time is never guessed)",
            path=mapping.path,
            line=ts.line,
        )
    if dtype.is_numeric() and ts.format != "epoch":
        raise MappingError(
            f"column {ts.column!r} is numeric ({dtype}) in {source}: use `format: epoch` with a unit",
            path=mapping.path,
            line=ts.line,
        )


def check_schemas_agree(mapping: Mapping, schemas: dict[str, dict[str, pl.DataType]]) -> list[str]:
    """Columns the mapping reads whose type differs between the files of one run.

    Each file is otherwise checked alone, and a fix suggested for one (``format:
    epoch`` for a numeric timestamp) would break the others. A timestamp column
    that is a number in some files and not in others is a MappingError naming every
    file and type; any other difference is returned as a note (a ``data.<key>``
    without ``type:`` would be sent as a number from one file and text from another).
    """
    notes = []
    for column, line in mapping.source_columns().items():
        by_type: dict[str, list[str]] = {}
        for path, schema in schemas.items():
            if column in schema:
                by_type.setdefault(str(schema[column]), []).append(path)
        if len(by_type) < 2:
            continue
        listing = "; ".join(f"{dtype} in {', '.join(paths)}" for dtype, paths in by_type.items())
        numeric = {dtype.is_numeric() for dtype in _dtypes(schemas, column)}
        if column == mapping.timestamp.column and len(numeric) > 1:
            raise MappingError(
                f"column {column!r} has a different type in different files: {listing}. No one timestamp "
                "format reads them all (a number needs `format: epoch` with a unit, text or a datetime "
                "does not): convert the files to one type, or import each group of files with its own mapping",
                path=mapping.path,
                line=line,
            )
        untyped = [
            target
            for target, spec in mapping.fields.items()
            if target.startswith("data.") and spec.dtype is None and column in spec.columns()
        ]
        fix = f": set `type:` on {', '.join(untyped)} so every file sends the same JSON type" if untyped else ""
        notes.append(f"column {column!r} has a different type in different files ({listing}){fix}")
    return notes


def _dtypes(schemas: dict[str, dict[str, pl.DataType]], column: str) -> list[pl.DataType]:
    return [schema[column] for schema in schemas.values() if column in schema]


def _sql_columns(expression: str) -> list[str]:
    try:
        return pl.sql_expr(expression).meta.root_names()
    except Exception:
        return []
