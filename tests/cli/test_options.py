"""The shared options table: one spelling for every subcommand, one way to Settings (issue 11)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import click
import pytest

from cachehook.cli import _options
from cachehook.cli._exec import OPTIONS
from cachehook.cli._group import cli
from cachehook.cli._options import SETTINGS_OPTIONS, Option, load_cli_settings
from cachehook.config import load_settings
from tests.cli.test_help import ALL

if TYPE_CHECKING:
    from pathlib import Path

TABLE = {
    flag: option
    for option in [*vars(_options).values(), *OPTIONS]
    if isinstance(option, Option)
    for flag in option.flags
}

# Options that share a table option's spelling but are their own, on purpose: prune's
# --dry-run is a plain flag (it has no JSON to print).
OWN: dict[tuple[str, ...], set[str]] = {("cache", "prune"): {"--dry-run"}}


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    return command


@pytest.mark.parametrize("path", ALL, ids=lambda path: " ".join(path) or "cachehook")
def test_every_shared_flag_comes_from_the_table(path: tuple[str, ...]) -> None:
    """A subcommand retyping ``--root`` by hand (another dest, kind or metavar) fails here."""
    for param in _command(path).params:
        if not isinstance(param, click.Option):
            continue
        own = OWN.get(path, set())
        shared = [TABLE[flag] for flag in param.opts if flag in TABLE and flag not in own]
        if not shared:
            continue
        option = shared[0]
        where = f"{' '.join(path)} {param.opts}"
        assert param.name == option.dest, where
        assert tuple(param.opts) == option.flags, where
        assert param.is_flag == (option.kind == "flag"), where
        assert param.multiple == (option.kind == "multiple"), where
        assert param.metavar == option.metavar, where
        if option.choices:
            assert isinstance(param.type, click.Choice), where
            assert tuple(param.type.choices) == option.choices, where


def test_every_settings_option_is_a_keyword_of_load_settings() -> None:
    keywords = inspect.signature(load_settings).parameters
    for option in SETTINGS_OPTIONS:
        assert option.dest in keywords, option


def test_load_cli_settings_takes_each_flag(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    settings = load_cli_settings(
        {
            "root": tmp_path,
            "cache_dir": tmp_path / "c",
            "cache": "local:r",
            "no_cache": True,
            "output_logs": "errors-only",
        },
        cwd=tmp_path,
    )
    assert settings.root == tmp_path.resolve()
    assert settings.cache_dir == tmp_path / "c"
    assert (settings.modes.local_read, settings.modes.local_write) == (True, False)
    assert settings.disabled
    assert settings.output_logs == "errors-only"
