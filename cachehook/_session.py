"""The remote cache as one run uses it: ``RemoteSession``, which never raises (issue 3).

A remote hit's download goes through ``_direct`` (over ``_http11``, a socket of its own);
everything else, and a download ``_direct`` leaves to httpx (a proxy, a redirect, an encoded
body, a ``transport`` given by a test), through ``remote.RemoteCache``, made at the first call
that needs it. So a remote hit imports neither httpx nor ``remote`` (issue 11).
"""

from __future__ import annotations

import _thread  # threading's Lock, without importing threading on a hit (issue 11)
from typing import TYPE_CHECKING, TypeVar

from cachehook._direct import DirectClient, NeedsHttpxError, direct_target
from cachehook._remote_api import ArtifactSignatureError, scrub_secrets
from cachehook.errors import RemoteAuthError, RemoteError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import httpx

    from cachehook._remote_api import ArtifactInfo, Progress
    from cachehook.config import CacheModes, RemoteSettings
    from cachehook.remote import RemoteCache

__all__ = ["FAILURE_LIMIT", "RemoteSession"]

FAILURE_LIMIT = 3  # consecutive faults after which a session stops using the remote
_T = TypeVar("_T")


class RemoteSession:
    """The remote cache as one run uses it: never raises, degrades to local-only.

    Transport faults, 5xx, 413 and malformed answers produce one warning per session; after
    ``FAILURE_LIMIT`` of them in a row the remote is off for the rest of the run. 401/403 switch
    it off at once, with a warning naming the credential to check. A signature failure is a
    miss with a warning.

    Args:
        settings: the remote to use.
        modes: which of remote read and write are allowed.
        on_warning: receives each warning as a plain sentence (never containing the token).
        transport: an httpx transport, for tests (then every request goes through httpx).
        progress: told ``(what, done, total)`` while an artifact moves.
        cache_dir: the cache directory, where ``_direct`` remembers which root verified an
            https remote (``tls/``); None: it loads the whole CA bundle every time.
    """

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        modes: CacheModes,
        on_warning: Callable[[str], None],
        transport: httpx.BaseTransport | None = None,
        progress: Progress | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._progress = progress
        self._cache: RemoteCache | None = None
        target = direct_target(settings) if transport is None else None
        trust_dir = None if cache_dir is None else cache_dir / "tls"
        self._downloader = (
            None
            if target is None
            else DirectClient(settings, target, progress=progress, trust_dir=trust_dir)
        )
        self._modes = modes
        self._on_warning = on_warning
        self._lock = _thread.allocate_lock()
        self._failures = 0
        self._is_off = not (modes.remote_read or modes.remote_write)
        self._has_warned_fault = False
        if settings.team_id and not settings.team_id.startswith("team_"):
            on_warning(
                f"CACHEHOOK_TEAMID {settings.team_id!r} does not start with 'team_', so it is "
                "not sent; put a team slug in CACHEHOOK_TEAM instead"
            )
        if settings.signature_key is not None and len(settings.signature_key) < 32:
            on_warning("the remote cache signature key is shorter than 32 bytes; use a longer one")

    @property
    def is_enabled(self) -> bool:
        """Whether the remote is still in use in this run."""
        return not self._is_off

    def fetch(self, key: str, dest: Path) -> ArtifactInfo | None:
        """Download ``key`` into ``dest``; None on a miss, when reading is off, or on any fault."""
        if not self._modes.remote_read or self._is_off:
            return None
        return self._guard(lambda: self._download(key, dest), None)

    def exists(self, key: str) -> bool | None:
        """Whether the remote has ``key`` (a HEAD); None when reading is off or it failed."""
        if not self._modes.remote_read or self._is_off:
            return None

        def head() -> bool | None:
            return self._api().exists(key) is not None

        return self._guard(head, None)

    def store(self, key: str, src: Path, *, duration_ms: int) -> bool:
        """Upload ``src`` as ``key``; False when writing is off or the upload failed."""
        if not self._modes.remote_write or self._is_off:
            return False

        def upload() -> bool:
            self._api().store(key, src, duration_ms=duration_ms)
            return True

        return self._guard(upload, False)

    def close(self) -> None:
        """Close the connections."""
        if self._downloader is not None:
            self._downloader.close()
        with self._lock:
            cache, self._cache = self._cache, None
        if cache is not None:
            cache.close()

    def _download(self, key: str, dest: Path) -> ArtifactInfo | None:
        if self._downloader is not None:
            try:
                return self._downloader.fetch(key, dest)
            except NeedsHttpxError:
                pass  # httpx asks again, and follows the redirect or decodes the body
        return self._api().fetch(key, dest)

    def _api(self) -> RemoteCache:
        with self._lock:
            if self._cache is None:
                from cachehook.remote import RemoteCache  # httpx: not on a remote hit

                self._cache = RemoteCache(
                    self._settings, transport=self._transport, progress=self._progress
                )
            return self._cache

    def _guard(self, call: Callable[[], _T], default: _T) -> _T:
        try:
            result = call()
        except ArtifactSignatureError as exc:
            self._on_warning(f"{exc}; treating it as a miss")
            return default
        except RemoteAuthError as exc:
            self._switch_off(f"{exc}; the remote cache is off for this run")
            return default
        except RemoteError as exc:
            self._count_failure(str(exc))
            return default
        except (ValueError, OSError) as exc:  # a bad key or duration, or a local file error
            self._on_warning(
                scrub_secrets(self._settings, f"remote cache not used for this task: {exc}")
            )
            return default
        except Exception as exc:  # a run never fails because of the remote
            _debug("remote cache: unexpected error", exc_info=True)
            detail = f"unexpected {type(exc).__name__}: {exc}"
            self._count_failure(scrub_secrets(self._settings, detail))
            return default
        with self._lock:
            self._failures = 0
        return result

    def _switch_off(self, message: str) -> None:
        with self._lock:
            was_off, self._is_off = self._is_off, True
        if not was_off:
            self._on_warning(message)

    def _count_failure(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            switched = failures >= FAILURE_LIMIT and not self._is_off
            if switched:
                self._is_off = True
            should_warn, self._has_warned_fault = not self._has_warned_fault, True
        if switched:
            _debug("remote cache off after %d failures in a row", failures)
        if should_warn:
            self._on_warning(f"remote cache unavailable, continuing with the local cache: {reason}")


def _debug(message: str, *args: object, exc_info: bool = False) -> None:
    import logging  # only when something went wrong: not on a hit (issue 11)

    logging.getLogger("cachehook").debug(message, *args, exc_info=exc_info)
