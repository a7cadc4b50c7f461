"""``cachehook exec`` without click: its options as data, a fast parser, and the run itself.

A cache hit is judged by its latency and importing click costs ~17 ms, so ``main`` first tries
``parse_exec_fast``: it understands the plain spellings of the options below and returns None
for anything else (``--help``, a typo, a bad choice, no ``--``), which then goes through the
click command in ``cli/exec.py``, built from the same ``OPTIONS`` table, for its messages.

A little over 400 lines: the options table, the fast parser, the run with its memo
(``_memoise``), and the messages for a mistyped command (``check_command``, ``stray_words``,
``split_command``), which are the seam to move out next.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cachehook.cli._options import (
    CACHE,
    CACHE_DIR,
    DRY_RUN,
    FORCE,
    JSON,
    NO_CACHE,
    NO_TOOLCHAIN,
    OUTPUT_LOGS,
    QUIET,
    REMOTE_ONLY,
    ROOT,
    Option,
    load_cli_settings,
)
from cachehook.cli._output import Console, ProgressLine, TaskReporter, print_json
from cachehook.cli._project import root_notice
from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Unpack

    from cachehook._memo import Recorder
    from cachehook.cli._options import SettingsFlags
    from cachehook.config import Settings
    from cachehook.runner import Prepared, RunResult

__all__ = [
    "OPTIONS",
    "check_command",
    "parse_exec_fast",
    "run_exec",
    "split_command",
    "stray_words",
]

OPTIONS: tuple[Option, ...] = (
    Option(
        "inputs",
        ("-i", "--input"),
        "multiple",
        "Files the command reads (repeatable; '!GLOB' excludes). Default: every file git "
        "would list under the working directory.",
        "GLOB",
    ),
    Option(
        "no_inputs",
        ("--no-inputs",),
        "flag",
        "The command reads no file: no input file enters its key.",
    ),
    Option(
        "outputs",
        ("-o", "--output"),
        "multiple",
        "Files the command writes, cached and restored (repeatable).",
        "GLOB",
    ),
    Option(
        "env",
        ("-e", "--env"),
        "multiple",
        "Environment variables whose values enter the key; 'PREFIX*' matches many.",
        "NAME",
    ),
    Option(
        "pass_env",
        ("--pass-env",),
        "multiple",
        "Let the command see this remote cache secret (CACHEHOOK_TOKEN, ...), which it "
        "does not by default (repeatable).",
        "NAME",
    ),
    Option(
        "tools",
        ("--tool",),
        "multiple",
        "A program the command runs besides its own (behind 'sh -c' or a wrapper); its "
        "toolchain enters the key too (repeatable).",
        "NAME",
    ),
    NO_TOOLCHAIN,
    Option(
        "salt",
        ("--salt",),
        "value",
        "Any string; change it to disown earlier results.",
        "TEXT",
        default="",
    ),
    ROOT,
    CACHE_DIR,
    CACHE,
    REMOTE_ONLY,
    FORCE,
    NO_CACHE,
    DRY_RUN,
    OUTPUT_LOGS,
    QUIET,
    JSON._replace(help="Print one JSON result on stdout; the command's stdout goes to stderr."),
)
_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}


def parse_exec_fast(args: Sequence[str]) -> dict[str, Any] | None:
    """Parse ``exec``'s arguments without click, or return None to let click do it."""
    values = {option.dest: option.unset for option in OPTIONS}
    multiple: dict[str, list[str]] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            command = tuple(args[index + 1 :])
            if not command:
                return None
            for dest, items in multiple.items():
                values[dest] = tuple(items)
            return {**values, "command": command}
        name, has_value, inline = (
            token.partition("=") if token.startswith("--") else (token, False, "")
        )
        option = _BY_FLAG.get(name)
        if option is None:
            return None
        if option.kind == "flag":
            if has_value:
                return None
            values[option.dest] = True
        elif option.kind == "optional-choice":
            value = inline if has_value else option.choices[0]
            if value not in option.choices:
                return None
            values[option.dest] = value
        else:
            if not has_value:
                index += 1
                if index >= len(args):
                    return None
                inline = args[index]
            if option.kind == "choice" and inline not in option.choices:
                return None
            if option.kind == "multiple":
                multiple.setdefault(option.dest, []).append(inline)
            elif option.kind == "path":
                values[option.dest] = Path(inline)
            else:
                values[option.dest] = inline
        index += 1
    return None


def run_exec(
    *,
    inputs: tuple[str, ...],
    no_inputs: bool = False,
    outputs: tuple[str, ...],
    env: tuple[str, ...],
    pass_env: tuple[str, ...] = (),
    salt: str,
    tools: tuple[str, ...] = (),
    no_toolchain: bool = False,
    force: bool,
    dry_run: str | None,
    quiet: bool,
    as_json: bool,
    command: tuple[str, ...],
    stray: int = 0,
    memo: Sequence[str] | None = None,
    **flags: Unpack[SettingsFlags],
) -> int:
    """Run one command through the cache and return its exit code.

    ``stray`` counts the command's words that were given before ``--`` (for messages).
    ``memo``: the invocation's arguments, to memoise a hit of it (``cachehook._memo``).
    """
    from cachehook.runner import Runner, TaskSpec

    if not command:
        msg = (
            "nothing to run: put the command after '--', e.g. cachehook exec -i 'src/**' -- pytest"
        )
        raise ConfigError(msg)
    recorder = None
    if memo is not None:
        from cachehook._memo import Recorder

        recorder = Recorder(memo).start()
    try:
        check_command(command, cwd=Path.cwd(), stray=stray)
        settings = load_cli_settings(flags)
        console = Console(quiet=quiet or settings.output_logs == "none")
        notice = None if flags.get("root") is not None else root_notice(settings, cwd=Path.cwd())
        if notice is not None:
            console.info(notice)
        if no_inputs and inputs:
            msg = "--no-inputs says the command reads no file, yet --input names some: give one"
            raise ConfigError(msg)
        declared = () if no_inputs else inputs or None  # None: every file under the cwd
        spec = TaskSpec(
            command=command,
            inputs=declared,
            outputs=outputs,
            env=env,
            salt=salt,
            cwd=Path.cwd(),
            tools=tools,
            pass_env=pass_env,
        )
        # The result reaches the terminal as the runner's TaskFinished, told to ``reporter``.
        reporter = TaskReporter(console, output_logs=settings.output_logs, as_json=as_json)
        with Runner(
            settings,
            detach_events=_may_detach_events(settings),
            on_progress=None if console.quiet else ProgressLine(),
            use_toolchain=not no_toolchain,
            listeners=[reporter],
        ) as runner:
            prepared = runner.prepare(spec)
            for pattern in prepared.unmatched_inputs:
                console.warn(f"input glob {pattern!r} matched no file")
            if dry_run:
                local, remote = runner.peek(prepared)
                _print_dry_run(prepared, settings, (local, remote), as_json=dry_run == "json")
                return 0
            result = runner.run(
                prepared, force=force, live=_live_streams(settings, as_json=as_json)
            )
    finally:
        if recorder is not None:
            recorder.stop()
    if recorder is not None and not console.said and not as_json:
        _memoise(recorder, result, settings, output=reporter.shown)
    return result.exit_code


def _memoise(recorder: Recorder, result: RunResult, settings: Settings, *, output: bytes) -> None:
    """Write the memo of a local hit that restored nothing and said nothing else.

    ``output``: what the hit showed (``TaskReporter.shown``), which the memo replays.
    """
    if result.status != "HIT" or result.source != "LOCAL" or result.restored:
        return
    if settings.remote is not None or result.exit_code != 0:
        return  # a remote cache's usage events must be sent by the full path
    from cachehook import _hits
    from cachehook.history import history_path, memo_line, project_id

    store = settings.cache_dir / "store"
    hit = _hits.read_hit(store, result.key)
    if hit is None:
        return
    recorder.save(
        cache_dir=str(settings.cache_dir),
        store_files=[(str(_hits.record_path(store, result.key)), True), (str(hit.artifact), False)],
        output=output,
        history=memo_line(result, task=None, project=project_id(settings.root)),
        history_path=str(history_path(settings.cache_dir)),
        exit_code=result.exit_code,
    )


def check_command(command: Sequence[str], *, cwd: Path, stray: int = 0) -> None:
    """Refuse a command that is a file of the project, not a program: an unquoted glob.

    The shell expands ``-i src/*.txt`` into ``-i src/a.txt src/b.txt``, and every file after
    the first becomes the command (issue 9). Only a command that could not run anyway is
    refused: a directory, a file without the executable bit, or a bare name found in the
    working directory but not on PATH. ``stray`` counts the command's first words that were
    given before ``--``.

    Raises:
        ConfigError: the command names such a file; the message says how to quote the glob.
    """
    program = command[0]
    path = cwd / program
    if not (path.is_file() or path.is_dir()):
        return
    if os.sep in program or "/" in program:
        if path.is_file() and os.access(path, os.X_OK):
            return
    else:
        import shutil  # only for a bare name: it imports bz2, lzma and zlib (~3 ms a hit)

        if shutil.which(program) is not None:
            return
    files = list(itertools.takewhile(_is_relative_file_name(cwd), command))
    if stray:
        files = files[:stray]
    what = "a directory" if path.is_dir() else "a file without the executable bit"
    if len(files) > 1 or stray:
        msg = (
            f"the command to run is {program!r}, {what}, not a program: the shell expanded an "
            f"unquoted glob into file names ({', '.join(files[:3])}"
            f"{', …' if len(files) > 3 else ''}) and the names after the first became the "
            f"command; quote every glob, e.g. -i {_glob_guess(files)!r}, and put '--' before "
            "the command"
        )
    else:
        msg = (
            f"the command to run is {program!r}, {what}, not a program"
            + ("" if path.is_dir() else f": run it through its interpreter (-- python3 {program})")
            + "; if it came from an unquoted glob (-i src/*.txt), quote the glob (-i 'src/*.txt')"
        )
    raise ConfigError(msg)


def _is_relative_file_name(cwd: Path) -> Callable[[str], bool]:
    return lambda word: not os.path.isabs(word) and (cwd / word).exists()


def _glob_guess(files: Sequence[str]) -> str:
    """``src/*.txt`` for ``src/a.txt src/b.txt``: what the user probably typed."""
    paths = [Path(name) for name in files]
    parents = {path.parent.as_posix() for path in paths}
    suffixes = {path.suffix for path in paths}
    parent = parents.pop() if len(parents) == 1 else "**"
    suffix = suffixes.pop() if len(suffixes) == 1 else ""
    return f"{parent}/*{suffix}" if parent != "." else f"*{suffix}"


def stray_words(args: Sequence[str]) -> tuple[list[int], bool]:
    """The positions of the words before ``--`` that are no option nor an option's value.

    Returns them and whether the walk reached ``--``; it stops at an unknown option. Used only
    for messages: such words are a command given without ``--``, or a glob the shell expanded.
    """
    found: list[int] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            return found, True
        option = _BY_FLAG.get(token.partition("=")[0] if token.startswith("--") else token)
        if option is None:
            if token.startswith("-") and token != "-":
                return found, False
            found.append(index)
            index += 1
            continue
        index += 2 if option.takes_value and "=" not in token else 1
    return found, False


def split_command(args: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """Split ``exec`` arguments given without ``--`` into (options, command), or None.

    Used only for a message: ``cachehook exec -i x python -u t.py`` fails on ``-u``.
    """
    found, has_dashes = stray_words(args)
    if has_dashes or not found:
        return None
    return list(args[: found[0]]), list(args[found[0] :])


def _may_detach_events(settings: Settings) -> bool:
    """Hand events to a detached sender, rather than wait up to the flush bound at exit?

    On a developer's machine, yes: a hit should not pay for httpx. Not in CI: a job's runner
    may be torn down right after this step, taking a detached sender and the spool with it.
    """
    if settings.remote is None:
        return False
    from cachehook.ci import is_ci

    return not is_ci(os.environ)


def _live_streams(settings: Settings, *, as_json: bool) -> tuple[BinaryIO, BinaryIO] | None:
    if settings.output_logs != "full":
        return None
    out = sys.stderr.buffer if as_json else sys.stdout.buffer
    return (out, sys.stderr.buffer)


def _print_dry_run(
    prepared: Prepared,
    settings: Settings,
    cached: tuple[bool, bool | None],
    *,
    as_json: bool,
) -> None:
    from cachehook.toolchain import describe_tool

    manifest = prepared.manifest
    local, remote = cached
    if as_json:
        cache = {"local": local, "remote": remote, "status": "HIT" if local or remote else "MISS"}
        print_json(
            {"key": prepared.key, "root": str(settings.root), "cache": cache, **manifest.to_json()}
        )
        return
    where = "local" if local else "remote" if remote else None
    lines = [
        f"key      {prepared.key}",
        f"cache    {f'hit ({where})' if where else 'miss: it would run'}",
        f"command  {' '.join(manifest.command)}",
        f"cwd      {manifest.cwd}",
        *(f"env      {name}" for name, _ in manifest.env),
        *(f"tool     {t.digest}  {t.name}  ({describe_tool(t)})" for t in manifest.toolchain),
        *(f"input    {item.digest}  {item.path}" for item in manifest.inputs),
        *(["input    none (--no-inputs)"] if prepared.spec.inputs == () else []),
        *(f"output   {pattern}" for pattern in manifest.outputs),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
