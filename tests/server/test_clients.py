"""The real clients against ``cachehook serve``: turbo 2.11.11 and cachehook's own RemoteCache.

turbo (the native binary from npm) runs a one-task monorepo with ``--cache=remote:rw``: a miss
that uploads, then, with its local cache and outputs wiped, a remote hit that restores the
outputs and reports the time saved that the server stored at the upload. cachehook's
``RemoteCache`` does the same through the same team, and reads turbo's artifact too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cachehook.config import RemoteSettings
from cachehook.errors import RemoteAuthError
from cachehook.events import Event
from cachehook.remote import RemoteCache
from tests.server.conftest import API, SLASH

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration

_BUILD = (
    "node -e \"require('fs').mkdirSync('dist',{recursive:true});"
    "require('fs').writeFileSync('dist/out.txt','built\\\\n');"
    "setTimeout(()=>console.log('app built'),300)\""
)
_LOCKFILE = {
    "name": "mono",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "mono", "workspaces": ["packages/*"]},
        "node_modules/app": {"resolved": "packages/app", "link": True},
        "packages/app": {"name": "app", "version": "0.0.0"},
    },
}


def make_monorepo(root: Path) -> Path:
    """A one-task npm workspace: ``app#build`` writes ``dist/out.txt`` after 300 ms."""
    npm_version = subprocess.run(
        ["npm", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    app = root / "packages" / "app"
    app.mkdir(parents=True)
    package = {
        "name": "mono",
        "private": True,
        "packageManager": f"npm@{npm_version}",
        "workspaces": ["packages/*"],
    }
    (root / "package.json").write_text(json.dumps(package))
    (root / "package-lock.json").write_text(json.dumps(_LOCKFILE))
    (root / "turbo.json").write_text(json.dumps({"tasks": {"build": {"outputs": ["dist/**"]}}}))
    # Not a git repo: without this turbo hashes dist/ and .turbo/ as inputs and never hits.
    (root / ".gitignore").write_text("node_modules\ndist\n.turbo\n")
    app_package = {"name": "app", "version": "0.0.0", "private": True}
    (app / "package.json").write_text(json.dumps({**app_package, "scripts": {"build": _BUILD}}))
    return root


def wipe_turbo_state(root: Path) -> None:
    for path in (root / ".turbo", root / "packages/app/dist", root / "packages/app/.turbo"):
        shutil.rmtree(path, ignore_errors=True)


def run_turbo(
    turbo: Path, root: Path, serve: Serve, team: str, *args: str, token: str = "rw"
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "TURBO_API": serve.url,
        "TURBO_TOKEN": serve.token(token),
        "TURBO_TEAM": team,
        "TURBO_TELEMETRY_DISABLED": "1",
        "TURBO_NO_UPDATE_NOTIFIER": "1",
    }
    command = [str(turbo), "run", "build", "--cache=remote:rw", *args]
    return subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def wait_for_team_stats(serve: Serve, team: str, lookups: int) -> dict[str, Any]:
    """turbo sends its events at exit, from the background: poll the stats for them."""
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
        rows = [row for row in stats["by_team"] if row["team"] == team]
        if rows and rows[0]["lookups"] >= lookups:
            return rows[0]
        time.sleep(0.1)
    pytest.fail(f"expected {lookups} lookups for {team}, got {rows}")


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    return make_monorepo(tmp_path / "mono")


def test_turbo_misses_uploads_then_hits_remotely(
    serve_factory: Callable[..., Serve], turbo_binary: Path, monorepo: Path, team: str
) -> None:
    serve = serve_factory("--log-level", "info")
    first = run_turbo(turbo_binary, monorepo, serve, team)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Remote caching enabled" in first.stdout
    task_hash = re.search(r"cache miss, executing ([0-9a-f]{16})", first.stdout)
    assert task_hash is not None, first.stdout
    key = task_hash.group(1)

    stored = httpx.get(f"{serve.url}{API}{SLASH}{key}", params={"slug": team}, headers=serve.auth())
    assert stored.status_code == 200
    assert stored.content[:4] == b"\x28\xb5\x2f\xfd"  # tar + zstd
    # turbo uploads the time it measured (its task waits 300 ms, so never 0); no HEAD here:
    # the test checks below that turbo itself never sends one.
    duration = int(stored.headers["x-artifact-duration"])
    assert duration != 0

    wipe_turbo_state(monorepo)
    second = run_turbo(turbo_binary, monorepo, serve, team, "--summarize")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"cache hit, replaying logs {key}" in second.stdout
    assert "Cached:    1 cached, 1 total" in second.stdout
    assert (monorepo / "packages/app/dist/out.txt").read_text() == "built\n"
    (summary,) = (monorepo / ".turbo" / "runs").glob("*.json")
    cache = json.loads(summary.read_text())["tasks"][0]["cache"]
    assert cache == {
        "local": False,
        "remote": True,
        "status": "HIT",
        "source": "REMOTE",
        "timeSaved": duration,
    }

    row = wait_for_team_stats(serve, team, lookups=2)
    assert row["by_source"]["REMOTE"]["misses"] == 1
    assert row["by_source"]["REMOTE"]["hits"] == 1
    assert row["time_saved_ms"] == duration  # turbo reports what the server stored

    # --dry asks with the batch query (POST /v8/artifacts), not HEAD, and sees the hit
    dry = run_turbo(turbo_binary, monorepo, serve, team, "--dry=json")
    assert dry.returncode == 0, dry.stderr
    dry_cache = json.loads(dry.stdout)["tasks"][0]["cache"]
    assert (dry_cache["status"], dry_cache["remote"], dry_cache["timeSaved"]) == (
        "HIT",
        True,
        duration,
    )
    log = serve.log.read_text()
    assert f'"POST {API}?slug={team} HTTP/1.1" 200' in log
    assert "HEAD" not in log


def test_turbo_with_a_read_only_token_runs_but_stores_nothing(
    serve_factory: Callable[..., Serve], turbo_binary: Path, monorepo: Path, team: str
) -> None:
    serve = serve_factory()
    result = run_turbo(turbo_binary, monorepo, serve, team, token="reader")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cache miss, executing" in result.stdout
    assert "403" in result.stdout + result.stderr  # turbo warns and skips uploads
    stats = wait_for_team_stats(serve, team, lookups=1)  # reading tokens may report events
    assert stats["by_source"]["REMOTE"]["misses"] == 1
    listed = httpx.post(
        f"{serve.url}{API}", params={"slug": team}, json={"hashes": ["0"]}, headers=serve.auth()
    )
    assert listed.json() == {"0": None}
    assert not any((serve.storage / "uploads").iterdir())


def test_cachehook_and_turbo_share_the_cache(
    serve_factory: Callable[..., Serve],
    turbo_binary: Path,
    monorepo: Path,
    team: str,
    tmp_path: Path,
) -> None:
    serve = serve_factory()
    first = run_turbo(turbo_binary, monorepo, serve, team)
    key = re.search(r"cache miss, executing ([0-9a-f]{16})", first.stdout)
    assert key is not None, first.stdout
    turbo_key = key.group(1)
    settings = RemoteSettings(api=serve.url, token=serve.token(), slug=team)
    with RemoteCache(settings) as cache:
        assert cache.status() == "enabled"
        # turbo's artifact, read by cachehook, with the time saved turbo uploaded
        info = cache.fetch(turbo_key, tmp_path / "turbo.tar.zst")
        assert info is not None
        served = httpx.head(
            f"{serve.url}{API}{SLASH}{turbo_key}", params={"slug": team}, headers=serve.auth()
        )
        assert info.duration_ms == int(served.headers["x-artifact-duration"]) != 0
        assert (tmp_path / "turbo.tar.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"

        # cachehook's own: a miss, an upload with its duration, then a hit that reads it back
        own_key = uuid.uuid4().hex
        assert cache.fetch(own_key, tmp_path / "miss") is None
        artifact = tmp_path / "artifact.tar.zst"
        artifact.write_bytes(os.urandom(300_000))
        cache.store(own_key, artifact, duration_ms=2048)
        info = cache.fetch(own_key, tmp_path / "hit")
        assert info is not None
        assert info.duration_ms == 2048
        assert info.size == 300_000
        assert (tmp_path / "hit").read_bytes() == artifact.read_bytes()
        exists = cache.exists(own_key)
        assert exists is not None
        assert (exists.size, exists.duration_ms) == (300_000, 2048)
        found = cache.query([own_key, turbo_key, "ab" * 16])
        own = found[own_key]
        assert own is not None
        assert own.duration_ms == 2048
        assert found[turbo_key] is not None
        assert found["ab" * 16] is None
        session = str(uuid.uuid4())
        cache.record_events(
            [
                Event(session, "LOCAL", "MISS", own_key, 0),
                Event(session, "REMOTE", "HIT", own_key, info.duration_ms),
            ]
        )
    row = wait_for_team_stats(serve, team, lookups=2)  # turbo's miss and cachehook's hit
    assert row["hits"] == 1
    assert row["time_saved_ms"] == 2048
    assert row["by_source"]["REMOTE"] == {
        "hits": 1,
        "misses": 1,
        "time_saved_ms": 2048,
        "hit_rate": 0.5,
    }


def test_cachehook_signed_artifacts_round_trip(
    serve_factory: Callable[..., Serve], tmp_path: Path, team: str
) -> None:
    serve = serve_factory()
    key = b"a-signature-key-of-at-least-32-bytes!"
    settings = RemoteSettings(api=serve.url, token=serve.token(), slug=team, signature_key=key)
    artifact = tmp_path / "a"
    artifact.write_bytes(b"signed bytes" * 1000)
    with RemoteCache(settings) as cache:
        cache.store("abcd" * 8, artifact, duration_ms=5)
        info = cache.fetch("abcd" * 8, tmp_path / "b")
        assert info is not None
        assert info.tag  # stored at the upload and echoed, so the client could verify it
    assert (tmp_path / "b").read_bytes() == artifact.read_bytes()


def test_cachehook_with_a_read_only_token_is_refused_writing(
    serve_factory: Callable[..., Serve], tmp_path: Path, team: str
) -> None:
    serve = serve_factory()
    settings = RemoteSettings(api=serve.url, token=serve.token("reader"), slug=team)
    artifact = tmp_path / "a"
    artifact.write_bytes(b"x")
    with RemoteCache(settings) as cache, pytest.raises(RemoteAuthError) as caught:
        cache.store("ab" * 16, artifact, duration_ms=1)
    assert "403" in str(caught.value)
    assert serve.token("reader") not in str(caught.value)
