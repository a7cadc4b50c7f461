"""``cachehook events flush``: sends what earlier runs left in the spool."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from cachehook import events as events_module
from cachehook.cli.events import events
from cachehook.config import RemoteSettings
from cachehook.errors import ConfigError
from cachehook.events import Event, default_spool_dir

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import CaptureProxy

SESSION = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def flush(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(events, ["flush", *args], env=env)


def spool_events(cache_dir: Path, env: dict[str, str], count: int) -> list[str]:
    settings = RemoteSettings(
        api=env["CACHEHOOK_API"], token=env.get("CACHEHOOK_TOKEN"), slug=env.get("CACHEHOOK_TEAM")
    )
    spool = events_module._Spool(default_spool_dir(cache_dir), settings)
    hashes = [f"{n:032x}" for n in range(count)]
    spool.write([Event(SESSION, "LOCAL", "MISS", h, 0) for h in hashes])
    return hashes


def test_not_configured_is_a_config_error() -> None:
    result = flush({})
    assert isinstance(result.exception, ConfigError)
    assert "CACHEHOOK_API" in str(result.exception)


def test_nothing_waiting(refused_url: str) -> None:
    result = flush({"CACHEHOOK_API": refused_url})  # nothing to send: no connection at all
    assert result.exit_code == 0
    assert result.stdout.startswith("sent 0 cache events; 0 still waiting in ")


@pytest.mark.integration
def test_flush_to_the_npm_server(
    remote_env: dict[str, str], capture_proxy: CaptureProxy, cache_dir: Path
) -> None:
    hashes = spool_events(cache_dir, remote_env, 3)
    result = flush(remote_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("sent 3 cache events; 0 still waiting in ")
    (post,) = capture_proxy.find("POST", "/v8/artifacts/events")
    assert [item["hash"] for item in post.json()] == hashes
    assert post.status == 200
    assert flush(remote_env).stdout.startswith("sent 0 cache events")  # none sent twice


@pytest.mark.integration
def test_flush_json(remote_env: dict[str, str], cache_dir: Path) -> None:
    spool_events(cache_dir, remote_env, 2)
    result = flush(remote_env, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "sent": 2,
        "left": 0,
        "spool": str(default_spool_dir(cache_dir)),
        "problem": None,
    }


@pytest.mark.integration
def test_flush_while_down_keeps_them(refused_url: str, cache_dir: Path) -> None:
    env = {"CACHEHOOK_API": refused_url, "CACHEHOOK_TOKEN": "tok-FLUSH-77", "CACHEHOOK_TEAM": "t"}
    spool_events(cache_dir, env, 4)
    result = flush(env, "--json")
    assert result.exit_code == 4
    data = json.loads(result.stdout)
    assert (data["sent"], data["left"]) == (0, 4)
    assert "cannot connect" in data["problem"]
    assert "tok-FLUSH-77" not in result.output
    text = flush(env)
    assert text.exit_code == 4
    assert "problem: cannot connect" in text.stderr


def test_flush_runs_when_its_working_directory_was_removed(
    refused_url: str, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run's detached flush starts in the project, which may be removed at once (issue 9).
    env = {"CACHEHOOK_API": refused_url, "CACHEHOOK_TEAM": "t"}
    spool_events(cache_dir, env, 2)
    project = tmp_path / "gone"
    project.mkdir()
    monkeypatch.chdir(project)
    project.rmdir()
    result = flush(env, "--json", "--cache-dir", str(cache_dir))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 4, result.output  # cannot deliver: kept, not crashed
    assert (json.loads(result.stdout)["sent"], json.loads(result.stdout)["left"]) == (0, 2)
