"""Hit records: what a local hit reads instead of the store's SQLite database (issue 11), and
``ArtifactMeta``, the one checked shape of an artifact's metadata.

Over 400 lines on purpose: ``ArtifactMeta`` is what a hit record holds, and every hit imports
this module; a module of its own would be one more import on every hit.

``ArtifactMeta.from_record`` is where metadata enters (a store record, a hit record's header,
an artifact's ``meta.json``, a record ``cachehook serve`` kept): each field is checked, and a
record that is malformed (a field missing, of the wrong type, a negative size, a digest that is
not 32 hex digits, an output path that leaves the project) raises ``ValueError``, which every
caller turns into a miss. ``to_record`` is its one serialisation; the format is the one earlier
versions wrote and read.

``store.LocalStore`` (diskcache) stays the store of record: writes, the size cap, eviction and
the ``cache`` subcommands. When it keeps an artifact it also writes ``<store>/hits/<key>``, one
plain file that a hit reads with a single ``open``, so a hit imports neither diskcache nor
sqlite3 and issues no SQL::

    cachehook-hit 1 <xxh3-128 of everything after this line>
    {"checksum": ..., "file": "ab/cd/....val", "key": ..., "log_checksum": ..., "outputs": ...}
    <the log bytes>

``file`` is the artifact's value file inside the store (diskcache keeps every artifact as a
file), or a remote hit's artifact kept as a pending entry (``pending/<32 hex>.val``, see
``_pending``) until a store adopts it; no other shape is read or written. The record is
written to a temporary name and renamed into place, so a reader sees a whole record or the
previous one; it is not fsynced, because a record cut short by a crash fails its digest.
Nothing in a record is trusted: a wrong version, digest or key, malformed metadata,
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

from cachehook.digests import digest_bytes, is_digest

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path
    from typing import NoReturn

__all__ = [
    "ARTIFACT",
    "DATABASE",
    "HIT",
    "PENDING_DIR",
    "STORED",
    "ArtifactMeta",
    "Hit",
    "OutputEntry",
    "blob_checksums",
    "is_key",
    "is_pending_name",
    "names_file",
    "parse_record",
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
# A remote hit kept without SQLite (``_pending``): ``pending/<name>.val``, named here so that a
# record never names anything else outside diskcache's value files.
PENDING_DIR = "pending"
_PENDING_NAME = 32
_LOWER_HEX = frozenset("0123456789abcdef")
# diskcache's database in the store directory (``store``; ``_restore`` spells it too).
DATABASE = "cache.db"


# What ``ArtifactMeta.from_record`` and ``to_record`` read and write: a store record, a hit
# record's header, an artifact's own ``meta.json``.
STORED, HIT, ARTIFACT = "stored", "hit", "artifact"


class OutputEntry(NamedTuple):
    """One output an artifact holds: its digest, executable bit and mode (None before issue 10)."""

    path: str
    digest: str
    executable: bool
    mode: int | None


class ArtifactMeta:
    """An artifact's metadata: the one shape every reader and writer of a record uses (issue 11).

    Immutable (``replace`` makes a changed copy; ``manifest`` and ``extra`` are JSON as read,
    not to be changed in place). A ``__slots__`` class rather than a NamedTuple: building a
    16-field NamedTuple class compiles its ``__new__`` and each string annotation, +0.4 ms of
    every hit's import of this module (``-X importtime``, issue 11).

    Built by code (``_publish``, ``cachehook serve``) with what it knows; the store sets its own
    fields (``key``, ``checksum``, ``size``, ``log_checksum``, ``stored_at``) when it keeps the
    artifact. Anything read back (a store record, a hit record, an artifact's ``meta.json``, a
    record the server kept) goes through ``from_record`` first, which refuses a malformed one.
    ``to_record`` is its one serialisation.

    Attributes:
        key: the cache key (the store's ``v8/<team>/<hash>`` for the server).
        checksum: xxh3-128 (32 hex digits) of the artifact file; "" until stored.
        size: the artifact file's bytes; 0 until stored.
        log_checksum: xxh3-128 of the captured log; None when none is kept (the server's).
        duration_ms: what the task took to run (what a hit saves).
        outputs: the files the artifact holds, in archive order.
        value: an in-process task's return value (``@cached``).
        stored_at: when the store kept it (epoch seconds).
        project: the project that stored it locally (``cache ls``), never in ``meta.json``.
        task: the task's name, if it has one.
        command: the command that made it.
        manifest: ``hashing.Manifest.to_json()`` of its key, as JSON (checked by its reader,
            ``Manifest.from_json``: ``explain`` reads it, a hit never does).
        tag, sha, dirty_hash: what a Remote Cache API upload declared (``cachehook serve``).
        extra: every other field of the record, kept as read so that it round-trips.
    """

    __slots__ = (
        "checksum",
        "command",
        "dirty_hash",
        "duration_ms",
        "extra",
        "key",
        "log_checksum",
        "manifest",
        "outputs",
        "project",
        "sha",
        "size",
        "stored_at",
        "tag",
        "task",
        "value",
    )

    key: str
    checksum: str
    size: int
    log_checksum: str | None
    duration_ms: int
    outputs: tuple[OutputEntry, ...]
    value: str | None
    stored_at: float | None
    project: str | None
    task: str | None
    command: tuple[str, ...]
    manifest: dict[str, Any] | None
    tag: str | None
    sha: str | None
    dirty_hash: str | None
    extra: dict[str, Any] | None

    def __init__(
        self,
        *,
        key: str = "",
        checksum: str = "",
        size: int = 0,
        log_checksum: str | None = None,
        duration_ms: int = 0,
        outputs: tuple[OutputEntry, ...] = (),
        value: str | None = None,
        stored_at: float | None = None,
        project: str | None = None,
        task: str | None = None,
        command: tuple[str, ...] = (),
        manifest: dict[str, Any] | None = None,
        tag: str | None = None,
        sha: str | None = None,
        dirty_hash: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "key", key)
        init(self, "checksum", checksum)
        init(self, "size", size)
        init(self, "log_checksum", log_checksum)
        init(self, "duration_ms", duration_ms)
        init(self, "outputs", outputs)
        init(self, "value", value)
        init(self, "stored_at", stored_at)
        init(self, "project", project)
        init(self, "task", task)
        init(self, "command", command)
        init(self, "manifest", manifest)
        init(self, "tag", tag)
        init(self, "sha", sha)
        init(self, "dirty_hash", dirty_hash)
        init(self, "extra", extra)

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"ArtifactMeta is immutable: replace({name}=...) makes a changed copy"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> None:
        msg = "ArtifactMeta is immutable"
        raise AttributeError(msg)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArtifactMeta):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # it holds dicts

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"ArtifactMeta({fields})"

    def replace(self, **changes: Any) -> ArtifactMeta:
        """A copy with ``changes`` (field names as keywords)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        return ArtifactMeta(**(values | changes))

    @classmethod
    def from_record(cls, record: object, *, part: str = STORED) -> ArtifactMeta:
        """The metadata a record holds, each field checked (nothing read back is trusted).

        Args:
            record: the parsed JSON of a store record (``STORED``), a hit record's header
                (``HIT``), or an artifact's ``meta.json`` (``ARTIFACT``: no store fields).
            part: which of those it is; a store or hit record must name its checksum, size
                and (a hit record) its log checksum.

        Raises:
            ValueError: a field is missing, has the wrong type, or an impossible value; the
                message names it.
        """
        if not isinstance(record, dict):
            msg = "the record is not a JSON object"
            raise ValueError(msg)
        get = record.get
        stored = part != ARTIFACT
        duration = get("duration_ms", get("duration", 0))  # ``duration``: a server's record
        meta = cls(
            key=_text(get("key"), "key", empty=False),
            checksum=_digest(get("checksum"), "checksum") if stored else "",
            size=_count(get("size"), "size") if stored else 0,
            log_checksum=_digest(get("log_checksum"), "log_checksum", optional=part != HIT),
            duration_ms=_count(duration, "duration_ms"),
            outputs=_outputs(get("outputs", [] if stored else None)),
            value=_text(get("value"), "value", optional=True),
            stored_at=_stamp(get("stored_at")),
            project=_text(get("project"), "project", optional=True),
            task=_text(get("task"), "task", optional=True),
            command=_command(get("command", [])),
            manifest=_object(get("manifest"), "manifest"),
            tag=_text(get("tag"), "tag", optional=True),
            sha=_text(get("sha"), "sha", optional=True),
            dirty_hash=_text(get("dirty_hash"), "dirty_hash", optional=True),
        )
        extra = {name: value for name, value in record.items() if name not in _FIELDS}
        return meta.replace(extra=extra) if extra else meta

    def to_record(self, *, part: str = STORED) -> dict[str, Any]:
        """The record as JSON values: what ``from_record`` reads back (``part`` as there).

        ``ARTIFACT`` (``meta.json``) leaves out what only the store knows; ``HIT`` keeps only
        what a hit reads, so that a hit does not parse a manifest.
        """
        record: dict[str, Any] = {} if self.extra is None or part == HIT else dict(self.extra)
        values: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        values["outputs"] = [
            {"path": o.path, "digest": o.digest, "executable": o.executable}
            | ({} if o.mode is None else {"mode": o.mode})
            for o in self.outputs
        ]
        values["command"] = list(self.command)
        fields = _HIT_FIELDS if part == HIT else _FIELDS
        for name in fields - _STORE_FIELDS if part == ARTIFACT else fields:
            if values[name] is not None:
                record[name] = values[name]
        return record

    def to_json(self, *, part: str = STORED) -> str:
        """``to_record`` as the JSON text every record is written as (keys sorted)."""
        return json.dumps(self.to_record(part=part), sort_keys=True, separators=(",", ":"))


_STORE_FIELDS = frozenset({"checksum", "size", "log_checksum", "stored_at", "project"})
_FIELDS = frozenset(ArtifactMeta.__slots__) - {"extra"}
_HIT_FIELDS = frozenset(
    {"key", "checksum", "size", "log_checksum", "duration_ms", "outputs", "value"}
)


def parse_record(text: str | bytes, *, part: str = STORED) -> ArtifactMeta:
    """``ArtifactMeta.from_record`` of a record's JSON text.

    Raises:
        ValueError: it is not JSON (or nested too deep), or ``from_record`` refuses it.
    """
    try:
        record = json.loads(text)
    except RecursionError:  # the C decoder counts its depth against the recursion limit
        msg = "the record is nested too deeply"
        raise ValueError(msg) from None
    except (TypeError, ValueError) as exc:
        msg = f"the record is not JSON ({exc})"
        raise ValueError(msg) from None
    return ArtifactMeta.from_record(record, part=part)


class Hit(NamedTuple):
    """A hit record that passed every check: the metadata, the artifact's file and the log."""

    meta: ArtifactMeta
    artifact: Path
    log: bytes


def _refuse(field: str, value: object, wanted: str) -> NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
    msg = f"its {field!r} must be {wanted}, not {shown}"
    raise ValueError(msg)


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _count(value: object, field: str) -> int:
    if not _is_count(value):
        _refuse(field, value, "a whole number of at least 0")
    return value


def _text(value: object, field: str, *, optional: bool = False, empty: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not (empty or value):
        _refuse(field, value, "a string" if empty else "a non-empty string")
    return value


def _digest(value: object, field: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not is_digest(value):
        _refuse(field, value, "an xxh3-128 digest (32 hex digits)")
    return value


def _stamp(value: object) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value < 1e11:  # type: ignore[operator]
        _refuse("stored_at", value, "seconds since the epoch")
    return float(value)  # type: ignore[arg-type]


def _command(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        _refuse("command", value, "a list of strings")
    return tuple(value)


def _object(value: object, field: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        _refuse(field, value, "an object")
    return value


def _is_output_path(path: object) -> TypeGuard[str]:
    """A project-relative POSIX path that stays inside the project."""
    return (
        isinstance(path, str)
        and bool(path)
        and "\0" not in path
        and not path.startswith("/")
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def _outputs(entries: object) -> tuple[OutputEntry, ...]:
    if not isinstance(entries, list):
        _refuse("outputs", entries, "a list")
    outputs = []
    for entry in entries:
        if not isinstance(entry, dict):
            _refuse("outputs", entry, "a list of objects")
        path, digest, executable = entry.get("path"), entry.get("digest"), entry.get("executable")
        mode = entry.get("mode")
        if not _is_output_path(path):
            _refuse("outputs", path, "relative paths inside the project")
        if not (is_digest(digest) and isinstance(executable, bool)):
            _refuse(f"outputs[{path}]", entry, "a digest and an executable flag")
        if not (mode is None or (_is_count(mode) and mode <= 0o7777)):
            _refuse(f"outputs[{path}]", mode, "a file mode")
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
    """A file a record may name inside the store: diskcache's value file ``ab/cd/<hex>.val``,
    or a pending entry's artifact ``pending/<32 lowercase hex>.val`` (``_pending``)."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    if len(parts) == 2:
        file = parts[1]
        return parts[0] == PENDING_DIR and file.endswith(".val") and is_pending_name(file[:-4])
    return (
        len(parts) == 3
        and len(parts[0]) == len(parts[1]) == 2
        and parts[2].endswith(".val")
        and all(p.isascii() and p.isalnum() for p in (parts[0], parts[1], parts[2][:-4]))
    )


def is_pending_name(name: str) -> bool:
    """A pending entry's name (``_pending``): exactly 32 lowercase hex digits."""
    return len(name) == _PENDING_NAME and all(c in _LOWER_HEX for c in name)


def is_key(key: str) -> bool:
    """A key a hit record can be filed under (a plain file name)."""
    return _is_key(key)


def _names_pending(store: Path, record: str) -> bool:
    """The record at ``record`` reads whole and names a pending entry's artifact that is there."""
    try:
        with open(record, "rb") as handle:
            parsed = _parse(handle.read())
    except OSError:
        return False
    if parsed is None or not parsed[1].startswith(f"{PENDING_DIR}/"):
        return False
    return os.path.isfile(store / parsed[1])


def names_file(store: Path, key: str, artifact_file: str) -> bool:
    """Whether the hit record of ``key`` reads whole and names ``artifact_file``."""
    if not _is_key(key):
        return False
    try:
        parsed = _parse(_path(store, key).read_bytes())
    except OSError:
        return False
    return parsed is not None and parsed[1] == artifact_file


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
    header = {**meta.to_record(part=HIT), "file": artifact_file}
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + log
    directory = store / _DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    temp = directory / f".{meta.key}.{os.getpid()}.{os.urandom(4).hex()}{_TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(frame(body, _MAGIC))
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
    if meta.log_checksum is None:
        return None
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


def frame(body: bytes, magic: bytes) -> bytes:
    """``body`` behind ``magic`` and its xxh3-128: the framing of a hit or pending record."""
    return magic + digest_bytes(body).encode() + b"\n" + body


def framed_body(data: bytes, magic: bytes) -> bytes | None:
    """The body ``frame`` wrapped in ``data``; None when the magic or the digest is wrong."""
    start = len(magic) + _DIGEST_LENGTH + 1
    if not data.startswith(magic) or data[start - 1 : start] != b"\n":
        return None
    body = data[start:]
    if digest_bytes(body).encode() != data[len(magic) : start - 1]:
        return None
    return body


def _parse(data: bytes) -> tuple[ArtifactMeta, str, bytes] | None:
    """The parts of a hit record that reads whole (a ``HIT`` header names its log checksum)."""
    body = framed_body(data, _MAGIC)
    if body is None:
        return None
    end = body.find(b"\n")
    try:
        header = json.loads(body[:end]) if end >= 0 else None
        artifact_file = header.pop("file", None) if isinstance(header, dict) else None
        if not _is_value_file(artifact_file):
            return None
        meta = ArtifactMeta.from_record(header, part=HIT)
    except (ValueError, RecursionError):
        return None
    return meta, str(artifact_file), body[end + 1 :]


def blob_checksums(store: Path, key: str) -> tuple[str, str] | None:
    """The artifact and log checksums the hit record of ``key`` names, if it reads whole."""
    try:
        data = _path(store, key).read_bytes()
    except OSError:
        return None
    parsed = _parse(data)
    if parsed is None or parsed[0].log_checksum is None:
        return None
    return parsed[0].checksum, parsed[0].log_checksum


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


def remove_stray(
    store: Path, *, keep: Collection[str], cutoff: float, keep_pending: bool = True
) -> int:
    """Remove records of keys not in ``keep`` and temporary files older than ``cutoff``.

    A record that names a pending entry which is there is kept: the database has not adopted
    it yet (``_pending``), and removing it would lose that remote hit.

    Returns:
        How many files were removed.
    """
    removed = 0
    with contextlib.suppress(OSError), os.scandir(store / _DIR) as entries:
        for entry in entries:
            temporary = entry.name.endswith(_TEMP_SUFFIX)
            if not (temporary or (_is_key(entry.name) and entry.name not in keep)):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                if not temporary and keep_pending and _names_pending(store, entry.path):
                    continue
                os.unlink(entry.path)
                removed += 1
    return removed


def remove_all(store: Path) -> int:
    """Remove every hit record (``cache clear``, a replaced database); returns how many."""
    return remove_stray(store, keep=(), cutoff=float("inf"), keep_pending=False)
