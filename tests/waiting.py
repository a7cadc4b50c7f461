"""Bounds for tests that must not depend on the machine's speed (issue 9).

A test of a timeout asserts that a call *ends* against a peer that never answers, within a
deadline far beyond the timeout: a defect turns the call into "forever", never into "a bit
slower", so a busy machine cannot fail the test.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

__all__ = ["GENEROUS", "finishes", "reap"]

T = TypeVar("T")
GENEROUS = 60.0


def finishes(call: Callable[[], T], *, within: float = GENEROUS) -> T:
    """Return ``call()``, or fail the test if it is still running after ``within`` seconds."""
    outcome: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"still running after {within:.0f} s: it hangs"
    if errors:
        raise errors[0]
    return outcome[0]


def reap(*processes: subprocess.Popen[Any]) -> None:
    """Kill what still runs, wait for it and close its pipes: no test leaves a process or an
    open pipe behind (a ResourceWarning at collection would fail an unrelated test)."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        process.communicate()
