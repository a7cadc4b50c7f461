"""``_http11``: a broken or hostile server's bytes, from a real socket on 127.0.0.1 (issue 11).

Each answer below is sent as raw bytes by ``Canned``. What the reader refuses must raise
``ResponseError`` naming the problem (and ``DirectClient`` a ``RemoteProtocolError`` with the
same words, writing nothing); what it accepts and http.client also accepts must read as
http.client reads it: the same status, reason, headers and body.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from cachehook._direct import DirectClient, direct_target
from cachehook._http11 import (
    MAX_HEADERS,
    MAX_LINE,
    Connection,
    DisconnectedError,
    Response,
    ResponseError,
    connect,
)
from cachehook.config import RemoteSettings
from cachehook.errors import RemoteProtocolError
from tests.servers import _read_request
from tests.waiting import GENEROUS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

Read = tuple[int, str, list[tuple[str, str]], bytes]


class Canned:
    """A listener on 127.0.0.1: on each connection, reads a request and sends the next of
    ``answers`` (raw bytes), then closes the connection once all are sent."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = answers
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            for answer in self.answers:
                _read_request(sock, with_body=True)
                sock.sendall(answer)


@pytest.fixture
def canned() -> Iterator[type[Canned]]:
    started: list[Canned] = []

    class Started(Canned):
        def __init__(self, *answers: bytes) -> None:
            super().__init__(*answers)
            started.append(self)

    yield Started
    for server in started:
        server.close()


def _open(server: Canned) -> Connection:
    return connect("127.0.0.1", server.port, timeout=GENEROUS)


def _read(connection: Connection, method: str = "GET", *, size: int = 1 << 16) -> Read:
    connection.request(method, "/x", {"Host": "127.0.0.1"})
    response = connection.response(method)
    return (response.status, response.reason, response.headers, _body(response, size))


def _body(response: Response, size: int) -> bytes:
    view, body = memoryview(bytearray(size)), bytearray()
    while count := response.readinto(view):
        body += view[:count]
    return bytes(body)


def ours(server: Canned, method: str = "GET", *, size: int = 1 << 16) -> Read:
    connection = _open(server)
    try:
        return _read(connection, method, size=size)
    finally:
        connection.close()


def theirs(server: Canned, method: str = "GET") -> Read:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=GENEROUS)
    try:
        connection.request(method, "/x")
        response = connection.getresponse()
        headers = [(name.lower(), value) for name, value in response.getheaders()]
        return (response.status, response.reason, headers, response.read())
    finally:
        connection.close()


def _chunked(*parts: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(parts)


HEAD = b"HTTP/1.1 200 OK\r\n"
LONG = b"X-Long: " + b"a" * (MAX_LINE - 10) + b"\r\n"  # MAX_LINE bytes with its CRLF
# With Content-Length and the empty line: MAX_HEADERS lines, the most http.client reads.
HEADERS = b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADERS - 2))

# Answers both read, and must read the same.
ACCEPTED = {
    "content-length": HEAD + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    "lf-only": b"HTTP/1.1 200 OK\nContent-Length: 5\nX-A:  spaced\n\nhello",
    "no-reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "chunked": _chunked(b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"),
    "chunked-upper-hex": _chunked(b"a\r\n0123456789\r\n00\r\n\r\n"),
    "line-at-limit": HEAD + LONG + b"Content-Length: 1\r\n\r\nx",
    "100-lines": HEAD + HEADERS + b"Content-Length: 1\r\n\r\nx",
    "204": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    "http10-to-close": b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nread until the server closes",
    "http11-to-close": HEAD + b"Connection: close\r\n\r\nthe rest",
    "100-continue": b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"Content-Length: 2\r\n\r\nok",
    "repeated": HEAD + b"Set-Cookie: a\r\nSet-Cookie: b\r\nContent-Length: 0\r\n\r\n",
    "latin-1": b"HTTP/1.1 404 Nicht gefunden \xe9\r\nX-A: \xe9\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_what_http_client_reads_reads_the_same(name: str, canned: type[Canned]) -> None:
    server = canned(ACCEPTED[name])
    assert ours(server) == theirs(server)


def test_a_value_loses_its_surrounding_whitespace_as_in_httpx(canned: type[Canned]) -> None:
    server = canned(HEAD + b"X-A: \t tag value \t\r\nContent-Length: 0\r\n\r\n")
    assert ours(server)[2] == [("x-a", "tag value"), ("content-length", "0")]


def test_a_body_arrives_in_a_small_buffer_reused(canned: type[Canned]) -> None:
    body = bytes(range(256)) * 40
    server = canned(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert ours(server, size=7)[3] == body
    server = canned(_chunked(b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"))
    assert ours(server, size=7)[3] == body


def test_no_body_for_head(canned: type[Canned]) -> None:
    server = canned(HEAD + b"Content-Length: 99\r\n\r\n", HEAD + b"Content-Length: 2\r\n\r\nok")
    connection = _open(server)
    assert _read(connection, "HEAD")[3] == b""
    assert _read(connection)[3] == b"ok", "the next answer is read from where HEAD's ended"
    connection.close()


# -- keep-alive --------------------------------------------------------------------------------


def _reusable_after(connection: Connection) -> bool:
    connection.request("GET", "/x", {"Host": "127.0.0.1"})
    response = connection.response("GET")
    _body(response, 1 << 16)
    return response.is_reusable


def test_a_kept_connection_serves_a_second_request(canned: type[Canned]) -> None:
    first = HEAD + b"Content-Length: 5\r\n\r\nfirst"
    second = _chunked(b"6\r\nsecond\r\n0\r\n\r\n")
    server = canned(first, second)
    connection = _open(server)
    assert _reusable_after(connection)
    assert _read(connection) == (200, "OK", [("transfer-encoding", "chunked")], b"second")
    assert server.connections == 1
    connection.close()


@pytest.mark.parametrize(
    ("answer", "is_reusable"),
    [
        (HEAD + b"Content-Length: 1\r\n\r\nx", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (HEAD + b"Connection: close\r\nContent-Length: 1\r\n\r\nx", False),
        (HEAD + b"Connection: Keep-Alive, CLOSE\r\nContent-Length: 1\r\n\r\nx", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", True),
        (HEAD + b"\r\nto the close", False),  # no length: the end is the close
        (HEAD + b"Content-Length: 1\r\n\r\nxUNASKED", False),  # bytes after the answer
    ],
)
def test_which_connections_serve_again(
    answer: bytes, is_reusable: bool, canned: type[Canned]
) -> None:
    connection = _open(canned(answer, answer))
    assert _reusable_after(connection) is is_reusable
    connection.close()


def test_an_answer_not_read_to_its_end_does_not_serve_again(canned: type[Canned]) -> None:
    connection = _open(canned(HEAD + b"Content-Length: 10\r\n\r\n0123456789"))
    connection.request("GET", "/x", {"Host": "127.0.0.1"})
    response = connection.response("GET")
    assert response.readinto(memoryview(bytearray(3))) == 3
    assert not response.is_reusable
    connection.close()


# -- refused -----------------------------------------------------------------------------------

REFUSED = {
    "line-too-long": (
        HEAD + b"X-Long: " + b"a" * MAX_LINE + b"\r\n\r\n",
        f"got more than {MAX_LINE} bytes when reading header line",
    ),
    "status-line-too-long": (b"HTTP/1.1 200 " + b"O" * MAX_LINE, "when reading status line"),
    "101-lines": (HEAD + HEADERS + b"X-A: 1\r\nX-B: 2\r\n\r\n", "got more than 100 headers"),
    "no-colon": (HEAD + b"X-A 1\r\n\r\n", r"illegal header line: b'X-A 1\\r\\n'"),
    "space-before-colon": (HEAD + b"X-A : 1\r\n\r\n", "illegal header line"),
    "obs-fold": (HEAD + b"X-A: 1\r\n folded\r\n\r\n", "obsolete line folding"),
    "http2": (b"HTTP/2 200 OK\r\n\r\n", r"illegal status line: 'HTTP/2 200 OK\\r\\n'"),
    "icy": (b"ICY 200 OK\r\n\r\n", r"illegal status line: 'ICY 200 OK\\r\\n'"),
    "two-digit-status": (b"HTTP/1.1 20 OK\r\n\r\n", "illegal status line"),
    "status-not-digits": (b"HTTP/1.1 2x0 OK\r\n\r\n", "illegal status line"),
    "garbage": (b"\x00\x7fthis is not HTTP at all\r\n\r\n", "illegal status line"),
    "head-cut": (HEAD + b"X-A: 1\r\n", "closed within the head"),
    "chunk-size-not-hex": (_chunked(b"zz\r\nhello\r\n0\r\n\r\n"), "illegal chunk size"),
    "chunk-size-empty": (_chunked(b"\r\nhello\r\n0\r\n\r\n"), "illegal chunk size"),
    "chunk-size-huge": (_chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n"), "illegal chunk size"),
    "chunk-size-negative": (_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), "illegal chunk size"),
    "chunk-not-crlf": (_chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"), "chunk data not followed by CRLF"),
    "chunked-no-final-crlf": (
        _chunked(b"5\r\nhello\r\n0\r\n"),
        "peer closed connection without sending complete message body "
        r"\(incomplete chunked read\)",
    ),
    "chunked-cut": (_chunked(b"a\r\nhello"), r"\(incomplete chunked read\)"),
    "chunked-no-last-chunk": (_chunked(b"5\r\nhello\r\n"), r"\(incomplete chunked read\)"),
    "chunk-size-line-too-long": (
        _chunked(b"5;" + b"e" * MAX_LINE + b"\r\nhello\r\n0\r\n\r\n"),
        "when reading chunk size",
    ),
    "trailers-101": (_chunked(b"0\r\n" + HEADERS + b"X-A: 1\r\nX-B: 2\r\n\r\n"), "100 headers"),
    "length-not-digits": (HEAD + b"Content-Length: 5a\r\n\r\nhello", "illegal Content-Length"),
    "length-signed": (HEAD + b"Content-Length: +5\r\n\r\nhello", "illegal Content-Length"),
    "length-empty": (HEAD + b"Content-Length: \r\n\r\nhello", "illegal Content-Length"),
    "length-huge": (HEAD + b"Content-Length: " + b"9" * 40 + b"\r\n\r\n", "Content-Length"),
    "two-lengths": (
        HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        r"illegal Content-Length: '5, 6'",
    ),
    "short-body": (
        HEAD + b"Content-Length: 10\r\n\r\n012",
        "peer closed connection without sending complete message body "
        r"\(received 3 bytes, expected 10\)",
    ),
    "chunked-and-length": (
        HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "both Transfer-Encoding and Content-Length",
    ),
    "other-coding": (HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_bytes_are_refused(name: str, canned: type[Canned]) -> None:
    answer, words = REFUSED[name]
    with pytest.raises(ResponseError, match=words):
        ours(canned(answer))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_download_refuses_them_and_writes_nothing(
    name: str, canned: type[Canned], tmp_path: Path
) -> None:
    answer, words = REFUSED[name]
    server = canned(answer)
    settings = RemoteSettings(api=server.url, timeout=GENEROUS, upload_timeout=GENEROUS)
    target = direct_target(settings)
    assert target is not None
    client = DirectClient(settings, target)
    try:
        with pytest.raises(RemoteProtocolError, match=f"sent a malformed HTTP response: .*{words}"):
            client.fetch("0123456789abcdef", tmp_path / "out")
    finally:
        client.close()
    assert list(tmp_path.iterdir()) == []
    assert client._idle == [], "a refused answer's connection is not kept"


def test_a_server_that_closes_at_once_sent_no_answer(canned: type[Canned]) -> None:
    with pytest.raises(DisconnectedError, match="Server disconnected without sending a response"):
        ours(canned(b""))
