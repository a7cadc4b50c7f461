"""Running a task graph: ready tasks on up to ``jobs`` threads, each after its dependencies.

A task is hashed only once every task it depends on has finished or hit (its key holds their
keys, its inputs may be their outputs). Each finished task unblocks its dependents: the
scheduler keeps, per task, how many dependencies are unfinished, and starts ready tasks in plan
order. The work itself is child processes; with one job a task runs on the calling thread,
where ``process.run_command`` forwards signals to the child. A failure is a value in the
:class:`RunReport`, not an exception; ^C stops the run and awaits what is running.
"""

from __future__ import annotations

import heapq
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from cachehook.errors import CachehookError
from cachehook.process import forward_to_children, run_command
from cachehook.process import reset as reset_stop_signal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType

    from cachehook.logs import LogRecorder
    from cachehook.runner import Prepared, Runner, RunResult
    from cachehook.tasks import TaskGraph

__all__ = ["Reporter", "RunReport", "TaskOutcome", "run_tasks"]

State = Literal["cached", "ran", "failed", "error", "skipped", "cancelled"]
Live = tuple[BinaryIO, BinaryIO]


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
