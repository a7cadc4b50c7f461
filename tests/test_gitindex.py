"""git's own rules for what a file is (issue 10), checked against real git.

The differential test builds random trees, random ignore files (nested ``.gitignore``,
``info/exclude``, the global excludes file) and random ``git add -f`` sets, and compares the
files a ``**`` glob lists with ``git ls-files -co --exclude-standard`` (tracked files, ignored
or not, plus untracked files that are not ignored).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cachehook import gitindex
from cachehook.hashing import GlobSet, expand_globs

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges")

NAMES = ["a", "b", "c", "build", "lib", "env", "bin", "bin.py", "src", "var", "x.py", "y.txt"]
NAMES += [".hidden", "k.txt", "#x", "x.py "]
RULES = [
    "build",
    "build/",
    "/build",
    "lib/",
    "env",
    "bin",
    "*.txt",
    "!k.txt",
    "!*.py",
    "*.py",
    "/a",
    "a/b",
    "a/**",
    "**/b",
    "**/b/",
    "**/x.py",
    "a/**/y.txt",
    "[ab]",
    "?.txt",
    ".hidden",
    "!build",
    "!lib/",
    "src/*",
    "!src/x.py",
    "*",
    "!*/",
    "# a comment",
    "",
    "var/ ",
    "a/*/b",
    "a/*",
    "*/x.py",
    "**/",
    "/**/b",
    "b/**/",
    "[a-c]",
    "[!a]",
    "x.*",
    "*.t?t",
    "\\#x",
    "x.py\\ ",
    "**/a/**",
    "/src/",
    "src/**/",
    "!/src/x.py",
    "!**/b",
    "a/**/b/",
    "bi*",
    "*n",
    "!env",
    "lib",
    "/*",
    "!/*.py",
    "**",
    "!**/",
]


@pytest.fixture(autouse=True)
def git_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """git and cachehook read the same configuration: an empty one in a test directory."""
    config = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_GLOBAL"):
        monkeypatch.delenv(name, raising=False)
    gitindex.reset()
    return config


def git(cwd: Path, *args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True)
    return done.stdout


def git_listing(cwd: Path) -> list[str]:
    out = git(cwd, "ls-files", "-z", "-co", "--exclude-standard")
    tracked = git(cwd, "ls-files", "-z")
    paths = {os.fsdecode(p) for p in (*out.split(b"\0"), *tracked.split(b"\0")) if p}
    return sorted(p for p in paths if os.path.lexists(cwd / p))


def init_repo(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    git(root, "config", "user.name", "t")
    git(root, "config", "user.email", "t@t")


def random_tree(rng: random.Random, root: Path) -> list[str]:
    files: list[str] = []

    def fill(directory: Path, depth: int) -> None:
        for name in rng.sample(NAMES, rng.randint(1, 5)):
            path = directory / name
            if depth < 3 and rng.random() < 0.45:
                path.mkdir(exist_ok=True)
                fill(path, depth + 1)
            elif not path.exists():
                path.write_text(f"{name} {rng.random()}\n")
                files.append(path.relative_to(root).as_posix())

    fill(root, 0)
    if files and rng.random() < 0.3:
        (root / "lnk").symlink_to(rng.choice(files))
    return files


def random_rules(rng: random.Random) -> str:
    return "\n".join(rng.sample(RULES, rng.randint(1, 5))) + "\n"


def make_case(rng: random.Random, top: Path, config: Path) -> Path:
    """A random repository; returns the directory to list (its top or a subdirectory)."""
    init_repo(top)
    files = random_tree(rng, top)
    directories = [top, *(p for p in top.rglob("*") if p.is_dir() and ".git" not in p.parts)]
    for directory in rng.sample(directories, min(len(directories), rng.randint(1, 4))):
        (directory / ".gitignore").write_text(random_rules(rng))
    if rng.random() < 0.5:
        (top / ".git" / "info").mkdir(exist_ok=True)
        (top / ".git" / "info" / "exclude").write_text(random_rules(rng))
    global_file = config / "git" / "ignore"
    global_file.parent.mkdir(exist_ok=True)
    global_file.write_text(random_rules(rng) if rng.random() < 0.5 else "")
    forced = rng.sample(files, rng.randint(0, len(files)))
    if forced:
        git(top, "add", "-f", "--", *forced)
    if rng.random() < 0.3:
        git(top, "add", "--", ".")
    if rng.random() < 0.3:
        git(top, "update-index", "--index-version", rng.choice(["2", "3", "4"]))
    if forced and rng.random() < 0.3:
        git(top, "commit", "-qm", "some")
    subdirs = [d for d in directories if d != top]
    return rng.choice(subdirs) if subdirs and rng.random() < 0.25 else top


@pytest.mark.parametrize("seed", range(40))
def test_a_glob_lists_what_git_lists(seed: int, tmp_path: Path, git_home: Path) -> None:
    rng = random.Random(seed)
    root = make_case(rng, tmp_path / "repo", git_home)
    ours = list(expand_globs(root, GlobSet.compile(["**"])).files)
    assert ours == git_listing(root)


# --------------------------------------------------------------------------- the index


def index_case(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    init_repo(root)
    for index in range(300):
        folder = root / "src" / f"d{index // 30}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:03d}.py").write_text(str(index))
    (root / "ünï.txt").write_text("x")
    (root / "link").symlink_to("src")
    git(root, "add", "--", ".")
    (root / "new.txt").write_text("n")
    git(root, "add", "-N", "--", "new.txt")  # intent-to-add sets an extended flag (v3)
    return root


def tracked_by_git(root: Path) -> tuple[str, ...]:
    out = git(root, "ls-files", "-z", "--cached")
    return tuple(sorted({os.fsdecode(p) for p in out.split(b"\0") if p}))


@pytest.mark.parametrize("version", ["2", "3", "4"])
def test_the_index_is_read_in_each_version(tmp_path: Path, version: str) -> None:
    root = index_case(tmp_path)
    long_name = "/".join(["n" * 200] * 25)  # longer than the 12-bit length field
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=root, input=b"x", capture_output=True
    ).stdout.decode()
    git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob.strip()},{long_name}")
    git(root, "update-index", "--index-version", version)
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    data = (root / ".git" / "index").read_bytes()
    assert gitindex._parse_index(data, 20) is not None  # read directly, not through git
    assert gitindex.tracked_paths(repo) == tracked_by_git(root)


def test_a_split_index_is_listed_by_git(tmp_path: Path) -> None:
    root = index_case(tmp_path)
    git(root, "update-index", "--split-index")
    (root / "later.txt").write_text("l")
    git(root, "add", "--", "later.txt")
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    assert gitindex._parse_index((root / ".git" / "index").read_bytes(), 20) is None
    assert "later.txt" in gitindex.tracked_paths(repo)
    assert gitindex.tracked_paths(repo) == tracked_by_git(root)


def test_a_sparse_index_is_listed_by_git(tmp_path: Path) -> None:
    root = index_case(tmp_path)
    git(root, "commit", "-qm", "one")
    git(root, "sparse-checkout", "set", "--cone", "--sparse-index", "src/d1")
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    assert gitindex._parse_index((root / ".git" / "index").read_bytes(), 20) is None
    assert "src/d5/f150.py" in gitindex.tracked_paths(repo)  # not on disk, yet tracked
    assert gitindex.tracked_paths(repo) == tracked_by_git(root)
    (root / ".gitignore").write_text("d1\n")
    found = expand_globs(root, GlobSet.compile(["src/**"])).files
    assert found == tuple(f"src/d1/f{index:03d}.py" for index in range(30, 60))


def test_a_linked_worktree_reads_its_own_index(tmp_path: Path) -> None:
    root = index_case(tmp_path)
    git(root, "commit", "-qm", "one")
    other = tmp_path / "other"
    git(root, "worktree", "add", "-q", str(other))
    (other / "build").mkdir()
    (other / "build" / "w.txt").write_text("w")
    (other / ".gitignore").write_text("build\n")
    git(other, "add", "-f", "--", "build/w.txt")
    repo, top = gitindex.find_repo(str(other / "src"))
    assert repo is not None
    assert top == str(other)
    assert Path(repo.commondir).resolve() == (root / ".git").resolve()
    assert "build/w.txt" in gitindex.tracked_paths(repo)
    found = expand_globs(other, GlobSet.compile(["build/*.txt"])).files
    assert found == ("build/w.txt",)


def test_a_rewritten_index_is_read_again(tmp_path: Path) -> None:
    root = index_case(tmp_path)
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    assert "late.txt" not in gitindex.tracked_paths(repo)
    (root / "late.txt").write_text("l")
    git(root, "add", "--", "late.txt")
    assert "late.txt" in gitindex.tracked_paths(repo)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("", "XDG"),
        ("[core]\n\texcludesFile = ~/my-ignore\n", "~/my-ignore"),
        ('[core]\n\texcludesfile = "~/quoted"\n', "~/quoted"),
        ("[include]\n\tpath = more\n", "~/from-include"),
    ],
)
def test_the_global_excludes_file_is_where_git_looks(
    tmp_path: Path, git_home: Path, config: str, expected: str
) -> None:
    home = Path(os.environ["HOME"])
    (home / ".gitconfig").write_text(config)
    (home / "more").write_text("[core]\n\texcludesFile = ~/from-include\n")
    root = tmp_path / "repo"
    init_repo(root)
    repo, _ = gitindex.find_repo(str(root))
    assert repo is not None
    wanted = git_home / "git" / "ignore" if expected == "XDG" else home / expected[2:]
    assert gitindex.excludes_file(repo) == str(wanted)


def test_without_git_the_walk_reads_gitignore(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("build\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    assert shutil.which("git")  # the other tests need it; this one shows the walk alone
    assert expand_globs(tmp_path, GlobSet.compile(["**"])).files == (".gitignore", "b.txt")
