"""Remote hits and the cost of events, each figure next to a baseline from the same run.

    python benchmarks/bench_remote.py [--repeat 7]

Needs the npm ``turborepo-remote-cache`` server in ``.peers/`` (``.ci/run`` installs it). On
loopback it measures:
  * a remote hit (``cachehook exec``, local cache wiped before each run) for a 1 MiB and a
    100 MiB artifact, next to a local hit that restores the same outputs and a local hit whose
    outputs are already on disk;
  * the time events add per task with a reachable endpoint: 200 local hits in one process with
    events going to the real server, against the same 200 hits with no remote;
  * the wait at exit with a black-hole events endpoint (a socket that accepts and never answers),
    for the in-process sender (bounded by the 1 s flush timeout) and for ``cachehook exec``
    (which hands events to a detached ``events flush`` and does not wait).
Medians in milliseconds. Not a test: the machines are shared and noisy; read the ratios.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / ".peers" / "node_modules" / "turborepo-remote-cache" / "dist" / "cli.js"
TOKEN = "bench-token-0123456789"
BUILD = (
    "import os, pathlib, sys\n"
    "out = pathlib.Path('out'); out.mkdir(exist_ok=True)\n"
    "(out / 'blob.bin').write_bytes(os.urandom(int(sys.argv[1])))\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def npm_server(work: Path) -> Iterator[str]:
    if not SERVER.exists():
        sys.exit(f"{SERVER} is missing: run .ci/run (or npm install it into .peers/) first")
    port = free_port()
    (work / "storage").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "NODE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AUTH_MODE": "static",
        "TURBO_TOKEN": TOKEN,
        "STORAGE_PROVIDER": "local",
        "STORAGE_PATH": str(work / "storage"),
        "STORAGE_PATH_USE_TMP_FOLDER": "false",
        "LOG_LEVEL": "warn",
        "BODY_LIMIT": str(1 << 30),
    }
    process = subprocess.Popen(
        ["node", str(SERVER)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/v8/artifacts/status")
                if connection.getresponse().status == 200:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A listening socket nobody accepts from: connections succeed, requests never get answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def clean_env() -> dict[str, str]:
    drop = ("CACHEHOOK_", "TURBO_", "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def cachehook(root: Path, env: dict[str, str], size: int) -> float:
    argv = [
        str(Path(sys.executable).parent / "cachehook"),
        "exec",
        "-q",
        "-i",
        "build.py",
        "-o",
        "out/**",
        "--",
        sys.executable,
        "build.py",
        str(size),
    ]
    started = time.perf_counter()
    subprocess.run(
        argv, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return (time.perf_counter() - started) * 1000


def median_of(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_hits(work: Path, api: str, size: int, repeat: int) -> dict[str, float]:
    root = work / f"project-{size}"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    (root / "build.py").write_text(BUILD)
    remote = {
        **clean_env(),
        "CACHEHOOK_API": api,
        "CACHEHOOK_TOKEN": TOKEN,
        "CACHEHOOK_TEAM": "bench",
    }
    producer = {**remote, "CACHEHOOK_CACHE_DIR": str(work / f"producer-{size}")}
    cachehook(root, producer, size)  # the miss that uploads
    local = {**clean_env(), "CACHEHOOK_CACHE_DIR": str(work / f"local-{size}")}
    shutil.copytree(work / f"producer-{size}", work / f"local-{size}")

    def remote_hit() -> float:
        shutil.rmtree(work / f"consumer-{size}", ignore_errors=True)
        shutil.rmtree(root / "out")
        return cachehook(
            root, {**remote, "CACHEHOOK_CACHE_DIR": str(work / f"consumer-{size}")}, size
        )

    def local_restore() -> float:
        shutil.rmtree(root / "out")
        return cachehook(root, local, size)

    cachehook(root, local, size)
    time.sleep(1.1)  # outputs past the stat cache's racy window
    return median_of(
        repeat,
        {
            "remote hit": remote_hit,
            "local hit, restoring": local_restore,
            "local hit, outputs on disk": lambda: cachehook(root, local, size),
        },
    )


def hits_in_process(root: Path, env: dict[str, str], count: int) -> tuple[float, float]:
    """``count`` local hits through one Runner: (ms per hit, ms for close())."""
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    settings = load_settings(cwd=root, environ=env)
    spec = TaskSpec(
        command=(sys.executable, "build.py", "1024"),
        inputs=("build.py",),
        outputs=("out/**",),
        cwd=root,
    )
    runner = Runner(settings, on_notice=lambda _: None)
    runner.run(runner.prepare(spec))  # the miss (or a hit from an earlier round)
    started = time.perf_counter()
    for _ in range(count):
        result = runner.run(runner.prepare(spec))
        assert result.status == "HIT", result
    per_hit = (time.perf_counter() - started) * 1000 / count
    started = time.perf_counter()
    runner.close()
    return per_hit, (time.perf_counter() - started) * 1000


def bench_events(work: Path, api: str, repeat: int) -> dict[str, float]:
    root = work / "events-project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\nversion = '0'\n")
    (root / "build.py").write_text(BUILD)
    plain = {**clean_env(), "CACHEHOOK_CACHE_DIR": str(work / "events-cache")}
    with_events = {
        **plain,
        "CACHEHOOK_API": api,
        "CACHEHOOK_TOKEN": TOKEN,
        "CACHEHOOK_TEAM": "bench",
    }
    figures: dict[str, list[float]] = {
        k: [] for k in ("no remote", "events reachable", "close reachable")
    }
    for _ in range(repeat):
        figures["no remote"].append(hits_in_process(root, plain, 200)[0])
        per_hit, close = hits_in_process(root, with_events, 200)
        figures["events reachable"].append(per_hit)
        figures["close reachable"].append(close)
    with black_hole() as hole:
        holed = {
            **plain,
            "CACHEHOOK_API": hole,
            "CACHEHOOK_TOKEN": TOKEN,
            "CACHEHOOK_TEAM": "bench",
        }
        figures["close black hole"] = [hits_in_process(root, holed, 10)[1] for _ in range(3)]
        cachehook(root, holed, 1024)
        figures.update(
            {
                k: [v]
                for k, v in median_of(
                    repeat,
                    {
                        "exec hit, no remote": lambda: cachehook(root, plain, 1024),
                        "exec hit, black-hole events": lambda: cachehook(root, holed, 1024),
                        "exec hit, reachable events": lambda: cachehook(root, with_events, 1024),
                    },
                ).items()
            }
        )
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 7
    with tempfile.TemporaryDirectory(prefix="cachehook-bench-remote-") as tmp:
        work = Path(tmp)
        with npm_server(work) as api:
            hits = {
                size: bench_hits(work, api, size, repeat if size < 10**7 else max(3, repeat // 2))
                for size in (1 << 20, 100 << 20)
            }
            events = bench_events(work, api, max(3, repeat // 2))
    print(
        f"\nRemote vs local hits on loopback (npm turborepo-remote-cache 2.12.0), median ms, {os.cpu_count()} cores\n"
    )
    print(
        "| artifact | remote hit | local hit, restoring | local hit, outputs on disk | remote / local restoring |"
    )
    print("|---|---:|---:|---:|---:|")
    for size, f in hits.items():
        print(
            f"| {size >> 20} MiB | {f['remote hit']:.1f} | {f['local hit, restoring']:.1f} | "
            f"{f['local hit, outputs on disk']:.1f} | {f['remote hit'] / f['local hit, restoring']:.2f}× |"
        )
    added = events["events reachable"] - events["no remote"]
    print("\nEvents\n")
    print("| figure | ms | target |")
    print("|---|---:|---:|")
    print(f"| in-process hit, no remote | {events['no remote']:.2f} | |")
    print(f"| in-process hit, events to the real server | {events['events reachable']:.2f} | |")
    print(f"| time events add per task | {added:.2f} | ≤ 2 |")
    print(
        f"| close() at exit, reachable endpoint (200 events) | {events['close reachable']:.1f} | |"
    )
    print(f"| close() at exit, black-hole endpoint | {events['close black hole']:.1f} | ≤ 1200 |")
    print(f"| `cachehook exec` hit, no remote | {events['exec hit, no remote']:.1f} | |")
    print(
        f"| `cachehook exec` hit, events to the real server | {events['exec hit, reachable events']:.1f} | |"
    )
    print(
        f"| `cachehook exec` hit, black-hole events endpoint | {events['exec hit, black-hole events']:.1f} | |"
    )


if __name__ == "__main__":
    main()
