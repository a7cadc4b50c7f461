"""Issue 11's targets: a local hit of ``cachehook exec`` against ``turbo`` in a git repository.

    python benchmarks/bench_hit.py [--sizes 1000,10000,50000] [--repeat 7] [--cachehook BIN]

cachehook runs from its wheel (``pip wheel . --no-deps`` installed into a fresh venv, with
bytecode written, as a user has it; an editable install under PYTHONDONTWRITEBYTECODE=1 would
recompile the package at every start). ``turbo`` is the real 2.11.11 native binary in ``.peers/``
(see .ci/run), run as ``turbo run build`` with its defaults. Each tree is a git repository
(``git init``, ``add``, ``commit``), where turbo reads git's index. Measured, paired and
interleaved in one run so machine noise hits both sides alike:

  * N inputs of 4 KiB and one 1 MiB output already on disk (nothing to restore):
    cachehook hit vs turbo hit, at each ``--sizes``;
  * 10 inputs: cachehook hit vs ``python -c pass`` (the venv's interpreter);
  * a restoring hit of 100 outputs of 1 MiB (removed before each run, outside the timing):
    cachehook vs turbo's full restore of the same.

Both tools hash the same input files (turbo: every git-tracked file of ``packages/app``;
cachehook: ``-i 'packages/app/src/**'``) and each writes its own copy of the output. Every row
gives the wall-clock median and the CPU-time median (user+sys of the child and everything it
waited for, from ``RUSAGE_CHILDREN`` deltas): on a shared, loaded machine the CPU ratio is the
steadier one. A turbo daemon, if turbo starts one, is not our child: its CPU is not counted.
Not a test: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bench_exec import BLOB, REPO, TURBO, make_tree

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BLOBS = (
    "import os, pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); "
    "[(p / f'b{i:03d}.bin').write_bytes(os.urandom(1 << 20)) for i in range(100)]"
)
APP = Path("packages") / "app"


class Sample(NamedTuple):
    wall: float  # ms
    cpu: float  # ms, user + sys of the child


class Target(NamedTuple):
    name: str
    ours: str
    theirs: str
    bound: float  # ours / theirs must be at most this


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Sample:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return Sample(wall, cpu)


def interleave(runs: dict[str, Callable[[], Sample]], repeat: int) -> dict[str, Sample]:
    samples: dict[str, list[Sample]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            samples[name].append(run())
    return {
        name: Sample(statistics.median(s.wall for s in got), statistics.median(s.cpu for s in got))
        for name, got in samples.items()
    }


def install_wheel(work: Path) -> Path:
    """cachehook's console script in a fresh venv, installed from a wheel of this checkout."""
    wheels = work / "wheel"
    quiet = {"stdout": subprocess.DEVNULL, "check": True}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(wheels), "--no-deps"],
        **quiet,  # type: ignore[call-overload]
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], **quiet)  # type: ignore[call-overload]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", *wheels.glob("*.whl")],
        env=env,
        **quiet,  # type: ignore[call-overload]
    )
    return venv / "bin" / "cachehook"


def bench_env(work: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {
        **env,
        "CACHEHOOK_CACHE_DIR": str(work / f"cache-{name}"),
        "TURBO_TELEMETRY_DISABLED": "1",
        "TURBO_NO_UPDATE_NOTIFIER": "1",
        "DO_NOT_TRACK": "1",
    }


def make_workspace(root: Path, count: int, script: str, env: dict[str, str]) -> None:
    """An npm workspace with one package, ``packages/app``, whose ``src`` holds the inputs."""
    root.mkdir()
    make_tree(root, count)
    (root / APP).mkdir(parents=True)
    shutil.move(str(root / "src"), root / APP / "src")
    build = f'{sys.executable} -c "{script}"'
    manifest = {"name": "app", "version": "0.0.0", "private": True, "scripts": {"build": build}}
    (root / APP / "package.json").write_text(json.dumps(manifest))
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True)
    workspace = {
        "name": "mono",
        "private": True,
        "packageManager": f"npm@{npm.stdout.strip()}",
        "workspaces": ["packages/*"],
    }
    (root / "package.json").write_text(json.dumps(workspace))
    (root / "turbo.json").write_text(json.dumps({"tasks": {"build": {"outputs": ["out/**"]}}}))
    quiet = {"cwd": root, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--offline"], **quiet)  # type: ignore[call-overload]
    subprocess.run(["git", "init", "-q"], **quiet)  # type: ignore[call-overload]
    subprocess.run(["git", "add", "-A"], **quiet)  # type: ignore[call-overload]
    commit = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tree"]
    subprocess.run(commit, **quiet)  # type: ignore[call-overload]


def warm(argv: Sequence[str], root: Path, env: dict[str, str]) -> None:
    """The miss, then a hit past the stat cache's racy-clean window, as on a real second run.

    The hit must say it is one (cachehook without ``-q``: ``local hit``; turbo: ``1 cached``),
    so that no row times a miss.
    """
    says = "1 cached" if argv[0] == str(TURBO) else "local hit"
    for pause, words in ((1.1, ""), (0, says)):
        loud = [arg for arg in argv if arg != "-q"]
        done = subprocess.run(loud, cwd=root, env=env, capture_output=True, text=True, check=False)
        if done.returncode or words not in done.stdout + done.stderr:
            msg = f"{argv[0]} did not {'hit' if words else 'run'} in {root}:\n{done.stdout}{done.stderr}"
            raise SystemExit(msg)
        time.sleep(pause)


def commands(cachehook: Path, script: str) -> tuple[list[str], list[str]]:
    ours = [str(cachehook), "exec", "-q", "-i", f"{APP}/src/**", "-o", "out/**", "--"]
    ours += [sys.executable, "-c", script]
    return ours, [str(TURBO), "run", "build", "--output-logs=hash-only"]


def bench_hits(cachehook: Path, work: Path, count: int, repeat: int) -> dict[str, Sample]:
    root, env = work / f"n{count}", bench_env(work, f"n{count}")
    make_workspace(root, count, BLOB, env)
    ours, turbo = commands(cachehook, BLOB)
    warm(ours, root, env)
    warm(turbo, root, env)
    return interleave(
        {
            f"cachehook hit, {count:,} inputs": lambda: timed(ours, root, env),
            f"turbo hit, {count:,} inputs": lambda: timed(turbo, root, env),
        },
        repeat,
    )


def bench_small(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    root, env = work / "n10", bench_env(work, "n10")
    root.mkdir()
    make_tree(root, 10)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    commit = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tree"]
    subprocess.run(commit, cwd=root, check=True)
    ours = [str(cachehook), "exec", "-q", "-i", "src/**", "-o", "out/**", "--"]
    ours += [sys.executable, "-c", BLOB]
    warm(ours, root, env)
    python = [str(cachehook.parent / "python"), "-c", "pass"]
    return interleave(
        {
            "cachehook hit, 10 inputs": lambda: timed(ours, root, env),
            "python -c pass": lambda: timed(python, root, env),
        },
        repeat,
    )


def bench_restore(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    root, env = work / "restore", bench_env(work, "restore")
    make_workspace(root, 10, BLOBS, env)
    ours, turbo = commands(cachehook, BLOBS)
    warm(ours, root, env)
    warm(turbo, root, env)

    def restoring(argv: list[str], out: Path) -> Sample:
        shutil.rmtree(out)
        sample = timed(argv, root, env)
        if len(list(out.iterdir())) != 100:
            msg = f"{argv[0]} did not restore the 100 outputs into {out}"
            raise SystemExit(msg)
        return sample

    return interleave(
        {
            "cachehook restoring hit, 100 x 1 MiB": lambda: restoring(ours, root / "out"),
            "turbo restoring hit, 100 x 1 MiB": lambda: restoring(turbo, root / APP / "out"),
        },
        repeat,
    )


def targets(sizes: Sequence[int]) -> list[Target]:
    rows = [
        Target(
            f"hit at {n:,} inputs ≤ {bound}× turbo",
            f"cachehook hit, {n:,} inputs",
            f"turbo hit, {n:,} inputs",
            bound,
        )
        for n, bound in ((n, 0.8 if n <= 1000 else 0.5) for n in sizes)
    ]
    rows.append(
        Target(
            "hit at 10 inputs ≤ 2.5× python -c pass",
            "cachehook hit, 10 inputs",
            "python -c pass",
            2.5,
        )
    )
    rows.append(
        Target(
            "restoring hit of 100 × 1 MiB ≤ turbo",
            "cachehook restoring hit, 100 x 1 MiB",
            "turbo restoring hit, 100 x 1 MiB",
            1.0,
        )
    )
    return rows


def report(figures: dict[str, Sample], sizes: Sequence[int], repeat: int, load: str) -> None:
    print(f"\nMedians of {repeat} paired runs, {os.cpu_count()} cores, load average {load}\n")
    print("| target | cachehook wall / CPU | baseline wall / CPU | ratio wall | ratio CPU | met? |")
    print("|---|---:|---:|---:|---:|---|")
    for target in targets(sizes):
        ours, theirs = figures[target.ours], figures[target.theirs]
        wall, cpu = ours.wall / theirs.wall, ours.cpu / theirs.cpu
        verdict = {
            (True, True): "met",
            (False, False): "not met",
            (True, False): "met (wall only)",
            (False, True): "met (CPU only)",
        }[(wall <= target.bound, cpu <= target.bound)]
        print(
            f"| {target.name} | {ours.wall:.0f} / {ours.cpu:.0f} ms | "
            f"{theirs.wall:.0f} / {theirs.cpu:.0f} ms | {wall:.2f}× | {cpu:.2f}× | {verdict} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cachehook", type=Path, help="a console script to use, not a new wheel")
    args = parser.parse_args()
    if not TURBO.exists():
        msg = f"turbo is not installed at {TURBO}: install the peers first (see .ci/run)"
        raise SystemExit(msg)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    figures: dict[str, Sample] = {}
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-hit-") as tmp:
        work = Path(tmp)
        cachehook = args.cachehook or install_wheel(work)
        loads = [os.getloadavg()[0]]
        steps: list[Callable[[], dict[str, Sample]]] = [
            lambda: bench_small(cachehook, work, args.repeat),
            *(lambda n=n: bench_hits(cachehook, work, n, args.repeat) for n in sizes),
            lambda: bench_restore(cachehook, work, args.repeat),
        ]
        for step in steps:
            got = step()
            loads.append(os.getloadavg()[0])
            for name, sample in got.items():
                print(
                    f"{name}: {sample.wall:.1f} ms wall, {sample.cpu:.1f} ms CPU", file=sys.stderr
                )
            figures.update(got)
        for root in work.iterdir():  # a turbo daemon started in a tree must not outlive it
            if (root / "turbo.json").exists():
                subprocess.run(
                    [str(TURBO), "daemon", "stop"],
                    cwd=root,
                    check=False,
                    capture_output=True,
                )
    load = f"{min(loads):.1f}–{max(loads):.1f}"
    report(figures, sizes, args.repeat, load)


if __name__ == "__main__":
    main()
