"""A detached child: its own session, the given stdin, /dev/null for output, nothing else of ours.

The child reports what it has to a file once its stdin ends (the test holds the pipe's write
end, so that EOF also proves the child has no copy of it). Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from cachehook import _detached
from tests.waiting import GENEROUS

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# What the child has: its session and group, its descriptors (the listing's own is closed by
# the time it is read), its working directory, and what came down its stdin.
CHILD = """\
import json, os, sys
data = sys.stdin.buffer.read()
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass
pid = os.getpid()
report = {"pid": pid, "sid": os.getsid(0), "pgid": os.getpgid(0), "fds": fds,
          "stdin": data.decode(), "cwd": os.getcwd()}
with open(sys.argv[1] + ".tmp", "w") as out:
    json.dump(report, out)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


def _report(path: Path, pid: int) -> dict[str, object]:
    """The child's report, once it has written it; the child reaped if it is ours."""
    deadline = time.monotonic() + GENEROUS
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), "the child never saw its stdin end: it holds the write end, or hangs"
    report: dict[str, object] = json.loads(path.read_text())
    assert report["pid"] == pid
    return report


def _assert_alone(report: dict[str, object]) -> None:
    pid = report["pid"]
    assert report["sid"] == pid, "not a session of its own"
    assert report["pgid"] == pid
    fds = report["fds"]
    assert isinstance(fds, dict)
    assert sorted(fds) == ["0", "1", "2"], f"descriptors of ours leaked: {fds}"
    assert str(fds["0"]).startswith("pipe:")
    assert fds["1"] == fds["2"] == os.devnull


@pytest.mark.parametrize("how", ["posix_spawn", "subprocess"])
def test_the_child_is_detached_and_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    spawned: list[str] = []
    real = os.posix_spawn

    def posix_spawn(*args: object, **kwargs: object) -> int:
        spawned.append(str(args[0]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "posix_spawn", posix_spawn)
    if how == "subprocess":  # what happens where the descriptors cannot be listed
        monkeypatch.setattr(_detached, "_FD_DIRECTORIES", {})
    report = tmp_path / "report.json"
    leak_read, leak_write = os.pipe()
    os.set_inheritable(leak_write, True)  # one we inherited ourselves, say a harness's pipe
    read, write = os.pipe()
    try:
        pid = _detached.spawn_detached([sys.executable, "-c", CHILD, str(report)], stdin=read)
    finally:
        os.close(read)
        os.close(leak_write)
    try:
        time.sleep(0.2)
        assert not report.exists(), "the child did not wait for its stdin"
        os.write(write, b"handed over")
    finally:
        os.close(write)
        os.close(leak_read)
    try:
        found = _report(report, pid)
    finally:
        os.waitpid(pid, 0)  # our child until it was reaped: no zombie left behind
    assert spawned == ([sys.executable] if how == "posix_spawn" else [])
    _assert_alone(found)
    assert found["stdin"] == "handed over"
    assert found["cwd"] == os.getcwd()


# A run with no stdin at all: the pipe's read end is then descriptor 0 itself.
_NO_STDIN = """\
import os, sys
from cachehook._detached import spawn_detached
read, write = os.pipe()
assert read == 0, read
pid = spawn_detached([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdin=read)
os.close(read)
os.write(write, b"from a run without stdin")
print(pid, flush=True)
"""


def test_a_run_without_stdin_hands_its_pipe_over(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    without_stdin = 'exec "$0" -c "$1" "$2" "$3" <&-'
    done = subprocess.run(
        ["/bin/sh", "-c", without_stdin, sys.executable, _NO_STDIN, CHILD, str(report)],
        capture_output=True,
        text=True,
        check=False,
        timeout=GENEROUS,
    )
    assert done.returncode == 0, done.stderr
    found = _report(report, int(done.stdout))  # the run has exited: its write end is closed
    _assert_alone(found)
    assert found["stdin"] == "from a run without stdin"
