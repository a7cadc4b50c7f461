"""Hit records: what a local hit reads instead of the store's SQLite database (issue 11).

``store.LocalStore`` (diskcache) stays the store of record: writes, the size cap, eviction and
the ``cache`` subcommands. When it keeps an artifact it also writes ``<store>/hits/<key>``, one
plain file that a hit reads with a single ``open``, so a hit imports neither diskcache nor
sqlite3 and issues no SQL::

    cachehook-hit 1 <xxh3-128 of everything after this line>
    {"checksum": ..., "file": "ab/cd/....val", "key": ..., "log_checksum": ..., "outputs": ...}
    <the log bytes>

``file`` is the artifact's value file inside the store (diskcache keeps every artifact as a
file). The record is written to a temporary name and renamed into place, so a reader sees a
whole record or the previous one; it is not fsynced, because a record cut short by a crash fails
its digest. Nothing in a record is trusted: a wrong version, digest or key, malformed metadata,
a log that does not match its checksum, or an artifact file that is missing or has another size
reads as no record at all, and the caller falls back to the store, which evicts properly. A hit
touches its record's mtime; the store's least-recently-used order takes the newer of that and
diskcache's own access time.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from cachehook.hashing import digest_bytes

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from pathlib import Path

__all__ = [
    "ArtifactMeta",
    "Hit",
    "OutputEntry",
    "blob_checksums",
    "read_hit",
    "record_path",
    "remove_all",
    "remove_hit",
    "remove_stray",
    "touch_hit",
    "used_times",
    "write_hit",
]

_MAGIC = b"cachehook-hit 1 "
_DIGEST_LENGTH = 32
_DIR = "hits"
_TEMP_SUFFIX = ".tmp"
_MAX_KEY = 128


class OutputEntry(NamedTuple):
    """One output an artifact holds: its digest, executable bit and mode (None before issue 10)."""

    path: str
    digest: str
    executable: bool
    mode: int | None


class ArtifactMeta(NamedTuple):
    """What a local restore needs from an artifact's metadata, checked field by field."""

    key: str
    checksum: str
    size: int
    log_checksum: str
    duration_ms: int
    outputs: tuple[OutputEntry, ...]
    value: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ArtifactMeta:
        """The fields of a store record (``LocalStore.get_meta``) or a hit record's header.

        Raises:
            ValueError: a field is missing or has the wrong type.
        """
        key, checksum, log_checksum = (record.get(f) for f in ("key", "checksum", "log_checksum"))
        size, duration = record.get("size"), record.get("duration_ms", 0)
        value = record.get("value")
        if not (
            isinstance(key, str) and isinstance(checksum, str) and isinstance(log_checksum, str)
        ):
            msg = "the record names no key, checksum or log checksum"
            raise ValueError(msg)
        if not (
            _is_count(size) and _is_count(duration) and (value is None or isinstance(value, str))
        ):
            msg = "the record has a malformed size, duration or value"
            raise ValueError(msg)
        outputs = record.get("outputs", [])
        if not isinstance(outputs, list):
            msg = "the record lists malformed outputs"
            raise ValueError(msg)
        return cls(key, checksum, size, log_checksum, duration, _outputs(outputs), value)

    def to_record(self) -> dict[str, Any]:
        """The fields as the store's records spell them (what the runner's helpers read)."""
        record: dict[str, Any] = {
            "key": self.key,
            "checksum": self.checksum,
            "size": self.size,
            "log_checksum": self.log_checksum,
            "duration_ms": self.duration_ms,
            "outputs": [
                {"path": o.path, "digest": o.digest, "executable": o.executable}
                | ({} if o.mode is None else {"mode": o.mode})
                for o in self.outputs
            ],
        }
        if self.value is not None:
            record["value"] = self.value
        return record


class Hit(NamedTuple):
    """A hit record that passed every check: the metadata, the artifact's file and the log."""

    meta: ArtifactMeta
    artifact: Path
    log: bytes


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _outputs(entries: list[Any]) -> tuple[OutputEntry, ...]:
    outputs = []
    for entry in entries:
        if not isinstance(entry, dict):
            msg = "the record lists malformed outputs"
            raise ValueError(msg)
        path, digest, executable = entry.get("path"), entry.get("digest"), entry.get("executable")
        mode = entry.get("mode")
        if not (
            isinstance(path, str)
            and isinstance(digest, str)
            and isinstance(executable, bool)
            and (mode is None or _is_count(mode))
        ):
            msg = "the record lists malformed outputs"
            raise ValueError(msg)
        outputs.append(OutputEntry(path, digest, executable, mode))
    return tuple(outputs)


def _is_key(key: str) -> bool:
    """A key that is a plain file name (``hashing`` keys are 32 hex digits; tests use others)."""
    return (
        0 < len(key) <= _MAX_KEY
        and key.isascii()
        and key.replace("-", "").replace("_", "").isalnum()
    )


def _is_value_file(name: object) -> bool:
    """diskcache's value-file name inside the store: ``ab/cd/<hex>.val``."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    return (
        len(parts) == 3
        and len(parts[0]) == len(parts[1]) == 2
        and parts[2].endswith(".val")
        and all(p.isascii() and p.isalnum() for p in (parts[0], parts[1], parts[2][:-4]))
    )


def _path(store: Path, key: str) -> Path:
    return store / _DIR / key


def record_path(store: Path, key: str) -> Path:
    """Where the hit record of ``key`` lives (``cachehook._memo`` watches it)."""
    return _path(store, key)


def write_hit(store: Path, meta: ArtifactMeta, *, artifact_file: str, log: bytes) -> None:
    """Write the hit record of ``meta.key`` (owner-only), replacing any earlier one atomically.

    Args:
        store: the store's directory.
        meta: the artifact's metadata, as the store just recorded it.
        artifact_file: its value file, relative to ``store``.
        log: the log whose checksum ``meta`` names.

    Raises:
        OSError: the record cannot be written.
        ValueError: ``meta.key`` is not a plain file name, or ``artifact_file`` is not a value file.
    """
    if not (_is_key(meta.key) and _is_value_file(artifact_file)):
        msg = f"no hit record for {meta.key!r} at {artifact_file!r}"
        raise ValueError(msg)
    header = {**meta.to_record(), "file": artifact_file}
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + log
    directory = store / _DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    temp = directory / f".{meta.key}.{os.getpid()}.{os.urandom(4).hex()}{_TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_MAGIC + digest_bytes(body).encode() + b"\n" + body)
        os.replace(temp, directory / meta.key)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_hit(store: Path, key: str) -> Hit | None:
    """The hit record of ``key`` if every check passes; None on any doubt (see the module)."""
    if not _is_key(key):
        return None
    try:
        data = _path(store, key).read_bytes()
    except OSError:
        return None
    parsed = _parse(data)
    if parsed is None:
        return None
    meta, artifact_file, log = parsed
    if meta.key != key or digest_bytes(log) != meta.log_checksum:
        return None
    artifact = store / artifact_file
    try:
        found = os.stat(artifact)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or found.st_size != meta.size:
        return None
    return Hit(meta, artifact, log)


def _parse(data: bytes) -> tuple[ArtifactMeta, str, bytes] | None:
    start = len(_MAGIC) + _DIGEST_LENGTH + 1
    if not data.startswith(_MAGIC) or data[start - 1 : start] != b"\n":
        return None
    body = data[start:]
    if digest_bytes(body).encode() != data[len(_MAGIC) : start - 1]:
        return None
    end = body.find(b"\n")
    try:
        header = json.loads(body[:end]) if end >= 0 else None
        if not isinstance(header, dict) or not _is_value_file(header.get("file")):
            return None
        meta = ArtifactMeta.from_record(header)
    except (ValueError, UnicodeDecodeError):
        return None
    return meta, header["file"], body[end + 1 :]


def blob_checksums(store: Path, key: str) -> tuple[str, str] | None:
    """The artifact and log checksums the hit record of ``key`` names, if it reads whole."""
    try:
        data = _path(store, key).read_bytes()
    except OSError:
        return None
    parsed = _parse(data)
    return None if parsed is None else (parsed[0].checksum, parsed[0].log_checksum)


def touch_hit(store: Path, key: str) -> None:
    """Mark the record of ``key`` used now (its mtime), for the store's LRU order."""
    with contextlib.suppress(OSError):
        os.utime(_path(store, key))


def remove_hit(store: Path, key: str, *, checksum: str | None = None) -> None:
    """Remove the record of ``key``; with ``checksum``, only one that names that artifact or
    does not read whole.

    Removing a record a concurrent store has just replaced only costs that key's next hit the
    store's own path, which writes the record again.
    """
    if not _is_key(key):
        return
    if checksum is not None:
        names = blob_checksums(store, key)
        if names is not None and names[0] != checksum:
            return
    with contextlib.suppress(OSError):
        _path(store, key).unlink()


def used_times(store: Path) -> dict[str, float]:
    """When each key's record was last written or hit (mtime), by key."""
    times: dict[str, float] = {}
    with contextlib.suppress(OSError), os.scandir(store / _DIR) as entries:
        for entry in entries:
            if _is_key(entry.name):
                with contextlib.suppress(OSError):
                    times[entry.name] = entry.stat(follow_symlinks=False).st_mtime
    return times


def remove_stray(store: Path, *, keep: Collection[str], cutoff: float) -> int:
    """Remove records of keys not in ``keep`` and temporary files older than ``cutoff``.

    Returns:
        How many files were removed.
    """
    removed = 0
    with contextlib.suppress(OSError), os.scandir(store / _DIR) as entries:
        for entry in entries:
            stray = entry.name.endswith(_TEMP_SUFFIX) or (
                _is_key(entry.name) and entry.name not in keep
            )
            with contextlib.suppress(OSError):
                if stray and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def remove_all(store: Path) -> int:
    """Remove every hit record (``cache clear``, a replaced database); returns how many."""
    return remove_stray(store, keep=(), cutoff=float("inf"))
