"""A run reuses what it walked and digested, until one of its tasks writes (issue 14).

Real tasks, real files, a real ``Runner`` and scheduler: each test would fail if a digest taken
for an earlier task of the run were used after a task rewrote the file.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.config import load_settings
from cachehook.hashing import digest_bytes
from cachehook.runner import Runner, TaskSpec
from cachehook.scheduler import RunReport, TaskOutcome, run_tasks
from cachehook.tasks import load_tasks, plan_tasks

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook.tasks import TaskGraph

COPY = (
    "import pathlib, sys; "
    "pathlib.Path(sys.argv[2]).write_bytes(pathlib.Path(sys.argv[1]).read_bytes())"
)


class Quiet:
    def live(self, name: str) -> None:
        return None

    def started(self, name: str, key: str) -> None:
        pass

    def finished(self, outcome: TaskOutcome) -> None:
        pass


def copy(source: str, target: str) -> list[str]:
    return [sys.executable, "-c", COPY, source, target]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    return project


def graph(root: Path, tasks: dict[str, Any]) -> TaskGraph:
    return load_tasks({"tasks": tasks}, source="pyproject.toml", root=root)


def run(root: Path, tasks: dict[str, Any], names: list[str]) -> dict[str, TaskOutcome]:
    """One ``cachehook run``: a fresh runner, one job, the tasks in the order given."""
    settings = load_settings(cwd=root, environ=os.environ, cache_dir=root.parent / "cache")
    with Runner(settings, on_notice=lambda message: None) as runner:
        report: RunReport = run_tasks(graph(root, tasks), names, runner, reporter=Quiet())
    assert report.exit_code == 0, report
    return {outcome.name: outcome for outcome in report.outcomes}


def input_digest(outcome: TaskOutcome, path: str) -> str:
    assert outcome.prepared is not None
    return {f.path: f.digest for f in outcome.prepared.manifest.inputs}[path]


# Three independent tasks, run in this order: 'before' reads data.txt, 'gen' writes it from
# seed.txt, 'after' reads it. 'after' does not depend on 'gen', so only data.txt's digest
# can tell it that 'gen' rewrote the file.
TASKS: dict[str, Any] = {
    "before": {"command": copy("data.txt", "b.txt"), "inputs": ["data.txt"], "outputs": ["b.txt"]},
    "gen": {
        "command": copy("seed.txt", "data.txt"),
        "inputs": ["seed.txt"],
        "outputs": ["data.txt"],
    },
    "after": {"command": copy("data.txt", "a.txt"), "inputs": ["data.txt"], "outputs": ["a.txt"]},
}
ORDER = ["before", "gen", "after"]


def test_a_task_that_runs_and_rewrites_the_next_ones_input_is_seen(root: Path) -> None:
    (root / "data.txt").write_text("AAAA")
    (root / "seed.txt").write_text("AAAA")
    first = run(root, TASKS, ORDER)
    assert [first[n].state for n in ORDER] == ["ran", "ran", "ran"]
    (root / "seed.txt").write_text("BBBB")  # same size: 'gen' rewrites data.txt within the second
    second = run(root, TASKS, ORDER)
    assert (second["before"].state, second["gen"].state) == ("cached", "ran")
    assert (root / "data.txt").read_text() == "BBBB"
    # Reusing 'before''s digest of data.txt would give the first run's key: a false hit that
    # replays a.txt as AAAA.
    assert input_digest(second["after"], "data.txt") == digest_bytes(b"BBBB")
    assert second["after"].state == "ran"
    assert (root / "a.txt").read_text() == "BBBB"


def test_a_hit_that_restores_the_next_ones_input_is_seen(root: Path) -> None:
    (root / "data.txt").write_text("AAAA")
    (root / "seed.txt").write_text("AAAA")
    run(root, TASKS, ORDER)
    (root / "data.txt").write_text("CCCC")  # 'before' reads this; 'gen''s hit restores AAAA
    second = run(root, TASKS, ORDER)
    assert input_digest(second["before"], "data.txt") == digest_bytes(b"CCCC")
    assert second["gen"].state == "cached"
    assert second["gen"].result is not None
    assert second["gen"].result.restored == ("data.txt",)
    assert input_digest(second["after"], "data.txt") == digest_bytes(b"AAAA")
    assert second["after"].state == "cached"


def test_an_input_a_task_edits_while_it_runs_is_still_caught(root: Path) -> None:
    (root / "in.txt").write_text("one\n")
    append = "import pathlib; p = pathlib.Path('in.txt'); p.write_text(p.read_text() + 'two\\n')"
    tasks = {"edit": {"command": [sys.executable, "-c", append], "inputs": ["in.txt"]}}
    outcome = run(root, tasks, ["edit"])["edit"]
    assert outcome.state == "ran"
    assert outcome.result is not None
    assert outcome.result.stored is False


def test_a_run_lists_and_reads_each_input_once_while_nothing_writes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(20):
        (root / "src" / f"d{index % 4}").mkdir(parents=True, exist_ok=True)
        (root / "src" / f"d{index % 4}" / f"f{index}.py").write_text(str(index))
    tasks = {n: {"command": ["true"], "inputs": ["src/**"], "salt": n} for n in ("a", "b", "c")}
    listed: list[str] = []
    examined: list[str] = []
    real_scandir, real_lstat = os.scandir, os.lstat

    def scandir(path: Any) -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    def lstat(path: Any, *, dir_fd: int | None = None) -> os.stat_result:
        if os.fspath(path).endswith(".py"):
            examined.append(os.fspath(path))
        return real_lstat(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "lstat", lstat)
    settings = load_settings(cwd=root, environ=os.environ, cache_dir=root.parent / "cache")
    with Runner(settings, on_notice=lambda message: None, use_toolchain=False) as runner:
        planned = plan_tasks(graph(root, tasks), ["a", "b", "c"], runner)
    assert len({p.prepared.key for p in planned}) == 3
    assert sorted(listed) == sorted(set(listed)), "each directory listed once for three tasks"
    assert len(listed) == 6  # the root, src and its four directories
    assert len(examined) == 20, "each input examined once for three tasks"
    assert [len(p.prepared.manifest.inputs) for p in planned] == [20, 20, 20]


def test_a_runner_outside_a_run_reads_afresh(root: Path) -> None:
    """A pooled runner (the decorators') prepares again after the user's code edited files."""
    (root / "in.txt").write_text("AAAA")
    spec = TaskSpec(command=("true",), inputs=("in.txt",), cwd=root, toolchain=False)
    settings = load_settings(cwd=root, environ=os.environ, cache_dir=root.parent / "cache")
    with Runner(settings, on_notice=lambda message: None) as runner:
        before = runner.prepare(spec)
        (root / "in.txt").write_text("BBBB")
        after = runner.prepare(spec)
        with runner.reusing_inputs():
            runner.prepare(spec)
            (root / "in.txt").write_text("CCCC")  # an edit no task made: the run does not see it
            same = runner.prepare(spec)
        again = runner.prepare(spec)
    assert before.key != after.key
    assert same.key == after.key
    assert input_digest_of(again) == digest_bytes(b"CCCC")


def input_digest_of(prepared: Any) -> str:
    return str(prepared.manifest.inputs[0].digest)
