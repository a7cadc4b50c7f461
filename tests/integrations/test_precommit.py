"""``.pre-commit-hooks.yaml``: the ``cachehook`` hook, through a real ``pre-commit run``.

pre-commit clones the hook repository at a commit, so the test commits a throwaway copy of this
checkout (the package, pyproject.toml, the manifest) and points a throwaway project at it by
path: nothing is cloned from the internet. ``language: python`` then pip-installs cachehook
into the hook's own environment (its dependencies come from the package index).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.integrations.hosts import REPO, load_yaml, run_tool, tool_env

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

BUILD = textwrap.dedent(
    """
    import pathlib, sys
    assert sys.argv[1:] == [], f"pre-commit passed file names: {sys.argv[1:]}"
    with open("runs.log", "a") as log:
        log.write("build\\n")
    text = "".join(p.read_text() for p in sorted(pathlib.Path("src").glob("*.txt")))
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path("out", "site.txt").write_text(text.upper())
    print("built out/site.txt")
    """
)


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_the_manifest_is_valid_and_wraps_cachehook_exec() -> None:
    manifest = REPO / ".pre-commit-hooks.yaml"
    done = run_tool("pre-commit", "validate-manifest", manifest, cwd=REPO)
    assert done.returncode == 0, done.stdout
    (hook,) = load_yaml(manifest.read_text())
    assert hook["id"] == "cachehook"
    assert hook["entry"] == "cachehook exec"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["require_serial"] is True


@pytest.fixture
def hook_repo(tmp_path: Path) -> tuple[Path, str]:
    """A committed copy of this checkout: what pre-commit clones and pip-installs."""
    repo = tmp_path / "hook-repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "cachehook", repo / "cachehook", ignore=ignore)
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(REPO / name, repo / name)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "hook", cwd=repo)
    return repo, git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def user_repo(tmp_path: Path, hook_repo: tuple[Path, str]) -> Path:
    """A project using the hook, as its README would tell a user to."""
    repo_path, rev = hook_repo
    root = tmp_path / "user"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'u'\nversion = '0'\n")
    (root / ".gitignore").write_text("out/\nruns.log\n")
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "build.py").write_text(BUILD)
    config = {
        "repos": [
            {
                "repo": os.fspath(repo_path),
                "rev": rev,
                "hooks": [
                    {
                        "id": "cachehook",
                        "name": "build (cached)",
                        "args": [
                            "-i",
                            "src/*.txt",
                            "-i",
                            "build.py",
                            "-o",
                            "out/**",
                            "--",
                            "python",
                            "build.py",
                        ],
                    }
                ],
            }
        ]
    }
    (root / ".pre-commit-config.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    git("init", "-q", cwd=root)
    git("add", "-A", cwd=root)
    return root


def pre_commit(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = tool_env(PRE_COMMIT_HOME=os.fspath(tmp_path / "pre-commit-home"))
    # The hook runs the cachehook pre-commit installed in its own venv, which coverage does
    # not report; its tracer would only slow pre-commit and the install (issue 9).
    env = {k: v for k, v in env.items() if not k.startswith("COVERAGE_")}
    return run_tool("pre-commit", "run", "--all-files", "--verbose", cwd=root, env=env, timeout=900)


def test_the_hook_misses_then_hits_and_restores(user_repo: Path, tmp_path: Path) -> None:
    first = pre_commit(user_repo, tmp_path)
    assert first.returncode == 0, first.stdout
    assert "build (cached)" in first.stdout
    assert "cachehook: miss " in first.stdout

    (user_repo / "out" / "site.txt").unlink()
    second = pre_commit(user_repo, tmp_path)
    assert second.returncode == 0, second.stdout
    assert "cachehook: local hit " in second.stdout
    assert "built out/site.txt" in second.stdout  # the log is replayed on a hit
    assert (user_repo / "runs.log").read_text() == "build\n"
    assert (user_repo / "out" / "site.txt").read_text() == "ALPHA\n"

    (user_repo / "src" / "a.txt").write_text("changed\n")
    third = pre_commit(user_repo, tmp_path)
    assert "cachehook: miss " in third.stdout
    assert (user_repo / "out" / "site.txt").read_text() == "CHANGED\n"
