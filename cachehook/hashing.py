"""The task key: a canonical manifest of everything a task reads, and why two keys differ.

Everything here sits on the cache-hit path, so it imports nothing heavier than :mod:`re` and
:mod:`json`, and no :mod:`dataclasses`: importing it (with :mod:`inspect`) and building its
classes cost milliseconds on every hit (hit latency, issue 11). The digests of the input files
and the stat cache are :mod:`cachehook.digests`; which files a set of globs names is
:mod:`cachehook._globs` (glob syntax), :mod:`cachehook._gitignore` and :mod:`cachehook._walk`.
This module re-exports all of them (:class:`FileDigest`, :class:`StatCache`,
:func:`hash_files`, :class:`GlobSet`, :func:`expand_globs`...), so importers name one module.

Just over the 400-line aim (~430): the :class:`Manifest` and its canonical encoding must be
read with the diff that explains a miss (:func:`diff_manifests`), which is the seam to split
along (a ``why`` module) if either grows.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, NamedTuple

from cachehook._globs import GlobSet, escape_glob
from cachehook._walk import Expansion, expand_globs
from cachehook.digests import FileDigest, digest_bytes, digest_file
from cachehook.errors import ConfigError
from cachehook.statcache import StatCache, hash_files

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "KEY_FORMAT_VERSION",
    "Expansion",
    "FileDigest",
    "GlobSet",
    "Manifest",
    "StatCache",
    "ToolDigest",
    "diff_manifests",
    "digest_bytes",
    "digest_file",
    "escape_glob",
    "expand_globs",
    "hash_files",
    "resolve_env",
]

KEY_FORMAT_VERSION: int = 2  # 2: the toolchain (issue 10)

_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*\*?"  # compiled on first use, by re's cache


# --------------------------------------------------------------------------- the toolchain


class ToolDigest(NamedTuple):
    """One tool of a task's toolchain as it enters the key (see :mod:`cachehook.toolchain`).

    Attributes:
        name: the tool as the task names it (``argv[0]`` or an entry of ``tools``).
        digest: xxh3-128 of its identity: the interpreter and distributions of its Python
            environment, or the file's bytes.
        versions: what ``explain`` shows, never a path: ``("python", "3.11.7")``,
            ``("ruff", "0.15.9")``, or for a plain file ``("true", <its digest, shortened>)``.
    """

    name: str
    digest: str
    versions: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- environment


def resolve_env(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str | None]:
    """Pick the declared environment variables.

    Args:
        names: variable names; one ending in ``*`` takes every variable with that prefix.
        environ: the environment (``os.environ``).

    Returns:
        Name to value, sorted by name. A literal name that is unset maps to None (it still
        enters the key, as unset); a prefix that matches nothing adds nothing.

    Raises:
        ConfigError: a name is not ``[A-Za-z_][A-Za-z0-9_]*`` optionally followed by ``*``.
    """
    resolved: dict[str, str | None] = {}
    prefixes: list[str] = []
    for name in names:
        if re.fullmatch(_ENV_NAME, name) is None:
            msg = f"--env {name!r}: not a variable name (letters, digits, '_'; may end with '*')"
            raise ConfigError(msg)
        if name.endswith("*"):
            prefixes.append(name[:-1])
        else:
            resolved[name] = environ.get(name)
    if prefixes:
        starts = tuple(prefixes)
        resolved.update((k, v) for k, v in environ.items() if k.startswith(starts))
    return dict(sorted(resolved.items()))


# --------------------------------------------------------------------------- the key


def _dumps(value: object, *, sort_keys: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)


def _str_tuple(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"manifest {field!r} must be a list of strings"
        raise ValueError(msg)
    return tuple(value)


def _input_from_json(value: object) -> FileDigest:
    if not (
        isinstance(value, dict)
        and value.keys() == {"path", "digest", "executable"}
        and isinstance(value["path"], str)
        and isinstance(value["digest"], str)
        and isinstance(value["executable"], bool)
    ):
        msg = f"manifest input must be {{path, digest, executable}}, not {value!r}"
        raise ValueError(msg)
    return FileDigest(value["path"], value["digest"], value["executable"])


def _env_from_json(value: object) -> tuple[str, str]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        msg = f"manifest env entry must be [name, digest], not {value!r}"
        raise ValueError(msg)
    return value[0], value[1]


def _tool_from_json(value: object) -> ToolDigest:
    if not (
        isinstance(value, dict)
        and value.keys() == {"name", "digest", "versions"}
        and isinstance(value["name"], str)
        and isinstance(value["digest"], str)
        and isinstance(value["versions"], str)
    ):
        msg = f"manifest toolchain entry must be {{name, digest, versions}}, not {value!r}"
        raise ValueError(msg)
    lines = value["versions"].split("\n") if value["versions"] else []
    versions = tuple((name, version) for name, _, version in (s.partition("\t") for s in lines))
    return ToolDigest(value["name"], value["digest"], versions)


def _tool_json(tool: ToolDigest) -> dict[str, Any]:
    # Versions as one "name<TAB>version" line each: a venv's hundreds parse fast on a hit.
    versions = "\n".join(f"{name}\t{version}" for name, version in tool.versions)
    return {"name": tool.name, "digest": tool.digest, "versions": versions}


_ENCODED_TOOLS: dict[ToolDigest, str] = {}


def _encoded_tool(tool: ToolDigest) -> str:
    # Once per tool: a venv's hundreds of versions are not re-encoded on every hit (issue 10).
    encoded = _ENCODED_TOOLS.get(tool)
    if encoded is None:
        if len(_ENCODED_TOOLS) >= 256:
            _ENCODED_TOOLS.clear()
        encoded = _ENCODED_TOOLS[tool] = _dumps(_tool_json(tool), sort_keys=True)
    return encoded


_MANIFEST_FIELDS = (
    "command",
    "cwd",
    "inputs",
    "env",
    "outputs",
    "salt",
    "dependencies",
    "toolchain",
    "version",
)
_MANIFEST_KEYS = frozenset(_MANIFEST_FIELDS)


class Manifest:
    """Everything that enters a task's key, and nothing machine-specific.

    ``inputs`` are sorted by path, ``env`` by name and ``dependencies`` by key on creation,
    so the order they are given in never changes the key.

    Attributes:
        command: the argv, or for a function ``("py:", qualname, source digest)``.
        cwd: the working directory relative to the root, POSIX, ``"."`` for the root.
        inputs: the input files.
        env: ``(name, digest_bytes(value) or "unset")`` pairs; values are never stored.
        outputs: the output globs as given.
        salt: a user salt.
        dependencies: the keys of the tasks this one depends on.
        toolchain: what the task runs with, sorted by name (issue 10).
        version: the key format.
    """

    # A plain frozen class with __slots__ (equal and hashed by its fields, as the frozen
    # dataclass it was), not a NamedTuple: it sorts its fields on creation (issue 11).
    __slots__ = _MANIFEST_FIELDS

    command: tuple[str, ...]
    cwd: str
    inputs: tuple[FileDigest, ...]
    env: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    salt: str
    dependencies: tuple[str, ...]
    toolchain: tuple[ToolDigest, ...]
    version: int

    def __init__(
        self,
        *,
        command: tuple[str, ...],
        cwd: str,
        inputs: tuple[FileDigest, ...],
        env: tuple[tuple[str, str], ...],
        outputs: tuple[str, ...],
        salt: str = "",
        dependencies: tuple[str, ...] = (),
        toolchain: tuple[ToolDigest, ...] = (),
        version: int = KEY_FORMAT_VERSION,
    ) -> None:
        inputs = tuple(inputs)
        paths = [f.path for f in inputs]
        if paths != sorted(paths):
            inputs = tuple(sorted(inputs, key=lambda f: f.path))
        init = object.__setattr__
        init(self, "command", tuple(command))
        init(self, "cwd", cwd)
        init(self, "inputs", inputs)
        init(self, "env", tuple(sorted(tuple(pair) for pair in env)))
        init(self, "outputs", tuple(outputs))
        init(self, "salt", salt)
        init(self, "dependencies", tuple(sorted(dependencies)))
        init(self, "toolchain", tuple(sorted(toolchain, key=_tool_order)))
        init(self, "version", version)

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _MANIFEST_FIELDS)

    def replace(self, **changes: Any) -> Manifest:
        """A copy with ``changes`` to some fields, sorted again (as ``dataclasses.replace``)."""
        fields = {name: getattr(self, name) for name in _MANIFEST_FIELDS}
        return Manifest(**{**fields, **changes})

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"cannot assign to field {name!r}: a Manifest is frozen"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> None:
        msg = f"cannot delete field {name!r}: a Manifest is frozen"
        raise AttributeError(msg)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Manifest:
            return NotImplemented
        assert isinstance(other, Manifest)  # for mypy
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = (f"{name}={getattr(self, name)!r}" for name in _MANIFEST_FIELDS)
        return f"Manifest({', '.join(shown)})"

    def key(self) -> str:
        """The task key: xxh3-128 hex of :meth:`canonical_bytes`."""
        return digest_bytes(self.canonical_bytes())

    def canonical_bytes(self) -> bytes:
        """``json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"),
        ensure_ascii=False).encode()``, built faster: one string per input, no dicts."""
        encode = encode_basestring
        inputs = ",".join(
            [
                f'{{"digest":{encode(f.digest)},'
                f'"executable":{"true" if f.executable else "false"},'
                f'"path":{encode(f.path)}}}'
                for f in self.inputs
            ]
        )
        text = (
            f'{{"command":{_dumps(list(self.command))},"cwd":{_dumps(self.cwd)},'
            f'"dependencies":{_dumps(list(self.dependencies))},'
            f'"env":{_dumps([list(pair) for pair in self.env])},"inputs":[{inputs}],'
            f'"outputs":{_dumps(list(self.outputs))},"salt":{_dumps(self.salt)},'
            f'"toolchain":[{",".join(map(_encoded_tool, self.toolchain))}],'
            f'"version":{_dumps(self.version)}}}'
        )
        return text.encode("utf-8", "surrogatepass")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (inputs as ``{"path", "digest", "executable"}`` objects)."""
        return {
            "version": self.version,
            "command": list(self.command),
            "cwd": self.cwd,
            "inputs": [
                {"path": f.path, "digest": f.digest, "executable": f.executable}
                for f in self.inputs
            ],
            "env": [list(pair) for pair in self.env],
            "outputs": list(self.outputs),
            "salt": self.salt,
            "dependencies": list(self.dependencies),
            "toolchain": [_tool_json(tool) for tool in self.toolchain],
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Rebuild a manifest from :meth:`to_json` output.

        Args:
            data: the parsed JSON.

        Returns:
            The manifest.

        Raises:
            ValueError: ``data`` does not have exactly the shape :meth:`to_json` gives.
        """
        if isinstance(data, dict) and data.keys() == _MANIFEST_KEYS - {"toolchain"}:
            data = {**data, "toolchain": []}  # stored before issue 10
        if not isinstance(data, dict) or data.keys() != _MANIFEST_KEYS:
            msg = f"a manifest must be an object with the keys {sorted(_MANIFEST_KEYS)}"
            raise ValueError(msg)
        version, cwd, salt = data["version"], data["cwd"], data["salt"]
        if type(version) is not int or not isinstance(cwd, str) or not isinstance(salt, str):
            msg = "manifest 'version' must be an int, 'cwd' and 'salt' strings"
            raise ValueError(msg)
        inputs, env, toolchain = data["inputs"], data["env"], data["toolchain"]
        if not all(isinstance(v, list) for v in (inputs, env, toolchain)):
            msg = "manifest 'inputs', 'env' and 'toolchain' must be lists"
            raise ValueError(msg)
        return cls(
            command=_str_tuple(data["command"], "command"),
            cwd=cwd,
            inputs=tuple(map(_input_from_json, inputs)),
            env=tuple(map(_env_from_json, env)),
            outputs=_str_tuple(data["outputs"], "outputs"),
            salt=salt,
            dependencies=_str_tuple(data["dependencies"], "dependencies"),
            toolchain=tuple(map(_tool_from_json, toolchain)),
            version=version,
        )


def diff_manifests(old: Manifest, new: Manifest) -> list[str]:
    """Explain, line by line, why two manifests give different keys.

    Args:
        old: the manifest stored with the last artifact.
        new: the manifest of this run.

    Returns:
        Lines such as ``"input changed: src/a.py"`` or ``"env changed: CI"`` (never a value);
        empty if the manifests are equal.
    """
    lines: list[str] = []
    if old.version != new.version:
        lines.append("key format changed")
    if old.command != new.command:
        lines.append("command changed")
    if old.cwd != new.cwd:
        lines.append("cwd changed")
    before = {f.path: f for f in old.inputs}
    after = {f.path: f for f in new.inputs}
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            lines.append(f"input added: {path}")
        elif path not in after:
            lines.append(f"input removed: {path}")
        elif before[path] != after[path]:
            lines.append(f"input changed: {path}")
    old_env, new_env = dict(old.env), dict(new.env)
    for name in sorted(old_env.keys() | new_env.keys()):
        if old_env.get(name) != new_env.get(name):
            lines.append(f"env changed: {name}")
    if old.outputs != new.outputs:
        lines.append("outputs changed")
    if old.salt != new.salt:
        lines.append("salt changed")
    if old.dependencies != new.dependencies:
        lines.append("dependency changed")
    lines += [line for line in _diff_toolchains(old.toolchain, new.toolchain) if line not in lines]
    return lines


def _tool_order(tool: ToolDigest) -> str:
    return tool.name


def _diff_toolchains(old: Sequence[ToolDigest], new: Sequence[ToolDigest]) -> list[str]:
    """``toolchain: ruff 0.15.9 -> 0.17.6``; a change no version shows names the tool."""
    lines: list[str] = []
    before, after = {t.name: t for t in old}, {t.name: t for t in new}
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was is None or now is None:
            lines.append(f"toolchain {'added' if was is None else 'removed'}: {name}")
            continue
        if was.digest == now.digest:
            continue
        versions_before, versions_after = dict(was.versions), dict(now.versions)
        changed = []
        for part in [*versions_before, *(p for p in versions_after if p not in versions_before)]:
            a, b = versions_before.get(part), versions_after.get(part)
            if a != b:
                changed.append(
                    f"toolchain: {part} {a} -> {b}"
                    if a is not None and b is not None
                    else f"toolchain: {part} {b} installed"
                    if a is None
                    else f"toolchain: {part} {a} uninstalled"
                )
        lines += changed or [f"toolchain changed: {name}"]
    return lines
