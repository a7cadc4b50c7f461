"""examples/uv-workspace runs as its README says, with the real ``uv`` (offline) and git."""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import TYPE_CHECKING

import pytest

from tests.integrations.hosts import BIN
from tests.integrations.test_examples import run_readme

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def statuses(output: str, command: str) -> dict[str, str]:
    """What each task did in the block's run of ``command`` (the run after its echo)."""
    section = output.split(f"+ {command}\n", 1)[1].split("\n+ ", 1)[0]
    found: dict[str, str] = {}
    for match in re.finditer(
        r"^cachehook: (\w+:\w+): (local hit|ran in|cache miss)", section, re.M
    ):
        found.setdefault(match.group(1), "hit" if match.group(2) == "local hit" else "ran")
    return found


def test_the_diamond_workspace(tmp_path: Path) -> None:
    assert shutil.which("uv", path=str(BIN)), "uv is missing: pip install '.[test]' installs it"
    scratch = tmp_path / "uv"
    env = {
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": os.fspath(scratch / "cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
        "BASH_XTRACEFD": "1",
        "PS4": "+ ",
    }
    root, output = run_readme("uv-workspace", tmp_path, SHELLOPTS="xtrace", **env)

    first = statuses(output, "cachehook run test -j 2")
    assert first == dict.fromkeys(["app:test", "auth:test", "billing:test", "core:test"], "ran")
    assert "app:test     | OK" in output.splitlines()
    assert "test_cents (test_core.CentsTest.test_cents) ... ok" in output  # core's override
    builds = [re.escape(f"{m}-0.1.0-py3-none-any.whl") for m in ("core", "auth", "billing", "app")]
    for wheel in builds:
        assert re.search(wheel, output), output
    for member in ("app", "auth", "billing", "core"):
        assert (root / "packages" / member / "dist" / f"{member}-0.1.0.tar.gz").is_file()
    after = output.rsplit("+ cachehook run test -j 2\n", 1)[1]
    assert re.search(r"^cachehook: auth:test: local hit", after, re.M), after
    assert re.search(r"^cachehook: core:test: local hit", after, re.M), after
    assert re.search(r"^cachehook: billing:test: cache miss", after, re.M), after
    assert re.search(r"^cachehook: app:test: cache miss", after, re.M), after
    dry = output.split("+ cachehook run test --affected --dry-run=json\n", 1)[1]
    plan = json.loads(dry[: dry.index("\n}\n") + 2])
    assert {t["name"] for t in plan["tasks"]} == {"app#test", "billing#test"}
