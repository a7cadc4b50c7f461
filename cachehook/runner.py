"""One task: prepare -> local -> remote -> execute -> store -> facts.

``Runner`` is the sequence; each step's details live in the module that owns them: the
inputs, the environment and the key in ``_prepare``, the local and the remote restore in
``_restore``, storing and publishing in ``_publish``; executing is here. The runner returns a
``RunResult`` and never prints: what happens on the way reaches its listeners as facts
(``cachehook.facts``: lookups, the finished task, notices, transfers), which the history, the
usage events and the caller's reporters consume; a caller shows a result by listening to its
``TaskFinished``, as ``cli/_output.TaskReporter`` and the integrations (``_api``) do.
"""

from __future__ import annotations

import _thread  # threading's Lock, without importing threading on a hit (issue 11)
import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cachehook._prepare import Prepared, Preparer, TaskSpec, input_patterns
from cachehook._restore import Restorer, ms
from cachehook.errors import StoreError
from cachehook.facts import (
    LookupDone,
    Notice,
    RunResult,
    TaskFinished,
    Transfer,
    notices_to,
    transfers_to,
)
from cachehook.hashing import StatCache, digest_bytes
from cachehook.logs import LogRecorder

if TYPE_CHECKING:
    from cachehook._publish import Publisher
    from cachehook._remote_api import Progress
    from cachehook._session import RemoteSession
    from cachehook.config import Settings
    from cachehook.events import UsageEvents
    from cachehook.facts import Fact, Listener, Source
    from cachehook.store import LocalStore

__all__ = ["Execute", "Prepared", "RunResult", "Runner", "TaskSpec", "input_patterns"]

Execute = Callable[[LogRecorder], int]


class Runner:
    """Runs tasks against one cache; use as a context manager so events flush at the end.

    Args:
        settings: the resolved settings.
        on_notice: receives each warning as a plain sentence (a ``Notice`` listener; None:
            a listener in ``listeners`` takes the notices).
        detach_events: hand events to a detached sender at ``close`` instead of a thread.
        on_progress: told ``(what, done, total)`` while an artifact moves to or from the remote
            (a ``Transfer`` listener).
        use_toolchain: False keys no task on its toolchain (``--no-toolchain``).
        listeners: more listeners (a reporter), told every fact after the run history and the
            usage events, so a task's history line is written before its status line.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_notice: Callable[[str], None] | None = None,
        detach_events: bool = False,
        on_progress: Progress | None = None,
        use_toolchain: bool = True,
        listeners: Sequence[Listener] = (),
    ) -> None:
        from cachehook.history import HistoryWriter

        self.settings = settings
        self._usage: UsageEvents | None = None
        if settings.remote is not None:
            from cachehook.events import UsageEvents

            # One task per process (``cachehook exec``): spool events and let a detached
            # ``cachehook events flush`` send them, so a hit never imports httpx (issue 3).
            self._usage = UsageEvents(
                settings.remote,
                cache_dir=settings.cache_dir,
                root=settings.root,
                detach=detach_events,
            )
        told: list[Listener] = [HistoryWriter(settings.cache_dir)]
        if on_notice is not None:
            told.append(notices_to(on_notice))
        if self._usage is not None:
            told.append(self._usage)
        if on_progress is not None:
            told.append(transfers_to(on_progress))
        self._listeners = (*told, *listeners)
        self._store: LocalStore | None = None
        self._store_failed = False
        stat_name = digest_bytes(os.fsencode(settings.root))[:16]
        self._stat_cache = StatCache.load(settings.cache_dir / "stat" / f"{stat_name}.v2")
        self._preparer = Preparer(
            settings, self._stat_cache, use_toolchain=use_toolchain, notice=self._notice
        )
        self._restorer = Restorer(
            settings,
            self._stat_cache,
            store=lambda: self.store,
            notice=self._notice,
            project=lambda: self.project,
        )
        self._publisher: Publisher | None = None
        self._remote: RemoteSession | None = None
        # Tasks of one graph run on several threads (issue 4): open each resource once.
        self._opening = _thread.allocate_lock()

    def _emit(self, fact: Fact) -> None:
        for listener in self._listeners:
            listener(fact)

    def _notice(self, message: str) -> None:
        self._emit(Notice(message))

    def _transfer(self, what: str, done: int, total: int | None) -> None:
        self._emit(Transfer(what, done, total))

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
                    self._restorer.store_dir,
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
                from cachehook._session import RemoteSession  # no httpx (issue 11)

                self._remote = RemoteSession(
                    remote,
                    modes=modes,
                    on_warning=self._notice,
                    progress=self._transfer,
                    cache_dir=self.settings.cache_dir,
                )
        return self._remote

    @functools.cached_property
    def project(self) -> str:
        """This project's name in the history and the local store (``history.project_id``)."""
        from cachehook.history import project_id

        return project_id(self.settings.root)

    def close(self) -> None:
        """Save the stat cache, flush events (bounded) and close connections."""
        self._stat_cache.save()
        self._preparer.save()
        if self._usage is not None:
            self._usage.close()
        if self._remote is not None:
            self._remote.close()
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- prepare ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def reusing_inputs(self) -> Iterator[None]:
        """Within the block, a directory walked or a file digested for one task's key is not
        walked or digested again for the next, until a task runs or restores files (then all
        is read afresh: its outputs may be the next task's inputs). For a run of many tasks
        (issue 14), never around code that edits files between two ``prepare`` calls.
        """
        from cachehook._reuse import RunCache

        preparer = self._preparer
        outer, preparer.reuse = preparer.reuse, RunCache()
        try:
            yield
        finally:
            preparer.reuse = outer

    def prepare(self, spec: TaskSpec) -> Prepared:
        """Hash the task's inputs and compute its key.

        Raises:
            ConfigError: a glob or env name is malformed, or the cwd is outside the root.
            HashingError: an input cannot be read.
        """
        return self._preparer.prepare(spec)

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

        Every result is also told as a ``TaskFinished`` fact: the run history appends it
        (``cachehook stats``, issue 4), a reporter among the listeners shows it.
        """
        wrote = True
        try:
            result = self._run(prepared, force=force, live=live, execute=execute)
            wrote = result.status != "HIT" or bool(result.restored)
        finally:
            if wrote and self._preparer.reuse is not None:
                self._preparer.reuse.invalidate()  # what the next task reads may have changed
        self._emit(TaskFinished(result, prepared.spec.name, self.project))
        return result

    def _looked_up(self, key: str, where: Source, hit: RunResult | None) -> None:
        self._emit(LookupDone(key, where, hit is not None, hit.saved_ms if hit else 0))

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
            return RunResult(key, "BYPASS", None, code, ms(time.monotonic() - started))
        local_hit: bool | None = None
        remote_hit: bool | None = None
        if not force and modes.local_read:
            hit = self._restorer.local(prepared, started)
            self._looked_up(key, "LOCAL", hit)
            if hit is not None:
                return hit
            local_hit = False
        remote = self.remote if not force and modes.remote_read else None
        if remote is not None and remote.is_enabled:
            hit = self._restorer.remote(prepared, started, remote, local_hit)
            if hit is not None:
                self._looked_up(key, "REMOTE", hit)
                return hit
            # A remote switched off by this very lookup did not answer: not a miss (issue 10).
            if remote.is_enabled:
                self._looked_up(key, "REMOTE", None)
                remote_hit = False
        recorder = LogRecorder()
        run_started = time.monotonic()
        code = self._execute(prepared, recorder, live, execute)
        duration_ms = ms(time.monotonic() - run_started)
        log = _redacted(recorder.getvalue())
        stored = code == 0 and self._store_result(prepared, log, duration_ms, recorder.value)
        return RunResult(
            key,
            "MISS",
            None,
            code,
            ms(time.monotonic() - started),
            task_ms=duration_ms,
            stored=stored,
            log=log,
            local_hit=local_hit,
            remote_hit=remote_hit,
            manifest=prepared.manifest,
            value=recorder.value,
        )

    def _store_result(
        self, prepared: Prepared, log: bytes, duration_ms: int, value: str | None
    ) -> bool:
        modes = self.settings.modes
        remote = self.remote if modes.remote_write else None
        store = self.store if modes.local_write else None
        if store is None and remote is None:
            return False
        if self._publisher is None:
            from cachehook._publish import Publisher  # not on the hit path

            self._publisher = Publisher(
                self.settings,
                self._stat_cache,
                hash_inputs=self._preparer.hash_inputs_again,
                is_forbidden=self._restorer.is_forbidden,
                notice=self._notice,
                project=lambda: self.project,
            )
        return self._publisher.store_result(
            prepared, log, duration_ms, value=value, store=store, remote=remote
        )

    def _execute(
        self,
        prepared: Prepared,
        recorder: LogRecorder,
        live: tuple[BinaryIO, BinaryIO] | None,
        execute: Execute | None,
    ) -> int:
        reuse = self._preparer.reuse
        if reuse is not None:
            # From now on files may change: a task prepared while this one runs reads afresh
            # (``run`` drops what that one saw, too, once this one is done).
            reuse.invalidate()
        if execute is not None:
            return execute(recorder)
        from cachehook.process import run_command  # not on the hit path

        cwd = prepared.spec.cwd or Path.cwd()
        env = self.child_environ(prepared.spec)
        return run_command(prepared.spec.command, cwd=cwd, recorder=recorder, live=live, env=env)

    def child_environ(self, spec: TaskSpec) -> dict[str, str] | None:
        """The environment a task's command runs with: ours without the remote cache's
        secrets, except those ``spec.pass_env`` names; None when nothing is left out."""
        from cachehook.redaction import child_environ

        remote = self.settings.remote
        key = remote.signature_key if remote is not None else None
        in_use = () if remote is None else (remote.token, key.decode() if key else None)
        return child_environ(os.environ, in_use=in_use, pass_env=spec.pass_env)


def _redacted(log: bytes) -> bytes:
    """The log with the remote cache's secrets replaced, before it is kept or sent (issue 10)."""
    from cachehook.redaction import redact_log, secret_values

    secrets = secret_values(os.environ)
    return redact_log(log, secrets) if secrets else log
