"""The restore and the hit memo's recording: a restoring hit ends it before it writes (issue 11)."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING

from cachehook import _memo
from cachehook.config import load_settings
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path


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
