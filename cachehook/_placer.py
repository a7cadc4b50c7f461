"""The placer: a restore's outputs staged inside the project, then moved into place.

:class:`Staging` is a private directory inside the project root (so every move is a rename on
one file system). Each output is staged under a flat name of its own, never under its path, so
nothing an artifact holds (a link, a name differing only in case) can lead a staged write
anywhere else, and a file's xxh3-128 is taken as its bytes are written. Only once the whole
artifact has streamed and passed every check does :class:`Placer` move the outputs into place,
each with :func:`os.replace` (a restored file is always a whole file), never through a link on
disk that leaves the project or turns an allowed output into a write to an input.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, NamedTuple

import xxhash  # a restored file's digest as hashing computes it, taken while it is written

from cachehook._entries import PERMISSIONS, Entry, is_within, parents, show
from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from cachehook._reader import MemberData

__all__ = ["Placed", "Placer", "Staging"]

_STAGING_PREFIX = ".cachehook-restore-"
_COPY_SIZE = 1 << 20


class Placed(NamedTuple):
    """A regular file a restore wrote: the digest of its bytes and its ``lstat`` in place."""

    path: str  # project-relative POSIX
    digest: str  # xxh3-128 hex, as ``hashing`` computes it for a regular file
    stat: os.stat_result


class _Staged(NamedTuple):
    name: str  # inside the staging directory
    digest: str  # "" for a symlink
    stat: os.stat_result | None  # fstat once written (a file), for the check after the move


class Staging:
    """A private directory inside ``root`` holding outputs under flat names; removed on exit."""

    def __init__(self, root: Path) -> None:
        self.path = _make_private_dir(root)
        self._dir = str(self.path)  # joined as text: a Path per output costs ~20 us (issue 11)
        self._staged: dict[str, _Staged] = {}
        self._buffer = memoryview(bytearray(_COPY_SIZE))

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Flat (each output under a name of its own, nothing below): no shutil on a restore.
        try:
            with os.scandir(self.path) as names:
                for name in names:
                    os.unlink(name.path)
            os.rmdir(self.path)
        except OSError:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)

    def add(self, entry: Entry, data: MemberData | None) -> None:
        """Stage a file (its bytes read from ``data``) or a symlink; a directory needs nothing."""
        name = str(len(self._staged))
        target = f"{self._dir}/{name}"
        if entry.kind == "symlink":
            os.symlink(entry.linkname, target)
            self._staged[entry.path] = _Staged(name, "", None)
        elif entry.kind == "file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            try:
                digest = _copy_data(data, fd, entry, self._buffer)
                os.fchmod(fd, entry.mode & PERMISSIONS)
                self._staged[entry.path] = _Staged(name, digest, os.fstat(fd))
            finally:
                os.close(fd)

    def staged(self, path: str) -> _Staged:
        return self._staged[path]

    def file(self, name: str) -> str:
        """The path of a staged entry's flat ``name``."""
        return f"{self._dir}/{name}"


def _make_private_dir(root: Path) -> Path:
    # tempfile.mkdtemp, without importing tempfile (and random) on a restoring hit.
    for _ in range(100):
        path = root / f"{_STAGING_PREFIX}{os.urandom(6).hex()}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    msg = f"cannot make a staging directory in {root}"
    raise FileExistsError(msg)


def _copy_data(data: MemberData | None, fd: int, entry: Entry, buffer: memoryview) -> str:
    hasher = xxhash.xxh3_128()
    written = 0
    while data is not None and (count := data.readinto(buffer)):
        chunk = buffer[:count]
        hasher.update(chunk)
        while chunk:
            chunk = chunk[os.write(fd, chunk) :]
        written += count
    if written != entry.size:
        msg = f"artifact is truncated inside {show(entry.path)}"
        raise ArchiveError(msg)
    return hasher.hexdigest()


class Placer:
    """Moves staged outputs into the project, never through a link that leaves it."""

    def __init__(self, root: Path, allowed: Callable[[str], bool]) -> None:
        self._root = root
        self._dir = str(root)  # joined as text, as in Staging
        self._allowed = allowed
        self._ready = {""}  # directories known to be usable
        self._real_dirs: dict[str, str] = {}

    def check(self, entries: Iterable[Entry]) -> None:
        """Refuse what the disk would make of ``entries``, before anything is moved."""
        for entry in entries:
            dirs = list(parents(entry.path))
            if entry.kind == "dir":
                dirs.append(entry.path)
            for path in dirs:
                if not self._need_dir(path, create=False):
                    break  # what lies below will be created fresh
            if entry.kind != "dir":
                self._check_real_path(entry.path)

    def _check_real_path(self, path: str) -> None:
        # A link on disk inside the project ('gen' -> 'src') must not turn an allowed output
        # into a write to an input.
        parent, _, name = path.rpartition("/")
        if parent not in self._real_dirs:
            real = os.path.relpath(os.path.realpath(self._root / parent), self._root)
            self._real_dirs[parent] = "" if real == "." else real
        real_parent = self._real_dirs[parent]
        real_path = f"{real_parent}/{name}" if real_parent else name
        if real_path != path and not self._allowed(real_path):
            msg = f"{show(path)} leads through a symlink on disk to {show(real_path)}"
            raise ArchiveError(msg)

    def place(self, entries: Sequence[Entry], staging: Staging) -> list[Placed]:
        """Move ``entries`` into place; the regular files among them, as they now are."""
        placed: list[Placed] = []
        for entry in entries:
            for parent in parents(entry.path):
                self._need_dir(parent, create=True)
            if entry.kind == "dir":
                self._need_dir(entry.path, create=True)
                continue
            target = f"{self._dir}/{entry.path}"
            st = _lstat(target)
            if st is not None and stat.S_ISDIR(st.st_mode):
                import shutil  # rarely: an allowed output replaces a directory on disk

                shutil.rmtree(target)
            staged = staging.staged(entry.path)
            os.replace(staging.file(staged.name), target)
            if staged.stat is not None:
                now = _lstat(target)
                if now is not None and _same_file(staged.stat, now):
                    placed.append(Placed(entry.path, staged.digest, now))
        # Directory modes last, deepest first: a read-only directory would block its entries.
        for entry in reversed(entries):
            target = f"{self._dir}/{entry.path}"
            st = _lstat(target) if entry.kind == "dir" else None
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.chmod(target, entry.mode & PERMISSIONS)
        return placed

    def _need_dir(self, rel: str, *, create: bool) -> bool:
        if rel in self._ready:
            return True
        path = f"{self._dir}/{rel}"
        st = _lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if not (is_within(real, self._root) and os.path.isdir(real)):
                msg = f"{show(rel)} is a symlink on disk that leads outside the project"
                raise ArchiveError(msg)
        elif st is not None and not stat.S_ISDIR(st.st_mode):
            if not self._allowed(rel):
                msg = f"{show(rel)} is a file on disk where the artifact has a directory"
                raise ArchiveError(msg)
            if not create:
                return False
            os.unlink(path)
            os.mkdir(path)
        elif st is None:
            if not create:
                return False
            try:
                os.mkdir(path)
            except FileExistsError:  # made meanwhile, by a concurrent restore: check it again
                return self._need_dir(rel, create=create)
        self._ready.add(rel)
        return True


def _same_file(staged: os.stat_result, placed: os.stat_result) -> bool:
    # The file moved in is the one written, untouched since (a rename may change the ctime,
    # never the inode, size or mtime): else its digest is not recorded and it is read again.
    return stat.S_ISREG(placed.st_mode) and (
        staged.st_ino,
        staged.st_dev,
        staged.st_size,
        staged.st_mtime_ns,
    ) == (placed.st_ino, placed.st_dev, placed.st_size, placed.st_mtime_ns)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
