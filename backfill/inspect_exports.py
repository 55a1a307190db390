"""``backfill inspect`` on an export format we read: name it, its preset and the next command.

Every format plugin (``backfill.sources.PLUGINS``) may offer a ``sniff`` and a
``preset``; this module asks them all, so a plugin added later is recognised
with no change here. A file, a folder (the folder itself, then its files) or a
glob is looked at; the format most of its files belong to wins.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from .mapping import MAPPINGS_DIR, resolve_mapping
from .sources import PLUGINS, FormatPlugin
from .sources.compression import COMPRESSION_SUFFIXES

#: Files of a folder or glob looked at (sorted); enough to see what an export folder holds.
MAX_FILES_SNIFFED = 50


@dataclass
class Recognised:
    """An export format found at a path, and which of its files belong to it."""

    plugin: FormatPlugin
    source: str  # what the user named
    files: list[str] = field(default_factory=list)  # the export's files ([source] for a ZIP or folder)
    others: list[str] = field(default_factory=list)  # files beside them that are not part of it
    whole: bool = False  # the folder as a whole is the export (a folder of unzipped tables)

    @property
    def selection(self) -> list[str]:
        """What to pass as FILES: the folder, a glob matching exactly the export's files, or every file
        (never cut short: the command is pasted as it is)."""
        if self.whole or (not self.others and os.path.isdir(self.source)) or self.files == [self.source]:
            return [self.source]
        pattern = _common_glob(self.files)
        if pattern:
            return [pattern]
        return list(self.files)


#: What a reader needs besides the file to tell its format (``--log-format``, ``--encoding``).
ReaderHints = tuple[tuple[tuple[str, str], ...], str | None]
NO_HINTS: ReaderHints = ((), None)


def recognise(source: str, fmt: str | None = None, hints: ReaderHints = NO_HINTS) -> Recognised | None:
    """The export format at ``source``, by the plugins' sniffs (or the one ``fmt`` names)."""
    plugins = [PLUGINS[fmt]] if fmt in PLUGINS else [p for p in PLUGINS.values() if p.sniff is not None]
    if fmt is not None and fmt not in PLUGINS:
        return None
    if os.path.isdir(source):
        for plugin in plugins:
            if plugin.sniff is not None and _sniff(plugin, source, hints):
                return Recognised(plugin, source, [source], whole=True)
    files = _files(source)
    best: Recognised | None = None
    for plugin in plugins:
        hits = [f for f in files if (plugin.sniff is None and plugin.explain is None) or _sniff(plugin, f, hints)]
        if hits and (best is None or len(hits) > len(best.files)):
            best = Recognised(plugin, source, hits, [f for f in files if f not in hits])
    return best


def _sniff(plugin: FormatPlugin, path: str, hints: ReaderHints = NO_HINTS) -> bool:
    """A plugin's sniff that misbehaves (raises) counts as "not this format": inspect must answer.
    With reader options (``--log-format``), a plugin that can explain a file is asked with them."""
    try:
        if plugin.explain is not None and (hints[0] or hints[1]) and os.path.isfile(path):
            return plugin.explain(path, *hints).ok
        return bool(plugin.sniff and plugin.sniff(path))
    except Exception:
        return False


def unrecognised_reasons(source: str, fmt: str | None, hints: ReaderHints = NO_HINTS) -> list[str]:
    """Why a file that a plugin reads by its name (``access.log``) is not that format, from the
    plugin itself, with the option that lets it read the file; empty when no plugin claims it."""
    lines: list[str] = []
    for path in _files(source)[:3]:
        for plugin in PLUGINS.values():
            if plugin.explain is None or (fmt is not None and fmt != plugin.name):
                continue
            if not _claims(plugin, path):
                continue
            try:
                found = plugin.explain(path, *hints)
            except Exception:
                continue
            if not found.ok:
                lines += found.lines
    if lines:
        lines.append(
            "If it is a web server log in the server's own format, name that format: "
            f"backfill inspect {shlex.quote(source)} --log-format '<the log_format / LogFormat line from the "
            "server config>' (or a name: --log-format combined)"
        )
    return lines


def _claims(plugin: FormatPlugin, path: str) -> bool:
    """Whether a file's name is one the plugin reads (``access.log``, ``access.log.2.gz``)."""
    name = os.path.basename(path).lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return os.path.splitext(name)[1] in plugin.extensions


def _files(source: str) -> list[str]:
    expanded = os.path.expanduser(source)
    if glob.has_magic(expanded):
        found = [p for p in sorted(glob.glob(expanded, recursive=True)) if os.path.isfile(p)]
    elif os.path.isdir(expanded):
        found = []
        for directory, dirnames, filenames in os.walk(expanded):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(os.path.join(directory, n) for n in sorted(filenames) if not n.startswith("."))
            if len(found) >= MAX_FILES_SNIFFED:
                break
    else:
        found = [expanded] if os.path.isfile(expanded) else []
    return found[:MAX_FILES_SNIFFED]


def _common_glob(files: list[str]) -> str | None:
    """``dir/events_*`` for dir/events_1.json.gz, dir/events_2.parquet: one folder, a shared prefix."""
    folders = {os.path.dirname(f) for f in files}
    if len(folders) != 1:
        return None
    names = [os.path.basename(f) for f in files]
    prefix = os.path.commonprefix(names)  # noqa: RUF071 - a prefix of file names, not of paths
    if len(names) == 1 or not prefix:
        return None
    folder = folders.pop()
    for candidate in (prefix.rstrip("0123456789"), prefix):  # events_* rather than events_2024030*
        pattern = os.path.join(folder, candidate + "*")
        if candidate and sorted(glob.glob(pattern)) == sorted(files):
            return pattern
    return None


# --------------------------------------------------------------------------- the preset's summary

_SHORT_START = re.compile(r"^#\s*In short\b", re.IGNORECASE)


def preset_summary(preset: str) -> list[str]:
    """What a preset keeps and drops: the "# In short" block of its opening comment, else
    the comment's first paragraph (a preset added later need not have the block)."""
    try:
        path = resolve_mapping(preset)[0]
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError, Exception):  # a missing preset: say so, never fail inspect
        return [f"(the preset {preset} is not in {MAPPINGS_DIR})"]
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line)
    start = next((i for i, line in enumerate(comment) if _SHORT_START.match(line)), None)
    if start is not None:
        block = []
        for line in comment[start + 1 :]:
            text = line[1:].rstrip()
            if not text.strip():
                break
            block.append(text)
        return textwrap.dedent("\n".join(block)).splitlines()
    paragraph = []
    for line in comment:
        text = line.lstrip("#").strip()
        if not text and paragraph:
            break
        if text:
            paragraph.append(text)
    return paragraph


def _preset_file(preset: str) -> str:
    try:
        return resolve_mapping(preset)[0].name
    except Exception:
        return f"{preset}.yaml"


def preset_text(preset: str) -> str:
    """The preset's YAML, to save and edit (``inspect SOURCE > my-mapping.yaml``)."""
    try:
        return resolve_mapping(preset)[0].read_text(encoding="utf-8")
    except Exception:
        return ""


# --------------------------------------------------------------------------- what inspect prints


def export_report(found: Recognised, hints: ReaderHints = NO_HINTS) -> tuple[str, str]:
    """(the text for stderr, the mapping for stdout) of a recognised export."""
    plugin = found.plugin
    details, flags = _details(found, hints)
    if hints[1]:
        flags += ["--encoding", hints[1]]
    files = shlex.join([*found.selection])
    lines = [f"{found.source}: this is a {plugin.description}"]
    lines.extend(f"  {line}" for line in details)
    if found.others:
        shown = ", ".join(os.path.basename(f) for f in found.others[:5])
        lines.append(
            f"  {len(found.files)} of {len(found.files) + len(found.others)} files are this export;"
            f" not part of it: {shown}{' ...' if len(found.others) > 5 else ''}"
        )
    lines.append("")
    extra = (" " + shlex.join(flags)) if flags else ""
    if plugin.preset:
        lines.append(f"next: backfill validate {files} -m {plugin.preset}{extra}")
        lines.append("then: backfill import (same files and -m, with --host and --website), then backfill verify")
        lines.append("")
        lines.append(
            f"what the {plugin.preset} preset keeps and drops ({Path('mappings') / (plugin.preset + '.yaml')}):"
        )
        lines.extend(f"  {line}" for line in preset_summary(plugin.preset))
        mapping = preset_text(plugin.preset)
        header = (
            f"# {found.source} is a {plugin.description}.\n"
            f"# `-m {plugin.preset}` uses the preset below as it is; save this and edit it only to change it.\n"
        )
        return "\n".join(lines), header + mapping if mapping else ""
    lines.append(
        f"next: write a mapping for the columns below, then backfill validate {files} -m MAPPING "
        f"--format {plugin.name}{extra}"
    )
    return "\n".join(lines), ""


def _details(found: Recognised, hints: ReaderHints) -> tuple[list[str], list[str]]:
    """What the plugin says of the export's first file (the exact variant, what a run needs)."""
    plugin = found.plugin
    first = next((f for f in found.files if os.path.isfile(f)), None)
    if plugin.explain is None or first is None:
        return [], []
    try:
        said = plugin.explain(first, *hints)
    except Exception:
        return [], []
    return said.lines, said.flags
