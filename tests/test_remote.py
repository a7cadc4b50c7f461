"""RemoteCache and RemoteSession against httpx.MockTransport: every request, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

import cachehook
from cachehook.config import CacheModes, RemoteSettings
from cachehook.errors import RemoteAuthError, RemoteError, RemoteProtocolError, RemoteUnavailable
from cachehook.events import Event
from cachehook.remote import (
    FAILURE_LIMIT,
    ArtifactInfo,
    ArtifactSignatureError,
    RemoteCache,
    RemoteCachingDisabledError,
    RemoteSession,
    _transport_for,
    artifact_tag,
    team_scope,
)
from tests.servers import UNRESOLVABLE_URL, CaptureProxy, FaultServer, NpmServer
from tests.waiting import GENEROUS, finishes

TOKEN = "tok-RECOGNISABLE-7f3a9c"
KEY = "0123456789abcdef0123456789abcdef"
SESSION = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
SECRET = b"a-signature-key-of-at-least-32-bytes!"
USER_AGENT = f"cachehook/{cachehook.__version__}"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that records each request (body read in full) and answers via ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def settings(**overrides: object) -> RemoteSettings:
    values: dict[str, object] = {"api": "https://cache.example.com", "token": TOKEN}
    values.update(overrides)
    return RemoteSettings(**values)  # type: ignore[arg-type]


def client(handler: Handler, **overrides: object) -> tuple[RemoteCache, Recorder]:
    recorder = Recorder(handler)
    return RemoteCache(settings(**overrides), transport=recorder.transport), recorder


def answer(status: int = 200, **kwargs: object) -> Handler:
    return lambda request: httpx.Response(status, **kwargs)  # type: ignore[arg-type]


def expected_tag(secret: bytes, key: str, team: str, body: bytes) -> str:
    """The "cachehook-hmac-v1" layout, written out independently of cachehook.remote."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for field in (b"cachehook-artifact-signature:v1", key.encode(), team.encode(), body):
        mac.update(struct.pack("<Q", len(field)) + field)
    return base64.b64encode(mac.digest()).decode()


def all_text(exc: BaseException) -> str:
    """str() and repr() of an exception and of everything it was raised from."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def _not_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cachehook.remote.is_interactive", lambda: False)


# -- request shapes ------------------------------------------------------------------------


def test_status_request_and_answer() -> None:
    cache, rec = client(answer(json={"status": "enabled", "version": "2.12.0"}), slug="my-team")
    assert cache.status() == "enabled"
    request = rec.last
    assert request.method == "GET"
    assert request.url.path == "/v8/artifacts/status"
    assert request.url.query == b"slug=my-team"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == USER_AGENT
    assert "content-type" not in request.headers
    assert rec.bodies[-1] == b""


@pytest.mark.parametrize(
    ("team_id", "slug", "query"),
    [
        ("team_abc", None, b"teamId=team_abc"),
        ("team_abc", "both", b"teamId=team_abc&slug=both"),
        (None, "only-slug", b"slug=only-slug"),
        ("abc", None, b""),  # turbo sends teamId only when it starts with team_
        ("abc", "s", b"slug=s"),
        (None, None, b""),
    ],
)
def test_team_parameters(team_id: str | None, slug: str | None, query: bytes) -> None:
    cache, rec = client(answer(404), team_id=team_id, slug=slug)
    assert cache.exists(KEY) is None
    assert rec.last.url.query == query


def test_base_url_with_a_path_prefix() -> None:
    cache, rec = client(answer(json={"status": "enabled"}), api="https://vercel.example/api")
    cache.status()
    assert str(rec.last.url) == "https://vercel.example/api/v8/artifacts/status"


def test_no_token_means_no_authorization_header() -> None:
    cache, rec = client(answer(json={"status": "enabled"}), token=None)
    cache.status()
    assert "authorization" not in rec.last.headers


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"version": "1"}', b'{"status": 3}'])
def test_status_without_a_status_is_a_protocol_error(body: bytes) -> None:
    cache, _ = client(answer(content=body))
    with pytest.raises(RemoteProtocolError):
        cache.status()


def test_exists_reads_the_headers() -> None:
    headers = {"content-length": "332", "x-artifact-duration": "1221", "x-artifact-tag": "abc="}
    cache, rec = client(answer(headers=headers))
    assert cache.exists(KEY) == ArtifactInfo(size=332, duration_ms=1221, tag="abc=")
    assert rec.last.method == "HEAD"
    assert rec.last.url.path == f"/v8/artifacts/{KEY}"
    assert rec.last.headers["authorization"] == f"Bearer {TOKEN}"


def test_exists_miss_and_missing_headers() -> None:
    cache, _ = client(answer(404))
    assert cache.exists(KEY) is None
    cache, _ = client(answer(200))
    assert cache.exists(KEY) == ArtifactInfo(size=None, duration_ms=0, tag=None)


def test_malformed_duration_is_a_protocol_error() -> None:
    cache, _ = client(answer(headers={"x-artifact-duration": "soon"}))
    with pytest.raises(RemoteProtocolError, match="x-artifact-duration"):
        cache.exists(KEY)


@pytest.mark.parametrize("key", ["", "../etc", "abc/def", "xyz", "a" * 257, "0a b"])
def test_keys_must_be_hex(key: str, tmp_path: Path) -> None:
    cache, rec = client(answer(404))
    with pytest.raises(ValueError, match="hex"):
        cache.fetch(key, tmp_path / "out")
    assert rec.requests == []


def test_fetch_streams_to_dest(tmp_path: Path) -> None:
    body = bytes(range(256)) * 1000
    headers = {"x-artifact-duration": "777", "content-type": "application/octet-stream"}
    cache, rec = client(answer(content=body, headers=headers), slug="s")
    dest = tmp_path / "artifact.tar.zst"
    info = cache.fetch(KEY, dest)
    assert info == ArtifactInfo(size=len(body), duration_ms=777, tag=None)
    assert dest.read_bytes() == body
    request = rec.last
    assert (request.method, request.url.path, request.url.query) == (
        "GET",
        f"/v8/artifacts/{KEY}",
        b"slug=s",
    )
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["user-agent"] == USER_AGENT
    assert "x-artifact-client-ci" not in request.headers  # turbo sends it on PUT and events only
    assert list(tmp_path.iterdir()) == [dest]  # no partial file left behind


def test_fetch_miss_leaves_no_file(tmp_path: Path) -> None:
    cache, _ = client(answer(404, json={"message": "Artifact not found"}))
    assert cache.fetch(KEY, tmp_path / "out") is None
    assert list(tmp_path.iterdir()) == []


def test_fetch_follows_a_redirect(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cache.example.com":
            return httpx.Response(302, headers={"location": "https://cdn.example.com/team/" + KEY})
        return httpx.Response(200, content=b"from the cdn")

    cache, rec = client(handler)
    assert cache.fetch(KEY, tmp_path / "out") is not None
    assert (tmp_path / "out").read_bytes() == b"from the cdn"
    assert "authorization" not in rec.last.headers  # httpx drops it for another origin


def test_fetch_short_body_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-length": "100"}, stream=httpx.ByteStream(b"x" * 40)
        )

    cache, _ = client(handler)
    dest = tmp_path / "out"
    with pytest.raises(RemoteProtocolError, match="40 of 100"):
        cache.fetch(KEY, dest)
    assert list(tmp_path.iterdir()) == []


def test_fetch_keeps_an_existing_dest_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    cache, _ = client(answer(500))
    with pytest.raises(RemoteUnavailable):
        cache.fetch(KEY, dest)
    assert dest.read_bytes() == b"old"


class _Chunks(httpx.SyncByteStream):
    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.count):
            yield b"\xab" * self.size


def test_fetch_never_holds_the_artifact_in_memory(tmp_path: Path) -> None:
    chunk, count = 1 << 20, 48
    cache, _ = client(lambda request: httpx.Response(200, stream=_Chunks(count, chunk)))
    tracemalloc.start()
    try:
        info = cache.fetch(KEY, tmp_path / "big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info is not None
    assert info.size == chunk * count
    assert peak < 12 * chunk, f"peak {peak} bytes for a {chunk * count} byte artifact"


def test_store_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "a.tar.zst"
    src.write_bytes(b"\x28\xb5\x2f\xfd artifact")
    cache, rec = client(answer(200, json={"urls": ["team/x"]}), team_id="team_abc")
    cache.store(KEY, src, duration_ms=1221)
    request, body = rec.last, rec.bodies[-1]
    assert (request.method, request.url.path) == ("PUT", f"/v8/artifacts/{KEY}")
    assert request.url.query == b"teamId=team_abc"
    assert body == src.read_bytes()
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in request.headers
    assert request.headers["x-artifact-duration"] == "1221"
    assert request.headers["x-artifact-client-interactive"] == "0"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == USER_AGENT
    assert "x-artifact-tag" not in request.headers
    assert "x-artifact-client-ci" not in request.headers  # not in CI


def test_store_streams_in_chunks(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(b"z" * (3 * (1 << 20) + 5))
    sizes: list[int] = []

    class Streaming(httpx.BaseTransport):  # MockTransport would read the body in full first
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            assert isinstance(request.stream, httpx.SyncByteStream)
            sizes.extend(len(chunk) for chunk in request.stream)
            return httpx.Response(200)

    cache = RemoteCache(settings(), transport=Streaming())
    cache.store(KEY, src, duration_ms=0)
    assert sum(sizes) == src.stat().st_size
    assert max(sizes) <= 1 << 20


def test_store_in_ci_sends_the_vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setattr("cachehook.remote.is_interactive", lambda: True)
    src = tmp_path / "a"
    src.write_bytes(b"x")
    cache, rec = client(answer(202, json={"urls": []}))
    cache.store(KEY, src, duration_ms=5)
    assert rec.last.headers["x-artifact-client-ci"] == "GITHUB_ACTIONS"
    assert rec.last.headers["x-artifact-client-interactive"] == "1"


@pytest.mark.parametrize("duration", [-1, 1.5, True, "10"])
def test_store_rejects_a_bad_duration(duration: object, tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"x")
    cache, rec = client(answer(200))
    with pytest.raises(ValueError, match="duration_ms"):
        cache.store(KEY, src, duration_ms=duration)  # type: ignore[arg-type]
    assert rec.requests == []


def test_query_request_and_answer() -> None:
    other, missing, failed = "ab" * 16, "cd" * 16, "ef" * 16
    payload = {
        KEY: {"size": 332, "taskDurationMs": 1221, "tag": "t="},
        other: {"size": 10, "taskDurationMs": 0},
        missing: None,
        failed: {"error": {"message": "nope"}},
    }
    cache, rec = client(answer(json=payload), slug="s")
    found = cache.query([KEY, other, missing, failed, "12" * 16])
    assert found == {
        KEY: ArtifactInfo(332, 1221, "t="),
        other: ArtifactInfo(10, 0, None),
        missing: None,
        failed: None,
        "12" * 16: None,
    }
    request = rec.last
    assert (request.method, request.url.path, request.url.query) == (
        "POST",
        "/v8/artifacts",
        b"slug=s",
    )
    assert request.headers["content-type"] == "application/json"
    assert json.loads(rec.bodies[-1]) == {"hashes": [KEY, other, missing, failed, "12" * 16]}


def test_query_falls_back_to_head_when_the_route_is_missing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(404, json={"message": "Route POST:/v8/artifacts not found"})
        if request.url.path.endswith(KEY):
            return httpx.Response(200, headers={"x-artifact-duration": "9"})
        return httpx.Response(404)

    cache, rec = client(handler)
    other = "ab" * 16
    assert cache.query([KEY, other]) == {KEY: ArtifactInfo(None, 9, None), other: None}
    assert [r.method for r in rec.requests] == ["POST", "HEAD", "HEAD"]
    cache.query([KEY])
    assert [r.method for r in rec.requests][3:] == ["HEAD"]  # the missing route is remembered


def test_query_of_nothing_sends_nothing() -> None:
    cache, rec = client(answer(500))
    assert cache.query([]) == {}
    assert rec.requests == []


def test_record_events_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERCEL", "1")
    events = [
        Event(SESSION, "LOCAL", "MISS", KEY, 0),
        Event(SESSION, "REMOTE", "HIT", KEY, 400),
    ]
    cache, rec = client(answer(200, json={}), team_id="team_x", slug="s")
    cache.record_events(events)
    request = rec.last
    assert (request.method, request.url.path) == ("POST", "/v8/artifacts/events")
    assert request.url.query == b"teamId=team_x&slug=s"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-artifact-client-ci"] == "VERCEL"
    assert request.headers["x-artifact-client-interactive"] == "0"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert rec.bodies[-1] == (
        b'[{"sessionId":"'
        + SESSION.encode()
        + b'","source":"LOCAL","event":"MISS","hash":"'
        + KEY.encode()
        + b'","duration":0},{"sessionId":"'
        + SESSION.encode()
        + b'","source":"REMOTE","event":"HIT","hash":"'
        + KEY.encode()
        + b'","duration":400}]'
    )


def test_record_events_validates_before_sending() -> None:
    cache, rec = client(answer(200))
    bad = Event(SESSION, "LOCAL", "MAYBE", KEY, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event"):
        cache.record_events([Event(SESSION, "LOCAL", "HIT", KEY, 1), bad])
    cache.record_events([])
    assert rec.requests == []


def test_context_manager_closes() -> None:
    with RemoteCache(
        settings(), transport=httpx.MockTransport(answer(json={"status": "x"}))
    ) as cache:
        assert cache.status() == "x"
    assert "cache.example.com" in repr(cache)
    assert TOKEN not in repr(cache)


# -- errors --------------------------------------------------------------------------------


def test_401_names_the_token_variable_and_hides_the_token() -> None:
    cache, _ = client(answer(401, json={"message": f"Invalid authorization token {TOKEN}"}))
    with pytest.raises(RemoteAuthError) as caught:
        cache.exists(KEY)
    text = all_text(caught.value)
    assert "CACHEHOOK_TOKEN" in text
    assert "TURBO_TOKEN" in text
    assert TOKEN not in text


@pytest.mark.parametrize("status", [401, 403])
def test_401_or_403_without_a_token_says_that_none_is_set(status: int) -> None:
    cache, recorder = client(answer(status, json={"message": "missing authorization"}), token=None)
    with pytest.raises(RemoteAuthError) as caught:
        cache.exists(KEY)
    assert "Authorization" not in recorder.last.headers
    assert "no token is set; set CACHEHOOK_TOKEN (or TURBO_TOKEN)" in str(caught.value)
    assert "refused" not in str(caught.value)


def test_403_names_the_team() -> None:
    cache, _ = client(
        answer(403, json={"error": {"code": "forbidden", "message": "Not authorized"}}),
        slug="my-team",
    )
    with pytest.raises(RemoteAuthError, match="my-team") as caught:
        cache.fetch(KEY, Path("/nonexistent/never-written"))
    assert "CACHEHOOK_TEAM" in str(caught.value)
    assert "Not authorized" in str(caught.value)
    assert not isinstance(caught.value, RemoteCachingDisabledError)


@pytest.mark.parametrize("status", ["disabled", "over_limit", "paused"])
def test_403_remote_caching_status(status: str) -> None:
    body = {"error": {"code": f"remote_caching_{status}", "message": "x"}}
    cache, _ = client(answer(403, json=body))
    with pytest.raises(RemoteCachingDisabledError) as caught:
        cache.status()
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (500, RemoteUnavailable, "500"),
        (503, RemoteUnavailable, "503"),
        (413, RemoteProtocolError, "larger than the server accepts"),
        (412, RemoteProtocolError, "Error during the artifact creation"),
        (400, RemoteProtocolError, "querystring should have required property 'team'"),
    ],
)
def test_error_statuses(status: int, error: type[RemoteError], words: str, tmp_path: Path) -> None:
    message = (
        "querystring should have required property 'team'"
        if status == 400
        else "Error during the artifact creation"
    )
    src = tmp_path / "a"
    src.write_bytes(b"x")
    cache, _ = client(answer(status, json={"message": message}))
    with pytest.raises(error, match=words):
        cache.store(KEY, src, duration_ms=1)


def test_error_body_is_read_only_in_part(tmp_path: Path) -> None:
    cache, _ = client(lambda request: httpx.Response(500, stream=_Chunks(1000, 1 << 16)))
    with pytest.raises(RemoteUnavailable) as caught:
        cache.fetch(KEY, tmp_path / "out")
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), RemoteUnavailable),
        (httpx.ConnectTimeout("timed out"), RemoteUnavailable),
        (httpx.ReadTimeout("timed out"), RemoteUnavailable),
        (httpx.WriteTimeout("timed out"), RemoteUnavailable),
        (httpx.ReadError("Connection reset by peer"), RemoteUnavailable),
        (httpx.RemoteProtocolError("illegal status line"), RemoteProtocolError),
        (httpx.DecodingError("bad gzip"), RemoteProtocolError),
    ],
)
def test_transport_errors_are_translated(raised: httpx.HTTPError, error: type[RemoteError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    cache, _ = client(handler)
    with pytest.raises(error) as caught:
        cache.status()
    assert caught.value.__cause__ is raised
    assert "cache.example.com" in str(caught.value)


def test_token_never_appears_in_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "a"
    src.write_bytes(b"x")
    cache, _ = client(answer(401, json={"message": TOKEN}))
    session = RemoteSession(
        settings(), modes=CacheModes(), on_warning=lambda m: None, transport=cache._transport
    )
    session.fetch(KEY, tmp_path / "out")
    session.store(KEY, src, duration_ms=1)
    assert TOKEN not in caplog.text


# -- signatures ----------------------------------------------------------------------------


def test_tag_layout_fixed_vector(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"the artifact body as bytes")
    tag = artifact_tag(SECRET, "0123abcd", "team_someid", src)
    assert tag == expected_tag(SECRET, "0123abcd", "team_someid", b"the artifact body as bytes")
    assert tag == "uclYpiEeSGeHiZjbNToOW0xuJtEQjX9ZwR4fMT7Wxfw="


def test_length_prefixes_separate_the_fields(tmp_path: Path) -> None:
    # With plain concatenation "ab" + "team_1" + body == "ab" + "team_" + "1" + body.
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"body")
    two.write_bytes(b"1body")
    assert artifact_tag(SECRET, "ab", "team_1", one) != artifact_tag(SECRET, "ab", "team_", two)


@pytest.mark.parametrize(
    ("team_id", "slug", "scope"),
    [
        ("team_abc", "s", "team_abc"),
        (None, "s", "s"),
        ("abc", "s", "s"),
        ("abc", None, ""),
        (None, None, ""),
    ],
)
def test_team_scope(team_id: str | None, slug: str | None, scope: str) -> None:
    assert team_scope(settings(team_id=team_id, slug=slug)) == scope


def test_store_signs_the_upload(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"signed bytes")
    cache, rec = client(answer(200), signature_key=SECRET, slug="s")
    cache.store(KEY, src, duration_ms=3)
    assert rec.last.headers["x-artifact-tag"] == expected_tag(SECRET, KEY, "s", b"signed bytes")


def test_fetch_verifies_the_tag(tmp_path: Path) -> None:
    body = b"signed bytes"
    tag = expected_tag(SECRET, KEY, "team_abc", body)
    cache, _ = client(
        answer(content=body, headers={"x-artifact-tag": tag}),
        signature_key=SECRET,
        team_id="team_abc",
    )
    info = cache.fetch(KEY, tmp_path / "out")
    assert info is not None
    assert info.tag == tag
    assert (tmp_path / "out").read_bytes() == body


@pytest.mark.parametrize(
    "tag",
    [
        None,
        "",
        "bm90IGEgdGFn",
        expected_tag(SECRET, KEY, "team_other", b"signed bytes"),  # another team's
        expected_tag(SECRET, "ab" * 16, "team_abc", b"signed bytes"),  # another key's
        expected_tag(b"another key of at least thirty-two bytes", KEY, "team_abc", b"signed bytes"),
        "ünïcode".encode("latin-1"),
    ],
)
def test_fetch_rejects_a_missing_or_wrong_tag(tag: str | bytes | None, tmp_path: Path) -> None:
    headers = {} if tag is None else {"x-artifact-tag": tag}
    cache, _ = client(
        answer(content=b"signed bytes", headers=headers), signature_key=SECRET, team_id="team_abc"
    )
    with pytest.raises(ArtifactSignatureError):
        cache.fetch(KEY, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_without_a_key_tags_are_ignored(tmp_path: Path) -> None:
    cache, _ = client(answer(content=b"x", headers={"x-artifact-tag": "whatever"}))
    info = cache.fetch(KEY, tmp_path / "out")
    assert info is not None
    assert info.tag == "whatever"


# -- RemoteSession -------------------------------------------------------------------------


class Warnings(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


ALL_MODES = CacheModes()


def session(
    handler: Handler, *, modes: CacheModes = ALL_MODES, **overrides: object
) -> tuple[RemoteSession, Recorder, Warnings]:
    recorder, warnings = Recorder(handler), Warnings()
    remote = RemoteSession(
        settings(**overrides), modes=modes, on_warning=warnings, transport=recorder.transport
    )
    return remote, recorder, warnings


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "artifact"
    path.write_bytes(b"artifact bytes")
    return path


def test_session_hit_miss_and_store(tmp_path: Path, artifact: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(200, json={"urls": []})
        if request.url.path.endswith(KEY):
            return httpx.Response(200, content=b"hit", headers={"x-artifact-duration": "41200"})
        return httpx.Response(404)

    remote, _, warnings = session(handler)
    assert remote.is_enabled
    assert remote.fetch(KEY, tmp_path / "out") == ArtifactInfo(3, 41200, None)
    assert remote.fetch("ab" * 16, tmp_path / "out2") is None
    assert remote.store(KEY, artifact, duration_ms=5) is True
    assert warnings == []
    remote.close()


def test_session_respects_the_modes(tmp_path: Path, artifact: Path) -> None:
    remote, rec, _ = session(answer(200), modes=CacheModes(remote_read=False, remote_write=True))
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert rec.requests == []
    remote, rec, _ = session(answer(200), modes=CacheModes(remote_read=True, remote_write=False))
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert rec.requests == []
    remote, _, _ = session(answer(200), modes=CacheModes(remote_read=False, remote_write=False))
    assert not remote.is_enabled


def test_session_switches_off_after_three_failures_with_one_warning(
    tmp_path: Path, artifact: Path
) -> None:
    remote, rec, warnings = session(answer(503, json={"message": "down"}))
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert remote.is_enabled
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert not remote.is_enabled
    assert len(rec.requests) == FAILURE_LIMIT
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert len(rec.requests) == FAILURE_LIMIT  # off: nothing more is sent
    assert len(warnings) == 1
    assert "503" in warnings[0]
    assert "local cache" in warnings[0]


def test_session_success_resets_the_count(tmp_path: Path) -> None:
    outcomes = iter([503, 503, 404, 503, 503, 404])
    remote, _, warnings = session(lambda request: httpx.Response(next(outcomes)))
    for _ in range(6):
        remote.fetch(KEY, tmp_path / "out")
    assert remote.is_enabled
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("status", "variable"), [(401, "CACHEHOOK_TOKEN"), (403, "CACHEHOOK_TEAM")]
)
def test_session_auth_refusal_switches_off_at_once(
    status: int, variable: str, tmp_path: Path, artifact: Path
) -> None:
    remote, rec, warnings = session(
        answer(status, json={"message": f"bad {TOKEN}"}), slug="team-slug"
    )
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert not remote.is_enabled
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert len(rec.requests) == 1
    assert len(warnings) == 1
    assert variable in warnings[0]
    assert TOKEN not in warnings[0]


def test_session_signature_failure_is_a_miss_not_a_fault(tmp_path: Path) -> None:
    remote, _, warnings = session(
        answer(content=b"x", headers={"x-artifact-tag": "d3Jvbmc="}), signature_key=SECRET
    )
    for _ in range(FAILURE_LIMIT + 1):
        assert remote.fetch(KEY, tmp_path / "out") is None
    assert remote.is_enabled
    assert len(warnings) == FAILURE_LIMIT + 1
    assert all("signature" in w and "miss" in w for w in warnings)
    assert not (tmp_path / "out").exists()


def test_session_never_raises(tmp_path: Path, artifact: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"unexpected {TOKEN}")

    remote, _, warnings = session(handler)
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert remote.store(KEY, tmp_path / "missing-file", duration_ms=1) is False
    assert remote.fetch("not hex", tmp_path / "out") is None
    assert all(TOKEN not in w for w in warnings)


def test_session_warns_about_settings() -> None:
    _, _, warnings = session(answer(200), team_id="my-team", signature_key=b"short")
    assert any("CACHEHOOK_TEAMID" in w and "team_" in w for w in warnings)
    assert any("shorter than 32 bytes" in w for w in warnings)


def test_importing_cachehook_does_not_import_httpx() -> None:
    import subprocess
    import sys

    code = "import sys, cachehook, cachehook.events, cachehook.ci; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


OpenSession = Callable[..., tuple[RemoteSession, Warnings]]


@pytest.fixture
def open_session() -> Iterator[OpenSession]:
    """``open_session(api, **settings)``: a RemoteSession over real sockets, closed at the end."""
    opened: list[RemoteSession] = []

    def start(api: str, **overrides: object) -> tuple[RemoteSession, Warnings]:
        warnings = Warnings()
        values: dict[str, object] = {"api": api, "token": TOKEN, "slug": "s"}
        values.update(overrides)
        remote_settings = RemoteSettings(**values)  # type: ignore[arg-type]
        remote = RemoteSession(remote_settings, modes=CacheModes(), on_warning=warnings)
        opened.append(remote)
        return remote, warnings

    yield start
    for remote in opened:
        remote.close()


# -- the real turborepo-remote-cache server (through the capturing proxy) ------------------

integration = pytest.mark.integration


@integration
def test_round_trip_through_the_npm_server(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    src = tmp_path / "a.tar.zst"
    src.write_bytes(body)
    with RemoteCache(remote_settings) as cache:
        assert cache.status() == "enabled"
        assert cache.fetch(KEY, tmp_path / "miss") is None
        assert cache.exists(KEY) is None
        cache.store(KEY, src, duration_ms=1221)
        assert cache.exists(KEY) is not None
        info = cache.fetch(KEY, tmp_path / "hit")
    assert (tmp_path / "hit").read_bytes() == body
    assert info == ArtifactInfo(
        size=len(body), duration_ms=0, tag=None
    )  # the server drops the duration
    assert not (tmp_path / "miss").exists()

    put = capture_proxy.find("PUT")[0]
    assert put.path == f"/v8/artifacts/{KEY}"
    assert put.query == {"slug": [remote_settings.slug]}
    assert put.body == body
    assert not put.is_chunked
    assert put.headers["content-length"] == str(len(body))
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["x-artifact-duration"] == "1221"
    assert put.headers["authorization"] == f"Bearer {remote_settings.token}"
    assert put.headers["user-agent"] == USER_AGENT
    assert put.status == 200
    assert json.loads(put.response_body) == {"urls": [f"{remote_settings.slug}/{KEY}"]}
    methods = [(r.method, r.status) for r in capture_proxy.requests]
    assert methods == [
        ("GET", 200),
        ("GET", 404),
        ("HEAD", 404),
        ("PUT", 200),
        ("HEAD", 200),
        ("GET", 200),
    ]


@integration
def test_a_plain_http_remote_loads_no_certificate(
    remote_settings: RemoteSettings,
    capture_proxy: CaptureProxy,
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading a CA bundle is ~25-50 ms of a remote hit; an http:// API has no use for one.
    assert remote_settings.api.startswith("http://")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CA bundle was loaded for a plain http remote")

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", refuse)
    with RemoteCache(remote_settings) as cache:
        cache.store(KEY, artifact, duration_ms=1)
        assert cache.fetch(KEY, tmp_path / "hit") is not None
    assert (tmp_path / "hit").read_bytes() == artifact.read_bytes()
    assert [r.method for r in capture_proxy.requests] == ["PUT", "GET"]


def test_importing_the_client_skips_httpx_s_command_line() -> None:
    # httpx._main imports click (and pygments and rich where installed): not on a remote hit.
    probe = (
        "import sys\n"
        "import cachehook.remote\n"
        "assert 'click' not in sys.modules, 'click'\n"
        "assert 'httpx._main' not in sys.modules, 'httpx._main'\n"
        "import httpx\n"
        "assert callable(httpx.main) and httpx.Client is cachehook.remote.httpx.Client\n"
        "try:\n"
        "    import httpx._main\n"
        "except ImportError as exc:\n"
        "    assert exc.name in ('rich', 'pygments', 'click'), exc  # its own dependencies\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_an_https_remote_verifies_as_httpx_does() -> None:
    transport = _transport_for("https")
    try:
        context = transport._pool._ssl_context
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        default = httpx.create_ssl_context()
        assert context.cert_store_stats() == default.cert_store_stats()
        assert context.cert_store_stats()["x509_ca"] > 0
    finally:
        transport.close()
    plain = _transport_for("http")
    try:
        unused = plain._pool._ssl_context  # never used, and it would trust nobody
        assert unused is not None
        assert unused.verify_mode == ssl.CERT_REQUIRED
        assert unused.check_hostname
        assert unused.cert_store_stats()["x509_ca"] == 0
    finally:
        plain.close()


@integration
def test_duration_header_reaches_the_caller(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, artifact: Path, tmp_path: Path
) -> None:
    capture_proxy.inject_headers = {"x-artifact-duration": "777"}
    with RemoteCache(remote_settings) as cache:
        cache.store(KEY, artifact, duration_ms=777)
        info = cache.fetch(KEY, tmp_path / "out")
    assert info is not None
    assert info.duration_ms == 777


@integration
def test_query_falls_back_to_head_on_the_npm_server(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, artifact: Path
) -> None:
    other = "ab" * 16
    with RemoteCache(remote_settings) as cache:
        cache.store(KEY, artifact, duration_ms=1)
        found = cache.query([KEY, other])
    assert found[KEY] is not None
    assert found[other] is None
    post, *heads = capture_proxy.requests[1:]
    assert (post.method, post.path, post.status) == ("POST", "/v8/artifacts", 404)
    assert post.json() == {"hashes": [KEY, other]}
    assert post.headers["content-type"] == "application/json"
    assert [(h.method, h.path, h.status) for h in heads] == [
        ("HEAD", f"/v8/artifacts/{KEY}", 200),
        ("HEAD", f"/v8/artifacts/{other}", 404),
    ]


@integration
def test_record_events_on_the_npm_server(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITLAB_CI", "true")
    events = [Event(SESSION, "LOCAL", "MISS", KEY, 0), Event(SESSION, "REMOTE", "HIT", KEY, 41200)]
    with RemoteCache(remote_settings) as cache:
        cache.record_events(events)
    (post,) = capture_proxy.find("POST", "/v8/artifacts/events")
    assert post.status == 200
    assert post.query == {"slug": [remote_settings.slug]}
    assert post.json() == [
        {"sessionId": SESSION, "source": "LOCAL", "event": "MISS", "hash": KEY, "duration": 0},
        {"sessionId": SESSION, "source": "REMOTE", "event": "HIT", "hash": KEY, "duration": 41200},
    ]
    assert list(post.json()[0]) == ["sessionId", "source", "event", "hash", "duration"]
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-artifact-client-ci"] == "GITLAB"
    assert post.headers["x-artifact-client-interactive"] == "0"
    assert post.headers["authorization"] == f"Bearer {remote_settings.token}"


@integration
def test_wrong_token_on_the_npm_server(
    remote_settings: RemoteSettings, open_session: OpenSession, tmp_path: Path, artifact: Path
) -> None:
    wrong = "chk-wrong-token-5b1d0e"
    bad = RemoteSettings(api=remote_settings.api, token=wrong, slug=remote_settings.slug)
    with RemoteCache(bad) as cache:
        assert cache.status() == "enabled"  # this server's status route takes no token
        with pytest.raises(RemoteAuthError, match="CACHEHOOK_TOKEN") as caught:
            cache.fetch(KEY, tmp_path / "out")
    assert wrong not in all_text(caught.value)
    remote, warnings = open_session(bad.api, token=wrong, slug=bad.slug)
    assert remote.store(KEY, artifact, duration_ms=1) is False
    assert not remote.is_enabled
    assert len(warnings) == 1
    assert "401" in warnings[0]
    assert wrong not in warnings[0]


@integration
def test_signed_round_trip_on_a_signing_npm_server(
    npm_server_factory: Callable[..., NpmServer],
    open_session: OpenSession,
    team_slug: str,
    artifact: Path,
    tmp_path: Path,
) -> None:
    server = npm_server_factory(TURBO_REMOTE_CACHE_SIGNATURE_KEY="server-only-stores-tags")
    signing = RemoteSettings(
        api=server.url, token=server.token, slug=team_slug, signature_key=SECRET
    )
    with RemoteCache(signing) as cache:
        cache.store(KEY, artifact, duration_ms=1)
        info = cache.fetch(KEY, tmp_path / "out")
    assert info is not None
    assert info.tag == expected_tag(SECRET, KEY, team_slug, artifact.read_bytes())
    assert (tmp_path / "out").read_bytes() == artifact.read_bytes()

    remote, warnings = open_session(
        server.url, token=server.token, slug=team_slug, signature_key=b"x" * 32
    )
    assert remote.fetch(KEY, tmp_path / "tampered") is None
    assert not (tmp_path / "tampered").exists()
    assert len(warnings) == 1
    assert "signature" in warnings[0]


@integration
def test_unsigned_server_gives_no_tag_so_a_signing_client_misses(
    remote_settings: RemoteSettings, artifact: Path, tmp_path: Path
) -> None:
    signing = RemoteSettings(
        api=remote_settings.api,
        token=remote_settings.token,
        slug=remote_settings.slug,
        signature_key=SECRET,
    )
    with RemoteCache(signing) as cache:
        cache.store(KEY, artifact, duration_ms=1)  # the tag is sent, and dropped by this server
        with pytest.raises(ArtifactSignatureError, match="no signature tag"):
            cache.fetch(KEY, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@integration
def test_body_limit_413_from_the_npm_server(
    npm_server_factory: Callable[..., NpmServer],
    open_session: OpenSession,
    team_slug: str,
    tmp_path: Path,
) -> None:
    server = npm_server_factory(BODY_LIMIT="1024")
    src = tmp_path / "big"
    src.write_bytes(b"y" * 4096)
    remote, warnings = open_session(server.url, token=server.token, slug=team_slug)
    assert remote.store(KEY, src, duration_ms=1) is False
    assert len(warnings) == 1
    assert "413" in warnings[0]
    assert "larger" in warnings[0]


# -- faults over real sockets: the session degrades, never raises, and costs little -----------


def exercise(remote: RemoteSession, tmp_path: Path, artifact: Path) -> None:
    """fetch, store, fetch: the three calls a run makes at most before the remote is off."""

    def calls() -> None:
        assert remote.fetch(KEY, tmp_path / "out") is None
        assert remote.store(KEY, artifact, duration_ms=1) is False
        assert remote.fetch(KEY, tmp_path / "out") is None

    finishes(calls)
    assert not (tmp_path / "out").exists()


@integration
def test_connection_refused(
    refused_url: str, open_session: OpenSession, tmp_path: Path, artifact: Path
) -> None:
    remote, warnings = open_session(refused_url)
    exercise(remote, tmp_path, artifact)
    assert not remote.is_enabled
    assert len(warnings) == 1
    assert "cannot connect" in warnings[0]


@integration
def test_name_that_does_not_resolve(
    open_session: OpenSession, tmp_path: Path, artifact: Path
) -> None:
    remote, warnings = open_session(UNRESOLVABLE_URL)
    exercise(remote, tmp_path, artifact)
    assert not remote.is_enabled
    assert len(warnings) == 1
    assert "cachehook-does-not-exist.invalid" in warnings[0]


@integration
def test_black_hole_costs_seconds_not_minutes(
    fault_server: Callable[..., FaultServer], tmp_path: Path, artifact: Path
) -> None:
    from cachehook.events import EventSender, session_id

    hole = fault_server("blackhole")
    settings_ = RemoteSettings(
        api=hole.url, token=TOKEN, slug="s"
    )  # default timeouts: 2 s, 1 s flush
    warnings = Warnings()

    def a_run() -> None:
        remote = RemoteSession(settings_, modes=CacheModes(), on_warning=warnings)
        assert remote.fetch(KEY, tmp_path / "out") is None
        assert remote.store(KEY, artifact, duration_ms=1) is False
        sender = EventSender(settings_, spool_dir=tmp_path / "spool", send_spool=False)
        sender.record(Event(session_id(), "LOCAL", "MISS", KEY, 0))
        sender.record(Event(session_id(), "REMOTE", "MISS", KEY, 0))
        sender.close()
        remote.close()

    # The hole never answers: without the 2 s and 1 s bounds this would never end.
    finishes(a_run)
    assert len(warnings) == 1
    assert "did not respond in time" in warnings[0]
    assert TOKEN not in warnings[0]


@integration
def test_black_hole_with_a_large_upload(
    fault_server: Callable[..., FaultServer], open_session: OpenSession, tmp_path: Path
) -> None:
    hole = fault_server("blackhole")
    src = tmp_path / "big"
    src.write_bytes(b"q" * (64 << 20))  # far more than the socket buffers hold
    remote, warnings = open_session(hole.url, timeout=1.0)
    # The stall limit is `timeout`: the hole never answers, so without it this never ends.
    assert finishes(lambda: remote.store(KEY, src, duration_ms=1)) is False
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("reset", 0, "broke"),
        ("status", 500, "500"),
        ("status", 503, "503"),
        ("status", 413, "413"),
        ("garbage", 0, "malformed"),
        ("truncated", 0, ""),
    ],
)
@integration
def test_faults_degrade_to_local(
    kind: str,
    status: int,
    words: str,
    fault_server: Callable[..., FaultServer],
    open_session: OpenSession,
    tmp_path: Path,
    artifact: Path,
) -> None:
    server = fault_server(kind, status=status)
    remote, warnings = open_session(server.url)
    exercise(remote, tmp_path, artifact)
    assert not remote.is_enabled
    assert server.connections == FAILURE_LIMIT
    assert len(warnings) == 1
    assert words in warnings[0]
    assert remote.fetch(KEY, tmp_path / "out") is None
    assert server.connections == FAILURE_LIMIT  # off: no more connections


@pytest.mark.parametrize(
    ("status", "variable"), [(401, "CACHEHOOK_TOKEN"), (403, "CACHEHOOK_TEAM")]
)
@integration
def test_auth_refusal_over_a_socket(
    status: int,
    variable: str,
    fault_server: Callable[..., FaultServer],
    open_session: OpenSession,
    tmp_path: Path,
    artifact: Path,
) -> None:
    server = fault_server(
        "status", status=status, body=json.dumps({"message": f"no: {TOKEN}"}).encode()
    )
    remote, warnings = open_session(server.url)
    exercise(remote, tmp_path, artifact)
    assert server.connections == 1
    assert len(warnings) == 1
    assert variable in warnings[0]
    assert TOKEN not in warnings[0]


@integration
def test_an_active_download_may_pause_longer_than_the_first_byte_wait(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    server = fault_server("trickle", body=b"abcdefghi", delay=0.8, chunks=3)
    settings_ = RemoteSettings(
        api=server.url, token=TOKEN, slug="s", timeout=0.5, upload_timeout=5.0
    )
    with RemoteCache(settings_) as cache:
        info = cache.fetch(KEY, tmp_path / "out")
    assert info is not None
    assert (tmp_path / "out").read_bytes() == b"abcdefghi"


@integration
def test_a_stalled_download_is_cut_by_the_upload_timeout(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    # Each piece comes far later than the deadline below: only the 0.5 s stall limit ends it.
    server = fault_server("trickle", body=b"abcdefghi", delay=10 * GENEROUS, chunks=3)
    settings_ = RemoteSettings(
        api=server.url, token=TOKEN, slug="s", timeout=5.0, upload_timeout=0.5
    )

    def fetch() -> None:
        with RemoteCache(settings_) as cache, pytest.raises(RemoteUnavailable, match="in time"):
            cache.fetch(KEY, tmp_path / "out")

    finishes(fetch)
    assert list(tmp_path.iterdir()) == []
