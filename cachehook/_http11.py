"""An HTTP/1.1 exchange over one socket: write a request, read a response head and body, with
http.client's limits (issue 11).

``http.client`` costs a hit ~15 ms to import: it loads the ``email`` package to parse a head,
and ``ssl`` even for an ``http://`` URL. A hit makes two kinds of request (``_direct``), so this
module reads what they need and refuses the rest, for a broken or hostile server:

- the status line ``HTTP/1.x NNN reason``; interim 1xx answers (at most ``_MAX_INTERIM``) are
  skipped;
- header lines ending in CRLF or LF, at most ``MAX_LINE`` bytes each and ``MAX_HEADERS`` of them
  with the empty one (http.client's ``_MAXLINE`` and ``_MAXHEADERS``, counted as it counts);
  a line without ``:``, a name that is not a token and an obsolete line folding are refused
  (RFC 9112 5.2 lets a client refuse them); a value loses its surrounding spaces and tabs
  (RFC 9110 5.5, as h11 strips them; http.client keeps the trailing ones);
- the body framed by ``Transfer-Encoding: chunked`` (size in hex, extensions and trailers
  skipped, trailers with the same limits), else by ``Content-Length`` (digits only; differing
  values refused), else read until the server closes. A message with both Transfer-Encoding and
  Content-Length is refused (RFC 9112 6.3 says such a message "ought to be handled as an
  error"), as is any Transfer-Encoding other than ``chunked``. 1xx, 204, 304 and an answer to
  HEAD have no body.

A connection serves again only once its answer was read to its end, framed, with nothing sent
after it, and neither side said ``close`` (HTTP/1.0 without ``keep-alive`` is ``close``). The
host goes to ``getaddrinfo`` as bytes (a ``str`` host loads the ``idna`` codec), and ``ssl`` is
imported only by whoever passes a TLS context. Every fault of the bytes raises
``ResponseError``; ``OSError`` (a timeout, a reset) passes through.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

__all__ = [
    "INCOMPLETE",
    "MAX_HEADERS",
    "MAX_LINE",
    "Connection",
    "DisconnectedError",
    "Response",
    "ResponseError",
    "connect",
]

MAX_LINE = 65536  # http.client's _MAXLINE
MAX_HEADERS = 100  # http.client's _MAXHEADERS
INCOMPLETE = "peer closed connection without sending complete message body"
_MAX_INTERIM = 100
_RECV = 65536
_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?:[ \t]+(.*))?")
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,18}")
_LINE_ENDS = (b"\r\n", b"\n")


class ResponseError(Exception):
    """The server's bytes are not an HTTP/1.1 answer this module reads."""


class DisconnectedError(ResponseError):
    """The server closed the connection before sending any answer."""


def connect(
    host: str, port: int, *, timeout: float | None, tls: ssl.SSLContext | None = None
) -> Connection:
    """A connection to ``host:port`` (with TLS when ``tls``); ``OSError`` when none is made."""
    address = (host.encode("ascii"), port)  # bytes: no idna codec (getaddrinfo takes them)
    sock = socket.create_connection(address, timeout)  # type: ignore[arg-type]
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client sets it
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
    return Connection(sock)


class Connection:
    """One socket, its requests and their answers, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self._pending = bytearray()  # received, not yet read

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> None:
        """Send ``method target`` with ``headers`` (Host first, as http.client sends it)."""
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._socket().sendall(head + body if body is not None else head)

    def response(self, method: str) -> Response:
        """Read the answer's head (after any interim 1xx answers)."""
        for _ in range(_MAX_INTERIM):
            response = self._head(method)
            if not 100 <= response.status < 200:
                return response
        msg = f"more than {_MAX_INTERIM} interim (1xx) answers"
        raise ResponseError(msg)

    def is_quiet(self) -> bool:
        """Whether nothing arrived that was not asked for (bytes kept from the last read)."""
        return self.sock is not None and not self._pending

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    # -- reading -----------------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        if self.sock is None:
            msg = "the connection is closed"
            raise OSError(msg)
        return self.sock

    def readline(self, what: str) -> bytes:
        """One line with its end, b"" at the end of the stream, at most ``MAX_LINE`` bytes."""
        searched = 0
        while True:
            end = self._pending.find(b"\n", searched)
            if 0 <= end < MAX_LINE:
                line = bytes(self._pending[: end + 1])
                del self._pending[: end + 1]
                return line
            if end >= MAX_LINE or len(self._pending) >= MAX_LINE:
                msg = f"got more than {MAX_LINE} bytes when reading {what}"
                raise ResponseError(msg)
            searched = len(self._pending)
            chunk = self._socket().recv(_RECV)
            if not chunk:
                line = bytes(self._pending)
                self._pending.clear()
                return line
            self._pending += chunk

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` bytes into ``view``; 0 at the end of the stream."""
        if self._pending:
            count = min(len(view), len(self._pending))
            view[:count] = self._pending[:count]
            del self._pending[:count]
            return count
        return self._socket().recv_into(view)

    def _head(self, method: str) -> Response:
        line = self.readline("status line")
        if not line:
            msg = "Server disconnected without sending a response."
            raise DisconnectedError(msg)
        found = _STATUS.fullmatch(line.rstrip(b"\r\n"))
        if found is None or not line.endswith(b"\n"):
            msg = f"illegal status line: {str(line, 'iso-8859-1')!r}"
            raise ResponseError(msg)
        minor, status, reason = found.groups()
        headers = self.read_headers("header line", cut="the connection closed within the head")
        return Response(
            self,
            method=method,
            status=int(status),
            reason=(reason or b"").strip().decode("iso-8859-1"),
            is_http10=minor == b"0",
            headers=headers,
        )

    def read_headers(self, what: str, *, cut: str) -> list[tuple[str, str]]:
        """Header (or trailer) lines up to the empty line; ``cut`` says what an early end is."""
        headers: list[tuple[str, str]] = []
        while True:
            line = self.readline(what)
            if line in _LINE_ENDS:
                return headers
            if not line.endswith(b"\n"):
                msg = f"{INCOMPLETE} ({cut})"
                raise ResponseError(msg)
            if len(headers) >= MAX_HEADERS - 1:  # as http.client counts: the empty line too
                msg = f"got more than {MAX_HEADERS} headers"
                raise ResponseError(msg)
            if line[:1] in (b" ", b"\t"):
                msg = f"obsolete line folding in {what}: {line!r}"
                raise ResponseError(msg)
            name, colon, value = line.partition(b":")
            if not colon or not _NAME.fullmatch(name):
                msg = f"illegal {what}: {line!r}"
                raise ResponseError(msg)
            headers.append(
                (name.decode("ascii").lower(), value.strip(b" \t\r\n").decode("latin-1"))
            )


class Response:
    """An answer's status, head and body; read the body with ``readinto`` until it gives 0."""

    def __init__(
        self,
        connection: Connection,
        *,
        method: str,
        status: int,
        reason: str,
        is_http10: bool,
        headers: list[tuple[str, str]],
    ) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self._connection = connection
        self._received = 0
        self._chunk_left = 0  # chunked: the rest of the current chunk
        self.is_complete = False
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        self.will_close = "close" in tokens or (is_http10 and "keep-alive" not in tokens)
        self._length, self._is_chunked = self._framing(method)
        if self._length == 0:
            self.is_complete = True

    def header(self, name: str) -> str | None:
        """The header's value (several joined with ", ", as http.client joins them), or None."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    @property
    def is_reusable(self) -> bool:
        """Whether the connection may serve the next request."""
        return self.is_complete and not self.will_close and self._connection.is_quiet()

    def readinto(self, view: memoryview) -> int:
        """Body bytes into ``view``; 0 once the body has all arrived.

        Raises:
            ResponseError: the body is malformed or the server closed before its end.
        """
        if self.is_complete or not view:
            return 0
        if self._is_chunked:
            return self._read_chunked(view)
        if self._length is not None:
            view = view[: self._length - self._received]
        count = self._connection.readinto(view)
        if not count:
            if self._length is not None:
                msg = f"{INCOMPLETE} (received {self._received} bytes, expected {self._length})"
                raise ResponseError(msg)
            self.is_complete = True  # read until closed: never kept
            self.will_close = True
        self._received += count
        if self._received == self._length:
            self.is_complete = True
        return count

    def _framing(self, method: str) -> tuple[int | None, bool]:
        """(Content-Length or None, whether chunked)."""
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            return 0, False
        coding = self.header("transfer-encoding")
        lengths = self.header("content-length")
        if coding is not None:
            if lengths is not None:
                msg = "both Transfer-Encoding and Content-Length in one answer"
                raise ResponseError(msg)
            if coding.strip().lower() != "chunked":
                msg = f"unsupported Transfer-Encoding: {coding!r}"
                raise ResponseError(msg)
            return None, True
        if lengths is None:
            self.will_close = True  # the body ends when the connection does
            return None, False
        values = {value.strip() for value in lengths.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            msg = f"illegal Content-Length: {lengths!r}"
            raise ResponseError(msg)
        return int(values.pop()), False

    def _read_chunked(self, view: memoryview) -> int:
        if not self._chunk_left:
            self._chunk_left = self._chunk_size()
            if not self._chunk_left:
                self._connection.read_headers("trailer line", cut="incomplete chunked read")
                self.is_complete = True
                return 0
        count = self._connection.readinto(view[: self._chunk_left])
        if not count:
            msg = f"{INCOMPLETE} (incomplete chunked read)"
            raise ResponseError(msg)
        self._chunk_left -= count
        if not self._chunk_left and self._connection.readline("chunk end") not in _LINE_ENDS:
            msg = "chunk data not followed by CRLF"
            raise ResponseError(msg)
        return count

    def _chunk_size(self) -> int:
        line = self._connection.readline("chunk size")
        if not line.endswith(b"\n"):
            msg = f"{INCOMPLETE} (incomplete chunked read)"
            raise ResponseError(msg)
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not size or not _HEX.fullmatch(size.lstrip(b"0") or b"0"):
            msg = f"illegal chunk size: {line[:80]!r}"
            raise ResponseError(msg)
        return int(size, 16)
