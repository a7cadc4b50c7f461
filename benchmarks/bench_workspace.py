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

Needs ``uv`` (the test extra) and turbo in ``.peers/`` (see .ci/run); git on PATH.
Not a test: read the ratios. Everything happens in a temporary directory.
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
        turbo = str(TURBO)
        quiet = ["--output-logs=hash-only"]
        members = "--filter=./packages/*"
        # First runs fill the caches.
        for argv, cwd in (
            ([ch, "run", "test", "-j", "2"], root),
            ([ch, "run", "build", "-j", "2"], root),
            ([turbo, "run", "test", members, *quiet], root),
            ([turbo, "run", "build", *quiet], root),
        ):
            timed(argv, cwd, env)
        all_hits = f"{options.members} tasks: {options.members} cached, 0 ran"
        figures = interleave(
            {
                "cachehook test": lambda: timed(
                    [ch, "run", "test", "-j", "2", *quiet], root, env, hits=all_hits
                ),
                "turbo test": lambda: timed(
                    [turbo, "run", "test", members, *quiet], root, env, hits="FULL TURBO"
                ),
                "cachehook build": lambda: timed(
                    [ch, "run", "build", "-j", "2", *quiet], root, env, hits=all_hits
                ),
                "turbo build": lambda: timed(
                    [turbo, "run", "build", *quiet], root, env, hits="FULL TURBO"
                ),
                "cachehook test --affected": lambda: timed(
                    [ch, "run", "test", "--affected"], root, env, hits="nothing to run"
                ),
                "turbo test --affected": lambda: timed(
                    [turbo, "run", "test", "--affected", *quiet], root, env
                ),
                "python -c pass": lambda: timed(TEST, root, env),
            },
            options.repeat,
        )
    report(figures, options)


def report(f: dict[str, float], options: argparse.Namespace) -> None:
    shape = f"{options.members} members x {options.files} files, median of {options.repeat}"
    print(f"uv workspace, {shape} (ms)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    head = "| figure | cachehook wall | turbo 2.11.11 wall | ratio | cachehook CPU | turbo CPU | ratio |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    rows = [
        ("`run test`, every task a hit", "test"),
        ("`run build` (`uv build`), every task a hit", "build"),
        ("`run test --affected`, clean tree (nothing to run)", "test --affected"),
    ]
    for label, key in rows:
        ours, theirs = f[f"cachehook {key}"], f[f"turbo {key}"]
        our_cpu, their_cpu = f[f"cachehook {key} cpu"], f[f"turbo {key} cpu"]
        cpu = f"{our_cpu:.0f} | {their_cpu:.0f} | {our_cpu / their_cpu:.2f}x"
        print(f"| {label} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | {cpu} |")
    cost = f["cachehook test --affected"] - f["cachehook test"]
    print(f"--affected on a clean tree vs all hits: {cost:+.0f} ms (nothing to run, git asked)")
    print(f"python -c pass: {f['python -c pass']:.0f} ms wall (the start-up floor)")


if __name__ == "__main__":
    main()
