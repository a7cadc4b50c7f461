"""One frozen ``Settings``, resolved in this order (first wins):

CLI flag > ``CACHEHOOK_*`` environment variable > ``TURBO_*`` fallback >
``[tool.cachehook]`` in the project's ``pyproject.toml`` > default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_MAX_SIZE",
    "CacheModes",
    "RemoteSettings",
    "Settings",
    "default_cache_dir",
    "find_root",
    "load_pyproject_table",
    "load_settings",
    "parse_cache_modes",
    "parse_duration",
    "parse_size",
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
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class CacheModes:
    """Which sides of the cache may be read and written (turbo's ``--cache``)."""

    local_read: bool = True
    local_write: bool = True
    remote_read: bool = True
    remote_write: bool = True


@dataclass(frozen=True)
class RemoteSettings:
    """Where the remote cache is and how to talk to it."""

    api: str
    token: str | None = field(default=None, repr=False)
    team_id: str | None = None
    slug: str | None = None
    signature_key: bytes | None = field(default=None, repr=False)
    # Wait for a connection and a first byte; short, so a black hole costs little (issue 3).
    timeout: float = 2.0
    # An active transfer may take long: only a stalled one is cut.
    upload_timeout: float = 60.0
    events_flush_timeout: float = 1.0


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once."""

    root: Path
    cache_dir: Path
    max_size: int = DEFAULT_MAX_SIZE
    disabled: bool = False
    modes: CacheModes = CacheModes()
    remote: RemoteSettings | None = None
    output_logs: str = "full"
    table: Mapping[str, Any] = field(default_factory=dict, repr=False)


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
        match = _SIZE_RE.match(str(value))
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
        match = _DURATION_RE.match(str(value))
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
    for prefix in ("CACHEHOOK_", "TURBO_"):
        value = environ.get(prefix + name)
        if value:
            return value
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _remote_settings(
    table: Mapping[str, Any], environ: Mapping[str, str], source: str
) -> RemoteSettings | None:
    remote = table.get("remote", {})
    if not isinstance(remote, dict):
        msg = f"{source}: [tool.cachehook.remote] must be a table"
        raise ConfigError(msg)
    unknown = set(remote) - {"api", "team", "teamid", "timeout", "upload-timeout", "flush-timeout"}
    if unknown:
        msg = f"{source}: [tool.cachehook.remote]: unknown key {sorted(unknown)[0]!r}"
        raise ConfigError(msg)
    api = _env(environ, "API") or remote.get("api")
    if not api:
        return None
    if not isinstance(api, str) or not re.match(r"^https?://[^/\s]+", api):
        msg = (
            f"remote api: expected an http(s) URL such as 'https://cache.example.com', got {api!r}"
        )
        raise ConfigError(msg)
    key = _env(environ, "REMOTE_CACHE_SIGNATURE_KEY")
    return RemoteSettings(
        api=api.rstrip("/"),
        token=_env(environ, "TOKEN"),
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

    env_dir = environ.get("CACHEHOOK_CACHE_DIR")
    table_dir = table.get("cache-dir")
    if cache_dir is None and env_dir:
        cache_dir = Path(env_dir)
    if cache_dir is None and isinstance(table_dir, str):
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
