"""Which files a set of globs names: glob syntax, ``.gitignore`` rules and the directory walk.

Private to :mod:`cachehook.hashing`, which re-exports :class:`GlobSet`, :class:`Expansion` and
:func:`expand_globs`. Everything here sits on the cache-hit path, so it imports nothing heavier
than :mod:`re`: inputs are found with ``os.scandir``, pruned by each glob's literal directory
prefix and by ``.gitignore``.

Glob syntax (:class:`GlobSet`), project-relative POSIX paths: ``*`` and ``?`` never cross ``/``,
``[abc]`` / ``[!abc]`` are classes, a ``**`` segment matches any number of directories (zero
included; a trailing ``/**`` matches everything below), ``!`` in front excludes. ``*`` matches
dot-files too. A pattern names files, never directories: ``dist`` matches only the path
``dist``; use ``dist/**`` for its contents.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError, HashingError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence
    from pathlib import Path

__all__ = ["Expansion", "GlobSet", "expand_globs"]

_GIT = ".git"
_GITIGNORE = ".gitignore"


# --------------------------------------------------------------------------- glob syntax


def _has_magic(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def _class_end(segment: str, start: int) -> int:
    index = start
    if segment[index : index + 1] in ("!", "^"):
        index += 1
    if segment[index : index + 1] == "]":
        index += 1
    return segment.find("]", index)


def _class_regex(body: str) -> str:
    negated = body[:1] in ("!", "^")
    if negated:
        body = body[1:]
    inner = "".join("-" if char == "-" else re.escape(char) for char in body)
    if negated:
        return f"[^/{inner}]"
    # A range such as '+-0' contains '/', which must never match.
    return f"(?!/)[{inner}]" if "-" in body else f"[{inner}]"


def _segment_regex(segment: str, *, escapes: bool = False) -> str | None:
    """The regex of one path segment, or None if a '[' is unbalanced."""
    out: list[str] = []
    index, size = 0, len(segment)
    while index < size:
        char = segment[index]
        index += 1
        if char == "*":
            while index < size and segment[index] == "*":
                index += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = _class_end(segment, index)
            if end < 0:
                return None
            out.append(_class_regex(segment[index:end]))
            index = end + 1
        elif char == "\\" and escapes and index < size:
            out.append(re.escape(segment[index]))
            index += 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _expansions(segment: str) -> list[str] | None:
    """Every name a segment of literals and small classes matches ('*.py[cod]' tails), if few."""
    names = [""]
    index, size = 0, len(segment)
    while index < size:
        char = segment[index]
        index += 1
        if char in "*?\\":
            return None
        if char == "[":
            end = _class_end(segment, index)
            body = segment[index:end]
            if end < 0 or body[:1] in ("!", "^") or "-" in body:
                return None
            char, index = body, end + 1
        names = [name + option for name in names for option in dict.fromkeys(char)]
        if len(names) > 64:
            return None
    return names


def _path_regex(parts: Sequence[str | None]) -> str:
    """Regex over a relative path; ``parts`` are segment regexes, None for a '**' segment."""
    out: list[str] = []
    last = len(parts) - 1
    for index, part in enumerate(parts):
        if part is None:
            out.append("[^/]+(?:/[^/]+)*" if index == last else "(?:[^/]+/)*")
        else:
            out.append(part if index == last else part + "/")
    return "".join(out)


def _parent_regex(parts: Sequence[str | None]) -> str | None:
    """Regex over '/' + a directory ('' for the top) that the leading ``parts`` match.

    None when every directory does (no parts, or only '**').
    """
    if all(part is None for part in parts) and parts:
        return None
    return "".join("(?:/[^/]+)*" if part is None else "/" + part for part in parts)


class _Parent:
    """A test on '/' + a directory path ('' for the top): a literal head, then a regex."""

    __slots__ = ("exact", "head", "match")

    def __init__(self, segments: Sequence[str], parts: Sequence[str | None], regex: str) -> None:
        literal = 0
        for segment, part in zip(segments, parts, strict=True):
            if part is None or _has_magic(segment) or "\\" in segment:
                break
            literal += 1
        self.head = "".join("/" + segment for segment in segments[:literal])
        self.exact = literal == len(segments)  # then no regex is needed
        self.match = None if self.exact else re.compile(regex, re.DOTALL).fullmatch

    @classmethod
    def make(cls, segments: Sequence[str], parts: Sequence[str | None]) -> _Parent | None:
        """None when every directory qualifies."""
        regex = _parent_regex(parts)
        return None if regex is None else cls(segments, parts, regex)

    def __call__(self, slashed: str) -> bool:
        if self.exact:
            return slashed == self.head
        return slashed.startswith(self.head) and self.match(slashed) is not None  # type: ignore[misc]


def _prune_regex(parts: Sequence[str | None]) -> str:
    """Regex over '/' + a directory: the pattern can match something below that directory."""
    tail = ""
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        if part is None:
            tail = "(?:/.*)?"
        elif index < len(parts) - 1:
            tail = f"(?:/{part}{tail})?"
    return tail


def _compile(alternatives: Iterable[str], *, groups: bool = False) -> re.Pattern[str] | None:
    form = "({})" if groups else "(?:{})"
    alternatives = [form.format(alternative) for alternative in alternatives]
    return re.compile("|".join(alternatives), re.DOTALL) if alternatives else None


class _NamePart:
    """The test one pattern makes on an entry's own name: names, suffixes, or a regex."""

    __slots__ = ("literals", "regex", "suffixes")

    def __init__(self, segment: str, regex: str) -> None:
        self.literals: tuple[str, ...] = ()
        self.suffixes: tuple[str, ...] = ()
        self.regex: str | None = None
        if "\\" not in segment:
            if segment.startswith("*"):
                suffixes = _expansions(segment[1:])
                if suffixes is not None:
                    self.suffixes = tuple(suffixes)
                    return
            else:
                literals = _expansions(segment)
                if literals is not None:
                    self.literals = tuple(literals)
                    return
        self.regex = regex


class _NameTest:
    """The union of some name parts: an entry is kept if any of them matches its name."""

    __slots__ = ("literals", "regex", "suffixes")

    def __init__(self, parts: Iterable[_NamePart]) -> None:
        parts = list(parts)
        self.literals = frozenset(name for part in parts for name in part.literals)
        self.suffixes = tuple(suffix for part in parts for suffix in part.suffixes)
        regex = _compile(part.regex for part in parts if part.regex is not None)
        self.regex = regex.fullmatch if regex is not None else None

    def __call__(self, name: str) -> bool:
        return (
            name in self.literals
            or name.endswith(self.suffixes)
            or (self.regex is not None and self.regex(name) is not None)
        )


class _DirTests:
    """Per directory, the name test of the patterns that can match its entries (memoised)."""

    __slots__ = ("_anchored", "_floating", "_memo", "names")

    def __init__(self, items: Sequence[tuple[_Parent | None, _NamePart]]) -> None:
        self.names = [name for _, name in items]
        self._floating = [index for index, (parent, _) in enumerate(items) if parent is None]
        self._anchored = [(i, parent) for i, (parent, _) in enumerate(items) if parent is not None]
        self._memo: dict[tuple[int, ...], tuple[tuple[int, ...], _NameTest]] = {}

    def test(self, slashed: str) -> tuple[tuple[int, ...], _NameTest] | None:
        """The live pattern indices and their test in a directory ('/' + its path, or '')."""
        live = (*self._floating, *(i for i, parent in self._anchored if parent(slashed)))
        if not live:
            return None
        found = self._memo.get(live)
        if found is None:
            found = self._memo[live] = (live, _NameTest(self.names[i] for i in live))
        return found


class _Glob:
    """One parsed pattern (without its leading '!')."""

    __slots__ = (
        "covered_dir_regex",
        "literal",
        "name",
        "parent",
        "parts",
        "prefix",
        "regex",
        "segments",
        "text",
    )

    def __init__(self, text: str, segments: tuple[str, ...], parts: tuple[str | None, ...]) -> None:
        self.text = text
        self.segments = segments
        self.parts = parts  # segment regexes, None for '**'
        self.regex = _path_regex(parts)
        magic = [index for index, segment in enumerate(segments) if _has_magic(segment)]
        self.literal = None if magic else "/".join(segments)
        self.prefix = segments[: magic[0]] if magic else segments[:-1]  # literal leading dirs
        self.covered_dir_regex: str | None = None
        if parts[-1] is None:  # 'a/**': any name, in 'a' or below
            self.name = _NamePart("*", "[^/]*")
            self.parent = _Parent.make(segments, parts)
            # The directories all of whose contents the pattern matches.
            self.covered_dir_regex = _path_regex(parts[:-1]) if len(parts) > 1 else ".+"
        else:
            self.name = _NamePart(segments[-1], parts[-1])
            self.parent = _Parent.make(segments[:-1], parts[:-1])


def _parse_glob(raw: str, what: str) -> tuple[bool, _Glob]:
    excluded = raw.startswith("!")
    text = raw[1:] if excluded else raw
    reason = None
    segments = [segment for segment in text.split("/") if segment not in ("", ".")]
    collapsed = [s for i, s in enumerate(segments) if s != "**" or segments[i - 1 : i] != [s]]
    parts = [None if s == "**" else _segment_regex(s) for s in collapsed]
    if not text:
        reason = "empty pattern"
    elif "\\" in text:
        reason = "use '/' as the separator (a backslash is not allowed)"
    elif text.startswith("/") or (text[:1].isalpha() and text[1:3] == ":/"):
        reason = "must be relative to the project root"
    elif ".." in segments:
        reason = "must not contain '..' (it would leave the project)"
    elif not segments:
        reason = "names the project root; use '**' for every file"
    elif text.endswith("/"):
        reason = f"names a directory; use '{text}**' for the files under it"
    elif any(part is None and s != "**" for part, s in zip(parts, collapsed, strict=True)):
        reason = "unbalanced '['"
    if reason is not None:
        msg = f"{what} {raw!r}: {reason}"
        raise ConfigError(msg)
    return excluded, _Glob(text, tuple(collapsed), tuple(parts))


class GlobSet:
    """Compiled include and exclude globs over project-relative POSIX paths.

    ``**`` matches any number of directories (zero included), ``*`` and ``?`` never cross
    ``/``, ``[abc]`` is a class, and a pattern starting with ``!`` excludes. A pattern names
    files, not directories: ``dist`` matches only the path ``dist``; use ``dist/**`` for its
    contents. A leading ``./`` is dropped.
    """

    __slots__ = ("_cache", "_excludes", "_includes")

    def __init__(self, includes: Sequence[_Glob], excludes: Sequence[_Glob]) -> None:
        self._includes = tuple(includes)
        self._excludes = tuple(excludes)
        self._cache: dict[str, Any] = {}

    @classmethod
    def compile(cls, patterns: Sequence[str], *, what: str = "glob") -> GlobSet:
        """Parse and check patterns.

        Args:
            patterns: globs; one starting with ``!`` excludes.
            what: how the patterns were given (``"--input"``), for error messages.

        Returns:
            The compiled set.

        Raises:
            ConfigError: a pattern is empty, absolute, holds a ``..`` segment or a backslash,
                ends with ``/``, or has an unbalanced ``[`` (the message names it and ``what``).
        """
        if isinstance(patterns, str):
            patterns = [patterns]
        includes: list[_Glob] = []
        excludes: list[_Glob] = []
        for raw in patterns:
            excluded, glob = _parse_glob(raw, what)
            (excludes if excluded else includes).append(glob)
            try:
                if "[" in glob.text:  # a class may hold a bad range such as 'z-a'
                    re.compile(glob.regex)
            except re.error as exc:
                msg = f"{what} {raw!r}: invalid pattern ({exc})"
                raise ConfigError(msg) from exc
        return cls(includes, excludes)

    @property
    def include_patterns(self) -> tuple[str, ...]:
        """The include patterns, as given."""
        return tuple(glob.text for glob in self._includes)

    @property
    def exclude_patterns(self) -> tuple[str, ...]:
        """The exclude patterns, as given but without their leading ``!``."""
        return tuple(glob.text for glob in self._excludes)

    def matches(self, relpath: str) -> bool:
        """Whether some include pattern and no exclude pattern matches a project-relative path."""
        include = self._get("include")
        if include is None or include.fullmatch(relpath) is None:
            return False
        exclude = self._get("exclude")
        return exclude is None or exclude.fullmatch(relpath) is None

    def __repr__(self) -> str:
        patterns = [*self.include_patterns, *(f"!{p}" for p in self.exclude_patterns)]
        return f"GlobSet.compile({patterns!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobSet):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.include_patterns, self.exclude_patterns

    @property
    def _walked(self) -> list[_Glob]:
        """The include patterns found by walking (literal paths are looked up directly)."""
        return [glob for glob in self._includes if glob.literal is None]

    def _get(self, name: str) -> Any:
        """Build lazily: each regex costs ~0.1 ms to compile, and a run needs only some."""
        if name not in self._cache:
            self._cache[name] = self._build(name)
        return self._cache[name]

    def _build(self, name: str) -> object:
        if name == "include":
            return _compile(glob.regex for glob in self._includes)
        if name == "exclude":
            return _compile(glob.regex for glob in self._excludes)
        if name == "prune":  # over '/' + a directory: some walked pattern may match below
            return _compile(_prune_regex(glob.parts) for glob in self._walked)
        if name == "excluded_dirs":  # directories whose whole content is excluded
            return _compile(filter(None, (glob.covered_dir_regex for glob in self._excludes)))
        if name == "covered_dirs":  # directories whose whole content matches(), if exact
            covered = [glob.covered_dir_regex for glob in self._includes]
            return None if self._excludes else _compile(filter(None, covered))
        globs = {"walk": self._walked, "all": self._includes, "excludes": self._excludes}[name]
        return _DirTests([(glob.parent, glob.name) for glob in globs]) if globs else None


# --------------------------------------------------------------------------- gitignore


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


class _IgnoreFile:
    """The rules of one .gitignore (or info/exclude) file."""

    __slots__ = ("anchored", "base", "rules", "up")

    def __init__(self, base: str, up: str, rules: tuple[_IgnoreRule, ...]) -> None:
        self.base = base  # the directory (relative to the root) it applies under; "" at or above
        self.up = up  # for files above the root: the root's path relative to the file's directory
        self.rules = rules
        self.anchored = tuple(rule for rule in rules if rule.parent is not None)

    @classmethod
    def parse(cls, text: str, *, base: str = "", up: str = "") -> _IgnoreFile | None:
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


class _IgnoreTest:
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


class _NoRules:
    """Stands for an _IgnoreTest where no rule applies."""

    @staticmethod
    def keep(names: list[str]) -> list[str]:
        return names

    def __call__(self, name: str) -> bool:
        return False


_NO_RULES = _NoRules()


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def _git_dirs(root: str) -> tuple[str | None, str]:
    """The git directory holding info/exclude (or None), and the worktree top (else root)."""
    top = root
    while True:
        dotgit = os.path.join(top, _GIT)
        try:
            mode = os.lstat(dotgit).st_mode
        except OSError:
            parent = os.path.dirname(top)
            if parent == top:
                return None, root
            top = parent
            continue
        if stat.S_ISDIR(mode):
            return dotgit, top
        text = _read_text(dotgit) or ""  # a worktree or submodule: 'gitdir: <path>'
        if not text.startswith("gitdir:"):
            return None, top
        gitdir = os.path.join(top, text[len("gitdir:") :].strip())
        common = (_read_text(os.path.join(gitdir, "commondir")) or "").strip()
        return (os.path.join(gitdir, common) if common else gitdir), top


def _outer_ignore_files(root: str) -> list[_IgnoreFile]:
    """info/exclude and the .gitignore files above the root (a project inside a repository)."""
    root = os.path.abspath(root)
    gitdir, top = _git_dirs(root)
    files: list[_IgnoreFile | None] = []
    up = os.path.relpath(root, top).replace(os.sep, "/") if top != root else ""
    if gitdir is not None:
        text = _read_text(os.path.join(gitdir, "info", "exclude"))
        files.append(_IgnoreFile.parse(text, up=up) if text else None)
    segments = up.split("/") if up else []
    for depth in range(len(segments)):
        text = _read_text(os.path.join(top, *segments[:depth], _GITIGNORE))
        files.append(_IgnoreFile.parse(text, up="/".join(segments[depth:])) if text else None)
    return [file for file in files if file is not None]


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True, slots=True)
class Expansion:
    """The files some globs matched.

    Attributes:
        files: sorted project-relative POSIX paths of regular files and symlinks.
        unmatched: the include patterns that matched no file, in the order given.
    """

    files: tuple[str, ...]
    unmatched: tuple[str, ...]


_IgnoreTests = tuple["_IgnoreTest | _NoRules", "_IgnoreTest | _NoRules"]


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
    ) -> None:
        self.root = root
        self.respect_gitignore = respect_gitignore
        self.skip = skip
        self.pruned: set[str] = set()  # directories skipped because they are ignored
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

    def load(self, directory: str) -> _IgnoreFile | None:
        text = _read_text(os.path.join(self.root, directory, _GITIGNORE))
        return _IgnoreFile.parse(text, base=directory) if text else None

    def ignore_tests(self, directory: str, stack: tuple[_IgnoreFile, ...]) -> _IgnoreTests:
        key = tuple((file, file.live(directory)) for file in stack)
        found = self._memo.get(key)
        if found is None:
            rules = [r for file, live in key for r in file.rules if r.parent is None or r in live]
            files = [rule for rule in rules if not rule.dir_only]
            found = (
                _IgnoreTest(files) if files else _NO_RULES,
                _IgnoreTest(rules) if rules else _NO_RULES,
            )
            self._memo[key] = found
        return found

    def walk(
        self,
        start: str,
        stack: tuple[_IgnoreFile, ...],
        includes: _DirTests,
        prune: re.Pattern[str] | None,
    ) -> set[int]:
        """Add the files below ``start`` to ``found``; return the indices of the includes used."""
        credited: set[int] = set()
        pending = [(start, stack)]
        while pending:
            directory, stack = pending.pop()
            slashed = "/" + directory if directory else ""
            tested = includes.test(slashed)
            names, subdirs, has_ignore_file = self._scan(directory, tested)
            if has_ignore_file and self.respect_gitignore:
                loaded = self.load(directory)
                stack = (*stack, loaded) if loaded is not None else stack
            file_ignored, dir_ignored = self.ignore_tests(directory, stack)
            prefix = directory + "/" if directory else ""
            if names:
                names = file_ignored.keep(names)
                names = self._unexcluded(slashed, prefix, names)
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
                    self.pruned.add(rel)
                    continue
                pending.append((rel, stack))
        return credited

    def _scan(
        self, directory: str, tested: tuple[tuple[int, ...], _NameTest] | None
    ) -> tuple[list[str], list[str], bool]:
        """The names of the matching files, of the subdirectories, and whether a .gitignore is."""
        path = self.root + "/" + directory if directory else self.root
        names: list[str] = []
        subdirs: list[str] = []
        try:
            with os.scandir(path) as iterator:
                entries = list(iterator)
        except (FileNotFoundError, NotADirectoryError):
            return names, subdirs, False  # removed while we walked
        except OSError as exc:
            msg = f"cannot list {directory or '.'!r}: {exc.strerror or exc}"
            raise HashingError(msg) from exc
        has_ignore_file = False
        if tested is None:
            literals: frozenset[str] = frozenset()
            suffixes: tuple[str, ...] = ()
            regex = None
        else:
            literals, suffixes, regex = tested[1].literals, tested[1].suffixes, tested[1].regex
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(name)
                continue
            if name == _GITIGNORE:
                has_ignore_file = True
            if (
                name in literals
                or name.endswith(suffixes)
                or (regex is not None and regex(name) is not None)
            ) and (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                names.append(name)
        return names, subdirs, has_ignore_file

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
) -> Expansion:
    """Find the files below ``root`` that ``globs`` match.

    ``.git`` is never walked, nor are symlinked directories (a symlink is reported as a file,
    broken or not) or ``skip_dirs``. Files ignored by the project's ``.gitignore`` files (nested
    ones, those above the root up to the repository top, and ``.git/info/exclude``) are skipped,
    except a file an include pattern names literally (no glob characters), and files below a
    directory that a pattern's literal leading part names (``build/**`` reaches into an
    ignored ``build/``). The user's global excludes file is not read, so two machines agree.

    Args:
        root: the project root.
        globs: the include (and ``!`` exclude) patterns.
        exclude: paths it matches are left out (the runner passes the output globs).
        respect_gitignore: honour ``.gitignore`` and ``.git/info/exclude``.
        skip_dirs: absolute directories never walked (the cache directory).

    Returns:
        The sorted files, and the include patterns that matched nothing.

    Raises:
        HashingError: the root or a directory that must be walked cannot be listed.
    """
    root_str = os.fspath(root)
    skip = _skip_set(root_str, skip_dirs)
    walker = _Walker(root_str, globs, exclude, respect_gitignore=respect_gitignore, skip=skip)
    outer = tuple(_outer_ignore_files(root_str)) if respect_gitignore else ()
    includes: _DirTests | None = globs._get("walk")
    credited: set[int] = set()
    if includes is not None:
        if not os.path.isdir(root_str):
            msg = f"project root {root_str!r} is not a directory"
            raise HashingError(msg)
        credited = walker.walk("", outer, includes, globs._get("prune"))
    count = len(walker.found)
    for index, glob in enumerate(globs._walked):
        reached = walker.pruned and _reaches_ignored(glob.prefix, walker.pruned)
        if reached and _walk_ignored_prefix(walker, glob, outer):
            credited.add(index)
    literals = {glob.literal for glob in globs._includes if glob.literal is not None}
    literals = {literal for literal in literals if _is_literal_file(walker, literal)}
    files = walker.found
    if literals or len(files) > count:
        files = list({*files, *literals})
    files.sort()
    return Expansion(tuple(files), _unmatched(globs, credited, literals))


def _reaches_ignored(prefix: tuple[str, ...], pruned: set[str]) -> bool:
    return any("/".join(prefix[:depth]) in pruned for depth in range(1, len(prefix) + 1))


def _walk_ignored_prefix(walker: _Walker, glob: _Glob, outer: tuple[_IgnoreFile, ...]) -> bool:
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
