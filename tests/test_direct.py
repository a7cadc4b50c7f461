"""``_direct``: a hit's requests over http.client, checked against the httpx path (issue 11).

The two requests are a remote hit's download (``GET /v8/artifacts/{key}``) and the usage
events a run in CI sends (``POST /v8/artifacts/events``). Every test talks to a real server on
127.0.0.1. Where ``RemoteCache`` (httpx) already has a message for an answer or a fault, the
request over http.client is made to the same server and must raise the same class with the same
words.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import certifi
import httpx
import pytest

from cachehook import events as events_module
from cachehook._direct import DirectClient, NeedsHttpxError, Target, direct_target, tls_context
from cachehook._remote_api import ArtifactInfo, ArtifactSignatureError
from cachehook._session import RemoteSession
from cachehook.config import CacheModes, RemoteSettings
from cachehook.errors import RemoteAuthError, RemoteError, RemoteProtocolError, RemoteUnavailable
from cachehook.events import Event, EventSender, session_id
from cachehook.remote import RemoteCache
from tests.servers import FaultServer, _read_request
from tests.waiting import GENEROUS, finishes

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.servers import CaptureProxy, NpmServer, RedirectServer

pytestmark = pytest.mark.integration

TOKEN = "tok-RECOGNISABLE-7f3a9c"
KEY = "0123456789abcdef0123456789abcdef"
SECRET = b"a-signature-key-of-at-least-32-bytes!"


_opened: list[DirectClient] = []


def downloader(settings: RemoteSettings, **options: object) -> DirectClient:
    """A ``DirectClient`` for ``settings``, closed when the test ends (``_close_downloaders``)."""
    target = direct_target(settings)
    assert target is not None, settings.api
    made = DirectClient(settings, target, **options)  # type: ignore[arg-type]
    _opened.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_downloaders() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def both_ways(settings: RemoteSettings, dest: Path) -> list[RemoteError | ArtifactInfo | None]:
    """What ``fetch`` gives over http.client, then over httpx (an error is returned)."""
    found: list[RemoteError | ArtifactInfo | None] = []
    fast = downloader(settings)
    with RemoteCache(settings) as slow:
        for fetch in (fast.fetch, slow.fetch):
            try:
                found.append(finishes(lambda fetch=fetch: fetch(KEY, dest)))  # type: ignore[misc]
            except RemoteError as exc:
                found.append(exc)
    fast.close()
    return found


@pytest.fixture
def stored(remote_settings: RemoteSettings, tmp_path: Path) -> bytes:
    """A 1 MiB (and a bit) artifact stored as ``KEY`` through httpx."""
    body = os.urandom(1 << 20) + b"tail"
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    with RemoteCache(remote_settings) as cache:
        cache.store(KEY, src, duration_ms=1)
    return body


# -- the request and the round trip --------------------------------------------------------


def test_round_trip_in_a_process_without_httpx(
    remote_settings: RemoteSettings, stored: bytes, tmp_path: Path
) -> None:
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from cachehook._session import RemoteSession\n"
        "from cachehook.config import CacheModes, RemoteSettings\n"
        "settings = RemoteSettings(**json.loads(sys.argv[1]))\n"
        "seen = []\n"
        "session = RemoteSession(settings, modes=CacheModes(), on_warning=seen.append)\n"
        "info = session.fetch(sys.argv[2], Path(sys.argv[3]))\n"
        "session.close()\n"
        "loaded = sorted(m for m in ('httpx', 'httpcore', 'h11', 'cachehook.remote')"
        " if m in sys.modules)\n"
        "print(json.dumps([info, seen, loaded]))\n"
    )
    fields = remote_settings._asdict()
    dest = tmp_path / "hit.bin"
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(fields), KEY, str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=GENEROUS,
    )
    assert done.returncode == 0, done.stderr
    info, warnings, loaded = json.loads(done.stdout)
    assert loaded == [], "a remote hit's download imports no httpx"
    assert warnings == []
    assert info == [len(stored), 0, None]
    assert dest.read_bytes() == stored


def test_the_request_is_the_one_httpx_sends(
    capture_proxy: CaptureProxy, npm_server: NpmServer, tmp_path: Path
) -> None:
    # A path prefix, both team parameters, and a slug that needs quoting.
    settings = RemoteSettings(
        api=f"{capture_proxy.url}/pre/fix",
        token=TOKEN,
        team_id="team_abc",
        slug="a b+c/d&é",
    )
    assert both_ways(settings, tmp_path / "out") == [None, None]  # the prefix is not served
    fast, slow = capture_proxy.find("GET")
    assert fast.target == slow.target
    assert fast.target.startswith(f"/pre/fix/v8/artifacts/{KEY}?teamId=team_abc&slug=")
    assert fast.headers == slow.headers
    assert fast.headers["authorization"] == f"Bearer {TOKEN}"
    assert fast.headers["accept-encoding"] == "identity"
    assert "x-artifact-client-ci" not in fast.headers  # turbo sends it on PUT and events only


def test_no_token_no_authorization(capture_proxy: CaptureProxy, tmp_path: Path) -> None:
    settings = RemoteSettings(api=capture_proxy.url, slug="s")
    both_ways(settings, tmp_path / "out")
    fast, slow = capture_proxy.find("GET")
    assert "authorization" not in fast.headers
    assert fast.headers == slow.headers


def test_a_hit_and_a_miss_over_one_kept_connection(
    remote_settings: RemoteSettings, stored: bytes, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    fast = downloader(remote_settings, progress=lambda w, d, t: seen.append((d, t)))
    assert fast.fetch("ab" * 16, tmp_path / "miss") is None
    kept = fast._idle[-1][1]
    assert fast.fetch(KEY, tmp_path / "hit") == ArtifactInfo(len(stored), 0, None)
    assert fast._idle[-1][1] is kept, "the connection is used again"
    assert (tmp_path / "hit").read_bytes() == stored
    assert seen[-1] == (len(stored), len(stored))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hit", "src.bin"]
    assert kept.sock is not None
    kept.sock.shutdown(2)  # as if the server had closed it: not used again
    assert fast.fetch(KEY, tmp_path / "again") is not None
    assert fast._idle[-1][1] is not kept
    fast.close()
    assert fast._idle == []


# -- what httpx keeps: proxies, redirects, odd URLs -------------------------------------------


@pytest.mark.parametrize("name", ["http_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
def test_a_proxy_in_the_environment_leaves_the_download_to_httpx(
    name: str,
    fault_server: Callable[..., FaultServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    proxy = fault_server("status", status=404)  # a proxy that finds nothing
    monkeypatch.setenv(name, proxy.url)
    settings = RemoteSettings(api="http://cachehook-does-not-exist.invalid", token=TOKEN)
    assert direct_target(settings) is None
    warnings: list[str] = []
    session = RemoteSession(settings, modes=CacheModes(), on_warning=warnings.append)
    assert session._downloader is None
    assert session.fetch(KEY, tmp_path / "out") is None
    src = tmp_path / "src"
    src.write_bytes(b"x")
    session.store(KEY, src, duration_ms=1)
    session.close()
    if name.lower() == "https_proxy":  # httpx uses it for https only: a direct connection
        assert proxy.connections == 0
        assert "cannot connect to http://cachehook-does-not-exist.invalid" in warnings[0]
    else:  # the name does not resolve: only the proxy can have answered
        assert proxy.connections == 2, "the download and the upload went through the proxy"
        assert len(warnings) == 1
        assert "answered 404 Not Found to upload" in warnings[0]


@pytest.mark.parametrize(
    "api",
    [
        "http://Upper.example.com",
        "http://user:pw@example.com",
        "http://example.com/?q=1",
        "http://example.com/a/../b",
        "http://example.com/p%20q",
        "ftp://example.com",
        "http://example.com:99999",
        "http://exämple.com",
    ],
)
def test_api_urls_outside_the_plain_shape_are_left_to_httpx(api: str) -> None:
    assert direct_target(RemoteSettings(api=api)) is None


def test_plain_api_urls() -> None:
    settings = RemoteSettings(api="https://cache.example.com:8443/api", slug="s")
    assert direct_target(settings) == Target("https", "cache.example.com", 8443, "/api/", "?slug=s")
    assert direct_target(RemoteSettings(api="http://[::1]/")) == Target(
        "http", "::1", None, "/", ""
    )
    for token in ("a\nb", "token\n", "tök", "a b"):  # http.client would refuse or alter it
        assert direct_target(RemoteSettings(api="http://h", token=token)) is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_followed_by_httpx(
    status: int,
    redirect_server: Callable[..., RedirectServer],
    fault_server: Callable[..., FaultServer],
    tmp_path: Path,
) -> None:
    cdn = fault_server("trickle", body=b"from the cdn", chunks=1)
    moved = redirect_server(cdn.url, status=status)
    settings = RemoteSettings(api=moved.url, token=TOKEN)
    with pytest.raises(NeedsHttpxError):
        downloader(settings).fetch(KEY, tmp_path / "never")
    assert list(tmp_path.iterdir()) == []
    warnings: list[str] = []
    session = RemoteSession(settings, modes=CacheModes(), on_warning=warnings.append)
    info = session.fetch(KEY, tmp_path / "out")
    session.close()
    assert warnings == []
    assert info == ArtifactInfo(12, 0, None)
    assert (tmp_path / "out").read_bytes() == b"from the cdn"
    assert len(moved.requests) == 3  # ours above, the session's, then httpx's
    assert cdn.connections == 1


def test_a_redirect_to_another_origin_drops_the_token(
    redirect_server: Callable[..., RedirectServer],
    capture_proxy: CaptureProxy,
    remote_settings: RemoteSettings,
    stored: bytes,
    tmp_path: Path,
) -> None:
    moved = redirect_server(capture_proxy.url)
    warnings: list[str] = []
    settings = remote_settings._replace(api=moved.url)
    session = RemoteSession(settings, modes=CacheModes(), on_warning=warnings.append)
    capture_proxy.clear()
    assert session.fetch(KEY, tmp_path / "out") is None
    session.close()
    assert [r["authorization"] for r in moved.requests] == [f"Bearer {settings.token}"] * 2
    (arrived,) = capture_proxy.find("GET")
    assert "authorization" not in arrived.headers  # another port: another origin (httpx's rule)
    assert "Missing Authorization header" in warnings[0]
    assert settings.token is not None
    assert settings.token not in warnings[0]


# -- answers and faults: the same errors as httpx's -------------------------------------------

# Answers both requests may get, each refused with the error class httpx's path raises:
# (status, JSON body, token sent, error).
REFUSALS: list[tuple[int, dict[str, object], str | None, type[RemoteError]]] = [
    (
        400,
        {"message": "querystring should have required property 'team'"},
        TOKEN,
        RemoteProtocolError,
    ),
    (401, {"message": f"bad token {TOKEN}"}, TOKEN, RemoteAuthError),
    (401, {"message": "missing"}, None, RemoteAuthError),
    (403, {"error": {"code": "forbidden", "message": "Not authorized"}}, TOKEN, RemoteAuthError),
    (403, {"error": {"code": "remote_caching_paused", "message": "x"}}, TOKEN, RemoteAuthError),
    (413, {"message": "too big"}, TOKEN, RemoteProtocolError),
    (503, {"message": "down"}, TOKEN, RemoteUnavailable),
]


@pytest.mark.parametrize(
    ("status", "body", "token", "error"),
    [
        *REFUSALS,
        (403, {"message": "none"}, None, RemoteAuthError),
        (500, {"message": "Error during the artifact creation"}, TOKEN, RemoteUnavailable),
        (418, {"message": "teapot"}, TOKEN, RemoteProtocolError),
        (304, {}, TOKEN, RemoteProtocolError),  # not a redirect: nothing to follow
    ],
)
def test_error_answers_say_what_httpx_says(
    status: int,
    body: dict[str, object],
    token: str | None,
    error: type[RemoteError],
    fault_server: Callable[..., FaultServer],
    tmp_path: Path,
) -> None:
    server = fault_server("status", status=status, body=json.dumps(body).encode())
    settings = RemoteSettings(
        api=server.url, token=token, slug="my-team" if status != 400 else None
    )
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    fast, slow = both_ways(settings, dest)
    assert type(fast) is type(slow)
    assert isinstance(fast, error)
    assert str(fast) == str(slow)
    assert TOKEN not in str(fast)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_miss_is_none(fault_server: Callable[..., FaultServer], tmp_path: Path) -> None:
    server = fault_server("status", status=404, body=b'{"message": "Artifact not found"}')
    assert both_ways(RemoteSettings(api=server.url), tmp_path / "out") == [None, None]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("reset", RemoteUnavailable, "the connection to {api} broke: "),
        ("garbage", RemoteProtocolError, "{api} sent a malformed HTTP response: illegal status"),
        ("truncated", RemoteProtocolError, "{api} sent a malformed HTTP response: peer closed"),
        ("blackhole", RemoteUnavailable, "{api} did not respond in time (waiting for an answer)"),
    ],
)
def test_faults_say_what_httpx_says(
    kind: str,
    error: type[RemoteError],
    words: str,
    fault_server: Callable[..., FaultServer],
    tmp_path: Path,
) -> None:
    server = fault_server(kind)
    # Only the black hole must wait out the timeout; the others answer at once, and a busy
    # machine must not turn their answer into a timeout.
    wait = 0.5 if kind == "blackhole" else GENEROUS
    settings = RemoteSettings(api=server.url, token=TOKEN, timeout=wait)
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    fast, slow = both_ways(settings, dest)
    assert isinstance(fast, error)
    assert type(fast) is type(slow)
    assert str(fast).startswith(words.format(api=server.url)), fast
    if kind != "garbage":  # h11 and http.client quote the bad line each their own way
        assert str(fast) == str(slow)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_connection_refused_says_what_httpx_says(refused_url: str, tmp_path: Path) -> None:
    fast, slow = both_ways(RemoteSettings(api=refused_url), tmp_path / "out")
    assert isinstance(fast, RemoteUnavailable)
    assert str(fast) == str(slow)
    assert str(fast).startswith(f"cannot connect to {refused_url}: ")


def test_a_slow_body_may_pause_longer_than_the_first_byte_wait(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    # Each pause (2.5 s) is longer than the wait for the first byte (2 s), which the server
    # sends at once: a busy machine would need to hold its answer for 2 s to fail this.
    server = fault_server("trickle", body=b"abcdefghi", delay=2.5, chunks=2)
    settings = RemoteSettings(api=server.url, timeout=2.0, upload_timeout=GENEROUS)
    info = downloader(settings).fetch(KEY, tmp_path / "out")
    assert info == ArtifactInfo(9, 0, None)
    assert (tmp_path / "out").read_bytes() == b"abcdefghi"


def test_a_stalled_body_is_cut_by_the_upload_timeout(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    server = fault_server("trickle", body=b"abcdefghi", delay=10 * GENEROUS, chunks=3)
    settings = RemoteSettings(api=server.url, timeout=5.0, upload_timeout=0.5)
    with pytest.raises(RemoteUnavailable, match=r"in time \(waiting for an answer\)"):
        finishes(lambda: downloader(settings).fetch(KEY, tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_the_session_degrades_as_before(
    fault_server: Callable[..., FaultServer], tmp_path: Path
) -> None:
    server = fault_server("status", status=503)
    warnings: list[str] = []
    settings = RemoteSettings(api=server.url, token=TOKEN)
    session = RemoteSession(settings, modes=CacheModes(), on_warning=warnings.append)
    for _ in range(4):
        assert session.fetch(KEY, tmp_path / "out") is None
    assert not session.is_enabled
    assert server.connections == 3
    assert len(warnings) == 1
    assert "503" in warnings[0]
    assert session._cache is None, "no httpx client was made"


# -- signatures ----------------------------------------------------------------------------


def test_signatures_good_wrong_and_missing(
    npm_server_factory: Callable[..., NpmServer],
    remote_settings: RemoteSettings,
    team_slug: str,
    tmp_path: Path,
) -> None:
    server = npm_server_factory(TURBO_REMOTE_CACHE_SIGNATURE_KEY="server-only-stores-tags")
    signing = RemoteSettings(
        api=server.url, token=server.token, slug=team_slug, signature_key=SECRET
    )
    src = tmp_path / "src"
    src.write_bytes(b"signed artifact bytes")
    with RemoteCache(signing) as cache:
        cache.store(KEY, src, duration_ms=1)
    good = downloader(signing).fetch(KEY, tmp_path / "good")
    assert good is not None
    assert good.tag
    assert (tmp_path / "good").read_bytes() == src.read_bytes()
    dest = tmp_path / "bad"
    dest.write_bytes(b"old")
    wrong = downloader(signing._replace(signature_key=b"w" * 32))
    with pytest.raises(ArtifactSignatureError, match="failed signature verification"):
        wrong.fetch(KEY, dest)
    unsigned = remote_settings._replace(signature_key=SECRET)  # this server drops the tags
    with RemoteCache(unsigned) as cache:
        cache.store(KEY, src, duration_ms=1)
    with pytest.raises(ArtifactSignatureError, match="has no signature tag"):
        downloader(unsigned).fetch(KEY, dest)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "src"]


# -- TLS -----------------------------------------------------------------------------------


def _same_verification(ours: ssl.SSLContext, theirs: ssl.SSLContext) -> None:
    assert ours.verify_mode == theirs.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname
    assert theirs.check_hostname
    assert ours.cert_store_stats() == theirs.cert_store_stats()
    assert ours.get_ca_certs() == theirs.get_ca_certs()
    assert ours.options == theirs.options
    assert ours.minimum_version == theirs.minimum_version


def test_https_verifies_as_httpx_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    _same_verification(tls_context(os.environ), httpx.create_ssl_context())
    assert tls_context(os.environ).cert_store_stats()["x509_ca"] > 0
    bundle = Path(certifi.where()).read_text()
    one = bundle[: bundle.index("-----END CERTIFICATE-----") + 26]
    (tmp_path / "one.pem").write_text(one)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "one.pem"))
    _same_verification(tls_context(os.environ), httpx.create_ssl_context())
    assert tls_context(os.environ).cert_store_stats()["x509_ca"] == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed for the TLS tests")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([openssl, *request, *names, *files], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[str]:
    """An https server on 127.0.0.1 that answers every GET 200 with ``over tls``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"over tls")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_https_trusts_what_httpx_trusts(
    tls_server: str,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = RemoteSettings(api=tls_server, token=TOKEN)
    fast, slow = both_ways(settings, tmp_path / "out")  # certifi's authorities: refused
    assert isinstance(fast, RemoteUnavailable)
    assert str(fast) == str(slow)
    assert "CERTIFICATE_VERIFY_FAILED" in str(fast)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    assert both_ways(settings, tmp_path / "out") == [ArtifactInfo(8, 0, None)] * 2
    assert (tmp_path / "out").read_bytes() == b"over tls"


class AnswerServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every GET and POST with ``answer`` (status,
    headers, body; None: nothing at all), and closes the connection after it, without saying
    so, when ``hang_up``. ``peers`` holds each request's client port (one per connection)."""

    def __init__(
        self,
        answer: tuple[int, dict[str, str], bytes] | None,
        *,
        hang_up: bool = False,
    ) -> None:
        self.peers: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.command == "POST":  # read the events, or the answer may be a reset
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.peers.append(self.client_address[1])
                self.close_connection = hang_up or answer is None
                if answer is None:
                    return
                status, headers, body = answer
                self.send_response_only(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def answer_server() -> Iterator[Callable[..., AnswerServer]]:
    started: list[AnswerServer] = []

    def start(
        answer: tuple[int, dict[str, str], bytes] | None, *, hang_up: bool = False
    ) -> AnswerServer:
        started.append(AnswerServer(answer, hang_up=hang_up))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_an_encoded_body_is_decoded_by_httpx(
    answer_server: Callable[..., AnswerServer], tmp_path: Path
) -> None:
    import gzip

    body = b"artifact bytes " * 100
    server = answer_server((200, {"Content-Encoding": "gzip"}, gzip.compress(body)))
    settings = RemoteSettings(api=server.url)
    with pytest.raises(NeedsHttpxError):
        downloader(settings).fetch(KEY, tmp_path / "never")
    assert list(tmp_path.iterdir()) == []
    session = RemoteSession(settings, modes=CacheModes(), on_warning=pytest.fail)
    info = session.fetch(KEY, tmp_path / "out")
    session.close()
    assert info == ArtifactInfo(len(body), 0, None)
    assert (tmp_path / "out").read_bytes() == body
    assert len(server.peers) == 3  # ours above, the session's, then httpx's


def test_a_disconnect_before_the_answer_says_what_httpx_says(
    answer_server: Callable[..., AnswerServer], tmp_path: Path
) -> None:
    server = answer_server(None)
    fast, slow = both_ways(RemoteSettings(api=server.url), tmp_path / "out")
    assert isinstance(fast, RemoteProtocolError)
    assert str(fast) == str(slow)
    assert "disconnected without sending a response" in str(fast)


def test_a_kept_connection_the_server_closed_is_replaced_once(
    answer_server: Callable[..., AnswerServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = answer_server((200, {}, b"abc"), hang_up=True)
    fast = downloader(RemoteSettings(api=server.url))
    assert fast.fetch(KEY, tmp_path / "one") is not None
    assert len(fast._idle) == 1  # it did not say "Connection: close"
    # As if it closed the connection just after the check that it was still open:
    monkeypatch.setattr("cachehook._direct._is_quiet", lambda connection: True)
    finishes(lambda: fast.fetch(KEY, tmp_path / "two"))
    assert (tmp_path / "two").read_bytes() == b"abc"
    assert len(server.peers) == 2
    assert server.peers[0] != server.peers[1], "asked again on a new connection"


# -- the usage events: POST /v8/artifacts/events -------------------------------------------


def usage_events(count: int = 2) -> list[Event]:
    return [Event(session_id(), "LOCAL", "HIT", f"{n:032x}", 40 + n) for n in range(count)]


def both_ways_events(settings: RemoteSettings, events: list[Event]) -> list[RemoteError | None]:
    """What ``record_events`` gives over http.client, then over httpx (an error is returned)."""
    found: list[RemoteError | None] = []
    fast = downloader(settings)
    with RemoteCache(settings) as slow:
        for record in (fast.record_events, slow.record_events):
            try:
                found.append(finishes(lambda record=record: record(events)))  # type: ignore[misc]
            except RemoteError as exc:
                found.append(exc)
    fast.close()
    return found


def test_the_events_request_is_the_one_httpx_sends(
    capture_proxy: CaptureProxy,
    npm_server: NpmServer,
    team_slug: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # x-artifact-client-ci
    settings = RemoteSettings(
        api=capture_proxy.url, token=npm_server.token, team_id="team_abc", slug=team_slug
    )
    events = usage_events(3)
    assert both_ways_events(settings, events) == [None, None]
    fast, slow = capture_proxy.find("POST", "/v8/artifacts/events")
    assert (fast.status, slow.status) == (200, 200)
    assert fast.target == slow.target
    assert fast.query == {"teamId": ["team_abc"], "slug": [team_slug]}
    assert fast.headers == slow.headers
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["x-artifact-client-ci"] == "GITHUB_ACTIONS"
    assert fast.headers["x-artifact-client-interactive"] == "0"
    assert fast.headers["authorization"] == f"Bearer {npm_server.token}"
    assert fast.body == slow.body
    assert fast.json() == [event.to_json() for event in events]
    assert not fast.is_chunked


def test_an_invalid_event_is_refused_before_anything_is_sent(capture_proxy: CaptureProxy) -> None:
    bad = [*usage_events(1), Event("not-a-uuid", "LOCAL", "HIT", "ab" * 16, 1)]
    with pytest.raises(ValueError, match="sessionId must be a UUID"):
        downloader(RemoteSettings(api=capture_proxy.url)).record_events(bad)
    downloader(RemoteSettings(api=capture_proxy.url)).record_events([])
    assert capture_proxy.requests == []


def test_batches_of_events_over_one_kept_connection(
    answer_server: Callable[..., AnswerServer],
) -> None:
    server = answer_server((200, {}, b"{}"))
    fast = downloader(RemoteSettings(api=server.url))
    for _ in range(3):
        fast.record_events(usage_events())
    assert len(server.peers) == 3
    assert len(set(server.peers)) == 1, "one connection served the three batches"


@pytest.mark.parametrize(
    ("status", "body", "token", "error"),
    [
        (200, {}, TOKEN, None),
        (204, {}, TOKEN, None),
        *REFUSALS,
        (500, {"message": "Error during the event recording"}, TOKEN, RemoteUnavailable),
    ],
)
def test_events_answers_say_what_httpx_says(
    status: int,
    body: dict[str, object],
    token: str | None,
    error: type[RemoteError] | None,
    fault_server: Callable[..., FaultServer],
) -> None:
    server = fault_server("status", status=status, body=json.dumps(body).encode())
    settings = RemoteSettings(
        api=server.url, token=token, slug="my-team" if status != 400 else None
    )
    fast, slow = both_ways_events(settings, usage_events())
    assert type(fast) is type(slow)
    assert str(fast) == str(slow)
    if error is None:
        assert fast is None
    else:
        assert isinstance(fast, error)
        assert f"answered {status} " in str(fast)
        assert "to recording 2 events" in str(fast)
        assert TOKEN not in str(fast)
    assert server.connections == 2


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_of_the_events_is_refused_as_httpx_refuses_it(
    status: int, answer_server: Callable[..., AnswerServer]
) -> None:
    target = answer_server((200, {}, b"{}"))
    moved = answer_server((status, {"Location": target.url + "/v8/artifacts/events"}, b""))
    fast, slow = both_ways_events(RemoteSettings(api=moved.url, token=TOKEN), usage_events())
    assert isinstance(fast, RemoteProtocolError)
    assert type(fast) is type(slow)
    assert str(fast) == str(slow)
    assert f"answered {status} " in str(fast)
    assert target.peers == [], "not followed"
    assert len(moved.peers) == 2


def test_an_encoded_error_answer_to_the_events_is_read_by_httpx(
    answer_server: Callable[..., AnswerServer],
) -> None:
    import gzip

    said = json.dumps({"message": "the events are refused"}).encode()
    server = answer_server((400, {"Content-Encoding": "gzip"}, gzip.compress(said)))
    settings = RemoteSettings(api=server.url, slug="s")
    with pytest.raises(NeedsHttpxError):
        downloader(settings).record_events(usage_events())
    endpoint = events_module._Endpoint(settings, transport=None)
    with pytest.raises(RemoteProtocolError, match="the events are refused") as caught:
        endpoint.record_events(usage_events())
    endpoint.close()
    assert endpoint._cache is not None, "asked again through httpx"
    with RemoteCache(settings) as slow, pytest.raises(RemoteProtocolError) as straight:
        slow.record_events(usage_events())
    assert str(caught.value) == str(straight.value)
    assert len(server.peers) == 4  # ours, the endpoint's two, httpx's


class ResetAfterBody(FaultServer):
    """Reads the whole request, the events too, then resets the connection."""

    def __init__(self) -> None:
        super().__init__("reset")

    def _answer(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            _read_request(sock, with_body=True)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture
def reset_after_body() -> Iterator[ResetAfterBody]:
    server = ResetAfterBody()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("reset_after_body", RemoteUnavailable, "the connection to {api} broke: "),
        ("truncated", RemoteProtocolError, "{api} sent a malformed HTTP response: peer closed"),
        ("blackhole", RemoteUnavailable, "{api} did not respond in time (waiting for an answer)"),
    ],
)
def test_events_faults_say_what_httpx_says(
    kind: str,
    error: type[RemoteError],
    words: str,
    fault_server: Callable[..., FaultServer],
    request: pytest.FixtureRequest,
) -> None:
    if kind == "reset_after_body":
        server: FaultServer = request.getfixturevalue("reset_after_body")
    else:
        server = fault_server(kind)
    wait = 0.5 if kind == "blackhole" else GENEROUS  # only the black hole waits it out
    settings = RemoteSettings(api=server.url, token=TOKEN, timeout=wait)
    fast, slow = both_ways_events(settings, usage_events())
    assert isinstance(fast, error)
    assert type(fast) is type(slow)
    assert str(fast).startswith(words.format(api=server.url)), fast
    assert str(fast) == str(slow)


def test_a_reset_before_the_events_were_read_is_a_fault_both_ways(
    fault_server: Callable[..., FaultServer],
) -> None:
    # The server resets once it has read the request's head. http.client sends the head and
    # the events in one write and reads the reset; httpcore writes the events after the head,
    # and when that write meets the reset it reads on and may find only the end of the
    # connection ("Server disconnected without sending a response"): which, is a race of
    # httpx's own. Either way the batch is not delivered (the sender keeps it in the spool).
    server = fault_server("reset")
    settings = RemoteSettings(api=server.url, token=TOKEN, timeout=GENEROUS)
    fast, slow = both_ways_events(settings, usage_events())
    assert isinstance(fast, RemoteUnavailable)
    assert str(fast).startswith(f"the connection to {server.url} broke: "), fast
    assert isinstance(slow, RemoteUnavailable | RemoteProtocolError)


def test_events_connection_refused_says_what_httpx_says(refused_url: str) -> None:
    fast, slow = both_ways_events(RemoteSettings(api=refused_url), usage_events())
    assert isinstance(fast, RemoteUnavailable)
    assert str(fast) == str(slow)
    assert str(fast).startswith(f"cannot connect to {refused_url}: ")


def test_the_sender_posts_over_http_client(
    capture_proxy: CaptureProxy, remote_settings: RemoteSettings, tmp_path: Path
) -> None:
    settings = remote_settings._replace(events_flush_timeout=GENEROUS)
    sender = EventSender(settings, spool_dir=tmp_path / "spool")
    sender.record(usage_events(1)[0])
    sender.close()
    (post,) = capture_proxy.wait_for("POST", "/v8/artifacts/events", timeout=GENEROUS)
    assert post.status == 200
    assert events_module._Endpoint(settings, transport=None)._direct is not None
    assert not any((tmp_path / "spool").rglob("*.json")), "delivered, not spooled"


@pytest.mark.parametrize("name", ["http_proxy", "ALL_PROXY"])
def test_a_proxy_in_the_environment_leaves_the_events_to_httpx(
    name: str,
    capture_proxy: CaptureProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(name, capture_proxy.url)
    settings = RemoteSettings(
        api="http://cachehook-does-not-exist.invalid",
        token=TOKEN,
        slug="s",
        events_flush_timeout=GENEROUS,
    )
    endpoint = events_module._Endpoint(settings, transport=None)
    assert endpoint._direct is None
    endpoint.close()
    sender = EventSender(settings, spool_dir=tmp_path / "spool")
    sender.record(usage_events(1)[0])
    sender.close()
    (post,) = capture_proxy.wait_for("POST", "/v8/artifacts/events", timeout=GENEROUS)
    # The absolute form: the request went to the proxy, as httpx sends it there.
    assert post.target.startswith("http://cachehook-does-not-exist.invalid/v8/artifacts/events")
    assert post.json() == [usage_events(1)[0].to_json()]


def test_events_on_a_kept_connection_the_server_closed_are_not_sent_again(
    answer_server: Callable[..., AnswerServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = answer_server((200, {}, b"{}"), hang_up=True)
    fast = downloader(RemoteSettings(api=server.url))
    fast.record_events(usage_events())
    assert len(fast._idle) == 1
    monkeypatch.setattr("cachehook._direct._is_quiet", lambda connection: True)
    with pytest.raises(RemoteError):
        finishes(lambda: fast.record_events(usage_events()))
    assert len(server.peers) == 1, "not asked again: the server may have counted them"
