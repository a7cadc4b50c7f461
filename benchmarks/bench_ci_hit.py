"""A local hit in CI with a remote cache configured, against the same hit without one, and turbo.

    python benchmarks/bench_ci_hit.py [--repeat 15] [--cachehook BIN]

In CI (``CI`` set, or a known vendor), ``cachehook exec`` sends the run's usage events itself
before it exits (a detached sender could be torn down with the job), so a local hit there pays
for the events request; on a developer's machine the events go to a detached flusher. This is
what a team's CI pays on every hit. Measured in one run, paired and interleaved, on the tree
``bench_hit.py`` uses (an npm workspace in git, 10 inputs of 4 KiB, one 1 MiB output on disk),
each side with its own cache directory, all with ``CI=true``:

  * cachehook, a remote configured (the real ``turborepo-remote-cache`` from ``.peers/`` on
    127.0.0.1): a local hit, then its LOCAL HIT event sent;
  * cachehook, no remote: the same local hit, nothing to send;
  * turbo 2.11.11 (``--api/--token/--team``, the same server): its local hit;
  * ``python -c pass`` (the venv's interpreter): the start-up floor.

cachehook runs from its wheel in a fresh venv (``bench_hit.install_wheel``). The memo never
replays a hit with a remote configured, so no row here is memoised. Every row gives the median
wall clock and CPU time (user+sys of the child). Not a test: read the ratios.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench_exec import BLOB, TURBO
from bench_hit import (
    bench_env,
    commands,
    install_wheel,
    interleave,
    make_workspace,
    timed,
    warm,
)
from bench_remote import TOKEN, npm_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench_hit import Sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--cachehook", type=Path, help="a console script to use, not a new wheel")
    args = parser.parse_args()
    if not TURBO.exists():
        msg = f"turbo is not installed at {TURBO}: install the peers first (see .ci/run)"
        raise SystemExit(msg)
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-ci-hit-") as tmp:
        work = Path(tmp)
        cachehook = args.cachehook or install_wheel(work)
        (work / "server").mkdir()
        root = work / "tree"
        try:
            with npm_server(work / "server") as api:
                remote = {"CACHEHOOK_API": api, "CACHEHOOK_TOKEN": TOKEN, "CACHEHOOK_TEAM": "b"}
                envs = {
                    "cachehook, CI, remote": {**bench_env(work, "remote"), "CI": "true", **remote},
                    "cachehook, CI, no remote": {**bench_env(work, "local"), "CI": "true"},
                }
                turbo_env = {**bench_env(work, "turbo"), "CI": "true"}
                make_workspace(root, 10, BLOB, turbo_env)
                ours, turbo = commands(cachehook, BLOB)
                turbo += ["--api", api, "--token", TOKEN, "--team", "b"]
                warm(turbo, root, turbo_env)
                for env in envs.values():
                    warm(ours, root, env, memo=False)
                python = Path(cachehook).read_text().splitlines()[0].removeprefix("#!")
                runs: dict[str, Callable[[], Sample]] = {
                    name: functools.partial(timed, ours, root, env) for name, env in envs.items()
                }
                runs["turbo, CI, remote"] = functools.partial(timed, turbo, root, turbo_env)
                runs["python -c pass"] = functools.partial(
                    timed, [python, "-c", "pass"], root, turbo_env
                )
                load = os.getloadavg()[0]
                figures = interleave(runs, args.repeat)
        finally:
            if (root / "turbo.json").exists():  # a turbo daemon must not outlive the tree
                subprocess.run([str(TURBO), "daemon", "stop"], cwd=root, capture_output=True)
    for name, sample in figures.items():
        print(f"{name}: {sample.wall:.1f} ms wall, {sample.cpu:.1f} ms CPU", file=sys.stderr)
    ours_remote = figures["cachehook, CI, remote"]
    print(f"\nMedians of {args.repeat} paired runs, load average {load:.1f} at the start\n")
    print("| row | wall / CPU | / no remote (wall) | / turbo (wall) |")
    print("|---|---:|---:|---:|")
    for name, sample in figures.items():
        versus_local = sample.wall / figures["cachehook, CI, no remote"].wall
        versus_turbo = sample.wall / figures["turbo, CI, remote"].wall
        shown = f"{sample.wall:.0f} / {sample.cpu:.0f} ms"
        print(f"| {name} | {shown} | {versus_local:.2f}× | {versus_turbo:.2f}× |")
    sent = ours_remote.wall - figures["cachehook, CI, no remote"].wall
    print(f"\nSending the hit's usage event in CI costs {sent:.0f} ms of wall clock here.")


if __name__ == "__main__":
    main()
