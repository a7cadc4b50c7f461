from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from cachehook.cli import main

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``cli(*args, cwd=DIR)``: ``cachehook ARGS`` in this process, through the error boundary.

    ``env`` adds (or, with a None value, removes) variables for this one call; ``stdin`` is
    what a prompt reads (without it, reading stdin fails as under pytest).
    """

    def invoke(
        *args: str,
        cwd: Path,
        env: Mapping[str, str | None] | None = None,
        stdin: str | None = None,
    ) -> Ran:
        monkeypatch.chdir(cwd)
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
