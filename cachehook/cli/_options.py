"""The options several subcommands share, spelled once, and the one way from them to Settings.

Every subcommand takes its shared options from this table (``@options(ROOT, CACHE_DIR)``) and
turns the ones that feed :class:`~cachehook.config.Settings` into settings with
``load_cli_settings`` (issues 9, 11). A command may reword an option's help for itself
(``NO_CACHE._replace(help=...)``); its spelling, value and meaning stay the table's.

Click-free at import: ``cli/_exec.py`` parses ``exec``'s options from this table on the hit
path without click; ``click_option`` imports click only when a click command is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from cachehook.config import OUTPUT_LOG_MODES, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypedDict

    from cachehook.config import Settings

    class SettingsFlags(TypedDict, total=False):
        """The parsed options that feed Settings; each key is a keyword of ``load_settings``."""

        # Declared for mypy only: a TypedDict costs ~0.3 ms to build at import, on every hit,
        # and at run time these are plain dicts (issue 11).
        root: Path | None
        cache_dir: Path | None
        cache: str | None
        remote_only: bool
        no_cache: bool
        output_logs: str | None


__all__ = [
    "ALL_PROJECTS",
    "CACHE",
    "CACHE_DIR",
    "DRY_RUN",
    "FORCE",
    "JSON",
    "NO_CACHE",
    "NO_TOOLCHAIN",
    "OUTPUT_LOGS",
    "QUIET",
    "REMOTE_ONLY",
    "ROOT",
    "SETTINGS_OPTIONS",
    "Option",
    "click_option",
    "load_cli_settings",
    "options",
]

Kind = Literal["multiple", "value", "flag", "path", "choice", "optional-choice"]
F = TypeVar("F", bound="Callable[..., Any]")


class Option(NamedTuple):
    """One option: how it is spelled, parsed and explained, for click and the fast parser."""

    # A NamedTuple, not a frozen dataclass: built at import on every hit, it costs ~0.3 ms
    # where a dataclass costs ~1.9 ms on the 2-core VM (issue 11).

    dest: str
    flags: tuple[str, ...]
    kind: Kind
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    default: str | None = None  # a "value" option's value when not given

    @property
    def takes_value(self) -> bool:
        """Whether the next word (or ``=VALUE``) is this option's value, never optional."""
        return self.kind in ("multiple", "value", "path", "choice")

    @property
    def unset(self) -> object:
        """The option's value when it is not given."""
        if self.kind == "multiple":
            return ()
        return False if self.kind == "flag" else self.default


ROOT = Option(
    "root",
    ("--root",),
    "path",
    "Project root (default: nearest ancestor with pyproject.toml or .git).",
    "DIR",
)
CACHE_DIR = Option(
    "cache_dir",
    ("--cache-dir",),
    "path",
    "Local cache directory (default: $CACHEHOOK_CACHE_DIR, else $XDG_CACHE_HOME/cachehook, "
    "else ~/.cache/cachehook).",
    "DIR",
)
CACHE = Option(
    "cache",
    ("--cache",),
    "value",
    "Which caches to read/write, as turbo spells it: 'local:rw,remote:r'.",
    "MODES",
)
REMOTE_ONLY = Option("remote_only", ("--remote-only",), "flag", "Use only the remote cache.")
NO_CACHE = Option(
    "no_cache", ("--no-cache",), "flag", "Just run the command (also CACHEHOOK_DISABLE=1)."
)
OUTPUT_LOGS = Option(
    "output_logs",
    ("--output-logs",),
    "choice",
    "What of the command's output to show: full (default), errors-only, hash-only, none.",
    choices=OUTPUT_LOG_MODES,
)
# The options above feed Settings; their dests are load_settings' keywords.
SETTINGS_OPTIONS = (ROOT, CACHE_DIR, CACHE, REMOTE_ONLY, NO_CACHE, OUTPUT_LOGS)

NO_TOOLCHAIN = Option(
    "no_toolchain",
    ("--no-toolchain",),
    "flag",
    "Leave the toolchain (interpreter, installed packages, program files) out of the key.",
)
FORCE = Option("force", ("--force",), "flag", "Run even on a hit, and overwrite the cached result.")
DRY_RUN = Option(
    "dry_run",
    ("--dry-run",),
    "optional-choice",
    "Print the key and every input with its digest; run nothing. --dry-run=json for JSON.",
    choices=("text", "json"),
)
QUIET = Option("quiet", ("-q", "--quiet"), "flag", "No status line (warnings still show).")
JSON = Option("as_json", ("--json",), "flag", "Print one JSON object.")
ALL_PROJECTS = Option(
    "all_projects",
    ("--all-projects",),
    "flag",
    "List every project's artifacts, not only this one's.",
)


def load_cli_settings(
    flags: SettingsFlags, *, cwd: Path | None = None, workspace: bool = False
) -> Settings:
    """The settings for the options given: flag > environment > pyproject.toml > default.

    Args:
        flags: the parsed options of ``SETTINGS_OPTIONS`` the command offers.
        cwd: where the command works (default: the working directory).
        workspace: a ``cwd`` in a uv workspace takes the workspace's root (``run``, issue 14).

    Raises:
        ConfigError: a value is malformed; the message names where it came from.
    """
    return load_settings(
        cwd=Path.cwd() if cwd is None else cwd, environ=os.environ, workspace=workspace, **flags
    )


def click_option(option: Option) -> Callable[[F], F]:
    """The click decorator for ``option``."""
    import click

    flags = (*option.flags, option.dest)
    common: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
    if option.kind == "multiple":
        return click.option(*flags, multiple=True, **common)
    if option.kind == "flag":
        return click.option(*flags, is_flag=True, help=option.help)
    if option.kind == "path":
        return click.option(*flags, type=click.Path(file_okay=False, path_type=Path), **common)
    if option.kind == "choice":
        return click.option(*flags, type=click.Choice(option.choices), help=option.help)
    if option.kind == "optional-choice":
        return click.option(
            *flags,
            type=click.Choice(option.choices),
            is_flag=False,
            flag_value=option.choices[0],
            default=None,
            help=option.help,
        )
    return click.option(*flags, default=option.default, **common)


def options(*chosen: Option) -> Callable[[F], F]:
    """Add ``chosen`` to a click command, shown in this order in its ``--help``.

    The callback receives each as a keyword argument named by its ``dest``; those of
    ``SETTINGS_OPTIONS`` are best taken as ``**flags: Unpack[SettingsFlags]`` and handed to
    ``load_cli_settings``.
    """

    def decorate(func: F) -> F:
        for option in reversed(chosen):
            func = click_option(option)(func)
        return func

    return decorate
