"""Named tasks from ``[tool.cachehook.tasks]``: the table, the dependency graph, the scheduler.

A task's key includes the keys of the tasks it depends on, and its inputs may be their outputs,
so a task is hashed only once every dependency has finished or hit. The scheduler runs ready
tasks on up to ``jobs`` threads (the work itself is child processes); with one job it runs them
on the calling thread, where ``process.run_command`` forwards signals to the child.

It is longer than 400 lines because it still holds both halves issue 11 names as its seam:
the task table and graph, and the scheduler (to move to a module of its own).
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import re
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from cachehook.config import did_you_mean, table_boolean, table_strings, type_name
from cachehook.errors import CachehookError, ConfigError
from cachehook.hashing import GlobSet
from cachehook.process import forward_to_children, run_command
from cachehook.process import reset as reset_stop_signal
from cachehook.runner import TaskSpec, input_patterns

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import FrameType

    from cachehook.config import Settings
    from cachehook.logs import LogRecorder
    from cachehook.runner import Prepared, Runner, RunResult
    from cachehook.workspace import Workspace

__all__ = [
    "TASK_KEYS",
    "PlannedTask",
    "Reporter",
    "RunReport",
    "Task",
    "TaskGraph",
    "TaskOutcome",
    "load_task_graph",
    "load_tasks",
    "parse_task",
    "plan_tasks",
    "run_tasks",
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

State = Literal["cached", "ran", "failed", "error", "skipped", "cancelled"]
Live = tuple[BinaryIO, BinaryIO]


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


# --------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one task in a run.

    ``state``: ``cached`` (a hit), ``ran`` (exit 0), ``failed`` (non-zero exit), ``error``
    (cachehook could not run it: an unreadable input, a command not found), ``skipped`` (a
    dependency did not succeed), ``cancelled`` (not started: the run stopped).
    """

    name: str
    state: State
    key: str | None = None
    result: RunResult | None = None
    prepared: Prepared | None = None
    exit_code: int = 0
    message: str = ""

    @property
    def is_success(self) -> bool:
        return self.state in ("cached", "ran")


@dataclass(frozen=True)
class RunReport:
    """Every task's outcome in plan order, and how the run ended."""

    outcomes: tuple[TaskOutcome, ...]
    first_failure: str | None
    is_interrupted: bool
    duration_ms: int

    @property
    def exit_code(self) -> int:
        """130 if interrupted, else the first failing task's code, else 0."""
        if self.is_interrupted:
            return 130
        for outcome in self.outcomes:
            if outcome.name == self.first_failure:
                return outcome.exit_code or 1
        return 0


class Reporter(Protocol):
    """Receives a run's progress; ``live`` and ``started`` may be called from worker threads."""

    def live(self, name: str) -> Live | None:
        """Where the task's output goes as it runs (None: nowhere)."""

    def started(self, name: str, key: str) -> None:
        """The task missed the cache and its command is starting."""

    def finished(self, outcome: TaskOutcome) -> None:
        """The task is done (called on the scheduling thread, in completion order)."""


def run_tasks(
    graph: TaskGraph,
    names: Sequence[str],
    runner: Runner,
    *,
    reporter: Reporter,
    jobs: int = 1,
    keep_going: bool = False,
    force: bool = False,
) -> RunReport:
    """Run the named tasks and their dependencies, dependencies first.

    Args:
        graph: the checked task graph.
        names: the tasks asked for.
        runner: the runner (its store and remote are shared by every task).
        reporter: told what happens.
        jobs: how many tasks may run at once.
        keep_going: after a failure, still run every task that does not depend on it
            (default: start no new task).
        force: execute every task even on a hit.

    Returns:
        The report; a failing task is a value in it, not an exception. ^C (a
        ``KeyboardInterrupt``) stops the run: no new task starts, running ones are awaited,
        and the report says it was interrupted.

    Raises:
        ConfigError: an unknown task name.
    """
    plan = graph.select(names)
    scheduler = _Scheduler(graph, plan, runner, reporter, jobs=jobs, force=force)
    # A member's inputs hold its upstream members' files: walked and digested once per run,
    # and afresh after each task that runs or restores (issue 14).
    with runner.reusing_inputs():
        return scheduler.run(keep_going=keep_going)


class _Scheduler:
    def __init__(
        self,
        graph: TaskGraph,
        plan: list[str],
        runner: Runner,
        reporter: Reporter,
        *,
        jobs: int,
        force: bool,
    ) -> None:
        self.graph = graph
        self.plan = plan
        self.runner = runner
        self.reporter = reporter
        self.jobs = max(1, min(jobs, len(plan)))
        self.force = force
        self.pending = dict.fromkeys(plan)  # in plan order, which is also the start order
        self.running: set[str] = set()
        self.done: dict[str, TaskOutcome] = {}
        # What changes when a task finishes, so that each loop costs what changed rather than
        # a pass over every pending task (a 1,000-task run did 500,000 readiness checks).
        self.position = {name: index for index, name in enumerate(plan)}
        self.unmet = {name: len(graph.tasks[name].depends_on) for name in plan}
        self.dependents: dict[str, list[str]] = {name: [] for name in plan}
        for name in plan:
            for dependency in graph.tasks[name].depends_on:
                self.dependents[dependency].append(name)
        self.ready = [self.position[name] for name in plan if not self.unmet[name]]
        self.blocked: list[str] = []  # pending tasks with a dependency that did not succeed
        self.first_failure: str | None = None
        self.is_stopped = False
        # Set on ^C: a worker past its cache lookup must not start a child the signal missed.
        self.is_interrupted = False
        self.is_aborted = False
        self.previous_sigterm: Any = signal.SIG_DFL
        self.results: queue.SimpleQueue[tuple[str, TaskOutcome | BaseException] | None]
        self.results = queue.SimpleQueue()
        self.work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        # The runner opens its store, remote session and event sender on first use, without a
        # lock; the first task's cache lookup therefore runs alone (issue 4).
        self.primed = threading.Event()
        self.workers: list[threading.Thread] = []

    def run(self, *, keep_going: bool) -> RunReport:
        started = time.monotonic()
        previous = self._catch_interrupts()
        try:
            self._loop(keep_going)
        except KeyboardInterrupt:
            if self.is_aborted:
                raise  # a second ^C: stop waiting for the running tasks
            self.is_stopped = self.is_interrupted = True  # from a child run on this thread
            self._await_running()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
                signal.signal(signal.SIGTERM, self.previous_sigterm)
                reset_stop_signal()  # every child of this run has been awaited
            for _ in self.workers:
                self.work.put(None)
        reason = f"the run stopped after {self.first_failure!r}"
        for name in list(self.pending):
            reason = "interrupted" if self.is_interrupted else reason
            self._record(name, TaskOutcome(name, "cancelled", message=f"not started: {reason}"))
        return RunReport(
            outcomes=tuple(self.done[name] for name in self.plan),
            first_failure=self.first_failure,
            is_interrupted=self.is_interrupted,
            duration_ms=round((time.monotonic() - started) * 1000),
        )

    def _catch_interrupts(self) -> Any:
        """Turn ^C into a message to the scheduling loop; None if not on the main thread.

        A KeyboardInterrupt raised between two statements of the loop could lose a finished
        task's result, and the loop would then wait for it forever. A second ^C still raises.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        self.previous_sigterm = signal.signal(signal.SIGTERM, self._on_interrupt)
        return signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.is_interrupted:
            self.is_aborted = True
            raise KeyboardInterrupt
        self.is_stopped = self.is_interrupted = True
        forward_to_children(signum)
        self.results.put(None)  # wakes the loop; SimpleQueue.put is safe in a signal handler

    def _loop(self, keep_going: bool) -> None:
        while True:
            if not self.is_interrupted:
                self._skip_blocked()
            while not self.is_stopped and self.ready and len(self.running) < self.jobs:
                name = self.plan[heapq.heappop(self.ready)]
                if name in self.pending:  # else skipped since it became ready
                    self._start(name)
            if not self.running:
                return
            item = self.results.get()
            if item is None:
                continue  # interrupted: start nothing more, await what runs
            name, outcome = item
            self.running.discard(name)
            if isinstance(outcome, BaseException):
                self._record(name, TaskOutcome(name, "cancelled", message="interrupted"))
                if isinstance(outcome, KeyboardInterrupt):
                    self.is_stopped = self.is_interrupted = True
                    continue
                raise outcome
            self._record(name, outcome)
            if not outcome.is_success and not keep_going:
                self.is_stopped = True

    def _skip_blocked(self) -> None:
        # Skipping a task blocks its own dependents, which join the list as it is walked.
        while self.blocked:
            name = self.blocked.pop(0)
            if name not in self.pending:
                continue
            for dependency in self.graph.tasks[name].depends_on:
                outcome = self.done.get(dependency)
                if outcome is not None and not outcome.is_success:
                    why = "failed" if outcome.state in ("failed", "error") else "did not run"
                    message = f"it depends on {dependency!r}, which {why}"
                    self._record(name, TaskOutcome(name, "skipped", message=message))
                    break

    def _record(self, name: str, outcome: TaskOutcome) -> None:
        self.pending.pop(name, None)
        self.done[name] = outcome
        for dependent in self.dependents[name]:
            self.unmet[dependent] -= 1
            if not outcome.is_success:
                self.blocked.append(dependent)
            elif not self.unmet[dependent]:
                heapq.heappush(self.ready, self.position[dependent])
        if outcome.state in ("failed", "error") and self.first_failure is None:
            self.first_failure = name
        self.reporter.finished(outcome)

    def _start(self, name: str) -> None:
        del self.pending[name]
        self.running.add(name)
        if self.jobs == 1:
            try:
                self.results.put((name, self._execute(name)))
            except KeyboardInterrupt:
                self.running.discard(name)
                self._record(name, TaskOutcome(name, "cancelled", message="interrupted"))
                raise
            return
        if not self.workers:
            self.workers = [
                threading.Thread(target=self._work, name=f"cachehook-task-{i}", daemon=True)
                for i in range(self.jobs)
            ]
            for worker in self.workers:
                worker.start()
        self.work.put(name)
        self.primed.wait()

    def _await_running(self) -> None:
        while self.running:
            item = self.results.get()
            if item is None:
                continue
            name, outcome = item
            self.running.discard(name)
            if isinstance(outcome, BaseException):
                outcome = TaskOutcome(name, "cancelled", message="interrupted")
            self._record(name, outcome)

    def _work(self) -> None:
        while (name := self.work.get()) is not None:
            try:
                outcome: TaskOutcome | BaseException = self._execute(name)
            except BaseException as exc:  # handed to the scheduling thread, which re-raises
                outcome = exc
            self.results.put((name, outcome))

    def _execute(self, name: str) -> TaskOutcome:
        task = self.graph.tasks[name]
        keys = [self.done[dependency].key or "" for dependency in task.depends_on]
        try:
            prepared = self.runner.prepare(task.spec(self.runner.settings.root, keys))
            live = self.reporter.live(name)
            result = self.runner.run(
                prepared, force=self.force, live=live, execute=self._executor(prepared, live)
            )
        except CachehookError as exc:
            return TaskOutcome(name, "error", exit_code=exc.exit_code, message=str(exc))
        finally:
            self.primed.set()
        state: State = "cached" if result.status == "HIT" else "ran"
        if result.exit_code != 0:
            state = "failed"
        return TaskOutcome(name, state, prepared.key, result, prepared, exit_code=result.exit_code)

    def _executor(self, prepared: Prepared, live: Live | None) -> Callable[[LogRecorder], int]:
        spec = prepared.spec
        cwd = spec.cwd or self.runner.settings.root

        def execute(recorder: LogRecorder) -> int:
            self.primed.set()
            if self.is_interrupted:
                raise KeyboardInterrupt
            self.reporter.started(spec.name or "", prepared.key)
            env = self.runner.child_environ(spec)
            return run_command(spec.command, cwd=cwd, recorder=recorder, live=live, env=env)

        return execute
