"""What one run of many tasks has already walked and digested, until a task of it writes.

A ``cachehook run`` over a workspace prepares one task per member, and a member's inputs hold
its upstream members' files: without this, each of those files is listed, ``lstat``-ed and
looked up again for every member that reads it (issue 14). While no task of the run writes,
the files are as the first task saw them, so the second task takes the directory listings,
the parsed ignore files and the digests from here.

A task that runs (or restores outputs) may rewrite what the next task reads, so the runner
calls :meth:`RunCache.invalidate` after each one; a walk still going on at that moment fills
the dropped generation, which nobody reads again. Only a run turns this on
(:meth:`cachehook.runner.Runner.reusing_inputs`): a long-lived runner shared by decorated
functions never keeps it, since the user's own code edits files between two calls.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from cachehook._gitignore import GITIGNORE, outer_ignore_files
from cachehook.errors import HashingError

if TYPE_CHECKING:
    from cachehook._gitignore import IgnoreFile
    from cachehook.digests import FileDigest
    from cachehook.gitindex import GitRepo

__all__ = [
    "Generation",
    "Listing",
    "RunCache",
    "is_dir",
    "list_dir",
    "outer_ignores",
    "scan_entries",
]

_GIT = ".git"

# A directory's entries: the files and symlinks, the subdirectories, whether a .gitignore is
# among them, and the symlinks that resolve to a directory.
Listing = tuple[list[str], list[str], bool, list[str]]


class Generation:
    """What was seen since the last write: plain dicts, filled by the walk and the digests.

    Attributes:
        listings: absolute directory path -> its entries.
        ignore_files: directory relative to the root -> its parsed ``.gitignore`` (or None).
        outer: project root -> :func:`cachehook._gitignore.outer_ignore_files` of it.
        digests: project-relative path -> its digest.
    """

    __slots__ = ("digests", "ignore_files", "listings", "outer")

    def __init__(self) -> None:
        self.listings: dict[str, Listing] = {}
        self.ignore_files: dict[str, IgnoreFile | None] = {}
        self.outer: dict[str, tuple[GitRepo | None, list[IgnoreFile], bool]] = {}
        self.digests: dict[str, FileDigest] = {}


class RunCache:
    """The current :class:`Generation`; :meth:`invalidate` starts a new, empty one.

    Thread-safe without a lock: tasks of one run are prepared on several threads, and
    replacing the generation is one assignment (each dict operation is atomic).
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current = Generation()

    def invalidate(self) -> None:
        """Forget everything: a task of the run may have written files."""
        self.current = Generation()


def scan_entries(path: str, directory: str) -> list[os.DirEntry[str]]:
    """The entries of a directory; none if it was removed while the walk went on.

    Raises:
        HashingError: it exists but cannot be listed.
    """
    try:
        with os.scandir(path) as iterator:
            return list(iterator)
    except (FileNotFoundError, NotADirectoryError):
        return []  # removed while we walked
    except OSError as exc:
        msg = f"cannot list {directory or '.'!r}: {exc.strerror or exc}"
        raise HashingError(msg) from exc


def list_dir(path: str, directory: str) -> Listing:
    """Every entry of a directory, sorted into what the walk needs (no name test applied).

    Raises:
        HashingError: it exists but cannot be listed.
    """
    files: list[str] = []
    subdirs: list[str] = []
    dir_links: list[str] = []
    entries = scan_entries(path, directory)
    has_ignore_file = False
    for entry in entries:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(name)
            continue
        if name == GITIGNORE:
            has_ignore_file = True
        if entry.is_symlink():
            files.append(name)
            if name != _GIT and is_dir(entry):
                dir_links.append(name)
        elif entry.is_file(follow_symlinks=False):
            files.append(name)
    return files, subdirs, has_ignore_file, dir_links


def is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a symlink's entry resolves to a directory (False if that cannot be told).

    Through ``os.stat``, not the entry's own ``is_dir``: what a link resolves to lies outside
    the directory listed, and ``cachehook._memo`` records what ``os.stat`` sees, not a
    ``DirEntry``.
    """
    try:
        return stat.S_ISDIR(os.stat(entry.path).st_mode)
    except OSError:
        return False


def outer_ignores(
    root: str, reuse: Generation | None
) -> tuple[GitRepo | None, list[IgnoreFile], bool]:
    """:func:`cachehook._gitignore.outer_ignore_files`, read once per generation."""
    if reuse is None:
        return outer_ignore_files(root)
    found = reuse.outer.get(root)
    if found is None:
        found = reuse.outer[root] = outer_ignore_files(root)
    return found
