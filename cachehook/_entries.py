"""The entries of an artifact and the rules their paths follow, on pack and on restore.

An entry is a project-relative POSIX path with a kind (file, directory, symlink), its permission
bits and size. The rules are the same whoever checks them: no empty, ``.`` or ``..`` segment, no
absolute path, backslash or NUL, nothing placed through a file or a link, no link leading out of
the project (followed as the kernel would), nothing a task's predicate does not allow.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal, NamedTuple

from cachehook.errors import ArchiveError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

__all__ = [
    "PERMISSIONS",
    "RESERVED",
    "Entry",
    "check_allowed",
    "check_link_target",
    "check_path",
    "check_tree",
    "is_reserved",
    "is_within",
    "parents",
    "show",
]

RESERVED = ".cachehook"
PERMISSIONS = 0o777  # setuid, setgid and sticky bits are dropped on pack and on restore
_MAX_LINK_DEPTH = 40  # Linux's MAXSYMLINKS


class Entry(NamedTuple):  # not a frozen dataclass: cheaper to import on a restoring hit
    """One output in an artifact."""

    path: str  # project-relative POSIX
    kind: Literal["file", "dir", "symlink"]
    mode: int  # permission bits as stored (0o7777 & st_mode)
    size: int
    linkname: str = ""  # symlink target as stored


def show(path: str) -> str:
    shown = repr(path)
    return shown if len(shown) <= 120 else f"{shown[:117]}..."


def is_reserved(path: str) -> bool:
    return path == RESERVED or path.startswith(f"{RESERVED}/")


def parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def is_within(path: str, root: Path) -> bool:
    return os.path.commonpath([path, root]) == str(root)


def _name_problem(name: str, max_length: int) -> str:
    if "\x00" in name:
        return "contains NUL"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is absolute"
    try:
        length = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if length > max_length:
        return f"is longer than {max_length} bytes"
    return ""


def check_path(path: str, max_length: int) -> None:
    problem = _name_problem(path, max_length)
    if not problem and path in ("", "."):
        problem = "is empty"
    if not problem and any(part in ("", ".", "..") for part in path.split("/")):
        problem = "has an empty, '.' or '..' segment"
    if problem:
        msg = f"path {show(path)} {problem}"
        raise ArchiveError(msg)


def check_link_target(path: str, target: str, max_length: int) -> None:
    problem = _name_problem(target, max_length) or ("" if target else "is empty")
    if problem:
        msg = f"symlink {show(path)}: target {show(target)} {problem}"
        raise ArchiveError(msg)


def _fold(path: str) -> str:
    # Names compared as a case- and normalization-insensitive disk (macOS, Windows) sees them,
    # so that 'A' and 'a/x' count as the same place everywhere. An ASCII name is its own NFD
    # and casefolds as it lowers: a restore of ASCII paths does not import unicodedata (~1 ms).
    if path.isascii():
        return path.lower()
    import unicodedata

    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def check_tree(entries: Sequence[Entry]) -> None:
    """Nothing is placed through a file or a link of the artifact; no link leads outside."""
    non_dirs = {_fold(entry.path): entry for entry in entries if entry.kind != "dir"}
    for entry in entries:
        for parent in parents(entry.path):
            blocker = non_dirs.get(_fold(parent))
            if blocker is not None:
                where = f"{blocker.kind} {show(blocker.path)}"
                msg = f"entry {show(entry.path)} is placed through {where}"
                raise ArchiveError(msg)
    links = {_fold(e.path): e for e in entries if e.kind == "symlink"}
    resolved: dict[str, list[str]] = {}
    for key in links:
        _resolve_link(key, links, resolved, [])


def _resolve_link(
    key: str, links: dict[str, Entry], resolved: dict[str, list[str]], active: list[str]
) -> list[str]:
    # Follow the archive's own links as the kernel would: lexically, 'y/..' with y -> '.' would
    # stay in the project, but it leads to the project's parent.
    if key in resolved:
        return resolved[key]
    link = links[key]
    if key in active or len(active) >= _MAX_LINK_DEPTH:
        msg = f"symlink {show(link.path)} is part of a loop"
        raise ArchiveError(msg)
    active.append(key)
    parts = _fold(link.path).split("/")[:-1]
    for part in _fold(link.linkname).split("/"):
        if part == "..":
            if not parts:
                where = f"{show(link.path)} -> {show(link.linkname)}"
                msg = f"symlink {where} leads outside the project"
                raise ArchiveError(msg)
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
            joined = "/".join(parts)
            if joined in links:
                parts = list(_resolve_link(joined, links, resolved, active))
    active.pop()
    resolved[key] = parts
    return parts


def check_allowed(entries: Sequence[Entry], allowed: Callable[[str], bool]) -> None:
    """Every entry is allowed, or is a directory above one that is."""
    parents_of_allowed: set[str] = set()
    other_dirs: list[str] = []
    for entry in entries:
        if allowed(entry.path):
            parents_of_allowed.update(parents(entry.path))
        elif entry.kind == "dir":
            other_dirs.append(entry.path)
        else:
            msg = f"artifact holds {show(entry.path)}, which is not an output of this task"
            raise ArchiveError(msg)
    for path in other_dirs:
        if path not in parents_of_allowed:
            msg = f"artifact holds directory {show(path)}, which is not an output of this task"
            raise ArchiveError(msg)
