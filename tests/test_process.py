from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.errors import ConfigError
from cachehook.logs import STDERR, STDOUT, LogRecorder, decode
from cachehook.process import forward_to_children, run_command, signal_children
from tests.waiting import reap

if TYPE_CHECKING:
    from pathlib import Path


def test_exit_code_and_output_pass_through(tmp_path: Path) -> None:
    recorder = LogRecorder()
    out, err = io.BytesIO(), io.BytesIO()
    code = run_command(
        [
            sys.executable,
            "-c",
            "import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(7)",
        ],
        cwd=tmp_path,
        recorder=recorder,
        live=(out, err),
    )
    assert code == 7
    assert out.getvalue() == b"to out\n"
    assert err.getvalue() == b"to err\n"
    recorded = {STDOUT: b"", STDERR: b""}
    for stream, chunk in decode(recorder.getvalue()):
        recorded[stream] += chunk
    assert recorded == {STDOUT: b"to out\n", STDERR: b"to err\n"}


def test_runs_in_the_given_directory(tmp_path: Path) -> None:
    out = io.BytesIO()
    run_command(
        [sys.executable, "-c", "import os; print(os.getcwd())"],
        cwd=tmp_path,
        recorder=LogRecorder(),
        live=(out, io.BytesIO()),
    )
    assert out.getvalue().decode().strip() == str(tmp_path)


def test_killed_child_gives_128_plus_signal(tmp_path: Path) -> None:
    code = run_command(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        cwd=tmp_path,
        recorder=LogRecorder(),
        live=None,
    )
    assert code == 128 + 9


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot run 'no-such-program-xyz'"):
        run_command(["no-such-program-xyz"], cwd=tmp_path, recorder=LogRecorder(), live=None)


def test_large_output_does_not_deadlock(tmp_path: Path) -> None:
    recorder = LogRecorder()
    code = run_command(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdout.write('x' * 5_000_000); sys.stderr.write('y' * 5_000_000)",
        ],
        cwd=tmp_path,
        recorder=recorder,
        live=None,
    )
    assert code == 0
    sizes = {STDOUT: 0, STDERR: 0}
    for stream, chunk in decode(recorder.getvalue()):
        sizes[stream] += len(chunk)
    assert sizes == {STDOUT: 5_000_000, STDERR: 5_000_000}


def test_a_child_started_after_a_stop_signal_still_gets_it(tmp_path: Path) -> None:
    """The race of issue 9: a worker past its interrupt check starts its child just after
    the signal was forwarded; that child must be stopped too, not run on."""
    forward_to_children(signal.SIGTERM)  # nothing is running yet
    codes: list[int] = []
    worker = threading.Thread(
        target=lambda: codes.append(
            run_command(
                [sys.executable, "-c", "import time; time.sleep(60)"],
                cwd=tmp_path,
                recorder=LogRecorder(),
                live=None,
            )
        )
    )
    worker.start()
    worker.join(timeout=45)
    if worker.is_alive():  # the defect: the child sleeps on; stop it so the test ends
        signal_children(signal.SIGKILL)
        worker.join()
    assert codes == [128 + signal.SIGTERM]


def test_a_sigint_right_after_the_child_started_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT sent to cachehook alone just after the child started, before the wait began,
    is forwarded and the child awaited; it used to raise KeyboardInterrupt at once and leave
    the child running (issue 9: seen under load with a task that starts fast)."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_sigint(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child: subprocess.Popen[bytes] = real_popen(*args, **kwargs)
        started.append(child)
        os.kill(os.getpid(), signal.SIGINT)  # handled on this thread before the call returns
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_then_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_command(["sleep", "60"], cwd=tmp_path, recorder=LogRecorder(), live=None)
        assert started[0].poll() is not None, "the child runs on after cachehook gave up"
        assert started[0].returncode == -signal.SIGINT
    finally:
        reap(*started)
