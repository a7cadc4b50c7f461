"""Real database and object-storage servers for the scale-out tests (issue 13), as fixtures.

- ``postgres`` (session): PostgreSQL from Debian's packages (``initdb``, then ``postgres`` in
  the foreground so it is stopped by its PID), on a free 127.0.0.1 port, its data and unix
  socket in a temporary directory. As root it runs as ``nobody`` (initdb refuses root).
  ``postgres_url``: a fresh database of the test's own on it.
- ``s3_server`` (session): moto's S3 API server, a separate process (``python -m moto.server``)
  on a free 127.0.0.1 port; ``s3_env``: the AWS variables pointing the SDK at it, with no
  shared config or credentials files; ``bucket``: a fresh bucket of the test's own.

Both FAIL the test when their program is missing: see ``.ci/run`` for what installs them.
Every process started here is stopped by its PID, and its temporary directory removed.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Postgres", "S3Server", "bucket", "postgres", "postgres_url", "s3_env", "s3_server"]

S3_ACCESS_KEY = "chk-test-access-key"
S3_SECRET_KEY = "chk-test-secret-key"
S3_REGION = "eu-west-3"
_NOBODY = 65534


def _stop(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(first)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb``; the test fails without."""
    found = sorted(
        glob.glob(os.path.join(os.sep, "usr", "lib", "postgresql", "*", "bin", "initdb")),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if not found:
        pytest.fail("PostgreSQL is needed: apt-get install -y postgresql (see .ci/run)")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A running PostgreSQL server (superuser ``postgres``, trust authentication)."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"chk_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL for this test session (each xdist worker has its own)."""
    import psycopg

    bindir = postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="chk-pg-"))  # not tmp_path: `nobody` must enter it
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(base, _NOBODY, _NOBODY)
        as_user = ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
    data, log = base / "data", base / "postgres.log"
    try:
        initdb = [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres"]
        initdb += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(
            initdb,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        port = free_port()
        settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings += ["max_connections=300", "listen_addresses=127.0.0.1"]
        command = [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
        command += ["-k", str(base)]
        for setting in settings:
            command += ["-c", setting]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        server = Postgres(port, process, log)
        try:
            _wait_for_postgres(server, psycopg)
            yield server
        finally:
            _stop(process, signal.SIGINT)  # "fast" shutdown: ends every session
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_postgres(server: Postgres, psycopg: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"postgres exited with {server.process.returncode}:\n{_tail(server.log)}")
        with contextlib.suppress(psycopg.OperationalError):
            psycopg.connect(server.url(), connect_timeout=2).close()
            return
        time.sleep(0.1)
    pytest.fail(f"postgres did not accept connections within 60 s:\n{_tail(server.log)}")


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-3000:]
    return ""


@pytest.fixture
def postgres_url(postgres: Postgres) -> str:
    """A database of this test's own."""
    return postgres.create_database()


@dataclass
class S3Server:
    """moto's S3 API server."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Any:
        """A boto3 client for the tests' own checks (not the server's code path)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
        )

    def create_bucket(self) -> str:
        name = f"chk-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": S3_REGION}
        )
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto in server mode for this test session (each xdist worker has its own)."""
    if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("moto[server] is needed: it is in the test extra (pip install -e '.[test]')")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    # moto runs no cachehook code: coverage's tracer would only slow every S3 call (issue 9).
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = S3Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/moto-api/")
                connection.getresponse().read()
                connection.close()
                break
            if time.monotonic() > deadline:
                pytest.fail(f"moto did not answer within 60 s:\n{_tail(log)}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process, signal.SIGTERM)


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables for ``s3_server``, set in this process (children inherit them)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_REGION": S3_REGION,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A bucket of this test's own."""
    return s3_server.create_bucket()
