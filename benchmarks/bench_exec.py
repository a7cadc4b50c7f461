"""Local-hit latency of ``cachehook exec``, each figure next to a baseline from the same run.

    python benchmarks/bench_exec.py [--sizes 10,1000,10000] [--repeat 21]

For N input files of 4 KiB and a 1 MiB output it measures, interleaved so machine noise hits
both sides alike:
  * a local hit (``cachehook exec``, the console script users run) vs ``python -c pass``;
  * the warm re-hash of the tree (``cachehook exec --dry-run``) vs ``git status`` on it;
  * when the real ``turbo`` binary is installed in ``.peers/`` (see .ci/run), its local hit on
    the same files, so the README can say how we compare.
Medians in milliseconds. Not a test: the machines are shared and noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
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
BLOB = "import os, pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); (p / 'blob.bin').write_bytes(os.urandom(1 << 20))"


def cachehook_bin() -> str:
    found = Path(sys.executable).parent / "cachehook"
    return str(found) if found.exists() else shutil.which("cachehook") or "cachehook"


def make_tree(root: Path, count: int) -> None:
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    (root / ".gitignore").write_text("out/\nnode_modules/\n.turbo/\n")
    payload = os.urandom(4096)
    for index in range(count):
        folder = root / "src" / f"d{index // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.py").write_bytes(payload[:-8] + index.to_bytes(8, "big"))


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return (time.perf_counter() - started) * 1000


def rehash_in_process(root: Path, env: dict[str, str]) -> float:
    """The warm re-hash alone: glob walk, stat-cache check of every input, key (no start-up)."""
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    settings = load_settings(cwd=root, environ=env)
    spec = TaskSpec(command=("x",), inputs=("src/**",), outputs=("out/**",), cwd=root)
    with Runner(settings, on_notice=lambda _: None) as runner:
        started = time.perf_counter()
        runner.prepare(spec)
        return (time.perf_counter() - started) * 1000


def interleave(runs: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def setup_turbo(root: Path, env: dict[str, str]) -> list[str] | None:
    if not TURBO.exists():
        return None
    app = root / "packages" / "app"
    app.mkdir(parents=True)
    shutil.move(str(root / "src"), app / "src")
    (app / "package.json").write_text(
        json.dumps(
            {
                "name": "app",
                "version": "0.0.0",
                "private": True,
                "scripts": {"build": f'{sys.executable} -c "{BLOB}"'},
            }
        )
    )
    npm_version = subprocess.run(
        ["npm", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (root / "package.json").write_text(
        json.dumps(
            {
                "name": "mono",
                "private": True,
                "packageManager": f"npm@{npm_version}",
                "workspaces": ["packages/*"],
            }
        )
    )
    (root / "turbo.json").write_text(json.dumps({"tasks": {"build": {"outputs": ["out/**"]}}}))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--offline"],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    argv = [str(TURBO), "run", "build", "--output-logs=hash-only"]
    subprocess.run(argv, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return argv


def bench_size(count: int, repeat: int, work: Path) -> dict[str, float]:
    root = work / f"n{count}"
    root.mkdir()
    make_tree(root, count)
    # Users' interpreters keep compiled bytecode; without it every start recompiles the package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {
        **env,
        "CACHEHOOK_CACHE_DIR": str(work / f"cache{count}"),
        "TURBO_TELEMETRY_DISABLED": "1",
        "TURBO_NO_UPDATE_NOTIFIER": "1",
        "DO_NOT_TRACK": "1",
    }
    hit = [
        cachehook_bin(),
        "exec",
        "-q",
        "-i",
        "src/**",
        "-o",
        "out/**",
        "--",
        sys.executable,
        "-c",
        BLOB,
    ]
    subprocess.run(hit, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)  # the miss
    time.sleep(1.1)  # past the stat cache's racy-clean window, as on a real second run
    subprocess.run(hit, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tree"],
        cwd=root,
        check=True,
    )
    subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, check=True, stdout=subprocess.DEVNULL
    )
    runs: dict[str, Callable[[], float]] = {
        "python -c pass": lambda: timed([sys.executable, "-c", "pass"], root, env),
        "cachehook hit": lambda: timed(hit, root, env),
        "cachehook re-hash": lambda: timed([*hit[:2], "--dry-run", *hit[2:]], root, env),
        "git status": lambda: timed(["git", "status", "--porcelain"], root, env),
        "re-hash in-process": lambda: rehash_in_process(root, env),
    }
    figures = interleave(runs, repeat)
    if count >= 1000:
        turbo = setup_turbo(root, env)
        if turbo is not None:
            figures.update(
                interleave(
                    {
                        "turbo hit": lambda: timed(turbo, root, env),
                        "python -c pass (turbo run)": lambda: timed(
                            [sys.executable, "-c", "pass"], root, env
                        ),
                    },
                    repeat,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-") as tmp:
        for count in (int(s) for s in args.sizes.split(",")):
            figures = bench_size(count, args.repeat, Path(tmp))
            rows.append((count, figures))
            print(
                f"N={count}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in figures.items()),
                file=sys.stderr,
            )
    print(
        f"\nLocal hit, 4 KiB inputs + 1 MiB output, median of {args.repeat} (ms), {os.cpu_count()} cores\n"
    )
    print(
        "| inputs | cachehook hit | python -c pass | hit − python | turbo hit | hit / turbo |"
        " re-hash, whole process (--dry-run) | re-hash in-process | git status | in-process / git status |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, f in rows:
        turbo = f"{f['turbo hit']:.1f}" if "turbo hit" in f else "—"
        versus = f"{f['cachehook hit'] / f['turbo hit']:.2f}×" if "turbo hit" in f else "—"
        print(
            f"| {count:,} | {f['cachehook hit']:.1f} | {f['python -c pass']:.1f} | "
            f"{f['cachehook hit'] - f['python -c pass']:.1f} | {turbo} | {versus} | "
            f"{f['cachehook re-hash']:.1f} | {f['re-hash in-process']:.1f} | {f['git status']:.1f} | "
            f"{f['re-hash in-process'] / f['git status']:.2f}× |"
        )


if __name__ == "__main__":
    main()
