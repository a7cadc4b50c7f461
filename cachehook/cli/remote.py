"""``cachehook remote status``: is the remote cache reachable, does it take the token, is it on.

The status route of some servers (turborepo-remote-cache) needs no token, so the credentials
are checked separately with a HEAD of an artifact nobody stores: 404 or 200 means the token was
accepted, 401/403 that it was not.

Exit codes of ``remote status``:
    0  reachable, the credentials are accepted and remote caching is enabled
    2  no remote configured (set CACHEHOOK_API or TURBO_API), or a malformed setting
    4  unreachable: cannot connect, no answer in time, or a 5xx answer
    5  the credentials were refused (401/403)
    6  reachable and authenticated, but remote caching is disabled, over its limit or paused
    7  the server answered, but not as a Remote Cache API server does (e.g. 400 for a missing
       team, 404 for the status route)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import click

from cachehook.cli._group import SuggestingGroup
from cachehook.cli._options import JSON, load_cli_settings, options
from cachehook.errors import (
    ConfigError,
    RemoteAuthError,
    RemoteError,
    RemoteUnavailable,
)

if TYPE_CHECKING:
    from cachehook.config import RemoteSettings

__all__ = ["remote"]

EXIT_ENABLED = 0
EXIT_NOT_CONFIGURED = 2
EXIT_UNREACHABLE = 4
EXIT_AUTH_REFUSED = 5
EXIT_NOT_ENABLED = 6
EXIT_PROTOCOL = 7

_PROBE_KEY = "0" * 32  # a HEAD of it proves the token is accepted; nothing is ever stored there
_NOT_CONFIGURED = "no remote cache configured: set CACHEHOOK_API (or TURBO_API)"


@dataclass
class _Report:
    api: str | None
    team_id: str | None = None
    slug: str | None = None
    reachable: bool | None = None
    authenticated: bool | None = None
    status: str | None = None
    problem: str | None = None
    exit_code: int = EXIT_ENABLED

    @property
    def enabled(self) -> bool | None:
        return None if self.status is None else self.status == "enabled"

    def fail(self, exit_code: int, problem: str) -> _Report:
        self.exit_code, self.problem = exit_code, problem
        return self


remote = SuggestingGroup("remote", help="Inspect the remote cache (Turborepo Remote Cache API v8).")


@remote.command("status", short_help="Check that the remote is reachable, takes the token, is on.")
@options(JSON)
def status(as_json: bool) -> None:
    """Check that the remote cache is reachable, takes the token and is enabled.

    \b
    Exit codes: 0 enabled, 2 not configured, 4 unreachable, 5 credentials refused,
    6 caching disabled/over limit/paused, 7 not a Remote Cache API answer.
    """
    settings = load_cli_settings({}).remote
    if settings is None:
        if not as_json:
            raise ConfigError(_NOT_CONFIGURED)
        report = _Report(api=None).fail(EXIT_NOT_CONFIGURED, _NOT_CONFIGURED)
    else:
        report = _probe(settings)
    if as_json:
        data = {**asdict(report), "configured": settings is not None, "enabled": report.enabled}
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        _print(report)
    click.get_current_context().exit(report.exit_code)


def _probe(settings: RemoteSettings) -> _Report:
    from cachehook.remote import RemoteCache  # httpx only when the command runs

    report = _Report(api=settings.api, team_id=settings.team_id, slug=settings.slug)
    with RemoteCache(settings) as cache:
        try:
            report.status = cache.status()
            report.reachable = True
            cache.exists(_PROBE_KEY)
            report.authenticated = True
        except RemoteError as exc:
            return _failed(report, exc, settings)
    if report.status != "enabled":
        return report.fail(EXIT_NOT_ENABLED, f"remote caching is {report.status}")
    return report


def _failed(report: _Report, exc: RemoteError, settings: RemoteSettings) -> _Report:
    from cachehook.remote import RemoteCachingDisabledError

    if isinstance(exc, RemoteCachingDisabledError):
        report.reachable = report.authenticated = True
        report.status = exc.status
        return report.fail(EXIT_NOT_ENABLED, str(exc))
    if isinstance(exc, RemoteAuthError):
        report.reachable, report.authenticated = True, False
        return report.fail(EXIT_AUTH_REFUSED, str(exc))
    if isinstance(exc, RemoteUnavailable):
        report.reachable = report.reachable or False
        return report.fail(EXIT_UNREACHABLE, str(exc))
    report.reachable = True
    hint = "" if settings.token else "; no token is set (CACHEHOOK_TOKEN or TURBO_TOKEN)"
    return report.fail(EXIT_PROTOCOL, f"{exc}{hint}")


def _print(report: _Report) -> None:
    def word(value: bool | None) -> str:
        return "unknown" if value is None else "yes" if value else "no"

    team = report.team_id if (report.team_id or "").startswith("team_") else report.slug
    click.echo(f"remote         {report.api}" + (f" (team {team})" if team else ""))
    click.echo(f"reachable      {word(report.reachable)}")
    click.echo(f"authenticated  {word(report.authenticated)}")
    enabled = word(report.enabled)
    click.echo(f"enabled        {enabled}" + (f" ({report.status})" if report.status else ""))
    if report.problem:
        click.echo(f"problem        {report.problem}")
