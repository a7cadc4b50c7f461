"""What git's rules for inputs cost on the hit path (issue 10), next to ``git`` itself.

    python benchmarks/bench_inputs.py [--sizes 1000,10000] [--repeat 21]

For N tracked 4 KiB files in a git repository (src/dNNN/fNNNNN.py, each directory with an
ignored ``__pycache__/`` holding a .pyc, and one tracked file under an ignored ``build/``), the
warm in-process re-hash (``Runner.prepare``: glob walk, stat check of every input, the key):
  * ``-i 'src/**/*.py'``: no ignored path met, the index is never read;
  * ``-i 'src/**'``: the walk meets the ignored ``__pycache__/`` directories, so git's index
    is read (once per process) to add back any tracked file below them;
  * no ``-i`` (every file git lists under the cwd, as ``git ls-files -co --exclude-standard``);
  * reading the index alone, and ``git ls-files -co --exclude-standard`` as the baseline.
Run it with an interpreter where this checkout is installed (a wheel). Medians in ms; the
machines are shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def make_repo(root: Path, count: int) -> None:
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    (root / ".gitignore").write_text("__pycache__/\nbuild/\nout/\n")
    payload = os.urandom(4096)
    for index in range(count):
        folder = root / "src" / f"d{index // 100:03d}"
        if not folder.exists():
            (folder / "__pycache__").mkdir(parents=True)
            (folder / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0" * 64)
        (folder / f"f{index:05d}.py").write_bytes(payload[:-8] + index.to_bytes(8, "big"))
    (root / "build").mkdir()
    (root / "build" / "kept.txt").write_text("tracked though ignored\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "add", "-f", "build/kept.txt"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "tree"], cwd=root, check=True)


def prepare_ms(root: Path, env: dict[str, str], inputs: tuple[str, ...] | None) -> float:
    from cachehook import gitindex
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    gitindex.reset()  # each sample pays for reading the index, as one `cachehook exec` does
    settings = load_settings(cwd=root, environ=env)
    spec = TaskSpec(command=("x",), inputs=inputs, outputs=("out/**",), cwd=root)
    with Runner(settings, on_notice=lambda _: None) as runner:
        started = time.perf_counter()
        runner.prepare(spec)
        return (time.perf_counter() - started) * 1000


def index_ms(root: Path) -> float:
    from cachehook import gitindex

    gitindex.reset()
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    started = time.perf_counter()
    gitindex.tracked_paths(repo)
    return (time.perf_counter() - started) * 1000


def git_ms(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=root,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return (time.perf_counter() - started) * 1000


def bench_size(count: int, repeat: int, work: Path) -> dict[str, float]:
    root = work / f"n{count}"
    make_repo(root, count)
    env = {**os.environ, "CACHEHOOK_CACHE_DIR": str(work / f"cache{count}")}
    runs: dict[str, Callable[[], float]] = {
        "-i src/**/*.py": lambda: prepare_ms(root, env, ("src/**/*.py",)),
        "-i src/**": lambda: prepare_ms(root, env, ("src/**",)),
        "no -i": lambda: prepare_ms(root, env, None),
        "index read": lambda: index_ms(root),
        "git ls-files": lambda: git_ms(root),
    }
    for run in runs.values():
        run()  # warm the stat cache
    time.sleep(1.1)  # past the stat cache's racy window, as on a real second run
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    print(f"Warm in-process re-hash, median of {args.repeat} (ms), {os.cpu_count()} cores\n")
    print(
        "| files | -i 'src/**/*.py' | -i 'src/**' (index read) | no -i | index alone "
        "| git ls-files -co | no -i / git |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-") as tmp:
        for count in (int(s) for s in args.sizes.split(",")):
            f = bench_size(count, args.repeat, Path(tmp))
            print(
                f"| {count:,} | {f['-i src/**/*.py']:.1f} | {f['-i src/**']:.1f} | "
                f"{f['no -i']:.1f} | {f['index read']:.1f} | {f['git ls-files']:.1f} | "
                f"{f['no -i'] / f['git ls-files']:.2f}× |",
                flush=True,
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
