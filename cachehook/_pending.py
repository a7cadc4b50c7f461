"""Pending entries: a remote hit kept in the store without opening its database (issue 11).

A remote hit downloads its artifact to a scratch file (``<cache dir>/tmp``) and restores it as
it reads. Keeping it with ``LocalStore.put`` cost the hit importing diskcache and sqlite3 and
creating or writing the SQLite database (~60 ms of a ~270 ms hit into an empty store). Instead
it keeps a *pending entry* in ``<store>/pending/``, with plain file operations::

    <name>.val   the artifact: the scratch file renamed (same file system; else the store)
    <name>.rec   "cachehook-pending 1 <xxh3-128 of what follows>", the STORED metadata (JSON,
                 what ``put`` would record), a newline, the log

and then the key's hit record (``_hits``), whose ``file`` is ``pending/<name>.val``, so that
the next local hit of that key reads it as any other, without SQLite. ``<name>`` is 32 random
lowercase hex digits, the one shape outside diskcache's value files a record may name.

Each file is written whole or not at all (the artifact by rename, the others through a
temporary name), in that order. A crash leaves an artifact without its ``.rec``, or a ``.rec``
no record names (both removed once older than the grace period), or a record that names a file
that is not there, which reads as no record (a miss; ``reclaim`` removes it). Never a false hit:
a hit checks the record, the artifact's size and, as it streams it, its checksum.

*Adoption* (``LocalStore``, each time a process opens the store, and ``reclaim``): under a lock,
each entry whose key's hit record still names it is moved into diskcache (``put(...,
move=True)``: a rename) and its record rewritten to the value file; an entry no record names
(a miss or a later remote hit replaced it) is removed. A hit that read the record just before
the move either has the artifact open already (the same file, the same bytes) or finds it gone
and takes the store's path, whose open adopts (and so waits for the lock) first.

A store holding ``MAX_PENDING`` entries takes no more: that hit is kept by ``LocalStore.put``,
which adopts them all, so pending entries never stay outside the size cap for long.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import TYPE_CHECKING

from cachehook import _hits
from cachehook.digests import digest_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook._hits import ArtifactMeta

__all__ = [
    "MAX_PENDING",
    "artifact_file",
    "keep",
    "names",
    "read_entry",
    "remove",
    "remove_all",
    "remove_stray",
]

MAX_PENDING = 32
_MAGIC = b"cachehook-pending 1 "
_RECORD = ".rec"
_ARTIFACT = ".val"
_TEMP_SUFFIX = ".tmp"


def artifact_file(name: str) -> str:
    """The artifact of the pending entry ``name``, relative to the store (what a record names)."""
    return f"{_hits.PENDING_DIR}/{name}{_ARTIFACT}"


def keep(
    store: Path, key: str, artifact: Path, *, meta: ArtifactMeta, log: bytes, checksum: str
) -> bool:
    """Keep the downloaded ``artifact`` of ``key`` as a pending entry (renamed, not copied).

    Args:
        store: the store's directory (created if need be).
        key: the cache key.
        artifact: the download, on the store's file system; gone afterwards if kept.
        meta: the artifact's metadata; the store's own fields are set here, as ``put`` does.
        log: the captured log.
        checksum: the xxh3-128 of ``artifact``, taken as it was read.

    Returns:
        False if the store must keep it instead (``LocalStore.put``): ``artifact`` is on another
        file system, ``key`` cannot name a record, or the store holds ``MAX_PENDING`` entries.

    Raises:
        OSError: it cannot be kept (full disk, permissions); nothing of it is left.
    """
    directory = store / _hits.PENDING_DIR
    if not _hits.is_key(key) or len(names(store)) >= MAX_PENDING:
        return False
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    name = os.urandom(16).hex()
    target = directory / f"{name}{_ARTIFACT}"
    try:
        os.rename(artifact, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    try:
        record = meta.replace(
            key=key,
            checksum=checksum,
            size=target.stat().st_size,
            log_checksum=digest_bytes(log),
            stored_at=time.time(),
        )
        body = record.to_json().encode() + b"\n" + log
        _write_whole(directory, f"{name}{_RECORD}", _hits.frame(body, _MAGIC))
        # Last: a record names only an entry that is complete.
        _hits.write_hit(store, record, artifact_file=artifact_file(name), log=log)
    except BaseException:
        remove(store, name)
        raise
    return True


def _write_whole(directory: Path, name: str, data: bytes) -> None:
    temp = directory / f".{name}.{os.getpid()}.{os.urandom(4).hex()}{_TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, directory / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def names(store: Path) -> list[str]:
    """The pending entries that have their ``.rec``, sorted by name."""
    found = []
    with contextlib.suppress(OSError), os.scandir(store / _hits.PENDING_DIR) as entries:
        for entry in entries:
            name = entry.name.removesuffix(_RECORD)
            if entry.name.endswith(_RECORD) and _hits.is_pending_name(name):
                found.append(name)
    return sorted(found)


def read_entry(store: Path, name: str) -> tuple[ArtifactMeta, bytes, float] | None:
    """The metadata, log and ``.rec`` mtime of the pending entry ``name``, if it reads whole
    (its digest, its metadata field by field, its log's checksum); None on any doubt."""
    path = store / _hits.PENDING_DIR / f"{name}{_RECORD}"
    try:
        with path.open("rb") as handle:
            data = handle.read()
            mtime = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None
    body = _hits.framed_body(data, _MAGIC)
    if body is None:
        return None
    header, newline, log = body.partition(b"\n")
    try:
        meta = _hits.parse_record(header)
    except ValueError:
        return None
    if not (newline and _hits.is_key(meta.key)) or digest_bytes(log) != meta.log_checksum:
        return None
    return meta, log, mtime


def remove(store: Path, name: str, *, key: str | None = None) -> None:
    """Remove the pending entry ``name``; with ``key``, also that key's record if it names it."""
    if key is not None and _hits.names_file(store, key, artifact_file(name)):
        _hits.remove_hit(store, key)
    directory = store / _hits.PENDING_DIR
    for suffix in (_ARTIFACT, _RECORD):
        with contextlib.suppress(OSError):
            os.unlink(directory / f"{name}{suffix}")


def remove_stray(store: Path, *, cutoff: float) -> int:
    """Remove artifacts without their ``.rec`` and temporary files older than ``cutoff`` (what
    a writer killed before it finished left); returns how many."""
    directory = store / _hits.PENDING_DIR
    recorded = set(names(store))
    removed = 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            stem = entry.name.removesuffix(_ARTIFACT)
            stray = entry.name.endswith(_TEMP_SUFFIX) or (
                entry.name.endswith(_ARTIFACT)
                and _hits.is_pending_name(stem)
                and stem not in recorded
            )
            with contextlib.suppress(OSError):
                if stray and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def remove_all(store: Path) -> int:
    """Remove every pending entry and leftover (``cache clear``, a replaced database)."""
    removed = 0
    for name in names(store):
        remove(store, name)
        removed += 1
    return removed + remove_stray(store, cutoff=float("inf"))
