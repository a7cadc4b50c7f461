"""A task's outputs brought back from a cache: the local and the remote restore (issue 11).

``Restorer`` owns the three ways a hit is restored, each in one pass over the artifact:

- the hit record (``_hits``): a local hit without SQLite, the usual one;
- the local store: when there is no hit record, or it went stale;
- the remote: downloaded to a scratch file, restored as it is read, then kept locally (as a
  pending entry, ``_pending``: no SQLite on that hit either).

and the rules every restore follows: which paths it may write (the task's output globs, none
of its inputs, never a forbidden path: ``is_forbidden``), which outputs it need not write (on
disk already with the stored bytes and mode), and the digests it hands the stat cache for what
it placed. The runner decides when to restore; this module only how.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, BinaryIO, Literal

from cachehook.errors import ArchiveError, HashingError, StoreError
from cachehook.facts import RunResult

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cachehook._hits import ArtifactMeta, Hit
    from cachehook._prepare import Prepared
    from cachehook._session import RemoteSession
    from cachehook.archive import Placed, Restored
    from cachehook.config import Settings
    from cachehook.hashing import StatCache
    from cachehook.store import LocalStore

__all__ = ["Restorer", "ms"]

_PROTECTED = frozenset({"pyproject.toml"})
# Path segments a restore never writes, at any depth (issue 10): git's own directory (a
# planted hook runs on the next checkout) and our reserved one.
_FORBIDDEN_SEGMENTS = frozenset({".git", ".cachehook"})


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds."""
    return round(seconds * 1000)


class Restorer:
    """Restores hits of one cache into one project (see the module docstring).

    Args:
        settings: the resolved settings.
        stat_cache: the runner's stat cache (read for unchanged outputs, fed what is placed).
        store: the local store, opened on first call (None: unusable).
        notice: receives each warning as a plain sentence.
        project: this project's ``history.project_id``, for a remote hit kept locally.
    """

    def __init__(
        self,
        settings: Settings,
        stat_cache: StatCache,
        *,
        store: Callable[[], LocalStore | None],
        notice: Callable[[str], None],
        project: Callable[[], str],
    ) -> None:
        self.settings = settings
        self._stat_cache = stat_cache
        self._store = store
        self._notice = notice
        self._project = project
        self.store_dir = settings.cache_dir / "store"

    # -- the rules every restore follows -------------------------------------------------

    def is_forbidden(self, path: str) -> bool:
        """A path no restore writes, whatever the globs say: ``.git`` or ``.cachehook`` at any
        depth (as a case-insensitive disk sees it), the cache directory, ``pyproject.toml``."""
        if path in _PROTECTED:
            return True
        if any(part.casefold() in _FORBIDDEN_SEGMENTS for part in path.split("/")):
            return True
        inside = self._cache_dir_in_root
        return inside is not None and (path == inside or path.startswith(f"{inside}/"))

    @functools.cached_property
    def _cache_dir_in_root(self) -> str | None:
        try:
            relative = self.settings.cache_dir.resolve().relative_to(self.settings.root)
        except (ValueError, OSError):
            return None
        return relative.as_posix() if relative.parts else ""

    def _allowed(self, prepared: Prepared) -> Callable[[str], bool]:
        def allowed(path: str) -> bool:
            return (
                prepared.outputs.matches(path)
                and path not in prepared.input_paths
                and not self.is_forbidden(path)
            )

        return allowed

    def _unchanged_outputs(self, meta: ArtifactMeta) -> set[str]:
        """Outputs on disk with the stored bytes and mode: a restore need not write them.

        A record without modes (stored before issue 10) has none unchanged: the full restore
        brings back the modes the artifact keeps.
        """
        unchanged: set[str] = set()
        root = self.settings.root
        for entry in meta.outputs:
            path, mode = entry.path, entry.mode
            if mode is None:
                continue
            try:
                current = self._stat_cache.digest(root, path)
                current_mode = stat.S_IMODE(os.lstat(root / path).st_mode)
            except (HashingError, OSError):
                continue
            if (
                current.digest == entry.digest
                and current.executable == entry.executable
                and current_mode == mode
            ):
                unchanged.add(path)
        return unchanged

    # -- one pass over an artifact -------------------------------------------------------

    def _unpack(
        self,
        prepared: Prepared,
        artifact: BinaryIO | Path,
        meta: ArtifactMeta | None,
        skip: set[str] | None = None,
        *,
        checksum: str | None = None,
    ) -> list[str] | None:
        """Restore ``artifact`` in one pass (issue 11); the paths written, or None if refused.

        ``skip`` defaults to the outputs on disk unchanged by ``meta``, or without ``meta`` by the
        artifact's own meta.json. ``checksum``: the store's record of the compressed bytes.
        """
        if skip is None and meta is not None:
            skip = self._unchanged_outputs(meta)
        unpacked = self._unpack_artifact(prepared, artifact, skip, checksum=checksum)
        return None if unpacked is None else unpacked[1]

    def _unpack_artifact(
        self,
        prepared: Prepared,
        artifact: BinaryIO | Path,
        skip: set[str] | None,
        *,
        checksum: str | None,
    ) -> tuple[Restored, list[str]] | None:
        from cachehook import archive

        _end_memo_recording()
        skipped: set[str] = set()

        def paths_to_skip(meta_bytes: bytes) -> set[str]:
            # Told as soon as meta.json has streamed, before any output is staged.
            try:
                meta = _parse_meta(meta_bytes, prepared.key)
            except (ValueError, RecursionError) as exc:
                raise ArchiveError(str(exc)) from None
            skipped.update(self._unchanged_outputs(meta) if skip is None else skip)
            return skipped

        try:
            unpacked = archive.unpack(
                artifact,
                self.settings.root,
                allowed=self._allowed(prepared),
                skip=paths_to_skip,
                checksum=checksum,
            )
        except ArchiveError as exc:
            self._notice(
                f"artifact {prepared.key} cannot be restored, treating it as a miss: {exc}"
            )
            return None
        self._record_placed(unpacked.placed)
        entries = unpacked.entries
        return unpacked, [e.path for e in entries if e.kind != "dir" and e.path not in skipped]

    def _record_placed(self, placed: tuple[Placed, ...]) -> None:
        """Give the stat cache the digests the restore took as it wrote (issue 11), instead of
        reading each file again: each with the ``lstat`` of the file placed, or none at all."""
        root = self.settings.root
        for file in placed:
            try:  # a file changed since it was placed is not recorded: read when next hashed
                self._stat_cache.record(root, file.path, file.digest, written=file.stat)
            except (HashingError, OSError, ValueError):
                continue

    # -- the local restore ---------------------------------------------------------------

    def local(self, prepared: Prepared, started: float) -> RunResult | None:
        """A local hit for ``prepared`` restored, or None (a miss, or refused)."""
        from cachehook import _hits

        hit = _hits.read_hit(self.store_dir, prepared.key)
        if hit is not None:
            replayed = self._replay_hit(prepared, started, hit)
            if replayed is not False:
                return replayed
        if not os.path.lexists(os.path.join(self.store_dir, _hits.DATABASE)):
            # No database, so nothing stored without a record: a miss, without importing
            # diskcache and sqlite3 to create an empty store (a fresh CI runner's remote hit).
            return None
        return self._restore_from_store(prepared, started)

    def _replay_hit(
        self, prepared: Prepared, started: float, hit: Hit
    ) -> RunResult | Literal[False] | None:
        """A hit through its hit record, without SQLite (issue 11); False: ask the store.

        The store's own path evicts what is wrong; an artifact whose checksum holds but whose
        contents the task refuses is evicted here, as that path would.
        """
        from cachehook import _hits

        meta = hit.meta
        unchanged = self._unchanged_outputs(meta)
        restored: list[str] = []
        if {o.path for o in meta.outputs} - unchanged:
            # The store's own file, streamed once: its checksum is verified as it is read and
            # nothing is placed before that (issue 11).
            try:
                artifact = hit.artifact.open("rb", buffering=0)  # zstd reads 1 MiB at once
            except OSError:
                return False  # evicted by another process since the record was read
            with artifact:
                checksum = meta.checksum
                unpacked = self._unpack(prepared, artifact, meta, unchanged, checksum=checksum)
            if unpacked is None:
                store = self._store()
                if store is not None:
                    store.evict(prepared.key, reason="its contents were refused", meta=meta)
                return None
            restored = unpacked
        _hits.touch_hit(self.store_dir, prepared.key)
        return _local_hit(prepared, started, meta.duration_ms, hit.log, restored, meta)

    def _restore_from_store(self, prepared: Prepared, started: float) -> RunResult | None:
        store = self._store()
        if store is None:
            return None
        try:
            meta = store.get_meta(prepared.key)
            if meta is None or not store.check_artifact(prepared.key, meta):
                return None
            log = store.get_log(prepared.key, meta)
            if log is None:
                return None
            outputs = {o.path for o in meta.outputs}
            restored: list[str] = []
            unchanged = self._unchanged_outputs(meta)
            if outputs - unchanged:
                # Streamed from the store's own file, checked as it is read (issue 11).
                artifact = store.open_artifact(prepared.key, meta)
                if artifact is None:
                    return None
                with artifact:
                    checksum = meta.checksum
                    unpacked = self._unpack(prepared, artifact, meta, unchanged, checksum=checksum)
                if unpacked is None:
                    store.evict(prepared.key, reason="its contents were refused", meta=meta)
                    return None
                restored = unpacked
        except StoreError as exc:
            self._notice(f"{exc}; treating it as a miss")
            return None
        store.refresh_hit(prepared.key, meta, log)  # the next hit needs no SQLite
        return _local_hit(prepared, started, meta.duration_ms, log, restored, meta)

    # -- the remote restore --------------------------------------------------------------

    def remote(
        self, prepared: Prepared, started: float, remote: RemoteSession, local_hit: bool | None
    ) -> RunResult | None:
        """A remote hit for ``prepared`` restored (and kept locally), or None."""
        from cachehook._scratch import scratch_file

        with scratch_file(self.settings.cache_dir / "tmp") as artifact:
            info = remote.fetch(prepared.key, artifact)
            if info is None:
                return None
            # One pass (issue 11): meta.json is checked as it streams, and the checksum the
            # store keeps is taken on the way, so the download is read once.
            unpacked = self._unpack_artifact(prepared, artifact, None, checksum=None)
            if unpacked is None:
                return None
            contents, restored = unpacked
            meta = _parse_meta(contents.meta, prepared.key)
            saved = info.duration_ms or meta.duration_ms
            if self.settings.modes.local_write:
                local_meta = meta.replace(project=self._project())
                self._keep(prepared.key, artifact, local_meta, contents.log, contents.checksum)
        return RunResult(
            prepared.key,
            "HIT",
            "REMOTE",
            0,
            ms(time.monotonic() - started),
            saved_ms=saved,
            log=contents.log,
            local_hit=local_hit,
            remote_hit=True,
            restored=tuple(restored),
            manifest=prepared.manifest,
            value=meta.value,
        )

    def _keep(
        self, key: str, artifact: Path, meta: ArtifactMeta, log: bytes, checksum: str
    ) -> None:
        """Keep a remote hit's download locally: as a pending entry, without SQLite (issue 11),
        or, when that cannot be (another file system, too many pending), in the store."""
        from cachehook import _pending

        try:
            if _pending.keep(self.store_dir, key, artifact, meta=meta, log=log, checksum=checksum):
                return
        except OSError as exc:
            self._notice(
                f"cannot store artifact {key} in {self.store_dir}: {exc}; "
                "the remote hit is not kept locally"
            )
            return
        store = self._store()
        if store is None:
            return
        try:
            store.put(key, artifact, meta=meta, log=log, move=True, checksum=checksum)
        except StoreError as exc:
            self._notice(f"{exc}; the remote hit is not kept locally")


def _local_hit(
    prepared: Prepared,
    started: float,
    saved_ms: int,
    log: bytes,
    restored: list[str],
    meta: ArtifactMeta,
) -> RunResult:
    return RunResult(
        prepared.key,
        "HIT",
        "LOCAL",
        0,
        ms(time.monotonic() - started),
        saved_ms=saved_ms,
        log=log,
        local_hit=True,
        restored=tuple(restored),
        manifest=prepared.manifest,
        value=meta.value,
    )


def _end_memo_recording() -> None:
    # A restoring hit writes no memo: stop recording before the restore's own lstat calls. Not
    # imported here if no recording can be under way (the API, the integrations).
    memo = sys.modules.get("cachehook._memo")
    if memo is not None:
        memo.abandon("a restore writes outputs")


def _parse_meta(data: bytes, key: str) -> ArtifactMeta:
    """An artifact's own ``meta.json``, checked (``ArtifactMeta.from_record``) and for ``key``."""
    from cachehook import _hits

    meta = _hits.parse_record(data, part=_hits.ARTIFACT)
    if meta.key != key:
        msg = "its meta.json is not for this key"
        raise ValueError(msg)
    return meta
