"""The CLI's one error boundary: an unexpected error leaves an owner-only crash log (issue 9)."""

from __future__ import annotations

import gc
import stat
from typing import TYPE_CHECKING

import pytest

import cachehook.cli
from cachehook.cli import main

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def crashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(args: list[str]) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cachehook.cli, "_dispatch", explode)


def crash_logs(directory: Path) -> list[Path]:
    return sorted((directory / "crashes").glob("crash-*.log"))


def assert_owner_only(log: Path) -> None:
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert "RuntimeError: boom" in log.read_text()


@pytest.mark.usefixtures("crashing")
def test_a_crash_log_goes_to_the_cache_dir_owner_only(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats"]) == 3
    (log,) = crash_logs(cache_dir)
    assert_owner_only(log)
    assert f"the traceback is in {log}" in capsys.readouterr().err


@pytest.mark.usefixtures("crashing")
def test_a_crash_log_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CACHEHOOK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["stats"]) == 3
    (log,) = crash_logs(tmp_path / "xdg" / "cachehook")
    assert_owner_only(log)


@pytest.mark.usefixtures("crashing")
@pytest.mark.parametrize("spelling", ["separate", "joined"])
def test_a_crash_log_follows_cache_dir(tmp_path: Path, cache_dir: Path, spelling: str) -> None:
    chosen = tmp_path / "chosen"
    flag = ["--cache-dir", str(chosen)] if spelling == "separate" else [f"--cache-dir={chosen}"]
    assert main(["cache", "ls", *flag]) == 3
    (log,) = crash_logs(chosen)
    assert_owner_only(log)
    assert not crash_logs(cache_dir)
    # After '--' the words are the command's, not ours.
    assert main(["exec", "--", "tool", "--cache-dir", str(tmp_path / "not-ours")]) == 3
    assert not (tmp_path / "not-ours").exists()


@pytest.mark.parametrize("args", [["exec", "--", "true"], ["run", "t"], ["stats"]])
@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_as_main_found_it(
    monkeypatch: pytest.MonkeyPatch, args: list[str], *, enabled: bool
) -> None:
    # exec and run turn cyclic collection off while they work; main() called in-process (the
    # tests, an embedding tool) gets back the collector as it was, even after a crash.
    seen: list[bool] = []

    def dispatch(given: list[str]) -> int:
        seen.append(gc.isenabled())
        raise RuntimeError("boom")

    monkeypatch.setattr(cachehook.cli, "_dispatch", dispatch)
    (gc.enable if enabled else gc.disable)()
    try:
        assert main(args) == 3
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert seen == [enabled and args[0] == "stats"]
