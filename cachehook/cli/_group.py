"""The click group behind ``cachehook``; subcommands load only when they run."""

from __future__ import annotations

import importlib

import click

from cachehook import __version__
from cachehook.cli import COMMANDS

__all__ = ["SuggestingGroup", "cli"]


class SuggestingGroup(click.Group):
    """A group that answers a mistyped subcommand with the nearest real ones (issue 9)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)


class _LazyGroup(SuggestingGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _importable(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _importable(cmd_name):
            return None
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


def _importable(name: str) -> bool:
    import importlib.util  # only for listing the commands: ~5 ms a hit does not need

    module = COMMANDS[name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cachehook")
def cli() -> None:
    """Make repeated tasks free: skip any command whose inputs have not changed.

    \b
    First run:   cachehook exec -i 'src/**/*.py' -o 'dist/*' -- python -m build
    Second run:  the same command restores dist/ and replays the log in milliseconds.

    Share results with a team through any Turborepo Remote Cache server:
    set CACHEHOOK_API, CACHEHOOK_TOKEN and CACHEHOOK_TEAM (or TURBO_*).
    """
