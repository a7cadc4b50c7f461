"""``cachehook stats``: checked against real runs recorded in the history.

In this process (the ``cli`` fixture) but for one ``python -m cachehook stats``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli.test_run import cachehook, copy_example, use_this_python

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.cli.conftest import Ran

    Cli = Callable[..., Ran]

pytestmark = pytest.mark.usefixtures("unmeasured_children")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_this_python(monkeypatch)
    project = copy_example(tmp_path, slow=True)  # time saved is checked against the sleeps
    toml = project / "pyproject.toml"
    toml.write_text(toml.read_text().replace("[tool.cachehook.tasks.gen]", (
        '[tool.cachehook]\nmax-size = "5GiB"\n\n[tool.cachehook.tasks.gen]'
    )))  # fmt: skip
    return project


def saved_in_history(cache_dir: Path) -> int:
    """The time saved that the history's whole lines record, summed: what stats must say."""
    total = 0
    for line in (cache_dir / "history.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short
        if record.get("status") == "HIT":
            total += int(record["saved"])
    return total


def stats(cli: Cli, project: Path) -> dict[str, Any]:
    result = cli("stats", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_empty_cache(example: Path, cli: Cli) -> None:
    data = stats(cli, example)
    assert data["periods"]["all"]["runs"] == 0
    assert data["periods"]["all"]["hit_rate"] is None
    assert data["cache"]["entries"] == 0
    assert data["cache"]["size"] == 0
    text = cachehook("stats", cwd=example)  # through the entry point
    assert text.returncode == 0, text.stderr
    assert "hit rate" in text.stdout
    assert "cache: 0 B of 5.0 GiB" in text.stdout


def test_counts_hits_misses_time_saved_and_cache_size(
    example: Path, cli: Cli, cache_dir: Path
) -> None:
    assert cli("run", "docs", "lint", cwd=example).returncode == 0  # 3 misses
    assert cli("run", "docs", "lint", cwd=example).returncode == 0  # 3 local hits
    (example / "docs" / "index.md").write_text("# Changed\n")
    assert cli("run", "docs", cwd=example).returncode == 0  # gen hits, docs misses
    data = stats(cli, example)
    for period in ("today", "7d", "all"):
        counts = data["periods"][period]
        assert counts["runs"] == 8
        assert (counts["local_hits"], counts["local_misses"]) == (4, 4)
        assert (counts["remote_hits"], counts["remote_misses"]) == (0, 0)
        assert (counts["hits"], counts["misses"]) == (4, 4)
        assert counts["hit_rate"] == 0.5
        # The hits' saved times as recorded (gen twice, docs once; each task sleeps, so not 0).
        assert counts["saved_ms"] == saved_in_history(cache_dir) != 0
    cache = data["cache"]
    assert cache["entries"] == 4
    assert cache["max_size"] == 5 * 1024**3
    assert cache["size"] > 0
    assert Path(data["history"]) == cache_dir / "history.jsonl"
    text = cli("stats", cwd=example).stdout
    assert "hit rate" in text
    assert "50%" in text
    assert "4 entries" in text


def test_old_entries_count_only_all_time_and_a_torn_line_is_skipped(
    example: Path, cli: Cli, cache_dir: Path
) -> None:
    assert cli("run", "lint", cwd=example).returncode == 0
    history = cache_dir / "history.jsonl"
    old = json.loads(history.read_text().splitlines()[0])
    old.update(at=old["at"] - 30 * 86400, status="HIT", source="LOCAL", saved=60_000)
    with history.open("a") as file:
        file.write(json.dumps(old) + "\n")
        file.write('{"at": 1, "task": "li')  # a run killed mid-write
    os.utime(history)
    assert cli("run", "lint", cwd=example).returncode == 0  # appended after the torn line
    data = stats(cli, example)
    assert data["periods"]["all"]["runs"] == 3
    # All time counts the old hit's 60 s on top of this week's (the hit after the torn line).
    assert data["periods"]["all"]["saved_ms"] - data["periods"]["7d"]["saved_ms"] == 60_000
    assert data["periods"]["7d"]["runs"] == 2
    assert data["periods"]["today"]["hits"] == 1


@pytest.mark.integration
def test_remote_hits_and_misses_against_a_real_server(
    example: Path, cli: Cli, cache_dir: Path, tmp_path: Path, remote_env: dict[str, str]
) -> None:
    first = cli("run", "docs", "lint", cwd=example, env=remote_env)
    assert first.returncode == 0, first.stderr
    mine = stats(cli, example)["periods"]["all"]
    assert (mine["local_misses"], mine["remote_misses"], mine["misses"]) == (3, 3, 3)
    # A second machine: an empty local cache, the same remote.
    other = {**remote_env, "CACHEHOOK_CACHE_DIR": str(tmp_path / "other-cache")}
    shutil.rmtree(example / "build")
    second = cli("run", "docs", "lint", "--summarize", cwd=example, env=other)
    assert second.returncode == 0, second.stderr
    assert "docs: remote hit " in second.stderr
    result = cli("stats", "--json", cwd=example, env=other)
    theirs = json.loads(result.stdout)["periods"]["all"]
    assert (theirs["remote_hits"], theirs["local_misses"], theirs["misses"]) == (3, 3, 0)
    assert theirs["hit_rate"] == 1.0
    # What the other machine saved is what the hits it recorded say (the tasks sleep: not 0).
    assert theirs["saved_ms"] == saved_in_history(tmp_path / "other-cache") != 0
    assert (example / "build" / "docs" / "index.html").exists()


def test_stats_and_cache_ls_speak_of_the_current_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: a second project on the same cache does not see the first one's runs."""
    from click.testing import CliRunner

    from cachehook.cli.cache import cache
    from cachehook.cli.stats import stats as stats_command
    from cachehook.config import load_settings
    from cachehook.runner import Runner, TaskSpec

    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
        (root / "pyproject.toml").write_text("")
        (root / "in.txt").write_text("x")
    settings = load_settings(cwd=first, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        spec = TaskSpec(command=("true",), inputs=("in.txt",), cwd=first, name="t")
        for _ in range(2):
            runner.run(runner.prepare(spec))

    def invoke(root: Path, *args: str) -> dict[str, Any]:
        monkeypatch.chdir(root)
        command = stats_command if args[0] == "stats" else cache
        result = CliRunner().invoke(command, [*args[1:], "--json"])
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    assert invoke(first, "stats")["periods"]["all"]["runs"] == 2
    assert invoke(second, "stats")["periods"]["all"]["runs"] == 0
    assert invoke(second, "stats", "--all-projects")["periods"]["all"]["runs"] == 2
    assert len(invoke(first, "cache", "ls")["artifacts"]) == 1
    assert invoke(second, "cache", "ls")["artifacts"] == []
    assert len(invoke(second, "cache", "ls", "--all-projects")["artifacts"]) == 1
