"""What ``cachehook serve`` accepts: names, headers and event bodies, checked strictly.

Artifact ids and team names become storage keys, so they are held to patterns that cannot spell
a path (no ``/``; an id may hold a ``.`` but never start with one, so ``.`` and ``..`` are out);
every header the API defines is checked against the spec's limits;
an events body is checked item by item against the schema of ``POST /v8/artifacts/events``,
and a refusal names the field (``[2].source``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import TYPE_CHECKING

from cachehook._hits import ArtifactMeta
from cachehook.events import Event

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CI_MAX_LENGTH",
    "HASH_RE",
    "HASH_RULE",
    "MAX_DURATION_MS",
    "MAX_EVENTS",
    "MAX_JSON_DEPTH",
    "SESSION_MAX_LENGTH",
    "TAG_MAX_LENGTH",
    "TEAM_RE",
    "ApiError",
    "ClientInfo",
    "parse_artifact_headers",
    "parse_client_headers",
    "parse_events",
    "parse_hashes",
]

# Artifact ids: turbo's are hex, Nx's remote-nx sends ``<digits>.tar.gz``, Vercel's docs show
# base62 (issue 12). Never a path: no ``/``, and no leading ``.`` (so neither ``.`` nor ``..``).
HASH_RE = re.compile(r"^(?![.])[A-Za-z0-9._-]{1,256}\Z")
HASH_RULE = "1-256 letters, digits, '.', '_' or '-', not starting with '.'"
TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z")
_EVENT_HASH_RE = re.compile(r"^[\x21-\x7e]{1,256}\Z")  # the spec's example is not hex
_CI_RE = re.compile(r"^[\x20-\x7e]*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9+/=_-]+\Z")
_SCM_RE = re.compile(r"^[0-9a-fA-F]{1,128}\Z")
CI_MAX_LENGTH = 50
TAG_MAX_LENGTH = 600
MAX_EVENTS = 1000
MAX_JSON_DEPTH = 32  # an event is an object of scalars; unknown fields may nest a little
SESSION_MAX_LENGTH = 128
MAX_HASHES = 1000
MAX_DURATION_MS = 365 * 24 * 3600 * 1000  # a year: more is a broken clock, not a build
_SOURCES = ("LOCAL", "REMOTE")
_KINDS = ("HIT", "MISS")


class ApiError(Exception):
    """A request the server refuses: answered ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        allow: tuple[str, ...] = (),
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.allow = allow  # the methods a 405 names in its ``Allow`` header
        self.headers = headers  # more response headers (a 401's own challenge)

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def _bad(message: str, field: str) -> ApiError:
    return ApiError(400, "bad_request", message, field=field)


class ClientInfo:
    """``x-artifact-client-ci`` and ``x-artifact-client-interactive``, checked."""

    __slots__ = ("ci", "interactive")

    def __init__(self, ci: str | None, interactive: int | None) -> None:
        self.ci = ci
        self.interactive = interactive


def parse_client_headers(headers: Mapping[str, str]) -> ClientInfo:
    """The client headers every route may carry.

    Raises:
        ApiError: 400 when the CI name is over 50 characters or ``interactive`` is not 0 or 1.
    """
    ci = headers.get("x-artifact-client-ci")
    if ci is not None and (len(ci) > CI_MAX_LENGTH or not _CI_RE.match(ci)):
        msg = f"x-artifact-client-ci must be at most {CI_MAX_LENGTH} printable ASCII characters"
        raise _bad(msg, "x-artifact-client-ci")
    raw = headers.get("x-artifact-client-interactive")
    if raw is not None and raw.strip() not in ("0", "1"):
        msg = f"x-artifact-client-interactive must be 0 or 1, got {raw[:20]!r}"
        raise _bad(msg, "x-artifact-client-interactive")
    return ClientInfo(ci or None, None if raw is None else int(raw.strip()))


def parse_artifact_headers(headers: Mapping[str, str]) -> ArtifactMeta:
    """The metadata an upload carries: duration, tag, SCM sha and dirty hash.

    Only those fields are set: the storage sets the rest (key, checksum, size) when it keeps
    the upload.

    Raises:
        ApiError: 400 naming the malformed header.
    """
    meta = ArtifactMeta()
    duration = headers.get("x-artifact-duration")
    if duration is not None:
        value = duration.strip()
        if not value.isascii() or not value.isdigit() or int(value) > MAX_DURATION_MS:
            msg = f"x-artifact-duration must be whole milliseconds from 0 to {MAX_DURATION_MS}"
            raise _bad(msg, "x-artifact-duration")
        meta = meta.replace(duration_ms=int(value))
    tag = headers.get("x-artifact-tag")
    if tag is not None:
        if len(tag) > TAG_MAX_LENGTH or not _TAG_RE.match(tag):
            msg = f"x-artifact-tag must be base64, at most {TAG_MAX_LENGTH} characters"
            raise _bad(msg, "x-artifact-tag")
        meta = meta.replace(tag=tag)
    sha, dirty_hash = headers.get("x-artifact-sha"), headers.get("x-artifact-dirty-hash")
    for name, scm in (("x-artifact-sha", sha), ("x-artifact-dirty-hash", dirty_hash)):
        if scm is not None and not _SCM_RE.match(scm):
            msg = f"{name} must be 1-128 hex digits"
            raise _bad(msg, name)
    return meta.replace(sha=sha, dirty_hash=dirty_hash)


def _load_json(body: bytes) -> object:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"the body is not valid JSON: {exc}"
        raise _bad(msg, "body") from None
    except RecursionError:  # the C decoder counts its depth against the recursion limit
        data = None
        is_deep = True
    else:
        is_deep = _is_deeper(data, MAX_JSON_DEPTH)
    if is_deep:
        msg = f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
        raise _bad(msg, "body")
    return data


def _is_deeper(data: object, limit: int) -> bool:
    """Whether ``data`` nests more than ``limit`` arrays and objects (iterative: no recursion)."""
    level: list[object] = [data]
    for _ in range(limit + 1):
        nested = [
            child
            for item in level
            if isinstance(item, list | dict)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not any(isinstance(item, list | dict) for item in level):
            return False
        level = nested
    return True


def parse_hashes(body: bytes) -> list[str]:
    """The ``{"hashes": [...]}`` body of ``POST /v8/artifacts``.

    Raises:
        ApiError: 400 naming the bad field.
    """
    data = _load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("hashes"), list):
        msg = 'the body must be {"hashes": [...]}'
        raise _bad(msg, "hashes")
    hashes = data["hashes"]
    if len(hashes) > MAX_HASHES:
        msg = f"at most {MAX_HASHES} hashes per query"
        raise _bad(msg, "hashes")
    for index, value in enumerate(hashes):
        if not isinstance(value, str) or not HASH_RE.match(value):
            msg = f"hashes[{index}] must be {HASH_RULE}"
            raise _bad(msg, f"hashes[{index}]")
    return list(dict.fromkeys(hashes))


def parse_events(body: bytes) -> list[Event]:
    """A ``POST /v8/artifacts/events`` body: a JSON array of cache events.

    Fields beyond the schema's are ignored (a newer client may add some); ``duration`` may be
    absent (0) and is rounded to whole milliseconds.

    Raises:
        ApiError: 400 naming the first bad field, e.g. ``[0].source``.
    """
    data = _load_json(body)
    if not isinstance(data, list):
        msg = "the body must be a JSON array of events"
        raise _bad(msg, "body")
    if len(data) > MAX_EVENTS:
        msg = f"at most {MAX_EVENTS} events per request"
        raise _bad(msg, "body")
    return [_parse_event(item, f"[{index}]") for index, item in enumerate(data)]


def _parse_event(item: object, where: str) -> Event:
    if not isinstance(item, dict):
        msg = f"{where} must be an object"
        raise _bad(msg, where)
    for key in ("sessionId", "source", "event", "hash"):
        if key not in item:
            msg = f"{where}.{key} is required"
            raise _bad(msg, f"{where}.{key}")
    session = item["sessionId"]
    # The spec says UUID, but its own example sends "<id>" and the npm server takes anything:
    # any printable string identifies a run well enough (issue 12). A UUID is kept lower-case.
    if not isinstance(session, str) or not 0 < len(session) <= SESSION_MAX_LENGTH:
        msg = f"{where}.sessionId must be a string of 1-{SESSION_MAX_LENGTH} characters"
        raise _bad(msg, f"{where}.sessionId")
    if not session.isprintable():
        msg = f"{where}.sessionId must be printable (no control characters)"
        raise _bad(msg, f"{where}.sessionId")
    source, kind, hash_ = item["source"], item["event"], item["hash"]
    if source not in _SOURCES:
        msg = f"{where}.source must be LOCAL or REMOTE, got {_shown(source)}"
        raise _bad(msg, f"{where}.source")
    if kind not in _KINDS:
        msg = f"{where}.event must be HIT or MISS, got {_shown(kind)}"
        raise _bad(msg, f"{where}.event")
    if not isinstance(hash_, str) or not _EVENT_HASH_RE.match(hash_):
        msg = f"{where}.hash must be 1-256 printable ASCII characters without spaces"
        raise _bad(msg, f"{where}.hash")
    duration = _duration(item.get("duration", 0), f"{where}.duration")
    session = session.lower() if _is_uuid(session) else session
    return Event(session_id=session, source=source, event=kind, hash=hash_, duration=duration)


def _duration(value: object, field: str) -> int:
    msg = f"{field} must be a number of milliseconds from 0 to {MAX_DURATION_MS}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(msg, field)
    if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_MS:
        raise _bad(msg, field)
    return round(value)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _shown(value: object) -> str:
    return repr(value)[:40]
