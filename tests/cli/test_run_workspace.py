"""``cachehook run`` in a uv workspace, through the CLI in this process (issue 14)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

from tests.integrations.hosts import BIN
from tests.test_members import ROOT_TASKS, make_workspace
from tests.test_selection import git

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Ran


def test_run_from_a_member_prefixes_lines_and_sums_up_per_member(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")

    ran = cli("run", "test", "lint", "--filter", "...c", "-j", "2", cwd=root / "packages" / "c")

    assert ran.returncode == 0, ran.stderr
    assert "a:test | ok" in ran.stdout.splitlines()
    assert "c:lint | lint" in ran.stdout.splitlines()
    assert "b:" not in ran.stdout + ran.stderr
    assert "cachehook: 4 tasks: 0 cached, 4 ran" in ran.stderr
    assert "cachehook:   a  2 ran" in ran.stderr.splitlines()
    assert "cachehook:   c  2 ran" in ran.stderr.splitlines()


def test_dry_run_json_says_why_and_a_bare_affected_keeps_the_task_name(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    (root / ".gitignore").write_text(".cache/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    git(root, "checkout", "-q", "-b", "feature")
    (root / "packages" / "c" / "src" / "c.py").write_text("NAME = 'c2'\n")

    ran = cli("run", "--affected", "build", "--dry-run=json", cwd=root)

    assert ran.returncode == 0, ran.stderr
    why = {task["name"]: task["why"] for task in json.loads(ran.stdout)["tasks"]}
    assert why == {
        "d#build": "c#build depends on it",
        "b#build": "a#build depends on it",
        "c#build": "packages/c/src/c.py changed",
        # a imports c: with upstream inputs, c's files are a's inputs too.
        "a#build": "packages/c/src/c.py changed",
    }

    git(root, "commit", "-q", "-am", "change c")
    nothing = cli("run", "--affected=HEAD", "build", cwd=root)
    assert nothing.returncode == 0
    assert "nothing to run" in nothing.stderr


def test_tasks_and_explain_work_from_inside_a_member(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    member = root / "packages" / "b" / "src"

    listed = cli("tasks", "--json", cwd=member)
    assert listed.returncode == 0, listed.stderr
    names = [task["name"] for task in json.loads(listed.stdout)["tasks"]]
    assert names[:3] == ["a#build", "a#lint", "a#test"]

    explained = cli("explain", "b#test", cwd=member)
    assert explained.returncode == 0, explained.stderr
    assert "b#test" in explained.stdout


def test_run_without_a_task_lists_the_task_names_not_every_node(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = make_workspace(tmp_path, ROOT_TASKS)
    ran = cli("run", cwd=root)
    assert ran.returncode == 2
    assert "the tasks in pyproject.toml are: build, lint, test" in ran.stderr


def _wheel(folder: Path, name: str, version: str) -> None:
    """A pure-Python wheel of ``name`` ``version`` in ``folder`` (a find-links index for uv)."""
    folder.mkdir(exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
            digest = hashlib.sha256(text.encode()).digest()
            encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            record.append(f"{path},sha256={encoded},{len(text.encode())}")
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")


def _uv_lock(root: Path, *args: str) -> None:
    env = {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": os.fspath(root.parent / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
    }
    uv = shutil.which("uv", path=str(BIN))
    assert uv, "uv is missing: pip install '.[test]' installs it"
    argv = [uv, "lock", "--find-links", "wheels", "--python", sys.executable, *args]
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_explain_names_the_locked_package_a_uv_lock_bump_changed(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    root = tmp_path / "ws"
    (root / "packages" / "lib").mkdir(parents=True)
    (root / "packages" / "app").mkdir()
    test = json.dumps([sys.executable, "-c", "pass"])
    (root / "pyproject.toml").write_text(
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        f"[tool.cachehook.tasks.test]\nper-member = true\ncommand = {test}\n"
    )
    (root / "packages" / "lib" / "pyproject.toml").write_text(
        '[project]\nname = "lib"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
    )
    (root / "packages" / "app" / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["lib", "widget"]\n[tool.uv.sources]\nlib = { workspace = true }\n'
    )
    (root / ".gitignore").write_text("wheels/\n")
    _wheel(root / "wheels", "widget", "1.0")
    _uv_lock(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "widget 1.0")
    assert cli("run", "test", cwd=root).returncode == 0

    _wheel(root / "wheels", "widget", "1.1")
    _uv_lock(root, "--upgrade-package", "widget")  # uv itself rewrites uv.lock
    assert 'version = "1.1"' in (root / "uv.lock").read_text()
    ran = cli("run", "test", cwd=root)
    assert ran.returncode == 0, ran.stderr
    assert "cachehook: lib:test: local hit" in ran.stderr  # only app reaches widget
    assert "cachehook: app:test: cache miss" in ran.stderr

    # app's last stored run is the new one: explain compares it with the run before it,
    # whose uv.lock is still in git's index.
    explained = cli("explain", "app#test", cwd=root)
    assert explained.returncode == 0, explained.stderr
    assert "  locked dependency changed (uv.lock): widget 1.0 -> 1.1" in explained.stdout
    assert "salt changed" not in explained.stdout

    shutil.rmtree(root / ".git")  # no earlier uv.lock to read: say what changed, not which
    unknown = json.loads(cli("explain", "app#test", "--json", cwd=root).stdout)
    assert len(unknown["changes"]) == 1
    assert unknown["changes"][0].startswith("locked dependencies changed (uv.lock): the versions")


def test_help_and_dry_run_spell_out_dependencies_and_dependents(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    helped = cli("run", "--help", cwd=tmp_path)
    assert "--filter 'app...'     app and every member app depends on" in helped.stdout
    assert "--filter '...core'    core and every member that depends on core" in helped.stdout

    root = make_workspace(tmp_path, ROOT_TASKS)
    (root / "shared.toml").write_text("")
    # b depends on d; a on b and c: 'b...' is b and d, '...b' is b and a.
    for selector, why in (
        ("b...", {"b#lint": "--filter b...", "d#lint": "--filter b...: b depends on it"}),
        ("...b", {"b#lint": "--filter ...b", "a#lint": "--filter ...b: it depends on b"}),
    ):
        ran = cli("run", "lint", "--filter", selector, "--dry-run=json", cwd=root)
        assert ran.returncode == 0, ran.stderr
        assert {t["name"]: t["why"] for t in json.loads(ran.stdout)["tasks"]} == why


def test_the_per_member_summary_says_failed_and_not_started_as_the_total_does(
    tmp_path: Path, cli: Callable[..., Ran]
) -> None:
    failing = json.dumps([sys.executable, "-c", "raise SystemExit(3)"])
    fails = {"a": f"[tool.cachehook.tasks.test]\ncommand = {failing}\n"}
    root = make_workspace(tmp_path, ROOT_TASKS, members=fails)
    (root / "shared.toml").write_text("")

    ran = cli("run", "test", cwd=root)  # a's test starts first; its failure starts no other

    assert ran.returncode == 3
    lines = ran.stderr.splitlines()
    assert "cachehook: 4 tasks: 0 cached, 0 ran, 1 failed, 3 not started · saved 0.00s" in lines
    assert "cachehook:   a  1 failed" in lines
    assert "cachehook:   b  1 not started" in lines
