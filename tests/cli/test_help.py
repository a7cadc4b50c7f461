"""Every ``--help`` reads whole: summaries not cut, options spelled alike (issue 9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from cachehook.cli import main
from cachehook.cli._group import cli

if TYPE_CHECKING:
    from collections.abc import Iterator


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


ALL = [(), *commands(cli)]


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def summaries(text: str) -> list[str]:
    """The lines of the ``Commands:`` section."""
    _, found, section = text.partition("\nCommands:\n")
    return [line.strip() for line in section.splitlines() if line.startswith("  ")] if found else []


def test_every_subcommand_is_walked() -> None:
    assert {"exec", "run", "serve", "cache", "cache prune", "events flush", "remote status"} <= {
        " ".join(path) for path in ALL
    }


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "cachehook")
def test_no_summary_is_cut_mid_sentence(path: tuple[str, ...]) -> None:
    for line in summaries(help_text(path)):
        name, _, summary = line.partition(" ")
        summary = summary.strip()
        assert summary, line
        assert not summary.endswith("..."), f"{' '.join(path)} {name}: cut by click: {summary!r}"
        assert summary.endswith((".", ")")), f"{' '.join(path)} {name}: {summary!r}"


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "cachehook")
def test_options_are_spelled_alike(path: tuple[str, ...]) -> None:
    text = help_text(path)
    assert "DIRECTORY" not in text
    assert "[10GiB]" not in text
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.lstrip().startswith("--cache-dir"):
            assert line.split()[1] == "DIR"
            option = " ".join(lines[index : index + 3])
            assert "$XDG_CACHE_HOME/cachehook" in option, option
        if line.lstrip().startswith("--root"):
            assert line.split()[1] == "DIR"


def test_serve_shows_its_environment_variables_and_defaults() -> None:
    text = " ".join(help_text(("serve",)).split())
    for name in ("HOST", "PORT", "STORAGE", "TOKENS", "WORKERS", "MAX_SIZE", "MAX_BODY"):
        assert f"CACHEHOOK_SERVE_{name}" in text
    assert "CACHEHOOK_SERVE_MAX_SIZE; default: 10GiB]" in text


@pytest.mark.parametrize(
    ("typed", "meant"),
    [(["exce"], "'exec'"), (["cache", "prnue"], "'prune'"), (["stat"], "'stats'")],
)
def test_a_mistyped_subcommand_gets_a_suggestion(
    typed: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(typed) == 2
    err = capsys.readouterr().err
    assert f"No such command '{typed[-1]}'. Did you mean {meant}?" in err


def test_a_word_like_no_subcommand_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zzzz"]) == 2
    err = capsys.readouterr().err
    assert "No such command 'zzzz'." in err
    assert "Did you mean" not in err
