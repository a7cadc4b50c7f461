"""Events: the record, the background sender, the spool; none lost, none sent twice."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import xxhash

from cachehook import events as events_module
from cachehook.config import RemoteSettings
from cachehook.events import (
    BATCH_SIZE,
    IDLE_SECONDS,
    Event,
    EventSender,
    default_spool_dir,
    flush_spool,
    session_id,
)
from tests.waiting import GENEROUS, finishes, reap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.servers import CaptureProxy

SESSION = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"
TOKEN = "tok-EVENTS-c4b1"


def event(n: int = 0, *, source: str = "LOCAL", outcome: str = "MISS", duration: int = 0) -> Event:
    return Event(SESSION, source, outcome, f"{n:032x}", duration)  # type: ignore[arg-type]


class Endpoint:
    """A thread-safe MockTransport for the events route; ``status`` may change mid-test."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.gate: threading.Event | None = None  # when set, requests wait for it
        self._lock = threading.Lock()
        self.requests: list[httpx.Request] = []
        self.batches: list[list[dict[str, object]]] = []
        self.times: list[float] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.gate is not None:
            self.gate.wait(10)
        body = json.loads(request.read())
        with self._lock:
            self.requests.append(request)
            self.times.append(time.monotonic())
            if 200 <= self.status < 300:
                self.batches.append(body)
        return httpx.Response(self.status, json={})

    @property
    def hashes(self) -> list[str]:
        with self._lock:
            return [str(item["hash"]) for batch in self.batches for item in batch]

    def wait(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.hashes) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def remote(api: str = "https://cache.example.com", **overrides: object) -> RemoteSettings:
    values: dict[str, object] = {"api": api, "token": TOKEN, "slug": "team-slug"}
    values.update(overrides)
    return RemoteSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return default_spool_dir(tmp_path / "cache")


@pytest.fixture
def senders() -> Iterator[Callable[..., EventSender]]:
    opened: list[EventSender] = []

    def start(
        settings: RemoteSettings, spool_dir: Path, endpoint: Endpoint, **kwargs: bool
    ) -> EventSender:
        sender = EventSender(settings, spool_dir=spool_dir, transport=endpoint.transport, **kwargs)
        opened.append(sender)
        return sender

    yield start
    for sender in opened:
        sender.close()


def spooled(spool_dir: Path) -> list[str]:
    """Hashes of the events waiting in the spool, in file order."""
    hashes = []
    for path in sorted(spool_dir.rglob("*.json*")):
        hashes += [item["hash"] for item in json.loads(path.read_text())["events"]]
    return hashes


# -- the record ----------------------------------------------------------------------------


def test_event_json_is_the_seed_schema() -> None:
    data = Event(SESSION, "REMOTE", "HIT", "12HKQaOmR5t5Uy6vdcQsNIiZgHGB", 400).to_json()
    assert data == {
        "sessionId": SESSION,
        "source": "REMOTE",
        "event": "HIT",
        "hash": "12HKQaOmR5t5Uy6vdcQsNIiZgHGB",
        "duration": 400,
    }
    assert list(data) == ["sessionId", "source", "event", "hash", "duration"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"session_id": "not-a-uuid"}, "sessionId"),
        ({"session_id": "6f1c2d3e4b5a4c7d8e9f0a1b2c3d4e5f"}, "sessionId"),  # not the canonical form
        ({"session_id": 7}, "sessionId"),
        ({"source": "local"}, "source"),
        ({"source": "CDN"}, "source"),
        ({"event": "hit"}, "event"),
        ({"hash": ""}, "hash"),
        ({"hash": None}, "hash"),
        ({"hash": "x" * 1025}, "hash"),
        ({"duration": -1}, "negative"),
        ({"duration": 1.5}, "duration"),
        ({"duration": True}, "duration"),
        ({"duration": "400"}, "duration"),
    ],
)
def test_validate_rejects(fields: dict[str, object], words: str) -> None:
    values: dict[str, object] = {
        "session_id": SESSION,
        "source": "LOCAL",
        "event": "HIT",
        "hash": "ab",
        "duration": 1,
    }
    values.update(fields)
    with pytest.raises(ValueError, match=words):
        Event(**values).validate()  # type: ignore[arg-type]


def test_validate_accepts_a_fresh_session() -> None:
    Event(session_id(), "LOCAL", "HIT", "ab", 0).validate()
    Event(SESSION.upper(), "LOCAL", "HIT", "ab", 0).validate()


def test_from_json_round_trip_and_errors() -> None:
    original = event(5, source="REMOTE", outcome="HIT", duration=41200)
    assert Event.from_json(original.to_json()) == original
    with pytest.raises(ValueError, match="lacks 'hash'"):
        Event.from_json({"sessionId": SESSION, "source": "LOCAL", "event": "HIT", "duration": 0})
    with pytest.raises(ValueError, match="JSON object"):
        Event.from_json([1])
    with pytest.raises(ValueError, match="source"):
        Event.from_json({**original.to_json(), "source": "BOGUS"})


def test_one_session_id_per_process() -> None:
    first = session_id()
    assert session_id() == first
    assert uuid.UUID(first).version == 4
    events_module.reset()
    assert session_id() != first


def test_default_spool_dir(tmp_path: Path) -> None:
    assert default_spool_dir(tmp_path) == tmp_path / "events"


# -- the sender ----------------------------------------------------------------------------


def test_batches_of_ten(
    spool: Path, senders: Callable[..., EventSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "IDLE_SECONDS", 5.0)
    endpoint = Endpoint()
    sender = senders(remote(), spool, endpoint)
    started = time.monotonic()
    for n in range(12):
        sender.record(event(n))
    endpoint.wait(10)
    assert endpoint.times[0] - started < 2.5  # ten waiting: sent without the (5 s) idle wait
    sender.close()
    assert [len(batch) for batch in endpoint.batches] == [BATCH_SIZE, 2]
    assert endpoint.hashes == [f"{n:032x}" for n in range(12)]
    assert spooled(spool) == []


def test_sent_after_200_ms_idle_without_close(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    endpoint = Endpoint()
    sender = senders(remote(), spool, endpoint)
    for n in range(3):
        sender.record(event(n))
    last = time.monotonic()
    endpoint.wait(3)
    assert [len(batch) for batch in endpoint.batches] == [3]
    assert endpoint.times[0] - last >= IDLE_SECONDS * 0.9


def test_close_sends_at_once(
    spool: Path, senders: Callable[..., EventSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "IDLE_SECONDS", 10 * GENEROUS)
    endpoint = Endpoint()
    sender = senders(remote(), spool, endpoint)
    endpoint.wait(0)
    sender.record(event(1))
    sender.record(event(2))
    finishes(sender.close)  # not after the (10-minute) idle wait
    assert endpoint.hashes == [f"{1:032x}", f"{2:032x}"]
    sender.close()  # twice is fine


def test_record_never_waits_for_the_network(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    endpoint = Endpoint()
    endpoint.gate = threading.Event()
    sender = senders(remote(), spool, endpoint)
    started = time.perf_counter()
    for n in range(25):
        sender.record(event(n))
    assert (time.perf_counter() - started) / 25 < 0.002  # the budget per task
    endpoint.gate.set()
    sender.close()
    assert sorted(endpoint.hashes) == [f"{n:032x}" for n in range(25)]


def test_request_shape(
    spool: Path, senders: Callable[..., EventSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUILDKITE", "true")
    endpoint = Endpoint()
    sender = senders(remote(team_id="team_abc"), spool, endpoint)
    sender.record(event(1, source="REMOTE", outcome="HIT", duration=41200))
    sender.close()
    (request,) = endpoint.requests
    assert (request.method, request.url.path) == ("POST", "/v8/artifacts/events")
    assert request.url.query == b"teamId=team_abc&slug=team-slug"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-artifact-client-ci"] == "BUILDKITE"
    assert request.headers["x-artifact-client-interactive"] in ("0", "1")
    assert endpoint.batches == [
        [event(1, source="REMOTE", outcome="HIT", duration=41200).to_json()]
    ]


def test_invalid_events_are_dropped_not_sent(
    spool: Path, senders: Callable[..., EventSender], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = Endpoint()
    sender = senders(remote(), spool, endpoint)
    sender.record(Event("nope", "LOCAL", "HIT", "ab", 0))
    sender.record(event(1, duration=-5))
    sender.record(event(2))
    sender.close()
    assert endpoint.hashes == [f"{2:032x}"]
    assert "sessionId must be a UUID" in caplog.text


def test_recorded_after_close_goes_to_the_spool(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    endpoint = Endpoint()
    sender = senders(remote(), spool, endpoint)
    sender.close()
    sender.record(event(9))
    assert spooled(spool) == [f"{9:032x}"]


# -- the spool -----------------------------------------------------------------------------


def test_a_failing_endpoint_loses_nothing_and_a_later_run_sends_it(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    failing = Endpoint(status=500)
    sender = senders(remote(), spool, failing)
    for n in range(15):
        sender.record(event(n))
    sender.close()
    assert len(failing.requests) == 1  # after one failure the run stops trying
    assert sorted(spooled(spool)) == [f"{n:032x}" for n in range(15)]

    working = Endpoint()
    later = senders(remote(), spool, working)  # the next run sends the spool at start
    later.record(event(99))
    later.close()
    assert sorted(working.hashes) == sorted([f"{n:032x}" for n in range(15)] + [f"{99:032x}"])
    assert spooled(spool) == []


def test_the_flush_bound_holds_when_the_endpoint_hangs(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    endpoint = Endpoint()
    endpoint.gate = threading.Event()
    sender = senders(remote(events_flush_timeout=0.3), spool, endpoint)
    for n in range(13):
        sender.record(event(n))
    finishes(sender.close)  # the endpoint hangs until the gate opens: only the bound ends it
    # The batch in flight is claimed by this live process: nobody else may send it.
    assert len(spooled(spool)) == 13
    other = Endpoint()
    sent, left = flush_spool(remote(), spool, transport=other.transport)
    assert sent == 3  # the 3 that never left; the 10 in flight stay claimed
    assert left == 10
    endpoint.gate.set()  # the hung request completes: its claim is deleted
    deadline = time.monotonic() + 5
    while spooled(spool) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(endpoint.hashes + other.hashes) == [f"{n:032x}" for n in range(13)]
    assert spooled(spool) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _claim(
    spool_dir: Path, settings: RemoteSettings, events: list[Event], *, pid: int, claimed_at: float
) -> Path:
    directory = events_module._Spool(spool_dir, settings).directory
    directory.mkdir(parents=True, exist_ok=True)
    path = (
        directory / f"{time.time_ns():020d}-abcd1234.json.sending-{pid}-0badf00d-{int(claimed_at)}"
    )
    path.write_text(json.dumps({"version": 1, "events": [e.to_json() for e in events]}))
    return path


def test_claims_of_dead_or_old_processes_are_taken_over(spool: Path) -> None:
    settings = remote()
    _claim(spool, settings, [event(1)], pid=_dead_pid(), claimed_at=time.time())
    _claim(spool, settings, [event(2)], pid=os.getpid(), claimed_at=time.time() - 3600)
    live = _claim(spool, settings, [event(3)], pid=os.getpid(), claimed_at=time.time())
    endpoint = Endpoint()
    assert flush_spool(settings, spool, transport=endpoint.transport) == (2, 1)
    assert sorted(endpoint.hashes) == [f"{1:032x}", f"{2:032x}"]
    assert live.exists()


def test_concurrent_flushes_send_each_event_once(spool: Path) -> None:
    settings = remote()
    writer = events_module._Spool(spool, settings)
    for n in range(40):
        writer.write([event(n)])
    endpoint = Endpoint()
    results: list[tuple[int, int]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                flush_spool(settings, spool, transport=endpoint.transport)
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(endpoint.hashes) == [f"{n:032x}" for n in range(40)]
    assert sum(sent for sent, _ in results) == 40
    assert spooled(spool) == []


def test_flush_stops_at_the_first_failure(spool: Path) -> None:
    settings = remote()
    writer = events_module._Spool(spool, settings)
    for n in range(3):
        writer.write([event(n), event(n + 10)])
    problems: list[str] = []
    endpoint = Endpoint(status=503)
    assert flush_spool(
        settings, spool, transport=endpoint.transport, on_warning=problems.append
    ) == (0, 6)
    assert len(endpoint.requests) == 1
    assert len(problems) == 1
    assert "503" in problems[0]
    assert TOKEN not in problems[0]
    assert len(spooled(spool)) == 6


def test_nothing_to_flush_sends_nothing(spool: Path) -> None:
    endpoint = Endpoint()
    assert flush_spool(remote(), spool, transport=endpoint.transport) == (0, 0)
    assert endpoint.requests == []


def test_a_damaged_spool_file_is_set_aside(spool: Path) -> None:
    settings = remote()
    writer = events_module._Spool(spool, settings)
    writer.write([event(1)])
    (writer.directory / "00000000000000000001-deadbeef.json").write_text("{not json")
    (writer.directory / "00000000000000000002-deadbeef.json").write_text(
        '{"events": [{"hash": "x"}]}'
    )
    endpoint = Endpoint()
    assert flush_spool(settings, spool, transport=endpoint.transport) == (1, 0)
    assert len(list(writer.directory.glob("*.bad"))) == 2


def test_each_remote_has_its_own_spool(spool: Path) -> None:
    events_module._Spool(spool, remote(slug="team-a")).write([event(1)])
    endpoint = Endpoint()
    assert flush_spool(remote(slug="team-b"), spool, transport=endpoint.transport) == (0, 0)
    assert flush_spool(remote(slug="team-a"), spool, transport=endpoint.transport) == (1, 0)


def _legacy_spool(spool_dir: Path, settings: RemoteSettings, events: list[Event]) -> Path:
    """A batch as cachehook spooled it before its spool names were xxh3-128 (issue 11): in
    ``sha256(api NUL team NUL slug)[:16]``; returns the directory."""
    identity = f"{settings.api}\0{settings.team_id or ''}\0{settings.slug or ''}"
    directory = spool_dir / hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns() - 10**9:020d}-0ld0ld00.json"  # older than anything spooled now
    payload = {"version": 1, "events": [e.to_json() for e in events]}
    (directory / name).write_text(json.dumps(payload, separators=(",", ":")))
    return directory


def test_the_spool_is_named_without_hashlib(spool: Path) -> None:
    settings = remote()
    directory = events_module._Spool(spool, settings).directory
    identity = f"{settings.api}\0\0{settings.slug}".encode()
    assert directory == spool / xxhash.xxh3_128_hexdigest(identity)
    assert directory != _legacy_spool(spool, settings, [])


def test_an_earlier_version_s_spool_is_flushed_first_then_removed(spool: Path) -> None:
    settings = remote()
    legacy = _legacy_spool(spool, settings, [event(1), event(2)])
    other = _legacy_spool(spool, remote(slug="team-other"), [event(7)])
    events_module._Spool(spool, settings).write([event(3)])
    assert events_module.pending_count(settings, spool) == 3

    endpoint = Endpoint()
    assert flush_spool(settings, spool, transport=endpoint.transport) == (3, 0)
    assert endpoint.hashes == [f"{n:032x}" for n in (1, 2, 3)]  # the older ones first
    assert not legacy.exists()
    assert spooled(other) == [f"{7:032x}"], "another remote's events are not ours to send"


def test_an_earlier_version_s_claim_is_left_to_its_process(spool: Path) -> None:
    settings = remote()
    legacy = _legacy_spool(spool, settings, [event(1)])
    (batch,) = legacy.iterdir()
    claimed = batch.with_name(f"{batch.name}.sending-{os.getpid()}-0badf00d-{int(time.time())}")
    batch.rename(claimed)  # being sent by a live process (this one, under another owner id)

    endpoint = Endpoint()
    assert flush_spool(settings, spool, transport=endpoint.transport) == (0, 1)
    assert endpoint.requests == []
    assert claimed.exists()  # and the directory with it


def test_a_sender_sends_an_earlier_version_s_spool_at_start(
    spool: Path, senders: Callable[..., EventSender]
) -> None:
    settings = remote()
    legacy = _legacy_spool(spool, settings, [event(1)])
    endpoint = Endpoint()
    sender = senders(settings, spool, endpoint)  # a run in CI: it sends the spool at start
    sender.record(event(2))
    sender.close()
    assert sorted(endpoint.hashes) == [f"{1:032x}", f"{2:032x}"]
    assert not legacy.exists()


def test_an_unwritable_spool_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    endpoint = Endpoint(status=500)
    sender = EventSender(remote(), spool_dir=blocker, transport=endpoint.transport)
    sender.record(event(1))
    sender.close()
    assert "cannot keep 1 cache events" in caplog.text


def test_spool_is_trimmed_when_full(
    spool: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(events_module, "_MAX_SPOOL_FILES", 3)
    writer = events_module._Spool(spool, remote())
    for n in range(5):
        writer.write([event(n)])
    assert spooled(spool) == [f"{n:032x}" for n in (2, 3, 4)]
    assert "spool is full" in caplog.text


# -- the real server -----------------------------------------------------------------------


@pytest.mark.integration
def test_events_reach_the_npm_server_field_by_field(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, spool: Path
) -> None:
    events_module.reset()
    run = session_id()
    key = "0123456789abcdef0123456789abcdef"
    # exit waits up to flush-timeout (1 s by default) and spools what is not sent by then; a
    # loaded machine may take longer, and this test is about the fields, not that deadline.
    settings = remote_settings._replace(events_flush_timeout=GENEROUS)
    sender = EventSender(settings, spool_dir=spool)
    sender.record(Event(run, "LOCAL", "MISS", key, 0))
    sender.record(Event(run, "REMOTE", "HIT", key, 41200))
    sender.close()
    (post,) = capture_proxy.wait_for("POST", "/v8/artifacts/events")
    assert post.status == 200
    assert post.query == {"slug": [remote_settings.slug]}
    assert post.headers["authorization"] == f"Bearer {remote_settings.token}"
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-artifact-client-interactive"] == "0"
    assert "x-artifact-client-ci" not in post.headers  # conftest strips the CI variables
    body = post.json()
    assert body == [
        {"sessionId": run, "source": "LOCAL", "event": "MISS", "hash": key, "duration": 0},
        {"sessionId": run, "source": "REMOTE", "event": "HIT", "hash": key, "duration": 41200},
    ]
    assert spooled(spool) == []


@pytest.mark.integration
def test_spooled_while_down_then_delivered_to_the_npm_server(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, refused_url: str, spool: Path
) -> None:
    down = RemoteSettings(api=refused_url, token=remote_settings.token, slug=remote_settings.slug)
    sender = EventSender(down, spool_dir=spool)
    for n in range(12):
        sender.record(event(n))
    sender.close()
    assert len(spooled(spool)) == 12
    # The spool is kept per API URL and team: move it over, as if the server came back there.
    up = RemoteSettings(
        api=capture_proxy.url, token=remote_settings.token, slug=remote_settings.slug
    )
    directory = events_module._Spool(spool, down).directory
    directory.rename(events_module._Spool(spool, up).directory)
    assert flush_spool(up, spool) == (12, 0)
    posts = capture_proxy.find("POST", "/v8/artifacts/events")
    hashes = sorted(item["hash"] for post in posts for item in post.json())
    assert hashes == [f"{n:032x}" for n in range(12)]


def test_one_flusher_at_a_time(tmp_path: Path) -> None:
    from cachehook.events import flushing, is_flushing

    assert not is_flushing(tmp_path)
    with flushing(tmp_path):
        assert is_flushing(tmp_path), "a run must not start a second flusher"
    assert not is_flushing(tmp_path)


_HANDING_RUN = """\
import sys
from pathlib import Path
from cachehook.config import RemoteSettings
from cachehook.events import UsageEvents
from cachehook.facts import LookupDone

api, token, slug, cache_dir, key = sys.argv[1:]
# Settings made here, not from the environment: the flusher must get the run's own.
settings = RemoteSettings(api=api, token=token, slug=slug, signature_key=b"k" * 32)
usage = UsageEvents(settings, cache_dir=Path(cache_dir), root=Path.cwd(), detach=True)
usage(LookupDone(key, "REMOTE", True, 41200))
usage.close()
print("handed over", flush=True)
sys.stdin.readline()  # the test says when this run exits
"""


@pytest.mark.integration
def test_a_detached_run_s_flusher_sends_once_the_run_has_exited(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, tmp_path: Path
) -> None:
    key = "0123456789abcdef0123456789abcdef"
    cache_dir = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEHOOK_", "TURBO_"))}
    argv = [remote_settings.api, remote_settings.token or "", remote_settings.slug or ""]
    run = subprocess.Popen(
        [sys.executable, "-c", _HANDING_RUN, *argv, str(cache_dir), key],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None
        assert finishes(run.stdout.readline) == "handed over\n"
        spool = default_spool_dir(cache_dir)
        assert spooled(spool) == [key], "spooled before the run goes on"
        time.sleep(0.5)  # a flusher that did not wait would have sent them by now
        assert capture_proxy.find("POST", "/v8/artifacts/events") == []
        assert spooled(spool) == [key]
        finishes(lambda: run.communicate("\n"))
        assert run.returncode == 0
    finally:
        reap(run)
    (post,) = capture_proxy.wait_for("POST", "/v8/artifacts/events", timeout=GENEROUS)
    assert post.status == 200
    assert post.query == {"slug": [remote_settings.slug]}
    assert post.headers["authorization"] == f"Bearer {remote_settings.token}"
    (sent,) = post.json()
    assert (sent["source"], sent["event"], sent["hash"], sent["duration"]) == (
        "REMOTE",
        "HIT",
        key,
        41200,
    )
    deadline = time.monotonic() + GENEROUS
    while spooled(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spooled(spool) == []


_WATCHED_RUN = """\
import sys
before = set(sys.modules)
from pathlib import Path
from cachehook import _detached
from cachehook.config import RemoteSettings
from cachehook.events import UsageEvents
from cachehook.facts import LookupDone

api, token, slug, cache_dir, root, key = sys.argv[1:]
spawned = []
spawn = _detached.spawn_detached
_detached.spawn_detached = lambda argv, *, stdin: spawned.append(spawn(argv, stdin=stdin))
settings = RemoteSettings(api=api, token=token, slug=slug)
usage = UsageEvents(settings, cache_dir=Path(cache_dir), root=Path(root), detach=True)
usage(LookupDone(key, "REMOTE", True, 41200))
usage.close()
heavy = {"subprocess", "signal", "locale", "hashlib", "base64"} & (set(sys.modules) - before)
print(*spawned, *sorted(heavy), flush=True)
sys.stdin.readline()  # the test says when this run exits
"""


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_hand_over_costs_no_subprocess_nor_hashlib_and_its_flusher_sends_an_older_spool(
    remote_settings: RemoteSettings, capture_proxy: CaptureProxy, tmp_path: Path
) -> None:
    key = "fedcba9876543210fedcba9876543210"
    cache_dir, root = tmp_path / "cache", tmp_path / "root"
    root.mkdir()
    spool = default_spool_dir(cache_dir)
    legacy = _legacy_spool(spool, remote_settings, [event(1, source="REMOTE", outcome="HIT")])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEHOOK_", "TURBO_"))}
    argv = [remote_settings.api, remote_settings.token or "", remote_settings.slug or ""]
    run = subprocess.Popen(
        [sys.executable, "-c", _WATCHED_RUN, *argv, str(cache_dir), str(root), key],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    flusher = None
    try:
        assert run.stdout is not None
        pid, *heavy = finishes(run.stdout.readline).split()
        assert heavy == [], f"the hand-over imported {heavy}"
        flusher = int(pid)
        deadline = time.monotonic() + GENEROUS  # it changes directory as it starts
        while os.readlink(f"/proc/{flusher}/cwd") != str(root) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.readlink(f"/proc/{flusher}/cwd") == str(root), "not in the project root"
        finishes(lambda: run.communicate("\n"))
        assert run.returncode == 0
        posts = capture_proxy.wait_for("POST", "/v8/artifacts/events", count=2, timeout=GENEROUS)
        assert [item["hash"] for post in posts for item in post.json()] == [f"{1:032x}", key]
        deadline = time.monotonic() + GENEROUS
        while _is_running(flusher) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _is_running(flusher)
    finally:
        reap(run)
        if flusher is not None and _is_running(flusher):
            os.kill(flusher, signal.SIGKILL)
    assert spooled(spool) == []
    assert not legacy.exists()


@pytest.mark.parametrize("key", [b"\x00\xff" * 20, None])
def test_the_hand_over_keeps_every_remote_setting(key: bytes | None) -> None:
    settings = remote(signature_key=key, timeout=0.5, events_flush_timeout=3.0)
    handed = json.loads(json.dumps(events_module._remote_to_json(settings)))
    assert events_module._remote_from_json(handed) == settings


def test_a_hand_over_from_a_removed_directory_keeps_the_events(tmp_path: Path) -> None:
    # The project may be removed while the task runs (issue 9): close must not fail, and the
    # events wait in the spool for the next run.
    project = tmp_path / "gone"
    project.mkdir()
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from cachehook.config import RemoteSettings\n"
        "from cachehook.events import UsageEvents\n"
        "from cachehook.facts import LookupDone\n"
        "settings = RemoteSettings(api='http://127.0.0.1:9', token='t' * 12)\n"
        "usage = UsageEvents(settings, cache_dir=Path(sys.argv[1]), root=Path.cwd(), detach=True)\n"
        "usage(LookupDone('ab' * 16, 'LOCAL', False, 0))\n"
        "os.rmdir(Path.cwd())\n"
        "usage.close()\n"
        "print('closed')\n"
    )
    cache_dir = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHEHOOK_", "TURBO_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, str(cache_dir)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=GENEROUS,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "closed\n"
    assert spooled(default_spool_dir(cache_dir)) == ["ab" * 16]
