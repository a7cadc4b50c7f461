"""The task graph of a uv workspace, run through a real ``Runner`` on real files (issue 14).

The workspace is a diamond: ``a`` depends on ``b`` and ``c``, both depend on ``d``.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.config import load_settings
from cachehook.errors import ConfigError
from cachehook.runner import Runner
from cachehook.scheduler import TaskOutcome, run_tasks
from cachehook.tasks import load_task_graph, plan_tasks

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from cachehook.tasks import TaskGraph

PY = sys.executable
DEPS = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
# Which third-party package each member requires directly, as locked below.
THIRD = {"a": "httpx", "d": "attrs"}


def lock_text(versions: dict[str, str]) -> str:
    blocks = ['version = 1\nrequires-python = ">=3.11"\n']
    for name, deps in DEPS.items():
        edges = [*deps, *([THIRD[name]] if name in THIRD else [])]
        listed = ", ".join(f'{{ name = "{d}" }}' for d in edges)
        blocks.append(
            f'[[package]]\nname = "{name}"\nversion = "0.1.0"\n'
            f'source = {{ editable = "packages/{name}" }}\ndependencies = [{listed}]\n'
        )
    for name, version in versions.items():
        blocks.append(
            f'[[package]]\nname = "{name}"\nversion = "{version}"\n'
            'source = { registry = "https://pypi.org/simple" }\n'
        )
    return "\n".join(blocks)


def make_workspace(root: Path, cachehook: str, *, members: dict[str, str] | None = None) -> Path:
    """A diamond workspace; ``cachehook`` is the root's [tool.cachehook] TOML."""
    (root / "pyproject.toml").write_text(
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n\n' + textwrap.dedent(cachehook)
    )
    for name, deps in DEPS.items():
        directory = root / "packages" / name
        (directory / "src").mkdir(parents=True)
        (directory / "src" / f"{name}.py").write_text(f"NAME = {name!r}\n")
        requirements = [*deps, *([THIRD[name]] if name in THIRD else [])]
        text = f'[project]\nname = "{name}"\nversion = "0.1.0"\n'
        text += f"dependencies = {json.dumps(requirements)}\n"
        if deps:
            text += "[tool.uv.sources]\n" + "".join(f"{d} = {{ workspace = true }}\n" for d in deps)
        text += textwrap.dedent((members or {}).get(name, ""))
        (directory / "pyproject.toml").write_text(text)
    (root / "uv.lock").write_text(lock_text({"httpx": "0.27.0", "attrs": "24.2.0"}))
    return root


def graph_at(root: Path) -> TaskGraph:
    settings = load_settings(cwd=root, environ=os.environ, cache_dir=root / ".cache")
    return load_task_graph(settings, cwd=root)


class Reporter:
    def __init__(self) -> None:
        self.outcomes: list[TaskOutcome] = []

    def live(self, name: str) -> None:
        return None

    def started(self, name: str, key: str) -> None:
        pass

    def finished(self, outcome: TaskOutcome) -> None:
        self.outcomes.append(outcome)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    settings = load_settings(cwd=tmp_path, environ=os.environ, cache_dir=tmp_path / ".cache")
    with Runner(settings, on_notice=lambda message: None) as runner:
        yield runner


def keys(root: Path, runner: Runner, names: list[str]) -> dict[str, str]:
    return {p.task.name: p.prepared.key for p in plan_tasks(graph_at(root), names, runner)}


def run(root: Path, runner: Runner, names: list[str], jobs: int = 1) -> dict[str, str]:
    reporter = Reporter()
    report = run_tasks(graph_at(root), names, runner, reporter=reporter, jobs=jobs)
    assert report.exit_code == 0, [(o.name, o.message) for o in report.outcomes]
    return {o.name: o.state for o in report.outcomes}


# A command that logs its start and end, in order, to the root's events.log.
LOG = (
    "import os, pathlib, sys\n"
    "log = pathlib.Path('../../events.log')\n"
    "name = pathlib.Path.cwd().name\n"
    "with log.open('a') as f: f.write(f'start {name}\\n')\n"
    "with log.open('a') as f: f.write(f'end {name}\\n')\n"
)
ROOT_TASKS = f"""
    [tool.cachehook]
    global-inputs = ["shared.toml"]

    [tool.cachehook.tasks.build]
    per-member = true
    command = {json.dumps([PY, "-c", LOG])}
    inputs = ["src/**", "pyproject.toml"]
    outputs = ["dist/**"]
    depends-on = ["^build"]

    [tool.cachehook.tasks.test]
    per-member = true
    command = {json.dumps([PY, "-c", "print('ok')"])}

    [tool.cachehook.tasks.lint]
    per-member = true
    command = {json.dumps([PY, "-c", "print('lint')"])}
    upstream-inputs = false
"""


def test_per_member_tasks_run_in_each_member_with_member_relative_globs(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    graph = graph_at(root)
    assert graph.groups["build"] == ("a#build", "b#build", "c#build", "d#build")
    build = graph.tasks["b#build"]
    assert build.cwd == "packages/b"
    assert build.inputs == (
        "packages/b/src/**",
        "packages/b/pyproject.toml",
        "packages/d/**",  # b imports d (an editable install): d's files enter b's key
        "shared.toml",
    )
    assert build.outputs == ("packages/b/dist/**",)
    assert build.depends_on == ("d#build",)
    assert graph.tasks["a#build"].depends_on == ("b#build", "c#build")
    # No inputs declared: every file of the member.
    assert graph.tasks["d#test"].inputs == ("packages/d/**", "shared.toml")
    assert graph.tasks["a#lint"].inputs == ("packages/a/**", "shared.toml")
    assert graph.member_of["c#test"] == "c"


def test_caret_dependencies_finish_before_their_dependents_start(
    tmp_path: Path, runner: Runner
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")

    states = run(root, runner, ["build"], jobs=3)

    assert states == dict.fromkeys(["a#build", "b#build", "c#build", "d#build"], "ran")
    events = (root / "events.log").read_text().splitlines()
    assert events.index("end d") < events.index("start b")
    assert events.index("end d") < events.index("start c")
    assert events.index("end b") < events.index("start a")
    assert events.index("end c") < events.index("start a")
    # Filtering to one member still brings what its ^build needs.
    assert graph_at(root).select(["b#build"]) == ["d#build", "b#build"]


def test_a_lock_bump_only_invalidates_the_members_that_reach_the_package(
    tmp_path: Path, runner: Runner
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    assert set(run(root, runner, ["test", "lint"]).values()) == {"ran"}
    assert set(run(root, runner, ["test", "lint"]).values()) == {"cached"}

    # httpx: only a requires it.
    (root / "uv.lock").write_text(lock_text({"httpx": "0.28.1", "attrs": "24.2.0"}))
    states = run(root, runner, ["test", "lint"])
    assert {n for n, s in states.items() if s == "ran"} == {"a#test", "a#lint"}

    # attrs: d requires it, and a, b, c reach d.
    (root / "uv.lock").write_text(lock_text({"httpx": "0.28.1", "attrs": "25.1.0"}))
    states = run(root, runner, ["test"])
    assert set(states.values()) == {"ran"}


def test_upstream_files_and_global_inputs_enter_the_key(tmp_path: Path, runner: Runner) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    names = ["test", "lint"]
    before = keys(root, runner, names)

    (root / "packages" / "d" / "src" / "d.py").write_text("NAME = 'changed'\n")
    after = keys(root, runner, names)
    changed = {n for n in before if before[n] != after[n]}
    # Every test reaches d; lint opts out of upstream files, so only d's lint changes.
    assert changed == {"a#test", "b#test", "c#test", "d#test", "d#lint"}

    (root / "shared.toml").write_text("x = 1\n")
    again = keys(root, runner, names)
    assert all(again[n] != after[n] for n in names for n in again)


def test_the_python_version_uv_reads_enters_every_member_key(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / ".python-version").write_text("3.12\n")
    (root / "packages" / "c" / ".python-version").write_text("3.13\n")
    graph = graph_at(root)
    assert graph.tasks["b#build"].inputs[-1:] == (".python-version",)
    assert graph.tasks["c#build"].inputs[-2:] == ("packages/c/.python-version", ".python-version")


def test_a_member_overrides_root_tasks_key_by_key_and_adds_its_own(tmp_path: Path) -> None:
    member_tables = {
        "d": f"""
        [tool.cachehook.tasks.build]
        command = {json.dumps([PY, "-c", "print('d builds its own way')"])}

        [tool.cachehook.tasks.docs]
        command = ["sphinx-build", "docs", "_build"]
        inputs = ["docs/**", "//shared.toml"]
        outputs = ["_build/**"]
        depends-on = ["build"]
        """
    }
    root = make_workspace(tmp_path, ROOT_TASKS, members=member_tables)
    graph = graph_at(root)

    d_build, b_build = graph.tasks["d#build"], graph.tasks["b#build"]
    assert d_build.command == (PY, "-c", "print('d builds its own way')")
    assert d_build.outputs == ("packages/d/dist/**",)  # kept from the root's table
    assert b_build.command[2] == LOG  # other members keep the root's command
    docs = graph.tasks["d#docs"]
    assert docs.inputs == ("packages/d/docs/**", "shared.toml")  # once, though named twice
    assert docs.outputs == ("packages/d/_build/**",)
    assert docs.depends_on == ("d#build",)
    assert graph.groups["docs"] == ("d#docs",)


def test_presets_give_the_usual_python_tasks_and_can_be_overridden(tmp_path: Path) -> None:
    root = make_workspace(
        tmp_path,
        """
        [tool.cachehook]
        presets = ["ruff", "mypy", "pytest", "build"]

        [tool.cachehook.tasks.test]
        per-member = true
        command = "pytest -x -q"
        """,
    )
    (root / "ruff.toml").write_text("")
    graph = graph_at(root)
    commands = {name: graph.tasks[f"b#{name}"].command for name in graph.groups}
    assert commands == {
        "lint": ("ruff", "check", "."),
        "format": ("ruff", "format", "--check", "."),
        "typecheck": ("mypy", "."),
        "test": ("pytest", "-x", "-q"),
        "build": ("uv", "build", "--package", "b", "--out-dir", "dist"),
    }
    # Ruff reads the member and the root's ruff config; only the config files that exist.
    assert graph.tasks["b#lint"].inputs == ("packages/b/**", "pyproject.toml", "ruff.toml")
    # pytest keeps its preset inputs (the override set only the command) and reads upstream.
    assert graph.tasks["b#test"].inputs == ("packages/b/**", "pyproject.toml", "packages/d/**")
    assert graph.tasks["b#build"].outputs == ("packages/b/dist/**",)
    # What uv reads from the environment enters the key of a uv command, not of others.
    assert "UV_PYTHON" in graph.tasks["b#build"].env
    assert "UV_PYTHON" not in graph.tasks["b#lint"].env


def test_the_interpreter_uv_is_told_to_use_enters_the_key(
    tmp_path: Path, runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace(tmp_path, '[tool.cachehook]\npresets = ["build"]\n')
    monkeypatch.setenv("UV_PYTHON", "3.12")
    before = keys(root, runner, ["build"])
    monkeypatch.setenv("UV_PYTHON", "3.13")
    after = keys(root, runner, ["build"])
    assert all(before[name] != after[name] for name in before)


@pytest.mark.parametrize(
    ("cachehook", "message"),
    [
        (
            '[tool.cachehook.tasks.t]\nper-member = true\ncommand = "x"\ndepends-on = ["nope"]\n',
            r"\[tool.cachehook.tasks.t\] depends-on: unknown task 'nope'",
        ),
        (
            '[tool.cachehook.tasks.t]\ncommand = "x"\ndepends-on = ["^build"]\n',
            r"'\^build': '\^' is for per-member tasks only",
        ),
        (
            '[tool.cachehook.tasks.t]\nper-member = true\ncommand = "x"\ninputs = ["../../../x"]\n',
            r"inputs: '../../../x' leaves the workspace root",
        ),
        (
            '[tool.cachehook.tasks.t]\nper-member = "yes"\ncommand = "x"\n',
            r"per-member: expected true or false",
        ),
        ('[tool.cachehook]\npresets = ["black"]\n', r"unknown preset 'black'; known: build"),
    ],
)
def test_bad_workspace_tables_are_named(tmp_path: Path, cachehook: str, message: str) -> None:
    root = make_workspace(tmp_path, cachehook)
    with pytest.raises(ConfigError, match=message):
        graph_at(root)


def test_a_bare_name_no_member_has_is_unknown(tmp_path: Path) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    with pytest.raises(ConfigError, match=r"unknown task 'tset' \(did you mean 'test'\?\)"):
        graph_at(root).select(["tset"])


def test_root_tasks_keep_working_beside_member_tasks(tmp_path: Path, runner: Runner) -> None:
    tables: dict[str, Any] = {}
    root = make_workspace(
        tmp_path,
        ROOT_TASKS
        + f"""
    [tool.cachehook.tasks.check-all]
    command = {json.dumps([PY, "-c", "print('all')"])}
    inputs = ["packages/**"]
    depends-on = ["a#test", "b#lint"]
    """,
        members=tables,
    )
    (root / "shared.toml").write_text("")
    states = run(root, runner, ["check-all"])
    assert list(states) == ["a#test", "b#lint", "check-all"]


def test_a_member_directory_with_glob_characters_is_matched_literally(
    tmp_path: Path, runner: Runner
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        f"[tool.cachehook.tasks.t]\nper-member = true\ncommand = {json.dumps([PY, '-c', ''])}\n"
    )
    for directory in ("v[1]", "v1"):
        (tmp_path / "packages" / directory).mkdir(parents=True)
        name = "odd" if "[" in directory else "plain"
        (tmp_path / "packages" / directory / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\n'
        )
    planned = {p.task.name: p for p in plan_tasks(graph_at(tmp_path), ["t"], runner)}
    paths = {entry.path for entry in planned["odd#t"].prepared.manifest.inputs}
    assert paths == {"packages/v[1]/pyproject.toml"}


def test_per_member_outside_a_workspace_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "solo"\n[tool.cachehook.tasks.t]\nper-member = true\ncommand = "x"\n'
    )
    with pytest.raises(ConfigError, match=r"per-member: only a uv workspace has members.*tool.uv"):
        graph_at(tmp_path)
