"""One frozen ``Settings``, resolved in this order (first wins):

CLI flag > ``CACHEHOOK_*`` environment variable > ``TURBO_*`` fallback >
``[tool.cachehook]`` in the project's ``pyproject.toml`` > default.

What ``[tool.cachehook]`` and ``[tool.cachehook.remote]`` may hold is one table of
``ConfigKey`` (name, types, description): an unknown key or a value of the wrong type is a
``ConfigError`` naming the file, the table and the key, with "did you mean" for a near miss
(issue 10). Task tables are checked against ``tasks.TASK_KEYS`` with the same helpers.

It is longer than 400 lines because the whole precedence chain and the one wording of every
table check (``check_table``, ``table_strings``, ...) are kept in one place, so that every
table's messages read alike; the value parsers (size, duration, cache modes) are its seam.

``Settings``, ``RemoteSettings`` and ``CacheModes`` are NamedTuples, not frozen dataclasses:
they are built on every hit, and importing ``dataclasses`` (with ``inspect``) and building a
dataclass cost milliseconds there (hit latency, issue 11).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "DEFAULT_MAX_SIZE",
    "REMOTE_KEYS",
    "TOOL_KEYS",
    "CacheModes",
    "ConfigKey",
    "RemoteSettings",
    "Settings",
    "check_table",
    "default_cache_dir",
    "did_you_mean",
    "find_root",
    "load_pyproject_table",
    "load_settings",
    "parse_cache_modes",
    "parse_duration",
    "parse_size",
    "table_boolean",
    "table_strings",
    "type_name",
]

DEFAULT_MAX_SIZE = 10 * 1024**3
OUTPUT_LOG_MODES = ("full", "errors-only", "hash-only", "none")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
# Patterns, not compiled objects: re compiles (and caches) them on first use, so a hit that
# parses no size or duration does not pay for them (issue 11).
_SIZE_RE = r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$"
_DURATION_RE = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$"
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigKey(NamedTuple):
    """One key a config table may hold: its name, the TOML types it takes, what it is for."""

    # A NamedTuple, not a frozen dataclass: built at import on every hit, it costs ~0.3 ms
    # where a dataclass costs ~1.9 ms on the 2-core VM (issue 11).

    name: str
    types: tuple[type, ...]
    description: str


_DURATION_TYPES = (str, int, float)
TOOL_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("cache-dir", (str,), "the local cache directory, relative to the project root"),
    ConfigKey("global-inputs", (list,), "files every workspace member's tasks read (issue 14)"),
    ConfigKey("max-size", (str, int), "the local cache's size cap, such as '10GiB'"),
    ConfigKey("presets", (list,), "the task presets every workspace member gets"),
    ConfigKey("remote", (dict,), "the remote cache, as [tool.cachehook.remote]"),
    ConfigKey("tasks", (dict,), "named tasks, as [tool.cachehook.tasks.NAME]"),
)
REMOTE_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("api", (str,), "the Remote Cache API's base URL, like CACHEHOOK_API"),
    ConfigKey("flush-timeout", _DURATION_TYPES, "how long exit waits to send events"),
    ConfigKey("team", (str,), "the team slug, like CACHEHOOK_TEAM"),
    ConfigKey("teamid", (str,), "the team id ('team_...'), like CACHEHOOK_TEAMID"),
    ConfigKey("timeout", _DURATION_TYPES, "the wait for the server to start answering"),
    ConfigKey("upload-timeout", _DURATION_TYPES, "how long a transfer may stall"),
)
_TYPE_WORDS = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def type_name(value: object) -> str:
    """How a TOML value's type reads in a message: ``a string``, ``an array``, ..."""
    return _TYPE_WORDS.get(type(value), type(value).__name__)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choices close to ``word``, or ``""``."""
    import difflib  # only a config error needs it; a hit must not pay its import (issue 11)

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def table_strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """``table[key]`` as an array of strings (empty when absent).

    Raises:
        ConfigError: the value is not an array of strings; the message names ``where`` and
            the key, and shows the array form of a lone string.
    """
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        hint = f' (write ["{value}"])' if isinstance(value, str) else ""
        msg = f"{where} {key}: expected an array of strings, got {type_name(value)}{hint}"
        raise ConfigError(msg)
    return tuple(value)


def table_boolean(table: Mapping[str, Any], key: str, where: str, *, default: bool) -> bool:
    """``table[key]`` as true or false (``default`` when absent).

    Raises:
        ConfigError: the value is not a boolean; the message names ``where`` and the key.
    """
    value = table.get(key, default)
    if not isinstance(value, bool):
        msg = f"{where} {key}: expected true or false, got {type_name(value)}"
        raise ConfigError(msg)
    return value


def check_table(
    table: Mapping[str, Any], keys: Sequence[ConfigKey], *, source: str, where: str
) -> None:
    """Refuse a key ``keys`` does not list, or a value of a type its entry does not take.

    Raises:
        ConfigError: naming ``source`` (the file), ``where`` (the table) and the key.
    """
    known = {key.name: key for key in keys}
    for name, value in table.items():
        key = known.get(name)
        if key is None:
            listed = ", ".join(known)
            msg = (
                f"{source}: {where} {name}: unknown key{did_you_mean(name, list(known))};"
                f" known keys: {listed}"
            )
            raise ConfigError(msg)
        if (isinstance(value, bool) and bool not in key.types) or not isinstance(value, key.types):
            expected = " or ".join(_TYPE_WORDS[t] for t in key.types)
            msg = (
                f"{source}: {where} {name}: expected {expected} ({key.description}),"
                f" got {type_name(value)}"
            )
            raise ConfigError(msg)


class CacheModes(NamedTuple):
    """Which sides of the cache may be read and written (turbo's ``--cache``)."""

    local_read: bool = True
    local_write: bool = True
    remote_read: bool = True
    remote_write: bool = True


class RemoteSettings(NamedTuple):
    """Where the remote cache is and how to talk to it."""

    api: str
    token: str | None = None
    team_id: str | None = None
    slug: str | None = None
    signature_key: bytes | None = None
    # Wait for a connection and a first byte; short, so a black hole costs little (issue 3).
    timeout: float = 2.0
    # An active transfer may take long: only a stalled one is cut.
    upload_timeout: float = 60.0
    events_flush_timeout: float = 1.0

    def __repr__(self) -> str:  # never the token nor the signature key
        hidden = ("token", "signature_key")
        shown = (f"{n}={getattr(self, n)!r}" for n in self._fields if n not in hidden)
        return f"RemoteSettings({', '.join(shown)})"


_NO_TABLE: Mapping[str, Any] = MappingProxyType({})


class Settings(NamedTuple):
    """Everything a run needs to know, resolved once."""

    root: Path
    cache_dir: Path
    max_size: int = DEFAULT_MAX_SIZE
    disabled: bool = False
    modes: CacheModes = CacheModes()
    remote: RemoteSettings | None = None
    output_logs: str = "full"
    table: Mapping[str, Any] = _NO_TABLE

    def __repr__(self) -> str:  # without the table, as long as the pyproject's
        shown = (f"{name}={getattr(self, name)!r}" for name in self._fields[:-1])
        return f"Settings({', '.join(shown)})"


def find_root(start: Path) -> Path:
    """Return the nearest ancestor of ``start`` holding ``pyproject.toml`` or ``.git``.

    Falls back to ``start`` itself when no ancestor has either.
    """
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / "pyproject.toml").is_file() or (candidate / ".git").exists():
            return candidate
    return start


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """The user cache directory: ``$XDG_CACHE_HOME/cachehook`` or ``~/.cache/cachehook``."""
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cachehook"


def parse_size(value: object, *, name: str = "max-size") -> int:
    """Parse ``10GiB``, ``500MB``, ``1.5G`` or a plain byte count."""
    if isinstance(value, bool):
        msg = f"{name}: expected a size such as '10GiB', got {value!r}"
        raise ConfigError(msg)
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = re.match(_SIZE_RE, str(value))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            msg = f"{name}: expected a size such as '10GiB' or '500MB', got {value!r}"
            raise ConfigError(msg)
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _SIZE_UNITS[unit])
    if size <= 0:
        msg = f"{name}: must be greater than zero, got {value!r}"
        raise ConfigError(msg)
    return size


def parse_duration(value: object, *, name: str) -> float:
    """Parse ``1.5``, ``200ms``, ``30s``, ``7d`` into seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.match(_DURATION_RE, str(value))
        if not match:
            msg = f"{name}: expected a duration such as '1.5s', '200ms' or '7d', got {value!r}"
            raise ConfigError(msg)
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        msg = f"{name}: must not be negative, got {value!r}"
        raise ConfigError(msg)
    return seconds


def parse_cache_modes(value: str) -> CacheModes:
    """Parse turbo's ``--cache`` spelling: ``local:rw,remote:r`` (a side left out is off)."""
    sides: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        side, _, mode = part.partition(":")
        if side not in ("local", "remote") or mode not in ("", "r", "w", "rw") or side in sides:
            msg = (
                f"--cache: cannot read {part!r} in {value!r}; "
                "write it as 'local:rw,remote:r' (sides local/remote, modes r, w, rw or empty)"
            )
            raise ConfigError(msg)
        sides[side] = mode
    local, remote = sides.get("local", ""), sides.get("remote", "")
    return CacheModes(
        local_read="r" in local,
        local_write="w" in local,
        remote_read="r" in remote,
        remote_write="w" in remote,
    )


def load_pyproject_table(root: Path) -> dict[str, Any]:
    """Read ``[tool.cachehook]`` from ``root/pyproject.toml`` (empty when absent)."""
    path = root / "pyproject.toml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read: {exc}"
        raise ConfigError(msg) from exc
    if "cachehook" not in text:
        return {}  # skip the parse on the hot path when nothing is configured
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: malformed TOML: {exc}"
        raise ConfigError(msg) from exc
    table = data.get("tool", {}).get("cachehook", {})
    if not isinstance(table, dict):
        msg = f"{path}: [tool.cachehook] must be a table"
        raise ConfigError(msg)
    return table


def _env(environ: Mapping[str, str], name: str) -> str | None:
    found = _env_named(environ, name)
    return found[1] if found else None


def _env_named(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The variable that gives ``name`` (``CACHEHOOK_`` first, then ``TURBO_``) and its value."""
    for prefix in ("CACHEHOOK_", "TURBO_"):
        value = environ.get(prefix + name)
        if value:
            return prefix + name, value
    return None


def _check_api(api: str, origin: str) -> str:
    from urllib.parse import urlsplit

    problem = ""
    try:
        parts = urlsplit(api)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        problem = f" ({exc})"
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        msg = (
            f"{origin}: expected an http(s) URL such as 'https://cache.example.com',"
            f" got {api!r}{problem}"
        )
        raise ConfigError(msg)
    return api.rstrip("/")


def _check_token(environ: Mapping[str, str]) -> str | None:
    found = _env_named(environ, "TOKEN")
    if found is None:
        return None
    name, token = found
    if not (token.isascii() and token.isprintable()) or " " in token:
        # Never echoed: a header library would print it whole in its own error (issue 10).
        msg = (
            f"{name} holds whitespace or a control character (a newline read from a file?);"
            " set it to the token alone"
        )
        raise ConfigError(msg)
    return token


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _remote_settings(
    table: Mapping[str, Any], environ: Mapping[str, str], source: str
) -> RemoteSettings | None:
    remote = table.get("remote", {})
    check_table(remote, REMOTE_KEYS, source=source, where="[tool.cachehook.remote]")
    from_env = _env_named(environ, "API")
    origin, api = from_env or (f"{source}: [tool.cachehook.remote] api", remote.get("api"))
    if not api:
        return None
    key = _env(environ, "REMOTE_CACHE_SIGNATURE_KEY")
    return RemoteSettings(
        api=_check_api(api, origin),
        token=_check_token(environ),
        team_id=_env(environ, "TEAMID") or remote.get("teamid"),
        slug=_env(environ, "TEAM") or remote.get("team"),
        signature_key=key.encode() if key else None,
        timeout=parse_duration(
            _env(environ, "REMOTE_CACHE_TIMEOUT") or remote.get("timeout", 2.0),
            name="remote timeout",
        ),
        upload_timeout=parse_duration(
            _env(environ, "REMOTE_CACHE_UPLOAD_TIMEOUT") or remote.get("upload-timeout", 60.0),
            name="remote upload-timeout",
        ),
        events_flush_timeout=parse_duration(
            environ.get("CACHEHOOK_EVENTS_FLUSH_TIMEOUT") or remote.get("flush-timeout", 1.0),
            name="events flush-timeout",
        ),
    )


def load_settings(
    *,
    cwd: Path,
    environ: Mapping[str, str],
    root: Path | None = None,
    cache_dir: Path | None = None,
    max_size: str | None = None,
    cache: str | None = None,
    remote_only: bool = False,
    no_cache: bool = False,
    output_logs: str | None = None,
    workspace: bool = False,
) -> Settings:
    """Resolve the settings for one run; every keyword is a CLI flag (None = not given).

    With ``workspace``, a ``cwd`` inside a uv workspace takes the workspace's root as the
    project root (``cachehook run`` from a member's directory, issue 14).

    Raises:
        ConfigError: a value is malformed; the message names where it came from.
    """
    if root is not None:
        if not root.is_dir():
            msg = f"--root: {root} is not a directory"
            raise ConfigError(msg)
        resolved_root = root.resolve()
    else:
        resolved_root = find_root(cwd)
        if workspace:
            from cachehook.workspace import find_workspace_root

            resolved_root = find_workspace_root(cwd) or resolved_root
    source = str(resolved_root / "pyproject.toml")
    table = load_pyproject_table(resolved_root)
    check_table(table, TOOL_KEYS, source=source, where="[tool.cachehook]")

    env_dir = environ.get("CACHEHOOK_CACHE_DIR")
    table_dir = table.get("cache-dir")
    if cache_dir is None and env_dir:
        cache_dir = Path(env_dir)
    if cache_dir is None and table_dir is not None:
        cache_dir = resolved_root / table_dir
    if cache_dir is None:
        cache_dir = default_cache_dir(environ)

    size_value = max_size or environ.get("CACHEHOOK_MAX_SIZE") or table.get("max-size")
    size = DEFAULT_MAX_SIZE if size_value is None else parse_size(size_value)

    mode_text = cache or environ.get("CACHEHOOK_CACHE") or _env(environ, "CACHE")
    modes = parse_cache_modes(mode_text) if mode_text else CacheModes()
    if remote_only or _truthy(_env(environ, "REMOTE_ONLY")):
        modes = CacheModes(False, False, modes.remote_read, modes.remote_write)

    logs = output_logs or environ.get("CACHEHOOK_OUTPUT_LOGS") or "full"
    if logs not in OUTPUT_LOG_MODES:
        msg = f"output-logs: expected one of {', '.join(OUTPUT_LOG_MODES)}, got {logs!r}"
        raise ConfigError(msg)

    return Settings(
        root=resolved_root,
        cache_dir=cache_dir.expanduser().absolute(),
        max_size=size,
        disabled=no_cache or _truthy(environ.get("CACHEHOOK_DISABLE")),
        modes=modes,
        remote=_remote_settings(table, environ, source),
        output_logs=logs,
        table=table,
    )
