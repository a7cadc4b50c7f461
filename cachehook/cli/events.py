"""``cachehook events flush``: send the cache events that earlier runs could not deliver.

Runs also send them by themselves, from the background at start; this command is for a CI
step's end, or to check that nothing is waiting.

Exit codes of ``events flush``:
    0  every waiting event was sent (or none was waiting)
    2  no remote configured (set CACHEHOOK_API or TURBO_API), or a malformed setting
    4  some events are still waiting: the events endpoint failed (the reason is printed)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cachehook.cli._group import SuggestingGroup
from cachehook.cli._options import CACHE_DIR, JSON, load_cli_settings, options
from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from typing import Unpack

    from cachehook.cli._options import SettingsFlags

__all__ = ["events"]

EXIT_SENT = 0
EXIT_LEFT = 4

events = SuggestingGroup("events", help="Cache usage events (POST /v8/artifacts/events).")


def _cwd() -> Path:
    """The working directory, or ``/`` once it is gone.

    The project may be removed before this command runs in it (a CI job's checkout, a
    temporary directory; issue 9). The remote settings then come from the environment alone.
    """
    try:
        return Path.cwd()
    except FileNotFoundError:
        return Path(os.sep)


@events.command("flush")
@options(
    JSON,
    CACHE_DIR._replace(
        help="The cache directory whose spool to send (default: $CACHEHOOK_CACHE_DIR, else "
        "$XDG_CACHE_HOME/cachehook, else ~/.cache/cachehook)."
    ),
)
def flush(as_json: bool, **flags: Unpack[SettingsFlags]) -> None:
    """Send the cache events that earlier runs left in the spool."""
    from cachehook.events import default_spool_dir, flush_all

    settings = load_cli_settings(flags, cwd=_cwd())
    if settings.remote is None:
        msg = "no remote cache configured: set CACHEHOOK_API (or TURBO_API)"
        raise ConfigError(msg)
    spool_dir = default_spool_dir(settings.cache_dir)
    problems: list[str] = []
    sent, left = flush_all(settings.remote, spool_dir, on_warning=problems.append)
    exit_code = EXIT_LEFT if left else EXIT_SENT
    if as_json:
        data = {
            "sent": sent,
            "left": left,
            "spool": str(spool_dir),
            "problem": problems[0] if problems else None,
        }
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(
            f"sent {sent} cache event{'s' * (sent != 1)}; {left} still waiting in {spool_dir}"
        )
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
    click.get_current_context().exit(exit_code)
