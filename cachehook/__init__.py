"""cachehook: a content-addressed cache for build, lint and test tasks.

``import cachehook`` stays light: it never imports httpx, click or the server,
because a cache hit is judged by its latency.
"""

from __future__ import annotations

from cachehook.errors import (
    ArchiveError,
    CachehookError,
    ConfigError,
    HashingError,
    RemoteAuthError,
    RemoteError,
    RemoteProtocolError,
    RemoteUnavailable,
    StoreError,
)

__version__ = "0.1.0"

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
    "__version__",
]
