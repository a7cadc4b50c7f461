"""The path rules of ``cachehook._entries``: names compared as a case-insensitive disk sees them."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from cachehook._entries import Entry, _fold, check_tree
from cachehook.errors import ArchiveError


def _full_fold(path: str) -> str:
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", path).casefold())


def test_an_ascii_name_folds_as_unicode_folds_it() -> None:
    every = "".join(map(chr, range(128)))
    assert _fold(every) == _full_fold(every)
    for code in range(128):
        assert _fold(chr(code)) == _full_fold(chr(code)), code


@pytest.mark.parametrize(
    ("blocker", "through"),
    [
        ("out/A", "out/a/x"),  # ASCII case
        ("out/\u212a", "out/k/x"),  # KELVIN SIGN casefolds to an ASCII k
        ("out/caf\u00e9", "out/cafe\u0301/x"),  # NFC and NFD spellings of one name
        ("out/STRASSE", "out/stra\u00dfe/x"),  # sharp s casefolds to ss
    ],
)
def test_nothing_is_placed_through_a_file_under_another_spelling(
    blocker: str, through: str
) -> None:
    entries = [Entry(blocker, "file", 0o644, 1), Entry(through, "file", 0o644, 1)]
    with pytest.raises(ArchiveError, match="is placed through file"):
        check_tree(entries)


def test_distinct_names_pass() -> None:
    check_tree([Entry("out/a", "file", 0o644, 1), Entry("out/b/x", "file", 0o644, 1)])


def test_ascii_names_do_not_import_unicodedata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "unicodedata")
    check_tree([Entry("out/A", "file", 0o644, 1), Entry("out/b/x", "file", 0o644, 1)])
    assert "unicodedata" not in sys.modules
