"""A task prepared: its inputs found and hashed, its environment and toolchain, its key.

``Preparer`` owns the first step of a task (``Runner.prepare``): the input globs compiled and
walked (reusing, within ``Runner.reusing_inputs``, what an earlier task of the same run walked
and digested, issue 14), each input's digest through the stat cache, the declared variables
without the remote cache's secrets, the toolchain's digests, and the ``Manifest`` whose digest
is the key. ``TaskSpec`` (what a caller asks for) and ``Prepared`` (what the other steps take)
live here too, so that ``_restore`` and ``_publish`` need not import the runner. They are
NamedTuples, not frozen dataclasses: importing ``dataclasses`` (with ``inspect``) and building a
dataclass cost milliseconds on every hit (hit latency, issue 11).
"""

from __future__ import annotations

import _thread  # threading's Lock, without importing threading on a hit (issue 11)
import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

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
from cachehook.toolchain import Toolchain

if TYPE_CHECKING:
    from collections.abc import Callable

    from cachehook._reuse import RunCache
    from cachehook.config import Settings

__all__ = ["Prepared", "Preparer", "TaskSpec", "input_patterns"]


class TaskSpec(NamedTuple):
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


class Prepared(NamedTuple):
    """A task with its inputs hashed: the key and everything that went into it."""

    spec: TaskSpec
    manifest: Manifest
    key: str
    outputs: GlobSet
    input_paths: frozenset[str]
    unmatched_inputs: tuple[str, ...]


class Preparer:
    """Prepares the tasks of one runner (see the module docstring).

    Args:
        settings: the resolved settings.
        stat_cache: the runner's stat cache.
        use_toolchain: False keys no task on its toolchain (``--no-toolchain``).
        notice: receives each warning as a plain sentence.
    """

    def __init__(
        self,
        settings: Settings,
        stat_cache: StatCache,
        *,
        use_toolchain: bool,
        notice: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._stat_cache = stat_cache
        self._use_toolchain = use_toolchain
        self._notice = notice
        self._toolchain: Toolchain | None = None
        # Set while a run of many tasks reuses what it walked and digested (issue 14).
        self.reuse: RunCache | None = None
        self._opening = _thread.allocate_lock()

    def save(self) -> None:
        """Save what was learnt about the toolchain."""
        if self._toolchain is not None:
            self._toolchain.save()

    def _hash_inputs(
        self, inputs: GlobSet, outputs: GlobSet, *, reuse: bool = False
    ) -> tuple[tuple[FileDigest, ...], tuple[str, ...]]:
        root = self.settings.root
        generation = self.reuse.current if reuse and self.reuse is not None else None
        # Tens of thousands of small objects and not one cycle among them: the collector
        # would only re-scan them (~5 ms of a 10,000-input hit, issue 2).
        was_collecting = gc.isenabled()
        gc.disable()
        try:
            found = expand_globs(
                root,
                inputs,
                exclude=outputs,
                skip_dirs=(self.settings.cache_dir,),
                follow_symlinks=True,
                reuse=generation,
            )
            memo = generation.digests if generation is not None else None
            return hash_files(root, found.files, self._stat_cache, memo=memo), found.unmatched
        finally:
            if was_collecting:
                gc.enable()

    def hash_inputs_again(self, prepared: Prepared) -> tuple[FileDigest, ...]:
        """The task's inputs as they are now, hashed as ``prepare`` did (not reused)."""
        patterns = input_patterns(prepared.spec.inputs, prepared.manifest.cwd)
        if not patterns:
            return ()
        inputs = GlobSet.compile(patterns, what="--input")
        return self._hash_inputs(inputs, prepared.outputs)[0]

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


def input_patterns(inputs: tuple[str, ...] | None, cwd: str) -> tuple[str, ...]:
    """The input globs of a task: its own, or, when it gives none, every file under its cwd.

    Args:
        inputs: the task's globs; None when it declared none, () for "no input file".
        cwd: its working directory relative to the root (``"."`` for the root).
    """
    if inputs is not None:
        return inputs
    return ("**",) if cwd == "." else (f"{escape_glob(cwd)}/**",)
