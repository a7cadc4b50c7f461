"""The requests of a hit over ``_http11``, so that a hit never imports httpx (issue 11).

``DirectClient`` makes what ``RemoteCache`` (httpx) would, over a socket of its own
(``_http11``): httpx and httpcore cost ~50-70 ms to import and set up, more than the rest of a
hit, and ``http.client`` ~15 ms more (``email``, and ``ssl`` even for ``http``). Its two
requests are the two a hit makes: ``fetch``, a remote hit's download (``GET
/v8/artifacts/{key}``, as ``RemoteCache.fetch``), and ``record_events``, the usage events a run
in CI sends itself (``POST /v8/artifacts/events``, as ``RemoteCache.record_events``). Each sends
the request ``RemoteCache`` sends and reads the answer with the same rules and messages
(``_remote_api``); both share the connections. What it does not do, httpx does (the callers,
``RemoteSession`` and ``events``, ask through httpx instead):

- proxies: with any of ``http_proxy``, ``https_proxy``, ``all_proxy`` set (in any case; on
  macOS, also the system's proxy settings), ``direct_target`` is None, as it is for an API URL
  outside the plain shape ``http(s)://lower-case-host[:port][/plain/path]``, a token that is not
  printable ASCII, and a platform that is not POSIX;
- a download's redirects (301, 302, 303, 307, 308 with a ``Location``) and a body with a
  ``Content-Encoding`` other than ``identity`` (a download's, or an error answer's to the
  events): ``NeedsHttpxError`` is raised before anything is written, and the whole request is
  made again through httpx (which follows the redirect, dropping ``Authorization`` for another
  origin, or decodes the body). The events' POST follows no redirect, as ``RemoteCache``'s does
  not: a 3xx is refused with its message. No other fault is asked again: an unreachable server
  costs one wait, not two, and a batch of events the server may have counted is not sent twice.

TLS (``https``) is verified as httpx's default transport does: ``SSL_CERT_FILE``, else
``SSL_CERT_DIR``, else certifi's bundle, with ALPN ``http/1.1``; a plain ``http`` API gets no TLS
context at all. Given a ``trust_dir``, a connection first trusts only the root that verified its
host last time, if the bundle still holds it, and does the handshake again with the whole bundle
when that root does not verify it (``_tlstrust``: loading a bundle costs ~50 ms).

Timeouts as ``remote``'s docstring says: ``timeout`` bounds connecting (with the TLS
handshake), sending the request and each wait for the answer's head (and each read of the
events' answer); once a download's head is in, each read of its body may stall
``upload_timeout`` (0: no limit). Connections are kept for the next request for 5 s, at most 20,
as httpx keeps them; one found closed by the server when reused is replaced once for a
download, not for the events (which the server may have counted; the sender spools them).
"""

from __future__ import annotations

import _thread
import os
import re
import select
import time
import urllib.parse
from typing import TYPE_CHECKING, NamedTuple

from cachehook._http11 import Connection, DisconnectedError, Response, ResponseError, connect
from cachehook._remote_api import (
    ERROR_BODY_LIMIT,
    EVENTS_PATH,
    ArtifactInfo,
    Progress,
    artifact_path,
    broke,
    cannot_connect,
    check_answer,
    client_headers,
    events_body,
    has_proxy,
    int_header,
    malformed,
    missing_tag,
    query_params,
    receive_artifact,
    request_headers,
    timed_out,
)
from cachehook.ci import is_interactive
from cachehook.errors import RemoteError

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

    from cachehook._remote_api import UsageEvent
    from cachehook._tlstrust import RootMemory
    from cachehook.config import RemoteSettings

__all__ = [
    "DirectClient",
    "NeedsHttpxError",
    "Target",
    "direct_target",
    "tls_context",
]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_KEEP_IDLE_SECONDS = 5.0  # httpx's keepalive_expiry
_MAX_IDLE = 20  # httpx's max_keepalive_connections
_CHUNK = 1 << 20
_HOST = re.compile(r"(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_PATH = re.compile(r"[A-Za-z0-9._~/-]*")
_TOKEN = re.compile(r"[\x21-\x7e]*")
# A connection the server closed while it was idle fails its next request with one of these.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, DisconnectedError)


class NeedsHttpxError(Exception):
    """The answer is httpx's to read (a redirect, an encoded body): ask again through httpx."""


class Target(NamedTuple):
    """Where the API's artifacts are, split for ``_http11``."""

    scheme: str
    host: str
    port: int | None
    base: str  # the API's path, ending in "/"
    query: str  # "?slug=..." or ""


def direct_target(settings: RemoteSettings) -> Target | None:
    """Where ``DirectClient`` sends ``settings``'s requests, or None when httpx must make them
    (see the module docstring)."""
    api, token = settings.api, settings.token or ""
    if os.name != "posix" or not api.isascii() or not _TOKEN.fullmatch(token):
        return None
    if has_proxy(os.environ):
        return None
    parts = urllib.parse.urlsplit(api)
    if parts.scheme not in ("http", "https") or "?" in api or "#" in api:
        return None
    if parts.hostname is None or not _HOST.fullmatch(parts.netloc):
        return None
    if not _PATH.fullmatch(parts.path):
        return None
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return None  # httpx would remove them
    try:
        port = parts.port
    except ValueError:
        return None
    base = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    params = query_params(settings)
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return Target(parts.scheme, parts.hostname, port, base, query)


class DirectClient:
    """A hit's requests to one remote over ``_http11`` (see the module docstring).

    Args:
        settings: the remote and its credentials.
        target: where it is (``direct_target(settings)``).
        progress: told ``("download", done, total)`` as a body arrives.
        trust_dir: where the root that verified an https host is remembered (``_tlstrust``);
            None: every https connection loads the whole bundle.

    ``fetch`` and ``record_events`` raise what ``RemoteCache``'s raise, with the same messages,
    or ``NeedsHttpxError``. No message contains the token.
    """

    def __init__(
        self,
        settings: RemoteSettings,
        target: Target,
        *,
        progress: Progress | None = None,
        trust_dir: Path | None = None,
    ) -> None:
        self._settings = settings
        self._target = target
        self._progress = progress
        self._headers = {
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "Connection": "keep-alive",
            **request_headers(settings),
        }
        self._post_headers = {
            **self._headers,
            "Content-Type": "application/json",
            **client_headers(os.environ, is_interactive=is_interactive()),
        }
        self._idle: list[tuple[float, Connection]] = []
        self._lock = _thread.allocate_lock()
        self._tls: ssl.SSLContext | None = None
        self._trust_dir = trust_dir
        self._memory: RootMemory | None = None
        self._hint: ssl.SSLContext | None = None  # the remembered root's context
        self._has_looked = False  # for the remembered root
        self._host = _host_header(target)

    def fetch(self, key: str, dest: Path) -> ArtifactInfo | None:
        """``GET /v8/artifacts/{key}``, streamed to ``dest``; None on a miss (404).

        ``dest`` is written only once the whole body has arrived, matched ``Content-Length``
        and, with a signature key, verified; on any error it is left untouched.

        Raises:
            NeedsHttpxError: a redirect or an encoded body; nothing was written.
        """
        url = self._url(artifact_path(key))
        connection, sock, response = self._open("GET", url, self._headers)
        try:
            info = self._read(sock, response, dest, key=key)
        except BaseException:
            connection.close()
            raise
        self._finish(connection, response)
        return info

    def record_events(self, events: Sequence[UsageEvent]) -> None:
        """``POST /v8/artifacts/events`` with ``events`` as one JSON array.

        Raises:
            ValueError: an event is invalid (nothing is sent).
            NeedsHttpxError: an error answer with an encoded body (the server refused the
                events: asking again through httpx cannot count them twice).
        """
        if not events:
            return
        body = events_body(events)
        url = self._url(EVENTS_PATH)
        connection, _, response = self._open("POST", url, self._post_headers, body)
        try:
            # As httpx's ``read``: the whole answer, whose faults are the request's.
            answer = b"".join([bytes(chunk) for chunk in self._body(response)])
            code = response.status
            if not 200 <= code < 300:
                if _encoding(response) != "identity":
                    msg = f"{self._settings.api} sent its answer to the events encoded"
                    raise NeedsHttpxError(msg)
                what = f"recording {len(events)} events"
                check_answer(
                    self._settings, code, _reason(response), answer[:ERROR_BODY_LIMIT], what=what
                )
        except BaseException:
            connection.close()
            raise
        self._finish(connection, response)

    def close(self) -> None:
        """Close the connections kept for later requests."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    # -- the exchange ----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._target.base + path.removeprefix("/") + self._target.query

    def _open(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[Connection, socket.socket, Response]:
        request = (method, url, headers, body)
        connection = self._idle_connection()
        if connection is not None:
            try:
                return connection, *self._exchange(connection, *request)
            except RemoteError as exc:
                connection.close()
                # Only a GET is asked again: events the server may have counted are not sent
                # twice (the sender keeps them in the spool, as it does when httpx fails).
                if method != "GET" or not isinstance(exc.__cause__, _STALE):
                    raise
        connection = self._connect()
        try:
            return connection, *self._exchange(connection, *request)
        except BaseException:
            connection.close()
            raise

    def _finish(self, connection: Connection, response: Response) -> None:
        """After an answer read to its end: keep its connection, unless it is to close."""
        if response.is_reusable:
            self._keep(connection)
        else:
            connection.close()

    def _connect(self) -> Connection:
        target, wait = self._target, _limit(self._settings.timeout)
        is_tls = target.scheme == "https"
        port = target.port or (443 if is_tls else 80)
        try:
            if is_tls:
                return self._connect_tls(port, wait)
            return connect(target.host, port, timeout=wait)
        except TimeoutError as exc:
            raise timed_out(self._settings, "connecting") from exc
        except OSError as exc:
            raise cannot_connect(self._settings, exc) from exc

    def _exchange(
        self,
        connection: Connection,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> tuple[socket.socket, Response]:
        sock = connection.sock
        assert sock is not None
        try:
            connection.request(method, url, {"Host": self._host, **headers}, body)
        except TimeoutError as exc:
            raise timed_out(self._settings, "sending") from exc
        except OSError as exc:
            raise broke(self._settings, exc) from exc
        try:
            return sock, connection.response(method)
        except (OSError, ResponseError) as exc:
            raise self._translate(exc) from exc

    def _read(
        self,
        sock: socket.socket,
        response: Response,
        dest: Path,
        *,
        key: str,
    ) -> ArtifactInfo | None:
        code, settings = response.status, self._settings
        if code in _REDIRECTS and response.header("location") is not None:
            msg = f"{settings.api} redirected the download of {key} ({code})"
            raise NeedsHttpxError(msg)
        if code == 404:
            self._error_body(response)  # drained, the connection can serve the next request
            return None
        if not 200 <= code < 300:
            body = self._error_body(response)
            check_answer(settings, code, _reason(response), body, what=f"download of {key}")
        duration = int_header(
            settings, "x-artifact-duration", response.header("x-artifact-duration")
        )
        tag = response.header("x-artifact-tag")
        if settings.signature_key and not tag:
            raise missing_tag(settings, key)
        if _encoding(response) != "identity":
            msg = f"{settings.api} sent the download of {key} encoded"
            raise NeedsHttpxError(msg)
        expected = int_header(settings, "content-length", response.header("content-length"))
        # The server has started sending: from now on only a stall of upload_timeout cuts it.
        sock.settimeout(_limit(settings.upload_timeout))
        chunks = self._body(response)
        size = receive_artifact(
            settings, chunks, dest, key=key, expected=expected, tag=tag, progress=self._progress
        )
        return ArtifactInfo(size=size, duration_ms=duration or 0, tag=tag)

    def _body(self, response: Response) -> Iterator[memoryview]:
        # A body cut short of its Content-Length is refused by ``_http11`` as it reads.
        view = memoryview(bytearray(_CHUNK))
        while count := self._fill(response, view):
            yield view[:count]

    def _fill(self, response: Response, view: memoryview) -> int:
        """``view`` filled from the body, one socket read at a time (a 1 MiB write each, as
        http.client's buffered reads wrote); less only at the body's end."""
        filled = 0
        try:
            while filled < len(view) and (count := response.readinto(view[filled:])):
                filled += count
        except (OSError, ResponseError) as exc:
            raise self._translate(exc) from exc
        return filled

    def _error_body(self, response: Response) -> bytes:
        """At most ``ERROR_BODY_LIMIT`` bytes of an error's body: what arrived, if it broke."""
        body = bytearray(ERROR_BODY_LIMIT)
        view, received = memoryview(body), 0
        try:
            while received < ERROR_BODY_LIMIT:
                count = response.readinto(view[received:])
                if not count:
                    break
                received += count
        except ResponseError:
            pass
        except OSError:
            return b""
        return bytes(body[:received])

    def _translate(self, exc: OSError | ResponseError) -> RemoteError:
        """A fault while waiting for or reading the answer, worded as httpx's are."""
        if isinstance(exc, TimeoutError):
            return timed_out(self._settings, "waiting for an answer")
        if isinstance(exc, ResponseError):
            return malformed(self._settings, exc)
        return broke(self._settings, exc)

    # -- connections -----------------------------------------------------------------------

    def _idle_connection(self) -> Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                since, connection = self._idle.pop()
            if now - since < _KEEP_IDLE_SECONDS and _is_quiet(connection):
                return connection
            connection.close()

    def _keep(self, connection: Connection) -> None:
        if connection.sock is None:
            return
        connection.sock.settimeout(_limit(self._settings.timeout))
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append((time.monotonic(), connection))
                return
        connection.close()

    def _connect_tls(self, port: int, wait: float | None) -> Connection:
        """With the remembered root alone if there is one; with the whole bundle if there is
        none or it does not verify the host (whose refusal is then today's)."""
        import ssl

        host = self._target.host
        hint, memory = self._remembered(port)
        if hint is not None:
            try:
                return connect(host, port, timeout=wait, tls=hint)
            except ssl.SSLCertVerificationError:
                with self._lock:
                    self._hint = None  # the host changed its root, or its name
        connection = connect(host, port, timeout=wait, tls=self._tls_context())
        if memory is not None and isinstance(connection.sock, ssl.SSLSocket):
            with self._lock:
                self._memory = None  # once per client
            memory.remember(connection.sock, host, port)
        return connection

    def _remembered(self, port: int) -> tuple[ssl.SSLContext | None, RootMemory | None]:
        with self._lock:
            if not self._has_looked and self._trust_dir is not None:
                from cachehook._tlstrust import RootMemory, bundle_path

                self._has_looked = True
                bundle = bundle_path(os.environ)
                if bundle is not None:
                    self._memory = RootMemory(self._trust_dir, bundle)
                    self._hint = self._memory.hinted_context(self._target.host, port)
            return self._hint, self._memory

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = tls_context(os.environ)
            return self._tls


def tls_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The TLS context httpx's default transport verifies with (``create_ssl_context``)."""
    from cachehook._tlstrust import bundle_path, verifying_context

    bundle = bundle_path(environ)
    if bundle is None:
        return verifying_context(capath=environ["SSL_CERT_DIR"])
    return verifying_context(cafile=bundle)


def _reason(response: Response) -> str:
    """The reason phrase as httpx reads it: the bytes sent, non-ASCII ones dropped."""
    return response.reason.encode("latin-1", "replace").decode("ascii", "ignore")


def _encoding(response: Response) -> str:
    coding = response.header("content-encoding")
    return "identity" if coding is None else coding


def _is_quiet(connection: Connection) -> bool:
    """Whether a kept connection is still open with nothing to read (the server did not close
    it, nor send anything unasked)."""
    sock = connection.sock
    if sock is None or not connection.is_quiet():
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _host_header(target: Target) -> str:
    """``Host`` as httpx and http.client send it: no port when it is the scheme's."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port in (None, default) else f"{host}:{target.port}"


def _limit(seconds: float) -> float | None:
    return seconds if seconds > 0 else None
