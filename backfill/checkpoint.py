"""The checkpoint: where a run stands, saved atomically so a crash never leaves half a file.

Umami's ``/api/batch`` is not idempotent, so resuming must know exactly which
rows were already sent. Positions are ``_seq`` values of the prepared stream
(the same on every run over the same inputs), kept per *lane*: each lane has at
most one request on the wire, so "the last finished row of lane l" plus "the
batch of lane l on the wire" describe the send phase completely.

Layout of the JSON file (credentials are never stored)::

    {
      "version": 1,
      "fingerprint": {...},            # what the run was made of (inputs, mapping, host, ...)
      "lanes": 64,
      "phase": "preparing" | "sending" | "complete",
      "prepared": {...},               # opaque to this module: filled by the prepare stage
      "started_at": "2024-03-01T08:00:00Z", "updated_at": "...",
      "runs": [{...}, ...],            # small per-run summaries, newest last
      "lane_acked": [-1, ...],         # per lane: _seq of the last row whose batch is finished
      "lane_inflight": [null | [first_seq, last_seq, n_rows], ...],
      "in_doubt_ranges": [[lane, first_seq, last_seq, n_rows], ...],
      "send_ledger": {...},            # Ledger.to_dict(), cumulative over resumed runs
      "rejects_offset": 0,             # bytes of the rejects file this checkpoint covers
      "in_doubt_offset": 0,            # bytes of the in-doubt file this checkpoint covers
      "endpoint": "batch" | "send"     # the HTTP sink's collection endpoint, once chosen (optional)
    }

A range ``[lane, first, last, n]`` means "the n rows of that lane whose
``_seq`` lies in first..last" (a lane's positions are not contiguous).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ConfigError, SourceError
from .ledger import Ledger

__all__ = [
    "Checkpoint",
    "compare_fingerprint",
    "fingerprint_files",
    "hash_text",
    "utc_now",
    "write_atomically",
]

CHECKPOINT_VERSION = 1
PHASES = ("preparing", "sending", "complete")
#: Older run summaries are dropped so the file stays small however often a run resumes.
MAX_RUNS_KEPT = 50

#: How fingerprint components are named in messages; unknown keys use their own name.
_COMPONENT_LABELS: dict[str, str] = {
    "mapping": "the mapping",
    "mapping_hash": "the mapping",
    "host": "the host",
    "website": "the website",
    "lanes": "the number of lanes",
    "user_agent": "the user agent",
    "filters": "the filters",
    "since": "--since",
    "until": "--until",
    "limit": "--limit",
}
#: Components whose values are digests: saying "changed" is all that helps.
_OPAQUE_COMPONENTS = frozenset({"mapping", "mapping_hash", "filters"})
_FILE_LIST_COMPONENTS = frozenset({"files", "inputs"})


def utc_now() -> str:
    """ISO 8601 time in UTC with a Z suffix, as stored in ``started_at``/``updated_at``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hash_text(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8): a mapping's identity in the fingerprint."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_files(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Size and modification time of each input, so an edited input is noticed on resume.

    Raises:
        SourceError: an input cannot be examined.
    """
    entries = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read the input file ({exc.strerror})") from exc
        entries.append({"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return entries


def compare_fingerprint(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Explain, one sentence each, what differs between a checkpoint's fingerprint and now.

    An empty list means the run may resume. The sentences are meant for the
    user, who then either restores the inputs or starts over with --restart.
    """
    changes: list[str] = []
    for key in _ordered_keys(saved, current):
        label = _COMPONENT_LABELS.get(key, f"the {key}")
        if key not in current:
            changes.append(f"{label} was part of the checkpoint but is not given now")
        elif key not in saved:
            changes.append(f"{label} is given now but was not part of the checkpoint")
        elif saved[key] == current[key]:
            continue
        elif key in _FILE_LIST_COMPONENTS:
            changes.extend(_compare_file_lists(saved[key], current[key]))
        elif key in _OPAQUE_COMPONENTS or not _is_short_scalar(saved[key], current[key]):
            changes.append(f"{label} changed")
        else:
            changes.append(f"{label} changed from {saved[key]} to {current[key]}")
    return changes


def _ordered_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = list(saved)
    keys.extend(k for k in current if k not in saved)
    return keys


def _is_short_scalar(*values: Any) -> bool:
    return all(isinstance(v, str | int | float | bool) and len(str(v)) <= 120 for v in values)


def _compare_file_lists(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """Per-file explanations; positions matter because rows refer to files by index."""
    old = {str(f["path"]): f for f in saved}
    new = {str(f["path"]): f for f in current}
    changes = [f"input {p} is no longer among the inputs" for p in old if p not in new]
    changes += [f"input {p} was added since the checkpoint" for p in new if p not in old]
    for path, before in old.items():
        after = new.get(path)
        if after is None:
            continue
        if before.get("size") != after.get("size"):
            changes.append(
                f"input {path} changed size {before.get('size')} -> {after.get('size')} bytes since the checkpoint"
            )
        elif before.get("mtime_ns") != after.get("mtime_ns"):
            changes.append(f"input {path} was modified since the checkpoint (same size)")
    same_set = old.keys() == new.keys()
    if same_set and [str(f["path"]) for f in saved] != [str(f["path"]) for f in current]:
        changes.append("the inputs are the same files in a different order")
    return changes


@dataclass
class Checkpoint:
    """Everything a resumed run needs; see the module docstring for the JSON layout."""

    fingerprint: dict[str, Any]
    lanes: int
    phase: str = "preparing"
    prepared: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)
    runs: list[dict[str, Any]] = field(default_factory=list)
    lane_acked: list[int] = field(default_factory=list)
    lane_inflight: list[list[int] | None] = field(default_factory=list)
    in_doubt_ranges: list[list[int]] = field(default_factory=list)
    send_ledger: Ledger = field(default_factory=Ledger)
    rejects_offset: int = 0
    in_doubt_offset: int = 0
    #: The collection endpoint the HTTP sink chose (``batch``/``send``); None until one answered.
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.lanes < 1:
            raise ValueError("a checkpoint needs at least one lane")
        if not self.lane_acked:
            self.lane_acked = [-1] * self.lanes
        if not self.lane_inflight:
            self.lane_inflight = [None] * self.lanes

    @classmethod
    def new(cls, fingerprint: dict[str, Any], lanes: int) -> Checkpoint:
        """A fresh checkpoint: nothing prepared, nothing sent."""
        return cls(fingerprint=dict(fingerprint), lanes=lanes)

    @property
    def in_doubt_rows(self) -> int:
        """Rows whose fate is unknown according to ``in_doubt_ranges``."""
        return sum(r[3] for r in self.in_doubt_ranges)

    def add_run(self, summary: dict[str, Any]) -> None:
        """Remember a short summary of one run (the newest ``MAX_RUNS_KEPT`` are kept)."""
        self.runs.append(summary)
        del self.runs[:-MAX_RUNS_KEPT]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "lanes": self.lanes,
            "phase": self.phase,
            "prepared": self.prepared,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "runs": self.runs,
            "lane_acked": self.lane_acked,
            "lane_inflight": self.lane_inflight,
            "in_doubt_ranges": self.in_doubt_ranges,
            "send_ledger": self.send_ledger.to_dict(),
            "rejects_offset": self.rejects_offset,
            "in_doubt_offset": self.in_doubt_offset,
        } | ({"endpoint": self.endpoint} if self.endpoint else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        """Rebuild from JSON; raises ValueError/KeyError/TypeError on a malformed document."""
        if data.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {data.get('version')!r}")
        lanes = int(data["lanes"])
        checkpoint = cls(
            fingerprint=dict(data["fingerprint"]),
            lanes=lanes,
            phase=str(data["phase"]),
            prepared=dict(data.get("prepared") or {}),
            started_at=str(data["started_at"]),
            updated_at=str(data["updated_at"]),
            runs=list(data.get("runs") or []),
            lane_acked=[int(v) for v in data["lane_acked"]],
            lane_inflight=[_int_list(v) if v is not None else None for v in data["lane_inflight"]],
            in_doubt_ranges=[_int_list(r) for r in data.get("in_doubt_ranges") or []],
            send_ledger=Ledger.from_dict(data.get("send_ledger") or {}),
            rejects_offset=int(data.get("rejects_offset", 0)),
            in_doubt_offset=int(data.get("in_doubt_offset", 0)),
            endpoint=str(data["endpoint"]) if data.get("endpoint") else None,
        )
        checkpoint.validate()
        return checkpoint

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other."""
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}")
        if len(self.lane_acked) != self.lanes or len(self.lane_inflight) != self.lanes:
            raise ValueError(f"per-lane lists do not have {self.lanes} entries")
        for entry in self.lane_inflight:
            if entry is not None and len(entry) != 3:
                raise ValueError(f"bad in-flight entry {entry!r}")
        for entry in self.in_doubt_ranges:
            if len(entry) != 4 or not 0 <= entry[0] < self.lanes:
                raise ValueError(f"bad in-doubt range {entry!r}")
        if self.rejects_offset < 0 or self.in_doubt_offset < 0:
            raise ValueError("negative file offset")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint | None:
        """The checkpoint at ``path``, or None when there is none yet.

        Raises:
            ConfigError: the file exists but cannot be read or makes no sense.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the checkpoint ({exc.strerror}); fix it or use --restart") from exc
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{path}: the checkpoint is damaged ({exc}); use --restart to start over"
                " (rows already sent would be sent again: check Umami first)"
            ) from exc

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: temp file in the same directory, fsync, rename, fsync the directory.

        After a crash at any point the path holds either the previous or the new
        checkpoint, never a mix, which is what makes "resume" trustworthy.
        """
        write_atomically(Path(path), self.to_bytes())

    def to_bytes(self) -> bytes:
        """The checkpoint as saved: a snapshot that can be written after the state moves on."""
        self.updated_at = utc_now()
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old or the new content."""
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _int_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, found {value!r}")
    return [int(v) for v in value]
