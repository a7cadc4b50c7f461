"""Requests per second of ``cachehook serve`` next to the npm ``turborepo-remote-cache``.

    python benchmarks/bench_server.py [--concurrency 16] [--requests 400] [--rounds 3]
                                      [--workers 1,2] [--size 1MiB] [--no-gib] [--json]

Both servers run on 127.0.0.1 in this run, each with a fresh storage directory under a
temporary folder: the npm server (``.peers/node_modules``, see .ci/run) with local storage, and
``cachehook serve`` with each ``--workers`` count. For every server and round it times
``--requests`` PUTs of distinct 1 MiB artifacts, then as many GETs of them, ``--concurrency``
keep-alive connections at a time, from client processes of their own; rounds alternate
between the servers so machine noise hits all alike, and the median round is reported.

Then, for the npm server and ``cachehook serve --workers 1``, the latency of a normal request
(a new connection, ``GET /v8/artifacts/status``) is timed ``--probes`` times with no other
connection, and again while ``--idle`` connections (500) sit open with a half-sent request
head, the slow-client attack of issue 12; p50 and p99 of each. So that the idle connections stay
open for the whole measurement, cachehook runs here with ``--header-timeout 120`` and a
per-client cap above ``--idle`` (by default it would close them after 5 s and refuse past 200).

Then it uploads one 1 GiB artifact to each server (a single worker) and reports how far the
server's peak resident memory (VmHWM, from /proc) rose above its size before the upload.

Not a test: the machines are shared and noisy, and the client shares the CPU with the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
NPM_CLI = REPO / ".peers" / "node_modules" / "turborepo-remote-cache" / "dist" / "cli.js"
SLASH = chr(47)
API = f"{SLASH}v8{SLASH}artifacts"
TOKEN = f"bench-{uuid.uuid4().hex}"
TEAM = "bench"
GIB = 1 << 30
MIB = 1 << 20

Results = dict[str, dict[str, list[dict[str, float]]]]  # server -> method -> one run per round


# -- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(server: Server, path: str) -> Server:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.workdir / "server.log").read_text()
            sys.exit(f"{server.name} exited with {server.process.returncode}:\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port)):
            status, _ = Client(server.port).request(
                "GET", path, {"Authorization": f"Bearer {TOKEN}"}
            )
            if status == 200:
                return server
        time.sleep(0.05)
    server.stop()
    sys.exit(f"{server.name} did not start within 30 s")


def start_npm(
    workdir: Path,
    *,
    body_limit: int,
    storage: dict[str, str] | None = None,
    name: str = "turborepo-remote-cache",
) -> Server:
    """The npm server, with its local storage under ``workdir`` unless ``storage`` says else."""
    node = shutil.which("node")
    if node is None or not NPM_CLI.is_file():
        sys.exit(f"node and {NPM_CLI} are needed (.ci/run installs them)")
    port = free_port()
    workdir.mkdir(parents=True)
    if storage is None:
        (workdir / "storage").mkdir()
        storage = {
            "STORAGE_PROVIDER": "local",
            "STORAGE_PATH": str(workdir / "storage"),
            "STORAGE_PATH_USE_TMP_FOLDER": "false",
        }
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "NODE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AUTH_MODE": "static",
        "TURBO_TOKEN": TOKEN,
        **storage,
        "LOG_LEVEL": "warn",
        "BODY_LIMIT": str(body_limit),
    }
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [node, str(NPM_CLI)], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return wait_ready(Server(name, port, process, workdir), f"{API}{SLASH}status")


def write_tokens(workdir: Path) -> Path:
    """A tokens file for ``cachehook serve`` that takes TOKEN for reads and writes."""
    tokens = workdir / "tokens.toml"
    tokens.write_text(
        f'[[token]]\nname = "bench"\ntoken = "{TOKEN}"\nscopes = ["read", "write"]\nteams = ["*"]\n'
    )
    return tokens


def start_cachehook(workdir: Path, *, workers: int) -> Server:
    workdir.mkdir(parents=True)
    tokens = write_tokens(workdir)
    port = free_port()
    command = [sys.executable, "-m", "cachehook", "serve", "--port", str(port)]
    command += ["--storage", str(workdir / "storage"), "--tokens", str(tokens)]
    command += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    command += ["--max-body", "2GiB", "--max-size", "100GiB"]
    # the idle-connections phase keeps its connections open (see the module docstring)
    command += ["--header-timeout", "120", "--max-connections-per-client", "5000"]
    command += ["--max-connections", "5000"]
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    name = f"cachehook serve --workers {workers}"
    return wait_ready(Server(name, port, process, workdir), f"{SLASH}healthz")


# -- a small keep-alive HTTP/1.1 client (the load must not be the bottleneck) ----------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(MIB + 65536)
        self.pending = b""

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: Sequence[bytes | memoryview] = (),
    ) -> tuple[int, int]:
        """Send one request; returns (status, body length). The body is read and dropped."""
        length = sum(len(part) for part in body)
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if method in ("PUT", "POST"):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sock.sendall(head)
        for part in body:
            self.sock.sendall(part)
        return self._response(method)

    def _fill(self, data: bytes, need: int) -> bytes:
        while len(data) < need:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _line(self, data: bytes) -> tuple[bytes, bytes]:
        while b"\r\n" not in data:
            data = self._fill(data, len(data) + 1)
        line, _, rest = data.partition(b"\r\n")
        return line, rest

    def _skip(self, data: bytes, count: int) -> bytes:
        """Drop ``count`` body bytes, ``data`` first; returns what is left over of ``data``."""
        if len(data) >= count:
            return data[count:]
        left = count - len(data)
        view = memoryview(self.buffer)
        while left > 0:
            got = self.sock.recv_into(view[: min(left, len(self.buffer))])
            if not got:
                raise ConnectionError("closed mid-body")
            left -= got
        return b""

    def _response(self, method: str) -> tuple[int, int]:
        data = self.pending
        while b"\r\n\r\n" not in data:
            data = self._fill(data, len(data) + 1)
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length, is_chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                is_chunked = True
        if method == "HEAD":
            self.pending = rest
            return status, 0
        if not is_chunked:
            self.pending = self._skip(rest, length)
            return status, length
        total = 0  # fastify streams a GET's file chunked
        while True:
            size_line, rest = self._line(rest)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                _, rest = self._line(rest)  # the empty line after the last chunk
                self.pending = rest
                return status, total
            total += size
            rest = self._skip(rest, size)
            _, rest = self._line(rest)

    def close(self) -> None:
        self.sock.close()


def _client_worker(args: tuple[str, int, str, list[str], int, int]) -> tuple[list[float], int]:
    """One client process: ``threads`` connections sharing ``hashes``; latencies and errors."""
    import threading

    token, port, method, hashes, size, threads = args  # TOKEN differs in this process
    payload = os.urandom(size)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    queue = list(hashes)

    def run() -> None:
        nonlocal errors
        client = Client(port)
        headers = {"Authorization": f"Bearer {token}"}
        if method == "PUT":
            headers |= {"Content-Type": "application/octet-stream", "x-artifact-duration": "1000"}
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    hash_ = queue.pop()
                # distinct bytes per artifact without copying 1 MiB: 16 own bytes + the rest
                body: tuple[bytes | memoryview, ...] = ()
                if method == "PUT":
                    body = (bytes.fromhex(hash_[:32]), memoryview(payload)[16:])
                started = time.perf_counter()
                status, length = client.request(
                    method, f"{API}{SLASH}{hash_}?slug={TEAM}", headers, body
                )
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    # a PUT answers 200 or 202 (cachehook serve: 202, issue 12)
                    if status not in (200, 202) or (method == "GET" and length != size):
                        errors += 1
        finally:
            client.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, errors


def load(
    pool: Any,
    port: int,
    method: str,
    hashes: list[str],
    size: int,
    concurrency: int,
    processes: int,
) -> dict[str, float]:
    per_process = [hashes[index::processes] for index in range(processes)]
    threads = max(1, concurrency // processes)
    started = time.perf_counter()
    results = pool.map(
        _client_worker, [(TOKEN, port, method, part, size, threads) for part in per_process]
    )
    wall = time.perf_counter() - started
    latencies = sorted(latency for part, _ in results for latency in part)
    errors = sum(errors for _, errors in results)
    return {
        "rps": len(hashes) / wall,
        "mib_per_s": len(hashes) * size / MIB / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
    }


# -- a normal request while idle connections are open (issue 12) -------------------------


def _probe(port: int, count: int) -> tuple[list[float], int]:
    """``count`` status requests, each on a new connection; sorted latencies and failures."""
    latencies: list[float] = []
    failures = 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            client = Client(port)
            try:
                status, _ = client.request(
                    "GET", f"{API}{SLASH}status?slug={TEAM}", {"Authorization": f"Bearer {TOKEN}"}
                )
            finally:
                client.close()
        except OSError:
            status = 0
        latencies.append(time.perf_counter() - started)
        failures += status != 200
    return sorted(latencies), failures


def _percentiles(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 2),
    }


def idle_latency(server: Server, *, idle: int, probes: int) -> dict[str, Any]:
    """p50/p99 of a normal request alone, then with ``idle`` half-sent heads held open."""
    alone, alone_failures = _probe(server.port, probes)
    held: list[socket.socket] = []
    try:
        for _ in range(idle):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            held.append(sock)
            sock.sendall(f"GET {API}{SLASH}status HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        time.sleep(0.5)
        loaded, loaded_failures = _probe(server.port, probes)
        open_after = sum(1 for sock in held if _is_open(sock))
    finally:
        for sock in held:
            sock.close()
    return {
        "alone": {**_percentiles(alone), "failures": alone_failures},
        "idle": {**_percentiles(loaded), "failures": loaded_failures},
        "idle_connections": idle,
        "idle_still_open": open_after,
    }


def _is_open(sock: socket.socket) -> bool:
    sock.settimeout(0)  # a peek that never waits
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def raise_fd_limit(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- memory during a 1 GiB upload --------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(SLASH, "proc", str(pid), "status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def upload_gib(server: Server) -> dict[str, Any]:
    before = memory_kib(server.process.pid)
    client = Client(server.port)
    chunk = os.urandom(MIB)
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/octet-stream",
        "x-artifact-duration": "1",
    }
    started = time.perf_counter()
    try:
        head = f"PUT {API}{SLASH}{'ab' * 16}?slug={TEAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += f"Content-Length: {GIB}\r\n\r\n"
        client.sock.sendall(head.encode())
        for _ in range(GIB // MIB):
            client.sock.sendall(chunk)
        status, _ = client._response("PUT")
    finally:
        client.close()
    seconds = time.perf_counter() - started
    after = memory_kib(server.process.pid)
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "peak_mib": round(after["VmHWM"] / 1024, 1),
        "peak_rise_mib": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
    }


# -- main ----------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"kib": 1024, "mib": MIB, "gib": GIB, "b": 1}
    lowered = text.lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(lowered)


def hashes_for(count: int) -> list[str]:
    return [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(count)]


@contextlib.contextmanager
def servers(root: Path, workers: list[int]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        started.append(start_npm(root / "npm", body_limit=2 * GIB))
        for count in workers:
            started.append(start_cachehook(root / f"cachehook-{count}", workers=count))
        yield started
    finally:
        for server in started:
            server.stop()


def measure(pool: Any, running: Sequence[Server], options: Any, size: int) -> Results:
    """PUTs then GETs of ``options.requests`` artifacts per server and round, after a warm-up.

    Rounds alternate between the servers so that machine noise hits all alike.
    """
    concurrency, processes = options.concurrency, options.processes
    for server in running:  # warm up: connections, first writes, imports
        warm = hashes_for(2 * concurrency)
        load(pool, server.port, "PUT", warm, size, concurrency, processes)
        load(pool, server.port, "GET", warm, size, concurrency, processes)
    results: Results = {}
    for _ in range(options.rounds):
        for server in running:
            hashes = hashes_for(options.requests)
            runs = results.setdefault(server.name, {"PUT": [], "GET": []})
            for method in ("PUT", "GET"):
                runs[method].append(
                    load(pool, server.port, method, hashes, size, concurrency, processes)
                )
                random.shuffle(hashes)  # GET them in another order than they were PUT
    return results


def print_throughput(results: Results) -> None:
    print("| server | PUT req/s | PUT p50 / p99 ms | GET req/s | GET p50 / p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        put, get = median_run(runs["PUT"]), median_run(runs["GET"])
        errors = sum(run["errors"] for run in runs["PUT"] + runs["GET"])
        print(
            f"| {name} | {put['rps']:.0f} | {put['p50_ms']:.1f} / {put['p99_ms']:.1f} "
            f"| {get['rps']:.0f} | {get['p50_ms']:.1f} / {get['p99_ms']:.1f} | {errors:.0f} |"
        )


def print_memory(memory: dict[str, dict[str, Any]], heading: str) -> None:
    print(f"\n{heading}\n")
    print("| server | status | seconds | RSS before MiB | peak MiB | peak rise MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, figures in memory.items():
        print(
            f"| {name} | {figures['status']} | {figures['seconds']} | "
            f"{figures['rss_before_mib']} | {figures['peak_mib']} | {figures['peak_rise_mib']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--size", default="1MiB")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--no-gib", action="store_true", help="skip the 1 GiB upload")
    parser.add_argument("--idle", type=int, default=500, help="idle connections held open")
    parser.add_argument("--probes", type=int, default=400, help="requests timed per phase")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args()
    size = parse_size(options.size)
    workers = [int(count) for count in options.workers.split(",")]
    memory: dict[str, dict[str, Any]] = {}
    idle: dict[str, dict[str, Any]] = {}
    raise_fd_limit(options.idle + 256)
    with (
        tempfile.TemporaryDirectory(prefix="bench-server-") as temp,
        servers(Path(temp), workers) as running,
        multiprocessing.get_context("spawn").Pool(options.processes) as pool,
    ):
        results = measure(pool, running, options, size)
        for server in running:
            if server.name.endswith("--workers 1") or server.name == "turborepo-remote-cache":
                idle[server.name] = idle_latency(server, idle=options.idle, probes=options.probes)
        if not options.no_gib:
            for server in running:
                if server.name.endswith("--workers 1") or server.name == "turborepo-remote-cache":
                    memory[server.name] = upload_gib(server)
    report(results, memory, idle, options, size)
    return 0


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(runs, key=lambda run: run["rps"])
    return ordered[len(ordered) // 2]


def report(
    results: Results,
    memory: dict[str, dict[str, Any]],
    idle: dict[str, dict[str, Any]],
    options: argparse.Namespace,
    size: int,
) -> None:
    if options.json:
        print(json.dumps({"results": results, "memory": memory, "idle": idle}, indent=2))
        return
    print(
        f"\n{options.requests} requests of {size // 1024} KiB per round, {options.concurrency} "
        f"connections, median of {options.rounds} rounds, CPUs: {os.cpu_count()}\n"
    )
    print_throughput(results)
    if idle:
        print(
            f"\nA normal request (new connection, GET status), {options.probes} per phase: "
            f"alone, then with {options.idle} idle half-sent heads open\n"
        )
        print("| server | alone p50 / p99 ms | idle p50 / p99 ms | failures | idle still open |")
        print("|---|---:|---:|---:|---:|")
        for name, figures in idle.items():
            alone, held = figures["alone"], figures["idle"]
            print(
                f"| {name} | {alone['p50_ms']} / {alone['p99_ms']} | {held['p50_ms']} / "
                f"{held['p99_ms']} | {alone['failures'] + held['failures']} | "
                f"{figures['idle_still_open']} |"
            )
    if memory:
        heading = "1 GiB upload (one process): peak resident memory (VmHWM) above the size before"
        print_memory(memory, heading)


if __name__ == "__main__":
    raise SystemExit(main())
