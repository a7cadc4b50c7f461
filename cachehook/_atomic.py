"""Replace a small cache file atomically: write a sibling, then rename it over the old one.

Shared by the stat cache (:mod:`cachehook.digests`) and the toolchain cache
(:mod:`cachehook.toolchain`): a reader sees the old file or the new one, never half of one,
and a crash leaves at most a stray ``*.tmp`` sibling. On the hit path, so it imports only
:mod:`os` (and :mod:`logging` when something fails).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["replace_file"]

_SERIAL = itertools.count()  # two threads of one process never share a temporary name


def replace_file(path: Path | str, data: bytes, *, what: str) -> bool:
    """Write ``data`` to ``path`` through a temporary sibling and a rename.

    Args:
        path: the file; its directory is created if missing.
        data: the new content.
        what: the file's name in the warning (``"the stat cache"``).

    Returns:
        Whether it was written. An OSError is logged as a warning, never raised, and the
        temporary file is removed.
    """
    target = os.fspath(path)
    tmp = f"{target}.{os.getpid()}.{next(_SERIAL)}.tmp"
    try:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(tmp, "wb") as file:
            file.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        import logging  # only on the error path: importing logging costs milliseconds

        logging.getLogger("cachehook").warning("could not save %s %s: %s", what, target, exc)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True
