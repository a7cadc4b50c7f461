"""``cachehook exec``: run any command through the cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cachehook.cli._output import Console, print_json
from cachehook.config import OUTPUT_LOG_MODES, Settings, load_settings
from cachehook.errors import ConfigError
from cachehook.logs import replay
from cachehook.runner import Prepared, RunResult, Runner, TaskSpec

__all__ = ["exec_command"]

_EPILOG = """\b
Examples:
  cachehook exec -i 'src/**/*.py' -i pyproject.toml -o 'dist/*' -- python -m build --wheel
  cachehook exec -i '**/*.py' -i pyproject.toml -- mypy .
  cachehook exec -i 'schema/*.json' -o 'src/app/models.py' -e 'PYTHON*' -- python gen.py

Globs are relative to the project root (the nearest directory holding pyproject.toml
or .git): '**' crosses directories, a leading '!' excludes. Files .gitignore ignores
are skipped unless named literally. Exit status is the command's own.
"""


@click.command("exec", epilog=_EPILOG)
@click.option("-i", "--input", "inputs", multiple=True, metavar="GLOB",
              help="Files the command reads (repeatable; '!GLOB' excludes).")
@click.option("-o", "--output", "outputs", multiple=True, metavar="GLOB",
              help="Files the command writes, cached and restored (repeatable).")
@click.option("-e", "--env", "env", multiple=True, metavar="NAME",
              help="Environment variables whose values enter the key; 'PREFIX*' matches many.")
@click.option("--salt", default="", help="Any string; change it to disown earlier results.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Project root (default: nearest ancestor with pyproject.toml or .git).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Local cache directory (default: $CACHEHOOK_CACHE_DIR or ~/.cache/cachehook).")
@click.option("--cache", "cache_modes", metavar="MODES",
              help="Which caches to read/write, as turbo spells it: 'local:rw,remote:r'.")
@click.option("--remote-only", is_flag=True, help="Use only the remote cache.")
@click.option("--force", is_flag=True, help="Run even on a hit, and overwrite the cached result.")
@click.option("--no-cache", is_flag=True, help="Just run the command (also CACHEHOOK_DISABLE=1).")
@click.option("--dry-run", type=click.Choice(["text", "json"]), is_flag=False,
              flag_value="text", default=None,
              help="Print the key and every input with its digest; run nothing. --dry-run=json for JSON.")
@click.option("--output-logs", type=click.Choice(OUTPUT_LOG_MODES), default=None,
              help="What of the command's output to show: full (default), errors-only, hash-only, none.")
@click.option("-q", "--quiet", is_flag=True, help="No status line (warnings still show).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON result on stdout; the command's stdout goes to stderr.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_command(
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    env: tuple[str, ...],
    salt: str,
    root: Path | None,
    cache_dir: Path | None,
    cache_modes: str | None,
    remote_only: bool,
    force: bool,
    no_cache: bool,
    dry_run: str | None,
    output_logs: str | None,
    quiet: bool,
    as_json: bool,
    command: tuple[str, ...],
) -> int:
    """Run COMMAND, or restore its outputs and log when its inputs are unchanged.

    Put the command after `--`.
    """
    if not command:
        msg = "nothing to run: put the command after '--', e.g. cachehook exec -i 'src/**' -- pytest"
        raise ConfigError(msg)
    settings = load_settings(
        cwd=Path.cwd(),
        environ=os.environ,
        root=root,
        cache_dir=cache_dir,
        cache=cache_modes,
        remote_only=remote_only,
        no_cache=no_cache,
        output_logs=output_logs,
    )
    console = Console(quiet=quiet or settings.output_logs == "none")
    spec = TaskSpec(
        command=command, inputs=inputs, outputs=outputs, env=env, salt=salt, cwd=Path.cwd()
    )
    with Runner(settings, on_notice=console.warn) as runner:
        prepared = runner.prepare(spec)
        for pattern in prepared.unmatched_inputs:
            console.warn(f"input glob {pattern!r} matched no file")
        if dry_run:
            _print_dry_run(prepared, settings, as_json=dry_run == "json")
            return 0
        result = runner.run(prepared, force=force, live=_live_streams(settings, as_json=as_json))
    _show(result, settings, console, as_json=as_json)
    return result.exit_code


def _live_streams(settings: Settings, *, as_json: bool) -> tuple[object, object] | None:
    if settings.output_logs != "full":
        return None
    out = sys.stderr.buffer if as_json else sys.stdout.buffer
    return (out, sys.stderr.buffer)


def _show(result: RunResult, settings: Settings, console: Console, *, as_json: bool) -> None:
    mode = settings.output_logs
    show_log = (result.status == "HIT" and mode == "full") or (
        mode == "errors-only" and result.exit_code != 0
    )
    if show_log and result.log:
        stdout = sys.stderr.buffer if as_json else sys.stdout.buffer
        replay(result.log, stdout=stdout, stderr=sys.stderr.buffer)
    if as_json:
        print_json(result.to_json())
    elif mode in ("full", "errors-only", "hash-only"):
        console.result(result)


def _print_dry_run(prepared: Prepared, settings: Settings, *, as_json: bool) -> None:
    manifest = prepared.manifest
    if as_json:
        print_json({"key": prepared.key, "root": str(settings.root), **manifest.to_json()})
        return
    click.echo(f"key      {prepared.key}")
    click.echo(f"command  {' '.join(manifest.command)}")
    click.echo(f"cwd      {manifest.cwd}")
    for name, _ in manifest.env:
        click.echo(f"env      {name}")
    for item in manifest.inputs:
        click.echo(f"input    {item.digest}  {item.path}")
    for pattern in manifest.outputs:
        click.echo(f"output   {pattern}")
