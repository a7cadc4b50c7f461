"""Pending entries: a remote hit kept without SQLite, read by the next hit, adopted by the store
(issue 11). The crash states are made by hand, as a writer killed between two steps leaves them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from cachehook import _hits, _pending
from cachehook._hits import ArtifactMeta
from cachehook.digests import digest_bytes
from cachehook.store import LocalStore

if TYPE_CHECKING:
    from pathlib import Path

PAST = 1_000_000_000.0  # older than any grace period


def _keep(store: Path, key: str, content: bytes, *, log: bytes = b"the log") -> Path:
    """A download of ``content`` kept as a pending entry of ``key``; its artifact's path."""
    scratch = store.parent / "tmp" / f"{key}.download"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_bytes(content)
    meta = ArtifactMeta(duration_ms=1234, project="proj", task="build", command=("make",))
    assert _pending.keep(store, key, scratch, meta=meta, log=log, checksum=digest_bytes(content))
    assert not scratch.exists(), "renamed, not copied"
    hit = _hits.read_hit(store, key)
    assert hit is not None
    return hit.artifact


def _pending_files(store: Path) -> list[str]:
    directory = store / "pending"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (PAST, PAST))


def _read(store: Path, key: str) -> bytes | None:
    hit = _hits.read_hit(store, key)
    return None if hit is None else hit.artifact.read_bytes()


def test_a_kept_remote_hit_reads_back_through_its_hit_record_without_a_database(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    artifact = _keep(store, "k1", b"A" * 5000)

    hit = _hits.read_hit(store, "k1")
    assert hit is not None
    assert artifact.parent == store / "pending"
    assert (hit.artifact.read_bytes(), hit.log) == (b"A" * 5000, b"the log")
    assert (hit.meta.checksum, hit.meta.size) == (digest_bytes(b"A" * 5000), 5000)
    assert not (store / "cache.db").exists()
    assert os.stat(store).st_mode & 0o077 == 0


def test_opening_the_store_adopts_a_pending_entry_with_its_metadata(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _keep(store, "k1", b"A" * 5000)
    hit = _hits.read_hit(store, "k1")
    assert hit is not None
    entry = _pending.read_entry(store, hit.artifact.stem)
    assert entry is not None
    kept = entry[0]

    with LocalStore(store, max_size=10**9) as opened:
        meta = opened.get_meta("k1")
        assert meta is not None
        assert (meta.checksum, meta.size, meta.stored_at) == (kept.checksum, 5000, kept.stored_at)
        assert (meta.project, meta.task, meta.command, meta.duration_ms) == (
            "proj",
            "build",
            ("make",),
            1234,
        )
        assert opened.get_log("k1", meta) == b"the log"
        assert [entry.key for entry in opened.entries()] == ["k1"]  # cache ls sees it
        assert meta.checksum in opened.last_used()
    hit = _hits.read_hit(store, "k1")
    assert hit is not None
    assert hit.artifact.parent.parent.parent == store, "the record names diskcache's value file"
    assert hit.artifact.read_bytes() == b"A" * 5000
    assert _pending_files(store) == []


def test_an_entry_a_later_store_replaced_is_removed_not_adopted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with LocalStore(store, max_size=10**9) as opened:
        artifact = _keep(store, "k1", b"A" * 5000)
        other = tmp_path / "other.bin"
        other.write_bytes(b"B" * 4000)
        opened.put("k1", other, meta=ArtifactMeta(), log=b"miss")  # a miss stored meanwhile
    assert len(_pending_files(store)) == 2
    LocalStore(store, max_size=10**9).close()
    assert len(_pending_files(store)) == 2, "young: its writer may be about to name it"

    _age(artifact, artifact.with_suffix(".rec"))
    with LocalStore(store, max_size=10**9) as opened:
        meta = opened.get_meta("k1")
        assert meta is not None
        assert meta.checksum == digest_bytes(b"B" * 4000)
    assert _pending_files(store) == []
    assert _read(store, "k1") == b"B" * 4000


def test_a_later_remote_hit_of_the_same_key_replaces_the_earlier_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = _keep(store, "k1", b"A" * 5000)
    _keep(store, "k1", b"C" * 3000)
    _age(first, first.with_suffix(".rec"))

    with LocalStore(store, max_size=10**9) as opened:
        meta = opened.get_meta("k1")
        assert meta is not None
        assert meta.checksum == digest_bytes(b"C" * 3000)
    assert _pending_files(store) == []
    assert _read(store, "k1") == b"C" * 3000


@pytest.mark.parametrize(
    "file",
    [
        "../outside.val",
        "pending/../../outside.val",
        "pending/" + "A" * 32 + ".val",
        "pending/" + "a" * 31 + ".val",
        "pending/" + "a" * 32 + ".rec",
        "pending/x/" + "a" * 32 + ".val",
        "/tmp/" + "a" * 32 + ".val",
        "other/" + "a" * 32 + ".val",
    ],
)
def test_a_record_never_names_a_path_outside_the_store_or_pending_shape(
    tmp_path: Path, file: str
) -> None:
    store = tmp_path / "store"
    _keep(store, "k1", b"A" * 100)
    with pytest.raises(ValueError, match="no hit record"):
        _hits.write_hit(store, ArtifactMeta(key="k1"), artifact_file=file, log=b"")
    target = store / file
    if target.resolve().is_relative_to(tmp_path):  # there, with the size the record names
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"A" * 100)
    record = store / "hits" / "k1"
    header, _, log = record.read_bytes().partition(b"\n")[2].partition(b"\n")
    body = json.dumps({**json.loads(header), "file": file}).encode() + b"\n" + log
    record.write_bytes(b"cachehook-hit 1 " + digest_bytes(body).encode() + b"\n" + body)
    assert _hits.read_hit(store, "k1") is None


# -- what a crash leaves -------------------------------------------------------------------


def test_an_artifact_without_its_metadata_is_no_hit_and_reclaimed_after_the_grace(
    tmp_path: Path,
) -> None:
    """Killed after the rename, before the ``.rec``: no record names it."""
    store = tmp_path / "store"
    (store / "pending").mkdir(parents=True)
    artifact = store / "pending" / f"{'a' * 32}.val"
    artifact.write_bytes(b"A" * 100)
    (store / "pending" / f".{'b' * 32}.rec.1.ab.tmp").write_bytes(b"half")  # a killed writer's
    with LocalStore(store, max_size=10**9) as opened:
        assert opened.get_meta("k1") is None
        assert opened.reclaim() == 0, "young: its writer may still be at work"
        assert len(_pending_files(store)) == 2
        assert opened.reclaim(grace=0) == 2
    assert _pending_files(store) == []


def test_a_record_whose_pending_artifact_is_gone_is_no_hit_and_removed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    artifact = _keep(store, "k1", b"A" * 100)
    artifact.unlink()
    assert _hits.read_hit(store, "k1") is None

    with LocalStore(store, max_size=10**9) as opened:
        assert opened.get_meta("k1") is None
    assert _pending_files(store) == []
    assert not (store / "hits" / "k1").exists()


def test_a_record_of_a_pending_entry_that_is_all_gone_is_reclaimed_after_the_grace(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    artifact = _keep(store, "k1", b"A" * 100)
    artifact.unlink()
    artifact.with_suffix(".rec").unlink()
    assert _hits.read_hit(store, "k1") is None
    with LocalStore(store, max_size=10**9) as opened:
        opened.reclaim()
        assert (store / "hits" / "k1").exists(), "young"
        opened.reclaim(grace=0)
    assert not (store / "hits" / "k1").exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "other-log"])
def test_damaged_metadata_is_never_adopted_nor_a_hit_after(tmp_path: Path, damage: str) -> None:
    store = tmp_path / "store"
    artifact = _keep(store, "k1", b"A" * 100)
    rec = artifact.with_suffix(".rec")
    data = rec.read_bytes()
    if damage == "truncated":
        rec.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        rec.write_bytes(data.replace(b'"size":100', b'"size":101'))
    else:  # a digest that holds over a log its metadata does not name
        body = data.partition(b"\n")[2].rpartition(b"\n")[0] + b"\nanother log"
        rec.write_bytes(b"cachehook-pending 1 " + digest_bytes(body).encode() + b"\n" + body)
    assert _pending.read_entry(store, artifact.stem) is None

    with LocalStore(store, max_size=10**9) as opened:
        assert opened.get_meta("k1") is None
    assert _pending_files(store) == []
    assert _hits.read_hit(store, "k1") is None


def test_stray_hit_records_spare_one_that_names_a_pending_entry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with LocalStore(store, max_size=10**9) as opened:  # opened before the remote hit
        artifact = _keep(store, "k1", b"A" * 100)
        _age(store / "hits" / "k1")
        assert opened._remove_stray_hits(0) == 0
        assert _read(store, "k1") == b"A" * 100
        artifact.unlink()
        assert opened._remove_stray_hits(0) == 1
    assert not (store / "hits" / "k1").exists()


# -- the store's own upkeep ----------------------------------------------------------------


def test_the_size_cap_counts_adopted_entries(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for index in range(5):
        _keep(store, f"k{index}", bytes([index]) * 300_000)
    with LocalStore(store, max_size=1_000_000) as opened:
        assert opened.volume() < 1_500_000
        present = [k for k in range(5) if opened.get_meta(f"k{k}") is not None]
        assert 0 < len(present) < 5
    for index in range(5):
        assert (_read(store, f"k{index}") is not None) == (index in present)
    assert _pending_files(store) == []


def test_clear_removes_pending_entries(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with LocalStore(store, max_size=10**9) as opened:
        _keep(store, "k1", b"A" * 100)
        opened.clear()
    assert _pending_files(store) == []
    assert _hits.read_hit(store, "k1") is None


def test_a_damaged_database_set_aside_takes_pending_entries_along(tmp_path: Path) -> None:
    store = tmp_path / "store"
    LocalStore(store, max_size=10**9).close()
    _keep(store, "k1", b"A" * 100)
    (store / "cache.db").write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    with LocalStore(store, max_size=10**9, on_warning=warnings.append) as opened:
        assert opened.get_meta("k1") is None
    assert any("damaged" in warning for warning in warnings)
    assert _pending_files(store) == []
    assert _hits.read_hit(store, "k1") is None


# -- when the pending keep steps aside -------------------------------------------------------


def test_a_full_pending_directory_leaves_the_keep_to_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for index in range(_pending.MAX_PENDING):
        _keep(store, f"k{index}", b"A" * 10)
    scratch = tmp_path / "download"
    scratch.write_bytes(b"B" * 10)
    kept = _pending.keep(
        store, "more", scratch, meta=ArtifactMeta(), log=b"", checksum=digest_bytes(b"B" * 10)
    )
    assert not kept
    assert scratch.exists()
    assert _hits.read_hit(store, "more") is None


def test_another_file_system_leaves_the_keep_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    scratch = tmp_path / "download"
    scratch.write_bytes(b"B" * 10)
    store = tmp_path / "store"
    kept = _pending.keep(
        store, "k1", scratch, meta=ArtifactMeta(), log=b"", checksum=digest_bytes(b"B" * 10)
    )
    assert not kept
    assert scratch.read_bytes() == b"B" * 10
    assert _pending_files(store) == []


def test_a_failed_keep_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_hits, "write_hit", full)
    scratch = tmp_path / "download"
    scratch.write_bytes(b"B" * 10)
    store = tmp_path / "store"
    with pytest.raises(OSError, match="No space"):
        _pending.keep(
            store, "k1", scratch, meta=ArtifactMeta(), log=b"", checksum=digest_bytes(b"B" * 10)
        )
    assert _pending_files(store) == []
    assert _hits.read_hit(store, "k1") is None


# -- a hit while another process adopts ----------------------------------------------------

READER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from cachehook import _hits
    from cachehook.digests import digest_bytes

    store, stop, wanted = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    seen = {"pending": 0, "store": 0, "none": 0, "gone": 0}
    while not stop.exists() or not seen["store"]:
        for index, key in enumerate(wanted):
            hit = _hits.read_hit(store, key)
            if hit is None:
                seen["none"] += 1
                continue
            try:
                data = hit.artifact.open("rb").read()
            except OSError:
                seen["gone"] += 1  # renamed since the record was read: the store's path
                continue
            assert digest_bytes(data) == hit.meta.checksum, key
            assert data == bytes([index]) * 200_000, key
            seen["pending" if hit.artifact.parent.name == "pending" else "store"] += 1
    print(seen)
    """
)

ADOPTER = "import sys; from pathlib import Path; from cachehook.store import LocalStore\n" + (
    "LocalStore(Path(sys.argv[1]), max_size=10**9).close()"
)


def test_hits_while_another_process_adopts_are_whole_or_fall_back(tmp_path: Path) -> None:
    """Real processes: a reader replays each record as a hit would, while others adopt."""
    for round_ in range(3):
        store = tmp_path / f"store{round_}"
        keys = [f"k{index}" for index in range(20)]
        for index, key in enumerate(keys):
            _keep(store, key, bytes([index]) * 200_000)
        stop = tmp_path / f"stop{round_}"
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(store), str(stop), *keys],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            adopters = [
                subprocess.Popen([sys.executable, "-c", ADOPTER, str(store)]) for _ in range(2)
            ]
            for adopter in adopters:
                assert adopter.wait(timeout=120) == 0
            stop.touch()
            out, err = reader.communicate(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        assert reader.returncode == 0, err
        assert "'store'" in out, out
        assert _pending_files(store) == []
        with LocalStore(store, max_size=10**9) as opened:
            assert sorted(entry.key for entry in opened.entries()) == sorted(keys)
        for index, key in enumerate(keys):
            assert _read(store, key) == bytes([index]) * 200_000
        shutil.rmtree(store)
