"""``_tlstrust``: an https connection loads the one root that verified its host last time, and
never trusts more than the whole bundle would.

Every test talks to a real TLS server on 127.0.0.1 whose certificates (two authorities in the
bundle, one outside it) the ``openssl`` command makes. ``SSL_CERT_FILE`` is a bundle of
certifi's roots plus the two, as a user's would be. What a connection loaded is seen twice: the
calls to ``verifying_context`` (the one place a context gets its roots) and the context of the
socket the download went over. A refusal is compared with httpx's, made to the same server.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import certifi
import httpx
import pytest

from cachehook import _tlstrust
from cachehook._direct import DirectClient, direct_target, tls_context
from cachehook._remote_api import ArtifactInfo
from cachehook._session import RemoteSession
from cachehook._tlstrust import Bundle, bundle_path
from cachehook.config import CacheModes, RemoteSettings, Settings
from cachehook.errors import RemoteError, RemoteUnavailable
from cachehook.remote import RemoteCache
from cachehook.runner import Runner
from tests.waiting import finishes

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

KEY = "0123456789abcdef0123456789abcdef"
HIT = ArtifactInfo(8, 0, None)
_EXTENSIONS = (
    "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
)


class Authority(NamedTuple):
    """A test CA (its PEM block, as it is written in the bundle) and a leaf it signed for
    127.0.0.1."""

    root: str
    leaf: Path
    key: Path


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Authority]:
    """CAs ``A`` and ``B`` (put in the bundle) and ``C`` (not), each with a leaf for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed for the TLS tests")
    where = tmp_path_factory.mktemp("authorities")
    (where / "ext").write_text(_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    made = {}
    for name in "ABC":
        ca, ca_key, leaf, key, csr = (
            str(where / f"{name}.{kind}") for kind in ("ca", "cakey", "crt", "key", "csr")
        )
        run = [openssl, "req", "-x509", *ec, "-days", "2", "-subj", f"/CN=cachehook test {name}"]
        run += ["-addext", "basicConstraints=critical,CA:TRUE"]
        run += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        subprocess.run([*run, "-keyout", ca_key, "-out", ca], check=True, capture_output=True)
        run = [openssl, "req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr]
        subprocess.run(run, check=True, capture_output=True)
        run = [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-days", "2"]
        run += ["-set_serial", "7", "-extfile", str(where / "ext"), "-out", leaf]
        subprocess.run(run, check=True, capture_output=True)
        made[name] = Authority(Path(ca).read_text().strip(), Path(leaf), Path(key))
    return made


@pytest.fixture
def bundle(
    authorities: dict[str, Authority], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``SSL_CERT_FILE``: certifi's roots, then ``A`` and ``B``."""
    path = tmp_path / "bundle.pem"
    roots = [authorities["A"].root, authorities["B"].root]
    path.write_text(Path(certifi.where()).read_text() + "\n".join(roots) + "\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return path


class Server:
    """An https server on 127.0.0.1 (GET: 200 ``over tls``) whose certificate is the leaf of
    the authority it was last told to ``use``."""

    def __init__(self, authorities: dict[str, Authority]) -> None:
        self._contexts = {}
        for name, authority in authorities.items():
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(authority.leaf, authority.key)
            context.set_alpn_protocols(["http/1.1"])
            self._contexts[name] = context
        self.context = self._contexts["A"]
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "8")
                self.end_headers()
                self.wfile.write(b"over tls")

        class Listener(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[ssl.SSLSocket, tuple[str, int]]:
                sock, address = self.socket.accept()
                return owner.context.wrap_socket(sock, server_side=True), address

        self._server = Listener(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self.settings = RemoteSettings(api=self.url, token="tok")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def use(self, name: str) -> None:
        self.context = self._contexts[name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server(authorities: dict[str, Authority]) -> Iterator[Server]:
    made = Server(authorities)
    yield made
    made.close()


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each context was made with: ``"cafile"``, ``"capath"``, or the root's PEM block."""
    seen: list[str] = []
    real = _tlstrust.verifying_context

    def spy(**roots: str | None) -> ssl.SSLContext:
        seen.extend(value if kind == "cadata" else kind for kind, value in roots.items() if value)
        return real(**roots)

    monkeypatch.setattr(_tlstrust, "verifying_context", spy)
    return seen


_opened: list[DirectClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def fetch(server: Server, trust_dir: Path | None, dest: Path) -> tuple[object, DirectClient]:
    """``DirectClient.fetch`` from ``server`` (the result, or the error), and the client, its
    connection kept (closed when the test ends)."""
    target = direct_target(server.settings)
    assert target is not None
    client = DirectClient(server.settings, target, trust_dir=trust_dir)
    _opened.append(client)
    try:
        result: object = finishes(lambda: client.fetch(KEY, dest))
    except RemoteError as exc:
        result = exc
    return result, client


def roots_of(client: DirectClient) -> list[str]:
    """The common names of the roots the context of ``client``'s kept connection holds."""
    _, connection = client._idle[-1]
    assert isinstance(connection.sock, ssl.SSLSocket)
    assert connection.sock.selected_alpn_protocol() == "http/1.1"
    found = connection.sock.context.get_ca_certs()
    client.close()
    return [_common_name(root) for root in found]


def memory(trust_dir: Path) -> dict[str, dict[str, object]]:
    found = json.loads((trust_dir / "roots.json").read_text())
    assert found["version"] == 1
    roots: dict[str, dict[str, object]] = found["roots"]
    return roots


def remembered(trust_dir: Path) -> list[object]:
    return [entry["root"] for entry in memory(trust_dir).values()]


def httpx_refusal(server: Server, dest: Path) -> str:
    with RemoteCache(server.settings) as cache:
        try:
            cache.fetch(KEY, dest)
        except RemoteUnavailable as exc:
            return str(exc)
    pytest.fail("httpx accepted the server")


def _common_name(root: dict[str, Any]) -> str:
    names = [value for entry in root["subject"] for key, value in entry if key == "commonName"]
    return str(names[0]) if names else ""


# -- a host verified again by its root alone ------------------------------------------------


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_the_first_connection_remembers_the_root_the_second_loads_only_it(
    line_end: str,
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    bundle.write_bytes(bundle.read_text().replace("\n", line_end).encode())
    trust = tmp_path / "tls"
    first, client = fetch(server, trust, tmp_path / "one")
    assert first == HIT
    assert loaded == ["cafile"]
    assert len(roots_of(client)) > 100, "the whole bundle"
    block = authorities["A"].root.replace("\n", line_end)
    assert remembered(trust) == [block], "the root as the bundle writes it"
    assert (trust / "roots.json").stat().st_mode & 0o777 == 0o600
    assert trust.stat().st_mode & 0o777 == 0o700
    loaded.clear()
    second, client = fetch(server, trust, tmp_path / "two")
    assert second == HIT
    assert (tmp_path / "two").read_bytes() == b"over tls"
    assert loaded == [block], "the remembered root, not the bundle"
    assert roots_of(client) == ["cachehook test A"]


def test_the_remembered_root_verifies_as_the_whole_bundle_does(
    server: Server, bundle: Path, tmp_path: Path
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    hinted = _tlstrust.RootMemory(trust, str(bundle)).hinted_context("127.0.0.1", port(server))
    assert hinted is not None
    for whole in (tls_context(os.environ), httpx.create_ssl_context()):
        assert hinted.verify_mode == whole.verify_mode == ssl.CERT_REQUIRED
        assert hinted.check_hostname
        assert whole.check_hostname
        assert hinted.verify_flags == whole.verify_flags
        assert hinted.options == whole.options
        assert hinted.minimum_version == whole.minimum_version
        assert hinted.maximum_version == whole.maximum_version
        assert hinted.protocol == whole.protocol
    assert hinted.cert_store_stats() == {"x509": 1, "crl": 0, "x509_ca": 1}


def port(server: Server) -> int:
    return int(server.url.rpartition(":")[2])


# -- what the remembered root never does: trust more ----------------------------------------


def test_a_host_signed_by_another_authority_is_still_refused(
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    server.use("C")  # not in the bundle
    loaded.clear()
    refused, _ = fetch(server, trust, tmp_path / "two")
    assert isinstance(refused, RemoteUnavailable)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused)
    assert str(refused) == httpx_refusal(server, tmp_path / "two"), "today's refusal"
    assert loaded == [authorities["A"].root, "cafile"], "the root, then the whole bundle"
    assert not (tmp_path / "two").exists()
    assert remembered(trust) == [authorities["A"].root]


def test_a_host_that_changed_its_authority_is_verified_by_the_whole_bundle(
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    server.use("B")
    loaded.clear()
    changed, client = fetch(server, trust, tmp_path / "two")
    assert changed == HIT
    assert loaded == [authorities["A"].root, "cafile"]
    assert remembered(trust) == [authorities["B"].root], "the new root is remembered"
    loaded.clear()
    again, client = fetch(server, trust, tmp_path / "three")
    assert again == HIT
    assert loaded == [authorities["B"].root]
    assert roots_of(client) == ["cachehook test B"]


def test_a_root_no_longer_in_the_bundle_is_not_loaded(
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    # A is dropped as an update of the bundle would drop it, but the file keeps its size and
    # its mtime: only the check that the bundle holds the root can tell.
    before = bundle.stat()
    root = authorities["A"].root
    text = bundle.read_text()
    bundle.write_text(text.replace(root, "".join("#" if c != "\n" else c for c in root)))
    os.utime(bundle, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert bundle.stat().st_size == before.st_size
    loaded.clear()
    refused, _ = fetch(server, trust, tmp_path / "two")
    assert isinstance(refused, RemoteUnavailable)
    assert str(refused) == httpx_refusal(server, tmp_path / "two")
    assert loaded == ["cafile"], "the remembered root was not loaded"


def _foreign_root(authorities: dict[str, Authority], bundle: Path) -> str:
    return authorities["C"].root


def _root_after_a_comment_mark(authorities: dict[str, Authority], bundle: Path) -> str:
    # C's block in the bundle, after a "#" on its first line: OpenSSL does not read it.
    bundle.write_text(bundle.read_text() + f"#{authorities['C'].root}\n")
    return authorities["C"].root


@pytest.mark.parametrize("tamper", [_foreign_root, _root_after_a_comment_mark])
def test_a_tampered_memory_cannot_add_a_root(
    tamper: object,
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    root = tamper(authorities, bundle)  # type: ignore[operator]
    entries = memory(trust)
    stat = bundle.stat()
    for entry in entries.values():  # as if remembered from the bundle as it is now
        entry.update(root=root, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    (trust / "roots.json").write_text(json.dumps({"version": 1, "roots": entries}))
    server.use("C")
    loaded.clear()
    refused, _ = fetch(server, trust, tmp_path / "two")
    assert isinstance(refused, RemoteUnavailable)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused)
    assert str(refused) == httpx_refusal(server, tmp_path / "two")
    assert loaded == ["cafile"], "nothing from the memory was loaded"


def test_a_bundle_that_restricts_a_root_is_never_hinted(
    server: Server,
    bundle: Path,
    authorities: dict[str, Authority],
    loaded: list[str],
    tmp_path: Path,
) -> None:
    trust = tmp_path / "tls"
    fetch(server, trust, tmp_path / "one")
    # The bundle now says, first, that A is not to be trusted for servers (a TRUSTED CERTIFICATE
    # block, which OpenSSL reads before the plain copy of A that follows): the whole bundle
    # refuses the server, and A's plain block, still there verbatim, must not be loaded alone.
    openssl = shutil.which("openssl")
    assert openssl is not None
    run = [openssl, "x509", "-addreject", "serverAuth", "-trustout"]
    rejecting = subprocess.run(
        run, input=authorities["A"].root, check=True, capture_output=True, text=True
    ).stdout
    assert rejecting.startswith("-----BEGIN TRUSTED CERTIFICATE-----")
    text = bundle.read_text()
    bundle.write_text(text.replace(authorities["A"].root, rejecting + authorities["A"].root))
    entries = memory(trust)
    stat = bundle.stat()
    for entry in entries.values():  # as if remembered from the bundle as it is now
        entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    (trust / "roots.json").write_text(json.dumps({"version": 1, "roots": entries}))
    loaded.clear()
    refused, _ = fetch(server, trust, tmp_path / "two")
    assert isinstance(refused, RemoteUnavailable)
    assert "certificate rejected" in str(refused)
    assert str(refused) == httpx_refusal(server, tmp_path / "two")
    assert loaded == ["cafile"]


@pytest.mark.parametrize(
    "content", [b"not json", b'{"version": 2, "roots": {}}', b"[]", b'{"version": 1, "roots": 3}']
)
def test_a_memory_that_is_not_one_is_ignored_and_replaced(
    content: bytes, server: Server, bundle: Path, loaded: list[str], tmp_path: Path
) -> None:
    trust = tmp_path / "tls"
    trust.mkdir()
    (trust / "roots.json").write_bytes(content)
    assert fetch(server, trust, tmp_path / "one")[0] == HIT
    assert loaded == ["cafile"]
    assert len(remembered(trust)) == 1


# -- where nothing is remembered -----------------------------------------------------------


def test_without_the_verified_chain_every_connection_loads_the_bundle(
    server: Server, bundle: Path, loaded: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_tlstrust, "verified_root", lambda sock: None)  # as an interpreter
    trust = tmp_path / "tls"
    for name in ("one", "two"):
        assert fetch(server, trust, tmp_path / name)[0] == HIT
    assert loaded == ["cafile", "cafile"]
    assert not (trust / "roots.json").exists()


def test_a_client_without_a_trust_dir_loads_the_bundle_every_time(
    server: Server, bundle: Path, loaded: list[str], tmp_path: Path
) -> None:
    for name in ("one", "two"):
        assert fetch(server, None, tmp_path / name)[0] == HIT
    assert loaded == ["cafile", "cafile"]


def test_a_certificate_directory_is_left_as_it_is(
    server: Server,
    authorities: dict[str, Authority],
    loaded: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "a.pem").write_text(authorities["A"].root + "\n")
    openssl = shutil.which("openssl")
    assert openssl is not None
    subprocess.run([openssl, "rehash", certs], check=True, capture_output=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    trust = tmp_path / "tls"
    for name in ("one", "two"):
        assert fetch(server, trust, tmp_path / name)[0] == HIT
    assert loaded == ["capath", "capath"]
    assert not trust.exists()


def test_the_bundle_is_the_one_httpx_loads(tmp_path: Path) -> None:
    assert bundle_path({}) == certifi.where()
    assert bundle_path({"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}) == certifi.where()
    assert bundle_path({"SSL_CERT_DIR": str(tmp_path)}) is None
    both = {"SSL_CERT_FILE": "/x.pem", "SSL_CERT_DIR": str(tmp_path)}
    assert bundle_path(both) == "/x.pem"
    assert Bundle.read(str(tmp_path / "absent.pem")) is None


# -- who remembers -------------------------------------------------------------------------


def test_a_session_remembers_in_its_cache_dir(
    server: Server, bundle: Path, authorities: dict[str, Authority], tmp_path: Path
) -> None:
    warnings: list[str] = []
    session = RemoteSession(
        server.settings, modes=CacheModes(), on_warning=warnings.append, cache_dir=tmp_path
    )
    assert session.fetch(KEY, tmp_path / "one") == HIT
    session.close()
    assert warnings == []
    assert remembered(tmp_path / "tls") == [authorities["A"].root]


def test_a_runner_gives_its_session_the_cache_dir(server: Server, tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, cache_dir=tmp_path / "cache", remote=server.settings)
    with Runner(settings) as runner:
        session = runner.remote
        assert session is not None
        assert session._downloader is not None
        assert session._downloader._trust_dir == tmp_path / "cache" / "tls"
