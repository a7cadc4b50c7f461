"""The toolchain a task runs with, as it enters the key (issue 10).

Over 400 lines on purpose: telling one Python environment from another (venvs, pyenv shims,
shebangs, distributions and their direct-URL sources) is one concept with many cases; each
case is a small function, in the order the lookup runs.

For each tool (the executable a task runs, found through the task's ``PATH`` as the process
launcher finds it, and each name in its ``tools``): when it belongs to a Python environment (an
interpreter, a file in a venv's ``bin/``, or a script whose shebang names an interpreter), that
interpreter's implementation, version, ABI and platform and the distributions installed in its
site directories (name, version and, for a direct-URL install, its source: a VCS commit, an
archive hash, ``editable``); otherwise the digest of the file. A pyenv shim is followed to the
interpreter pyenv would pick. No absolute path enters a digest, so two clones with the same
environment on the same platform share keys.

Identifying an environment reads every ``*.dist-info`` of it and may ask the interpreter about
itself (a child process, unless it is the running interpreter's own binary). The answer is kept
in one JSON file under the cache directory with the ``stat`` of what it depends on (the files
found, the interpreter binary, ``pyvenv.cfg``, each site directory), so a warm lookup costs a
handful of ``stat`` calls and starts nothing.
"""

from __future__ import annotations

import _thread  # threading's Lock, without importing threading on a hit (issue 11)
import contextlib
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from cachehook.errors import HashingError
from cachehook.hashing import ToolDigest, digest_bytes, digest_file

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = ["INTERPRETER_LABEL", "Toolchain", "describe_tool", "find_executable"]

INTERPRETER_LABEL = "(interpreter)"
"""The name a task's in-process interpreter (a decorated function, a nox session) is keyed under."""

_CACHE_VERSION = 2
_MAX_ENTRIES = 2000
_ENVIRONMENT_KEYS = frozenset({"interpreter", "signatures", "site"})


def _is_environment_entry(entry: object) -> bool:
    """A saved environment has what a lookup reads (a damaged cache file is ignored)."""
    if not isinstance(entry, dict) or not entry.keys() >= _ENVIRONMENT_KEYS:
        return False
    interpreter = entry["interpreter"]
    if interpreter is None:
        return isinstance(entry.get("binary"), str)
    return isinstance(interpreter, dict) and isinstance(entry.get("distributions"), list)


_RACY_WINDOW_NS = 1_000_000_000
_HEAD = 1024
_MAX_DEPTH = 3  # a script whose interpreter is a script whose interpreter is...
# Patterns, not compiled objects: re compiles (and caches) them on first use, not at import on
# every hit (issue 11).
_PYTHON_NAME = r"(?i)(?:python|pypy)(?:\d+(?:\.\d+)*)?[dmtu]*(?:\.exe)?"
_NORMALIZE = r"[-_.]+"
_PROBE_TIMEOUT = 60.0

# Run by the interpreter being identified (``python -E -c``) or, for our own binary, exec'd
# here with the environment's prefixes. Plain enough for any Python 3.
_PROBE = r"""
import json, site, sys, sysconfig

def describe(prefixes=None, user=None):
    v = sys.version_info
    version = "%d.%d.%d" % tuple(v[:3])
    if v.releaselevel != "final":
        version += {"alpha": "a", "beta": "b", "candidate": "rc"}.get(v.releaselevel, "")
        version += str(v.serial)
    impl = sys.implementation
    if prefixes is None:
        prefixes = list(getattr(site, "PREFIXES", [sys.prefix]))
        user = bool(getattr(site, "ENABLE_USER_SITE", False))
    dirs = list(site.getsitepackages(prefixes)) if hasattr(site, "getsitepackages") else []
    if user:
        dirs.insert(0, site.getusersitepackages())
    abi = sysconfig.get_config_var("SOABI") or sysconfig.get_config_var("EXT_SUFFIX") or ""
    return {
        "implementation": impl.name,
        "implementation_version": "%d.%d.%d" % tuple(impl.version[:3]),
        "version": version,
        "abi": abi,
        "platform": sysconfig.get_platform(),
        "site": list(dict.fromkeys(dirs)),
    }

if __name__ == "__main__":
    sys.stdout.write(json.dumps(describe()))
"""


def _logger() -> Any:
    import logging

    return logging.getLogger("cachehook")


def _signature(path: str) -> str:
    """The ``stat`` of what a path points to, or ``-`` when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_size:x} {st.st_mtime_ns:x} {st.st_ctime_ns:x} {st.st_ino:x} {st.st_dev:x}"


def _is_recent(signatures: Sequence[str], horizon: int) -> bool:
    """Whether a signature was taken within a second of a change (a kernel tick may hide one)."""
    for signature in signatures:
        fields = signature.split()
        if len(fields) == 5 and max(int(fields[1], 16), int(fields[2], 16)) >= horizon:
            return True
    return False


def _is_executable_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000 and os.access(path, os.X_OK)


def find_executable(name: str, *, cwd: str, search_path: str | None = None) -> str | None:
    """Find ``name`` as ``subprocess``/``execvp`` would: a path with a slash is taken relative to
    ``cwd``; a bare name is looked up in each directory of ``search_path`` (default: ``PATH``).

    Args:
        name: ``argv[0]`` or a tool's name.
        cwd: the task's working directory.
        search_path: the ``PATH`` the task runs with.

    Returns:
        The absolute path found (symlinks not resolved), or None.
    """
    if not name:
        return None
    if os.sep in name or (os.altsep is not None and os.altsep in name):
        candidate = os.path.join(cwd, name)
        return os.path.normpath(candidate) if _is_executable_file(candidate) else None
    if search_path is None:
        search_path = os.environ.get("PATH", os.defpath)
    suffixes = [""]
    if sys.platform == "win32":  # pragma: no cover - the launcher adds PATHEXT there
        suffixes += os.environ.get("PATHEXT", ".EXE").lower().split(os.pathsep)
    for directory in search_path.split(os.pathsep):
        for suffix in suffixes:
            candidate = os.path.join(cwd, directory, name + suffix)
            if _is_executable_file(candidate):
                return os.path.normpath(candidate)
    return None


def describe_tool(tool: ToolDigest) -> str:
    """One line for ``--dry-run``: ``python 3.11.7, 63 distributions`` or ``true 3f2a9c01d2e4``."""
    if tool.versions and tool.versions[0][0] == "python":
        count = len(tool.versions) - 1
        return f"python {tool.versions[0][1]}, {count} distribution{'s' * (count != 1)}"
    return ", ".join(f"{name} {value}".strip() for name, value in tool.versions)


def _venv_of(path: str) -> str | None:
    """The venv prefix when ``path`` lies in a venv's ``bin/`` (or ``Scripts\\``)."""
    prefix = os.path.dirname(os.path.dirname(path))
    return prefix if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")) else None


def _short(label: str) -> str:
    return os.path.basename(label) or label


def _normalize(name: str) -> str:
    return re.sub(_NORMALIZE, "-", name).lower()


# --------------------------------------------------------------------------- distributions


def _read_metadata(path: str) -> tuple[str, str] | None:
    """``Name`` and ``Version`` from a METADATA / PKG-INFO file's headers."""
    name = version = None
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key == "Name":
                    name = value.strip()
                elif key == "Version":
                    version = value.strip()
                if name is not None and version is not None:
                    return name, version
    except OSError:
        return None
    return None


def _record_digest(dist_info: str) -> str:
    """The installed files of a non-editable local directory install (its version may lie)."""
    lines = []
    own = os.path.basename(dist_info) + "/"
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8", errors="replace") as file:
            for line in file:
                path, _, rest = line.strip().partition(",")
                # Scripts outside site-packages carry an absolute shebang; our own files an URL.
                if path and not path.startswith(("../", "/", own)):
                    lines.append(f"{path},{rest.partition(',')[0]}")
    except OSError:
        return "unreadable"
    return digest_bytes("\n".join(sorted(lines)).encode())


def _direct_source(dist_info: str) -> str:
    """A PEP 610 install's source identity, without any local path; "" for an index install."""
    try:
        with open(os.path.join(dist_info, "direct_url.json"), "rb") as file:
            data = json.loads(file.read())
    except FileNotFoundError:
        return ""
    except (OSError, ValueError):
        return "direct (unreadable)"
    if not isinstance(data, dict):
        return "direct (unreadable)"
    url = data["url"] if isinstance(data.get("url"), str) else ""
    vcs, archive, directory = data.get("vcs_info"), data.get("archive_info"), data.get("dir_info")
    if isinstance(vcs, dict):
        return f"{vcs.get('vcs', 'vcs')} {vcs.get('commit_id', url)}"
    if isinstance(archive, dict):
        hashes = archive.get("hashes")
        if isinstance(hashes, dict) and hashes:
            algorithm = "sha256" if "sha256" in hashes else sorted(hashes)[0]
            return f"archive {algorithm}={hashes[algorithm]}"
        if isinstance(archive.get("hash"), str):
            return f"archive {archive['hash']}"
        return f"archive {url.rsplit('/', 1)[-1]}"
    if isinstance(directory, dict) and directory.get("editable"):
        return "editable"
    if isinstance(directory, dict):
        return f"directory {_record_digest(dist_info)}"
    return "direct"


def _distributions(site_dirs: Sequence[str]) -> list[list[str]]:
    """``[name, version, source]`` of every distribution, site directory by site directory."""
    found: list[list[str]] = []
    for directory in site_dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for entry in names:
            path = os.path.join(directory, entry)
            if entry.endswith(".dist-info"):
                metadata, source = os.path.join(path, "METADATA"), _direct_source(path)
            elif entry.endswith(".egg-info"):
                is_dir = os.path.isdir(path)
                metadata, source = (os.path.join(path, "PKG-INFO") if is_dir else path), "egg"
            else:
                continue
            header = _read_metadata(metadata)
            if header is None:  # a damaged install: keyed by its directory name
                stem = entry.rsplit(".", 1)[0]
                name, _, version = stem.partition("-")
                header, source = (name, version or "?"), "no metadata"
            found.append([_normalize(header[0]), header[1], source])
    return found


# --------------------------------------------------------------------------- interpreters


def _pyvenv_includes_system(prefix: str) -> bool:
    try:
        with open(os.path.join(prefix, "pyvenv.cfg"), encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip().lower() == "include-system-site-packages":
                    return value.strip().lower() == "true"
    except OSError:
        pass
    return False


def _probe_here(venv: str | None) -> dict[str, Any]:
    """Describe an interpreter that is our own binary, without starting it."""
    namespace: dict[str, Any] = {"__name__": "cachehook_probe"}
    exec(compile(_PROBE, "<cachehook probe>", "exec"), namespace)  # our own code, not input
    if venv is None:
        return namespace["describe"]([sys.base_prefix], True)  # type: ignore[no-any-return]
    system = _pyvenv_includes_system(venv)
    prefixes = [venv, sys.base_prefix] if system else [venv]
    return namespace["describe"](prefixes, system)  # type: ignore[no-any-return]


def _probe_child(interpreter: str) -> dict[str, Any] | None:
    import subprocess  # a cold lookup only

    try:
        done = subprocess.run(
            [interpreter, "-E", "-c", _PROBE],
            cwd=os.path.dirname(interpreter) or None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
        data = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        _logger().debug("cannot ask %s about itself: %s", interpreter, exc)
        return None
    keys = {"implementation", "implementation_version", "version", "abi", "platform"}
    if (
        not isinstance(data, dict)
        or not keys <= data.keys()
        or not isinstance(data.get("site"), list)
    ):
        return None
    if not all(isinstance(data[key], str) for key in keys):
        return None
    return {**{key: data[key] for key in keys}, "site": data["site"]}


def _describe_interpreter(interpreter: str) -> dict[str, Any] | None:
    real = os.path.realpath(interpreter)
    if real == os.path.realpath(sys.executable):
        return _probe_here(_venv_of(interpreter))
    return _probe_child(interpreter)


# --------------------------------------------------------------------------- shebangs


def _parse_shebang(head: bytes) -> tuple[list[str], int] | None:
    """The interpreter's argv and where the script's own text starts, or None (no shebang).

    Understands pip's ``/bin/sh`` trampoline for interpreter paths too long for a shebang.
    """
    if not head.startswith(b"#!"):
        return None
    first, _, rest = head.partition(b"\n")
    argv = os.fsdecode(first[2:]).strip().split()
    if not argv:
        return None
    second, _, third_and_more = rest.partition(b"\n")
    if os.path.basename(argv[0]) == "sh" and second.startswith(b"'''exec' "):
        import shlex

        with contextlib.suppress(ValueError):
            words = shlex.split(os.fsdecode(second[len(b"'''exec' ") :]))
            third = third_and_more.partition(b"\n")[0]
            if words:
                return [words[0]], len(first) + len(second) + len(third) + 3
    return argv, len(first) + 1


def _digest_body(path: str, skip: int) -> str:
    """A script's digest without its shebang (which holds a machine's absolute path)."""
    with open(path, "rb") as file:
        file.seek(skip)
        return digest_bytes(file.read())


def _digest_whole(path: str) -> str:
    from pathlib import Path

    return digest_file(Path(path))


# --------------------------------------------------------------------------- pyenv


def _words(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read(4096)
    except OSError:
        return None
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return " ".join(lines).split()


def _pyenv_versions(root: str, cwd: str, environ: Mapping[str, str]) -> list[str]:
    chosen = environ.get("PYENV_VERSION")
    if chosen:
        return chosen.split(":")
    directory = os.path.abspath(environ.get("PYENV_DIR") or cwd)
    while True:
        words = _words(os.path.join(directory, ".python-version"))
        if words is not None:
            return words
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return _words(os.path.join(root, "version")) or ["system"]


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def _pyenv_target(shim: str, cwd: str, search_path: str | None) -> tuple[str | None, str]:
    """What a pyenv shim runs: (the program, the versions it was chosen from)."""
    shims = os.path.dirname(shim)
    root, program = os.path.dirname(shims), os.path.basename(shim)
    chosen = _pyenv_versions(root, cwd, os.environ)
    for version in chosen:
        if version == "system":
            rest = (search_path or os.environ.get("PATH", "")).split(os.pathsep)
            kept = [d for d in rest if os.path.abspath(os.path.join(cwd, d)) != shims]
            found = find_executable(program, cwd=cwd, search_path=os.pathsep.join(kept))
        else:
            versions = os.path.join(root, "versions")
            if not os.path.isdir(os.path.join(versions, version)):
                with contextlib.suppress(OSError):  # pyenv takes "3.12" as the latest 3.12.x
                    prefixed = [v for v in os.listdir(versions) if v.startswith(version + ".")]
                    version = max(prefixed, key=_version_key, default=version)
            found = find_executable(os.path.join(versions, version, "bin", program), cwd=cwd)
        if found is not None:
            return found, ":".join(chosen)
    return None, ":".join(chosen)


def _is_pyenv_shim(path: str) -> bool:
    shims = os.path.dirname(path)
    return os.path.basename(shims) == "shims" and os.path.isdir(
        os.path.join(os.path.dirname(shims), "versions")
    )


def _summarize(
    python: dict[str, Any], distributions: list[list[str]]
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """An environment's identity digest and the versions ``explain`` shows."""
    shown = python["version"]
    if python["implementation"] != "cpython":
        shown = f"{python['implementation']} {python['implementation_version']} ({shown})"
    versions = [("python", shown)]
    seen = {"python"}
    for name, version, _ in distributions:
        if name not in seen:  # the first on sys.path is the one imported
            seen.add(name)
            versions.append((name, version))
    identity = json.dumps([python, distributions], sort_keys=True)
    return digest_bytes(identity.encode()), tuple(versions)


# --------------------------------------------------------------------------- the cache


class Toolchain:
    """Identifies tools, remembering each answer with the ``stat`` of what it depends on.

    Thread-safe: tasks of one graph are prepared on several threads.
    """

    def __init__(self, path: Path | None) -> None:
        """An empty cache; ``path`` is where :meth:`save` writes (None: memory only)."""
        self._path = path
        self._files: dict[str, list[Any]] = {}  # found path -> [signature, kind, digest, ...]
        self._pythons: dict[str, dict[str, Any]] = {}  # interpreter path -> environment
        # interpreter path -> (its environment entry, identity digest, versions): built once
        self._summaries: dict[str, tuple[dict[str, Any], str, tuple[tuple[str, str], ...]]] = {}
        self._dirty = False
        self._lock = _thread.allocate_lock()

    @classmethod
    def load(cls, path: Path | None) -> Toolchain:
        """Read a saved cache; a missing or damaged file gives an empty one. Never raises."""
        toolchain = cls(path)
        if path is None:
            return toolchain
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
            if data.get("version") == _CACHE_VERSION:
                toolchain._files = {
                    path: entry
                    for path, entry in data["files"].items()
                    if isinstance(entry, list) and len(entry) == 5
                }
                toolchain._pythons = {
                    path: entry
                    for path, entry in data["pythons"].items()
                    if _is_environment_entry(entry)
                }
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            _logger().debug("ignoring unreadable toolchain cache %s: %s", path, exc)
        return toolchain

    def save(self) -> None:
        """Write the cache atomically if it changed; an OSError is logged, never raised."""
        if not self._dirty or self._path is None:
            return
        with self._lock:
            # One file for every project on this cache: bounded by starting over, not by LRU.
            if len(self._files) > _MAX_ENTRIES or len(self._pythons) > _MAX_ENTRIES:
                self._files, self._pythons = {}, {}
            data = json.dumps(
                {"version": _CACHE_VERSION, "files": self._files, "pythons": self._pythons}
            )
            self._dirty = False
        from cachehook._atomic import replace_file

        replace_file(self._path, data.encode(), what="the toolchain cache")

    def identify(
        self,
        tools: Sequence[str],
        *,
        cwd: str,
        search_path: str | None = None,
        interpreter: str | None = None,
    ) -> tuple[ToolDigest, ...]:
        """The toolchain of one task.

        Args:
            tools: names as the task gives them (``argv[0]`` first, then ``tools``); each is
                found as the process launcher would find it.
            cwd: the task's working directory.
            search_path: the ``PATH`` the task runs with (default: this process's).
            interpreter: an in-process task's interpreter (absolute), keyed as
                :data:`INTERPRETER_LABEL`.

        Returns:
            One digest per distinct name, sorted by name.
        """
        found: dict[str, ToolDigest] = {}
        with self._lock:
            if interpreter is not None:
                found[INTERPRETER_LABEL] = self._tool(INTERPRETER_LABEL, interpreter, cwd, None, 0)
            for name in tools:
                if name not in found:
                    path = find_executable(name, cwd=cwd, search_path=search_path)
                    found[name] = self._tool(name, path, cwd, search_path, 0)
        return tuple(found[name] for name in sorted(found))

    # -- one tool -------------------------------------------------------------------------

    def _tool(
        self, label: str, path: str | None, cwd: str, search_path: str | None, depth: int
    ) -> ToolDigest:
        if path is None:
            return ToolDigest(label, digest_bytes(b"not found"), ((_short(label), "not found"),))
        if _is_pyenv_shim(path):
            target, selected = _pyenv_target(path, cwd, search_path)
            if target is None:  # keyed on what pyenv was asked for, then
                identity = f"pyenv shim {os.path.basename(path)} {selected}"
                return ToolDigest(label, digest_bytes(identity.encode()), (("pyenv", selected),))
            path = target
        kind, digest, shebang, venv_python = self._file(path)
        if kind == "python":
            return self._python_tool(label, path, "")
        if kind == "script":
            interpreter = self._shebang_interpreter(shebang, cwd, search_path)
            if interpreter is None or depth >= _MAX_DEPTH:
                return self._file_tool(label, digest, None)
            if self._is_python(interpreter) or _venv_of(interpreter) is not None:
                return self._python_tool(label, interpreter, digest)
            inner = self._tool(_short(interpreter), interpreter, cwd, search_path, depth + 1)
            return self._file_tool(label, digest, inner)
        if venv_python is not None:  # a native tool a wheel installed (ruff, uv)
            return self._python_tool(label, venv_python, digest)
        return self._file_tool(label, digest, None)

    def _file_tool(self, label: str, digest: str, inner: ToolDigest | None) -> ToolDigest:
        versions = [(_short(label), digest[:12])]
        if inner is None:
            return ToolDigest(label, digest, tuple(versions))
        versions += [pair for pair in inner.versions if pair not in versions]
        combined = digest_bytes(f"{digest} {inner.digest}".encode())
        return ToolDigest(label, combined, tuple(versions))

    def _python_tool(self, label: str, interpreter: str, digest: str) -> ToolDigest:
        """An environment's tool: the interpreter, its distributions, the file's own digest."""
        environment = self._environment(interpreter)
        python = environment["interpreter"]
        if python is None:
            binary = environment["binary"]
            if not digest:
                return self._file_tool(label, binary, None)
            return self._file_tool(
                label, digest, ToolDigest("", binary, ((_short(interpreter), binary[:12]),))
            )
        summary = self._summaries.get(interpreter)
        if summary is None or summary[0] is not environment:
            summary = (environment, *_summarize(python, environment["distributions"]))
            self._summaries[interpreter] = summary
        _, identity, versions = summary
        return ToolDigest(label, digest_bytes(f"{identity} {digest}".encode()), versions)

    def _is_python(self, path: str) -> bool:
        if re.fullmatch(_PYTHON_NAME, os.path.basename(path)):
            return True
        return bool(re.fullmatch(_PYTHON_NAME, os.path.basename(os.path.realpath(path))))

    def _venv_python(self, venv: str) -> str | None:
        for relative in ("bin/python", "bin/python3", "Scripts/python.exe"):
            candidate = os.path.join(venv, relative)
            if _is_executable_file(candidate):
                return candidate
        return None

    def _shebang_interpreter(
        self, argv: list[str] | None, cwd: str, search_path: str | None
    ) -> str | None:
        if not argv:
            return None
        program = argv[0]
        if os.path.basename(program) == "env":  # "#!/usr/bin/env -S python3 -u"
            words = [w for w in argv[1:] if not w.startswith("-") and "=" not in w]
            return find_executable(words[0], cwd=cwd, search_path=search_path) if words else None
        return program if _is_executable_file(program) else None

    # -- cached facts -------------------------------------------------------------------------

    def _file(self, path: str) -> tuple[str, str, list[str] | None, str | None]:
        """(kind, digest, shebang argv, its venv's python) of a file; kind is ``python``,
        ``script`` or ``binary``. Its ``stat`` follows links: a retargeted link is a change."""
        signature = _signature(path)
        entry = self._files.get(path)
        if entry is not None and entry[0] == signature:
            return entry[1], entry[2], entry[3], entry[4]
        real = os.path.realpath(path)
        shebang: list[str] | None = None
        venv = _venv_of(path) or _venv_of(real)
        venv_python = self._venv_python(venv) if venv is not None else None
        try:
            with open(real, "rb") as file:
                head = file.read(_HEAD)
            parsed = _parse_shebang(head)
            if self._is_python(path) and parsed is None:
                kind, digest = "python", ""
            elif parsed is not None:
                shebang, skip = parsed
                kind, digest = "script", _digest_body(real, skip)
            else:
                kind, digest = "binary", _digest_whole(real)
        except (OSError, HashingError) as exc:  # an unreadable tool is keyed as such
            _logger().debug("cannot read the tool %s: %s", path, exc)
            kind, digest = "binary", digest_bytes(b"unreadable")
        if not _is_recent([signature], time.time_ns() - _RACY_WINDOW_NS):
            self._files[path] = [signature, kind, digest, shebang, venv_python]
            self._dirty = True
        return kind, digest, shebang, venv_python

    def _environment_signatures(self, interpreter: str, site: Sequence[str]) -> list[str]:
        prefix = os.path.dirname(os.path.dirname(interpreter))
        # The binary (through a venv's link) and pyvenv.cfg ("-" when it is no venv).
        signatures = [_signature(interpreter), _signature(os.path.join(prefix, "pyvenv.cfg"))]
        signatures += [_signature(directory) for directory in site]
        return signatures

    def _environment(self, interpreter: str) -> dict[str, Any]:
        """The interpreter and its distributions; ``interpreter`` None when it would not say."""
        entry = self._pythons.get(interpreter)
        if entry is not None:
            current = self._environment_signatures(interpreter, entry["site"])
            if current == entry["signatures"]:
                return entry
        described = _describe_interpreter(interpreter)
        if described is None:  # not a Python after all, or a broken one: its bytes, then
            site: list[str] = []
            entry = {"interpreter": None, "binary": _digest_whole(os.path.realpath(interpreter))}
        else:
            site = [d for d in described.pop("site") if isinstance(d, str)]
            entry = {"interpreter": described, "distributions": _distributions(site)}
        signatures = self._environment_signatures(interpreter, site)
        entry.update(signatures=signatures, site=site)
        if not _is_recent(signatures, time.time_ns() - _RACY_WINDOW_NS):
            self._pythons[interpreter] = entry
            self._dirty = True
        return entry
