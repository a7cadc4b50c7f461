"""What counts as an input (issue 10, findings 1-3), through the runner, on real files and git.

Each test edits an input after a stored run and expects a miss: on the main branch before
issue 10 each of them was a hit that replayed the old output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from cachehook.config import load_settings
from cachehook.runner import Runner, RunResult, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

COPY = (
    "import pathlib, sys; "
    "pathlib.Path('out.txt').write_bytes(pathlib.Path(sys.argv[1]).read_bytes())"
)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no global excludes
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    git(root, "init", "-q")
    return root


def run(root: Path, spec: TaskSpec) -> RunResult:
    settings = load_settings(cwd=root, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        prepared = runner.prepare(spec)
        assert prepared.unmatched_inputs == ()
        return runner.run(prepared)


def copy_task(root: Path, source: str, inputs: tuple[str, ...] | None) -> TaskSpec:
    command = (sys.executable, "-c", COPY, source)
    return TaskSpec(command=command, inputs=inputs, outputs=("out.txt",), cwd=root)


def assert_edit_is_a_miss(root: Path, spec: TaskSpec, edited: Path) -> None:
    first = run(root, spec)
    assert (first.status, first.stored) == ("MISS", True)
    assert run(root, spec).status == "HIT"
    edited.write_text(edited.read_text() + "edited\n")
    again = run(root, spec)
    assert again.status == "MISS"
    assert (root / "out.txt").read_text() == edited.read_text()


# --------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("pattern", ["build", "build/", "lib/", "env/", "bin", "var"])
def test_a_tracked_file_an_ignore_pattern_matches_is_an_input(repo: Path, pattern: str) -> None:
    name = pattern.rstrip("/")
    data = repo / "tests" / name / "data.txt"
    data.parent.mkdir(parents=True)
    data.write_text("one\n")
    (repo / "tests" / name / "untracked.txt").write_text("ignored: not an input\n")
    (repo / ".gitignore").write_text(f"{pattern}\n")
    git(repo, "add", "-f", "--", f"tests/{name}/data.txt")
    spec = copy_task(repo, f"tests/{name}/data.txt", ("tests/**",))
    settings = load_settings(cwd=repo, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        paths = {f.path for f in runner.prepare(spec).manifest.inputs}
    assert paths == {f"tests/{name}/data.txt"}
    assert_edit_is_a_miss(repo, spec, data)


# --------------------------------------------------------------------------- finding 2


def test_a_task_without_inputs_takes_every_file_git_lists_under_its_cwd(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(repo / ".cache"))  # inside the project
    (repo / "t.py").write_text("print('hi')\n")
    (repo / ".gitignore").write_text(".venv/\n*.log\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "x.py").write_text("")
    (repo / "run.log").write_text("")
    (repo / "kept.log").write_text("tracked though ignored\n")
    git(repo, "add", "-f", "--", "kept.log")
    spec = copy_task(repo, "t.py", None)
    settings = load_settings(cwd=repo, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        paths = [f.path for f in runner.prepare(spec).manifest.inputs]
    assert paths == [".gitignore", "kept.log", "pyproject.toml", "t.py"]  # no out.txt, .cache
    assert_edit_is_a_miss(repo, spec, repo / "t.py")


def test_default_inputs_of_a_subdirectory_task_stay_under_it(repo: Path) -> None:
    (repo / "a[1]").mkdir()  # glob characters in the cwd are taken literally
    (repo / "a[1]" / "t.py").write_text("")
    (repo / "a1").mkdir()
    (repo / "a1" / "other.py").write_text("")
    spec = TaskSpec(command=("true",), inputs=None, cwd=repo / "a[1]")
    settings = load_settings(cwd=repo, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        paths = [f.path for f in runner.prepare(spec).manifest.inputs]
    assert paths == ["a[1]/t.py"]


def test_an_empty_inputs_list_means_no_inputs_on_purpose(repo: Path) -> None:
    (repo / "t.py").write_text("print('hi')\n")
    spec = copy_task(repo, "t.py", ())
    assert run(repo, spec).stored
    (repo / "t.py").write_text("print('changed')\n")
    assert run(repo, spec).status == "HIT"  # what the task said: it reads no file


# --------------------------------------------------------------------------- finding 3


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
@pytest.mark.parametrize("where", ["inside", "outside"])
def test_an_edit_of_a_symlinks_target_is_a_miss(repo: Path, where: str) -> None:
    shared = repo / "shared" if where == "inside" else repo.parent / "shared"
    shared.mkdir()
    (shared / "ruff.toml").write_text("line-length = 100\n")
    (repo / "pkg").mkdir()
    link = "../shared/ruff.toml" if where == "inside" else "../../shared/ruff.toml"
    (repo / "pkg" / "ruff.toml").symlink_to(link)
    spec = copy_task(repo, "pkg/ruff.toml", ("pkg/**",))
    assert_edit_is_a_miss(repo, spec, shared / "ruff.toml")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_an_edit_below_a_symlinked_directory_is_a_miss(repo: Path) -> None:
    (repo / "vendor").mkdir()
    (repo / "vendor" / "lib.py").write_text("x = 1\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "vendor").symlink_to("../vendor", target_is_directory=True)
    spec = copy_task(repo, "pkg/vendor/lib.py", ("pkg/**/*.py",))
    assert_edit_is_a_miss(repo, spec, repo / "vendor" / "lib.py")


# --------------------------------------------------------------------------- git's own view


def commit_all(root: Path) -> None:
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")


def tracked_project(repo: Path) -> TaskSpec:
    (repo / "src").mkdir()
    (repo / "src" / "a.txt").write_text("AAAA\n")
    (repo / "src" / "b.txt").write_text("BBBB\n")
    (repo / ".gitignore").write_text("*.log\n")
    commit_all(repo)
    return copy_task(repo, "src/a.txt", ("src/**",))


@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_an_edit_git_is_told_to_overlook_is_a_miss(repo: Path, flag: str) -> None:
    """git status shows nothing after these flags; the bytes still decide (issue 11)."""
    spec = tracked_project(repo)
    git(repo, "update-index", flag, "src/a.txt")
    first = run(repo, spec)
    assert first.stored
    (repo / "src" / "a.txt").write_text("CCCC\n")  # same size, within the second
    out = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True)
    assert b"a.txt" not in out.stdout  # git itself does not see the edit
    again = run(repo, spec)
    assert (again.status, (repo / "out.txt").read_text()) == ("MISS", "CCCC\n")


def test_the_worktree_not_the_index_decides(repo: Path) -> None:
    """Staged content that the worktree no longer has, and worktree edits never staged."""
    spec = tracked_project(repo)
    assert run(repo, spec).stored
    (repo / "src" / "a.txt").write_text("DDDD\n")
    git(repo, "add", "--", "src/a.txt")  # the index now holds DDDD
    (repo / "src" / "a.txt").write_text("AAAA\n")  # the worktree is back to what was run
    assert run(repo, spec).status == "HIT"
    (repo / "src" / "b.txt").write_text("EEEE, never added\n")
    assert run(repo, spec).status == "MISS"


def test_untracked_deleted_and_ignored_files_count_as_git_lists_them(repo: Path) -> None:
    spec = tracked_project(repo)
    assert run(repo, spec).stored
    (repo / "src" / "debug.log").write_text("ignored and untracked: not an input\n")
    assert run(repo, spec).status == "HIT"
    (repo / "src" / "new.txt").write_text("untracked, not ignored: an input\n")
    assert run(repo, spec).status == "MISS"
    (repo / "src" / "b.txt").unlink()  # deleted but still in the index: no longer an input
    result = run(repo, spec)
    assert result.status == "MISS"
    assert result.manifest is not None
    assert [f.path for f in result.manifest.inputs] == ["src/a.txt", "src/new.txt"]


def test_an_edit_inside_a_submodule_is_a_miss(repo: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q")
    (library / "lib.txt").write_text("v1\n")
    commit_all(library)
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "lib")
    commit_all(repo)
    spec = copy_task(repo, "lib/lib.txt", ("lib/**",))
    settings = load_settings(cwd=repo, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        paths = [f.path for f in runner.prepare(spec).manifest.inputs]
    assert "lib/lib.txt" in paths  # git lists 'lib' as one gitlink; a run reads its files
    assert_edit_is_a_miss(repo, spec, repo / "lib" / "lib.txt")
