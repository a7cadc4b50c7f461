"""What git knows about a worktree: where its git directory is, and which paths it tracks.

Private to :mod:`cachehook._globs` (issue 10): a file git tracks is an input whenever a glob
matches it, even if a ``.gitignore`` pattern matches it too, because git applies ignore rules
to untracked files only. The tracked set comes from reading ``.git/index`` directly (versions
2, 3 and 4), which costs a few milliseconds for 10,000 entries and is read only when a walk
met an ignored path; an index this module cannot read (a sparse or split index, an unknown
version or required extension) is listed by ``git ls-files -z`` instead.

Also here: where the user's global excludes file is (``core.excludesFile``, by default
``$XDG_CONFIG_HOME/git/ignore``), read from git's configuration files without running git
unless they hold something a plain reading cannot follow (an ``include``).

``GitRepo`` is a NamedTuple, not a frozen dataclass: importing ``dataclasses`` (with
``inspect``) costs milliseconds on every hit (hit latency, issue 11).
"""

from __future__ import annotations

import os
import stat
import sys
from typing import NamedTuple

__all__ = ["GitRepo", "excludes_file", "find_repo", "reset", "tracked_paths"]

_GIT = ".git"
_MAX_MEMO = 8
_GIT_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")
# Per index file: (size, mtime_ns, ctime_ns, inode) and the sorted tracked paths. git writes
# the index through a lock file and a rename, so a rewrite always changes the signature.
_MEMO: dict[str, tuple[tuple[int, int, int, int], tuple[str, ...]]] = {}


class GitRepo(NamedTuple):
    """A git worktree around some directory.

    Attributes:
        top: the worktree's top directory (absolute).
        gitdir: its own git directory, holding ``index`` (for a linked worktree or a
            submodule, where ``.git`` is a file saying ``gitdir: ...``).
        commondir: the directory holding ``info/exclude`` and ``config``.
    """

    top: str
    gitdir: str
    commondir: str


def reset() -> None:
    """Forget the tracked sets read so far (for tests)."""
    _MEMO.clear()


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def find_repo(directory: str) -> tuple[GitRepo | None, str]:
    """The repository around ``directory``, and the worktree top (``directory`` if none).

    A ``.git`` that is neither a directory nor a ``gitdir:`` file still marks the top (and
    gives no repository), as git would refuse it.
    """
    top = os.path.abspath(directory)
    while True:
        dotgit = os.path.join(top, _GIT)
        try:
            mode = os.lstat(dotgit).st_mode
        except OSError:
            parent = os.path.dirname(top)
            if parent == top:
                return None, os.path.abspath(directory)
            top = parent
            continue
        if stat.S_ISDIR(mode):
            return GitRepo(top, dotgit, dotgit), top
        text = _read_text(dotgit) or ""  # a worktree or submodule: 'gitdir: <path>'
        if not text.startswith("gitdir:"):
            return None, top
        gitdir = os.path.join(top, text[len("gitdir:") :].strip())
        common = (_read_text(os.path.join(gitdir, "commondir")) or "").strip()
        return GitRepo(top, gitdir, os.path.join(gitdir, common) if common else gitdir), top


# --------------------------------------------------------------------------- the index


def _hash_size(repo: GitRepo) -> int:
    config = (_read_text(os.path.join(repo.commondir, "config")) or "").lower()
    return 32 if "sha256" in config and "objectformat" in config else 20


def _parse_index(data: bytes, hash_size: int) -> list[bytes] | None:
    """The paths of the regular files and symlinks in an index, or None if it is unreadable.

    Layout (git's Documentation/gitformat-index.txt): a 12-byte header ``DIRC``, version,
    count; per entry 40 bytes of stat data (the mode at offset 24), the object id, 16 bits of
    flags (the low 12 the name length), in version 3+ 16 more if flag 0x4000 is set, then the
    name: NUL-padded to a multiple of 8 in versions 2 and 3, in version 4 a varint of bytes
    to drop from the previous name followed by the NUL-terminated rest. Extensions follow;
    one whose signature starts with a lower-case letter must be understood, so None.
    """
    if len(data) < 12 + hash_size or data[:4] != b"DIRC":
        return None
    version = int.from_bytes(data[4:8], "big")
    count = int.from_bytes(data[8:12], "big")
    if version not in (2, 3, 4):
        return None
    flags_at = 40 + hash_size
    try:
        if version == 4:
            names, pos = _entries_v4(data, count, flags_at)
        else:
            names, pos = _entries_v2(data, count, flags_at, extended=version == 3)
    except (IndexError, ValueError):
        return None
    if names is None:
        return None
    return names if _extensions_known(data, pos, len(data) - hash_size) else None


def _entries_v2(
    data: bytes, count: int, flags_at: int, *, extended: bool
) -> tuple[list[bytes] | None, int]:
    names: list[bytes] = []
    append, find, pos = names.append, data.index, 12
    for _ in range(count):
        flags = data[pos + flags_at] << 8 | data[pos + flags_at + 1]
        start = pos + flags_at + (4 if extended and flags & 0x4000 else 2)
        length = flags & 0xFFF
        end = find(b"\0", start) if length == 0xFFF else start + length
        kind = data[pos + 26] >> 4  # the object type: the top 4 bits of the 16-bit mode
        if kind == 0o10 or kind == 0o12:  # a regular file or a symlink
            append(data[start:end])
        elif kind == 0o04:  # a sparse directory entry
            return None, pos
        pos += (end - pos + 8) & ~7
    return names, pos


def _entries_v4(data: bytes, count: int, flags_at: int) -> tuple[list[bytes] | None, int]:
    names: list[bytes] = []
    append, find, pos, previous = names.append, data.index, 12, b""
    for _ in range(count):
        flags = data[pos + flags_at]
        start = pos + flags_at + (4 if flags & 0x40 else 2)
        drop, start = _varint(data, start)
        end = find(b"\0", start)
        name = previous[: len(previous) - drop] + data[start:end]
        kind = data[pos + 26] >> 4
        if kind == 0o10 or kind == 0o12:
            append(name)
        elif kind == 0o04:
            return None, pos
        previous, pos = name, end + 1
    return names, pos


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """git's offset varint (each continuation adds one before shifting)."""
    byte = data[pos]
    value = byte & 0x7F
    while byte & 0x80:
        pos += 1
        byte = data[pos]
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, pos + 1


def _extensions_known(data: bytes, pos: int, end: int) -> bool:
    while pos + 8 <= end:
        if not 0x41 <= data[pos] <= 0x5A:  # 'link' (split index), 'sdir' (sparse index), ...
            return False
        pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
    return pos == end


def _ls_files(repo: GitRepo) -> list[bytes] | None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV}
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--full-name"],
            cwd=repo.top,
            env=env,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return [name for name in done.stdout.split(b"\0") if name]


def tracked_paths(repo: GitRepo) -> tuple[str, ...]:
    """The paths git tracks, relative to the worktree top, POSIX, sorted, without duplicates.

    Submodules (gitlinks) are left out: they are not files. An index that can be neither
    read nor listed by git gives an empty set (the walk alone then decides, as before).
    """
    index = os.path.join(repo.gitdir, "index")
    try:
        st = os.stat(index)
    except OSError:
        return ()  # a fresh repository: nothing added yet
    signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    found = _MEMO.get(index)
    if found is not None and found[0] == signature:
        return found[1]
    try:
        with open(index, "rb") as file:
            data = file.read()
    except OSError:
        return ()
    names = _parse_index(data, _hash_size(repo))
    if names is None:
        names = _ls_files(repo) or []
    text = b"\0".join(names).decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    # The index is sorted by the bytes of each path (stages of a conflict side by side): in
    # str order too, unless a path is not ASCII.
    paths = tuple(dict.fromkeys(text.split("\0")) if text else ())
    if not text.isascii():
        paths = tuple(sorted(paths))
    if len(_MEMO) >= _MAX_MEMO:
        _MEMO.clear()
    _MEMO[index] = (signature, paths)
    return paths


# --------------------------------------------------------------------------- configuration


def _config_files(repo: GitRepo) -> list[str]:
    """git's configuration files, lowest precedence first."""
    environ = os.environ
    files: list[str] = []
    if not environ.get("GIT_CONFIG_NOSYSTEM"):
        files.append(environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig")
    home = os.path.expanduser("~")
    if "GIT_CONFIG_GLOBAL" in environ:
        files.append(environ["GIT_CONFIG_GLOBAL"])
    else:
        xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files += [os.path.join(xdg, "git", "config"), os.path.join(home, ".gitconfig")]
    files.append(os.path.join(repo.commondir, "config"))
    files.append(os.path.join(repo.gitdir, "config.worktree"))
    return files


def _core_value(text: str, key: str) -> tuple[bool, str | None]:
    """The last ``[core] key`` value in one config file; (False, _) if it needs git to read."""
    section = ""
    value: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            head = line[1 : line.find("]")].strip().lower()
            if head.startswith(("include", "includeif")):
                return False, None
            section = head
            line = line[line.find("]") + 1 :].strip()
            if not line:
                continue
        name, equals, rest = line.partition("=")
        if section != "core" or name.strip().lower() != key:
            continue
        rest = rest.strip()
        if "\\" in rest or '"' in rest:
            return False, None
        value = rest.split("#")[0].split(";")[0].strip() if equals else None
    return True, value


def _git_config(repo: GitRepo, key: str) -> str | None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV}
    try:
        done = subprocess.run(
            ["git", "config", "--path", "--get", key],
            cwd=repo.top,
            env=env,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    return os.fsdecode(done.stdout.rstrip(b"\n")) if done.returncode == 0 else None


def excludes_file(repo: GitRepo) -> str | None:
    """The global excludes file git would read for ``repo`` (which may not exist), or None."""
    value: str | None = None
    needs_git = "GIT_CONFIG_COUNT" in os.environ or "GIT_CONFIG_PARAMETERS" in os.environ
    for path in _config_files(repo):
        if needs_git:
            break
        text = _read_text(path)
        lowered = text.lower() if text is not None else ""
        if text is None or ("excludesfile" not in lowered and "include" not in lowered):
            continue
        readable, found = _core_value(text, "excludesfile")
        needs_git = not readable
        value = found if found is not None else value
    if needs_git:
        value = _git_config(repo, "core.excludesFile")
    if value is None:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return os.path.join(xdg, "git", "ignore")
    if not value:
        return None
    value = os.path.expanduser(value) if value.startswith("~") else value
    return os.path.join(repo.top, value)
