"""A uv workspace of 10 members x 200 files, every task a hit: cachehook beside turbo (issue 14).

    python benchmarks/bench_workspace.py [--members 10] [--files 200] [--repeat 11]
    python benchmarks/bench_workspace.py --quick     # what .ci/run runs: 4 x 20, once

cachehook runs from a wheel of this checkout installed into a fresh venv (``--cachehook PATH``
takes a console script instead; ``--quick`` takes the one beside this interpreter, so CI needs
no network). ``--quick`` times nothing that it checks: it fails only when a tool fails or a
run that must be all hits is not, so CI keeps the benchmark working at a few seconds' cost.

The members form a binary tree of workspace dependencies (m01 and m02 depend on m00, ...).
Figures, interleaved so machine noise hits every side alike, medians in milliseconds:

turbo 2.11.11 runs on the same uv workspace, with ``futureFlags.experimentalPythonWorkspaces``
(it reads the members and each one's closure in ``uv.lock``; it needs ``[tool.turbo] name``)
and ``experimentalTaskCommand`` (a ``command`` array in turbo.json gives every member the same
``test`` command as cachehook's); each task has ``"cache": true`` set explicitly.

  * ``cachehook run test`` (one test task per member, all hits) beside ``turbo run test
    --filter=./packages/*`` (the filter leaves out the root, which turbo also gives the task).
  * ``cachehook run build`` (the ``build`` preset: ``uv build --package NAME``) beside
    ``turbo run build`` (turbo's own ``uv build --package=NAME``).
  * ``cachehook run test --affected`` on a clean tree (a branch with no change since ``main``:
    nothing to run) beside the all-hit ``cachehook run test``, and ``turbo run test
    --affected`` on the same tree.

Every cachehook row is taken twice on the same tree, each with its own cache directory:
"memoised", the repeated command as a user repeats it, which the hit memo
(``cachehook._memo``) replays after one ``stat`` per recorded path; and "full path", with
``CACHEHOOK_MEMO=0`` from the start. turbo is warmed first (its ``.turbo/`` directories change
what the memo stats), then cachehook's full path; the memoised side starts from a copy of that
cache and re-runs each command 1.1 s apart (the memo's racy window) until its memo holds, and
each timed memoised run is checked, untimed, to be one its memo replays (a row says when not).
``--affected`` asks git (a child process), so it is never memoised: its two rows are one path.
``--quick`` does not wait for the memo.

Needs ``uv`` (the test extra) and turbo in ``.peers/`` (see .ci/run); git on PATH.
Not a test: read the ratios. Everything happens in a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
TURBO = REPO / ".peers" / "node_modules" / "@turbo" / "linux-64" / "bin" / "turbo"
BIN = Path(sys.executable).parent
TEST = [sys.executable, "-c", "pass"]


def cachehook_bin() -> str:
    found = BIN / "cachehook"
    return str(found) if found.exists() else shutil.which("cachehook") or "cachehook"


def wheel_cachehook(work: Path) -> str:
    """cachehook's console script from a wheel of this checkout, in a fresh venv (bench_hit's)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_hit import install_wheel

    return str(install_wheel(work))


def git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def dependencies(index: int) -> list[str]:
    return [f"m{(index - 1) // 2:02d}"] if index else []


def make_workspace(root: Path, members: int, files: int, env: dict[str, str]) -> None:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        "[tool.uv.workspace]\nmembers = ['packages/*']\n\n[tool.turbo]\nname = 'bench'\n\n"
        "[tool.cachehook]\npresets = ['build']\n\n"
        f"[tool.cachehook.tasks.test]\nper-member = true\ncommand = {json.dumps(TEST)}\n"
    )
    (root / ".gitignore").write_text(".venv/\ndist/\n.turbo/\nnode_modules/\n")
    payload = os.urandom(2048)
    for index in range(members):
        name = f"m{index:02d}"
        deps = dependencies(index)
        member = root / "packages" / name
        source = member / "src" / name
        source.mkdir(parents=True)
        for number in range(files - 1):  # pyproject.toml is the 200th file
            folder = source / f"d{number // 50}"
            folder.mkdir(exist_ok=True)
            (folder / f"f{number:03d}.py").write_bytes(payload + number.to_bytes(4, "big"))
        text = f"[project]\nname = '{name}'\nversion = '0.1.0'\nrequires-python = '>=3.11'\n"
        text += f"dependencies = {json.dumps(deps)}\n"
        text += "[build-system]\nrequires = ['uv_build>=0.9,<0.15']\nbuild-backend = 'uv_build'\n"
        text += "[tool.uv.build-backend]\nmodule-root = 'src'\n"
        if deps:
            text += "[tool.uv.sources]\n" + "".join(f"{d} = {{ workspace = true }}\n" for d in deps)
        (member / "pyproject.toml").write_text(text)
        (source / "__init__.py").write_text("")
    subprocess.run(["uv", "lock", "--offline"], cwd=root, env=env, check=True, capture_output=True)
    (root / "turbo.json").write_text(
        json.dumps(
            {
                "futureFlags": {
                    "experimentalPythonWorkspaces": True,
                    "experimentalTaskCommand": True,
                },
                "tasks": {
                    "build": {"dependsOn": ["^build"], "cache": True},
                    "test": {"command": TEST, "cache": True, "outputs": []},
                },
            }
        )
    )


CPU: dict[str, list[float]] = {}


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str], *, hits: str = "") -> float:
    """Wall milliseconds; the child's CPU time (user + system) is kept in CPU by command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    CPU.setdefault(" ".join(argv[1:]) + f" @{cwd.name}", []).append(cpu)
    output = done.stdout + done.stderr
    if done.returncode != 0 or (hits and hits not in output):
        msg = f"{' '.join(argv)} in {cwd} failed or missed (wanted {hits!r}):\n{output}"
        raise SystemExit(msg)
    return elapsed


def interleave(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Medians of wall time by name, and of CPU time under "NAME cpu"."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            CPU.clear()
            samples[name].append(run())
            cpu[name].append(sum(sum(v) for v in CPU.values()))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return medians | {f"{name} cpu": statistics.median(values) for name, values in cpu.items()}


MODES = ("memoised", "full path")


def measure(
    ch: str, root: Path, base: Path, env: dict[str, str], options: argparse.Namespace
) -> dict[str, float]:
    """Warm every side, then time them interleaved; names as ``report`` reads them."""
    from bench_hit import await_memo, memo_holds

    envs = {
        "memoised": env | {"CACHEHOOK_CACHE_DIR": str(base / "cachehook-cache")},
        "full path": env
        | {"CACHEHOOK_CACHE_DIR": str(base / "cachehook-full"), "CACHEHOOK_MEMO": "0"},
    }
    turbo = str(TURBO)
    quiet = ["--output-logs=hash-only"]
    members = "--filter=./packages/*"
    ours = {
        "test": [ch, "run", "test", "-j", "2", *quiet],
        "build": [ch, "run", "build", "-j", "2", *quiet],
        "test --affected": [ch, "run", "test", "--affected"],
    }
    # First runs fill the caches: turbo's first (its .turbo/ directories change what cachehook's
    # memo stats), then cachehook's full path; the memoised side starts from a copy of its cache.
    for argv in ([turbo, "run", "test", members, *quiet], [turbo, "run", "build", *quiet]):
        timed(argv, root, env)
    for argv in ([ch, "run", "test", "-j", "2"], [ch, "run", "build", "-j", "2"]):
        timed(argv, root, envs["full path"])
    shutil.copytree(
        envs["full path"]["CACHEHOOK_CACHE_DIR"],
        envs["memoised"]["CACHEHOOK_CACHE_DIR"],
        ignore=shutil.ignore_patterns("memo"),
    )
    all_hits = f"{options.members} tasks: {options.members} cached, 0 ran"
    says = {"test": all_hits, "build": all_hits, "test --affected": "nothing to run"}
    if not options.quick:  # --quick times nothing: it need not wait for the memo
        time.sleep(1.1)  # what the first runs wrote, past the stat cache's racy window
        for key in ("test", "build"):
            for mode_env in envs.values():
                timed(ours[key], root, mode_env, hits=says[key])
            await_memo(ours[key], root, envs["memoised"])
    broken: dict[str, int] = {}

    def cachehook(key: str, mode: str) -> float:
        checks = mode == "memoised" and key != "test --affected" and not options.quick
        if checks and not memo_holds(ours[key], root, envs[mode]):  # untimed: would it replay?
            broken[key] = broken.get(key, 0) + 1
        return timed(ours[key], root, envs[mode], hits=says[key])

    runs: dict[str, Callable[[], float]] = {
        f"cachehook {mode} {key}": functools.partial(cachehook, key, mode)
        for key in ours
        for mode in MODES
    }
    runs |= {
        "turbo test": lambda: timed(
            [turbo, "run", "test", members, *quiet], root, env, hits="FULL TURBO"
        ),
        "turbo build": lambda: timed([turbo, "run", "build", *quiet], root, env, hits="FULL TURBO"),
        "turbo test --affected": lambda: timed(
            [turbo, "run", "test", "--affected", *quiet], root, env
        ),
        "python -c pass": lambda: timed(TEST, root, env),
    }
    figures = interleave(runs, options.repeat)
    return figures | {f"broken {key}": float(count) for key, count in broken.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int)
    parser.add_argument("--files", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--cachehook", type=Path, help="a console script to use, not a new wheel")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 members x 20 files, once, with this environment's cachehook (what CI runs)",
    )
    options = parser.parse_args()
    for name, full, quick in (("members", 10, 4), ("files", 200, 20), ("repeat", 11, 1)):
        if getattr(options, name) is None:
            setattr(options, name, quick if options.quick else full)
    if not TURBO.exists():
        raise SystemExit(f"turbo is missing at {TURBO}: install it as .ci/run does")
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-ws-") as tmp:
        base = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEHOOK_", "TURBO_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # users' interpreters keep their bytecode
        env |= {
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
            "CACHEHOOK_CACHE_DIR": str(base / "cachehook-cache"),
            "TURBO_TELEMETRY_DISABLED": "1",
            "DO_NOT_TRACK": "1",
            "UV_OFFLINE": "1",
            "UV_CACHE_DIR": str(base / "uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
        }
        root = base / "uv"
        make_workspace(root, options.members, options.files, env)
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "bench")
        git(root, "checkout", "-q", "-b", "feature")

        if options.cachehook:
            ch = str(options.cachehook)
        else:
            ch = cachehook_bin() if options.quick else wheel_cachehook(base)
        load = os.getloadavg()[0]
        figures = measure(ch, root, base, env, options)
    report(figures, options, load)


def report(f: dict[str, float], options: argparse.Namespace, load: float) -> None:
    shape = f"{options.members} members x {options.files} files, median of {options.repeat}"
    print(f"uv workspace, {shape} (ms)")
    print(f"load average {load:.1f} before the timed runs, {os.getloadavg()[0]:.1f} at the end")
    if options.quick:
        print("--quick: no wait for the memo, so a memoised row may have taken the full path")
    head = "| figure | cachehook wall | turbo 2.11.11 wall | ratio | cachehook CPU | turbo CPU | ratio |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("`run test`, every task a hit", "test"),
        ("`run build` (`uv build`), every task a hit", "build"),
        (
            "`run test --affected`, clean tree (nothing to run; asks git: never memoised)",
            "test --affected",
        ),
    ]
    for label, key in rows:
        theirs, their_cpu = f[f"turbo {key}"], f[f"turbo {key} cpu"]
        for mode in MODES:
            ours, our_cpu = f[f"cachehook {mode} {key}"], f[f"cachehook {mode} {key} cpu"]
            broken = int(f.get(f"broken {key}", 0)) if mode == "memoised" else 0
            note = f", memo did not hold in {broken} of {options.repeat}" if broken else ""
            cpu = f"{our_cpu:.0f} | {their_cpu:.0f} | {our_cpu / their_cpu:.2f}x"
            print(
                f"| {label}, {mode}{note} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | {cpu} |"
            )
    for mode in MODES:
        cost = f[f"cachehook {mode} test --affected"] - f[f"cachehook {mode} test"]
        print(
            f"{mode}: --affected on a clean tree vs all hits: {cost:+.0f} ms (nothing to run, git asked)"
        )
    print(f"python -c pass: {f['python -c pass']:.0f} ms wall (the start-up floor)")


if __name__ == "__main__":
    main()
