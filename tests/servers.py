"""Servers for tests, as pytest fixtures (registered by ``pytest_plugins`` in ``conftest.py``).

- ``npm_server`` (session): the real ``turborepo-remote-cache@2.12.0`` npm server on 127.0.0.1,
  installed into ``<repo>/.peers/`` on first use. Without node/npm the fixture FAILS: CI must
  never skip these tests silently.
- ``npm_server_factory`` (session): start more of them with extra environment
  (``TURBO_REMOTE_CACHE_SIGNATURE_KEY``, ``BODY_LIMIT``, ``READ_ONLY``...).
- ``capture_proxy``: a recording reverse proxy in front of ``npm_server``; every exchange is a
  ``CapturedRequest`` (method, path, query, headers, body, status).
- ``remote_settings`` / ``remote_env``: a ``RemoteSettings`` and the ``CACHEHOOK_API`` /
  ``CACHEHOOK_TOKEN`` / ``CACHEHOOK_TEAM`` variables pointing at that proxy, with a team slug of
  the test's own so tests never see each other's artifacts.
- ``redirect_server``: a factory of listeners that answer every request with a redirect to
  another base URL (same path and query), recording the headers of each request.
- ``fault_server``: a factory of misbehaving listeners (``blackhole``, ``reset``, ``status``,
  ``garbage``, ``truncated``, ``trickle``); ``refused_url``: a port nobody listens on.

Every process started here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.config import RemoteSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "NODE_CLIENTS",
    "NPM_SERVER_VERSION",
    "UNRESOLVABLE_URL",
    "CaptureProxy",
    "CapturedRequest",
    "FaultServer",
    "NpmServer",
    "RedirectServer",
    "free_port",
    "install_node_clients",
    "install_npm_server",
    "start_npm_server",
]

NPM_SERVER_VERSION = "2.12.0"
UNRESOLVABLE_URL = "http://cachehook-does-not-exist.invalid"
REPO_ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO_ROOT / ".peers"
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te"}
_HOP_HEADERS |= {"trailer", "upgrade", "content-length"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the npm server ------------------------------------------------------------------------


def install_npm_server() -> Path:
    """Install turborepo-remote-cache into ``<repo>/.peers`` (once) and return its ``cli.js``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the integration tests (turborepo-remote-cache)")
    package = PEERS_DIR / "node_modules" / "turborepo-remote-cache"
    PEERS_DIR.mkdir(exist_ok=True)
    with (PEERS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share .peers
        if _installed_version(package) != NPM_SERVER_VERSION:
            if not (PEERS_DIR / "package.json").exists():
                (PEERS_DIR / "package.json").write_text('{"name": "peers", "private": true}\n')
            command = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
            done = subprocess.run(
                [*command, f"turborepo-remote-cache@{NPM_SERVER_VERSION}"],
                cwd=PEERS_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"npm install failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cli = package / "dist" / "cli.js"
    if not cli.is_file():
        pytest.fail(f"{cli} is missing after npm install")
    return cli


# The real Node clients of ``cachehook serve`` (issue 12), pinned; .ci/run installs the same.
NODE_CLIENTS = {
    "@vercel/sdk": "1.28.35",
    "nx": "17.3.2",
    "@vercel/remote-nx": "2.0.0",
    "@vercel/remote": "1.0.1",
}


def install_node_clients() -> Path:
    """Install ``NODE_CLIENTS`` into ``<repo>/.peers`` (once); returns its ``node_modules``."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail("node and npm are needed for the integration tests (@vercel/sdk, nx)")
    modules = PEERS_DIR / "node_modules"
    PEERS_DIR.mkdir(exist_ok=True)
    with (PEERS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share .peers
        missing = [
            f"{name}@{version}"
            for name, version in NODE_CLIENTS.items()
            if _installed_version(modules / name) != version
        ]
        if missing:
            if not (PEERS_DIR / "package.json").exists():
                (PEERS_DIR / "package.json").write_text('{"name": "peers", "private": true}\n')
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *missing],
                cwd=PEERS_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"npm install failed ({done.returncode}):\n{done.stderr[-3000:]}")
    for name, version in NODE_CLIENTS.items():
        if _installed_version(modules / name) != version:
            pytest.fail(f"{name} {version} is not in {modules} after npm install")
    return modules


def _installed_version(package: Path) -> str | None:
    try:
        return str(json.loads((package / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class NpmServer:
    """A running turborepo-remote-cache server."""

    url: str
    port: int
    token: str
    storage: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Stop it by PID: SIGTERM, then SIGKILL after 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_npm_server(workdir: Path, *, token: str, **env: str) -> NpmServer:
    """Start a server on a free 127.0.0.1 port with local storage under ``workdir``."""
    cli = install_npm_server()
    node = shutil.which("node")
    assert node is not None
    for _ in range(5):  # free_port() gives the port back: another server may take it first
        server = _start_npm_server_on(free_port(), workdir, cli, node, token=token, **env)
        if server is not None:
            return server
    pytest.fail(f"turborepo-remote-cache found no free port in 5 tries under {workdir}")


def _start_npm_server_on(
    port: int, workdir: Path, cli: Path, node: str, *, token: str, **env: str
) -> NpmServer | None:
    """The server on ``port`` once it answers, or None if the port was taken before it bound."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "NODE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AUTH_MODE": "static",
        "TURBO_TOKEN": token,
        "STORAGE_PROVIDER": "local",
        "STORAGE_PATH": str(storage),
        "STORAGE_PATH_USE_TMP_FOLDER": "false",
        "LOG_LEVEL": "warn",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [node, str(cli)], cwd=workdir, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    server = NpmServer(f"http://127.0.0.1:{port}", port, token, storage, log, process)
    deadline = time.monotonic() + 120  # a deadline, not a speed: loaded machines are slow
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text()
            if "EADDRINUSE" in said:
                return None
            pytest.fail(f"turborepo-remote-cache exited with {process.returncode}:\n{said}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v8/artifacts/status")
            if connection.getresponse().status == 200:
                connection.close()
                return server
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"turborepo-remote-cache did not start within 120 s:\n{log.read_text()}")


# -- the capturing proxy -------------------------------------------------------------------


@dataclass
class CapturedRequest:
    """One exchange that went through a ``CaptureProxy``."""

    method: str
    path: str
    query: dict[str, list[str]]
    target: str
    headers: dict[str, str]  # lower-case names
    header_names: list[str]  # in the order sent, as sent
    body: bytes
    is_chunked: bool
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class CaptureProxy:
    """A reverse proxy on 127.0.0.1 that records every request before forwarding it.

    ``inject_headers`` are added to 200 answers to GET/HEAD of an artifact (the npm server
    sends no ``x-artifact-duration``, for instance).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.inject_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._requests: list[CapturedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[CapturedRequest]:
        with self._lock:
            return list(self._requests)

    def find(self, method: str | None = None, path: str | None = None) -> list[CapturedRequest]:
        """The requests with this method and/or path, in order."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def wait_for(
        self, method: str, path: str, *, count: int = 1, timeout: float = 10
    ) -> list[CapturedRequest]:
        """Wait until ``count`` such requests arrived (events come from a background thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(method, path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        pytest.fail(f"{count} x {method} {path} expected, got {self.find(method, path)}")

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def record(self, request: CapturedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _proxy_handler(proxy: CaptureProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> tuple[bytes, bool]:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks), True
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length), False

        def _handle(self) -> None:
            body, is_chunked = self._body()
            url = urllib.parse.urlsplit(self.path)
            captured = CapturedRequest(
                method=self.command,
                path=url.path,
                query=urllib.parse.parse_qs(url.query, keep_blank_values=True),
                target=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                header_names=list(self.headers.keys()),
                body=body,
                is_chunked=is_chunked,
            )
            forward = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            if body or self.command in ("PUT", "POST"):
                forward["Content-Length"] = str(len(body))
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
            upstream.request(self.command, self.path, body=body or None, headers=forward)
            response = upstream.getresponse()
            answer = response.read()
            upstream.close()
            captured.status = response.status
            captured.response_headers = {k.lower(): v for k, v in response.getheaders()}
            captured.response_body = answer
            proxy.record(captured)
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            is_artifact = (
                url.path.startswith("/v8/artifacts/") and url.path != "/v8/artifacts/status"
            )
            if response.status == 200 and self.command in ("GET", "HEAD") and is_artifact:
                for name, value in proxy.inject_headers.items():
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_OPTIONS = _handle

    return Handler


# -- redirects -----------------------------------------------------------------------------


class RedirectServer:
    """A listener on 127.0.0.1 that answers every request ``status`` with ``Location:
    <to><path and query>``; ``requests`` holds each request's headers (lower-case names)."""

    def __init__(self, to: str, *, status: int = 302) -> None:
        self.to, self.status = to.rstrip("/"), status
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response_only(server.status)
                self.send_header("Location", server.to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- misbehaving listeners -----------------------------------------------------------------


class FaultServer:
    """A listener on 127.0.0.1 that answers every connection with one kind of fault.

    Kinds: ``blackhole`` (accepts, never reads or answers), ``reset`` (reads the request head,
    then resets the connection), ``status`` (answers ``status`` with a JSON body), ``garbage``
    (answers bytes that are not HTTP), ``truncated`` (promises 1000 bytes, sends 10, closes),
    ``trickle`` (200, then the body in ``chunks`` pieces ``delay`` seconds apart).
    """

    def __init__(
        self,
        kind: str,
        *,
        status: int = 503,
        body: bytes = b"",
        delay: float = 0.0,
        chunks: int = 3,
    ) -> None:
        self.kind, self.status, self.body, self.delay, self.chunks = (
            kind,
            status,
            body,
            delay,
            chunks,
        )
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._is_closed = False
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._is_closed = True
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._is_closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        if self.kind == "blackhole":
            if self._is_closed:  # accepted while closing: close() has already run
                sock.close()
            return  # held open until close(), never read
        try:
            self._answer(sock)
        finally:
            sock.close()

    def _answer(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            head = _read_request(sock, with_body=self.kind != "reset")
            if self.kind == "reset":
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            elif self.kind == "status":
                body = self.body or json.dumps({"message": f"fault {self.status}"}).encode()
                sock.sendall(
                    _response_head(self.status, len(body))
                    + (b"" if head.startswith(b"HEAD") else body)
                )
            elif self.kind == "garbage":
                sock.sendall(b"\x00\x7fthis is not HTTP at all\r\n\r\n")
            elif self.kind == "truncated":
                sock.sendall(_response_head(200, 1000) + b"0123456789")
            elif self.kind == "trickle":
                body = self.body or b"x" * 30
                sock.sendall(_response_head(200, len(body)))
                step = -(-len(body) // self.chunks)
                for start in range(0, len(body), step):
                    if self._closing.wait(self.delay):
                        return
                    sock.sendall(body[start : start + step])


def _read_request(sock: socket.socket, *, with_body: bool) -> bytes:
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while with_body and len(rest) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        rest += chunk
    return head


def _response_head(status: int, length: int) -> bytes:
    reason = http.client.responses.get(status, "Status")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def npm_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., NpmServer]]:
    """Start turborepo-remote-cache servers; keyword arguments are extra environment."""
    started: list[NpmServer] = []

    def start(**env: str) -> NpmServer:
        workdir = tmp_path_factory.mktemp("npm-server")
        server = start_npm_server(workdir, token=f"chk-test-token-{uuid.uuid4().hex}", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def npm_server(npm_server_factory: Callable[..., NpmServer]) -> NpmServer:
    """The real turborepo-remote-cache server, shared by the session's tests."""
    return npm_server_factory()


@pytest.fixture
def capture_proxy(npm_server: NpmServer) -> Iterator[CaptureProxy]:
    """A recording proxy in front of ``npm_server``, fresh for each test."""
    proxy = CaptureProxy(npm_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
def team_slug() -> str:
    """A team slug of this test's own: its artifacts live apart from every other test's."""
    return f"chk-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def remote_settings(
    capture_proxy: CaptureProxy, npm_server: NpmServer, team_slug: str
) -> RemoteSettings:
    """``RemoteSettings`` for the npm server, through the capturing proxy."""
    return RemoteSettings(api=capture_proxy.url, token=npm_server.token, slug=team_slug)


@pytest.fixture
def remote_env(
    capture_proxy: CaptureProxy, npm_server: NpmServer, team_slug: str
) -> dict[str, str]:
    """``CACHEHOOK_API`` / ``_TOKEN`` / ``_TEAM`` for the npm server, through the proxy.

    With a patient remote timeout: on a loaded machine the proxy and the node server can take
    longer than the default 2 s to start answering, and the client would then carry on without
    the remote (a correct degrade, but not what these tests are about).
    """
    return {
        "CACHEHOOK_API": capture_proxy.url,
        "CACHEHOOK_TOKEN": npm_server.token,
        "CACHEHOOK_TEAM": team_slug,
        "CACHEHOOK_REMOTE_CACHE_TIMEOUT": "60",
    }


@pytest.fixture
def fault_server() -> Iterator[Callable[..., FaultServer]]:
    """Start misbehaving listeners: ``fault_server("status", status=503).url``."""
    started: list[FaultServer] = []

    def start(
        kind: str, *, status: int = 503, body: bytes = b"", delay: float = 0.0, chunks: int = 3
    ) -> FaultServer:
        server = FaultServer(kind, status=status, body=body, delay=delay, chunks=chunks)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def redirect_server() -> Iterator[Callable[..., RedirectServer]]:
    """Start redirecting listeners: ``redirect_server(capture_proxy.url, status=307).url``."""
    started: list[RedirectServer] = []

    def start(to: str, *, status: int = 302) -> RedirectServer:
        server = RedirectServer(to, status=status)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"
