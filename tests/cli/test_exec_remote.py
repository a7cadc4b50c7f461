"""``cachehook exec`` with a remote: two machines share work through the real npm server.

Each "machine" is its own cache directory; the capturing proxy in front of the real
``turborepo-remote-cache`` server (one per session; each test has a team slug of its own, so
no test sees another's artifacts) records every request so events are checked field by field.

Most tests run ``main()`` in this process with ``CI=true``: in CI a run sends its events before
it returns, so no detached ``cachehook events flush`` outlives the in-process run. The tests of
that detached sender and of a terminal start ``python -m cachehook`` (issue 9: a fast suite).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import zstandard

from cachehook.remote import RemoteCache
from tests.servers import UNRESOLVABLE_URL, CaptureProxy, FaultServer, NpmServer
from tests.waiting import GENEROUS, reap

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from cachehook.config import RemoteSettings
    from tests.cli.conftest import Ran

pytestmark = pytest.mark.integration

# Takes a moment (the producer's duration is sent and checked), writes 300 kB of random bytes
# and an executable, counts its runs in runs.log.
BUILD = (
    "sleep 0.3\n"
    "mkdir -p dist\n"
    "head -c 300000 /dev/urandom > dist/app.bin\n"
    "printf '#!/bin/sh\\n' > dist/run.sh; chmod 755 dist/run.sh\n"
    "echo run >> runs.log\n"
    "echo built it\n"
)
ARGS = ["exec", "-i", "src/*.py", "-i", "build.sh", "-o", "dist/**", "--json"]
COMMAND = ["--", "sh", "build.sh"]


# exec waits at most this long for its events to be sent (1 s by default): generous, for the
# tests that check the delivered events on a loaded machine.
PATIENT_FLUSH = {"CACHEHOOK_EVENTS_FLUSH_TIMEOUT": "60"}


def make_clone(base: Path, name: str) -> Path:
    root = base / name
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'shared'\nversion = '0'\n")
    (root / "build.sh").write_text(BUILD)
    (root / "src" / "app.py").write_text("print('app')\n")
    return root


def _json(stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stdout) if stdout.strip().startswith("{") else {}
    return data


@pytest.fixture
def run_exec(
    cli: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Ran, dict[str, Any]]]:
    """``run_exec(root, cache, env, *extra)``: ``exec`` in this process, in CI, on ``cache``.

    ``env`` holds for that one call only, as a child process's environment would;
    ``options`` (``ARGS``) and ``command`` (``COMMAND``) replace those of ``build.sh``.
    """

    def run(
        root: Path,
        cache: Path,
        env: dict[str, str],
        *extra: str,
        options: Sequence[str] = ARGS,
        command: Sequence[str] = COMMAND,
    ) -> tuple[Ran, dict[str, Any]]:
        with monkeypatch.context() as scoped:
            for name, value in {"CI": "true", **env, "CACHEHOOK_CACHE_DIR": str(cache)}.items():
                scoped.setenv(name, value)
            ran = cli(*options, *extra, *command, cwd=root)
        return ran, _json(ran.stdout)

    return run


def run_child(
    root: Path, cache: Path, env: dict[str, str], *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``python -m cachehook exec`` in a child process, as on a developer's machine (not CI)."""
    result = subprocess.run(
        [sys.executable, "-m", "cachehook", *ARGS, *extra, *COMMAND],
        cwd=root,
        env={**os.environ, **env, "CACHEHOOK_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, _json(result.stdout)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted((root / "dist").rglob("*"))
        if p.is_file()
    }


def events_of(proxy: CaptureProxy) -> list[list[dict[str, object]]]:
    return [r.json() for r in proxy.find("POST", "/v8/artifacts/events")]


def test_two_machines_share_work_and_report_events(
    tmp_path: Path,
    capture_proxy: CaptureProxy,
    remote_env: dict[str, str],
    team_slug: str,
    npm_server: NpmServer,
) -> None:
    """Child processes: each has its own session id, and hands its events to a detached
    ``cachehook events flush`` (not in CI)."""
    machine_a, machine_b = make_clone(tmp_path, "a"), make_clone(tmp_path, "b")

    first, result_a = run_child(machine_a, tmp_path / "cache-a", remote_env)
    assert first.returncode == 0, first.stderr
    assert result_a["status"] == "MISS"
    assert result_a["stored"] is True
    key = result_a["key"]
    assert isinstance(key, str)
    puts = capture_proxy.find("PUT", f"/v8/artifacts/{key}")
    assert len(puts) == 1
    put = puts[0]
    assert put.headers["content-type"] == "application/octet-stream"
    assert int(put.headers["content-length"]) == len(put.body) > 0
    # The producer's run time, as the run itself measured it (the task sleeps, so never 0).
    assert int(put.headers["x-artifact-duration"]) == result_a["task_ms"] != 0
    assert put.headers["authorization"] == f"Bearer {npm_server.token}"
    assert put.query["slug"] == [team_slug]
    assert put.headers["user-agent"].startswith("cachehook/")

    second, result_b = run_child(machine_b, tmp_path / "cache-b", remote_env)
    assert second.returncode == 0, second.stderr
    assert result_b["status"] == "HIT"
    assert result_b["source"] == "REMOTE"
    assert result_b["key"] == key, "two clones in different directories share one key"
    assert not (machine_b / "runs.log").exists(), "a remote hit does not run the task"
    assert tree(machine_b) == tree(machine_a)
    assert "built it" in second.stderr  # the log is replayed (stdout goes to stderr with --json)

    _third, result_b2 = run_child(machine_b, tmp_path / "cache-b", remote_env)
    assert result_b2["status"] == "HIT"
    assert result_b2["source"] == "LOCAL"

    capture_proxy.wait_for("POST", "/v8/artifacts/events", count=3, timeout=GENEROUS)
    batches = events_of(capture_proxy)
    flat = [(e["source"], e["event"]) for batch in batches for e in batch]
    assert flat == [
        ("LOCAL", "MISS"),
        ("REMOTE", "MISS"),  # machine A
        ("LOCAL", "MISS"),
        ("REMOTE", "HIT"),  # machine B, first run
        ("LOCAL", "HIT"),  # machine B, second run
    ]
    sessions = [{e["sessionId"] for e in batch} for batch in batches]
    assert all(len(s) == 1 for s in sessions), "one session id per process"
    assert len(set().union(*sessions)) == 3, "each process has its own session id"
    for batch in batches:
        for event in batch:
            assert set(event) == {"sessionId", "source", "event", "hash", "duration"}
            assert uuid.UUID(str(event["sessionId"])).version == 4
            assert event["hash"] == key
            assert isinstance(event["duration"], int)
    saved = [e["duration"] for b in batches for e in b if e["event"] == "HIT"]
    produced = int(put.headers["x-artifact-duration"])
    assert saved == [produced, produced], "time saved is the producer's duration"
    assert all(e["duration"] == 0 for b in batches for e in b if e["event"] == "MISS")
    for request in capture_proxy.find("POST", "/v8/artifacts/events"):
        assert request.query["slug"] == [team_slug]
        assert request.headers["x-artifact-client-interactive"] == "0"
        assert "x-artifact-client-ci" not in request.headers
        assert request.headers["content-type"].startswith("application/json")


def test_remote_hit_reports_server_duration_and_ci_vendor(
    tmp_path: Path,
    capture_proxy: CaptureProxy,
    remote_env: dict[str, str],
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
) -> None:
    machine_a, machine_b = make_clone(tmp_path, "a"), make_clone(tmp_path, "b")
    ci = {**remote_env, "CI": "true", "GITHUB_ACTIONS": "true", **PATIENT_FLUSH}
    assert run_exec(machine_a, tmp_path / "cache-a", ci)[0].returncode == 0
    capture_proxy.inject_headers = {"x-artifact-duration": "4321"}
    _result, data = run_exec(machine_b, tmp_path / "cache-b", ci)
    assert data["status"] == "HIT"
    assert data["saved_ms"] == 4321
    capture_proxy.wait_for("POST", "/v8/artifacts/events", count=2, timeout=GENEROUS)
    hits = [e for b in events_of(capture_proxy) for e in b if e["event"] == "HIT"]
    assert [h["duration"] for h in hits] == [4321]
    for request in capture_proxy.find("POST", "/v8/artifacts/events"):
        assert request.headers["x-artifact-client-ci"] == "GITHUB_ACTIONS"
    assert capture_proxy.find("PUT")[0].headers["x-artifact-client-ci"] == "GITHUB_ACTIONS"


def test_read_only_remote_never_uploads(
    tmp_path: Path,
    capture_proxy: CaptureProxy,
    remote_env: dict[str, str],
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
) -> None:
    machine = make_clone(tmp_path, "a")
    result, data = run_exec(machine, tmp_path / "cache", remote_env, "--cache", "local:rw,remote:r")
    assert result.returncode == 0
    assert data["stored"] is True
    assert capture_proxy.find("PUT") == []
    assert capture_proxy.find("GET", f"/v8/artifacts/{data['key']}")


def _hostile_artifact(key: str, member: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        meta = json.dumps({"key": key, "duration_ms": 5, "outputs": []}).encode()
        for name, data in ((".cachehook/meta.json", meta), (member, b"pwned\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue())


@pytest.mark.parametrize(
    "member", ["../escape.txt", "pyproject.toml", "src/app.py", "dist/../../x"]
)
def test_hostile_remote_artifact_is_a_miss_and_writes_nothing(
    tmp_path: Path,
    remote_env: dict[str, str],
    remote_settings: RemoteSettings,
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
    member: str,
) -> None:
    machine = make_clone(tmp_path, "victim")
    _, dry = run_exec(machine, tmp_path / "cache", remote_env, "--dry-run=json")
    key = str(dry["key"])
    planted = tmp_path / "planted.tar.zst"
    planted.write_bytes(_hostile_artifact(key, member))
    with RemoteCache(remote_settings) as client:
        client.store(key, planted, duration_ms=5)
    before = {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts
    }
    result, data = run_exec(machine, tmp_path / "cache", remote_env)
    assert result.returncode == 0, result.stderr
    assert data["status"] == "MISS", "a hostile artifact is never a hit"
    assert "treating it as a miss" in result.stderr
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "x").exists()
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was overwritten"
    assert (machine / "runs.log").read_text() == "run\n"


FAULTS: dict[str, Callable[[Callable[..., FaultServer], str], str]] = {
    "refused": lambda start, refused: refused,
    "unresolvable": lambda start, refused: UNRESOLVABLE_URL,
    "blackhole": lambda start, refused: start("blackhole").url,
    "reset": lambda start, refused: start("reset").url,
    "503": lambda start, refused: start("status", status=503).url,
    "413": lambda start, refused: start("status", status=413).url,
    "garbage": lambda start, refused: start("garbage").url,
    "truncated": lambda start, refused: start("truncated").url,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failing_remote_never_fails_the_task(
    tmp_path: Path,
    fault_server: Callable[..., FaultServer],
    refused_url: str,
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    url = FAULTS[fault](fault_server, refused_url)
    env = {"CACHEHOOK_API": url, "CACHEHOOK_TOKEN": "secret-token-xyz", "CACHEHOOK_TEAM": "t"}
    machine = make_clone(tmp_path, "m")
    result, data = run_exec(machine, tmp_path / "cache", env)  # a hang fails at its timeout
    assert result.returncode == 0, result.stderr
    assert data["status"] == "MISS"
    assert data["stored"] is True, "the local cache still works"
    assert (machine / "dist" / "app.bin").exists()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert 1 <= len(warnings) <= 2, warnings
    assert "secret-token-xyz" not in result.stderr + result.stdout
    assert "secret-token-xyz" not in caplog.text, "nor in what was logged (stderr in a process)"
    again, data2 = run_exec(machine, tmp_path / "cache", env)
    assert again.returncode == 0
    assert data2["status"] == "HIT"
    assert data2["source"] == "LOCAL"


def _run_on_a_terminal(root: Path, env: dict[str, str]) -> str:
    """Run ``exec`` with stderr on a real pseudo-terminal; return what the terminal showed."""
    import pty

    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cachehook", *ARGS[:-1], "--", "sh", "big.sh"],
            cwd=root,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    try:
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(120) == 0, shown
    finally:
        os.close(master)
        reap(process)
    return shown.decode(errors="replace")


def test_large_transfers_show_progress_on_a_terminal(
    tmp_path: Path, remote_env: dict[str, str], run_exec: Callable[..., tuple[Ran, dict[str, Any]]]
) -> None:
    """Child processes for the terminal (the meter shows from 8 MiB on); the pipe in-process."""
    big = f"mkdir -p dist\nhead -c {12 << 20} /dev/urandom > dist/big.bin\n"
    machines = [make_clone(tmp_path, name) for name in ("a", "b")]
    for machine in machines:
        (machine / "big.sh").write_text(big)
    uploaded = _run_on_a_terminal(
        machines[0], {**remote_env, "CACHEHOOK_CACHE_DIR": str(tmp_path / "ca")}
    )
    assert "uploading artifact" in uploaded
    assert "MiB (100%)" in uploaded
    downloaded = _run_on_a_terminal(
        machines[1], {**remote_env, "CACHEHOOK_CACHE_DIR": str(tmp_path / "cb")}
    )
    assert "downloading artifact" in downloaded
    assert "MiB (100%)" in downloaded
    piped, _ = run_exec(  # the same remote hit with stderr not a terminal: no meter in logs
        machines[1], tmp_path / "cc", remote_env, options=ARGS[:-1], command=["--", "sh", "big.sh"]
    )
    assert piped.returncode == 0, piped.stderr
    assert "remote hit" in piped.stderr
    assert "ing artifact" not in piped.stderr


def test_dry_run_says_which_cache_holds_the_task(
    tmp_path: Path,
    remote_env: dict[str, str],
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
) -> None:
    machine_a, machine_b = make_clone(tmp_path, "a"), make_clone(tmp_path, "b")
    _, before = run_exec(machine_a, tmp_path / "ca", remote_env, "--dry-run=json")
    assert before["cache"] == {"local": False, "remote": False, "status": "MISS"}
    assert run_exec(machine_a, tmp_path / "ca", remote_env)[0].returncode == 0
    _, on_a = run_exec(machine_a, tmp_path / "ca", remote_env, "--dry-run=json")
    assert on_a["cache"] == {"local": True, "remote": True, "status": "HIT"}
    _, on_b = run_exec(machine_b, tmp_path / "cb", remote_env, "--dry-run=json")
    assert on_b["cache"] == {"local": False, "remote": True, "status": "HIT"}
    assert not (machine_b / "dist").exists(), "a dry run restores nothing"
    text, _ = run_exec(machine_b, tmp_path / "cb", remote_env, "--dry-run", options=ARGS[:-1])
    assert text.returncode == 0, text.stderr
    assert "cache    hit (remote)" in text.stdout
    assert not (machine_b / "dist").exists()


def test_in_ci_events_are_sent_before_exec_exits(
    tmp_path: Path,
    capture_proxy: CaptureProxy,
    remote_env: dict[str, str],
    run_exec: Callable[..., tuple[Ran, dict[str, Any]]],
) -> None:
    """A CI runner may be torn down right after the step: no detached sender there."""
    machine = make_clone(tmp_path, "ci")
    ci = {**remote_env, "CI": "true", "GITHUB_ACTIONS": "true", **PATIENT_FLUSH}
    result, data = run_exec(machine, tmp_path / "cache", ci)
    assert result.returncode == 0, result.stderr
    delivered = [e for r in capture_proxy.find("POST", "/v8/artifacts/events") for e in r.json()]
    assert [(e["source"], e["event"]) for e in delivered] == [("LOCAL", "MISS"), ("REMOTE", "MISS")]
    assert all(e["hash"] == data["key"] for e in delivered)
