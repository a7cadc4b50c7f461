"""Artifacts on a real S3 API server (moto, a separate process): whole or absent, capped, LRU.

In-process: ``S3Storage`` here talks over 127.0.0.1 to the server the ``s3_server`` fixture
started, through the same boto3 code path as ``cachehook serve --storage s3://...``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import pytest

from cachehook._hits import ArtifactMeta
from cachehook.errors import ConfigError, StoreError
from cachehook.server.eventlog import EventLog
from cachehook.server.s3 import PART_SIZE, S3Storage, parse_s3_url
from cachehook.server.storage import open_storage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.server.engines import S3Server

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture
def lease(tmp_path: Path) -> Iterator[EventLog]:
    log = EventLog(tmp_path / "events.sqlite3")
    yield log
    log.close()


@pytest.fixture
def open_s3(
    s3_env: dict[str, str], bucket: str, lease: EventLog
) -> Iterator[Callable[..., S3Storage]]:
    """``open_s3(max_size=..., touch_every=...)``: storage on this test's bucket, closed after."""
    opened: list[S3Storage] = []

    def open_(*, max_size: int = 1 << 30, touch_every: float = 3600.0) -> S3Storage:
        storage = open_storage(f"s3://{bucket}/ci/cache", max_size=max_size, lease=lease)
        assert isinstance(storage, S3Storage)
        storage.touch_every = touch_every
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


def store(storage: S3Storage, team: str, hash_: str, body: bytes, **fields: Any) -> None:
    meta = ArtifactMeta(**fields)
    upload = storage.begin_upload(team, hash_, meta)
    upload.write([body[i : i + MIB] for i in range(0, len(body), MIB)])
    storage.commit(team, hash_, upload, meta)


def read(storage: S3Storage, team: str, hash_: str) -> bytes | None:
    opened = storage.open(team, hash_)
    if opened is None:
        return None
    handle, info = opened
    with handle:
        data = handle.read()
    assert len(data) == info.size
    return data


def objects(s3_server: S3Server, bucket: str) -> dict[str, int]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return {item["Key"]: item["Size"] for item in listed.get("Contents", [])}


def unfinished(s3_server: S3Server, bucket: str) -> list[dict[str, Any]]:
    return list(s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_the_url_names_a_bucket_and_a_prefix() -> None:
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "")
    assert parse_s3_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b/")
    for bad in ("s3://", "s3://UPPER", "s3://b", "s3://bucket/../x", "s3://bucket/a/.hidden"):
        with pytest.raises(ConfigError, match="--storage"):
            parse_s3_url(bad)


def test_a_small_artifact_round_trips_with_its_metadata(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3()
    body = os.urandom(100_000)
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
    assert storage.info("other", "abc") is None
    assert read(storage, "acme", "abd") is None
    assert objects(s3_server, bucket) == {"ci/cache/v8/acme/abc": 100_000}
    head = s3_server.client().head_object(Bucket=bucket, Key="ci/cache/v8/acme/abc")
    assert head["Metadata"] == {"duration": "1234", "tag": "dGFn", "sha": "ab", "dirty-hash": "cd"}


def test_a_large_upload_streams_in_parts_and_is_invisible_until_complete(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3()
    body = os.urandom(2 * PART_SIZE + 3 * MIB)
    meta = ArtifactMeta(duration_ms=9)
    upload = storage.begin_upload("acme", "ff", meta)
    upload.write([body[i : i + MIB] for i in range(0, 2 * PART_SIZE + MIB, MIB)])
    # two parts are on the server already, and nothing can be read
    (pending,) = unfinished(s3_server, bucket)
    assert pending["Key"] == "ci/cache/v8/acme/ff"
    assert storage.info("acme", "ff") is None
    assert objects(s3_server, bucket) == {}
    storage.commit("acme", "ff", upload, meta, tail=[body[2 * PART_SIZE + MIB :]])
    assert read(storage, "acme", "ff") == body
    assert unfinished(s3_server, bucket) == []


def test_a_discarded_upload_leaves_nothing(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3()
    upload = storage.begin_upload("acme", "ee", ArtifactMeta())
    upload.write([os.urandom(PART_SIZE + 1)])
    assert len(unfinished(s3_server, bucket)) == 1
    upload.discard()
    assert unfinished(s3_server, bucket) == []
    assert objects(s3_server, bucket) == {}


def test_stale_unfinished_uploads_are_aborted(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3()
    s3_server.client().create_multipart_upload(Bucket=bucket, Key="ci/cache/v8/t/01")
    # (moto reports every upload as initiated in 2010, so "younger than a day" cannot be
    # checked here; AWS gives the real time)
    assert storage.remove_stale_uploads(older_than=-60) == 1
    assert unfinished(s3_server, bucket) == []


def test_the_sweep_evicts_the_least_recently_used(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3(max_size=450_000, touch_every=0)
    storage.sweeps_in_background = False  # this test calls sweep() itself
    store(storage, "t", "01", os.urandom(200_000))
    time.sleep(1.1)  # S3 times objects to the second: the order must be visible in them
    store(storage, "t", "02", os.urandom(200_000))
    time.sleep(1.1)
    assert storage.info("t", "01") is not None  # a use: 01 is now the most recent
    assert "ci/cache/recency/t/01" in objects(s3_server, bucket)
    store(storage, "t", "03", os.urandom(200_000))
    assert storage.sweep() == 1
    assert storage.info("t", "02") is None
    assert storage.info("t", "01") is not None
    assert storage.info("t", "03") is not None
    assert sum(size for key, size in objects(s3_server, bucket).items()) <= 450_000
    assert storage.sweep() == 0


def test_one_sweep_at_a_time(
    open_s3: Callable[..., S3Storage], tmp_path: Path, lease: EventLog
) -> None:
    storage = open_s3(max_size=1)
    other = EventLog(tmp_path / "events.sqlite3")  # another server on the same database
    try:
        assert other.take_lease(f"s3-sweep:{storage.bucket}/{storage.prefix}", seconds=60)
        store(storage, "t", "01", b"x" * 10)
        assert storage.sweep() is None
        assert storage.info("t", "01") is not None
    finally:
        other.close()


def test_the_background_sweep_keeps_the_cap(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3(max_size=1_000_000)
    for index in range(8):
        store(storage, "t", f"{index:02x}", os.urandom(200_000))
    deadline = time.monotonic() + 60
    while sum(objects(s3_server, bucket).values()) > 1_000_000:
        assert time.monotonic() < deadline, objects(s3_server, bucket)
        time.sleep(0.2)
    assert storage.info("t", "07") is not None  # the newest stays


def test_a_team_is_deleted_and_usage_is_per_team(
    open_s3: Callable[..., S3Storage], s3_server: S3Server, bucket: str
) -> None:
    storage = open_s3(touch_every=0)
    store(storage, "alpha", "01", b"a" * 100)
    store(storage, "alpha", "02", b"a" * 50)
    store(storage, "beta", "01", b"b" * 10)
    assert storage.used_by_team() == {"alpha": 150, "beta": 10}
    assert storage.delete_team("alpha") == 2
    assert storage.info("alpha", "01") is None
    assert storage.info("beta", "01") is not None
    assert storage.used_by_team() == {"beta": 10}
    assert not [key for key in objects(s3_server, bucket) if "/alpha/" in key]


def test_a_missing_bucket_or_credentials_say_what_to_fix(
    s3_env: dict[str, str], lease: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreError, match="bucket does not exist"):
        open_storage("s3://chk-no-such-bucket", max_size=1 << 20, lease=lease)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="no AWS credentials"):
        open_storage("s3://chk-no-such-bucket", max_size=1 << 20, lease=lease)


def test_a_profile_in_the_shared_files_is_read(
    s3_env: dict[str, str],
    bucket: str,
    lease: EventLog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AWS_PROFILE`` with credentials and config files, as the AWS CLI reads them."""
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    credentials.write_text(
        "[ci]\n"
        f"aws_access_key_id = {s3_env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {s3_env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    config.write_text(
        f"[profile ci]\nregion = {s3_env['AWS_REGION']}\n"
        f"endpoint_url = {s3_env['AWS_ENDPOINT_URL']}\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    storage = open_storage(f"s3://{bucket}", max_size=1 << 20, lease=lease)
    try:
        assert isinstance(storage, S3Storage)
        assert storage.client.meta.region_name == s3_env["AWS_REGION"]
        assert storage.info("t", "01") is None
    finally:
        storage.close()
