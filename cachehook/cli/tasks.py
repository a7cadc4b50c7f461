"""``cachehook tasks``: list the named tasks of pyproject.toml with their inputs and outputs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cachehook.cli._options import JSON, ROOT, load_cli_settings, options
from cachehook.cli._output import print_json
from cachehook.cli._project import load_tasks_or_explain

if TYPE_CHECKING:
    from typing import Unpack

    from cachehook.cli._options import SettingsFlags
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
@options(JSON, ROOT)
def tasks(as_json: bool, **flags: Unpack[SettingsFlags]) -> None:
    """List the tasks in [tool.cachehook.tasks] with their inputs and outputs.

    A malformed table (a wrong type, an unknown key, a cycle, a dependency on a missing
    task, a bad glob) is reported with the file, the table and the key, and exit code 2.
    """
    settings = load_cli_settings(flags, workspace=True)
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
