"""``cachehook run`` in a uv workspace, through the CLI in this process (issue 14)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.test_members import ROOT_TASKS, make_workspace
from tests.test_selection import git

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Ran


def test_run_from_a_member_prefixes_lines_and_sums_up_per_member(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")

    ran = cli("run", "test", "lint", "--filter", "...c", "-j", "2", cwd=root / "packages" / "c")

    assert ran.returncode == 0, ran.stderr
    assert "a:test | ok" in ran.stdout.splitlines()
    assert "c:lint | lint" in ran.stdout.splitlines()
    assert "b:" not in ran.stdout + ran.stderr
    assert "cachehook: 4 tasks: 0 cached, 4 ran" in ran.stderr
    assert "cachehook:   a  2 ran" in ran.stderr.splitlines()
    assert "cachehook:   c  2 ran" in ran.stderr.splitlines()


def test_dry_run_json_says_why_and_a_bare_affected_keeps_the_task_name(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    (root / ".gitignore").write_text(".cache/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    git(root, "checkout", "-q", "-b", "feature")
    (root / "packages" / "c" / "src" / "c.py").write_text("NAME = 'c2'\n")

    ran = cli("run", "--affected", "build", "--dry-run=json", cwd=root)

    assert ran.returncode == 0, ran.stderr
    why = {task["name"]: task["why"] for task in json.loads(ran.stdout)["tasks"]}
    assert why == {
        "d#build": "c#build depends on it",
        "b#build": "a#build depends on it",
        "c#build": "packages/c/src/c.py changed",
        # a imports c: with upstream inputs, c's files are a's inputs too.
        "a#build": "packages/c/src/c.py changed",
    }

    git(root, "commit", "-q", "-am", "change c")
    nothing = cli("run", "--affected=HEAD", "build", cwd=root)
    assert nothing.returncode == 0
    assert "nothing to run" in nothing.stderr


def test_tasks_and_explain_work_from_inside_a_member(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    member = root / "packages" / "b" / "src"

    listed = cli("tasks", "--json", cwd=member)
    assert listed.returncode == 0, listed.stderr
    names = [task["name"] for task in json.loads(listed.stdout)["tasks"]]
    assert names[:3] == ["a#build", "a#lint", "a#test"]

    explained = cli("explain", "b#test", cwd=member)
    assert explained.returncode == 0, explained.stderr
    assert "b#test" in explained.stdout


def test_run_without_a_task_lists_the_task_names_not_every_node(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    ran = cli("run", cwd=root)
    assert ran.returncode == 2
    assert "the tasks in pyproject.toml are: build, lint, test" in ran.stderr
