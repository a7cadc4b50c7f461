"""Every example runs as its README says: the ``## Run`` block, verbatim, with the real tools.

Each example is copied as a fresh clone has it (no builds, caches or venvs) and its block runs
in bash with this venv's scripts first on PATH. The first run must miss, the second must hit
and restore the outputs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.integrations.hosts import BIN, EXAMPLES, copy_tree, load_yaml, tool_env

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

ALL = ["command", "function", "github-actions", "invoke", "nox", "pre-commit"]
RUN_BLOCK = re.compile(r"^## Run\n.*?^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run_block(name: str) -> str:
    readme = (EXAMPLES / name / "README.md").read_text()
    match = RUN_BLOCK.search(readme)
    assert match, f"examples/{name}/README.md has no ```sh block under '## Run'"
    return match.group(1)


def run_readme(name: str, tmp_path: Path, **env: str) -> tuple[Path, str]:
    """Copy the example and run its README's block; returns the copy and the output."""
    root = copy_tree(EXAMPLES / name, tmp_path / name)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", run_block(name)],
        cwd=root,
        env=tool_env(TMPDIR=os.fspath(scratch), PRE_COMMIT_HOME=os.fspath(tmp_path / "pch"), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    return root, done.stdout


def misses_then_hits(output: str, *, misses: int, hits: int) -> None:
    lines = [line for line in output.splitlines() if "cachehook:" in line]
    statuses = ["hit" if " hit " in line else "miss" for line in lines if "warning" not in line]
    assert statuses.count("miss") == misses, output
    assert statuses.count("hit") == hits, output
    assert statuses.index("hit") > statuses.index("miss"), output


PROMISE = re.compile(r"`((?:nox > )?cachehook: [^`]+)`")
KEY = r"([0-9a-f]{4}…[0-9a-f]{3})"
DURATION = r"(?:\d+\.\d\ds|\d+m\d\ds)"


def promises(name: str) -> list[str]:
    """The status lines a README says its run prints (in backticks, in the README's order)."""
    text = " ".join((EXAMPLES / name / "README.md").read_text().split())
    return PROMISE.findall(text)


def keeps_promises(name: str, output: str) -> None:
    """Each promised line is printed, in order; ``<key>`` is a key, the same one throughout.

    The keys themselves differ with the Python and packages a reader has (issue 10), so a
    README names none: ``<key>`` stands for one, and the durations may differ too.
    """
    lines = output.splitlines()
    keys: set[str] = set()
    start = 0
    for promise in promises(name):
        pattern = re.escape(promise).replace("<key>", KEY)
        pattern = re.sub(r"\d+\\\.\d\ds", lambda _: DURATION, pattern)
        found = next((i for i in range(start, len(lines)) if re.search(pattern, lines[i])), None)
        assert found is not None, f"{name}: README promises {promise!r}; the run printed:\n{output}"
        keys.update(re.search(pattern, lines[found]).groups())  # type: ignore[union-attr]
        start = found + 1
    assert len(keys) <= 1, f"{name}: one <key> in the README, several keys in the run: {keys}"


@pytest.mark.parametrize("name", ALL)
def test_readmes_promise_status_lines_without_a_literal_key(name: str) -> None:
    for promise in promises(name):
        assert not re.search(KEY, promise), f"{name}: {promise!r} quotes a key; write <key>"


def test_every_integration_example_has_a_readme_with_a_run_block() -> None:
    for name in ALL:
        assert run_block(name).strip()


def test_command(tmp_path: Path) -> None:
    root, output = run_readme("command", tmp_path)
    keeps_promises("command", output)
    misses_then_hits(output, misses=1, hits=1)
    assert "hello, cachehook!" in output
    assert (root / "hello.pyz").is_file()


def test_function(tmp_path: Path) -> None:
    root, output = run_readme("function", tmp_path)
    keeps_promises("function", output)
    misses_then_hits(output, misses=1, hits=1)
    assert output.count("generated Order, User") == 2  # the value, from the cache the 2nd time
    models = (root / "src" / "app" / "models.py").read_text()
    assert "class User:" in models
    assert "class Order:" in models


def test_invoke(tmp_path: Path) -> None:
    root, output = run_readme("invoke", tmp_path)
    keeps_promises("invoke", output)
    misses_then_hits(output, misses=2, hits=1)
    assert "-f STRING, --fmt=STRING" in output
    assert "Output format: html or txt." in output
    assert (root / "build" / "html" / "index.html").is_file()
    assert (root / "build" / "txt" / "usage.txt").is_file()


def test_nox(tmp_path: Path) -> None:
    root, output = run_readme("nox", tmp_path)
    keeps_promises("nox", output)
    misses_then_hits(output, misses=3, hits=3)
    assert "Ran 1 test" in output
    assert (root / "build" / "html" / "index.html").is_file()
    assert (root / "build" / "txt" / "usage.txt").is_file()


def test_pre_commit(tmp_path: Path) -> None:
    _, output = run_readme("pre-commit", tmp_path)
    keeps_promises("pre-commit", output)
    misses_then_hits(output, misses=2, hits=2)
    assert output.count("mypy (cached)") == 2
    assert output.count("pytest (cached)") == 2
    assert "Failed" not in output


def test_github_actions_runs_locally(tmp_path: Path) -> None:
    root, output = run_readme("github-actions", tmp_path)
    misses_then_hits(output, misses=2, hits=2)
    assert (root / "dist" / "shout.pyz").is_file()


def workflow() -> dict[Any, Any]:
    data = load_yaml((EXAMPLES / "github-actions" / ".github" / "workflows" / "ci.yml").read_text())
    assert isinstance(data, dict)
    return data


def cachehook_steps() -> list[dict[str, Any]]:
    steps = workflow()["jobs"]["build"]["steps"]
    return [step for step in steps if str(step.get("run", "")).startswith("cachehook exec")]


def test_the_workflow_takes_the_remote_from_secrets_and_matches_the_readme() -> None:
    data = workflow()
    assert set(data[True]) == {"push", "pull_request"}  # YAML 1.1 reads `on:` as true
    assert data["env"]["CACHEHOOK_API"] == "${{ secrets.CACHEHOOK_API }}"
    assert data["env"]["CACHEHOOK_TOKEN"] == "${{ secrets.CACHEHOOK_TOKEN }}"
    job = data["jobs"]["build"]
    assert job["defaults"]["run"]["working-directory"] == "examples/github-actions"
    uses = [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/upload-artifact"]
    steps = cachehook_steps()
    assert len(steps) == 2
    block = run_block("github-actions")
    for step in steps:
        prefix = "".join(f"{k}={v} " for k, v in step.get("env", {}).items())
        assert prefix + step["run"] in block


def run_steps(root: Path, env: dict[str, str]) -> str:
    """Run the workflow's cachehook steps as the runner would (step env, working directory)."""
    output = []
    for step in cachehook_steps():
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step["run"]],
            cwd=root,
            env=tool_env(**env, **step.get("env", {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout
        output.append(done.stdout)
    return "".join(output)


def test_the_workflow_shares_results_between_runners_through_the_remote(
    tmp_path: Path, remote_env: dict[str, str]
) -> None:
    first = copy_tree(EXAMPLES / "github-actions", tmp_path / "runner-1")
    second = copy_tree(EXAMPLES / "github-actions", tmp_path / "runner-2")
    ran = run_steps(first, {**remote_env, "CACHEHOOK_CACHE_DIR": os.fspath(tmp_path / "c1")})
    assert ran.count("cachehook: miss") == 2, ran
    hit = run_steps(second, {**remote_env, "CACHEHOOK_CACHE_DIR": os.fspath(tmp_path / "c2")})
    assert hit.count("cachehook: remote hit") == 2, hit
    assert (second / "dist" / "shout.pyz").read_bytes() == (
        first / "dist" / "shout.pyz"
    ).read_bytes()
    assert shlex.split(cachehook_steps()[1]["run"])[-2:] == ["python", "build.py"]


def test_the_tasks_examples_generated_code_passes_the_repos_ruff(tmp_path: Path) -> None:
    # Running examples/tasks leaves src/app/models.py beside the sources; the repo's own
    # `ruff format --check .` and `ruff check .` then read it (issue 9).
    root = copy_tree(EXAMPLES / "tasks", tmp_path / "tasks")
    subprocess.run(
        [sys.executable, "tools/gen_models.py"], cwd=root, check=True, capture_output=True
    )
    generated = (root / "src" / "app" / "models.py").read_text()
    where = "examples/tasks/src/app/models.py"  # as the repo's ruff config sees it
    for check in (["format", "--check"], ["check"]):
        done = subprocess.run(
            [BIN / "ruff", *check, "--stdin-filename", where, "-"],
            cwd=EXAMPLES.parent,
            input=generated,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"ruff {' '.join(check)}:\n{done.stdout}{done.stderr}"
