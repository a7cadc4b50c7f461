"""The run history: one compact JSON line per task run, for ``stats`` and ``explain``.

The file is ``<cache dir>/history.jsonl``. Each run appends one line with a single ``write``
on an ``O_APPEND`` descriptor, so concurrent runs never interleave within a line, and it costs
one ``open``/``write``/``close`` on the hit path. A line cut short (a crash, a full disk) is
skipped when read; the record appended after it is still found.

One cache directory serves every project on the machine, so each record names its project
(``project_id``: a digest of the root's absolute path; the history never leaves the machine)
and ``stats``, ``explain`` and ``cache ls`` read the current project's unless asked for all
(issue 10). Records written before that name none and show only under ``--all-projects``.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from cachehook._memo import HISTORY_LIMIT
from cachehook.facts import TaskFinished
from cachehook.hashing import digest_bytes

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from cachehook.facts import Fact, RunResult

__all__ = [
    "HISTORY_FILE",
    "MAX_HISTORY_BYTES",
    "HistoryEntry",
    "HistoryWriter",
    "append_result",
    "history_path",
    "project_id",
    "read_history",
]

HISTORY_FILE = "history.jsonl"
# About 100,000 runs; past this the oldest half is dropped (``stats`` "all time" is then
# "since the oldest kept run").
MAX_HISTORY_BYTES = HISTORY_LIMIT  # one figure, kept in _memo, which cannot import this
_START = b'{"at":'  # every record starts so: a torn line glued to the next one is recoverable
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _debug(message: str, *args: object) -> None:
    import logging  # not on the hit path

    logging.getLogger("cachehook").debug(message, *args)


class HistoryEntry(NamedTuple):
    """One task run as the history keeps it.

    A NamedTuple, not a frozen dataclass: this module is imported on every hit, and building a
    frozen dataclass of 11 fields there costs milliseconds (issue 11).

    Attributes:
        at: when it ended (epoch seconds).
        key: the task key.
        status: ``HIT`` or ``MISS``.
        source: ``LOCAL`` or ``REMOTE`` for a hit.
        exit_code: the command's exit code (0 for a hit).
        duration_ms: how long the run took.
        saved_ms: the time a hit saved.
        task: the task's name, for a named task.
        local_hit: whether the local cache had it (None: not asked).
        remote_hit: whether the remote cache had it (None: not asked).
        project: the ``project_id`` of the project it ran in (None: recorded before issue 10).
    """

    at: float
    key: str
    status: str
    source: str | None
    exit_code: int
    duration_ms: int
    saved_ms: int
    task: str | None = None
    local_hit: bool | None = None
    remote_hit: bool | None = None
    project: str | None = None

    def to_line(self) -> bytes:
        record = {
            "at": round(self.at, 3),
            "task": self.task,
            "key": self.key,
            "status": self.status,
            "source": self.source,
            "local": self.local_hit,
            "remote": self.remote_hit,
            "code": self.exit_code,
            "ms": self.duration_ms,
            "saved": self.saved_ms,
            "project": self.project,
        }
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: Any) -> HistoryEntry | None:
        """The entry a parsed line holds, or None if it is not one."""
        try:
            entry = cls(
                at=float(data["at"]),
                key=str(data["key"]),
                status=str(data["status"]),
                source=data.get("source"),
                exit_code=int(data["code"]),
                duration_ms=int(data["ms"]),
                saved_ms=int(data["saved"]),
                task=data.get("task"),
                local_hit=data.get("local"),
                remote_hit=data.get("remote"),
                project=data.get("project"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return entry


def history_path(cache_dir: Path) -> Path:
    """Where the history of the cache at ``cache_dir`` lives."""
    return cache_dir / HISTORY_FILE


def project_id(root: Path) -> str:
    """The name a project's records go by: a digest of its root's absolute path."""
    return digest_bytes(os.fsencode(root))[:16]


def append_result(
    cache_dir: Path, result: RunResult, *, task: str | None, project: str | None = None
) -> None:
    """Append one run to the history; never raises (the history must not fail a task).

    A run with the cache disabled (``BYPASS``) is not recorded.
    """
    if result.status not in ("HIT", "MISS"):
        return
    entry = _entry(result, task=task, project=project, at=time.time())
    path = history_path(cache_dir)
    try:
        try:
            fd = os.open(path, _FLAGS, 0o600)
        except FileNotFoundError:
            cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, _FLAGS, 0o600)
        try:
            os.write(fd, entry.to_line())
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > MAX_HISTORY_BYTES:
            _compact(path)
    except OSError as exc:
        _debug("cannot append to the run history %s: %s", path, exc)


class HistoryWriter:
    """The runner's listener for the history: appends each ``TaskFinished`` fact's result."""

    __slots__ = ("cache_dir",)

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def __call__(self, fact: Fact, /) -> None:
        if type(fact) is TaskFinished:
            append_result(self.cache_dir, fact.result, task=fact.task, project=fact.project)


def _entry(result: RunResult, *, task: str | None, project: str | None, at: float) -> HistoryEntry:
    return HistoryEntry(
        at=at,
        key=result.key,
        status=result.status,
        source=result.source,
        exit_code=result.exit_code,
        duration_ms=result.duration_ms,
        saved_ms=result.saved_ms,
        task=task,
        local_hit=result.local_hit,
        remote_hit=result.remote_hit,
        project=project,
    )


def memo_line(result: RunResult, *, task: str | None, project: str | None) -> bytes:
    """The line ``append_result`` would write, with ``at`` -1.0 and ``ms`` -1 for a memo's
    replay to fill in (``cachehook._memo``)."""
    return _entry(result, task=task, project=project, at=-1.0)._replace(duration_ms=-1).to_line()


def _compact(path: Path) -> None:
    """Keep the newest half of an overgrown history (the cache must not grow without bound).

    A run appending while this rewrites the file may lose its one line: the history feeds
    ``stats``, never a cache decision.
    """
    keep = MAX_HISTORY_BYTES // 2
    with open(path, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - keep))
        tail = file.read()
    start = tail.find(b"\n") + 1  # drop the partial first line
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_bytes(tail[start:])
        partial.chmod(0o600)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _parse(line: bytes) -> HistoryEntry | None:
    try:
        return HistoryEntry.from_json(json.loads(line))
    except ValueError:
        # A torn record followed by a whole one on the same line: keep the whole one.
        start = line.rfind(_START)
        if start <= 0:
            return None
        return _parse(line[start:])


def read_history(
    cache_dir: Path, *, since: float | None = None, project: str | None = None
) -> Iterator[HistoryEntry]:
    """Every readable entry, oldest first; malformed or torn lines are skipped.

    Args:
        cache_dir: the cache directory.
        since: only entries that ended at or after this time (epoch seconds).
        project: only entries of this ``project_id`` (default: every project's).
    """
    try:
        data = history_path(cache_dir).read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        _debug("cannot read the run history: %s", exc)
        return
    for line in data.splitlines():
        if not line.strip():
            continue
        entry = _parse(line)
        if entry is None or (since is not None and entry.at < since):
            continue
        if project is None or entry.project == project:
            yield entry
