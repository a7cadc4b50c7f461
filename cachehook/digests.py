"""Content digests: xxh3-128 of bytes, of files, and of one input file as it enters the key.

The only module that imports :mod:`xxhash`; :mod:`cachehook.hashing` (the manifest and the key)
re-exports what is public here. On the cache-hit path, so it imports nothing heavier than
:mod:`stat`. Which digests need not be taken again is :mod:`cachehook.statcache`.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import TYPE_CHECKING, NamedTuple

import xxhash

from cachehook.errors import HashingError

if TYPE_CHECKING:
    from pathlib import Path
    from typing import TypeGuard

__all__ = [
    "PACK_SIGNATURE",
    "FileDigest",
    "ProjectDir",
    "Signature",
    "digest_bytes",
    "digest_file",
    "input_error",
    "is_digest",
]

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
_FILE_TYPE, _LINK = 0o170000, stat.S_IFLNK
_HAS_DIR_FD = {os.lstat, os.open, os.readlink} <= os.supports_dir_fd
# (size, mtime_ns, ctime_ns, inode) packed: 32 bytes, built and compared at C speed and
# saved as they are. A symlink's is its own and its target's; a dangling link's target is
# zeros (no file has a ctime of 0: the kernel sets it).
PACK_SIGNATURE = struct.Struct("<QqqQ").pack
_NO_TARGET = bytes(32)

Signature = bytes  # 32 bytes, 64 for a symlink; empty when a value does not fit (never kept)


_HEX_DIGITS = frozenset("0123456789abcdef")


def is_digest(value: object) -> TypeGuard[str]:
    """Whether ``value`` is an xxh3-128 digest as this module spells it: 32 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 32 and _HEX_DIGITS.issuperset(value)


def digest_bytes(data: bytes) -> str:
    """Digest bytes.

    Args:
        data: the bytes.

    Returns:
        The xxh3-128 hex digest (32 characters).
    """
    return xxhash.xxh3_128_hexdigest(data)


def _digest_fd(fd: int) -> str:
    hasher = xxhash.xxh3_128()
    while chunk := os.read(fd, _CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def digest_file(path: Path) -> str:
    """Digest a file's bytes, streaming in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The xxh3-128 hex digest of its content.

    Raises:
        HashingError: the file is missing or unreadable (the message names it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            return _digest_fd(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        msg = f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}"
        raise HashingError(msg) from exc


class FileDigest(NamedTuple):
    """One input file as it enters the key.

    A NamedTuple, not a frozen dataclass: a hit of 50,000 inputs builds 50,000 of them, and a
    frozen dataclass costs four times as much to build (issue 11). Read by attribute only.

    Attributes:
        path: project-relative POSIX path.
        digest: xxh3-128 of the bytes; for a symlink, of ``b"symlink:" + its text`` and
            what it resolves to (a file's digest and execute bit, or a directory marker).
        executable: the owner's execute bit (always False for a symlink).
    """

    path: str
    digest: str
    executable: bool


def _signature(st: os.stat_result) -> Signature:
    try:
        return PACK_SIGNATURE(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    except struct.error:  # a timestamp beyond 64 bits of nanoseconds: never trusted
        return b""


def _changed(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)


class ProjectDir:
    """Path operations relative to a project root, through a directory fd where supported.

    For :mod:`cachehook.statcache`: each input's ``lstat`` signature and its digest.
    """

    __slots__ = ("fd", "prefix")

    def __init__(self, root: Path) -> None:
        root_str = os.fspath(root)
        self.fd: int | None = None
        self.prefix = root_str + os.sep
        if _HAS_DIR_FD:
            try:
                self.fd = os.open(root_str, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                self.prefix = ""
            except OSError:
                self.fd = None

    def __enter__(self) -> ProjectDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def lstat(self, relpath: str) -> os.stat_result:
        return os.lstat(self.prefix + relpath, dir_fd=self.fd)

    def target_stat(self, relpath: str) -> os.stat_result | None:
        """What a symlink resolves to, or None if it dangles (or loops)."""
        try:
            return os.stat(self.prefix + relpath, dir_fd=self.fd)
        except OSError:
            return None

    def signature(self, relpath: str, st: os.stat_result) -> tuple[Signature, int]:
        """The ``lstat`` signature of a file or symlink, and when it (or its target) changed."""
        if st.st_mode & _FILE_TYPE != _LINK:
            return _signature(st), _changed(st)
        target = self.target_stat(relpath)
        own = _signature(st)
        if target is None:
            return own + _NO_TARGET if own else b"", _changed(st)
        both = own + _signature(target)
        return both if len(both) == 64 else b"", max(_changed(st), _changed(target))

    def read_digest(self, relpath: str, mode: int) -> str:
        if stat.S_ISLNK(mode):
            return self._link_digest(relpath, self.target_stat(relpath))
        if not stat.S_ISREG(mode):
            msg = f"input {relpath!r} is not a regular file"
            raise HashingError(msg)
        fd = os.open(self.prefix + relpath, _OPEN_FLAGS, dir_fd=self.fd)
        try:
            return _digest_fd(fd)
        finally:
            os.close(fd)

    def _link_digest(self, relpath: str, target: os.stat_result | None) -> str:
        """The link text and what it resolves to (issue 10): a file's bytes and execute bit;
        for a directory a marker (the walk lists the files below it through the link); for a
        dangling link nothing more. No resolved path enters it, only the link's own text."""
        text = b"symlink:" + os.fsencode(os.readlink(self.prefix + relpath, dir_fd=self.fd))
        if target is None:
            return digest_bytes(text)
        if stat.S_ISDIR(target.st_mode):
            return digest_bytes(text + b"\0dir")
        if not stat.S_ISREG(target.st_mode):
            return digest_bytes(text + b"\0other")
        fd = os.open(
            self.prefix + relpath, os.O_RDONLY | getattr(os, "O_BINARY", 0), dir_fd=self.fd
        )
        try:
            content = _digest_fd(fd)
        finally:
            os.close(fd)
        executable = b"x" if target.st_mode & stat.S_IXUSR else b"-"
        return digest_bytes(text + b"\0file:" + content.encode() + executable)


def input_error(relpath: str, exc: OSError) -> HashingError:
    """The error that names an input that cannot be read."""
    if isinstance(exc, FileNotFoundError):
        return HashingError(f"input {relpath!r} does not exist")
    return HashingError(f"cannot read input {relpath!r}: {exc.strerror or exc}")
