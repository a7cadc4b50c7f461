"""The v8 API of ``cachehook serve``, over HTTP, against a real uvicorn process."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.server.conftest import API, SLASH, raw_request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration


@pytest.fixture
def client(shared_server: Serve) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_server.url, headers=shared_server.auth(), timeout=30) as c:
        yield c


def put(client: httpx.Client, team: str, hash_: str, body: bytes, **headers: str) -> httpx.Response:
    return client.put(
        f"{API}{SLASH}{hash_}",
        params={"slug": team},
        content=body,
        headers={"Content-Type": "application/octet-stream", **headers},
    )


def event(
    source: str, kind: str, hash_: str, duration: int = 0, session: str = ""
) -> dict[str, Any]:
    return {
        "sessionId": session or str(uuid.uuid4()),
        "source": source,
        "event": kind,
        "hash": hash_,
        "duration": duration,
    }


def test_status_is_enabled(client: httpx.Client) -> None:
    response = client.get(f"{API}{SLASH}status", params={"slug": "anything"})
    assert response.status_code == 200
    assert response.json() == {"status": "enabled"}


def test_put_then_get_and_head_echo_the_metadata(client: httpx.Client, team: str) -> None:
    body = b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 300
    response = put(
        client,
        team,
        "abc123",
        body,
        **{
            "x-artifact-duration": "1234",
            "x-artifact-tag": "R5idoS0NYgvuKQscBumKyqROnVjGlHSH5EeiLBoY5NY=",
            "x-artifact-sha": "a" * 40,
            "x-artifact-dirty-hash": "b" * 64,
        },
    )
    assert response.status_code == 202  # what Vercel answers, and @vercel/sdk insists on
    assert response.json() == {"urls": [f"{API}{SLASH}abc123?slug={team}"]}
    got = client.get(f"{API}{SLASH}abc123", params={"slug": team})
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-length"] == str(len(body))
    assert got.headers["x-artifact-duration"] == "1234"
    assert got.headers["x-artifact-tag"] == "R5idoS0NYgvuKQscBumKyqROnVjGlHSH5EeiLBoY5NY="
    assert got.headers["x-artifact-sha"] == "a" * 40
    assert got.headers["x-artifact-dirty-hash"] == "b" * 64
    head = client.head(f"{API}{SLASH}abc123", params={"slug": team})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert head.headers["x-artifact-duration"] == "1234"


def test_without_duration_the_duration_is_zero_and_no_tag(client: httpx.Client, team: str) -> None:
    assert put(client, team, "ab", b"x").status_code == 202
    got = client.get(f"{API}{SLASH}ab", params={"slug": team})
    assert got.headers["x-artifact-duration"] == "0"
    assert "x-artifact-tag" not in got.headers


def test_a_miss_is_404_in_the_spec_error_shape(client: httpx.Client, team: str) -> None:
    response = client.get(f"{API}{SLASH}deadbeef", params={"slug": team})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "artifact deadbeef not found"}
    }
    head = client.head(f"{API}{SLASH}deadbeef", params={"slug": team})
    assert head.status_code == 404
    assert head.content == b""


def test_put_again_replaces_the_artifact(client: httpx.Client, team: str) -> None:
    put(client, team, "cafe", b"first", **{"x-artifact-duration": "1"})
    put(client, team, "cafe", b"second", **{"x-artifact-duration": "2"})
    got = client.get(f"{API}{SLASH}cafe", params={"slug": team})
    assert (got.content, got.headers["x-artifact-duration"]) == (b"second", "2")


def test_artifacts_are_namespaced_by_team(client: httpx.Client, team: str) -> None:
    put(client, team, "f00d", b"ours")
    other = client.get(f"{API}{SLASH}f00d", params={"slug": f"{team}-other"})
    assert other.status_code == 404
    # teamId wins over slug, as turbo and the npm server file it
    response = client.put(
        f"{API}{SLASH}beef",
        params={"teamId": f"team_{team}", "slug": team},
        content=b"by-id",
    )
    assert response.status_code == 202
    assert client.get(f"{API}{SLASH}beef", params={"slug": team}).status_code == 404
    by_id = client.get(f"{API}{SLASH}beef", params={"teamId": f"team_{team}"})
    assert by_id.content == b"by-id"


def test_batch_query_answers_size_duration_and_tag_or_null(client: httpx.Client, team: str) -> None:
    put(client, team, "0a0b", b"12345", **{"x-artifact-duration": "77", "x-artifact-tag": "dGFn"})
    put(client, team, "0c0d", b"1", **{"x-artifact-duration": "5"})
    response = client.post(API, params={"slug": team}, json={"hashes": ["0a0b", "0c0d", "0e0f"]})
    assert response.status_code == 200
    assert response.json() == {
        "0a0b": {"size": 5, "taskDurationMs": 77, "tag": "dGFn"},
        "0c0d": {"size": 1, "taskDurationMs": 5},
        "0e0f": None,
    }


def test_events_are_recorded_and_counted(
    shared_server: Serve, client: httpx.Client, team: str
) -> None:
    session = str(uuid.uuid4())
    events = [
        event("LOCAL", "MISS", "aa", session=session),
        event("REMOTE", "HIT", "aa", 1500, session=session),
        event("LOCAL", "HIT", "bb", 700, session=session),
        event("LOCAL", "MISS", "cc", session=session),
        event("REMOTE", "MISS", "cc", session=session),
    ]
    response = client.post(
        f"{API}{SLASH}events",
        params={"slug": team},
        json=events,
        headers={"x-artifact-client-ci": "GITHUB_ACTIONS", "x-artifact-client-interactive": "0"},
    )
    assert response.status_code == 200
    stats = httpx.get(f"{shared_server.url}{SLASH}api{SLASH}stats").json()
    (ours,) = [row for row in stats["by_team"] if row["team"] == team]
    assert (ours["lookups"], ours["hits"], ours["misses"]) == (3, 2, 1)
    assert ours["hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert ours["time_saved_ms"] == 2200
    assert ours["by_source"]["LOCAL"] == {
        "hits": 1,
        "misses": 2,
        "time_saved_ms": 700,
        "hit_rate": pytest.approx(1 / 3, abs=1e-4),
    }
    assert ours["by_source"]["REMOTE"]["hits"] == 1
    assert ours["by_source"]["REMOTE"]["misses"] == 1


def test_events_without_user_agent_or_duration_are_accepted(
    shared_server: Serve, team: str
) -> None:
    # turbo sends no User-Agent on events; the schema makes duration optional
    body = f'[{{"sessionId":"{uuid.uuid4()}","source":"LOCAL","event":"MISS","hash":"12HKQ"}}]'
    response = raw_request(
        shared_server.port,
        "POST",
        f"{API}{SLASH}events?slug={team}",
        headers={
            "Authorization": f"Bearer {shared_server.token()}",
            "Content-Type": "application/json",
        },
        body=body.encode(),
    )
    assert response.status == 200


def test_preflight_allows_the_authorization_header(client: httpx.Client) -> None:
    response = client.options(f"{API}{SLASH}abc", headers={"Authorization": ""})
    assert response.status_code == 200
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "x-artifact-duration" in allowed
    assert "location" not in response.headers


def test_unknown_routes_and_methods(client: httpx.Client) -> None:
    missing = client.get(f"{SLASH}v7{SLASH}artifacts{SLASH}abc")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.delete(f"{API}{SLASH}abc", params={"slug": "t"})
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", f"{API}{SLASH}abc", "GET, HEAD, PUT, OPTIONS"),
        ("POST", f"{API}{SLASH}abc", "GET, HEAD, PUT, OPTIONS"),
        ("GET", API, "POST, DELETE, OPTIONS"),
        ("PUT", f"{API}{SLASH}status", "GET, OPTIONS"),
        ("GET", f"{API}{SLASH}events", "POST, OPTIONS"),
        ("POST", f"{SLASH}healthz", "GET, HEAD"),
        ("DELETE", f"{SLASH}api{SLASH}stats", "GET, HEAD"),
        ("PUT", SLASH, "GET, HEAD"),
    ],
)
def test_every_405_names_the_allowed_methods(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, params={"slug": "t"})
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed"


# -- ids and sessions as real clients send them (issue 12) ----------------------------------

CLIENT_IDS = [
    "13488902816378295538.tar.gz",  # Nx with @vercel/remote-nx
    "12HKQaOmR5t5Uy6vdcQsNIiZgHGB",  # Vercel's docs
    "86cc3cbba4671cb6",  # turbo
    "a-b_c.d",
]


@pytest.mark.parametrize("hash_", CLIENT_IDS)
def test_artifact_ids_of_every_client_round_trip(
    client: httpx.Client, team: str, hash_: str
) -> None:
    assert put(client, team, hash_, b"body of " + hash_.encode()).status_code == 202
    assert client.head(f"{API}{SLASH}{hash_}", params={"slug": team}).status_code == 200
    got = client.get(f"{API}{SLASH}{hash_}", params={"slug": team})
    assert got.content == b"body of " + hash_.encode()
    query = client.post(API, params={"slug": team}, json={"hashes": [hash_, "nope.tar.gz"]})
    assert query.json() == {
        hash_: {"size": len(got.content), "taskDurationMs": 0},
        "nope.tar.gz": None,
    }


def test_a_retried_batch_counts_once(shared_server: Serve, client: httpx.Client, team: str) -> None:
    session = "<id>"  # the seed's own sessionId
    batch = [
        event("LOCAL", "MISS", "aa", session=session),
        event("REMOTE", "HIT", "aa", 900, session=session),
    ]
    for _ in range(3):  # the answer was lost twice: the client sent it again
        response = client.post(f"{API}{SLASH}events", params={"slug": team}, json=batch)
        assert response.status_code == 200
    other_run = [event("REMOTE", "HIT", "aa", 900, session="another run")]
    assert (
        client.post(f"{API}{SLASH}events", params={"slug": team}, json=other_run).status_code == 200
    )
    stats = httpx.get(f"{shared_server.url}{SLASH}api{SLASH}stats").json()
    (ours,) = [row for row in stats["by_team"] if row["team"] == team]
    assert (ours["lookups"], ours["hits"], ours["time_saved_ms"]) == (2, 2, 1800)
    assert ours["by_source"]["LOCAL"]["misses"] == 1


# -- the default team and deleting a team's artifacts -------------------------------------


def test_a_request_without_a_team_uses_the_tokens_default_team(shared_server: Serve) -> None:
    auth = shared_server.auth("alpha-only")  # default-team = "alpha"
    hash_ = uuid.uuid4().hex
    stored = httpx.put(f"{shared_server.url}{API}{SLASH}{hash_}", content=b"personal", headers=auth)
    assert stored.status_code == 202, stored.text
    assert stored.json() == {"urls": [f"{API}{SLASH}{hash_}?slug=alpha"]}
    by_slug = httpx.get(
        f"{shared_server.url}{API}{SLASH}{hash_}", params={"slug": "alpha"}, headers=auth
    )
    assert by_slug.content == b"personal"
    # a token without a default team still has to name one
    response = httpx.get(f"{shared_server.url}{API}{SLASH}{hash_}", headers=shared_server.auth())
    assert response.status_code == 400
    assert "teamId or slug" in response.json()["error"]["message"]


def test_delete_all_artifacts_needs_admin_and_touches_one_team(
    shared_server: Serve, client: httpx.Client, team: str
) -> None:
    for hash_ in ("aa01", "aa02.tar.gz"):
        put(client, team, hash_, b"shared body")
    put(client, f"{team}-keep", "aa01", b"shared body")  # the same blob, another team
    refused = client.delete(API, params={"slug": team})
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]["message"]
    admin = shared_server.auth("admin")
    deleted = httpx.delete(f"{shared_server.url}{API}", params={"slug": team}, headers=admin)
    assert deleted.status_code == 200
    assert deleted.json() == {"deletedCount": 2}
    assert client.get(f"{API}{SLASH}aa01", params={"slug": team}).status_code == 404
    assert client.head(f"{API}{SLASH}aa02.tar.gz", params={"slug": team}).status_code == 404
    kept = client.get(f"{API}{SLASH}aa01", params={"slug": f"{team}-keep"})
    assert kept.content == b"shared body"
    again = httpx.delete(f"{shared_server.url}{API}", params={"slug": team}, headers=admin)
    assert again.json() == {"deletedCount": 0}


def test_healthz_needs_no_token(shared_server: Serve) -> None:
    assert httpx.get(f"{shared_server.url}{SLASH}healthz").json() == {"status": "ok"}


def test_an_upload_is_invisible_until_complete(shared_server: Serve, team: str) -> None:
    released = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"first half;"
        released.wait(10)
        yield b"second half"

    def upload() -> int:
        with httpx.Client(base_url=shared_server.url, headers=shared_server.auth()) as c:
            return c.put(
                f"{API}{SLASH}0ff1ce",
                params={"slug": team},
                content=slow_body(),
                headers={"Content-Length": "22"},
            ).status_code

    with (
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=shared_server.url, headers=shared_server.auth()) as c,
    ):
        future = pool.submit(upload)
        time.sleep(0.3)  # the first half is on the server
        assert c.get(f"{API}{SLASH}0ff1ce", params={"slug": team}).status_code == 404
        released.set()
        assert future.result(timeout=10) == 202
        assert c.get(f"{API}{SLASH}0ff1ce", params={"slug": team}).content == (
            b"first half;second half"
        )


def test_an_aborted_upload_leaves_nothing(shared_server: Serve, team: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", shared_server.port, timeout=10)
    connection.putrequest("PUT", f"{API}{SLASH}abad1dea?slug={team}")
    connection.putheader("Authorization", f"Bearer {shared_server.token()}")
    connection.putheader("Content-Length", "100000")
    connection.endheaders(b"x" * 50_000)
    time.sleep(0.3)
    connection.close()  # half the body, then gone
    deadline = time.monotonic() + 5
    while any((shared_server.storage / "uploads").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any((shared_server.storage / "uploads").iterdir())
    response = httpx.get(
        f"{shared_server.url}{API}{SLASH}abad1dea",
        params={"slug": team},
        headers=shared_server.auth(),
    )
    assert response.status_code == 404


def test_workers_share_one_storage(serve_factory: Callable[..., Serve]) -> None:
    serve = serve_factory("--log-level", "info", workers=2)
    blobs = {f"{index:04x}": uuid.uuid4().bytes * (index * 97 + 1) for index in range(60)}

    def round_trip(item: tuple[str, bytes]) -> bool:
        hash_, body = item
        with httpx.Client(base_url=serve.url, headers=serve.auth(), timeout=30) as c:
            assert put(c, "shared", hash_, body, **{"x-artifact-duration": "3"}).status_code == 202
            c.post(
                f"{API}{SLASH}events",
                params={"slug": "shared"},
                json=[event("REMOTE", "HIT", hash_, 3)],
            ).raise_for_status()
            # a new connection may land on the other worker
            with httpx.Client(base_url=serve.url, headers=serve.auth(), timeout=30) as other:
                return other.get(f"{API}{SLASH}{hash_}", params={"slug": "shared"}).content == body

    with ThreadPoolExecutor(12) as pool:
        assert all(pool.map(round_trip, blobs.items()))
    stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
    assert stats["totals"]["by_source"]["REMOTE"]["hits"] == 60
    assert stats["totals"]["time_saved_ms"] == 180
    pids = {line for line in serve.log.read_text().splitlines() if "Started server process" in line}
    assert len(pids) == 2, serve.log.read_text()
