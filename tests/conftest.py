from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cachehook import process
from cachehook._api import close_runners

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = ["tests.servers"]

_STRIPPED_PREFIXES = ("CACHEHOOK_", "TURBO_")

# The package managers' download caches stay the developer's (or CI's, warm from installing the
# test extra): each test has its own HOME, and tests that install into venvs (pre-commit, nox,
# the packaging and toolchain tests) would otherwise download every wheel again (issue 9).
_XDG_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
_DOWNLOAD_CACHES = {
    "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or str(_XDG_CACHE / "uv"),
    "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(_XDG_CACHE / "pip"),
}
_STRIPPED_NAMES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "VERCEL",
    "BUILDKITE",
    "TRAVIS",
    "JENKINS_URL",
)


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the developer's settings or writes to the real cache directory."""
    for name in list(os.environ):
        if name.startswith(_STRIPPED_PREFIXES) or name in _STRIPPED_NAMES:
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    # git's global and system config (a developer's excludes file) must not change inputs.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(home / "cachehook-cache"))
    for name, directory in _DOWNLOAD_CACHES.items():
        monkeypatch.setenv(name, directory)


@pytest.fixture
def cache_dir() -> Path:
    return Path(os.environ["CACHEHOOK_CACHE_DIR"])


@pytest.fixture(autouse=True)
def _reset_registries() -> Iterator[None]:
    """A stop signal one test sent must not reach the children of the next, and the runners
    the decorators keep open between calls belong to one test's cache directory (any test
    may call a decorated function, not only those under tests/integrations)."""
    process.reset()
    yield
    close_runners()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project of one module, ``src/m.py``, with an empty pyproject.toml (a test module or a
    closer conftest may define its own ``project``)."""
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "src" / "m.py").write_text("x = 1\n")
    return root
