"""``.gitignore`` rules: which names in a directory git would ignore.

Private to :mod:`cachehook._walk`. The files read are the nested ``.gitignore`` files (loaded
by the walk as it meets them), and, for a project in a git repository, the ``.gitignore``
files above the project up to the repository top, ``info/exclude`` and the user's global
excludes file (``core.excludesFile``, by default ``$XDG_CONFIG_HOME/git/ignore``), as git does.
They apply to untracked files only: which files git tracks is :mod:`cachehook.gitindex`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cachehook import gitindex
from cachehook._globs import _compile, _NamePart, _NameTest, _Parent, _segment_regex

if TYPE_CHECKING:
    import re
    from collections.abc import Sequence

__all__ = [
    "GITIGNORE",
    "NO_RULES",
    "IgnoreFile",
    "IgnoreTest",
    "NoRules",
    "outer_ignore_files",
    "read_text",
]

GITIGNORE = ".gitignore"


class _IgnoreRule:
    """One .gitignore line, split into a test on the parent directory and one on the name."""

    __slots__ = ("dir_only", "name", "negated", "parent", "regex")

    def __init__(
        self,
        *,
        negated: bool,
        dir_only: bool,
        name: _NamePart,
        regex: str,
        parent: _Parent | None,
    ) -> None:
        self.negated = negated
        self.dir_only = dir_only
        self.name = name
        self.regex = regex  # of the name
        self.parent = parent  # of the parent directory, relative to the .gitignore; None: any


def _parse_ignore_line(line: str) -> _IgnoreRule | None:
    line = line.removesuffix("\r")
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        stripped += " "  # 'foo\ ' keeps its escaped space
    line = stripped
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    line = line.removeprefix("!")
    dir_only = line.endswith("/")
    line = line.removesuffix("/")
    anchored = "/" in line
    segments = [s for s in line.split("/") if s]
    segments = [s for i, s in enumerate(segments) if s != "**" or segments[i - 1 : i] != [s]]
    if not segments:
        return None
    name, parents = segments[-1], segments[:-1]
    if name == "**":  # 'a/**': any name, in 'a' or below
        name, parents = "*", segments
    name_regex = _segment_regex(name, escapes=True)
    parent_parts = [None if s == "**" else _segment_regex(s, escapes=True) for s in parents]
    if name_regex is None or any(
        p is None and s != "**" for p, s in zip(parent_parts, parents, strict=True)
    ):
        return None  # an unbalanced '[' never matches in git either
    return _IgnoreRule(
        negated=negated,
        dir_only=dir_only,
        name=_NamePart(name, name_regex),
        regex=name_regex,
        parent=_Parent.make(parents, parent_parts) if anchored else None,
    )


class IgnoreFile:
    """The rules of one .gitignore (or info/exclude) file."""

    __slots__ = ("anchored", "base", "rules", "up")

    def __init__(self, base: str, up: str, rules: tuple[_IgnoreRule, ...]) -> None:
        self.base = base  # the directory (relative to the root) it applies under; "" at or above
        self.up = up  # for files above the root: the root's path relative to the file's directory
        self.rules = rules
        self.anchored = tuple(rule for rule in rules if rule.parent is not None)

    @classmethod
    def parse(cls, text: str, *, base: str = "", up: str = "") -> IgnoreFile | None:
        rules = tuple(filter(None, map(_parse_ignore_line, text.split("\n"))))
        return cls(base, up, rules) if rules else None

    def live(self, directory: str) -> tuple[_IgnoreRule, ...]:
        """The anchored rules that can match an entry directly inside ``directory``."""
        if not self.anchored:
            return ()
        local = directory[len(self.base) + 1 :] if self.base else directory
        if self.up:
            local = f"{self.up}/{local}" if local else self.up
        slashed = "/" + local if local else ""
        return tuple(rule for rule in self.anchored if rule.parent(slashed))  # type: ignore[misc]


class IgnoreTest:
    """Whether the rules that apply in one directory ignore an entry, judged by its name."""

    __slots__ = ("_ordered", "_rules", "_test")

    def __init__(self, rules: Sequence[_IgnoreRule]) -> None:  # lowest precedence first
        positive = [rule for rule in rules if not rule.negated]
        self._test = _NameTest(rule.name for rule in positive)
        # With negations the last matching rule decides; without, any positive match does.
        self._rules = tuple(reversed(rules)) if len(positive) < len(rules) else ()
        self._ordered: re.Pattern[str] | None = None

    def keep(self, names: list[str]) -> list[str]:
        """The names not ignored (one call per directory: the walk's hottest loop)."""
        literals, suffixes, regex = self._test.literals, self._test.suffixes, self._test.regex
        kept = [
            name
            for name in names
            if not (
                name in literals
                or name.endswith(suffixes)
                or (regex is not None and regex(name) is not None)
            )
        ]
        if self._rules and len(kept) < len(names):  # some may be re-included by a '!' rule
            kept = [name for name in names if not self(name)]
        return kept

    def __call__(self, name: str) -> bool:
        if not self._test(name):
            return False
        if not self._rules:
            return True
        if self._ordered is None:
            self._ordered = _compile((rule.regex for rule in self._rules), groups=True)
        match = self._ordered.fullmatch(name)  # type: ignore[union-attr]
        return match is None or not self._rules[match.lastindex - 1].negated  # type: ignore[operator]


class NoRules:
    """Stands for an IgnoreTest where no rule applies."""

    @staticmethod
    def keep(names: list[str]) -> list[str]:
        return names

    def __call__(self, name: str) -> bool:
        return False


NO_RULES = NoRules()


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def outer_ignore_files(root: str) -> tuple[gitindex.GitRepo | None, list[IgnoreFile], bool]:
    """The repository around ``root``, the ignore files that apply from outside the root, and
    whether the root itself lies in an ignored directory (then git lists only tracked files).

    Lowest precedence first: the global excludes file, ``info/exclude``, then the
    ``.gitignore`` files above the root (a project inside a repository).
    """
    root = os.path.abspath(root)
    repo, top = gitindex.find_repo(root)
    up = os.path.relpath(root, top).replace(os.sep, "/") if top != root else ""
    segments = up.split("/") if up else []
    # Each file as (its directory relative to the top, its rules).
    found: list[tuple[str, IgnoreFile | None]] = []
    if repo is not None:
        for path in (gitindex.excludes_file(repo), os.path.join(repo.commondir, "info", "exclude")):
            text = read_text(path) if path is not None else None
            found.append(("", IgnoreFile.parse(text) if text else None))
    for depth in range(len(segments)):
        text = read_text(os.path.join(top, *segments[:depth], GITIGNORE))
        found.append(("/".join(segments[:depth]), IgnoreFile.parse(text) if text else None))
    present = [(base, file) for base, file in found if file is not None]
    files = [
        IgnoreFile("", up[len(base) + 1 :] if base else up, file.rules) for base, file in present
    ]
    return repo, files, _is_below_ignored(present, segments)


def _is_below_ignored(files: list[tuple[str, IgnoreFile]], segments: list[str]) -> bool:
    """Whether a directory on the way from the top down to the root is ignored."""
    for depth in range(1, len(segments) + 1):
        directory = "/".join(segments[: depth - 1])
        stack = [
            IgnoreFile(base, "", file.rules)
            for base, file in files
            if not base or directory == base or directory.startswith(base + "/")
        ]
        rules = [
            rule
            for file in stack
            for rule in file.rules
            if rule.parent is None or rule in file.live(directory)
        ]
        if rules and IgnoreTest(rules)(segments[depth - 1]):
            return True
    return False
