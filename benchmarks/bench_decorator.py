"""Hit latency of ``@cachehook.cached``, next to calling the same function undecorated.

    python benchmarks/bench_decorator.py [--files 100] [--repeat 2001] [--profile]

A no-op function declares N input files of 4 KiB (``inputs=["src/**/*.py"]``). After one miss,
every call is a local hit: settings, hashing the inputs (stat cache warm), the key, the store
lookup, the value decoded from JSON. Calls alternate with the undecorated function so machine
noise hits both alike. Also shown: where a hit's time goes (the same steps timed one by one),
and the first hit in a fresh process, which pays for imports and opening the store once.
Medians in milliseconds. Not a test: the machines are shared and noisy; the target is
<= 3 ms per hit with 100 files.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_MS = 3.0


def make_project(root: Path, count: int) -> None:
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    payload = os.urandom(4096)
    for index in range(count):
        folder = root / "src" / f"d{index // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:05d}.py").write_bytes(payload[:-8] + index.to_bytes(8, "big"))


def noop() -> None:
    return None


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def interleave(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            samples[name].append(timed(run))
    return samples


def stages(repeat: int) -> dict[str, list[float]]:
    """The steps of one hit, timed one by one on the same objects the decorator uses."""
    from cachehook._api import CacheOptions, run_cached
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    settings = load_settings(cwd=Path.cwd(), environ=os.environ)
    spec = TaskSpec(command=("bench",), inputs=("src/**/*.py",), cwd=Path.cwd())
    options = CacheOptions.create(inputs="src/**/*.py")
    run_cached(("bench",), options, lambda _: 0, name=None, on_notice=print)  # store it
    with Runner(settings, on_notice=print) as runner:
        prepared = runner.prepare(spec)
        return interleave(
            {
                "settings (config + find root)": lambda: load_settings(
                    cwd=Path.cwd(), environ=os.environ
                ),
                "prepare (expand + hash + key)": lambda: runner.prepare(spec),
                "run (store lookup, restore)": lambda: runner.run(prepared),
            },
            repeat,
        )


COLD = textwrap.dedent(
    """
    import time
    started = time.perf_counter()
    from cachehook import cached

    @cached(inputs=["src/**/*.py"])
    def noop():
        return None

    noop()
    print((time.perf_counter() - started) * 1000)
    """
)


def cold_hits(repeat: int) -> list[float]:
    """The first hit in a fresh process: import cachehook, open the store, hit."""
    samples = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", COLD], capture_output=True, text=True, check=True
        )
        samples.append(float(done.stdout.strip()))
    return samples


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{name:<44} {statistics.median(values):>10.4f} {p90:>10.4f} {len(values):>7}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2001)
    parser.add_argument("--cold", type=int, default=11, help="fresh processes to time")
    parser.add_argument("--profile", action="store_true", help="cProfile 1000 hits")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-decorator-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        make_project(root, args.files)
        os.environ["CACHEHOOK_CACHE_DIR"] = str(Path(tmp) / "cache")
        for name in list(os.environ):
            if name.startswith(("CACHEHOOK_API", "TURBO_")):
                del os.environ[name]  # a local hit, without a remote
        os.chdir(root)

        from cachehook import cached

        decorated = cached(inputs=["src/**/*.py"])(noop)
        decorated()  # the miss that stores it
        decorated()  # warm the stat cache and the pooled runner

        samples = interleave(
            {"noop() undecorated": noop, "noop() hit, @cached": decorated}, args.repeat
        )
        breakdown = stages(max(args.repeat // 4, 101))
        cold = cold_hits(args.cold)

        print(f"{args.files} input files of 4 KiB; Python {sys.version.split()[0]}; medians in ms")
        print(f"{'':<44} {'median':>10} {'p90':>10} {'samples':>7}")
        for name, values in samples.items():
            print(row(name, values))
        print(row("first hit in a fresh process (incl. imports)", cold))
        print("where a warm hit's time goes:")
        for name, values in breakdown.items():
            print(row(f"  {name}", values))
        hit = statistics.median(samples["noop() hit, @cached"])
        verdict = "meets" if hit <= TARGET_MS else "MISSES"
        print(f"warm hit: {hit:.3f} ms per call, {verdict} the {TARGET_MS:.0f} ms target")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(1000):
                decorated()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
