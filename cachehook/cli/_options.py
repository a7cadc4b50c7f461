"""The options several subcommands share, spelled and explained once (issue 9).

Click-free at import: ``cli/_exec.py`` reads the help texts on the hit path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CACHE_DIR_HELP", "ROOT_HELP", "cache_dir_option", "root_option"]

CACHE_DIR_HELP = (
    "Local cache directory (default: $CACHEHOOK_CACHE_DIR, else $XDG_CACHE_HOME/cachehook, "
    "else ~/.cache/cachehook)."
)
ROOT_HELP = "Project root (default: nearest ancestor with pyproject.toml or .git)."


def _directory_option(name: str, help_text: str) -> Callable[[Any], Any]:
    from pathlib import Path

    import click

    return click.option(
        name, type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help=help_text
    )


def cache_dir_option(help_text: str = CACHE_DIR_HELP) -> Callable[[Any], Any]:
    """``--cache-dir DIR``, as every subcommand spells it."""
    return _directory_option("--cache-dir", help_text)


def root_option() -> Callable[[Any], Any]:
    """``--root DIR``, as every subcommand spells it."""
    return _directory_option("--root", ROOT_HELP)
