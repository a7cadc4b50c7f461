"""Artifacts by team in the project's LocalStore: complete or absent, capped, never a path."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from cachehook._hits import ArtifactMeta
from cachehook.errors import ConfigError
from cachehook.server.storage import ArtifactStorage, is_object_store, open_storage

if TYPE_CHECKING:
    from pathlib import Path


def store(storage: ArtifactStorage, team: str, hash_: str, body: bytes, **meta: Any) -> None:
    upload = storage.begin_upload()
    upload.write([body[: len(body) // 2], body[len(body) // 2 :]])
    storage.commit(team, hash_, upload, ArtifactMeta(**meta))


def read(storage: ArtifactStorage, team: str, hash_: str) -> bytes | None:
    opened = storage.open(team, hash_)
    if opened is None:
        return None
    handle, info = opened
    with handle:
        data = handle.read()
    assert len(data) == info.size
    return data


def test_round_trip_with_metadata(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    body = os.urandom(100_000)  # above diskcache's inline threshold: a file of its own
    store(storage, "acme", "abc", body, duration_ms=1234, tag="dGFn", sha="ab", dirty_hash="cd")
    assert read(storage, "acme", "abc") == body
    info = storage.info("acme", "abc")
    assert info is not None
    assert (info.size, info.duration_ms, info.tag, info.sha, info.dirty_hash) == (
        100_000,
        1234,
        "dGFn",
        "ab",
        "cd",
    )
    assert read(storage, "other", "abc") is None
    assert not any((tmp_path / "s" / "uploads").iterdir())  # the upload was consumed
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == oct(0o700)


def test_small_artifacts_live_inline_and_still_read(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    store(storage, "acme", "ab", b"tiny")
    assert read(storage, "acme", "ab") == b"tiny"


@pytest.mark.parametrize(("team", "hash_"), [("../x", "ab"), ("acme", "../ab"), ("a/b", "ab")])
def test_keys_are_never_paths(tmp_path: Path, team: str, hash_: str) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    with pytest.raises(ValueError, match="invalid team or hash"):
        storage.open(team, hash_)


def test_an_uncommitted_upload_is_invisible_and_discarded(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    upload = storage.begin_upload()
    assert not upload.path.exists()  # created by the first write
    upload.write([b"half"])
    assert upload.path.exists()
    assert storage.info("acme", "ab") is None
    upload.discard()
    assert not upload.path.exists()


def test_a_truncated_blob_is_a_miss_and_evicted(tmp_path: Path) -> None:
    warnings: list[str] = []
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    storage.store._warn = warnings.append
    store(storage, "acme", "ab", os.urandom(200_000))
    (blob,) = [p for p in (tmp_path / "s" / "artifacts").rglob("*.val")]
    with blob.open("r+b") as file:
        file.truncate(1000)
    assert storage.open("acme", "ab") is None
    assert storage.info("acme", "ab") is None
    assert "200000" in warnings[0]


def test_the_size_cap_evicts_the_least_recently_used(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=450_000)
    store(storage, "t", "01", os.urandom(200_000))
    store(storage, "t", "02", os.urandom(200_000))
    assert storage.info("t", "01") is not None  # 01 is now the most recently used
    store(storage, "t", "03", os.urandom(200_000))
    assert storage.info("t", "02") is None
    assert storage.info("t", "01") is not None
    assert storage.info("t", "03") is not None


def test_stale_uploads_are_removed(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    old, fresh = storage.begin_upload(), storage.begin_upload()
    for upload in (old, fresh):
        upload.write([b"part"])
        upload.finish()
    past = time.time() - 2 * 86400
    os.utime(old.path, (past, past))
    assert storage.remove_stale_uploads() == 1
    assert not old.path.exists()
    assert fresh.path.exists()


def test_put_file_copies_unless_told_to_move(tmp_path: Path) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    src = tmp_path / "s" / "uploads" / "src.bin"
    body = os.urandom(70_000)
    src.write_bytes(body)
    storage.store.put_file("v8/t/01", src, meta=ArtifactMeta())
    assert src.read_bytes() == body  # copied: the source stays
    storage.store.put_file("v8/t/02", src, meta=ArtifactMeta(), move=True)
    assert not src.exists()  # renamed into the store
    for key in ("v8/t/01", "v8/t/02"):
        opened = storage.store.open_file(key)
        assert opened is not None
        with opened[0] as handle:
            assert handle.read() == body


class _NoLease:
    def take_lease(self, name: str, *, seconds: float) -> bool:
        raise AssertionError  # a directory never needs one: diskcache evicts by itself

    def drop_lease(self, name: str) -> None:
        raise AssertionError


def test_open_storage_takes_a_directory_or_an_object_store(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "s", max_size=1 << 20, lease=_NoLease())
    try:
        assert isinstance(storage, ArtifactStorage)
        store(storage, "acme", "ab", b"body")
        assert storage.used_by_team() == {"acme": 4}
    finally:
        storage.close()
    assert is_object_store("s3://bucket/prefix")
    assert not is_object_store(tmp_path / "s3:")
    assert not is_object_store("relative/dir")
    with pytest.raises(ConfigError, match="--storage"):
        open_storage("s3://Bad_Bucket", max_size=1 << 20, lease=_NoLease())


def _rewrite(storage: ArtifactStorage, key: str, changes: dict[str, object]) -> None:
    name = f"m/{key}"
    fields = json.loads(storage.store._cache.get(name))
    record = {n: v for n, v in {**fields, **changes}.items() if v is not None}
    storage.store._cache.set(name, json.dumps(record))


def test_a_record_an_earlier_server_wrote_still_reads(tmp_path: Path) -> None:
    """Before the typed metadata the server kept the upload's duration as ``duration``."""
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    store(storage, "acme", "abc", b"body", duration_ms=1, tag="dGFn")
    _rewrite(storage, "v8/acme/abc", {"duration_ms": None, "duration": 1234})
    info = storage.info("acme", "abc")
    assert info is not None
    assert (info.size, info.duration_ms, info.tag) == (4, 1234, "dGFn")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param({"size": None}, id="missing-field"),
        pytest.param({"tag": 5}, id="wrong-type"),
        pytest.param({"size": -4}, id="negative-size"),
        pytest.param({"checksum": "ab" * 15}, id="bad-digest"),
        pytest.param({"key": "v8/other/abc"}, id="another-key"),
    ],
)
def test_a_malformed_record_is_a_miss_and_evicted(
    tmp_path: Path, damage: dict[str, object]
) -> None:
    storage = ArtifactStorage(tmp_path / "s", max_size=1 << 30)
    store(storage, "acme", "abc", b"body")
    _rewrite(storage, "v8/acme/abc", damage)
    assert storage.open("acme", "abc") is None
    assert storage.info("acme", "abc") is None
    assert storage.store._cache.get("m/v8/acme/abc") is None, "evicted"
    assert storage.used_by_team() == {}
