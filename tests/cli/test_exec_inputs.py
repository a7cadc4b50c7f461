"""``cachehook exec`` end to end: what counts as an input (issue 10, findings 1-3).

One thin CLI test per finding (the runner-level tests are ``tests/test_inputs.py``); each was
a hit replaying the old output on the main branch before issue 10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

COPY = (
    "import pathlib, sys; "
    "pathlib.Path('out.txt').write_bytes(pathlib.Path(sys.argv[1]).read_bytes())"
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def cachehook(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachehook", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def status(root: Path, *args: str) -> str:
    done = cachehook("exec", "--json", *args, cwd=root)
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result["status"]


def assert_edit_is_a_miss(root: Path, args: tuple[str, ...], edited: Path) -> None:
    assert status(root, *args) == "MISS"
    assert status(root, *args) == "HIT"
    edited.write_text(edited.read_text() + "edited\n")
    assert status(root, *args) == "MISS"
    assert (root / "out.txt").read_text() == edited.read_text()


def test_a_tracked_ignored_file_is_an_input(repo: Path) -> None:
    (repo / ".gitignore").write_text("build\n")
    data = repo / "tests" / "build" / "data.txt"
    data.parent.mkdir(parents=True)
    data.write_text("one\n")
    subprocess.run(["git", "add", "-f", "tests/build/data.txt"], cwd=repo, check=True)
    args = ("-i", "tests/**", "-o", "out.txt", "--", sys.executable, "-c", COPY, str(data))
    dry = cachehook("exec", "--dry-run", *args, cwd=repo)
    assert "matched no file" not in dry.stderr
    assert "tests/build/data.txt" in dry.stdout
    assert_edit_is_a_miss(repo, args, data)


def test_no_inputs_given_means_every_file_under_the_cwd(repo: Path) -> None:
    (repo / "t.py").write_text("print('hi')\n")
    args = ("-o", "out.txt", "--", sys.executable, "-c", COPY, "t.py")
    dry = cachehook("exec", "--dry-run", *args, cwd=repo)
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[-1] for line in dry.stdout.splitlines() if line.startswith("input")] == [
        "pyproject.toml",
        "t.py",
    ]
    assert_edit_is_a_miss(repo, args, repo / "t.py")
    none = cachehook("exec", "--no-inputs", "--dry-run", *args, cwd=repo)
    assert "input    none (--no-inputs)" in none.stdout
    both = cachehook("exec", "--no-inputs", "-i", "t.py", *args, cwd=repo)
    assert both.returncode == 2
    assert "--no-inputs" in both.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlinked_input_is_keyed_on_its_target(repo: Path) -> None:
    (repo / "shared").mkdir()
    target = repo / "shared" / "ruff.toml"
    target.write_text("line-length = 100\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "ruff.toml").symlink_to("../shared/ruff.toml")
    args = ("-i", "pkg/**", "-o", "out.txt", "--", sys.executable, "-c", COPY, "pkg/ruff.toml")
    assert_edit_is_a_miss(repo, args, target)


def test_run_dry_run_notes_an_empty_inputs_list(repo: Path) -> None:
    (repo / "pyproject.toml").write_text(
        "[project]\nname = 'p'\n\n"
        "[tool.cachehook.tasks.none]\ncommand = 'true'\ninputs = []\n\n"
        "[tool.cachehook.tasks.all]\ncommand = 'true'\n"
    )
    done = cachehook("run", "none", "all", "--dry-run", cwd=repo)
    assert done.returncode == 0, done.stderr
    none, _, rest = done.stdout.partition("\nall ")
    assert "input    none (inputs = [] says it reads no file)" in none
    assert "pyproject.toml" in rest
    assert "input    none" not in rest
