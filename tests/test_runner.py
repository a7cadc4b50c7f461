"""The runner in-process: what the CLI tests cannot see from outside."""

from __future__ import annotations

import gc
import os
import shutil
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from cachehook._hits import ARTIFACT, ArtifactMeta
from cachehook.config import load_settings
from cachehook.hashing import digest_bytes, digest_file
from cachehook.runner import Prepared, Runner, RunResult, TaskSpec
from tests.counting import CountingDecompressor, count_decompression, log_digest_reads

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


# --- issue 10: restores write only what a build would ----------------------------------------


def _writer(root: Path, out: str, text: str) -> TaskSpec:
    code = (
        "import os, sys; p = sys.argv[1]; os.makedirs(os.path.dirname(p) or '.', exist_ok=True);"
        " open(p, 'w').write(sys.argv[2])"
    )
    return TaskSpec(
        command=(sys.executable, "-c", code, out, text),
        inputs=("src/**",),
        outputs=(f"{out.split('/')[0]}/**",) if "/" in out else (out,),
        cwd=root,
    )


def test_a_record_of_another_key_does_not_restore_its_bytes(project: Path) -> None:
    """Finding 5: the metadata of K2 filed under K1 locally is a miss, evicted and reported."""
    notices: list[str] = []
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=notices.append) as runner:
        one = runner.prepare(_writer(project, "out.txt", "one"))
        two = runner.prepare(_writer(project, "out.txt", "two"))
        assert runner.run(two).stored
        store = runner.store
        assert store is not None
        store._cache.set(f"m/{one.key}", store._cache.get(f"m/{two.key}"))
        (project / "out.txt").unlink()
        result = runner.run(one)
        assert result.status == "MISS", "K2's bytes must not be replayed for K1"
        assert (project / "out.txt").read_text() == "one"
        assert any(one.key in n and "evicted" in n for n in notices)


def _plant(
    runner: Runner, prepared: object, root: Path, paths: dict[str, tuple[bytes, int]]
) -> None:
    """File an artifact holding ``paths`` under the key of ``prepared`` in the local store."""
    import json

    from cachehook import archive

    assert isinstance(prepared, Prepared)
    staging = root.parent / "staging"
    for path, (data, mode) in paths.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    outputs = [
        {"path": path, "digest": "0" * 32, "executable": bool(mode & 0o100), "mode": mode}
        for path, (_, mode) in sorted(paths.items())
    ]
    meta = {"key": prepared.key, "duration_ms": 5, "outputs": outputs}
    artifact = root.parent / "planted.tar.zst"
    archive.pack(artifact, staging, sorted(paths), meta=json.dumps(meta).encode(), log=b"")
    assert runner.store is not None
    runner.store.put(
        prepared.key, artifact, meta=ArtifactMeta.from_record(meta, part=ARTIFACT), log=b""
    )


@pytest.mark.parametrize(
    "planted",
    ["sub/.git/hooks/post-checkout", "sub/deep/.GIT/config", "sub/.cachehook/meta.json"],
)
def test_a_restore_never_writes_a_git_or_reserved_segment(project: Path, planted: str) -> None:
    """Finding 6: with -o 'sub/**' an artifact entry sub/.git/hooks/post-checkout is refused,
    and the whole artifact is a miss before a byte is written."""
    notices: list[str] = []
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=notices.append) as runner:
        prepared = runner.prepare(_writer(project, "sub/out.txt", "built"))
        hook = (b"#!/bin/sh\necho pwned\n", 0o755)
        _plant(runner, prepared, project, {"sub/a.txt": (b"a", 0o644), planted: hook})
        result = runner.run(prepared)
        assert result.status == "MISS"
        assert not (project / planted).exists()
        assert not (project / "sub" / "a.txt").exists(), "nothing of the artifact is written"
        assert any("not an output" in n for n in notices)


def test_a_restore_never_writes_into_the_cache_dir(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "src").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "src" / "m.py").write_text("")
    environ = {**os.environ, "CACHEHOOK_CACHE_DIR": str(root / "cache")}
    settings = load_settings(cwd=root, environ=environ)
    with Runner(settings, on_notice=lambda message: None) as runner:
        spec = TaskSpec(command=("true",), inputs=("src/**",), outputs=("**",), cwd=root)
        prepared = runner.prepare(spec)
        _plant(runner, prepared, root, {"cache/stat/x.json": (b"{}", 0o644)})
        assert runner.run(prepared).status == "MISS"
        assert not (root / "cache" / "stat" / "x.json").exists()


def test_a_hit_restores_the_mode_of_an_unchanged_output(project: Path) -> None:
    with runner_for(project) as runner:
        prepared = runner.prepare(_writer(project, "out.txt", "same"))
        assert runner.run(prepared).stored
        out = project / "out.txt"
        mode = out.stat().st_mode & 0o777
        out.chmod(0)
        try:
            result = runner.run(prepared)
            assert result.status == "HIT"
            assert out.stat().st_mode & 0o777 == mode
            assert result.restored == ("out.txt",)
            assert runner.run(prepared).restored == (), "unchanged bytes and mode: not rewritten"
        finally:
            out.chmod(0o644)


# --- issue 10: a remote switched off sends no more REMOTE MISS events --------------------------


@pytest.mark.parametrize("status", [401, 503])
def test_no_remote_miss_events_once_the_remote_is_off(project: Path, status: int) -> None:
    """A refused token (401) switches the remote off at once, a failing server (503) after
    three faults in a row; no task after that sends a REMOTE MISS (issue 10)."""
    import httpx

    from cachehook.remote import RemoteSession

    environ = {**os.environ, "CACHEHOOK_API": "http://127.0.0.1:9", "CACHEHOOK_TOKEN": "t" * 12}
    settings = load_settings(cwd=project, environ=environ)
    assert settings.remote is not None
    runner = Runner(settings, on_notice=lambda message: None, detach_events=True)
    failing = httpx.MockTransport(lambda request: httpx.Response(status))
    runner._remote = RemoteSession(
        settings.remote, modes=settings.modes, on_warning=lambda m: None, transport=failing
    )
    usage = runner._usage
    assert usage is not None
    try:
        per_task = []
        for text in ("one", "two", "three"):
            before = len(usage.detached)
            runner.run(runner.prepare(_writer(project, "out.txt", text)))
            per_task.append([(e.source, e.event) for e in usage.detached[before:]])
        assert not runner._remote.is_enabled
        assert per_task[-1] == [("LOCAL", "MISS")]
        if status == 401:
            assert all(events == [("LOCAL", "MISS")] for events in per_task)
    finally:
        usage.detached.clear()
        runner.close()


def test_a_task_writing_a_path_a_restore_refuses_is_not_cached(project: Path) -> None:
    notices: list[str] = []
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=notices.append) as runner:
        code = (
            "import os; os.makedirs('sub/.cachehook', exist_ok=True);"
            " open('sub/.cachehook/x', 'w').write('h'); open('sub/out.txt', 'w').write('o')"
        )
        command = (sys.executable, "-c", code)
        spec = TaskSpec(command=command, inputs=("src/**",), outputs=("sub/**",), cwd=project)
        prepared = runner.prepare(spec)
        assert not runner.run(prepared).stored, "a hit without sub/.cachehook/x would differ"
        assert any("'sub/.cachehook/x' is a path a restore never writes" in n for n in notices)
        assert runner.run(prepared).status == "MISS"


# --- issue 11: one pass over an artifact -------------------------------------------------------


def _blobs(root: Path) -> TaskSpec:
    code = (
        "import os; os.makedirs('out', exist_ok=True)\n"
        "for i in range(3): open(f'out/b{i}.bin', 'wb').write(os.urandom(1 << 20))"
    )
    return TaskSpec(
        command=(sys.executable, "-c", code), inputs=("src/**",), outputs=("out/**",), cwd=root
    )


def _artifact_bytes(runner: Runner, key: str) -> bytes:
    store = runner.store
    assert store is not None
    meta = store.get_meta(key)
    assert meta is not None
    handle = store.open_artifact(key, meta)
    assert handle is not None
    with handle:
        return handle.read()


def _assert_read_once(
    runner: Runner,
    result: RunResult,
    outputs: dict[str, bytes],
    counting: type[CountingDecompressor],
    reads: list[str],
    size: int,
) -> None:
    root = runner.settings.root
    assert result.status == "HIT"
    assert sorted(result.restored) == sorted(outputs)
    assert {p: (root / p).read_bytes() for p in outputs} == outputs
    assert (counting.streams, counting.fed) == (1, size), "decompressed once, from one read"
    cache = os.path.realpath(runner.settings.cache_dir)
    artifacts = [p for p in reads if p.startswith(cache)]
    assert artifacts == [], "no second read of the artifact (no copy, no checksum pass)"
    assert not {str(root / p) for p in outputs} & set(reads), "no restored file read again"
    for path in outputs:  # the digests recorded are those hashing computes
        assert runner._stat_cache.lookup(root, path) == digest_file(root / path)


def test_a_local_restoring_hit_reads_its_artifact_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runner_for(project) as runner:
        prepared = runner.prepare(_blobs(project))
        assert runner.run(prepared).stored
        outputs = {f"out/{p.name}": p.read_bytes() for p in (project / "out").iterdir()}
        size = len(_artifact_bytes(runner, prepared.key))
        shutil.rmtree(project / "out")
        with monkeypatch.context() as patch:
            counting = count_decompression(patch)
            reads = log_digest_reads(patch)
            result = runner.run(prepared)
        _assert_read_once(runner, result, outputs, counting, reads, size)


def test_a_remote_restoring_hit_reads_its_download_once(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from cachehook.remote import RemoteSession

    with runner_for(project) as producer:
        prepared = producer.prepare(_blobs(project))
        assert producer.run(prepared).stored
        artifact = _artifact_bytes(producer, prepared.key)
    outputs = {f"out/{p.name}": p.read_bytes() for p in (project / "out").iterdir()}
    shutil.rmtree(project / "out")

    def serve(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == f"/v8/artifacts/{prepared.key}":
            return httpx.Response(200, content=artifact)
        return httpx.Response(404)

    environ = {
        **os.environ,
        "CACHEHOOK_API": "http://127.0.0.1:9",
        "CACHEHOOK_TOKEN": "t" * 12,
        "CACHEHOOK_CACHE_DIR": str(tmp_path / "other-cache"),
    }
    settings = load_settings(cwd=project, environ=environ)
    assert settings.remote is not None
    runner = Runner(settings, on_notice=lambda message: None, detach_events=True)
    runner._remote = RemoteSession(
        settings.remote,
        modes=settings.modes,
        on_warning=lambda m: None,
        transport=httpx.MockTransport(serve),
    )
    try:
        prepared = runner.prepare(_blobs(project))
        with monkeypatch.context() as patch:
            counting = count_decompression(patch)
            reads = log_digest_reads(patch)
            result = runner.run(prepared)
        assert result.source == "REMOTE"
        _assert_read_once(runner, result, outputs, counting, reads, len(artifact))
        kept = runner.store.get_meta(prepared.key) if runner.store is not None else None
        assert kept is not None, "kept in the local store"
        assert kept.checksum == digest_bytes(artifact), "the checksum taken while it streamed"
    finally:
        if runner._usage is not None:
            runner._usage.detached.clear()  # no flusher left behind
        runner.close()
