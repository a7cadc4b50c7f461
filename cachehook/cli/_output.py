"""How results and warnings look on a terminal, and as JSON for machines.

``TaskReporter`` is the runner's listener that shows ``cachehook exec``'s task: a result reaches
the terminal as the runner's ``TaskFinished``, as it reaches the history and the usage events.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from cachehook.facts import Notice, TaskFinished

if TYPE_CHECKING:
    from cachehook.facts import Fact, RunResult

__all__ = [
    "Console",
    "ProgressLine",
    "TaskReporter",
    "describe_hit",
    "describe_ran",
    "describe_result",
    "format_duration",
    "print_json",
    "short_key",
]


def short_key(key: str) -> str:
    """``3f2a…c91``: enough of a key to recognise it in a log line."""
    return f"{key[:4]}…{key[-3:]}" if len(key) > 8 else key


def format_duration(ms: int) -> str:
    """``0.42s``, ``4.21s``, ``1m12s``, ``2h03m``."""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Console:
    """Writes cachehook's own lines to stderr, so stdout stays the task's."""

    def __init__(self, *, quiet: bool = False, prefix: str = "cachehook") -> None:
        self.quiet = quiet
        self.prefix = prefix
        self.said = False  # whether a warning or a line was written (the memo's rule)

    def warn(self, message: str) -> None:
        line = f"{self.prefix}: warning: {message}"
        if _has_colour():
            line = f"\x1b[33m{line}\x1b[0m"
        self.said = True
        _stderr(line)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.said = True
            _stderr(f"{self.prefix}: {message}")


class TaskReporter:
    """A runner's listener that shows one task as ``cachehook exec`` does.

    Each ``Notice`` is a warning. On ``TaskFinished``: the task's recorded log when
    ``output_logs`` asks for it (a hit's with ``full``, a failure's with ``errors-only``; a miss
    streamed live), then its status line on stderr, or with ``as_json`` its JSON on stdout (the
    log then goes to stderr). ``shown`` is what it wrote, as log frames, for the hit memo to
    replay (``cachehook._memo``; nothing is kept with ``as_json``, which is never memoised).
    """

    def __init__(self, console: Console, *, output_logs: str, as_json: bool = False) -> None:
        self.console = console
        self.output_logs = output_logs
        self.as_json = as_json
        self.shown = b""

    def __call__(self, fact: Fact, /) -> None:
        if type(fact) is Notice:
            self.console.warn(fact.message)
        elif type(fact) is TaskFinished:
            self._show(fact.result)

    def _show(self, result: RunResult) -> None:
        from cachehook.logs import STDERR, encode_frames, replay

        log = result.log if self._shows_log(result) else b""
        if log:
            stdout = sys.stderr.buffer if self.as_json else sys.stdout.buffer
            replay(log, stdout=stdout, stderr=sys.stderr.buffer)
        if self.as_json:
            print_json(result.to_json())
            return
        self.shown = log
        if self.console.quiet or self.output_logs not in ("full", "errors-only", "hash-only"):
            return
        line = f"{self.console.prefix}: {describe_result(result)}\n"
        sys.stderr.write(line)
        sys.stderr.flush()
        self.shown += encode_frames([(STDERR, line.encode())])

    def _shows_log(self, result: RunResult) -> bool:
        mode = self.output_logs
        return (result.status == "HIT" and mode == "full") or (
            mode == "errors-only" and result.exit_code != 0
        )


def describe_result(result: RunResult) -> str:
    """``local hit 3f2a…c91 (saved 1.20s)``: one task's outcome, for its status line."""
    key = short_key(result.key)
    if result.status == "HIT":
        return describe_hit(result)
    if result.status == "BYPASS":
        return f"cache disabled, ran {key} in {format_duration(result.duration_ms)}"
    if result.exit_code != 0:
        return f"miss {key}, failed with exit code {result.exit_code}; not cached"
    return f"miss {key}, {describe_ran(result.task_ms, stored=result.stored)}"


def describe_hit(result: RunResult) -> str:
    """``local hit 3f2a…c91 (saved 1.20s)``: a hit, as every status line words it."""
    where = "local" if result.source == "LOCAL" else "remote"
    return f"{where} hit {short_key(result.key)} (saved {format_duration(result.saved_ms)})"


def describe_ran(ms: int, *, stored: bool) -> str:
    """``ran in 2.24s, cached``: a task that ran, as every status line words it."""
    return f"ran in {format_duration(ms)}, {'cached' if stored else 'not cached'}"


class ProgressLine:
    """A one-line transfer meter on a terminal, for artifacts of 8 MiB or more.

    Called as ``progress(what, done, total)`` by the remote client; silent when stderr is
    not a terminal, so logs and CI output stay clean.
    """

    MIN_BYTES = 8 << 20

    def __init__(self, *, prefix: str = "cachehook", interval: float = 0.1) -> None:
        self._is_enabled = sys.stderr.isatty()
        self._prefix = prefix
        self._interval = interval
        self._last = 0.0

    def __call__(self, what: str, done: int, total: int | None) -> None:
        if not self._is_enabled or (total is not None and total < self.MIN_BYTES):
            return
        now = time.monotonic()
        is_done = total is not None and done >= total
        if not is_done and now - self._last < self._interval:
            return
        self._last = now
        size = f"{done / 2**20:.1f}"
        if total:
            size += f" / {total / 2**20:.1f} MiB ({100 * done // total}%)"
        else:
            size += " MiB"
        end = "\n" if is_done else ""
        sys.stderr.write(f"\r{self._prefix}: {what}ing artifact {size}\x1b[K{end}")
        sys.stderr.flush()


def _has_colour() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _stderr(line: str) -> None:
    # click-free on purpose: the hit path must not pay click's import (see cli/_exec.py).
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
