"""Cache usage events: the record, the background sender and the on-disk spool.

Over 400 lines on purpose: the record, the background sender and the spool share one schema
and one delivery rule (an event is either sent or kept in the spool for a later run); the
spool could move to its own module if it grows.

An event is one fact about one task's cache lookup, in the schema of
``POST /v8/artifacts/events``::

    {"sessionId": "<uuid>", "source": "LOCAL", "event": "HIT", "hash": "<key>", "duration": 400}

``sessionId`` is one random UUID per process (``session_id()``); ``duration`` is the time saved
in ms on a hit and 0 on a miss.

Delivery: ``EventSender.record`` only appends to a list. A background thread sends a batch as
soon as 10 events are waiting or 200 ms after the latest one; ``close`` flushes what is left
within ``RemoteSettings.events_flush_timeout``. Nothing is lost and nothing is sent twice on
purpose: each batch is written to the spool (as claimed by this process) before it is sent and
deleted only after a 2xx; a batch that fails, or is still waiting at the deadline, stays in the
spool for a later run (which sends it from the background at start) or for
``cachehook events flush``.

Spool layout, one directory per remote (API URL + team) under the spool directory, named by
the xxh3-128 of that identity (32 hex digits)::

    <time>-<random>.json                     a batch ready to send
    <time>-<random>.json.sending-<pid>-<id>-<claimed at>   a batch being sent by that process

A claim is taken over when its process is gone or it was made more than 10 minutes ago.
Claiming is an atomic rename, so two processes never send the same file. Earlier versions named
the directory by the first 16 hex digits of a SHA-256: a flush (not a hit, which would pay
hashlib's import for it; issue 11) sends what such a directory of the same remote holds too.
"""

from __future__ import annotations

import _thread  # threading's Lock: threading itself only where a sender thread starts (issue 11)
import contextlib
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from cachehook.digests import digest_bytes
from cachehook.facts import LookupDone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from logging import Logger
    from pathlib import Path
    from types import TracebackType

    import httpx

    from cachehook._direct import DirectClient
    from cachehook.config import RemoteSettings
    from cachehook.facts import Fact
    from cachehook.remote import RemoteCache

__all__ = [
    "BATCH_SIZE",
    "IDLE_SECONDS",
    "Event",
    "EventSender",
    "UsageEvents",
    "default_spool_dir",
    "flush_all",
    "flush_handed_over",
    "flush_spool",
    "flushing",
    "is_flushing",
    "pending_count",
    "reset",
    "session_id",
    "spool_events",
]

BATCH_SIZE = 10
IDLE_SECONDS = 0.2
_CLAIM = ".sending-"
_STALE_CLAIM_SECONDS = 600.0
_MAX_SPOOL_FILES = 10_000
_MAX_HASH_LENGTH = 1024

# uuid is not imported: with platform it costs a remote hit ~2.5 ms (issue 11).
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_session_lock = _thread.allocate_lock()
_session_id: str | None = None


def session_id() -> str:
    """The random UUID (version 4) that identifies this process's run in every event."""
    global _session_id
    with _session_lock:
        if _session_id is None:
            _session_id = _random_uuid()
        return _session_id


def _random_uuid() -> str:
    """``str(uuid.uuid4())``: 122 random bits, version 4, the RFC 4122 variant."""
    value = int.from_bytes(os.urandom(16), "big")
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # the variant, as uuid.UUID sets it
    value = (value & ~(0xF000 << 64)) | (4 << 76)  # the version
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def reset() -> None:
    """Forget the session id, so the next ``session_id()`` makes a new one (for tests)."""
    global _session_id
    with _session_lock:
        _session_id = None


def default_spool_dir(cache_dir: Path) -> Path:
    """Where undelivered events wait: ``<cache dir>/events``."""
    return cache_dir / "events"


class Event(NamedTuple):
    """One cache lookup of one task, as the events endpoint takes it.

    A NamedTuple, not a frozen dataclass: a remote hit spools its events, and importing
    ``dataclasses`` (with ``inspect``) costs it milliseconds (issue 11).
    """

    session_id: str
    source: Literal["LOCAL", "REMOTE"]
    event: Literal["HIT", "MISS"]
    hash: str
    duration: int

    def validate(self) -> None:
        """Check every field against the API's schema.

        Raises:
            ValueError: a field is missing, of the wrong type or out of range.
        """
        # What uuid.UUID parses and writes back unchanged (any case): the hyphenated form.
        if not isinstance(self.session_id, str) or not _UUID_RE.fullmatch(self.session_id.lower()):
            msg = f"sessionId must be a UUID, got {self.session_id!r}"
            raise ValueError(msg)
        if self.source not in ("LOCAL", "REMOTE"):
            msg = f"source must be LOCAL or REMOTE, got {self.source!r}"
            raise ValueError(msg)
        if self.event not in ("HIT", "MISS"):
            msg = f"event must be HIT or MISS, got {self.event!r}"
            raise ValueError(msg)
        if not isinstance(self.hash, str) or not 0 < len(self.hash) <= _MAX_HASH_LENGTH:
            msg = f"hash must be a non-empty string, got {self.hash!r}"
            raise ValueError(msg)
        if isinstance(self.duration, bool) or not isinstance(self.duration, int):
            msg = f"duration must be an int (ms), got {self.duration!r}"
            raise ValueError(msg)
        if self.duration < 0:
            msg = f"duration must not be negative, got {self.duration!r}"
            raise ValueError(msg)

    def to_json(self) -> dict[str, object]:
        """The event in the API's shape, keys in the order turbo sends them."""
        return {
            "sessionId": self.session_id,
            "source": self.source,
            "event": self.event,
            "hash": self.hash,
            "duration": self.duration,
        }

    @classmethod
    def from_json(cls, data: object) -> Event:
        """Read an event in the API's shape (as ``to_json`` writes it) and validate it.

        Raises:
            ValueError: ``data`` is not a valid event.
        """
        if not isinstance(data, dict):
            msg = f"an event must be a JSON object, got {data!r}"
            raise ValueError(msg)
        try:
            event = cls(
                session_id=data["sessionId"],
                source=data["source"],
                event=data["event"],
                hash=data["hash"],
                duration=data["duration"],
            )
        except KeyError as exc:
            msg = f"an event lacks {exc.args[0]!r}"
            raise ValueError(msg) from exc
        event.validate()
        return event


class EventSender:
    """Sends events from a background thread, in batches; never blocks or raises.

    Args:
        settings: the remote whose events endpoint receives them.
        spool_dir: where undelivered events wait (``default_spool_dir(cache_dir)``).
        transport: an httpx transport, for tests.
        send_spool: first send what earlier runs left in the spool (in the background).
    """

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        spool_dir: Path,
        transport: httpx.BaseTransport | None = None,
        send_spool: bool = True,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._spool = _Spool(spool_dir, settings)
        self._send_spool = send_spool
        import threading  # only where a run sends its own events (CI, ``run``), not spools them

        self._cond = threading.Condition()
        self._pending: list[Event] = []
        self._last_record = 0.0
        self._is_closing = False
        self._is_abandoned = False
        self._has_failed = False
        self._thread = threading.Thread(target=self._run, name="cachehook-events", daemon=True)
        self._thread.start()

    def record(self, event: Event) -> None:
        """Queue ``event`` for sending; an invalid event is dropped with a logged warning."""
        try:
            event.validate()
        except ValueError as exc:
            _logger().warning("cache event dropped: %s", exc)
            return
        with self._cond:
            if not self._is_closing:
                self._pending.append(event)
                self._last_record = time.monotonic()
                self._cond.notify()
                return
        self._spool.write([event])  # recorded after close: straight to the spool

    def close(self) -> None:
        """Send what is waiting, for at most ``events_flush_timeout``; spool the rest."""
        with self._cond:
            if self._is_closing:
                return
            self._is_closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, self._settings.events_flush_timeout))
        with self._cond:
            self._is_abandoned = True
            leftover, self._pending = self._pending, []
        for start in range(0, len(leftover), BATCH_SIZE):
            self._spool.write(leftover[start : start + BATCH_SIZE])

    def __enter__(self) -> EventSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        cache: _Endpoint | None = None
        try:
            cache = _Endpoint(self._settings, transport=self._transport)
            if self._send_spool:
                spools = _spools(self._spool.root, self._settings)
                _, error = _send_spooled(spools, cache, should_stop=self._should_stop)
                self._has_failed = error is not None
            while (batch := self._next_batch()) is not None:
                self._deliver(cache, batch)
        except Exception:
            _logger().debug("cache event sender stopped", exc_info=True)
        finally:
            if cache is not None:
                cache.close()

    def _should_stop(self) -> bool:
        return self._is_abandoned  # the spool may use the whole flush bound, no more

    def _next_batch(self) -> list[Event] | None:
        with self._cond:
            while not self._is_abandoned:
                waiting = len(self._pending)
                if waiting >= BATCH_SIZE or (waiting and self._is_closing):
                    return self._take()
                if waiting:
                    idle = self._last_record + IDLE_SECONDS - time.monotonic()
                    if idle <= 0:
                        return self._take()
                    self._cond.wait(idle)
                elif self._is_closing:
                    return None
                else:
                    self._cond.wait()
            return None

    def _take(self) -> list[Event]:
        batch, self._pending = self._pending[:BATCH_SIZE], self._pending[BATCH_SIZE:]
        return batch

    def _deliver(self, cache: _Endpoint, batch: list[Event]) -> None:
        if self._has_failed:  # the endpoint failed once this run: later runs will send these
            self._spool.write(batch)
            return
        claimed = self._spool.write(batch, claimed=True)
        try:
            cache.record_events(batch)
        except Exception as exc:
            self._has_failed = True
            _logger().debug("cache events not delivered, kept in the spool: %s", exc)
            if claimed is None:
                self._spool.write(batch)
            else:
                self._spool.release(claimed)
            return
        if claimed is not None:
            self._spool.delete(claimed)


class UsageEvents:
    """The runner's listener for usage events: one ``Event`` per ``LookupDone`` fact.

    Sent by an ``EventSender`` started at the first lookup or, with ``detach`` (one task per
    process, ``cachehook exec``), kept until ``close`` and then spooled for a detached
    flusher (``_FLUSHER``) that sends them once this process has exited, so that a hit never
    imports httpx (issue 3) nor shares its cores with the flusher.

    Args:
        settings: the remote whose events endpoint receives them.
        cache_dir: the cache directory (its ``events`` spool).
        root: the project root, the detached flusher's working directory.
        detach: hand the events to a detached flusher at ``close`` instead of a thread.
    """

    def __init__(
        self, settings: RemoteSettings, *, cache_dir: Path, root: Path, detach: bool
    ) -> None:
        self._settings = settings
        self._cache_dir = cache_dir
        self._root = root
        self._detach = detach
        self.detached: list[Event] = []
        self._sender: EventSender | None = None
        # Tasks of one graph run on several threads (issue 4): one sender.
        self._opening = _thread.allocate_lock()

    def __call__(self, fact: Fact, /) -> None:
        if type(fact) is not LookupDone:
            return
        event = Event(
            session_id=session_id(),
            source=fact.where,
            event="HIT" if fact.hit else "MISS",
            hash=fact.key,
            duration=fact.saved_ms,
        )
        if self._detach:
            self.detached.append(event)
            return
        with self._opening:
            if self._sender is None:
                self._sender = EventSender(self._settings, spool_dir=self._cache_dir / "events")
        self._sender.record(event)

    def close(self) -> None:
        """Flush the sender (bounded), or spool the detached events and start a flusher."""
        if self._sender is not None:
            self._sender.close()
        if self.detached:
            self._hand_off()

    def _hand_off(self) -> None:
        events, self.detached = self.detached, []
        spool = default_spool_dir(self._cache_dir)
        if not spool_events(self._settings, spool, events) or is_flushing(spool):
            return  # a running flusher, or the next run's, sends them
        _start_flusher(self._settings, spool, cwd=self._root)


# The detached flusher (``UsageEvents`` with ``detach``): ``python -S -c _FLUSHER <root>``,
# without site (its .pth hooks; the run hands over its own ``sys.path``) nor click and the
# command line, which cost it more than sending. It reads the run's hand-over from its stdin, a
# pipe whose write end the run keeps until it exits: only then does the flusher import httpx and
# send, so it takes no CPU from the run, whose wall time ends when it exits. What it cannot
# send waits in the spool for the next run. It works in the project root (``posix_spawn`` has
# no working directory to give on 3.11); every path it uses is absolute, so a root removed
# meanwhile (issue 9) changes nothing.
_FLUSHER = (
    "import json, os, sys\n"
    "try:\n"
    "    os.chdir(sys.argv[1])\n"
    "except OSError:\n"
    "    pass\n"
    "handed = json.loads(sys.stdin.buffer.read())\n"
    "sys.path[:] = handed['path']\n"
    "from cachehook.events import flush_handed_over\n"
    "flush_handed_over(handed)\n"
)
_handed_lock = _thread.allocate_lock()
_handed: dict[str, int] = {}  # a spool's directory -> the pipe its waiting flusher reads


def _start_flusher(settings: RemoteSettings, spool_dir: Path, *, cwd: Path) -> None:
    """Start a detached flusher for ``spool_dir``'s events to ``settings``'s remote, unless
    this process has one waiting already (it sends everything there once we exit)."""
    import sys

    import cachehook
    from cachehook._detached import spawn_detached

    directory = str(_Spool(spool_dir, settings).directory)
    try:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(cachehook.__file__)))
        path = [os.path.abspath(entry) for entry in sys.path]  # '' is our working directory
        handed = {
            "path": [*path, package_root],  # an editable install's finder is not on sys.path
            "spool": str(spool_dir),
            "remote": _remote_to_json(settings),
        }
        payload = json.dumps(handed).encode("utf-8")
    except (OSError, TypeError, ValueError):  # the working directory is gone (issue 9)
        return  # no flusher: the next run sends them
    with _handed_lock:
        if directory in _handed:
            return
        try:
            read, write = os.pipe()  # neither end is inherited by any other child
        except OSError:
            return
        try:
            spawn_detached([sys.executable, "-S", "-c", _FLUSHER, str(cwd)], stdin=read)
            while payload:  # a few KiB at most, far below a pipe's buffer: never waits
                payload = payload[os.write(write, payload) :]
        except OSError:
            os.close(write)  # no flusher: the next run sends them
            return
        finally:
            os.close(read)
        _handed[directory] = write  # closed by our exit, which the flusher waits for


def _remote_to_json(settings: RemoteSettings) -> dict[str, object]:
    fields: dict[str, object] = settings._asdict()
    key = settings.signature_key
    fields["signature_key"] = None if key is None else key.hex()  # base64 costs a hit ~1 ms
    return fields


def flush_handed_over(handed: dict[str, Any]) -> None:
    """The detached flusher's work, once the run that handed it ``handed`` has exited."""
    from pathlib import Path

    flush_all(_remote_from_json(handed["remote"]), Path(handed["spool"]))


def _remote_from_json(fields: dict[str, Any]) -> RemoteSettings:
    from cachehook.config import RemoteSettings

    key = fields["signature_key"]
    key = None if key is None else bytes.fromhex(key)
    return RemoteSettings(**{**fields, "signature_key": key})


def flush_all(
    settings: RemoteSettings, spool_dir: Path, *, on_warning: Callable[[str], None] | None = None
) -> tuple[int, int]:
    """Send ``settings``'s spooled events, one flusher at a time, until none is left or the
    endpoint fails (``cachehook events flush``, and the detached flusher).

    Returns:
        (events sent, events still in the spool for this remote).
    """
    problems: list[str] = []
    sent = left = 0
    for _ in range(5):
        with flushing(spool_dir):  # one flusher at a time; runs check before starting one
            count, _ = flush_spool(settings, spool_dir, on_warning=problems.append)
        sent += count
        # A run that found us flushing left its events to us: look again after unlocking.
        left = pending_count(settings, spool_dir)
        if problems or not left:
            break
    if on_warning is not None:
        for problem in problems:
            on_warning(problem)
    return sent, left


_FLUSH_LOCK = ".flush.lock"


@contextlib.contextmanager
def flushing(spool_dir: Path) -> Iterator[None]:
    """Hold the spool's flush lock (waiting for another flusher to finish first)."""
    import fcntl

    spool_dir.mkdir(parents=True, exist_ok=True)
    with open(spool_dir / _FLUSH_LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_flushing(spool_dir: Path) -> bool:
    """Whether a flusher holds the spool's lock now (then it need not be started again)."""
    import fcntl

    try:
        with open(spool_dir / _FLUSH_LOCK, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def pending_count(settings: RemoteSettings, spool_dir: Path) -> int:
    """Events waiting in the spool for ``settings``'s remote, claimed or not."""
    return sum(spool.count() for spool in _spools(spool_dir, settings))


def spool_events(settings: RemoteSettings, spool_dir: Path, events: Sequence[Event]) -> int:
    """Keep valid ``events`` in the spool for a later (or detached) flush; returns how many.

    The hit path of ``cachehook exec`` uses this instead of an ``EventSender``: a single task
    should not pay httpx's import (~100 ms) to report itself (issue 3).
    """
    valid: list[Event] = []
    for event in events:
        try:
            event.validate()
        except ValueError as exc:
            _logger().warning("cache event dropped: %s", exc)
            continue
        valid.append(event)
    spool = _Spool(spool_dir, settings)
    for start in range(0, len(valid), BATCH_SIZE):
        spool.write(valid[start : start + BATCH_SIZE])
    return len(valid)


def flush_spool(
    settings: RemoteSettings,
    spool_dir: Path,
    *,
    transport: httpx.BaseTransport | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Send the events that earlier runs could not deliver to ``settings``'s remote.

    Stops at the first failure (which goes to ``on_warning``); what was not sent stays spooled.

    Returns:
        (events sent, events still in the spool for this remote).
    """
    spools = _spools(spool_dir, settings)
    if not any(spool.ready() for spool in spools):
        return 0, sum(spool.count() for spool in spools)
    cache = _Endpoint(settings, transport=transport)
    try:
        sent, error = _send_spooled(spools, cache, should_stop=lambda: False)
    finally:
        cache.close()
    if error is not None and on_warning is not None:
        on_warning(str(error))
    return sent, sum(spool.count() for spool in spools)


def _send_spooled(
    spools: Sequence[_Spool], cache: _Endpoint, *, should_stop: Callable[[], bool]
) -> tuple[int, Exception | None]:
    """Send each spool's batches, in order, until one fails; an earlier version's directory is
    removed once it is empty."""
    sent = 0
    for spool in spools:
        for path in spool.ready():
            if should_stop():
                return sent, None
            claimed = spool.claim(path)
            if claimed is None:
                continue  # another process took it
            events = spool.load(claimed)
            if not events:
                continue
            try:
                cache.record_events(events)
            except Exception as exc:
                spool.release(claimed)
                return sent, exc
            spool.delete(claimed)
            sent += len(events)
        if spool.is_legacy:
            with contextlib.suppress(OSError):  # not empty: a claim, a damaged file, a new batch
                os.rmdir(spool.directory)
    return sent, None


def _spool_identity(settings: RemoteSettings) -> bytes:
    return f"{settings.api}\0{settings.team_id or ''}\0{settings.slug or ''}".encode()


_LEGACY_NAME_LENGTH = 16  # hex digits of a SHA-256; today's names are 32 (xxh3-128)


def _spools(root: Path, settings: RemoteSettings) -> list[_Spool]:
    """``settings``'s spool, after the one an earlier version kept for the same remote if it
    is there (its events are older). hashlib is imported only when a directory in ``root`` has
    such a name, which a hit never looks for."""
    spool = _Spool(root, settings)
    try:
        names = os.listdir(root)
    except OSError:
        return [spool]
    if all(len(name) != _LEGACY_NAME_LENGTH for name in names):
        return [spool]
    import hashlib

    legacy = hashlib.sha256(_spool_identity(settings)).hexdigest()[:_LEGACY_NAME_LENGTH]
    if legacy not in names:
        return [spool]
    return [_Spool(root, settings, legacy=root / legacy), spool]


class _Endpoint:
    """``POST /v8/artifacts/events`` over ``_direct`` (``_http11``, no httpx) where it applies, so
    that a run in CI, which sends its own events, imports no httpx (issue 11); else, and for an
    answer ``_direct`` leaves to it, through ``remote.RemoteCache``, made when first needed."""

    def __init__(self, settings: RemoteSettings, *, transport: httpx.BaseTransport | None) -> None:
        self._settings = settings
        self._transport = transport
        self._direct: DirectClient | None = None
        self._cache: RemoteCache | None = None
        if transport is None:
            from cachehook._direct import DirectClient, direct_target

            target = direct_target(settings)
            if target is not None:
                self._direct = DirectClient(settings, target)

    def record_events(self, events: Sequence[Event]) -> None:
        if self._direct is not None:
            from cachehook._direct import NeedsHttpxError

            try:
                self._direct.record_events(events)
                return
            except NeedsHttpxError:
                pass  # httpx asks again, and decodes the answer
        if self._cache is None:
            from cachehook.remote import RemoteCache  # httpx, off the task's thread

            self._cache = RemoteCache(self._settings, transport=self._transport)
        self._cache.record_events(events)

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._cache is not None:
            self._cache.close()


class _Spool:
    """One remote's spool directory under ``root``; ``legacy``: an earlier version's name for
    it, to send what is there (nothing is written to it)."""

    def __init__(self, root: Path, settings: RemoteSettings, *, legacy: Path | None = None) -> None:
        self.root = root
        self.is_legacy = legacy is not None
        self.directory = legacy or root / digest_bytes(_spool_identity(settings))
        self._owner = f"{_CLAIM}{os.getpid()}-{os.urandom(4).hex()}-"

    def write(self, events: Sequence[Event], *, claimed: bool = False) -> Path | None:
        """Write one batch atomically; None (and a logged warning) when the disk refuses."""
        name = f"{time.time_ns():020d}-{os.urandom(4).hex()}.json"
        final = self.directory / (name + self._mark() if claimed else name)
        partial = self.directory / f".{name}.tmp"
        payload = {"version": 1, "events": [event.to_json() for event in events]}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
            os.replace(partial, final)
        except OSError as exc:
            _logger().warning(
                "cannot keep %d cache events in %s: %s", len(events), self.directory, exc
            )
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            return None
        if not claimed:
            self._trim()
        return final

    def ready(self) -> list[Path]:
        """Unclaimed batches and stale claims, oldest first."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        now = time.time()
        return [
            self.directory / name
            for name in names
            if name.endswith(".json") or (_CLAIM in name and self._is_stale(name, now))
        ]

    def claim(self, path: Path) -> Path | None:
        claimed = path.with_name(path.name.partition(_CLAIM)[0] + self._mark())
        try:
            os.rename(path, claimed)
        except OSError:
            return None
        return claimed

    def release(self, claimed: Path) -> None:
        with contextlib.suppress(OSError):
            os.replace(claimed, claimed.with_name(claimed.name.partition(_CLAIM)[0]))

    def delete(self, claimed: Path) -> None:
        with contextlib.suppress(OSError):
            claimed.unlink()

    def load(self, claimed: Path) -> list[Event]:
        """The batch's events; a damaged file is set aside as ``.bad`` and yields nothing."""
        try:
            data = json.loads(claimed.read_text(encoding="utf-8"))
            events = [Event.from_json(item) for item in data["events"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _logger().warning("damaged cache event spool file %s set aside: %s", claimed, exc)
            with contextlib.suppress(OSError):
                os.replace(claimed, claimed.with_name(claimed.name.partition(_CLAIM)[0] + ".bad"))
            return []
        return events

    def count(self) -> int:
        """Events waiting in this remote's spool, claimed or not."""
        total = 0
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        for name in names:
            if name.endswith(".json") or _CLAIM in name:
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    text = (self.directory / name).read_text(encoding="utf-8")
                    total += len(json.loads(text)["events"])
        return total

    def _mark(self) -> str:
        # The claim time is in the name: a rename keeps the old file's mtime.
        return f"{self._owner}{int(time.time())}"

    def _is_stale(self, name: str, now: float) -> bool:
        mark = name[name.index(_CLAIM) :]
        if mark.startswith(self._owner):
            return False  # ours, being sent right now
        pid_text, _, rest = mark.removeprefix(_CLAIM).partition("-")
        claimed_at = rest.rpartition("-")[2]
        if not (pid_text.isdigit() and claimed_at.isdigit()):
            return True  # not a name we write: nobody will ever release it
        if now - int(claimed_at) > _STALE_CLAIM_SECONDS:
            return True
        return not _is_alive(int(pid_text))

    def _trim(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".json"))
        except OSError:
            return
        for name in names[: max(0, len(names) - _MAX_SPOOL_FILES)]:
            _logger().warning("cache event spool is full; dropping the oldest batch %s", name)
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()


def _is_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe probe: rely on the claim's age
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _logger() -> Logger:
    import logging  # only when there is something to log: not on a hit (issue 11)

    return logging.getLogger("cachehook")
