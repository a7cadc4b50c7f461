"""``cli/_output``: exec's ``TaskReporter``, the runner's listener that shows a task (issue 11)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from cachehook.cli._output import Console, TaskReporter, describe_result
from cachehook.config import load_settings
from cachehook.logs import STDERR, STDOUT, decode, encode_frames
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from cachehook.facts import RunResult


def _spec(root: Path, outputs: tuple[str, ...] = ()) -> TaskSpec:
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    return TaskSpec(
        command=(sys.executable, "-c", code), inputs=("src/**",), outputs=outputs, cwd=root
    )


def _run_twice(root: Path, reporter: TaskReporter) -> tuple[RunResult, RunResult]:
    settings = load_settings(cwd=root, environ=dict(os.environ))
    with Runner(settings, listeners=[reporter]) as runner:
        miss = runner.run(runner.prepare(_spec(root)))
        hit = runner.run(runner.prepare(_spec(root)))
    return miss, hit


def test_a_hit_is_shown_when_the_runner_tells_it(
    project: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    console = Console()
    reporter = TaskReporter(console, output_logs="full")
    miss, hit = _run_twice(project, reporter)

    out, err = capsysbinary.readouterr()
    miss_line = f"cachehook: {describe_result(miss)}\n".encode()
    hit_line = f"cachehook: {describe_result(hit)}\n".encode()
    assert hit.status == "HIT"
    assert hit_line.startswith(b"cachehook: local hit ")
    # The miss was not streamed (no live streams here): its status line only; the hit's log
    # replayed from the cache, then its status line.
    assert out == b"out\n"
    assert err == miss_line + b"err\n" + hit_line
    # What the hit showed, as the memo would replay it: the log, then the line.
    assert list(decode(reporter.shown)) == [*decode(hit.log), (STDERR, hit_line)]
    assert {stream for stream, _ in decode(hit.log)} == {STDOUT, STDERR}
    assert not console.said  # the log and the status line are not "something else said"


def test_with_json_the_result_is_one_document_and_the_log_goes_to_stderr(
    project: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    reporter = TaskReporter(Console(), output_logs="full", as_json=True)
    miss, hit = _run_twice(project, reporter)

    out, err = capsysbinary.readouterr()
    documents = out.decode().replace("}\n{", "}\n\x00{").split("\x00")
    assert [json.loads(document) for document in documents] == [miss.to_json(), hit.to_json()]
    assert err == b"".join(chunk for _, chunk in decode(hit.log))  # both streams, in order
    assert sorted(err) == sorted(b"out\nerr\n")  # the stdout chunks too
    assert reporter.shown == b""


def test_quiet_shows_nothing(project: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    reporter = TaskReporter(Console(quiet=True), output_logs="none")
    _run_twice(project, reporter)
    assert capsysbinary.readouterr() == (b"", b"")
    assert reporter.shown == b""


def test_errors_only_shows_the_log_of_a_failure_not_of_a_hit(
    project: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    reporter = TaskReporter(Console(), output_logs="errors-only")
    _, hit = _run_twice(project, reporter)
    hit_line = f"cachehook: {describe_result(hit)}\n".encode()
    assert capsysbinary.readouterr().out == b""
    assert reporter.shown == encode_frames([(STDERR, hit_line)])

    failing = _spec(project)._replace(command=(sys.executable, "-c", "print('bad'); exit(3)"))
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, listeners=[reporter]) as runner:
        failed = runner.run(runner.prepare(failing))
    failed_line = f"cachehook: {describe_result(failed)}\n".encode()
    assert failed.exit_code == 3
    assert capsysbinary.readouterr() == (b"bad\n", failed_line)
    assert list(decode(reporter.shown)) == [*decode(failed.log), (STDERR, failed_line)]


def test_a_runners_notice_is_a_warning_that_counts_as_said(
    project: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    console = Console()
    reporter = TaskReporter(console, output_logs="full")
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, listeners=[reporter]) as runner:  # no on_notice: the reporter's
        result = runner.run(runner.prepare(_spec(project, outputs=("dist/**",))))

    _, err = capsysbinary.readouterr()
    assert not result.stored
    warning = b"cachehook: warning: output glob 'dist/**' matched no file after the task"
    assert err.startswith(warning)
    assert err.endswith(f"cachehook: {describe_result(result)}\n".encode())
    assert console.said
