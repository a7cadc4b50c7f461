"""Run a command as a child process: its output streams live and is recorded.

The child's exit code is returned unchanged (128+N when a signal N killed it).
Ctrl-C in a terminal reaches the child through the process group; a SIGINT or
SIGTERM sent to cachehook alone is forwarded, and the child is awaited before
``KeyboardInterrupt`` propagates, so nothing is stored from an interrupted run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from typing import TYPE_CHECKING, BinaryIO

from cachehook.errors import ConfigError
from cachehook.logs import STDERR, STDOUT, LogRecorder

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path
    from types import FrameType

__all__ = ["forward_to_children", "reset", "run_command", "signal_children"]

_CHUNK = 65536
_FORWARD_DELAY = 0.2
# Every child running now, so a signal caught on the main thread reaches children that
# worker threads started (``cachehook run -j N``, issue 4).
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()
# The stop signal that reached cachehook, if any. A child started after it (a worker that
# had passed its check when ^C came) never got it from the terminal's process group, nor
# from the forwarding, which had already looked at ``_children``: it gets it at start
# (issue 9: under load such a task ran on and the run hung).
_stop_signal: int | None = None


def reset() -> None:
    """Forget a stop signal that reached this process (tests, long-lived callers)."""
    global _stop_signal
    _stop_signal = None


def forward_to_children(signum: int) -> None:
    """Pass a signal that reached cachehook on to every running child.

    A terminal's Ctrl-C reaches the children through the process group already, so a SIGINT is
    forwarded only to those still running a moment later (a SIGINT sent to cachehook alone);
    any other signal (SIGTERM: a CI job cancelled) is forwarded at once. A child started
    from now on is sent ``signum`` as soon as it exists.
    """
    global _stop_signal
    _stop_signal = signum  # before the forwarding looks at _children; see run_command
    if signum == signal.SIGINT:
        threading.Timer(_FORWARD_DELAY, signal_children, args=(signum,)).start()
    else:
        signal_children(signum)


def signal_children(signum: int) -> None:
    """Send ``signum`` to every child this process is running now."""
    with _children_lock:
        children = list(_children)
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(OSError):
                child.send_signal(signum)


def _pump(fd: int, stream: int, recorder: LogRecorder, sink: BinaryIO | None) -> None:
    with os.fdopen(fd, "rb", buffering=0) as source:
        while chunk := source.read(_CHUNK):
            recorder.add(stream, chunk)
            if sink is not None:
                try:
                    sink.write(chunk)
                    sink.flush()
                except (OSError, ValueError):
                    sink = None  # our own stdout went away (closed pipe): keep recording


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    recorder: LogRecorder,
    live: tuple[BinaryIO, BinaryIO] | None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``argv`` in ``cwd`` (with ``env``, default: ours) and return its exit code.

    Raises:
        ConfigError: the command cannot be started (not found, not executable).
        KeyboardInterrupt: the run was interrupted; the child has exited.
    """
    with _forwarding() as received:  # from before the start: a signal may come at once
        try:
            child = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            if received:
                raise KeyboardInterrupt from exc
            msg = f"cannot run {argv[0]!r}: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
        with _children_lock:
            _children.add(child)
            stop = _stop_signal  # read after registering: either this or the forwarding sends it
        if stop is not None:
            with contextlib.suppress(OSError):
                child.send_signal(stop)
        try:
            code = _follow(child, recorder, live)
        finally:
            with _children_lock:
                _children.discard(child)
    if received:
        raise KeyboardInterrupt
    return code


def _follow(
    child: subprocess.Popen[bytes],
    recorder: LogRecorder,
    live: tuple[BinaryIO, BinaryIO] | None,
) -> int:
    assert child.stdout is not None
    assert child.stderr is not None
    pumps = [
        threading.Thread(
            target=_pump,
            args=(os.dup(pipe.fileno()), stream, recorder, sink),
            daemon=True,
        )
        for pipe, stream, sink in (
            (child.stdout, STDOUT, live[0] if live else None),
            (child.stderr, STDERR, live[1] if live else None),
        )
    ]
    child.stdout.close()
    child.stderr.close()
    for pump in pumps:
        pump.start()
    child.wait()
    for pump in pumps:
        pump.join()
    code = child.returncode
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _forwarding() -> Iterator[list[int]]:
    """Forward SIGINT/SIGTERM to the children while the block runs (on the main thread);
    yields the list of the signals that arrived meanwhile."""
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        forward_to_children(signum)  # a child is registered in _children while it runs

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            reset()  # this run is over; the caller sees KeyboardInterrupt
