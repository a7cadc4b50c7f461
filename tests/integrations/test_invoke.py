"""The invoke adapter: in-process with ``invoke.MockContext``, and through the real ``inv``."""

from __future__ import annotations

import shutil
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from invoke.context import Context, MockContext
from invoke.runners import Result
from invoke.tasks import task

from cachehook.integrations.invoke import cached
from tests.integrations.hosts import RESOURCES, run_tool

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from invoke.parser.argument import Argument


def mock_context() -> MockContext:
    return MockContext(run=Result("ok\n"), repeat=True)


def run_count(c: MockContext) -> int:
    mock: Any = c.run
    return int(mock.call_count)


def test_a_hit_skips_the_body_and_says_so_on_stderr(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "docs").mkdir()
    (project / "docs" / "index.md").write_text("# hi\n")

    @task
    @cached(inputs=["docs/**"], outputs=["site/index.html"])
    def docs(c: Context) -> None:
        c.run("sphinx-build docs site")
        (project / "site").mkdir(exist_ok=True)
        (project / "site" / "index.html").write_text("<h1>hi</h1>")

    c = mock_context()
    docs(c)
    (project / "site" / "index.html").unlink()
    docs(c)
    assert run_count(c) == 1
    assert (project / "site" / "index.html").read_text() == "<h1>hi</h1>"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("cachehook: miss ")
    assert lines[1].startswith("cachehook: local hit ")
    assert lines[1].endswith("skipped the body")


def test_every_argument_enters_the_key_with_defaults_applied(project: Path) -> None:
    seen: list[tuple[str, bool]] = []

    @task
    @cached
    def build(c: Context, fmt: str = "html", loud: bool = False) -> None:
        seen.append((fmt, loud))

    c = mock_context()
    build(c)
    build(c, fmt="html")
    build(c, "html", False)
    build(c, fmt="txt")
    build(c, loud=True)
    build(c, fmt="txt")
    assert seen == [("html", False), ("txt", False), ("html", True)]


def test_ignored_flags_and_the_context_stay_out_of_the_key(project: Path) -> None:
    seen: list[bool] = []

    @task
    @cached(ignore=["verbose"])
    def check(c: Context, verbose: bool = False) -> None:
        seen.append(verbose)

    check(mock_context())
    check(MockContext(run=Result("other")), verbose=True)
    assert seen == [False]


def test_the_cd_directory_enters_the_key(project: Path) -> None:
    seen: list[str] = []

    @task
    @cached
    def where(c: Context) -> None:
        seen.append(c.cwd)

    c = mock_context()
    where(c)
    with c.cd("sub"):
        where(c)
        where(c)
    where(c)
    assert seen == ["", "sub"]


def test_a_failing_task_is_not_cached(project: Path) -> None:
    from invoke.exceptions import Exit

    calls: list[int] = []

    @task
    @cached
    def lint(c: Context) -> None:
        calls.append(1)
        if c.run("flake8", warn=True).failed:
            raise Exit("lint failed", code=1)

    failing = MockContext(run=Result("", exited=1), repeat=True)
    for _ in range(2):
        with pytest.raises(Exit):
            lint(failing)
    assert len(calls) == 2


def test_invoke_still_sees_the_signature_and_help() -> None:
    @task(help={"fmt": "Output format."}, positional=[])
    @cached(outputs=["build/{fmt}/**"])
    def docs(c: Context, fmt: str = "html", jobs: int = 1) -> None:
        """Build the docs."""

    assert list(docs.argspec(docs.body).parameters) == ["fmt", "jobs"]
    arguments: list[Argument] = docs.get_arguments()
    by_name = {a.name: a for a in arguments}
    assert by_name["fmt"].help == "Output format."
    assert by_name["fmt"].default == "html"
    assert by_name["jobs"].kind is int
    assert docs.name == "docs"
    assert docs.__doc__ == "Build the docs."


def test_a_function_without_a_context_is_refused() -> None:
    def bare() -> None:
        pass

    with pytest.raises(TypeError, match="takes the context first"):
        cached(bare)


# -- the real `inv` ------------------------------------------------------------------------

RENDER = textwrap.dedent(
    """
    import pathlib, sys
    fmt, loud = sys.argv[1], sys.argv[2] == "1"
    text = "".join(p.read_text() for p in sorted(pathlib.Path("src").glob("*.txt")))
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path("out", fmt + ".txt").write_text(text.upper() if loud else text)
    """
)


@pytest.fixture
def invproject(tmp_path: Path) -> Path:
    root = tmp_path / "invproj"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'i'\nversion = '0'\n")
    (root / ".gitignore").write_text("out/\nruns.log\n__pycache__/\n")
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "render.py").write_text(RENDER)
    shutil.copy(RESOURCES / "tasks_cached.py", root / "tasks.py")
    return root


def inv(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("inv", *args, cwd=root)


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


@pytest.mark.integration
def test_real_inv_misses_then_hits_and_restores(invproject: Path) -> None:
    first = inv(invproject, "build")
    assert first.returncode == 0, first.stdout
    assert "cachehook: miss " in first.stdout
    (invproject / "out" / "txt.txt").unlink()
    second = inv(invproject, "build")
    assert second.returncode == 0, second.stdout
    assert "cachehook: local hit " in second.stdout
    assert runs(invproject) == ["build-txt"]
    assert (invproject / "out" / "txt.txt").read_text() == "alpha\n"


@pytest.mark.integration
def test_real_inv_flags_make_their_own_keys(invproject: Path) -> None:
    inv(invproject, "build")
    inv(invproject, "build", "--loud")
    inv(invproject, "build", "--fmt", "md")
    inv(invproject, "build", "--loud")
    inv(invproject, "build", "-f", "md")
    assert runs(invproject) == ["build-txt", "build-txt", "build-md"]
    assert (invproject / "out" / "md.txt").read_text() == "alpha\n"


@pytest.mark.integration
def test_real_inv_help_shows_the_task_arguments(invproject: Path) -> None:
    done = inv(invproject, "--help", "build")
    assert done.returncode == 0, done.stdout
    assert "Render src/ into out/<fmt>.txt." in done.stdout
    assert "-f STRING, --fmt=STRING" in done.stdout
    assert "Output format." in done.stdout
    assert "-l, --loud" in done.stdout
    assert "Shout it." in done.stdout


@pytest.mark.integration
def test_real_inv_pre_tasks_hit_on_their_own(invproject: Path) -> None:
    inv(invproject, "final")
    (invproject / "out" / "final.txt").unlink()
    done = inv(invproject, "final")
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("cachehook: local hit") == 2
    assert runs(invproject) == ["build-txt", "final"]
    assert (invproject / "out" / "final.txt").read_text() == "alpha\n"
