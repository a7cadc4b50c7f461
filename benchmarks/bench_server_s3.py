"""``cachehook serve`` on S3 next to the npm ``turborepo-remote-cache`` on the same S3 server.

    python benchmarks/bench_server_s3.py [--concurrency 16] [--requests 200] [--rounds 3]
                                         [--size 1MiB] [--no-gib] [--json]

One S3 API server runs on 127.0.0.1 for the whole run: moto in server mode (``moto[server]``,
in the test extra), in memory, each server with a bucket of its own. The npm server
(``.peers/node_modules``, see .ci/run) runs with ``STORAGE_PROVIDER=s3`` and ``S3_ENDPOINT``;
``cachehook serve`` with ``--storage s3://BUCKET`` and the ``AWS_*`` variables (its events in
a SQLite file: this measures artifacts). For every server and round it times ``--requests``
PUTs of distinct 1 MiB artifacts, then as many GETs, ``--concurrency`` keep-alive
connections at a time from client processes of their own; rounds alternate between the
servers and the median round is reported. Then one 1 GiB upload to each, reporting the rise
of the server's peak resident memory (VmHWM) above its size before.

Read the table as ratios: both servers wait on the same S3 server, which shares the machine's
CPUs with them and with the clients. Not a test: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the client, the load, its tables and the memory probe are bench_server's
from bench_server import (
    GIB,
    SLASH,
    Server,
    free_port,
    measure,
    parse_size,
    print_memory,
    print_throughput,
    start_npm,
    upload_gib,
    wait_ready,
    write_tokens,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

ACCESS_KEY, SECRET_KEY, REGION = "bench-access-key", "bench-secret-key", "us-east-1"


def start_moto(workdir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    workdir.mkdir(parents=True)
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Server("moto (S3 API)", port, process, workdir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"moto exited with {process.returncode}: pip install 'moto[server]'")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", f"{SLASH}moto-api{SLASH}")
            connection.getresponse().read()
            connection.close()
            return server
        time.sleep(0.1)
    server.stop()
    sys.exit("moto did not start within 60 s")


def create_bucket(moto: Server, name: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", moto.port, timeout=30)
    connection.request("PUT", f"{SLASH}{name}")  # moto takes an unsigned CreateBucket
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        sys.exit(f"cannot create the bucket {name}: {response.status}")


def start_cachehook_s3(workdir: Path, endpoint: str, bucket: str, events_db: str | None) -> Server:
    workdir.mkdir(parents=True)
    tokens = write_tokens(workdir)
    port = free_port()
    command = [sys.executable, "-m", "cachehook", "serve", "--port", str(port)]
    command += ["--storage", f"s3://{bucket}", "--tokens", str(tokens)]
    command += ["--events-db", events_db or str(workdir / "events.sqlite3")]
    command += ["--no-access-log", "--log-level", "warning", "--max-body", "2GiB"]
    command += ["--max-size", "100GiB"]
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("AWS_")},
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
    }
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    return wait_ready(Server("cachehook serve (s3)", port, process, workdir), f"{SLASH}healthz")


@contextlib.contextmanager
def servers(root: Path, events_db: str | None) -> Iterator[tuple[Server, list[Server]]]:
    started: list[Server] = []
    try:
        moto = start_moto(root / "moto")
        started.append(moto)
        endpoint = f"http://127.0.0.1:{moto.port}"
        npm_bucket, ours = f"npm-{uuid.uuid4().hex[:8]}", f"chk-{uuid.uuid4().hex[:8]}"
        create_bucket(moto, npm_bucket)
        create_bucket(moto, ours)
        storage = {
            "STORAGE_PROVIDER": "s3",
            "STORAGE_PATH": npm_bucket,
            "S3_ENDPOINT": endpoint,
            "S3_ACCESS_KEY": ACCESS_KEY,
            "S3_SECRET_KEY": SECRET_KEY,
            "S3_REGION": REGION,
        }
        name = "turborepo-remote-cache (s3)"
        npm = start_npm(root / "npm", body_limit=2 * GIB, storage=storage, name=name)
        started.append(npm)
        cachehook = start_cachehook_s3(root / "cachehook", endpoint, ours, events_db)
        started.append(cachehook)
        yield moto, [npm, cachehook]
    finally:
        for server in reversed(started):
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="1MiB")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--events-db", default=None, help="for cachehook (default: SQLite)")
    parser.add_argument("--no-gib", action="store_true", help="skip the 1 GiB upload")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args()
    size = parse_size(options.size)
    memory: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-server-s3-") as temp,
        servers(Path(temp), options.events_db) as (_, running),
        multiprocessing.get_context("spawn").Pool(options.processes) as pool,
    ):
        results = measure(pool, running, options, size)
        if not options.no_gib:
            for server in running:
                memory[server.name] = upload_gib(server)
                if memory[server.name]["status"] not in (200, 202):
                    log = (server.workdir / "server.log").read_text(errors="replace")
                    print(f"{server.name} failed the 1 GiB upload:\n{log[-4000:]}", file=sys.stderr)
    if options.json:
        print(json.dumps({"results": results, "memory": memory}, indent=2))
        return 0
    print(
        f"\nS3 API server: moto (in memory, same machine). {options.requests} requests of "
        f"{size // 1024} KiB per round, {options.concurrency} connections, median of "
        f"{options.rounds} rounds, CPUs: {os.cpu_count()}\n"
    )
    print_throughput(results)
    if memory:
        heading = "1 GiB upload: the server's peak resident memory (VmHWM) above its size before"
        print_memory(memory, heading)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
