from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from cachehook.cli import main

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``cli(*args, cwd=DIR)``: ``cachehook ARGS`` in this process, through the error boundary."""

    def invoke(*args: str, cwd: Path) -> Ran:
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        code = main(list(args))
        out, err = capfd.readouterr()
        return Ran(code, out, err)

    return invoke
