"""``--filter`` and ``--affected`` over a real diamond workspace and a real git repository."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from cachehook.errors import ConfigError
from cachehook.selection import affected_members, filter_members, select_tasks
from tests.test_members import ROOT_TASKS, graph_at, lock_text, make_workspace

if TYPE_CHECKING:
    from pathlib import Path


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    root = make_workspace(tmp_path / "repo", ROOT_TASKS)
    (root / "shared.toml").write_text("")
    (root / ".gitignore").write_text(".cache/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    git(root, "checkout", "-q", "-b", "feature")
    return root


def test_filters_by_name_path_dependencies_and_dependents(repo: Path) -> None:
    graph = graph_at(repo)
    assert list(filter_members(graph, ["b"], repo)) == ["b"]
    assert set(filter_members(graph, ["a..."], repo)) == {"a", "b", "c", "d"}
    assert set(filter_members(graph, ["...b"], repo)) == {"b", "a"}
    assert set(filter_members(graph, ["./packages/c"], repo)) == {"c"}
    assert set(filter_members(graph, ["."], repo / "packages" / "d" / "src")) == {"d"}
    assert set(filter_members(graph, ["./packages"], repo)) == {"a", "b", "c", "d"}
    assert set(filter_members(graph, ["[bc]", "d"], repo)) == {"b", "c", "d"}
    assert set(filter_members(graph, ["a...", "!d"], repo)) == {"a", "b", "c"}
    assert set(filter_members(graph, ["!./packages/a"], repo)) == {"b", "c", "d"}
    with pytest.raises(ConfigError, match=r"--filter 'e' matches no member; the members are: a"):
        filter_members(graph, ["e"], repo)

    assert select_tasks(graph, ["B#test"], cwd=repo).names == ("b#test",)  # PEP 503 names
    chosen = select_tasks(graph, ["test"], filters=["...c"], cwd=repo)
    assert chosen.names == ("a#test", "c#test")
    assert chosen.reasons["a#test"] == "--filter ...c: it depends on c"


def test_affected_after_a_commit_on_a_branch(repo: Path) -> None:
    assert affected_members(graph_at(repo), "main") == {}

    (repo / "packages" / "b" / "src" / "b.py").write_text("NAME = 'b2'\n")
    git(repo, "commit", "-q", "-am", "change b")
    found = affected_members(graph_at(repo), "main")
    assert found == {"b": "packages/b/src/b.py changed", "a": "packages/b/src/b.py changed"}

    (repo / "packages" / "c" / "notes.txt").write_text("untracked, not committed")
    found = affected_members(graph_at(repo), "main")
    assert set(found) == {"a", "b", "c"}
    chosen = select_tasks(graph_at(repo), ["lint"], affected="main", cwd=repo)
    assert chosen.names == ("a#lint", "b#lint", "c#lint")


def test_a_file_moved_between_members_affects_both(repo: Path) -> None:
    git(repo, "mv", "packages/c/src/c.py", "packages/d/src/c.py")
    git(repo, "commit", "-q", "-m", "move")
    found = affected_members(graph_at(repo), "main")
    assert found["c"] == "packages/c/src/c.py changed"
    assert found["d"] == "packages/d/src/c.py changed"


def test_affected_by_a_lock_bump_only_where_the_closure_changed(repo: Path) -> None:
    (repo / "uv.lock").write_text(lock_text({"httpx": "0.28.1", "attrs": "24.2.0"}))
    git(repo, "commit", "-q", "-am", "bump httpx")
    assert affected_members(graph_at(repo), "main") == {
        "a": "its locked dependencies in uv.lock changed: httpx 0.27.0 -> 0.28.1"
    }


def test_a_global_input_or_the_root_pyproject_affects_every_member(repo: Path) -> None:
    (repo / "shared.toml").write_text("x = 1\n")
    assert set(affected_members(graph_at(repo), "main")) == {"a", "b", "c", "d"}


def test_affected_needs_a_merge_base(repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"merge base of HEAD and 'trunk'.*--affected=REF"):
        affected_members(graph_at(repo), "trunk")


def test_filters_need_a_workspace(tmp_path: Path) -> None:
    from cachehook.tasks import load_tasks

    graph = load_tasks({"tasks": {"t": {"command": "x"}}}, source="pyproject.toml", root=tmp_path)
    with pytest.raises(ConfigError, match=r"--filter: pyproject.toml is not a uv workspace"):
        select_tasks(graph, ["t"], filters=["a"], cwd=tmp_path)
    assert select_tasks(graph, ["t"], cwd=tmp_path).names == ("t",)


def test_a_run_started_in_a_member_directory_takes_that_member(repo: Path) -> None:
    graph = graph_at(repo)
    deep = repo / "packages" / "c" / "src"
    chosen = select_tasks(graph, ["test"], cwd=deep)
    assert chosen.names == ("c#test",)
    assert "started in c's directory" in chosen.reasons["c#test"]
    # At the root, every member; a filter or --affected overrides the scoping.
    assert set(select_tasks(graph, ["test"], cwd=repo).names) == {
        "a#test",
        "b#test",
        "c#test",
        "d#test",
    }
    assert set(select_tasks(graph, ["test"], filters=["*"], cwd=deep).names) == {
        "a#test",
        "b#test",
        "c#test",
        "d#test",
    }
    assert select_tasks(graph, ["test"], affected="main", cwd=deep).names == ()
    # An explicit member#task is taken wherever the run starts.
    assert select_tasks(graph, ["a#test"], cwd=deep).names == ("a#test",)
