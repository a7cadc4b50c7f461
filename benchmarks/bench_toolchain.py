"""What keying the toolchain adds to a warm hit, next to the same hit with ``--no-toolchain``.

    python benchmarks/bench_toolchain.py [--repeat 201] [--exec-repeat 31] [--allow-editable]

Run it with a Python where cachehook is installed from a wheel (``pip install .`` into a fresh
venv), as users have it: an editable install imports from the work tree and would measure that.

For one task, ``python -c pass`` with 10 input files, whose interpreter is this one or
``--python`` (every distribution installed in its environment is keyed), it measures, interleaved so
machine noise hits both sides alike:
  * in-process, one ``Runner``: ``prepare`` (hash + key) and ``prepare`` + ``run`` (a local hit),
    toolchain on vs off (``TaskSpec(toolchain=False)``, what ``--no-toolchain`` gives a task);
  * the console script: ``cachehook exec`` hits, with and without ``--no-toolchain``.
The toolchain cache is warm (``<cache dir>/toolchain.json``, entries older than a second), as on a
developer's second run. Medians in milliseconds; the budget is 1 ms added to a warm hit.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
BUDGET_MS = 1.0


def cachehook_bin() -> str:
    found = Path(sys.executable).parent / "cachehook"
    return str(found) if found.exists() else shutil.which("cachehook") or "cachehook"


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def interleave(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs.items())
    for index in range(repeat):
        for name, run in order if index % 2 else reversed(order):  # ABBA: no order effect
            samples[name].append(timed(run))
    return {name: statistics.median(values) for name, values in samples.items()}


def make_project(root: Path) -> None:
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    for index in range(10):
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / f"m{index}.py").write_text(f"X = {index}\n")


def in_process(root: Path, repeat: int, python: str) -> dict[str, float]:
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    settings = load_settings(cwd=root, environ=os.environ)
    keyed = TaskSpec(command=(python, "-c", "pass"), inputs=("src/**",), cwd=root)
    bare = dataclasses.replace(keyed, toolchain=False)  # what --no-toolchain gives every task
    # One runner (one store connection, one stat cache) for both, so only the toolchain differs.
    with Runner(settings, on_notice=print) as runner:
        for spec in (keyed, bare):
            runner.run(runner.prepare(spec))  # each key's miss, stored
        time.sleep(1.1)  # past the racy window: the toolchain cache may now keep its entries
        for spec in (keyed, bare):
            assert runner.run(runner.prepare(spec)).status == "HIT"
        tools = runner.prepare(keyed).manifest.toolchain
        print(f"toolchain: {[(t.name, len(t.versions) - 1) for t in tools]} (name, distributions)")
        figures = interleave(
            {
                "prepare, toolchain": lambda: runner.prepare(keyed),
                "prepare, --no-toolchain": lambda: runner.prepare(bare),
            },
            repeat,
        )
        figures.update(
            interleave(
                {
                    "hit, toolchain": lambda: runner.run(runner.prepare(keyed)),
                    "hit, --no-toolchain": lambda: runner.run(runner.prepare(bare)),
                },
                repeat,
            )
        )
        return figures


def whole_process(root: Path, repeat: int, python: str) -> dict[str, float]:
    argv = [cachehook_bin(), "exec", "-q", "-i", "src/**", "--", python, "-c", "pass"]
    bare = [*argv[:2], "--no-toolchain", *argv[2:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(command: list[str]) -> None:
        subprocess.run(command, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)

    for command in (argv, bare, argv, bare):
        run(command)
    return interleave(
        {"exec hit, toolchain": lambda: run(argv), "exec hit, --no-toolchain": lambda: run(bare)},
        repeat,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=201)
    parser.add_argument("--exec-repeat", type=int, default=31)
    parser.add_argument("--allow-editable", action="store_true")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter the task runs (default: this one); a venv with many "
        "distributions shows the cost of keying them",
    )
    args = parser.parse_args()
    import cachehook

    if REPO in Path(cachehook.__file__).resolve().parents and not args.allow_editable:
        print(
            "cachehook is imported from the work tree; run this with a wheel install:\n"
            "  python -m venv /tmp/b && /tmp/b/bin/pip install . && "
            "/tmp/b/bin/python benchmarks/bench_toolchain.py",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-toolchain-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        make_project(root)
        os.environ["CACHEHOOK_CACHE_DIR"] = str(Path(tmp) / "cache")
        for name in list(os.environ):
            if name.startswith(("CACHEHOOK_API", "CACHEHOOK_TOKEN", "TURBO_")):
                del os.environ[name]  # a local hit, without a remote
        figures = in_process(root, args.repeat, args.python)
        figures.update(whole_process(root, args.exec_repeat, args.python))
    print(f"\nMedians (ms), {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| step | toolchain | --no-toolchain | added | ratio |")
    print("|---|---:|---:|---:|---:|")
    for step in ("prepare", "hit", "exec hit"):
        on, off = figures[f"{step}, toolchain"], figures[f"{step}, --no-toolchain"]
        print(f"| {step} | {on:.3f} | {off:.3f} | {on - off:+.3f} | {on / off:.2f}× |")
    added = figures["hit, toolchain"] - figures["hit, --no-toolchain"]
    verdict = "within" if added <= BUDGET_MS else "OVER"
    print(
        f"\nadded to an in-process warm hit: {added:.3f} ms ({verdict} the {BUDGET_MS} ms budget)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
