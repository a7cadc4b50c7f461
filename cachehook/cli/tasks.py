"""``cachehook tasks``: list the named tasks of pyproject.toml with their inputs and outputs."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cachehook.cli._options import root_option
from cachehook.cli._output import print_json
from cachehook.cli._project import load_tasks_or_explain
from cachehook.config import load_settings

if TYPE_CHECKING:
    from cachehook.tasks import Task

__all__ = ["tasks"]


def _task_json(task: Task) -> dict[str, object]:
    return {
        "name": task.name,
        "description": task.description,
        "command": list(task.command),
        "cwd": task.cwd,
        "inputs": list(task.inputs),
        "outputs": list(task.outputs),
        "env": list(task.env),
        "depends_on": list(task.depends_on),
        "salt": task.salt,
    }


def _echo_task(task: Task) -> None:
    header = task.name + (f"  {task.description}" if task.description else "")
    click.echo(header)
    click.echo(f"  command     {shlex.join(task.command)}")
    rows = (
        ("cwd", [task.cwd] if task.cwd != "." else []),
        ("depends-on", task.depends_on),
        ("inputs", task.inputs),
        ("outputs", task.outputs),
        ("env", task.env),
    )
    for label, values in rows:
        if values:
            click.echo(f"  {label:<11} {', '.join(values)}")


@click.command("tasks", short_help="List the named tasks with their inputs and outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@root_option()
def tasks(as_json: bool, root: Path | None) -> None:
    """List the tasks in [tool.cachehook.tasks] with their inputs and outputs.

    A malformed table (a wrong type, an unknown key, a cycle, a dependency on a missing
    task, a bad glob) is reported with the file, the table and the key, and exit code 2.
    """
    settings = load_settings(cwd=Path.cwd(), environ=os.environ, root=root, workspace=True)
    graph = load_tasks_or_explain(settings, cwd=Path.cwd())
    ordered = [graph.tasks[name] for name in graph.names()]
    if as_json:
        print_json({"source": graph.source, "tasks": [_task_json(task) for task in ordered]})
        return
    if not ordered:
        click.echo(f"no tasks in {graph.source}: add a [tool.cachehook.tasks.NAME] table")
        return
    for task in ordered:
        _echo_task(task)
