"""A uv workspace of 10 members x 200 files, every task a hit: cachehook beside turbo (issue 14).

    python benchmarks/bench_workspace.py [--members 10] [--files 200] [--repeat 11]
    python benchmarks/bench_workspace.py --quick     # what .ci/run runs: 4 x 20, once

cachehook runs from a wheel of this checkout installed into a fresh venv (``--cachehook PATH``
takes a console script instead; ``--quick`` takes the one beside this interpreter, so CI needs
no network). ``--quick`` times nothing that it checks: it fails only when a tool fails or a
run that must be all hits is not, so CI keeps the benchmark working at a few seconds' cost.

The members form a binary tree of workspace dependencies (m01 and m02 depend on m00, ...).
Figures, interleaved so machine noise hits every side alike, medians in milliseconds:

  * ``cachehook run test`` (10 member tasks, all hits) beside ``turbo run test`` on the same
    tree as an npm workspace (a package.json per member with the same ``test`` script and the
    same dependencies; ``"cache": true``). turbo 2.11.11 reads uv workspaces behind
    ``futureFlags.experimentalPythonWorkspaces``, but its Python tasks are only ``build``
    (``uv build``) and detected tools (ruff, black, mypy, pyright, ty): it has no way to give
    a member a ``test`` command, hence the npm-workspace twin for this figure.
  * ``cachehook run build`` (the ``build`` preset: ``uv build --package NAME``) beside
    ``turbo run build`` with ``experimentalPythonWorkspaces`` on the uv workspace itself
    (``"cache": true`` set explicitly: turbo leaves uv tasks uncached by default).
  * ``cachehook run test --affected`` on a clean tree (a branch with no change since ``main``:
    nothing to run) beside the all-hit ``cachehook run test``, and ``turbo run test
    --affected`` on its twin.

Needs ``uv`` (the test extra) and turbo in ``.peers/`` (see .ci/run); git and npm on PATH.
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
                "futureFlags": {"experimentalPythonWorkspaces": True},
                "tasks": {"build": {"dependsOn": ["^build"], "cache": True}},
            }
        )
    )


def make_npm_twin(source: Path, twin: Path, env: dict[str, str]) -> None:
    """The same tree as an npm workspace, each member's package.json running the same test."""
    shutil.copytree(source, twin, ignore=shutil.ignore_patterns(".git", ".venv", "dist", ".turbo"))
    (twin / "turbo.json").write_text(
        json.dumps({"tasks": {"test": {"dependsOn": ["^test"], "cache": True, "outputs": []}}})
    )
    for member in sorted((twin / "packages").iterdir()):
        index = int(member.name[1:])
        script = " ".join(TEST[:2]) + " pass"
        package = {
            "name": member.name,
            "version": "0.1.0",
            "private": True,
            "scripts": {"test": script},
            "dependencies": {d: "*" for d in dependencies(index)},
        }
        (member / "package.json").write_text(json.dumps(package))
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True)
    (twin / "package.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "private": True,
                "packageManager": f"npm@{npm.stdout.strip()}",
                "workspaces": ["packages/*"],
            }
        )
    )
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--offline"],
        cwd=twin,
        env=env,
        check=True,
        capture_output=True,
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
        root, twin = base / "uv", base / "npm"
        make_workspace(root, options.members, options.files, env)
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "bench")
        git(root, "checkout", "-q", "-b", "feature")
        make_npm_twin(root, twin, env)
        git(twin, "init", "-q", "-b", "main")
        git(twin, "add", "-A")
        git(twin, "commit", "-q", "-m", "bench")
        git(twin, "checkout", "-q", "-b", "feature")

        if options.cachehook:
            ch = str(options.cachehook)
        else:
            ch = cachehook_bin() if options.quick else wheel_cachehook(base)
        turbo = str(TURBO)
        quiet = ["--output-logs=hash-only"]
        # First runs fill the caches.
        for argv, cwd in (
            ([ch, "run", "test", "-j", "2"], root),
            ([ch, "run", "build", "-j", "2"], root),
            ([turbo, "run", "test", *quiet], twin),
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
                    [turbo, "run", "test", *quiet], twin, env, hits="FULL TURBO"
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
                    [turbo, "run", "test", "--affected", *quiet], twin, env
                ),
                "python -c pass": lambda: timed(TEST, root, env),
            },
            options.repeat,
        )
    report(figures, options)


def report(f: dict[str, float], options: argparse.Namespace) -> None:
    shape = f"{options.members} members x {options.files} files, median of {options.repeat}"
    print(f"uv workspace, {shape} (ms)")
    print("| figure | cachehook wall | turbo 2.11.11 wall | ratio | cachehook CPU | turbo CPU |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("`run test`, every task a hit (turbo: npm-workspace twin)", "test"),
        ("`run build`, every task a hit (turbo: experimentalPythonWorkspaces)", "build"),
        ("`run test --affected`, clean tree (turbo: npm twin)", "test --affected"),
    ]
    for label, key in rows:
        ours, theirs = f[f"cachehook {key}"], f[f"turbo {key}"]
        cpu = f"{f[f'cachehook {key} cpu']:.0f} | {f[f'turbo {key} cpu']:.0f}"
        print(f"| {label} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f}x | {cpu} |")
    cost = f["cachehook test --affected"] - f["cachehook test"]
    print(f"--affected on a clean tree vs all hits: {cost:+.0f} ms (nothing to run, git asked)")
    print(f"python -c pass: {f['python -c pass']:.0f} ms wall (the start-up floor)")


if __name__ == "__main__":
    main()
