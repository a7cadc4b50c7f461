"""The little of ASGI the server needs: a request view and the ways to answer it.

Plain ASGI rather than a framework: the server has a handful of routes, and an upload has to be
read chunk by chunk under a byte limit anyway (see ``app.py``), which is where frameworks
buffer.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from cachehook.server.validation import ApiError

__all__ = [
    "SLASH",
    "ClientGoneError",
    "Message",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "read_body",
    "send_bytes",
    "send_error",
    "send_json",
    "too_large",
]

SLASH = chr(47)  # route strings are built from it (a quote before a slash is mangled by a tool)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_SECURITY_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class ClientGoneError(Exception):
    """The client closed the connection before its request was read."""


class Request:
    """One HTTP request: method, path segments, query and headers (lower-case names)."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.segments: tuple[str, ...] = tuple(self.path.split(SLASH)[1:])
        query = scope.get("query_string", b"").decode("latin-1")
        self.query = urllib.parse.parse_qs(query, keep_blank_values=True)
        self.headers: dict[str, str] = {}
        self.repeated: set[str] = set()
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            if name in self.headers:
                self.repeated.add(name)
            self.headers[name] = raw_value.decode("latin-1")
        self.receive = receive

    @property
    def is_head(self) -> bool:
        return self.method == "HEAD"

    def single_query(self, name: str) -> str | None:
        """The value of query parameter ``name``; a parameter given twice is refused.

        Raises:
            ApiError: 400 when ``name`` appears more than once.
        """
        values = self.query.get(name)
        if not values:
            return None
        if len(values) > 1:
            msg = f"the query parameter {name} is given {len(values)} times"
            raise ApiError(400, "bad_request", msg, field=name)
        return str(values[0])


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole (small) body of ``request``.

    Raises:
        ApiError: 413 when it is longer than ``limit`` bytes.
        ClientGoneError: the client went away.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def too_large(size: int, limit: int) -> ApiError:
    """The 413 for a body of (at least) ``size`` bytes."""
    msg = f"the body is {size} bytes or more; this server takes at most {limit} bytes"
    return ApiError(413, "payload_too_large", msg)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    is_head: bool = False,
) -> None:
    """Answer with ``body`` (only its length, to a HEAD)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *_SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if is_head else body})


async def send_json(
    send: Send,
    status: int,
    data: object,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    is_head: bool = False,
) -> None:
    """Answer with ``data`` as JSON."""
    body = json.dumps(data, separators=(",", ":")).encode()
    await send_bytes(
        send, status, body, content_type=b"application/json", headers=headers, is_head=is_head
    )


async def send_error(send: Send, error: ApiError, *, is_head: bool = False) -> None:
    """Answer ``{"error": {"code", "message"}}`` with the error's status."""
    headers: Headers = list(error.headers)
    if error.status == 401 and not any(name == b"www-authenticate" for name, _ in headers):
        headers.append((b"www-authenticate", b'Bearer realm="cachehook"'))
    if error.allow:
        headers.append((b"allow", ", ".join(error.allow).encode("ascii")))
    await send_json(send, error.status, error.to_json(), headers=headers, is_head=is_head)
