"""The tokens file: scopes and teams per token; every malformed entry is a clear ConfigError."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from cachehook.errors import ConfigError
from cachehook.server.tokens import load_tokens

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "s3cr3t-token-0123456789"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    return path


def test_loads_tokens_by_secret_and_by_digest(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"another-secret-0123456789").hexdigest()
    table = load_tokens(
        write(
            tmp_path,
            f"""
[[token]]
name = "ci"
token = "{SECRET}"
scopes = ["read", "write"]
teams = ["acme", "team_abc"]

[[token]]
name = "laptop"
sha256 = "{digest.upper()}"
scopes = ["read"]
teams = ["*"]
""",
        )
    )
    assert len(table) == 2
    ci = table.find(SECRET)
    assert ci is not None
    assert ci.name == "ci"
    assert ci.scopes == {"read", "write"}
    assert ci.may_use("acme")
    assert ci.may_use("team_abc")
    assert not ci.may_use("other")
    laptop = table.find("another-secret-0123456789")
    assert laptop is not None
    assert laptop.scopes == {"read"}
    assert laptop.may_use("anything")
    assert table.find("nope") is None
    assert table.find(SECRET + " ") is None


def test_default_team_and_admin_scope(tmp_path: Path) -> None:
    text = entry(scopes='["read", "admin"]', teams='["acme", "beta"]', **{"default-team": '"beta"'})
    text += entry(name='"any"', token='"any-team-token-0123456"', teams='["*"]')
    text += entry(name='"wild"', token='"wild-team-token-0123456"', teams='["*"]')
    text = text.replace('name = "wild"', 'name = "wild"\ndefault-team = "zeta"')
    table = load_tokens(write(tmp_path, text))
    ci = table.find(SECRET)
    assert ci is not None
    assert ci.default_team == "beta"
    assert ci.scopes == {"read", "admin"}
    any_team = table.find("any-team-token-0123456")
    assert any_team is not None
    assert any_team.default_team is None
    wild = table.find("wild-team-token-0123456")
    assert wild is not None
    assert wild.default_team == "zeta"


def entry(**fields: str) -> str:
    base = {
        "name": '"ci"',
        "token": f'"{SECRET}"',
        "scopes": '["read"]',
        "teams": '["acme"]',
    }
    base.update(fields)
    lines = [f"{key} = {value}" for key, value in base.items() if value != "-"]
    return "[[token]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "defines no tokens"),
        ("token = 3\n", "defines no tokens"),
        ("[server]\nport = 1\n", "unknown top-level key 'server'"),
        ("[[token]\n", "not valid TOML"),
        (entry(name="-"), "'name'"),
        (entry(name='"has space"'), "'name'"),
        (entry(token="-"), "exactly one of 'token' and 'sha256'"),
        (entry(sha256='"' + "0" * 64 + '"'), "exactly one of 'token' and 'sha256'"),
        (entry(token='"short"'), "shorter than 16"),
        (entry(token='"has a space in it 0123"'), "printable ASCII"),
        (entry(token="-", sha256='"xyz"'), "64 hex digits"),
        (entry(scopes="[]"), "'scopes'"),
        (entry(scopes='"read"'), "'scopes' must be a list"),
        (entry(teams="[]"), "'teams'"),
        (entry(teams='["../etc"]'), "not a valid team"),
        (entry(teams='["a/b"]'), "not a valid team"),
        (entry(colour='"red"'), "unknown key 'colour'"),
        (entry() + entry(token='"another-token-0123456789"'), "used twice"),
        (entry() + entry(name='"other"'), "the same secret as 'ci'"),
    ],
)
def test_malformed_files_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_tokens(path)
    assert needle in str(caught.value)
    assert str(path) in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the tokens file"):
        load_tokens(tmp_path / "absent.toml")
