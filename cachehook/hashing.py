"""Content digests, input expansion and the task key.

The only module that imports :mod:`xxhash`. Everything here sits on the cache-hit path, so it
imports nothing heavier than :mod:`re` and :mod:`json`: inputs are found with ``os.scandir``
(pruned by each glob's literal directory prefix and by ``.gitignore``), and a file whose
``lstat`` is unchanged since the last run is not read again (:class:`StatCache`).

Glob syntax (:class:`GlobSet`), project-relative POSIX paths: ``*`` and ``?`` never cross ``/``,
``[abc]`` / ``[!abc]`` are classes, a ``**`` segment matches any number of directories (zero
included; a trailing ``/**`` matches everything below), ``!`` in front excludes. ``*`` matches
dot-files too. A pattern names files, never directories: ``dist`` matches only the path
``dist``; use ``dist/**`` for its contents.
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

from cachehook.errors import ConfigError, HashingError

if TYPE_CHECKING:
    import logging
    from collections.abc import Collection, Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "KEY_FORMAT_VERSION",
    "Expansion",
    "FileDigest",
    "GlobSet",
    "Manifest",
    "StatCache",
    "diff_manifests",
    "digest_bytes",
    "digest_file",
    "expand_globs",
    "hash_files",
    "resolve_env",
]

KEY_FORMAT_VERSION: int = 1

_CHUNK = 1 << 20
_DIGEST_LEN = 32
_STAT_CACHE_VERSION = 1
_RACY_WINDOW_NS = 1_000_000_000
_GIT = ".git"
_GITIGNORE = ".gitignore"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*\*?"  # compiled on first use, by re's cache
_HEX_DIGITS = frozenset("0123456789abcdef")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
_REGULAR_EXECUTABLE = 0o170000 | stat.S_IXUSR  # the file-type bits and the owner's x bit
_REGULAR_EXECUTABLE_BITS = stat.S_IFREG | stat.S_IXUSR
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


# --------------------------------------------------------------------------- file digests


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One input file as it enters the key.

    Attributes:
        path: project-relative POSIX path.
        digest: xxh3-128 of the bytes; for a symlink, of ``b"symlink:" + target``.
        executable: the owner's execute bit (always False for a symlink).
    """

    path: str
    digest: str
    executable: bool


_SIGNATURE = "%x %x %x %x"  # size, mtime_ns, ctime_ns, inode: %-formatting is the fastest


def _signature(st: os.stat_result) -> str:
    return _SIGNATURE % (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


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

    def read_digest(self, relpath: str, mode: int) -> str:
        if stat.S_ISLNK(mode):
            target = os.readlink(self.prefix + relpath, dir_fd=self.fd)
            return digest_bytes(b"symlink:" + os.fsencode(target))
        if not stat.S_ISREG(mode):
            msg = f"input {relpath!r} is not a regular file"
            raise HashingError(msg)
        fd = os.open(self.prefix + relpath, _OPEN_FLAGS, dir_fd=self.fd)
        try:
            return _digest_fd(fd)
        finally:
            os.close(fd)


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
        self._remember(relpath, digest, st, was_read=False)

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

    def _remember(self, relpath: str, digest: str, st: os.stat_result, *, was_read: bool) -> None:
        changed = max(st.st_mtime_ns, st.st_ctime_ns)
        self._entries[relpath] = f"{digest} {_signature(st)}"
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
                entry = get(relpath)
                if entry is not None and entry[cut:] == signature and relpath not in racy:
                    digest = entry[:size]
                else:
                    try:
                        digest = at.read_digest(relpath, st.st_mode)
                    except OSError as exc:
                        raise _input_error(relpath, exc) from exc
                    self._remember(relpath, digest, st, was_read=True)
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


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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


_MANIFEST_KEYS = frozenset(
    {"version", "command", "cwd", "inputs", "env", "outputs", "salt", "dependencies"}
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
        version: the key format.
    """

    command: tuple[str, ...]
    cwd: str
    inputs: tuple[FileDigest, ...]
    env: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    salt: str = ""
    dependencies: tuple[str, ...] = ()
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
        if not isinstance(data, dict) or data.keys() != _MANIFEST_KEYS:
            msg = f"a manifest must be an object with the keys {sorted(_MANIFEST_KEYS)}"
            raise ValueError(msg)
        version, cwd, salt = data["version"], data["cwd"], data["salt"]
        if type(version) is not int or not isinstance(cwd, str) or not isinstance(salt, str):
            msg = "manifest 'version' must be an int, 'cwd' and 'salt' strings"
            raise ValueError(msg)
        inputs, env = data["inputs"], data["env"]
        if not isinstance(inputs, list) or not isinstance(env, list):
            msg = "manifest 'inputs' and 'env' must be lists"
            raise ValueError(msg)
        return cls(
            command=_str_tuple(data["command"], "command"),
            cwd=cwd,
            inputs=tuple(map(_input_from_json, inputs)),
            env=tuple(map(_env_from_json, env)),
            outputs=_str_tuple(data["outputs"], "outputs"),
            salt=salt,
            dependencies=_str_tuple(data["dependencies"], "dependencies"),
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
    return lines
