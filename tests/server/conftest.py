"""Fixtures for ``cachehook serve``: the server as a real uvicorn process on 127.0.0.1.

- ``serve_factory``: start servers (``cachehook serve`` in a subprocess) with their own storage
  and tokens file; each is stopped by its PID at the end of the test.
- ``shared_server`` (session): one server the API tests share; each test uses a team of its own.
- ``turbo_binary``: the native ``turbo`` 2.11.11 binary from ``<repo>/.peers`` (installed with
  npm on first use); ``chromium``: the headless browser. Both FAIL the test when missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.server.engines import bucket, postgres, postgres_url, s3_env, s3_server
from tests.servers import PEERS_DIR, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = ["bucket", "postgres", "postgres_url", "s3_env", "s3_server"]  # fixtures (issue 13)

TURBO_VERSION = "2.11.11"
TURBO_PACKAGE = f"turbo@{TURBO_VERSION}"
SLASH = chr(47)
API = f"{SLASH}v8{SLASH}artifacts"  # the v8 prefix, built from SLASH


@dataclass
class Serve:
    """A running ``cachehook serve``."""

    url: str
    port: int
    storage: Path
    tokens_file: Path
    log: Path
    process: subprocess.Popen[bytes]
    tokens: dict[str, str] = field(default_factory=dict)  # name -> secret

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, name: str = "rw") -> str:
        return self.tokens[name]

    def auth(self, name: str = "rw") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def stop(self) -> int:
        """SIGTERM by PID (uvicorn shuts down gracefully), SIGKILL after 10 s; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


TOKENS_TOML = """
[[token]]
name = "rw"
token = "{rw}"
scopes = ["read", "write"]
teams = ["*"]

[[token]]
name = "reader"
token = "{reader}"
scopes = ["read"]
teams = ["*"]

[[token]]
name = "alpha-only"
token = "{alpha}"
scopes = ["read", "write"]
teams = ["alpha"]
default-team = "alpha"

[[token]]
name = "admin"
token = "{admin}"
scopes = ["read", "write", "admin"]
teams = ["*"]
"""


def write_tokens(path: Path) -> dict[str, str]:
    """Tokens ``rw`` (all teams), ``reader`` (read only), ``alpha-only`` (its default team
    is ``alpha``) and ``admin`` (may delete a team's artifacts)."""
    names = ("rw", "reader", "alpha-only", "admin")
    tokens = {name: f"chk-{name}-{uuid.uuid4().hex}" for name in names}
    path.write_text(
        TOKENS_TOML.format(
            rw=tokens["rw"],
            reader=tokens["reader"],
            alpha=tokens["alpha-only"],
            admin=tokens["admin"],
        )
    )
    return tokens


def start_serve(
    workdir: Path,
    *args: str,
    workers: int = 1,
    extra_tokens: str = "",
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Serve:
    """Start ``cachehook serve`` on a free 127.0.0.1 port and wait until it answers.

    ``extra_tokens`` is TOML appended to the tokens file (more ``[[token]]`` tables);
    ``wrapper`` runs before the command (``prlimit --nofile=1024:1024``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tokens_file = workdir / "tokens.toml"
    tokens = write_tokens(tokens_file)
    if extra_tokens:
        tokens_file.write_text(tokens_file.read_text() + extra_tokens)
    storage = workdir / "storage"
    log = workdir / "serve.log"
    environ = None if env is None else {**os.environ, **env}
    # free_port() gives the port back before serve binds it: on a busy machine another test's
    # server can take it in between, which serve reports; then try another port.
    for _ in range(5):
        port = free_port()
        command = [*wrapper, sys.executable, "-m", "cachehook", "serve", "--port", str(port)]
        command += ["--storage", str(storage), "--tokens", str(tokens_file)]
        command += ["--workers", str(workers), "--log-level", "warning", *args]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)
        serve = Serve(f"http://127.0.0.1:{port}", port, storage, tokens_file, log, process, tokens)
        started = _await_serve(serve)
        if started is not None:
            return started
    pytest.fail(f"cachehook serve found no free port in 5 tries:\n{log.read_text()}")


def _await_serve(serve: Serve) -> Serve | None:
    """``serve`` once it answers, or None if its port was taken before it could bind it."""
    process, port, log = serve.process, serve.port, serve.log
    deadline = time.monotonic() + 120  # a deadline, not a speed: loaded machines are slow
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text()
            if f"port {port} on 127.0.0.1 is already in use" in said:
                return None
            pytest.fail(f"cachehook serve exited with {process.returncode}:\n{said}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"{SLASH}healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return serve
        time.sleep(0.05)
    serve.stop()
    pytest.fail(f"cachehook serve did not start within 120 s:\n{log.read_text()}")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    port: int,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> RawResponse:
    """Send ``target`` byte for byte (httpx would normalise ``..`` and ``%2F``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        headers = headers or {}
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None and "Content-Length" not in headers:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """Start servers for this test: ``serve_factory("--max-body", "1KiB", workers=2)``."""
    started: list[Serve] = []

    def start(
        *args: str,
        workers: int = 1,
        extra_tokens: str = "",
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> Serve:
        workdir = tmp_path / f"serve-{len(started)}"
        serve = start_serve(
            workdir, *args, workers=workers, extra_tokens=extra_tokens, env=env, wrapper=wrapper
        )
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One server for the whole session (1 MiB body limit); tests use teams of their own."""
    serve = start_serve(tmp_path_factory.mktemp("shared-serve"), "--max-body", "1MiB")
    yield serve
    serve.stop()


@pytest.fixture
def team() -> str:
    """A team of this test's own."""
    return f"chk-{uuid.uuid4().hex[:12]}"


def install_turbo() -> Path:
    """Install turbo into ``<repo>/.peers`` (once) and return its native binary."""
    binary = PEERS_DIR / "node_modules" / "@turbo" / "linux-64" / "bin" / "turbo"
    npm = shutil.which("npm")
    PEERS_DIR.mkdir(exist_ok=True)
    with (PEERS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share .peers
        if not _turbo_version_is(binary, TURBO_VERSION):
            if npm is None:
                pytest.fail("npm is needed to install turbo for the integration tests")
            if not (PEERS_DIR / "package.json").exists():
                (PEERS_DIR / "package.json").write_text('{"name": "peers", "private": true}\n')
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", TURBO_PACKAGE],
                cwd=PEERS_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"npm install turbo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if not _turbo_version_is(binary, TURBO_VERSION):
        pytest.fail(f"{binary} is not turbo {TURBO_VERSION} after npm install")
    return binary


def _turbo_version_is(binary: Path, version: str) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() == version


@pytest.fixture(scope="session")
def turbo_binary() -> Path:
    """The native turbo binary (the npm wrapper adds ~400 ms per run)."""
    return install_turbo()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless chromium; the test fails (never skips) without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is needed: apt-get install -y chromium (see .ci/run)")
    return path
