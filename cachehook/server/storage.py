"""Where ``cachehook serve`` keeps artifacts: one small interface, two implementations.

``Storage`` is what the app uses: uploads that become artifacts only when complete, reads,
metadata, a team's deletion and its bytes. ``open_storage`` picks the implementation from the
``--storage`` value:

- a directory: ``ArtifactStorage`` here, the project's ``LocalStore`` (one host);
- ``s3://BUCKET[/PREFIX]``: ``S3Storage`` in ``s3.py``, any S3-compatible object store that
  several servers share (issue 13).

Layout under a storage directory::

    artifacts/        a LocalStore (diskcache): size cap, least-recently-used eviction; records
                      are keyed ``v8/<team>/<hash>``, never a path, and the blobs are shared
    uploads/          uploads in progress, one temporary file each
    events.sqlite3    the event log (``eventlog.py``)

An upload is streamed into ``uploads/`` and handed to the store only when its last byte has
arrived; the store writes the metadata last, so a reader sees the old artifact or the complete
new one, never a part. Several worker processes share the directory: diskcache serialises
them through SQLite.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from cachehook.errors import StoreError
from cachehook.server.validation import HASH_RE, TEAM_RE
from cachehook.store import LocalStore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cachehook._hits import ArtifactMeta

__all__ = [
    "ArtifactStorage",
    "FileUpload",
    "Lease",
    "Storage",
    "Upload",
    "artifact_key",
    "is_object_store",
    "open_storage",
]

_OBJECT_STORE_SCHEMES = ("s3://",)

_STALE_UPLOAD_SECONDS = 24 * 3600.0


def artifact_key(team: str, hash_: str) -> str:
    """``v8/<team>/<hash>``, the one way artifacts are named in every implementation.

    Raises:
        ValueError: ``team`` or ``hash_`` does not match its pattern (it could name a path).
    """
    # The patterns are checked by the app already; a second check costs nothing and keeps
    # a future caller from spelling a key that was never meant to exist.
    if not TEAM_RE.match(team) or not HASH_RE.match(hash_):
        msg = f"invalid team or hash: {team!r}, {hash_!r}"
        raise ValueError(msg)
    return f"v8/{team}/{hash_}"


class Upload(Protocol):
    """One upload in progress: bytes in, invisible until ``Storage.commit``."""

    size: int

    def write(self, chunks: Iterable[bytes]) -> None: ...

    def discard(self) -> None: ...


class Lease(Protocol):
    """A named lock with an expiry that several servers share (``EventLog`` has one)."""

    def take_lease(self, name: str, *, seconds: float) -> bool: ...

    def drop_lease(self, name: str) -> None: ...


class Storage(Protocol):
    """Artifacts by team and hash. Every method may raise ``StoreError``.

    What the server answers about an artifact is an ``ArtifactMeta``: its ``size`` and what its
    upload declared (``duration_ms``, ``tag``, ``sha``, ``dirty_hash``).
    """

    def begin_upload(self, team: str, hash_: str, meta: ArtifactMeta) -> Upload:
        """A new upload for that artifact; nothing is visible until ``commit``."""
        ...

    def commit(
        self,
        team: str,
        hash_: str,
        upload: Upload,
        meta: ArtifactMeta,
        *,
        tail: Iterable[bytes] = (),
    ) -> None:
        """Write ``tail``, then make the whole upload the artifact, replacing any earlier one."""
        ...

    def open(self, team: str, hash_: str) -> tuple[BinaryIO, ArtifactMeta] | None:
        """A read handle on the artifact and what is known of it; None on a miss."""
        ...

    def info(self, team: str, hash_: str) -> ArtifactMeta | None:
        """What is known of the artifact (a use: it refreshes its recency); None on a miss."""
        ...

    def delete_team(self, team: str) -> int:
        """Remove every artifact of ``team``; how many."""
        ...

    def used_by_team(self) -> dict[str, int]:
        """Artifact bytes per team."""
        ...

    def remove_stale_uploads(self) -> int:
        """Clear what killed servers left of their uploads; how many."""
        ...

    def close(self) -> None: ...


def is_object_store(location: str | Path) -> bool:
    """Whether ``--storage`` names an object store (``s3://...``) rather than a directory."""
    return isinstance(location, str) and location.startswith(_OBJECT_STORE_SCHEMES)


def open_storage(location: str | Path, *, max_size: int, lease: Lease) -> Storage:
    """The storage ``location`` names: ``s3://BUCKET[/PREFIX]``, else a directory.

    Args:
        location: ``--storage``.
        max_size: bytes kept before the least recently used artifacts are evicted.
        lease: lets one server at a time sweep a shared object store.

    Raises:
        StoreError: it cannot be opened (a message names what to fix).
        ConfigError: a malformed ``s3://`` location.
    """
    if is_object_store(location):
        from cachehook.server.s3 import S3Storage  # boto3 is imported only for an object store

        return S3Storage.from_url(str(location), max_size=max_size, lease=lease)
    return ArtifactStorage(Path(location), max_size=max_size)


class FileUpload:
    """One upload in progress: a temporary file that only ``commit`` makes an artifact.

    The file is created by the first ``write``, so starting an upload costs no system call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._file: BinaryIO | None = None

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append ``chunks``.

        Raises:
            StoreError: the temporary file cannot be created or written.
        """
        try:
            if self._file is None:
                self._file = self.path.open("xb")
            for chunk in chunks:
                self._file.write(chunk)
                self.size += len(chunk)
        except OSError as exc:
            msg = f"cannot write {self.path}: {exc.strerror or exc}"
            raise StoreError(msg) from exc

    def finish(self) -> None:
        """Close the file: everything written is on its way to the disk."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Close and remove the temporary file (after a commit it is already gone)."""
        with contextlib.suppress(OSError):
            self.finish()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


class ArtifactStorage:
    """Artifacts by team and hash, in a ``LocalStore`` under ``root / "artifacts"``.

    Args:
        root: the storage directory (created, owner-only).
        max_size: bytes of artifacts kept before the least recently used are evicted.

    Raises:
        StoreError: the directory cannot be created or opened.
    """

    def __init__(self, root: Path, *, max_size: int) -> None:
        self.root = root
        self.uploads = root / "uploads"
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.uploads.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the storage directory {root}: {exc.strerror or exc}"
            raise StoreError(msg) from exc
        self.store = LocalStore(root / "artifacts", max_size=max_size)

    def close(self) -> None:
        self.store.close()

    _key = staticmethod(artifact_key)

    def begin_upload(
        self, team: str = "", hash_: str = "", meta: ArtifactMeta | None = None
    ) -> FileUpload:
        """A new upload; its temporary file appears with the first write (named by no input)."""
        return FileUpload(self.uploads / f"{os.getpid()}-{uuid.uuid4().hex}.part")

    def commit(
        self,
        team: str,
        hash_: str,
        upload: Upload,
        meta: ArtifactMeta,
        *,
        tail: Iterable[bytes] = (),
    ) -> None:
        """Write ``tail``, then make the upload the artifact ``hash_`` of ``team``.

        The finished file is renamed into the store (no copy); any earlier artifact of that
        team and hash is replaced. The upload is consumed either way.

        Raises:
            StoreError: the store could not take it; the earlier artifact reads as a miss.
        """
        key = self._key(team, hash_)
        if not isinstance(upload, FileUpload):
            msg = f"not an upload of this storage: {upload!r}"
            raise TypeError(msg)
        try:
            upload.write(tail)
            upload.finish()
            named = meta.replace(extra={**(meta.extra or {}), "team": team, "hash": hash_})
            self.store.put_file(key, upload.path, meta=named, move=True)
        except OSError as exc:
            msg = f"cannot store {key}: {exc.strerror or exc}"
            raise StoreError(msg) from exc
        finally:
            upload.discard()

    def open(self, team: str, hash_: str) -> tuple[BinaryIO, ArtifactMeta] | None:
        """A read handle on the artifact and its checked metadata; None on a miss (a record
        that does not read whole is evicted by the store: a miss too)."""
        return self.store.open_file(self._key(team, hash_))

    def info(self, team: str, hash_: str) -> ArtifactMeta | None:
        """What is known of the artifact (refreshing its recent use); None on a miss."""
        opened = self.open(team, hash_)
        if opened is None:
            return None
        handle, info = opened
        handle.close()
        return info

    def delete_team(self, team: str) -> int:
        """Remove every artifact of ``team`` (``DELETE /v8/artifacts``); returns how many.

        Blobs another team's records still name stay (artifacts are content-addressed).
        """
        prefix = f"v8/{team}/"
        keys = [entry.key for entry in self.store.entries() if entry.key.startswith(prefix)]
        for key in keys:
            self.store.discard(key)
        if keys:
            self.store.sweep()
        return len(keys)

    def used_by_team(self) -> dict[str, int]:
        """Artifact bytes per team (what the dashboard shows against the cap)."""
        used: dict[str, int] = {}
        for entry in self.store.entries():
            kind, _, rest = entry.key.partition("/")
            team = rest.partition("/")[0]
            if kind == "v8" and team:
                used[team] = used.get(team, 0) + entry.size
        return used

    def remove_stale_uploads(self, *, older_than: float = _STALE_UPLOAD_SECONDS) -> int:
        """Delete temporary files left by killed workers; returns how many were removed."""
        removed = 0
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(self.uploads) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > older_than:
                        os.unlink(entry.path)
                        removed += 1
        return removed
