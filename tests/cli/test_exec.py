"""``cachehook exec`` end to end: real files, real child processes, the real CLI."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.store import LocalStore
from tests.waiting import GENEROUS, reap

if TYPE_CHECKING:
    from pathlib import Path

BUILD = textwrap.dedent(
    """
    import os, pathlib, sys
    src = sorted(pathlib.Path("src").glob("*.txt"))
    out = pathlib.Path("dist"); out.mkdir(exist_ok=True)
    (out / "site.txt").write_text("".join(p.read_text().upper() for p in src))
    tool = out / "tool.sh"; tool.write_text("#!/bin/sh\\necho hi\\n"); tool.chmod(0o755)
    (out / "data.bin").write_bytes(os.urandom(1 << 20))
    counter = pathlib.Path("runs.log")
    counter.write_text(counter.read_text() + "run\\n" if counter.exists() else "run\\n")
    print("built", len(src), "files")
    print("a warning", file=sys.stderr)
    """
)
EXEC = ["exec", "-i", "src/*.txt", "-i", "build.py", "-o", "dist/**"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\nversion = '0'\n")
    (root / ".gitignore").write_text("dist/\nruns.log\n")
    (root / "build.py").write_text(BUILD)
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "b.txt").write_text("beta\n")
    return root


def cachehook(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
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


def build(
    project: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cachehook(*EXEC, *extra, "--", sys.executable, "build.py", cwd=project, env=env)


def runs(project: Path) -> int:
    return (project / "runs.log").read_text().count("run")


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o7777)
        for p in sorted((root / "dist").rglob("*"))
        if p.is_file()
    }


def test_miss_then_hit_restores_outputs_bit_identical(project: Path) -> None:
    first = build(project)
    assert first.returncode == 0, first.stderr
    assert "built 2 files" in first.stdout
    assert "a warning" in first.stderr
    assert "miss" in first.stderr
    assert "cached" in first.stderr
    produced = snapshot(project)
    assert produced["dist/tool.sh"][1] == 0o755

    import shutil

    shutil.rmtree(project / "dist")
    second = build(project)
    assert second.returncode == 0, second.stderr
    assert runs(project) == 1, "a hit must not run the command"
    assert snapshot(project) == produced
    assert second.stdout == "built 2 files\n", "the log is replayed on stdout"
    assert "a warning" in second.stderr
    assert "cachehook: local hit" in second.stderr
    assert "(saved " in second.stderr


def test_unchanged_outputs_are_left_untouched_and_missing_ones_restored(project: Path) -> None:
    assert build(project).returncode == 0
    kept = project / "dist" / "data.bin"
    before = kept.stat()
    (project / "dist" / "site.txt").unlink()
    (project / "dist" / "tool.sh").write_text("tampered")
    result = build(project)
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
def test_a_change_is_a_miss(project: Path, change: str) -> None:
    env = {"BUILD_MODE": "a"}
    assert build(project, "-e", "BUILD_*", env=env).returncode == 0
    assert build(project, "-e", "BUILD_*", env=env).returncode == 0
    assert runs(project) == 1
    extra: list[str] = ["-e", "BUILD_*"]
    if change == "input byte":
        (project / "src" / "a.txt").write_text("alphb\n")
    elif change == "env value":
        env = {"BUILD_MODE": "b"}
    elif change == "command":
        result = cachehook(
            *EXEC, *extra, "--", sys.executable, "build.py", "extra-arg", cwd=project, env=env
        )
        assert result.returncode == 0
        assert runs(project) == 2
        return
    else:
        extra += ["--salt", "v2"]
    assert build(project, *extra, env=env).returncode == 0
    assert runs(project) == 2


def test_unrelated_file_change_still_hits(project: Path) -> None:
    assert build(project).returncode == 0
    (project / "README.md").write_text("docs changed")
    assert build(project).returncode == 0
    assert runs(project) == 1


def test_failure_passes_exit_code_and_is_not_cached(project: Path) -> None:
    (project / "build.py").write_text("import sys; print('boom'); sys.exit(3)")
    for _ in range(2):
        result = build(project)
        assert result.returncode == 3
        assert "boom" in result.stdout
        assert "failed with exit code 3" in result.stderr


def test_unmatched_output_glob_is_not_cached(project: Path) -> None:
    args = [*EXEC, "-o", "reports/*.xml", "--", sys.executable, "build.py"]
    first = cachehook(*args, cwd=project)
    assert first.returncode == 0
    assert "'reports/*.xml' matched no file" in first.stderr
    cachehook(*args, cwd=project)
    assert runs(project) == 2


def test_input_changed_while_running_is_not_cached(project: Path) -> None:
    (project / "build.py").write_text(
        "import pathlib; p = pathlib.Path('src/a.txt'); p.write_text(p.read_text() + 'x')\n"
        "pathlib.Path('dist').mkdir(exist_ok=True); pathlib.Path('dist/o').write_text('o')\n"
    )
    result = build(project)
    assert result.returncode == 0
    assert "'src/a.txt' changed while the task ran" in result.stderr
    assert "not cached" in result.stderr


def test_force_runs_and_no_cache_just_runs(project: Path) -> None:
    assert build(project).returncode == 0
    assert build(project, "--force").returncode == 0
    assert runs(project) == 2
    assert build(project, "--no-cache").returncode == 0
    assert runs(project) == 3
    assert build(project, env={"CACHEHOOK_DISABLE": "1"}).returncode == 0
    assert runs(project) == 4
    assert build(project).returncode == 0
    assert runs(project) == 4


def test_dry_run_lists_inputs_and_runs_nothing(project: Path) -> None:
    text = build(project, "--dry-run")
    assert text.returncode == 0, text.stderr
    assert not (project / "runs.log").exists()
    assert "src/a.txt" in text.stdout
    assert "build.py" in text.stdout
    as_json = build(project, "--dry-run=json")
    data = json.loads(as_json.stdout)
    assert len(data["key"]) == 32
    assert {i["path"] for i in data["inputs"]} == {"build.py", "src/a.txt", "src/b.txt"}
    assert all(len(i["digest"]) == 32 for i in data["inputs"])
    assert data["key"] in text.stdout
    assert not (project / "runs.log").exists()


def test_json_result(project: Path) -> None:
    first = json.loads(build(project, "--json").stdout)
    assert first["status"] == "MISS"
    assert first["exit_code"] == 0
    assert first["stored"] is True
    second = json.loads(build(project, "--json").stdout)
    assert second["status"] == "HIT"
    assert second["source"] == "LOCAL"
    assert second["key"] == first["key"]
    assert second["saved_ms"] == first["task_ms"] > 0  # a hit saves what the run it replays took


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
    project: Path, mode: str, stdout_on_hit: bool, status_line: bool
) -> None:
    miss = build(project, "--output-logs", mode)
    assert ("built 2 files" in miss.stdout) == (mode == "full")
    hit = build(project, "--output-logs", mode)
    assert ("built 2 files" in hit.stdout) == stdout_on_hit
    assert ("local hit" in hit.stderr) == status_line


def test_quiet_hides_the_status_line(project: Path) -> None:
    build(project)
    hit = build(project, "-q")
    assert hit.returncode == 0
    assert "cachehook:" not in hit.stderr


# -- bad input ---------------------------------------------------------------------------------


def test_nothing_after_dashes_is_a_usage_error(project: Path) -> None:
    result = cachehook(*EXEC, "--", cwd=project)
    assert result.returncode == 2
    assert "nothing to run" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_flag_is_a_usage_error(project: Path) -> None:
    result = cachehook("exec", "--no-such-flag", "--", "true", cwd=project)
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr


def test_input_glob_matching_nothing_warns_naming_it(project: Path) -> None:
    result = cachehook(*EXEC, "-i", "nope/**/*.py", "--", sys.executable, "build.py", cwd=project)
    assert result.returncode == 0
    assert "input glob 'nope/**/*.py' matched no file" in result.stderr


@pytest.mark.parametrize("pattern", [os.sep + "etc/passwd", "../outside/*", "dist/../../x"])
def test_output_glob_outside_root_is_a_usage_error(project: Path, pattern: str) -> None:
    result = cachehook(*EXEC, "-o", pattern, "--", sys.executable, "build.py", cwd=project)
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


def test_unreadable_input_is_a_clear_error(project: Path, cache_dir: Path) -> None:
    victim = project / "src" / "d.txt"
    victim.write_text("x")
    victim.chmod(0)
    args = [*EXEC, "--", sys.executable, "build.py"]
    result = cachehook(*args, cwd=project, preexec_fn=_drop_root_read_override)
    assert result.returncode == 2
    assert "src/d.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "runs.log").exists()


def test_unwritable_cache_dir_warns_and_runs_uncached(project: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {"CACHEHOOK_CACHE_DIR": str(blocker / "cache")}
    first = build(project, env=env)
    assert first.returncode == 0, first.stderr
    assert "warning" in first.stderr
    assert "without the local cache" in first.stderr
    assert build(project, env=env).returncode == 0
    assert runs(project) == 2


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_disk_full_while_storing_keeps_result_and_nothing_partial(
    project: Path, cache_dir: Path
) -> None:
    """Writes past 256 KiB fail with EFBIG, as on a full disk: a 1 MiB artifact cannot be stored."""
    (project / "dist").mkdir()
    (project / "dist" / "big.bin").write_bytes(os.urandom(1 << 20))
    (project / "build.py").write_text("print('ran')")
    args = [*EXEC, "--", sys.executable, "build.py"]
    result = cachehook(*args, cwd=project, preexec_fn=_limit_file_size)
    assert result.returncode == 0
    assert "ran" in result.stdout
    assert "not cached" in result.stderr or "cannot" in result.stderr
    assert (project / "dist" / "big.bin").stat().st_size == 1 << 20
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        assert list(store.entries()) == []
        assert [p for p in (cache_dir / "store").rglob("*.val")] == []
    again = cachehook(*args, cwd=project)
    assert "miss" in again.stderr
    assert "cached" in again.stderr
    assert "local hit" in cachehook(*args, cwd=project).stderr


def test_concurrent_runs_all_succeed_and_leave_one_valid_artifact(
    project: Path, cache_dir: Path
) -> None:
    (project / "build.py").write_text(
        BUILD.replace("import os,", "import time; time.sleep(0.5)\nimport os,")
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cachehook", *EXEC, "--json", "--", sys.executable, "build.py"],
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
    hit = json.loads(build(project, "--json").stdout)
    assert hit["status"] == "HIT"


def test_ctrl_c_reaches_the_child_and_nothing_is_stored(project: Path, cache_dir: Path) -> None:
    (project / "build.py").write_text(
        textwrap.dedent(
            """
            import pathlib, signal, sys, time
            def stop(*_):
                pathlib.Path("got-sigint").write_text("yes")
                sys.exit(1)
            signal.signal(signal.SIGINT, stop)
            pathlib.Path("dist").mkdir(exist_ok=True)
            pathlib.Path("dist/o").write_text("partial")
            pathlib.Path("started").write_text("yes")
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachehook", *EXEC, "--", sys.executable, "build.py"],
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
    assert (project / "got-sigint").read_text() == "yes"
    assert "interrupted" in err
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        assert list(store.entries()) == []


def test_corrupt_artifact_is_evicted_reported_and_a_miss(project: Path, cache_dir: Path) -> None:
    assert build(project).returncode == 0
    blobs = sorted((cache_dir / "store").rglob("*.val"), key=lambda p: p.stat().st_size)
    artifact = blobs[-1]  # the 1 MiB archive is the largest value file
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    (project / "dist" / "site.txt").unlink()  # the restore must read the artifact
    result = build(project)
    assert result.returncode == 0
    assert "evicted artifact" in result.stderr
    assert "checksum" in result.stderr
    assert runs(project) == 2, "a corrupt artifact is a miss: the task runs"
    assert (project / "dist" / "site.txt").read_text() == "ALPHA\nBETA\n"
    assert "local hit" in build(project).stderr, "the fresh result was stored again"


def test_an_unquoted_glob_says_what_the_shell_did(project: Path, cli: Any) -> None:
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


def test_a_program_on_path_or_executable_is_not_taken_for_a_glob(project: Path, cli: Any) -> None:
    (project / "python3").write_text("not the interpreter\n")  # PATH wins over the cwd
    assert cli("exec", "-i", "build.py", "--", "python3", "build.py", cwd=project).returncode == 0
    tool = project / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    ran = cli("exec", "-i", "tool.sh", "--", "./tool.sh", cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert "tool ran" in ran.stdout


def test_a_forgotten_double_dash_is_pointed_out(project: Path, cli: Any) -> None:
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


def test_the_token_reaches_the_command_only_through_pass_env(tmp_path: Path) -> None:
    """Issue 10: CACHEHOOK_TOKEN is not passed to the wrapped command unless --pass-env."""
    from tests.cli.test_run import cachehook as run_cli

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "in.txt").write_text("x")
    show = "import os; print('token:', os.environ.get('CACHEHOOK_TOKEN', 'absent'))"
    env = {"CACHEHOOK_TOKEN": "tok-SECRET-91c3e7"}
    hidden = run_cli("exec", "-i", "in.txt", "--", "python", "-c", show, cwd=tmp_path, env=env)
    assert hidden.returncode == 0, hidden.stderr
    assert "token: absent" in hidden.stdout
    passed = run_cli(
        "exec", "-i", "in.txt", "--pass-env", "CACHEHOOK_TOKEN", "--", "python", "-c", show, "x",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert passed.returncode == 0, passed.stderr
    assert "token: tok-SECRET-91c3e7" in passed.stdout
    replayed = run_cli(
        "exec", "-i", "in.txt", "--pass-env", "CACHEHOOK_TOKEN", "--", "python", "-c", show, "x",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert "token: <redacted>" in replayed.stdout, "the stored log never holds the token"
