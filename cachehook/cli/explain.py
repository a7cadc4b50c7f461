"""``cachehook explain TASK``: why the last run of a task missed, or what would miss now.

The task is hashed as the files are now and compared, input by input, with the manifest kept
beside its last stored run in this project (found through the run history, then the runner's
``task/PROJECT/NAME`` record). Environment variables are named, never their values.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from cachehook.cli._options import (
    ALL_PROJECTS,
    CACHE_DIR,
    JSON,
    NO_TOOLCHAIN,
    ROOT,
    load_cli_settings,
    options,
)
from cachehook.cli._output import Console, print_json, short_key
from cachehook.cli._project import load_tasks_or_explain
from cachehook.errors import StoreError
from cachehook.hashing import Manifest, diff_manifests
from cachehook.history import read_history
from cachehook.runner import Runner
from cachehook.tasks import PlannedTask, TaskGraph, plan_tasks

if TYPE_CHECKING:
    from typing import Unpack

    from cachehook.cli._options import SettingsFlags
    from cachehook.store import LocalStore

__all__ = ["explain"]

Verdict = Literal["would-hit", "would-run"]


@dataclass(frozen=True)
class _StoredRun:
    key: str
    manifest: Manifest
    stored_at: float | None


@dataclass(frozen=True)
class _Explanation:
    task: str
    key: str
    verdict: Verdict
    compared_with: _StoredRun | None
    changes: list[str] = field(default_factory=list)
    source: str = "local"  # where a would-hit comes from: "local" or "remote"
    # Dependencies that would run first and write some of this task's inputs: the key above
    # is the one for the files as they are now, and changes once they have run (issue 9).
    rewritten_by: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        before = self.compared_with
        return {
            "task": self.task,
            "key": self.key,
            "verdict": self.verdict,
            "source": self.source if self.verdict == "would-hit" else None,
            "compared_with": None
            if before is None
            else {"key": before.key, "stored_at": before.stored_at},
            "changes": self.changes,
            "rewritten_by": self.rewritten_by,
        }


def _stored_keys(store: LocalStore, name: str, cache_dir: Path, project: str | None) -> list[str]:
    """Keys of the task's earlier successful runs in ``project`` (None: any), newest first."""
    keys: dict[str, None] = {}
    for entry in reversed(list(read_history(cache_dir, project=project))):
        if entry.task == name and entry.exit_code == 0:
            keys[entry.key] = None
    record = store.get_record(f"task/{project}/{name}" if project else f"task/{name}")
    if record is not None:
        keys[record] = None
    return list(keys)


def _stored_run(store: LocalStore, key: str) -> _StoredRun | None:
    meta = store.get_meta(key)
    if meta is None or meta.manifest is None:
        return None
    try:
        manifest = Manifest.from_json(meta.manifest)
    except (TypeError, ValueError, KeyError, AttributeError):  # a record is never trusted
        return None
    return _StoredRun(key, manifest, meta.stored_at)


def _changes(before: Manifest, current: PlannedTask, graph: TaskGraph) -> list[str]:
    lines = [line for line in diff_manifests(before, current.prepared.manifest)]
    member = graph.member_of.get(current.task.name)
    if "salt changed" in lines and member is not None and graph.workspace is not None:
        # A member task's salt holds its locked closure from uv.lock: say what changed there.
        from cachehook.members import describe_salt_change

        at = lines.index("salt changed")
        new = current.prepared.manifest.salt
        lines[at : at + 1] = describe_salt_change(graph.workspace, member, before.salt, new)
    if "dependency changed" not in lines:
        return lines
    lines.remove("dependency changed")
    named = [n for n, key in current.dependency_keys.items() if key not in before.dependencies]
    lines += [f"dependency changed: {n} (see `cachehook explain {n}`)" for n in named]
    if not named:
        lines.append("dependency removed")
    return lines


def _explain(
    current: PlannedTask,
    store: LocalStore | None,
    cache_dir: Path,
    project: str | None,
    graph: TaskGraph,
) -> _Explanation:
    name, key = current.task.name, current.prepared.key
    verdict: Verdict = "would-hit" if current.is_cached or current.is_remote else "would-run"
    source = "local" if current.is_cached else "remote"
    if store is None:
        return _Explanation(name, key, verdict, None, source=source)
    for earlier in _stored_keys(store, name, cache_dir, project):
        if earlier == key and current.is_cached:
            continue  # explain how this key came to be: compare with the run before it
        run = _stored_run(store, earlier)
        if run is not None:
            changes = _changes(run.manifest, current, graph)
            return _Explanation(name, key, verdict, run, changes, source=source)
    return _Explanation(name, key, verdict, None, source=source)


def _rewritten_by(plan: list[PlannedTask]) -> dict[str, list[str]]:
    """The dependencies that would run before the last task and write inputs of it."""
    current = plan[-1]
    found: dict[str, list[str]] = {}
    for upstream in plan[:-1]:
        if upstream.is_cached or upstream.is_remote:
            continue
        paths = [
            item.path
            for item in current.prepared.manifest.inputs
            if upstream.prepared.outputs.matches(item.path)
        ]
        if paths:
            found[upstream.task.name] = paths
    return found


def _age(stored_at: float | None) -> str:
    if stored_at is None:
        return "at an unknown time"
    seconds = max(0, int(time.time() - stored_at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _echo(explanation: _Explanation) -> None:
    _echo_verdict(explanation)
    name = explanation.task
    for dependency, paths in explanation.rewritten_by.items():
        shown = ", ".join(paths[:3]) + (", …" if len(paths) > 3 else "")
        click.echo(
            f"Note: {dependency} would run first and writes {shown}, read by {name}: this key "
            f"is for the files as they are now, and the key of {name} will change once "
            f"{dependency} has run."
        )


def _echo_verdict(explanation: _Explanation) -> None:
    name, key, before = explanation.task, short_key(explanation.key), explanation.compared_with
    if explanation.verdict == "would-hit":
        click.echo(f"{name} would hit: key {key} is in the {explanation.source} cache.")
        if before is None:
            click.echo("No earlier stored run to compare it with.")
            return
        click.echo(
            f"Against its most recent other stored run (key {short_key(before.key)}, "
            f"stored {_age(before.stored_at)}):"
        )
    elif before is None:
        click.echo(f"{name} would run (key {key}): no stored run of it to compare with.")
        return
    elif not explanation.changes:
        click.echo(
            f"{name} would run (key {key}): nothing changed since its last stored run, but that "
            "artifact is no longer complete in the local cache."
        )
        return
    else:
        click.echo(
            f"{name} would run (key {key}). Since its last stored run "
            f"(key {short_key(before.key)}, stored {_age(before.stored_at)}):"
        )
    for line in explanation.changes or ["nothing that enters the key changed"]:
        click.echo(f"  {line}")


@click.command("explain")
@click.argument("task_name", metavar="TASK")
@options(
    ALL_PROJECTS._replace(
        help="Compare with the task's runs in any project on this cache, not only this one."
    ),
    JSON,
    NO_TOOLCHAIN._replace(
        help="Hash as `cachehook run --no-toolchain` does: without the toolchain."
    ),
    ROOT,
    CACHE_DIR,
)
def explain(
    task_name: str,
    all_projects: bool,
    as_json: bool,
    no_toolchain: bool,
    **flags: Unpack[SettingsFlags],
) -> None:
    """Say why TASK would run now, or why its last run missed.

    Lists every input added, removed or changed since the task's last stored run, the
    environment variables whose values changed (never the values), the tools whose version
    changed (``toolchain: ruff 0.15.9 -> 0.17.6``), and command, salt, output or dependency
    changes. Runs nothing. When a dependency would run first and write an input of TASK, it
    says so: TASK's key then changes once that dependency has run.
    """
    settings = load_cli_settings(flags, workspace=True)
    graph = load_tasks_or_explain(settings, cwd=Path.cwd())
    console = Console()
    with Runner(settings, on_notice=console.warn, use_toolchain=not no_toolchain) as runner:
        plan = plan_tasks(graph, [task_name], runner)
        current = plan[-1]
        try:
            project = None if all_projects else runner.project
            explanation = _explain(current, runner.store, settings.cache_dir, project, graph)
        except StoreError as exc:
            console.warn(f"{exc}; cannot compare with earlier runs")
            explanation = _Explanation(task_name, current.prepared.key, "would-run", None)
        explanation = dataclasses.replace(explanation, rewritten_by=_rewritten_by(plan))
    if as_json:
        print_json(explanation.to_json())
    else:
        _echo(explanation)
