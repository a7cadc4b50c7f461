"""The task graph of a uv workspace: a ``member#task`` node for each task of each member.

A root task with ``per-member = true`` runs in every member: its ``cwd`` is the member's
directory, its globs are relative to it (``//`` starts one relative to the workspace root), and
without ``inputs`` it reads every file of the member. A member's own ``[tool.cachehook.tasks]``
adds tasks, or overrides a root or preset task key by key. In ``depends-on``, ``build`` is the
member's own ``build`` (else the root task), ``^build`` is ``build`` in each member it depends on
(those that have one), ``lib#build`` names one node.

A member task's key also holds (issue 14): the root's ``global-inputs``; the files of the
members it depends on, transitively (they are on its import path as editable installs; a task
opts out with ``upstream-inputs = false``); the ``.python-version`` files uv would read; and
its locked closure from ``uv.lock``. The runner adds the toolchain identity.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import TYPE_CHECKING, Any

from cachehook.config import table_boolean, table_strings
from cachehook.errors import ConfigError
from cachehook.hashing import escape_glob
from cachehook.presets import preset_tasks
from cachehook.tasks import Task, TaskGraph, parse_task

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from cachehook.workspace import LockedPackage, Member, Workspace

__all__ = [
    "MEMBER_TASK_KEYS",
    "UV_ENV",
    "closure_changes",
    "describe_salt_change",
    "load_workspace_tasks",
    "rebase_glob",
]

MEMBER_TASK_KEYS = ("per-member", "upstream-inputs")
_LOCK_SALT = "\x1fuv.lock closure "
# What uv reads from the environment that changes what a `uv run` or `uv build` does: the
# interpreter, the environment, the indexes and the resolution (their values enter the key).
UV_ENV = (
    "UV_PYTHON",
    "UV_PROJECT_ENVIRONMENT",
    "UV_NO_SYNC",
    "UV_FROZEN",
    "UV_LOCKED",
    "UV_NO_SOURCES",
    "UV_INDEX*",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_RESOLUTION",
    "UV_PRERELEASE",
    "UV_EXCLUDE_NEWER",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_BUILD_CONSTRAINT",
    "UV_NO_BUILD_ISOLATION",
    "UV_CONFIG_FILE",
    "UV_NO_CONFIG",
)


def rebase_glob(pattern: str, base: str, *, where: str) -> str:
    """A member-relative glob as a root-relative one (``//x`` is already root-relative).

    Raises:
        ConfigError: the glob leaves the workspace root.
    """
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    is_rooted = body.startswith("//") or base == "."
    joined = body.removeprefix("//") if is_rooted else f"{escape_glob(base)}/{body}"
    normal = posixpath.normpath(joined) if joined else joined
    if normal == ".." or normal.startswith("../") or posixpath.isabs(normal):
        msg = f"{where}: {pattern!r} leaves the workspace root"
        raise ConfigError(msg)
    return ("!" if negated else "") + normal


def _globs(body: Mapping[str, Any], key: str, where: str) -> list[str] | None:
    return list(table_strings(body, key, where)) if key in body else None


def _tables(table: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    raw = table.get("tasks", {})
    if not isinstance(raw, dict) or not all(isinstance(b, dict) for b in raw.values()):
        msg = f"{source}: [tool.cachehook.tasks]: expected a table of task tables"
        raise ConfigError(msg)
    return {name: dict(body) for name, body in raw.items()}


@dataclasses.dataclass(frozen=True)
class _Context:
    workspace: Workspace
    global_inputs: tuple[str, ...]
    source: str


def _member_task(
    name: str, body: dict[str, Any], member: Member, ctx: _Context, source: str
) -> Task:
    """Parse one merged task table of ``member`` into a root-relative Task (depends-on raw)."""
    where = f"{source}: [tool.cachehook.tasks.{name}]"
    upstream = table_boolean(body, "upstream-inputs", where, default=True)
    body = {k: v for k, v in body.items() if k not in MEMBER_TASK_KEYS}
    base = member.path
    declared = _globs(body, "inputs", where)
    inputs = ["**"] if declared is None else declared
    inputs = [rebase_glob(p, base, where=f"{where} inputs") for p in inputs]
    if upstream:
        deps = ctx.workspace.dependencies(member.name)
        inputs += [f"{escape_glob(ctx.workspace.members[d].path)}/**" for d in deps]
    inputs += ctx.global_inputs
    # uv picks the interpreter by .python-version (the member's, else the root's).
    pins = [f"{base}/.python-version" if base != "." else "", ".python-version"]
    inputs += [escape_glob(p) for p in pins if p and (ctx.workspace.root / p).is_file()]
    inputs = list(dict.fromkeys(inputs))
    declared_outputs = _globs(body, "outputs", where) or []
    outputs = [rebase_glob(p, base, where=f"{where} outputs") for p in declared_outputs]
    cwd = body.get("cwd", ".")
    if not isinstance(cwd, str) or posixpath.isabs(cwd) or ".." in cwd.split("/"):
        msg = f"{where} cwd: {cwd!r} must be a relative POSIX path inside the member"
        raise ConfigError(msg)
    body |= {"inputs": inputs, "outputs": outputs, "cwd": posixpath.normpath(f"{base}/{cwd}")}
    body.pop("depends-on", None)
    task = parse_task(name, body, source=source, root=ctx.workspace.root)
    closure = ctx.workspace.closure_digest(member.name)
    salt = task.salt if closure is None else f"{task.salt}{_LOCK_SALT}{closure}"
    env = task.env
    if posixpath.basename(task.command[0]) in ("uv", "uvx"):
        env = tuple(dict.fromkeys([*env, *UV_ENV]))
    return dataclasses.replace(task, name=f"{member.name}#{name}", salt=salt, env=env)


def _member_bodies(
    member: Member, templates: Mapping[str, dict[str, Any]], presets: object, ctx: _Context
) -> dict[str, tuple[dict[str, Any], str]]:
    """Each task of ``member``: its merged table and the file that last shaped it."""
    where = f"{ctx.source}: [tool.cachehook]"
    root = ctx.workspace.root
    bodies = {
        n: (b, ctx.source)
        for n, b in preset_tasks(presets, member.name, root=root, where=where).items()
    }
    for name, body in templates.items():
        bodies[name] = ({**bodies.get(name, ({}, ""))[0], **body}, ctx.source)
    if member.path != ".":  # the root member's own table is the root's
        source = f"{member.path}/pyproject.toml"
        for name, body in _tables(member.table, source).items():
            bodies[name] = ({**bodies.get(name, ({}, ""))[0], **body}, source)
    return bodies


def _resolve(
    ref: str, *, member: Member | None, nodes: Mapping[str, Task], where: str
) -> list[str]:
    if ref.startswith("^"):
        if member is None:
            msg = f"{where} depends-on: {ref!r}: '^' is for per-member tasks only"
            raise ConfigError(msg)
        task = ref[1:]
        return [f"{d}#{task}" for d in sorted(member.dependencies) if f"{d}#{task}" in nodes]
    if "#" in ref:
        owner, _, _ = ref.partition("#")
        if ref not in nodes:
            known = ", ".join(n for n in sorted(nodes) if n.startswith(f"{owner}#")) or "none"
            msg = f"{where} depends-on: unknown task {ref!r} (the tasks of {owner!r}: {known})"
            raise ConfigError(msg)
        return [ref]
    if member is not None and f"{member.name}#{ref}" in nodes:
        return [f"{member.name}#{ref}"]
    if ref in nodes:
        return [ref]
    owner = f"member {member.name!r} or " if member is not None else ""
    msg = f"{where} depends-on: unknown task {ref!r}: neither {owner}the root defines it"
    raise ConfigError(msg)


def load_workspace_tasks(
    table: Mapping[str, Any], workspace: Workspace, *, source: str
) -> TaskGraph:
    """The checked task graph of a uv workspace.

    Args:
        table: the root's ``[tool.cachehook]`` table.
        workspace: the workspace read by ``load_workspace``.
        source: how to name the root pyproject.toml in messages.

    Raises:
        ConfigError: the message names the file, the table and the key.
    """
    global_inputs = _globs(table, "global-inputs", f"{source}: [tool.cachehook]") or []
    where = f"{source}: [tool.cachehook] global-inputs"
    ctx = _Context(
        workspace, tuple(rebase_glob(p, ".", where=where) for p in global_inputs), source
    )
    templates: dict[str, dict[str, Any]] = {}
    nodes: dict[str, Task] = {}
    raw_depends: dict[str, tuple[Member | None, Sequence[str], str]] = {}
    for name, body in _tables(table, source).items():
        here = f"{source}: [tool.cachehook.tasks.{name}]"
        if table_boolean(body, "per-member", here, default=False):
            templates[name] = body
            continue
        if "#" in name:
            msg = f"{here}: a root task name cannot hold '#'"
            raise ConfigError(msg)
        body.pop("per-member", None)
        nodes[name] = parse_task(name, body, source=source, root=workspace.root)
        raw_depends[name] = (None, nodes[name].depends_on, here)
    member_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    presets = table.get("presets", [])
    for member in workspace.members.values():
        for name, (body, origin) in _member_bodies(member, templates, presets, ctx).items():
            task = _member_task(name, body, member, ctx, origin)
            nodes[task.name] = task
            member_of[task.name] = member.name
            groups.setdefault(name, []).append(task.name)
            depends = _globs(body, "depends-on", f"{origin}: [tool.cachehook.tasks.{name}]") or []
            raw_depends[task.name] = (member, depends, f"{origin}: [tool.cachehook.tasks.{name}]")
    for node, (owner, refs, here) in raw_depends.items():
        resolved: dict[str, None] = {}
        for ref in refs:
            for target in _resolve(ref, member=owner, nodes=nodes, where=here):
                resolved[target] = None
        nodes[node] = dataclasses.replace(nodes[node], depends_on=tuple(resolved))
    graph = TaskGraph(
        tasks=nodes,
        source=source,
        groups={name: tuple(sorted(g)) for name, g in groups.items()},
        member_of=member_of,
        workspace=workspace,
    )
    graph.check()
    return graph


# --------------------------------------------------------------------------- explain


def _split_salt(salt: str) -> tuple[str, str | None]:
    user, mark, closure = salt.partition(_LOCK_SALT)
    return user, closure if mark else None


def describe_salt_change(workspace: Workspace, member: str, old: str, new: str) -> list[str]:
    """What ``explain`` says for a member task whose salt changed (its uv.lock closure is in it).

    A changed closure is named package by package (``widget 1.0 -> 1.1``) when an earlier
    ``uv.lock`` in git (the index, then the last commits that changed it) locks exactly the
    closure of the stored run; otherwise the line says the closure changed, without names.
    """
    (old_user, old_lock), (new_user, new_lock) = _split_salt(old), _split_salt(new)
    lines = ["salt changed"] if old_user != new_user else []
    if old_lock == new_lock:
        return lines
    if old_lock is None:
        return [*lines, "uv.lock added: the member's locked dependencies now enter its key"]
    if new_lock is None:
        return [*lines, "uv.lock removed"]
    if new_lock.startswith("uv.lock "):
        return [*lines, f"uv.lock changed, and it does not lock {member} (run `uv lock`)"]
    before = _earlier_closure(workspace, member, old_lock)
    now = (workspace.closures or {}).get(member, ())
    changes = [] if before is None else closure_changes(before, now)
    found = [f"locked dependency {verb} (uv.lock): {what}" for verb, what in changes]
    return lines + (
        found
        or [
            f"locked dependencies changed (uv.lock): the versions locked for {member}'s "
            "dependency closure differ from its last stored run (no earlier uv.lock in git "
            "locks that closure, so which packages is not known)"
        ]
    )


def _earlier_closure(
    workspace: Workspace, member: str, digest: str
) -> tuple[LockedPackage, ...] | None:
    """The closure of ``member`` whose digest is ``digest``, from a uv.lock git still has."""
    from cachehook.workspace import locked_closures

    def git(*args: str) -> bytes | None:
        import subprocess  # only here: a graph load never starts a process

        try:
            done = subprocess.run(
                ["git", *args], cwd=workspace.root, capture_output=True, check=False
            )
        except OSError:
            return None
        return done.stdout if done.returncode == 0 else None

    commits = (git("log", "-n", "10", "--format=%H", "--", "uv.lock") or b"").split()
    for revision in [b"", *commits]:  # b"": the index
        text = git("show", f"{revision.decode()}:./uv.lock")
        if text is None:
            continue
        try:
            closures = locked_closures(text.decode(errors="replace"), [member])
        except ConfigError:
            continue
        earlier = dataclasses.replace(workspace, closures=closures)
        if member in closures and earlier.closure_digest(member) == digest:
            return closures[member]
    return None


def closure_changes(
    before: Sequence[LockedPackage], now: Sequence[LockedPackage]
) -> list[tuple[str, str]]:
    """How two locked closures differ, by package: ``("changed", "widget 1.0 -> 1.1")``.

    The first item is ``changed``, ``added`` or ``removed``; a package whose version stayed
    but whose source or hashes changed is ``("changed", "widget 1.0 (its source or hashes)")``.
    """
    old: dict[str, set[LockedPackage]] = {}
    new: dict[str, set[LockedPackage]] = {}
    for packages, by_name in ((before, old), (now, new)):
        for package in packages:
            by_name.setdefault(package.name, set()).add(package)
    found = []
    for name in sorted(old.keys() | new.keys()):
        was, is_ = old.get(name, set()), new.get(name, set())
        if was == is_:
            continue
        a = ", ".join(sorted({p.version for p in was}))
        b = ", ".join(sorted({p.version for p in is_}))
        if not was:
            found.append(("added", f"{name} {b}"))
        elif not is_:
            found.append(("removed", f"{name} {a}"))
        elif a != b:
            found.append(("changed", f"{name} {a} -> {b}"))
        else:
            found.append(("changed", f"{name} {a} (its source or hashes)"))
    return found
