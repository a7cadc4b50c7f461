"""The Vercel / Turborepo Remote Cache API (v8) over httpx.

Over 400 lines on purpose: it owns httpx, so every endpoint and every fault translation live
together. What does not need httpx lives apart, so that a remote hit never imports it (issue
11): the request's shape, the answers' meaning and the signatures in ``_remote_api``, a remote
hit's requests (the download, the usage events) over a socket of its own in ``_direct``, and
``RemoteSession`` (re-exported here) in ``_session``.

``RemoteCache`` mirrors the API, one method per endpoint, and raises ``RemoteError``
subclasses. ``RemoteSession`` is what a run uses: it never raises, warns once, and switches the
remote off for the rest of the run after repeated faults or refused credentials; its downloads
go through ``_direct`` unless httpx must make them (proxies, redirects: see there), as do the
events ``events`` sends.

This is the only module that imports httpx; it is itself imported only when a remote is
configured, and not by a remote hit.

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

import contextlib
import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from cachehook._remote_api import (
    ERROR_BODY_LIMIT,
    EVENTS_PATH,
    SIGNATURE_DOMAIN,
    ArtifactInfo,
    ArtifactSignatureError,
    Progress,
    RemoteCachingDisabledError,
    artifact_path,
    artifact_tag,
    broke,
    cannot_connect,
    check_answer,
    client_headers,
    events_body,
    has_proxy,
    int_header,
    malformed,
    missing_tag,
    parse_json,
    query_params,
    read_chunks,
    receive_artifact,
    request_headers,
    scrub_secrets,
    team_scope,
    timed_out,
)
from cachehook._session import FAILURE_LIMIT, RemoteSession
from cachehook.ci import is_interactive
from cachehook.errors import RemoteError, RemoteProtocolError

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
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path
    from types import TracebackType

    from cachehook._remote_api import UsageEvent
    from cachehook.config import RemoteSettings


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

_ACK_BYTES_PER_SECOND = 8 << 20
_T = TypeVar("_T")


def _limit(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def _error_body(response: httpx.Response) -> bytes:
    """At most ``ERROR_BODY_LIMIT`` bytes of an error response."""
    if response.is_stream_consumed:
        return response.content[:ERROR_BODY_LIMIT]
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    return body[:ERROR_BODY_LIMIT]


class _ByScheme(httpx.BaseTransport):
    """httpx's default transport, one per URL scheme, each made at its first request.

    ``httpx.HTTPTransport()`` builds its TLS context when it is made: certifi's bundle loaded
    into OpenSSL, ~25-50 ms, half of what an ``http://`` remote hit on loopback spends talking
    to the server. Here an ``https`` URL (the API's, or a redirect's) gets exactly httpx's
    default transport, verifying as before (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, certifi);
    a plain ``http`` one gets a transport whose TLS context is never used, as it opens no TLS
    connection, and would refuse every certificate if it were (it trusts no authority).
    With a proxy in the environment it is not used: httpx mounts the environment's proxies
    only on a client made without a transport, so that client gets httpx's defaults.
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
        self._params = query_params(settings)
        self._client_headers = client_headers(os.environ, is_interactive=is_interactive())

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
                raise missing_tag(self._settings, key)
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
                content=read_chunks(file, size, self._progress),
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

    def record_events(self, events: Sequence[UsageEvent]) -> None:
        """``POST /v8/artifacts/events`` with ``events`` as one JSON array.

        Its answer is asked for plain (``Accept-Encoding: identity``), as ``_direct`` asks it:
        only an error's body is read, for its message.

        Raises:
            ValueError: an event is invalid (nothing is sent).
        """
        if not events:
            return
        body = events_body(events)
        headers = {
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
            **self._client_headers,
        }
        with self._exchange("POST", EVENTS_PATH, headers=headers, content=body) as response:
            self._read(response)
            self._check(response, what=f"recording {len(events)} events")

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
                headers = request_headers(self._settings)
                transport = self._transport
                if transport is None and not has_proxy(os.environ):
                    transport = _ByScheme()  # else httpx's own, with the proxies' mounts
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
        return artifact_path(key)

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
        return receive_artifact(
            self._settings,
            self._chunks(response),
            dest,
            key=key,
            expected=expected,
            tag=tag,
            progress=self._progress,
        )

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise self._translate(exc) from exc

    # -- responses -------------------------------------------------------------------------

    def _check(self, response: httpx.Response, *, what: str) -> None:
        if not 200 <= response.status_code < 300:
            body = _error_body(response)
            check_answer(
                self._settings, response.status_code, response.reason_phrase, body, what=what
            )

    def _int_header(self, response: httpx.Response, name: str) -> int | None:
        return int_header(self._settings, name, response.headers.get(name))

    def _duration(self, response: httpx.Response) -> int:
        return self._int_header(response, "x-artifact-duration") or 0

    def _parse_query(
        self, response: httpx.Response, keys: Sequence[str]
    ) -> dict[str, ArtifactInfo | None]:
        data = parse_json(response.content)
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
            return timed_out(self._settings, doing)
        if isinstance(exc, httpx.ConnectError):
            return cannot_connect(self._settings, exc)
        if isinstance(exc, httpx.NetworkError):
            return broke(self._settings, exc)
        if isinstance(exc, httpx.RemoteProtocolError):
            return malformed(self._settings, exc)
        return RemoteProtocolError(
            self._scrub(f"talking to {api} failed: {type(exc).__name__}: {exc}")
        )

    def _scrub(self, text: str) -> str:
        return scrub_secrets(self._settings, text)
