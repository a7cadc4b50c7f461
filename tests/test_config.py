from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cachehook.config import (
    DEFAULT_MAX_SIZE,
    CacheModes,
    find_root,
    load_settings,
    parse_cache_modes,
    parse_duration,
    parse_size,
)
from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("text", "size"),
    [("10GiB", 10 * 1024**3), ("500MB", 500 * 1000**2), ("1.5G", 1_500_000_000), (4096, 4096)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["ten", "5 parsecs", "-1GB", "0", True])
def test_bad_sizes_name_the_setting(text: object) -> None:
    with pytest.raises(ConfigError, match="max-size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("200ms", 0.2), ("30s", 30), ("7d", 604800), (1.5, 1.5)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, name="t") == pytest.approx(seconds)


def test_cache_modes_as_turbo_spells_them() -> None:
    assert parse_cache_modes("local:rw,remote:r") == CacheModes(True, True, True, False)
    assert parse_cache_modes("remote:rw") == CacheModes(False, False, True, True)
    assert parse_cache_modes("local:,remote:w") == CacheModes(False, False, False, True)
    for bad in ("local:x", "disk:rw", "local:rw,local:r"):
        with pytest.raises(ConfigError, match="--cache"):
            parse_cache_modes(bad)


def test_root_is_the_nearest_project(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()


def test_precedence_flag_then_env_then_turbo_then_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.cachehook]\nmax-size = "5GiB"\n[tool.cachehook.remote]\napi = "http://from-toml"\n'
    )
    env = {"TURBO_API": "http://from-turbo", "TURBO_TOKEN": "tok-4242", "CACHEHOOK_CACHE_DIR": "/x"}
    settings = load_settings(cwd=tmp_path, environ=env)
    assert settings.max_size == 5 * 1024**3
    assert settings.remote is not None
    assert settings.remote.api == "http://from-turbo"
    env["CACHEHOOK_API"] = "http://from-cachehook"
    settings = load_settings(cwd=tmp_path, environ=env, max_size="1GB")
    assert settings.remote is not None
    assert settings.remote.api == "http://from-cachehook"
    assert settings.max_size == 10**9
    assert "tok-4242" not in repr(settings.remote), "the token never appears in a repr"


def test_no_pyproject_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={"CACHEHOOK_CACHE_DIR": str(tmp_path / "c")})
    assert settings.max_size == DEFAULT_MAX_SIZE
    assert settings.remote is None
    assert settings.modes == CacheModes()


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.cachehook\nmax-size = 1")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: malformed TOML"):
        load_settings(cwd=tmp_path, environ={})


def test_disable_and_remote_only(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={"CACHEHOOK_DISABLE": "1"}, remote_only=True)
    assert settings.disabled
    assert not settings.modes.local_read
    assert not settings.modes.local_write


def test_bad_api_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CACHEHOOK_API: expected an http"):
        load_settings(cwd=tmp_path, environ={"CACHEHOOK_API": "cache.example.com"})


# --- issue 10: config mistakes are errors, not silence ----------------------------------------


def _project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(body)
    return tmp_path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "[tool.cachehook]\nmaxsize = '1GiB'\n",
            "[tool.cachehook] maxsize: unknown key (did you mean 'max-size'?)",
        ),
        (
            "[tool.cachehook.remote]\nmax-sise = 1\n",
            "[tool.cachehook.remote] max-sise: unknown key",
        ),
        (
            "[tool.cachehook.remote]\napi = 'http://h'\ntimout = 1\n",
            "[tool.cachehook.remote] timout: unknown key (did you mean 'timeout'",
        ),
        (
            "[tool.cachehook.remote]\napi = 'http://h'\nteamid = 5\n",
            "[tool.cachehook.remote] teamid: expected a string",
        ),
        (
            "[tool.cachehook.remote]\napi = 'http://h'\nteam = ['x']\n",
            "[tool.cachehook.remote] team: expected a string",
        ),
        ("[tool.cachehook]\ncache-dir = 5\n", "[tool.cachehook] cache-dir: expected a string"),
        (
            "[tool.cachehook]\nmax-size = true\n",
            "[tool.cachehook] max-size: expected a string or an integer",
        ),
        ("[tool.cachehook]\nremote = 'x'\n", "[tool.cachehook] remote: expected a table"),
        (
            "[tool.cachehook.remote]\napi = 5\n",
            "[tool.cachehook.remote] api: expected a string",
        ),
    ],
)
def test_config_mistakes_are_errors_naming_file_table_and_key(
    tmp_path: Path, body: str, expected: str
) -> None:
    root = _project(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_settings(cwd=root, environ={})
    assert str(caught.value).startswith(str(root / "pyproject.toml"))
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("variable", "api"),
    [
        ("CACHEHOOK_API", "http://h:notaport"),
        ("TURBO_API", "https://h:99999"),
        ("CACHEHOOK_API", "http://"),
        ("CACHEHOOK_API", "ftp://h"),
    ],
)
def test_a_malformed_api_url_is_a_config_error(tmp_path: Path, variable: str, api: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}: expected an http"):
        load_settings(cwd=tmp_path, environ={variable: api})


def test_a_malformed_api_in_the_table_names_the_file(tmp_path: Path) -> None:
    root = _project(tmp_path, "[tool.cachehook.remote]\napi = 'http://h:port'\n")
    with pytest.raises(ConfigError, match=r"\[tool\.cachehook\.remote\] api: expected an http"):
        load_settings(cwd=root, environ={})


@pytest.mark.parametrize(
    "token", ["abcdefghijkl\n", "abcdefghijkl\r", "abc defghijkl", "tok\x00en"]
)
def test_a_token_with_whitespace_or_control_characters_is_refused(
    tmp_path: Path, token: str
) -> None:
    environ = {"CACHEHOOK_API": "http://127.0.0.1:9", "TURBO_TOKEN": token}
    with pytest.raises(ConfigError, match="TURBO_TOKEN holds whitespace") as caught:
        load_settings(cwd=tmp_path, environ=environ)
    assert token.strip() not in str(caught.value)


def test_every_known_key_is_accepted(tmp_path: Path) -> None:
    body = """
[tool.cachehook]
cache-dir = "c"
max-size = "1GiB"
presets = []
[tool.cachehook.remote]
api = "http://h:8080"
team = "t"
teamid = "team_x"
timeout = "1s"
upload-timeout = 30
flush-timeout = 0.5
[tool.cachehook.tasks.a]
command = "true"
"""
    settings = load_settings(cwd=_project(tmp_path, body), environ={})
    assert settings.remote is not None
    assert settings.remote.api == "http://h:8080"
    assert settings.cache_dir == tmp_path / "c"
