"""uv workspaces: the root, its members, their dependencies on each other, and ``uv.lock``.

A workspace root is the nearest ``pyproject.toml`` with a ``[tool.uv.workspace]`` table. Its
members are the directories its ``members`` globs match, less those ``exclude`` matches, read
as uv reads them (issue 14): a matched directory with files but no ``pyproject.toml`` is an
error, an empty or hidden one is skipped; the root is a member too when it has a ``[project]``.
A member depends on another when one of its requirements (``[project].dependencies``, an
optional dependency, a PEP 735 dependency group or ``tool.uv.dev-dependencies``) names it and
``[tool.uv.sources]`` (the member's, else the root's) says ``{ workspace = true }``.

``uv.lock`` gives each member's locked closure: every package it can import through its own
requirements (all extras and groups), transitively, with version and source. A task's key holds
that closure's digest, so a bump that only ``app`` reaches leaves ``lib``'s tasks cached.

Over the 400-line aim (~430): discovery and the ``uv.lock`` reader share ``Member`` and the
name rules; the reader (from ``_read_lock`` down) is the seam to split along next.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "LockedPackage",
    "Member",
    "Workspace",
    "find_workspace_root",
    "load_workspace",
    "locked_closures",
    "normalize_name",
]

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares them: lowercase, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Member:
    """One workspace member.

    Attributes:
        name: the normalized ``[project].name``.
        path: its directory relative to the workspace root, POSIX (``"."`` for the root).
        dependencies: the members it depends on directly (normalized names).
        table: its own ``[tool.cachehook]`` table.
    """

    name: str
    path: str
    dependencies: frozenset[str] = frozenset()
    table: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LockedPackage:
    """One package of a member's locked closure, as ``uv.lock`` pins it."""

    name: str
    version: str
    source: str
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workspace:
    """A uv workspace: its root, members by name, and each member's locked closure."""

    root: Path
    members: Mapping[str, Member]
    # None: no uv.lock. A member missing from the lock gets the whole file's digest.
    closures: Mapping[str, tuple[LockedPackage, ...]] | None = None
    lock_digest: str = ""

    def names(self) -> list[str]:
        return sorted(self.members)

    def dependencies(self, name: str) -> list[str]:
        """Every member ``name`` depends on, directly or not (sorted)."""
        return sorted(_reach(name, lambda n: self.members[n].dependencies))

    def dependents(self, name: str) -> list[str]:
        """Every member that depends on ``name``, directly or not (sorted)."""
        users: dict[str, set[str]] = {n: set() for n in self.members}
        for member in self.members.values():
            for dependency in member.dependencies:
                users[dependency].add(member.name)
        return sorted(_reach(name, lambda n: users[n]))

    def member_at(self, path: str) -> Member | None:
        """The member whose directory holds ``path`` (root-relative POSIX), deepest first."""

        def depth(member: Member) -> int:
            return 0 if member.path == "." else member.path.count("/") + 1

        holding = [
            m
            for m in self.members.values()
            if m.path == "." or (path + "/").startswith(m.path + "/")
        ]
        return max(holding, key=depth, default=None)

    def closure_digest(self, name: str) -> str | None:
        """What of ``uv.lock`` enters ``name``'s keys; None without a lock file."""
        if self.closures is None:
            return None
        closure = self.closures.get(name)
        if closure is None:
            return f"uv.lock {self.lock_digest}"  # a stale lock: all of it counts
        from cachehook.hashing import digest_bytes

        rows = [[p.name, p.version, p.source, list(p.hashes)] for p in closure]
        return digest_bytes(json.dumps(rows, sort_keys=True).encode())


def _reach(start: str, step: Any) -> set[str]:
    seen: set[str] = set()
    todo = list(step(start))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(step(name))
    seen.discard(start)
    return seen


# --------------------------------------------------------------------------- discovery


def _read_toml(path: Path, *, unless_without: str = "") -> dict[str, Any]:
    """``path`` parsed; empty, unparsed, when its text lacks ``unless_without``."""
    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        if unless_without not in text and "\\u" not in text and "\\U" not in text:
            # No key can spell the name (not even with a \u escape): skip the parse, ~40 ms
            # for a project of 200 tasks.
            return {}
        return tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: malformed TOML: {exc}"
        raise ConfigError(msg) from exc


def _table(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return dict(data)


def find_workspace_root(start: Path) -> Path | None:
    """The nearest directory from ``start`` up whose pyproject.toml has ``[tool.uv.workspace]``."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        path = candidate / "pyproject.toml"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "workspace" in text and "workspace" in _table(_read_toml(path), "tool", "uv"):
            return candidate
    return None


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        msg = f"{where}: expected an array of strings"
        raise ConfigError(msg)
    return list(value)


def _glob_dirs(root: Path, patterns: Iterable[str], where: str) -> set[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        if PurePosixPath(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
            msg = f"{where}: {pattern!r} must be relative to the workspace root, without '..'"
            raise ConfigError(msg)
        if pattern in (".", ""):
            found.add(root)
            continue
        # A last '**' matches what is below a directory, not the directory itself, in uv's
        # globs; Python's glob yields the directory too.
        parts = PurePosixPath(pattern).parts
        bases: set[Path] = set()
        if parts[-1] == "**":
            bases = set(root.glob(str(PurePosixPath(*parts[:-1])))) if len(parts) > 1 else {root}
        for path in root.glob(pattern):
            relative = path.relative_to(root)
            if path in bases:
                continue
            if path.is_dir() and not any(part.startswith(".") for part in relative.parts):
                found.add(path)
    return found


def _member_dirs(root: Path, workspace: Mapping[str, Any]) -> list[Path]:
    where = f"{root / 'pyproject.toml'}: [tool.uv.workspace]"
    included = _glob_dirs(root, _strings(workspace.get("members", []), f"{where} members"), where)
    excluded = _glob_dirs(root, _strings(workspace.get("exclude", []), f"{where} exclude"), where)
    dirs: list[Path] = []
    for path in sorted(included - excluded):
        if (path / "pyproject.toml").is_file():
            dirs.append(path)
        elif any(path.iterdir()):
            relative = path.relative_to(root).as_posix()
            msg = (
                f"{where} members: {relative} has no pyproject.toml; add one, or list it "
                "under exclude (uv stops on this too)"
            )
            raise ConfigError(msg)
    return dirs


def _requirements(project: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    found: list[object] = list(project.get("dependencies", []) or [])
    for extra in _table(project, "optional-dependencies").values():
        found.extend(extra or [])
    for group in _table(data, "dependency-groups").values():
        found.extend(group or [])  # {include-group = ...} tables fall out below
    found.extend(_table(data, "tool", "uv").get("dev-dependencies", []) or [])
    names = []
    for item in found:
        match = _REQUIREMENT_NAME.match(item) if isinstance(item, str) else None
        if match:
            names.append(normalize_name(match.group(1)))
    return names


def _is_workspace_source(source: object) -> bool:
    sources = source if isinstance(source, list) else [source]
    return any(isinstance(s, dict) and s.get("workspace") is True for s in sources)


def _read_member(
    root: Path, path: Path, root_sources: Mapping[str, Any]
) -> tuple[Member, list[str]]:
    data = _read_toml(path / "pyproject.toml")
    project = _table(data, "project")
    name = project.get("name")
    relative = path.relative_to(root).as_posix() or "."
    if not isinstance(name, str) or not name:
        msg = f"{relative}/pyproject.toml: a workspace member needs [project] name"
        raise ConfigError(msg)
    sources = {normalize_name(k): v for k, v in root_sources.items()}
    sources.update({normalize_name(k): v for k, v in _table(data, "tool", "uv", "sources").items()})
    wanted = [n for n in _requirements(project, data) if _is_workspace_source(sources.get(n))]
    member = Member(normalize_name(name), relative, table=_table(data, "tool", "cachehook"))
    return member, wanted


def load_workspace(root: Path) -> Workspace | None:
    """Read the uv workspace rooted at ``root``; None if its pyproject.toml declares none.

    Raises:
        ConfigError: a malformed pyproject.toml or uv.lock, a member without a name or
            pyproject.toml, two members with one name, or a workspace source naming no member.
    """
    root = root.resolve()
    path = root / "pyproject.toml"
    # Settings have parsed it already for [tool.cachehook]; most projects are no workspace.
    data = _read_toml(path, unless_without="workspace") if path.is_file() else {}
    uv = _table(data, "tool", "uv")
    if "workspace" not in uv:
        return None
    workspace = uv["workspace"] if isinstance(uv["workspace"], dict) else {}
    dirs = _member_dirs(root, workspace)
    if _table(data, "project").get("name") and root not in dirs:
        dirs.insert(0, root)
    read = [_read_member(root, path, _table(uv, "sources")) for path in dirs]
    members: dict[str, Member] = {}
    for member, _ in read:
        if member.name in members:
            first = members[member.name].path
            msg = f"members {first} and {member.path} are both named {member.name!r}"
            raise ConfigError(msg)
        members[member.name] = member
    for member, wanted in read:
        for name in wanted:
            if name not in members:
                msg = (
                    f"{member.path}/pyproject.toml: [tool.uv.sources] {name} = "
                    f"{{ workspace = true }}, but no workspace member is named {name!r}"
                )
                raise ConfigError(msg)
        deps = frozenset(n for n in wanted if n != member.name)
        members[member.name] = Member(member.name, member.path, deps, member.table)
    closures, lock_digest = _read_lock(root, set(members))
    return Workspace(root, members, closures, lock_digest)


# --------------------------------------------------------------------------- uv.lock


def _read_lock(
    root: Path, members: set[str]
) -> tuple[dict[str, tuple[LockedPackage, ...]] | None, str]:
    path = root / "uv.lock"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError(msg) from exc
    from cachehook.hashing import digest_bytes

    return locked_closures(text, members, where=str(path)), digest_bytes(text.encode())


def locked_closures(
    text: str, members: Iterable[str], *, where: str = "uv.lock"
) -> dict[str, tuple[LockedPackage, ...]]:
    """Each member's locked closure in the ``uv.lock`` text (members the lock lacks are left out).

    A member's closure follows its dependencies, every extra and every dependency group;
    beyond the member, a package's dependencies and optional dependencies (never its groups,
    which uv does not install for a dependent). The root's dependency groups (the shared dev
    tools) are in every member's closure.

    Raises:
        ConfigError: the text is not TOML, or its packages are not tables.
    """
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{where}: malformed TOML: {exc} (run `uv lock`)"
        raise ConfigError(msg) from exc
    packages = data.get("package", [])
    if not isinstance(packages, list) or not all(isinstance(p, dict) for p in packages):
        msg = f"{where}: [[package]] entries must be tables (run `uv lock`)"
        raise ConfigError(msg)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in packages:
        by_name.setdefault(normalize_name(str(package.get("name", ""))), []).append(package)
    shared = _shared_edges(data, packages)
    closures = {}
    for member in members:
        if member in by_name:
            seeds = [(p, True) for p in by_name[member]]
            closures[member] = _closure(seeds + _candidates(shared, by_name), by_name)
    return closures


def _shared_edges(data: Mapping[str, Any], packages: list[dict[str, Any]]) -> list[Any]:
    """The root's dependency groups: the tools (pytest, ruff, mypy...) every member runs with.

    uv installs them into the one workspace environment, so a bump there reaches every member:
    a virtual root keeps them under ``[manifest.dependency-groups]``, a root project in its
    package's ``dev-dependencies``.
    """
    manifest = data.get("manifest")
    groups = manifest.get("dependency-groups") if isinstance(manifest, dict) else None
    edges: list[Any] = []
    for group in (groups or {}).values() if isinstance(groups, dict) else ():
        edges.extend(group or [])
    for package in packages:
        source = package.get("source")
        if isinstance(source, dict) and "." in source.values():
            for group in (package.get("dev-dependencies") or {}).values():
                edges.extend(group or [])
    return [e for e in edges if isinstance(e, dict) and isinstance(e.get("name"), str)]


def _candidates(
    edges: list[Any], by_name: Mapping[str, list[dict[str, Any]]]
) -> list[tuple[dict[str, Any], bool]]:
    found = []
    for edge in edges:
        version = edge.get("version")
        for candidate in by_name.get(normalize_name(edge["name"]), []):
            if version in (None, candidate.get("version")):
                found.append((candidate, False))
    return found


def _edges(package: Mapping[str, Any], *, with_groups: bool) -> list[Mapping[str, Any]]:
    edges = list(package.get("dependencies", []) or [])
    for extra in (package.get("optional-dependencies") or {}).values():
        edges.extend(extra or [])
    if with_groups:
        for group in (package.get("dev-dependencies") or {}).values():
            edges.extend(group or [])
    return [e for e in edges if isinstance(e, dict) and isinstance(e.get("name"), str)]


def _closure(
    seeds: list[tuple[dict[str, Any], bool]], by_name: Mapping[str, list[dict[str, Any]]]
) -> tuple[LockedPackage, ...]:
    seen: dict[tuple[str, str, str], LockedPackage] = {}
    todo = list(seeds)
    while todo:
        package, is_member = todo.pop()
        locked = _locked(package)
        if (locked.name, locked.version, locked.source) in seen:
            continue
        seen[(locked.name, locked.version, locked.source)] = locked
        todo += _candidates(_edges(package, with_groups=is_member), by_name)
    return tuple(sorted(seen.values(), key=lambda p: (p.name, p.version, p.source)))


def _locked(package: Mapping[str, Any]) -> LockedPackage:
    hashes = []
    sdist = package.get("sdist")
    if isinstance(sdist, dict) and isinstance(sdist.get("hash"), str):
        hashes.append(sdist["hash"])
    for wheel in package.get("wheels", []) or []:
        if isinstance(wheel, dict) and isinstance(wheel.get("hash"), str):
            hashes.append(wheel["hash"])
    return LockedPackage(
        name=normalize_name(str(package.get("name", ""))),
        version=str(package.get("version", "")),
        source=json.dumps(package.get("source", {}), sort_keys=True),
        hashes=tuple(sorted(hashes)),
    )
