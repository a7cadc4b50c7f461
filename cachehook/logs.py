"""A task's log: stdout and stderr chunks in the order they came, replayable to both streams.

Encoding: frames of one stream byte (1 stdout, 2 stderr), a 4-byte big-endian length, the data.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # not typing's: a memoised replay decodes logs and must not import it
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import BinaryIO

__all__ = ["STDERR", "STDOUT", "LogRecorder", "decode", "encode_frames", "replay"]

STDOUT = 1
STDERR = 2
_HEADER = struct.Struct(">BI")


class LogRecorder:
    """Collects chunks from several threads, keeping their arrival order."""

    def __init__(self) -> None:
        import threading  # only when recording: a memoised replay decodes logs without it

        self._parts: list[bytes] = []
        self._lock = threading.Lock()
        self.has_output = False
        # A Python task's return value as JSON text, kept in meta["value"] (issue 5).
        self.value: str | None = None

    def add(self, stream: int, data: bytes) -> None:
        with self._lock:
            self._parts.append(_HEADER.pack(stream, len(data)))
            self._parts.append(data)
            self.has_output = True

    def getvalue(self) -> bytes:
        with self._lock:
            return b"".join(self._parts)


def encode_frames(frames: Iterable[tuple[int, bytes]]) -> bytes:
    """The log of ``(stream, chunk)`` pairs, as ``LogRecorder`` records it."""
    return b"".join(_HEADER.pack(stream, len(chunk)) + chunk for stream, chunk in frames)


def decode(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(stream, chunk)`` pairs; raises ValueError on a malformed log."""
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            msg = "truncated log frame header"
            raise ValueError(msg)
        stream, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        if stream not in (STDOUT, STDERR) or offset + size > len(data):
            msg = "malformed log frame"
            raise ValueError(msg)
        yield stream, data[offset : offset + size]
        offset += size


def replay(data: bytes, *, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """Write a recorded log back to the two streams, in its original order."""
    for stream, chunk in decode(data):
        target = stdout if stream == STDOUT else stderr
        target.write(chunk)
        target.flush()
