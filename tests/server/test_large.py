"""A 1 GiB artifact up and down: the server's memory stays flat, the bytes come back intact."""

from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.server.conftest import API, SLASH

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration

GIB = 1 << 30
CHUNK = 1 << 20


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of ``pid``, in KiB, from /proc."""
    status = Path(SLASH, "proc", str(pid), "status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def chunks(seed: bytes) -> Iterator[bytes]:
    for index in range(GIB // CHUNK):
        yield index.to_bytes(8, "big") + seed[8:]


def test_a_1_gib_upload_and_download_keep_memory_flat(
    serve_factory: Callable[..., Serve], tmp_path: Path
) -> None:
    serve = serve_factory()
    seed = os.urandom(CHUNK)
    sent = hashlib.sha256()
    before = memory_kib(serve.pid)

    connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=300)
    try:
        connection.putrequest("PUT", f"{API}{SLASH}{'ab' * 16}?slug=big")
        connection.putheader("Authorization", f"Bearer {serve.token()}")
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(GIB))
        connection.putheader("x-artifact-duration", "60000")
        connection.endheaders()
        for chunk in chunks(seed):
            sent.update(chunk)
            connection.send(chunk)
        response = connection.getresponse()
        assert response.status == 202, response.read()
        response.read()
        after_upload = memory_kib(serve.pid)

        connection.request(
            "GET",
            f"{API}{SLASH}{'ab' * 16}?slug=big",
            headers={"Authorization": f"Bearer {serve.token()}"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("content-length") == str(GIB)
        assert response.getheader("x-artifact-duration") == "60000"
        received = hashlib.sha256()
        size = 0
        while block := response.read(CHUNK):
            received.update(block)
            size += len(block)
        after_download = memory_kib(serve.pid)
    finally:
        connection.close()

    assert size == GIB
    assert received.hexdigest() == sent.hexdigest()
    # The peak resident size grew by less than 64 MiB while 1 GiB went through, both ways.
    assert after_upload["VmHWM"] - before["VmRSS"] < 64 * 1024, (before, after_upload)
    assert after_download["VmHWM"] - before["VmRSS"] < 64 * 1024, (before, after_download)
    assert not any((serve.storage / "uploads").iterdir())
