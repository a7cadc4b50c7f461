"""Issue 11's targets: ``cachehook exec`` and ``cachehook run`` hits against ``turbo``, in git.

    python benchmarks/bench_hit.py [--sizes 1000,10000,50000] [--repeat 7] [--cachehook BIN]
    python benchmarks/bench_hit.py --quick      # --sizes 1000 --repeat 3

cachehook runs from its wheel (``pip wheel . --no-deps``, installed by a current pip into a
fresh venv, with bytecode written, as a user has it; an editable install under
PYTHONDONTWRITEBYTECODE=1 would recompile the package at every start). ``turbo`` is the real 2.11.11 native binary in ``.peers/``
(see .ci/run), run as ``turbo run build`` with its defaults. Each tree is a git repository
(``git init``, ``add``, ``commit``), where turbo reads git's index. Measured, paired and
interleaved in one run so machine noise hits every side alike:

  * N inputs of 4 KiB and one 1 MiB output already on disk (nothing to restore):
    cachehook hit vs turbo hit, at each ``--sizes``;
  * 10 inputs: cachehook hit vs ``python -c pass`` (the venv's interpreter);
  * a restoring hit of 100 outputs of 1 MiB (removed before each run, outside the timing):
    cachehook vs turbo's full restore of the same;
  * a remote hit of one 1 MiB output on loopback, against the real npm
    ``turborepo-remote-cache`` server (from ``.peers/``), both clients configured against it
    (turbo: ``--api/--token/--team``; cachehook: ``CACHEHOOK_API/TOKEN/TEAM``), and both
    local caches (turbo's ``.turbo/cache``, cachehook's ``<cache dir>/store``) and outputs
    removed before each run, outside the timing (cachehook's stat cache and toolchain record
    stay, as on a developer's machine; ``bench_remote.py`` times a remote hit into an empty
    cache directory);
  * ``cachehook run`` over 200 tasks that all hit (each ``sh -c 'cat A B > OUT'`` with two
    inputs, a binary tree of ``depends-on``): the cost per task, (run − ``python -c pass``) / 200.

Every cachehook figure is taken twice, each with its own cache directory on the same tree:
"hit", the repeated command as a user repeats it, which the hit memo (``cachehook._memo``)
replays after one ``stat`` per recorded path; and "full-path hit", the same command with
``CACHEHOOK_MEMO=0`` in its environment from the start. The warm-up re-runs the memoised
command, with pauses past the memo's one-second racy window, until its memo holds (checked with
``cachehook._memo`` itself, in the command's own environment), and every timed memoised run is
preceded, outside the timing, by the same check: a row whose memo did not hold says so. A
restoring hit and a remote hit never write a memo (the memo replays only a local hit that
restored nothing; a remote cache's usage events must be sent), so their two figures are the
same path: they show what the memo does not cover.

Every row gives the wall-clock median and the CPU-time median (user+sys of the child and
everything it waited for, from ``RUSAGE_CHILDREN`` deltas): on a shared, loaded machine the CPU
ratio is the steadier one. A turbo daemon, if turbo starts one, is not our child, nor is
cachehook's detached ``events flush`` after a remote hit: their CPU is not counted.
Not a test: read the ratios.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
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
from bench_remote import TOKEN, npm_server

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BLOBS = (
    "import os, pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); "
    "[(p / f'b{i:03d}.bin').write_bytes(os.urandom(1 << 20)) for i in range(100)]"
)
APP = Path("packages") / "app"
TASKS = 200
# The two ways a cachehook figure is taken: the name's prefix and what its environment adds.
MODES = {"hit": {}, "full-path hit": {"CACHEHOOK_MEMO": "0"}}
# Run by the console script's own interpreter, in the command's cwd and environment and with
# the same standard streams as a timed run: whether this invocation's memo would replay.
MEMO_CHECK = """\
import sys
from cachehook._memo import _Memo, memo_path
path = memo_path(sys.argv[1:])
try:
    with open(path or "", "rb") as file:
        memo = _Memo.parse(file.read())
except OSError:
    sys.exit(4)
sys.exit(0 if memo is not None and memo.holds() else 3)
"""
# Timed memoised runs whose memo did not hold just before, by figure name.
BROKEN: dict[str, int] = {}


class Sample(NamedTuple):
    wall: float  # ms
    cpu: float  # ms, user + sys of the child


class Target(NamedTuple):
    name: str
    ours: str  # the figure's name without its mode prefix
    theirs: str
    bound: float  # ours / theirs must be at most this; per task in ms when per_task
    per_task: bool = False


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
    # A current pip first: the pip that ensurepip bundles with Python 3.11 writes a console
    # script that imports ``re`` before cachehook runs (11-15 ms here, more than a memoised
    # hit's own work); pip 26 and uv write one that does not. Users install with those.
    for install in (["-U", "pip"], [*wheels.glob("*.whl")]):
        subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "-q", *install],
            env=env,
            **quiet,  # type: ignore[call-overload]
        )
    return venv / "bin" / "cachehook"


def bench_env(work: Path, name: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith(("CACHEHOOK_", "TURBO_"))
    }
    return {
        **env,
        "CACHEHOOK_CACHE_DIR": str(work / f"cache-{name}"),
        "TURBO_TELEMETRY_DISABLED": "1",
        "TURBO_NO_UPDATE_NOTIFIER": "1",
        "DO_NOT_TRACK": "1",
    }


def mode_envs(work: Path, name: str, **extra: str) -> dict[str, dict[str, str]]:
    """cachehook's environment in each mode: its own cache directory, the memo on or off."""
    return {
        mode: {**bench_env(work, f"{name}-{mode.replace(' ', '-')}"), **added, **extra}
        for mode, added in MODES.items()
    }


def git_commit(root: Path) -> None:
    quiet = {"cwd": root, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run(["git", "init", "-q"], **quiet)  # type: ignore[call-overload]
    subprocess.run(["git", "add", "-A"], **quiet)  # type: ignore[call-overload]
    commit = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tree"]
    subprocess.run(commit, **quiet)  # type: ignore[call-overload]


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
    git_commit(root)


def checked(argv: Sequence[str], root: Path, env: dict[str, str], words: str) -> None:
    """Run ``argv`` with its output shown to us; it must succeed and say ``words``."""
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode or words not in done.stdout + done.stderr:
        msg = f"{' '.join(argv)} did not say {words!r} in {root}:\n{done.stdout}{done.stderr}"
        raise SystemExit(msg)


def warm(
    argv: Sequence[str], root: Path, env: dict[str, str], says: str = "", *, memo: bool = True
) -> None:
    """The miss, then a hit past the stat cache's racy-clean window, as on a real second run.

    The hit must say it is one (cachehook without ``-q``: ``local hit``; turbo: ``1 cached``),
    so that no row times a miss. With ``memo`` and the memo on, the hit is then repeated as
    timed until its memo holds.
    """
    says = says or ("1 cached" if argv[0] == str(TURBO) else "local hit")
    loud = [arg for arg in argv if arg != "-q"]
    checked(loud, root, env, "")
    time.sleep(1.1)
    checked(loud, root, env, says)
    if memo and argv[0] != str(TURBO) and env.get("CACHEHOOK_MEMO") != "0":
        await_memo(argv, root, env)


def warm_modes(
    argv: Sequence[str],
    root: Path,
    envs: dict[str, dict[str, str]],
    says: str = "",
    *,
    memo: bool = True,
) -> None:
    """Warm both modes on one store: the full path's cache is copied for the memoised side.

    Each mode has its own cache directory, so neither's writes can touch what the other's
    memo recorded; a second miss would rewrite the outputs and leave each side restoring its
    own bytes over the other's at every run.
    """
    full, memoised = envs["full-path hit"], envs["hit"]
    warm(argv, root, full, says)
    shutil.copytree(
        full["CACHEHOOK_CACHE_DIR"],
        memoised["CACHEHOOK_CACHE_DIR"],
        ignore=shutil.ignore_patterns("memo"),
    )
    warm(argv, root, memoised, says, memo=memo)


def memo_holds(argv: Sequence[str], root: Path, env: dict[str, str]) -> bool:
    """Whether ``argv`` run now in ``root`` with ``env`` would be replayed from its memo."""
    python = Path(argv[0]).read_text().splitlines()[0].removeprefix("#!")  # the script's own
    check = [python, "-c", MEMO_CHECK, *argv[1:]]
    done = subprocess.run(
        check, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return done.returncode == 0


def await_memo(argv: Sequence[str], root: Path, env: dict[str, str], limit: float = 60) -> None:
    """Repeat the hit 1.1 s apart (past the racy window) until its memo in <cache dir>/memo holds."""
    deadline = time.monotonic() + limit
    while not memo_holds(argv, root, env):
        if time.monotonic() > deadline:
            memos = Path(env["CACHEHOOK_CACHE_DIR"]) / "memo"
            held = sorted(p.name for p in memos.iterdir()) if memos.is_dir() else "no directory"
            msg = f"no memo of {' '.join(argv)} holds after {limit:.0f} s ({memos}: {held})"
            raise SystemExit(msg)
        time.sleep(1.1)
        timed(argv, root, env)


def sides(
    label: str,
    argv: Sequence[str],
    root: Path,
    envs: dict[str, dict[str, str]],
    prepare: Callable[[], None] | None = None,
    verify: Callable[[], None] | None = None,
) -> dict[str, Callable[[], Sample]]:
    """cachehook's runs of ``argv`` in both modes, by figure name.

    ``prepare`` and ``verify`` run untimed around each run (a restoring row: no memo applies).
    Without them, a memoised run is first checked, untimed, to be one its memo replays.
    """

    def run(mode: str) -> Sample:
        if prepare is not None:
            prepare()
        elif mode == "hit" and not memo_holds(argv, root, envs[mode]):
            BROKEN[label] = BROKEN.get(label, 0) + 1
        sample = timed(argv, root, envs[mode])
        if verify is not None:
            verify()
        return sample

    return {f"cachehook {mode}, {label}": functools.partial(run, mode) for mode in envs}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commands(cachehook: Path, script: str) -> tuple[list[str], list[str]]:
    ours = [str(cachehook), "exec", "-q", "-i", f"{APP}/src/**", "-o", "out/**", "--"]
    ours += [sys.executable, "-c", script]
    return ours, [str(TURBO), "run", "build", "--output-logs=hash-only"]


def bench_hits(cachehook: Path, work: Path, count: int, repeat: int) -> dict[str, Sample]:
    name = f"n{count}"
    root, env, envs = work / name, bench_env(work, name), mode_envs(work, name)
    make_workspace(root, count, BLOB, env)
    ours, turbo = commands(cachehook, BLOB)
    warm(turbo, root, env)  # first: its .turbo/ and out/ change directories cachehook stats
    warm_modes(ours, root, envs)
    label = f"{count:,} inputs"
    return interleave(
        {**sides(label, ours, root, envs), f"turbo hit, {label}": lambda: timed(turbo, root, env)},
        repeat,
    )


def bench_small(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    root, envs = work / "n10", mode_envs(work, "n10")
    root.mkdir()
    make_tree(root, 10)
    git_commit(root)
    ours = [str(cachehook), "exec", "-q", "-i", "src/**", "-o", "out/**", "--"]
    ours += [sys.executable, "-c", BLOB]
    warm_modes(ours, root, envs)
    python = [str(cachehook.parent / "python"), "-c", "pass"]
    return interleave(
        {
            **sides("10 inputs", ours, root, envs),
            "python -c pass": lambda: timed(python, root, envs["hit"]),
        },
        repeat,
    )


def restoring(
    argv: Sequence[str], root: Path, env: dict[str, str], out: Path, wanted: dict[str, str]
) -> Sample:
    """Remove ``out``, time ``argv``, then check it put back exactly the files in ``wanted``."""
    shutil.rmtree(out, ignore_errors=True)
    sample = timed(argv, root, env)
    verify_restored(out, wanted)
    return sample


def verify_restored(out: Path, wanted: dict[str, str]) -> None:
    got = {p.name: digest(p) for p in out.iterdir()} if out.is_dir() else {}
    if got != wanted:  # a miss would have written new random bytes
        msg = f"{out} does not hold the cached outputs: not a hit"
        raise SystemExit(msg)


def bench_restore(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    root, env, envs = work / "restore", bench_env(work, "restore"), mode_envs(work, "restore")
    make_workspace(root, 10, BLOBS, env)
    ours, turbo = commands(cachehook, BLOBS)
    warm(turbo, root, env)
    warm_modes(ours, root, envs, memo=False)
    outs = {"ours": root / "out", "turbo": root / APP / "out"}
    wanted = {side: {p.name: digest(p) for p in out.iterdir()} for side, out in outs.items()}
    label = "restoring 100 x 1 MiB"
    return interleave(
        {
            **sides(
                label,
                ours,
                root,
                envs,
                prepare=lambda: shutil.rmtree(outs["ours"]),
                verify=lambda: verify_restored(outs["ours"], wanted["ours"]),
            ),
            f"turbo hit, {label}": lambda: restoring(
                turbo, root, env, outs["turbo"], wanted["turbo"]
            ),
        },
        repeat,
    )


def bench_remote(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    """A remote hit of one 1 MiB output, both clients against the same npm server."""
    (work / "server").mkdir()
    with npm_server(work / "server") as api:
        root, env = work / "remote", bench_env(work, "remote")
        remote = {"CACHEHOOK_API": api, "CACHEHOOK_TOKEN": TOKEN, "CACHEHOOK_TEAM": "bench"}
        envs = mode_envs(work, "remote", **remote)
        make_workspace(root, 10, BLOB, env)
        ours, turbo = commands(cachehook, BLOB)
        turbo += ["--api", api, "--token", TOKEN, "--team", "bench"]
        outs = {"ours": root / "out", "turbo": root / APP / "out"}
        caches = {
            # the store; the stat cache and toolchain record stay, as on a developer's machine
            "ours": [Path(e["CACHEHOOK_CACHE_DIR"]) / "store" for e in envs.values()],
            "turbo": [root / ".turbo" / "cache", root / "node_modules" / ".cache" / "turbo"],
        }

        def clear(side: str) -> None:
            shutil.rmtree(outs[side], ignore_errors=True)
            for cache in caches[side]:
                shutil.rmtree(cache, ignore_errors=True)

        loud = [arg for arg in ours if arg != "-q"]
        checked(loud, root, envs["hit"], "")  # the miss, which uploads
        checked(turbo, root, env, "")
        wanted = {side: {p.name: digest(p) for p in out.iterdir()} for side, out in outs.items()}
        for side, argv, side_env, says in (
            ("ours", loud, envs["hit"], "remote hit"),
            ("ours", loud, envs["full-path hit"], "remote hit"),
            ("turbo", turbo, env, "1 cached"),
        ):
            clear(side)
            checked(argv, root, side_env, says)
            verify_restored(outs[side], wanted[side])
        label = "remote, 1 MiB"

        def turbo_hit() -> Sample:
            clear("turbo")
            return restoring(turbo, root, env, outs["turbo"], wanted["turbo"])

        figures = interleave(
            {
                **sides(
                    label,
                    ours,
                    root,
                    envs,
                    prepare=lambda: clear("ours"),
                    verify=lambda: verify_restored(outs["ours"], wanted["ours"]),
                ),
                f"turbo hit, {label}": turbo_hit,
            },
            repeat,
        )
    return figures


def make_tasks(root: Path, count: int) -> list[str]:
    """A project of ``count`` named tasks, each reading two files, in a binary tree of depends-on."""
    (root / "src").mkdir(parents=True)
    lines = ["[project]", "name = 'bench'", "version = '0'", ""]
    names = [f"t{i:03d}" for i in range(count)]
    for index, name in enumerate(names):
        for part in "ab":
            (root / "src" / f"{name}.{part}").write_text(f"input {index} {part}\n")
        lines += [
            f"[tool.cachehook.tasks.{name}]",
            f"command = ['sh', '-c', 'cat src/{name}.a src/{name}.b > out/{name}.txt']",
            f"inputs = ['src/{name}.a', 'src/{name}.b']",
            f"outputs = ['out/{name}.txt']",
        ]
        if index:
            lines.append(f"depends-on = ['{names[(index - 1) // 2]}']")
        lines.append("")
    (root / "pyproject.toml").write_text("\n".join(lines))
    (root / ".gitignore").write_text("out/\n")
    (root / "out").mkdir()
    git_commit(root)
    return names


def bench_tasks(cachehook: Path, work: Path, repeat: int) -> dict[str, Sample]:
    root, envs = work / "tasks", mode_envs(work, "tasks")
    names = make_tasks(root, TASKS)
    ours = [str(cachehook), "run", "-q", *names]
    warm_modes(ours, root, envs, f"{TASKS} tasks: {TASKS} cached, 0 ran")
    python = [str(cachehook.parent / "python"), "-c", "pass"]
    return interleave(
        {
            **sides(f"run, {TASKS} tasks", ours, root, envs),
            f"python -c pass (beside run, {TASKS} tasks)": lambda: timed(python, root, envs["hit"]),
        },
        repeat,
    )


def targets(sizes: Sequence[int]) -> list[Target]:
    rows = [
        Target(f"hit at {n:,} inputs", f"{n:,} inputs", f"turbo hit, {n:,} inputs", bound)
        for n, bound in ((n, 0.8 if n <= 1000 else 0.5) for n in sizes)
    ]
    rows += [
        Target("hit at 10 inputs vs python -c pass", "10 inputs", "python -c pass", 2.5),
        Target(
            "restoring hit of 100 × 1 MiB (never memoised)",
            "restoring 100 x 1 MiB",
            "turbo hit, restoring 100 x 1 MiB",
            1.0,
        ),
        Target(
            "remote hit of 1 MiB, loopback (never memoised)",
            "remote, 1 MiB",
            "turbo hit, remote, 1 MiB",
            1.5,
        ),
        Target(
            f"`run` over {TASKS} all-hit tasks, per task",
            f"run, {TASKS} tasks",
            f"python -c pass (beside run, {TASKS} tasks)",
            0.68,
            per_task=True,
        ),
    ]
    return rows


VERDICTS = {
    (True, True): "met",
    (False, False): "not met",
    (True, False): "met (wall only)",
    (False, True): "met (CPU only)",
}


def report(figures: dict[str, Sample], sizes: Sequence[int], repeat: int, load: str) -> None:
    print(f"\nMedians of {repeat} paired runs, {os.cpu_count()} cores, load average {load}")
    for mode, says in (
        ("hit", "memoised (the hit memo on, as a repeated command)"),
        ("full-path hit", "full path (CACHEHOOK_MEMO=0)"),
    ):
        print(f"\ncachehook {mode}: {says}\n")
        print(
            "| target | bound | cachehook wall / CPU | baseline wall / CPU "
            "| ratio wall | ratio CPU | met? |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        for target in targets(sizes):
            ours, theirs = figures[f"cachehook {mode}, {target.ours}"], figures[target.theirs]
            if target.per_task:  # (run − python -c pass) / tasks, in ms
                wall, cpu = ((o - t) / TASKS for o, t in zip(ours, theirs, strict=True))
                bound, unit = f"≤ {target.bound} ms/task", " ms"
            else:
                wall, cpu = ours.wall / theirs.wall, ours.cpu / theirs.cpu
                bound, unit = f"≤ {target.bound}×", "×"
            verdict = VERDICTS[(wall <= target.bound, cpu <= target.bound)]
            broken = BROKEN.get(target.ours, 0) if mode == "hit" else 0
            if broken:
                verdict += f" (memo did not hold in {broken} of {repeat} runs)"
            print(
                f"| {target.name} | {bound} | {ours.wall:.0f} / {ours.cpu:.0f} ms | "
                f"{theirs.wall:.0f} / {theirs.cpu:.0f} ms | {wall:.2f}{unit} | "
                f"{cpu:.2f}{unit} | {verdict} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="--sizes 1000 --repeat 3")
    parser.add_argument("--cachehook", type=Path, help="a console script to use, not a new wheel")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat = "1000", 3
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
            lambda: bench_remote(cachehook, work, args.repeat),
            lambda: bench_tasks(cachehook, work, args.repeat),
        ]
        try:
            for step in steps:
                got = step()
                loads.append(os.getloadavg()[0])
                for name, sample in got.items():
                    print(
                        f"{name}: {sample.wall:.1f} ms wall, {sample.cpu:.1f} ms CPU",
                        file=sys.stderr,
                    )
                figures.update(got)
        finally:
            for root in work.iterdir():  # a turbo daemon started in a tree must not outlive it
                if (root / "turbo.json").exists():
                    subprocess.run(
                        [str(TURBO), "daemon", "stop"], cwd=root, check=False, capture_output=True
                    )
    load = f"{min(loads):.1f}–{max(loads):.1f}"
    report(figures, sizes, args.repeat, load)


if __name__ == "__main__":
    main()
