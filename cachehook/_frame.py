"""The compressed side of an artifact: one zstd frame, followed to its very end.

zstandard's ``stream_reader`` ends quietly when a frame is cut short and reads past it if asked,
so :class:`FrameCheck` walks the block headers (RFC 8878, 3.1.1.2) of what it passes on, to
know that the whole frame, checksum included, was read and nothing follows; it also takes the
xxh3-128 of every byte (the store's checksum, as ``hashing.digest_file`` computes it, without a
second read). :class:`FrameReader` is the decompressed side, for tarfile: bounded reads, file
data straight into a caller's buffer, and a checked end (only tar's zero blocks, then the frame's
end and zstd's content checksum).
"""

from __future__ import annotations

from typing import IO, BinaryIO, cast

import xxhash  # streamed: hashing.digest_file reads a whole file
import zstandard

from cachehook.errors import ArchiveError

__all__ = ["FrameCheck", "FrameReader"]

_MAX_WINDOW = 1 << 27  # zstd's own default decoder limit (128 MiB), stated so it is never raised
_READ_SIZE = 1 << 17  # one zstd block at most
_STREAM_READ_SIZE = 1 << 20  # what zstd asks the file for: fewer, larger reads (issue 11)
_MAX_PADDING = 2 * 20 * 512  # zero blocks tarfile writes after the last entry: two records
_MIN_PADDING = 2 * 512  # the two zero blocks that end a tar archive
_MAX_FRAME_HEADER = 18


class FrameCheck:
    """The compressed side of an artifact, passed to zstd while following the frame's blocks.

    zstandard's ``stream_reader`` ends quietly when a frame is cut short, so this walks the block
    headers (RFC 8878, 3.1.1.2) to know whether the whole frame, checksum included, was read.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hasher = xxhash.xxh3_128()
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
        self._hasher.update(data)
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

    def checksum_to_end(self) -> str:
        """The xxh3-128 of the whole source, reading what is left (after a failed read)."""
        self._hasher.update(self._pending)
        self._pending = b""
        while chunk := self._raw.read(1 << 20):
            self._hasher.update(chunk)
        return self._hasher.hexdigest()

    def checksum(self) -> str:
        """The xxh3-128 of every byte read, which after :meth:`check_end` is the artifact."""
        return self._hasher.hexdigest()


class FrameReader:
    """One zstd frame, decompressed: exact reads, reads into a buffer, and a checked end."""

    def __init__(self, frame: FrameCheck) -> None:
        self._frame = frame
        decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
        self._stream = decompressor.stream_reader(
            cast("IO[bytes]", self._frame), read_size=_STREAM_READ_SIZE, read_across_frames=False
        )

    def readinto(self, buffer: memoryview) -> int:
        """File data, straight into ``buffer`` (0: the frame has ended)."""
        count: int = self._stream.readinto(buffer)
        return count

    def read(self, size: int) -> bytes:
        """``size`` bytes, or fewer only if the frame ends first."""
        chunk: bytes = self._stream.read(size)
        if len(chunk) == size or not chunk:
            return chunk
        parts = [chunk]
        got = len(chunk)
        while got < size and (more := self._stream.read(size - got)):
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def skip(self, size: int) -> None:
        """Pass over ``size`` bytes (a block's padding); a short stream shows at the next read."""
        if size:
            self.read(size)

    def finish(self, padding: int) -> None:
        """Check that only zeros follow the ``padding`` zero bytes read (tar's end blocks), up
        to the frame's end, and that the frame is whole."""
        is_clean = True
        while is_clean and padding <= _MAX_PADDING and (chunk := self._stream.read(_READ_SIZE)):
            padding += len(chunk)
            is_clean = chunk.count(0) == len(chunk)
        if not is_clean or padding > _MAX_PADDING:
            msg = "artifact has data after the end of its tar archive"
            raise ArchiveError(msg)
        if padding < _MIN_PADDING:
            msg = "artifact is truncated (no end-of-archive blocks)"
            raise ArchiveError(msg)
        self._frame.check_end()
