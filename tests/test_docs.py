"""What the README and docs promise about defaults and installing holds (issue 9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cachehook.config import default_cache_dir, load_settings, parse_cache_modes

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/*/README.md")])


def test_the_cache_mode_the_readme_calls_default_is_the_default(tmp_path: Path) -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(r"`--cache` .*? The default is `([a-z:,]+)`", text)
    assert found, "the README names the default of --cache"
    settings = load_settings(cwd=tmp_path, environ={"CACHEHOOK_CACHE_DIR": str(tmp_path)})
    assert settings.modes == parse_cache_modes(found.group(1))
    assert "remote:r` is read-only — the safe default" not in text


def test_the_cache_dir_default_reads_as_the_readme_says(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    assert "else `$XDG_CACHE_HOME/cachehook`, else `~/.cache/cachehook`" in text
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cachehook"
    assert default_cache_dir({}) == Path.home() / ".cache" / "cachehook"


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_doc_installs_from_pypi(path: Path) -> None:
    # cachehook is not on PyPI: every install is from a clone (a path), in a venv.
    for line in path.read_text().splitlines():
        assert not re.search(r"pip install\s+(-e\s+)?['\"]?cachehook\b", line), line
        if re.match(r"\s*(python3? -m )?pip install", line):
            pytest.fail(f"{path.name}: an install outside a venv (PEP 668 refuses it): {line}")
