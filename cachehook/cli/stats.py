"""``cachehook stats``: hits, misses and time saved from the run history; the cache's size."""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

import click

from cachehook.cli._options import ALL_PROJECTS, CACHE_DIR, JSON, load_cli_settings, options
from cachehook.cli._output import Console, format_duration, print_json
from cachehook.cli.cache import format_size, open_store
from cachehook.errors import StoreError
from cachehook.history import history_path, project_id, read_history

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path
    from typing import Unpack

    from cachehook.cli._options import SettingsFlags
    from cachehook.config import Settings
    from cachehook.history import HistoryEntry

__all__ = ["stats"]

_PERIODS = (("today", "today"), ("7d", "7 days"), ("all", "all time"))
_ROWS = (
    ("local_hits", "local hits"),
    ("local_misses", "local misses"),
    ("remote_hits", "remote hits"),
    ("remote_misses", "remote misses"),
    ("hits", "hits"),
    ("misses", "misses (ran)"),
)


def tally(entries: Iterable[HistoryEntry]) -> dict[str, Any]:
    """Counts over some history entries: hits and misses by side, hit rate, time saved."""
    counts = dict.fromkeys(("runs", "saved_ms", *(name for name, _ in _ROWS)), 0)
    for entry in entries:
        counts["runs"] += 1
        if entry.status == "HIT":
            counts["hits"] += 1
            counts["saved_ms"] += entry.saved_ms
            counts["local_hits" if entry.source == "LOCAL" else "remote_hits"] += 1
        else:
            counts["misses"] += 1
        counts["local_misses"] += entry.local_hit is False
        counts["remote_misses"] += entry.remote_hit is False
    asked = counts["hits"] + counts["misses"]
    return {**counts, "hit_rate": round(counts["hits"] / asked, 4) if asked else None}


def _periods(settings: Settings, now: float, project: str | None) -> dict[str, dict[str, Any]]:
    midnight = datetime.datetime.combine(datetime.date.today(), datetime.time()).timestamp()
    starts = {"today": midnight, "7d": now - 7 * 86400, "all": float("-inf")}
    entries = list(read_history(settings.cache_dir, project=project))
    return {name: tally(e for e in entries if e.at >= starts[name]) for name, _ in _PERIODS}


def _cache_info(settings: Settings, console: Console) -> dict[str, Any]:
    info: dict[str, Any] = {
        "directory": str(settings.cache_dir / "store"),
        "size": 0,
        "max_size": settings.max_size,
        "entries": 0,
    }
    try:
        store = open_store(settings, create=False)
        if store is not None:
            with store:
                info["size"] = store.volume()
                info["entries"] = sum(1 for _ in store.entries())
    except StoreError as exc:
        console.warn(str(exc))
    return info


def _echo(periods: dict[str, dict[str, Any]], cache: dict[str, Any], history: Path) -> None:
    click.echo(f"{'':<15}" + "".join(f"{label:>10}" for _, label in _PERIODS))
    for key, label in _ROWS:
        click.echo(f"{label:<15}" + "".join(f"{periods[p][key]:>10}" for p, _ in _PERIODS))
    rates = [periods[p]["hit_rate"] for p, _ in _PERIODS]
    click.echo(f"{'hit rate':<15}" + "".join(f"{_percent(r):>10}" for r in rates))
    saved = [format_duration(periods[p]["saved_ms"]) for p, _ in _PERIODS]
    click.echo(f"{'time saved':<15}" + "".join(f"{s:>10}" for s in saved))
    share = cache["size"] / cache["max_size"] if cache["max_size"] else 0
    click.echo(
        f"\ncache: {format_size(cache['size'])} of {format_size(cache['max_size'])} "
        f"({_percent(share)}), {cache['entries']} entries, in {cache['directory']}"
    )
    click.echo(f"history: {history}")


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


@click.command("stats", short_help="Show hits, misses and time saved from the run history.")
@options(
    JSON,
    ALL_PROJECTS._replace(help="Count every project's runs, not only this one's."),
    CACHE_DIR,
)
def stats(as_json: bool, all_projects: bool, **flags: Unpack[SettingsFlags]) -> None:
    """Show hits and misses (local and remote), hit rate and time saved, today, over 7 days
    and all time, from the run history of this project (of all, with --all-projects); and
    the cache's size against its cap.
    """
    settings = load_cli_settings(flags)
    console = Console()
    project = None if all_projects else project_id(settings.root)
    periods = _periods(settings, time.time(), project)
    cache = _cache_info(settings, console)
    history = history_path(settings.cache_dir)
    if as_json:
        scope = None if all_projects else str(settings.root)
        print_json({"periods": periods, "project": scope, "cache": cache, "history": str(history)})
    else:
        _echo(periods, cache, history)
