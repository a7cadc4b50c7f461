"""Figures for named tasks (issue 4): what a hit costs per task in a big graph, and -j scaling.

1. A 200-task graph (a binary tree of dependencies) where every task hits: the wall time of
   ``cachehook run`` on all 200, beside a single-task hit measured the same way; the
   difference divided by 199 is the cost of each task beyond the first (target <= 5 ms).
   The same graph is also timed in-process (``run_tasks``), without the process start.
2. A 20-task graph where every task sleeps 1 s, with ``-j 2``: about 10 s.

Usage: python benchmarks/bench_tasks.py [--repeat N] [--tasks N]
Everything happens in a temporary directory; the real cache is never touched.
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

from cachehook.config import load_settings
from cachehook.runner import Runner
from cachehook.tasks import TaskOutcome, load_task_graph, run_tasks


def _hit_graph(root: Path, count: int) -> list[str]:
    (root / "src").mkdir(parents=True)
    (root / "out").mkdir()
    lines = ["[project]", "name = 'bench'", "version = '0'", ""]
    names = [f"t{i:03d}" for i in range(count)]
    for index, name in enumerate(names):
        (root / "src" / f"{name}.txt").write_text(f"input {index}\n")
        lines += [
            f"[tool.cachehook.tasks.{name}]",
            f"command = ['sh', '-c', 'cat src/{name}.txt > out/{name}.txt']",
            f"inputs = ['src/{name}.txt']",
            f"outputs = ['out/{name}.txt']",
        ]
        if index:
            lines.append(f"depends-on = ['{names[(index - 1) // 2]}']")
        lines.append("")
    (root / "pyproject.toml").write_text("\n".join(lines))
    return names


def _sleep_graph(root: Path, count: int) -> list[str]:
    root.mkdir(parents=True)
    lines = ["[project]", "name = 'sleep'", "version = '0'", ""]
    names = [f"s{i:02d}" for i in range(count)]
    for name in names:
        lines += [f"[tool.cachehook.tasks.{name}]", "command = 'sleep 1'", f"salt = '{name}'", ""]
    (root / "pyproject.toml").write_text("\n".join(lines))
    return names


def _cli(root: Path, env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cachehook", "run", "-q", *args],
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"cachehook run failed:\n{result.stderr.decode()}")
    return elapsed


class _Quiet:
    def live(self, name: str) -> None:
        return None

    def started(self, name: str, key: str) -> None:
        raise SystemExit(f"{name} missed: the benchmark expects every task to hit")

    def finished(self, outcome: TaskOutcome) -> None:
        pass


def _in_process(root: Path, env: dict[str, str], names: list[str]) -> float:
    settings = load_settings(cwd=root, environ=env)
    graph = load_task_graph(settings, cwd=root)
    with Runner(settings, on_notice=print) as runner:
        started = time.perf_counter()
        report = run_tasks(graph, names, runner, reporter=_Quiet())
        elapsed = time.perf_counter() - started
    assert all(outcome.state == "cached" for outcome in report.outcomes)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=200)
    options = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-") as tmp:
        base = Path(tmp)
        env = {**os.environ, "CACHEHOOK_CACHE_DIR": str(base / "cache")}
        env = {k: v for k, v in env.items() if not k.startswith(("CACHEHOOK_API", "TURBO_"))}
        root = base / "hits"
        names = _hit_graph(root, options.tasks)
        first = _cli(root, env, *names)  # every task misses once
        single = statistics.median(_cli(root, env, names[0]) for _ in range(options.repeat))
        graph = statistics.median(_cli(root, env, *names) for _ in range(options.repeat))
        inproc = statistics.median(_in_process(root, env, names) for _ in range(options.repeat))
        extra = (graph - single) / (len(names) - 1)
        rows += [
            (f"{len(names)}-task graph, first run (all miss)", f"{first:.2f} s", ""),
            ("single-task hit, `cachehook run` wall", f"{single * 1000:.0f} ms", ""),
            (f"{len(names)}-task hit graph, `cachehook run` wall", f"{graph * 1000:.0f} ms", ""),
            ("  per task beyond the first", f"{extra * 1000:.2f} ms", "<= 5 ms"),
            (f"{len(names)}-task hit graph, in-process", f"{inproc * 1000:.0f} ms", ""),
            ("  per task", f"{inproc / len(names) * 1000:.2f} ms", ""),
        ]
        sleepers = _sleep_graph(base / "sleep", 20)
        for jobs in (2, 4):
            took = _cli(base / "sleep", env, "--force", "-j", str(jobs), *sleepers)
            ideal = 20 / jobs
            rows.append((f"20 x `sleep 1`, -j {jobs}", f"{took:.2f} s", f"about {ideal:.0f} s"))
    width = max(len(row[0]) for row in rows)
    print(f"{'figure':<{width}}  {'value':>10}  target")
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>10}  {target}")


if __name__ == "__main__":
    main()
