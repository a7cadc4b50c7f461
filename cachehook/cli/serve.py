"""``cachehook serve``: run a Remote Cache API (v8) server with an events dashboard.

Exit codes of ``serve``:
    0  stopped with Ctrl-C (SIGINT), after a graceful shutdown
    2  a bad option, a port already in use, an unreadable or malformed tokens file, an
       unusable storage directory, bucket or events database, or the ``server`` extra is
       not installed
SIGTERM shuts the server down just as gracefully, then ends the process by that signal (as
uvicorn does), which is what service managers expect of a stopped service.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import os
import socket
from pathlib import Path

import click

from cachehook.config import DEFAULT_MAX_SIZE, parse_size
from cachehook.errors import ConfigError, StoreError

__all__ = ["serve"]

_DEFAULT_MAX_BODY = "2GiB"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _size(value: str, name: str) -> int:
    size = parse_size(value, name=name)
    if size <= 0:
        msg = f"--{name} must be more than 0 bytes"
        raise ConfigError(msg)
    return size


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before any banner (issue 9).

    The probe binds as uvicorn will (SO_REUSEADDR), so a port in TIME_WAIT still passes.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        msg = f"--host {host}: cannot resolve it to an address to listen on ({exc.strerror})"
        raise ConfigError(msg) from exc
    family, kind, proto, _, address = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "is already in use by another process (an earlier cachehook serve?)"
            elif exc.errno == errno.EACCES:
                why = "needs privileges to be listened on (ports below 1024)"
            else:
                why = f"cannot be listened on ({exc.strerror})"
            msg = (
                f"port {port} on {host} {why}: pick another with --port N "
                "(or CACHEHOOK_SERVE_PORT), e.g. --port 8081"
            )
            raise ConfigError(msg) from exc


@click.command("serve", short_help="Serve a Remote Cache (v8) for turbo and cachehook.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_HOST",
    help="Address to bind; anything but loopback serves the network (plain HTTP).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_PORT",
    help="TCP port.",
)
@click.option(
    "--storage",
    required=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_STORAGE",
    help="Directory for artifacts, uploads in progress and the event log; or s3://BUCKET[/PREFIX]"
    " for an object store several servers share (endpoint, region, credentials: the AWS_*"
    " variables and profiles).",
)
@click.option(
    "--events-db",
    default=None,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_EVENTS_DB",
    help="The event log: a SQLite file, or postgresql://USER:PASSWORD@HOST/DB for several"
    " servers [events.sqlite3 in the storage directory; required with s3://].",
)
@click.option(
    "--tokens",
    "tokens_file",
    required=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_TOKENS",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of bearer tokens, their scopes and teams (see docs/server.md).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_WORKERS",
    help="Worker processes sharing the storage.",
)
@click.option(
    "--max-size",
    metavar="SIZE",
    default="10GiB",
    show_default=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_MAX_SIZE",
    help="Artifact bytes kept before the least recently used are evicted.",
)
@click.option(
    "--max-body",
    metavar="SIZE",
    default=_DEFAULT_MAX_BODY,
    show_default=True,
    show_envvar=True,
    envvar="CACHEHOOK_SERVE_MAX_BODY",
    help="Largest upload accepted (413 beyond).",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=True,
    show_default=True,
    help="Serve the dashboard at / and its numbers at /api/stats.",
)
@click.option(
    "--retention-days",
    type=click.IntRange(1, 100_000),
    default=400,
    show_default=True,
    help="How long cache events are kept.",
)
@click.option(
    "--dashboard-auth/--no-dashboard-auth",
    default=None,
    help="Ask for a token (HTTP Basic, token as password) on / and /api/stats "
    "[default: when --host is beyond loopback].",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1, 600),
    default=5.0,
    show_default=True,
    envvar="CACHEHOOK_SERVE_HEADER_TIMEOUT",
    help="Seconds a client has to send a request's headers (408 after).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    envvar="CACHEHOOK_SERVE_BODY_TIMEOUT",
    help="Seconds an upload may stall before the connection is dropped.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    envvar="CACHEHOOK_SERVE_MAX_CONNECTIONS",
    help="Open connections per worker; more are refused with 503 at once.",
)
@click.option(
    "--max-connections-per-client",
    type=click.IntRange(1, 1_000_000),
    default=200,
    show_default=True,
    envvar="CACHEHOOK_SERVE_MAX_CONNECTIONS_PER_CLIENT",
    help="Open connections per client address and worker; more are refused with 503.",
)
@click.option("--log-level", type=click.Choice(_LOG_LEVELS), default="info", show_default=True)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def serve(
    host: str,
    port: int,
    storage: str,
    events_db: str | None,
    tokens_file: Path,
    workers: int,
    max_size: str | None,
    max_body: str,
    dashboard: bool,
    retention_days: int,
    dashboard_auth: bool | None,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    max_connections_per_client: int,
    log_level: str,
    access_log: bool,
) -> None:
    """Serve a Turborepo Remote Cache (v8) for turbo and cachehook, with a dashboard.

    \b
    cachehook serve --storage /var/lib/cachehook --tokens tokens.toml
    then: TURBO_API=http://127.0.0.1:8080 TURBO_TOKEN=... TURBO_TEAM=acme turbo run build
    and open http://127.0.0.1:8080/ for hit rate and time saved.
    """
    # httptools too: the connection limits (server/guard.py) are built on its protocol
    if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("httptools") is None:
        msg = (
            "cachehook serve needs the server extra (uvicorn, httptools): in a clone of "
            "cachehook, pip install '.[server]'"
        )
        raise ConfigError(msg)
    from cachehook.server.app import CONFIG_ENV, CacheServer, ServerConfig
    from cachehook.server.eventlog import is_database_url
    from cachehook.server.guard import LIMITS_ENV, PROTOCOL, ConnectionLimits
    from cachehook.server.storage import is_object_store
    from cachehook.server.tokens import load_tokens

    if is_object_store(storage) and events_db is None:
        msg = (
            f"--storage {storage} needs --events-db: postgresql://... for several servers, or a"
            " SQLite file for one"
        )
        raise ConfigError(msg)
    config = ServerConfig(
        storage=storage if is_object_store(storage) else Path(storage).expanduser().resolve(),
        events_db=(
            events_db
            if events_db is None or is_database_url(events_db)
            else Path(events_db).expanduser().resolve()
        ),
        tokens=tokens_file.expanduser().resolve(),
        max_size=DEFAULT_MAX_SIZE if max_size is None else _size(max_size, "max-size"),
        max_body=_size(max_body, "max-body"),
        dashboard=dashboard,
        retention_days=retention_days,
        dashboard_needs_token=not _is_loopback(host) if dashboard_auth is None else dashboard_auth,
    )
    limits = ConnectionLimits(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        max_per_client=max_connections_per_client,
    )
    if config.max_body > config.max_size:
        msg = f"--max-body ({max_body}) is larger than --max-size: such an upload could not stay"
        raise ConfigError(msg)
    tokens = load_tokens(config.tokens)
    try:
        server = CacheServer(config, tokens=tokens)  # fail here, not in each worker
        server.storage.close()
        server.events.close()
    except StoreError as exc:
        raise ConfigError(str(exc)) from exc
    _check_port_free(host, port)
    if not _is_loopback(host):
        click.echo(
            f"cachehook serve: listening on {host}, beyond this machine, over plain HTTP: "
            "put a TLS proxy in front of it",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"cachehook serve: http://{shown}:{port}/ storage {config.storage}, "
        f"{len(tokens)} token(s), {workers} worker(s)",
        err=True,
    )
    os.environ[CONFIG_ENV] = config.to_json()
    os.environ[LIMITS_ENV] = limits.to_json()
    import uvicorn

    try:
        uvicorn.run(
            "cachehook.server.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            proxy_headers=False,
            server_header=False,
            lifespan="on",
            http=PROTOCOL,
            timeout_keep_alive=5,
            # uvicorn kills a worker that does not answer its supervisor's ping within 5 s
            # by default: on a busy host a worker still importing the app would be killed.
            timeout_worker_healthcheck=30,
        )
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, once shut down
        click.echo("cachehook serve: stopped", err=True)
