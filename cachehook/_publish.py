"""A task's outputs kept after it ran: stored locally and published to the remote (issue 11).

``Publisher`` owns what happens after a successful run that may be cached: checking that the
outputs matched and are not paths a restore refuses, that no input changed while the task ran,
the record (meta.json) a restore reads, and the one artifact that is packed once and then moved
into the local store and/or uploaded. Anything that keeps a result from being cached is a
notice, never an error: the task's own result stands. Not on a hit's path.
"""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING

from cachehook import __version__
from cachehook._hits import ARTIFACT, ArtifactMeta, OutputEntry
from cachehook.errors import ArchiveError, HashingError, StoreError
from cachehook.hashing import expand_globs, hash_files

if TYPE_CHECKING:
    from collections.abc import Callable

    from cachehook._prepare import Prepared
    from cachehook._session import RemoteSession
    from cachehook.config import Settings
    from cachehook.hashing import FileDigest, StatCache
    from cachehook.store import LocalStore

__all__ = ["Publisher"]


class Publisher:
    """Stores and publishes the results of one cache's tasks (see the module docstring).

    Args:
        settings: the resolved settings.
        stat_cache: the runner's stat cache (the outputs' digests).
        hash_inputs: a task's inputs hashed again, as ``prepare`` hashed them (``HashingError``).
        is_forbidden: whether a restore refuses to write a path (``Restorer.is_forbidden``).
        notice: receives each warning as a plain sentence.
        project: this project's ``history.project_id``, kept in the local record.
    """

    def __init__(
        self,
        settings: Settings,
        stat_cache: StatCache,
        *,
        hash_inputs: Callable[[Prepared], tuple[FileDigest, ...]],
        is_forbidden: Callable[[str], bool],
        notice: Callable[[str], None],
        project: Callable[[], str],
    ) -> None:
        self.settings = settings
        self._stat_cache = stat_cache
        self._hash_inputs = hash_inputs
        self._is_forbidden = is_forbidden
        self._notice = notice
        self._project = project

    def store_result(
        self,
        prepared: Prepared,
        log: bytes,
        duration_ms: int,
        *,
        value: str | None,
        store: LocalStore | None,
        remote: RemoteSession | None,
    ) -> bool:
        """Keep what ``prepared`` made in ``store`` and/or ``remote``; whether either took it."""
        if store is None and remote is None:
            return False
        root = self.settings.root
        found = expand_globs(
            root, prepared.outputs, respect_gitignore=False, skip_dirs=(self.settings.cache_dir,)
        )
        if found.unmatched:
            names = ", ".join(repr(p) for p in found.unmatched)
            self._notice(f"output glob {names} matched no file after the task; not caching it")
            return False
        if not self._inputs_unchanged(prepared):
            return False
        outputs = [p for p in found.files if p not in prepared.input_paths]
        refused = sorted(p for p in outputs if self._is_forbidden(p))
        if refused:
            # A hit without them would differ from a run: not cached at all (issue 10).
            self._notice(
                f"output {refused[0]!r} is a path a restore never writes (.git or .cachehook, "
                "pyproject.toml, the cache dir); not caching it"
            )
            return False
        digests = hash_files(root, outputs, self._stat_cache)
        try:
            file_modes = {d.path: stat.S_IMODE(os.lstat(root / d.path).st_mode) for d in digests}
        except OSError as exc:
            self._notice(f"an output changed after the task ({exc}); not caching it")
            return False
        meta = ArtifactMeta(
            key=prepared.key,
            command=tuple(prepared.spec.command),
            duration_ms=duration_ms,
            task=prepared.spec.name,
            manifest=prepared.manifest.to_json(),
            outputs=tuple(
                OutputEntry(d.path, d.digest, d.executable, file_modes[d.path]) for d in digests
            ),
            value=value,
            extra={
                "exit_code": 0,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "cachehook_version": __version__,
            },
        )
        return self._publish(prepared, outputs, meta, log, store, remote)

    def _publish(
        self,
        prepared: Prepared,
        outputs: list[str],
        meta: ArtifactMeta,
        log: bytes,
        store: LocalStore | None,
        remote: RemoteSession | None,
    ) -> bool:
        from cachehook import archive
        from cachehook._scratch import scratch_file

        stored = False
        with scratch_file(self.settings.cache_dir / "tmp") as artifact:
            try:
                meta_bytes = meta.to_json(part=ARTIFACT).encode()
                archive.pack(artifact, self.settings.root, outputs, meta=meta_bytes, log=log)
            except (ArchiveError, OSError) as exc:
                self._notice(f"cannot pack the outputs of {prepared.key}; not caching it: {exc}")
                return False
            if store is not None:
                try:
                    # Renamed into the store unless the remote still needs to read it.
                    # The local record names its project (``cache ls``); meta.json does not.
                    project = self._project()
                    local_meta = meta.replace(project=project)
                    store.put(prepared.key, artifact, meta=local_meta, log=log, move=remote is None)
                    if prepared.spec.name:
                        store.set_record(f"task/{project}/{prepared.spec.name}", prepared.key)
                    stored = True
                except StoreError as exc:
                    self._notice(f"{exc}; the result stands but is not cached")
            if remote is not None:
                stored = (
                    remote.store(prepared.key, artifact, duration_ms=meta.duration_ms) or stored
                )
        return stored

    def _inputs_unchanged(self, prepared: Prepared) -> bool:
        try:
            files = self._hash_inputs(prepared)
        except HashingError as exc:
            self._notice(f"an input changed while the task ran ({exc}); not caching it")
            return False
        before = {f.path: f for f in prepared.manifest.inputs}
        after = {f.path: f for f in files}
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
        if changed:
            self._notice(f"input {changed[0]!r} changed while the task ran; not caching it")
            return False
        return True
