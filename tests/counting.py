"""Counting what a restore reads (issue 11): zstd streams decompressed, files read by digest.

``count_decompression`` replaces zstd's decompressor with one that counts the streams it
decompresses and the compressed bytes they are fed; ``log_digest_reads`` records the files read
through ``os.read``, which is how ``hashing`` (and so ``store``) digests a file: a second read of
an artifact, or a restored output hashed again, shows there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import zstandard

if TYPE_CHECKING:
    import pytest

__all__ = ["CountingDecompressor", "count_decompression", "log_digest_reads"]


class CountingDecompressor:
    """zstd's decompressor, counting each stream it decompresses and the bytes it is fed."""

    streams = 0
    fed = 0
    real = zstandard.ZstdDecompressor

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._real = self.real(*args, **kwargs)  # type: ignore[arg-type]

    def stream_reader(self, source: object, *args: object, **kwargs: object) -> object:
        CountingDecompressor.streams += 1
        return self._real.stream_reader(_Fed(source), *args, **kwargs)  # type: ignore[arg-type]

    def decompress(self, *args: object, **kwargs: object) -> bytes:
        raise AssertionError("an artifact is only ever streamed")

    def decompressobj(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("an artifact is only ever streamed")


class _Fed:
    def __init__(self, source: object) -> None:
        self._read = source.read  # type: ignore[attr-defined]

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._read(size)
        CountingDecompressor.fed += len(data)
        return data


def count_decompression(monkeypatch: pytest.MonkeyPatch) -> type[CountingDecompressor]:
    """Count every zstd stream decompressed from now on (and refuse one-shot decompression)."""
    CountingDecompressor.streams = CountingDecompressor.fed = 0
    monkeypatch.setattr(zstandard, "ZstdDecompressor", CountingDecompressor)
    return CountingDecompressor


def log_digest_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real path of each file ``os.read`` reads from now on, once per file."""
    seen: list[str] = []
    real_read = os.read

    def read(fd: int, size: int) -> bytes:
        try:
            path = os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            path = f"fd {fd}"
        if path not in seen:
            seen.append(path)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", read)
    return seen
