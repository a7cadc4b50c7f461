"""``cachehook exec`` end to end: real files, real child processes, the real CLI.

Most tests run ``main()`` in this process (the ``cli`` fixture) and wrap a cheap ``sh``
script, which stays a real child process; the tests whose subject is the process boundary
(the real entry point's exit codes, signals, concurrent processes, a resource limit or a
capability set on the process, the environment a wrapped command sees) start
``python -m cachehook`` (issue 9: a fast suite).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

from cachehook.store import LocalStore
from tests.waiting import GENEROUS, reap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.cli.conftest import Ran

# The task: upper-cases src/*.txt, writes an executable and 1 MiB of random bytes, counts its
# runs in runs.log (ignored, not an output), and prints on both streams.
BUILD_SH = textwrap.dedent(
    """\
    set -e
    mkdir -p dist
    cat src/*.txt | tr '[:lower:]' '[:upper:]' > dist/site.txt
    printf '#!/bin/sh\\necho hi\\n' > dist/tool.sh
    chmod 755 dist/tool.sh
    head -c 1048576 /dev/urandom > dist/data.bin
    echo run >> runs.log
    set -- src/*.txt
    echo "built $# files"
    echo "a warning" >&2
    """
)
# A Python script in the project, for the tests about what the command word is.
BUILD_PY = "print('built by python')\n"
EXEC = ["exec", "-i", "src/*.txt", "-i", "build.sh", "-o", "dist/**"]
COMMAND = ["--", "sh", "build.sh"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\nversion = '0'\n")
    (root / ".gitignore").write_text("dist/\nruns.log\n")
    (root / "build.sh").write_text(BUILD_SH)
    (root / "build.py").write_text(BUILD_PY)
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "b.txt").write_text("beta\n")
    return root


@pytest.fixture
def build(
    project: Path, cli: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Ran]:
    """``build(*extra, env=None)``: ``cachehook exec … -- sh build.sh`` in this process.

    ``env`` holds for that one call only, as a child process's environment would.
    """

    def run(*extra: str, env: dict[str, str] | None = None) -> Ran:
        with monkeypatch.context() as scoped:
            for name, value in (env or {}).items():
                scoped.setenv(name, value)
            return cli(*EXEC, *extra, *COMMAND, cwd=project)

    return run


def child(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """``python -m cachehook ARGS`` in a child process: the real entry point."""
    completed: subprocess.CompletedProcess[str] = subprocess.run(
        [sys.executable, "-m", "cachehook", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    return completed


def runs(project: Path) -> int:
    return (project / "runs.log").read_text().count("run")


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o7777)
        for p in sorted((root / "dist").rglob("*"))
        if p.is_file()
    }


def test_miss_then_hit_restores_outputs_bit_identical(
    project: Path, build: Callable[..., Ran]
) -> None:
    first = build()
    assert first.returncode == 0, first.stderr
    assert "built 2 files" in first.stdout
    assert "a warning" in first.stderr
    assert "miss" in first.stderr
    assert "cached" in first.stderr
    produced = snapshot(project)
    assert produced["dist/tool.sh"][1] == 0o755
    assert produced["dist/site.txt"][0] == b"ALPHA\nBETA\n"

    shutil.rmtree(project / "dist")
    second = build()
    assert second.returncode == 0, second.stderr
    assert runs(project) == 1, "a hit must not run the command"
    assert snapshot(project) == produced
    assert second.stdout == "built 2 files\n", "the log is replayed on stdout"
    assert "a warning" in second.stderr
    assert "cachehook: local hit" in second.stderr
    assert "(saved " in second.stderr


def test_the_real_entry_point_misses_hits_and_passes_exit_codes(project: Path) -> None:
    """A thin end-to-end layer: ``python -m cachehook exec`` as a user types it."""
    first = child(*EXEC, *COMMAND, cwd=project)
    assert first.returncode == 0, first.stderr
    assert "built 2 files" in first.stdout
    assert "cached" in first.stderr
    produced = snapshot(project)
    shutil.rmtree(project / "dist")
    second = child(*EXEC, *COMMAND, cwd=project)
    assert second.returncode == 0, second.stderr
    assert "cachehook: local hit" in second.stderr
    assert second.stdout == "built 2 files\n"
    assert snapshot(project) == produced
    assert runs(project) == 1
    failed = child("exec", "-i", "build.sh", "--", "sh", "-c", "exit 7", cwd=project)
    assert failed.returncode == 7, failed.stderr
    usage = child("exec", "--no-such-flag", "--", "true", cwd=project)
    assert usage.returncode == 2
    assert "--no-such-flag" in usage.stderr
    assert "Traceback" not in usage.stderr


def test_unchanged_outputs_are_left_untouched_and_missing_ones_restored(
    project: Path, build: Callable[..., Ran]
) -> None:
    assert build().returncode == 0
    kept = project / "dist" / "data.bin"
    before = kept.stat()
    (project / "dist" / "site.txt").unlink()
    (project / "dist" / "tool.sh").write_text("tampered")
    result = build()
    assert result.returncode == 0
    assert runs(project) == 1
    after = kept.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (project / "dist" / "site.txt").read_text() == "ALPHA\nBETA\n"
    assert (project / "dist" / "tool.sh").read_text() == "#!/bin/sh\necho hi\n"


@pytest.mark.parametrize(
    "change",
    ["input byte", "env value", "command", "salt"],
)
def test_a_change_is_a_miss(
    project: Path,
    build: Callable[..., Ran],
    cli: Callable[..., Ran],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    env = {"BUILD_MODE": "a"}
    assert build("-e", "BUILD_*", env=env).returncode == 0
    assert build("-e", "BUILD_*", env=env).returncode == 0
    assert runs(project) == 1
    extra: list[str] = ["-e", "BUILD_*"]
    if change == "input byte":
        (project / "src" / "a.txt").write_text("alphb\n")
    elif change == "env value":
        env = {"BUILD_MODE": "b"}
    elif change == "command":
        monkeypatch.setenv("BUILD_MODE", "a")
        result = cli(*EXEC, *extra, *COMMAND, "extra-arg", cwd=project)
        assert result.returncode == 0
        assert runs(project) == 2
        return
    else:
        extra += ["--salt", "v2"]
    assert build(*extra, env=env).returncode == 0
    assert runs(project) == 2


def test_unrelated_file_change_still_hits(project: Path, build: Callable[..., Ran]) -> None:
    assert build().returncode == 0
    (project / "README.md").write_text("docs changed")
    assert build().returncode == 0
    assert runs(project) == 1


def test_failure_passes_exit_code_and_is_not_cached(
    project: Path, build: Callable[..., Ran]
) -> None:
    (project / "build.sh").write_text("echo run >> runs.log; echo boom; exit 3\n")
    for attempt in (1, 2):
        result = build()
        assert result.returncode == 3
        assert "boom" in result.stdout
        assert "failed with exit code 3" in result.stderr
        assert runs(project) == attempt, "a failure is never replayed"


def test_unmatched_output_glob_is_not_cached(project: Path, build: Callable[..., Ran]) -> None:
    first = build("-o", "reports/*.xml")
    assert first.returncode == 0
    assert "'reports/*.xml' matched no file" in first.stderr
    build("-o", "reports/*.xml")
    assert runs(project) == 2


def test_input_changed_while_running_is_not_cached(
    project: Path, build: Callable[..., Ran], cache_dir: Path
) -> None:
    (project / "build.sh").write_text(
        "echo run >> runs.log; printf x >> src/a.txt; mkdir -p dist; printf o > dist/o\n"
    )
    result = build()
    assert result.returncode == 0
    assert "'src/a.txt' changed while the task ran" in result.stderr
    assert "not cached" in result.stderr
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        assert list(store.entries()) == []


def test_force_runs_and_no_cache_just_runs(project: Path, build: Callable[..., Ran]) -> None:
    assert build().returncode == 0
    assert build("--force").returncode == 0
    assert runs(project) == 2
    assert build("--no-cache").returncode == 0
    assert runs(project) == 3
    assert build(env={"CACHEHOOK_DISABLE": "1"}).returncode == 0
    assert runs(project) == 4
    assert build().returncode == 0
    assert runs(project) == 4


def test_dry_run_lists_inputs_and_runs_nothing(project: Path, build: Callable[..., Ran]) -> None:
    text = build("--dry-run")
    assert text.returncode == 0, text.stderr
    assert not (project / "runs.log").exists()
    assert "src/a.txt" in text.stdout
    assert "build.sh" in text.stdout
    as_json = build("--dry-run=json")
    data = json.loads(as_json.stdout)
    assert len(data["key"]) == 32
    assert {i["path"] for i in data["inputs"]} == {"build.sh", "src/a.txt", "src/b.txt"}
    assert all(len(i["digest"]) == 32 for i in data["inputs"])
    assert data["key"] in text.stdout
    assert not (project / "runs.log").exists()


def test_json_result(project: Path, build: Callable[..., Ran]) -> None:
    # The task waits 20 ms, so the run it records is never 0 ms, however fast the machine:
    # the equality below cannot hold by both sides being 0.
    (project / "build.sh").write_text((project / "build.sh").read_text() + "sleep 0.02\n")
    first = json.loads(build("--json").stdout)
    assert first["status"] == "MISS"
    assert first["exit_code"] == 0
    assert first["stored"] is True
    second = json.loads(build("--json").stdout)
    assert second["status"] == "HIT"
    assert second["source"] == "LOCAL"
    assert second["key"] == first["key"]
    assert first["task_ms"] != 0
    assert second["saved_ms"] == first["task_ms"]  # a hit saves what the run it replays took


@pytest.mark.parametrize(
    ("mode", "stdout_on_hit", "status_line"),
    [
        ("full", True, True),
        ("errors-only", False, True),
        ("hash-only", False, True),
        ("none", False, False),
    ],
)
def test_output_logs_modes(
    build: Callable[..., Ran], mode: str, stdout_on_hit: bool, status_line: bool
) -> None:
    miss = build("--output-logs", mode)
    assert ("built 2 files" in miss.stdout) == (mode == "full")
    hit = build("--output-logs", mode)
    assert ("built 2 files" in hit.stdout) == stdout_on_hit
    assert ("local hit" in hit.stderr) == status_line


def test_quiet_hides_the_status_line(build: Callable[..., Ran]) -> None:
    build()
    hit = build("-q")
    assert hit.returncode == 0
    assert "built 2 files" in hit.stdout, "-q hides cachehook's lines, not the task's"
    assert "cachehook:" not in hit.stderr


# -- bad input ---------------------------------------------------------------------------------


def test_nothing_after_dashes_is_a_usage_error(project: Path, cli: Callable[..., Ran]) -> None:
    result = cli(*EXEC, "--", cwd=project)
    assert result.returncode == 2
    assert "nothing to run" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flag_is_a_usage_error(project: Path, cli: Callable[..., Ran]) -> None:
    result = cli("exec", "--no-such-flag", "--", "true", cwd=project)
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr


def test_input_glob_matching_nothing_warns_naming_it(build: Callable[..., Ran]) -> None:
    result = build("-i", "nope/**/*.py")
    assert result.returncode == 0
    assert "input glob 'nope/**/*.py' matched no file" in result.stderr


@pytest.mark.parametrize("pattern", [os.sep + "etc/passwd", "../outside/*", "dist/../../x"])
def test_output_glob_outside_root_is_a_usage_error(
    project: Path, build: Callable[..., Ran], pattern: str
) -> None:
    result = build("-o", pattern)
    assert result.returncode == 2
    assert pattern in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "runs.log").exists()


def _drop_root_read_override() -> None:
    """As root, give up the capabilities that ignore file modes, so mode 000 means unreadable."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_input_is_a_clear_error(project: Path) -> None:
    """A child process: as root, only a process that gave up its capabilities sees mode 000."""
    victim = project / "src" / "d.txt"
    victim.write_text("x")
    victim.chmod(0)
    result = child(*EXEC, *COMMAND, cwd=project, preexec_fn=_drop_root_read_override)
    assert result.returncode == 2
    assert "src/d.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "runs.log").exists()


def test_unwritable_cache_dir_warns_and_runs_uncached(
    project: Path, build: Callable[..., Ran], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {"CACHEHOOK_CACHE_DIR": str(blocker / "cache")}
    first = build(env=env)
    assert first.returncode == 0, first.stderr
    assert "warning" in first.stderr
    assert "without the local cache" in first.stderr
    assert build(env=env).returncode == 0
    assert runs(project) == 2


@contextlib.contextmanager
def _limited_file_size() -> Iterator[None]:
    """Writes past 256 KiB fail with EFBIG, here and in children, as on a full disk.

    Only the soft limit is lowered, and raised back after; SIGXFSZ is ignored meanwhile.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_disk_full_while_storing_keeps_result_and_nothing_partial(
    project: Path, cli: Callable[..., Ran], cache_dir: Path
) -> None:
    """A 1 MiB artifact cannot be stored under the limit: the run still succeeds."""
    (project / "dist").mkdir()
    (project / "dist" / "big.bin").write_bytes(os.urandom(1 << 20))
    (project / "build.sh").write_text("echo ran\n")
    with _limited_file_size():
        result = cli(*EXEC, *COMMAND, cwd=project)
    assert result.returncode == 0
    assert "ran" in result.stdout
    assert "not cached" in result.stderr or "cannot" in result.stderr
    assert (project / "dist" / "big.bin").stat().st_size == 1 << 20
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        assert list(store.entries()) == []
        assert [p for p in (cache_dir / "store").rglob("*.val")] == []
    again = cli(*EXEC, *COMMAND, cwd=project)
    assert "miss" in again.stderr
    assert "cached" in again.stderr
    assert "local hit" in cli(*EXEC, *COMMAND, cwd=project).stderr


def test_concurrent_runs_all_succeed_and_leave_one_valid_artifact(
    project: Path, build: Callable[..., Ran], cache_dir: Path
) -> None:
    """Four ``cachehook`` processes store one key at once (the store's locks are per process)."""
    (project / "build.sh").write_text("sleep 0.5\n" + BUILD_SH)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cachehook", *EXEC, "--json", *COMMAND],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        reap(*procs)
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    keys = {json.loads(out)["key"] for out, _ in results}
    assert len(keys) == 1
    key = keys.pop()
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        entries = list(store.entries())
        assert [e.key for e in entries] == [key]
        meta = store.get_meta(key)
        assert meta is not None
        assert store.copy_artifact(key, meta, project.parent / "check.tar.zst")
    hit = json.loads(build("--json").stdout)
    assert hit["status"] == "HIT"
    assert hit["key"] == key


# Traps SIGINT (sent to cachehook alone, which forwards it), writes a partial output, then
# waits on a background sleep that the trap stops, so the script ends as soon as it is signalled.
WAIT_FOR_SIGINT = textwrap.dedent(
    """\
    trap 'echo yes > got-sigint; kill "$sleeper"; exit 1' INT
    mkdir -p dist
    echo partial > dist/o
    sleep 60 < /dev/null > /dev/null 2>&1 &
    sleeper=$!
    echo yes > started
    wait "$sleeper"
    """
)


def test_ctrl_c_reaches_the_child_and_nothing_is_stored(project: Path, cache_dir: Path) -> None:
    (project / "build.sh").write_text(WAIT_FOR_SIGINT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachehook", *EXEC, *COMMAND],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + GENEROUS
        while not (project / "started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=GENEROUS)
    finally:
        reap(proc)
    assert proc.returncode == 130
    assert (project / "got-sigint").read_text() == "yes\n"
    assert "interrupted" in err
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        assert list(store.entries()) == []


def test_corrupt_artifact_is_evicted_reported_and_a_miss(
    project: Path, build: Callable[..., Ran], cache_dir: Path
) -> None:
    assert build().returncode == 0
    blobs = sorted((cache_dir / "store").rglob("*.val"), key=lambda p: p.stat().st_size)
    artifact = blobs[-1]  # the 1 MiB archive is the largest value file
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    (project / "dist" / "site.txt").unlink()  # the restore must read the artifact
    result = build()
    assert result.returncode == 0
    assert "evicted artifact" in result.stderr
    assert "checksum" in result.stderr
    assert runs(project) == 2, "a corrupt artifact is a miss: the task runs"
    assert (project / "dist" / "site.txt").read_text() == "ALPHA\nBETA\n"
    assert "local hit" in build().stderr, "the fresh result was stored again"


def test_an_unquoted_glob_says_what_the_shell_did(project: Path, cli: Callable[..., Ran]) -> None:
    # What bash makes of: cachehook exec -i src/*.txt -i build.py -- python build.py
    expanded = ["-i", "src/a.txt", "src/b.txt", "-i", "build.py", "--", sys.executable, "build.py"]
    ran = cli("exec", *expanded, cwd=project)
    assert ran.returncode == 2, ran
    assert "the command to run is 'src/b.txt', a file without the executable bit" in ran.stderr
    assert "the shell expanded an unquoted glob" in ran.stderr
    assert "quote every glob, e.g. -i 'src/*.txt', and put '--' before the command" in ran.stderr
    assert not (project / "runs.log").exists()
    script = cli("exec", "-i", "build.py", "--", "build.py", cwd=project)
    assert script.returncode == 2
    assert "run it through its interpreter (-- python3 build.py)" in script.stderr


def test_a_program_on_path_or_executable_is_not_taken_for_a_glob(
    project: Path, cli: Callable[..., Ran]
) -> None:
    (project / "sh").write_text("not the shell\n")  # PATH wins over the cwd
    on_path = cli("exec", "-i", "build.sh", "--", "sh", "build.sh", cwd=project)
    assert on_path.returncode == 0, on_path.stderr
    assert "built 2 files" in on_path.stdout
    tool = project / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    ran = cli("exec", "-i", "tool.sh", "--", "./tool.sh", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert "tool ran" in ran.stdout


def test_a_forgotten_double_dash_is_pointed_out(project: Path, cli: Callable[..., Ran]) -> None:
    ran = cli("exec", "-i", "build.py", "python", "-u", "build.py", cwd=project)
    assert ran.returncode == 2
    assert "No such option '-u'" in ran.stderr
    assert (
        "If -u belongs to the command, put '--' before the command: "
        "cachehook exec -i build.py -- python -u build.py"
    ) in ran.stderr
    typo = cli("exec", "--inptu", "x", "--", "true", cwd=project)
    assert typo.returncode == 2
    assert "put '--'" not in typo.stderr


def test_the_token_reaches_the_command_only_through_pass_env(project: Path) -> None:
    """Issue 10: CACHEHOOK_TOKEN is not passed to the wrapped command unless --pass-env.

    Child processes: the subject is the environment the real entry point gives the command.
    """
    show = 'echo "token: ${CACHEHOOK_TOKEN-absent}"'
    env = {"CACHEHOOK_TOKEN": "tok-SECRET-91c3e7"}
    hidden = child("exec", "-i", "build.sh", "--", "sh", "-c", show, cwd=project, env=env)
    assert hidden.returncode == 0, hidden.stderr
    assert "token: absent" in hidden.stdout
    passing = ["exec", "-i", "build.sh", "--pass-env", "CACHEHOOK_TOKEN", "--", "sh", "-c", show]
    passing.append("x")  # another command than the first: a miss whether or not pass-env is keyed
    passed = child(*passing, cwd=project, env=env)
    assert passed.returncode == 0, passed.stderr
    assert "token: tok-SECRET-91c3e7" in passed.stdout
    assert "miss" in passed.stderr
    replayed = child(*passing, cwd=project, env=env)
    assert "local hit" in replayed.stderr
    assert "token: <redacted>" in replayed.stdout, "the stored log never holds the token"
