"""Connection limits of ``cachehook serve``: no client can hold the server with idle sockets.

uvicorn's HTTP protocol (httptools) closes idle keep-alive connections, but it waits forever for
the rest of a half-sent request head or a stalled body, takes a request head of any size, and
accepts connections until the process runs out of file descriptors, after which every client is
refused (issue 12). ``GuardedHttpProtocol`` is that protocol with these limits added (each
worker process counts its own connections):

- ``header_timeout``: a request head (request line and headers) must arrive in full within this
  many seconds of its first byte, and a new connection must send one within this time; else
  ``408`` and the connection is closed. A trickle of bytes does not extend the deadline.
- ``body_timeout``: a request body that stops arriving for this long is dropped (the app sees a
  disconnect and discards the upload). Time the server itself spends behind does not count.
- ``max_header_bytes``: a request head above this is answered ``431`` and closed.
- ``max_connections`` / ``max_per_client``: open connections in total and per client address.
  A connection past either cap is answered ``503`` with ``Retry-After`` at once and closed, so
  the refusal costs no file descriptor for long.

uvicorn is told to use it with ``http=PROTOCOL``; the limits reach each worker through the
``CACHEHOOK_SERVE_LIMITS`` environment variable (JSON), set by ``cachehook serve``.
"""

from __future__ import annotations

import json
import os
import resource
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["LIMITS_ENV", "PROTOCOL", "ConnectionLimits", "GuardedHttpProtocol", "raise_fd_limit"]

LIMITS_ENV = "CACHEHOOK_SERVE_LIMITS"
PROTOCOL = "cachehook.server.guard:GuardedHttpProtocol"
_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_FD_RESERVE = 64  # descriptors kept for the storage, the event log and the listening socket


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how much one connection may take (see the module docstring)."""

    header_timeout: float = 5.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 << 10
    max_connections: int = 1000
    max_per_client: int = 200

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ConnectionLimits:
        return cls(**json.loads(text))

    @classmethod
    def from_environment(cls) -> ConnectionLimits:
        text = os.environ.get(LIMITS_ENV)
        return cls() if not text else cls.from_json(text)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit towards ``wanted`` (never past the hard one).

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


@dataclass
class _Tally:
    """The open connections of one uvicorn server (one worker process)."""

    limits: ConnectionLimits
    max_connections: int
    total: int = 0
    per_client: dict[str, int] = field(default_factory=dict)

    def admits(self, address: str) -> bool:
        return (
            self.total < self.max_connections
            and self.per_client.get(address, 0) < self.limits.max_per_client
        )

    def add(self, address: str) -> None:
        self.total += 1
        self.per_client[address] = self.per_client.get(address, 0) + 1

    def remove(self, address: str) -> None:
        self.total -= 1
        left = self.per_client.get(address, 1) - 1
        if left:
            self.per_client[address] = left
        else:
            self.per_client.pop(address, None)


def _tally_of(server_state: ServerState) -> _Tally:
    tally: _Tally | None = getattr(server_state, "cachehook_tally", None)
    if tally is None:
        limits = ConnectionLimits.from_environment()
        # The cap must stay below the descriptor limit, or accept() fails and nobody gets in.
        available = raise_fd_limit(limits.max_connections + _FD_RESERVE) - _FD_RESERVE
        tally = _Tally(limits, max_connections=max(1, min(limits.max_connections, available)))
        server_state.cachehook_tally = tally  # type: ignore[attr-defined]
    return tally


class _RefusalError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts, size and connection caps."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._tally = _tally_of(server_state)
        self._limits = self._tally.limits
        self._address: str | None = None  # set once counted in the tally
        self._is_refused = False
        self._awaiting_head = True
        self._head_received = 0  # bytes since the current head began (approximate, bounded)
        self._head_size = 0  # bytes of request line and headers, as parsed (exact)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0

    # -- the connection ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else "unknown"
        if not self._tally.admits(address):
            self.logger.warning("refusing a connection from %s: too many open", address)
            self._refuse(503, "too many open connections; retry shortly")
            return
        self._tally.add(address)
        self._address = address
        self._arm_head_timer()  # a silent new connection is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            self._tally.remove(self._address)
            self._address = None
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._is_refused:
            return
        self._last_data = self.loop.time()
        if self._awaiting_head:
            self._head_received += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _RefusalError):
                self._refuse(exc.__context__.status, exc.__context__.message)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # the server speaks no WebSocket
            return
        if self._awaiting_head and self._head_received > self._limits.max_header_bytes:
            self._refuse(431, f"the request head is over {self._limits.max_header_bytes} bytes")

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_head = True
        self._head_size = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self._limits.max_header_bytes:
            msg = f"the request head is over {self._limits.max_header_bytes} bytes"
            raise _RefusalError(431, msg)
        self._awaiting_head = False
        self._head_received = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        self._body_timer = self.loop.call_later(self._limits.body_timeout, self._check_body)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        self._awaiting_head = True
        self._head_received = 0
        super().on_message_complete()

    # -- timers and refusals -----------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self._refuse(408, f"the request head took over {self._limits.header_timeout:g} s")

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._awaiting_head:
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app is behind, not the client
            self._last_data = now
        idle = now - self._last_data
        if idle >= self._limits.body_timeout:
            self.logger.warning("closing a connection from %s: its body stalled", self._address)
            self.transport.close()  # the app sees a disconnect and discards the upload
            return
        self._body_timer = self.loop.call_later(self._limits.body_timeout - idle, self._check_body)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with the API's error shape and close the connection."""
        self._is_refused = True
        self._cancel_timers()
        body = json.dumps(
            {"error": {"code": _REASONS[status].lower().replace(" ", "_"), "message": message}}
        ).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS[status]}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        if status == 503:
            head.append("retry-after: 1")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)
        self.transport.close()
