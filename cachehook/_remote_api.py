"""The Remote Cache API (v8) without a transport: what both HTTP clients of it share (issue 11).

``remote`` speaks the API over httpx; ``_direct`` makes the requests of a hit, a remote hit's
``GET /v8/artifacts/{key}`` and the usage events' ``POST /v8/artifacts/events``, over a
socket of its own (``_http11``) so that a hit never imports httpx. Both build those requests
and read their answers with what is here, so they cannot drift apart: the artifact path and its
key check, the team parameters, the headers, the events' body, what each status means (with the
same error classes and messages), the messages of transport faults, a download streamed to a
partial file beside its destination, and the signature ("cachehook-hmac-v1", described in
``remote``'s docstring).

No third-party import here, nor ``hashlib``/``hmac`` until a signature is checked.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeAlias

from cachehook import __version__
from cachehook.ci import detect_ci_vendor
from cachehook.errors import RemoteAuthError, RemoteProtocolError, RemoteUnavailable
from cachehook.redaction import scrub

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence
    from pathlib import Path
    from typing import Protocol

    from cachehook.config import RemoteSettings

    class UsageEvent(Protocol):
        """What the events endpoint takes (``events.Event``; named by shape, not imported:
        the events module imports the clients, issue 11)."""

        def validate(self) -> None: ...
        def to_json(self) -> dict[str, object]: ...


__all__ = [
    "ERROR_BODY_LIMIT",
    "EVENTS_PATH",
    "SIGNATURE_DOMAIN",
    "ArtifactInfo",
    "ArtifactSignatureError",
    "Progress",
    "RemoteCachingDisabledError",
    "artifact_path",
    "artifact_tag",
    "broke",
    "cannot_connect",
    "check_answer",
    "client_headers",
    "events_body",
    "has_proxy",
    "int_header",
    "malformed",
    "missing_tag",
    "parse_json",
    "query_params",
    "read_chunks",
    "receive_artifact",
    "request_headers",
    "scrub_secrets",
    "team_scope",
    "timed_out",
]

SIGNATURE_DOMAIN = b"cachehook-artifact-signature:v1"
EVENTS_PATH = "/v8/artifacts/events"
ERROR_BODY_LIMIT = 4096  # of an error answer, read at most: an error page may be large, or endless
_CHUNK = 1 << 20
_KEY_RE = re.compile(r"^[0-9a-fA-F]{1,256}$")
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})

# progress(what, done, total): "download" or "upload", bytes so far, bytes in all (or None).
Progress: TypeAlias = Callable[[str, int, int | None], None]


class ArtifactInfo(NamedTuple):
    """What the server says about a stored artifact.

    A NamedTuple, not a frozen dataclass: a remote hit builds one, and importing
    ``dataclasses`` costs it milliseconds (issue 11).
    """

    size: int | None
    duration_ms: int  # x-artifact-duration: the producer's run time, 0 when not sent
    tag: str | None


class ArtifactSignatureError(RemoteProtocolError):
    """A downloaded artifact has no ``x-artifact-tag``, or one that does not verify."""


class RemoteCachingDisabledError(RemoteAuthError):
    """403 ``remote_caching_<status>``: remote caching is disabled, over limit or paused."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


# -- the request ---------------------------------------------------------------------------


def artifact_path(key: str) -> str:
    """``/v8/artifacts/{key}``, relative to the API's base URL.

    Raises:
        ValueError: ``key`` is not 1-256 hex digits.
    """
    if not _KEY_RE.match(key):
        msg = f"artifact hash must be 1-256 hex digits, got {key!r}"
        raise ValueError(msg)
    return f"/v8/artifacts/{key}"


def query_params(settings: RemoteSettings) -> dict[str, str]:
    """The team parameters every request carries: ``teamId`` (a ``team_`` id) and ``slug``."""
    params: dict[str, str] = {}
    if settings.team_id and settings.team_id.startswith("team_"):
        params["teamId"] = settings.team_id
    if settings.slug:
        params["slug"] = settings.slug
    return params


def request_headers(settings: RemoteSettings) -> dict[str, str]:
    """The headers every request carries: ``User-Agent`` and, with a token, ``Authorization``."""
    headers = {"User-Agent": f"cachehook/{__version__}"}
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    return headers


def client_headers(environ: Mapping[str, str], *, is_interactive: bool) -> dict[str, str]:
    """The headers turbo sends on uploads and events: ``x-artifact-client-interactive`` (whether
    stdout is a terminal, ``ci.is_interactive``) and, in a known CI, ``x-artifact-client-ci``."""
    headers = {"x-artifact-client-interactive": "1" if is_interactive else "0"}
    vendor = detect_ci_vendor(environ)
    if vendor:
        headers["x-artifact-client-ci"] = vendor
    return headers


def events_body(events: Sequence[UsageEvent]) -> bytes:
    """The body of ``POST /v8/artifacts/events``: ``events`` as one compact JSON array.

    Raises:
        ValueError: an event is invalid (then nothing may be sent).
    """
    payload = []
    for event in events:
        event.validate()
        payload.append(event.to_json())
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def has_proxy(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` sets a proxy that httpx would use (``http_proxy``, ``https_proxy``,
    ``all_proxy``, in any case; on macOS also the system's, as ``urllib.request.getproxies``)."""
    if any(value and name.lower() in _PROXY_VARIABLES for name, value in environ.items()):
        return True
    if sys.platform == "darwin":
        import _scproxy

        proxies = _scproxy._get_proxies()
        return any(proxies.get(scheme) for scheme in ("http", "https", "all"))
    return False


def team_scope(settings: RemoteSettings) -> str:
    """The namespace a server files artifacts under: the ``team_`` id, else the slug, or ``""``."""
    if settings.team_id and settings.team_id.startswith("team_"):
        return settings.team_id
    return settings.slug or ""


# -- the answer ----------------------------------------------------------------------------


def check_answer(
    settings: RemoteSettings, code: int, reason: str, body: bytes, *, what: str
) -> None:
    """Raise the error a non-2xx answer means (``body``: at most ``ERROR_BODY_LIMIT`` of it).

    Raises:
        RemoteAuthError: 401/403 (``RemoteCachingDisabledError`` for ``remote_caching_*``).
        RemoteUnavailable: 5xx.
        RemoteProtocolError: anything else that is not 2xx.
    """
    if 200 <= code < 300:
        return
    data = parse_json(body)
    said = f"{settings.api} answered {code} {reason} to {what}{_error_detail(data, body)}"
    if code in (401, 403) and not settings.token:  # Vercel answers 403 to none
        msg = f"{said}: no token is set; set CACHEHOOK_TOKEN (or TURBO_TOKEN)"
        raise RemoteAuthError(msg)
    if code == 401:
        msg = f"{said}: the token was refused; check CACHEHOOK_TOKEN (or TURBO_TOKEN)"
        raise RemoteAuthError(scrub_secrets(settings, msg))
    if code == 403:
        error = data.get("error") if isinstance(data, dict) else None
        error_code = error.get("code") if isinstance(error, dict) else None
        if isinstance(error_code, str) and error_code.startswith("remote_caching_"):
            status = error_code.removeprefix("remote_caching_")
            msg = f"{said}: remote caching is {status.replace('_', ' ')} for {_team(settings)}"
            raise RemoteCachingDisabledError(scrub_secrets(settings, msg), status=status)
        msg = (
            f"{said}: access denied for {_team(settings)}; check that CACHEHOOK_TOKEN "
            "(or TURBO_TOKEN) may use that team, set by CACHEHOOK_TEAM / CACHEHOOK_TEAMID "
            "(or TURBO_TEAM / TURBO_TEAMID)"
        )
        raise RemoteAuthError(scrub_secrets(settings, msg))
    if code >= 500:
        raise RemoteUnavailable(scrub_secrets(settings, said))
    if code == 413:
        msg = f"{said}: the artifact is larger than the server accepts"
        raise RemoteProtocolError(scrub_secrets(settings, msg))
    if code == 400 and not team_scope(settings):
        said += "; no team is set (CACHEHOOK_TEAM or CACHEHOOK_TEAMID), which servers may need"
    raise RemoteProtocolError(scrub_secrets(settings, said))


def int_header(settings: RemoteSettings, name: str, value: str | None) -> int | None:
    """The value of header ``name`` as an int, None when absent.

    Raises:
        RemoteProtocolError: it is not a whole number.
    """
    if value is None:
        return None
    if not value.strip().isdigit():
        msg = f"{settings.api} sent a malformed {name} header: {value[:40]!r}"
        raise RemoteProtocolError(scrub_secrets(settings, msg))
    return int(value)


def receive_artifact(
    settings: RemoteSettings,
    chunks: Iterable[bytes | memoryview],
    dest: Path,
    *,
    key: str,
    expected: int | None,
    tag: str | None,
    progress: Progress | None,
) -> int:
    """Write a download's body (``chunks``, whose faults are already ``RemoteError``s) to
    ``dest``: only once it is whole, matches ``expected`` bytes and, with a signature key, is
    verified; on any error ``dest`` is untouched and no partial file is left. Returns its size.

    Raises:
        RemoteProtocolError: the body was cut short.
        ArtifactSignatureError: the tag does not verify.
    """
    partial = dest.with_name(f".{dest.name}.{os.urandom(6).hex()}.part")
    try:
        size = 0
        with partial.open("wb") as file:
            for chunk in chunks:
                file.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress("download", size, expected)
        if expected is not None and size != expected:
            msg = f"download of {key} from {settings.api} was cut short: {size} of {expected} bytes"
            raise RemoteProtocolError(msg)
        if settings.signature_key:
            _verify(settings, key, partial, tag)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return size


def missing_tag(settings: RemoteSettings, key: str) -> ArtifactSignatureError:
    """The error of a download without the signature tag that signing requires."""
    return ArtifactSignatureError(f"artifact {key} from {settings.api} has no signature tag")


# -- transport faults (each client maps its own exceptions onto these) ------------------------


def timed_out(settings: RemoteSettings, doing: str) -> RemoteUnavailable:
    """The server did not respond in time while ``doing`` ("connecting", "sending", ...)."""
    return RemoteUnavailable(
        scrub_secrets(settings, f"{settings.api} did not respond in time ({doing})")
    )


def cannot_connect(settings: RemoteSettings, detail: object) -> RemoteUnavailable:
    """No connection could be made (refused, unresolvable name, TLS refused)."""
    return RemoteUnavailable(scrub_secrets(settings, f"cannot connect to {settings.api}: {detail}"))


def broke(settings: RemoteSettings, detail: object) -> RemoteUnavailable:
    """An open connection failed (reset, broken pipe)."""
    return RemoteUnavailable(
        scrub_secrets(settings, f"the connection to {settings.api} broke: {detail}")
    )


def malformed(settings: RemoteSettings, detail: object) -> RemoteProtocolError:
    """The server's bytes are not a valid HTTP answer."""
    return RemoteProtocolError(
        scrub_secrets(settings, f"{settings.api} sent a malformed HTTP response: {detail}")
    )


def scrub_secrets(settings: RemoteSettings, text: str) -> str:
    """``text`` without the token or the signature key, in any form (issue 10)."""
    # Only a token long enough that replacing it cannot mangle the words (issue 10).
    key = settings.signature_key
    secrets = (settings.token, key.decode("utf-8", "replace") if key else None)
    return scrub(text, secrets, placeholder="<token>")


# -- signatures ----------------------------------------------------------------------------


def artifact_tag(secret: bytes, key: str, team: str, path: Path) -> str:
    """Sign the artifact at ``path`` (layout "cachehook-hmac-v1", see ``remote``'s docstring)."""
    import base64
    import hashlib
    import hmac
    import struct

    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for field in (SIGNATURE_DOMAIN, key.encode("ascii"), team.encode("utf-8")):
        mac.update(struct.pack("<Q", len(field)))
        mac.update(field)
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        mac.update(struct.pack("<Q", size))
        for chunk in read_chunks(file, size):
            mac.update(chunk)
    return base64.b64encode(mac.digest()).decode("ascii")


def read_chunks(file: IO[bytes], size: int, progress: Progress | None = None) -> Iterator[bytes]:
    """``size`` bytes of ``file`` in chunks of 1 MiB, told to ``progress`` as an upload.

    Raises:
        OSError: the file ends early.
    """
    left = size
    while left > 0:
        chunk = file.read(min(_CHUNK, left))
        if not chunk:
            msg = f"{file.name} shrank while being read"
            raise OSError(msg)
        left -= len(chunk)
        if progress is not None:
            progress("upload", size - left, size)
        yield chunk


def _verify(settings: RemoteSettings, key: str, path: Path, tag: str | None) -> None:
    import hmac

    assert settings.signature_key is not None
    wanted = artifact_tag(settings.signature_key, key, team_scope(settings), path)
    if not hmac.compare_digest(wanted.encode("ascii"), (tag or "").encode("ascii", "replace")):
        msg = f"artifact {key} from {settings.api} failed signature verification"
        raise ArtifactSignatureError(msg)


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_detail(data: Any, body: bytes) -> str:
    """The server's own words, from ``{"message"}``, ``{"error": {"message"}}`` or plain text."""
    message: object = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else data.get("message")
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace") if data is None else ""
    text = " ".join(message.split())[:200]
    return f' ("{text}")' if text else ""


def _team(settings: RemoteSettings) -> str:
    scope = team_scope(settings)
    return f"team {scope!r}" if scope else "no team (set CACHEHOOK_TEAM or CACHEHOOK_TEAMID)"
