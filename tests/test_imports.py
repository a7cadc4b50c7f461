"""A cache hit is judged by its latency: importing cachehook must stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("heavy", ["httpx", "click", "diskcache", "zstandard", "tarfile"])
def test_import_cachehook_is_light(heavy: str) -> None:
    assert heavy not in _loaded_after("import cachehook")


def test_help_does_not_import_httpx() -> None:
    code = (
        "from cachehook.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = _loaded_after(code)
    assert "click" in loaded
    assert "httpx" not in loaded


def test_exec_help_does_not_import_httpx() -> None:
    loaded = _loaded_after("from cachehook.cli import main\nmain(['exec', '--help'])")
    assert "httpx" not in loaded
