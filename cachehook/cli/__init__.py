"""The ``cachehook`` command line: a click group and the one error boundary.

Exit codes:
    0    success (or the wrapped command's own exit code, passed through unchanged)
    2    usage error: a wrong flag, a bad glob, a malformed config, an unreadable input
    3    cachehook itself failed unexpectedly (traceback written under the cache dir)
    130  interrupted (Ctrl-C)
    N    ``exec`` and ``run`` return the task's exit code; a child killed by signal S gives 128+S
Subcommands document any further codes of their own (``remote status``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from cachehook import __version__
from cachehook.errors import CachehookError

__all__ = ["main"]

# name -> "module:attribute", imported only when that subcommand runs (start-up is latency).
_COMMANDS = {
    "cache": "cachehook.cli.cache:cache",
    "events": "cachehook.cli.events:events",
    "exec": "cachehook.cli.exec:exec_command",
    "explain": "cachehook.cli.explain:explain",
    "remote": "cachehook.cli.remote:remote",
    "run": "cachehook.cli.run:run",
    "serve": "cachehook.cli.serve:serve",
    "stats": "cachehook.cli.stats:stats",
    "tasks": "cachehook.cli.tasks:tasks",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self._importable(name))

    @staticmethod
    def _importable(name: str) -> bool:
        module = _COMMANDS[name].partition(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None or not self._importable(cmd_name):
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


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


def _write_crash_log() -> Path | None:
    directory = Path(os.environ.get("CACHEHOOK_CACHE_DIR") or Path.home() / ".cache" / "cachehook")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        import traceback

        path.write_text(traceback.format_exc(), encoding="utf-8")
    except OSError:
        return None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (see the module docstring)."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("cachehook: interrupted, nothing was cached", err=True)
        else:
            click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except CachehookError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("cachehook: interrupted, nothing was cached", err=True)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
    except Exception as exc:
        path = _write_crash_log()
        where = f"; the traceback is in {path}" if path else ""
        click.echo(f"cachehook: internal error: {type(exc).__name__}: {exc}{where}", err=True)
        return 3
    return result if isinstance(result, int) else 0
