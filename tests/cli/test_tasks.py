"""``cachehook tasks``: the task table as the user wrote it, checked."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from tests.cli.test_run import EXAMPLE, cachehook, write_project

if TYPE_CHECKING:
    from pathlib import Path


def test_lists_every_task_with_inputs_outputs_and_dependencies(tmp_path: Path) -> None:
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project)
    result = cachehook("tasks", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:6] == [
        "docs  Render docs/*.md and the models' fields to build/docs/",
        "  command     python tools/build_docs.py --out build/docs",
        "  depends-on  gen",
        "  inputs      docs/*.md, src/app/*.py, tools/build_docs.py",
        "  outputs     build/docs/**",
        "  env         DOCS_*",
    ]
    data = json.loads(cachehook("tasks", "--json", cwd=project).stdout)
    assert [task["name"] for task in data["tasks"]] == ["docs", "gen", "lint"]
    gen = data["tasks"][1]
    assert gen["command"] == ["python", "tools/gen_models.py"]
    assert gen["outputs"] == ["src/app/models.py"]
    assert gen["depends_on"] == []


def test_no_tasks_says_how_to_add_one(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", "")
    result = cachehook("tasks", cwd=project)
    assert result.returncode == 0
    assert "no tasks in pyproject.toml: add a [tool.cachehook.tasks.NAME] table" in result.stdout


def test_a_cwd_outside_the_project_is_refused(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p", "[tool.cachehook.tasks.a]\ncommand='true'\ncwd='../x'\n"
    )
    result = cachehook("tasks", cwd=project)
    assert result.returncode == 2
    assert "[tool.cachehook.tasks.a] cwd: '../x' must be a relative POSIX path" in result.stderr
