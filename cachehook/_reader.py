"""The hardened reader: one pass over an artifact, each entry checked as it streams.

An artifact is untrusted input (DESIGN, "What stays true"). :class:`ArtifactReader` walks its one
zstd frame and the tar stream inside in a single pass: every header is parsed by ``_ustar`` (no
tarfile: extensions are refused before anything acts on them), every entry is checked as it
arrives (path, kind, size, limits, duplicates, reserved
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
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import zstandard

from cachehook._entries import (
    Entry,
    check_link_target,
    check_path,
    check_tree,
    is_reserved,
    show,
)
from cachehook._frame import FrameCheck, FrameReader
from cachehook._ustar import (
    BLOCK,
    DIR,
    FILE,
    PAX,
    REFUSED_HEADERS,
    SYMLINK,
    TYPE_NAMES,
    Header,
    is_end,
    parse_header,
    parse_pax,
)
from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import BinaryIO

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
    FILE: "file",
    DIR: "dir",
    SYMLINK: "symlink",
}


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
        zstd = FrameReader(frame)
        for entry in _iter_members(zstd, limits):
            if entry.path in seen:
                msg = f"artifact holds {show(entry.path)} twice"
                raise ArchiveError(msg)
            seen.add(entry.path)
            if self.meta is None:
                if entry.path != META_PATH or entry.kind != "file":
                    msg = f"artifact does not start with {META_PATH} (it has {show(entry.path)})"
                    raise ArchiveError(msg)
                self.meta = _read_member(zstd, entry, limits.max_meta_bytes)
            elif entry.path == LOG_PATH and entry.kind == "file":
                self.log = _read_member(zstd, entry, limits.max_log_bytes)
            elif is_reserved(entry.path):
                msg = f"artifact holds an unexpected entry {show(entry.path)}"
                raise ArchiveError(msg)
            else:
                self.entries.append(entry)
                data = _MemberData(zstd, entry.size) if entry.kind == "file" else None
                yield entry, data
                if data is not None:
                    data.drain()  # what the caller left (an output it skips)
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
    except (zstandard.ZstdError, EOFError, OSError, ValueError) as exc:
        msg = f"{what}: {exc}"
        raise ArchiveError(msg) from exc


def _iter_members(zstd: FrameReader, limits: Limits) -> Iterator[Entry]:
    # Each entry is yielded with the stream at its data; the caller reads all of it before
    # asking for the next, which is found after the padding to a whole block.
    max_extended = 2 * limits.max_path_length + 4096
    count = total = 0
    while not is_end(block := zstd.read(BLOCK)):
        entry = _entry_of(_next_header(zstd, block, max_extended), limits)
        count += 1
        total += entry.size
        if count > limits.max_entries:
            msg = f"artifact has more than {limits.max_entries} entries"
            raise ArchiveError(msg)
        if total > limits.max_total_bytes:
            msg = f"artifact expands to more than {limits.max_total_bytes} bytes"
            raise ArchiveError(msg)
        yield entry
        zstd.skip(-entry.size % BLOCK)
    zstd.finish(len(block))


def _next_header(zstd: FrameReader, block: bytes, max_extended: int) -> Header:
    """The header starting with ``block``, a PAX header's records applied to the one after."""
    header = _screened(parse_header(block))
    if header.type != PAX:
        return header
    if header.size > max_extended:
        msg = f"artifact has a PAX header of {header.size} bytes (at {show(header.name)})"
        raise ArchiveError(msg)
    records = zstd.read(header.size)
    if len(records) != header.size:
        msg = "artifact is truncated inside a PAX header"
        raise ArchiveError(msg)
    zstd.skip(-header.size % BLOCK)
    following = zstd.read(BLOCK)
    if is_end(following):
        msg = "artifact is truncated or corrupt: a PAX header without its entry"
        raise ArchiveError(msg)
    entry = _screened(parse_header(following))
    if entry.type == PAX:
        msg = f"artifact has two PAX headers in a row (at {show(entry.name)})"
        raise ArchiveError(msg)
    return parse_pax(records, entry)


def _screened(header: Header) -> Header:
    refused = REFUSED_HEADERS.get(header.type)
    if refused is not None:
        msg = f"artifact has a {refused} header (at {show(header.name)})"
        raise ArchiveError(msg)
    return header


class _MemberData:
    """A file entry's bytes, straight from the decompressor into the caller's buffer."""

    def __init__(self, zstd: FrameReader, size: int) -> None:
        self._zstd = zstd
        self._remaining = size

    def readinto(self, buffer: memoryview, /) -> int:
        want = min(len(buffer), self._remaining)
        if not want:
            return 0
        count = self._zstd.readinto(buffer if want == len(buffer) else buffer[:want])
        if not count:
            msg = "artifact is truncated: unexpected end of data"
            raise ArchiveError(msg)
        self._remaining -= count
        return count

    def drain(self) -> None:
        if self._remaining:
            scratch = memoryview(bytearray(min(self._remaining, 1 << 20)))
            while self.readinto(scratch):
                pass


def _entry_of(header: Header, limits: Limits) -> Entry:
    path = header.name
    check_path(path, limits.max_path_length)
    kind = _KINDS.get(header.type)
    if kind is None:
        what = TYPE_NAMES.get(header.type, f"type {header.type!r}")
        msg = f"entry {show(path)}: {what} entries are not allowed"
        raise ArchiveError(msg)
    if kind != "file" and header.size:
        msg = f"entry {show(path)}: a {kind} with a size"
        raise ArchiveError(msg)
    if kind == "symlink":
        check_link_target(path, header.linkname, limits.max_path_length)
    elif header.linkname:
        msg = f"entry {show(path)}: a {kind} with a link target"
        raise ArchiveError(msg)
    return Entry(path, kind, header.mode & 0o7777, header.size, header.linkname)


def _read_member(zstd: FrameReader, entry: Entry, limit: int) -> bytes:
    if entry.size > limit:
        msg = f"{entry.path} is larger than {limit} bytes"
        raise ArchiveError(msg)
    data = zstd.read(entry.size)
    if len(data) != entry.size:
        msg = f"artifact is truncated inside {entry.path}"
        raise ArchiveError(msg)
    return data
