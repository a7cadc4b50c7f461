"""Glob syntax: which project-relative paths a set of patterns names.

Private to :mod:`cachehook.hashing` (which re-exports :class:`GlobSet`); the walk that finds
the files is :mod:`cachehook._walk`, the ``.gitignore`` rules :mod:`cachehook._gitignore`.
Everything here sits on the cache-hit path, so it imports nothing heavier than :mod:`re`.

Project-relative POSIX paths: ``*`` and ``?`` never cross ``/``, ``[abc]`` / ``[!abc]`` are
classes, a ``**`` segment matches any number of directories (zero included; a trailing ``/**``
matches everything below), ``!`` in front excludes. ``*`` matches dot-files too. A pattern
names files, never directories: ``dist`` matches only the path ``dist``; use ``dist/**`` for
its contents.

Just over the 400-line aim (~425): one pattern's parse, its checks and its compiled parts
(``_Glob``, ``_Parent``, ``_NamePart``) are read together by :class:`GlobSet`; the parse
(``_parse_glob`` and the segment regexes) is the seam to split along if it grows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["GlobSet", "escape_glob"]


# --------------------------------------------------------------------------- glob syntax


def escape_glob(path: str) -> str:
    """A pattern that matches exactly ``path``, a project-relative POSIX path.

    Each ``*``, ``?`` and ``[`` becomes a one-character class; a leading ``!`` (which would
    exclude) is shielded by ``./``, which a pattern drops.
    """
    escaped = re.sub(r"[*?\[]", lambda match: f"[{match.group()}]", path)
    return "./" + escaped if escaped.startswith("!") else escaped


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


# Parsed patterns by their text: a run of many tasks checks each task's globs when it loads the
# table and again when it keys the task (1,200 parses for 200 tasks). A _Glob never changes
# once made; only patterns that parse are kept, so every error is raised with its own ``what``.
_PARSED: dict[str, tuple[bool, _Glob]] = {}
_PARSED_LIMIT = 4096


def _parse_glob(raw: str, what: str) -> tuple[bool, _Glob]:
    parsed = _PARSED.get(raw)
    if parsed is None:
        parsed = _parse_new_glob(raw, what)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[raw] = parsed
    return parsed


def _parse_new_glob(raw: str, what: str) -> tuple[bool, _Glob]:
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
