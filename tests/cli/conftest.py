from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from cachehook import events, gitindex
from cachehook.cli import main

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path


# Coverage's settings for child Pythons (its ``patch = subprocess``), as this process started:
# a test that strips them from its tasks passes them on to a ``python -m cachehook`` it starts.
CHILD_COVERAGE = {
    name: value for name in ("COVERAGE_PROCESS_CONFIG",) if (value := os.environ.get(name))
}


@pytest.fixture
def unmeasured_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child Pythons (a task's own ``python ...``) start without coverage.

    Coverage measures cachehook only, yet every Python child it is passed to imports it and
    starts tracing: seconds per test on a loaded machine. For tests that run cachehook in
    this process; a ``python -m cachehook`` child needs ``env={**os.environ, **CHILD_COVERAGE}``.
    """
    for name in CHILD_COVERAGE:
        monkeypatch.delenv(name, raising=False)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``cli(*args, cwd=DIR)``: ``cachehook ARGS`` in this process, through the error boundary.

    ``env`` adds (or, with a None value, removes) variables for this one call; ``stdin`` is
    what a prompt reads (without it, reading stdin fails as under pytest). Each call starts
    with what a new process would not remember: the git index read so far, the events'
    session id (the stop signal and the pooled runners are reset after each test).
    """

    def invoke(
        *args: str,
        cwd: Path,
        env: Mapping[str, str | None] | None = None,
        stdin: str | None = None,
    ) -> Ran:
        monkeypatch.chdir(cwd)
        gitindex.reset()
        events.reset()
        capfd.readouterr()
        with pytest.MonkeyPatch.context() as call:
            for name, value in (env or {}).items():
                if value is None:
                    call.delenv(name, raising=False)
                else:
                    call.setenv(name, value)
            if stdin is not None:
                call.setattr(sys, "stdin", io.StringIO(stdin))
            code = main(list(args))
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    return invoke
