"""A local hit imports only what a hit needs (issue 11): the modules it loads are listed here.

A remote hit (a local miss, the download, the restore, the hit kept locally, its events
spooled for a detached flusher) is held to a shorter rule: it never imports httpx or
what httpx brings (``REMOTE_NEVER``).

A real ``cachehook exec`` hit runs in a child interpreter, which reports the top-level modules
loaded after its own start-up. It is the full path of a hit (``CACHEHOOK_MEMO=0``: the memo,
which imports less, does not replay it). Anything outside the allow-list fails the test, so an
eager import of a heavy module on the hit path (httpx, click, zstandard, tarfile, tomllib,
subprocess, dataclasses, ...) is caught when it is added, not when someone next profiles a hit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, NamedTuple

import pytest

from cachehook.ci import is_ci

if TYPE_CHECKING:
    from pathlib import Path

    from tests.servers import CaptureProxy

PROBE = """
import sys
def tops(names):
    return {name.partition(".")[0] for name in names}
start = tops(sys.modules)
from cachehook.cli import main
code = main(sys.argv[1:])
print(code, " ".join(sorted(tops(sys.modules) - start)))
print(" ".join(sorted(name for name in sys.modules if name.startswith("cachehook."))))
"""

# Private names (C accelerators such as _sqlite3, _json) go with the public module that loads
# them and are not listed.
ALLOWED = frozenset(
    {
        # cachehook and the one runtime dependency a hit uses: a hit reads its hit record
        # (``_hits``), not the store's SQLite database, so diskcache and what it imports
        # (sqlite3, pickle, tempfile, random, datetime) are not loaded (issue 11)
        "cachehook",
        "xxhash",
        # re
        "copyreg",
        # pathlib (fnmatch, re, urllib.parse, which imports ipaddress; on 3.13 glob, grp, pwd)
        "fnmatch",
        "glob",
        "grp",
        "ipaddress",
        "ntpath",
        "pathlib",
        "pwd",
        "re",
        "urllib",
        # re (RegexFlag), typing and collections
        "enum",
        "keyword",
        "types",
        # small modules the walk, the stat cache, the key and the history use
        "__future__",
        "bisect",
        "collections",
        "contextlib",
        "errno",
        "functools",
        "gc",
        "heapq",
        "importlib",
        "itertools",
        "json",
        "operator",
        "reprlib",
        "struct",
        "typing",
        "warnings",
    }
)

# Named so that the failure says which rule broke; all are also outside ALLOWED.
NEVER = (
    # dataclasses imports inspect (ast, dis, tokenize, ...): ~23 ms, and each dataclass costs
    # ~1.5 ms to build at import; the hit path uses NamedTuples (issue 11)
    "dataclasses",
    "inspect",
    "threading",
    "click",
    "httpx",
    "zstandard",
    "tarfile",
    "tomllib",
    "difflib",
    "subprocess",
    # with bz2, lzma and zlib (~3 ms): cli._exec.check_command needs shutil.which only for a
    # bare command name that is also a file in the working directory, not for a path
    "shutil",
    "logging",
    "diskcache",
    "sqlite3",
)


class Probe(NamedTuple):
    loaded: set[str]  # public top-level modules the run loaded
    ours: set[str]  # every cachehook module loaded
    stderr: str


def _hit_modules(project: Path, env: dict[str, str], args: list[str]) -> Probe:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    first, ours = done.stdout.strip().splitlines()
    code, _, names = first.partition(" ")
    assert code == "0", done.stderr
    public = {name for name in names.split() if not name.startswith("_") or name == "__future__"}
    return Probe(public, set(ours.split()), done.stderr)


def _git(project: Path, *args: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *identity, *args], cwd=project, check=True, capture_output=True)


@pytest.mark.parametrize("in_git", [False, True], ids=["plain", "git"])
def test_a_local_hit_loads_only_the_allowed_modules(tmp_path: Path, *, in_git: bool) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\nversion = '0'\n")
    for index in range(5):
        (project / "src" / f"m{index}.py").write_text(f"x = {index}\n")
    if in_git:  # a tracked file that .gitignore matches: the walk reads git's index (gitindex)
        (project / ".gitignore").write_text("*.log\nout/\n")
        (project / "src" / "kept.log").write_text("tracked all the same\n")
        _git(project, "init", "-q")
        _git(project, "add", "-f", ".")
        _git(project, "commit", "-q", "-m", "init")
    past = 1_000_000_000  # outside the stat cache's racy-clean window, with no sleep
    for path in (project / "src").iterdir():
        os.utime(path, (past, past))
    # CACHEHOOK_MEMO=0: every hit takes the full path, which is what this test lists.
    env = {**os.environ, "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache"), "CACHEHOOK_MEMO": "0"}
    write = "import pathlib; pathlib.Path('out').mkdir(); pathlib.Path('out/o.txt').write_text('o')"
    args = ["exec", "-i", "src/**", "-o", "out/**", "--", sys.executable, "-c", write]

    _hit_modules(project, env, args)  # the miss runs the command and stores its output
    output = project / "out" / "o.txt"
    os.utime(output, (past, past))
    inode = output.stat().st_ino
    for _ in range(2):  # the first hit, then one that a memo would have replayed
        loaded, _, stderr = _hit_modules(project, env, args)

        assert "local hit" in stderr
        assert output.stat().st_ino == inode  # nothing was restored: the output was there
        assert not loaded & set(NEVER), f"a hit imports {sorted(loaded & set(NEVER))}: {stderr}"
        assert not loaded - ALLOWED, f"a hit now imports {sorted(loaded - ALLOWED)}: {stderr}"
    assert not (tmp_path / "cache" / "memo").exists() or not any(
        (tmp_path / "cache" / "memo").iterdir()
    ), "CACHEHOOK_MEMO=0 writes no memo: the hits above took the full path"


# The remote hit's own rule: none of httpx's stack (nor ``cachehook.remote``, the httpx client),
# nor what this repository keeps off that path. ``threading`` is not listed: the detached
# events flusher's start (subprocess) imports it.
REMOTE_NEVER = (
    "dataclasses",  # with inspect, ~7 ms; cachehook.store keeps its one record class plain
    "inspect",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "idna",
    "certifi",
    "click",
    "logging",  # imported by events only where it logs
    "uuid",  # ~1 ms, with platform (which zstandard imports anyway): events uses os.urandom
    # http.client (~15 ms with email): _direct reads HTTP itself (_http11). Names here are
    # top-level packages, as the probe reports them: "http" is what http.client would load.
    "http",
    "email",
    "ssl",  # the servers here are http://: no TLS, no ssl
    # the hit is kept as a pending entry with plain file operations (_pending), not by the
    # store: no diskcache, no SQLite database created or written (~45 ms, issue 11)
    "diskcache",
    "sqlite3",
)


def _remote_env(tmp_path: Path, remote_env: dict[str, str]) -> dict[str, str]:
    # Outside CI (where a run sends its events itself): a detached flusher.
    env = {k: v for k, v in os.environ.items() if not is_ci({k: v})}
    cache = str(tmp_path / "cache")
    return env | {**remote_env, "CACHEHOOK_CACHE_DIR": cache, "CACHEHOOK_MEMO": "0"}


@pytest.mark.integration
def test_a_remote_hit_imports_no_httpx(
    tmp_path: Path, project: Path, remote_env: dict[str, str], capture_proxy: CaptureProxy
) -> None:
    cache = tmp_path / "cache"
    env = _remote_env(tmp_path, remote_env)
    write = (
        "import os, pathlib; pathlib.Path('out').mkdir(); "
        "pathlib.Path('out/o.bin').write_bytes(os.urandom(1 << 20))"
    )
    args = ["exec", "-i", "src/**", "-o", "out/**", "--", sys.executable, "-c", write]
    _hit_modules(project, env, args)  # the miss runs the command and uploads its output
    produced = (project / "out" / "o.bin").read_bytes()
    shutil.rmtree(project / "out")
    shutil.rmtree(cache / "store")  # only the remote has it now

    loaded, ours, stderr = _hit_modules(project, env, args)
    assert "remote hit" in stderr
    assert (project / "out" / "o.bin").read_bytes() == produced
    assert not loaded & set(REMOTE_NEVER), (
        f"a remote hit imports {sorted(loaded & set(REMOTE_NEVER))}"
    )
    assert "cachehook.remote" not in ours
    assert "cachehook._direct" in ours, "the hit was downloaded by _direct"
    (get,) = [r for r in capture_proxy.find("GET") if r.status == 200]
    assert len(get.response_body) > len(produced) // 2  # the artifact, not an error page
    # Both runs handed their events to a detached flusher; wait until it is done sending.
    capture_proxy.wait_for("POST", "/v8/artifacts/events", count=2, timeout=60)


@pytest.mark.integration
def test_a_local_hit_of_what_a_remote_hit_kept_opens_no_database(
    tmp_path: Path, project: Path, remote_env: dict[str, str], capture_proxy: CaptureProxy
) -> None:
    store = tmp_path / "cache" / "store"
    env = _remote_env(tmp_path, remote_env)
    write = (
        "import os, pathlib; pathlib.Path('out').mkdir(); "
        "pathlib.Path('out/o.bin').write_bytes(os.urandom(1 << 16))"
    )
    args = ["exec", "-i", "src/**", "-o", "out/**", "--", sys.executable, "-c", write]
    _hit_modules(project, env, args)  # the miss runs the command and uploads its output
    produced = (project / "out" / "o.bin").read_bytes()
    shutil.rmtree(project / "out")
    shutil.rmtree(store)
    assert "remote hit" in _hit_modules(project, env, args).stderr
    shutil.rmtree(project / "out")

    loaded, _, stderr = _hit_modules(project, env, args)
    assert "local hit" in stderr, stderr
    assert (project / "out" / "o.bin").read_bytes() == produced
    assert not loaded & set(REMOTE_NEVER), (
        f"a local hit of a kept remote hit imports {sorted(loaded & set(REMOTE_NEVER))}"
    )
    assert not (store / "cache.db").exists(), "neither hit made the store's database"
    # All three runs handed their events to a detached flusher; wait until it is done.
    capture_proxy.wait_for("POST", "/v8/artifacts/events", count=3, timeout=60)


# A run in CI sends its own events (no detached flusher): through ``_direct`` too, under the
# remote hit's rule.


@pytest.mark.integration
def test_a_local_hit_in_ci_sends_its_events_without_httpx(
    tmp_path: Path, project: Path, remote_env: dict[str, str], capture_proxy: CaptureProxy
) -> None:
    env = {k: v for k, v in os.environ.items() if not is_ci({k: v})}
    env |= {
        **remote_env,
        "CI": "true",
        "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache"),
        "CACHEHOOK_MEMO": "0",
        # a busy machine must not make the run give up sending and spool its events instead
        "CACHEHOOK_EVENTS_FLUSH_TIMEOUT": "60",
    }
    write = "import pathlib; pathlib.Path('out').mkdir(); pathlib.Path('out/o.txt').write_text('o')"
    args = ["exec", "-i", "src/**", "-o", "out/**", "--", sys.executable, "-c", write]
    _hit_modules(project, env, args)  # the miss runs the command, uploads, sends its events
    # What the miss sent (in one batch or more, as its sender's thread found them queued).
    before = len(capture_proxy.wait_for("POST", "/v8/artifacts/events", count=1, timeout=60))

    loaded, ours, stderr = _hit_modules(project, env, args)
    assert "local hit" in stderr
    assert not loaded & set(REMOTE_NEVER), (
        f"a local hit in CI imports {sorted(loaded & set(REMOTE_NEVER))}"
    )
    assert "cachehook.remote" not in ours
    assert "cachehook._direct" in ours, "the events went through _direct"
    # The run sent its events itself, before it exited: they are there already.
    posts = capture_proxy.find("POST", "/v8/artifacts/events")[before:]
    assert posts, "the hit sent no events"
    assert all(post.status == 200 for post in posts), [p.response_body for p in posts]
    sent = [(event["source"], event["event"]) for post in posts for event in post.json()]
    assert sent == [("LOCAL", "HIT")], sent
