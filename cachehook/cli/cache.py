"""``cachehook cache ls | show KEY | prune | clear``: look into and clean the local cache.

``prune`` and ``clear`` ask before they delete anything unless given ``--yes``; declining
exits with code 1 and removes nothing.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import TYPE_CHECKING, Any

import click

from cachehook.cli._group import SuggestingGroup
from cachehook.cli._options import ALL_PROJECTS, CACHE_DIR, JSON, load_cli_settings, options
from cachehook.cli._output import Console, format_duration, print_json
from cachehook.config import parse_duration, parse_size
from cachehook.errors import CachehookError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Unpack

    from cachehook._hits import ArtifactMeta
    from cachehook.cli._options import SettingsFlags
    from cachehook.config import Settings
    from cachehook.store import LocalStore

__all__ = ["cache", "format_size", "open_store"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def format_size(size: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # unreachable: the last unit always returns


def open_store(settings: Settings, *, create: bool = True) -> LocalStore | None:
    """The local store of ``settings``; None if it does not exist and ``create`` is False.

    Raises:
        StoreError: the store cannot be opened.
    """
    from cachehook.store import LocalStore

    directory = settings.cache_dir / "store"
    if not create and not directory.is_dir():
        return None
    return LocalStore(
        directory,
        max_size=settings.max_size,
        on_warning=Console().warn,
        scratch_dir=settings.cache_dir / "tmp",
    )


def _stored_at(entry: ArtifactMeta) -> float:
    return entry.stored_at or 0.0


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def _confirm(question: str, *, yes: bool) -> bool:
    if yes:
        return True
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:  # end of input: a no
        click.echo("", err=True)
        return False


cache = SuggestingGroup("cache", help="Look into and clean the local cache.")


@cache.command("ls")
@options(JSON, ALL_PROJECTS, CACHE_DIR)
def ls(as_json: bool, all_projects: bool, **flags: Unpack[SettingsFlags]) -> None:
    """List the artifacts in the local cache, newest first."""
    from cachehook.history import project_id

    settings = load_cli_settings(flags)
    store = open_store(settings, create=False)
    entries: list[ArtifactMeta] = []
    if store is not None:
        with store:
            entries = sorted(store.entries(), key=_stored_at, reverse=True)
    everything = len(entries)
    if not all_projects:  # one cache serves every project on the machine (issue 10)
        project = project_id(settings.root)
        entries = [entry for entry in entries if entry.project == project]
    if as_json:
        rows = [_entry_json(entry) for entry in entries]
        print_json({"directory": str(settings.cache_dir / "store"), "artifacts": rows})
        return
    for entry in entries:
        task = entry.task or "-"
        took = format_duration(entry.duration_ms)
        click.echo(
            f"{entry.key}  {format_size(entry.size):>10}  {_when(_stored_at(entry))}"
            f"  {took:>7}  {task}"
        )
    total = sum(entry.size for entry in entries)
    others = everything - len(entries)
    more = f" ({others} more of other projects: --all-projects)" if others else ""
    click.echo(f"{len(entries)} artifacts, {format_size(total)}{more}", err=True)


def _entry_json(entry: ArtifactMeta) -> dict[str, Any]:
    return {
        "key": entry.key,
        "size": entry.size,
        "task": entry.task,
        "stored_at": entry.stored_at,
        "duration_ms": entry.duration_ms,
        "command": list(entry.command),
    }


def _find(store: LocalStore, prefix: str) -> ArtifactMeta:
    if len(prefix) < 4:
        msg = f"key {prefix!r}: give at least 4 characters of it"
        raise ConfigError(msg)
    found = [entry for entry in store.entries() if entry.key.startswith(prefix.lower())]
    if not found:
        msg = f"no artifact with a key starting {prefix!r} in the local cache at {store.directory}"
        raise CachehookError(msg)
    if len(found) > 1:
        keys = ", ".join(sorted(entry.key for entry in found)[:5])
        msg = f"key {prefix!r} is ambiguous: it starts {len(found)} keys ({keys})"
        raise ConfigError(msg)
    return found[0]


def _show_json(entry: ArtifactMeta) -> dict[str, Any]:
    meta = entry.to_record()
    manifest = entry.manifest
    if manifest is not None:
        # An env value's digest could be guessed back for a short value: names only.
        env = manifest.get("env")
        pairs = env if isinstance(env, list) else []
        names = [pair[0] for pair in pairs if isinstance(pair, list) and pair]
        meta["manifest"] = {**manifest, "env": names}
    return {**meta, "key": entry.key}


def _inputs(manifest: dict[str, Any]) -> list[str]:
    """The manifest's inputs as ``digest  path`` lines; what is not shaped so is left out (the
    manifest is only checked whole by ``explain``)."""
    found = manifest.get("inputs")
    entries = found if isinstance(found, list) else []
    return [
        f"{i['digest']}  {i['path']}"
        for i in entries
        if isinstance(i, dict)
        and isinstance(i.get("digest"), str)
        and isinstance(i.get("path"), str)
    ]


@cache.command("show", short_help="Show one artifact: task, command, inputs, outputs.")
@click.argument("key")
@options(JSON, CACHE_DIR)
def show(key: str, as_json: bool, **flags: Unpack[SettingsFlags]) -> None:
    """Show one artifact: its task, command, outputs and inputs (KEY may be a prefix)."""
    settings = load_cli_settings(flags)
    store = open_store(settings, create=False)
    if store is None:
        msg = f"the local cache at {settings.cache_dir} is empty"
        raise CachehookError(msg)
    with store:
        entry = _find(store, key)
    data = _show_json(entry)
    if as_json:
        print_json(data)
        return
    found = data.get("manifest")
    manifest: dict[str, Any] = found if isinstance(found, dict) else {}
    rows = [
        ("key", entry.key),
        ("task", entry.task or "-"),
        ("command", " ".join(map(str, entry.command or manifest.get("command") or []))),
        ("stored", _when(_stored_at(entry))),
        ("size", format_size(entry.size)),
        ("duration", format_duration(entry.duration_ms)),
    ]
    for label, value in rows:
        click.echo(f"{label:<9} {value}")
    for label, items in (
        ("output", [o.path for o in entry.outputs]),
        ("input", _inputs(manifest)),
        ("env", manifest.get("env", [])),
        ("depends", manifest.get("dependencies", [])),
    ):
        for item in items:
            click.echo(f"{label:<9} {item}")


def _select(
    entries: Sequence[ArtifactMeta],
    last_used: dict[str, float],
    *,
    volume: int,
    max_size: int | None,
    older_than: float | None,
) -> list[ArtifactMeta]:
    """What to remove: entries stored before the age limit, then least recently used first."""
    now = time.time()
    doomed = [e for e in entries if older_than is not None and _stored_at(e) < now - older_than]
    if max_size is not None:
        remaining = volume - sum(entry.size for entry in doomed)
        chosen = {entry.key for entry in doomed}
        alive = [entry for entry in entries if entry.key not in chosen]
        alive.sort(key=lambda e: last_used.get(e.checksum, _stored_at(e)))
        for entry in alive:
            if remaining <= max_size:
                break
            doomed.append(entry)
            remaining -= entry.size
    return doomed


def _parse_age(text: str) -> float:
    # A bare number once meant seconds: "--older-than 7" removed a week's cache (issue 9).
    if _BARE_NUMBER.match(text):
        msg = (
            f"--older-than {text}: give a unit, e.g. {text.strip()}d (days); "
            "units are w, d, h, m, s (2w, 7d, 12h, 30m, 45s)"
        )
        raise ConfigError(msg)
    return parse_duration(text, name="--older-than")


@cache.command("prune", short_help="Remove old or least recently used artifacts.")
@click.option("--max-size", metavar="SIZE", help="Remove least recently used until under SIZE.")
@click.option("--older-than", metavar="AGE", help="Remove what was stored more than AGE ago.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@options(CACHE_DIR)
def prune(
    max_size: str | None,
    older_than: str | None,
    yes: bool,
    dry_run: bool,
    **flags: Unpack[SettingsFlags],
) -> None:
    """Remove old or least recently used artifacts (e.g. --older-than 7d, --max-size 2GiB)."""
    if max_size is None and older_than is None:
        msg = "say what to prune: --max-size SIZE (e.g. 2GiB), --older-than AGE (e.g. 7d), or both"
        raise ConfigError(msg)
    limit = parse_size(max_size, name="--max-size") if max_size is not None else None
    age = _parse_age(older_than) if older_than is not None else None
    store = open_store(load_cli_settings(flags), create=False)
    if store is None:
        click.echo("nothing to prune: the local cache is empty")
        return
    with store:
        entries = list(store.entries())
        volume = store.volume()
        doomed = _select(entries, store.last_used(), volume=volume, max_size=limit, older_than=age)
        if not doomed:
            click.echo(f"nothing to prune: {len(entries)} artifacts, {format_size(volume)}")
            return
        size = format_size(sum(entry.size for entry in doomed))
        question = (
            f"Remove {len(doomed)} of {len(entries)} artifacts ({size}) from {store.directory}?"
        )
        if dry_run:
            for entry in doomed:
                click.echo(f"would remove {entry.key}  {entry.task or '-'}")
            click.echo(f"{len(doomed)} of {len(entries)} artifacts ({size}) would be removed")
            return
        if not _confirm(question, yes=yes):
            click.echo("nothing removed", err=True)
            click.get_current_context().exit(1)
        for entry in doomed:
            store.discard(entry.key)
        store.sweep()
        leftovers = store.reclaim()  # killed runs' files too (issue 10)
        also = f" and {leftovers} leftovers of killed runs" if leftovers else ""
        click.echo(
            f"removed {len(doomed)} artifacts{also}; the cache takes {format_size(store.volume())}"
        )


@cache.command("clear", short_help="Remove every artifact from the local cache.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@options(CACHE_DIR)
def clear(yes: bool, **flags: Unpack[SettingsFlags]) -> None:
    """Remove every artifact from the local cache (the run history is kept)."""
    store = open_store(load_cli_settings(flags), create=False)
    if store is None:
        click.echo("the local cache is already empty")
        return
    with store:
        count = sum(1 for _ in store.entries())
        question = (
            f"Remove all {count} artifacts ({format_size(store.volume())}) from {store.directory}?"
        )
        if not _confirm(question, yes=yes):
            click.echo("nothing removed", err=True)
            click.get_current_context().exit(1)
        store.clear()
    click.echo(f"removed {count} artifacts from {store.directory}")
