"""Which tasks a run takes in a uv workspace: ``--filter`` and ``--affected`` (issue 14).

Filters are spelled as turbo spells them: ``NAME`` (a member, ``*`` allowed), ``./PATH`` (the
member at or under a directory, relative to where cachehook runs), ``NAME...`` (the member
and every member it depends on), ``...NAME`` (the member and every member that depends on it),
``!NAME`` (not that member). Several filters add up; exclusions apply last.
``--affected[=REF]`` takes the members whose task inputs changed since the merge base of HEAD
and REF (default ``main``, or ``$CACHEHOOK_SCM_BASE``) — committed, staged, unstaged or
untracked — those whose locked closure in ``uv.lock`` changed, and every member that depends
on one of them. With both, a member must pass both.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass
from subprocess import PIPE
from typing import TYPE_CHECKING

from cachehook.errors import ConfigError
from cachehook.hashing import GlobSet
from cachehook.members import closure_changes
from cachehook.workspace import locked_closures, normalize_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from cachehook.tasks import TaskGraph
    from cachehook.workspace import Workspace

__all__ = ["Selection", "affected_members", "filter_members", "select_tasks"]


@dataclass(frozen=True)
class Selection:
    """The tasks asked for, in order, each with why it was chosen."""

    names: tuple[str, ...]
    reasons: Mapping[str, str]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except OSError as exc:
        msg = f"--affected needs git: {exc}"
        raise ConfigError(msg) from exc


def _changed_paths(root: Path, base: str) -> list[str]:
    # The two listings run side by side: on a loaded machine each start costs more than its work.
    commands = [
        ["diff", "--name-only", "--no-renames", "--relative", "-z", base, "--"],
        ["ls-files", "--others", "--exclude-standard", "-z"],
    ]
    children: list[subprocess.Popen[bytes]] = []
    try:
        for args in commands:
            children.append(subprocess.Popen(["git", *args], cwd=root, stdout=PIPE, stderr=PIPE))
    except OSError as exc:
        for child in children:
            child.kill()
            child.communicate()
        msg = f"--affected needs git: {exc}"
        raise ConfigError(msg) from exc
    results = [child.communicate() for child in children]  # every child is reaped
    paths: list[bytes] = []
    for args, child, (out, err) in zip(commands, children, results, strict=True):
        if child.returncode != 0:
            msg = f"--affected: git {' '.join(args)} failed: "
            msg += err.decode(errors="replace").strip()
            raise ConfigError(msg)
        paths += out.split(b"\0")
    return sorted({os.fsdecode(p) for p in paths if p})


def _merge_base(root: Path, ref: str) -> str:
    done = _git(root, "merge-base", "HEAD", ref)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip() or "no common ancestor"
        msg = (
            f"--affected: cannot find the merge base of HEAD and {ref!r} in {root} ({detail}); "
            "name the branch to compare with: --affected=REF"
        )
        raise ConfigError(msg)
    return done.stdout.decode().strip()


def _lock_changes(graph: TaskGraph, workspace: Workspace, base: str) -> dict[str, str]:
    old = _git(workspace.root, "show", f"{base}:./uv.lock")
    if old.returncode != 0:
        return {m: "uv.lock is new" for m in workspace.members}
    before = locked_closures(old.stdout.decode(errors="replace"), workspace.members)
    now = workspace.closures or {}
    reasons = {}
    for member in workspace.members:
        if before.get(member) != now.get(member):
            changes = closure_changes(before.get(member, ()), now.get(member, ()))
            shown = [what if verb == "changed" else f"{what} {verb}" for verb, what in changes]
            named = ", ".join(shown[:3]) + (", …" if len(shown) > 3 else "")
            reasons[member] = "its locked dependencies in uv.lock changed" + (
                f": {named}" if named else ""
            )
    return reasons


def affected_members(graph: TaskGraph, ref: str) -> dict[str, str]:
    """The members affected since the merge base of HEAD and ``ref``, each with a reason.

    Raises:
        ConfigError: not a workspace, git is missing, or no merge base.
    """
    workspace = _workspace(graph, "--affected")
    base = _merge_base(workspace.root, ref)
    changed = _changed_paths(workspace.root, base)
    inputs: dict[str, list[GlobSet]] = {}
    for node, member in graph.member_of.items() if changed else ():
        inputs.setdefault(member, []).append(GlobSet.compile(graph.tasks[node].inputs))
    reasons: dict[str, str] = {}
    for path in changed:
        if path == "uv.lock":
            for member, why in _lock_changes(graph, workspace, base).items():
                reasons.setdefault(member, why)
            continue
        holder = workspace.member_at(path)
        for member in workspace.names():
            is_input = any(globs.matches(path) for globs in inputs.get(member, ()))
            is_own = holder is not None and holder.name == member and holder.path != "."
            if is_input or is_own or path == "pyproject.toml":
                reasons.setdefault(member, f"{path} changed")
    for member in sorted(reasons):
        for dependent in workspace.dependents(member):
            reasons.setdefault(dependent, f"it depends on {member}")
    return reasons


def _workspace(graph: TaskGraph, option: str) -> Workspace:
    if graph.workspace is None:
        msg = f"{option}: {graph.source} is not a uv workspace (no [tool.uv.workspace] table)"
        raise ConfigError(msg)
    return graph.workspace


def _is_at(workspace: Workspace, path: str, target: Path) -> bool:
    """Whether the member at ``path`` is at, under, or (not being the root) holds ``target``."""
    directory = (workspace.root / path).resolve()
    if directory == target or directory.is_relative_to(target):
        return True
    return path != "." and target.is_relative_to(directory)


def _member_at(workspace: Workspace, cwd: Path) -> str | None:
    """The member whose directory holds ``cwd`` (the innermost), or None at the root or
    outside every member."""
    try:
        relative = cwd.resolve().relative_to(workspace.root.resolve()).as_posix()
    except ValueError:
        return None
    member = workspace.member_at(relative) if relative != "." else None
    return None if member is None or member.path == "." else member.name


def _match(workspace: Workspace, selector: str, cwd: Path) -> list[str]:
    if selector.startswith((".", "/")):
        target = (cwd / selector).resolve()
        found = [m.name for m in workspace.members.values() if _is_at(workspace, m.path, target)]
    else:
        found = [n for n in workspace.names() if fnmatch.fnmatchcase(n, normalize_name(selector))]
    if not found:
        msg = f"--filter {selector!r} matches no member; the members are: "
        msg += ", ".join(f"{m.name} ({m.path})" for m in workspace.members.values())
        raise ConfigError(msg)
    return found


def filter_members(graph: TaskGraph, filters: Sequence[str], cwd: Path) -> dict[str, str]:
    """The members the ``--filter`` selectors take, each with a reason.

    Raises:
        ConfigError: not a workspace, or a selector that matches no member.
    """
    workspace = _workspace(graph, "--filter")
    reasons: dict[str, str] = {}
    excluded = [f.removeprefix("!") for f in filters if f.startswith("!")]
    included = [f for f in filters if not f.startswith("!")] or (["*"] if excluded else [])
    for raw in included:
        with_dependents, with_dependencies = raw.startswith("..."), raw.endswith("...")
        selector = raw.removeprefix("...").removesuffix("...")
        for member in _match(workspace, selector, cwd):
            reasons.setdefault(member, f"--filter {raw}")
            extra = []
            if with_dependencies:
                extra += [
                    (d, f"--filter {raw}: {member} depends on it")
                    for d in workspace.dependencies(member)
                ]
            if with_dependents:
                extra += [
                    (d, f"--filter {raw}: it depends on {member}")
                    for d in workspace.dependents(member)
                ]
            for name, why in extra:
                reasons.setdefault(name, why)
    for raw in excluded:  # '!NAME' takes members out, whichever selector brought them
        for member in _match(workspace, raw, cwd):
            reasons.pop(member, None)
    return reasons


def select_tasks(
    graph: TaskGraph,
    names: Sequence[str],
    *,
    filters: Sequence[str] = (),
    affected: str | None = None,
    cwd: Path,
) -> Selection:
    """The tasks a run starts from (their dependencies come with them), each with a reason.

    A bare name is the root task of that name, else that task in every chosen member that has
    it; ``member#task`` is always taken. With neither ``filters`` nor ``affected``, a run
    started inside a member's directory chooses that member only (turbo's package scoping).

    Raises:
        ConfigError: an unknown task or member, or a failed ``--affected`` look-up.
    """
    chosen: dict[str, str] | None = None
    if filters:
        chosen = filter_members(graph, filters, cwd)
    elif affected is None and graph.workspace is not None:
        here = _member_at(graph.workspace, cwd)
        if here is not None:  # started in a member's directory: that member, as turbo scopes
            chosen = {here: f"the run started in {here}'s directory (--filter '*' for all)"}
    if affected is not None:
        changed = affected_members(graph, affected)
        chosen = changed if chosen is None else {m: changed[m] for m in chosen if m in changed}
    reasons: dict[str, str] = {}
    for raw in names:
        owner, mark, task = raw.partition("#")
        name = f"{normalize_name(owner)}#{task}" if mark and graph.workspace else raw
        if "#" in name or name in graph.tasks or name not in graph.groups:
            graph.select([name])  # raises on an unknown name, with suggestions
            reasons.setdefault(name, "named")
            continue
        for node in graph.groups[name]:
            member = graph.member_of[node]
            if chosen is None:
                reasons.setdefault(node, f"{name} in every member")
            elif member in chosen:
                reasons.setdefault(node, chosen[member])
    return Selection(tuple(reasons), reasons)
