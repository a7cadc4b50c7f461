"""Content digests, the stat cache and the task key.

The only module that imports :mod:`xxhash`. Everything here sits on the cache-hit path, so it
imports nothing heavier than :mod:`re` and :mod:`json`: a file whose ``lstat`` is unchanged since
the last run is not read again (:class:`StatCache`). Which files a set of globs names is
:mod:`cachehook._globs` (glob syntax), :mod:`cachehook._gitignore` and :mod:`cachehook._walk`;
:class:`GlobSet`, :class:`Expansion` and :func:`expand_globs` are re-exported from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

import xxhash

from cachehook._globs import GlobSet, escape_glob
from cachehook._walk import Expansion, expand_globs
from cachehook.errors import ConfigError, HashingError

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping, Sequence
    from pathlib import Path

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

_CHUNK = 1 << 20
_DIGEST_LEN = 32
_STAT_CACHE_VERSION = 1
_RACY_WINDOW_NS = 1_000_000_000
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*\*?"  # compiled on first use, by re's cache
_HEX_DIGITS = frozenset("0123456789abcdef")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
_REGULAR_EXECUTABLE = 0o170000 | stat.S_IXUSR  # the file-type bits and the owner's x bit
_REGULAR_EXECUTABLE_BITS = stat.S_IFREG | stat.S_IXUSR
_FILE_TYPE, _LINK = 0o170000, stat.S_IFLNK
_HAS_DIR_FD = {os.lstat, os.open, os.readlink} <= os.supports_dir_fd


def _logger() -> logging.Logger:
    import logging  # only on the error path: importing logging costs milliseconds

    return logging.getLogger("cachehook")


# --------------------------------------------------------------------------- digests


def digest_bytes(data: bytes) -> str:
    """Digest bytes.

    Args:
        data: the bytes.

    Returns:
        The xxh3-128 hex digest (32 characters).
    """
    return xxhash.xxh3_128_hexdigest(data)


def _digest_fd(fd: int) -> str:
    hasher = xxhash.xxh3_128()
    while chunk := os.read(fd, _CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def digest_file(path: Path) -> str:
    """Digest a file's bytes, streaming in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The xxh3-128 hex digest of its content.

    Raises:
        HashingError: the file is missing or unreadable (the message names it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            return _digest_fd(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        msg = f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}"
        raise HashingError(msg) from exc


# --------------------------------------------------------------------------- file digests


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One input file as it enters the key.

    Attributes:
        path: project-relative POSIX path.
        digest: xxh3-128 of the bytes; for a symlink, of ``b"symlink:" + its text`` and
            what it resolves to (a file's digest and execute bit, or a directory marker).
        executable: the owner's execute bit (always False for a symlink).
    """

    path: str
    digest: str
    executable: bool


@dataclass(frozen=True, slots=True)
class ToolDigest:
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


_SIGNATURE = "%x %x %x %x"  # size, mtime_ns, ctime_ns, inode: %-formatting is the fastest


def _signature(st: os.stat_result) -> str:
    return _SIGNATURE % (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _changed(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)


class _Root:
    """Path operations relative to a project root, through a directory fd where supported."""

    __slots__ = ("fd", "prefix")

    def __init__(self, root: Path) -> None:
        root_str = os.fspath(root)
        self.fd: int | None = None
        self.prefix = root_str + os.sep
        if _HAS_DIR_FD:
            try:
                self.fd = os.open(root_str, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                self.prefix = ""
            except OSError:
                self.fd = None

    def __enter__(self) -> _Root:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def lstat(self, relpath: str) -> os.stat_result:
        return os.lstat(self.prefix + relpath, dir_fd=self.fd)

    def target_stat(self, relpath: str) -> os.stat_result | None:
        """What a symlink resolves to, or None if it dangles (or loops)."""
        try:
            return os.stat(self.prefix + relpath, dir_fd=self.fd)
        except OSError:
            return None

    def read_digest(self, relpath: str, mode: int, target: os.stat_result | None = None) -> str:
        if stat.S_ISLNK(mode):
            return self._link_digest(relpath, target)
        if not stat.S_ISREG(mode):
            msg = f"input {relpath!r} is not a regular file"
            raise HashingError(msg)
        fd = os.open(self.prefix + relpath, _OPEN_FLAGS, dir_fd=self.fd)
        try:
            return _digest_fd(fd)
        finally:
            os.close(fd)

    def _link_digest(self, relpath: str, target: os.stat_result | None) -> str:
        """The link text and what it resolves to (issue 10): a file's bytes and execute bit;
        for a directory a marker (the walk lists the files below it through the link); for a
        dangling link nothing more. No resolved path enters it, only the link's own text."""
        text = b"symlink:" + os.fsencode(os.readlink(self.prefix + relpath, dir_fd=self.fd))
        if target is None:
            return digest_bytes(text)
        if stat.S_ISDIR(target.st_mode):
            return digest_bytes(text + b"\0dir")
        if not stat.S_ISREG(target.st_mode):
            return digest_bytes(text + b"\0other")
        fd = os.open(
            self.prefix + relpath, os.O_RDONLY | getattr(os, "O_BINARY", 0), dir_fd=self.fd
        )
        try:
            content = _digest_fd(fd)
        finally:
            os.close(fd)
        executable = b"x" if target.st_mode & stat.S_IXUSR else b"-"
        return digest_bytes(text + b"\0file:" + content.encode() + executable)


def _input_error(relpath: str, exc: OSError) -> HashingError:
    if isinstance(exc, FileNotFoundError):
        return HashingError(f"input {relpath!r} does not exist")
    return HashingError(f"cannot read input {relpath!r}: {exc.strerror or exc}")


class StatCache:
    """Remembers each file's digest with its ``lstat`` (size, mtime, ctime, inode).

    A file whose four values are unchanged is not read again. The cache is one JSON file per
    project root (the caller picks its path), keyed by project-relative path.

    Timestamps have a granularity (a kernel tick), so a same-size rewrite right after a file
    was read can leave all four values unchanged. A digest read less than a second after the
    file's mtime or ctime is therefore never trusted (the file is read again next time), and
    :meth:`save` leaves out every entry whose mtime or ctime is within a second of the save.
    """

    __slots__ = ("_dirty", "_entries", "_path", "_racy", "_unsaved")

    def __init__(self, path: Path | None) -> None:
        """An empty cache.

        Args:
            path: where :meth:`save` writes; None keeps it in memory only.
        """
        self._path = path
        self._entries: dict[str, str] = {}  # relpath -> "<digest> <size> <mtime> <ctime> <ino>"
        self._unsaved: dict[str, int] = {}  # relpath -> the newer of its mtime and ctime
        self._racy: set[str] = set()  # read too soon after they were written: never trusted
        self._dirty = False

    @classmethod
    def load(cls, path: Path | None) -> StatCache:
        """Read a saved cache; a missing or corrupt file gives an empty one. Never raises.

        Args:
            path: the cache file; None for an in-memory cache.

        Returns:
            The cache.
        """
        cache = cls(path)
        if path is None:
            return cache
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
            entries = data["entries"]
            if (
                data["version"] == _STAT_CACHE_VERSION
                and type(entries) is dict
                and set(map(type, entries.values())) <= {str}
            ):
                cache._entries = entries
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            _logger().debug("ignoring unreadable stat cache %s: %s", path, exc)
        return cache

    def digest(self, root: Path, relpath: str) -> FileDigest:
        """Digest one file, reading it only if its ``lstat`` changed since it was recorded.

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.

        Returns:
            The file's digest.

        Raises:
            HashingError: the file is missing, unreadable, or not a file or symlink.
        """
        return self._digest_all(root, (relpath,))[0]

    def lookup(self, root: Path, relpath: str) -> str | None:
        """The recorded digest if the file is on disk with an unchanged ``lstat`` (never reads).

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.

        Returns:
            The digest, or None.
        """
        entry = self._entries.get(relpath)
        if entry is None or relpath in self._racy:
            return None
        with _Root(root) as at:
            try:
                signature = _signature(at.lstat(relpath))
            except OSError:
                return None
        return entry[:_DIGEST_LEN] if entry[_DIGEST_LEN + 1 :] == signature else None

    def record(self, root: Path, relpath: str, digest: str) -> None:
        """Remember a digest for a file as it is on disk now (after a restore or a store).

        Args:
            root: the project root.
            relpath: the file, project-relative POSIX.
            digest: its known xxh3-128 hex digest.

        Raises:
            HashingError: the file is missing.
            ValueError: ``digest`` is not a 32-character lower-case hex digest.
        """
        if len(digest) != _DIGEST_LEN or not _HEX_DIGITS.issuperset(digest):
            msg = f"not an xxh3-128 hex digest: {digest!r}"
            raise ValueError(msg)
        with _Root(root) as at:
            try:
                st = at.lstat(relpath)
            except OSError as exc:
                raise _input_error(relpath, exc) from exc
        self._remember(relpath, digest, _signature(st), _changed(st), was_read=False)

    def save(self) -> None:
        """Write the cache atomically, if it changed; an OSError is logged, never raised.

        Entries whose mtime or ctime is within a second of now are left out (see the class).
        """
        if not self._dirty or self._path is None:
            return
        horizon = time.time_ns() - _RACY_WINDOW_NS
        held = {rel: ts for rel, ts in self._unsaved.items() if ts >= horizon}
        entries = self._entries
        if held or self._racy:
            entries = {r: e for r, e in entries.items() if r not in held and r not in self._racy}
        path = os.fspath(self._path)
        tmp = f"{path}.{os.getpid()}.{id(self):x}.tmp"
        data = json.dumps({"version": _STAT_CACHE_VERSION, "entries": entries})
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="ascii") as file:
                file.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            _logger().warning("could not save the stat cache %s: %s", path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._unsaved = held  # written by a later save, once they are old enough
        self._dirty = bool(held)

    def _remember(
        self, relpath: str, digest: str, signature: str, changed: int, *, was_read: bool
    ) -> None:
        self._entries[relpath] = f"{digest} {signature}"
        self._unsaved[relpath] = changed
        self._dirty = True
        if was_read and changed >= time.time_ns() - _RACY_WINDOW_NS:
            self._racy.add(relpath)
        else:
            self._racy.discard(relpath)

    def _digest_all(self, root: Path, paths: Sequence[str]) -> tuple[FileDigest, ...]:
        # The warm path: one lstat per file and no read. Names are bound locally for speed.
        get, cut, size, form = self._entries.get, _DIGEST_LEN + 1, _DIGEST_LEN, _SIGNATURE
        mask, executable_bits, racy = _REGULAR_EXECUTABLE, _REGULAR_EXECUTABLE_BITS, self._racy
        out: list[FileDigest] = []
        append, make = out.append, FileDigest
        with _Root(root) as at:
            lstat, prefix, fd = os.lstat, at.prefix, at.fd
            for relpath in paths:
                try:
                    st = lstat(prefix + relpath, dir_fd=fd)
                except OSError as exc:
                    raise _input_error(relpath, exc) from exc
                signature = form % (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                target = None
                if st.st_mode & _FILE_TYPE == _LINK:  # the target's stat too (issue 10)
                    target = at.target_stat(relpath)
                    signature += " " + (_signature(target) if target is not None else "-")
                entry = get(relpath)
                if entry is not None and entry[cut:] == signature and relpath not in racy:
                    digest = entry[:size]
                else:
                    try:
                        digest = at.read_digest(relpath, st.st_mode, target)
                    except OSError as exc:
                        raise _input_error(relpath, exc) from exc
                    changed = (
                        _changed(st) if target is None else max(_changed(st), _changed(target))
                    )
                    self._remember(relpath, digest, signature, changed, was_read=True)
                # A regular file with its owner's execute bit (a symlink never is executable).
                append(make(relpath, digest, st.st_mode & mask == executable_bits))
        return tuple(out)


def hash_files(root: Path, paths: Sequence[str], cache: StatCache) -> tuple[FileDigest, ...]:
    """Digest files through a stat cache.

    Args:
        root: the project root.
        paths: project-relative POSIX paths (as :func:`expand_globs` gives them).
        cache: unchanged files are taken from here; new digests are recorded in it.

    Returns:
        One digest per path, in the order given.

    Raises:
        HashingError: a file is missing, unreadable, or not a file or symlink.
    """
    return cache._digest_all(root, paths)


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


_MANIFEST_KEYS = frozenset(
    {"version", "command", "cwd", "inputs", "env", "outputs", "salt", "dependencies", "toolchain"}
)


@dataclass(frozen=True, slots=True)
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

    command: tuple[str, ...]
    cwd: str
    inputs: tuple[FileDigest, ...]
    env: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    salt: str = ""
    dependencies: tuple[str, ...] = ()
    toolchain: tuple[ToolDigest, ...] = ()
    version: int = KEY_FORMAT_VERSION

    def __post_init__(self) -> None:
        inputs = tuple(self.inputs)
        paths = [f.path for f in inputs]
        if paths != sorted(paths):
            inputs = tuple(sorted(inputs, key=lambda f: f.path))
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "env", tuple(sorted(tuple(pair) for pair in self.env)))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "dependencies", tuple(sorted(self.dependencies)))
        object.__setattr__(self, "toolchain", tuple(sorted(self.toolchain, key=_tool_order)))

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
