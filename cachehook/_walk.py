"""The directory walk: the files below a project root that a :class:`GlobSet` names.

Over 400 lines on purpose: it is the hit path's hot loop, written out flat for speed (each
glob's name tests inlined, no per-file function calls where a set test will do).

Private to :mod:`cachehook.hashing`, which re-exports :class:`Expansion` and
:func:`expand_globs`. Everything here sits on the cache-hit path: inputs are found with
``os.scandir``, pruned by each glob's literal directory prefix and by ``.gitignore``
(:mod:`cachehook._gitignore`); in a git repository the tracked files that an ignore rule
matches are added back from git's index (:mod:`cachehook.gitindex`), as git lists them.
Within a run of many tasks, the listings and ignore files already read come from
:mod:`cachehook._reuse` (issue 14).

Over 400 lines: the walk, the ignored prefixes a literal pattern reaches into and the tracked
files added back are one algorithm over one walker's state (what it pruned and dropped);
split, each part would reach into the others' internals. ``Expansion`` is a NamedTuple, not a
frozen dataclass: importing ``dataclasses`` costs milliseconds on every hit (issue 11).
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from typing import TYPE_CHECKING, NamedTuple

from cachehook import gitindex
from cachehook._gitignore import (
    GITIGNORE,
    NO_RULES,
    IgnoreFile,
    IgnoreTest,
    NoRules,
    read_text,
)
from cachehook._globs import _DirTests, _Glob, _NameTest, _prune_regex
from cachehook._reuse import is_dir, list_dir, outer_ignores, scan_entries
from cachehook.errors import HashingError

if TYPE_CHECKING:
    from collections.abc import Collection
    from pathlib import Path

    from cachehook._globs import GlobSet
    from cachehook._reuse import Generation

__all__ = ["Expansion", "expand_globs"]

_GIT = ".git"


class Expansion(NamedTuple):
    """The files some globs matched.

    Attributes:
        files: sorted project-relative POSIX paths of regular files and symlinks.
        unmatched: the include patterns that matched no file, in the order given.
    """

    files: tuple[str, ...]
    unmatched: tuple[str, ...]


_IgnoreTests = tuple["IgnoreTest | NoRules", "IgnoreTest | NoRules"]


class _Walker:
    """One expansion: walks directories, honouring .gitignore, prunes and excludes."""

    def __init__(
        self,
        root: str,
        globs: GlobSet,
        exclude: GlobSet | None,
        *,
        respect_gitignore: bool,
        skip: frozenset[str],
        follow_links: bool = False,
        reuse: Generation | None = None,
    ) -> None:
        self.root = root
        self.reuse = reuse
        self.respect_gitignore = respect_gitignore
        self.skip = skip
        self.follow_links = follow_links
        self.pruned: set[str] = set()  # directories skipped because they are ignored
        self.dropped: list[str] = []  # files a glob matched that an ignore rule dropped
        self.found: list[str] = []
        self._memo: dict[tuple[object, ...], _IgnoreTests] = {}
        self.excludes: list[_DirTests] = [globs._get("excludes")]
        self.exclude_set = exclude
        excluded_dirs = [globs._get("excluded_dirs")]
        if exclude is not None and not exclude._excludes:
            self.excludes.append(exclude._get("all"))
            excluded_dirs.append(exclude._get("covered_dirs"))
            self.exclude_set = None
        self.excludes = [tests for tests in self.excludes if tests is not None]
        self.excluded_dirs = [regex.fullmatch for regex in excluded_dirs if regex is not None]

    def load(self, directory: str) -> IgnoreFile | None:
        if self.reuse is not None and directory in self.reuse.ignore_files:
            return self.reuse.ignore_files[directory]
        text = read_text(os.path.join(self.root, directory, GITIGNORE))
        loaded = IgnoreFile.parse(text, base=directory) if text else None
        if self.reuse is not None:
            self.reuse.ignore_files[directory] = loaded
        return loaded

    def ignore_tests(self, directory: str, stack: tuple[IgnoreFile, ...]) -> _IgnoreTests:
        key = tuple((file, file.live(directory)) for file in stack)
        found = self._memo.get(key)
        if found is None:
            rules = [r for file, live in key for r in file.rules if r.parent is None or r in live]
            files = [rule for rule in rules if not rule.dir_only]
            found = (
                IgnoreTest(files) if files else NO_RULES,
                IgnoreTest(rules) if rules else NO_RULES,
            )
            self._memo[key] = found
        return found

    def walk(
        self,
        start: str,
        stack: tuple[IgnoreFile, ...],
        includes: _DirTests,
        prune: re.Pattern[str] | None,
    ) -> set[int]:
        """Add the files below ``start`` to ``found``; return the indices of the includes used."""
        credited: set[int] = set()
        pending = [(start, stack, False)]
        while pending:
            directory, stack, linked = pending.pop()
            slashed = "/" + directory if directory else ""
            tested = includes.test(slashed)
            names, subdirs, has_ignore_file, links = self._scan(directory, tested, linked)
            if has_ignore_file and self.respect_gitignore:
                loaded = self.load(directory)
                stack = (*stack, loaded) if loaded is not None else stack
            file_ignored, dir_ignored = self.ignore_tests(directory, stack)
            prefix = directory + "/" if directory else ""
            if names:
                kept = file_ignored.keep(names)
                if len(kept) < len(names) and not linked:
                    gone = set(names).difference(kept)
                    self.dropped.extend(prefix + name for name in names if name in gone)
                names = self._unexcluded(slashed, prefix, kept)
                self.found.extend([prefix + name for name in names])
                if names and tested is not None:
                    self._credit(credited, includes, tested[0], names)
            for name in subdirs:
                rel = prefix + name
                if (
                    name == _GIT
                    or rel in self.skip
                    or prune is None
                    or prune.fullmatch("/" + rel) is None
                    or any(match(rel) for match in self.excluded_dirs)
                ):
                    continue
                if dir_ignored(name):
                    if not linked:
                        self.pruned.add(rel)
                    continue
                pending.append((rel, stack, linked))
            for name in links:  # git sees a symlink as a file, so file rules decide (#10)
                rel = prefix + name
                if not (
                    rel in self.skip
                    or prune is None
                    or prune.fullmatch("/" + rel) is None
                    or any(match(rel) for match in self.excluded_dirs)
                    or file_ignored(name)
                    or self._loops(rel)
                ):
                    pending.append((rel, stack, True))
        return credited

    def _loops(self, rel: str) -> bool:
        """A symlinked directory that holds itself (its target is its own directory or above)."""
        path = os.path.join(self.root, rel)
        target = os.path.realpath(path)
        here = os.path.realpath(os.path.dirname(path))
        return here == target or here.startswith(target.rstrip(os.sep) + os.sep)

    def _scan(
        self, directory: str, tested: tuple[tuple[int, ...], _NameTest] | None, linked: bool
    ) -> tuple[list[str], list[str], bool, list[str]]:
        """The names of the matching files, of the subdirectories, whether a .gitignore is,
        and the symlinks to directories to walk into (only outside a symlinked directory)."""
        path = self.root + "/" + directory if directory else self.root
        if self.reuse is not None:
            return self._scan_listed(path, directory, tested, linked)
        names: list[str] = []
        subdirs: list[str] = []
        links: list[str] = []
        entries = scan_entries(path, directory)
        has_ignore_file = False
        if tested is None:
            literals: frozenset[str] = frozenset()
            suffixes: tuple[str, ...] = ()
            regex = None
        else:
            literals, suffixes, regex = tested[1].literals, tested[1].suffixes, tested[1].regex
        follow = self.follow_links and not linked
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(name)
                continue
            if name == GITIGNORE:
                has_ignore_file = True
            is_link = entry.is_symlink()
            if (
                name in literals
                or name.endswith(suffixes)
                or (regex is not None and regex(name) is not None)
            ) and (is_link or entry.is_file(follow_symlinks=False)):
                names.append(name)
            if is_link and follow and name != _GIT and is_dir(entry):
                links.append(name)
        return names, subdirs, has_ignore_file, links

    def _scan_listed(
        self,
        path: str,
        directory: str,
        tested: tuple[tuple[int, ...], _NameTest] | None,
        linked: bool,
    ) -> tuple[list[str], list[str], bool, list[str]]:
        """``_scan`` through the run's listings (issue 14): each directory is listed once."""
        assert self.reuse is not None
        listing = self.reuse.listings.get(path)
        if listing is None:
            listing = self.reuse.listings[path] = list_dir(path, directory)
        files, subdirs, has_ignore_file, dir_links = listing
        names: list[str] = []
        if tested is not None:
            test = tested[1]
            every = "" in test.suffixes  # '*': every name
            names = list(files) if every else [name for name in files if test(name)]
        return (
            names,
            subdirs,
            has_ignore_file,
            dir_links if self.follow_links and not linked else [],
        )

    def _unexcluded(self, slashed: str, prefix: str, names: list[str]) -> list[str]:
        for excludes in self.excludes:
            tested = excludes.test(slashed)
            if tested is not None:
                names = [name for name in names if not tested[1](name)]
        if self.exclude_set is not None:
            matches = self.exclude_set.matches
            names = [name for name in names if not matches(prefix + name)]
        return names

    @staticmethod
    def _credit(
        credited: set[int], includes: _DirTests, live: tuple[int, ...], names: list[str]
    ) -> None:
        for index in live:
            if index not in credited:
                test = _NameTest([includes.names[index]])
                if any(map(test, names)):
                    credited.add(index)

    def is_plain_dir(self, relpath: str) -> bool:
        """An existing directory reached without following a symlink, outside .git and skips."""
        path = self.root
        parts = relpath.split("/")
        for depth, part in enumerate(parts, start=1):
            if part == _GIT or "/".join(parts[:depth]) in self.skip:
                return False
            path = os.path.join(path, part)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    return False
            except OSError:
                return False
        return True

    def is_excluded(self, relpath: str) -> bool:
        directory, _, name = relpath.rpartition("/")
        prefix = directory + "/" if directory else ""
        return not self._unexcluded("/" + directory if directory else "", prefix, [name])


def _skip_set(root: str, skip_dirs: Collection[Path]) -> frozenset[str]:
    if not skip_dirs:
        return frozenset()
    roots = {os.path.abspath(root), os.path.realpath(root)}
    skips: set[str] = set()
    for directory in skip_dirs:
        for candidate in {os.path.abspath(directory), os.path.realpath(directory)}:
            for base in roots:
                try:
                    rel = os.path.relpath(candidate, base)
                except ValueError:  # another drive
                    continue
                if rel not in (".", os.pardir) and not rel.startswith(os.pardir + os.sep):
                    skips.add(rel.replace(os.sep, "/"))
    return frozenset(skips)


def expand_globs(
    root: Path,
    globs: GlobSet,
    *,
    exclude: GlobSet | None = None,
    respect_gitignore: bool = True,
    skip_dirs: Collection[Path] = (),
    follow_symlinks: bool = False,
    reuse: Generation | None = None,
) -> Expansion:
    """Find the files below ``root`` that ``globs`` match.

    ``.git`` is never walked, nor are ``skip_dirs``; a symlink is reported as a file, broken
    or not. Untracked files that git ignores (the nested ``.gitignore`` files, those above the
    root up to the repository top, ``info/exclude`` and the global excludes file) are
    skipped, except a file an include pattern names literally (no glob characters) and files
    below a directory that a pattern's literal leading part names (``build/**`` reaches into
    an ignored ``build/``). A file git tracks is never skipped for being ignored (issue 10).

    Args:
        root: the project root.
        globs: the include (and ``!`` exclude) patterns.
        exclude: paths it matches are left out (the runner passes the output globs).
        respect_gitignore: honour git's ignore rules (and add back the tracked files).
        skip_dirs: absolute directories never walked (the cache directory).
        follow_symlinks: also walk into a symlinked directory (not into one inside it, nor
            into one that holds itself), listing the files below it through the link.
        reuse: the directory listings and ignore files this run has already read, taken
            from and added to (:mod:`cachehook._reuse`); None reads everything afresh.

    Returns:
        The sorted files, and the include patterns that matched nothing.

    Raises:
        HashingError: the root or a directory that must be walked cannot be listed.
    """
    root_str = os.fspath(root)
    skip = _skip_set(root_str, skip_dirs)
    walker = _Walker(
        root_str,
        globs,
        exclude,
        respect_gitignore=respect_gitignore,
        skip=skip,
        follow_links=follow_symlinks,
        reuse=reuse,
    )
    repo, outer_files, below_ignored = (
        outer_ignores(root_str, reuse) if respect_gitignore else (None, [], False)
    )
    outer = tuple(outer_files)
    includes: _DirTests | None = globs._get("walk")
    credited: set[int] = set()
    if below_ignored:
        walker.pruned.add("")  # only the tracked files below the root count
    elif includes is not None:
        if not os.path.isdir(root_str):
            msg = f"project root {root_str!r} is not a directory"
            raise HashingError(msg)
        credited = walker.walk("", outer, includes, globs._get("prune"))
    count = len(walker.found)
    for index, glob in enumerate(globs._walked):
        reached = not below_ignored and _reaches_ignored(glob.prefix, walker.pruned)
        if reached and _walk_ignored_prefix(walker, glob, outer):
            credited.add(index)
    if repo is not None and (walker.pruned or walker.dropped):
        tracked = _tracked_ignored(walker, repo, globs)
        walker.found.extend(tracked)
        _credit_paths(globs, credited, tracked)
    literals = {glob.literal for glob in globs._includes if glob.literal is not None}
    literals = {literal for literal in literals if _is_literal_file(walker, literal)}
    files = walker.found
    if literals or len(files) > count:
        files = list({*files, *literals})
    files.sort()
    return Expansion(tuple(files), _unmatched(globs, credited, literals))


def _tracked_ignored(walker: _Walker, repo: gitindex.GitRepo, globs: GlobSet) -> list[str]:
    """The tracked files the walk left out for being ignored (git lists them: issue 10)."""
    tracked = gitindex.tracked_paths(repo)
    if not tracked:
        return []
    up = os.path.relpath(os.path.abspath(walker.root), repo.top).replace(os.sep, "/")
    up = "" if up == "." else up + "/"
    candidates: list[str] = []
    for path in walker.dropped:
        index = bisect.bisect_left(tracked, up + path)
        if index < len(tracked) and tracked[index] == up + path:
            candidates.append(path)
    for directory in walker.pruned:
        head = f"{up}{directory}/" if directory else up
        index = bisect.bisect_left(tracked, head)
        while index < len(tracked) and tracked[index].startswith(head):
            candidates.append(tracked[index][len(up) :])
            index += 1
    found: list[str] = []
    plain: dict[str, bool] = {}
    for path in dict.fromkeys(candidates):
        parent = path.rpartition("/")[0]
        if not globs.matches(path) or walker.is_excluded(path):
            continue
        if parent and plain.setdefault(parent, walker.is_plain_dir(parent)) is False:
            continue
        if _is_file_or_link(os.path.join(walker.root, path)):
            found.append(path)
    return found


def _is_file_or_link(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False  # tracked but deleted
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _credit_paths(globs: GlobSet, credited: set[int], paths: list[str]) -> None:
    for index, glob in enumerate(globs._walked):
        if index not in credited:
            match = re.compile(glob.regex, re.DOTALL).fullmatch
            if any(match(path) is not None for path in paths):
                credited.add(index)


def _reaches_ignored(prefix: tuple[str, ...], pruned: set[str]) -> bool:
    return any("/".join(prefix[:depth]) in pruned for depth in range(1, len(prefix) + 1))


def _walk_ignored_prefix(walker: _Walker, glob: _Glob, outer: tuple[IgnoreFile, ...]) -> bool:
    """Walk an ignored directory that the pattern's literal leading part names."""
    start = "/".join(glob.prefix)
    if not walker.is_plain_dir(start):
        return False
    stack = list(outer)
    if walker.respect_gitignore:
        for depth in range(len(glob.prefix)):
            loaded = walker.load("/".join(glob.prefix[:depth]))
            if loaded is not None:
                stack.append(loaded)
    includes = _DirTests([(glob.parent, glob.name)])
    prune = re.compile(_prune_regex(glob.parts), re.DOTALL)
    return bool(walker.walk(start, tuple(stack), includes, prune))


def _is_literal_file(walker: _Walker, relpath: str) -> bool:
    parent = relpath.rpartition("/")[0]
    if (parent and not walker.is_plain_dir(parent)) or walker.is_excluded(relpath):
        return False
    if relpath == _GIT or relpath in walker.skip:
        return False
    try:
        mode = os.lstat(os.path.join(walker.root, relpath)).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _unmatched(globs: GlobSet, credited: set[int], literals: set[str]) -> tuple[str, ...]:
    """The include patterns that contributed no file (the walk credits each one exactly)."""
    walked = globs._walked
    matched = {walked[index].text for index in credited}
    matched.update(glob.text for glob in globs._includes if glob.literal in literals)
    return tuple(glob.text for glob in globs._includes if glob.text not in matched)
