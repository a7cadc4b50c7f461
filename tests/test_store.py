from __future__ import annotations

import json
import os
import pickle
import sqlite3
from typing import TYPE_CHECKING

import pytest

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
    store.put("k1", _artifact(tmp_path, b"A" * 100_000), meta={"duration_ms": 5}, log=b"log")
    meta = store.get_meta("k1")
    assert meta is not None
    assert meta["duration_ms"] == 5
    assert meta["size"] == 100_000
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
    store.put("k1", _artifact(tmp_path, b"B" * 200_000), meta={}, log=b"")
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
    store.put("k1", _artifact(tmp_path, b"x"), meta={}, log=b"original log")
    meta = store.get_meta("k1")
    assert meta is not None
    assert store.get_log("k1", {**meta, "log_checksum": "0" * 32}) is None
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
        store.put(f"k{index}", _artifact(tmp_path, bytes([index]) * 300_000), meta={}, log=b"")
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
        store.put("k1", _artifact(tmp_path, b"C" * 100_000), meta={}, log=b"")
    monkeypatch.setattr(type(store._cache.disk).__mro__[1], "_write", real_write)
    assert store.get_meta("k1") is None
    assert list((tmp_path / "store").rglob("*.val")) == []


def test_put_can_move_the_artifact_in(store: LocalStore, tmp_path: Path) -> None:
    scratch = store.directory.parent / "scratch.bin"
    scratch.write_bytes(b"M" * 100_000)
    store.put("k1", scratch, meta={}, log=b"", move=True)
    assert not scratch.exists(), "renamed into the store, not copied"
    meta = store.get_meta("k1")
    assert meta is not None
    assert store.copy_artifact("k1", meta, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == b"M" * 100_000
