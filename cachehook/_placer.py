"""The placer: a restore's outputs staged inside the project, then moved into place.

:class:`Staging` is a private directory inside the project root (so every move is a rename on
one file system). Each output is staged under a flat name of its own, never under its path, so
nothing an artifact holds (a link, a name differing only in case) can lead a staged write
anywhere else, and a file's xxh3-128 is taken as its bytes are written. Only once the whole
artifact has streamed and passed every check does :class:`Placer` move the outputs into place,
each with :func:`os.replace` (a restored file is always a whole file), never through a link on
disk that leaves the project or turns an allowed output into a write to an input.

A large restore stages on two cores (issue 11): past the first few MiB, the files are created
and written by a worker thread (:class:`_Writer`) that the reading thread hands buffers to, so
zstd decompresses the next bytes while the last ones are written (both release the GIL). The
worker only creates, hashes, writes and closes staged files; every check stays on the reading
thread, and nothing is moved into place before :meth:`Staging.wait` has seen every write through.
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
# Bytes staged on the reading thread alone before the writer starts: the overlap saves ~0.3-0.5
# ms a MiB, importing threading costs ~4 ms here, so a usual artifact never starts it.
_WRITER_FROM = 8 << 20
_WRITER_BUFFERS = 4  # the bytes in flight between the threads: at most 4 x _COPY_SIZE


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
        self._count = 0  # entries staged: each one's flat name
        self._serial_bytes = 0  # staged before the writer starts
        self._writer: _Writer | None = None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.stop()  # no thread outlives a restore, whatever ended it
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
        name = str(self._count)
        self._count += 1
        target = f"{self._dir}/{name}"
        if entry.kind == "symlink":
            os.symlink(entry.linkname, target)
            self._staged[entry.path] = _Staged(name, "", None)
        elif entry.kind == "file":
            if self._writer is None and self._serial_bytes >= _WRITER_FROM:
                self._writer = _Writer(self._staged)
            if self._writer is not None:
                self._writer.stage(entry, name, target, data)
                return
            fd = os.open(target, _CREATE, 0o600)
            try:
                digest = _copy_data(data, fd, entry, self._buffer)
                os.fchmod(fd, entry.mode & PERMISSIONS)
                self._staged[entry.path] = _Staged(name, digest, os.fstat(fd))
            finally:
                os.close(fd)
            self._serial_bytes += entry.size

    def wait(self) -> None:
        """Return once every file staged is written and closed; raise what a write raised.

        Called at the end of the stream, and when reading fails: a write that failed first is
        the error the serial order would have given.
        """
        if self._writer is not None:
            self._writer.wait()

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


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


class _Writer:
    """A thread creating and writing staged files from the buffers the reading thread fills.

    Jobs go one way and buffers come back the other, so at most ``_WRITER_BUFFERS`` are in
    flight. After the first failed write the thread only hands buffers back; the reading thread
    raises that error (the same ``OSError`` the serial path would) at its next buffer or at
    :meth:`wait`.
    """

    def __init__(self, staged: dict[str, _Staged]) -> None:
        import threading
        from _queue import SimpleQueue  # queue's own, without heapq and queue (~1 ms)

        self._staged = staged  # filled by the thread, read once it has stopped
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._free: SimpleQueue[memoryview] = SimpleQueue()
        for _ in range(_WRITER_BUFFERS):
            self._free.put(memoryview(bytearray(_COPY_SIZE)))
        self._error: BaseException | None = None
        self._is_stopping = False
        self._fd = -1  # the file being written, and the digest of its bytes so far
        self._hasher = xxhash.xxh3_128()
        self._thread = threading.Thread(target=self._run, name="cachehook-stage", daemon=True)
        self._thread.start()

    def stage(self, entry: Entry, name: str, target: str, data: MemberData | None) -> None:
        self._raise_error()
        self._jobs.put(_Open(target))
        written = 0
        while data is not None:
            buffer = self._free.get()
            count = data.readinto(buffer)
            if not count:
                self._free.put(buffer)
                break
            self._jobs.put(_Write(buffer, count))
            written += count
            self._raise_error()
        if written != entry.size:
            msg = f"artifact is truncated inside {show(entry.path)}"
            raise ArchiveError(msg)
        self._jobs.put(_Close(entry.path, name, entry.mode & PERMISSIONS))

    def wait(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._raise_error()

    def stop(self) -> None:
        self._is_stopping = True  # what is still queued is not written
        self._jobs.put(None)
        self._thread.join()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    if not self._is_stopping:
                        self._do(job)
                finally:
                    if isinstance(job, _Write):
                        self._free.put(job.buffer)
        except BaseException as exc:  # OSError, mostly: raised by the reading thread
            self._error = exc
            while (job := self._jobs.get()) is not None:  # only hand the buffers back
                if isinstance(job, _Write):
                    self._free.put(job.buffer)
        finally:
            self._close()

    def _do(self, job: _Job) -> None:
        if isinstance(job, _Open):
            self._fd = os.open(job.target, _CREATE, 0o600)
            self._hasher = xxhash.xxh3_128()
        elif isinstance(job, _Write):
            chunk = job.buffer[: job.size]
            self._hasher.update(chunk)
            while chunk:
                chunk = chunk[os.write(self._fd, chunk) :]
        else:
            os.fchmod(self._fd, job.mode)
            digest = self._hasher.hexdigest()
            self._staged[job.path] = _Staged(job.name, digest, os.fstat(self._fd))
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class _Open(NamedTuple):
    target: str


class _Write(NamedTuple):
    buffer: memoryview
    size: int


class _Close(NamedTuple):
    path: str
    name: str
    mode: int


if TYPE_CHECKING:
    _Job = _Open | _Write | _Close


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
