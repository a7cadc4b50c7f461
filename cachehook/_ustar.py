"""Tar headers as an artifact holds them, parsed without :mod:`tarfile` (issue 11).

An artifact's tar stream is what ``archive.pack`` writes with tarfile's PAX format: ustar
headers, and a PAX extended header before an entry whose path, link target or size does not fit
one. This module reads exactly that and refuses the rest by name (GNU long names, sparse files,
global headers, links, devices...), so a restore needs neither tarfile's import nor its
per-header work, and no extension is ever acted on before it is refused.
"""

from __future__ import annotations

from typing import NamedTuple

from cachehook._entries import show
from cachehook.errors import ArchiveError

__all__ = [
    "BLOCK",
    "DIR",
    "FILE",
    "PAX",
    "SYMLINK",
    "Header",
    "is_end",
    "parse_header",
    "parse_pax",
]

BLOCK = 512
FILE = b"0"
SYMLINK = b"2"
DIR = b"5"
PAX = b"x"
TYPE_NAMES = {
    b"\0": "old-style file",
    b"1": "hard link",
    b"3": "character device",
    b"4": "block device",
    b"6": "FIFO",
    b"7": "contiguous file",
}
# Refused as headers, before anything reads their payload.
REFUSED_HEADERS = {
    b"S": "sparse file",
    b"L": "GNU long name",
    b"K": "GNU long link",
    b"g": "global PAX header",
    b"X": "Solaris extended header",
}
_ZERO_BLOCK = bytes(BLOCK)
_CHECKSUM_FIELD = slice(148, 156)
_CHECKSUM_SPACES = 8 * 0x20


class Header(NamedTuple):
    """One ustar header: its type byte, and what a PAX header may override."""

    type: bytes
    name: str
    linkname: str
    mode: int
    size: int


def is_end(block: bytes) -> bool:
    return block == _ZERO_BLOCK


def parse_header(block: bytes) -> Header:
    """The header in ``block`` (512 bytes, not all zeros), its checksum checked.

    Raises:
        ArchiveError: a short block, a bad checksum or a field that is not an octal number or
            UTF-8 text.
    """
    if len(block) != BLOCK:
        problem = "empty header" if not block else "truncated header"
        raise _corrupt(problem)
    stored = _octal(block[_CHECKSUM_FIELD])
    unsigned = sum(block) - sum(block[_CHECKSUM_FIELD]) + _CHECKSUM_SPACES
    if stored != unsigned and stored != _signed_checksum(block):
        problem = "bad checksum"
        raise _corrupt(problem)
    kind = block[156:157]
    try:
        name = _text(block[0:100])
        prefix = _text(block[345:500]) if block[257:263] == b"ustar\x00" else ""
        linkname = _text(block[157:257])
    except UnicodeDecodeError as exc:
        msg = f"artifact has a tar header that is not UTF-8: {exc}"
        raise ArchiveError(msg) from None
    if prefix:
        name = f"{prefix}/{name}"
    if kind == DIR:
        name = name.rstrip("/")
    return Header(kind, name, linkname, _octal(block[100:108]), _octal(block[124:136]))


def parse_pax(data: bytes, header: Header) -> Header:
    """``header`` with the PAX records in ``data`` applied (``path``, ``linkpath``, ``size``;
    other records, such as ``mtime``, are ignored).

    Raises:
        ArchiveError: a malformed record, text that is not UTF-8, a size that is not a
            number, or a sparse-file record.
    """
    name, linkname, size = header.name, header.linkname, header.size
    pos = 0
    while pos < len(data):
        keyword, value, pos = _record(data, pos)
        if keyword == "path":
            name = value.rstrip("/") if header.type == DIR else value
        elif keyword == "linkpath":
            linkname = value
        elif keyword == "size":
            size = _pax_size(value, name)
        elif keyword.startswith("GNU.sparse."):
            msg = f"entry {show(name)}: sparse files are not allowed"
            raise ArchiveError(msg)
    return header._replace(name=name, linkname=linkname, size=size)


def _record(data: bytes, pos: int) -> tuple[str, str, int]:
    # "<length> <keyword>=<value>\n", the length counting the whole record.
    space = data.find(b" ", pos, pos + 20)
    digits = data[pos:space]
    if space < 0 or not digits.isdigit():
        raise _bad_pax()
    end = pos + int(digits)
    equals = data.find(b"=", space + 1, end)
    if end > len(data) or equals < 0 or data[end - 1 : end] != b"\n":
        raise _bad_pax()
    try:
        keyword = data[space + 1 : equals].decode("utf-8")
        value = data[equals + 1 : end - 1].decode("utf-8")
    except UnicodeDecodeError:
        msg = "artifact has a PAX header that is not UTF-8"
        raise ArchiveError(msg) from None
    return keyword, value, end


def _pax_size(value: str, name: str) -> int:
    if value.startswith("-") and value[1:].isdigit():
        msg = f"artifact has a negative size (at {show(name)})"
        raise ArchiveError(msg)
    if not (value.isascii() and value.isdigit()):
        raise _bad_pax()
    return int(value)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8")


def _octal(field: bytes) -> int:
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not (digits.isdigit() and b"8" not in digits and b"9" not in digits):
        problem = "invalid header"  # base-256 numbers too: pack never writes them
        raise _corrupt(problem)
    return int(digits, 8)


def _signed_checksum(block: bytes) -> int:
    # Some old tars summed signed bytes; tarfile accepts either.
    signed = sum(b - 256 if b > 127 else b for b in block)
    return signed - sum(b - 256 if b > 127 else b for b in block[_CHECKSUM_FIELD]) + 256


def _corrupt(problem: str) -> ArchiveError:
    return ArchiveError(f"artifact is truncated or corrupt: {problem}")


def _bad_pax() -> ArchiveError:
    return ArchiveError("artifact has a malformed PAX header")
