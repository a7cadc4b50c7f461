"""Which project a command works on, said plainly when it is not obvious (issue 9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook.config import Settings
    from cachehook.tasks import TaskGraph

__all__ = ["has_marker", "load_tasks_or_explain", "root_notice"]


def has_marker(directory: Path) -> bool:
    """Whether ``directory`` holds what makes it a project root: pyproject.toml or .git."""
    return (directory / "pyproject.toml").is_file() or (directory / ".git").exists()


def root_notice(settings: Settings, *, cwd: Path) -> str | None:
    """A line saying which root was taken, when no pyproject.toml or .git chose it; else None."""
    if has_marker(settings.root):
        return None
    return (
        f"no pyproject.toml or .git in {cwd} or above; using {settings.root} as the project "
        "root (pass --root to choose)"
    )


def load_tasks_or_explain(settings: Settings, *, cwd: Path) -> TaskGraph:
    """The task graph; a missing pyproject.toml is named, with where it was looked for.

    Raises:
        ConfigError: there is no pyproject.toml at the root, or its task table is malformed.
    """
    from cachehook.tasks import load_task_graph

    path = settings.root / "pyproject.toml"
    if not path.is_file():
        why = (
            "the project root, by its .git"
            if (settings.root / ".git").exists()
            else f"found no pyproject.toml or .git in {cwd} or above"
        )
        msg = (
            f"no pyproject.toml at {path} ({why}): named tasks live in its "
            "[tool.cachehook.tasks.NAME] tables; cd into the project or pass --root DIR"
        )
        raise ConfigError(msg)
    return load_task_graph(settings, cwd=cwd)
