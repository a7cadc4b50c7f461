"""Hit records (issue 11): a local hit without SQLite, and every doubt about one is a fallback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from cachehook import _hits
from cachehook._hits import ArtifactMeta, OutputEntry
from cachehook.config import load_settings
from cachehook.hashing import digest_bytes
from cachehook.logs import STDOUT, encode_frames
from cachehook.runner import Runner, TaskSpec
from cachehook.store import LocalStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from cachehook.logs import LogRecorder


def _artifact(tmp_path: Path, content: bytes, name: str = "artifact.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    with LocalStore(tmp_path / "store", max_size=10**9) as opened:
        yield opened


def _record(store: LocalStore, key: str) -> Path:
    return store.directory / "hits" / key


# --- the record itself ------------------------------------------------------------------------


def test_a_stored_artifact_has_a_hit_record_that_reads_back(
    store: LocalStore, tmp_path: Path
) -> None:
    outputs = (OutputEntry("out/a", "d" * 32, False, 0o644),)
    meta = ArtifactMeta(duration_ms=7, outputs=outputs, value="42", task="build")
    store.put("k1", _artifact(tmp_path, b"A" * 1000), meta=meta, log=b"the log")
    hit = _hits.read_hit(store.directory, "k1")
    assert hit is not None
    assert hit.log == b"the log"
    assert hit.artifact.read_bytes() == b"A" * 1000
    assert hit.artifact.is_relative_to(store.directory)
    assert hit.meta.duration_ms == 7
    assert hit.meta.value == "42"
    assert hit.meta.outputs == (_hits.OutputEntry("out/a", "d" * 32, False, 0o644),)
    stored = store.get_meta("k1")
    assert stored is not None
    assert stored.task == "build"
    assert hit.meta == stored.replace(task=None, stored_at=None), "a hit reads what it needs"
    assert _record(store, "k1").stat().st_mode & 0o777 == 0o600
    assert (store.directory / "hits").stat().st_mode & 0o777 == 0o700


def test_a_file_stored_without_a_log_has_no_hit_record(store: LocalStore, tmp_path: Path) -> None:
    """``cachehook serve`` stores files without logs; its store is never hit locally."""
    store.put_file("team/h1", _artifact(tmp_path, b"S" * 100), meta=ArtifactMeta())
    assert not (store.directory / "hits").exists()


def _garble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _resigned(data: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    """The record with its header changed and its digest made to match again."""
    _, _, body = data.partition(b"\n")
    header, _, log = body.partition(b"\n")
    fields = json.loads(header)
    change(fields)
    new_body = json.dumps(fields).encode() + b"\n" + log
    digest = digest_bytes(new_body).encode()
    return b"cachehook-hit 1 " + digest + b"\n" + new_body


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) - 3], id="truncated"),
        pytest.param(lambda data: data[:20], id="cut-in-the-header"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(_garble, id="garbled"),
        pytest.param(lambda data: data.replace(b"hit 1 ", b"hit 2 ", 1), id="wrong-version"),
        pytest.param(
            lambda data: _resigned(data, lambda f: f.update(log_checksum="0" * 32)),
            id="log-checksum",
        ),
        pytest.param(lambda data: _resigned(data, lambda f: f.update(size=1)), id="artifact-size"),
        pytest.param(
            lambda data: _resigned(data, lambda f: f.update(file="../../../etc/passwd")),
            id="file-outside-the-store",
        ),
        pytest.param(
            lambda data: _resigned(data, lambda f: f.update(duration_ms="5")), id="malformed"
        ),
    ],
)
def test_a_damaged_record_reads_as_none(
    store: LocalStore, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    store.put("k1", _artifact(tmp_path, b"B" * 1000), meta=ArtifactMeta(duration_ms=5), log=b"log")
    record = _record(store, "k1")
    assert _hits.read_hit(store.directory, "k1") is not None
    record.write_bytes(damage(record.read_bytes()))
    assert _hits.read_hit(store.directory, "k1") is None


def test_a_record_filed_under_another_key_reads_as_none(store: LocalStore, tmp_path: Path) -> None:
    store.put("k2", _artifact(tmp_path, b"K2"), meta=ArtifactMeta(), log=b"")
    _record(store, "k1").write_bytes(_record(store, "k2").read_bytes())
    assert _hits.read_hit(store.directory, "k1") is None
    assert _hits.read_hit(store.directory, "k2") is not None


def test_an_artifact_evicted_by_another_store_is_no_hit(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with LocalStore(directory, max_size=10**9) as store:
        store.put("k1", _artifact(tmp_path, b"C" * 1000), meta=ArtifactMeta(), log=b"")
        hit = _hits.read_hit(directory, "k1")
        assert hit is not None
        with LocalStore(directory, max_size=10**9) as other:
            other._cache.delete(f"a/{hit.meta.checksum}")  # another process's size cap
        assert not hit.artifact.exists()
        assert _hits.read_hit(directory, "k1") is None


def test_forgetting_a_key_removes_its_record(store: LocalStore, tmp_path: Path) -> None:
    for key in ("k1", "k2", "k3"):
        store.put(key, _artifact(tmp_path, key.encode()), meta=ArtifactMeta(), log=b"")
    store.discard("k1")
    store.evict("k2", reason="a test")
    assert not _record(store, "k1").exists()
    assert not _record(store, "k2").exists()
    store.clear()
    assert list((store.directory / "hits").iterdir()) == []


def test_evicting_a_stale_record_keeps_the_hit_record_of_a_fresh_one(
    store: LocalStore, tmp_path: Path
) -> None:
    store.put("k1", _artifact(tmp_path, b"old"), meta=ArtifactMeta(), log=b"")
    stale = store.get_meta("k1")
    assert stale is not None
    store.put("k1", _artifact(tmp_path, b"new"), meta=ArtifactMeta(), log=b"")
    store.evict("k1", reason="its blob went away", meta=stale)
    hit = _hits.read_hit(store.directory, "k1")
    assert hit is not None
    assert hit.artifact.read_bytes() == b"new"


def test_reclaim_removes_records_the_database_forgot(store: LocalStore, tmp_path: Path) -> None:
    store.put("k1", _artifact(tmp_path, b"one"), meta=ArtifactMeta(), log=b"")
    store.put("k2", _artifact(tmp_path, b"two"), meta=ArtifactMeta(), log=b"")
    store._cache.delete("m/k1")  # forgotten by a run killed before it removed the record
    (store.directory / "hits" / ".k2.1.abcd.tmp").write_bytes(b"half")  # a killed writer
    assert store.reclaim(grace=0) >= 2
    assert sorted(p.name for p in (store.directory / "hits").iterdir()) == ["k2"]


def test_the_size_cap_counts_a_hit_through_the_record_as_a_use(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "store", max_size=1_000_000) as store:
        for index in range(3):
            store.put(
                f"k{index}",
                _artifact(tmp_path, bytes([index]) * 300_000),
                meta=ArtifactMeta(),
                log=b"",
            )
        # k0 is the oldest in SQLite, but was hit last through its record; k1 was used least.
        for index, when in ((0, 3000.0), (1, 1000.0), (2, 2000.0)):
            store._cache._sql(
                "UPDATE Cache SET access_time = ? WHERE tag = ?", (100.0, f"k{index}")
            )
            os.utime(_record(store, f"k{index}"), (when, when))
        assert store.last_used()[_checksum(store, "k0")] == 3000.0
        store.put("k3", _artifact(tmp_path, b"\x03" * 300_000), meta=ArtifactMeta(), log=b"")
        assert store.get_meta("k1") is None, "the least recently used, counting hits"
        for key in ("k0", "k2", "k3"):
            assert store.get_meta(key) is not None, key
            assert _hits.read_hit(store.directory, key) is not None, key
        assert not _record(store, "k1").exists()


def _checksum(store: LocalStore, key: str) -> str:
    meta = store.get_meta(key)
    assert meta is not None
    return meta.checksum


def test_touch_marks_a_record_used_now(store: LocalStore, tmp_path: Path) -> None:
    store.put("k1", _artifact(tmp_path, b"t"), meta=ArtifactMeta(), log=b"")
    os.utime(_record(store, "k1"), (1000.0, 1000.0))
    _hits.touch_hit(store.directory, "k1")
    assert _record(store, "k1").stat().st_mtime > time.time() - 3600


# --- through the runner ---------------------------------------------------------------------


_LOG = encode_frames([(STDOUT, b"built\n")])


def _spec(root: Path, name: str) -> TaskSpec:
    return TaskSpec(
        command=(name,), inputs=("src/**",), outputs=("out/**",), cwd=root, toolchain=False
    )


class _Task:
    """A task that writes ``out/o.bin`` and logs a line, counting its runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs = 0
        self.spec = _spec(root, "write")

    def __call__(self, recorder: LogRecorder) -> int:
        self.runs += 1
        (self.root / "out").mkdir(exist_ok=True)
        (self.root / "out" / "o.bin").write_bytes(b"O" * 100_000)
        recorder.add(STDOUT, b"built\n")
        return 0


def _runner(root: Path, notices: list[str]) -> Runner:
    return Runner(load_settings(cwd=root, environ=dict(os.environ)), on_notice=notices.append)


def _hit_record(runner: Runner, key: str) -> Path:
    return runner.settings.cache_dir / "store" / "hits" / key


def test_a_restoring_hit_through_the_record_opens_no_store(project: Path) -> None:
    task, notices = _Task(project), list[str]()
    with _runner(project, notices) as runner:
        prepared = runner.prepare(task.spec)
        assert runner.run(prepared, execute=task).stored
    (project / "out" / "o.bin").unlink()
    with _runner(project, notices) as runner:
        os.utime(_hit_record(runner, prepared.key), (1000.0, 1000.0))
        result = runner.run(prepared, execute=task)
        assert (result.status, result.source, result.restored) == ("HIT", "LOCAL", ("out/o.bin",))
        assert result.log == _LOG
        assert runner._store is None, "the hit read its record, not SQLite"
        assert _hit_record(runner, prepared.key).stat().st_mtime > 1000.0, "touched"
    assert (project / "out" / "o.bin").read_bytes() == b"O" * 100_000
    assert task.runs == 1
    assert notices == []


def _corrupt_log(record: Path) -> None:
    data = record.read_bytes()
    record.write_bytes(data.replace(b"built", b"BUILT"))


def _corrupt_artifact(record: Path) -> None:
    _, _, body = record.read_bytes().partition(b"\n")
    value = record.parent.parent / json.loads(body.partition(b"\n")[0])["file"]
    data = bytearray(value.read_bytes())
    data[len(data) // 2] ^= 0xFF
    value.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "status"),
    [
        pytest.param(lambda r: r.write_bytes(r.read_bytes()[:-2]), "HIT", id="truncated"),
        pytest.param(lambda r: r.write_bytes(b"cachehook-hit 9 x\n"), "HIT", id="wrong-version"),
        pytest.param(_corrupt_log, "HIT", id="log"),
        pytest.param(_corrupt_artifact, "MISS", id="artifact"),
    ],
)
def test_a_damaged_record_falls_back_to_the_store_and_never_replays_it(
    project: Path, damage: Callable[[Path], None], status: str
) -> None:
    """What the store holds decides: its own hit (and a fresh record), or its eviction and a run."""
    task, notices = _Task(project), list[str]()
    with _runner(project, notices) as runner:
        prepared = runner.prepare(task.spec)
        assert runner.run(prepared, execute=task).stored
        record = _hit_record(runner, prepared.key)
        damage(record)
        (project / "out" / "o.bin").unlink()
        result = runner.run(prepared, execute=task)
        assert result.status == status
        assert result.log == _LOG
        assert (project / "out" / "o.bin").read_bytes() == b"O" * 100_000
        assert task.runs == (2 if status == "MISS" else 1)
        if status == "MISS":
            assert any("checksum" in n for n in notices), notices
        hit = _hits.read_hit(record.parent.parent, prepared.key)
        assert hit is not None, "written again, by the hit or by the run"
        assert hit.log == _LOG


def test_a_record_of_another_key_never_replays(project: Path) -> None:
    notices: list[str] = []
    one, two = _Task(project), _Task(project)
    two.spec = _spec(project, "other")
    with _runner(project, notices) as runner:
        first, second = runner.prepare(one.spec), runner.prepare(two.spec)
        assert runner.run(second, execute=two).stored
        _hit_record(runner, first.key).write_bytes(_hit_record(runner, second.key).read_bytes())
        assert runner.run(first, execute=one).status == "MISS"
        assert one.runs == 1


# --- through the real CLI -------------------------------------------------------------------

_WRITE = (
    "import pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True);"
    " (p / 'o.txt').write_text('{}')"
)


def _exec(project: Path, env: dict[str, str], text: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cachehook", "exec", "-i", "src/**", "-o", "out/**", "--"]
    argv += [sys.executable, "-c", _WRITE.format(text)]
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=True)


def test_cachehook_exec_hits_through_the_record_and_survives_a_damaged_one(
    project: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache")}
    assert "miss" in _exec(project, env, "one").stderr
    records = list((tmp_path / "cache" / "store" / "hits").iterdir())
    assert len(records) == 1
    record, output = records[0], project / "out" / "o.txt"
    written = record.stat().st_ino
    output.write_text("changed by hand")
    assert "local hit" in _exec(project, env, "one").stderr
    assert output.read_text() == "one"
    assert record.stat().st_ino == written, "read and touched, not written again: no fallback"
    record.write_bytes(_garble(record.read_bytes()))
    garbled = record.stat().st_ino
    output.unlink()
    assert "local hit" in _exec(project, env, "one").stderr, "the store's own path"
    assert output.read_text() == "one"
    assert record.stat().st_ino != garbled, "that path wrote the record again"
    assert _hits.read_hit(tmp_path / "cache" / "store", record.name) is not None
    assert "miss" in _exec(project, env, "two").stderr, "another command, another key"
    assert output.read_text() == "two"


# --- ArtifactMeta: one shape, checked where a record enters (issue 11) ------------------------

_GOOD = {
    "key": "k1",
    "checksum": "a" * 32,
    "size": 3,
    "log_checksum": "b" * 32,
    "duration_ms": 5,
    "outputs": [{"path": "out/a", "digest": "c" * 32, "executable": False, "mode": 0o644}],
    "stored_at": 1.5e9,
    "task": "build",
    "command": ["make"],
    "manifest": {"version": 1},
}

_MALFORMED = [
    pytest.param({"checksum": None}, "checksum", id="missing-checksum"),
    pytest.param({"key": None}, "key", id="missing-key"),
    pytest.param({"size": "3"}, "size", id="size-as-text"),
    pytest.param({"size": True}, "size", id="size-as-bool"),
    pytest.param({"size": -1}, "size", id="negative-size"),
    pytest.param({"duration_ms": -5}, "duration_ms", id="negative-duration"),
    pytest.param({"checksum": "A" * 32}, "checksum", id="uppercase-digest"),
    pytest.param({"checksum": "a" * 31}, "checksum", id="short-digest"),
    pytest.param({"checksum": "g" * 32}, "checksum", id="not-hex-digest"),
    pytest.param({"log_checksum": 7}, "log_checksum", id="log-digest-as-number"),
    pytest.param({"outputs": {"out/a": 1}}, "outputs", id="outputs-not-a-list"),
    pytest.param(
        {"outputs": [{"path": "../x", "digest": "c" * 32, "executable": False}]},
        "outputs",
        id="output-outside-the-project",
    ),
    pytest.param(
        {"outputs": [{"path": "/etc/x", "digest": "c" * 32, "executable": False}]},
        "outputs",
        id="absolute-output",
    ),
    pytest.param(
        {"outputs": [{"path": "a", "digest": "bad", "executable": False}]},
        "outputs[a]",
        id="bad-output-digest",
    ),
    pytest.param(
        {"outputs": [{"path": "a", "digest": "c" * 32, "executable": "no"}]},
        "outputs[a]",
        id="executable-as-text",
    ),
    pytest.param(
        {"outputs": [{"path": "a", "digest": "c" * 32, "executable": False, "mode": -1}]},
        "outputs[a]",
        id="negative-mode",
    ),
    pytest.param({"stored_at": "yesterday"}, "stored_at", id="stored-at-as-text"),
    pytest.param({"stored_at": float("nan")}, "stored_at", id="stored-at-nan"),
    pytest.param({"command": "rm -rf /"}, "command", id="command-as-text"),
    pytest.param({"manifest": []}, "manifest", id="manifest-not-an-object"),
    pytest.param({"task": 3}, "task", id="task-as-number"),
    pytest.param({"value": 5}, "value", id="value-as-number"),
]


def _with(changes: dict[str, object]) -> dict[str, object]:
    """``_GOOD`` changed; a change to None removes the field."""
    record = {**_GOOD, **changes}
    return {name: value for name, value in record.items() if value is not None}


def test_a_record_round_trips_through_its_one_serialisation() -> None:
    meta = _hits.parse_record(json.dumps({**_GOOD, "exit_code": 0, "project": "p1"}))
    assert meta.size == 3
    assert meta.outputs == (OutputEntry("out/a", "c" * 32, False, 0o644),)
    assert meta.command == ("make",)
    assert meta.extra == {"exit_code": 0}, "fields it does not know are kept as read"
    assert _hits.parse_record(meta.to_json()) == meta
    artifact = meta.to_record(part=_hits.ARTIFACT)
    assert not artifact.keys() & {"checksum", "size", "log_checksum", "stored_at", "project"}
    assert ArtifactMeta.from_record(artifact, part=_hits.ARTIFACT).outputs == meta.outputs
    hit = {"key", "checksum", "size", "log_checksum", "duration_ms", "outputs"}
    assert meta.to_record(part=_hits.HIT).keys() == hit, "no manifest on a hit's path"


def test_meta_is_immutable() -> None:
    meta = ArtifactMeta(key="k1")
    with pytest.raises(AttributeError):
        meta.size = 5
    assert meta.replace(size=5).size == 5
    assert meta.size == 0


@pytest.mark.parametrize(("changes", "field"), _MALFORMED)
def test_a_malformed_record_is_refused_naming_its_field(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"its {field!r} must be")):
        ArtifactMeta.from_record(_with(changes))


@pytest.mark.parametrize(
    "text",
    [b"", b"not json", b"[1, 2]", b"null", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"],
    ids=["empty", "not-json", "a-list", "null", "too-deep", "not-utf8"],
)
def test_text_that_is_no_record_is_refused(text: bytes) -> None:
    with pytest.raises(ValueError, match="the record"):
        _hits.parse_record(text)


def test_records_written_before_the_typed_meta_still_read() -> None:
    """The format did not change: a store record, a server's and a hit record's header as
    earlier versions wrote them."""
    client = {
        "cachehook_version": "0.9.0",
        "checksum": "a" * 32,
        "command": ["make"],
        "created_at": "2026-01-01T00:00:00Z",
        "duration_ms": 12,
        "exit_code": 0,
        "key": "k1",
        "log_checksum": "b" * 32,
        "manifest": {"version": 1},
        "project": "p1",
        "size": 3,
        "stored_at": 1767225600.25,
        "task": None,
        "outputs": [{"digest": "c" * 32, "executable": True, "path": "bin/x"}],  # before modes
    }
    meta = _hits.parse_record(json.dumps(client, sort_keys=True))
    assert (meta.task, meta.project, meta.duration_ms) == (None, "p1", 12)
    assert meta.outputs == (OutputEntry("bin/x", "c" * 32, True, None),)
    server = {
        "checksum": "a" * 32,
        "dirty_hash": "ab",
        "duration": 1234,
        "hash": "abc",
        "key": "v8/acme/abc",
        "size": 9,
        "stored_at": 1767225600.0,
        "tag": "dGFn",
        "team": "acme",
    }
    meta = _hits.parse_record(json.dumps(server))
    assert (meta.duration_ms, meta.tag, meta.dirty_hash, meta.log_checksum) == (
        1234,
        "dGFn",
        "ab",
        None,
    )
    header = {name: client[name] for name in ("key", "checksum", "size", "log_checksum")}
    assert ArtifactMeta.from_record({**header, "outputs": []}, part=_hits.HIT).size == 3
    with pytest.raises(ValueError, match="log_checksum"):
        ArtifactMeta.from_record({**header, "log_checksum": None}, part=_hits.HIT)


@pytest.mark.parametrize(("changes", "field"), _MALFORMED)
def test_the_store_evicts_a_malformed_record_and_misses(
    store: LocalStore, tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    warnings: list[str] = []
    store._warn = warnings.append
    store.put("k1", _artifact(tmp_path, b"abc"), meta=ArtifactMeta(), log=b"")
    good = store.get_meta("k1")
    assert good is not None
    base = {**_GOOD, "checksum": good.checksum, "log_checksum": good.log_checksum}
    store._cache.set("m/k1", json.dumps(base))
    assert store.get_meta("k1") is not None, "the record before the damage reads"
    record = {name: value for name, value in {**base, **changes}.items() if value is not None}
    store._cache.set("m/k1", json.dumps(record))
    assert store.get_meta("k1") is None
    assert any("k1" in w and repr(field) in w for w in warnings), warnings
    assert store._cache.get("m/k1") is None, "evicted"
    assert not _record(store, "k1").exists(), "its hit record goes with it"
    assert list(store.entries()) == []


def test_a_hit_record_with_a_malformed_header_is_no_hit_record(
    store: LocalStore, tmp_path: Path
) -> None:
    """Even with a digest that matches: the header is checked field by field too."""
    store.put("k1", _artifact(tmp_path, b"A" * 1000), meta=ArtifactMeta(), log=b"log")
    record = _record(store, "k1")
    header, _, log = record.read_bytes().partition(b"\n")[2].partition(b"\n")
    fields = json.loads(header)
    for bad in ({"size": -1000}, {"checksum": "../../" + "a" * 26}, {"outputs": [{"path": ".."}]}):
        body = json.dumps({**fields, **bad}).encode() + b"\n" + log
        record.write_bytes(b"cachehook-hit 1 " + digest_bytes(body).encode() + b"\n" + body)
        assert _hits.read_hit(store.directory, "k1") is None, bad


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param({"size": -1}, "malformed: its 'size'", id="negative-size"),
        pytest.param({"checksum": "Z" * 32}, "malformed: its 'checksum'", id="bad-digest"),
        pytest.param({"outputs": "out/o.bin"}, "malformed: its 'outputs'", id="wrong-type"),
        pytest.param({"checksum": None}, "malformed: its 'checksum'", id="missing-field"),
        # A store record may have no log (the server's); the client's then misses on its log.
        pytest.param({"log_checksum": None}, "its log is missing", id="missing-log-checksum"),
    ],
)
def test_a_malformed_store_record_is_a_miss_through_the_runner(
    project: Path, damage: dict[str, object], said: str
) -> None:
    """Without a hit record, the store's record decides: a malformed one is evicted and the task
    runs (never a hit, never a crash); the run stores a good record again."""
    task, notices = _Task(project), list[str]()
    with _runner(project, notices) as runner:
        prepared = runner.prepare(task.spec)
        assert runner.run(prepared, execute=task).stored
        store = runner.store
        assert store is not None
        fields = json.loads(store._cache.get(f"m/{prepared.key}"))
        damaged = {n: v for n, v in {**fields, **damage}.items() if v is not None}
        store._cache.set(f"m/{prepared.key}", json.dumps(damaged))
        _hit_record(runner, prepared.key).unlink()
        (project / "out" / "o.bin").unlink()
        result = runner.run(prepared, execute=task)
        assert (result.status, task.runs) == ("MISS", 2)
        assert any(said in n for n in notices), notices
        assert store.get_meta(prepared.key) is not None, "stored again, whole"
        assert runner.run(prepared, execute=task).status == "HIT"


@pytest.mark.parametrize(
    ("damage", "status"),
    [
        pytest.param({}, "HIT", id="control"),
        pytest.param({"duration_ms": -1}, "MISS", id="negative-duration"),
        pytest.param(
            {"outputs": [{"path": "out/o.bin", "digest": "x", "executable": False}]},
            "MISS",
            id="bad-output-digest",
        ),
        pytest.param({"outputs": None}, "MISS", id="missing-outputs"),
        pytest.param({"key": 5}, "MISS", id="key-of-the-wrong-type"),
    ],
)
def test_a_remote_artifact_with_a_malformed_meta_json_is_a_miss(
    project: Path, tmp_path: Path, damage: dict[str, object], status: str
) -> None:
    """The remote's answer enters through ``ArtifactMeta`` too: refused, nothing placed, the
    task runs."""
    import httpx

    from cachehook import archive
    from cachehook.remote import RemoteSession

    task, notices = _Task(project), list[str]()
    (project / "out").mkdir()
    (project / "out" / "o.bin").write_bytes(b"planted")
    environ = {
        **os.environ,
        "CACHEHOOK_API": "http://127.0.0.1:9",
        "CACHEHOOK_TOKEN": "t" * 12,
        "CACHEHOOK_CACHE_DIR": str(tmp_path / "cache"),
    }
    settings = load_settings(cwd=project, environ=environ)
    assert settings.remote is not None
    with Runner(settings, on_notice=notices.append, detach_events=True) as runner:
        prepared = runner.prepare(task.spec)
        good = {"key": prepared.key, "duration_ms": 5, "outputs": []}
        meta = {n: v for n, v in {**good, **damage}.items() if v is not None}
        artifact = tmp_path / "hostile.tar.zst"
        archive.pack(artifact, project, ["out/o.bin"], meta=json.dumps(meta).encode(), log=_LOG)
        body = artifact.read_bytes()
        (project / "out" / "o.bin").unlink()

        def serve(request: httpx.Request) -> httpx.Response:
            if request.method == "GET":
                return httpx.Response(200, content=body)
            return httpx.Response(404 if request.method == "HEAD" else 200)

        runner._remote = RemoteSession(
            settings.remote,
            modes=settings.modes,
            on_warning=notices.append,
            transport=httpx.MockTransport(serve),
        )
        try:
            result = runner.run(prepared, execute=task)
        finally:
            if runner._usage is not None:
                runner._usage.detached.clear()  # no flusher left behind
        assert (result.status, task.runs) == (status, 1 if status == "MISS" else 0)
    if status == "HIT":
        assert (project / "out" / "o.bin").read_bytes() == b"planted"
        return
    assert any("cannot be restored" in n for n in notices), notices
    assert (project / "out" / "o.bin").read_bytes() == b"O" * 100_000, "the run's, not planted"
