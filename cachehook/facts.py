"""What a run tells: the ``RunResult`` of a task and the facts emitted on the way (issue 11).

The runner does not call the history, the usage-event sender or a reporter: it emits a fact
to each of its listeners, and each listener takes the facts it consumes and ignores the rest.

    ``LookupDone``    one cache was asked for a key (the usage events: ``events.UsageEvents``)
    ``TaskFinished``  a task's result (the run history: ``history.HistoryWriter``)
    ``Notice``        a warning for the user, as a plain sentence (``on_notice``)
    ``Transfer``      an artifact moving to or from the remote (``on_progress``)

The facts and ``RunResult`` are NamedTuples, not frozen dataclasses: this module is imported on
every hit, and importing ``dataclasses`` (with ``inspect``) and building a dataclass cost
milliseconds there (hit latency, issue 11). Imports nothing from cachehook at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable

    from cachehook.hashing import Manifest

__all__ = [
    "Fact",
    "Listener",
    "LookupDone",
    "Notice",
    "RunResult",
    "Source",
    "Status",
    "TaskFinished",
    "Transfer",
    "notices_to",
    "transfers_to",
]

Status = Literal["HIT", "MISS", "BYPASS", "DRY"]
Source = Literal["LOCAL", "REMOTE"]


class RunResult(NamedTuple):
    """What happened to one task."""

    key: str
    status: Status
    source: Source | None
    exit_code: int
    duration_ms: int
    saved_ms: int = 0
    task_ms: int = 0
    stored: bool = False
    log: bytes = b""
    local_hit: bool | None = None
    remote_hit: bool | None = None
    restored: tuple[str, ...] = ()
    manifest: Manifest | None = None
    value: str | None = None

    def __repr__(self) -> str:  # without the manifest and the value, as the dataclass had it
        shown = (f"{name}={getattr(self, name)!r}" for name in self._fields[:-2])
        return f"RunResult({', '.join(shown)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "source": self.source,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "saved_ms": self.saved_ms,
            "task_ms": self.task_ms,
            "stored": self.stored,
            "restored": list(self.restored),
        }


class LookupDone(NamedTuple):
    """One cache (``where``) was asked for ``key``; ``saved_ms``: what a hit saved (0 on a miss)."""

    key: str
    where: Source
    hit: bool
    saved_ms: int = 0


class TaskFinished(NamedTuple):
    """A task's result, with its name (None: unnamed) and its ``history.project_id``."""

    result: RunResult
    task: str | None
    project: str


class Notice(NamedTuple):
    """A warning the user should see, as a plain sentence."""

    message: str


class Transfer(NamedTuple):
    """An artifact moving: ``what`` is ``"download"`` or ``"upload"``; ``total`` may be None."""

    what: str
    done: int
    total: int | None


Fact: TypeAlias = "LookupDone | TaskFinished | Notice | Transfer"


class Listener(Protocol):
    """Takes every fact a runner emits; acts on the kinds it consumes, ignores the others."""

    def __call__(self, fact: Fact, /) -> None: ...


def notices_to(on_notice: Callable[[str], None]) -> Listener:
    """A listener that hands each ``Notice``'s message to ``on_notice``."""

    def listener(fact: Fact, /) -> None:
        if type(fact) is Notice:
            on_notice(fact.message)

    return listener


def transfers_to(on_progress: Callable[[str, int, int | None], None]) -> Listener:
    """A listener that calls ``on_progress(what, done, total)`` for each ``Transfer``."""

    def listener(fact: Fact, /) -> None:
        if type(fact) is Transfer:
            on_progress(*fact)

    return listener
