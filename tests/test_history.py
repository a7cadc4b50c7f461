"""The run history: appended by every run, read by ``stats`` and ``explain``."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cachehook.history import HistoryEntry, append_result, history_path, read_history
from cachehook.runner import RunResult

if TYPE_CHECKING:
    import pytest


def hit(key: str = "k" * 32, saved: int = 1500) -> RunResult:
    return RunResult(key, "HIT", "LOCAL", 0, 3, saved_ms=saved, local_hit=True)


def miss(key: str = "m" * 32, code: int = 0) -> RunResult:
    return RunResult(key, "MISS", None, code, 900, local_hit=False, remote_hit=False)


def test_append_then_read_keeps_every_field(tmp_path: Path) -> None:
    append_result(tmp_path, hit(), task="gen")
    append_result(tmp_path, miss(code=2), task=None)
    first, second = read_history(tmp_path)
    assert (first.task, first.status, first.source, first.saved_ms, first.local_hit) == (
        "gen",
        "HIT",
        "LOCAL",
        1500,
        True,
    )
    assert (second.task, second.status, second.exit_code, second.remote_hit) == (
        None,
        "MISS",
        2,
        False,
    )
    assert first.at <= second.at
    assert history_path(tmp_path).read_bytes().count(b"\n") == 2


def test_a_bypassed_run_is_not_recorded(tmp_path: Path) -> None:
    append_result(tmp_path, RunResult("k" * 32, "BYPASS", None, 0, 5), task="a")
    assert list(read_history(tmp_path)) == []
    assert not history_path(tmp_path).exists()


def test_creates_the_cache_dir_and_never_raises(tmp_path: Path) -> None:
    append_result(tmp_path / "new" / "cache", hit(), task="a")
    assert len(list(read_history(tmp_path / "new" / "cache"))) == 1
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    append_result(blocked, hit(), task="a")  # cannot be written: silently skipped


def test_torn_lines_are_skipped_and_the_next_record_survives(tmp_path: Path) -> None:
    append_result(tmp_path, hit(), task="a")
    with history_path(tmp_path).open("ab") as file:
        file.write(b'{"at":12.5,"task":"b","key":"')  # a run killed mid-write, no newline
    append_result(tmp_path, miss(), task="c")
    with history_path(tmp_path).open("ab") as file:
        file.write(b"garbage\n[1, 2]\n\n" + b'{"at": 1}\n' + b'{"at":3,"task":')
    assert [entry.task for entry in read_history(tmp_path)] == ["a", "c"]


def test_since_filters_by_time(tmp_path: Path) -> None:
    path = history_path(tmp_path)
    old = HistoryEntry(at=100.0, key="a", status="HIT", source="LOCAL", exit_code=0,
                       duration_ms=1, saved_ms=5)  # fmt: skip
    path.write_bytes(old.to_line())
    append_result(tmp_path, hit(), task="new")
    assert [entry.task for entry in read_history(tmp_path, since=1000.0)] == ["new"]
    assert len(list(read_history(tmp_path))) == 2


def _append_many(cache_dir: str, prefix: str) -> None:
    for index in range(200):
        append_result(Path(cache_dir), hit(key=f"{prefix}{index:030d}"), task=prefix)


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_many, args=(str(tmp_path), f"p{i}")) for i in range(3)
    ]
    threads = [
        threading.Thread(target=_append_many, args=(str(tmp_path), f"t{i}")) for i in range(2)
    ]
    for process in workers:
        process.start()
    for thread in threads:
        thread.start()
    for process in workers:
        process.join()
    for thread in threads:
        thread.join()
    assert [process.exitcode for process in workers] == [0, 0, 0]
    lines = history_path(tmp_path).read_bytes().splitlines()
    assert len(lines) == 1000
    assert all(json.loads(line)["key"].startswith(("p", "t")) for line in lines)


def test_an_unwritable_history_does_not_fail_the_append(tmp_path: Path) -> None:
    history_path(tmp_path).mkdir()  # even root cannot open a directory for writing
    append_result(tmp_path, hit(), task="a")
    assert list(read_history(tmp_path)) == []


def test_an_overgrown_history_keeps_its_newest_half(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cachehook import history

    monkeypatch.setattr(history, "MAX_HISTORY_BYTES", 4096)
    for index in range(200):
        append_result(tmp_path, hit(), task=f"t{index}")
    size = history_path(tmp_path).stat().st_size
    assert size <= 4096 + 200, "the file stays near its cap"
    tasks = [entry.task for entry in read_history(tmp_path)]
    assert tasks[-1] == "t199", "the newest run is kept"
    assert "t0" not in tasks, "the oldest runs are dropped"
    assert all(task is not None for task in tasks), "no torn line survives"
    assert history_path(tmp_path).stat().st_mode & 0o777 == 0o600


def test_entries_name_their_project_and_read_back_per_project(tmp_path: Path) -> None:
    """Issue 10: one cache serves every project; each reads its own history."""
    from cachehook.history import project_id

    one, two = project_id(tmp_path / "one"), project_id(tmp_path / "two")
    assert one != two
    assert project_id(tmp_path / "one") == one
    append_result(tmp_path, hit(), task="tests", project=one)
    append_result(tmp_path, miss(), task="tests", project=two)
    append_result(tmp_path, miss(), task="tests")  # written before issue 10: no project
    assert [e.project for e in read_history(tmp_path, project=one)] == [one]
    assert [e.status for e in read_history(tmp_path, project=two)] == ["MISS"]
    assert len(list(read_history(tmp_path))) == 3
