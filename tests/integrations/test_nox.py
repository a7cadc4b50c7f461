"""The nox adapter through real nox: the fixture noxfile tests/resources/noxfile_cached.py."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.integrations.hosts import RESOURCES, run_tool

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.fixture
def noxproject(tmp_path: Path) -> Path:
    root = tmp_path / "noxproj"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'n'\nversion = '0'\n")
    (root / ".gitignore").write_text(".nox/\nout/\nruns.log\n")
    (root / "src" / "a.txt").write_text("alpha\n")
    shutil.copy(RESOURCES / "noxfile_cached.py", root / "noxfile.py")
    return root


def nox(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool("nox", "--non-interactive", *args, cwd=root)


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


def test_a_hit_skips_the_body_logs_one_line_and_restores_outputs(noxproject: Path) -> None:
    first = nox(noxproject, "-s", "build")
    assert first.returncode == 0, first.stdout
    assert "nox > cachehook: miss " in first.stdout
    (noxproject / "out" / "build.txt").unlink()

    second = nox(noxproject, "-s", "build")
    assert second.returncode == 0, second.stdout
    assert runs(noxproject) == ["build"]
    hit_lines = [line for line in second.stdout.splitlines() if "cachehook:" in line]
    assert len(hit_lines) == 1
    assert "nox > cachehook: local hit " in hit_lines[0]
    assert "skipped the body" in hit_lines[0]
    assert "Session build was successful" in second.stdout
    assert (noxproject / "out" / "build.txt").read_text() == "ALPHA\n"


def test_an_input_change_is_a_miss(noxproject: Path) -> None:
    nox(noxproject, "-s", "build")
    (noxproject / "src" / "b.txt").write_text("beta\n")
    assert "cachehook: miss" in nox(noxproject, "-s", "build").stdout
    assert runs(noxproject) == ["build", "build"]
    assert (noxproject / "out" / "build.txt").read_text() == "ALPHA\nBETA\n"


def test_posargs_enter_the_key(noxproject: Path) -> None:
    nox(noxproject, "-s", "build")
    nox(noxproject, "-s", "build", "--", "loud")
    nox(noxproject, "-s", "build", "--", "loud")
    nox(noxproject, "-s", "build")
    assert runs(noxproject) == ["build", "build"]
    assert (noxproject / "out" / "build.txt").read_text() == "ALPHA\n"


@pytest.mark.parametrize("session", ["above", "below"])
def test_parametrized_sessions_keep_their_names_and_their_own_keys(
    noxproject: Path, session: str
) -> None:
    listed = nox(noxproject, "--list")
    assert f"{session}(n=1)" in listed.stdout
    assert f"{session}(n=2)" in listed.stdout

    first = nox(noxproject, "-s", session)
    assert first.returncode == 0, first.stdout
    assert first.stdout.count("cachehook: miss") == 2
    for path in (noxproject / "out").glob(f"{session}-*.txt"):
        path.unlink()
    second = nox(noxproject, "-s", session)
    assert second.stdout.count("cachehook: local hit") == 2
    assert runs(noxproject) == [f"{session}-1", f"{session}-2"]
    assert (noxproject / "out" / f"{session}-1.txt").read_text() == "1"
    assert (noxproject / "out" / f"{session}-2.txt").read_text() == "2"


def test_a_single_parametrized_session_can_be_selected(noxproject: Path) -> None:
    nox(noxproject, "-s", "above(n=2)")
    done = nox(noxproject, "-s", "above")
    assert done.stdout.count("cachehook: local hit") == 1
    assert runs(noxproject) == ["above-2", "above-1"]


@pytest.mark.parametrize("session", ["fails", "skips"])
def test_a_session_that_does_not_succeed_is_not_cached(noxproject: Path, session: str) -> None:
    first = nox(noxproject, "-s", session)
    second = nox(noxproject, "-s", session)
    assert "cachehook: local hit" not in second.stdout
    assert runs(noxproject) == [session, session]
    if session == "fails":
        assert first.returncode == second.returncode == 1
    else:
        assert "not today" in second.stdout


def test_a_virtualenv_session_is_skipped_after_the_venv_is_made(noxproject: Path) -> None:
    first = nox(noxproject, "-s", "venv")
    assert first.returncode == 0, first.stdout
    venv_prefix = (noxproject / "out" / "venv.txt").read_text()
    assert ".nox" in venv_prefix
    (noxproject / "out" / "venv.txt").unlink()
    second = nox(noxproject, "-s", "venv")
    assert second.returncode == 0, second.stdout
    assert "cachehook: local hit" in second.stdout
    assert runs(noxproject) == ["venv"]
    assert (noxproject / "out" / "venv.txt").read_text() == venv_prefix


def test_the_session_body_source_enters_the_key(noxproject: Path) -> None:
    nox(noxproject, "-s", "build")
    noxfile = noxproject / "noxfile.py"
    noxfile.write_text(noxfile.read_text().replace("text.upper()", "text.upper() + '!'"))
    nox(noxproject, "-s", "build")
    assert runs(noxproject) == ["build", "build"]
    assert (noxproject / "out" / "build.txt").read_text() == "ALPHA\n!"
