"""The exception tree.

    CachehookError
    ├── ConfigError           bad settings or CLI input          -> exit 2
    ├── HashingError          an input is missing or unreadable  -> exit 2
    ├── ArchiveError          an artifact is malformed or hostile (a miss, never a crash)
    ├── StoreError            the local store is unusable (wraps diskcache / OSError)
    └── RemoteError           wraps httpx errors, always ``raise ... from exc``
        ├── RemoteUnavailable     connect / timeout / 5xx: degrade to local-only
        ├── RemoteAuthError       401 / 403
        └── RemoteProtocolError   unexpected status or payload

A failing wrapped command is not an exception: its exit code is a value on the result.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "CachehookError",
    "ConfigError",
    "HashingError",
    "RemoteAuthError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteUnavailable",
    "StoreError",
]


class CachehookError(Exception):
    """Base class of every error cachehook raises on purpose."""

    exit_code = 1


class ConfigError(CachehookError):
    """Bad settings, a malformed config file or a wrong CLI argument."""

    exit_code = 2


class HashingError(CachehookError):
    """An input could not be read or hashed."""

    exit_code = 2


class ArchiveError(CachehookError):
    """An artifact is malformed, too large, or holds an entry it must not."""


class StoreError(CachehookError):
    """The local store cannot be opened, read or written."""


class RemoteError(CachehookError):
    """Talking to the remote cache failed."""


class RemoteUnavailable(RemoteError):
    """The remote could not be reached in time, or answered 5xx."""


class RemoteAuthError(RemoteError):
    """The remote refused the credentials (401/403)."""


class RemoteProtocolError(RemoteError):
    """The remote answered something the protocol does not allow."""
