"""Deterministic tar + zstd artifacts, and a restore that trusts none of them.

An artifact is one zstd frame (with checksum) holding one PAX tar stream: ``.cachehook/meta.json``
and ``.cachehook/log`` first, then the outputs sorted by path, with uid/gid/mtime zeroed and no
user names, so the same tree always packs to the same bytes.

:func:`unpack` reads an artifact twice. The first pass checks every entry and writes nothing; the
second stages the outputs in a temporary directory inside the project and moves each one into
place with :func:`os.replace`, so a restored file is always a whole file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
import unicodedata
from collections import deque
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, ClassVar, Literal, NoReturn, cast

import zstandard

from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
    from typing import Self

__all__ = ["LOG_PATH", "META_PATH", "Contents", "Entry", "Limits", "pack", "read", "unpack"]

META_PATH = ".cachehook/meta.json"
LOG_PATH = ".cachehook/log"

_RESERVED = ".cachehook"
_STAGING_PREFIX = ".cachehook-restore-"
_MAX_WINDOW = 1 << 27  # zstd's own default decoder limit (128 MiB), stated so it is never raised
_READ_SIZE = 1 << 16
_COPY_SIZE = 1 << 20
_TAR_BUFSIZE = 1 << 16
_MAX_PADDING = 2 * tarfile.RECORDSIZE  # zero blocks tarfile writes after the last entry
_RECENT = 2 * _TAR_BUFSIZE  # more than tarfile reads ahead of the block it parses
_MAX_FRAME_HEADER = 18
_MAX_LINK_DEPTH = 40  # Linux's MAXSYMLINKS
_PERMISSIONS = 0o777  # setuid, setgid and sticky bits are dropped on pack and on restore
_KINDS: dict[bytes, Literal["file", "dir", "symlink"]] = {
    tarfile.REGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
}
_TYPE_NAMES = {
    tarfile.AREGTYPE: "old-style file",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "sparse file",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link",
    tarfile.XGLTYPE: "global PAX header",
    tarfile.SOLARIS_XHDTYPE: "Solaris extended header",
}
# Refused from the raw header, before tarfile reads their payload into memory.
_REFUSED_HEADERS = frozenset(
    {
        tarfile.GNUTYPE_SPARSE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    }
)


@dataclass(frozen=True)
class Limits:
    """Bounds on what reading an artifact may cost (a decompression bomb is a miss)."""

    max_total_bytes: int = 8 * 1024**3  # sum of the sizes of all regular files, meta and log too
    max_entries: int = 200_000  # tar members, meta and log included
    max_path_length: int = 4096  # UTF-8 bytes, for entry paths and link targets
    max_meta_bytes: int = 16 * 1024**2
    max_log_bytes: int = 256 * 1024**2


@dataclass(frozen=True)
class Entry:
    """One output in an artifact."""

    path: str  # project-relative POSIX
    kind: Literal["file", "dir", "symlink"]
    mode: int  # permission bits as stored (0o7777 & st_mode)
    size: int
    linkname: str = ""  # symlink target as stored


@dataclass(frozen=True)
class Contents:
    """What an artifact holds: its metadata, its log and its outputs in archive order."""

    meta: bytes
    log: bytes
    entries: tuple[Entry, ...]


_DEFAULT_LIMITS = Limits()


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
        The metadata, the log (``b""`` if absent) and the output entries in archive order.

    Raises:
        ArchiveError: the artifact is not valid zstd, is truncated, is not a tar stream, exceeds
            ``limits``, or holds an entry that :func:`unpack` would refuse whatever the task.
    """
    meta: bytes | None = None
    log: bytes | None = None
    entries: list[Entry] = []
    seen: set[str] = set()
    with _open_source(src) as raw, _translate_errors("cannot read artifact"):
        for tar, member, entry in _iter_members(raw, limits):
            if entry.path in seen:
                msg = f"artifact holds {_show(entry.path)} twice"
                raise ArchiveError(msg)
            seen.add(entry.path)
            if entry.path == META_PATH and entry.kind == "file":
                meta = _read_member(tar, member, limits.max_meta_bytes)
            elif entry.path == LOG_PATH and entry.kind == "file":
                log = _read_member(tar, member, limits.max_log_bytes)
            elif _is_reserved(entry.path):
                msg = f"artifact holds an unexpected entry {_show(entry.path)}"
                raise ArchiveError(msg)
            else:
                entries.append(entry)
    if meta is None:
        msg = f"artifact has no {META_PATH}"
        raise ArchiveError(msg)
    _check_tree(entries)
    return Contents(meta=meta, log=log or b"", entries=tuple(entries))


def unpack(
    src: Path,
    root: Path,
    *,
    allowed: Callable[[str], bool],
    skip: Collection[str] = (),
    limits: Limits = _DEFAULT_LIMITS,
    check: Callable[[Contents], None] | None = None,
) -> Contents:
    """Restore an artifact's outputs under ``root``, all or nothing as far as checks go.

    Every entry is checked (see :func:`read`, plus ``allowed`` and what is on disk) before a
    byte is written. Then the outputs are staged in a temporary directory inside ``root`` and
    each is moved into place with :func:`os.replace`; the staging directory is always removed.

    Args:
        src: the artifact.
        root: the project root.
        allowed: whether a project-relative path may be written (a declared output that is not
            an input). A directory entry may also be a parent of an allowed entry.
        skip: paths already on disk and unchanged; they are not written.
        limits: bounds on entry count, sizes and path lengths.
        check: told what the artifact holds before anything is written; raises
            ``ArchiveError`` to refuse it (the runner checks meta.json names the key it wants).

    Returns:
        What :func:`read` returns.

    Raises:
        ArchiveError: the artifact is malformed or hostile, an entry is not allowed, a path on
            disk would have to be written through a link leaving the project or replaced when
            it is not allowed, or writing failed (then each output already moved is whole).
    """
    contents = read(src, limits=limits)
    if check is not None:
        check(contents)
    _check_allowed(contents.entries, allowed)
    skipped = frozenset(skip)
    wanted = [entry for entry in contents.entries if entry.path not in skipped]
    real_root = Path(os.path.realpath(root))
    with _translate_errors("cannot restore artifact"):
        _Placer(real_root, allowed).check(wanted)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=real_root))
        try:
            _stage(src, staging, contents.entries, skipped, limits)
            _Placer(real_root, allowed).place(wanted, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return contents


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
        _check_path(path, _DEFAULT_LIMITS.max_path_length)
        if _is_reserved(path):
            msg = f"output {_show(path)} is inside the reserved {_RESERVED}/ directory"
            raise ArchiveError(msg)
        parent = path.rpartition("/")[0]
        if parent not in real_parents:
            if not _is_within(os.path.realpath(root / parent), root):
                msg = f"output {_show(path)} is outside the project (through a symlink)"
                raise ArchiveError(msg)
            real_parents.add(parent)
        entries.append(_entry_on_disk(root, path))
    _check_tree(entries)
    return entries


def _entry_on_disk(root: Path, path: str) -> Entry:
    full = root / path
    try:
        st = full.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            _check_link_target(path, target, _DEFAULT_LIMITS.max_path_length)
            return Entry(path=path, kind="symlink", mode=_PERMISSIONS, size=0, linkname=target)
    except FileNotFoundError as exc:
        msg = f"output {_show(path)} does not exist"
        raise ArchiveError(msg) from exc
    except OSError as exc:
        msg = f"cannot read output {_show(path)}: {exc.strerror}"
        raise ArchiveError(msg) from exc
    mode = stat.S_IMODE(st.st_mode) & _PERMISSIONS
    if stat.S_ISREG(st.st_mode):
        return Entry(path=path, kind="file", mode=mode, size=st.st_size)
    if stat.S_ISDIR(st.st_mode):
        return Entry(path=path, kind="dir", mode=mode, size=0)
    msg = f"output {_show(path)} is not a regular file, directory or symlink"
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
                msg = f"cannot pack output {_show(entry.path)}: {exc.strerror or exc}"
                raise ArchiveError(msg) from exc


def _add_file(tar: tarfile.TarFile, root: Path, path: str) -> None:
    fd = os.open(root / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            msg = f"output {_show(path)} changed type while it was packed"
            raise ArchiveError(msg)
        mode = stat.S_IMODE(st.st_mode) & _PERMISSIONS
        tar.addfile(_tar_header(path, "file", mode, st.st_size), fh)


def _tar_header(path: str, kind: str, mode: int, size: int, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE}.get(kind, tarfile.SYMTYPE)
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# --- reading ----------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _translate_errors(what: str) -> Iterator[None]:
    # Whatever a hostile or damaged artifact makes the decoders raise is a miss, not a crash.
    try:
        yield
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        msg = f"{what}: {exc}"
        raise ArchiveError(msg) from exc


class _FrameCheck:
    """The compressed side of an artifact, passed to zstd while following the frame's blocks.

    zstandard's ``stream_reader`` ends quietly when a frame is cut short, so this walks the block
    headers (RFC 8878, 3.1.1.2) to know whether the whole frame, checksum included, was read.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._pending = self._read_frame_header()
        self._skip = zstandard.frame_header_size(self._pending)  # bytes before a block header
        self._block_header = b""
        self._is_last = False

    def _read_frame_header(self) -> bytes:
        data = self._raw.read(_READ_SIZE)
        while 0 < len(data) < _MAX_FRAME_HEADER and (more := self._raw.read(_READ_SIZE)):
            data += more
        if not data:
            msg = "artifact is empty"
            raise ArchiveError(msg)
        try:
            has_checksum = zstandard.get_frame_parameters(data).has_checksum
        except zstandard.ZstdError as exc:
            msg = f"artifact is not a zstd frame: {exc}"
            raise ArchiveError(msg) from exc
        if not has_checksum:
            msg = "artifact has no zstd checksum, so damage would go unnoticed"
            raise ArchiveError(msg)
        return data

    def read(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
        else:
            data = self._raw.read(size)
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                pos += step
                self._skip -= step
            elif self._is_last:
                msg = "artifact has data after its zstd frame"
                raise ArchiveError(msg)
            else:
                take = 3 - len(self._block_header)
                self._block_header += data[pos : pos + take]
                pos += take
                if len(self._block_header) == 3:
                    self._start_block(int.from_bytes(self._block_header, "little"))
                    self._block_header = b""
        return data

    def _start_block(self, header: int) -> None:
        is_rle = (header >> 1) & 3 == 1
        self._skip = 1 if is_rle else header >> 3
        if header & 1:  # the last block, then the 4-byte checksum
            self._skip += 4
            self._is_last = True

    def check_end(self) -> None:
        if not (self._is_last and self._skip == 0):
            msg = "artifact is truncated (incomplete zstd frame)"
            raise ArchiveError(msg)
        if self._raw.read(1):
            msg = "artifact has data after its zstd frame"
            raise ArchiveError(msg)


class _ZstdReader:
    """One zstd frame as a file for tarfile: reads of bounded size, and a checked end."""

    def __init__(self, raw: BinaryIO) -> None:
        self._frame = _FrameCheck(raw)
        decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
        self._stream = decompressor.stream_reader(
            cast("IO[bytes]", self._frame), read_size=_READ_SIZE, read_across_frames=False
        )
        self._delivered = 0
        self._recent: deque[bytes] = deque()  # the last bytes handed out, for finish()
        self._recent_size = 0

    def read(self, size: int) -> bytes:
        chunk = self._stream.read(size)
        self._delivered += len(chunk)
        self._recent.append(chunk)
        self._recent_size += len(chunk)
        while self._recent_size - len(self._recent[0]) >= _RECENT:
            self._recent_size -= len(self._recent.popleft())
        return chunk

    def finish(self, end: int) -> None:
        """Check that only zeros follow offset ``end`` (tar's end block), then the frame end."""
        recent_start = self._delivered - self._recent_size
        if end < recent_start:  # tarfile never reads that far ahead
            msg = "cannot check the end of the artifact"
            raise ArchiveError(msg)
        tail = b"".join(self._recent)[end - recent_start :]
        padding = len(tail)
        is_clean = tail.count(0) == padding
        while is_clean and padding <= _MAX_PADDING and (chunk := self.read(_READ_SIZE)):
            padding += len(chunk)
            is_clean = chunk.count(0) == len(chunk)
        if not is_clean or padding > _MAX_PADDING:
            msg = "artifact has data after the end of its tar archive"
            raise ArchiveError(msg)
        if padding < 2 * tarfile.BLOCKSIZE:
            msg = "artifact is truncated (no end-of-archive blocks)"
            raise ArchiveError(msg)
        self._frame.check_end()


class _TarStream(tarfile.TarFile):
    members: list[tarfile.TarInfo]  # present at runtime, missing from typeshed

    def next(self) -> tarfile.TarInfo | None:
        member = super().next()
        self.members.clear()  # stream mode keeps every header otherwise: memory grows per entry
        return member


def _header_class(limits: Limits) -> type[tarfile.TarInfo]:
    max_extended = 2 * limits.max_path_length + 4096

    class _Header(tarfile.TarInfo):
        extended_run: ClassVar[int] = 0

        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            if len(buf) == tarfile.BLOCKSIZE and buf.count(0) == tarfile.BLOCKSIZE:
                return super().frombuf(buf, encoding, errors)  # end of archive: the walk stops
            try:
                header = super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError as exc:
                # tarfile takes a missing or broken header after the first for the end of the
                # archive; here it means the artifact was cut short or damaged.
                msg = f"artifact is truncated or corrupt: {exc}"
                raise ArchiveError(msg) from exc
            cls.extended_run = cls.extended_run + 1 if header.type == tarfile.XHDTYPE else 0
            _screen_header(header, max_extended, cls.extended_run)
            return header

        # PAX sparse maps make tarfile read numbers from the stream without bound.
        def _proc_gnusparse_00(self, *args: object) -> NoReturn:
            _refuse_sparse(self.name)

        def _proc_gnusparse_01(self, *args: object) -> NoReturn:
            _refuse_sparse(self.name)

        def _proc_gnusparse_10(self, *args: object) -> NoReturn:
            _refuse_sparse(self.name)

    return _Header


def _screen_header(header: tarfile.TarInfo, max_extended: int, extended_run: int) -> None:
    problem = ""
    if header.size < 0:
        problem = "a negative size"
    elif header.type in _REFUSED_HEADERS:
        problem = f"a {_TYPE_NAMES[header.type]} header"
    elif header.type == tarfile.XHDTYPE and header.size > max_extended:
        problem = f"a PAX header of {header.size} bytes"
    elif extended_run > 1:
        problem = "two PAX headers in a row"
    if problem:
        msg = f"artifact has {problem} (at {_show(header.name)})"
        raise ArchiveError(msg)


def _refuse_sparse(name: str) -> NoReturn:
    msg = f"entry {_show(name)}: sparse files are not allowed"
    raise ArchiveError(msg)


def _iter_members(
    raw: BinaryIO, limits: Limits
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, Entry]]:
    reader = _ZstdReader(raw)
    with _TarStream.open(
        fileobj=cast("IO[bytes]", reader),
        mode="r|",
        tarinfo=_header_class(limits),
        encoding="utf-8",
        errors="strict",
        bufsize=_TAR_BUFSIZE,
    ) as tar:
        count = total = 0
        while (member := tar.next()) is not None:
            entry = _entry_of(member, limits)
            count += 1
            total += entry.size
            if count > limits.max_entries:
                msg = f"artifact has more than {limits.max_entries} entries"
                raise ArchiveError(msg)
            if total > limits.max_total_bytes:
                msg = f"artifact expands to more than {limits.max_total_bytes} bytes"
                raise ArchiveError(msg)
            yield tar, member, entry
        end = tar.offset  # where the end-of-archive block starts
    reader.finish(end)


def _entry_of(member: tarfile.TarInfo, limits: Limits) -> Entry:
    path = member.name
    _check_path(path, limits.max_path_length)
    kind = _KINDS.get(member.type)
    if kind is None or member.sparse is not None:
        what = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
        msg = f"entry {_show(path)}: {what} entries are not allowed"
        raise ArchiveError(msg)
    if member.size < 0:
        msg = f"entry {_show(path)}: a negative size"
        raise ArchiveError(msg)
    if kind != "file" and member.size:
        msg = f"entry {_show(path)}: a {kind} with a size"
        raise ArchiveError(msg)
    if kind == "symlink":
        _check_link_target(path, member.linkname, limits.max_path_length)
    elif member.linkname:
        msg = f"entry {_show(path)}: a {kind} with a link target"
        raise ArchiveError(msg)
    return Entry(path, kind, member.mode & 0o7777, member.size, member.linkname)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        msg = f"{member.name} is larger than {limit} bytes"
        raise ArchiveError(msg)
    fh = tar.extractfile(member)
    data = fh.read() if fh is not None else b""
    if len(data) != member.size:
        msg = f"artifact is truncated inside {member.name}"
        raise ArchiveError(msg)
    return data


# --- checks shared by pack, read and unpack ---------------------------------------------------


def _show(path: str) -> str:
    shown = repr(path)
    return shown if len(shown) <= 120 else f"{shown[:117]}..."


def _is_reserved(path: str) -> bool:
    return path == _RESERVED or path.startswith(f"{_RESERVED}/")


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _is_within(path: str, root: Path) -> bool:
    return os.path.commonpath([path, root]) == str(root)


def _name_problem(name: str, max_length: int) -> str:
    if "\x00" in name:
        return "contains NUL"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is absolute"
    try:
        length = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if length > max_length:
        return f"is longer than {max_length} bytes"
    return ""


def _check_path(path: str, max_length: int) -> None:
    problem = _name_problem(path, max_length)
    if not problem and path in ("", "."):
        problem = "is empty"
    if not problem and any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' segment"
    if problem:
        msg = f"path {_show(path)} {problem}"
        raise ArchiveError(msg)


def _check_link_target(path: str, target: str, max_length: int) -> None:
    problem = _name_problem(target, max_length) or ("" if target else "is empty")
    if problem:
        msg = f"symlink {_show(path)}: target {_show(target)} {problem}"
        raise ArchiveError(msg)


def _fold(path: str) -> str:
    # Names compared as a case- and normalization-insensitive disk (macOS, Windows) sees them,
    # so that 'A' and 'a/x' count as the same place everywhere.
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def _check_tree(entries: Sequence[Entry]) -> None:
    non_dirs = {_fold(entry.path): entry for entry in entries if entry.kind != "dir"}
    for entry in entries:
        for parent in _parents(entry.path):
            blocker = non_dirs.get(_fold(parent))
            if blocker is not None:
                where = f"{blocker.kind} {_show(blocker.path)}"
                msg = f"entry {_show(entry.path)} is placed through {where}"
                raise ArchiveError(msg)
    links = {_fold(e.path): e for e in entries if e.kind == "symlink"}
    resolved: dict[str, list[str]] = {}
    for key in links:
        _resolve_link(key, links, resolved, [])


def _resolve_link(
    key: str, links: dict[str, Entry], resolved: dict[str, list[str]], active: list[str]
) -> list[str]:
    # Follow the archive's own links as the kernel would: lexically, 'y/..' with y -> '.' would
    # stay in the project, but it leads to the project's parent.
    if key in resolved:
        return resolved[key]
    link = links[key]
    if key in active or len(active) >= _MAX_LINK_DEPTH:
        msg = f"symlink {_show(link.path)} is part of a loop"
        raise ArchiveError(msg)
    active.append(key)
    parts = _fold(link.path).split("/")[:-1]
    for part in _fold(link.linkname).split("/"):
        if part == "..":
            if not parts:
                where = f"{_show(link.path)} -> {_show(link.linkname)}"
                msg = f"symlink {where} leads outside the project"
                raise ArchiveError(msg)
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
            joined = "/".join(parts)
            if joined in links:
                parts = list(_resolve_link(joined, links, resolved, active))
    active.pop()
    resolved[key] = parts
    return parts


def _check_allowed(entries: Sequence[Entry], allowed: Callable[[str], bool]) -> None:
    parents_of_allowed: set[str] = set()
    other_dirs: list[str] = []
    for entry in entries:
        if allowed(entry.path):
            parents_of_allowed.update(_parents(entry.path))
        elif entry.kind == "dir":
            other_dirs.append(entry.path)
        else:
            msg = f"artifact holds {_show(entry.path)}, which is not an output of this task"
            raise ArchiveError(msg)
    for path in other_dirs:
        if path not in parents_of_allowed:
            msg = f"artifact holds directory {_show(path)}, which is not an output of this task"
            raise ArchiveError(msg)


# --- restoring --------------------------------------------------------------------------------


def _stage(
    src: Path, staging: Path, expected: Sequence[Entry], skipped: frozenset[str], limits: Limits
) -> None:
    remaining = iter(expected)
    made_dirs = {staging}
    with _open_source(src) as raw:
        for tar, member, entry in _iter_members(raw, limits):
            if _is_reserved(entry.path):
                continue
            if next(remaining, None) != entry:
                msg = "artifact changed while it was being restored"
                raise ArchiveError(msg)
            if entry.path in skipped or entry.kind == "dir":
                continue
            target = staging / entry.path
            _make_staging_dirs(target.parent, made_dirs)
            if entry.kind == "symlink":
                os.symlink(entry.linkname, target)
            else:
                _write_file(tar, member, target, entry)
    if next(remaining, None) is not None:
        msg = "artifact changed while it was being restored"
        raise ArchiveError(msg)


def _make_staging_dirs(path: Path, made_dirs: set[Path]) -> None:
    if path in made_dirs:
        return
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.path.realpath(path) != str(path):  # the checks above make this unreachable
        msg = f"staging directory {path} goes through a symlink"
        raise ArchiveError(msg)
    made_dirs.add(path)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, entry: Entry) -> None:
    source = tar.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        if source is not None:
            shutil.copyfileobj(source, out, _COPY_SIZE)
        if out.tell() != entry.size:
            msg = f"artifact is truncated inside {_show(entry.path)}"
            raise ArchiveError(msg)
        os.fchmod(out.fileno(), entry.mode & _PERMISSIONS)


class _Placer:
    """Moves staged outputs into the project, never through a link that leaves it."""

    def __init__(self, root: Path, allowed: Callable[[str], bool]) -> None:
        self._root = root
        self._allowed = allowed
        self._ready = {""}  # directories known to be usable
        self._real_dirs: dict[str, str] = {}

    def check(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            dirs = list(_parents(entry.path))
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
            msg = f"{_show(path)} leads through a symlink on disk to {_show(real_path)}"
            raise ArchiveError(msg)

    def place(self, entries: Sequence[Entry], staging: Path) -> None:
        for entry in entries:
            for parent in _parents(entry.path):
                self._need_dir(parent, create=True)
            target = self._root / entry.path
            if entry.kind == "dir":
                self._need_dir(entry.path, create=True)
                continue
            st = _lstat(target)
            if st is not None and stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)  # an allowed output replaces what is there
            os.replace(staging / entry.path, target)
        # Directory modes last, deepest first: a read-only directory would block its entries.
        for entry in reversed(entries):
            target = self._root / entry.path
            st = _lstat(target) if entry.kind == "dir" else None
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.chmod(target, entry.mode & _PERMISSIONS)

    def _need_dir(self, rel: str, *, create: bool) -> bool:
        if rel in self._ready:
            return True
        path = self._root / rel
        st = _lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if not (_is_within(real, self._root) and os.path.isdir(real)):
                msg = f"{_show(rel)} is a symlink on disk that leads outside the project"
                raise ArchiveError(msg)
        elif st is not None and not stat.S_ISDIR(st.st_mode):
            if not self._allowed(rel):
                msg = f"{_show(rel)} is a file on disk where the artifact has a directory"
                raise ArchiveError(msg)
            if not create:
                return False
            path.unlink()
            path.mkdir()
        elif st is None:
            if not create:
                return False
            try:
                path.mkdir()
            except FileExistsError:  # made meanwhile, by a concurrent restore: check it again
                return self._need_dir(rel, create=create)
        self._ready.add(rel)
        return True


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
