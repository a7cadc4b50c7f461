from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zstandard

from cachehook import _placer
from cachehook.archive import LOG_PATH, META_PATH, Limits, pack, read, unpack
from cachehook.errors import ArchiveError
from cachehook.hashing import digest_bytes, digest_file
from tests.counting import count_decompression

if TYPE_CHECKING:
    from collections.abc import Callable

ZSTD = zstandard.ZstdCompressor(write_checksum=True)
OUTPUTS = [
    "out",
    "out/bin/run.sh",
    "out/data.bin",
    "out/empty",
    "out/latest",
    "out/sub/deep/x.txt",
    "out/zeros.bin",
]


def allow_all(path: str) -> bool:
    return True


def allow_out(path: str) -> bool:
    return path.startswith("out/")


def make_tree(root: Path, *, reverse: bool = False) -> None:
    """The same tree every time, whatever order it is created in."""
    steps: list[Callable[[], None]] = [
        lambda: _write(root / "out/bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        lambda: _write(root / "out/data.bin", bytes(range(256)) * 12_345, 0o644),
        lambda: _mkdir(root / "out/empty", 0o750),
        lambda: _write(root / "out/sub/deep/x.txt", "héllo\n".encode(), 0o600),
        lambda: _symlink("data.bin", root / "out/latest"),
        lambda: _write(root / "out/zeros.bin", bytes(400_000), 0o644),  # RLE blocks in zstd
    ]
    for step in reversed(steps) if reverse else steps:
        step()
    (root / "out").chmod(0o755)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _mkdir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def _symlink(target: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Everything under ``top``, links not followed: type, mode, inode and content."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:  # a directory's mtime moves when the staging directory comes and goes
                seen[str(path.relative_to(top))] = (st.st_mode, st.st_ino)
                continue
            seen[str(path.relative_to(top))] = (st.st_mode, st.st_ino, st.st_mtime_ns, detail)
    return seen


def staging_dirs(root: Path) -> list[str]:
    return [name for name in os.listdir(root) if name.startswith(".cachehook-restore-")]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with inputs, an old output, and a secret next to it (outside the project)."""
    root = tmp_path / "project"
    _write(root / "pyproject.toml", b"[project]\nname = 'x'\n", 0o644)
    _write(root / "src/app.py", b"print('app')\n", 0o644)
    _write(root / "out/keep.txt", b"old output\n", 0o644)
    _write(tmp_path / "outside/secret.txt", b"secret\n", 0o644)
    return root


# _placer._WRITER_FROM for each way of staging: on the reading thread alone, on the writer
# thread from the first byte, or switching to it part way through the artifact.
STAGING = {"serial": 1 << 62, "two threads": 0, "switching": 1 << 20}


@pytest.fixture(params=list(STAGING))
def staging(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    monkeypatch.setattr(_placer, "_WRITER_FROM", STAGING[name])
    return name


# --- hand-built artifacts ---------------------------------------------------------------------


def file_(name: str, data: bytes = b"data", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def dir_(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, b""


def link_(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def with_pax(
    member: tuple[tarfile.TarInfo, bytes], **headers: str
) -> tuple[tarfile.TarInfo, bytes]:
    member[0].pax_headers = headers
    return member


def special_(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, b""


def tar_bytes(
    members: list[tuple[tarfile.TarInfo, bytes]],
    *,
    with_meta: bool = True,
    fmt: int = tarfile.PAX_FORMAT,
) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        if with_meta:
            tar.addfile(*_with_stream(file_(META_PATH, b"{}")))
        for member in members:
            tar.addfile(*_with_stream(member))
    return raw.getvalue()


def _with_stream(member: tuple[tarfile.TarInfo, bytes]) -> tuple[tarfile.TarInfo, io.BytesIO]:
    return member[0], io.BytesIO(member[1])


def build(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], *, with_meta: bool = True
) -> Path:
    path = tmp_path / "artifact.tar.zst"
    path.write_bytes(ZSTD.compress(tar_bytes(members, with_meta=with_meta)))
    return path


def assert_refused(
    artifact: Path,
    project: Path,
    *,
    match: str,
    allowed: Callable[[str], bool] = allow_all,
    limits: Limits | None = None,
) -> None:
    before = snapshot(project.parent)
    with pytest.raises(ArchiveError, match=match):
        unpack(artifact, project, allowed=allowed, limits=limits or Limits())
    assert snapshot(project.parent) == before
    assert staging_dirs(project) == []


# --- pack and round trip ----------------------------------------------------------------------


def test_round_trip_restores_files_dirs_links_modes_and_bytes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    big = os.urandom(3 * 1024 * 1024 + 17)  # crosses every internal chunk size
    _write(src / "out/big.bin", big, 0o644)
    _write(src / "out/suid", b"x", 0o4755)
    long_name = "out/" + "é" * 80 + "/" + "n" * 150  # needs a PAX path record
    _write(src / long_name, b"long", 0o644)
    paths = [*OUTPUTS, "out/big.bin", "out/suid", long_name]
    artifact = tmp_path / "a.tar.zst"

    pack(artifact, src, paths, meta=b'{"key": 1}', log=b"the log\n")
    dst.mkdir()
    contents = unpack(artifact, dst, allowed=allow_out)

    assert contents.meta == b'{"key": 1}'
    assert contents.log == b"the log\n"
    assert [e.path for e in contents.entries] == sorted(paths)
    for path in paths:
        a, b = (src / path).lstat(), (dst / path).lstat()
        expected_mode = stat.S_IMODE(a.st_mode) & 0o777
        assert stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode), path
        if not stat.S_ISLNK(a.st_mode):
            assert stat.S_IMODE(b.st_mode) == expected_mode, path
    assert os.readlink(dst / "out/latest") == "data.bin"
    assert (dst / "out/big.bin").read_bytes() == big
    assert (dst / "out/data.bin").read_bytes() == (src / "out/data.bin").read_bytes()
    assert (dst / long_name).read_bytes() == b"long"
    assert stat.S_IMODE((dst / "out/suid").stat().st_mode) == 0o755  # setuid dropped
    assert stat.S_IMODE((dst / "out/empty").stat().st_mode) == 0o750
    assert staging_dirs(dst) == []


def test_read_reports_entries_without_writing(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    data = io.BytesIO()
    written = pack(data, tmp_path / "src", OUTPUTS, meta=b"{}", log=b"")
    before = snapshot(tmp_path)

    contents = read(io.BytesIO(data.getvalue()))

    assert written == len(data.getvalue())
    assert snapshot(tmp_path) == before
    by_path = {entry.path: entry for entry in contents.entries}
    assert by_path["out/bin/run.sh"].mode == 0o755
    assert by_path["out/bin/run.sh"].kind == "file"
    assert by_path["out/latest"].linkname == "data.bin"
    assert by_path["out/empty"].kind == "dir"
    assert by_path["out/data.bin"].size == 256 * 12_345


def test_pack_layout_is_meta_log_then_sorted_outputs_with_zeroed_owners(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    data = io.BytesIO()
    pack(data, tmp_path / "src", list(reversed(OUTPUTS)), meta=b"{}", log=b"log")

    tar_data = zstandard.ZstdDecompressor().decompressobj().decompress(data.getvalue())
    with tarfile.open(fileobj=io.BytesIO(tar_data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [META_PATH, LOG_PATH, *sorted(OUTPUTS)]
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == 0
        assert not member.pax_headers.keys() & {"mtime", "atime", "ctime"}


def test_pack_is_byte_identical_across_roots_mtimes_and_owners(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "first", tmp_path / "second-root"
    make_tree(first)
    make_tree(second, reverse=True)
    for dirpath, dirnames, filenames in os.walk(second):
        for name in dirnames + filenames:
            os.utime(Path(dirpath, name), (1_000_000, 1_000_000), follow_symlinks=False)
            if os.geteuid() == 0:
                os.lchown(Path(dirpath, name), 4321, 4321)
    one, two = io.BytesIO(), io.BytesIO()

    pack(one, first, OUTPUTS, meta=b"{}", log=b"log")
    pack(two, second, list(reversed(OUTPUTS)), meta=b"{}", log=b"log")

    assert one.getvalue() == two.getvalue()


def test_pack_to_path_returns_size_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    (tmp_path / "store").mkdir()
    artifact = tmp_path / "store" / "key.tar.zst"

    written = pack(artifact, tmp_path / "src", OUTPUTS, meta=b"{}", log=b"")

    assert written == artifact.stat().st_size
    assert os.listdir(tmp_path / "store") == ["key.tar.zst"]


@pytest.mark.parametrize(
    ("setup", "path", "match"),
    [
        (lambda root, out: None, "out/missing", "does not exist"),
        (lambda root, out: os.mkfifo(root / "out/fifo"), "out/fifo", "not a regular file"),
        (lambda root, out: (root / "out/abs").symlink_to("/etc/passwd"), "out/abs", "absolute"),
        (lambda root, out: (root / "out/up").symlink_to("../.."), "out/up", "outside"),
        (lambda root, out: (root / "ext").symlink_to(out), "ext/secret.txt", "outside the project"),
        (lambda root, out: None, ".cachehook/meta.json", "reserved"),
        (lambda root, out: None, "out/../src/app.py", "'..'"),
    ],
)
def test_pack_refuses_bad_outputs_naming_them(
    project: Path, setup: Callable[[Path, Path], None], path: str, match: str
) -> None:
    setup(project, project.parent / "outside")
    artifact = project.parent / "a.tar.zst"

    with pytest.raises(ArchiveError, match=match) as info:
        pack(artifact, project, ["out/keep.txt", path], meta=b"{}", log=b"")

    assert repr(path) in str(info.value)
    assert not artifact.exists()
    assert [p for p in os.listdir(project.parent) if p.endswith(".tmp")] == []


# --- restore into an existing tree ------------------------------------------------------------


def test_skip_leaves_file_untouched_and_others_are_replaced(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    make_tree(dst)
    (dst / "out/bin/run.sh").write_bytes(b"stale")
    artifact = tmp_path / "a.tar.zst"
    pack(artifact, src, OUTPUTS, meta=b"{}", log=b"")
    kept = (dst / "out/data.bin").stat()

    unpack(artifact, dst, allowed=allow_out, skip={"out/data.bin"})

    after = (dst / "out/data.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert (dst / "out/bin/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_existing_symlink_at_output_is_replaced_not_written_through(
    tmp_path: Path, project: Path
) -> None:
    (project / "out/x").symlink_to(project.parent / "outside/secret.txt")
    artifact = build(tmp_path, [file_("out/x", b"new")])

    unpack(artifact, project, allowed=allow_out)

    assert (project.parent / "outside/secret.txt").read_bytes() == b"secret\n"
    assert not (project / "out/x").is_symlink()
    assert (project / "out/x").read_bytes() == b"new"


def test_existing_dir_at_an_allowed_file_is_replaced(tmp_path: Path, project: Path) -> None:
    _write(project / "out/x/old.txt", b"old", 0o644)
    artifact = build(tmp_path, [file_("out/x", b"new")])

    unpack(artifact, project, allowed=allow_out)

    assert (project / "out/x").read_bytes() == b"new"


def test_file_on_disk_where_a_not_allowed_dir_is_needed_is_refused(
    tmp_path: Path, project: Path
) -> None:
    # 'src' is only a parent of the allowed 'src/gen/x', so the input file must not be replaced.
    _write(project / "src/gen", b"an input file", 0o644)
    artifact = build(tmp_path, [file_("src/gen/x")])

    assert_refused(
        artifact, project, allowed=lambda p: p.startswith("src/gen/"), match="file on disk"
    )


def test_on_disk_symlink_dir_leading_outside_is_not_written_through(
    tmp_path: Path, project: Path
) -> None:
    (project / "gen").symlink_to(project.parent / "outside")
    artifact = build(tmp_path, [file_("gen/secret.txt", b"pwned"), file_("gen/new.txt")])

    assert_refused(artifact, project, match="symlink on disk")


def test_on_disk_symlink_dir_inside_project_is_followed(tmp_path: Path, project: Path) -> None:
    (project / "real").mkdir()
    (project / "gen").symlink_to("real")
    artifact = build(tmp_path, [file_("gen/x", b"x")])

    unpack(artifact, project, allowed=allow_all)

    assert (project / "real/x").read_bytes() == b"x"


def test_on_disk_symlink_into_an_input_directory_is_refused(tmp_path: Path, project: Path) -> None:
    (project / "gen").symlink_to("src")
    artifact = build(tmp_path, [file_("gen/app.py", b"pwned")])

    assert_refused(artifact, project, allowed=lambda p: p.startswith("gen/"), match="src/app.py")


def test_read_only_directory_is_restored_with_its_entries(tmp_path: Path) -> None:
    _write(tmp_path / "src/out/ro/x", b"x", 0o644)
    (tmp_path / "src/out/ro").chmod(0o555)
    artifact = tmp_path / "a.tar.zst"
    pack(artifact, tmp_path / "src", ["out/ro", "out/ro/x"], meta=b"{}", log=b"")
    (tmp_path / "dst").mkdir()

    unpack(artifact, tmp_path / "dst", allowed=allow_out)

    assert stat.S_IMODE((tmp_path / "dst/out/ro").stat().st_mode) == 0o555
    assert (tmp_path / "dst/out/ro/x").read_bytes() == b"x"


def test_log_is_empty_when_absent(tmp_path: Path) -> None:
    contents = read(build(tmp_path, [file_("out/a")]))

    assert (contents.meta, contents.log) == (b"{}", b"")
    assert [e.path for e in contents.entries] == ["out/a"]


# --- one pass: failures while staging, corruption found at the end ---------------------------


def test_failure_while_staging_writes_nothing(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = build(tmp_path, [file_("out/a"), file_("out/b")])

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_placer, "_copy_data", no_space)
    assert_refused(artifact, project, match="No space left")


def test_interrupt_while_staging_removes_staging_dir(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = build(tmp_path, [file_("out/a"), file_("out/b")])
    before = snapshot(project.parent)

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_placer, "_copy_data", interrupt)
    with pytest.raises(KeyboardInterrupt):
        unpack(artifact, project, allowed=allow_all)
    assert snapshot(project.parent) == before
    assert staging_dirs(project) == []


def test_failure_while_moving_leaves_only_whole_files(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = build(tmp_path, [file_("out/a", b"A" * 5000), file_("out/b", b"B" * 5000)])
    real_replace = os.replace
    calls: list[object] = []

    def replace_then_fail(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace_then_fail)
        with pytest.raises(ArchiveError, match="No space left"):
            unpack(artifact, project, allowed=allow_all)

    assert (project / "out/a").read_bytes() == b"A" * 5000
    assert not (project / "out/b").exists()
    assert staging_dirs(project) == []


class CountingFile(io.FileIO):
    """The artifact's file, counting the bytes read from it."""

    read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        CountingFile.read_bytes += len(data)
        return data

    def readinto(self, buffer: object) -> int:
        raise AssertionError("read() only")


def test_unpack_reads_and_decompresses_the_artifact_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    counting = count_decompression(monkeypatch)
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    _write(src / "out/big.bin", os.urandom(3 << 20), 0o644)
    artifact = tmp_path / "a.tar.zst"
    pack(artifact, src, [*OUTPUTS, "out/big.bin"], meta=b"{}", log=b"log")
    dst.mkdir()
    CountingFile.read_bytes = 0

    with CountingFile(artifact) as raw:
        restored = unpack(raw, dst, allowed=allow_out, checksum=digest_file(artifact))

    assert (counting.streams, counting.fed) == (1, artifact.stat().st_size)
    assert CountingFile.read_bytes == artifact.stat().st_size
    assert restored.checksum == digest_file(artifact)
    assert (dst / "out/big.bin").read_bytes() == (src / "out/big.bin").read_bytes()


def test_placed_files_carry_the_digest_hashing_computes_and_their_stat_in_place(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    artifact = tmp_path / "a.tar.zst"
    pack(artifact, src, OUTPUTS, meta=b"{}", log=b"")
    make_tree(dst)
    (dst / "out/bin/run.sh").write_bytes(b"stale")

    restored = unpack(artifact, dst, allowed=allow_out, skip={"out/data.bin"})

    placed = {file.path: file for file in restored.placed}
    # Regular files written, not the skipped one, the link or the directories.
    assert sorted(placed) == ["out/bin/run.sh", "out/sub/deep/x.txt", "out/zeros.bin"]
    for path, file in placed.items():
        # What the stat cache keys on, taken before the digest below reads the file (a read
        # may move the access time, which no signature holds).
        now = (dst / path).lstat()
        assert _kept(file.stat) == _kept(now), "the stat of the file in place"
        assert file.digest == digest_file(dst / path)


def _kept(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def test_meta_json_must_come_first(tmp_path: Path, project: Path) -> None:
    path = tmp_path / "artifact.tar.zst"
    tar = tar_bytes([file_("out/a"), file_(META_PATH, b"{}")], with_meta=False)
    path.write_bytes(ZSTD.compress(tar))

    assert_refused(path, project, match="does not start with")


def test_skip_is_told_meta_before_any_output_is_staged(tmp_path: Path, project: Path) -> None:
    artifact = build(tmp_path, [file_("out/a", b"new"), file_("out/keep.txt", b"new")])
    seen: list[tuple[bytes, list[str]]] = []

    def refuse(meta: bytes) -> set[str]:
        staged = [name for d in staging_dirs(project) for name in os.listdir(project / d)]
        seen.append((meta, staged))
        msg = "its meta.json is not for this key"
        raise ArchiveError(msg)

    before = snapshot(project.parent)
    with pytest.raises(ArchiveError, match="not for this key"):
        unpack(artifact, project, allowed=allow_out, skip=refuse)
    assert seen == [(b"{}", [])]
    assert snapshot(project.parent) == before
    assert staging_dirs(project) == []

    unpack(artifact, project, allowed=allow_out, skip=lambda meta: {"out/keep.txt"})
    assert (project / "out/keep.txt").read_bytes() == b"old output\n"
    assert (project / "out/a").read_bytes() == b"new"


def _large_artifact(extra: list[tuple[tarfile.TarInfo, bytes]] | None = None) -> bytes:
    """Four outputs of 1 MiB (one replaces out/keep.txt), then ``extra``: staged long before the
    end of the stream, where the damage shows."""
    rng = random.Random(11)
    members = [file_(f"out/{name}", rng.randbytes(1 << 20)) for name in ("a", "b", "c")]
    members.append(file_("out/keep.txt", rng.randbytes(1 << 20)))
    return ZSTD.compress(tar_bytes([*members, *(extra or [])]))


LATE: dict[str, tuple[Callable[[], bytes], str]] = {
    "bit flipped in the middle": (lambda: _flip(_large_artifact(), 2 << 20), "checksum"),
    "cut at two thirds": (
        lambda: (b := _large_artifact())[: len(b) * 2 // 3],
        "truncated|unexpected end of data",
    ),
    "hostile entry last": (
        lambda: _large_artifact([link_("out/z", "../../outside")]),
        "outside the project",
    ),
    "entry through a link last": (
        lambda: _large_artifact([link_("out/d", "."), file_("out/d/a")]),
        "placed through symlink",
    ),
}


@pytest.mark.parametrize("case", list(LATE), ids=list(LATE))
def test_damage_at_the_end_of_a_large_artifact_places_nothing(
    tmp_path: Path, project: Path, case: str, staging: str
) -> None:
    make_bytes, match = LATE[case]
    artifact = tmp_path / "artifact.tar.zst"
    artifact.write_bytes(make_bytes())

    assert_refused(artifact, project, match=match)


def test_an_artifact_other_than_its_record_places_nothing(tmp_path: Path, project: Path) -> None:
    recorded = build(tmp_path, [file_("out/keep.txt", b"recorded")])
    checksum = digest_file(recorded)
    other = tmp_path / "other.tar.zst"  # valid zstd and tar: only the store's checksum differs
    other.write_bytes(ZSTD.compress(tar_bytes([file_("out/keep.txt", b"swapped!")])))
    before = snapshot(project.parent)

    with pytest.raises(ArchiveError, match="does not match its record"):
        unpack(other, project, allowed=allow_out, checksum=checksum)

    assert snapshot(project.parent) == before
    assert staging_dirs(project) == []
    assert read(recorded).checksum == checksum
    unpack(recorded, project, allowed=allow_out, checksum=checksum)
    assert (project / "out/keep.txt").read_bytes() == b"recorded"


# --- hostile artifacts ------------------------------------------------------------------------


def test_hand_built_baseline_is_accepted(tmp_path: Path, project: Path) -> None:
    # The hostile cases below differ from this one by the one entry they are about.
    artifact = build(tmp_path, [dir_("out"), file_("out/a", b"A"), link_("out/l", "a")])

    unpack(artifact, project, allowed=allow_out)

    assert (project / "out/a").read_bytes() == b"A"
    assert os.readlink(project / "out/l") == "a"


HOSTILE = {
    "absolute path": ([file_("/tmp/cachehook-evil")], "absolute"),
    "dot-dot escape": ([file_("../escape")], "'..'"),
    "dot-dot inside a path": ([file_("out/../../x")], "'..'"),
    "dot segment": ([file_("out/./x")], "'.'"),
    "backslash": ([file_("out\\..\\x")], "backslash"),
    "symlink to absolute path": ([link_("out/l", "/etc/passwd")], "absolute"),
    "symlink up and out": ([link_("out/l", "../../outside")], "outside the project"),
    "file through symlink leaving root": (
        [link_("lnk", ".."), file_("lnk/evil")],
        "placed through symlink",
    ),
    "file through symlink inside root": (
        [dir_("out/sub"), link_("out/sub/lnk", ".."), file_("out/sub/lnk/evil")],
        "placed through symlink",
    ),
    "file through symlink listed later": (
        [file_("out/d/evil"), link_("out/d", "../../outside")],
        "placed through|outside",
    ),
    "file through symlink differing in case": (
        [link_("out/a", "."), file_("out/A/x")],
        "placed through symlink",
    ),
    "dot-dot after a link differing in case": (
        [link_("y", "."), link_("x", "Y/..")],
        "outside the project",
    ),
    "file below a file": ([file_("out/f"), file_("out/f/g")], "placed through file"),
    "dot-dot after a link to the root": (
        [link_("y", "."), link_("x", "y/..")],
        "outside the project",
    ),
    "symlink loop": ([link_("out/a", "b"), link_("out/b", "a")], "loop"),
    "hard link": ([file_("out/a"), link_("out/h", "out/a", tarfile.LNKTYPE)], "hard link"),
    "fifo": ([special_("out/fifo", tarfile.FIFOTYPE)], "FIFO"),
    "character device": ([special_("out/null", tarfile.CHRTYPE)], "character device"),
    "block device": ([special_("out/sda", tarfile.BLKTYPE)], "block device"),
    "duplicate entry": ([file_("out/a", b"1"), file_("out/a", b"2")], "twice"),
    "directory then file at one path": ([dir_("out/a"), file_("out/a")], "twice"),
    "second meta.json": ([file_(META_PATH)], "twice"),
    "other .cachehook entry": ([file_(".cachehook/hook.sh")], "unexpected entry"),
    "empty path": ([dir_("/")], "empty"),
    "NUL in a path": ([with_pax(file_("out/a"), path="out/a\x00b")], "NUL"),
    "NUL in a symlink target": ([with_pax(link_("out/l", "a"), linkpath="a\x00b")], "NUL"),
    "negative size": ([with_pax(file_("out/a"), size="-1024"), file_("out/b")], "negative"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_entry_is_refused_and_nothing_is_written(
    tmp_path: Path, project: Path, case: str
) -> None:
    members, match = HOSTILE[case]
    # One good entry first, so a half-restore would show.
    artifact = build(tmp_path, [file_("out/good"), *members])

    assert_refused(artifact, project, match=match)


@pytest.mark.parametrize(
    "member",
    [file_("pyproject.toml", b"pwned"), file_("src/app.py", b"pwned"), dir_("src"), dir_("out/x")],
    ids=["pyproject.toml", "src/app.py", "dir src", "dir out/x"],
)
def test_entry_not_allowed_by_the_predicate_is_refused(
    tmp_path: Path, project: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    # 'out' itself is a parent of the allowed 'out/good', so it is accepted.
    artifact = build(tmp_path, [dir_("out"), file_("out/good"), member])

    assert_refused(artifact, project, allowed=lambda p: p == "out/good", match="not an output")


def test_directory_that_is_a_parent_of_an_allowed_entry_is_accepted(
    tmp_path: Path, project: Path
) -> None:
    artifact = build(tmp_path, [dir_("out"), dir_("out/gen"), file_("out/gen/a")])

    unpack(artifact, project, allowed=lambda p: p == "out/gen/a")

    assert (project / "out/gen/a").read_bytes() == b"data"


@pytest.mark.parametrize(
    ("members", "limits", "match"),
    [
        ([file_(f"out/{i}") for i in range(5)], Limits(max_entries=4), "more than 4 entries"),
        (
            [file_("out/a", b"x" * 600), file_("out/b", b"x" * 600)],
            Limits(max_total_bytes=1000),
            "1000 bytes",
        ),
        ([file_("out/" + "n" * 60)], Limits(max_path_length=50), "longer than 50"),
        ([file_("out/" + "n/" * 2047 + "n")], Limits(), "longer than 4096"),
        ([link_("out/l", "a/" * 30)], Limits(max_path_length=50), "longer than 50"),
        ([file_(LOG_PATH, b"x" * 200)], Limits(max_log_bytes=100), "larger than 100"),
    ],
    ids=["entries", "total size", "path length", "default path length", "link length", "log"],
)
def test_limits_are_enforced(
    tmp_path: Path,
    project: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    limits: Limits,
    match: str,
) -> None:
    artifact = build(tmp_path, members)

    assert_refused(artifact, project, limits=limits, match=match)


def test_decompression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    # 64 MiB of zeros is a ~2 KiB artifact; the walk must stop at the limit, not expand it all.
    info = tarfile.TarInfo("out/bomb")
    info.size = 64 * 1024 * 1024
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*_with_stream(file_(META_PATH, b"{}")))
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    blob = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(raw.getvalue())

    with pytest.raises(ArchiveError, match="more than 1048576 bytes"):
        read(io.BytesIO(blob), limits=Limits(max_total_bytes=1024 * 1024))
    assert len(blob) < 100_000


def test_missing_meta_is_refused(tmp_path: Path, project: Path) -> None:
    assert_refused(build(tmp_path, [file_("out/a")], with_meta=False), project, match="meta.json")


@pytest.mark.parametrize(
    ("header_maker", "match"),
    [
        (lambda: _gnu_long_name(), "GNU long name"),
        (lambda: _pax({"comment": "c"}, global_=True), "global PAX header"),
        (lambda: _pax({"comment": "c" * 20_000}), "PAX header of"),
        (lambda: _pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}), "sparse"),
    ],
    ids=["gnu long name", "global pax", "huge pax", "pax sparse"],
)
def test_tar_extensions_are_refused_before_tarfile_acts_on_them(
    tmp_path: Path, project: Path, header_maker: Callable[[], bytes], match: str
) -> None:
    artifact = tmp_path / "artifact.tar.zst"
    artifact.write_bytes(ZSTD.compress(header_maker()))

    assert_refused(artifact, project, match=match)


def _gnu_long_name() -> bytes:
    return tar_bytes([file_("out/" + "n" * 200)], fmt=tarfile.GNU_FORMAT)


def _pax(headers: dict[str, str], *, global_: bool = False) -> bytes:
    raw = io.BytesIO()
    global_headers = headers if global_ else None
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, pax_headers=global_headers
    ) as tar:
        tar.addfile(*_with_stream(file_(META_PATH, b"{}")))
        info, data = file_("out/a", b"\x00" * 1024)
        info.pax_headers = {} if global_ else headers
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _good_artifact_bytes() -> bytes:
    return ZSTD.compress(tar_bytes([file_("out/a", os.urandom(50_000))]))


# meta.json header + data, out/a header + data: the tar stream of one output is 4 blocks long.
ONE_OUTPUT = 4 * tarfile.BLOCKSIZE
CORRUPT: dict[str, tuple[Callable[[], bytes], str]] = {
    "garbage": (lambda: b"PK\x03\x04" + os.urandom(4096), "not a zstd frame"),
    "empty": (lambda: b"", "empty"),
    "zstd of garbage": (lambda: ZSTD.compress(os.urandom(4096)), "corrupt"),
    "zstd of nothing": (lambda: ZSTD.compress(b""), "truncated"),
    "zstd without checksum": (
        lambda: zstandard.ZstdCompressor().compress(tar_bytes([file_("out/a")])),
        "no zstd checksum",
    ),
    "cut in half": (lambda: (b := _good_artifact_bytes())[: len(b) // 2], "truncated"),
    "checksum cut off": (lambda: _good_artifact_bytes()[:-4], "truncated"),
    "last byte cut off": (lambda: _good_artifact_bytes()[:-1], "truncated"),
    "bit flipped": (lambda: _flip(_good_artifact_bytes(), 2000), "checksum"),
    "trailing garbage": (lambda: _good_artifact_bytes() + b"garbage", "after its zstd frame"),
    "second frame": (
        lambda: _good_artifact_bytes() + _good_artifact_bytes(),
        "after its zstd frame",
    ),
    "tar cut at a member boundary": (
        lambda: ZSTD.compress(tar_bytes([file_("out/a"), file_("out/b")])[:ONE_OUTPUT]),
        "truncated or corrupt: empty header",
    ),
    "tar cut inside a member": (
        lambda: ZSTD.compress(tar_bytes([file_("out/a", b"x" * 5000)])[:3000]),
        "unexpected end of data",
    ),
    "garbage header after a member": (
        lambda: ZSTD.compress(
            tar_bytes([file_("out/a")])[:ONE_OUTPUT] + os.urandom(512) + bytes(10240)
        ),
        "truncated or corrupt: (bad checksum|invalid header)",
    ),
    "no end-of-archive blocks": (
        lambda: ZSTD.compress(tar_bytes([file_("out/a")])[:ONE_OUTPUT] + bytes(512)),
        "truncated",
    ),
    "data after the end of the tar": (
        lambda: ZSTD.compress(tar_bytes([file_("out/a")]) + b"trailing" * 100),
        "after the end of its tar",
    ),
}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


@pytest.mark.parametrize("case", list(CORRUPT), ids=list(CORRUPT))
def test_corrupt_artifact_is_an_archive_error(tmp_path: Path, project: Path, case: str) -> None:
    make_bytes, match = CORRUPT[case]
    artifact = tmp_path / "artifact.tar.zst"
    artifact.write_bytes(make_bytes())

    with pytest.raises(ArchiveError, match=match):
        read(io.BytesIO(artifact.read_bytes()))
    assert_refused(artifact, project, match=match)


def test_missing_artifact_is_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot open"):
        read(tmp_path / "nope.tar.zst")


class Trickle(io.BytesIO):
    """A stream that returns a few bytes per read, like a slow pipe."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.step if size is None or size < 0 else min(size, self.step))


def test_short_reads_from_the_source_are_handled(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    data = io.BytesIO()
    pack(data, tmp_path / "src", OUTPUTS, meta=b"{}", log=b"log")

    assert read(Trickle(data.getvalue())) == read(io.BytesIO(data.getvalue()))
    with pytest.raises(ArchiveError, match="truncated"):
        read(Trickle(data.getvalue()[:-1]))
    with pytest.raises(ArchiveError, match="after its zstd frame"):  # zstd stops at the end
        read(Trickle(data.getvalue() + b"\x00", step=1))


@pytest.mark.parametrize("at", [0, 30, 2 << 20], ids=["magic", "first block", "middle"])
def test_a_damaged_store_file_is_named_as_such_wherever_the_damage(
    tmp_path: Path, project: Path, at: int, staging: str
) -> None:
    good = _large_artifact()
    artifact = tmp_path / "artifact.tar.zst"
    artifact.write_bytes(_flip(good, at))

    with pytest.raises(ArchiveError, match=r"does not match its record|not a zstd frame"):
        unpack(artifact, project, allowed=allow_all, checksum=digest_bytes(good))
    assert staging_dirs(project) == []


# --- staging on two cores (issue 11) ----------------------------------------------------------


def tree(top: Path) -> dict[str, tuple[object, ...]]:
    """Everything under ``top`` as a restore leaves it: type, mode and content."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = path.read_bytes()
            else:
                detail = None
            seen[str(path.relative_to(top))] = (stat.S_IFMT(st.st_mode), st.st_mode, detail)
    return seen


def staging_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "cachehook-stage"]


def test_every_way_of_staging_places_the_same_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    _write(src / "out/big.bin", os.urandom(3 * 1024 * 1024 + 17), 0o751)  # several buffers
    _write(src / "out/empty.bin", b"", 0o600)
    _write(src / "out/tail.bin", os.urandom(5000), 0o640)
    paths = [*OUTPUTS, "out/big.bin", "out/empty.bin", "out/tail.bin"]
    artifact = tmp_path / "a.tar.zst"
    pack(artifact, src, paths, meta=b"{}", log=b"")
    placed: dict[str, object] = {}
    trees: dict[str, object] = {}

    for name, writer_from in STAGING.items():
        monkeypatch.setattr(_placer, "_WRITER_FROM", writer_from)
        dst = tmp_path / name
        dst.mkdir()
        restored = unpack(artifact, dst, allowed=allow_out)
        trees[name] = tree(dst)
        placed[name] = sorted(
            (p.path, p.digest, p.stat.st_mode, p.stat.st_size) for p in restored.placed
        )
        assert staging_threads() == []

    assert trees["two threads"] == trees["serial"] == trees["switching"]
    assert placed["two threads"] == placed["serial"] == placed["switching"]
    assert trees["serial"] == {k: v for k, v in tree(src).items() if k.startswith("out")}


def _failing_write(fails: str, *, before: Callable[[], None] = lambda: None) -> Callable[..., int]:
    """os.write, failing for the staged file named ``fails`` (its order among the entries)."""
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if _placer._STAGING_PREFIX in name and name.endswith(f"/{fails}"):
            before()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    return write


def test_a_failed_write_is_the_serial_error_and_places_nothing(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    rng = random.Random(5)
    members = [file_(f"out/{name}", rng.randbytes(1 << 20)) for name in ("a", "b", "c", "d")]
    artifact = build(tmp_path, members)
    monkeypatch.setattr(os, "write", _failing_write("2"))  # out/c

    assert_refused(artifact, project, match=r"^cannot restore artifact: \[Errno 28\] No space")
    assert staging_threads() == []


def test_a_failed_write_comes_before_a_refusal_later_in_the_stream(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, staging: str
) -> None:
    # The writer thread fails only once the reading thread has met the FIFO after it: the
    # error is still the write's, as a serial restore reports it.
    artifact = build(tmp_path, [file_("out/a", bytes(1 << 20)), special_("out/f", b"6")])
    reading = threading.current_thread()
    waiting = threading.Event()
    real_wait = _placer._Writer.wait

    def wait(writer: _placer._Writer) -> None:
        waiting.set()
        real_wait(writer)

    def until_the_reader_waits() -> None:
        if threading.current_thread() is not reading:
            assert waiting.wait(timeout=60)

    monkeypatch.setattr(_placer._Writer, "wait", wait)
    monkeypatch.setattr(os, "write", _failing_write("0", before=until_the_reader_waits))

    assert_refused(artifact, project, match=r"^cannot restore artifact: \[Errno 28\] No space")
    assert waiting.is_set() == (staging == "two threads")
    assert staging_threads() == []


def test_interrupt_while_the_writer_thread_runs_stops_it_and_places_nothing(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_placer, "_WRITER_FROM", 0)
    rng = random.Random(7)
    artifact = build(tmp_path, [file_(f"out/{i}", rng.randbytes(1 << 20)) for i in range(6)])
    real_stage = _placer._Writer.stage
    staged: list[str] = []

    def stage_then_interrupt(writer: _placer._Writer, entry: object, *args: object) -> None:
        staged.append(str(entry))
        if len(staged) == 3:
            raise KeyboardInterrupt
        real_stage(writer, entry, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_placer._Writer, "stage", stage_then_interrupt)
    before = snapshot(project.parent)
    with pytest.raises(KeyboardInterrupt):
        unpack(artifact, project, allowed=allow_all)

    assert staging_threads() == []
    assert snapshot(project.parent) == before
    assert staging_dirs(project) == []


# Run in a child with a file size limit: a real write that fails (EFBIG) part way through.
FILE_SIZE_LIMIT = """
import json, resource, signal, sys, threading
from pathlib import Path
from cachehook import _placer
from cachehook.archive import unpack
from cachehook.errors import ArchiveError

_placer._WRITER_FROM = int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    unpack(Path(sys.argv[1]), Path(sys.argv[2]), allowed=lambda path: path.startswith("out/"))
    error = ""
except ArchiveError as exc:
    error = str(exc)
print(json.dumps({"error": error, "threads": [t.name for t in threading.enumerate()]}))
"""


def test_a_write_past_the_file_size_limit_fails_alike_either_way(
    tmp_path: Path, project: Path
) -> None:
    rng = random.Random(3)
    sizes = {"out/a": 1 << 20, "out/b": 1 << 20, "out/c": 3 << 20, "out/d": 1 << 20}
    artifact = build(tmp_path, [file_(path, rng.randbytes(size)) for path, size in sizes.items()])
    before = snapshot(project.parent)
    errors: dict[str, str] = {}

    for name, writer_from in STAGING.items():
        argv = [
            sys.executable,
            "-c",
            FILE_SIZE_LIMIT,
            str(artifact),
            str(project),
            str(writer_from),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
        got = json.loads(done.stdout)
        errors[name] = got["error"]
        assert got["threads"] == ["MainThread"], name
        assert snapshot(project.parent) == before, name
        assert staging_dirs(project) == [], name

    assert errors["serial"] == "cannot restore artifact: [Errno 27] File too large"
    assert errors["two threads"] == errors["switching"] == errors["serial"]
