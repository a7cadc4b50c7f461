"""A detached child (the usage events' flusher) started without ``subprocess``.

``subprocess`` brings signal, selectors, locale and ``_posixsubprocess``: ~5 ms of a remote hit's
imports, for one child that the run never waits for (issue 11). ``os.posix_spawn`` starts it
with the same effects as ``subprocess.Popen(argv, stdin=..., stdout=DEVNULL, stderr=DEVNULL,
start_new_session=True)``: a new session, the given standard input, /dev/null as its output, and
no other descriptor of ours. Python's own descriptors are not inherited (PEP 446); those the run
inherited itself (a harness's pipe, a jobserver's) are closed in the child, as ``close_fds``
does, or the child would hold them open after the run exits. Where the descriptors cannot be
listed (not Linux or macOS) or the libc cannot start a session from ``posix_spawn``,
``subprocess`` does it as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

__all__ = ["spawn_detached"]

# Where a process lists its open descriptors.
_FD_DIRECTORIES = {"linux": "/proc/self/fd", "darwin": "/dev/fd"}
_popened: list[subprocess.Popen[bytes]] = []  # never waited for


def spawn_detached(argv: list[str], *, stdin: int) -> int:
    """Start ``argv`` in a new session and never wait for it: ``stdin`` as its standard input,
    /dev/null as its output, no other descriptor of ours (see the module's docstring).

    Returns:
        The child's process id.

    Raises:
        OSError: it did not start.
    """
    actions = _file_actions(stdin)
    if actions is not None:
        try:
            return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True)
        except NotImplementedError:  # no POSIX_SPAWN_SETSID in this libc
            pass
    import subprocess

    child = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _popened.append(child)  # a Popen dropped while its child runs warns (ResourceWarning)
    return child.pid


def _file_actions(stdin: int) -> list[tuple[Any, ...]] | None:
    """``posix_spawn``'s file actions for a detached child, or None without ``posix_spawn`` or a
    list of our descriptors."""
    if not hasattr(os, "posix_spawn") or sys.platform not in _FD_DIRECTORIES:
        return None
    try:
        names = os.listdir(_FD_DIRECTORIES[sys.platform])
    except OSError:
        return None
    actions: list[tuple[Any, ...]] = [
        # onto itself too (a run without stdin) dup2 clears close-on-exec, as POSIX.1-2024 says
        # and glibc and musl do; where it does not, that run's events wait for the next run
        (os.POSIX_SPAWN_DUP2, stdin, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    for name in names:
        if name.isdigit() and (fd := int(name)) > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
    return actions
