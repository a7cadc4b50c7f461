"""Bearer tokens for ``cachehook serve``: who may read, who may write, and for which teams.

The tokens file is TOML, one ``[[token]]`` table per token::

    [[token]]
    name = "ci"                       # shown in logs and errors; never the secret
    token = "s3cr3t-at-least-16-chars"
    scopes = ["read", "write"]
    teams = ["acme", "team_abc123"]   # "*" allows every team
    default-team = "acme"             # for requests with no teamId or slug (optional)

    [[token]]
    name = "laptops"
    sha256 = "9f86d0…"                # hex SHA-256 of the token: the file holds no secret
    scopes = ["read"]
    teams = ["acme"]

Scopes: ``read`` (GET, HEAD, the batch query), ``write`` (PUT), ``admin`` (``DELETE
/v8/artifacts``: remove all of a team's artifacts).

A request's token is hashed with SHA-256 and looked up by digest, so the comparison never
runs over the secret itself.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError
from cachehook.server.validation import TEAM_RE

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["ALL_TEAMS", "SCOPES", "Token", "TokenTable", "load_tokens"]

SCOPES = frozenset({"admin", "read", "write"})
ALL_TEAMS = "*"
_MIN_TOKEN_LENGTH = 16
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what fits in an Authorization header
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEYS = frozenset({"name", "token", "sha256", "scopes", "teams", "default-team"})


@dataclass(frozen=True)
class Token:
    """What one bearer token may do."""

    name: str
    scopes: frozenset[str]
    teams: frozenset[str]
    default_team: str | None = None  # the team of a request that names none

    def may_use(self, team: str) -> bool:
        """Whether this token may touch the artifacts and events of ``team``."""
        return ALL_TEAMS in self.teams or team in self.teams


@dataclass(frozen=True)
class TokenTable:
    """The tokens of one file, by the SHA-256 of their secret."""

    by_digest: Mapping[str, Token]

    def find(self, secret: str) -> Token | None:
        """The token whose secret is ``secret``, or None."""
        return self.by_digest.get(_digest(secret))

    def __len__(self) -> int:
        return len(self.by_digest)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def load_tokens(path: Path) -> TokenTable:
    """Read and check a tokens file (see the module docstring).

    Raises:
        ConfigError: the file is missing, not TOML, or an entry is malformed.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read the tokens file {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"the tokens file {path} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    extra = set(data) - {"token"}
    if extra:
        msg = f"{path}: unknown top-level key {sorted(extra)[0]!r} (expected [[token]] tables)"
        raise ConfigError(msg)
    entries = data.get("token")
    if not isinstance(entries, list) or not entries:
        msg = f"{path} defines no tokens: add at least one [[token]] table"
        raise ConfigError(msg)
    by_digest: dict[str, Token] = {}
    names: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        where = f"{path}, token #{index}"
        digest, token = _parse_entry(entry, where)
        if token.name in names:
            msg = f"{where}: the name {token.name!r} is used twice"
            raise ConfigError(msg)
        if digest in by_digest:
            msg = f"{where} ({token.name}): the same secret as {by_digest[digest].name!r}"
            raise ConfigError(msg)
        names.add(token.name)
        by_digest[digest] = token
    return TokenTable(by_digest)


def _parse_entry(entry: object, where: str) -> tuple[str, Token]:
    if not isinstance(entry, dict):
        msg = f"{where}: expected a [[token]] table"
        raise ConfigError(msg)
    unknown = set(entry) - _KEYS
    if unknown:
        msg = f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_KEYS))})"
        raise ConfigError(msg)
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        msg = f"{where}: 'name' must be 1-64 letters, digits or _.@- (got {name!r})"
        raise ConfigError(msg)
    where = f"{where} ({name})"
    digest = _parse_secret(entry, where)
    scopes = _string_set(entry, "scopes", where)
    if not scopes or not scopes <= SCOPES:
        msg = f"{where}: 'scopes' must be a non-empty subset of {sorted(SCOPES)}"
        raise ConfigError(msg)
    teams = _string_set(entry, "teams", where)
    if not teams:
        msg = f"{where}: 'teams' must name at least one team, or \"*\" for all"
        raise ConfigError(msg)
    for team in teams - {ALL_TEAMS}:
        if not TEAM_RE.match(team):
            msg = f"{where}: {team!r} is not a valid team (letters, digits, '_' and '-')"
            raise ConfigError(msg)
    default_team = _parse_default_team(entry, teams, where)
    return digest, Token(name=name, scopes=scopes, teams=teams, default_team=default_team)


def _parse_default_team(entry: dict[str, Any], teams: frozenset[str], where: str) -> str | None:
    team = entry.get("default-team")
    if team is None:
        return None
    if not isinstance(team, str) or not TEAM_RE.match(team):
        msg = f"{where}: 'default-team' must be a team name (letters, digits, '_' and '-')"
        raise ConfigError(msg)
    if ALL_TEAMS not in teams and team not in teams:
        msg = f"{where}: 'default-team' {team!r} is not one of its 'teams'; add it there"
        raise ConfigError(msg)
    return team


def _parse_secret(entry: dict[str, Any], where: str) -> str:
    secret, digest = entry.get("token"), entry.get("sha256")
    if (secret is None) == (digest is None):
        msg = f"{where}: give exactly one of 'token' and 'sha256'"
        raise ConfigError(msg)
    if digest is not None:
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            msg = f"{where}: 'sha256' must be 64 hex digits"
            raise ConfigError(msg)
        return digest.lower()
    if not isinstance(secret, str) or not _TOKEN_RE.match(secret):
        msg = f"{where}: 'token' must be printable ASCII without spaces"
        raise ConfigError(msg)
    if len(secret) < _MIN_TOKEN_LENGTH:
        msg = f"{where}: the token is shorter than {_MIN_TOKEN_LENGTH} characters"
        raise ConfigError(msg)
    return _digest(secret)


def _string_set(entry: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = entry.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        msg = f"{where}: {key!r} must be a list of strings"
        raise ConfigError(msg)
    return frozenset(value)
