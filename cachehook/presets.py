"""Presets: the per-member tasks Python teams run, enabled with ``presets = [...]`` (issue 14).

Each preset gives task tables, the same shape as ``[tool.cachehook.tasks.NAME]``, for one
workspace member. A task the root or the member declares under the same name overrides the
preset key by key. ``//`` starts a glob relative to the workspace root.

| preset | task | command |
|---|---|---|
| ``ruff`` | ``lint``, ``format`` | ``ruff check .``, ``ruff format --check .`` |
| ``mypy`` | ``typecheck`` | ``mypy .`` |
| ``pytest`` | ``test`` | ``pytest`` |
| ``build`` | ``build`` | ``uv build --package NAME --out-dir dist`` |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PRESETS", "preset_tasks"]

PRESETS = ("build", "mypy", "pytest", "ruff")

# A member's files are its default inputs; these are the root files the tool also reads.
_RUFF_ROOT = ["//pyproject.toml", "//ruff.toml", "//.ruff.toml"]
_MYPY_ROOT = ["//pyproject.toml", "//mypy.ini", "//.mypy.ini", "//setup.cfg"]
_PYTEST_ROOT = ["//pyproject.toml", "//pytest.ini", "//conftest.py", "//setup.cfg", "//tox.ini"]


def _tasks(preset: str, member: str) -> dict[str, dict[str, Any]]:
    if preset == "ruff":
        # Ruff reads the member's files and config only: an upstream change cannot alter it.
        common = {"inputs": ["**", *_RUFF_ROOT], "upstream-inputs": False}
        return {
            "lint": {"command": ["ruff", "check", "."], **common},
            "format": {"command": ["ruff", "format", "--check", "."], **common},
        }
    if preset == "mypy":
        # mypy follows imports into the members this one depends on (upstream-inputs).
        return {
            "typecheck": {
                "command": ["mypy", "."],
                "inputs": ["**", *_MYPY_ROOT],
            }
        }
    if preset == "pytest":
        return {"test": {"command": ["pytest"], "inputs": ["**", *_PYTEST_ROOT]}}
    return {
        "build": {
            "command": ["uv", "build", "--package", member, "--out-dir", "dist"],
            "inputs": ["**", "//uv.lock"],
            "outputs": ["dist/**"],
            "upstream-inputs": False,
        }
    }


def preset_tasks(
    presets: object, member: str, *, root: Path, where: str
) -> dict[str, dict[str, Any]]:
    """The task tables the named presets give ``member``.

    A root config file the tool may read is an input only when it exists (no warning for
    the ones a project does not have); the graph is read afresh on every run.

    Raises:
        ConfigError: ``presets`` is not an array of known preset names.
    """
    if not isinstance(presets, list) or not all(isinstance(p, str) for p in presets):
        msg = f'{where} presets: expected an array of strings, such as ["ruff", "pytest"]'
        raise ConfigError(msg)
    tasks: dict[str, dict[str, Any]] = {}
    for preset in presets:
        if preset not in PRESETS:
            msg = f"{where} presets: unknown preset {preset!r}; known: {', '.join(PRESETS)}"
            raise ConfigError(msg)
        for name, body in _tasks(preset, member).items():
            inputs = body["inputs"]
            body["inputs"] = [
                p for p in inputs if not p.startswith("//") or (root / p[2:]).exists()
            ]
            tasks[name] = body
    return tasks
