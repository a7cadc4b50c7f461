"""``cachehook exec`` end to end: what counts as an input (issue 10, findings 1-3).

One thin CLI test per finding (the runner-level tests are ``tests/test_inputs.py``); each was
a hit replaying the old output on the main branch before issue 10. The CLI runs in this process
(the ``cli`` fixture); the wrapped ``cp`` is a real child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Ran


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def copy(source: str) -> tuple[str, ...]:
    """The command that copies ``source`` to ``out.txt`` (the task's one output)."""
    return ("-o", "out.txt", "--", "cp", source, "out.txt")


def assert_edit_is_a_miss(
    cli: Callable[..., Ran], root: Path, args: tuple[str, ...], edited: Path
) -> None:
    def status() -> str:
        done = cli("exec", "--json", *args, cwd=root)
        assert done.returncode == 0, done.stderr
        result: dict[str, str] = json.loads(done.stdout)
        return result["status"]

    assert status() == "MISS"
    assert status() == "HIT"
    edited.write_text(edited.read_text() + "edited\n")
    assert status() == "MISS"
    assert (root / "out.txt").read_text() == edited.read_text()


def test_a_tracked_ignored_file_is_an_input(repo: Path, cli: Callable[..., Ran]) -> None:
    (repo / ".gitignore").write_text("build\n")
    data = repo / "tests" / "build" / "data.txt"
    data.parent.mkdir(parents=True)
    data.write_text("one\n")
    subprocess.run(["git", "add", "-f", "tests/build/data.txt"], cwd=repo, check=True)
    args = ("-i", "tests/**", *copy(str(data)))
    dry = cli("exec", "--dry-run", *args, cwd=repo)
    assert "matched no file" not in dry.stderr
    assert "tests/build/data.txt" in dry.stdout
    assert_edit_is_a_miss(cli, repo, args, data)


def test_no_inputs_given_means_every_file_under_the_cwd(
    repo: Path, cli: Callable[..., Ran]
) -> None:
    (repo / "t.py").write_text("print('hi')\n")
    args = copy("t.py")
    dry = cli("exec", "--dry-run", *args, cwd=repo)
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[-1] for line in dry.stdout.splitlines() if line.startswith("input")] == [
        "pyproject.toml",
        "t.py",
    ]
    assert_edit_is_a_miss(cli, repo, args, repo / "t.py")
    none = cli("exec", "--no-inputs", "--dry-run", *args, cwd=repo)
    assert "input    none (--no-inputs)" in none.stdout
    both = cli("exec", "--no-inputs", "-i", "t.py", *args, cwd=repo)
    assert both.returncode == 2
    assert "--no-inputs" in both.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlinked_input_is_keyed_on_its_target(repo: Path, cli: Callable[..., Ran]) -> None:
    (repo / "shared").mkdir()
    target = repo / "shared" / "ruff.toml"
    target.write_text("line-length = 100\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "ruff.toml").symlink_to("../shared/ruff.toml")
    args = ("-i", "pkg/**", *copy("pkg/ruff.toml"))
    assert_edit_is_a_miss(cli, repo, args, target)


def test_run_dry_run_notes_an_empty_inputs_list(repo: Path, cli: Callable[..., Ran]) -> None:
    (repo / "pyproject.toml").write_text(
        "[project]\nname = 'p'\n\n"
        "[tool.cachehook.tasks.none]\ncommand = 'true'\ninputs = []\n\n"
        "[tool.cachehook.tasks.all]\ncommand = 'true'\n"
    )
    done = cli("run", "none", "all", "--dry-run", cwd=repo)
    assert done.returncode == 0, done.stderr
    none, _, rest = done.stdout.partition("\nall ")
    assert "input    none (inputs = [] says it reads no file)" in none
    assert "pyproject.toml" in rest
    assert "input    none" not in rest
