"""The restore and the hit memo's recording: a restoring hit ends it before it writes (issue 11)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from cachehook import _hits, _memo
from cachehook._restore import Restorer
from cachehook.config import load_settings
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

    from cachehook.facts import RunResult


def _spec(root: Path) -> TaskSpec:
    code = "import os; os.makedirs('out', exist_ok=True); open('out/a.bin', 'wb').write(b'a' * 99)"
    return TaskSpec(
        command=(sys.executable, "-c", code), inputs=("src/**",), outputs=("out/**",), cwd=root
    )


def _hit(root: Path, *, remove_outputs: bool) -> tuple[tuple[str, ...], _memo.Recorder]:
    with Runner(load_settings(cwd=root, environ=dict(os.environ)), on_notice=print) as runner:
        prepared = runner.prepare(_spec(root))
        assert runner.run(prepared).stored
        if remove_outputs:
            shutil.rmtree(root / "out")
        recorder = _memo.Recorder(["exec", "--", "build"]).start()
        try:
            assert recorder.tainted is None
            result = runner.run(prepared)
            assert result.status == "HIT"
            return result.restored, recorder
        finally:
            still_patched = os.lstat == recorder._lstat
            recorder.stop()
            assert still_patched == (not remove_outputs)


def test_a_restoring_hit_ends_the_recording_before_it_writes(project: Path) -> None:
    restored, recorder = _hit(project, remove_outputs=True)

    assert restored == ("out/a.bin",)
    assert recorder.tainted == "a restore writes outputs", "no memo for a restoring hit"
    seen = {path for path, _ in recorder.seen}
    assert str(project / "out") not in seen, "the restore's own lstat calls are not recorded"


def test_a_hit_that_restores_nothing_is_still_recorded(project: Path) -> None:
    restored, recorder = _hit(project, remove_outputs=False)

    assert restored == ()
    assert recorder.tainted is None
    assert any("/store/hits/" in path for path, _ in recorder.seen), "the hit record was read"


def test_a_lookup_in_a_store_without_a_database_is_a_miss_that_creates_none(
    project: Path,
) -> None:
    """No database, no stored entry: the lookup does not open (and so create) the store."""
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=print) as runner:
        prepared = runner.prepare(_spec(project))
        assert runner._restorer.local(prepared, 0.0) is None
    assert not (settings.cache_dir / "store" / "cache.db").exists()


def test_an_entry_without_its_hit_record_is_still_found_in_the_database(project: Path) -> None:
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=print) as runner:
        prepared = runner.prepare(_spec(project))
        assert runner.run(prepared).stored
        (settings.cache_dir / "store" / "hits" / prepared.key).unlink()
        shutil.rmtree(project / "out")
        result = runner.run(prepared)
    assert (result.status, result.source, result.restored) == ("HIT", "LOCAL", ("out/a.bin",))


# -- a remote hit kept as a pending entry (issue 11) ----------------------------------------

ADOPTER = (
    "import sys; from pathlib import Path; from cachehook.store import LocalStore; "
    "LocalStore(Path(sys.argv[1]), max_size=10**9).close()"
)


def _adopt_elsewhere(store: Path) -> None:
    """Another process opens the store (and so adopts what is pending)."""
    subprocess.run([sys.executable, "-c", ADOPTER, str(store)], check=True, timeout=120)


def _remote_spec(root: Path) -> TaskSpec:
    code = (
        "import os; os.makedirs('out', exist_ok=True); "
        "open('out/a.bin', 'wb').write(os.urandom(1 << 16))"
    )
    return TaskSpec(
        command=(sys.executable, "-c", code), inputs=("src/**",), outputs=("out/**",), cwd=root
    )


def _run(root: Path, environ: dict[str, str], notices: list[str] | None = None) -> RunResult:
    settings = load_settings(cwd=root, environ={**os.environ, **environ})
    told = notices if notices is not None else []
    with Runner(settings, on_notice=told.append) as runner:
        return runner.run(runner.prepare(_remote_spec(root)))


@pytest.fixture
def remote_only(project: Path, remote_env: dict[str, str]) -> tuple[Path, bytes]:
    """A task stored on the remote only (the local store removed): the store and its output."""
    assert _run(project, remote_env).stored
    settings = load_settings(cwd=project, environ=dict(os.environ))
    produced = (project / "out" / "a.bin").read_bytes()
    shutil.rmtree(settings.cache_dir / "store")
    shutil.rmtree(project / "out")
    return settings.cache_dir / "store", produced


def _outcome(result: RunResult) -> tuple[str, str | None, tuple[str, ...]]:
    return result.status, result.source, result.restored


@pytest.mark.integration
def test_a_remote_hit_is_kept_pending_and_the_next_hit_is_local(
    project: Path, remote_env: dict[str, str], remote_only: tuple[Path, bytes]
) -> None:
    store, produced = remote_only
    assert _outcome(_run(project, remote_env)) == ("HIT", "REMOTE", ("out/a.bin",))
    assert not (store / "cache.db").exists()
    hit = _hits.read_hit(store, os.listdir(store / "hits")[0])
    assert hit is not None
    assert hit.artifact.parent == store / "pending"
    shutil.rmtree(project / "out")

    assert _outcome(_run(project, remote_env)) == ("HIT", "LOCAL", ("out/a.bin",))
    assert (project / "out" / "a.bin").read_bytes() == produced
    assert not (store / "cache.db").exists()


@pytest.mark.integration
@pytest.mark.parametrize("adopted", ["before-open", "after-open"])
def test_a_local_hit_of_a_pending_entry_adopted_meanwhile_is_whole(
    project: Path,
    remote_env: dict[str, str],
    remote_only: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
    adopted: str,
) -> None:
    """Another process renames the pending artifact into diskcache between the hit's read of
    the record and its open of the file (the store's path), or once the file is open."""
    store, produced = remote_only
    assert _outcome(_run(project, remote_env)) == ("HIT", "REMOTE", ("out/a.bin",))
    shutil.rmtree(project / "out")
    read_hit = _hits.read_hit
    unpack = Restorer._unpack

    def read_then_adopt(store_dir: Path, key: str) -> _hits.Hit | None:
        hit = read_hit(store_dir, key)
        assert hit is not None
        assert hit.artifact.parent.name == "pending"
        _adopt_elsewhere(store_dir)
        return hit

    def adopt_then_unpack(self: Restorer, *args: Any, **kwargs: Any) -> list[str] | None:
        _adopt_elsewhere(store)
        return unpack(self, *args, **kwargs)

    if adopted == "before-open":
        monkeypatch.setattr(_hits, "read_hit", read_then_adopt)
    else:
        monkeypatch.setattr(Restorer, "_unpack", adopt_then_unpack)
    notices: list[str] = []
    assert _outcome(_run(project, remote_env, notices)) == ("HIT", "LOCAL", ("out/a.bin",))
    assert (project / "out" / "a.bin").read_bytes() == produced
    assert not notices
    assert os.listdir(store / "pending") == []


@pytest.mark.integration
def test_a_remote_hit_without_local_write_keeps_nothing(
    project: Path, remote_env: dict[str, str], remote_only: tuple[Path, bytes]
) -> None:
    store, _ = remote_only
    modes = {**remote_env, "CACHEHOOK_CACHE": "local:r,remote:rw"}
    assert _outcome(_run(project, modes)) == ("HIT", "REMOTE", ("out/a.bin",))
    assert not store.exists() or not any(store.iterdir())


@pytest.mark.integration
def test_a_remote_hit_that_cannot_be_kept_is_a_hit_all_the_same(
    project: Path,
    remote_env: dict[str, str],
    remote_only: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, produced = remote_only

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_hits, "write_hit", full)
    notices: list[str] = []
    assert _outcome(_run(project, remote_env, notices)) == ("HIT", "REMOTE", ("out/a.bin",))
    assert (project / "out" / "a.bin").read_bytes() == produced
    assert any("the remote hit is not kept locally" in notice for notice in notices), notices
    assert os.listdir(store / "pending") == []


@pytest.mark.integration
def test_a_remote_hit_on_another_file_system_is_kept_by_the_store(
    project: Path,
    remote_env: dict[str, str],
    remote_only: tuple[Path, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _ = remote_only
    rename = os.rename

    def cross_device(src: Any, dst: Any) -> None:
        if "pending" in str(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", cross_device)
    notices: list[str] = []
    assert _outcome(_run(project, remote_env, notices)) == ("HIT", "REMOTE", ("out/a.bin",))
    assert not notices
    assert (store / "cache.db").exists()
    assert not (store / "pending").exists() or os.listdir(store / "pending") == []
    hit = _hits.read_hit(store, os.listdir(store / "hits")[0])
    assert hit is not None
    assert hit.artifact.parent.parent.parent == store, "a value file of the store"
