"""The task table, the graph and the scheduler, driven through a real ``Runner``."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from cachehook import process
from cachehook.config import load_settings
from cachehook.errors import ConfigError
from cachehook.runner import Runner
from cachehook.scheduler import TaskOutcome, run_tasks
from cachehook.tasks import load_tasks, plan_tasks

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook.tasks import TaskGraph

PY = sys.executable
SOURCE = "pyproject.toml"


def graph_of(tasks: dict[str, Any], root: Path) -> TaskGraph:
    # These tasks write stamps into their cwd: without 'inputs' every file there would be an
    # input (issue 10), so each says it reads none unless the test gives its own.
    bodies = {n: {"inputs": [], **b} if isinstance(b, dict) else b for n, b in tasks.items()}
    return load_tasks({"tasks": bodies}, source=SOURCE, root=root)


# --------------------------------------------------------------------------- the table


def test_command_string_is_split_like_a_shell(tmp_path: Path) -> None:
    graph = graph_of({"a": {"command": "python -c 'print(1)'", "salt": "x"}}, tmp_path)
    task = graph.tasks["a"]
    assert task.command == ("python", "-c", "print(1)")
    assert (task.salt, task.cwd, task.depends_on) == ("x", ".", ())


def test_depends_on_keeps_order_and_drops_repeats(tmp_path: Path) -> None:
    tasks: dict[str, Any] = {"a": {"command": "x"}, "b": {"command": "x"}}
    tasks["c"] = {"command": "x", "depends-on": ["b", "a", "b"]}
    assert graph_of(tasks, tmp_path).tasks["c"].depends_on == ("b", "a")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"command": ""}, "[tool.cachehook.tasks.a] command: is empty"),
        ({"command": "say 'hi"}, "[tool.cachehook.tasks.a] command: cannot split"),
        ({"command": ["x", 1]}, "command: expected a string or an array of strings, got an array"),
        ({}, "[tool.cachehook.tasks.a]: missing 'command'"),
        ({"command": "x", "env": ["A-B"]}, "env: 'A-B' is not a variable name"),
        ({"command": "x", "salt": 2}, "salt: expected a string, got an integer"),
        ({"command": "x", "cwd": "nope"}, "cwd: 'nope' is not a directory under"),
        ({"command": "x", "inputs": ["src/["]}, "inputs: 'src/[': unbalanced '['"),
        ({"command": "x", "input": ["a"]}, "input: unknown key (did you mean 'inputs'?)"),
        ({"command": "x", "depends-on": ["a"]}, "depends-on: cycle a -> a"),
    ],
)
def test_bad_task_bodies(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        graph_of({"a": body}, tmp_path)
    assert str(caught.value).startswith(f"{SOURCE}: [tool.cachehook.tasks.a]")
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_bad_names_and_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'tasks\."a b"\]: a task name is letters'):
        graph_of({"a b": {"command": "x"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"tasks\.a\]: expected a table .* got a string"):
        graph_of({"a": "make"}, tmp_path)


def test_select_puts_dependencies_first_and_suggests_names(tmp_path: Path) -> None:
    graph = graph_of(
        {
            "lint": {"command": "x"},
            "gen": {"command": "x"},
            "docs": {"command": "x", "depends-on": ["gen"]},
            "site": {"command": "x", "depends-on": ["docs", "lint"]},
        },
        tmp_path,
    )
    assert graph.select(["site"]) == ["gen", "docs", "lint", "site"]
    assert graph.select(["lint", "docs", "gen"]) == ["lint", "gen", "docs"]
    with pytest.raises(ConfigError, match=r"unknown task 'doc' \(did you mean 'docs'\?\)"):
        graph.select(["doc"])
    with pytest.raises(ConfigError, match="defines no tasks"):
        graph_of({}, tmp_path).select(["a"])


# --------------------------------------------------------------------------- the scheduler


class Reporter:
    """A reporter that remembers what it was told."""

    def __init__(self) -> None:
        self.started_names: list[str] = []
        self.outcomes: list[TaskOutcome] = []
        self.lock = threading.Lock()

    def live(self, name: str) -> None:
        return None

    def started(self, name: str, key: str) -> None:
        with self.lock:
            self.started_names.append(name)

    def finished(self, outcome: TaskOutcome) -> None:
        self.outcomes.append(outcome)
        if self.markers is not None:  # for commands that wait for the scheduler to see it
            (self.markers / f"{outcome.name}.recorded").touch()

    markers: Path | None = None


def stamp_command(
    name: str, sleep: float = 0.0, code: int = 0, *, wait_for: tuple[str, ...] = ()
) -> list[str]:
    """A command that logs its start and end times to runs.jsonl.

    ``wait_for``: files (relative to the cwd) it waits for, generously, after it starts and
    before it ends, so that an order of events holds however slow the machine is (issue 9).
    """
    script = (
        "import json, pathlib, sys, time\n"
        f"t0 = time.time(); pathlib.Path({name + '.started'!r}).touch(); time.sleep({sleep})\n"
        f"deadline = time.monotonic() + 60\n"
        f"while not all(pathlib.Path(f).exists() for f in {list(wait_for)!r}):\n"
        "    time.sleep(0.02)\n"
        "    if time.monotonic() > deadline: sys.exit(99)\n"
        "with open('runs.jsonl', 'a') as f:\n"
        f"    f.write(json.dumps({{'name': {name!r}, 'start': t0, 'end': time.time()}}) + '\\n')\n"
        f"sys.exit({code})\n"
    )
    return [PY, "-c", script]


def runs(root: Path) -> list[dict[str, Any]]:
    path = root / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    (tmp_path / "pyproject.toml").write_text("")
    settings = load_settings(cwd=tmp_path, environ=os.environ, cache_dir=tmp_path / ".cache")
    return Runner(settings, on_notice=lambda message: None)


def test_dependencies_finish_before_dependents_start_and_feed_their_keys(
    tmp_path: Path, runner: Runner
) -> None:
    graph = graph_of(
        {
            "a": {"command": stamp_command("a", wait_for=("b.started",))},
            "b": {"command": stamp_command("b", wait_for=("a.started",))},
            "c": {"command": stamp_command("c"), "depends-on": ["a", "b"]},
        },
        tmp_path,
    )
    reporter = Reporter()
    with runner:
        report = run_tasks(graph, ["c"], runner, reporter=reporter, jobs=2)
    assert [o.state for o in report.outcomes] == ["ran", "ran", "ran"]
    times = {run["name"]: run for run in runs(tmp_path)}
    assert times["c"]["start"] >= max(times["a"]["end"], times["b"]["end"])
    assert times["a"]["start"] < times["b"]["end"]
    assert times["b"]["start"] < times["a"]["end"]
    a, b, c = report.outcomes
    assert c.prepared is not None
    assert c.prepared.manifest.dependencies == tuple(sorted([a.key or "", b.key or ""]))
    assert sorted(reporter.started_names) == ["a", "b", "c"]
    assert report.exit_code == 0


def test_second_run_hits_without_starting_anything(tmp_path: Path, runner: Runner) -> None:
    graph = graph_of(
        {"a": {"command": stamp_command("a")}, "b": {"command": stamp_command("b"),
                                                     "depends-on": ["a"]}},
        tmp_path,
    )  # fmt: skip
    with runner:
        run_tasks(graph, ["b"], runner, reporter=Reporter())
        reporter = Reporter()
        report = run_tasks(graph, ["b"], runner, reporter=reporter, jobs=4)
        planned = plan_tasks(graph, ["b"], runner)
    assert [o.state for o in report.outcomes] == ["cached", "cached"]
    assert reporter.started_names == []
    assert len(runs(tmp_path)) == 2
    assert [p.is_cached for p in planned] == [True, True]
    assert [p.prepared.key for p in planned] == [o.key for o in report.outcomes]


def test_never_more_than_jobs_at_once(tmp_path: Path, runner: Runner) -> None:
    graph = graph_of(
        {f"t{i}": {"command": stamp_command(f"t{i}", 0.3)} for i in range(6)}, tmp_path
    )
    with runner:
        report = run_tasks(graph, sorted(graph.tasks), runner, reporter=Reporter(), jobs=2)
    assert report.exit_code == 0
    spans = runs(tmp_path)
    most = max(sum(1 for o in spans if o["start"] <= s["start"] < o["end"]) for s in spans)
    assert most <= 2  # that two do run at once: test_dependencies_finish_before_...


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_failure_stops_new_tasks_unless_keep_going(
    tmp_path: Path, runner: Runner, jobs: int
) -> None:
    graph = graph_of(
        {
            "bad": {"command": stamp_command("bad", code=7)},
            "dep": {"command": stamp_command("dep"), "depends-on": ["bad"]},
            "late": {"command": stamp_command("late"), "depends-on": ["slow"]},
            # slow ends only once the scheduler has recorded bad's failure
            "slow": {"command": stamp_command("slow", wait_for=("bad.recorded",))},
        },
        tmp_path,
    )
    reporter = Reporter()
    reporter.markers = tmp_path
    with runner:
        stopped = run_tasks(graph, ["bad", "dep", "late"], runner, reporter=reporter, jobs=jobs)
        states = {o.name: o.state for o in stopped.outcomes}
        assert states["bad"] == "failed"
        assert states["dep"] == "skipped"
        assert states["late"] == "cancelled"
        assert stopped.exit_code == 7
        assert stopped.first_failure == "bad"
        (tmp_path / "runs.jsonl").unlink()
        going = run_tasks(
            graph,
            ["bad", "dep", "late"],
            runner,
            reporter=Reporter(),
            jobs=jobs,
            keep_going=True,
            force=True,  # with 3 jobs, slow was already running when bad failed: it is cached
        )
    assert {o.name: o.state for o in going.outcomes} == {
        "bad": "failed", "dep": "skipped", "slow": "ran", "late": "ran",
    }  # fmt: skip
    assert going.exit_code == 7
    assert sorted(run["name"] for run in runs(tmp_path)) == ["bad", "late", "slow"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_keyboard_interrupt_from_a_child_stops_the_run(
    tmp_path: Path, runner: Runner, jobs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = process.run_command
    reporter = Reporter()

    def interrupted(argv: Any, **kwargs: Any) -> int:
        if "'b'" in argv[-1]:
            deadline = time.monotonic() + 60
            while jobs == 2 and "a" not in reporter.started_names:  # a runs when ^C comes
                assert time.monotonic() < deadline
                time.sleep(0.01)
            raise KeyboardInterrupt  # what process.run_command raises after ^C
        return real(argv, **kwargs)

    monkeypatch.setattr("cachehook.scheduler.run_command", interrupted)
    graph = graph_of(
        {
            "a": {"command": stamp_command("a", 0.5)},
            "b": {"command": stamp_command("b")},
            "c": {"command": stamp_command("c"), "depends-on": ["a"]},
            "d": {"command": stamp_command("d"), "depends-on": ["b"]},
        },
        tmp_path,
    )
    with runner:
        report = run_tasks(graph, ["d", "c"], runner, reporter=reporter, jobs=jobs)
    assert report.is_interrupted
    assert report.exit_code == 130
    states = {o.name: o.state for o in report.outcomes}
    # b is interrupted first; with 2 jobs, a is already running and is awaited.
    expected = {"b": "cancelled", "d": "cancelled", "a": "ran", "c": "cancelled"}
    if jobs == 1:
        expected["a"] = "cancelled"
    assert states == expected
    assert {run["name"] for run in runs(tmp_path)} == ({"a"} if jobs == 2 else set())


def test_a_command_that_cannot_start_is_an_error_of_that_task(
    tmp_path: Path, runner: Runner
) -> None:
    graph = graph_of(
        {
            "a": {"command": "no-such-program-cachehook"},
            "b": {"command": stamp_command("b")},
            "c": {"command": stamp_command("c"), "depends-on": ["a"]},
        },
        tmp_path,
    )
    with runner:
        report = run_tasks(graph, ["a", "b", "c"], runner, reporter=Reporter(), keep_going=True)
    a, b, c = report.outcomes
    assert (a.state, a.exit_code, b.state, c.state) == ("error", 2, "ran", "skipped")
    assert "cannot run 'no-such-program-cachehook'" in a.message
    assert c.message == "it depends on 'a', which failed"
    assert report.exit_code == 2


def test_pass_env_is_a_task_key(tmp_path: Path) -> None:
    from cachehook.tasks import load_tasks

    (tmp_path / "pyproject.toml").write_text("")
    table = {"tasks": {"t": {"command": "true", "inputs": [], "pass-env": ["CACHEHOOK_TOKEN"]}}}
    graph = load_tasks(table, source="pyproject.toml", root=tmp_path)
    assert graph.tasks["t"].spec(tmp_path, []).pass_env == ("CACHEHOOK_TOKEN",)
    table = {"tasks": {"t": {"command": "true", "pass-env": ["TOKEN*"]}}}
    with pytest.raises(ConfigError, match="pass-env: 'TOKEN\\*' is not a variable name"):
        load_tasks(table, source="pyproject.toml", root=tmp_path)


def test_one_job_starts_tasks_in_plan_order_and_skips_what_a_failure_blocks(
    tmp_path: Path, runner: Runner
) -> None:
    # A diamond under a failing root: what depends on the failure, directly or through a
    # skipped task, is skipped; everything else runs, each task after its dependencies and, with
    # one job, in the order the plan lists them.
    graph = graph_of(
        {
            "base": {"command": stamp_command("base")},
            "left": {"command": stamp_command("left"), "depends-on": ["base"]},
            "right": {"command": stamp_command("right"), "depends-on": ["base"]},
            "bad": {"command": stamp_command("bad", code=3), "depends-on": ["left"]},
            "top": {"command": stamp_command("top"), "depends-on": ["right", "bad"]},
            "above": {"command": stamp_command("above"), "depends-on": ["top"]},
            "aside": {"command": stamp_command("aside"), "depends-on": ["right"]},
        },
        tmp_path,
    )
    plan = graph.select(["above", "aside"])
    reporter = Reporter()
    with runner:
        report = run_tasks(graph, ["above", "aside"], runner, reporter=reporter, keep_going=True)
    states = {o.name: (o.state, o.message) for o in report.outcomes}
    assert states["bad"][0] == "failed"
    assert states["top"] == ("skipped", "it depends on 'bad', which failed")
    assert states["above"] == ("skipped", "it depends on 'top', which did not run")
    assert reporter.started_names == [n for n in plan if n not in ("top", "above")]
    assert [o.name for o in report.outcomes] == plan
