"""The stat cache: an input whose ``lstat`` is unchanged since it was read is not read again.

On the cache-hit path, so it imports nothing heavier than :mod:`struct`. A file whose
``lstat`` (size, mtime, ctime, inode; for a symlink its target's too) is unchanged since its
digest was taken is not read again (:class:`StatCache`), and a run of many tasks digests each
file once (the ``memo`` of :func:`hash_files`, kept by :mod:`cachehook._reuse`).

git's index is not consulted for content: it can say a file is unchanged when it is not (``git
update-index --assume-unchanged`` or ``--skip-worktree``, an edit the index has not seen since
``git add``), so the truth is always an xxh3 digest of the bytes, cached by the full ``lstat``
and never trusted when the file changed in the second before it was read (racy-git's rule).
"""

from __future__ import annotations

import gc
import os
import stat
import struct
import time
from typing import TYPE_CHECKING

from cachehook.digests import (
    PACK_SIGNATURE,
    FileDigest,
    ProjectDir,
    Signature,
    digest_bytes,
    input_error,
    is_digest,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["StatCache", "hash_files"]

_DIGEST_LEN = 32
_RACY_WINDOW_NS = 1_000_000_000
_REGULAR_EXECUTABLE = 0o170000 | stat.S_IXUSR  # the file-type bits and the owner's x bit
_REGULAR_EXECUTABLE_BITS = stat.S_IFREG | stat.S_IXUSR
_FILE_TYPE, _LINK = 0o170000, stat.S_IFLNK


def _logger() -> logging.Logger:
    import logging  # only on the error path: importing logging costs milliseconds

    return logging.getLogger("cachehook")


# --------------------------------------------------------------------------- the file format

# Version 2 (issue 11; version 1 was JSON): a header line, then per section (regular files,
# then symlinks) the paths joined by NUL, the digests joined by NUL and the signatures as
# packed integers, each split back at C speed on load. The header holds the counts, the
# sizes and the xxh3-128 of the body.
_MAGIC = b"cachehook stat cache\n"
_VERSION = 2
_HEADER = struct.Struct("<IIIQQQQ32s")  # version, files, links, 4 byte lengths, checksum
_SIZES = (32, 64)  # the signature of a regular file, of a symlink

Entries = dict[str, tuple[str, Signature]]  # relpath -> (digest, signature)


def _encode(entries: Entries) -> bytes:
    blobs: list[bytes] = []
    counts: list[int] = []
    for size in _SIZES:
        section = [(path, entry) for path, entry in entries.items() if len(entry[1]) == size]
        counts.append(len(section))
        blobs.append(os.fsencode("\0".join([path for path, _ in section])))
        blobs.append("\0".join([entry[0] for _, entry in section]).encode("ascii"))
        blobs.append(b"".join([entry[1] for _, entry in section]))
    body = b"".join(blobs)
    sizes = [len(blobs[0]), len(blobs[1]), len(blobs[3]), len(blobs[4])]
    checksum = digest_bytes(body).encode()
    return _MAGIC + _HEADER.pack(_VERSION, *counts, *sizes, checksum) + body


def _decode(data: bytes) -> Entries | None:
    """The entries of a saved cache, or None if it is not a whole version-2 file."""
    start = len(_MAGIC) + _HEADER.size
    if data[: len(_MAGIC)] != _MAGIC or len(data) < start:
        return None
    version, files, links, *sizes, checksum = _HEADER.unpack_from(data, len(_MAGIC))
    body = data[start:]
    if version != _VERSION or digest_bytes(body).encode() != checksum:
        return None
    entries: Entries = {}
    at = 0
    for count, size, (paths_size, digests_size) in (
        (files, _SIZES[0], sizes[:2]),
        (links, _SIZES[1], sizes[2:]),
    ):
        if not count:
            at += paths_size + digests_size
            continue
        paths = os.fsdecode(body[at : at + paths_size]).split("\0")
        at += paths_size
        hexes = body[at : at + digests_size]
        at += digests_size
        digests = hexes.decode("ascii", "replace").split("\0")
        end = at + count * size
        if (
            len(paths) != count
            or len(digests) != count
            or end > len(body)
            or hexes.translate(None, b"0123456789abcdef\0")
            or set(map(len, digests)) != {_DIGEST_LEN}
        ):
            return None
        signatures = [body[i : i + size] for i in range(at, end, size)]
        at = end
        entries.update(zip(paths, zip(digests, signatures, strict=True), strict=True))
    return entries if at == len(body) else None


# --------------------------------------------------------------------------- the stat cache


class StatCache:
    """Remembers each file's digest with its ``lstat`` (size, mtime, ctime, inode).

    A file whose four values are unchanged is not read again; for a symlink, its target's
    four values too. The cache is one file per project root (the caller picks its path),
    keyed by project-relative path, in a compact versioned format that loads at C speed.

    Timestamps have a granularity (a kernel tick), so a same-size rewrite right after a file
    was read can leave all four values unchanged. A digest read less than a second after the
    file's mtime or ctime is therefore never trusted (the file is read again next time), and
    :meth:`save` leaves out every entry whose mtime or ctime is within a second of the save.
    """

    __slots__ = ("_dirty", "_entries", "_held", "_path")

    def __init__(self, path: Path | None) -> None:
        """An empty cache.

        Args:
            path: where :meth:`save` writes; None keeps it in memory only.
        """
        self._path = path
        self._entries: Entries = {}
        # Recorded (not read) with a recent mtime or ctime: trusted in this process, but not
        # saved until a second has passed. relpath -> the newer of the two.
        self._held: dict[str, int] = {}
        self._dirty = False

    @classmethod
    def load(cls, path: Path | None) -> StatCache:
        """Read a saved cache; a missing, older or damaged file gives an empty one. Never raises.

        Args:
            path: the cache file; None for an in-memory cache.

        Returns:
            The cache.
        """
        cache = cls(path)
        if path is None:
            return cache
        # Tens of thousands of tuples and not one cycle: the collector would only re-scan them.
        was_collecting = gc.isenabled()
        gc.disable()
        try:
            with open(path, "rb") as file:
                data = file.read()
            entries = _decode(data)
        except FileNotFoundError:
            return cache
        except (OSError, ValueError, struct.error) as exc:
            _logger().debug("ignoring unreadable stat cache %s: %s", path, exc)
            return cache
        finally:
            if was_collecting:
                gc.enable()
        if entries is None:
            _logger().debug("ignoring a stat cache of another version or damaged: %s", path)
        else:
            cache._entries = entries
        return cache

    def digest(self, root: Path, relpath: str) -> FileDigest:
        """Digest one file, reading it only if its ``lstat`` changed since it was recorded.

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.

        Returns:
            The file's digest.

        Raises:
            HashingError: the file is missing, unreadable, or not a file or symlink.
        """
        return self._digest_all(root, (relpath,), None)[0]

    def lookup(self, root: Path, relpath: str) -> str | None:
        """The recorded digest if the file is on disk with an unchanged ``lstat`` (never reads).

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.

        Returns:
            The digest, or None.
        """
        entry = self._entries.get(relpath)
        if entry is None:
            return None
        with ProjectDir(root) as at:
            try:
                signature, _ = at.signature(relpath, at.lstat(relpath))
            except OSError:
                return None
        return entry[0] if entry[1] == signature else None

    def record(
        self, root: Path, relpath: str, digest: str, *, written: os.stat_result | None = None
    ) -> bool:
        """Remember a digest for a file as it is on disk now (after a restore or a store).

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.
            digest: its known xxh3-128 hex digest.
            written: the ``lstat`` of the file as it was when ``digest`` was taken: the digest
                is recorded only if the file is still that file (one ``lstat``, compared and
                recorded, so no change can slip between the check and the record).

        Returns:
            Whether the digest was recorded (else the file is read when next needed).

        Raises:
            HashingError: the file is missing.
            ValueError: ``digest`` is not a 32-character lower-case hex digest.
        """
        if not is_digest(digest):
            msg = f"not an xxh3-128 hex digest: {digest!r}"
            raise ValueError(msg)
        with ProjectDir(root) as at:
            try:
                st = at.lstat(relpath)
                signature, changed = at.signature(relpath, st)
            except OSError as exc:
                raise input_error(relpath, exc) from exc
        if written is not None and _identity(st) != _identity(written):
            return False  # changed since the digest was taken
        if not signature:  # unrepresentable: the file is read when next needed
            return False
        self._entries[relpath] = (digest, signature)
        self._held[relpath] = changed
        self._dirty = True
        return True

    def save(self) -> None:
        """Write the cache atomically, if it changed; an OSError is logged, never raised.

        Entries whose mtime or ctime is within a second of now are left out (see the class).
        """
        if not self._dirty or self._path is None:
            return
        from cachehook._atomic import replace_file

        horizon = time.time_ns() - _RACY_WINDOW_NS
        held = {relpath: ts for relpath, ts in self._held.items() if ts >= horizon}
        entries = self._entries
        if held:
            entries = {r: e for r, e in entries.items() if r not in held}
        if replace_file(self._path, _encode(entries), what="the stat cache"):
            self._held = held  # written by a later save, once they are old enough
            self._dirty = bool(held)

    def _read(self, at: ProjectDir, relpath: str, st: os.stat_result) -> str:
        """Read a file whose signature is unknown or changed, and remember what it held."""
        try:
            signature, changed = at.signature(relpath, st)
            digest = at.read_digest(relpath, st.st_mode)
        except OSError as exc:
            raise input_error(relpath, exc) from exc
        entries = self._entries
        self._held.pop(relpath, None)
        if not signature or changed >= time.time_ns() - _RACY_WINDOW_NS:
            # Changed in the last second: a same-size rewrite in the same tick would keep the
            # signature, so this digest is never trusted, in this process or a later one.
            if entries.pop(relpath, None) is not None:
                self._dirty = True
        elif entries.get(relpath) != (digest, signature):
            entries[relpath] = (digest, signature)
            self._dirty = True
        return digest

    def _digest_all(
        self, root: Path, paths: Sequence[str], memo: dict[str, FileDigest] | None
    ) -> list[FileDigest]:
        # The warm path: one lstat per file, no read, and nothing built but the FileDigest.
        # Names are bound locally for speed; tuple.__new__ skips NamedTuple's Python __new__.
        get, new, cls, pack = self._entries.get, tuple.__new__, FileDigest, PACK_SIGNATURE
        mask, executable_bits = _REGULAR_EXECUTABLE, _REGULAR_EXECUTABLE_BITS
        remembered = memo.get if memo is not None else None
        out: list[FileDigest] = []
        append = out.append
        with ProjectDir(root) as at:
            lstat, prefix, fd = os.lstat, at.prefix, at.fd
            for relpath in paths:
                if remembered is not None:
                    known = remembered(relpath)
                    if known is not None:
                        append(known)
                        continue
                try:
                    st = lstat(prefix + relpath, dir_fd=fd)
                except OSError as exc:
                    raise input_error(relpath, exc) from exc
                mode = st.st_mode
                entry = get(relpath)
                if mode & _FILE_TYPE == _LINK:  # the target's stat too (issue 10)
                    signature, _ = at.signature(relpath, st)
                    if entry is None or entry[1] != signature:
                        entry = (self._read(at, relpath, st), signature)
                    found = new(cls, (relpath, entry[0], False))
                else:
                    try:
                        signature = pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    except struct.error:  # beyond 64 bits: no entry ever matches b""
                        signature = b""
                    if entry is None or entry[1] != signature:
                        entry = (self._read(at, relpath, st), signature)
                    # A regular file with its owner's execute bit.
                    found = new(cls, (relpath, entry[0], mode & mask == executable_bits))
                append(found)
                if memo is not None:
                    memo[relpath] = found
        return out


def hash_files(
    root: Path,
    paths: Sequence[str],
    cache: StatCache,
    *,
    memo: dict[str, FileDigest] | None = None,
) -> tuple[FileDigest, ...]:
    """Digest files through a stat cache.

    Args:
        root: the project root.
        paths: project-relative POSIX paths (as :func:`cachehook.hashing.expand_globs` gives).
        cache: unchanged files are taken from here; new digests are recorded in it.
        memo: digests already taken in this run (path -> digest), used without an ``lstat``
            and extended with the new ones. Only while no task of the run writes a file
            (:mod:`cachehook._reuse` drops it when one does).

    Returns:
        One digest per path, in the order given.

    Raises:
        HashingError: a file is missing, unreadable, or not a file or symlink.
    """
    return tuple(cache._digest_all(root, paths, memo))


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    return (st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
