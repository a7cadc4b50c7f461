from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from cachehook import digests, hashing, statcache
from cachehook.errors import ConfigError, HashingError
from cachehook.hashing import (
    KEY_FORMAT_VERSION,
    Expansion,
    FileDigest,
    GlobSet,
    Manifest,
    StatCache,
    diff_manifests,
    digest_bytes,
    digest_file,
    expand_globs,
    hash_files,
    resolve_env,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)


def expand(root: Path, *patterns: str, **options: Any) -> Expansion:
    return expand_globs(root, GlobSet.compile(patterns), **options)


def files(root: Path, *patterns: str, **options: Any) -> list[str]:
    return list(expand(root, *patterns, **options).files)


def manifest(root: Path, patterns: tuple[str, ...] = ("**",), **fields: Any) -> Manifest:
    found = expand(root, *patterns).files
    defaults: dict[str, Any] = {
        "command": ("pytest", "-q"),
        "cwd": ".",
        "inputs": hash_files(root, found, StatCache(None)),
        "env": (("CI", digest_bytes(b"1")), ("HOME", "unset")),
        "outputs": ("dist/**",),
    }
    return Manifest(**{**defaults, **fields})


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the files the module actually reads."""
    calls: list[int] = []
    real = digests._digest_fd

    def spy(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(digests, "_digest_fd", spy)
    return calls


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every directory the module lists."""
    calls: list[str] = []
    real = os.scandir

    def spy(path: Any) -> Any:
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    return calls


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(
        root,
        {
            "pyproject.toml": "[project]\nname = 'demo'\n",
            "src/pkg/__init__.py": "",
            "src/pkg/core.py": "VALUE = 1\n",
            "src/pkg/sub/deep.py": "DEEP = 2\n",
            "src/pkg/data.json": "{}",
            "tests/test_core.py": "def test(): pass\n",
            "README.md": "# demo\n",
        },
    )
    return root


# --------------------------------------------------------------------------- digests


def test_digest_bytes_is_xxh3_128_hex() -> None:
    assert digest_bytes(b"") == "99aa06d3014798d86001c324468d497f"
    assert digest_bytes(b"a") != digest_bytes(b"b")


def test_digest_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB chunks and a tail
    (tmp_path / "big").write_bytes(data)
    assert digest_file(tmp_path / "big") == digest_bytes(data)


def test_digest_file_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(HashingError, match=r"nope\.bin"):
        digest_file(tmp_path / "nope.bin")


# --------------------------------------------------------------------------- globs


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("src/**/*.py", "src/a.py", True),  # '**' matches zero directories
        ("src/**/*.py", "src/x/y/b.py", True),
        ("src/**/*.py", "src/a.pyc", False),
        ("src/**/*.py", "other/src/a.py", False),
        ("**/*.py", "a.py", True),
        ("**/*.py", "x/y/a.py", True),
        ("*.py", "x/a.py", False),  # '*' never crosses '/'
        ("*.py", ".hidden.py", True),
        ("src/?.py", "src/a.py", True),
        ("src/?.py", "src/ab.py", False),
        ("a?b", "a/b", False),
        ("[ab].txt", "a.txt", True),
        ("[ab].txt", "c.txt", False),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("[a-c].txt", "b.txt", True),
        ("dist/**", "dist/a", True),
        ("dist/**", "dist/x/y", True),
        ("dist/**", "dist", False),
        ("dist", "dist", True),  # a bare name is that path only, never its contents
        ("dist", "dist/a", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("./src/*.py", "src/a.py", True),
        ("a.b", "axb", False),  # regex characters are literal
        ("f(1)+.txt", "f(1)+.txt", True),
    ],
)
def test_glob_matching(pattern: str, path: str, expected: bool) -> None:
    assert GlobSet.compile([pattern]).matches(path) is expected


def test_bang_patterns_exclude() -> None:
    globs = GlobSet.compile(["src/**", "!src/gen/**", "!**/*.tmp"])
    assert globs.matches("src/a.py")
    assert not globs.matches("src/gen/a.py")
    assert not globs.matches("src/x/y.tmp")
    assert globs.include_patterns == ("src/**",)
    assert globs.exclude_patterns == ("src/gen/**", "**/*.tmp")


def test_a_globset_without_includes_matches_nothing() -> None:
    assert not GlobSet.compile(["!a"]).matches("a")
    assert not GlobSet.compile([]).matches("a")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty"),
        ("!", "empty"),
        ("/tmp/x", "must be relative to the project root"),
        ("C:/x", "must be relative to the project root"),
        ("../x", r"'\.\.'"),
        ("src/../../x", r"'\.\.'"),
        ("src\\a.py", "backslash"),
        ("src/[ab.py", r"unbalanced '\['"),
        ("[z-a].txt", "invalid pattern"),
        ("dist/", r"use 'dist/\*\*'"),
        (".", "project root"),
        ("./", "project root"),
    ],
)
def test_bad_patterns_raise_config_error_naming_them(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        GlobSet.compile(["ok/**", pattern], what="--input")
    assert str(info.value).startswith(f"--input {pattern!r}: ")


def test_config_error_message_format() -> None:
    with pytest.raises(ConfigError) as info:
        GlobSet.compile(["/tmp/x"], what="--output")
    assert str(info.value) == "--output '/tmp/x': must be relative to the project root"


def test_globsets_compare_by_patterns() -> None:
    assert GlobSet.compile(["a", "!b"]) == GlobSet.compile(["a", "!b"])
    assert GlobSet.compile(["a"]) != GlobSet.compile(["b"])
    assert "!b" in repr(GlobSet.compile(["a", "!b"]))


# --------------------------------------------------------------------------- expansion


def test_expand_recurses_sorts_and_lists_files_only(project: Path) -> None:
    (project / "src" / "empty_dir").mkdir()
    assert files(project, "src/**") == [
        "src/pkg/__init__.py",
        "src/pkg/core.py",
        "src/pkg/data.json",
        "src/pkg/sub/deep.py",
    ]
    assert files(project, "**/*.py", "!tests/**") == [
        "src/pkg/__init__.py",
        "src/pkg/core.py",
        "src/pkg/sub/deep.py",
    ]
    assert files(project, "src/*/*.py") == ["src/pkg/__init__.py", "src/pkg/core.py"]


def test_expand_walks_only_the_literal_prefix(project: Path, scanned: list[str]) -> None:
    write(project, {"node_modules/x/index.py": "", "docs/conf.py": ""})
    assert files(project, "src/pkg/sub/*.py") == ["src/pkg/sub/deep.py"]
    walked = {Path(p).relative_to(project).as_posix() for p in scanned}
    assert walked <= {".", "src", "src/pkg", "src/pkg/sub"}


def test_expand_of_literal_paths_does_not_walk(project: Path, scanned: list[str]) -> None:
    assert files(project, "pyproject.toml", "src/pkg/core.py") == [
        "pyproject.toml",
        "src/pkg/core.py",
    ]
    assert scanned == []


def test_expand_never_walks_dot_git(project: Path, scanned: list[str]) -> None:
    write(project, {".git/HEAD": "ref", ".git/hooks/x.py": "", "sub/.git/config": ""})
    found = files(project, "**")
    assert not any(p.startswith(".git/") or "/.git/" in p for p in found)
    assert not any(".git" in Path(p).parts for p in scanned)


def test_exclude_globset_removes_outputs(project: Path, scanned: list[str]) -> None:
    write(project, {"dist/a.whl": "w", "dist/keep/b.txt": "k", "dist/sub/c.txt": "c"})
    outputs = GlobSet.compile(["dist/**"])
    assert not any(p.startswith("dist/") for p in files(project, "**", exclude=outputs))
    assert not any("dist" in Path(p).parts for p in scanned)  # pruned, not filtered
    partial = GlobSet.compile(["dist/**", "!dist/keep/**"])
    found = files(project, "dist/**", exclude=partial)
    assert found == ["dist/keep/b.txt"]


def test_skip_dirs_are_never_walked(project: Path, scanned: list[str]) -> None:
    write(project, {".cache/cachehook/blob.py": "x"})
    found = files(project, "**/*.py", skip_dirs=[project / ".cache" / "cachehook"])
    assert ".cache/cachehook/blob.py" not in found
    assert "src/pkg/core.py" in found
    assert not any("cachehook" in Path(p).parts for p in scanned)


def test_unmatched_patterns_are_reported(project: Path) -> None:
    expansion = expand(project, "src/**/*.py", "nope/*.c", "missing.txt", "src/pkg/*.py")
    assert expansion.unmatched == ("nope/*.c", "missing.txt")
    assert "src/pkg/core.py" in expansion.files


def test_a_pattern_matching_only_excluded_files_is_unmatched(project: Path) -> None:
    expansion = expand(project, "tests/**", "!tests/*.py")
    assert expansion == Expansion(files=(), unmatched=("tests/**",))


def test_a_literal_directory_is_not_a_file(project: Path) -> None:
    assert expand(project, "src").unmatched == ("src",)


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(HashingError, match="not a directory"):
        expand(tmp_path / "nope", "**")


# --------------------------------------------------------------------------- gitignore


def test_gitignored_files_are_skipped_and_ignored_dirs_not_walked(
    project: Path, scanned: list[str]
) -> None:
    write(
        project,
        {
            ".gitignore": "# build artefacts\n\n*.log\nbuild/\n__pycache__/\n",
            "app.log": "",
            "src/pkg/trace.log": "",
            "build/out.py": "",
            "src/pkg/__pycache__/core.cpython-311.pyc": "",
        },
    )
    found = files(project, "**")
    assert not any(p.endswith(".log") or "build/" in p or "__pycache__" in p for p in found)
    assert ".gitignore" in found
    assert "src/pkg/core.py" in found
    assert not any({"build", "__pycache__"} & set(Path(p).parts) for p in scanned)
    everything = files(project, "**", respect_gitignore=False)
    assert {"app.log", "build/out.py", "src/pkg/trace.log"} <= set(everything)


def test_gitignored_files_named_literally_are_kept(project: Path) -> None:
    write(project, {".gitignore": "*.log\nbuild/\n", "app.log": "", "build/gen/out.py": ""})
    assert files(project, "**/*.log", "app.log", "build/gen/out.py") == [
        "app.log",
        "build/gen/out.py",
    ]


def test_a_literal_directory_prefix_reaches_into_an_ignored_directory(project: Path) -> None:
    write(
        project,
        {
            ".gitignore": "build/\n*.pyc\n",
            "build/gen/a.py": "",
            "build/gen/b.pyc": "",
            "build/other/c.py": "",
        },
    )
    assert files(project, "build/gen/*") == ["build/gen/a.py"]
    assert files(project, "build/**") == ["build/gen/a.py", "build/other/c.py"]
    # Another pattern naming 'build' does not drag the rest of the tree in with it.
    assert "build/other/c.py" not in files(project, "**/*.py", "build/gen/*.py")


def test_nested_gitignore_and_negation(project: Path) -> None:
    write(
        project,
        {
            ".gitignore": "*.txt\n!important.txt\n",
            "a.txt": "",
            "important.txt": "",
            "sub/b.txt": "",
            "sub/keep.txt": "",
            "sub/.gitignore": "!keep.txt\nlocal.py\n",
            "sub/local.py": "",
            "local.py": "",
        },
    )
    assert files(project, "**/*.txt", "**/*.py", "!src/**", "!tests/**") == [
        "important.txt",
        "local.py",  # sub/.gitignore applies under sub/ only
        "sub/keep.txt",
    ]


@pytest.mark.parametrize(
    ("rules", "ignored", "kept"),
    [
        ("logs/\n", ["logs/a"], ["x/logs"]),  # trailing '/': directories only
        ("/gen\n", ["gen/a"], ["sub/gen/a"]),  # leading '/': anchored
        ("/gen\n", ["gen"], ["sub/gen"]),
        ("docs/_build\n", ["docs/_build/a"], ["x/docs/_build/a"]),  # middle '/': anchored
        ("**/tmp\n", ["tmp/a", "x/y/tmp/b"], ["tmpx/a"]),
        ("a/**/z\n", ["a/z", "a/b/c/z"], ["b/a/z"]),
        ("out/**\n", ["out/a", "out/b/c"], []),
        ("*.py[cod]\n", ["m.pyc", "d/m.pyo"], ["m.py"]),
        ("\\#hash\n", ["#hash"], []),
        ("trailing  \n", ["trailing"], []),
        ("*\n!*.keep\n", ["a"], ["b.keep"]),
        ("foo\n", ["foo", "d/foo/x"], ["foobar", "d/foobar"]),
    ],
)
def test_gitignore_rules(tmp_path: Path, rules: str, ignored: list[str], kept: list[str]) -> None:
    root = tmp_path / "r"
    write(root, {".gitignore": rules, **dict.fromkeys(ignored + kept, "")})
    found = set(files(root, "**"))
    assert not found & set(ignored)
    assert set(kept) <= found


def test_git_info_exclude_is_honoured(project: Path) -> None:
    write(project, {".git/info/exclude": "secret.txt\n", "secret.txt": "", "public.txt": ""})
    found = files(project, "*.txt")
    assert found == ["public.txt"]


def test_gitignore_above_the_root_applies_inside_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(
        repo,
        {
            ".git/HEAD": "ref: refs/heads/main\n",
            ".gitignore": "*.tmp\n/pkg/generated/\n",
            "pkg/a.py": "",
            "pkg/b.tmp": "",
            "pkg/generated/c.py": "",
        },
    )
    assert files(repo / "pkg", "**") == ["a.py"]


# --------------------------------------------------------------------------- symlinks


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlinks_are_files_and_symlinked_dirs_are_not_followed_by_default(project: Path) -> None:
    (project / "link.py").symlink_to("src/pkg/core.py")
    (project / "dirlink").symlink_to("src", target_is_directory=True)
    (project / "broken").symlink_to("does-not-exist")
    found = files(project, "**")
    assert {"link.py", "dirlink", "broken"} <= set(found)
    assert not any(p.startswith("dirlink/") for p in found)
    assert files(project, "dirlink/**") == []
    assert files(project, "dirlink/pkg/core.py") == []

    digests = {d.path: d for d in hash_files(project, ["link.py", "broken"], StatCache(None))}
    content = digest_file(project / "src/pkg/core.py")
    assert digests["link.py"].digest == digest_bytes(
        b"symlink:src/pkg/core.py\0file:" + content.encode() + b"-"
    )
    assert digests["broken"].digest == digest_bytes(b"symlink:does-not-exist")
    assert digests["link.py"].executable is False


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_inputs_walk_into_a_symlinked_directory_once(project: Path) -> None:
    (project / "dirlink").symlink_to("src", target_is_directory=True)
    (project / "src" / "up").symlink_to("..", target_is_directory=True)  # holds itself
    (project / "src" / "pkg" / "again").symlink_to("..", target_is_directory=True)
    found = files(project, "dirlink/**/*.py", follow_symlinks=True)
    inside = ["src/" + p.removeprefix("dirlink/") for p in found]
    assert inside == files(project, "src/**/*.py") == sorted(inside)
    assert not any("/again/" in p for p in found)  # one level of links only
    assert "src/up/README.md" not in files(project, "**", follow_symlinks=True)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_an_edited_symlink_target_changes_the_digest_through_the_stat_cache(
    tmp_path: Path, reads: list[int]
) -> None:
    """Finding 3 of issue 10: the link's own lstat never changes when its target is edited."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ruff.toml").write_text("line-length = 100\n")
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "ruff.toml").symlink_to("../../shared/ruff.toml")  # outside the project
    cache = StatCache(None)
    before = hash_files(project, ["pkg/ruff.toml"], cache)[0].digest
    link_stat = os.lstat(project / "pkg" / "ruff.toml")
    (shared / "ruff.toml").write_text("line-length = 120\n")
    os.utime(shared / "ruff.toml", ns=(1, 1))  # an old mtime: only size/ctime/inode may differ
    assert os.lstat(project / "pkg" / "ruff.toml") == link_stat
    after = hash_files(project, ["pkg/ruff.toml"], cache)[0].digest
    assert after != before
    assert str(tmp_path) not in json.dumps(manifest(project, ("pkg/**",)).to_json())
    (shared / "ruff.toml").unlink()  # now dangling: its text alone
    assert hash_files(project, ["pkg/ruff.toml"], cache)[0].digest == digest_bytes(
        b"symlink:../../shared/ruff.toml"
    )


# --------------------------------------------------------------------------- hashing


def test_hash_files_keeps_order_and_digests_content(project: Path) -> None:
    paths = ["src/pkg/core.py", "README.md"]
    digests = hash_files(project, paths, StatCache(None))
    assert [d.path for d in digests] == paths
    assert digests[0] == FileDigest("src/pkg/core.py", digest_bytes(b"VALUE = 1\n"), False)


@pytest.mark.skipif(sys.platform == "win32", reason="no execute bit")
def test_the_executable_bit_is_recorded_and_enters_the_key(project: Path) -> None:
    before = manifest(project)
    script = project / "src" / "pkg" / "core.py"
    script.chmod(0o755)
    (digest,) = hash_files(project, ["src/pkg/core.py"], StatCache(None))
    assert digest.executable is True
    after = manifest(project)
    assert after.key() != before.key()
    assert diff_manifests(before, after) == ["input changed: src/pkg/core.py"]


def test_a_missing_input_raises_naming_it(project: Path) -> None:
    with pytest.raises(HashingError, match=re.escape("'src/gone.py'")):
        hash_files(project, ["README.md", "src/gone.py"], StatCache(None))


def test_a_read_error_raises_naming_the_input(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(fd: int) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(digests, "_digest_fd", denied)
    with pytest.raises(
        HashingError, match=re.escape("cannot read input 'README.md': Permission denied")
    ):
        hash_files(project, ["README.md"], StatCache(None))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_neither_listed_nor_read(project: Path) -> None:
    os.mkfifo(project / "pipe")
    assert "pipe" not in files(project, "**")
    with pytest.raises(HashingError, match="'pipe' is not a regular file"):
        hash_files(project, ["pipe"], StatCache(None))


# --------------------------------------------------------------------------- stat cache


@pytest.fixture
def aged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's clock runs 10 s ahead, so the files a test just wrote look settled
    (their timestamps can no longer hide a same-size rewrite)."""
    later = time.time_ns() + 10_000_000_000
    monkeypatch.setattr(statcache, "time", SimpleNamespace(time_ns=lambda: later))


@pytest.mark.usefixtures("aged")
def test_an_unchanged_file_is_not_read_again(project: Path, reads: list[int]) -> None:
    paths = expand(project, "**").files
    cache = StatCache(None)
    first = hash_files(project, paths, cache)
    assert len(reads) == len(paths)
    reads.clear()
    assert hash_files(project, paths, cache) == first
    assert reads == []
    (project / "README.md").write_text("# demo, longer now\n")
    changed = hash_files(project, paths, cache)
    assert len(reads) == 1
    assert changed != first


@pytest.mark.usefixtures("aged")
def test_the_cache_persists_across_loads(project: Path, tmp_path: Path, reads: list[int]) -> None:
    cache_file = tmp_path / "cache" / "stat.json"
    paths = expand(project, "**").files
    cache = StatCache.load(cache_file)
    first = hash_files(project, paths, cache)
    cache.save()
    reads.clear()
    loaded = StatCache.load(cache_file)
    assert hash_files(project, paths, loaded) == first
    assert reads == []
    assert loaded.lookup(project, "README.md") == digest_bytes(b"# demo\n")


@pytest.fixture
def coarse_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    """lstat reports each path as it first saw it, as on a filesystem whose timestamps
    have not ticked between two writes of the same size."""
    real = os.lstat
    seen: dict[str, os.stat_result] = {}

    def lstat(path: Any, *, dir_fd: int | None = None) -> os.stat_result:
        result = real(path, dir_fd=dir_fd)
        return seen.setdefault(os.fspath(path), result)

    monkeypatch.setattr(os, "lstat", lstat)


@pytest.mark.usefixtures("coarse_timestamps")
def test_a_same_size_rewrite_in_the_same_tick_is_seen_in_process(project: Path) -> None:
    cache = StatCache(None)
    (old,) = hash_files(project, ["src/pkg/core.py"], cache)
    (project / "src" / "pkg" / "core.py").write_text("VALUE = 2\n")
    (new,) = hash_files(project, ["src/pkg/core.py"], cache)
    assert new.digest == digest_bytes(b"VALUE = 2\n") != old.digest
    assert cache.lookup(project, "src/pkg/core.py") is None  # not trusted yet


@pytest.mark.usefixtures("coarse_timestamps")
def test_a_same_size_rewrite_just_after_caching_is_rehashed_after_a_reload(
    project: Path, tmp_path: Path
) -> None:
    cache_file = tmp_path / "stat.json"
    target = project / "src" / "pkg" / "core.py"
    cache = StatCache.load(cache_file)
    (old,) = hash_files(project, ["src/pkg/core.py"], cache)
    cache.save()
    target.write_text("VALUE = 2\n")  # same size, same (coarse) timestamps
    (new,) = hash_files(project, ["src/pkg/core.py"], StatCache.load(cache_file))
    assert new.digest == digest_bytes(b"VALUE = 2\n") != old.digest


@pytest.mark.usefixtures("coarse_timestamps")
def test_a_digest_read_too_soon_is_never_persisted(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_file = tmp_path / "stat.json"
    cache = StatCache(cache_file)
    hash_files(project, ["README.md"], cache)  # read right after the file was written
    later = time.time_ns() + 10_000_000_000
    monkeypatch.setattr(statcache, "time", SimpleNamespace(time_ns=lambda: later))
    cache.save()  # even when saved long after
    (project / "README.md").write_text("# DEMO\n")  # same size, same (coarse) timestamps
    (new,) = hash_files(project, ["README.md"], StatCache.load(cache_file))
    assert new.digest == digest_bytes(b"# DEMO\n")


@pytest.mark.usefixtures("coarse_timestamps")
def test_a_recorded_fresh_file_is_not_persisted(project: Path, tmp_path: Path) -> None:
    cache_file = tmp_path / "stat.json"
    cache = StatCache(cache_file)
    cache.record(project, "README.md", digest_bytes(b"# demo\n"))
    cache.save()
    (project / "README.md").write_text("# DEMO\n")  # same size, same (coarse) timestamps
    assert StatCache.load(cache_file).lookup(project, "README.md") is None
    (new,) = hash_files(project, ["README.md"], StatCache.load(cache_file))
    assert new.digest == digest_bytes(b"# DEMO\n")


def test_save_writes_only_when_changed(project: Path, tmp_path: Path) -> None:
    cache_file = tmp_path / "stat.json"
    StatCache(cache_file).save()
    assert not cache_file.exists()
    StatCache(None).save()  # in memory: nowhere to write, no error


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b"{}",
        b'{"version": 99, "entries": {}}',
        b'{"version": 1, "entries": []}',
        b'{"version": 1, "entries": {"README.md": 5}}',
        b"[" * 100_000,
    ],
)
def test_a_corrupt_cache_file_gives_an_empty_cache(
    project: Path, tmp_path: Path, content: bytes, reads: list[int]
) -> None:
    cache_file = tmp_path / "stat.json"
    cache_file.write_bytes(content)
    cache = StatCache.load(cache_file)
    assert cache.lookup(project, "README.md") is None
    (digest,) = hash_files(project, ["README.md"], cache)
    assert len(reads) == 1
    assert digest.digest == digest_bytes(b"# demo\n")


def saved_cache(project: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A saved cache of regular files, a symlink, a dangling one and a non-ASCII name."""
    write(project, {"src/ünï code.py": "U = 1\n"})
    (project / "link.md").symlink_to("README.md")
    (project / "dangling").symlink_to("nowhere")
    cache_file = tmp_path / "cache" / "stat"
    paths = list(expand(project, "**").files)
    cache = StatCache(cache_file)
    hash_files(project, paths, cache)
    cache.save()
    return cache_file, paths


@pytest.mark.usefixtures("aged")
def test_a_saved_cache_round_trips_every_kind_of_input(
    project: Path, tmp_path: Path, reads: list[int]
) -> None:
    cache_file, paths = saved_cache(project, tmp_path)
    assert {"dangling", "link.md", "src/ünï code.py"} <= set(paths)
    first = hash_files(project, paths, StatCache(None))
    reads.clear()
    assert hash_files(project, paths, StatCache.load(cache_file)) == first
    assert reads == []
    assert cache_file.read_bytes().startswith(b"cachehook stat cache\n")  # not JSON (issue 11)


@pytest.mark.usefixtures("aged")
def test_a_hit_does_not_rewrite_the_cache_and_a_change_does(project: Path, tmp_path: Path) -> None:
    cache_file, paths = saved_cache(project, tmp_path)
    before = os.stat(cache_file)
    cache = StatCache.load(cache_file)
    hash_files(project, paths, cache)
    cache.save()
    after = os.stat(cache_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    (project / "README.md").write_text("# demo, longer\n")
    hash_files(project, paths, cache)
    cache.save()
    assert os.stat(cache_file).st_ino != before.st_ino  # replaced, atomically
    assert StatCache.load(cache_file).lookup(project, "README.md") == digest_bytes(
        b"# demo, longer\n"
    )


@pytest.mark.usefixtures("aged")
def test_a_damaged_saved_cache_is_whole_or_empty(project: Path, tmp_path: Path) -> None:
    """Each truncation and each flipped byte of a saved cache: never a wrong digest."""
    cache_file, paths = saved_cache(project, tmp_path)
    data = cache_file.read_bytes()
    whole = StatCache.load(cache_file)._entries
    assert len(whole) == len(paths)
    damaged = [data[:size] for size in range(0, len(data), 7)]
    damaged += [data[:at] + bytes([data[at] ^ 0x41]) + data[at + 1 :] for at in range(len(data))]
    damaged.append(json.dumps({"version": 1, "entries": {"README.md": "0" * 32}}).encode())
    for content in damaged:
        cache_file.write_bytes(content)
        assert StatCache.load(cache_file)._entries == {}, content


@pytest.mark.usefixtures("aged")
def test_a_timestamp_beyond_64_bits_is_read_every_time(
    project: Path, tmp_path: Path, reads: list[int]
) -> None:
    target = project / "README.md"
    os.utime(target, ns=(2**63 + 1, 2**63 + 1))  # year 2262: no signature holds it
    cache = StatCache(tmp_path / "stat")
    first = hash_files(project, ["README.md", "src/pkg/core.py"], cache)
    cache.save()
    again = hash_files(project, ["README.md", "src/pkg/core.py"], StatCache.load(tmp_path / "stat"))
    assert again == first
    assert len(reads) == 3  # README.md twice, core.py once


@pytest.mark.usefixtures("aged")
def test_a_save_error_is_logged_not_raised(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    cache = StatCache(tmp_path / "file" / "stat.json")  # its parent is a file
    hash_files(project, ["README.md"], cache)
    with caplog.at_level(logging.WARNING, logger="cachehook"):
        cache.save()
    assert "stat cache" in caplog.text
    assert (tmp_path / "file").read_text() == ""
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.usefixtures("aged")
def test_lookup_never_reads(project: Path, reads: list[int]) -> None:
    cache = StatCache(None)
    assert cache.lookup(project, "README.md") is None
    (digest,) = hash_files(project, ["README.md"], cache)
    reads.clear()
    assert cache.lookup(project, "README.md") == digest.digest
    (project / "README.md").write_text("changed and longer\n")
    assert cache.lookup(project, "README.md") is None
    (project / "README.md").unlink()
    assert cache.lookup(project, "README.md") is None
    assert reads == []


def test_record_remembers_a_known_digest(project: Path, reads: list[int]) -> None:
    cache = StatCache(None)
    known = digest_bytes(b"# demo\n")
    cache.record(project, "README.md", known)
    assert cache.digest(project, "README.md") == FileDigest("README.md", known, False)
    assert reads == []
    with pytest.raises(ValueError, match="digest"):
        cache.record(project, "README.md", "not-a-digest")
    with pytest.raises(HashingError, match=re.escape("'gone.txt'")):
        cache.record(project, "gone.txt", known)


def test_a_digest_is_not_recorded_for_a_file_changed_since_it_was_taken(
    project: Path, reads: list[int]
) -> None:
    # A restore takes each file's digest as it writes it, then records it: a file rewritten
    # in between (another task, a watcher) must be read, never given the restore's digest.
    path = project / "README.md"
    placed = os.lstat(path)
    ours = digest_bytes(path.read_bytes())
    path.write_bytes(b"# rewritten by someone else\n")
    cache = StatCache(None)
    assert not cache.record(project, "README.md", ours, written=placed)
    assert cache.digest(project, "README.md").digest == digest_bytes(path.read_bytes()) != ours
    assert len(reads) == 1
    assert cache.record(project, "README.md", ours, written=placed) is False
    theirs = digest_bytes(path.read_bytes())
    assert cache.record(project, "README.md", theirs, written=os.lstat(path))


# --------------------------------------------------------------------------- the key


def test_the_key_is_32_hex_chars(project: Path) -> None:
    key = manifest(project).key()
    assert len(key) == 32
    assert int(key, 16) >= 0


def test_one_changed_input_byte_changes_the_key(project: Path) -> None:
    before = manifest(project)
    (project / "src" / "pkg" / "core.py").write_text("VALUE = 2\n")
    after = manifest(project)
    assert after.key() != before.key()
    assert diff_manifests(before, after) == ["input changed: src/pkg/core.py"]


def test_an_unrelated_file_does_not_change_the_key(project: Path) -> None:
    before = manifest(project, ("src/**/*.py",))
    write(project, {"docs/index.md": "new", "README.md": "edited"})
    assert manifest(project, ("src/**/*.py",)).key() == before.key()


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"command": ("pytest", "-x")}, "command changed"),
        ({"cwd": "src"}, "cwd changed"),
        ({"env": (("CI", digest_bytes(b"0")), ("HOME", "unset"))}, "env changed: CI"),
        ({"env": (("CI", digest_bytes(b"1")),)}, "env changed: HOME"),
        ({"outputs": ("build/**",)}, "outputs changed"),
        ({"salt": "v2"}, "salt changed"),
        ({"dependencies": ("0" * 32,)}, "dependency changed"),
        ({"version": KEY_FORMAT_VERSION + 1}, "key format changed"),
    ],
)
def test_every_field_enters_the_key(project: Path, change: dict[str, Any], line: str) -> None:
    base = manifest(project)
    changed = base.replace(**change)
    assert changed.key() != base.key()
    assert diff_manifests(base, changed) == [line]


def test_two_clones_in_different_directories_have_the_same_key(tmp_path: Path) -> None:
    tree: dict[str, str | bytes] = {
        ".gitignore": "*.pyc\n",
        "src/a.py": "A = 1\n",
        "src/b/c.py": "C = 3\n",
        "src/a.pyc": "junk",
        "data.bin": bytes(range(256)),
    }
    first, second = tmp_path / "one" / "proj", tmp_path / "two" / "deeper" / "clone"
    write(first, tree)
    time.sleep(0.01)  # different mtimes, inodes and absolute paths
    write(second, tree)
    if sys.platform != "win32":
        (first / "src" / "a.py").chmod(0o755)
        (second / "src" / "a.py").chmod(0o755)
    keys = {manifest(root, ("**",), cwd="src").key() for root in (first, second)}
    assert len(keys) == 1


def test_input_and_env_order_do_not_change_the_key(project: Path) -> None:
    base = manifest(project)
    shuffled = base.replace(inputs=tuple(reversed(base.inputs)), env=tuple(reversed(base.env)))
    assert shuffled.key() == base.key()
    assert shuffled.inputs == base.inputs


def test_a_manifest_is_frozen_and_equal_by_its_fields(project: Path) -> None:
    base = manifest(project)
    same = base.replace()
    assert same == base
    assert hash(same) == hash(base)
    assert {base: 1}[same] == 1
    assert base.replace(salt="other") != base
    with pytest.raises(AttributeError):
        base.salt = "other"
    with pytest.raises(AttributeError):
        del base.salt
    assert base.salt == ""


def test_env_values_never_enter_the_manifest() -> None:
    env = resolve_env(["TOKEN"], {"TOKEN": "s3cret-value"})
    pairs = tuple((k, "unset" if v is None else digest_bytes(v.encode())) for k, v in env.items())
    m = Manifest(command=("x",), cwd=".", inputs=(), env=pairs, outputs=())
    assert b"s3cret" not in m.canonical_bytes()
    assert "s3cret" not in json.dumps(m.to_json())


def reference_bytes(m: Manifest) -> bytes:
    text = json.dumps(m.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


@pytest.mark.parametrize(
    "path", ["plain.py", 'quo"te.py', "back\\slash", "new\nline", "tab\t", "é/ü.py", "😀.py"]
)
def test_canonical_bytes_match_sorted_json(path: str) -> None:
    m = Manifest(
        command=("py:", "mod.fn", 'a"b\\c', "ünï"),
        cwd="sub/dir",
        inputs=(FileDigest(path, "0" * 32, True), FileDigest("z", "1" * 32, False)),
        env=(("B", "unset"), ("A", digest_bytes(b"x"))),
        outputs=("dist/**", "é"),
        salt="s\u2028",
        dependencies=("f" * 32, "a" * 32),
    )
    assert m.canonical_bytes() == reference_bytes(m)
    empty = Manifest(command=(), cwd=".", inputs=(), env=(), outputs=())
    assert empty.canonical_bytes() == reference_bytes(empty)


def test_manifest_json_round_trip(project: Path) -> None:
    m = manifest(project, salt="s", dependencies=("a" * 32,))
    data = json.loads(json.dumps(m.to_json()))
    again = Manifest.from_json(data)
    assert again == m
    assert again.key() == m.key()
    assert data["inputs"][0] == {
        "path": m.inputs[0].path,
        "digest": m.inputs[0].digest,
        "executable": m.inputs[0].executable,
    }


def _mutations() -> Iterator[tuple[str, Callable[[dict[str, Any]], object]]]:
    yield "not a dict", lambda d: [d]
    yield "missing key", lambda d: {k: v for k, v in d.items() if k != "salt"}
    yield "extra key", lambda d: {**d, "extra": 1}
    yield "command not a list", lambda d: {**d, "command": "pytest"}
    yield "command with an int", lambda d: {**d, "command": ["pytest", 1]}
    yield "cwd not a str", lambda d: {**d, "cwd": None}
    yield "version a bool", lambda d: {**d, "version": True}
    yield "version a str", lambda d: {**d, "version": "1"}
    yield "inputs not a list", lambda d: {**d, "inputs": {}}
    yield "input without executable", lambda d: {**d, "inputs": [{"path": "a", "digest": "b"}]}
    yield (
        "executable not a bool",
        lambda d: {**d, "inputs": [{"path": "a", "digest": "b", "executable": "true"}]},
    )
    yield "env pair too long", lambda d: {**d, "env": [["A", "b", "c"]]}
    yield "env value not a str", lambda d: {**d, "env": [["A", None]]}
    yield "outputs not strings", lambda d: {**d, "outputs": [1]}
    yield "dependencies not a list", lambda d: {**d, "dependencies": "abc"}


@pytest.mark.parametrize(("label", "mutate"), list(_mutations()))
def test_from_json_rejects_bad_shapes(
    project: Path, label: str, mutate: Callable[[dict[str, Any]], object]
) -> None:
    data = manifest(project).to_json()
    with pytest.raises(ValueError, match="manifest"):
        Manifest.from_json(mutate(data))


def test_diff_manifests_lists_inputs_and_is_empty_when_equal(project: Path) -> None:
    before = manifest(project)
    assert diff_manifests(before, before) == []
    (project / "README.md").unlink()
    write(project, {"NEW.md": "x", "src/pkg/core.py": "VALUE = 3\n"})
    after = manifest(project).replace(env=(("CI", digest_bytes(b"0")), ("HOME", "unset")), salt="x")
    assert diff_manifests(before, after) == [
        "input added: NEW.md",
        "input removed: README.md",
        "input changed: src/pkg/core.py",
        "env changed: CI",
        "salt changed",
    ]


# --------------------------------------------------------------------------- environment


def test_resolve_env_literals_wildcards_and_unset() -> None:
    environ = {"PYTHONPATH": "src", "PYTHONHASHSEED": "0", "CI": "1", "PATH": "/bin"}
    resolved = resolve_env(["CI", "PYTHON*", "MISSING"], environ)
    assert resolved == {
        "CI": "1",
        "MISSING": None,
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": "src",
    }
    assert list(resolved) == sorted(resolved)
    assert resolve_env(["NOPE_*"], environ) == {}


@pytest.mark.parametrize("name", ["", "*", "1ABC", "A-B", "A*B", "A**", "A B", "PATH="])
def test_resolve_env_rejects_bad_names(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--env {name!r}:")):
        resolve_env(["OK", name], {})


# --------------------------------------------------------------------------- module hygiene


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in vars(hashing) if not n.startswith("_")} - {
        "annotations",
        "NamedTuple",
        "encode_basestring",
        "json",
        "re",
        "TYPE_CHECKING",
        "Any",
        "ConfigError",
    }
    assert set(hashing.__all__) == public
    assert hashing.__all__ == sorted(hashing.__all__, key=lambda n: (not n.isupper(), n))


@pytest.mark.parametrize("module", [digests, statcache])
def test_the_digest_modules_declare_what_they_define(module: Any) -> None:
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert defined <= set(module.__all__) <= set(vars(module))
    assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))


def test_no_absolute_path_enters_the_key(project: Path) -> None:
    m = manifest(project)
    assert str(project).encode() not in m.canonical_bytes()
    assert os.fspath(project.parent).encode() not in m.canonical_bytes()


def test_executable_helper_ignores_symlink_modes() -> None:
    mode = stat.S_IFLNK | 0o777
    assert mode & statcache._REGULAR_EXECUTABLE != statcache._REGULAR_EXECUTABLE_BITS


def test_shutil_copied_tree_has_the_same_key(project: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project, copy, symlinks=True)
    assert manifest(copy).key() == manifest(project).key()
