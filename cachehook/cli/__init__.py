"""The ``cachehook`` command line: a click group and the one error boundary.

Exit codes:
    0    success (or the wrapped command's own exit code, passed through unchanged)
    2    usage error: a wrong flag, a bad glob, a malformed config, an unreadable input
    3    cachehook itself failed unexpectedly (traceback written to crashes/ in the cache dir)
    130  interrupted (Ctrl-C)
    N    ``exec`` and ``run`` return the task's exit code; a child killed by signal S gives 128+S
Subcommands document any further codes of their own (``remote status``).

click is imported only when needed: a plain ``cachehook exec … -- cmd`` is parsed without it
(see ``cli/_exec.py``), because a cache hit is judged by its latency.
"""

from __future__ import annotations

import gc
import os
import sys

from cachehook.errors import CachehookError

TYPE_CHECKING = False  # not typing's, nor pathlib here: a memoised hit imports neither (issue 11)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

__all__ = ["main"]

# name -> "module:attribute", imported only when that subcommand runs (start-up is latency).
COMMANDS = {
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


def __getattr__(name: str) -> Any:
    if name == "cli":  # the click group, for tests and for embedding
        from cachehook.cli._group import cli

        return cli
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _crash_dir(args: Sequence[str]) -> Path:
    """Where a crash log goes: ``--cache-dir``, else the cache directory as settings find it."""
    from pathlib import Path

    from cachehook.cli._options import CACHE_DIR

    for index, arg in enumerate(args):
        if arg == "--":
            break
        name, has_value, value = arg.partition("=")
        if name in CACHE_DIR.flags and has_value:
            return Path(value)
        if arg in CACHE_DIR.flags and index + 1 < len(args):
            return Path(args[index + 1])
    from cachehook.config import default_cache_dir

    return Path(os.environ.get("CACHEHOOK_CACHE_DIR") or default_cache_dir(os.environ))


def _write_crash_log(args: Sequence[str]) -> Path | None:
    """The traceback, owner-only (0600 in a 0700 directory): it may quote paths and values."""
    directory = _crash_dir(args).expanduser().absolute() / "crashes"
    try:
        import time
        import traceback

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as log:
            log.write(traceback.format_exc())
    except OSError:
        return None
    return path


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _dispatch(args: list[str]) -> int:
    if args[:1] in (["exec"], ["run"]):
        from cachehook._memo import replay

        code = replay(args)  # the same hits, with nothing they looked at changed (issue 11)
        if code is not None:
            return code
    if args[:1] == ["exec"]:
        from cachehook.cli._exec import parse_exec_fast, run_exec

        options = parse_exec_fast(args[1:])
        if options is not None:
            return run_exec(**options, memo=args)
    import click

    from cachehook.cli._group import cli

    try:
        # obj: the arguments as given, which ``run`` names its memo by (``cachehook._memo``)
        result = cli.main(args=args, prog_name="cachehook", standalone_mode=False, obj=args)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        _say("Aborted.")
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    collecting = gc.isenabled()
    if args[:1] in (["exec"], ["run"]):
        # No cyclic garbage collection during a task: its set-up (imports, settings, the walk,
        # the key) makes tens of thousands of objects and almost no cycles, so the collector's
        # passes over them cost ~10 ms of a ~90 ms full-path hit; a run of 200 tasks leaves
        # ~2,700 cyclic objects in all for the interpreter's exit to free (issue 11).
        gc.disable()
    try:
        return _dispatch(args)
    except CachehookError as exc:
        _say(f"Error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("cachehook: interrupted, nothing was cached")
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 1
    except Exception as exc:
        path = _write_crash_log(args)
        where = f"; the traceback is in {path}" if path else ""
        _say(f"cachehook: internal error: {type(exc).__name__}: {exc}{where}")
        return 3
    finally:
        if collecting:
            gc.enable()
