"""Hostile requests to ``cachehook serve``: every one is refused, and nothing is written."""

from __future__ import annotations

import json
import socket
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.server.conftest import API, SLASH, raw_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def _length_of(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def error_of(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    assert set(data) == {"error"}, data
    assert isinstance(data["error"]["code"], str)
    assert isinstance(data["error"]["message"], str)
    return dict(data["error"])


# -- traversal ---------------------------------------------------------------------------

TRAVERSAL_HASHES = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2Fevil",
    f"..{SLASH}..{SLASH}evil",
    f"abc{SLASH}..{SLASH}..{SLASH}x",
    "%2e%2e%2f%2e%2e%2fx",
    "abc%00",
    "abc%2F",
    "..",
    ".",
    ".hidden",
    "a%20b",
    "a:b",
    "a" * 257,
]


@pytest.mark.parametrize("method", ["PUT", "GET", "HEAD"])
@pytest.mark.parametrize("hash_", TRAVERSAL_HASHES)
def test_traversal_in_the_hash_is_refused(
    shared_server: Serve, team: str, method: str, hash_: str
) -> None:
    parent = shared_server.storage.parent
    before = files_under(parent)
    response = raw_request(
        shared_server.port,
        method,
        f"{API}{SLASH}{hash_}?slug={team}",
        headers=shared_server.auth(),
        body=b"payload" if method == "PUT" else None,
    )
    assert response.status == 400, response
    if method != "HEAD":
        error_of(response.body)
    new = {name for name in files_under(parent) - before if not name.startswith("storage")}
    assert new == set()


TRAVERSAL_TEAMS = [
    "slug=..",
    "slug=..%2F..%2Fx",
    f"slug=..{SLASH}x",
    "slug=a%2Fb",
    "teamId=team_x%2F..%2F..",
    "slug=.hidden",
    "slug=",
    "teamId=",
    "slug=a%00b",
    "slug=" + "a" * 101,
    "slug=acme&slug=other",
    "teamId=a&teamId=b",
]


@pytest.mark.parametrize("method", ["PUT", "GET"])
@pytest.mark.parametrize("query", TRAVERSAL_TEAMS)
def test_traversal_in_the_team_is_refused(shared_server: Serve, method: str, query: str) -> None:
    before = files_under(shared_server.storage.parent)
    response = raw_request(
        shared_server.port,
        method,
        f"{API}{SLASH}abcdef?{query}",
        headers=shared_server.auth(),
        body=b"payload" if method == "PUT" else None,
    )
    assert response.status == 400, response
    error = error_of(response.body)
    assert error["code"] == "bad_request"
    assert error["field"] in ("slug", "teamId")
    after = files_under(shared_server.storage.parent)
    assert {name for name in after - before if not name.startswith("storage")} == set()


def test_no_team_is_refused(shared_server: Serve) -> None:
    response = httpx.get(f"{shared_server.url}{API}{SLASH}abc", headers=shared_server.auth())
    assert response.status_code == 400
    assert "teamId or slug" in response.json()["error"]["message"]


# -- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-0123456789",
        "Basic dXNlcjpwYXNz",
        "bearer{}",
        "Token {}",
    ],
)
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", f"{API}{SLASH}abc"),
        ("HEAD", f"{API}{SLASH}abc"),
        ("PUT", f"{API}{SLASH}abc"),
        ("POST", API),
        ("POST", f"{API}{SLASH}events"),
        ("GET", f"{API}{SLASH}status"),
    ],
)
def test_a_wrong_or_missing_token_is_401(
    shared_server: Serve, team: str, authorization: str | None, method: str, route: str
) -> None:
    headers = {}
    if authorization is not None:
        # "bearer{}" glues the real token to the scheme: not a bearer token either
        headers["Authorization"] = authorization.format(shared_server.token())
    body = b"[]" if method in ("PUT", "POST") else None
    response = raw_request(
        shared_server.port, method, f"{route}?slug={team}", headers=headers, body=body
    )
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    if method != "HEAD":
        assert error_of(response.body)["code"] == "unauthorized"
    assert shared_server.token() not in response.body.decode()


def test_the_token_scheme_is_case_insensitive(shared_server: Serve) -> None:
    response = httpx.get(
        f"{shared_server.url}{API}{SLASH}status",
        headers={"Authorization": f"bearer {shared_server.token()}"},
    )
    assert response.status_code == 200


def test_two_authorization_headers_are_refused(shared_server: Serve, team: str) -> None:
    connection_headers = [
        ("Authorization", "Bearer wrong-token-0123456789"),
        ("Authorization", f"Bearer {shared_server.token()}"),
    ]
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        head = f"GET {API}{SLASH}abc?slug={team} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in connection_headers)
        sock.sendall((head + "\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_read_only_token_cannot_write(shared_server: Serve, team: str) -> None:
    response = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        content=b"payload",
        headers=shared_server.auth("reader"),
    )
    assert response.status_code == 403
    error = response.json()["error"]
    message = "token 'reader' may not write artifacts (no 'write' scope)"
    assert error == {"code": "forbidden", "message": message}
    # it may still read, and there is nothing to read
    get = httpx.get(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        headers=shared_server.auth("reader"),
    )
    assert get.status_code == 404


def test_a_token_cannot_use_another_team(shared_server: Serve) -> None:
    for method in ("GET", "PUT"):
        response = httpx.request(
            method,
            f"{shared_server.url}{API}{SLASH}abc",
            params={"slug": "beta"},
            content=b"x" if method == "PUT" else None,
            headers=shared_server.auth("alpha-only"),
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    events = httpx.post(
        f"{shared_server.url}{API}{SLASH}events",
        params={"slug": "beta"},
        json=[],
        headers=shared_server.auth("alpha-only"),
    )
    assert events.status_code == 403
    # with teamId and slug both given the artifact lives under teamId: that is what is checked
    sneaky = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"teamId": "beta", "slug": "alpha"},
        content=b"x",
        headers=shared_server.auth("alpha-only"),
    )
    assert sneaky.status_code == 403
    allowed = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": "alpha"},
        content=b"x",
        headers=shared_server.auth("alpha-only"),
    )
    assert allowed.status_code == 202


# -- sizes -------------------------------------------------------------------------------


def test_a_declared_oversized_body_is_413_before_it_is_sent(shared_server: Serve) -> None:
    # The body limit of the shared server is 1 MiB; only the head is sent, so a 413 that
    # arrives proves the server answered without waiting for (or buffering) the body.
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        head = (
            f"PUT {API}{SLASH}abc?slug=big HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {shared_server.token()}\r\n"
            f"Content-Length: {(1 << 30) * 8}\r\n\r\n"
        )
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(_body_of(answer)) < _length_of(answer):
            chunk = sock.recv(65536)  # the head and the body may come in separate segments
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    body = _body_of(answer)
    assert error_of(body)["code"] == "payload_too_large"


def test_an_undeclared_oversized_body_is_413_and_not_kept(shared_server: Serve, team: str) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check up front
        for _ in range(40):
            yield b"z" * 65536

    response = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        content=chunks(),
        headers=shared_server.auth(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not any((shared_server.storage / "uploads").iterdir())
    get = httpx.get(
        f"{shared_server.url}{API}{SLASH}abc", params={"slug": team}, headers=shared_server.auth()
    )
    assert get.status_code == 404


def test_an_exactly_full_body_is_accepted(shared_server: Serve, team: str) -> None:
    response = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        content=b"y" * (1 << 20),
        headers=shared_server.auth(),
    )
    assert response.status_code == 202


def test_an_oversized_events_body_is_413(shared_server: Serve, team: str) -> None:
    response = httpx.post(
        f"{shared_server.url}{API}{SLASH}events",
        params={"slug": team},
        content=b"[" + b" " * (2 << 20) + b"]",
        headers=shared_server.auth(),
    )
    assert response.status_code == 413


def test_an_empty_artifact_is_refused(shared_server: Serve, team: str) -> None:
    response = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        content=b"",
        headers=shared_server.auth(),
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-artifact-duration", "-1"),
        ("x-artifact-duration", "12ms"),
        ("x-artifact-duration", "99999999999999999999"),
        ("x-artifact-tag", "A" * 601),
        ("x-artifact-tag", "not base64!"),
        ("x-artifact-sha", "xyz"),
        ("x-artifact-dirty-hash", "0" * 129),
        ("x-artifact-client-ci", "X" * 51),
        ("x-artifact-client-interactive", "2"),
        ("x-artifact-client-interactive", "yes"),
    ],
)
def test_bad_upload_headers_are_400_naming_the_header(
    shared_server: Serve, team: str, header: str, value: str
) -> None:
    response = httpx.put(
        f"{shared_server.url}{API}{SLASH}abc",
        params={"slug": team},
        content=b"x",
        headers={**shared_server.auth(), header: value},
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == header


# -- events ------------------------------------------------------------------------------

GOOD = {
    "sessionId": "41f6c603-7ff5-4fa6-a2d3-962a1111e0d4",
    "source": "REMOTE",
    "event": "HIT",
    "hash": "86cc3cbba4671cb6",
    "duration": 400,
}


def with_(**changes: object) -> dict[str, Any]:
    event = {**GOOD, **changes}
    return {key: value for key, value in event.items() if value is not ...}


BAD_EVENT_BODIES = [
    (b"not json", "body"),
    (b"{", "body"),
    (json.dumps(GOOD).encode(), "body"),  # an object, not an array
    (b'"text"', "body"),
    (b"null", "body"),
    (json.dumps([GOOD] * 1001).encode(), "body"),
    (json.dumps([GOOD, "x"]).encode(), "[1]"),
    (json.dumps([with_(source="BOGUS")]).encode(), "[0].source"),
    (json.dumps([with_(source="local")]).encode(), "[0].source"),
    (json.dumps([with_(source=...)]).encode(), "[0].source"),
    (json.dumps([with_(event="NOPE")]).encode(), "[0].event"),
    (json.dumps([with_(event=...)]).encode(), "[0].event"),
    (json.dumps([GOOD, with_(hash=...)]).encode(), "[1].hash"),
    (json.dumps([with_(hash="")]).encode(), "[0].hash"),
    (json.dumps([with_(hash="has space")]).encode(), "[0].hash"),
    (json.dumps([with_(hash=123)]).encode(), "[0].hash"),
    (json.dumps([with_(hash="a" * 257)]).encode(), "[0].hash"),
    (json.dumps([with_(sessionId="")]).encode(), "[0].sessionId"),
    (json.dumps([with_(sessionId="s" * 129)]).encode(), "[0].sessionId"),
    (json.dumps([with_(sessionId="new\nline")]).encode(), "[0].sessionId"),
    (b"[" * 100_000 + b"]" * 100_000, "body"),  # was a 500 with a traceback (issue 12)
    (
        json.dumps(
            [with_(extra=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])]
        ).encode(),
        "body",
    ),
    (json.dumps([with_(sessionId=...)]).encode(), "[0].sessionId"),
    (json.dumps([with_(sessionId=7)]).encode(), "[0].sessionId"),
    (json.dumps([with_(duration=-1)]).encode(), "[0].duration"),
    (json.dumps([with_(duration="400")]).encode(), "[0].duration"),
    (json.dumps([with_(duration=True)]).encode(), "[0].duration"),
    (json.dumps([with_(duration=None)]).encode(), "[0].duration"),
    (json.dumps([with_(duration=10**15)]).encode(), "[0].duration"),
    (
        b'[{"sessionId":"41f6c603-7ff5-4fa6-a2d3-962a1111e0d4","source":"LOCAL",'
        b'"event":"HIT","hash":"ab","duration":NaN}]',
        "[0].duration",
    ),
]


def team_stats(serve: Serve, team: str) -> list[dict[str, Any]]:
    stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
    return [row for row in stats["by_team"] if row["team"] == team]


@pytest.mark.parametrize(("body", "field"), BAD_EVENT_BODIES)
def test_bad_event_bodies_are_400_naming_the_field(
    shared_server: Serve, team: str, body: bytes, field: str
) -> None:
    response = httpx.post(
        f"{shared_server.url}{API}{SLASH}events",
        params={"slug": team},
        content=body,
        headers={**shared_server.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["field"] == field
    if field != "body":
        assert error["message"].startswith(field)
    assert team_stats(shared_server, team) == []  # nothing of a refused batch is kept


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-artifact-client-ci", "C" * 51), ("x-artifact-client-interactive", "2")],
)
def test_bad_event_headers_are_400(
    shared_server: Serve, team: str, header: str, value: str
) -> None:
    url = f"{shared_server.url}{API}{SLASH}events"
    response = httpx.post(
        url, params={"slug": team}, json=[GOOD], headers={**shared_server.auth(), header: value}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == header
    assert team_stats(shared_server, team) == []
    ok = httpx.post(
        url,
        params={"slug": team},
        json=[GOOD],
        headers={**shared_server.auth(), "x-artifact-client-ci": "C" * 50},
    )
    assert ok.status_code == 200
    assert team_stats(shared_server, team)[0]["hits"] == 1


def test_valid_uuid_in_upper_case_is_accepted(shared_server: Serve, team: str) -> None:
    response = httpx.post(
        f"{shared_server.url}{API}{SLASH}events",
        params={"slug": team},
        json=[with_(sessionId=str(uuid.uuid4()).upper())],
        headers=shared_server.auth(),
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param({"checksum": None}, id="missing-field"),
        pytest.param({"duration_ms": "1234"}, id="wrong-type"),
        pytest.param({"size": -7}, id="negative-size"),
        pytest.param({"checksum": "not-a-digest"}, id="bad-digest"),
    ],
)
def test_a_malformed_stored_record_reads_as_a_miss(
    shared_server: Serve, team: str, damage: dict[str, object]
) -> None:
    """A damaged record in the server's store is evicted: 404 to GET, HEAD and a query, never
    a 500, never another artifact's bytes; the next upload is stored whole."""
    from cachehook.store import LocalStore

    url, auth = f"{shared_server.url}{API}{SLASH}c0ffee", shared_server.auth()
    body = b"\x28\xb5\x2f\xfd" + uuid.uuid4().bytes * 100
    headers = {"Content-Type": "application/octet-stream", "x-artifact-duration": "1234"}
    put = httpx.put(url, params={"slug": team}, content=body, headers={**auth, **headers})
    assert put.status_code == 202, put.text
    name = f"m/v8/{team}/c0ffee"
    with LocalStore(shared_server.storage / "artifacts", max_size=10**12) as store:
        fields = json.loads(store._cache.get(name))
        record = {n: v for n, v in {**fields, **damage}.items() if v is not None}
        store._cache.set(name, json.dumps(record))
    assert httpx.head(url, params={"slug": team}, headers=auth).status_code == 404
    assert httpx.get(url, params={"slug": team}, headers=auth).status_code == 404
    query = httpx.post(
        f"{shared_server.url}{API}",
        params={"slug": team},
        json={"hashes": ["c0ffee"]},
        headers=auth,
    )
    assert query.status_code == 200, query.text
    assert query.json() == {"c0ffee": None}
    again = httpx.put(url, params={"slug": team}, content=body, headers={**auth, **headers})
    assert again.status_code == 202
    got = httpx.get(url, params={"slug": team}, headers=auth)
    assert (got.status_code, got.content) == (200, body)
    assert got.headers["x-artifact-duration"] == "1234"
