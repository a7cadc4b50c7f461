"""Outside any project, commands say which root they took and why (issue 9)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.cli._project import has_marker

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A directory with no pyproject.toml or .git in it or above it."""
    directory = tmp_path / "loose" / "dir"
    directory.mkdir(parents=True)
    if any(has_marker(parent) for parent in (directory, *directory.parents)):
        pytest.fail(f"{tmp_path} lies inside a project: this test needs a bare temp directory")
    return directory


def test_run_without_a_pyproject_says_so_and_where_it_looked(bare: Path, cli: Any) -> None:
    ran = cli("run", "build", cwd=bare)
    assert ran.returncode == 2
    assert f"no pyproject.toml at {bare / 'pyproject.toml'}" in ran.stderr
    assert f"found no pyproject.toml or .git in {bare} or above" in ran.stderr
    assert "pass --root DIR" in ran.stderr
    assert "defines no tasks" not in ran.stderr
    for command in (("tasks",), ("explain", "build")):
        assert "no pyproject.toml at" in cli(*command, cwd=bare).stderr


def test_run_in_a_git_checkout_without_a_pyproject(bare: Path, cli: Any) -> None:
    (bare / ".git").mkdir()
    (bare / "sub").mkdir()
    ran = cli("run", "build", cwd=bare / "sub")
    assert ran.returncode == 2
    assert f"no pyproject.toml at {bare / 'pyproject.toml'} (the project root, by its .git)" in (
        ran.stderr
    )


def test_exec_says_which_root_it_chose(bare: Path, cli: Any) -> None:
    (bare / "in.txt").write_text("x")
    command = ("exec", "-i", "in.txt", "--", sys.executable, "-c", "pass")
    ran = cli(*command, cwd=bare)
    assert ran.returncode == 0, ran.stderr
    notice = (
        f"cachehook: no pyproject.toml or .git in {bare} or above; using {bare} as the project "
        "root (pass --root to choose)"
    )
    assert notice in ran.stderr.splitlines()
    chosen = cli("exec", "--root", str(bare), *command[1:], cwd=bare)
    assert "project root" not in chosen.stderr
    (bare / "pyproject.toml").write_text("")
    assert "project root" not in cli(*command, cwd=bare).stderr
