"""``python -m build`` makes an sdist and a wheel that pass ``twine check`` and install (issue 9).

cachehook is not on PyPI yet; this is what publishing it would upload. The build is isolated
(hatchling comes from the package index, as for any user) and the wheel goes into a venv of its
own, whose ``cachehook`` must start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import cachehook

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [os.fspath(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # build, pip and twine run no cachehook code: coverage stays out of them (issue 9).
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")},
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # The isolated build env is made by uv (build's own --installer option): seconds, not ~10.
    run(sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, ROOT, cwd=out)
    return out


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    built = sorted(path.name for path in dist.iterdir())
    version = cachehook.__version__
    assert built == [f"cachehook-{version}-py3-none-any.whl", f"cachehook-{version}.tar.gz"]
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir(), cwd=dist)
    assert checked.count("PASSED") == 2, checked


def test_the_sdist_holds_the_project_and_nothing_local(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("pyproject.toml", "README.md", "cachehook/__init__.py", "cachehook/py.typed"):
        assert needed in names
    assert "cachehook/cli/__init__.py" in names
    assert any(name.startswith("tests/") for name in names)
    local = (".peers/", ".venv/", ".git/", ".nox/", "dist/", ".coverage", "__pycache__")
    assert not [name for name in names if any(part in name for part in local)]


def test_the_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "cachehook/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "examples/"))]
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    run(env / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    shown = run(env / "bin" / "cachehook", "--version", cwd=tmp_path)
    assert shown.strip() == f"cachehook, version {cachehook.__version__}"
