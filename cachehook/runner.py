"""One task: key -> local -> remote -> execute -> store -> events.

The runner returns a ``RunResult`` and never prints: what the user should see
reaches the caller through ``on_notice`` (warnings) and the result itself.

Over 400 lines, not on purpose: it is the sequence of a task and still holds each step's
details (the local and remote restores, storing and publishing). The split it is waiting
for is ``_restore.py`` and ``_publish.py``, with ``Runner`` keeping the sequence; see
docs/architecture.md ("Known debts").
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from cachehook import __version__
from cachehook.errors import ArchiveError, HashingError, StoreError
from cachehook.hashing import (
    FileDigest,
    GlobSet,
    Manifest,
    StatCache,
    ToolDigest,
    digest_bytes,
    escape_glob,
    expand_globs,
    hash_files,
    resolve_env,
)
from cachehook.history import append_result, project_id
from cachehook.logs import LogRecorder
from cachehook.toolchain import Toolchain

if TYPE_CHECKING:
    from cachehook._hits import Hit
    from cachehook._reuse import RunCache
    from cachehook.archive import Placed, Restored
    from cachehook.config import RemoteSettings, Settings
    from cachehook.events import Event, EventSender
    from cachehook.remote import Progress, RemoteSession
    from cachehook.store import LocalStore

__all__ = ["Execute", "Prepared", "RunResult", "Runner", "TaskSpec", "input_patterns"]

Status = Literal["HIT", "MISS", "BYPASS", "DRY"]
Source = Literal["LOCAL", "REMOTE"]
Execute = Callable[[LogRecorder], int]
_PROTECTED = frozenset({"pyproject.toml"})
# Path segments a restore never writes, at any depth (issue 10): git's own directory (a
# planted hook runs on the next checkout) and our reserved one.
_FORBIDDEN_SEGMENTS = frozenset({".git", ".cachehook"})


@dataclass(frozen=True)
class TaskSpec:
    """What to run and what it reads and writes; globs are relative to the project root."""

    command: tuple[str, ...]
    # None: every file git would list under ``cwd`` (issue 10); () on purpose: no input file.
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    # Secret variables the command may see all the same (``pass-env``, issue 10).
    pass_env: tuple[str, ...] = ()
    salt: str = ""
    cwd: Path | None = None
    dependencies: tuple[str, ...] = ()
    name: str | None = None
    # The toolchain (issue 10): argv[0] and ``tools`` are found through ``search_path``
    # (default: PATH); an in-process task names its ``interpreter`` instead of an argv[0].
    tools: tuple[str, ...] = ()
    toolchain: bool = True
    interpreter: Path | None = None
    search_path: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A task with its inputs hashed: the key and everything that went into it."""

    spec: TaskSpec
    manifest: Manifest
    key: str
    outputs: GlobSet
    input_paths: frozenset[str]
    unmatched_inputs: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    """What happened to one task."""

    key: str
    status: Status
    source: Source | None
    exit_code: int
    duration_ms: int
    saved_ms: int = 0
    task_ms: int = 0
    stored: bool = False
    log: bytes = b""
    local_hit: bool | None = None
    remote_hit: bool | None = None
    restored: tuple[str, ...] = ()
    manifest: Manifest | None = field(default=None, repr=False)
    value: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "source": self.source,
            "exit_code": self.exit_code,
            "duration_ms": self.duration_ms,
            "saved_ms": self.saved_ms,
            "task_ms": self.task_ms,
            "stored": self.stored,
            "restored": list(self.restored),
        }


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class Runner:
    """Runs tasks against one cache; use as a context manager so events flush at the end.

    Args:
        settings: the resolved settings.
        on_notice: receives each warning as a plain sentence.
        detach_events: hand events to a detached sender at ``close`` instead of a thread.
        on_progress: told ``(what, done, total)`` while an artifact moves to or from the remote.
        use_toolchain: False keys no task on its toolchain (``--no-toolchain``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_notice: Callable[[str], None],
        detach_events: bool = False,
        on_progress: Progress | None = None,
        use_toolchain: bool = True,
    ) -> None:
        self.settings = settings
        self._use_toolchain = use_toolchain
        self._toolchain: Toolchain | None = None
        self._progress = on_progress
        # One task per process (``cachehook exec``): spool events and let a detached
        # ``cachehook events flush`` send them, so a hit never imports httpx (issue 3).
        self._detach_events = detach_events
        self._detached: list[Event] = []
        self._notice = on_notice
        self._store: LocalStore | None = None
        self._store_failed = False
        stat_name = digest_bytes(os.fsencode(settings.root))[:16]
        self._stat_cache = StatCache.load(settings.cache_dir / "stat" / f"{stat_name}.v2")
        # Set while a run of many tasks reuses what it walked and digested (issue 14).
        self._reuse: RunCache | None = None
        self._remote: RemoteSession | None = None
        self._events: EventSender | None = None
        # Tasks of one graph run on several threads (issue 4): open each resource once.
        self._opening = threading.Lock()

    # -- resources, opened on first use -------------------------------------------------

    @property
    def store(self) -> LocalStore | None:
        if self._store is None and not self._store_failed:
            with self._opening:
                return self._open_store()
        return self._store

    def _open_store(self) -> LocalStore | None:
        if self._store is None and not self._store_failed:
            # Not on a hit's path: a hit reads its hit record instead (issue 11).
            from cachehook.store import LocalStore

            try:
                self._store = LocalStore(
                    self._store_dir,
                    max_size=self.settings.max_size,
                    on_warning=self._notice,
                    scratch_dir=self.settings.cache_dir / "tmp",
                )
            except StoreError as exc:
                self._store_failed = True
                self._notice(f"{exc}; running without the local cache")
        return self._store

    @property
    def remote(self) -> RemoteSession | None:
        remote = self.settings.remote
        modes = self.settings.modes
        if remote is None or not (modes.remote_read or modes.remote_write):
            return None
        with self._opening:
            if self._remote is None:
                from cachehook.remote import RemoteSession

                self._remote = RemoteSession(
                    remote, modes=modes, on_warning=self._notice, progress=self._progress
                )
        return self._remote

    def _record_event(
        self, source: Source, event: Literal["HIT", "MISS"], key: str, ms: int
    ) -> None:
        remote = self.settings.remote
        if remote is None:
            return
        from cachehook.events import Event, EventSender, session_id

        if self._detach_events:
            self._detached.append(
                Event(session_id=session_id(), source=source, event=event, hash=key, duration=ms)
            )
            return
        with self._opening:
            if self._events is None:
                self._events = EventSender(remote, spool_dir=self.settings.cache_dir / "events")
        record = Event(session_id=session_id(), source=source, event=event, hash=key, duration=ms)
        self._events.record(record)

    def close(self) -> None:
        """Save the stat cache, flush events (bounded) and close connections."""
        self._stat_cache.save()
        if self._toolchain is not None:
            self._toolchain.save()
        if self._events is not None:
            self._events.close()
        if self._detached and self.settings.remote is not None:
            self._hand_off_events(self.settings.remote)
        if self._remote is not None:
            self._remote.close()
        if self._store is not None:
            self._store.close()

    def _hand_off_events(self, remote: RemoteSettings) -> None:
        import subprocess
        import sys

        from cachehook.events import default_spool_dir, is_flushing, spool_events

        events, self._detached = self._detached, []
        spool = default_spool_dir(self.settings.cache_dir)
        if not spool_events(remote, spool, events) or is_flushing(spool):
            return  # a running flusher, or the next run's, sends them
        flush = ["events", "flush", "--cache-dir", str(self.settings.cache_dir)]
        # Detached: it outlives us; what it cannot send waits in the spool for the next run.
        with contextlib.suppress(OSError):
            subprocess.Popen(
                [sys.executable, "-m", "cachehook", *flush],
                cwd=self.settings.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hashing ---------------------------------------------------------------------------

    def _skip_dirs(self) -> tuple[Path, ...]:
        return (self.settings.cache_dir,)

    @contextlib.contextmanager
    def reusing_inputs(self) -> Iterator[None]:
        """Within the block, a directory walked or a file digested for one task's key is not
        walked or digested again for the next, until a task runs or restores files (then all
        is read afresh: its outputs may be the next task's inputs). For a run of many tasks
        (issue 14), never around code that edits files between two ``prepare`` calls.
        """
        from cachehook._reuse import RunCache

        outer, self._reuse = self._reuse, RunCache()
        try:
            yield
        finally:
            self._reuse = outer

    def _hash_inputs(
        self, inputs: GlobSet, outputs: GlobSet, *, reuse: bool = False
    ) -> tuple[tuple[FileDigest, ...], tuple[str, ...]]:
        root = self.settings.root
        generation = self._reuse.current if reuse and self._reuse is not None else None
        # Tens of thousands of small objects and not one cycle among them: the collector
        # would only re-scan them (~5 ms of a 10,000-input hit, issue 2).
        was_collecting = gc.isenabled()
        gc.disable()
        try:
            found = expand_globs(
                root,
                inputs,
                exclude=outputs,
                skip_dirs=self._skip_dirs(),
                follow_symlinks=True,
                reuse=generation,
            )
            memo = generation.digests if generation is not None else None
            return hash_files(root, found.files, self._stat_cache, memo=memo), found.unmatched
        finally:
            if was_collecting:
                gc.enable()

    def prepare(self, spec: TaskSpec) -> Prepared:
        """Hash the task's inputs and compute its key.

        Raises:
            ConfigError: a glob or env name is malformed, or the cwd is outside the root.
            HashingError: an input cannot be read.
        """
        from cachehook.errors import ConfigError

        root = self.settings.root
        outputs = GlobSet.compile(spec.outputs, what="--output")
        cwd = (spec.cwd or Path.cwd()).resolve()
        try:
            relative_cwd = cwd.relative_to(root).as_posix() or "."
        except ValueError:
            msg = f"the working directory {cwd} is outside the project root {root}"
            raise ConfigError(msg) from None
        patterns = input_patterns(spec.inputs, relative_cwd)
        inputs = GlobSet.compile(patterns, what="--input")
        files, unmatched = self._hash_inputs(inputs, outputs, reuse=True) if patterns else ((), ())
        if spec.inputs is None:
            unmatched = ()  # an empty directory has no inputs; nothing was misspelt
        env = resolve_env(spec.env, os.environ)
        toolchain = self._identify_toolchain(spec, cwd) if self._use_toolchain else ()
        manifest = Manifest(
            command=spec.command,
            cwd=relative_cwd,
            inputs=files,
            env=tuple(
                (name, "unset" if value is None else digest_bytes(value.encode()))
                for name, value in self._key_env(spec, env).items()
            ),
            outputs=spec.outputs,
            salt=spec.salt,
            dependencies=spec.dependencies,
            toolchain=toolchain,
        )
        return Prepared(
            spec=spec,
            manifest=manifest,
            key=manifest.key(),
            outputs=outputs,
            input_paths=frozenset(f.path for f in files),
            unmatched_inputs=unmatched,
        )

    def _identify_toolchain(self, spec: TaskSpec, cwd: Path) -> tuple[ToolDigest, ...]:
        if not spec.toolchain:
            return ()
        with self._opening:
            if self._toolchain is None:
                self._toolchain = Toolchain.load(self.settings.cache_dir / "toolchain.json")
        interpreter = spec.interpreter
        names = spec.tools if interpreter is not None else (spec.command[:1] + spec.tools)
        return self._toolchain.identify(
            names,
            cwd=os.fspath(cwd),
            search_path=spec.search_path,
            interpreter=None if interpreter is None else os.fspath(interpreter),
        )

    def peek(self, prepared: Prepared) -> tuple[bool, bool | None]:
        """Whether the local and the remote cache hold ``prepared`` now, without restoring.

        The remote answer is None when no remote is read (or it failed).
        """
        store = self.store if self.settings.modes.local_read else None
        try:
            meta = store.get_meta(prepared.key) if store is not None else None
            local = meta is not None and store is not None and store.has_artifact(meta)
        except StoreError:
            local = False
        remote = self.remote if self.settings.modes.remote_read else None
        return local, (remote.exists(prepared.key) if remote is not None else None)

    # -- one task ----------------------------------------------------------------------------

    def run(
        self,
        prepared: Prepared,
        *,
        force: bool = False,
        live: tuple[BinaryIO, BinaryIO] | None = None,
        execute: Execute | None = None,
    ) -> RunResult:
        """Restore ``prepared`` from a cache, or execute it and store what it made.

        Args:
            prepared: from ``prepare``.
            force: execute even on a hit, and overwrite the cached result.
            live: streams to copy the command's stdout and stderr to as it runs.
            execute: run the task (default: the spec's command as a child process).

        Every result is also appended to the run history (``cachehook stats``, issue 4).
        """
        wrote = True
        try:
            result = self._run(prepared, force=force, live=live, execute=execute)
            wrote = result.status != "HIT" or bool(result.restored)
        finally:
            if wrote and self._reuse is not None:
                self._reuse.invalidate()  # what the next task reads may have changed
        append_result(
            self.settings.cache_dir, result, task=prepared.spec.name, project=self.project
        )
        return result

    def _run(
        self,
        prepared: Prepared,
        *,
        force: bool,
        live: tuple[BinaryIO, BinaryIO] | None,
        execute: Execute | None,
    ) -> RunResult:
        started = time.monotonic()
        key = prepared.key
        modes = self.settings.modes
        if self.settings.disabled:
            code = self._execute(prepared, LogRecorder(), live, execute)
            return RunResult(key, "BYPASS", None, code, _ms(time.monotonic() - started))
        local_hit: bool | None = None
        remote_hit: bool | None = None
        if not force and modes.local_read:
            hit = self._restore_local(prepared, started)
            if hit is not None:
                self._record_event("LOCAL", "HIT", key, hit.saved_ms)
                return hit
            local_hit = False
            self._record_event("LOCAL", "MISS", key, 0)
        remote = self.remote if not force and modes.remote_read else None
        if remote is not None and remote.is_enabled:
            hit = self._restore_remote(prepared, started, local_hit)
            if hit is not None:
                self._record_event("REMOTE", "HIT", key, hit.saved_ms)
                return hit
            # A remote switched off by this very lookup did not answer: not a miss (issue 10).
            if remote.is_enabled:
                self._record_event("REMOTE", "MISS", key, 0)
                remote_hit = False
        recorder = LogRecorder()
        run_started = time.monotonic()
        code = self._execute(prepared, recorder, live, execute)
        duration_ms = _ms(time.monotonic() - run_started)
        log = _redacted(recorder.getvalue())
        stored = code == 0 and self._store_result(
            prepared, log, duration_ms, force, value=recorder.value
        )
        return RunResult(
            key,
            "MISS",
            None,
            code,
            _ms(time.monotonic() - started),
            task_ms=duration_ms,
            stored=stored,
            log=log,
            local_hit=local_hit,
            remote_hit=remote_hit,
            manifest=prepared.manifest,
            value=recorder.value,
        )

    def _execute(
        self,
        prepared: Prepared,
        recorder: LogRecorder,
        live: tuple[BinaryIO, BinaryIO] | None,
        execute: Execute | None,
    ) -> int:
        if self._reuse is not None:
            # From now on files may change: a task prepared while this one runs reads afresh
            # (``run`` drops what that one saw, too, once this one is done).
            self._reuse.invalidate()
        if execute is not None:
            return execute(recorder)
        from cachehook.process import run_command  # not on the hit path

        cwd = prepared.spec.cwd or Path.cwd()
        env = self.child_environ(prepared.spec)
        return run_command(prepared.spec.command, cwd=cwd, recorder=recorder, live=live, env=env)

    def _key_env(self, spec: TaskSpec, env: dict[str, str | None]) -> dict[str, str | None]:
        """The declared variables without the remote cache's secrets (issue 10)."""
        from cachehook.redaction import leave_out_secrets, refuse_secret_env

        refuse_secret_env(spec.env)
        kept, left_out = leave_out_secrets(env, spec.env)
        if any(env[name] is not None for name in left_out):
            patterns = ", ".join(repr(name) for name in spec.env if name.endswith("*"))
            self._notice(
                f"--env {patterns} leaves out {', '.join(left_out)}: a remote cache secret "
                "never enters the key"
            )
        return kept

    def child_environ(self, spec: TaskSpec) -> dict[str, str] | None:
        """The environment a task's command runs with: ours without the remote cache's
        secrets, except those ``spec.pass_env`` names; None when nothing is left out."""
        from cachehook.redaction import child_environ

        remote = self.settings.remote
        key = remote.signature_key if remote is not None else None
        in_use = () if remote is None else (remote.token, key.decode() if key else None)
        return child_environ(os.environ, in_use=in_use, pass_env=spec.pass_env)

    # -- restore ----------------------------------------------------------------------------

    def _unchanged_outputs(self, meta: dict[str, Any]) -> set[str]:
        """Outputs on disk with the stored bytes and mode: a restore need not write them.

        A record without modes (stored before issue 10) has none unchanged: the full restore
        brings back the modes the artifact keeps.
        """
        unchanged: set[str] = set()
        root = self.settings.root
        for entry in meta.get("outputs", ()):
            path, mode = entry["path"], entry.get("mode")
            if not isinstance(mode, int):
                continue
            try:
                current = self._stat_cache.digest(root, path)
                current_mode = stat.S_IMODE(os.lstat(root / path).st_mode)
            except (HashingError, OSError):
                continue
            if (
                current.digest == entry["digest"]
                and current.executable == entry["executable"]
                and current_mode == mode
            ):
                unchanged.add(path)
        return unchanged

    def _is_forbidden(self, path: str) -> bool:
        """A path no restore writes, whatever the globs say: ``.git`` or ``.cachehook`` at any
        depth (as a case-insensitive disk sees it), the cache directory, ``pyproject.toml``."""
        if path in _PROTECTED:
            return True
        if any(part.casefold() in _FORBIDDEN_SEGMENTS for part in path.split("/")):
            return True
        inside = self._cache_dir_in_root
        return inside is not None and (path == inside or path.startswith(f"{inside}/"))

    @functools.cached_property
    def project(self) -> str:
        """This project's name in the history and the local store (``history.project_id``)."""
        return project_id(self.settings.root)

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
                and not self._is_forbidden(path)
            )

        return allowed

    def _unpack(
        self,
        prepared: Prepared,
        artifact: BinaryIO | Path,
        meta: dict[str, Any] | None,
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
            try:
                if _stat_key(os.lstat(root / file.path)) != _stat_key(file.stat):
                    continue  # changed since it was placed: read when next hashed
                self._stat_cache.record(root, file.path, file.digest)
                if _stat_key(os.lstat(root / file.path)) != _stat_key(file.stat):
                    self._stat_cache.digest(root, file.path)  # changed meanwhile: read it now
            except (HashingError, OSError, ValueError):
                continue

    @property
    def _store_dir(self) -> Path:
        return self.settings.cache_dir / "store"

    def _restore_local(self, prepared: Prepared, started: float) -> RunResult | None:
        from cachehook import _hits

        hit = _hits.read_hit(self._store_dir, prepared.key)
        if hit is not None:
            replayed = self._replay_hit(prepared, started, hit)
            if replayed is not False:
                return replayed
        return self._restore_from_store(prepared, started)

    def _replay_hit(
        self, prepared: Prepared, started: float, hit: Hit
    ) -> RunResult | Literal[False] | None:
        """A hit through its hit record, without SQLite (issue 11); False: ask the store.

        The store's own path evicts what is wrong; an artifact whose checksum holds but whose
        contents the task refuses is evicted here, as that path would.
        """
        from cachehook import _hits

        meta = hit.meta.to_record()
        unchanged = self._unchanged_outputs(meta)
        restored: list[str] = []
        if {o.path for o in hit.meta.outputs} - unchanged:
            # The store's own file, streamed once: its checksum is verified as it is read and
            # nothing is placed before that (issue 11).
            try:
                artifact = hit.artifact.open("rb")
            except OSError:
                return False  # evicted by another process since the record was read
            with artifact:
                checksum = hit.meta.checksum
                unpacked = self._unpack(prepared, artifact, meta, unchanged, checksum=checksum)
            if unpacked is None:
                store = self.store
                if store is not None:
                    store.evict(prepared.key, reason="its contents were refused", meta=meta)
                return None
            restored = unpacked
        _hits.touch_hit(self._store_dir, prepared.key)
        return self._local_hit(prepared, started, hit.meta.duration_ms, hit.log, restored, meta)

    def _local_hit(
        self,
        prepared: Prepared,
        started: float,
        saved_ms: int,
        log: bytes,
        restored: list[str],
        meta: dict[str, Any],
    ) -> RunResult:
        return RunResult(
            prepared.key,
            "HIT",
            "LOCAL",
            0,
            _ms(time.monotonic() - started),
            saved_ms=saved_ms,
            log=log,
            local_hit=True,
            restored=tuple(restored),
            manifest=prepared.manifest,
            value=_meta_value(meta),
        )

    def _restore_from_store(self, prepared: Prepared, started: float) -> RunResult | None:
        store = self.store
        if store is None:
            return None
        try:
            meta = store.get_meta(prepared.key)
            if meta is None or not store.check_artifact(prepared.key, meta):
                return None
            log = store.get_log(prepared.key, meta)
            if log is None:
                return None
            outputs = {e["path"] for e in meta.get("outputs", ())}
            restored: list[str] = []
            unchanged = self._unchanged_outputs(meta)
            if outputs - unchanged:
                # Streamed from the store's own file, checked as it is read (issue 11).
                artifact = store.open_artifact(prepared.key, meta)
                if artifact is None:
                    return None
                with artifact:
                    checksum = meta["checksum"]
                    unpacked = self._unpack(prepared, artifact, meta, unchanged, checksum=checksum)
                if unpacked is None:
                    store.evict(prepared.key, reason="its contents were refused", meta=meta)
                    return None
                restored = unpacked
        except StoreError as exc:
            self._notice(f"{exc}; treating it as a miss")
            return None
        store.refresh_hit(prepared.key, meta, log)  # the next hit needs no SQLite
        saved_ms = int(meta.get("duration_ms", 0))
        return self._local_hit(prepared, started, saved_ms, log, restored, meta)

    def _restore_remote(
        self, prepared: Prepared, started: float, local_hit: bool | None
    ) -> RunResult | None:
        remote = self.remote
        assert remote is not None
        with self._scratch_file() as artifact:
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
            saved = info.duration_ms or int(meta.get("duration_ms", 0))
            if self.settings.modes.local_write and self.store is not None:
                try:
                    local_meta = {**meta, "project": self.project}
                    self.store.put(
                        prepared.key,
                        artifact,
                        meta=local_meta,
                        log=contents.log,
                        move=True,
                        checksum=contents.checksum,
                    )
                except StoreError as exc:
                    self._notice(f"{exc}; the remote hit is not kept locally")
        return RunResult(
            prepared.key,
            "HIT",
            "REMOTE",
            0,
            _ms(time.monotonic() - started),
            saved_ms=saved,
            log=contents.log,
            local_hit=local_hit,
            remote_hit=True,
            restored=tuple(restored),
            manifest=prepared.manifest,
            value=_meta_value(meta),
        )

    # -- store ------------------------------------------------------------------------------

    def _store_result(
        self, prepared: Prepared, log: bytes, duration_ms: int, force: bool, *, value: str | None
    ) -> bool:
        modes = self.settings.modes
        remote = self.remote if modes.remote_write else None
        store = self.store if modes.local_write else None
        if store is None and remote is None:
            return False
        root = self.settings.root
        found = expand_globs(
            root, prepared.outputs, respect_gitignore=False, skip_dirs=self._skip_dirs()
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
        meta = {
            "key": prepared.key,
            "command": list(prepared.spec.command),
            "exit_code": 0,
            "duration_ms": duration_ms,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cachehook_version": __version__,
            "task": prepared.spec.name,
            "manifest": prepared.manifest.to_json(),
            "outputs": [
                {
                    "path": d.path,
                    "digest": d.digest,
                    "executable": d.executable,
                    "mode": file_modes[d.path],
                }
                for d in digests
            ],
        }
        if value is not None:
            meta["value"] = value
        return self._publish(prepared, outputs, meta, log, store, remote, force)

    def _publish(
        self,
        prepared: Prepared,
        outputs: list[str],
        meta: dict[str, Any],
        log: bytes,
        store: LocalStore | None,
        remote: RemoteSession | None,
        force: bool,
    ) -> bool:
        from cachehook import archive

        stored = False
        with self._scratch_file() as artifact:
            try:
                meta_bytes = json.dumps(meta, sort_keys=True).encode()
                archive.pack(artifact, self.settings.root, outputs, meta=meta_bytes, log=log)
            except (ArchiveError, OSError) as exc:
                self._notice(f"cannot pack the outputs of {prepared.key}; not caching it: {exc}")
                return False
            if store is not None:
                try:
                    # Renamed into the store unless the remote still needs to read it.
                    # The local record names its project (``cache ls``); meta.json does not.
                    local_meta = {**meta, "project": self.project}
                    store.put(prepared.key, artifact, meta=local_meta, log=log, move=remote is None)
                    if prepared.spec.name:
                        store.set_record(f"task/{self.project}/{prepared.spec.name}", prepared.key)
                    stored = True
                except StoreError as exc:
                    self._notice(f"{exc}; the result stands but is not cached")
            if remote is not None:
                stored = (
                    remote.store(prepared.key, artifact, duration_ms=meta["duration_ms"]) or stored
                )
        return stored

    def _inputs_unchanged(self, prepared: Prepared) -> bool:
        patterns = input_patterns(prepared.spec.inputs, prepared.manifest.cwd)
        if not patterns:
            return True
        try:
            inputs = GlobSet.compile(patterns, what="--input")
            files, _ = self._hash_inputs(inputs, prepared.outputs)
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

    @contextlib.contextmanager
    def _scratch_file(self) -> Iterator[Path]:
        from cachehook._scratch import scratch_file

        with scratch_file(self.settings.cache_dir / "tmp") as path:
            yield path


def input_patterns(inputs: tuple[str, ...] | None, cwd: str) -> tuple[str, ...]:
    """The input globs of a task: its own, or, when it gives none, every file under its cwd.

    Args:
        inputs: the task's globs; None when it declared none, () for "no input file".
        cwd: its working directory relative to the root (``"."`` for the root).
    """
    if inputs is not None:
        return inputs
    return ("**",) if cwd == "." else (f"{escape_glob(cwd)}/**",)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _meta_value(meta: dict[str, Any]) -> str | None:
    value = meta.get("value")
    return value if isinstance(value, str) else None


def _parse_meta(data: bytes, key: str) -> dict[str, Any]:
    meta = json.loads(data)
    if not isinstance(meta, dict) or meta.get("key") != key:
        msg = "its meta.json is not for this key"
        raise ValueError(msg)
    outputs = meta.get("outputs")
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict)
        and isinstance(o.get("path"), str)
        and isinstance(o.get("digest"), str)
        and isinstance(o.get("executable"), bool)
        and isinstance(o.get("mode", 0), int)
        for o in outputs
    ):
        msg = "its meta.json lists malformed outputs"
        raise ValueError(msg)
    if not isinstance(meta.get("duration_ms", 0), int) or meta.get("duration_ms", 0) < 0:
        msg = "its meta.json has a malformed duration"
        raise ValueError(msg)
    return meta


def _redacted(log: bytes) -> bytes:
    """The log with the remote cache's secrets replaced, before it is kept or sent (issue 10)."""
    from cachehook.redaction import redact_log, secret_values

    secrets = secret_values(os.environ)
    return redact_log(log, secrets) if secrets else log
