"""The hit memo (:mod:`cachehook._memo`) against real git, real files, real ``PATH`` lookups.

A false hit (a replay where the full path would compute another key, or would restore an
output) is the worst defect the project can have, so most of this file is differential: a memo
is made to exist, ONE thing changes, and the same ``cachehook exec`` must then give what the
full path gives now: the key ``--dry-run=json`` computes (another argument list, so never a
replay), a restored output, a miss.

How a test knows whether a run was replayed: each run is a child interpreter running
:data:`PROBE`, which calls ``cachehook.cli.main`` with the arguments and then writes, on a last
stderr line, the modules it loaded. A replay never imports ``cachehook.runner``; the full path
always does. The probe adds no argument and no environment variable, so the memo's name
(arguments, working directory, environment, terminals) is a plain ``cachehook exec``'s; ``-P``
keeps the working directory off ``sys.path``, as for the installed ``cachehook`` script (the
import system's listing of the project would otherwise be recorded too, and hide a defect).

A memo is written only once no recorded path changed within a second (racy-git's rule), so a
tree is settled (every path under it more than a second old) and the hit re-run until it is
replayed, with a generous deadline and no duration asserted. The one-second waits dominate the
runtime, so the differential cases each get their own tree and all trees wait together.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import xxhash

from cachehook import _hits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

PROBE = """
import sys
start = set(sys.modules)
from cachehook.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
new = sorted(set(sys.modules) - start)
sys.stderr.write("\\n@@probe %d %s\\n" % (code, " ".join(new)))
"""
_MARKER = b"\n@@probe "
DEADLINE = 30.0  # seconds a memo may take to appear on a busy machine (usually ~1 s)
POLL = 0.3
_RACY_NS = 1_100_000_000  # a little more than the memo's one second

# The task: a program found on PATH, printing on both streams in turn and writing one output
# from its inputs (the project's ``src``, read from the package directory it runs in).
MYTOOL = textwrap.dedent(
    """\
    #!/bin/sh
    set -e
    mkdir -p out
    cat ../src/*.txt > out/result.txt
    echo "out one"
    echo "err one" >&2
    echo "out two"
    echo "err two" >&2
    """
)
EXEC = ["exec", "-i", "src/**", "-o", "pkg/out/**", "--", "mytool"]
PYPROJECT = "[project]\nname = 'p'\nversion = '0'\n\n[tool.cachehook]\n"


@dataclass(frozen=True)
class Run:
    code: int
    out: bytes
    err: bytes
    modules: frozenset[str]

    @property
    def replayed(self) -> bool:
        return "cachehook.runner" not in self.modules


@dataclass
class Tree:
    """A git project (root ``proj``, commands run in ``proj/pkg``), its cache and environment.

    Each tree has its own cache, HOME and XDG directories, so trees never share a memo or a
    store; ``env`` is the whole environment of every run (the memo's name depends on it).
    """

    base: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=lambda: list(EXEC))
    output: bytes = b""  # pkg/out/result.txt once memoised

    @property
    def root(self) -> Path:
        return self.base / "proj"

    @property
    def cwd(self) -> Path:
        return self.root / "pkg"

    @property
    def cache(self) -> Path:
        if "CACHEHOOK_CACHE_DIR" in self.env:
            return Path(self.env["CACHEHOOK_CACHE_DIR"])
        return Path(self.env["XDG_CACHE_HOME"]) / "cachehook"

    @property
    def early_bin(self) -> Path:  # first on PATH, empty at first
        return self.base / "bin-early"

    @property
    def late_bin(self) -> Path:  # where mytool is
        return self.base / "bin-late"

    def memos(self) -> dict[str, int]:
        """Each memo file's name and inode (a memo is written by a rename: a new inode)."""
        directory = self.cache / "memo"
        if not directory.is_dir():
            return {}
        return {p.name: p.stat().st_ino for p in directory.iterdir() if p.suffix != ".tmp"}

    def memo_file(self) -> Path:
        """The plain exec's memo: replayed last, so the newest (a replay touches its memo)."""
        self.until_replayed()
        found = [p for p in (self.cache / "memo").iterdir() if p.suffix != ".tmp"]
        return max(found, key=lambda path: path.stat().st_mtime_ns)

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        merged: bool = False,
        check: bool = True,
    ) -> Run:
        """``cachehook ARGS`` (default: the tree's exec) in a child interpreter."""
        done = subprocess.run(
            [sys.executable, "-P", "-c", PROBE, *(args or self.args)],
            cwd=self.cwd,
            env=dict(env if env is not None else self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merged else subprocess.PIPE,
            check=False,
            timeout=120,
        )
        stream = done.stdout if merged else done.stderr
        head, marker, tail = stream.rpartition(_MARKER)
        assert marker, f"the probe did not finish ({done.returncode}): {stream!r}"
        code, _, names = tail.decode().strip().partition(" ")
        out, err = (head, b"") if merged else (done.stdout, head)
        result = Run(int(code), out, err, frozenset(names.split()))
        if check:
            assert result.code == 0, result
        return result

    def until_replayed(self, *, merged: bool = False) -> Run:
        """Run the exec until it is replayed from its memo; fail after :data:`DEADLINE`."""
        deadline = time.monotonic() + DEADLINE
        while True:
            result = self.run(merged=merged)
            if result.replayed:
                return result
            assert time.monotonic() < deadline, f"no memo replayed within {DEADLINE} s: {result}"
            time.sleep(POLL)

    def truth(self) -> str:
        """The key the full path computes now (``--dry-run=json``: never replayed)."""
        done = self.run(self.args[0], "--dry-run=json", *self.args[1:])
        key: str = json.loads(done.out)["key"]
        return key

    def history(self) -> list[dict[str, object]]:
        path = self.cache / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.root, env=self.env, check=True, capture_output=True)


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def make_tree(base: Path) -> Tree:
    """A committed project under ``base`` with ``mytool`` on PATH; not run yet."""
    root = base / "proj"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "pkg").mkdir()
    (root / "data").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / ".gitignore").write_text("out/\n*.log\n")
    (root / "src" / "a.txt").write_text("alpha\n")
    (root / "src" / "b.txt").write_text("beta\n")
    (root / "src" / "sub" / "c.txt").write_text("gamma\n")
    (root / "src" / "notes.log").write_text("ignored, untracked\n")
    (root / "data" / "target.txt").write_text("target\n")
    (root / "src" / "link.txt").symlink_to("../data/target.txt")
    for name in ("bin-early", "bin-late", "home", "config/git", "xdg-cache"):
        (base / name).mkdir(parents=True)
    _write_exe(base / "bin-late" / "mytool", MYTOOL)
    # Without coverage: coverage in a child looks at its data directory, which every other
    # measured child changes as it exits, so no memo would be written (a miss, not a defect).
    stripped = ("CACHEHOOK_", "TURBO_", "COVERAGE_", "COV_CORE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(stripped)}
    env.update(
        {
            "PATH": os.pathsep.join(
                [str(base / "bin-early"), str(base / "bin-late"), os.environ["PATH"]]
            ),
            "HOME": str(base / "home"),
            "XDG_CONFIG_HOME": str(base / "config"),  # from the start: the global excludes
            "XDG_CACHE_HOME": str(base / "xdg-cache"),
            "CACHEHOOK_CACHE_DIR": str(base / "cache"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
    )
    tree = Tree(base=base, env=env)
    tree.git("init", "-q")
    tree.git("add", ".")
    tree.git("commit", "-qm", "init")
    return tree


def settle(paths: Iterable[Path]) -> None:
    """Wait until every path under ``paths`` was last changed more than a second ago."""
    newest = 0
    for top in paths:
        for directory, _, files in os.walk(top):
            for name in [".", *files]:
                st = os.lstat(os.path.join(directory, name))
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    wait = (newest + _RACY_NS - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)


def _each(call: Callable[[Tree], object], trees: Sequence[Tree]) -> list[object]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(call, trees))


def memoise(*trees: Tree) -> None:
    """Miss, settle and re-run each tree's exec until it is replayed (the trees together)."""
    for miss in _each(lambda tree: tree.run(), trees):
        assert isinstance(miss, Run)
        assert b"miss " in miss.err, miss
    settle(tree.base for tree in trees)
    _each(lambda tree: tree.until_replayed(), trees)
    for tree in trees:
        output = tree.cwd / "out" / "result.txt"
        tree.output = output.read_bytes() if output.exists() else b""


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A tree whose exec is memoised."""
    made = make_tree(tmp_path / "t")
    memoise(made)
    return made


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    """A memoised tree for the tests that leave it memoised (the waits are the runtime)."""
    made = make_tree(tmp_path_factory.mktemp("shared"))
    memoise(made)
    return made


# --------------------------------------------------------------------------- the mutations


@dataclass(frozen=True)
class Mutation:
    """One change after the memo exists; ``prepare`` runs before the tree is memoised."""

    change: Callable[[Tree], None]
    prepare: Callable[[Tree], None] | None = None
    same_key: bool = False  # the key stays, but the full path does something else
    check: Callable[[Tree, Run], str | None] | None = None


def _writes(relpath: str, text: str) -> Callable[[Tree], None]:
    def change(tree: Tree) -> None:
        path = tree.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return change


def _renames(relpath: str, to: str) -> Callable[[Tree], None]:
    def change(tree: Tree) -> None:
        (tree.root / relpath).rename(tree.root / to)

    return change


def _same_size_edit(tree: Tree) -> None:
    path = tree.root / "src" / "a.txt"
    before = path.stat()
    path.write_text("ALPHA\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # only the ctime tells


def _untracked_input(tree: Tree) -> None:
    (tree.root / "src" / "sub" / "untracked.txt").write_text("untracked\n")


def _nested_gitignore(tree: Tree) -> None:
    (tree.root / "src" / "sub" / ".gitignore").write_text("untracked.txt\n")


def _global_excludes_file(tree: Tree) -> None:
    _untracked_input(tree)
    (Path(tree.env["XDG_CONFIG_HOME"]) / "git" / "ignore").write_text("# nothing yet\n")


def _global_excludes_line(tree: Tree) -> None:
    with (Path(tree.env["XDG_CONFIG_HOME"]) / "git" / "ignore").open("a") as file:
        file.write("untracked.txt\n")


def _symlink_retargeted(tree: Tree) -> None:
    (tree.root / "data" / "other.txt").write_text("target\n")  # same bytes, another file
    link = tree.root / "src" / "link.txt"
    link.unlink()
    link.symlink_to("../data/other.txt")


def _venv(tree: Tree, venv: Path | None = None) -> None:
    venv = venv or tree.base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    tree.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{tree.env['PATH']}"
    tree.args = ["exec", "-i", "src/**", "--", "python", "-c", "print('from the venv')"]


def _venv_in_the_cache_dir(tree: Tree) -> None:
    """A venv under the cache directory: ``CACHEHOOK_CACHE_DIR=~/.cache``, a poetry venv."""
    dot_cache = tree.base / "dot-cache"
    tree.env["CACHEHOOK_CACHE_DIR"] = str(dot_cache)
    _venv(tree, dot_cache / "pypoetry" / "virtualenvs" / "p")


def _venv_install(tree: Tree) -> None:
    (site,) = [
        *(tree.base / "venv").glob("lib/python*/site-packages"),
        *(tree.base / "dot-cache").glob("pypoetry/virtualenvs/p/lib/python*/site-packages"),
    ]
    (site / "tinypkg.py").write_text("x = 1\n")
    dist = site / "tinypkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
    (dist / "RECORD").write_text("tinypkg.py,,\n")


def _project_in_the_cache_dir(tree: Tree) -> None:
    tree.env["CACHEHOOK_CACHE_DIR"] = str(tree.base)  # holds proj/, the PATH dirs, HOME


def _appends(relpath: str, text: str) -> Callable[[Tree], None]:
    def change(tree: Tree) -> None:
        with (tree.root / relpath).open("a") as file:
            file.write(text)

    return change


def _excludes_in_repo_config(tree: Tree) -> None:
    (tree.base / "excludes").write_text("untracked.txt\n")
    tree.git("config", "core.excludesFile", str(tree.base / "excludes"))


def _excludes_in_home_gitconfig(tree: Tree) -> None:
    (tree.base / "excludes").write_text("untracked.txt\n")
    home_config = Path(tree.env["HOME"]) / ".gitconfig"
    home_config.write_text(f"[core]\n\texcludesFile = {tree.base / 'excludes'}\n")


def _linked_directory(tree: Tree) -> None:
    (tree.base / "shared").mkdir()
    (tree.base / "shared" / "s.txt").write_text("shared\n")
    (tree.root / "src" / "shared").symlink_to(tree.base / "shared")


def _dangling_link(tree: Tree) -> None:
    (tree.root / "src" / "sub" / "dangling.txt").symlink_to("../../data/later.txt")


def _linked_directory_through_a_link(tree: Tree) -> None:
    for name in ("v1", "v2"):
        (tree.base / name).mkdir()
        (tree.base / name / "s.txt").write_text(f"{name}\n")
    (tree.base / "current").symlink_to(tree.base / "v1")
    (tree.root / "src" / "shared").symlink_to(tree.base / "current")


def _retarget_current(tree: Tree) -> None:
    (tree.base / "current").unlink()
    (tree.base / "current").symlink_to(tree.base / "v2")


def _empty_path_entry(tree: Tree) -> None:
    tree.env["PATH"] = os.pathsep + tree.env["PATH"]  # an empty entry: the working directory


def _system_git_config(tree: Tree) -> None:
    del tree.env["GIT_CONFIG_NOSYSTEM"]
    tree.env["GIT_CONFIG_SYSTEM"] = str(tree.base / "system-gitconfig")  # absent at first
    _untracked_input(tree)


def _system_git_config_created(tree: Tree) -> None:
    (tree.base / "excludes").write_text("untracked.txt\n")
    config = f"[core]\n\texcludesFile = {tree.base / 'excludes'}\n"
    (tree.base / "system-gitconfig").write_text(config)


def _code_copy(tree: Tree) -> None:
    """cachehook imported from a copy of its source, as from an editable checkout."""
    import cachehook

    source = Path(cachehook.__file__).parent
    shutil.copytree(
        source, tree.base / "code" / "cachehook", ignore=shutil.ignore_patterns("*.pyc")
    )
    tree.env["PYTHONPATH"] = str(tree.base / "code")


def _code_edited(tree: Tree) -> None:
    """The key's format bumped in place (same size): an edit in the checkout, or an upgrade."""
    path = tree.base / "code" / "cachehook" / "hashing.py"
    text = path.read_text()
    line = next(x for x in text.splitlines() if x.startswith("KEY_FORMAT_VERSION: int = "))
    version = int(line.split("=")[1].split("#")[0])
    bumped = line.replace(f"= {version}", f"= {(version + 1) % 10}", 1)
    path.write_text(text.replace(line, bumped, 1))


def _untrack(tree: Tree) -> None:
    tree.git("rm", "-q", "--cached", "src/b.txt")  # ignored since prepare: no longer an input


def _missing_path_dir(tree: Tree) -> None:
    parts = tree.env["PATH"].split(os.pathsep)
    tree.env["PATH"] = os.pathsep.join([str(tree.base / "bin-missing"), *parts])


def _missing_path_dir_created(tree: Tree) -> None:
    (tree.base / "bin-missing").mkdir()
    _write_exe(tree.base / "bin-missing" / "mytool", MYTOOL + "echo shadowed\n")


def _artifact_removed(tree: Tree) -> None:
    key = tree.history()[-1]["key"]
    assert isinstance(key, str)
    hit = _hits.read_hit(tree.cache / "store", key)
    assert hit is not None
    Path(hit.artifact).unlink()


def _output_edit(data: Callable[[bytes], bytes]) -> Callable[[Tree], None]:
    def change(tree: Tree) -> None:
        path = tree.cwd / "out" / "result.txt"
        path.write_bytes(data(path.read_bytes()))

    return change


def _restored(tree: Tree, run: Run) -> str | None:
    now = tree.cwd / "out" / "result.txt"
    if now.exists() and now.read_bytes() == tree.output:
        return None
    return "the output was not restored"


def _cache_clear(tree: Tree) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cachehook", "cache", "clear", "--yes"],
        cwd=tree.cwd,
        env=tree.env,
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr


def _missed(tree: Tree, run: Run) -> str | None:
    return None if b"miss " in run.err else "not a miss"


def _settings_cache_dir(tree: Tree) -> None:
    del tree.env["CACHEHOOK_CACHE_DIR"]  # the cache is $XDG_CACHE_HOME/cachehook


def _cache_dir_edited(tree: Tree) -> None:
    other = tree.base / "other-cache"
    with (tree.root / "pyproject.toml").open("a") as file:
        file.write(f"cache-dir = '{other}'\n")  # an empty store; the memo lives in the default


MUTATIONS: dict[str, Mutation] = {
    "same-size edit, mtime put back": Mutation(_same_size_edit),
    "new file in an existing subdirectory": Mutation(_writes("src/sub/d.txt", "delta\n")),
    "new file in a new subdirectory": Mutation(_writes("src/new/e.txt", "epsilon\n")),
    "file removed": Mutation(lambda t: (t.root / "src" / "sub" / "c.txt").unlink()),
    "file renamed": Mutation(_renames("src/b.txt", "src/b2.txt")),
    "nested .gitignore ignores an untracked input": Mutation(
        _nested_gitignore, prepare=_untracked_input
    ),
    "git add -f of an ignored file": Mutation(lambda t: t.git("add", "-f", "src/notes.log")),
    "global excludes file gains a line": Mutation(
        _global_excludes_line, prepare=_global_excludes_file
    ),
    "chmod +x on an input": Mutation(lambda t: (t.root / "src" / "a.txt").chmod(0o755)),
    "symlinked input's target edited": Mutation(_writes("data/target.txt", "TARGET\n")),
    "symlinked input retargeted": Mutation(_symlink_retargeted),
    "same-named program earlier on PATH": Mutation(
        lambda t: _write_exe(t.early_bin / "mytool", MYTOOL + "echo shadowed\n")
    ),
    "the program edited": Mutation(
        lambda t: _write_exe(t.late_bin / "mytool", MYTOOL.replace("one", "ONE"))
    ),
    "pyproject.toml between cwd and root": Mutation(
        _writes("pkg/pyproject.toml", PYPROJECT.replace("'p'", "'pkg'"))
    ),
    "a package installed into the venv": Mutation(_venv_install, prepare=_venv),
    "a package installed into a venv inside the cache dir": Mutation(
        _venv_install, prepare=_venv_in_the_cache_dir
    ),
    "an input edited, the project inside the cache dir": Mutation(
        _writes("src/a.txt", "edited\n"), prepare=_project_in_the_cache_dir
    ),
    "root .gitignore ignores an untracked input": Mutation(
        _appends(".gitignore", "untracked.txt\n"), prepare=_untracked_input
    ),
    ".git/info/exclude ignores an untracked input": Mutation(
        _appends(".git/info/exclude", "untracked.txt\n"), prepare=_untracked_input
    ),
    "the repository's git config names an excludes file": Mutation(
        _excludes_in_repo_config, prepare=_untracked_input
    ),
    "$GIT_CONFIG_SYSTEM created naming an excludes file": Mutation(
        _system_git_config_created, prepare=_system_git_config
    ),
    "~/.gitconfig created naming an excludes file": Mutation(
        _excludes_in_home_gitconfig, prepare=_untracked_input
    ),
    "new file in a symlinked directory": Mutation(
        _writes("../shared/t.txt", "t\n"), prepare=_linked_directory
    ),
    "a dangling symlinked input's target created": Mutation(
        _writes("data/later.txt", "later\n"), prepare=_dangling_link
    ),
    "a symlinked directory retargeted through a second link": Mutation(
        _retarget_current, prepare=_linked_directory_through_a_link
    ),
    "the program created in cwd, PATH with an empty entry": Mutation(
        lambda t: _write_exe(t.cwd / "mytool", MYTOOL + "echo here\n"), prepare=_empty_path_entry
    ),
    "cachehook's key code edited (hashing.py, imported before recording)": Mutation(
        _code_edited, prepare=_code_copy
    ),
    "the program in a PATH dir that did not exist": Mutation(
        _missing_path_dir_created, prepare=_missing_path_dir
    ),
    "an ignored tracked input untracked (git rm --cached)": Mutation(
        _untrack, prepare=_appends(".gitignore", "b.txt\n")
    ),
    "output deleted": Mutation(
        lambda t: (t.cwd / "out" / "result.txt").unlink(), same_key=True, check=_restored
    ),
    "output edited": Mutation(
        _output_edit(lambda _: b"scribbled over\n"), same_key=True, check=_restored
    ),
    "output edited, same size": Mutation(
        _output_edit(lambda data: bytes(len(data))), same_key=True, check=_restored
    ),
    "cachehook cache clear": Mutation(_cache_clear, same_key=True, check=_missed),
    "output chmod -w": Mutation(
        lambda t: (t.cwd / "out" / "result.txt").chmod(0o444), same_key=True
    ),
    "the artifact removed": Mutation(_artifact_removed, same_key=True),
    "the store removed": Mutation(
        lambda t: shutil.rmtree(t.cache / "store"), same_key=True, check=_missed
    ),
    "cache-dir set in pyproject.toml": Mutation(
        _cache_dir_edited, prepare=_settings_cache_dir, same_key=True, check=_missed
    ),
}


_GROUPS = 4  # the mutations in groups, so that xdist's workers share them


@pytest.mark.parametrize("group", range(_GROUPS))
def test_one_change_is_never_a_false_hit(tmp_path: Path, group: int) -> None:
    """Each mutation on its own memoised tree; a group's trees are prepared and run together."""
    names = list(MUTATIONS)[group::_GROUPS]
    trees = [make_tree(tmp_path / f"t{index}") for index in range(len(names))]
    for tree, name in zip(trees, names, strict=True):
        prepare = MUTATIONS[name].prepare
        if prepare is not None:
            prepare(tree)
    memoise(*trees)
    before = [tree.history()[-1]["key"] for tree in trees]
    for tree, name in zip(trees, names, strict=True):
        MUTATIONS[name].change(tree)
    truths = _each(Tree.truth, trees)
    runs = _each(lambda tree: tree.run(check=False), trees)
    failures = []
    for tree, name, old, truth, run in zip(trees, names, before, truths, runs, strict=True):
        mutation = MUTATIONS[name]
        assert isinstance(run, Run)
        if (truth == old) != mutation.same_key:
            failures.append(f"{name}: the key should {'stay' if mutation.same_key else 'change'}")
        if run.replayed:
            failures.append(f"FALSE HIT: {name}: replayed {old}, the full path computes {truth}")
            continue
        if run.code != 0:
            failures.append(f"{name}: exit code {run.code}: {run.err!r}")
            continue
        if tree.history()[-1]["key"] != truth:
            failures.append(f"{name}: ran {tree.history()[-1]['key']}, the truth is {truth}")
        why = mutation.check(tree, run) if mutation.check is not None else None
        if why is not None:
            failures.append(f"{name}: {why}: {run.err!r}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- replay fidelity


def test_a_replay_is_what_the_full_path_does(shared: Tree) -> None:
    tree = shared
    """Output bytes (each stream, and both through one pipe), exit code, history, LRU touch."""
    key = tree.history()[-1]["key"]
    assert isinstance(key, str)
    memo = tree.memo_file()
    aside = memo.with_name(memo.name + ".aside")
    memo.rename(aside)  # the full path, with the same arguments and environment
    full = tree.run()
    assert not full.replayed
    full_entry = tree.history()[-1]
    aside.replace(memo)
    record = _hits.record_path(tree.cache / "store", key)
    os.utime(record, (1_000_000_000, 1_000_000_000))
    replay = tree.run()
    assert replay.replayed
    entry = tree.history()[-1]
    assert (replay.code, replay.out, replay.err) == (full.code, full.out, full.err)
    assert full.out == b"out one\nout two\n"
    assert full.err.startswith(b"err one\nerr two\ncachehook: local hit "), full.err
    for name in ("status", "source", "key", "project", "saved", "code", "task", "local", "remote"):
        assert entry[name] == full_entry[name], name
    assert set(entry) == set(full_entry)
    assert isinstance(entry["at"], float)
    assert isinstance(full_entry["at"], float)
    assert entry["at"] >= full_entry["at"]
    assert isinstance(entry["ms"], int)
    assert entry["ms"] >= 0
    assert record.stat().st_mtime > 1_000_000_000  # touched: the store's LRU order
    # Both streams through one pipe: a memo of its own (stdout's terminal flag is the same,
    # but the argument list and env are too: the same memo), the same interleaving.
    memo.rename(aside)
    merged_full = tree.run(merged=True)
    assert not merged_full.replayed
    aside.replace(memo)
    merged_replay = tree.run(merged=True)
    assert merged_replay.replayed
    assert merged_replay.out == merged_full.out
    assert sorted(merged_full.out.splitlines()[:4]) == [
        b"err one",
        b"err two",
        b"out one",
        b"out two",
    ]


def test_a_replay_prints_what_the_full_path_prints_in_each_output_mode(shared: Tree) -> None:
    """Each mode (and ``--quiet``) is a memo of its own: its full path, then its replay."""
    tree = shared
    settle([tree.base])
    variants: list[tuple[list[str], dict[str, str]]] = [
        ([], {"CACHEHOOK_OUTPUT_LOGS": mode}) for mode in ("errors-only", "hash-only", "none")
    ]
    variants.append((["--quiet"], {}))
    failures = []
    for extra, variables in variants:
        args = [tree.args[0], *extra, *tree.args[1:]]
        env = {**tree.env, **variables}
        full = tree.run(*args, env=env)
        replay = full
        deadline = time.monotonic() + DEADLINE
        while not replay.replayed and time.monotonic() < deadline:
            time.sleep(POLL)
            replay = tree.run(*args, env=env)
        if not replay.replayed:
            failures.append(f"{extra or variables}: never replayed")
        elif (replay.code, replay.out, replay.err) != (full.code, full.out, full.err):
            failures.append(
                f"{extra or variables}: {(replay.out, replay.err)} != {(full.out, full.err)}"
            )
    assert not failures, "\n".join(failures)


def test_a_replay_loads_only_what_the_memo_needs(shared: Tree) -> None:
    tree = shared
    replay = tree.until_replayed()
    ours = {name for name in replay.modules if name.split(".")[0] == "cachehook"}
    allowed = {
        "cachehook",
        "cachehook.errors",
        "cachehook.cli",
        "cachehook._memo",
        "cachehook.logs",
    }
    assert ours <= allowed, ours
    tops = {name.split(".")[0] for name in replay.modules}
    public = {name for name in tops if not name.startswith("_")} - {"cachehook"}
    # gc: built into the interpreter (no file to open); main() switches collection off for
    # exec and run and back on as it returns.
    assert public <= {"gc", "os", "sys", "struct", "time", "xxhash"}, public


# --------------------------------------------------------------------------- no memo


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_no_memo_is_written_when_it_must_not_be(tree: Tree) -> None:
    """Each case on a settled tree, where the plain hit is memoised: the case alone decides."""
    excludes = tree.base / "excludes"
    excludes.write_text("")
    port = _unused_port()
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "CACHEHOOK_MEMO=0": ([], {"CACHEHOOK_MEMO": "0"}),
        "--json": (["--json"], {}),
        "--dry-run": (["--dry-run"], {}),
        "an input glob matching nothing (a warning)": (["-i", "nowhere/*.txt"], {}),
        "git runs while the key is computed": (
            [],
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "core.excludesFile",
                "GIT_CONFIG_VALUE_0": str(excludes),
            },
        ),
        "a remote configured": (
            [],
            {
                "CACHEHOOK_API": f"http://127.0.0.1:{port}",
                "CACHEHOOK_TOKEN": "t0ken",
                "CACHEHOOK_TEAM": "t",
                "CI": "true",  # events are sent before exit, not by a detached sender
                "CACHEHOOK_EVENTS_FLUSH_TIMEOUT": "5",
            },
        ),
        "a miss": (["--salt", "other"], {}),  # last: it writes the output again
    }
    settle([tree.base])
    assert tree.run().replayed
    memos = tree.memos()
    # The control: a variable nothing reads is another memo, written at once (the tree is
    # settled), so each case below that writes none does so for its own reason.
    control = {**tree.env, "MEMO_TEST_UNRELATED": "1"}
    assert not tree.run(env=control).replayed
    assert len(tree.memos()) == len(memos) + 1, "the control wrote no memo"
    assert tree.run(env=control).replayed
    memos = tree.memos()
    failures = []
    for case, (extra, variables) in cases.items():
        args = [tree.args[0], *extra, *tree.args[1:]]
        env = {**tree.env, **variables}
        now = tree.run(*args, env=env, check=False)
        if now.replayed:
            failures.append(f"{case}: replayed")
        if tree.memos() != memos:
            failures.append(f"{case}: a memo was written")
            memos = tree.memos()
    assert not failures, "\n".join(failures)


def test_no_memo_within_a_second_of_a_change_then_one_again(tree: Tree) -> None:
    first = tree.history()[-1]["key"]
    memos = tree.memos()
    path = tree.root / "src" / "a.txt"
    path.write_text("fresh\n")
    miss = tree.run()
    assert b"miss " in miss.err
    assert tree.memos() == memos, "a miss wrote a memo"
    hit = tree.run()  # at once: a.txt and the output changed within the second
    assert b"local hit" in hit.err
    assert not hit.replayed
    if time.time_ns() - path.stat().st_ctime_ns < 900_000_000:  # still inside the window
        assert tree.memos() == memos, "a memo was written with an input changed < 1 s before"
    settle([tree.base])
    again = tree.until_replayed()
    assert b"local hit" in again.err
    assert tree.history()[-1]["key"] != first


# --------------------------------------------------------------------------- damaged memos


def _damage(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "one byte flipped":
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    if how == "another version":
        return data.replace(b"cachehook-memo 1 ", b"cachehook-memo 2 ", 1)
    assert how == "a good digest over garbage"
    body = b"\x05\x00\x00\x00\x00\x00\x00\x00abc"
    return b"cachehook-memo 1 " + xxhash.xxh3_128_hexdigest(body).encode() + b"\n" + body


def test_a_damaged_memo_is_ignored_and_rewritten(shared: Tree) -> None:
    tree = shared
    key = tree.history()[-1]["key"]
    good = tree.until_replayed()
    memo = tree.memo_file()
    for how in (
        "empty",
        "truncated",
        "one byte flipped",
        "another version",
        "a good digest over garbage",
    ):
        memo.write_bytes(_damage(memo.read_bytes(), how))
        now = tree.run()
        assert not now.replayed, how
        assert (now.code, now.out, now.err) == (good.code, good.out, good.err), how
        assert tree.history()[-1]["key"] == key
        assert (tree.cache / "store").is_dir()
        again = tree.until_replayed()  # the full path wrote it again
        assert (again.out, again.err) == (good.out, good.err), how


# --------------------------------------------------------------------------- in this process


def test_a_crafted_memo_replays_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The replay's format, checks and effects, in this process (so measured by coverage,
    which the child runs above are not): a memo written by ``_write`` with known sections."""
    from cachehook import _memo
    from cachehook.logs import STDERR, STDOUT, encode_frames

    cache = tmp_path / "cache"
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    args = ["exec", "-i", "watched", "--", "true"]
    watched, absent = tmp_path / "watched", tmp_path / "absent"
    watched.write_text("w")
    record = cache / "store" / "record"
    record.parent.mkdir(parents=True)
    record.write_bytes(b"a hit record")
    history = cache / "history.jsonl"
    line = b'{"at":-1.0,"key":"k","ms":-1,"status":"HIT"}\n'
    output = encode_frames([(STDOUT, b"out\n"), (STDERR, b"err\n"), (STDOUT, b"more\n")])
    held = record.stat()
    sections = [
        b"\0".join([os.fsencode(watched), os.fsencode(absent)]),
        bytes([_memo._FOLLOW, _memo._NO_FOLLOW]),
        _memo._signature(watched.stat()) + _memo._ABSENT,
        os.fsencode(tmp_path),
        os.fsencode(os.path.realpath(tmp_path)),
        os.fsencode(record),
        _memo._STORE_FILE.pack(held.st_ino, held.st_dev, held.st_size, 1),
        output,
        line,
        os.fsencode(history),
        b"0",
    ]
    path = _memo.memo_path(args)
    assert path is not None
    assert _memo._write(path, sections) is None
    os.utime(record, (1_000_000_000, 1_000_000_000))
    capfd.readouterr()

    assert _memo.replay(args) == 0
    out, err = capfd.readouterr()
    assert (out, err) == ("out\nmore\n", "err\n")
    (entry,) = [json.loads(text) for text in history.read_text().splitlines()]
    assert entry["key"] == "k"
    assert entry["at"] > 1_000_000_000
    assert entry["ms"] >= 0
    assert record.stat().st_mtime > 1_000_000_000

    monkeypatch.setenv("CACHEHOOK_MEMO", "0")
    assert _memo.replay(args) is None  # memos off
    monkeypatch.delenv("CACHEHOOK_MEMO")
    absent.write_text("")
    assert _memo.replay(args) is None  # a path recorded absent exists
    absent.unlink()
    assert _memo.replay(args) == 0
    watched.write_text("changed")
    assert _memo.replay(args) is None  # a path's stat changed
    sections[2] = _memo._signature(watched.stat()) + _memo._ABSENT
    sections[4] = b"/elsewhere"
    assert _memo._write(path, sections) is None
    assert _memo.replay(args) is None  # a realpath answers otherwise
    sections[4] = os.fsencode(os.path.realpath(tmp_path))
    sections[6] = _memo._STORE_FILE.pack(held.st_ino, held.st_dev, held.st_size + 1, 1)
    assert _memo._write(path, sections) is None
    assert _memo.replay(args) is None  # the hit record is not the one the memo names
    sections[6] = _memo._STORE_FILE.pack(held.st_ino, held.st_dev, held.st_size, 1)
    for frames in (output[:-2], b"\x03" + output[1:]):  # cut short; a third stream
        sections[7] = frames
        assert _memo._write(path, sections) is None  # a valid digest over bad frames
        assert _memo.replay(args) is None
    sections[7] = output
    record.unlink()
    assert _memo.replay(args) is None  # the hit record is gone
    for damaged in (b"", b"cachehook-memo 1 " + b"0" * 32 + b"\n", Path(path).read_bytes()[:-3]):
        Path(path).write_bytes(damaged)
        assert _memo.replay(args) is None
    capfd.readouterr()


def test_a_recorder_sees_stats_opens_listings_and_links_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What :class:`Recorder` notes, and what taints it (measured by coverage, as above)."""
    from cachehook import _memo

    cache = tmp_path / "cache"
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file").write_text("f")
    (tmp_path / "link").symlink_to("dir/file")
    old = 1_000_000_000
    for name in ("dir/file", "dir"):
        os.utime(tmp_path / name, (old, old))
    recorder = _memo.Recorder(["exec", "--", "true"]).start()
    try:
        os.stat("dir/file")
        os.lstat(tmp_path / "link")
        os.readlink("link")
        os.access(tmp_path / "absent", os.R_OK)
        with open(tmp_path / "dir" / "file", "rb") as file:
            file.read()
        os.listdir(tmp_path / "dir")
        resolved = os.path.realpath(tmp_path / "link")
        with open(cache.parent / "cache-file", "w") as file:  # outside the cache: noted
            file.write("x")
    finally:
        recorder.stop()
    assert os.stat is not recorder._stat  # the patches are undone
    seen = {path for path, _ in recorder.seen}
    for name in ("dir/file", "link", "absent", "dir"):
        assert str(tmp_path / name) in seen, name
    assert recorder.seen[(str(tmp_path / "absent"), True)] == _memo._ABSENT
    assert recorder.realpaths[str(tmp_path / "link")] == resolved
    assert str(cache.parent / "cache-file") in recorder.written
    reason = recorder.save(
        cache_dir=str(cache),
        store_files=[],
        output=b"",
        history=b"",
        history_path=str(cache / "history.jsonl"),
        exit_code=0,
    )
    assert reason is not None
    assert "was written" in reason

    child = _memo.Recorder(["exec", "--", "true", "2"]).start()
    try:
        subprocess.run(["true"], check=True)
    finally:
        child.stop()
    assert child.tainted is not None
    assert "subprocess.Popen" in child.tainted
    monkeypatch.setenv("CACHEHOOK_MEMO", "0")
    assert _memo.Recorder(["exec", "--", "true", "3"]).start().tainted == "memos are off"
