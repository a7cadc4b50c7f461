"""Tar headers read without tarfile (issue 11): what pack writes is read as tarfile reads it;
anything else is refused by name, through ``archive.read`` as a restore would meet it."""

from __future__ import annotations

import io
import tarfile

import pytest
import zstandard

from cachehook._ustar import BLOCK, parse_header, parse_pax
from cachehook.archive import META_PATH, read
from cachehook.errors import ArchiveError

ZSTD = zstandard.ZstdCompressor(write_checksum=True)


def _tar(*members: tarfile.TarInfo, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        meta = tarfile.TarInfo(META_PATH)
        meta.size = 2
        tar.addfile(meta, io.BytesIO(b"{}"))
        for member in members:
            tar.addfile(member, io.BytesIO(bytes(member.size)))
    return raw.getvalue()


def _member(name: str, *, size: int = 3, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o640
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(format=tarfile.USTAR_FORMAT)[:BLOCK]


def _read(tar: bytes) -> list[tuple[str, str, int, int]]:
    contents = read(io.BytesIO(ZSTD.compress(tar)))
    return [(e.path, e.kind, e.mode, e.size) for e in contents.entries]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_long_paths_are_read_as_tarfile_reads_them(fmt: int) -> None:
    # PAX: a path record; ustar: the name split into prefix and name.
    long_dir = "out/" + "d" * 120
    members = (_member(long_dir, size=0, kind=tarfile.DIRTYPE), _member(f"{long_dir}/f"))

    assert _read(_tar(*members, fmt=fmt)) == [
        (long_dir, "dir", 0o640, 0),
        (f"{long_dir}/f", "file", 0o640, 3),
    ]


def test_unknown_pax_records_are_ignored_and_size_applies() -> None:
    info = _member("out/a", size=5)
    info.pax_headers = {"mtime": "1.5", "comment": "é", "size": "5"}

    assert _read(_tar(info)) == [("out/a", "file", 0o640, 5)]


def test_a_header_whose_checksum_is_wrong_is_refused() -> None:
    block = bytearray(_header(_member("out/a")))
    block[0:1] = b"p"  # the name changes, the checksum does not

    with pytest.raises(ArchiveError, match="bad checksum"):
        parse_header(bytes(block))


def test_a_header_with_a_signed_checksum_is_accepted() -> None:
    block = bytearray(_header(_member("out/a")))
    block[4] = 0xE9  # a byte that is negative when signed, and no UTF-8
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    block[148:156] = b"%06o\x00 " % signed

    with pytest.raises(ArchiveError, match="not UTF-8"):  # checksum passes; the name does not
        parse_header(bytes(block))


@pytest.mark.parametrize(
    ("field", "value"), [(slice(124, 136), b"12345678901\x00"), (slice(100, 108), b"\x80" * 8)]
)
def test_a_number_that_is_not_octal_is_refused(field: slice, value: bytes) -> None:
    block = bytearray(_header(_member("out/a")))
    block[field] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)

    with pytest.raises(ArchiveError, match="invalid header"):
        parse_header(bytes(block))


@pytest.mark.parametrize(
    "records",
    [b"5 a=b", b"99 path=x\n", b"x path=y\n", b"10 pathx\n\n", b"12 size=12a\n", b"10 path=\xff\n"],
    ids=["no newline", "past the end", "no length", "no equals", "bad size", "not utf-8"],
)
def test_a_malformed_pax_record_is_refused(records: bytes) -> None:
    header = parse_header(_header(_member("out/a")))

    with pytest.raises(ArchiveError, match="PAX header"):
        parse_pax(records, header)


def _pax_block(records: bytes) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    return _header(info) + records + bytes(-len(records) % BLOCK)


def _meta_and(tail: bytes) -> bytes:
    return _tar()[: 2 * BLOCK] + tail + bytes(2 * BLOCK)


def test_two_pax_headers_in_a_row_are_refused() -> None:
    pax = _pax_block(b"14 path=out/b\n")
    with pytest.raises(ArchiveError, match="two PAX headers in a row"):
        _read(_meta_and(pax + pax + _header(_member("out/a", size=0))))


def test_a_pax_header_without_its_entry_is_refused() -> None:
    with pytest.raises(ArchiveError, match="PAX header without its entry"):
        _read(_meta_and(_pax_block(b"14 path=out/b\n")))


def test_an_old_style_file_entry_is_refused() -> None:
    with pytest.raises(ArchiveError, match="old-style file"):
        _read(_tar(_member("out/a", kind=tarfile.AREGTYPE)))


def test_a_pax_path_applies_to_the_entry_after_it() -> None:
    pax = _pax_block(b"18 path=out/other\n")

    assert _read(_meta_and(pax + _header(_member("out/a", size=0))))[0][0] == "out/other"


def _tarfile_entries(tar: bytes) -> list[tuple[str, int]] | None:
    """What tarfile itself reads from ``tar`` (name, size of each member), or None if it fails."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, ValueError, UnicodeError, OSError, EOFError):
        return None
    return [(m.name.rstrip("/"), m.size) for m in members if not m.name.startswith(".cachehook/")]


def test_damaged_headers_are_refused_or_read_as_tarfile_reads_them() -> None:
    # 400 seeded single-byte changes in the header and PAX blocks of a real artifact's tar:
    # each is refused with an ArchiveError (never another exception, which would be an
    # internal error) or, when read, names the same paths and sizes tarfile's own parser does.
    import random

    long_dir = "out/" + "d" * 120
    members = (_member("out/a"), _member(long_dir, size=0, kind=tarfile.DIRTYPE))
    tar = _tar(*members, _member(f"{long_dir}/f", size=700))
    headers = [i for i in range(0, len(tar), BLOCK) if tar[i + 257 : i + 262] == b"ustar"]
    offsets = [o for start in headers for o in range(start, start + BLOCK)]
    offsets += [o for start in headers for o in range(start + BLOCK, start + BLOCK + 64)]
    chance = random.Random(11)
    read_as_tarfile = refused = 0
    for _ in range(400):
        offset = chance.choice(offsets)
        damaged = bytearray(tar)
        damaged[offset] = chance.randrange(256)
        try:
            ours = _read(bytes(damaged))
        except ArchiveError:
            refused += 1
            continue
        theirs = _tarfile_entries(bytes(damaged))
        assert theirs is not None, f"byte {offset}: read by us, refused by tarfile"
        assert [(path, size) for path, _, _, size in ours] == theirs, f"byte {offset}"
        read_as_tarfile += 1
    assert refused  # both outcomes were exercised
    assert read_as_tarfile
