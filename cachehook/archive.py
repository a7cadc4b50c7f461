"""Deterministic tar + zstd artifacts, and a restore that trusts none of them.

An artifact is one zstd frame (with checksum) holding one PAX tar stream: ``.cachehook/meta.json``
and ``.cachehook/log`` first, then the outputs sorted by path, with uid/gid/mtime zeroed and no
user names, so the same tree always packs to the same bytes.

This module writes artifacts (:func:`pack`) and is the public face of reading them. :func:`unpack`
reads an artifact once (issue 11): the hardened reader (``_reader``) decompresses it and checks
each entry as it streams, the placer (``_placer``) stages the outputs inside the project as they
arrive, and only when the stream has ended cleanly (tar end, zstd frame end and checksum, the
store's checksum when one is given, the tree as a whole, what is on disk) does it move each one
into place with :func:`os.replace`, so a restored file is always a whole file.

At the 400-line aim (~400): the writer and the public reader share the entry rules and the
meta and log conventions; the writer (:func:`pack`) is the seam to split along if it grows.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, NamedTuple, cast

from cachehook._entries import (
    PERMISSIONS,
    RESERVED,
    Entry,
    check_allowed,
    check_link_target,
    check_path,
    check_tree,
    is_reserved,
    is_within,
    show,
)
from cachehook._placer import Placed, Placer, Staging
from cachehook._reader import (
    LOG_PATH,
    META_PATH,
    ArtifactReader,
    Contents,
    Limits,
    translate_errors,
)
from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

__all__ = [
    "LOG_PATH",
    "META_PATH",
    "Contents",
    "Entry",
    "Limits",
    "Placed",
    "Restored",
    "pack",
    "read",
    "unpack",
]

_TAR_BUFSIZE = 1 << 16
_DEFAULT_LIMITS = Limits()


class Restored(NamedTuple):
    """What :func:`unpack` read (as :class:`Contents`), and the regular files it wrote, as they
    are in place."""

    meta: bytes
    log: bytes
    entries: tuple[Entry, ...]
    checksum: str
    placed: tuple[Placed, ...]


def pack(
    dest: BinaryIO | Path,
    root: Path,
    paths: Sequence[str],
    *,
    meta: bytes,
    log: bytes,
    level: int = 3,
) -> int:
    """Write the artifact of ``paths`` under ``root``; the same tree always gives the same bytes.

    Args:
        dest: a binary stream, or a path written atomically (temporary file + rename).
        root: the project root the paths are relative to.
        paths: project-relative POSIX paths of files, directories and symlinks (not followed).
        meta: the bytes of ``.cachehook/meta.json``.
        log: the captured output, stored as ``.cachehook/log``.
        level: the zstd compression level.

    Returns:
        The number of compressed bytes written.

    Raises:
        ArchiveError: a path is missing, is not a file, directory or symlink, leaves the project
            or would make an artifact that :func:`unpack` refuses; or ``dest`` is not writable.
    """
    real_root = Path(os.path.realpath(root))
    entries = _scan_outputs(real_root, paths)
    if not isinstance(dest, Path):
        counter = _CountingWriter(dest)
        try:
            _write_archive(counter, real_root, entries, meta=meta, log=log, level=level)
        except OSError as exc:
            msg = f"cannot write artifact: {exc.strerror or exc}"
            raise ArchiveError(msg) from exc
        return counter.count
    import tempfile  # not on a restoring hit

    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        msg = f"cannot write artifact {dest}: {exc.strerror}"
        raise ArchiveError(msg) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_archive(fh, real_root, entries, meta=meta, log=log, level=level)
            written = fh.tell()
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            msg = f"cannot write artifact {dest}: {exc.strerror or exc}"
            raise ArchiveError(msg) from exc
        raise
    return written


def read(src: BinaryIO | Path, *, limits: Limits = _DEFAULT_LIMITS) -> Contents:
    """Walk a whole artifact without writing anything, checking its structure.

    Args:
        src: the artifact, as a path or a binary stream positioned at its start.
        limits: bounds on entry count, sizes and path lengths.

    Returns:
        The metadata, the log (``b""`` if absent), the output entries in archive order and the
        xxh3-128 of the compressed bytes.

    Raises:
        ArchiveError: the artifact is not valid zstd, is truncated, is not a tar stream, exceeds
            ``limits``, or holds an entry that :func:`unpack` would refuse whatever the task.
    """
    with _open_source(src) as raw, translate_errors("cannot read artifact"):
        reader = ArtifactReader(raw, limits)
        for _ in reader.outputs():
            pass
        return reader.contents()


def unpack(
    src: BinaryIO | Path,
    root: Path,
    *,
    allowed: Callable[[str], bool],
    skip: Collection[str] | Callable[[bytes], Collection[str]] = (),
    checksum: str | None = None,
    limits: Limits = _DEFAULT_LIMITS,
) -> Restored:
    """Restore an artifact's outputs under ``root`` in one pass, all or nothing as far as checks go.

    The artifact is read once. Each entry is checked as it streams (see :func:`read`, plus
    ``allowed``) and staged in a temporary directory inside ``root``; once the stream has ended
    and every check has passed (the whole tree, ``checksum``, what is on disk), each output is
    moved into place with :func:`os.replace`. The staging directory is always removed.

    Args:
        src: the artifact, as a path or a binary stream positioned at its start (the store's
            own file: nothing is copied out first).
        root: the project root.
        allowed: whether a project-relative path may be written (a declared output that is not
            an input). A directory entry may also be a parent of an allowed entry.
        skip: paths already on disk and unchanged, which are not written; or a function told
            the bytes of ``meta.json`` as soon as they have streamed (before any output is
            staged) that names them, and raises ``ArchiveError`` to refuse the artifact (the
            runner checks meta.json names the key it wants).
        checksum: the xxh3-128 the compressed bytes must have (the store's record); a
            different one refuses the artifact before anything is placed.
        limits: bounds on entry count, sizes and path lengths.

    Returns:
        What :func:`read` returns, and each regular file written with its digest and ``lstat``
        in place (a file changed between its move and that ``lstat`` is left out).

    Raises:
        ArchiveError: the artifact is malformed, hostile or corrupt, an entry is not allowed, a
            path on disk would have to be written through a link leaving the project or
            replaced when it is not allowed, or writing failed (then each output already moved
            is whole).
    """
    real_root = Path(os.path.realpath(root))
    with _open_source(src) as raw:
        with translate_errors("cannot restore artifact"):
            staging = Staging(real_root)
        with staging:
            return _restore(raw, staging, real_root, allowed, skip, checksum, limits)


def _restore(
    raw: BinaryIO,
    staging: Staging,
    root: Path,
    allowed: Callable[[str], bool],
    skip: Collection[str] | Callable[[bytes], Collection[str]],
    checksum: str | None,
    limits: Limits,
) -> Restored:
    reader = ArtifactReader(raw, limits)
    try:
        with translate_errors("cannot restore artifact"):
            wanted = _stage(reader, staging, allowed, skip)
    except ArchiveError as exc:
        # A store file that no longer matches its record is damaged, whatever the decoders
        # made of it: say so (the runner evicts either way).
        if checksum is not None and reader.whole_checksum() not in (None, checksum):
            raise _damaged() from exc
        raise
    contents = reader.contents()
    if checksum is not None and contents.checksum != checksum:
        raise _damaged()
    with translate_errors("cannot restore artifact"):
        check_allowed(contents.entries, allowed)
        placer = Placer(root, allowed)
        placer.check(wanted)
        placed = placer.place(wanted, staging)
    return Restored(contents.meta, contents.log, contents.entries, contents.checksum, tuple(placed))


def _stage(
    reader: ArtifactReader,
    staging: Staging,
    allowed: Callable[[str], bool],
    skip: Collection[str] | Callable[[bytes], Collection[str]],
) -> list[Entry]:
    skipped: frozenset[str] | None = None
    wanted: list[Entry] = []
    try:
        for entry, data in reader.outputs():
            if skipped is None:
                skipped = _paths_to_skip(skip, reader.meta)
            if entry.kind != "dir" and not allowed(entry.path):
                msg = f"artifact holds {show(entry.path)}, which is not an output of this task"
                raise ArchiveError(msg)
            if entry.path not in skipped:
                staging.add(entry, data)
                wanted.append(entry)
    except Exception:
        staging.wait()  # a write that failed before is the error a serial restore would give
        raise
    staging.wait()  # every staged byte written
    if skipped is None:  # no outputs: meta.json is checked all the same
        _paths_to_skip(skip, reader.meta)
    return wanted


def _damaged() -> ArchiveError:
    return ArchiveError("its checksum does not match its record (corrupt artifact)")


def _paths_to_skip(
    skip: Collection[str] | Callable[[bytes], Collection[str]], meta: bytes | None
) -> frozenset[str]:
    assert meta is not None  # the reader yields no output before meta.json
    return frozenset(skip(meta) if callable(skip) else skip)


@contextlib.contextmanager
def _open_source(src: BinaryIO | Path) -> Iterator[BinaryIO]:
    if not isinstance(src, Path):
        yield src
        return
    try:
        fh = src.open("rb")
    except OSError as exc:
        msg = f"cannot open artifact {src}: {exc.strerror}"
        raise ArchiveError(msg) from exc
    with fh:
        yield fh


# --- packing ----------------------------------------------------------------------------------


class _CountingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


def _scan_outputs(root: Path, paths: Iterable[str]) -> list[Entry]:
    entries: list[Entry] = []
    real_parents = {""}
    for path in sorted(set(paths)):
        check_path(path, _DEFAULT_LIMITS.max_path_length)
        if is_reserved(path):
            msg = f"output {show(path)} is inside the reserved {RESERVED}/ directory"
            raise ArchiveError(msg)
        parent = path.rpartition("/")[0]
        if parent not in real_parents:
            if not is_within(os.path.realpath(root / parent), root):
                msg = f"output {show(path)} is outside the project (through a symlink)"
                raise ArchiveError(msg)
            real_parents.add(parent)
        entries.append(_entry_on_disk(root, path))
    check_tree(entries)
    return entries


def _entry_on_disk(root: Path, path: str) -> Entry:
    full = root / path
    try:
        st = full.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            check_link_target(path, target, _DEFAULT_LIMITS.max_path_length)
            return Entry(path=path, kind="symlink", mode=PERMISSIONS, size=0, linkname=target)
    except FileNotFoundError as exc:
        msg = f"output {show(path)} does not exist"
        raise ArchiveError(msg) from exc
    except OSError as exc:
        msg = f"cannot read output {show(path)}: {exc.strerror}"
        raise ArchiveError(msg) from exc
    mode = stat.S_IMODE(st.st_mode) & PERMISSIONS
    if stat.S_ISREG(st.st_mode):
        return Entry(path=path, kind="file", mode=mode, size=st.st_size)
    if stat.S_ISDIR(st.st_mode):
        return Entry(path=path, kind="dir", mode=mode, size=0)
    msg = f"output {show(path)} is not a regular file, directory or symlink"
    raise ArchiveError(msg)


def _write_archive(
    fh: BinaryIO | _CountingWriter,
    root: Path,
    entries: Sequence[Entry],
    *,
    meta: bytes,
    log: bytes,
    level: int,
) -> None:
    import tarfile  # packing only: a restore reads tar headers itself (_ustar)
    from io import BytesIO

    import zstandard

    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with (
        compressor.stream_writer(cast("IO[bytes]", fh), closefd=False) as zfh,
        tarfile.open(
            fileobj=zfh,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            bufsize=_TAR_BUFSIZE,
        ) as tar,
    ):
        tar.addfile(_tar_header(META_PATH, "file", 0o644, len(meta)), BytesIO(meta))
        tar.addfile(_tar_header(LOG_PATH, "file", 0o644, len(log)), BytesIO(log))
        for entry in entries:
            if entry.kind != "file":
                tar.addfile(_tar_header(entry.path, entry.kind, entry.mode, 0, entry.linkname))
                continue
            try:
                _add_file(tar, root, entry.path)
            except OSError as exc:
                msg = f"cannot pack output {show(entry.path)}: {exc.strerror or exc}"
                raise ArchiveError(msg) from exc


def _add_file(tar: tarfile.TarFile, root: Path, path: str) -> None:
    fd = os.open(root / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            msg = f"output {show(path)} changed type while it was packed"
            raise ArchiveError(msg)
        mode = stat.S_IMODE(st.st_mode) & PERMISSIONS
        tar.addfile(_tar_header(path, "file", mode, st.st_size), fh)


def _tar_header(path: str, kind: str, mode: int, size: int, linkname: str = "") -> tarfile.TarInfo:
    import tarfile

    info = tarfile.TarInfo(path)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE}.get(kind, tarfile.SYMTYPE)
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
