"""The runner in-process: what the CLI tests cannot see from outside."""

from __future__ import annotations

import gc
import os
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from cachehook.config import load_settings
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    for index in range(50):
        (root / "src" / f"m{index}.py").write_text(f"x = {index}\n")
    return root


def runner_for(root: Path) -> Runner:
    settings = load_settings(cwd=root, environ=dict(os.environ))
    return Runner(settings, on_notice=lambda message: None)


def spec(root: Path) -> TaskSpec:
    return TaskSpec(
        command=(sys.executable, "-c", "pass"), inputs=("src/**",), outputs=(), cwd=root
    )


def test_prepare_leaves_the_garbage_collector_as_it_found_it(project: Path) -> None:
    with runner_for(project) as runner:
        assert gc.isenabled()
        runner.prepare(spec(project))
        assert gc.isenabled()
        gc.disable()
        try:
            runner.prepare(spec(project))
            assert not gc.isenabled(), "a caller that turned it off keeps it off"
        finally:
            gc.enable()


def test_peek_sees_the_local_cache_without_restoring(project: Path) -> None:
    with runner_for(project) as runner:
        prepared = runner.prepare(spec(project))
        assert runner.peek(prepared) == (False, None)
        assert runner.run(prepared).stored
        assert runner.peek(prepared) == (True, None)


def test_threads_share_one_store(project: Path) -> None:
    with runner_for(project) as runner:
        seen: list[object] = []
        barrier = threading.Barrier(8)

        def open_it() -> None:
            barrier.wait()
            seen.append(runner.store)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(store) for store in seen}) == 1
