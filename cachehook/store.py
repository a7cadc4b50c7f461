"""``LocalStore``: artifacts, their metadata and logs in a diskcache directory.

Over 400 lines on purpose: everything that touches diskcache and SQLite is here (the one
module that imports them), with the repair of a damaged database, the size cap, reclaim of
stray files and the hit records' upkeep, which must all see the same rows.

Bytes and text only: diskcache pickles anything else by default, and unpickles
whatever it finds (CVE-2025-69872), so ``_BytesOnlyDisk`` refuses both ways.
Records: ``a/<checksum>`` (an artifact file, content-addressed), ``l/<checksum>``
(a log) and ``m/<key>`` (JSON metadata naming both checksums and its own key). The
metadata is written last and points at immutable blobs, so processes storing the same key at
once can interleave freely: whichever metadata lands last names complete blobs, and each
replacement drops the artifact blob the record it replaced named (eight concurrent misses of
one key leave one blob, issue 10).

Beside the database, each stored artifact has a hit record (``_hits``): a plain file a local hit
reads without opening SQLite (issue 11). Whatever forgets a key here removes its record too, and
the size cap and ``last_used`` take a record's mtime (touched by each hit) as a use.

A remote hit keeps what it downloaded without opening the database either: as a pending entry
(``_pending``) that the next process to open the store adopts (``adopt_pending``, a rename into
diskcache under a lock), so that the size cap, ``cache ls`` and ``last_used`` count it.

Nothing read back is trusted (issue 10): a record for another key, or whose blob is missing or
unreadable, is evicted with a warning and is a miss. A damaged ``cache.db`` is moved aside and a
fresh store made. What a killed run leaves (blob rows no record names, value files no row
names, scratch files nobody holds) is reclaimed by the next store, at most once an hour (a
sweep of a large store takes a fraction of a second: a miss pays it, never a hit), and by
``cache prune``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import diskcache

from cachehook import _hits, _pending
from cachehook._scratch import GRACE_SECONDS, reclaim_scratch
from cachehook.errors import StoreError
from cachehook.hashing import digest_bytes, digest_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from cachehook._hits import ArtifactMeta

__all__ = ["LocalStore"]


def _log_warning(message: str) -> None:
    import logging  # not on the hit path

    logging.getLogger("cachehook").warning("%s", message)


_TIMEOUT = 10.0  # seconds a writer waits for SQLite's lock before the store is "unusable"
_CHUNK = 1 << 20
_RECLAIM_EVERY = 3600.0  # seconds between two automatic reclaims of leftovers
_STAMP = ".reclaimed"  # its mtime: when leftovers were last reclaimed
_DAMAGED = f"{_hits.DATABASE}.damaged"
_PENDING_LOCK = ".pending.lock"  # held while pending entries are adopted (``_pending``)
_SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_DAMAGED_WORDS = ("malformed", "not a database")


class _AdoptedFile:
    """A complete file that ``put_file(..., move=True)`` hands over to the cache by renaming.

    A plain class, not a dataclass: a remote hit opens the store to keep what it downloaded,
    and importing ``dataclasses`` (with ``inspect``) cost it ~7 ms (issue 11).
    """

    __slots__ = ("path", "size")

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size


class _BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache ``Disk`` that never pickles or unpickles."""

    def put(self, key: object) -> tuple[object, bool]:
        if type(key) is not str:
            msg = f"store keys must be str, not {type(key).__name__}"
            raise TypeError(msg)
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: object, raw: bool) -> object:
        if not raw:
            msg = "refusing to unpickle a store key"
            raise StoreError(msg)
        return super().get(key, raw)

    def store(self, value: object, read: bool, key: object = diskcache.core.UNKNOWN) -> Any:
        if isinstance(value, _AdoptedFile):
            return self._adopt(value, key)
        if not (read or type(value) in (bytes, str, int)):
            msg = f"store values must be bytes, str or a file, not {type(value).__name__}"
            raise TypeError(msg)
        return super().store(value, read, key=key)

    def _adopt(self, value: _AdoptedFile, key: object) -> Any:
        """Rename a finished file into the cache instead of copying it (``cachehook serve``)."""
        filename, full_path = self.filename(key, value)
        try:
            self._rename_in(value.path, full_path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with value.path.open("rb") as handle:  # another file system after all: copy
                self._write(full_path, iter(lambda: handle.read(_CHUNK), b""), "xb")
        return value.size, diskcache.core.MODE_BINARY, filename, None

    @staticmethod
    def _rename_in(src: Path, full_path: str) -> None:
        # Same file system: scratch files sit beside the store. diskcache removes a value
        # directory it empties, so a concurrent delete may take ours away: retry, as its own
        # ``_write`` does.
        for attempt in range(10):
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            try:
                os.rename(src, full_path)
            except FileNotFoundError:
                if attempt == 9 or not src.exists():
                    raise
                continue
            os.utime(full_path)  # a fresh file to ``reclaim`` until its row is committed
            return

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> Any:
        try:
            return super()._write(full_path, iterator, mode, encoding)
        except BaseException:
            # A full disk or ^C mid-write: no partial value file is left behind.
            Path(full_path).unlink(missing_ok=True)
            raise

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            msg = "refusing to unpickle a stored value"
            raise StoreError(msg)
        return super().fetch(mode, filename, value, read)


class LocalStore:
    """The local artifact store under ``directory`` (owner-only, size-capped, LRU).

    Args:
        directory: where the store lives; created with mode 0o700.
        max_size: bytes kept before least-recently-used artifacts are evicted.
        on_warning: told when a corrupt artifact is found and evicted, or a damaged database
            is replaced.
        scratch_dir: where runs keep artifacts in transit (``_scratch``); its leftovers are
            reclaimed with the store's own.

    Raises:
        StoreError: the directory cannot be created or opened.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_size: int,
        on_warning: Callable[[str], None] = _log_warning,
        scratch_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.scratch_dir = scratch_dir
        self._warn = on_warning
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if directory.stat().st_mode & 0o077:
                directory.chmod(0o700)
            self._cache = self._open_cache()
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            msg = f"cannot open the cache at {directory}: {exc}"
            raise StoreError(msg) from exc
        self._adopting = False
        self.adopt_pending()

    def _connect(self) -> diskcache.Cache:
        return diskcache.Cache(
            str(self.directory),
            timeout=_TIMEOUT,
            disk=_BytesOnlyDisk,
            # diskcache culls ten rows at a time, metadata included; we evict whole
            # blobs ourselves (``_enforce_cap``) and let it only track access times.
            size_limit=2**62,
            eviction_policy="least-recently-used",
            cull_limit=0,
        )

    def _open_cache(self) -> diskcache.Cache:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise
        # One process repairs at a time: a second one that failed to open the damaged file
        # must not move aside the fresh database the first has just made.
        with _locked(self.directory / ".repair.lock"):
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc:
                if not _is_damaged(exc):
                    raise
                self._set_aside(exc)
            return self._connect()

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        database = self.directory / _hits.DATABASE
        aside = self.directory / _DAMAGED
        os.replace(database, aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        _hits.remove_all(self.directory)  # they name files of the database set aside
        _pending.remove_all(self.directory)  # their records are gone with the others
        self._warn(
            f"the cache database {database} is damaged ({exc}); moved it to {aside} and "
            "started an empty cache (its files are reclaimed later)"
        )
        (self.directory / _STAMP).unlink(missing_ok=True)

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, key: str, *, read: bool = False) -> Any:
        try:
            return self._cache.get(key, default=None, read=read, retry=True)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            msg = f"cannot read {key!r} from the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc

    def get_meta(self, key: str) -> ArtifactMeta | None:
        """The metadata of the artifact ``key``, checked field by field; None when there is none.

        A record that is malformed or names another key is evicted with a warning (a miss).
        """
        text = self._get(f"m/{key}")
        if text is None:
            return None
        try:
            meta = _hits.parse_record(text)
        except ValueError as exc:
            self.evict(key, reason=f"its metadata is malformed: {exc}")
            return None
        if meta.key != key:
            self.evict(key, reason=f"its metadata is for {meta.key!r}", meta=meta)
            return None
        return meta

    def get_log(self, key: str, meta: ArtifactMeta) -> bytes | None:
        """The captured log of ``key``, verified against ``meta``; None if missing or corrupt."""
        data = None if meta.log_checksum is None else self._get(f"l/{meta.log_checksum}")
        if not isinstance(data, bytes) or digest_bytes(data) != meta.log_checksum:
            self.evict(key, reason="its log is missing or corrupt", meta=meta)
            return None
        return data

    def has_artifact(self, meta: ArtifactMeta) -> bool:
        """Whether the artifact file is present; refreshes its least-recently-used time."""
        handle = self._get(f"a/{meta.checksum}", read=True)
        if handle is None:
            return False
        handle.close()
        return True

    def check_artifact(self, key: str, meta: ArtifactMeta) -> bool:
        """Like ``has_artifact``, but a record whose file is missing or unreadable is evicted."""
        if self.has_artifact(meta):
            return True
        self.evict(key, reason="its artifact file is missing or unreadable", meta=meta)
        return False

    def open_artifact(self, key: str, meta: ArtifactMeta) -> BinaryIO | None:
        """A read handle on the artifact file of ``meta``; None (and evicted) if it is missing.

        Nothing is copied out: the caller streams the store's own file and checks its
        ``checksum`` as it reads (``archive.unpack(..., checksum=...)``, issue 11).
        """
        handle: BinaryIO | None = self._get(f"a/{meta.checksum}", read=True)
        if handle is None:
            self.evict(key, reason="its artifact file is missing or unreadable", meta=meta)
        return handle

    def copy_artifact(self, key: str, meta: ArtifactMeta, dest: Path) -> bool:
        """Copy the artifact to ``dest``, verifying its checksum; False (and evicted) if corrupt."""
        handle = self._get(f"a/{meta.checksum}", read=True)
        if handle is None:
            self.evict(key, reason="its artifact file is missing or unreadable", meta=meta)
            return False
        try:
            with handle, dest.open("wb") as out:
                while chunk := handle.read(_CHUNK):
                    out.write(chunk)
            checksum = digest_file(dest)
        except OSError as exc:
            msg = f"cannot copy artifact {key} out of the cache: {exc}"
            raise StoreError(msg) from exc
        if checksum != meta.checksum:
            dest.unlink(missing_ok=True)
            self._delete(f"a/{meta.checksum}")
            self.evict(key, reason="its checksum does not match (corrupt artifact)", meta=meta)
            return False
        return True

    def put(
        self,
        key: str,
        artifact: Path,
        *,
        meta: ArtifactMeta,
        log: bytes,
        move: bool = False,
        checksum: str | None = None,
    ) -> None:
        """Store an artifact file with its metadata and log.

        The store sets the fields of ``meta`` that are its own (``key``, ``checksum``, ``size``,
        ``log_checksum``, ``stored_at``), whatever they were.

        With ``move``, ``artifact`` (on the store's file system) is renamed into the store
        rather than copied, and is gone afterwards. ``checksum`` is its xxh3-128 when the caller
        took it while reading the file (a remote hit's restore does): then it is not read again.

        Raises:
            StoreError: the write failed (disk full, lock timeout); nothing partial is kept.
        """
        self._put(key, artifact, meta=meta, log=log, move=move, checksum=checksum)

    def put_file(
        self, key: str, src: Path, *, meta: ArtifactMeta, move: bool = False
    ) -> ArtifactMeta:
        """Store the file at ``src`` under ``key`` with ``meta`` and no log (``cachehook serve``).

        Readers see the new file only once it is complete: the metadata is written last.
        With ``move``, ``src`` (on the store's file system) is renamed into the store rather
        than copied, and is gone afterwards.

        Returns:
            The stored metadata: ``meta`` with the store's own fields set (as ``put``).

        Raises:
            StoreError: the write failed; ``key`` then reads as a miss.
        """
        return self._put(key, src, meta=meta, log=None, move=move)

    def _put(
        self,
        key: str,
        src: Path,
        *,
        meta: ArtifactMeta,
        log: bytes | None,
        move: bool,
        checksum: str | None = None,
        stored_at: float | None = None,
    ) -> ArtifactMeta:
        try:
            record = meta.replace(
                key=key,
                checksum=checksum or digest_file(src),
                size=src.stat().st_size,
                log_checksum=None if log is None else digest_bytes(log),
                stored_at=time.time() if stored_at is None else stored_at,
            )
            blob = f"a/{record.checksum}"
            if move:
                adopted = _AdoptedFile(src, record.size)
                self._cache.set(blob, adopted, read=True, retry=True, tag=key)
            else:
                with src.open("rb") as handle:
                    # Tagged with its key: the size cap drops the record with the blob.
                    self._cache.set(blob, handle, read=True, retry=True, tag=key)
            if log is not None:
                self._cache.set(f"l/{record.log_checksum}", log, retry=True)
            # Last, so a reader that finds the metadata finds complete blobs. The hit record of
            # the artifact it replaces goes first: a run killed in between leaves none to replay.
            _hits.remove_hit(self.directory, key)
            replaced = self._replace_record(key, record.to_json())
            if log is not None:
                self._write_hit(key, record, log)
            if replaced is not None and replaced != record.checksum:
                # The artifact blob is its key's alone (meta.json inside names the key); log
                # blobs may be shared (an empty log) and wait for ``sweep``.
                self._delete(f"a/{replaced}")
            self._enforce_cap()
            if self._is_reclaim_due():
                with contextlib.suppress(StoreError, OSError):  # stored all the same
                    self.reclaim()
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            self._delete(f"m/{key}")
            _hits.remove_hit(self.directory, key)
            msg = f"cannot store artifact {key} in {self.directory}: {exc}"
            raise StoreError(msg) from exc
        return record

    def adopt_pending(self, *, grace: float = GRACE_SECONDS) -> int:
        """Move the remote hits kept as pending entries (``_pending``) into the store.

        Each process that opens the store does this first, so that ``cache ls``, the size cap
        and ``last_used`` see them. Under a lock: no entry is adopted twice. An entry its key's
        hit record no longer names is removed (a ``.rec`` younger than ``grace`` is spared:
        its writer may be about to write that record), and so is one that does not read whole.
        Best effort: what cannot be adopted now stays for the next open.

        Returns:
            How many entries were removed rather than adopted (leftovers).
        """
        if self._adopting or not os.path.isdir(self.directory / _hits.PENDING_DIR):
            return 0
        removed = 0
        with contextlib.suppress(OSError), _locked(self.directory / _PENDING_LOCK):
            self._adopting = True
            try:
                cutoff = time.time() - grace
                for name in _pending.names(self.directory):
                    left = self._adopt(name, cutoff)
                    if left is None:
                        break
                    removed += left
                removed += _pending.remove_stray(self.directory, cutoff=cutoff)
            finally:
                self._adopting = False
        return removed

    def _adopt(self, name: str, cutoff: float) -> int | None:
        """Adopt the pending entry ``name``: 1 if it was removed instead, 0 if adopted or
        spared, None if the store failed (the rest wait for the next open)."""
        entry = _pending.read_entry(self.directory, name)
        if entry is None:  # damaged: never half-trusted (its record, if any, reads as none)
            _pending.remove(self.directory, name)
            return 1
        meta, log, written = entry
        artifact = self.directory / _pending.artifact_file(name)
        try:
            size = artifact.stat().st_size
        except OSError:
            size = None
        named = _hits.names_file(self.directory, meta.key, _pending.artifact_file(name))
        if named and size == meta.size:
            try:
                self._put(
                    meta.key,
                    artifact,
                    meta=meta,
                    log=log,
                    move=True,
                    checksum=meta.checksum,
                    stored_at=meta.stored_at,
                )
            except StoreError:
                return None  # its files stay, no longer named: removed once old enough
            _pending.remove(self.directory, name)  # its .rec (the artifact has moved)
            return 0
        if not named and size is not None and written > cutoff:
            return 0  # its writer may not have written the record naming it yet
        _pending.remove(self.directory, name, key=meta.key)
        return 1

    def _write_hit(self, key: str, meta: ArtifactMeta, log: bytes) -> None:
        """Write the hit record of ``key`` after its store record, or remove a stale one.

        Best effort: without a record, a hit takes the store's own path (and writes it then).
        """
        try:
            row = self._cache._sql(
                "SELECT filename FROM Cache WHERE key = ? AND raw = 1", (f"a/{meta.checksum}",)
            ).fetchone()
            if row is None:
                msg = "its artifact row is gone"
                raise ValueError(msg)
            _hits.write_hit(self.directory, meta, artifact_file=row[0], log=log)
        except (ValueError, OSError, sqlite3.Error):
            _hits.remove_hit(self.directory, key)

    def refresh_hit(self, key: str, meta: ArtifactMeta, log: bytes) -> None:
        """Write the hit record of ``key`` from its checked metadata and log (after a hit that
        found none, e.g. one stored before issue 11 or one a concurrent store replaced)."""
        with contextlib.suppress(diskcache.Timeout):
            self._write_hit(key, meta, log)

    def _replace_record(self, key: str, text: str) -> str | None:
        """Write the metadata of ``key``; the artifact checksum of the record it replaced."""
        with self._cache.transact(retry=True):
            old = self._cache.get(f"m/{key}", default=None, retry=True)
            self._cache.set(f"m/{key}", text, retry=True)
        return _checksum_of(old)

    def open_file(self, key: str) -> tuple[BinaryIO, ArtifactMeta] | None:
        """A read handle on the file stored under ``key`` and its metadata; None on a miss.

        Refreshes the file's least-recently-used time. A file whose size differs from its
        metadata is evicted and reads as a miss (its checksum is left to the client: checking
        it here would read every download twice).
        """
        meta = self.get_meta(key)
        if meta is None:
            return None
        handle = self._get(f"a/{meta.checksum}", read=True)
        if handle is None:  # evicted by the size cap
            self._forget(key, meta.checksum)
            return None
        try:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(0)
        except OSError as exc:
            handle.close()
            msg = f"cannot read {key} from the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc
        if size != meta.size:
            handle.close()
            self._delete(f"a/{meta.checksum}")
            self.evict(key, reason=f"its file holds {size} bytes, not {meta.size}", meta=meta)
            return None
        return handle, meta

    def _enforce_cap(self) -> None:
        """Evict least-recently-used blobs until the store fits its cap.

        An artifact blob takes the record of the key it is tagged with along (quietly: this is
        the cap at work), so a record whose blob is missing is a fault worth a warning.
        """
        select = (
            "SELECT key, tag FROM Cache WHERE key LIKE 'a/%' OR key LIKE 'l/%'"
            " ORDER BY access_time LIMIT 1"
        )
        if self._cache.volume() > self.max_size:
            self._fold_hit_times()
        while self._cache.volume() > self.max_size:
            row = self._cache._sql(select).fetchone()
            if row is None:
                return
            name, tag = row
            self._cache.delete(name, retry=True)
            if isinstance(tag, str) and name.startswith("a/"):
                self._forget(tag, name[2:])

    def _fold_hit_times(self) -> None:
        """Raise the access time of the blobs of each key hit since (its record's mtime).

        A hit through its record does not touch SQLite; before the cap picks what to drop, the
        newer of the two times counts. Only records newer than their blob's access time are read.
        """
        used = _hits.used_times(self.directory)
        rows = self._cache._sql(
            "SELECT key, tag, access_time FROM Cache WHERE key LIKE 'a/%'"
        ).fetchall()
        updates = []
        for name, tag, access_time in rows:
            when = used.get(tag) if isinstance(tag, str) else None
            if when is None or when <= access_time:
                continue
            names = _hits.blob_checksums(self.directory, tag)
            if names is not None and names[0] == name[2:]:
                updates.append((when, name, f"l/{names[1]}", when))
        if updates:
            update = "UPDATE Cache SET access_time = ? WHERE key IN (?, ?) AND access_time < ?"
            with self._cache.transact(retry=True):
                for values in updates:
                    self._cache._sql(update, values)

    def _delete(self, name: str) -> None:
        # Best effort: a record we cannot delete is dropped again on its next read.
        with contextlib.suppress(OSError, sqlite3.Error, diskcache.Timeout):
            self._cache.delete(name, retry=True)

    def evict(self, key: str, *, reason: str, meta: ArtifactMeta | None = None) -> None:
        """Forget ``key`` and say why (its blobs are swept later).

        With ``meta`` (the record that was found wanting), only that record is forgotten: one
        another process stored meanwhile stays.
        """
        self._warn(f"evicted artifact {key} from the local cache: {reason}")
        self._forget(key, None if meta is None else meta.checksum)

    def _forget(self, key: str, checksum: str | None) -> None:
        """Forget ``key``; with ``checksum``, only a record that names that artifact."""
        if checksum is None:
            self._delete(f"m/{key}")
            _hits.remove_hit(self.directory, key)
            return
        dropped = False
        with (
            contextlib.suppress(OSError, sqlite3.Error, diskcache.Timeout),
            self._cache.transact(retry=True),
        ):
            current = self._cache.get(f"m/{key}", default=None, retry=True)
            if current is None or _checksum_of(current) == checksum:
                self._cache.delete(f"m/{key}", retry=True)
                dropped = True
        # A record another process stored meanwhile keeps its hit record.
        _hits.remove_hit(self.directory, key, checksum=None if dropped else checksum)

    def discard(self, key: str) -> None:
        """Forget ``key`` quietly (``--force`` overwrites, ``cache prune``)."""
        self._delete(f"m/{key}")
        _hits.remove_hit(self.directory, key)

    def set_record(self, name: str, value: str) -> None:
        """Keep a small text record (e.g. the last key of a named task)."""
        try:
            self._cache.set(f"r/{name}", value, retry=True)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            msg = f"cannot write to the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc

    def get_record(self, name: str) -> str | None:
        value = self._get(f"r/{name}")
        return value if isinstance(value, str) else None

    def entries(self) -> Iterator[ArtifactMeta]:
        """Every artifact whose metadata reads whole, in no particular order (others are
        evicted with a warning, as ``get_meta`` does)."""
        for name in list(self._cache.iterkeys()):
            if isinstance(name, str) and name.startswith("m/"):
                meta = self.get_meta(name[2:])
                if meta is not None:
                    yield meta

    def volume(self) -> int:
        """Bytes the store takes on disk (SQLite plus value files)."""
        return int(self._cache.volume())

    def last_used(self) -> dict[str, float]:
        """When each artifact file was last read or written (epoch seconds), by checksum.

        Reading metadata (``entries``) does not count as a use (``cache prune``, issue 4); a hit
        through the key's hit record does (its mtime).
        """
        select = "SELECT key, tag, access_time FROM Cache WHERE key LIKE 'a/%'"
        try:
            rows = self._cache._sql(select).fetchall()
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot read the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc
        hits = _hits.used_times(self.directory)
        return {
            name[2:]: max(float(when), hits.get(tag, 0.0) if isinstance(tag, str) else 0.0)
            for name, tag, when in rows
        }

    def sweep(self, *, grace: float = 0.0) -> int:
        """Delete the artifact and log rows no metadata names (after ``discard``).

        Args:
            grace: spare rows stored less than this many seconds ago (another process may be
                about to write the metadata that names them).

        Returns:
            How many rows were deleted.
        """
        select = "SELECT key, store_time FROM Cache WHERE key LIKE 'a/%' OR key LIKE 'l/%'"
        try:
            named = self._named_blobs()
            rows = self._cache._sql(select).fetchall()
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot read the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc
        cutoff = time.time() - grace
        orphans = [name for name, stored in rows if name not in named and stored <= cutoff]
        for name in orphans:
            self._delete(name)
        return len(orphans)

    def _named_blobs(self) -> set[str]:
        """The blob rows some metadata names, read in one query.

        Not through ``entries``: each ``get`` there writes an access time, which makes a sweep
        of a large store take seconds instead of milliseconds.
        """
        named: set[str] = set()
        rows = self._cache._sql("SELECT value, filename FROM Cache WHERE key LIKE 'm/%'")
        for value, filename in rows.fetchall():
            text = value
            if filename is not None:  # a large record lives in a value file
                try:
                    text = (self.directory / filename).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
            try:
                meta = _hits.parse_record(text)
            except ValueError:
                continue  # its blobs go; the record itself is evicted when next read
            named.add(f"a/{meta.checksum}")
            if meta.log_checksum is not None:
                named.add(f"l/{meta.log_checksum}")
        return named

    def reclaim(self, *, grace: float = GRACE_SECONDS) -> int:
        """Remove what killed runs left: unnamed blob rows, value files no row names, pending
        entries no record names, and scratch files nobody holds, each older than ``grace``
        seconds (pending entries still named are adopted first).

        Runs by itself after a store, at most once an hour; ``cache prune`` calls it too.

        Returns:
            How many leftovers were removed.
        """
        stamp = self.directory / _STAMP
        with contextlib.suppress(OSError):
            stamp.touch()
            os.utime(stamp)  # first: a concurrent open does not start a second reclaim
        removed = self.adopt_pending(grace=grace)
        removed += self.sweep(grace=grace) + self._remove_stray_files(grace)
        removed += self._remove_stray_hits(grace)
        if self.scratch_dir is not None:
            removed += reclaim_scratch(self.scratch_dir, grace=grace)[0]
        return removed

    def _is_reclaim_due(self) -> bool:
        try:
            last = (self.directory / _STAMP).stat().st_mtime
        except OSError:
            return True
        return not 0 <= time.time() - last < _RECLAIM_EVERY

    def _remove_stray_hits(self, grace: float) -> int:
        """Hit records of keys the database no longer has (forgotten by a run killed between the
        two), and temporary records of killed writers."""
        try:
            rows = self._cache._sql("SELECT key FROM Cache WHERE key LIKE 'm/%'").fetchall()
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot read the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc
        keep = {name[2:] for (name,) in rows}
        return _hits.remove_stray(self.directory, keep=keep, cutoff=time.time() - grace)

    def _remove_stray_files(self, grace: float) -> int:
        """Value files written by a run killed before their row was committed."""
        try:
            rows = self._cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL")
            known = {name for (name,) in rows.fetchall()}
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot read the cache at {self.directory}: {exc}"
            raise StoreError(msg) from exc
        cutoff = time.time() - grace
        removed = 0
        for name, path in _value_files(self.directory):
            with contextlib.suppress(OSError):
                if name not in known and path.lstat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def clear(self) -> int:
        """Remove everything; returns the number of records removed."""
        removed = int(self._cache.clear(retry=True))
        _hits.remove_all(self.directory)
        with _locked(self.directory / _PENDING_LOCK):  # not under an adoption
            removed += _pending.remove_all(self.directory)
        return removed

    def check_writable(self) -> None:
        """Raise StoreError if a value file cannot be written (read-only or full disk)."""
        probe = self.directory / f".probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            msg = f"the cache at {self.directory} is not writable: {exc}"
            raise StoreError(msg) from exc


def _value_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """diskcache's value files (``ab/cd/*.val``) with their names relative to ``directory``.

    A directory may vanish while this walks: diskcache removes the ones it empties.
    """
    for first in _subdirectories(directory):
        for second in _subdirectories(directory / first):
            with contextlib.suppress(OSError), os.scandir(directory / first / second) as files:
                for entry in files:
                    if entry.name.endswith(".val"):
                        yield f"{first}/{second}/{entry.name}", Path(entry.path)


def _subdirectories(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _checksum_of(text: object) -> str | None:
    """The artifact checksum of a stored record's text, if it reads whole."""
    if not isinstance(text, str):
        return None
    try:
        return _hits.parse_record(text).checksum
    except ValueError:
        return None


def _is_damaged(exc: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is not a database or is corrupt (not: locked, or an I/O error)."""
    if isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in _SQLITE_DAMAGED
    return any(word in str(exc) for word in _SQLITE_DAMAGED_WORDS)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
