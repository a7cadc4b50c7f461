"""``cachehook run`` end to end: real task tables, real child processes, the real CLI.

cachehook runs in this process (the ``cli`` fixture); its tasks are real child processes, cheap
ones (``sh``) where Python does not matter. ``python -m cachehook`` children remain where the
process boundary is the behaviour: signals, and the entry point's exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli.conftest import CHILD_COVERAGE

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Ran

    Cli = Callable[..., Ran]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tasks"
PYTHON = sys.executable
# A task's own child is never measured (unmeasured_children); a cachehook child is.
pytestmark = pytest.mark.usefixtures("unmeasured_children", "this_python_on_path")


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``python -m cachehook`` child: measured, this ``python`` first."""
    path = os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")])
    return {**os.environ, **CHILD_COVERAGE, "PATH": path, **(env or {})}


def cachehook(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, with ``python`` on PATH being this interpreter."""
    return subprocess.run(
        [PYTHON, "-m", "cachehook", *args],
        cwd=cwd,
        env=child_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def this_python_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's ``python`` is this interpreter, found first on PATH (as ``cachehook`` gives)."""
    use_this_python(monkeypatch)


def use_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")])
    )


def copy_example(tmp_path: Path, *, slow: bool = False) -> Path:
    """examples/tasks in ``tmp_path``; unless ``slow``, without the sleeps of gen and docs.

    Their 0.3 s stand in for real work in the README; here only what is run and cached
    matters, and each miss of docs would otherwise cost 0.6 s.
    """
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("build", "models.py"))
    if not slow:
        for tool in ("gen_models.py", "build_docs.py"):
            script = project / "tools" / tool
            text = script.read_text()
            assert "time.sleep(0.3)" in text, f"{tool} changed: update copy_example"
            script.write_text(text.replace("time.sleep(0.3)", "time.sleep(0)"))
    return project


def write_project(root: Path, tasks_toml: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'p'\nversion = '0'\n\n" + textwrap.dedent(tasks_toml)
    )
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def summary_of(result: subprocess.CompletedProcess[str] | Ran) -> dict[str, Any]:
    match = re.search(r"run summary written to (.+\.json)$", result.stderr, re.MULTILINE)
    assert match, result.stderr
    data: dict[str, Any] = json.loads(Path(match.group(1)).read_text())
    return data


def states(summary: dict[str, Any]) -> dict[str, str]:
    return {task["name"]: task["state"] for task in summary["tasks"]}


def run_summarized(cli: Cli, project: Path, *args: str, **kwargs: Any) -> dict[str, Any]:
    result = cli("run", "--summarize", *args, cwd=project, **kwargs)
    assert result.returncode == 0, result.stderr
    return summary_of(result)


# --------------------------------------------------------------------------- the example


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def test_example_first_run_misses_second_hits_and_an_edit_reruns_its_dependents(
    example: Path, cli: Cli
) -> None:
    first = run_summarized(cli, example, "docs", "lint", "-j", "2")
    assert states(first) == {"gen": "ran", "docs": "ran", "lint": "ran"}
    assert [t["name"] for t in first["tasks"]].index("gen") < [
        t["name"] for t in first["tasks"]
    ].index("docs")
    page = (example / "build" / "docs" / "index.html").read_text()
    assert "<h2>User</h2><p>id, email, display_name</p>" in page

    shutil.rmtree(example / "build")
    second = run_summarized(cli, example, "docs", "lint", "-j", "2")
    assert states(second) == {"gen": "cached", "docs": "cached", "lint": "cached"}
    assert (example / "build" / "docs" / "index.html").read_text() == page
    assert second["summary"].startswith("3 tasks: 3 cached, 0 ran · saved ")

    schema = example / "schema" / "user.json"
    schema.write_text(schema.read_text().replace('"display_name": "str"', '"nick": "str"'))
    third = run_summarized(cli, example, "docs", "lint", "-j", "2")
    assert states(third) == {"gen": "ran", "docs": "ran", "lint": "cached"}
    assert "<p>id, email, nick</p>" in (example / "build" / "docs" / "index.html").read_text()

    (example / "docs" / "index.md").write_text("# Changed\n")
    fourth = run_summarized(cli, example, "docs", "lint", "-j", "2")
    assert states(fourth) == {"gen": "cached", "docs": "ran", "lint": "cached"}


def test_summary_line_and_summary_file_describe_each_task(example: Path, cli: Cli) -> None:
    result = cli("run", "docs", "--summarize", cwd=example)
    assert result.returncode == 0, result.stderr
    assert "cachehook: 2 tasks: 0 cached, 2 ran · saved 0.00s" in result.stderr
    first = {task["name"]: task for task in summary_of(result)["tasks"]}
    again = cli("run", "docs", "--summarize", cwd=example)
    summary = summary_of(again)
    # What a hit saves is what the run it replays took: never more, never nothing. The
    # figures themselves depend on the machine's speed, so only their relations are checked.
    saved = {task["name"]: task["saved_ms"] for task in summary["tasks"]}
    assert all(0 < saved[name] <= first[name]["duration_ms"] for name in ("gen", "docs"))
    assert summary["saved_ms"] == sum(saved.values())
    line = f"2 tasks: 2 cached, 0 ran · saved {summary['saved_ms'] / 1000:.2f}s"
    assert f"cachehook: {line}" in again.stderr
    assert summary["summary"] == line
    docs = next(task for task in summary["tasks"] if task["name"] == "docs")
    gen = next(task for task in summary["tasks"] if task["name"] == "gen")
    assert docs["cache"] == {
        "status": "HIT",
        "source": "LOCAL",
        "local_hit": True,
        "remote_hit": None,
    }
    assert docs["dependencies"] == {"gen": gen["key"]}
    assert docs["exit_code"] == 0
    assert {"path": "docs/index.md", "digest": docs["inputs"][0]["digest"]} in docs["inputs"]
    assert docs["env"] == []
    assert docs["command"][:2] == ["python", "tools/build_docs.py"]
    assert summary["exit_code"] == 0
    assert summary["targets"] == ["docs"]


def test_a_dependency_key_change_reruns_the_dependent(example: Path, cli: Cli) -> None:
    run_summarized(cli, example, "docs")
    toml = example / "pyproject.toml"
    toml.write_text(
        toml.read_text().replace(
            'command = "python tools/gen_models.py"',
            ('command = "python tools/gen_models.py"\nsalt = "v2"'),
        )
    )
    # gen writes the very same models.py; docs re-runs because gen's key is part of its own.
    assert states(run_summarized(cli, example, "docs")) == {"gen": "ran", "docs": "ran"}


def test_hit_replays_each_task_log_with_its_prefix(example: Path, cli: Cli) -> None:
    assert cli("run", "docs", "lint", cwd=example).returncode == 0
    result = cli("run", "docs", "lint", cwd=example)
    lines = result.stdout.splitlines()
    assert "gen  | gen: wrote src/app/models.py (2 models)" in lines
    assert "lint | lint: 5 files, 0 problems" in lines


def test_force_reruns_every_task(example: Path, cli: Cli) -> None:
    run_summarized(cli, example, "docs")
    assert states(run_summarized(cli, example, "docs", "--force")) == {"gen": "ran", "docs": "ran"}


# --------------------------------------------------------------------------- failures

FAILING = """
[tool.cachehook.tasks.bad]
command = ["sh", "-c", "echo bad ran; exit 3"]

[tool.cachehook.tasks.other]
command = ["sh", "-c", "echo x > other.txt"]

[tool.cachehook.tasks.after]
command = ["sh", "-c", "echo x > after.txt"]
depends-on = ["bad"]
"""


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    return write_project(tmp_path / "failing", FAILING)


def test_no_new_task_starts_after_a_failure(failing: Path, cli: Cli) -> None:
    result = cli("run", "bad", "after", "other", "--summarize", cwd=failing)
    assert result.returncode == 3, result.stderr
    assert states(summary_of(result)) == {"bad": "failed", "after": "skipped", "other": "cancelled"}
    assert not (failing / "other.txt").exists()
    assert not (failing / "after.txt").exists()
    assert "bad: failed with exit code 3" in result.stderr
    assert "1 failed, 1 skipped, 1 not started" in result.stderr


def test_continue_runs_everything_that_does_not_depend_on_the_failure(
    failing: Path, cli: Cli
) -> None:
    result = cli("run", "bad", "after", "other", "--continue", "--summarize", cwd=failing)
    assert result.returncode == 3
    assert states(summary_of(result)) == {"bad": "failed", "after": "skipped", "other": "ran"}
    assert (failing / "other.txt").exists()
    assert not (failing / "after.txt").exists()
    assert "after: skipped: it depends on 'bad', which failed" in result.stderr


def test_the_entry_point_passes_the_exit_code_on(failing: Path) -> None:
    """``python -m cachehook run``: the first failing task's code is the process's."""
    result = cachehook("run", "bad", "other", "--summarize", cwd=failing)
    assert result.returncode == 3, result.stderr
    assert "bad ran" in result.stdout
    assert states(summary_of(result)) == {"bad": "failed", "other": "cancelled"}


def test_exit_code_is_the_first_failing_tasks(tmp_path: Path, cli: Cli) -> None:
    # slow fails a second after fast has (fast leaves a marker first), never before it.
    slow = (
        "i=0; while [ ! -e fast.done ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done;"
        " sleep 1; exit 5"
    )
    project = write_project(
        tmp_path / "p",
        f"""
        [tool.cachehook.tasks.slow]
        command = {json.dumps(["sh", "-c", slow])}
        [tool.cachehook.tasks.fast]
        command = ["sh", "-c", "touch fast.done; exit 4"]
        """,
    )
    result = cli("run", "slow", "fast", "-j", "2", cwd=project)
    assert result.returncode == 4, result.stderr
    assert "failed: fast (exit 4), slow (exit 5)" in result.stderr or (
        "failed: slow (exit 5), fast (exit 4)" in result.stderr
    )


def test_a_command_that_cannot_start_is_an_error_of_that_task(tmp_path: Path, cli: Cli) -> None:
    project = write_project(
        tmp_path / "p",
        """
        [tool.cachehook.tasks.ghost]
        command = "no-such-program-cachehook --version"
        """,
    )
    result = cli("run", "ghost", cwd=project)
    assert result.returncode == 2
    assert "ghost: cannot run 'no-such-program-cachehook'" in result.stderr
    assert "1 errored" in result.stderr


# --------------------------------------------------------------------------- parallel


def test_parallel_output_is_prefixed_and_never_split_mid_line(tmp_path: Path, cli: Cli) -> None:
    # Python: each half line is its own write, with pauses between them.
    script = """
        import sys, time
        name = sys.argv[1]
        for i in range(200):
            sys.stdout.write(f"{name}-{i}-" + "x" * 50)
            sys.stdout.flush()
            if i % 20 == 0:
                time.sleep(0.01)
            sys.stdout.write("-end\\n")
            sys.stdout.flush()
        """
    project = write_project(
        tmp_path / "p",
        f"""
        [tool.cachehook.tasks.one]
        command = ["{PYTHON}", "talk.py", "one"]
        inputs = ["talk.py"]
        [tool.cachehook.tasks.second]
        command = ["{PYTHON}", "talk.py", "two"]
        inputs = ["talk.py"]
        """,
        {"talk.py": script},
    )
    result = cli("run", "one", "second", "-j", "2", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 400
    pattern = re.compile(r"(one    \| one|second \| two)-\d+-x{50}-end")
    assert all(pattern.fullmatch(line) for line in lines), [
        line for line in lines if not pattern.fullmatch(line)
    ][:3]


def test_independent_tasks_run_in_parallel(tmp_path: Path, cli: Cli) -> None:
    # Each task says it started, then waits until all four have: with -j 4 they all
    # finish; run one after another, the first would give up waiting (60 s) and fail.
    rendezvous = (
        'touch "$0.started"; i=0; while set -- *.started; [ $# -lt 4 ]; do'
        " i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done"
    )
    project = write_project(
        tmp_path / "p",
        "".join(
            f"[tool.cachehook.tasks.s{i}]\n"
            f"command = {json.dumps(['sh', '-c', rendezvous, str(i)])}\n"
            for i in range(4)
        ),
    )
    result = cli("run", "s0", "s1", "s2", "s3", "-j", "4", cwd=project)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in project.glob("*.started")) == [f"{i}.started" for i in range(4)]


@pytest.mark.parametrize(
    ("jobs", "target"),
    [("1", "group"), ("2", "group"), ("1", "cachehook alone"), ("2", "cachehook alone")],
)
def test_interrupt_stops_the_run_and_caches_nothing(
    tmp_path: Path, cli: Cli, jobs: str, target: str
) -> None:
    project = write_project(
        tmp_path / "p",
        f"""
        [tool.cachehook.tasks.a]
        command = {started_then_sleeps("a")}
        [tool.cachehook.tasks.b]
        command = {started_then_sleeps("b")}
        [tool.cachehook.tasks.c]
        command = ["sh", "-c", "echo > c.txt"]
        depends-on = ["a", "b"]
        """,
    )
    child = subprocess.Popen(
        [PYTHON, "-m", "cachehook", "run", "c", "-j", jobs],
        cwd=project,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        wait_for_markers(project, int(jobs), child)
        if target == "group":
            os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(child.pid, signal.SIGINT)  # forwarded to every running child
        _, stderr = child.communicate(timeout=60)  # the children sleep for 10 minutes
        assert child.returncode == 130, stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
    assert not (project / "c.txt").exists()
    dry = cli("run", "c", "--dry-run=json", cwd=project)
    assert [task["cached"] for task in json.loads(dry.stdout)["tasks"]] == [False, False, False]


def started_then_sleeps(name: str, *, ignore_sigint: bool = False) -> str:
    """A task command (TOML array) that leaves ``NAME.started`` and then sleeps 10 minutes.

    A SIGINT ends it (``sleep`` dies of it) unless ``ignore_sigint``: an ignored signal stays
    ignored across ``exec``.
    """
    ignore = "trap '' INT; " if ignore_sigint else ""
    return json.dumps(["sh", "-c", f"{ignore}touch {name}.started; exec sleep 600"])


def wait_for_markers(project: Path, count: int, child: subprocess.Popen[str]) -> None:
    """Wait (generously) until ``count`` tasks have started, or fail if cachehook exited."""
    deadline = time.monotonic() + 120
    while len(list(project.glob("*.started"))) < count:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the tasks never started"
        time.sleep(0.05)


# --------------------------------------------------------------------------- dry run


def test_dry_run_shows_keys_and_inputs_and_runs_nothing(example: Path, cli: Cli) -> None:
    result = cli("run", "--dry-run", "docs", cwd=example)
    assert result.returncode == 0, result.stderr
    assert not (example / "src" / "app" / "models.py").exists()
    assert re.search(r"^gen  would run  key [0-9a-f]{32}$", result.stdout, re.MULTILINE)
    assert "  input    " in result.stdout
    assert "schema/user.json" in result.stdout
    run_summarized(cli, example, "docs")
    data = json.loads(cli("run", "docs", "--dry-run=json", cwd=example).stdout)
    gen, docs = data["tasks"]
    assert (gen["name"], gen["cached"], docs["name"], docs["cached"]) == ("gen", True, "docs", True)
    assert docs["dependencies"] == {"gen": gen["key"]}
    assert docs["env"] == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[tool.cachehook.tasks.gen]\ncommand = 'true'\n"
            "[tool.cachehook.tasks.docs]\ncommand = 'true'\ndepends-on = ['gen2']\n",
            "pyproject.toml: [tool.cachehook.tasks.docs] depends-on: unknown task 'gen2' "
            "(did you mean 'gen'?)",
        ),
        (
            "[tool.cachehook.tasks.a]\ncommand = 'true'\ndepends-on = ['b']\n"
            "[tool.cachehook.tasks.b]\ncommand = 'true'\ndepends-on = ['c']\n"
            "[tool.cachehook.tasks.c]\ncommand = 'true'\ndepends-on = ['a']\n",
            "pyproject.toml: [tool.cachehook.tasks.a] depends-on: cycle a -> b -> c -> a",
        ),
        (
            "[tool.cachehook.tasks.a]\ncommand = 'true'\ninputs = 'src/*.py'\n",
            "pyproject.toml: [tool.cachehook.tasks.a] inputs: expected an array of strings, "
            'got a string (write ["src/*.py"])',
        ),
        (
            "[tool.cachehook.tasks.a]\ncommand = 3\n",
            "pyproject.toml: [tool.cachehook.tasks.a] command: expected a string or an array "
            "of strings, got an integer",
        ),
        (
            "[tool.cachehook.tasks.a]\ncommand = 'true'\ndependsOn = ['b']\n",
            "pyproject.toml: [tool.cachehook.tasks.a] dependsOn: unknown key "
            "(did you mean 'depends-on'?)",
        ),
        (
            "[tool.cachehook.tasks.a]\ncommand = 'true'\noutputs = ['../out/*']\n",
            "pyproject.toml: [tool.cachehook.tasks.a] outputs: '../out/*': must not contain '..'",
        ),
        (
            "[tool.cachehook]\ntasks = ['a']\n",
            "pyproject.toml: [tool.cachehook] tasks: expected a table (named tasks",
        ),
        ("[tool.cachehook.tasks.a]\ncommand = 'true\n", "malformed TOML"),
    ],
    ids=["missing-dependency", "cycle", "wrong-type", "command-type", "unknown-key", "bad-glob",
         "tasks-type", "malformed-toml"],
)  # fmt: skip
def test_a_malformed_task_table_is_exit_2_naming_file_table_and_key(
    tmp_path: Path, cli: Cli, toml: str, expected: str
) -> None:
    project = write_project(tmp_path / "p", toml)
    for args in (["run", "a"], ["tasks"]):
        result = cli(*args, cwd=project)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert result.stderr.startswith("Error: ")


def test_an_unknown_task_suggests_close_names(example: Path, cli: Cli) -> None:
    result = cli("run", "dosc", cwd=example)
    assert result.returncode == 2
    assert "Error: unknown task 'dosc' (did you mean 'docs'?)" in result.stderr
    assert "the tasks in pyproject.toml are: docs, gen, lint" in result.stderr
    assert not (example / "src" / "app" / "models.py").exists()


def test_no_task_named_lists_the_tasks(example: Path, cli: Cli) -> None:
    result = cli("run", cwd=example)
    assert result.returncode == 2
    assert "name the tasks to run; the tasks in pyproject.toml are: docs, gen, lint" in (
        result.stderr
    )


def test_message_names_the_file_from_a_subdirectory(example: Path, cli: Cli) -> None:
    toml = example / "pyproject.toml"
    toml.write_text(toml.read_text().replace('depends-on = ["gen"]', 'depends-on = ["gne"]'))
    result = cli("run", "docs", cwd=example / "docs")
    assert result.returncode == 2
    assert result.stderr == (
        f"Error: {toml}: [tool.cachehook.tasks.docs] depends-on: unknown task 'gne' "
        "(did you mean 'gen'?)\n"
    )


def test_a_second_interrupt_stops_waiting_for_children_that_ignore_the_first(
    tmp_path: Path,
) -> None:
    # Each task survives a SIGINT and leaves NAME.sigint when one reaches it. The first ^C goes
    # to cachehook alone, so the markers prove cachehook handled it (it forwards it to its
    # children); only then comes the second. Two signals sent 1 s apart could merge into one
    # on a loaded machine, and the run would then wait for the tasks (issue 9).
    survives = (
        """trap 'touch "$0.sigint"' INT; touch "$0.started";"""
        " for i in $(seq 600); do sleep 1; done"
    )
    project = write_project(
        tmp_path / "p",
        f"""
        [tool.cachehook.tasks.a]
        command = {json.dumps(["sh", "-c", survives, "a"])}
        [tool.cachehook.tasks.b]
        command = {json.dumps(["sh", "-c", survives, "b"])}
        """,
    )
    child = subprocess.Popen(
        [PYTHON, "-m", "cachehook", "run", "a", "b", "-j", "2"],
        cwd=project,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_markers(project, 2, child)
        os.kill(child.pid, signal.SIGINT)
        deadline = time.monotonic() + 120
        while len(list(project.glob("*.sigint"))) < 2:
            assert child.poll() is None, child.communicate()  # the first ^C waits for them
            assert time.monotonic() < deadline, "the first ^C never reached the tasks"
            time.sleep(0.05)
        assert child.poll() is None
        os.kill(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
        assert child.returncode == 130, stderr
        assert "interrupted" in stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the tasks too: they are in its group
        child.communicate()


def test_sigterm_stops_every_running_child(tmp_path: Path) -> None:
    """A cancelled CI job sends SIGTERM to cachehook alone: no child may outlive it."""
    # sh runs its trap once the short sleep in progress ends: no sleep outlives the task.
    marker = (
        """trap 'echo x > "$0.stopped"; exit 1' TERM; touch "$0.started";"""
        " while :; do sleep 0.1; done"
    )
    project = write_project(
        tmp_path / "p",
        f"""
        [tool.cachehook.tasks.a]
        command = {json.dumps(["sh", "-c", marker, "a"])}
        [tool.cachehook.tasks.b]
        command = {json.dumps(["sh", "-c", marker, "b"])}
        """,
    )
    child = subprocess.Popen(
        [PYTHON, "-m", "cachehook", "run", "a", "b", "-j", "2"],
        cwd=project,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_markers(project, 2, child)
        os.kill(child.pid, signal.SIGTERM)
        out, stderr = child.communicate(timeout=60)
        assert child.returncode != 0, stderr
        assert (project / "a.stopped").exists(), out + stderr
        assert (project / "b.stopped").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()


@pytest.mark.integration
def test_dry_run_asks_the_remote_too(tmp_path: Path, cli: Cli, remote_env: dict[str, str]) -> None:
    tasks = """
        [tool.cachehook.tasks.make]
        command = ["sh", "-c", "printf made > out.txt"]
        inputs = ["in.txt"]
        outputs = ["out.txt"]
        """
    machines = [write_project(tmp_path / name, tasks, {"in.txt": "same"}) for name in ("a", "b")]
    env_a = {**remote_env, "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache-a")}
    env_b = {**remote_env, "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache-b")}
    before = json.loads(cli("run", "make", "--dry-run=json", cwd=machines[1], env=env_b).stdout)
    assert before["tasks"][0]["cache"] == {"local": False, "remote": False}
    assert cli("run", "make", cwd=machines[0], env=env_a).returncode == 0
    after = cli("run", "make", "--dry-run=json", cwd=machines[1], env=env_b)
    task = json.loads(after.stdout)["tasks"][0]
    assert task["cache"] == {"local": False, "remote": True}
    assert task["cached"] is True
    assert not (machines[1] / "out.txt").exists(), "a dry run restores nothing"
    text = cli("run", "make", "--dry-run", cwd=machines[1], env=env_b).stdout
    assert "cached (remote)" in text
    explained = cli("explain", "make", cwd=machines[1], env=env_b).stdout
    assert "make would hit" in explained
    assert "in the remote cache" in explained
