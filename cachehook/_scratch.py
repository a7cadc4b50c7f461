"""Scratch files for artifacts in transit, and the reclaim of those a killed run left behind.

Each scratch file lives in a directory of its own under ``<cache dir>/tmp``, beside a ``.lock``
file its run holds an exclusive ``flock`` on. The kernel drops that lock when the run dies (even
by ``kill -9``), so a later run can tell a leftover (unlocked, older than a grace period) from a
file still in use, however long an upload takes (issue 10).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["GRACE_SECONDS", "reclaim_scratch", "scratch_file"]

GRACE_SECONDS = 600.0  # a leftover younger than this may belong to a run still setting up
_LOCK = ".lock"
_PREFIX = "run-"


@contextlib.contextmanager
def scratch_file(directory: Path, *, name: str = "artifact.tar.zst") -> Iterator[Path]:
    """A path to write a scratch file at, removed (with its directory) afterwards.

    Falls back to the system temporary directory when ``directory`` cannot be made: an
    unusable cache directory must not stop a remote transfer (#2).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(dir=directory, prefix=_PREFIX))
    except OSError:
        work = Path(tempfile.mkdtemp(prefix=f"cachehook-{_PREFIX}"))
    fd = os.open(work / _LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield work / name
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)


def reclaim_scratch(directory: Path, *, grace: float = GRACE_SECONDS) -> tuple[int, int]:
    """Remove what killed runs left in ``directory``; returns (entries removed, bytes freed)."""
    removed = freed = 0
    cutoff = time.time() - grace
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0, 0
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                size = _reclaim_dir(Path(entry.path))
            else:  # a loose file (the layout before issue 10): nobody locks it
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            if size is not None:
                removed += 1
                freed += size
    return removed, freed


def _reclaim_dir(path: Path) -> int | None:
    """Remove a scratch directory no live run holds; its size, or None if it is in use."""
    try:
        fd = os.open(path / _LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None  # killed before it made its lock file, or an older layout
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path, ignore_errors=True)
        return size
    finally:
        if fd is not None:
            os.close(fd)
