"""Hostile connections cannot starve ``cachehook serve`` (issue 12): each case is bounded.

Every test waits for the server's reaction with a generous deadline (no timing assertions) and
closes every socket it opens. Client sockets bind 127.0.0.2, 127.0.0.3, ... as their source to
play several client addresses on one machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import shutil
import socket
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from cachehook.server.guard import ConnectionLimits, raise_fd_limit
from tests.server.conftest import API, SLASH

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration

DEADLINE = 30.0  # seconds; the server's limits in these tests are 1-2 s


def connect(serve: Serve, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", serve.port), timeout=10, source_address=(source, 0)
    )
    return sock


def read_until_closed(sock: socket.socket, *, deadline: float = DEADLINE) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection; (data, closed within deadline)."""
    data = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        sock.settimeout(max(0.05, min(1.0, end - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def status(serve: Serve, source: str = "127.0.0.1") -> int:
    with connect(serve, source) as sock:
        sock.sendall(
            f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {serve.token()}\r\n\r\n".encode()
        )
        answer, _ = read_until_closed(sock)
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0


def wait_until_served(serve: Serve, source: str = "127.0.0.1") -> None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            if status(serve, source) == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"a normal request from {source} was not served within {DEADLINE} s")


@pytest.fixture
def strict(serve_factory: Callable[..., Serve]) -> Serve:
    """A server with tight limits: 1 s for a head, 2 s of body stall, small caps."""
    return serve_factory(
        "--header-timeout",
        "1",
        "--body-timeout",
        "2",
        "--max-connections",
        "100",
        "--max-connections-per-client",
        "40",
    )


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


# -- heads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent", [b"", b"GET ", f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\n".encode()]
)
def test_a_silent_or_half_sent_head_is_answered_408_and_closed(strict: Serve, sent: bytes) -> None:
    with connect(strict) as sock:
        sock.sendall(sent)
        answer, closed = read_until_closed(sock)
    assert closed, "the server kept a half-sent head open"
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"


def test_a_trickled_head_does_not_extend_the_deadline(strict: Serve) -> None:
    head = f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\n" + "X-Pad: y\r\n" * 200
    sent = 0
    closed = False
    with connect(strict) as sock:
        end = time.monotonic() + DEADLINE
        while sent < len(head) and time.monotonic() < end:
            try:
                sock.sendall(head[sent : sent + 1].encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            sock.settimeout(0.02)  # also the pace: one byte per 20 ms
            try:
                sock.recv(65536)  # the 408, or the end of the connection
            except TimeoutError:
                continue
            except ConnectionResetError:
                pass
            closed = True
            break
    # one byte every 20 ms would take ~45 s for the whole head: the 1 s deadline came first
    assert closed
    assert sent < len(head)


def test_a_new_request_on_a_kept_alive_connection_has_its_own_deadline(strict: Serve) -> None:
    with connect(strict) as sock:
        request = (
            f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {strict.token()}\r\n\r\n"
        ).encode()
        sock.sendall(request)
        first = b""
        while b'"enabled"' not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET " + API.encode())  # the next head, never finished
        answer, closed = read_until_closed(sock)
    assert closed
    assert answer.startswith(b"HTTP/1.1 408 "), answer


@pytest.mark.parametrize("size", [65 << 10, 1 << 20])
def test_a_head_over_64_kib_is_431(strict: Serve, size: int) -> None:
    with connect(strict) as sock:
        head = f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * size}\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head.encode())  # the server may close before all of it is sent
        answer, closed = read_until_closed(sock)
    assert closed
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_head_just_under_64_kib_is_served(strict: Serve) -> None:
    padding = "a" * (60 << 10)
    response = httpx.get(
        f"{strict.url}{API}{SLASH}status", headers={**strict.auth(), "X-Big": padding}
    )
    assert response.status_code == 200


# -- bodies ------------------------------------------------------------------------------


def test_a_stalled_body_is_dropped_and_leaves_nothing(strict: Serve) -> None:
    with connect(strict) as sock:
        sock.sendall(
            (
                f"PUT {API}{SLASH}5ta11ed?slug=acme HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {strict.token()}\r\nContent-Length: 100000\r\n\r\n"
            ).encode()
            + b"x" * 2000
        )
        answer, closed = read_until_closed(sock)
    assert closed, "the server held a stalled body open"
    assert not answer.startswith(b"HTTP/1.1 2"), answer
    end = time.monotonic() + DEADLINE
    while any((strict.storage / "uploads").iterdir()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any((strict.storage / "uploads").iterdir())
    got = httpx.get(
        f"{strict.url}{API}{SLASH}5ta11ed", params={"slug": "acme"}, headers=strict.auth()
    )
    assert got.status_code == 404


def test_a_slow_but_steady_body_is_taken(strict: Serve) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(8):  # 8 x 0.4 s: longer than the 2 s stall limit, never idle that long
            yield b"y" * 1000
            time.sleep(0.4)

    response = httpx.put(
        f"{strict.url}{API}{SLASH}51ow?slug=acme",
        content=pieces(),
        headers={**strict.auth(), "Content-Length": "8000"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    got = httpx.get(f"{strict.url}{API}{SLASH}51ow", params={"slug": "acme"}, headers=strict.auth())
    assert got.content == b"y" * 8000


# -- connection caps ---------------------------------------------------------------------


def test_past_the_per_client_cap_a_connection_is_refused_at_once(
    serve_factory: Callable[..., Serve], sockets: list[socket.socket]
) -> None:
    serve = serve_factory("--header-timeout", "120", "--max-connections-per-client", "20")
    for _ in range(20):
        sockets.append(connect(serve, "127.0.0.2"))
        sockets[-1].sendall(b"GET ")
    wait_for_count(serve, lambda: status(serve) == 200)  # the 20 are in, others still served
    with connect(serve, "127.0.0.2") as extra:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            extra.sendall(f"GET {API}{SLASH}status HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer, closed = read_until_closed(extra)
    assert closed  # refused, not queued behind the idle ones
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
    if answer:
        assert b"retry-after: 1" in answer.lower()
    assert status(serve, "127.0.0.3") == 200  # another address is not affected
    for sock in sockets:
        sock.close()
    wait_until_served(serve, "127.0.0.2")  # and the address gets in again once they are gone


def wait_for_count(serve: Serve, condition: Callable[[], bool]) -> None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"condition not met within {DEADLINE} s:\n{serve.log.read_text()[-2000:]}")


def test_an_idle_flood_past_the_total_cap_cannot_lock_others_out(
    serve_factory: Callable[..., Serve], sockets: list[socket.socket]
) -> None:
    # the issue's case, scaled: more idle connections than the server takes, from many
    # addresses; each is refused at once or closed by the header timeout, and a normal client
    # gets in again while the flood's sockets are still open on the client side
    serve = serve_factory(
        "--header-timeout", "1", "--max-connections", "100", "--max-connections-per-client", "40"
    )
    wanted = 150
    raise_fd_limit(wanted + 200)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted + 100:
        pytest.fail("this test needs ~250 file descriptors")
    for index in range(wanted):
        sock = connect(serve, f"127.0.0.{10 + index % 5}")
        sockets.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(b"GET " + API.encode())
    wait_until_served(serve)
    for sock in sockets:
        answer, closed = read_until_closed(sock)
        assert closed
        assert answer == b"" or answer[:12] in (b"HTTP/1.1 408", b"HTTP/1.1 503"), answer


def test_the_issues_case_1100_idle_connections_under_a_1024_fd_limit(
    serve_factory: Callable[..., Serve], sockets: list[socket.socket]
) -> None:
    # issue 12 as measured: 1,100 idle half-sent heads against a server limited to 1,024
    # descriptors refused every other client for over 60 s. With the default limits the server
    # caps itself below its descriptor limit, refuses the excess at once, and its 5 s header
    # timeout frees the rest; a normal client gets in while the flood is still held open.
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.fail("prlimit (util-linux) is needed")
    serve = serve_factory(wrapper=(prlimit, "--nofile=1024:1024", "--"))
    flood = 1100
    raise_fd_limit(flood + 300)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < flood + 200:
        pytest.fail(f"this test needs ~{flood + 200} file descriptors")
    for index in range(flood):
        sock = connect(serve, f"127.0.1.{1 + index % 10}")  # 10 addresses, 110 each
        sockets.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(b"GET " + API.encode())
    wait_until_served(serve)
    assert "Too many open files" not in serve.log.read_text()


def test_limits_round_trip_through_the_environment() -> None:
    limits = ConnectionLimits(header_timeout=2.5, max_per_client=3)
    assert ConnectionLimits.from_json(limits.to_json()) == limits


def test_a_deep_json_body_is_400_without_a_traceback(strict: Serve) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    connection = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=30)
    try:
        connection.request(
            "POST",
            f"{API}{SLASH}events?slug=acme",
            body=body,
            headers={**strict.auth(), "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 400
        assert "nests deeper" in json.loads(response.read())["error"]["message"]
    finally:
        connection.close()
    assert "Traceback" not in strict.log.read_text()
