"""The click-free parse of ``exec`` must agree with the click command it shortcuts."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.cli._exec import OPTIONS, parse_exec_fast
from cachehook.cli.exec import exec_command

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook.cli._options import Option


def _click_parse(args: list[str]) -> dict[str, Any]:
    context = exec_command.make_context("exec", list(args))
    return dict(context.params)


@pytest.mark.parametrize(
    "args",
    [
        ["-i", "src/**", "--", "pytest", "-q"],
        ["-i", "a", "--input", "b", "-o", "dist/*", "-e", "PY*", "--salt", "s", "--", "x"],
        ["--input=a", "--output=b", "--env=E", "--force", "-q", "--json", "--", "x", "--force"],
        ["--dry-run", "--", "x"],
        ["--dry-run=json", "--output-logs", "errors-only", "--", "x"],
        ["--root", "proj", "--cache-dir", "c", "--cache", "local:r", "--remote-only", "--", "x"],
        ["--no-cache", "--output-logs=none", "--", "x", "--", "y"],
    ],
)
def test_fast_parse_matches_click(args: list[str]) -> None:
    fast = parse_exec_fast(args)
    assert fast is not None
    assert fast == _click_parse(args)


def _samples(option: Option) -> list[list[str]]:
    """Every way to give ``option`` that the fast parser takes, each before a command."""
    long = option.flags[-1]
    if option.kind == "flag":
        return [[flag] for flag in option.flags]
    if option.kind == "optional-choice":
        return [[long], *([f"{long}={choice}"] for choice in option.choices)]
    values = option.choices or ("v",)
    found = [[flag, value] for flag in option.flags for value in values]
    found += [[f"{long}={value}"] for value in values]
    if option.kind == "multiple":
        found.append([option.flags[0], "a", long, "b"])
    return found


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.flags[-1])
def test_fast_parse_matches_click_for_every_option_in_the_table(option: Option) -> None:
    """The two parsers read one table; a kind one of them treats otherwise fails here."""
    for given in _samples(option):
        args = [*given, "--", "x"]
        fast = parse_exec_fast(args)
        assert fast is not None, args
        assert fast == _click_parse(args), args


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-i", "x"],
        ["-i", "x", "--"],
        ["--output-logs", "loud", "--", "x"],
        ["--dry-run=yaml", "--", "x"],
        ["--no-such-flag", "--", "x"],
        ["-isrc", "--", "x"],
        ["--force=yes", "--", "x"],
        ["-i"],
    ],
)
def test_anything_unusual_goes_to_click(args: list[str]) -> None:
    assert parse_exec_fast(args) is None


def test_a_hit_does_not_import_click_or_httpx(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "in.txt").write_text("x")
    probe = (
        "import sys, runpy\n"
        "from cachehook.cli import main\n"
        "code = main(['exec', '-q', '-i', 'in.txt', '--', sys.executable, '-c', 'pass'])\n"
        "print(code, 'click' in sys.modules, 'httpx' in sys.modules, 'zstandard' in sys.modules)\n"
    )
    first = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert first.stdout.split()[0] == "0"
    second = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert second.stdout.split() == ["0", "False", "False", "False"], second.stderr


def test_a_local_hit_with_a_remote_configured_does_not_import_httpx(tmp_path: Path) -> None:
    """Its events go to the spool and a detached ``events flush`` sends them (issue 3)."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "in.txt").write_text("x")
    probe = (
        "import sys\n"
        "from cachehook.cli import main\n"
        "code = main(['exec', '-q', '-i', 'in.txt', '--', sys.executable, '-c', 'pass'])\n"
        "print(code, 'httpx' in sys.modules)\n"
    )
    env = {**os.environ, "CACHEHOOK_API": "http://127.0.0.1:9", "CACHEHOOK_TOKEN": "t"}
    env["CACHEHOOK_TEAM"] = "team"
    run = [sys.executable, "-c", probe]
    subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    hit = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert hit.stdout.split() == ["0", "False"], hit.stderr
