from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from typing import TYPE_CHECKING

import pytest

from cachehook._hits import ArtifactMeta
from cachehook.errors import StoreError
from cachehook.store import LocalStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _artifact(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "artifact.bin"
    path.write_bytes(content)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "store", max_size=10**9) as opened:
        yield opened


def test_put_then_read_back(store: LocalStore, tmp_path: Path) -> None:
    store.put(
        "k1", _artifact(tmp_path, b"A" * 100_000), meta=ArtifactMeta(duration_ms=5), log=b"log"
    )
    meta = store.get_meta("k1")
    assert meta is not None
    assert meta.duration_ms == 5
    assert meta.size == 100_000
    assert store.get_log("k1", meta) == b"log"
    dest = tmp_path / "out.bin"
    assert store.copy_artifact("k1", meta, dest)
    assert dest.read_bytes() == b"A" * 100_000


def test_directory_is_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    LocalStore(directory, max_size=10**6).close()
    assert directory.stat().st_mode & 0o777 == 0o700


def test_corrupt_artifact_is_evicted_and_reported(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = LocalStore(tmp_path / "store", max_size=10**9, on_warning=warnings.append)
    store.put("k1", _artifact(tmp_path, b"B" * 200_000), meta=ArtifactMeta(), log=b"")
    meta = store.get_meta("k1")
    assert meta is not None
    value_files = list((tmp_path / "store").rglob("*.val"))
    assert value_files, "a 200 kB artifact is kept as a value file"
    for value in value_files:
        data = bytearray(value.read_bytes())
        data[len(data) // 2] ^= 0xFF
        value.write_bytes(bytes(data))
    assert not store.copy_artifact("k1", meta, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert store.get_meta("k1") is None
    assert any("k1" in w and "checksum" in w for w in warnings)


def test_corrupt_log_is_a_miss(store: LocalStore, tmp_path: Path) -> None:
    store.put("k1", _artifact(tmp_path, b"x"), meta=ArtifactMeta(), log=b"original log")
    meta = store.get_meta("k1")
    assert meta is not None
    assert store.get_log("k1", meta.replace(log_checksum="0" * 32)) is None
    assert store.get_meta("k1") is None


def test_never_unpickles(store: LocalStore, tmp_path: Path) -> None:
    """A pickled value planted in the database (CVE-2025-69872) is refused, not loaded."""

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    payload = pickle.dumps(Boom())
    db = sqlite3.connect(tmp_path / "store" / "cache.db")
    db.execute(
        "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count,"
        " tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, 4, NULL, ?)",
        ("m/evil", payload),
    )
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="unpickle"):
        store.get_meta("evil")


def test_refuses_to_pickle_values(store: LocalStore) -> None:
    with pytest.raises(TypeError):
        store._cache.set("r/x", {"a": 1})


def test_malformed_meta_is_evicted(store: LocalStore) -> None:
    store._cache.set("m/k2", "not json")
    assert store.get_meta("k2") is None
    store._cache.set("m/k3", json.dumps({"no": "checksum"}))
    assert store.get_meta("k3") is None


def test_size_cap_evicts_least_recently_used(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", max_size=1_000_000)
    for index in range(6):
        store.put(
            f"k{index}", _artifact(tmp_path, bytes([index]) * 300_000), meta=ArtifactMeta(), log=b""
        )
        meta = store.get_meta("k0")
        if meta is not None:
            store.has_artifact(meta)  # k0 keeps being used
    assert store.volume() < 1_500_000
    meta0 = store.get_meta("k0")
    assert meta0 is not None
    assert store.has_artifact(meta0)
    present = [k for k in range(6) if (m := store.get_meta(f"k{k}")) and store.has_artifact(m)]
    assert 1 not in present


def test_unopenable_directory_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the cache"):
        LocalStore(blocker / "store", max_size=10**6)


def test_failed_write_keeps_nothing_partial(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = type(store._cache.disk)._write

    def full_disk(self, full_path, iterator, mode, encoding=None):
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        with open(full_path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(store._cache.disk).__mro__[1], "_write", full_disk)
    with pytest.raises(StoreError, match="No space left"):
        store.put("k1", _artifact(tmp_path, b"C" * 100_000), meta=ArtifactMeta(), log=b"")
    monkeypatch.setattr(type(store._cache.disk).__mro__[1], "_write", real_write)
    assert store.get_meta("k1") is None
    assert list((tmp_path / "store").rglob("*.val")) == []


def test_put_can_move_the_artifact_in(store: LocalStore, tmp_path: Path) -> None:
    scratch = store.directory.parent / "scratch.bin"
    scratch.write_bytes(b"M" * 100_000)
    store.put("k1", scratch, meta=ArtifactMeta(), log=b"", move=True)
    assert not scratch.exists(), "renamed into the store, not copied"
    meta = store.get_meta("k1")
    assert meta is not None
    assert store.copy_artifact("k1", meta, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == b"M" * 100_000


# --- issue 10: the store checks what it trusts ------------------------------------------------


def test_a_record_for_another_key_is_evicted_and_a_miss(tmp_path: Path) -> None:
    """Finding 5: the metadata of K2 filed under K1 must not make a K1 lookup find K2."""
    warnings: list[str] = []
    with LocalStore(tmp_path / "store", max_size=10**9, on_warning=warnings.append) as store:
        store.put("k2", _artifact(tmp_path, b"K2 bytes"), meta=ArtifactMeta(), log=b"")
        store._cache.set("m/k1", store._cache.get("m/k2"))
        assert store.get_meta("k1") is None
        assert store._cache.get("m/k1") is None, "the stale record is evicted, not kept"
        assert any("k1" in w and "'k2'" in w for w in warnings)
        assert store.get_meta("k2") is not None


def test_a_record_whose_blob_is_gone_is_evicted_and_reported(tmp_path: Path) -> None:
    warnings: list[str] = []
    with LocalStore(tmp_path / "store", max_size=10**9, on_warning=warnings.append) as store:
        store.put("k1", _artifact(tmp_path, b"D" * 100_000), meta=ArtifactMeta(), log=b"")
        meta = store.get_meta("k1")
        assert meta is not None
        for value in (tmp_path / "store").rglob("*.val"):
            value.unlink()
        assert not store.check_artifact("k1", meta)
        assert store.get_meta("k1") is None
        assert any("k1" in w and "missing or unreadable" in w for w in warnings)


def test_evicting_a_stale_record_keeps_one_stored_meanwhile(
    store: LocalStore, tmp_path: Path
) -> None:
    store.put("k1", _artifact(tmp_path, b"old"), meta=ArtifactMeta(), log=b"")
    stale = store.get_meta("k1")
    assert stale is not None
    store.put("k1", _artifact(tmp_path, b"new"), meta=ArtifactMeta(), log=b"")
    store.evict("k1", reason="its blob went away", meta=stale)
    fresh = store.get_meta("k1")
    assert fresh is not None
    assert fresh.checksum != stale.checksum


def test_a_damaged_database_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with LocalStore(directory, max_size=10**9) as store:
        store.put("k1", _artifact(tmp_path, b"E" * 100), meta=ArtifactMeta(), log=b"")
    database = directory / "cache.db"
    database.write_bytes(os.urandom(8192))
    warnings: list[str] = []
    with LocalStore(directory, max_size=10**9, on_warning=warnings.append) as store:
        assert store.get_meta("k1") is None
        store.put("k2", _artifact(tmp_path, b"F" * 100), meta=ArtifactMeta(), log=b"")
        assert store.get_meta("k2") is not None
    assert (directory / "cache.db.damaged").exists()
    assert any("damaged" in w and "cache.db" in w for w in warnings)


def test_a_locked_database_is_not_mistaken_for_a_damaged_one(tmp_path: Path) -> None:
    from cachehook.store import _is_damaged

    assert not _is_damaged(sqlite3.OperationalError("database is locked"))
    assert _is_damaged(sqlite3.DatabaseError("file is not a database"))


def test_eight_concurrent_stores_of_one_key_leave_one_blob(tmp_path: Path) -> None:
    import threading

    directory = tmp_path / "store"
    LocalStore(directory, max_size=10**9).close()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def store_it(index: int) -> None:
        # What eight concurrent misses store: the same key, artifacts that differ in meta.json.
        artifact = tmp_path / f"artifact-{index}"
        artifact.write_bytes(b"G" * 50_000 + str(index).encode())
        try:
            with LocalStore(directory, max_size=10**9) as store:
                barrier.wait()
                store.put("k1", artifact, meta=ArtifactMeta(extra={"run": index}), log=b"log")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store_it, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with LocalStore(directory, max_size=10**9) as store:
        blobs = store._cache._sql("SELECT key FROM Cache WHERE key LIKE 'a/%'").fetchall()
        meta = store.get_meta("k1")
        assert meta is not None
        assert blobs == [(f"a/{meta.checksum}",)]
    assert len(list(directory.rglob("*.val"))) == 1


_KILLED_CHILD = r"""
import os, sys
from pathlib import Path
from cachehook._scratch import scratch_file
from cachehook.store import LocalStore

directory, scratch, fifo = map(Path, sys.argv[1:4])
store = LocalStore(directory, max_size=10**9, scratch_dir=scratch)
with scratch_file(scratch) as artifact:
    artifact.write_bytes(b"S" * 300_000)
    # A blob stored, its metadata not yet: killed between the two writes.
    store._cache.set("a/" + "0" * 32, b"O" * 200_000)
    # Killed in the middle of writing the next blob's value file.
    with fifo.open("rb") as source:
        store._cache.set("a/" + "1" * 32, source, read=True)
"""


def test_leftovers_of_a_killed_run_are_reclaimed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    directory, scratch, fifo = tmp_path / "store", tmp_path / "tmp", tmp_path / "fifo"
    with LocalStore(directory, max_size=10**9, scratch_dir=scratch) as store:
        store.put("kept", _artifact(tmp_path, b"K" * 100_000), meta=ArtifactMeta(), log=b"")
    os.mkfifo(fifo)
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, directory, scratch, fifo])
    try:
        with fifo.open("wb") as sink:
            # diskcache copies in 4 MiB reads: the first lands in the file, the second waits.
            sink.write(b"P" * (5 << 20))
            sink.flush()
            deadline = time.monotonic() + 60
            while sum(p.stat().st_size for p in directory.rglob("*.val")) < 300_000 + (4 << 20):
                assert time.monotonic() < deadline, "the child never got to its second blob"
                assert child.poll() is None
                time.sleep(0.05)
            child.kill()  # kill -9, mid-write
            child.wait()
    finally:
        child.kill()
        child.wait()
    assert list(scratch.iterdir()), "the killed run left its scratch directory"
    with LocalStore(directory, max_size=10**9, scratch_dir=scratch) as store:
        before = store.volume()
        assert store.reclaim(grace=0) == 3  # the unnamed blob, the partial file, the scratch
        assert store.volume() < before - 150_000, "the orphan blob counted against the cap"
        meta = store.get_meta("kept")
        assert meta is not None
        assert store.copy_artifact("kept", meta, tmp_path / "out")
    assert list(scratch.iterdir()) == []
    assert len(list(directory.rglob("*.val"))) == 1


def test_a_store_reclaims_at_most_hourly_and_spares_files_in_use(tmp_path: Path) -> None:
    from cachehook._scratch import scratch_file

    directory, scratch = tmp_path / "store", tmp_path / "tmp"
    store = LocalStore(directory, max_size=10**9, scratch_dir=scratch)
    store.put(
        "k0", _artifact(tmp_path, b"first"), meta=ArtifactMeta(), log=b""
    )  # the first reclaim
    old = scratch / "run-old"
    old.mkdir(parents=True)
    (old / "artifact.tar.zst").write_bytes(b"x" * 1000)
    hour_ago = time.time() - 3600
    try:
        with scratch_file(scratch) as busy:
            busy.write_bytes(b"y")
            for path in (old, old / "artifact.tar.zst", busy.parent):
                os.utime(path, (hour_ago, hour_ago))
            store.put("k1", _artifact(tmp_path, b"second"), meta=ArtifactMeta(), log=b"")
            assert old.exists(), "reclaimed less than an hour ago: nothing to do yet"
            os.utime(directory / ".reclaimed", (hour_ago - 1, hour_ago - 1))
            store.put("k2", _artifact(tmp_path, b"third"), meta=ArtifactMeta(), log=b"")
            assert not old.exists()
            assert busy.exists(), "a scratch file a live run holds is never reclaimed"
    finally:
        store.close()


def test_the_size_cap_drops_records_with_their_blobs_quietly(tmp_path: Path) -> None:
    """A record whose blob is missing is a fault worth a warning; the cap at work is not."""
    warnings: list[str] = []
    with LocalStore(tmp_path / "store", max_size=700_000, on_warning=warnings.append) as store:
        for index in range(4):
            artifact = _artifact(tmp_path, bytes([index]) * 300_000)
            store.put(f"k{index}", artifact, meta=ArtifactMeta(), log=b"")
        assert store._cache.get("m/k0") is None, "evicted with its blob"
        assert store.get_meta("k3") is not None
        assert warnings == []
