"""The runners the integrations keep open between calls in one process (issue 5).

A cached function called many times must not reopen the store and reload the stat cache on
every call; ``leased_runner`` lends one pooled runner per call.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from cachehook.config import Settings
    from cachehook.facts import Fact, Listener
    from cachehook.runner import Runner

__all__ = ["close_runners", "leased_runner"]


class _Forward:
    """The listener a pooled runner keeps; forwards each fact to whoever holds it now."""

    def __init__(self) -> None:
        self.target: Listener = _discard

    def __call__(self, fact: Fact, /) -> None:
        self.target(fact)


def _discard(fact: Fact, /) -> None:
    del fact


class _RunnerPool:
    """Idle runners kept open between calls in one process.

    Opening the local store (SQLite) and loading the stat cache cost several milliseconds,
    more than a whole hit should (issue 5), so a process that calls a cached function many times
    reuses its runners. A runner serves one call at a time: concurrent calls open their own.
    Idle runners are closed at exit (flushing events, saving the stat cache) or by ``close``.
    """

    def __init__(self, *, limit: int = 4) -> None:
        self._limit = limit
        self._idle: list[tuple[Runner, _Forward]] = []
        self._orphans: list[tuple[Runner, _Forward]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._is_registered = False

    def take(self, settings: Settings) -> tuple[Runner, _Forward]:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not use, nor close, the parent's SQLite connections:
                # keep them referenced (so no finaliser closes them) and open its own.
                self._orphans.extend(self._idle)
                self._idle.clear()
                self._pid = os.getpid()
            for index, (runner, forward) in enumerate(self._idle):
                if runner.settings == settings:
                    del self._idle[index]
                    return runner, forward
            if not self._is_registered:
                atexit.register(self.close)
                self._is_registered = True
        from cachehook.runner import Runner

        forward = _Forward()
        return Runner(settings, listeners=[forward]), forward

    def give_back(self, runner: Runner, forward: _Forward) -> None:
        forward.target = _discard
        with self._lock:
            self._idle.append((runner, forward))
            evicted = self._idle[: -self._limit]
            del self._idle[: -self._limit]
        for old, _ in evicted:
            old.close()

    def close(self) -> None:
        """Close every idle runner: flush events, save stat caches, close stores."""
        with self._lock:
            idle, self._idle = self._idle, []
        for runner, _ in idle:
            runner.close()


_POOL = _RunnerPool()


def close_runners() -> None:
    """Close the runners kept open between calls (done at exit; tests call it between tests)."""
    _POOL.close()


@contextlib.contextmanager
def leased_runner(settings: Settings, listener: Listener) -> Iterator[Runner]:
    """A runner for ``settings`` from the pool, its facts told to ``listener`` meanwhile."""
    runner, forward = _POOL.take(settings)
    forward.target = listener
    try:
        yield runner
    except Exception:
        _POOL.give_back(runner, forward)  # the task failed, not the runner
        raise
    except BaseException:
        runner.close()  # interrupted mid-call: do not trust it again
        raise
    _POOL.give_back(runner, forward)
