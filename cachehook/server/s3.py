"""Artifacts in an S3-compatible object store: ``--storage s3://BUCKET[/PREFIX]`` (issue 13).

Over 400 lines on purpose: it owns boto3, and an upload that is streamed in 8 MiB parts and
visible only on Complete, recency objects and the LRU sweep under a lease must agree on one
layout; the sweep could move out if it grows.

Several ``cachehook serve`` instances share one bucket; nothing here is kept per instance but
caches. Layout under ``PREFIX/``::

    v8/<team>/<hash>        the artifact; its user metadata (x-amz-meta-*) holds the duration,
                            the signature tag, the SCM sha and dirty hash given at PUT
    recency/<team>/<hash>   an empty object whose LastModified is the artifact's last use

The client is boto3 (botocore): it resolves the endpoint (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_S3``, ``endpoint_url`` in a profile), the credentials (the variables,
``AWS_PROFILE`` with ``~/.aws/credentials`` and ``config``, SSO, assumed roles, web identity,
the instance and container metadata) and the retries exactly as the AWS CLI does, which code
of our own would only approximate. ``AWS_REGION`` is read first, then ``AWS_DEFAULT_REGION``
and the profile's region, as the AWS CLI v2 and the other SDKs do. Its import (~0.5 s) is
paid once per server process, never by ``import cachehook`` or the CLI. It is synchronous,
like the disk: the app already runs storage calls in worker threads.

- **Uploads stream.** Bytes are gathered into parts of ``PART_SIZE`` (8 MiB); the first full
  part starts a multipart upload on the artifact's own key, and each part is sent as it fills,
  so a server holds at most one part per upload in memory. ``commit`` completes it (with a
  15-minute read timeout: S3 may take minutes to answer a large Complete); an
  artifact smaller than one part is a single PUT. Either way the object appears whole or not
  at all: S3 never shows an incomplete multipart upload. A killed server leaves its parts
  invisible; ``remove_stale_uploads`` aborts those older than a day (a bucket lifecycle rule
  ``AbortIncompleteMultipartUpload`` does the same).
- **Recency.** A hit refreshes ``recency/...`` when the artifact and its last refresh by this
  server are older than ``touch_every`` (an hour): LRU to the hour, at most one small PUT per
  artifact per server per hour.
- **Size cap.** After uploads of 1/20 of the cap (or any, a minute later), a background
  thread sweeps: it lists the prefix and deletes the least recently used artifacts until the
  total fits ``max_size``. A lease in the events database (``EventLog.take_lease``) lets one
  server sweep at a time; one that finds it taken tries again a few seconds later. Between
  sweeps the bucket can exceed the cap by the uploads since the last one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from cachehook._hits import ArtifactMeta
from cachehook.errors import ConfigError, StoreError
from cachehook.server.storage import artifact_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from cachehook.server.storage import Lease, Upload

__all__ = ["PART_SIZE", "S3Storage", "S3Upload", "parse_s3_url"]

logger = logging.getLogger("cachehook.server")

PART_SIZE = 8 << 20  # S3's minimum part is 5 MiB; 10,000 parts of 8 MiB hold 80 GB
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_PREFIX_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
_META_VALUE_RE = re.compile(r"[\x21-\x7e]{1,1024}\Z")
_LEASE_SECONDS = 600.0
_SWEEP_WAIT = 5.0
_SWEEP_EVERY = 60.0
_STALE_UPLOAD_SECONDS = 24 * 3600.0
_USAGE_TTL = 30.0
_TOUCHED_MAX = 100_000
_MISSING = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` as ``(bucket, prefix)``, the prefix empty or ending in ``/``.

    Raises:
        ConfigError: the bucket or prefix is malformed.
    """
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        msg = f"--storage {url}: the bucket must be 3-63 lower-case letters, digits, '.' or '-'"
        raise ConfigError(msg)
    segments = [segment for segment in prefix.split("/") if segment]
    if any(not _PREFIX_SEGMENT_RE.match(segment) for segment in segments):
        msg = (
            f"--storage {url}: each part of the prefix must be letters, digits, '.', '_' or"
            " '-', not starting with '.'"
        )
        raise ConfigError(msg)
    return bucket, "".join(f"{segment}/" for segment in segments)


class S3Upload:
    """One upload in progress: parts sent as they fill, nothing visible until ``complete``."""

    def __init__(self, storage: S3Storage, key: str, meta: ArtifactMeta) -> None:
        self.size = 0
        self.key = key
        self._storage = storage
        self._metadata = _metadata(meta)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append ``chunks``, sending each part that fills.

        Raises:
            StoreError: the object store refused a part.
        """
        for chunk in chunks:
            self._buffer += chunk
            self.size += len(chunk)
            while len(self._buffer) >= self._storage.part_size:
                self._send_part(self._storage.part_size)

    def _send_part(self, size: int) -> None:
        storage = self._storage
        with storage.translated(f"upload part of {self.key}"):
            if self._upload_id is None:
                started = storage.client.create_multipart_upload(
                    Bucket=storage.bucket,
                    Key=self.key,
                    Metadata=self._metadata,
                    ContentType="application/octet-stream",
                )
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            # the part is read from the buffer itself: no 8 MiB copies for the allocator to
            # keep per worker thread
            with memoryview(self._buffer) as whole, whole[:size] as view:
                sent = storage.client.upload_part(
                    Bucket=storage.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=_PartBody(view),
                    ContentLength=size,
                )
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})
        del self._buffer[:size]

    def complete(self) -> None:
        """Make the upload the object, whole, in one step.

        Raises:
            StoreError: the object store refused it; nothing was made visible.
        """
        storage = self._storage
        if self._upload_id is None:
            with storage.translated(f"store {self.key}"):
                storage.client.put_object(
                    Bucket=storage.bucket,
                    Key=self.key,
                    Body=bytes(self._buffer),
                    Metadata=self._metadata,
                    ContentType="application/octet-stream",
                )
        else:
            if self._buffer:
                self._send_part(len(self._buffer))
            with storage.translated(f"complete the upload of {self.key}"):
                try:
                    storage.slow_client.complete_multipart_upload(
                        Bucket=storage.bucket,
                        Key=self.key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
                except Exception as exc:
                    # a retried Complete whose first try went through answers NoSuchUpload
                    if not (_is_code(exc, "NoSuchUpload") and self._is_complete()):
                        raise
            self._upload_id = None
        self._buffer = bytearray()

    def _is_complete(self) -> bool:
        """Whether the object is this upload: its size, and an ETag of as many parts."""
        try:
            found = self._storage.client.head_object(Bucket=self._storage.bucket, Key=self.key)
        except Exception:
            return False
        etag = str(found.get("ETag", "")).strip('"')
        return int(found["ContentLength"]) == self.size and etag.endswith(f"-{len(self._parts)}")

    def discard(self) -> None:
        """Drop the buffer and abort the multipart upload, if one was started."""
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with contextlib.suppress(Exception):  # what is left, a day-old sweep aborts
                self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self.key, UploadId=upload_id
                )


class _PartBody(io.RawIOBase):
    """A part's bytes as a seekable file (the SDK hashes it, then sends it, in blocks)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), len(self._view) - self._position))
        buffer[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class _Body(io.RawIOBase):
    """An object's streamed body as a raw file, so reads come back as ``BinaryIO``."""

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except Exception as exc:  # botocore and urllib3 errors: a broken or short body
            msg = f"reading {self._key} from the object store failed: {exc}"
            raise OSError(msg) from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class S3Storage:
    """Artifacts by team and hash in ``bucket`` under ``prefix``, shared by several servers.

    Args:
        client: a boto3 S3 client.
        slow_client: one with a long read timeout, for completing multipart uploads (S3 can
            take minutes to answer one).
        bucket: the bucket (checked to exist and be reachable).
        prefix: empty, or ending in ``/``.
        max_size: bytes kept before the least recently used artifacts are evicted.
        lease: lets one server at a time sweep.
        touch_every: seconds between recency refreshes of one artifact by this server.

    Raises:
        StoreError: the bucket cannot be reached (a message says what to fix).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        max_size: int,
        lease: Lease,
        touch_every: float = 3600.0,
        part_size: int = PART_SIZE,
        slow_client: Any = None,
    ) -> None:
        self.client = client
        self.slow_client = client if slow_client is None else slow_client
        self.bucket, self.prefix = bucket, prefix
        self.max_size = max_size
        self.part_size = part_size
        self.touch_every = touch_every
        self.sweeps_in_background = True  # False: only explicit ``sweep()`` calls evict
        self._lease = lease
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}
        self._unswept = 0
        self._last_sweep = time.monotonic()
        self._usage: tuple[float, dict[str, int]] | None = None
        self._wake = threading.Event()
        self._closing = False
        self._sweeper: threading.Thread | None = None
        with self.translated(f"open s3://{bucket}/{prefix}"):
            client.head_bucket(Bucket=bucket)

    @classmethod
    def from_url(cls, url: str, *, max_size: int, lease: Lease) -> S3Storage:
        """The storage at ``s3://BUCKET[/PREFIX]``, with the AWS SDK's own settings.

        Raises:
            ConfigError: a malformed URL.
            StoreError: boto3 is missing, or the bucket cannot be reached.
        """
        bucket, prefix = parse_s3_url(url)
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            msg = "--storage s3://... needs boto3: pip install 'cachehook[s3]'"
            raise StoreError(msg) from exc
        region = os.environ.get("AWS_REGION") or None  # botocore reads AWS_DEFAULT_REGION only
        with _translated(f"open {url}"):
            session = boto3.session.Session(region_name=region)
            config = Config(max_pool_connections=64, connect_timeout=10, read_timeout=60)
            client = session.client("s3", config=config)
            slow = Config(max_pool_connections=16, connect_timeout=10, read_timeout=900)
            slow_client = session.client("s3", config=slow)
        return cls(client, bucket, prefix, max_size=max_size, lease=lease, slow_client=slow_client)

    def translated(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Turn the SDK's errors during ``action`` into ``StoreError``."""
        return _translated(f"{action} (bucket {self.bucket})")

    def _object(self, team: str, hash_: str) -> str:
        return f"{self.prefix}{artifact_key(team, hash_)}"

    def _recency(self, key: str) -> str:
        return f"{self.prefix}recency/{key.removeprefix(self.prefix).removeprefix('v8/')}"

    # -- the Storage interface ---------------------------------------------------------------

    def begin_upload(self, team: str, hash_: str, meta: ArtifactMeta) -> S3Upload:
        """A new upload for that artifact; nothing is sent before a part fills."""
        return S3Upload(self, self._object(team, hash_), meta)

    def commit(
        self,
        team: str,
        hash_: str,
        upload: Upload,
        meta: ArtifactMeta,
        *,
        tail: Iterable[bytes] = (),
    ) -> None:
        """Write ``tail`` and complete the upload: the artifact appears whole, replacing any."""
        if not isinstance(upload, S3Upload) or upload.key != self._object(team, hash_):
            msg = f"not an upload of {team}/{hash_} in this storage: {upload!r}"
            raise TypeError(msg)
        try:
            upload.write(tail)
            upload.complete()
        finally:
            upload.discard()
        with self._lock:
            self._unswept += upload.size
            due = self._unswept >= max(self.max_size // 20, 1)
        self._start_sweeper()
        if due:
            self._wake.set()

    def open(self, team: str, hash_: str) -> tuple[BinaryIO, ArtifactMeta] | None:
        """A streamed read of the artifact and what is known of it; None on a miss."""
        key = self._object(team, hash_)
        with self.translated(f"read {key}"):
            try:
                found = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _is_missing(exc):
                    return None
                raise
        self._touch(key, found["LastModified"].timestamp())
        handle = io.BufferedReader(_Body(found["Body"], key), buffer_size=1 << 20)
        return handle, _stored(key, found)

    def info(self, team: str, hash_: str) -> ArtifactMeta | None:
        """What is known of the artifact (refreshing its recency); None on a miss."""
        key = self._object(team, hash_)
        with self.translated(f"look up {key}"):
            try:
                found = self.client.head_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _is_missing(exc):
                    return None
                raise
        self._touch(key, found["LastModified"].timestamp())
        return _stored(key, found)

    def delete_team(self, team: str) -> int:
        """Remove every artifact of ``team`` and its recency; how many artifacts."""
        artifacts = [key for key, _, _ in self._list(f"{self.prefix}v8/{team}/")]
        markers = [key for key, _, _ in self._list(f"{self.prefix}recency/{team}/")]
        self._delete(artifacts + markers)
        with self._lock:
            self._usage = None
        return len(artifacts)

    def used_by_team(self) -> dict[str, int]:
        """Artifact bytes per team, from a listing at most 30 s old."""
        with self._lock:
            usage = self._usage
        if usage is not None and time.monotonic() - usage[0] < _USAGE_TTL:
            return dict(usage[1])
        used: dict[str, int] = {}
        for key, size, _ in self._list(f"{self.prefix}v8/"):
            team = key.removeprefix(f"{self.prefix}v8/").partition("/")[0]
            used[team] = used.get(team, 0) + size
        with self._lock:
            self._usage = (time.monotonic(), used)
        return dict(used)

    def remove_stale_uploads(self, *, older_than: float = _STALE_UPLOAD_SECONDS) -> int:
        """Abort multipart uploads under the prefix started more than a day ago; how many."""
        removed = 0
        cutoff = time.time() - older_than
        with self.translated("list the unfinished uploads"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}v8/"):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        with contextlib.suppress(Exception):
                            self.client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                            removed += 1
        return removed

    def close(self) -> None:
        """Stop the sweeper (an unfinished sweep is left to the lease's expiry)."""
        self._closing = True
        self._wake.set()
        sweeper = self._sweeper
        if sweeper is not None:
            sweeper.join(10)

    # -- recency and eviction ------------------------------------------------------------------

    def _touch(self, key: str, last_modified: float) -> None:
        now = time.time()
        if now - last_modified < self.touch_every:
            return
        with self._lock:
            if now - self._touched.get(key, 0.0) < self.touch_every:
                return
            if len(self._touched) >= _TOUCHED_MAX:
                self._touched.clear()
            self._touched[key] = now
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._recency(key), Body=b"")
        except Exception as exc:  # a lost refresh costs only recency
            logger.warning("cannot refresh the recency of %s: %s", key, exc)

    def sweep(self) -> int | None:
        """Evict the least recently used artifacts until the total fits ``max_size``.

        Returns:
            How many artifacts were evicted; None when another server holds the sweep.
        """
        name = f"s3-sweep:{self.bucket}/{self.prefix}"
        if not self._lease.take_lease(name, seconds=_LEASE_SECONDS):
            return None
        try:
            artifacts = list(self._list(f"{self.prefix}v8/"))
            used = {key: stamp for key, _, stamp in self._list_recency()}  # by artifact key
            total = sum(size for _, size, _ in artifacts)
            order = sorted(artifacts, key=lambda a: max(a[2], used.get(a[0], 0.0)))
            doomed: list[str] = []
            for key, size, _ in order:
                if total <= self.max_size:
                    break
                doomed.append(key)
                total -= size
            self._delete(doomed + [self._recency(key) for key in doomed])
            if doomed:
                logger.info("evicted %d artifacts from s3://%s/%s", len(doomed), *self._where())
            with self._lock:
                self._usage = None
            return len(doomed)
        finally:
            self._lease.drop_lease(name)

    def _where(self) -> tuple[str, str]:
        return self.bucket, self.prefix

    def _list_recency(self) -> Iterator[tuple[str, int, float]]:
        for key, size, stamp in self._list(f"{self.prefix}recency/"):
            yield f"{self.prefix}v8/{key.removeprefix(f'{self.prefix}recency/')}", size, stamp

    def _start_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is not None or self._closing or not self.sweeps_in_background:
                return
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="cachehook-s3-sweep", daemon=True
            )
        self._sweeper.start()

    def _sweep_loop(self) -> None:
        while True:
            self._wake.wait(_SWEEP_WAIT)
            self._wake.clear()
            if self._closing:
                return
            with self._lock:
                unswept = self._unswept
                due = unswept >= max(self.max_size // 20, 1) or (
                    unswept > 0 and time.monotonic() - self._last_sweep >= _SWEEP_EVERY
                )
            if not due:
                continue
            try:
                evicted = self.sweep()
            except Exception as exc:  # the next wake tries again
                logger.warning("the sweep of s3://%s/%s failed: %s", *self._where(), exc)
                continue
            if evicted is not None:
                with self._lock:
                    self._unswept -= unswept
                    self._last_sweep = time.monotonic()

    # -- listing and deleting ------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """``(key, size, last modified)`` of every object under ``prefix``."""
        with self.translated(f"list {prefix}"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"], int(item["Size"]), item["LastModified"].timestamp()

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            with self.translated(f"delete {len(batch)} objects"):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as exc:
        msg = (
            f"cannot {action}: no AWS credentials found; set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
        )
        raise StoreError(msg) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        hint = {
            "404": "the bucket does not exist: create it, or check AWS_ENDPOINT_URL",
            "NoSuchBucket": "the bucket does not exist: create it, or check AWS_ENDPOINT_URL",
            "403": "access denied: check the credentials and the bucket policy",
            "AccessDenied": "access denied: check the credentials and the bucket policy",
        }.get(code, error.get("Message") or str(exc))
        msg = f"cannot {action}: {code}, {hint}"
        raise StoreError(msg) from exc
    except BotoCoreError as exc:
        msg = f"cannot {action}: {exc}"
        raise StoreError(msg) from exc


def _is_missing(exc: Exception) -> bool:
    return any(_is_code(exc, code) for code in _MISSING)


def _is_code(exc: Exception, code: str) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return str(response.get("Error", {}).get("Code")) == code


def _metadata(meta: ArtifactMeta) -> dict[str, str]:
    """What an upload declared, as the object's user metadata (``x-amz-meta-*``)."""
    values = {
        "duration": str(meta.duration_ms),
        "tag": meta.tag,
        "sha": meta.sha,
        "dirty-hash": meta.dirty_hash,
    }
    return {name: value for name, value in values.items() if value is not None}


def _stored(key: str, found: Mapping[str, Any]) -> ArtifactMeta:
    """What the object store says of an artifact (its checksum is not ours: left "")."""
    metadata = found.get("Metadata") or {}

    def text(name: str) -> str | None:
        value = metadata.get(name)
        return value if isinstance(value, str) and _META_VALUE_RE.match(value) else None

    duration = text("duration")
    return ArtifactMeta(
        key=key,
        size=int(found["ContentLength"]),
        duration_ms=int(duration) if duration is not None and duration.isdigit() else 0,
        tag=text("tag"),
        sha=text("sha"),
        dirty_hash=text("dirty-hash"),
    )
