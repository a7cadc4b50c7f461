"""The task an uploaded artifact belongs to, when its metadata names it (for the dashboard).

A cachehook artifact is a zstd frame holding a tar stream whose first member is
``.cachehook/meta.json``; its ``"task"`` is the task's name. Only the first bytes of the upload
are read, only that one field is kept (never the command, its environment or any hash), and
anything else (turbo's artifacts, a truncated or odd stream) names no task.
"""

from __future__ import annotations

import io
import json
import tarfile

import zstandard

from cachehook.archive import META_PATH

__all__ = ["HEAD_BYTES", "task_of"]

HEAD_BYTES = 64 << 10  # of the upload: meta.json comes first and is small
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAX_META = 1 << 20
_MAX_TASK = 200


def task_of(head: bytes) -> str | None:
    """The ``task`` named by the artifact that starts with ``head``, or None."""
    if not head.startswith(_ZSTD_MAGIC):
        return None
    try:
        tar_head = zstandard.ZstdDecompressor().decompressobj().decompress(head)
        with tarfile.open(fileobj=io.BytesIO(tar_head), mode="r|") as tar:
            member = tar.next()
            if member is None or member.name != META_PATH or member.size > _MAX_META:
                return None
            handle = tar.extractfile(member)
            meta = json.loads(handle.read()) if handle is not None else None
    except (zstandard.ZstdError, tarfile.TarError, OSError, ValueError, EOFError):
        return None
    task = meta.get("task") if isinstance(meta, dict) else None
    if not isinstance(task, str) or not 0 < len(task) <= _MAX_TASK or not task.isprintable():
        return None
    return task
