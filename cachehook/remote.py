"""The Vercel / Turborepo Remote Cache API (v8) over httpx.

Over 400 lines on purpose: it owns httpx, so every endpoint, every fault translation and the
degrading session live together; the split would be ``RemoteCache`` (the API) and
``RemoteSession`` (a run's view), should either grow.

``RemoteCache`` mirrors the API, one method per endpoint, and raises ``RemoteError``
subclasses. ``RemoteSession`` is what a run uses: it never raises, warns once, and switches the
remote off for the rest of the run after repeated faults or refused credentials.

This is the only module that imports httpx; it is itself imported only when a remote is
configured.

Timeouts:
    ``RemoteSettings.timeout`` (2 s) bounds every wait for the server to *start*: connecting,
    and the first byte of a response. ``upload_timeout`` (60 s) is how long a transfer that has
    started may stall between two chunks: reads of a download's body, and writes of an upload's
    body once the server has answered anything this session (until then a write may stall only
    ``timeout``, so a server that accepts connections and never answers costs seconds, not
    minutes). After an upload's last byte the server gets ``timeout`` plus one second per
    8 MiB (at most ``upload_timeout``) to acknowledge it. ``0`` means no limit.

Signatures (layout "cachehook-hmac-v1"):
    With ``signature_key`` set, uploads carry ``x-artifact-tag: base64(HMAC-SHA256(key, m))``
    (standard alphabet, padded) and downloads are verified before ``fetch`` returns. ``m`` is
    four fields, each preceded by its byte length as an unsigned 64-bit little-endian integer::

        b"cachehook-artifact-signature:v1"
        artifact hash (ASCII)
        team scope (UTF-8)
        artifact bytes

    The team scope is the ``teamId`` sent (an id starting ``team_``), else the ``slug``, else
    empty: the namespace the server files the artifact under. Length prefixes keep one field
    from running into the next (with a plain "hash + team + body" concatenation, a team id that
    is a prefix of another could validate for it). The field structure follows turbo's newer
    "v2" layout, but with a domain string of our own: cachehook does not claim to read or write
    artifacts signed by turbo.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import struct
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeAlias, TypeVar

from cachehook import __version__
from cachehook.ci import detect_ci_vendor, is_interactive
from cachehook.errors import RemoteAuthError, RemoteError, RemoteProtocolError, RemoteUnavailable
from cachehook.redaction import scrub

# ``import httpx`` imports its command line, ``httpx._main``: click, then pygments and rich
# where they are installed (tens of ms on every remote hit), or an import that fails without
# them. No cachehook process runs that command: httpx takes its own fallback for it (a
# ``main`` that says its dependencies are missing), and the module can still be imported.
_MARKED = "httpx" not in sys.modules
if _MARKED:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
import httpx  # noqa: E402

if _MARKED and sys.modules.get("httpx._main", httpx) is None:
    del sys.modules["httpx._main"]

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path
    from types import TracebackType
    from typing import Protocol

    from cachehook.config import CacheModes, RemoteSettings

    class _UsageEvent(Protocol):
        """What ``record_events`` sends (``events.Event``; named by shape, not imported: the
        events module imports this one, issue 11)."""

        def validate(self) -> None: ...
        def to_json(self) -> dict[str, object]: ...


__all__ = [
    "FAILURE_LIMIT",
    "SIGNATURE_DOMAIN",
    "ArtifactInfo",
    "ArtifactSignatureError",
    "Progress",
    "RemoteCache",
    "RemoteCachingDisabledError",
    "RemoteSession",
    "artifact_tag",
    "team_scope",
]

logger = logging.getLogger("cachehook")

FAILURE_LIMIT = 3  # consecutive faults after which a session stops using the remote
SIGNATURE_DOMAIN = b"cachehook-artifact-signature:v1"
_CHUNK = 1 << 20
_ACK_BYTES_PER_SECOND = 8 << 20
_KEY_RE = re.compile(r"^[0-9a-fA-F]{1,256}$")
_T = TypeVar("_T")

# progress(what, done, total): "download" or "upload", bytes so far, bytes in all (or None).
Progress: TypeAlias = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class ArtifactInfo:
    """What the server says about a stored artifact."""

    size: int | None
    duration_ms: int  # x-artifact-duration: the producer's run time, 0 when not sent
    tag: str | None


class ArtifactSignatureError(RemoteProtocolError):
    """A downloaded artifact has no ``x-artifact-tag``, or one that does not verify."""


class RemoteCachingDisabledError(RemoteAuthError):
    """403 ``remote_caching_<status>``: remote caching is disabled, over limit or paused."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


def team_scope(settings: RemoteSettings) -> str:
    """The namespace a server files artifacts under: the ``team_`` id, else the slug, or ``""``."""
    if settings.team_id and settings.team_id.startswith("team_"):
        return settings.team_id
    return settings.slug or ""


def artifact_tag(secret: bytes, key: str, team: str, path: Path) -> str:
    """Sign the artifact at ``path`` (layout "cachehook-hmac-v1", see the module docstring)."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for field in (SIGNATURE_DOMAIN, key.encode("ascii"), team.encode("utf-8")):
        mac.update(struct.pack("<Q", len(field)))
        mac.update(field)
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        mac.update(struct.pack("<Q", size))
        for chunk in _read_chunks(file, size):
            mac.update(chunk)
    return base64.b64encode(mac.digest()).decode("ascii")


def _read_chunks(file: IO[bytes], size: int, progress: Progress | None = None) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = file.read(min(_CHUNK, left))
        if not chunk:
            msg = f"{file.name} shrank while being read"
            raise OSError(msg)
        left -= len(chunk)
        if progress is not None:
            progress("upload", size - left, size)
        yield chunk


def _limit(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def _error_body(response: httpx.Response) -> bytes:
    """At most 4 KiB of an error response: an error page may be large, or never end."""
    if response.is_stream_consumed:
        return response.content[:4096]
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= 4096:
                break
    except httpx.HTTPError:
        pass
    return body[:4096]


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_detail(data: Any, body: bytes) -> str:
    """The server's own words, from ``{"message"}``, ``{"error": {"message"}}`` or plain text."""
    message: object = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else data.get("message")
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace") if data is None else ""
    text = " ".join(message.split())[:200]
    return f' ("{text}")' if text else ""


class _ByScheme(httpx.BaseTransport):
    """httpx's default transport, one per URL scheme, each made at its first request.

    ``httpx.HTTPTransport()`` builds its TLS context when it is made: certifi's bundle loaded
    into OpenSSL, ~25-50 ms, half of what an ``http://`` remote hit on loopback spends talking
    to the server. Here an ``https`` URL (the API's, or a redirect's) gets exactly httpx's
    default transport, verifying as before (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, certifi);
    a plain ``http`` one gets a transport whose TLS context is never used, as it opens no TLS
    connection, and would refuse every certificate if it were (it trusts no authority).
    Proxies from the environment are httpx's own mounts, made by the client as before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transports: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        with self._lock:
            transport = self._transports.get(scheme)
            if transport is None:
                transport = _transport_for(scheme)
                self._transports[scheme] = transport
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()


def _transport_for(scheme: str) -> httpx.HTTPTransport:
    if scheme != "http":
        return httpx.HTTPTransport()  # https (or a scheme httpx refuses): its defaults
    import ssl  # already imported by httpx

    return httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))


class RemoteCache:
    """A client for one Remote Cache API server; use it as a context manager.

    Args:
        settings: where the server is and the credentials to use.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).

    ``progress``, when given, is called as ``progress(what, done, total)`` while an artifact
    moves (``what`` is ``"download"`` or ``"upload"``; ``total`` is None when unknown).

    Every method raises ``RemoteUnavailable`` (connect, timeout, 5xx, broken connection),
    ``RemoteAuthError`` (401/403) or ``RemoteProtocolError`` (anything else unexpected).
    No message ever contains the token.
    """

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._progress = progress
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._has_answered = False
        self._has_query_route = True
        self._params: dict[str, str] = {}
        if settings.team_id and settings.team_id.startswith("team_"):
            self._params["teamId"] = settings.team_id
        if settings.slug:
            self._params["slug"] = settings.slug
        self._client_headers = {"x-artifact-client-interactive": "1" if is_interactive() else "0"}
        vendor = detect_ci_vendor(os.environ)
        if vendor:
            self._client_headers["x-artifact-client-ci"] = vendor

    def __repr__(self) -> str:
        return f"RemoteCache(api={self._settings.api!r})"

    # -- the API ---------------------------------------------------------------------------

    def status(self) -> str:
        """``GET /v8/artifacts/status``: ``enabled``, ``disabled``, ``over_limit`` or ``paused``."""
        data = self._request_json("GET", "/v8/artifacts/status", what="the status request")
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(status, str):
            msg = f"{self._settings.api} answered the status request without a status: {data!r}"
            raise RemoteProtocolError(self._scrub(msg[:300]))
        return status

    def exists(self, key: str) -> ArtifactInfo | None:
        """``HEAD /v8/artifacts/{key}``: what the server has for ``key``, or None (404)."""
        with self._exchange("HEAD", self._path(key), follow=True) as response:
            if response.status_code == 404:
                return None
            self._check(response, what=f"HEAD of {key}")
            return ArtifactInfo(
                size=self._int_header(response, "content-length"),
                duration_ms=self._duration(response),
                tag=response.headers.get("x-artifact-tag"),
            )

    def fetch(self, key: str, dest: Path) -> ArtifactInfo | None:
        """``GET /v8/artifacts/{key}``, streamed to ``dest``; None on a miss (404).

        ``dest`` is written only once the whole body has arrived, matched ``Content-Length``
        and, with a signature key, verified; on any error it is left untouched.

        Raises:
            ArtifactSignatureError: signing is on and the tag is missing or wrong.
        """
        with self._exchange(
            "GET", self._path(key), headers={"Accept-Encoding": "identity"}, follow=True
        ) as response:
            if response.status_code == 404:
                _error_body(response)  # drained, the connection can serve the next request
                return None
            self._check(response, what=f"download of {key}")
            duration = self._duration(response)
            tag = response.headers.get("x-artifact-tag")
            if self._settings.signature_key and not tag:
                msg = f"artifact {key} from {self._settings.api} has no signature tag"
                raise ArtifactSignatureError(msg)
            expected = None
            if response.headers.get("content-encoding", "identity") == "identity":
                expected = self._int_header(response, "content-length")
            size = self._download(response, dest, key=key, expected=expected, tag=tag)
        return ArtifactInfo(size=size, duration_ms=duration, tag=tag)

    def store(self, key: str, src: Path, *, duration_ms: int) -> None:
        """``PUT /v8/artifacts/{key}`` with the bytes of ``src``, streamed from disk.

        Args:
            key: the artifact hash (hex).
            src: the artifact file.
            duration_ms: how long producing it took; sent as ``x-artifact-duration``.
        """
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 0:
            msg = f"duration_ms must be an int >= 0, got {duration_ms!r}"
            raise ValueError(msg)
        path = self._path(key)
        with src.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "x-artifact-duration": str(duration_ms),
                **self._client_headers,
            }
            if self._settings.signature_key:
                secret = self._settings.signature_key
                headers["x-artifact-tag"] = artifact_tag(
                    secret, key, team_scope(self._settings), src
                )
            # A server that has never answered may be a black hole: let it stall only briefly.
            stall = self._settings.upload_timeout if self._has_answered else self._settings.timeout
            with self._exchange(
                "PUT",
                path,
                headers=headers,
                content=_read_chunks(file, size, self._progress),
                read=self._acknowledge_wait(size),
                write=stall,
            ) as response:
                self._read(response)
                self._check(response, what=f"upload of {key} ({size} bytes)")

    def query(self, keys: Sequence[str]) -> dict[str, ArtifactInfo | None]:
        """``POST /v8/artifacts``: what the server has for each key (None where it has nothing).

        Servers without this optional route (404) are asked with one HEAD per key instead.
        """
        for key in keys:
            self._path(key)
        if not keys:
            return {}
        if self._has_query_route:
            with self._exchange(
                "POST", "/v8/artifacts", json_body={"hashes": list(keys)}
            ) as response:
                self._read(response)
                if response.status_code != 404:
                    self._check(response, what="the artifact query")
                    return self._parse_query(response, keys)
            self._has_query_route = False
        return {key: self.exists(key) for key in keys}

    def record_events(self, events: Sequence[_UsageEvent]) -> None:
        """``POST /v8/artifacts/events`` with ``events`` as one JSON array.

        Raises:
            ValueError: an event is invalid (nothing is sent).
        """
        if not events:
            return
        payload = []
        for event in events:
            event.validate()
            payload.append(event.to_json())
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", **self._client_headers}
        with self._exchange(
            "POST", "/v8/artifacts/events", headers=headers, content=body
        ) as response:
            self._read(response)
            self._check(response, what=f"recording {len(payload)} events")

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> RemoteCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------------

    @property
    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"User-Agent": f"cachehook/{__version__}"}
                if self._settings.token:
                    headers["Authorization"] = f"Bearer {self._settings.token}"
                transport = self._transport if self._transport is not None else _ByScheme()
                self._client = httpx.Client(
                    base_url=self._settings.api, headers=headers, transport=transport
                )
            return self._client

    def _acknowledge_wait(self, size: int) -> float:
        start, longest = self._settings.timeout, self._settings.upload_timeout
        if start <= 0:
            return 0.0
        wait = start + size / _ACK_BYTES_PER_SECOND
        return min(wait, max(start, longest)) if longest > 0 else wait

    def _path(self, key: str) -> str:
        if not _KEY_RE.match(key):
            msg = f"artifact hash must be 1-256 hex digits, got {key!r}"
            raise ValueError(msg)
        return f"/v8/artifacts/{key}"

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        json_body: object = None,
        read: float | None = None,
        write: float | None = None,
        follow: bool = False,
    ) -> Iterator[httpx.Response]:
        start = self._settings.timeout
        timeout = httpx.Timeout(
            connect=_limit(start),
            read=_limit(start if read is None else read),
            write=_limit(start if write is None else write),
            pool=_limit(start),
        )
        request = self._http.build_request(
            method,
            path,
            params=self._params,
            headers=headers,
            content=content,
            json=json_body,
            timeout=timeout,
        )
        response = self._call(
            lambda: self._http.send(request, stream=True, follow_redirects=follow)
        )
        self._has_answered = True
        try:
            yield response
        finally:
            response.close()

    def _call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc

    def _read(self, response: httpx.Response) -> bytes:
        return self._call(response.read)

    def _request_json(self, method: str, path: str, *, what: str) -> Any:
        with self._exchange(method, path) as response:
            body = self._read(response)
            self._check(response, what=what)
        try:
            return json.loads(body)
        except ValueError as exc:
            msg = (
                f"{self._settings.api} answered {what} with a body that is not JSON: {body[:80]!r}"
            )
            raise RemoteProtocolError(self._scrub(msg)) from exc

    def _download(
        self,
        response: httpx.Response,
        dest: Path,
        *,
        key: str,
        expected: int | None,
        tag: str | None,
    ) -> int:
        # The server has started sending: from now on only a stall of upload_timeout cuts it.
        # httpcore reads the read timeout from the request when the body starts streaming.
        timeouts = response.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = _limit(self._settings.upload_timeout)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            size = 0
            with partial.open("wb") as file:
                try:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                        size += len(chunk)
                        if self._progress is not None:
                            self._progress("download", size, expected)
                except httpx.HTTPError as exc:
                    raise self._translate(exc) from exc
            if expected is not None and size != expected:
                msg = (
                    f"download of {key} from {self._settings.api} was cut short: "
                    f"{size} of {expected} bytes"
                )
                raise RemoteProtocolError(msg)
            if self._settings.signature_key:
                self._verify(key, partial, tag)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return size

    def _verify(self, key: str, path: Path, tag: str | None) -> None:
        assert self._settings.signature_key is not None
        wanted = artifact_tag(self._settings.signature_key, key, team_scope(self._settings), path)
        if not hmac.compare_digest(wanted.encode("ascii"), (tag or "").encode("ascii", "replace")):
            msg = f"artifact {key} from {self._settings.api} failed signature verification"
            raise ArtifactSignatureError(msg)

    # -- responses -------------------------------------------------------------------------

    def _check(self, response: httpx.Response, *, what: str) -> None:
        code = response.status_code
        if 200 <= code < 300:
            return
        body = _error_body(response)
        data = _parse_json(body)
        detail = _error_detail(data, body)
        said = f"{self._settings.api} answered {code} {response.reason_phrase} to {what}{detail}"
        if code in (401, 403) and not self._settings.token:  # Vercel answers 403 to none
            msg = f"{said}: no token is set; set CACHEHOOK_TOKEN (or TURBO_TOKEN)"
            raise RemoteAuthError(msg)
        if code == 401:
            msg = f"{said}: the token was refused; check CACHEHOOK_TOKEN (or TURBO_TOKEN)"
            raise RemoteAuthError(self._scrub(msg))
        if code == 403:
            error = data.get("error") if isinstance(data, dict) else None
            error_code = error.get("code") if isinstance(error, dict) else None
            if isinstance(error_code, str) and error_code.startswith("remote_caching_"):
                status = error_code.removeprefix("remote_caching_")
                msg = (
                    f"{said}: remote caching is {status.replace('_', ' ')} for {self._team_words()}"
                )
                raise RemoteCachingDisabledError(self._scrub(msg), status=status)
            msg = (
                f"{said}: access denied for {self._team_words()}; check that CACHEHOOK_TOKEN "
                "(or TURBO_TOKEN) may use that team, set by CACHEHOOK_TEAM / CACHEHOOK_TEAMID "
                "(or TURBO_TEAM / TURBO_TEAMID)"
            )
            raise RemoteAuthError(self._scrub(msg))
        if code >= 500:
            raise RemoteUnavailable(self._scrub(said))
        if code == 413:
            msg = f"{said}: the artifact is larger than the server accepts"
            raise RemoteProtocolError(self._scrub(msg))
        if code == 400 and not team_scope(self._settings):
            said += "; no team is set (CACHEHOOK_TEAM or CACHEHOOK_TEAMID), which servers may need"
        raise RemoteProtocolError(self._scrub(said))

    def _team_words(self) -> str:
        scope = team_scope(self._settings)
        return f"team {scope!r}" if scope else "no team (set CACHEHOOK_TEAM or CACHEHOOK_TEAMID)"

    def _int_header(self, response: httpx.Response, name: str) -> int | None:
        value = response.headers.get(name)
        if value is None:
            return None
        if not value.strip().isdigit():
            msg = f"{self._settings.api} sent a malformed {name} header: {value[:40]!r}"
            raise RemoteProtocolError(self._scrub(msg))
        return int(value)

    def _duration(self, response: httpx.Response) -> int:
        return self._int_header(response, "x-artifact-duration") or 0

    def _parse_query(
        self, response: httpx.Response, keys: Sequence[str]
    ) -> dict[str, ArtifactInfo | None]:
        data = _parse_json(response.content)
        if not isinstance(data, dict):
            msg = f"{self._settings.api} answered the artifact query with {response.content[:80]!r}"
            raise RemoteProtocolError(self._scrub(msg))
        found: dict[str, ArtifactInfo | None] = {}
        for key in keys:
            entry = data.get(key)
            if not isinstance(entry, dict) or "error" in entry:
                found[key] = None
                continue
            size, duration, tag = (
                entry.get("size"),
                entry.get("taskDurationMs", 0),
                entry.get("tag"),
            )
            if not isinstance(size, int) or not isinstance(duration, int) or duration < 0:
                msg = f"{self._settings.api} answered the artifact query for {key} with {entry!r}"
                raise RemoteProtocolError(self._scrub(msg[:300]))
            found[key] = ArtifactInfo(
                size=size, duration_ms=duration, tag=tag if isinstance(tag, str) else None
            )
        return found

    def _translate(self, exc: httpx.HTTPError) -> RemoteError:
        api = self._settings.api
        if isinstance(exc, httpx.TimeoutException):
            doing = {
                httpx.ConnectTimeout: "connecting",
                httpx.WriteTimeout: "sending",
                httpx.PoolTimeout: "waiting for a free connection",
            }.get(type(exc), "waiting for an answer")
            return RemoteUnavailable(self._scrub(f"{api} did not respond in time ({doing})"))
        if isinstance(exc, httpx.ConnectError):
            return RemoteUnavailable(self._scrub(f"cannot connect to {api}: {exc}"))
        if isinstance(exc, httpx.NetworkError):
            return RemoteUnavailable(self._scrub(f"the connection to {api} broke: {exc}"))
        if isinstance(exc, httpx.RemoteProtocolError):
            return RemoteProtocolError(self._scrub(f"{api} sent a malformed HTTP response: {exc}"))
        return RemoteProtocolError(
            self._scrub(f"talking to {api} failed: {type(exc).__name__}: {exc}")
        )

    def _scrub(self, text: str) -> str:
        # Every form the token may take in an error (a repr inside httpx's own message, say),
        # and only a token long enough that replacing it cannot mangle the words (issue 10).
        key = self._settings.signature_key
        secrets = (self._settings.token, key.decode("utf-8", "replace") if key else None)
        return scrub(text, secrets, placeholder="<token>")


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
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        modes: CacheModes,
        on_warning: Callable[[str], None],
        transport: httpx.BaseTransport | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._cache = RemoteCache(settings, transport=transport, progress=progress)
        self._modes = modes
        self._on_warning = on_warning
        self._lock = threading.Lock()
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
        return self._guard(lambda: self._cache.fetch(key, dest), None)

    def exists(self, key: str) -> bool | None:
        """Whether the remote has ``key`` (a HEAD); None when reading is off or it failed."""
        if not self._modes.remote_read or self._is_off:
            return None

        def head() -> bool | None:
            return self._cache.exists(key) is not None

        return self._guard(head, None)

    def store(self, key: str, src: Path, *, duration_ms: int) -> bool:
        """Upload ``src`` as ``key``; False when writing is off or the upload failed."""
        if not self._modes.remote_write or self._is_off:
            return False

        def upload() -> bool:
            self._cache.store(key, src, duration_ms=duration_ms)
            return True

        return self._guard(upload, False)

    def close(self) -> None:
        """Close the connections."""
        self._cache.close()

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
            self._on_warning(self._cache._scrub(f"remote cache not used for this task: {exc}"))
            return default
        except Exception as exc:  # a run never fails because of the remote
            logger.debug("remote cache: unexpected error", exc_info=True)
            self._count_failure(self._cache._scrub(f"unexpected {type(exc).__name__}: {exc}"))
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
            if self._failures >= FAILURE_LIMIT and not self._is_off:
                self._is_off = True
                logger.debug("remote cache off after %d failures in a row", self._failures)
            should_warn, self._has_warned_fault = not self._has_warned_fault, True
        if should_warn:
            self._on_warning(f"remote cache unavailable, continuing with the local cache: {reason}")
