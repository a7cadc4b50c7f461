"""Two ``cachehook serve`` processes, one bucket, one PostgreSQL database (issue 13).

Real engines, each a separate process on 127.0.0.1: moto's S3 API server and PostgreSQL from
Debian's packages (``tests/server/engines.py``). What a load balancer in front of the two
would rely on: a PUT through one is a hit through the other, every event is counted once on
either dashboard, the shared cap holds, and a server killed mid-upload leaves nothing that the
other could serve.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.server.conftest import API, SLASH
from tests.server.test_large import memory_kib

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.server.conftest import Serve
    from tests.server.engines import S3Server

pytestmark = pytest.mark.integration

MIB = 1 << 20
CAP = 24 * MIB
PREFIX = "shared"


def artifact(serve: Serve, team: str, hash_: str) -> str:
    return f"{serve.url}{API}{SLASH}{hash_}?slug={team}"


def stored_bytes(s3_server: S3Server, bucket: str) -> dict[str, int]:
    client = s3_server.client()
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{PREFIX}/v8/"
    ):
        found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    return found


def stats(serve: Serve) -> dict[str, Any]:
    response = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats", headers=serve.auth(), timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_two_servers_share_one_bucket_and_one_database(
    serve_factory: Callable[..., Serve],
    s3_server: S3Server,
    s3_env: dict[str, str],
    bucket: str,
    postgres_url: str,
) -> None:
    shared = ["--storage", f"s3://{bucket}/{PREFIX}", "--events-db", postgres_url]
    shared += ["--max-size", str(CAP), "--max-body", "20MiB"]
    one = serve_factory(*shared)
    # one tokens file for both; the second runs two worker processes, as a host would
    two = serve_factory(*shared, "--tokens", str(one.tokens_file), workers=2)
    two.tokens = one.tokens
    team = f"chk-{uuid.uuid4().hex[:8]}"

    # A PUT through one is a hit through the other, metadata and all.
    body = os.urandom(300_000)
    headers = {**one.auth(), "x-artifact-duration": "4321", "x-artifact-tag": "c2lnbmVk"}
    put = httpx.put(artifact(one, team, "aa01"), content=body, headers=headers, timeout=60)
    assert put.status_code in (200, 202), put.text
    got = httpx.get(artifact(two, team, "aa01"), headers=two.auth(), timeout=60)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["x-artifact-duration"] == "4321"
    assert got.headers["x-artifact-tag"] == "c2lnbmVk"
    assert httpx.head(artifact(two, team, "aa02"), headers=two.auth()).status_code == 404

    # Every event once, whichever server took it and however often it was retried.
    session = str(uuid.uuid4())
    batch = [
        {"sessionId": session, "source": "LOCAL", "event": "MISS", "hash": "aa01"},
        {
            "sessionId": session,
            "source": "REMOTE",
            "event": "HIT",
            "hash": "aa01",
            "duration": 4321,
        },
    ]
    events = f"{API}{SLASH}events?slug={team}"
    for serve in (one, two, one):  # the client retried through the load balancer
        sent = httpx.post(f"{serve.url}{events}", json=batch, headers=serve.auth(), timeout=30)
        assert sent.status_code == 200, sent.text
    seen = [stats(serve) for serve in (one, two)]
    for numbers in seen:
        (row,) = [row for row in numbers["by_team"] if row["team"] == team]
        assert (row["lookups"], row["hits"], row["time_saved_ms"]) == (1, 1, 4321)
        assert row["by_source"]["LOCAL"]["misses"] == 1
        assert row["by_source"]["REMOTE"]["hits"] == 1
    assert seen[0]["totals"] == seen[1]["totals"]
    for serve in (one, two):  # and the page itself, from either
        page = httpx.get(f"{serve.url}{SLASH}", headers=serve.auth(), timeout=30)
        assert page.status_code == 200
        assert team in page.text

    # Uploads through both keep the shared store under its cap; the newest stay.
    for index in range(10):
        serve = (one, two)[index % 2]
        blob = os.urandom(4 * MIB)
        put = httpx.put(
            artifact(serve, team, f"bb{index:02x}"), content=blob, headers=serve.auth(), timeout=60
        )
        assert put.status_code in (200, 202), put.text
    deadline = time.monotonic() + 90
    while sum(stored_bytes(s3_server, bucket).values()) > CAP:
        assert time.monotonic() < deadline, stored_bytes(s3_server, bucket)
        time.sleep(0.25)
    for serve in (one, two):
        assert httpx.head(artifact(serve, team, "bb09"), headers=serve.auth()).status_code == 200

    # Kill one mid-upload (SIGKILL while a slow client streams): nothing partial is visible.
    client = s3_server.client()
    connection = http.client.HTTPConnection("127.0.0.1", one.port, timeout=60)
    try:
        connection.putrequest("PUT", f"{API}{SLASH}cc01?slug={team}")
        connection.putheader("Authorization", f"Bearer {one.token()}")
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(20 * MIB))
        connection.endheaders()
        key = f"{PREFIX}/v8/{team}/cc01"
        deadline = time.monotonic() + 60
        sent_bytes = 0
        while not [
            u
            for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if u["Key"] == key
        ]:  # a part has reached the bucket: the upload is really half done
            assert time.monotonic() < deadline
            assert sent_bytes < 16 * MIB, sent_bytes
            connection.send(os.urandom(MIB))
            sent_bytes += MIB
            time.sleep(0.05)
        one.process.kill()
        one.process.wait(30)
    finally:
        connection.close()
    assert httpx.head(artifact(two, team, "cc01"), headers=two.auth()).status_code == 404
    assert httpx.get(artifact(two, team, "cc01"), headers=two.auth()).status_code == 404
    assert key not in stored_bytes(s3_server, bucket)
    # the survivor still serves everything else
    assert httpx.get(artifact(two, team, "bb09"), headers=two.auth()).status_code == 200
    assert stats(two)["totals"] == seen[1]["totals"]


def test_a_large_upload_to_s3_streams_with_flat_memory(
    serve_factory: Callable[..., Serve],
    s3_server: S3Server,
    s3_env: dict[str, str],
    bucket: str,
    tmp_path: Path,
) -> None:
    """256 MiB up and back down through S3: the server holds about one part, never the body."""
    size = 256 * MIB
    serve = serve_factory(
        "--storage", f"s3://{bucket}", "--events-db", str(tmp_path / "events.sqlite3")
    )
    seed = os.urandom(MIB)
    sent, received = hashlib.sha256(), hashlib.sha256()
    before = memory_kib(serve.pid)
    connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=300)
    try:
        connection.putrequest("PUT", f"{API}{SLASH}{'cd' * 16}?slug=big")
        connection.putheader("Authorization", f"Bearer {serve.token()}")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        for index in range(size // MIB):
            chunk = index.to_bytes(8, "big") + seed[8:]
            sent.update(chunk)
            connection.send(chunk)
        response = connection.getresponse()
        assert response.status in (200, 202), response.read()
        response.read()
        after_upload = memory_kib(serve.pid)
        connection.request("GET", f"{API}{SLASH}{'cd' * 16}?slug=big", headers=serve.auth())
        response = connection.getresponse()
        assert response.status == 200
        while block := response.read(MIB):
            received.update(block)
        after_download = memory_kib(serve.pid)
    finally:
        connection.close()
    assert received.hexdigest() == sent.hexdigest()
    assert stored_bytes_anywhere(s3_server, bucket) == {f"v8/big/{'cd' * 16}": size}
    # parts of 8 MiB: the peak grows by a few parts at most, not by the 256 MiB that went by
    assert after_upload["VmHWM"] - before["VmRSS"] < 64 * 1024, (before, after_upload)
    assert after_download["VmHWM"] - before["VmRSS"] < 64 * 1024, (before, after_download)


def stored_bytes_anywhere(s3_server: S3Server, bucket: str) -> dict[str, int]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["Size"] for item in listed.get("Contents", [])}
