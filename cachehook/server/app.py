"""The ASGI application of ``cachehook serve``: the Remote Cache API (v8) and the dashboard.

Over 400 lines on purpose: it is the route table of the v8 API and the dashboard, one method
per route, each small; storage, the event log, tokens, validation and connection limits
live in their own modules.

Routes::

    GET  /v8/artifacts/status          {"status": "enabled"}                       any scope
    HEAD /v8/artifacts/{hash}          200 + headers, or 404                       read
    GET  /v8/artifacts/{hash}          the artifact, streamed                      read
    PUT  /v8/artifacts/{hash}          store it (streamed to disk), 202            write
    POST /v8/artifacts                 {"hashes": [...]} -> {hash: {...} | null}   read
    DELETE /v8/artifacts               remove all of the team's artifacts           admin
    POST /v8/artifacts/events          record cache events                         any scope
    OPTIONS /v8/...                    CORS preflight (turbo's ``--preflight``)
    GET  /                             the dashboard (HTML)
    GET  /api/stats                    the dashboard's numbers (JSON)
    GET  /healthz                      {"status": "ok"}, no token

Every ``/v8`` route but OPTIONS needs ``Authorization: Bearer <token>``; the team is the
``teamId`` query parameter, else ``slug``, else the token's ``default-team``, and the token
must be allowed it. Refusals are
``{"error": {"code", "message"}}``: 400 ``bad_request`` (with ``field``), 401 ``unauthorized``,
403 ``forbidden``, 404 ``not_found``, 405 (with ``Allow``), 413 ``payload_too_large``, 503
when storage fails.

An upload is read chunk by chunk (uvicorn pauses the socket while a chunk waits), written to a
temporary file in batches of up to 1 MiB from a worker thread, and stored only once complete:
the server's memory does not grow with the artifact.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cachehook import __version__
from cachehook.config import DEFAULT_MAX_SIZE
from cachehook.errors import CachehookError, ConfigError, StoreError
from cachehook.server._asgi import (
    SLASH,
    ClientGoneError,
    Request,
    read_body,
    send_bytes,
    send_error,
    send_json,
    too_large,
)
from cachehook.server.dashboard import render_dashboard
from cachehook.server.eventlog import EventLog
from cachehook.server.storage import is_object_store, open_storage
from cachehook.server.tasknames import HEAD_BYTES, task_of
from cachehook.server.tokens import ALL_TEAMS, Token, TokenTable, load_tokens
from cachehook.server.validation import (
    HASH_RE,
    HASH_RULE,
    TEAM_RE,
    ApiError,
    parse_artifact_headers,
    parse_client_headers,
    parse_events,
    parse_hashes,
)

if TYPE_CHECKING:
    from cachehook._hits import ArtifactMeta
    from cachehook.server._asgi import Receive, Scope, Send
    from cachehook.server.storage import Storage, Upload

__all__ = ["CONFIG_ENV", "DEFAULT_MAX_BODY", "CacheServer", "ServerConfig", "app_from_environment"]

logger = logging.getLogger("cachehook.server")

CONFIG_ENV = "CACHEHOOK_SERVE_CONFIG"  # how ``cachehook serve`` hands its settings to workers
DEFAULT_MAX_BODY = 2 << 30
_JSON_LIMIT = 1 << 20  # events and queries are small; 1 MiB is thousands of them
_CHUNK = 1 << 20
_PREFLIGHT_HEADERS = (
    "Authorization, Content-Type, User-Agent, x-artifact-duration, x-artifact-tag, "
    "x-artifact-sha, x-artifact-dirty-hash, x-artifact-client-ci, x-artifact-client-interactive"
)
_ARTIFACTS = ("v8", "artifacts")


@dataclass(frozen=True)
class ServerConfig:
    """What one server (all its workers) serves from, and its limits."""

    storage: Path | str  # a directory, or an object store's ``s3://BUCKET[/PREFIX]`` (issue 13)
    tokens: Path
    max_size: int = DEFAULT_MAX_SIZE
    max_body: int = DEFAULT_MAX_BODY
    dashboard: bool = True
    retention_days: int = 400
    dashboard_needs_token: bool = False  # set when the server listens beyond loopback
    events_db: Path | str | None = None  # a SQLite file or postgresql:// URL; None: in storage

    def to_json(self) -> str:
        data = asdict(self)
        data["storage"], data["tokens"] = str(self.storage), str(self.tokens)
        data["events_db"] = None if self.events_db is None else str(self.events_db)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        data = json.loads(text)
        storage, events_db = data["storage"], data.get("events_db")
        data["storage"] = storage if is_object_store(storage) else Path(storage)
        data["tokens"] = Path(data["tokens"])
        data["events_db"] = (
            events_db if events_db is None or "://" in events_db else Path(events_db)
        )
        return cls(**data)

    @property
    def events_location(self) -> Path | str:
        """Where the event log is: ``events_db``, else ``events.sqlite3`` in the directory."""
        if self.events_db is not None:
            return self.events_db
        if isinstance(self.storage, str):
            msg = "an object store (--storage s3://...) needs --events-db"
            raise ConfigError(msg)
        return self.storage / "events.sqlite3"


def app_from_environment() -> CacheServer:
    """The app for a uvicorn worker: its settings come from ``CACHEHOOK_SERVE_CONFIG``."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        msg = f"{CONFIG_ENV} is not set: start the server with `cachehook serve`"
        raise ConfigError(msg)
    return CacheServer(ServerConfig.from_json(text))


class CacheServer:
    """The ASGI app. Opens the storage, the event log and the tokens file at once.

    Raises:
        ConfigError: the tokens file is missing or malformed.
        StoreError: the storage directory or the event log cannot be opened.
    """

    def __init__(self, config: ServerConfig, *, tokens: TokenTable | None = None) -> None:
        self.config = config
        self.tokens = tokens if tokens is not None else load_tokens(config.tokens)
        if isinstance(config.storage, Path):  # the event log's default place is in it
            try:
                config.storage.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"cannot create the storage directory {config.storage}: {exc.strerror}"
                raise StoreError(msg) from exc
        self.events = EventLog(config.events_location, retention_days=config.retention_days)
        self.storage: Storage = open_storage(
            config.storage, max_size=config.max_size, lease=self.events
        )
        self.storage.remove_stale_uploads()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            await self._route(request, send)
        except ApiError as error:
            await send_error(send, error, is_head=request.is_head)
        except ClientGoneError:
            logger.debug("client went away during %s %s", request.method, request.path)
        except CachehookError as exc:
            logger.error("%s %s failed: %s", request.method, request.path, exc)
            failure = ApiError(503, "storage_unavailable", "the server's storage failed")
            await send_error(send, failure, is_head=request.is_head)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.storage.close()
                self.events.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ---------------------------------------------------------------------------

    async def _route(self, request: Request, send: Send) -> None:
        segments, method = request.segments, request.method
        if segments[:2] == _ARTIFACTS:
            if method == "OPTIONS":
                await self._preflight(send)
            elif len(segments) == 2:
                self._allow(request, "POST", "DELETE", "OPTIONS")
                if method == "DELETE":
                    await self._delete_all(request, send)
                else:
                    await self._query(request, send)
            elif segments[2:] == ("status",):
                self._allow(request, "GET", "OPTIONS")
                await self._status(request, send)
            elif segments[2:] == ("events",):
                self._allow(request, "POST", "OPTIONS")
                await self._record_events(request, send)
            else:
                self._allow(request, "GET", "HEAD", "PUT", "OPTIONS")
                # A %2F in the hash decodes to more segments: join them so the check sees it.
                await self._artifact(request, send, SLASH.join(segments[2:]))
        elif segments == ("healthz",):
            self._allow(request, "GET", "HEAD")
            await send_json(send, 200, {"status": "ok"}, is_head=request.is_head)
        elif self.config.dashboard and segments == ("",):
            self._allow(request, "GET", "HEAD")
            await self._dashboard(request, send)
        elif self.config.dashboard and segments == ("api", "stats"):
            self._allow(request, "GET", "HEAD")
            stats = await self._dashboard_stats(request)
            await send_json(send, 200, stats, is_head=request.is_head)
        else:
            raise ApiError(404, "not_found", f"no route {request.method} {request.path}")

    @staticmethod
    def _allow(request: Request, *methods: str) -> None:
        if request.method not in methods:
            msg = f"{request.path} takes {', '.join(methods)}, not {request.method}"
            raise ApiError(405, "method_not_allowed", msg, allow=methods)

    # -- credentials -----------------------------------------------------------------------

    def _authorize(
        self, request: Request, *, scope: str | None, needs_team: bool
    ) -> tuple[Token, str | None]:
        """The request's token and team, or the refusal (401, 400, 403, in that order)."""
        if "authorization" in request.repeated:
            raise ApiError(400, "bad_request", "the Authorization header is given twice")
        header = request.headers.get("authorization")
        if header is None:
            msg = "missing Authorization header (Bearer <token>)"
            raise ApiError(401, "unauthorized", msg)
        kind, _, secret = header.strip().partition(" ")
        token = self.tokens.find(secret.strip()) if kind.lower() == "bearer" else None
        if token is None:
            raise ApiError(401, "unauthorized", "invalid token")
        team = self._team(request) or token.default_team
        if team is None and needs_team:
            msg = "the teamId or slug query parameter is required"
            raise ApiError(400, "bad_request", msg, field="slug")
        if team is not None and not token.may_use(team):
            raise ApiError(403, "forbidden", f"token {token.name!r} may not use team {team!r}")
        if scope is not None and scope not in token.scopes:
            verb = "delete" if scope == "admin" else scope
            msg = f"token {token.name!r} may not {verb} artifacts (no {scope!r} scope)"
            raise ApiError(403, "forbidden", msg)
        parse_client_headers(request.headers)
        return token, team

    @staticmethod
    def _team(request: Request) -> str | None:
        """``teamId`` if given, else ``slug``: the namespace of the request's artifacts."""
        team_id, slug = request.single_query("teamId"), request.single_query("slug")
        for name, value in (("teamId", team_id), ("slug", slug)):
            if value is not None and not TEAM_RE.match(value):
                msg = f"{name} must be 1-100 letters, digits, '_' or '-' (first a letter or digit)"
                raise ApiError(400, "bad_request", msg, field=name)
        return team_id or slug

    # -- the API ---------------------------------------------------------------------------

    async def _preflight(self, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", b"GET, HEAD, PUT, POST, DELETE, OPTIONS"),
            (b"access-control-allow-headers", _PREFLIGHT_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
        ]
        await send_bytes(send, 200, b"", content_type=b"text/plain", headers=headers)

    async def _status(self, request: Request, send: Send) -> None:
        self._authorize(request, scope=None, needs_team=False)
        await send_json(send, 200, {"status": "enabled"})

    async def _artifact(self, request: Request, send: Send, hash_: str) -> None:
        scope = "write" if request.method == "PUT" else "read"
        _, team = self._authorize(request, scope=scope, needs_team=True)
        assert team is not None
        if not HASH_RE.match(hash_):
            msg = f"the artifact hash must be {HASH_RULE}"
            raise ApiError(400, "bad_request", msg, field="hash")
        if request.method == "PUT":
            await self._put(request, send, team, hash_)
        else:
            await self._get(request, send, team, hash_)

    async def _get(self, request: Request, send: Send, team: str, hash_: str) -> None:
        # the lookup and the first chunk in one trip to a thread: most artifacts are one chunk
        opened = await asyncio.to_thread(self._open_and_read, team, hash_, request.is_head)
        if opened is None:
            raise ApiError(404, "not_found", f"artifact {hash_} not found")
        handle, info, first = opened
        # @vercel/sdk's downloadArtifact asks for JSON only and refuses the bytes under any
        # other type (issue 12); every other client gets what the bytes are.
        is_json_only = request.headers.get("accept", "").strip().lower() == "application/json"
        kind = b"application/json" if is_json_only else b"application/octet-stream"
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", kind),
                        (b"content-length", str(info.size).encode()),
                        (b"cache-control", b"no-store"),
                        *_artifact_headers(info),
                    ],
                }
            )
            left = 0 if request.is_head else info.size - len(first)
            await send({"type": "http.response.body", "body": first, "more_body": left > 0})
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, left))
                if not chunk:
                    msg = f"artifact {hash_} of {team} ended {left} bytes early"
                    raise OSError(msg)
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        finally:
            handle.close()

    def _open_and_read(
        self, team: str, hash_: str, is_head: bool
    ) -> tuple[BinaryIO, ArtifactMeta, bytes] | None:
        if is_head:  # no body to open: on S3 a HEAD, not a GET whose stream is dropped
            known = self.storage.info(team, hash_)
            return None if known is None else (io.BytesIO(), known, b"")
        opened = self.storage.open(team, hash_)
        if opened is None:
            return None
        handle, info = opened
        try:
            first = b"" if is_head else handle.read(min(_CHUNK, info.size))
        except OSError as exc:
            handle.close()
            msg = f"cannot read artifact {hash_} of {team}: {exc}"
            raise StoreError(msg) from exc
        if len(first) < min(_CHUNK, info.size) and not is_head:
            handle.close()
            msg = f"artifact {hash_} of {team} is shorter than its {info.size} bytes"
            raise StoreError(msg)
        return handle, info, first

    async def _put(self, request: Request, send: Send, team: str, hash_: str) -> None:
        meta = parse_artifact_headers(request.headers)
        declared = request.headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            raise ApiError(400, "bad_request", "malformed Content-Length", field="content-length")
        if declared is not None and int(declared) > self.config.max_body:
            raise too_large(int(declared), self.config.max_body)
        upload = self.storage.begin_upload(team, hash_, meta)
        head = bytearray()  # the first bytes, where cachehook's meta.json names the task
        try:
            tail = await self._receive_into(request, upload, head)
            if upload.size + sum(len(chunk) for chunk in tail) == 0:
                raise ApiError(400, "bad_request", "an artifact cannot be empty", field="body")
            # the last chunks, the rename into the store and its records: one trip to a thread
            await asyncio.to_thread(self.storage.commit, team, hash_, upload, meta, tail=tail)
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        if self.config.dashboard and (task := task_of(bytes(head))) is not None:
            await asyncio.to_thread(self.events.record_task, team, hash_, task)
        param = "teamId" if request.single_query("teamId") else "slug"
        url = f"{SLASH}v8{SLASH}artifacts{SLASH}{hash_}?{param}={team}"
        # 202, as Vercel answers: @vercel/sdk refuses anything else; turbo and cachehook take
        # any 2xx (issue 12).
        await send_json(send, 202, {"urls": [url]})

    async def _delete_all(self, request: Request, send: Send) -> None:
        _, team = self._authorize(request, scope="admin", needs_team=True)
        assert team is not None
        deleted = await asyncio.to_thread(self.storage.delete_team, team)
        logger.info("deleted %d artifacts of team %s", deleted, team)
        await send_json(send, 200, {"deletedCount": deleted})

    async def _receive_into(self, request: Request, upload: Upload, head: bytearray) -> list[bytes]:
        """Read the body into ``upload`` in batches of ``_CHUNK``; returns the last batch.

        The first ``HEAD_BYTES`` are also copied into ``head``.
        """
        pending: list[bytes] = []
        pending_size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientGoneError
            chunk: bytes = message.get("body", b"")
            received = upload.size + pending_size + len(chunk)
            if received > self.config.max_body:
                raise too_large(received, self.config.max_body)
            if chunk:
                pending.append(chunk)
                pending_size += len(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
            if not message.get("more_body", False):
                return pending
            if pending_size >= _CHUNK:
                await asyncio.to_thread(upload.write, pending)
                pending, pending_size = [], 0

    async def _query(self, request: Request, send: Send) -> None:
        _, team = self._authorize(request, scope="read", needs_team=True)
        assert team is not None
        hashes = parse_hashes(await read_body(request, limit=_JSON_LIMIT))

        def look_up() -> dict[str, object]:
            found: dict[str, object] = {}
            for hash_ in hashes:
                info = self.storage.info(team, hash_)
                found[hash_] = None if info is None else _query_entry(info)
            return found

        await send_json(send, 200, await asyncio.to_thread(look_up))

    async def _record_events(self, request: Request, send: Send) -> None:
        _, team = self._authorize(request, scope=None, needs_team=True)
        assert team is not None
        client = parse_client_headers(request.headers)
        events = parse_events(await read_body(request, limit=_JSON_LIMIT))
        # the slug beside an opaque teamId, for the dashboard
        slug = request.single_query("slug") if request.single_query("teamId") else None
        if events:
            await asyncio.to_thread(
                self.events.record,
                team,
                events,
                ci=client.ci,
                interactive=client.interactive,
                slug=slug,
            )
        await send_bytes(send, 200, b"", content_type=b"application/json")

    # -- the dashboard ---------------------------------------------------------------------

    @staticmethod
    def _days(request: Request) -> int:
        raw = request.single_query("days")
        if raw is None:
            return 30
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 400:
            raise ApiError(400, "bad_request", "days must be 1 to 400", field="days")
        return int(raw)

    def _viewer_teams(self, request: Request) -> frozenset[str] | None:
        """The teams the dashboard may show this request (None: all), or a 401.

        A token is read from ``Authorization: Basic`` (the token is the password; any user
        name) or ``Bearer``. Without one, all teams are shown on loopback, and nothing beyond.
        """
        header = request.headers.get("authorization")
        challenge = ((b"www-authenticate", b'Basic realm="cachehook dashboard"'),)
        if header is None:
            if self.config.dashboard_needs_token:
                msg = "the dashboard needs a token: give it as the password (any user name)"
                raise ApiError(401, "unauthorized", msg, headers=challenge)
            return None
        kind, _, value = header.strip().partition(" ")
        secret: str | None = None
        if kind.lower() == "bearer":
            secret = value.strip()
        elif kind.lower() == "basic":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        token = None if secret is None else self.tokens.find(secret)
        if token is None:
            raise ApiError(401, "unauthorized", "invalid token", headers=challenge)
        return None if ALL_TEAMS in token.teams else token.teams

    async def _dashboard_stats(self, request: Request) -> dict[str, Any]:
        teams, days = self._viewer_teams(request), self._days(request)

        def gather() -> dict[str, Any]:
            stats = self.events.stats(days=days, teams=teams)
            details = self.events.details(days=days, teams=teams)
            used = self.storage.used_by_team()
            slugs = details.pop("slugs")
            for row in stats["by_team"]:
                row["slug"] = slugs.get(row["team"])
                row["storage_bytes"] = used.get(row["team"], 0)
            shown = used if teams is None else {t: n for t, n in used.items() if t in teams}
            stats["storage"] = {
                "used_bytes": sum(shown.values()),
                "cap_bytes": self.config.max_size,
            }
            return {**stats, **details}

        return await asyncio.to_thread(gather)

    async def _dashboard(self, request: Request, send: Send) -> None:
        stats = await self._dashboard_stats(request)
        page = render_dashboard(stats, version=__version__).encode("utf-8")
        csp = b"default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
        await send_bytes(
            send,
            200,
            page,
            content_type=b"text/html; charset=utf-8",
            headers=[(b"content-security-policy", csp), (b"x-frame-options", b"DENY")],
            is_head=request.is_head,
        )


def _artifact_headers(info: ArtifactMeta) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-artifact-duration", str(info.duration_ms).encode())]
    for name, value in (
        (b"x-artifact-tag", info.tag),
        (b"x-artifact-sha", info.sha),
        (b"x-artifact-dirty-hash", info.dirty_hash),
    ):
        if value is not None:
            headers.append((name, value.encode("ascii")))
    return headers


def _query_entry(info: ArtifactMeta) -> dict[str, Any]:
    entry: dict[str, Any] = {"size": info.size, "taskDurationMs": info.duration_ms}
    if info.tag is not None:
        entry["tag"] = info.tag
    if info.sha is not None:
        entry["sha"] = info.sha
    if info.dirty_hash is not None:
        entry["dirtyHash"] = info.dirty_hash
    return entry
