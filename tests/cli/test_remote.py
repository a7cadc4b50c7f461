"""``cachehook remote status``: one exit code per state, never the token."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from cachehook.cli.remote import remote
from cachehook.errors import ConfigError
from tests.servers import UNRESOLVABLE_URL, CaptureProxy, FaultServer
from tests.waiting import finishes

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above: settings come from the environment


def status(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(remote, ["status", *args], env=env)


def env_for(api: str, **extra: str) -> dict[str, str]:
    return {
        "CACHEHOOK_API": api,
        "CACHEHOOK_TOKEN": "tok-CLI-SECRET-91",
        "CACHEHOOK_TEAM": "t",
        **extra,
    }


def test_not_configured_is_a_config_error() -> None:
    result = status({})
    assert isinstance(result.exception, ConfigError)
    assert result.exception.exit_code == 2
    assert "CACHEHOOK_API" in str(result.exception)


def test_not_configured_json() -> None:
    result = status({}, "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["configured"] is False
    assert data["exit_code"] == 2
    assert "CACHEHOOK_API" in data["problem"]


@pytest.mark.integration
def test_enabled_on_the_npm_server(remote_env: dict[str, str], capture_proxy: CaptureProxy) -> None:
    result = status(remote_env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"remote         {remote_env['CACHEHOOK_API']} (team {remote_env['CACHEHOOK_TEAM']})"
    )
    assert lines[1:] == ["reachable      yes", "authenticated  yes", "enabled        yes (enabled)"]
    status_request, probe = capture_proxy.requests
    assert (status_request.method, status_request.path) == ("GET", "/v8/artifacts/status")
    assert (probe.method, probe.status) == ("HEAD", 404)  # 404: the token was accepted
    assert probe.headers["authorization"] == f"Bearer {remote_env['CACHEHOOK_TOKEN']}"


@pytest.mark.integration
def test_enabled_json(remote_env: dict[str, str]) -> None:
    result = status(remote_env, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == {
        "api": remote_env["CACHEHOOK_API"],
        "authenticated": True,
        "configured": True,
        "enabled": True,
        "exit_code": 0,
        "problem": None,
        "reachable": True,
        "slug": remote_env["CACHEHOOK_TEAM"],
        "status": "enabled",
        "team_id": None,
    }
    assert remote_env["CACHEHOOK_TOKEN"] not in result.stdout


@pytest.mark.integration
def test_wrong_token_is_exit_5(remote_env: dict[str, str]) -> None:
    wrong = "tok-WRONG-CLI-0c0c"
    result = status({**remote_env, "CACHEHOOK_TOKEN": wrong})
    assert result.exit_code == 5
    assert "authenticated  no" in result.stdout
    assert "CACHEHOOK_TOKEN" in result.stdout
    assert wrong not in result.output


@pytest.mark.integration
def test_missing_team_is_exit_7_with_a_hint(remote_env: dict[str, str]) -> None:
    env = {k: v for k, v in remote_env.items() if k != "CACHEHOOK_TEAM"}
    result = status(env)
    assert result.exit_code == 7
    assert "400 Bad Request" in result.stdout
    assert "no team is set (CACHEHOOK_TEAM or CACHEHOOK_TEAMID)" in result.stdout


@pytest.mark.integration
def test_turbo_variables_work_too(remote_env: dict[str, str]) -> None:
    env = {
        "TURBO_API": remote_env["CACHEHOOK_API"],
        "TURBO_TOKEN": remote_env["CACHEHOOK_TOKEN"],
        "TURBO_TEAM": remote_env["CACHEHOOK_TEAM"],
    }
    assert status(env).exit_code == 0


@pytest.mark.integration
def test_unreachable_is_exit_4(refused_url: str) -> None:
    result = status(env_for(refused_url))
    assert result.exit_code == 4
    assert "reachable      no" in result.stdout
    assert "tok-CLI-SECRET-91" not in result.output


@pytest.mark.integration
def test_unresolvable_is_exit_4() -> None:
    assert status(env_for(UNRESOLVABLE_URL)).exit_code == 4


@pytest.mark.integration
def test_black_hole_is_exit_4_within_the_timeout(fault_server: Callable[..., FaultServer]) -> None:
    hole = fault_server("blackhole")
    result = finishes(lambda: status(env_for(hole.url, CACHEHOOK_REMOTE_CACHE_TIMEOUT="0.5")))
    assert result.exit_code == 4
    assert "did not respond in time" in result.stdout


@pytest.mark.parametrize(
    ("status_code", "body", "exit_code", "words"),
    [
        (200, {"status": "disabled"}, 6, "enabled        no (disabled)"),
        (200, {"status": "over_limit"}, 6, "enabled        no (over_limit)"),
        (403, {"error": {"code": "remote_caching_paused", "message": "x"}}, 6, "paused"),
        (401, {"message": "Invalid authorization token"}, 5, "CACHEHOOK_TOKEN"),
        (403, {"error": {"code": "forbidden", "message": "Not authorized"}}, 5, "CACHEHOOK_TEAM"),
        (404, {"message": "Route GET:/v8/artifacts/status not found"}, 7, "not found"),
        (503, {"message": "down"}, 4, "503"),
    ],
)
@pytest.mark.integration
def test_each_state_has_its_exit_code(
    status_code: int,
    body: dict[str, object],
    exit_code: int,
    words: str,
    fault_server: Callable[..., FaultServer],
) -> None:
    server = fault_server("status", status=status_code, body=json.dumps(body).encode())
    result = status(env_for(server.url))
    assert result.exit_code == exit_code, result.output
    assert words in result.stdout
    assert "tok-CLI-SECRET-91" not in result.output
