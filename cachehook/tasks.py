"""Named tasks from ``[tool.cachehook.tasks]``: the table, checked, and the dependency graph.

A task's key includes the keys of the tasks it depends on, and its inputs may be their outputs,
so a task is hashed only once every dependency has finished or hit: :func:`plan_tasks` walks
the graph in that order for ``--dry-run``, and :mod:`cachehook.scheduler` runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cachehook.config import did_you_mean, table_boolean, table_strings, type_name
from cachehook.errors import ConfigError
from cachehook.hashing import GlobSet
from cachehook.runner import TaskSpec, input_patterns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cachehook.config import Settings
    from cachehook.runner import Prepared, Runner
    from cachehook.workspace import Workspace

__all__ = [
    "TASK_KEYS",
    "PlannedTask",
    "Task",
    "TaskGraph",
    "load_task_graph",
    "load_tasks",
    "parse_task",
    "plan_tasks",
]

TASK_KEYS = (
    "command",
    "cwd",
    "depends-on",
    "description",
    "env",
    "inputs",
    "outputs",
    "pass-env",
    "salt",
    "toolchain",
    "tools",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Task:
    """One named task as configured; globs and ``cwd`` are relative to the project root."""

    name: str
    command: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    salt: str = ""
    cwd: str = "."
    description: str = ""
    # No 'inputs' key: ``inputs`` holds the default (every file under ``cwd``, issue 10).
    default_inputs: bool = False
    tools: tuple[str, ...] = ()
    toolchain: bool = True
    pass_env: tuple[str, ...] = ()

    def spec(self, root: Path, dependency_keys: Sequence[str]) -> TaskSpec:
        """The runner's view of this task, once its dependencies' keys are known."""
        return TaskSpec(
            command=self.command,
            inputs=None if self.default_inputs else self.inputs,
            outputs=self.outputs,
            env=self.env,
            salt=self.salt,
            cwd=root / self.cwd,
            dependencies=tuple(dependency_keys),
            name=self.name,
            tools=self.tools,
            toolchain=self.toolchain,
            pass_env=self.pass_env,
        )


_type_name = type_name  # one wording for every config table (config.py, issue 10)
_suggest = did_you_mean


def _table_name(name: str) -> str:
    key = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
    return f"[tool.cachehook.tasks.{key}]"


def _string(body: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        msg = f"{where} {key}: expected a string, got {_type_name(value)}"
        raise ConfigError(msg)
    return value


def _tools(body: Mapping[str, Any], where: str) -> tuple[str, ...]:
    tools = table_strings(body, "tools", where)
    for tool in tools:
        if not tool.strip():
            msg = f"{where} tools: an empty name; list the programs the command runs"
            raise ConfigError(msg)
    return tuple(dict.fromkeys(tools))


def _command(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            msg = f"{where} command: cannot split {value!r}: {exc}"
            raise ConfigError(msg) from None
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        argv = list(value)
    else:
        msg = f"{where} command: expected a string or an array of strings, got {_type_name(value)}"
        raise ConfigError(msg)
    if not argv or not argv[0]:
        msg = f"{where} command: is empty"
        raise ConfigError(msg)
    return tuple(argv)


def _cwd(value: str, where: str, root: Path) -> str:
    path = PurePosixPath(value)
    if "\\" in value or path.is_absolute() or ".." in path.parts:
        msg = f"{where} cwd: {value!r} must be a relative POSIX path inside the project"
        raise ConfigError(msg)
    relative = path.as_posix()
    if not (root / relative).is_dir():
        msg = f"{where} cwd: {value!r} is not a directory under {root}"
        raise ConfigError(msg)
    return relative


def parse_task(name: str, body: object, *, source: str, root: Path) -> Task:
    """One ``[tool.cachehook.tasks.NAME]`` table, checked; ``root`` is what ``cwd`` is under.

    Raises:
        ConfigError: the message names ``source``, the table and the key.
    """
    where = f"{source}: {_table_name(name)}"
    if not _NAME.fullmatch(name):
        msg = f"{where}: a task name is letters, digits, '_', '.', ':' and '-'"
        raise ConfigError(msg)
    if not isinstance(body, dict):
        msg = f"{where}: expected a table with at least 'command', got {_type_name(body)}"
        raise ConfigError(msg)
    for key in body:
        if key in ("per-member", "upstream-inputs"):  # the keys of workspace tasks (issue 14)
            msg = (
                f"{where} {key}: only a uv workspace has members, and {source} declares none; "
                'add [tool.uv.workspace] members = ["packages/*"] or drop the key'
            )
            raise ConfigError(msg)
        if key not in TASK_KEYS:
            known = ", ".join(TASK_KEYS)
            msg = f"{where} {key}: unknown key{_suggest(key, TASK_KEYS)}; known keys: {known}"
            raise ConfigError(msg)
    if "command" not in body:
        msg = f"{where}: missing 'command' (a string or an array of strings)"
        raise ConfigError(msg)
    inputs, outputs = table_strings(body, "inputs", where), table_strings(body, "outputs", where)
    GlobSet.compile(inputs, what=f"{where} inputs:")
    GlobSet.compile(outputs, what=f"{where} outputs:")
    env = table_strings(body, "env", where)
    for variable in env:
        if not _ENV_NAME.fullmatch(variable):
            msg = f"{where} env: {variable!r} is not a variable name (may end with '*')"
            raise ConfigError(msg)
    cwd = _cwd(_string(body, "cwd", where, "."), where, root)
    return Task(
        name=name,
        command=_command(body["command"], where),
        inputs=inputs if "inputs" in body else input_patterns(None, cwd),
        default_inputs="inputs" not in body,
        outputs=outputs,
        env=env,
        depends_on=tuple(dict.fromkeys(table_strings(body, "depends-on", where))),
        salt=_string(body, "salt", where, ""),
        cwd=cwd,
        description=_string(body, "description", where, ""),
        tools=_tools(body, where),
        toolchain=table_boolean(body, "toolchain", where, default=True),
        pass_env=_pass_env(body, where),
    )


def _pass_env(body: Mapping[str, Any], where: str) -> tuple[str, ...]:
    names = table_strings(body, "pass-env", where)
    for name in names:
        if not _ENV_NAME.fullmatch(name) or name.endswith("*"):
            msg = f"{where} pass-env: {name!r} is not a variable name"
            raise ConfigError(msg)
    return names


def load_tasks(table: Mapping[str, Any], *, source: str, root: Path) -> TaskGraph:
    """Parse and check the tasks of a ``[tool.cachehook]`` table.

    Args:
        table: the ``[tool.cachehook]`` table (``Settings.table``).
        source: how to name the file in messages.
        root: the project root (a task's ``cwd`` must be a directory under it).

    Returns:
        The checked graph (no unknown dependency, no cycle).

    Raises:
        ConfigError: the message names the file, the table and the key.
    """
    raw = table.get("tasks", {})
    if not isinstance(raw, dict):
        msg = f"{source}: [tool.cachehook] tasks: expected a table of tasks, got {_type_name(raw)}"
        raise ConfigError(msg)
    tasks = {name: parse_task(name, body, source=source, root=root) for name, body in raw.items()}
    graph = TaskGraph(tasks=tasks, source=source)
    graph.check()
    return graph


def load_task_graph(settings: Settings, *, cwd: Path) -> TaskGraph:
    """The tasks of the project ``settings`` describe, naming its pyproject.toml from ``cwd``.

    At the root of a uv workspace, the graph has a ``member#task`` node per member (issue 14).
    """
    path = settings.root / "pyproject.toml"
    relative = os.path.relpath(path, cwd)
    source = str(path) if relative.startswith("..") else relative
    from cachehook.workspace import load_workspace

    workspace = load_workspace(settings.root)
    if workspace is not None:
        from cachehook.members import load_workspace_tasks

        return load_workspace_tasks(settings.table, workspace, source=source)
    return load_tasks(settings.table, source=source, root=settings.root)


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class TaskGraph:
    """Tasks by name; ``check`` has rejected unknown dependencies and cycles.

    In a uv workspace (issue 14), ``groups`` maps a bare task name to its ``member#task``
    nodes, ``member_of`` each node to its member, and ``workspace`` is the workspace read.
    """

    tasks: Mapping[str, Task]
    source: str
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    member_of: Mapping[str, str] = field(default_factory=dict)
    workspace: Workspace | None = None

    def names(self) -> list[str]:
        return sorted(self.tasks)

    def check(self) -> None:
        """Raise ConfigError on a dependency on a missing task, or on a cycle."""
        for name in self.names():
            for dependency in self.tasks[name].depends_on:
                if dependency not in self.tasks:
                    hint = _suggest(dependency, self.names())
                    msg = (
                        f"{self.source}: {_table_name(name)} depends-on: "
                        f"unknown task {dependency!r}{hint}"
                    )
                    raise ConfigError(msg)
        done: set[str] = set()
        for name in self.names():
            self._find_cycle(name, [], done)

    def _find_cycle(self, name: str, path: list[str], done: set[str]) -> None:
        if name in done:
            return
        if name in path:
            cycle = [*path[path.index(name) :], name]
            msg = f"{self.source}: {_table_name(cycle[0])} depends-on: cycle {' -> '.join(cycle)}"
            raise ConfigError(msg)
        path.append(name)
        for dependency in self.tasks[name].depends_on:
            self._find_cycle(dependency, path, done)
        path.pop()
        done.add(name)

    def select(self, names: Sequence[str]) -> list[str]:
        """The named tasks and all they depend on, each after its dependencies.

        Raises:
            ConfigError: a name is not a task (close names are suggested).
        """
        if not self.tasks:
            msg = f"{self.source} defines no tasks: add a [tool.cachehook.tasks.NAME] table"
            raise ConfigError(msg)
        order: dict[str, None] = {}
        for name in names:
            if name not in self.tasks and name in self.groups:
                for node in self.groups[name]:
                    self._visit(node, order)
                continue
            if name not in self.tasks:
                known = sorted({*self.groups, *(n for n in self.tasks if n not in self.member_of)})
                hint = _suggest(name, known if "#" not in name else self.names())
                msg = f"unknown task {name!r}{hint}; the tasks in {self.source} are: "
                msg += ", ".join(known) + (" (or MEMBER#TASK for one member)" * bool(self.groups))
                raise ConfigError(msg)
            self._visit(name, order)
        return list(order)

    def _visit(self, name: str, order: dict[str, None]) -> None:
        if name in order:
            return
        for dependency in self.tasks[name].depends_on:
            self._visit(dependency, order)
        order[name] = None


# --------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class PlannedTask:
    """A task hashed against the files as they are now, without running anything."""

    task: Task
    prepared: Prepared
    is_cached: bool
    dependency_keys: Mapping[str, str]
    # Whether the remote holds it: None when no remote is read (or it did not answer).
    is_remote: bool | None = None


def plan_tasks(graph: TaskGraph, names: Sequence[str], runner: Runner) -> list[PlannedTask]:
    """Hash the named tasks and their dependencies as the files are now.

    A dependency that would run may rewrite a dependent's inputs, so a dependent's key is
    the one it gets if that dependency's outputs come out the same.

    Raises:
        ConfigError: an unknown task, or a malformed glob or env name.
        HashingError: an input cannot be read.
    """
    keys: dict[str, str] = {}
    planned: list[PlannedTask] = []
    with runner.reusing_inputs():  # nothing runs: each file is walked and digested once
        for name in graph.select(names):
            task = graph.tasks[name]
            dependency_keys = {dependency: keys[dependency] for dependency in task.depends_on}
            spec = task.spec(runner.settings.root, list(dependency_keys.values()))
            prepared = runner.prepare(spec)
            keys[name] = prepared.key
            is_cached, is_remote = runner.peek(prepared)
            planned.append(PlannedTask(task, prepared, is_cached, dependency_keys, is_remote))
    return planned
