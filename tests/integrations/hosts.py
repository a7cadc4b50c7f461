"""Helpers for tests that drive the real host tools (nox, invoke, pre-commit, cachehook)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["BIN", "EXAMPLES", "REPO", "RESOURCES", "copy_tree", "load_yaml", "run_tool", "tool_env"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RESOURCES = REPO / "tests" / "resources"
BIN = Path(sys.executable).parent


def tool_env(**extra: str) -> dict[str, str]:
    """The test's environment with this venv's scripts (nox, inv, cachehook...) first on PATH."""
    path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def run_tool(
    *argv: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a host tool; stdout and stderr together, as the user sees them."""
    return subprocess.run(
        [os.fspath(arg) for arg in argv],
        cwd=cwd,
        env=env or tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def copy_tree(source: Path, target: Path) -> Path:
    """Copy an example as a fresh clone has it: no caches, builds or venvs."""
    ignore = shutil.ignore_patterns(
        "__pycache__", ".nox", ".mypy_cache", ".pytest_cache", "build", "dist", "*.pyz"
    )
    shutil.copytree(source, target, ignore=ignore)
    return target


def load_yaml(text: str) -> Any:
    """Parse YAML with PyYAML (pre-commit's own dependency; it ships no type stubs)."""
    yaml = importlib.import_module("yaml")
    return yaml.safe_load(text)
