"""``cachehook exec``: run any command through the cache (the click face of ``cli/_exec.py``)."""

from __future__ import annotations

from typing import Any

import click

from cachehook.cli._exec import OPTIONS, run_exec, split_command, stray_words
from cachehook.cli._options import options

__all__ = ["exec_command"]

_EPILOG = """\b
Examples:
  cachehook exec -i 'src/**/*.py' -i pyproject.toml -o 'dist/*' -- python -m build --wheel
  cachehook exec -i '**/*.py' -i pyproject.toml -- mypy .
  cachehook exec -i 'schema/*.json' -o 'src/app/models.py' -e 'PYTHON*' -- python gen.py

Globs are relative to the project root (the nearest directory holding pyproject.toml
or .git): '**' crosses directories, a leading '!' excludes. As in git, a tracked file
is an input whenever a glob matches it; an untracked file that .gitignore (or
info/exclude, or the global excludes file) ignores is skipped unless named literally.
A symlink counts with its target's content. Without -i, the inputs are every file
git would list under the working directory (outputs and the cache excluded);
--no-inputs says the command reads no file. Exit status is the command's own.

The same command again, with nothing it looked at changed, replays from a memo in a few
milliseconds (CACHEHOOK_MEMO=0 turns that off).
"""


class _ExecCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # click consumes the list it parses
        found, has_dashes = stray_words(given)
        ctx.meta["cachehook.stray"] = len(found) if has_dashes else 0
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            split = split_command(given)
            if split is None:
                raise
            options, command = split
            fixed = " ".join(["cachehook exec", *options, "--", *command])
            hint = (
                f"{exc.format_message()}\n"
                f"If {exc.option_name} belongs to the command, put '--' before the command: "
                f"{fixed}"
            )
            raise click.UsageError(hint, ctx=ctx) from exc


def _build() -> click.Command:
    def callback(**values: Any) -> int:
        return run_exec(**values, stray=click.get_current_context().meta.get("cachehook.stray", 0))

    command: Any = click.argument("command", nargs=-1, type=click.UNPROCESSED)(callback)
    command = options(*OPTIONS)(command)
    return click.command(
        "exec",
        cls=_ExecCommand,
        short_help="Run a command, or replay it when its inputs are unchanged.",
        epilog=_EPILOG,
        help="Run COMMAND, or restore its outputs and log when its inputs are unchanged.\n\n"
        "Put the command after `--`.",
    )(command)


exec_command = _build()
