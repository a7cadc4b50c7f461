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

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds (issue 5)
if TYPE_CHECKING:
    from cachehook.integrations.decorator import cached

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
    "cached",
]


def __getattr__(name: str) -> object:
    # Lazy (issue 5): the decorator pulls in the runner, which `import cachehook` must not.
    if name == "cached":
        from cachehook.integrations.decorator import cached

        return cached
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
