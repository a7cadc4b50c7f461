"""The hardened reader: one pass over an artifact, each entry checked as it streams.

An artifact is untrusted input (DESIGN, "What stays true"). :class:`ArtifactReader` walks its one
zstd frame and the tar stream inside in a single pass: every header is screened before tarfile
acts on it, every entry is checked as it arrives (path, kind, size, limits, duplicates, reserved
names, ``meta.json`` first), and at the end of the stream the tree as a whole (nothing placed
through a file or a link, no link leading out), the tar's end, the frame's end and zstd's own
content checksum. The xxh3-128 of the compressed bytes (the store's checksum, as
``hashing.digest_file`` computes it) is taken on the way, so that no second read is needed to
check an artifact against its store record. Until the stream has ended cleanly nothing it
yielded may be placed.

The compressed side (one zstd frame, followed block by block) is ``_frame``.
"""

from __future__ import annotations

import contextlib
import tarfile
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    BinaryIO,
    ClassVar,
    Literal,
    NamedTuple,
    NoReturn,
    Protocol,
    cast,
)

import zstandard

from cachehook._entries import (
    Entry,
    check_link_target,
    check_path,
    check_tree,
    is_reserved,
    show,
)
from cachehook._frame import TAR_BUFSIZE, FrameCheck, FrameReader
from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

__all__ = [
    "LOG_PATH",
    "META_PATH",
    "ArtifactReader",
    "Contents",
    "Limits",
    "MemberData",
    "translate_errors",
]

META_PATH = ".cachehook/meta.json"
LOG_PATH = ".cachehook/log"

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


class Limits(NamedTuple):
    """Bounds on what reading an artifact may cost (a decompression bomb is a miss)."""

    max_total_bytes: int = 8 * 1024**3  # sum of the sizes of all regular files, meta and log too
    max_entries: int = 200_000  # tar members, meta and log included
    max_path_length: int = 4096  # UTF-8 bytes, for entry paths and link targets
    max_meta_bytes: int = 16 * 1024**2
    max_log_bytes: int = 256 * 1024**2


class Contents(NamedTuple):
    """What an artifact holds: its metadata, its log and its outputs in archive order.

    ``checksum`` is the xxh3-128 of the compressed artifact, as the local store names it.
    """

    meta: bytes
    log: bytes
    entries: tuple[Entry, ...]
    checksum: str = ""


class MemberData(Protocol):
    """The bytes of one file entry, read into a caller's buffer (0 once all are read)."""

    def readinto(self, buffer: memoryview, /) -> int: ...


class ArtifactReader:
    """One pass over an artifact; iterate :meth:`outputs` once, to its end.

    Args:
        raw: the compressed artifact, positioned at its start.
        limits: bounds on entry count, sizes and path lengths.
    """

    def __init__(self, raw: BinaryIO, limits: Limits) -> None:
        self._raw = raw
        self._limits = limits
        self.meta: bytes | None = None  # set before the first output is yielded
        self.log = b""
        self.entries: list[Entry] = []
        self._frame: FrameCheck | None = None

    def outputs(self) -> Iterator[tuple[Entry, MemberData | None]]:
        """Each output as it streams, with its data for a file (read it before the next).

        Raises:
            ArchiveError: the artifact is malformed, truncated, exceeds the limits or holds an
                entry no restore accepts; raised at the entry, or at the end for what only the
                whole artifact shows (so the last output yielded is no proof of anything).
        """
        seen: set[str] = set()
        limits = self._limits
        frame = self._frame = FrameCheck(self._raw)
        for tar, member, entry, zstd in _iter_members(frame, limits):
            if entry.path in seen:
                msg = f"artifact holds {show(entry.path)} twice"
                raise ArchiveError(msg)
            seen.add(entry.path)
            if self.meta is None:
                if entry.path != META_PATH or entry.kind != "file":
                    msg = f"artifact does not start with {META_PATH} (it has {show(entry.path)})"
                    raise ArchiveError(msg)
                self.meta = _read_member(tar, member, limits.max_meta_bytes)
            elif entry.path == LOG_PATH and entry.kind == "file":
                self.log = _read_member(tar, member, limits.max_log_bytes)
            elif is_reserved(entry.path):
                msg = f"artifact holds an unexpected entry {show(entry.path)}"
                raise ArchiveError(msg)
            else:
                self.entries.append(entry)
                data = _member_data(tar, member, zstd) if entry.kind == "file" else None
                yield entry, data
                if isinstance(data, _MemberData):
                    data.drain()  # what the caller left (an output it skips), the fast way
        if self.meta is None:
            msg = f"artifact has no {META_PATH}"
            raise ArchiveError(msg)
        check_tree(self.entries)
        self._checksum = frame.checksum()

    def whole_checksum(self) -> str | None:
        """After :meth:`outputs` failed: the checksum of the whole source, read to its end, to
        tell a damaged file from an intact one that is refused (None: not known)."""
        if self._frame is None:
            return None
        try:
            return self._frame.checksum_to_end()
        except OSError:
            return None

    def contents(self) -> Contents:
        """What the artifact holds, once :meth:`outputs` has run to its end."""
        assert self.meta is not None, "outputs() has not run to its end"
        return Contents(self.meta, self.log, tuple(self.entries), self._checksum)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Whatever a hostile or damaged artifact makes the decoders raise is a miss, not a crash."""
    try:
        yield
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        msg = f"{what}: {exc}"
        raise ArchiveError(msg) from exc


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
        msg = f"artifact has {problem} (at {show(header.name)})"
        raise ArchiveError(msg)


def _refuse_sparse(name: str) -> NoReturn:
    msg = f"entry {show(name)}: sparse files are not allowed"
    raise ArchiveError(msg)


def _iter_members(
    frame: FrameCheck, limits: Limits
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, Entry, FrameReader]]:
    reader = FrameReader(frame)
    with _TarStream.open(
        fileobj=cast("IO[bytes]", reader),
        mode="r|",
        tarinfo=_header_class(limits),
        encoding="utf-8",
        errors="strict",
        bufsize=TAR_BUFSIZE,
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
            yield tar, member, entry, reader
        end = tar.offset  # where the end-of-archive block starts
    reader.finish(end)


class _MemberData:
    """A file entry's bytes read past tarfile's stream (which joins and slices every read, most
    of a restore's CPU): what it has buffered first, then straight from the decompressor,
    keeping its position right so that it finds the next header where it expects it."""

    def __init__(self, stream: Any, zstd: FrameReader, size: int) -> None:
        self._stream = stream  # tarfile._Stream, positioned at the entry's data
        self._zstd = zstd
        self._remaining = size
        self._scratch: memoryview | None = None

    def readinto(self, buffer: memoryview, /) -> int:
        want = min(len(buffer), self._remaining)
        if not want:
            return 0
        stream = self._stream
        if stream.buf:
            count = min(want, len(stream.buf))
            buffer[:count] = stream.buf[:count]
            stream.buf = stream.buf[count:]
        else:
            count = self._zstd.readinto(buffer[:want])
            if not count:
                msg = "artifact is truncated: unexpected end of data"
                raise ArchiveError(msg)
        stream.pos += count
        self._remaining -= count
        return count

    def drain(self) -> None:
        if self._remaining and self._scratch is None:
            self._scratch = memoryview(bytearray(min(self._remaining, 1 << 20)))
        while self._remaining and self._scratch is not None:
            self.readinto(self._scratch)


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo, zstd: FrameReader) -> MemberData:
    stream = tar.fileobj
    buf = getattr(stream, "buf", None)
    if isinstance(buf, bytes) and getattr(stream, "pos", None) == member.offset_data:
        return _MemberData(stream, zstd, member.size)
    # tarfile's stream is not what it was in 3.11 to 3.13: its own (slower) reader, then.
    return cast("MemberData", tar.extractfile(member))


def _entry_of(member: tarfile.TarInfo, limits: Limits) -> Entry:
    path = member.name
    check_path(path, limits.max_path_length)
    kind = _KINDS.get(member.type)
    if kind is None or member.sparse is not None:
        what = _TYPE_NAMES.get(member.type, f"type {member.type!r}")
        msg = f"entry {show(path)}: {what} entries are not allowed"
        raise ArchiveError(msg)
    if member.size < 0:
        msg = f"entry {show(path)}: a negative size"
        raise ArchiveError(msg)
    if kind != "file" and member.size:
        msg = f"entry {show(path)}: a {kind} with a size"
        raise ArchiveError(msg)
    if kind == "symlink":
        check_link_target(path, member.linkname, limits.max_path_length)
    elif member.linkname:
        msg = f"entry {show(path)}: a {kind} with a link target"
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
