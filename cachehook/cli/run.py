"""``cachehook run``: named tasks from pyproject.toml, dependencies first, in parallel with -j.

Exit codes of ``run``: 0 when every task ran or hit; else the exit code of the first task that
failed (2 when cachehook could not run it: an unreadable input, a command not found); 2 for a
malformed task table or an unknown task; 130 when interrupted.

It is longer than 400 lines because it renders a run three ways besides the command itself:
the live reporter (whole prefixed lines for parallel tasks), the ``--summarize`` JSON and the
dry-run listing.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import click

from cachehook import __version__
from cachehook.cli._options import (
    CACHE,
    CACHE_DIR,
    DRY_RUN,
    FORCE,
    NO_CACHE,
    NO_TOOLCHAIN,
    OUTPUT_LOGS,
    QUIET,
    REMOTE_ONLY,
    ROOT,
    load_cli_settings,
    options,
)
from cachehook.cli._output import (
    Console,
    describe_hit,
    describe_ran,
    format_duration,
    print_json,
    short_key,
)
from cachehook.cli._project import load_tasks_or_explain
from cachehook.errors import ConfigError
from cachehook.logs import STDOUT, decode
from cachehook.runner import Runner
from cachehook.scheduler import RunReport, TaskOutcome, run_tasks
from cachehook.selection import Selection, select_tasks
from cachehook.tasks import PlannedTask, TaskGraph, plan_tasks

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Unpack

    from cachehook._memo import Capture, Recorder
    from cachehook.cli._options import SettingsFlags
    from cachehook.config import Settings

    Keys = Mapping[str, str | None]

__all__ = ["run"]

_EPILOG = """\b
Examples:
  cachehook run lint docs -j 2      run both (and what they depend on), two at a time
  cachehook run docs --dry-run      show each task's key, inputs and cache state; run nothing
  cachehook run test --continue     after a failure, still run what does not depend on it

\b
In a uv workspace (`test` in every member that has it; output prefixed app:test | ...):
  cachehook run test --filter app          app's test, and the tasks it depends on
  cachehook run test --filter 'app...'     app and every member app depends on
  cachehook run test --filter '...core'    core and every member that depends on core
  cachehook run test --affected            members changed since the merge base with main,
                                           and every member that depends on them
  cachehook run test --affected --dry-run=json   the chosen tasks, each with its "why"
'NAME...' (dependencies) and '...NAME' (dependents) are spelled as turbo and pnpm spell them.

Tasks are [tool.cachehook.tasks.NAME] tables in pyproject.toml; `cachehook tasks` lists them.
"""
_MAX_PARTIAL_LINE = 1 << 16


class _PrefixedLines:
    """A sink that writes whole lines only, each with a prefix, under a lock shared by all tasks.

    Parallel tasks' output therefore never interleaves within a line. A line longer than 64 KiB
    is cut; a last line without a newline is written by ``finish``.
    """

    def __init__(self, stream: BinaryIO, prefix: bytes, lock: threading.Lock) -> None:
        self._stream = stream
        self._prefix = prefix
        self._lock = lock
        self._partial = b""

    def write(self, data: bytes) -> int:
        text = self._partial + data
        head, newline, tail = text.rpartition(b"\n")
        if len(tail) > _MAX_PARTIAL_LINE:
            head, newline, tail = text, b"\n", b""
        self._partial = tail
        if newline:
            self._emit(head.split(b"\n"))
        return len(data)

    def flush(self) -> None:
        """Lines are flushed as they complete; a partial line waits for its end."""

    def finish(self) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self._emit([partial])

    def _emit(self, lines: list[bytes]) -> None:
        block = b"".join(self._prefix + line + b"\n" for line in lines)
        with self._lock:
            try:
                self._stream.write(block)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # our own stdout went away: the task keeps running and is still recorded


class _Reporter:
    """Shows a run as it goes: task output (prefixed when several tasks run), then a status line.

    It is the scheduler's reporter, not a listener of the runner's ``TaskFinished`` (as exec's
    ``TaskReporter`` is), because it shows ``TaskOutcome``s, which include the tasks that errored,
    were skipped or never started (no ``TaskFinished`` for those), on the scheduling thread in
    completion order, which keeps each task's replayed log whole while others run (``-j``).
    """

    def __init__(self, console: Console, *, output_logs: str, names: Sequence[str]) -> None:
        names = [_label(name) for name in names]
        self.console = console
        self.output_logs = output_logs
        self.lock = threading.Lock()
        self.is_prefixed = len(names) > 1
        self.width = max(map(len, names), default=0)
        self.sinks: dict[str, tuple[_PrefixedLines, _PrefixedLines]] = {}

    def _streams(self, name: str) -> tuple[BinaryIO, BinaryIO]:
        if not self.is_prefixed:
            return sys.stdout.buffer, sys.stderr.buffer
        with self.lock:
            if name not in self.sinks:
                prefix = f"{_label(name):<{self.width}} | ".encode()
                self.sinks[name] = (
                    _PrefixedLines(sys.stdout.buffer, prefix, self.lock),
                    _PrefixedLines(sys.stderr.buffer, prefix, self.lock),
                )
            return cast("tuple[BinaryIO, BinaryIO]", self.sinks[name])

    def live(self, name: str) -> tuple[BinaryIO, BinaryIO] | None:
        return self._streams(name) if self.output_logs == "full" else None

    def started(self, name: str, key: str) -> None:
        name = _label(name)
        self.info(f"{name}: cache miss {short_key(key)}, running")

    def info(self, message: str) -> None:
        with self.lock:
            self.console.info(message)

    def warn(self, message: str) -> None:
        with self.lock:
            self.console.warn(message)

    def error(self, message: str) -> None:
        with self.lock:
            click.echo(f"{self.console.prefix}: error: {message}", err=True)

    def finished(self, outcome: TaskOutcome) -> None:
        name, result = outcome.name, outcome.result
        if outcome.prepared is not None:
            for pattern in outcome.prepared.unmatched_inputs:
                self.warn(f"{name}: input glob {pattern!r} matched no file")
        if result is not None and result.log and self._shows_log(outcome):
            stdout, stderr = self._streams(name)
            for stream, chunk in decode(result.log):
                (stdout if stream == STDOUT else stderr).write(chunk)
        for sink in self.sinks.get(name, ()):
            sink.finish()
        self._status(outcome)

    def _shows_log(self, outcome: TaskOutcome) -> bool:
        if self.output_logs == "full":
            return outcome.state == "cached"  # a miss streamed live
        return self.output_logs == "errors-only" and outcome.state == "failed"

    def _status(self, outcome: TaskOutcome) -> None:
        name, result, state = _label(outcome.name), outcome.result, outcome.state
        if state == "error":
            self.error(f"{name}: {outcome.message}")
        elif state == "skipped":
            self.info(f"{name}: skipped: {outcome.message}")
        elif result is None:
            return
        elif state == "cached":
            self.info(f"{name}: {describe_hit(result)}")
        elif state == "failed":
            took = format_duration(result.duration_ms)
            self.info(f"{name}: failed with exit code {result.exit_code} after {took}; not cached")
        elif result.status == "BYPASS":
            self.info(f"{name}: ran in {format_duration(result.duration_ms)} (cache disabled)")
        else:
            self.info(f"{name}: {describe_ran(result.duration_ms, stored=result.stored)}")


def _label(name: str) -> str:
    """``app#test`` is shown as ``app:test``, as turbo shows a package's task (issue 14)."""
    return name.replace("#", ":", 1)


class _RunCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A bare '--dry-run' must not swallow the next argument as its value ('--dry-run lint').
        args = ["--dry-run=text" if arg == "--dry-run" else arg for arg in args]
        args = ["--affected=" if arg == "--affected" else arg for arg in args]
        return super().parse_args(ctx, args)


@click.command(
    "run",
    cls=_RunCommand,
    epilog=_EPILOG,
    short_help="Run named tasks and their dependencies, or restore them.",
)
@click.argument("task_names", nargs=-1, metavar="TASK...")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="How many tasks may run at once.",
)
@click.option(
    "--continue",
    "keep_going",
    is_flag=True,
    help="After a failure, still run every task that does not depend on it.",
)
@options(
    FORCE._replace(help="Run every task even on a hit; overwrite the cache."),
    DRY_RUN._replace(
        help="Show each task's key, inputs and cache state; run nothing. --dry-run=json."
    ),
)
@click.option(
    "--summarize",
    is_flag=True,
    help="Write a JSON summary of the run (under the cache dir) and print its path.",
)
@options(
    ROOT,
    CACHE_DIR,
    CACHE,
    REMOTE_ONLY,
    NO_CACHE._replace(help="Just run the tasks (also CACHEHOOK_DISABLE=1)."),
    NO_TOOLCHAIN._replace(
        help="Leave the toolchain (interpreter, installed packages, program files) out of the keys."
    ),
    OUTPUT_LOGS._replace(
        help="What of the tasks' output to show: full (default), errors-only, hash-only, none."
    ),
    QUIET._replace(help="No status lines (warnings and errors still show)."),
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="SELECTOR",
    help="In a uv workspace: only these members. NAME (* allowed), ./PATH, 'NAME...' (NAME "
    "and every member it depends on), '...NAME' (NAME and every member that depends on it), "
    "'!NAME' (not NAME). Repeatable.",
)
@click.option(
    "--affected",
    metavar="[=REF]",
    default=None,
    help="In a uv workspace: only members whose inputs changed since the merge base of "
    "HEAD and REF (default main, or $CACHEHOOK_SCM_BASE), and their dependents: "
    "--affected or --affected=REF.",
)
def run(
    task_names: tuple[str, ...],
    jobs: int,
    keep_going: bool,
    force: bool,
    dry_run: str | None,
    summarize: bool,
    no_toolchain: bool,
    quiet: bool,
    filters: tuple[str, ...],
    affected: str | None,
    **flags: Unpack[SettingsFlags],
) -> int:
    """Run the named TASKs and what they depend on, or restore them from the cache."""
    argv = click.get_current_context().find_root().obj
    memo = None
    if isinstance(argv, list) and not (dry_run or summarize or force):
        from cachehook._memo import Capture, Recorder

        memo = _Memo(Recorder(argv).start(), Capture().start())
    try:
        code = _run(
            task_names,
            jobs,
            keep_going,
            force,
            dry_run,
            summarize,
            no_toolchain,
            quiet,
            filters,
            affected,
            flags,
            memo,
        )
    finally:
        if memo is not None:
            memo.recorder.stop()
            memo.capture.stop()
    if memo is not None:
        memo.save()
    return code


class _Memo:
    """A run being recorded for ``cachehook._memo``: what it looked at, printed and did."""

    def __init__(self, recorder: Recorder, capture: Capture) -> None:
        self.recorder, self.capture = recorder, capture
        self.report: RunReport | None = None
        self.runner: Runner | None = None

    def save(self) -> None:
        """Write the memo if every task was a local hit that restored nothing."""
        from cachehook import _hits
        from cachehook.history import history_path, memo_line

        report, runner, output = self.report, self.runner, self.capture.output()
        if report is None or runner is None or output is None or report.exit_code != 0:
            return
        if self.recorder.tainted is not None:
            return  # memos off, or no memo this time: no hit record need be read again
        settings = runner.settings
        if settings.remote is not None:
            return  # a remote cache's usage events must be sent by the full path
        store = settings.cache_dir / "store"
        files: list[tuple[str, bool]] = []
        lines = b""
        for outcome in report.outcomes:
            result = outcome.result
            if outcome.state != "cached" or result is None or result.source != "LOCAL":
                return
            if result.restored or outcome.prepared is None:
                return
            hit = _hits.read_hit(store, result.key)
            if hit is None:
                return
            files += [(str(_hits.record_path(store, result.key)), True), (str(hit.artifact), False)]
            lines += memo_line(result, task=outcome.prepared.spec.name, project=runner.project)
        self.recorder.save(
            cache_dir=str(settings.cache_dir),
            store_files=files,
            output=output,
            history=lines,
            history_path=str(history_path(settings.cache_dir)),
            exit_code=report.exit_code,
        )


def _run(
    task_names: tuple[str, ...],
    jobs: int,
    keep_going: bool,
    force: bool,
    dry_run: str | None,
    summarize: bool,
    no_toolchain: bool,
    quiet: bool,
    filters: tuple[str, ...],
    affected: str | None,
    flags: SettingsFlags,
    memo: _Memo | None,
) -> int:
    settings = load_cli_settings(flags, workspace=True)
    graph = load_tasks_or_explain(settings, cwd=Path.cwd())
    if not task_names:
        bare = {*graph.groups, *(n for n in graph.tasks if n not in graph.member_of)}
        names = ", ".join(sorted(bare)) or "none yet"  # a workspace's nodes: MEMBER#TASK
        msg = f"name the tasks to run; the tasks in {graph.source} are: {names}"
        raise ConfigError(msg)
    base = os.environ.get("CACHEHOOK_SCM_BASE") or "main"
    selection = select_tasks(
        graph,
        task_names,
        filters=filters,
        affected=None if affected is None else affected or base,
        cwd=Path.cwd(),
    )
    task_names = selection.names
    shown = selection if graph.workspace is not None else None
    plan = graph.select(task_names)
    console = Console(quiet=quiet or settings.output_logs == "none")
    reporter = _Reporter(console, output_logs=settings.output_logs, names=plan)
    if not task_names:
        if not dry_run:
            reporter.info("nothing to run: no chosen member has these tasks")
        else:
            _print_dry_run([], settings, as_json=dry_run == "json", selection=shown)
        return 0
    with Runner(settings, on_notice=reporter.warn, use_toolchain=not no_toolchain) as runner:
        if memo is not None:
            memo.runner = runner
        if dry_run:
            planned = plan_tasks(graph, task_names, runner)
            _print_dry_run(planned, settings, as_json=dry_run == "json", selection=shown)
            return 0
        started_at = time.time()
        report = run_tasks(
            graph,
            task_names,
            runner,
            reporter=reporter,
            jobs=jobs,
            keep_going=keep_going,
            force=force,
        )
    if memo is not None:
        memo.report = report
    _print_summary(report, reporter)
    _print_member_summary(report, graph, reporter)
    if summarize:
        path = _write_summary(report, settings, graph, targets=task_names, started_at=started_at)
        if path is not None:
            click.echo(f"cachehook: run summary written to {path}", err=True)
    return report.exit_code


# --------------------------------------------------------------------------- summary


def summary_line(report: RunReport) -> str:
    """``3 tasks: 2 cached, 1 ran · saved 1m12s``."""
    counts: collections.Counter[str] = collections.Counter(
        outcome.state for outcome in report.outcomes
    )
    parts = [f"{counts['cached']} cached", f"{counts['ran']} ran"]
    labels = (("failed", "failed"), ("error", "errored"), ("skipped", "skipped"))
    parts += [f"{counts[state]} {label}" for state, label in labels if counts[state]]
    if counts["cancelled"]:
        parts.append(f"{counts['cancelled']} not started")
    saved = sum(o.result.saved_ms for o in report.outcomes if o.result and o.state == "cached")
    total = len(report.outcomes)
    return f"{total} task{'s' * (total != 1)}: {', '.join(parts)} · saved {format_duration(saved)}"


def _print_summary(report: RunReport, reporter: _Reporter) -> None:
    reporter.info(summary_line(report))
    failed = [
        f"{o.name} (exit {o.exit_code})" if o.state == "failed" else f"{o.name} (error)"
        for o in report.outcomes
        if o.state in ("failed", "error")
    ]
    if failed:
        reporter.error(f"failed: {', '.join(failed)}")
    if report.is_interrupted:
        reporter.error("interrupted: no new task was started")


def _print_member_summary(report: RunReport, graph: TaskGraph, reporter: _Reporter) -> None:
    """One line per member of a uv workspace: what became of its tasks (issue 14)."""
    per_member: dict[str, collections.Counter[str]] = {}
    for outcome in report.outcomes:
        member = graph.member_of.get(outcome.name)
        if member is not None:
            per_member.setdefault(member, collections.Counter())[outcome.state] += 1
    if len(per_member) < 2:
        return
    width = max(map(len, per_member))
    for member, counts in sorted(per_member.items()):
        parts = ", ".join(f"{counts[s]} {label}" for s, label in _STATES if counts[s])
        reporter.info(f"  {member:<{width}}  {parts}")


# What a task came to, in the words of the summary line.
_STATES = (
    ("cached", "cached"),
    ("ran", "ran"),
    ("failed", "failed"),
    ("error", "errored"),
    ("skipped", "skipped"),
    ("cancelled", "not started"),
)


def _task_summary(outcome: TaskOutcome, depends_on: Sequence[str], keys: Keys) -> dict[str, Any]:
    result, prepared = outcome.result, outcome.prepared
    manifest = prepared.manifest if prepared is not None else None
    return {
        "name": outcome.name,
        "state": outcome.state,
        "key": outcome.key,
        "command": list(manifest.command) if manifest else None,
        "cwd": manifest.cwd if manifest else None,
        "inputs": [{"path": f.path, "digest": f.digest} for f in manifest.inputs]
        if manifest
        else [],
        "outputs": list(manifest.outputs) if manifest else [],
        "env": [name for name, _ in manifest.env] if manifest else [],
        "dependencies": {name: keys.get(name) for name in depends_on},
        "cache": {
            "status": result.status if result else None,
            "source": result.source if result else None,
            "local_hit": result.local_hit if result else None,
            "remote_hit": result.remote_hit if result else None,
        },
        "saved_ms": result.saved_ms if result and outcome.state == "cached" else 0,
        "duration_ms": result.duration_ms if result else 0,
        "exit_code": outcome.exit_code,
        "stored": result.stored if result else False,
        "message": outcome.message or None,
    }


def _write_summary(
    report: RunReport,
    settings: Settings,
    graph: TaskGraph,
    *,
    targets: Sequence[str],
    started_at: float,
) -> Path | None:
    import secrets  # only for --summarize: it imports hmac, hashlib and random

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started_at))
    path = settings.cache_dir / "runs" / f"{stamp}-{secrets.token_hex(3)}.json"
    counts: collections.Counter[str] = collections.Counter(
        outcome.state for outcome in report.outcomes
    )
    keys = {outcome.name: outcome.key for outcome in report.outcomes}
    data = {
        "cachehook_version": __version__,
        "root": str(settings.root),
        "targets": list(targets),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "duration_ms": report.duration_ms,
        "exit_code": report.exit_code,
        "interrupted": report.is_interrupted,
        "summary": summary_line(report),
        "counts": {state: counts[state] for state in sorted(counts)},
        "saved_ms": sum(
            o.result.saved_ms for o in report.outcomes if o.result and o.state == "cached"
        ),
        "tasks": [
            _task_summary(outcome, graph.tasks[outcome.name].depends_on, keys)
            for outcome in report.outcomes
        ],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        click.echo(f"cachehook: warning: cannot write the run summary {path}: {exc}", err=True)
        return None
    return path


# --------------------------------------------------------------------------- dry run


def _why(planned: list[PlannedTask], selection: Selection) -> dict[str, str]:
    """Why each planned task runs: chosen, or a dependency of one that is."""
    reasons = dict(selection.reasons)
    for item in reversed(planned):
        for dependency in item.dependency_keys:
            reasons.setdefault(dependency, f"{item.task.name} depends on it")
    return reasons


def _planned_json(item: PlannedTask, why: str | None = None) -> dict[str, Any]:
    manifest = item.prepared.manifest
    return {
        "name": item.task.name,
        "why": why,
        "key": item.prepared.key,
        "cached": item.is_cached or bool(item.is_remote),
        "cache": {"local": item.is_cached, "remote": item.is_remote},
        "command": list(manifest.command),
        "cwd": manifest.cwd,
        "dependencies": dict(item.dependency_keys),
        "inputs": [{"path": f.path, "digest": f.digest} for f in manifest.inputs],
        "outputs": list(manifest.outputs),
        "env": [name for name, _ in manifest.env],
        "toolchain": [
            {"name": t.name, "digest": t.digest, "versions": dict(t.versions)}
            for t in manifest.toolchain
        ],
    }


def _print_dry_run(
    planned: list[PlannedTask],
    settings: Settings,
    *,
    as_json: bool,
    selection: Selection | None,
) -> None:
    from cachehook.toolchain import describe_tool

    why = _why(planned, selection) if selection is not None else {}
    if as_json:
        tasks = [_planned_json(p, why.get(p.task.name)) for p in planned]
        print_json({"root": str(settings.root), "tasks": tasks})
        return
    for item in planned:
        manifest = item.prepared.manifest
        state = (
            "cached (local)"
            if item.is_cached
            else "cached (remote)"
            if item.is_remote
            else "would run"
        )
        click.echo(f"{item.task.name}  {state}  key {item.prepared.key}")
        click.echo(f"  command  {' '.join(manifest.command)}")
        if item.task.name in why:
            click.echo(f"  why      {why[item.task.name]}")
        if manifest.cwd != ".":
            click.echo(f"  cwd      {manifest.cwd}")
        for name, key in item.dependency_keys.items():
            click.echo(f"  depends  {name} ({short_key(key)})")
        for name, _ in manifest.env:
            click.echo(f"  env      {name}")
        for tool in manifest.toolchain:
            click.echo(f"  tool     {tool.digest}  {tool.name}  ({describe_tool(tool)})")
        for entry in manifest.inputs:
            click.echo(f"  input    {entry.digest}  {entry.path}")
        if not item.task.inputs:  # 'inputs = []' on purpose (issue 10)
            click.echo("  input    none (inputs = [] says it reads no file)")
        for pattern in manifest.outputs:
            click.echo(f"  output   {pattern}")
