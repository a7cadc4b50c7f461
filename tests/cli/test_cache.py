"""``cachehook cache ls | show | prune | clear`` on a cache filled by real runs.

In this process (the ``cli`` fixture), but for one ``python -m cachehook`` exit code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli.test_run import cachehook, copy_example, use_this_python

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Ran

    Cli = Callable[..., Ran]

pytestmark = pytest.mark.usefixtures("unmeasured_children")


@pytest.fixture
def example(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_this_python(monkeypatch)
    project = copy_example(tmp_path)
    ran = cli("run", "docs", "lint", cwd=project)
    assert ran.returncode == 0, ran.stderr
    return project


def listing(cli: Cli, project: Path) -> list[dict[str, Any]]:
    result = cli("cache", "ls", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["artifacts"]
    return rows


def blob_files(cache_dir: Path) -> int:
    return sum(1 for path in (cache_dir / "store").rglob("*.val"))


def test_ls_and_show(example: Path, cli: Cli) -> None:
    rows = listing(cli, example)
    assert sorted(row["task"] for row in rows) == ["docs", "gen", "lint"]
    text = cli("cache", "ls", cwd=example)
    assert "3 artifacts" in text.stderr
    assert all(row["key"] in text.stdout for row in rows)
    docs = next(row for row in rows if row["task"] == "docs")
    shown = cli("cache", "show", docs["key"][:8], cwd=example)
    assert shown.returncode == 0, shown.stderr
    assert f"key       {docs['key']}" in shown.stdout
    assert "output    build/docs/index.html" in shown.stdout
    assert "docs/index.md" in shown.stdout
    data = json.loads(cli("cache", "show", docs["key"], "--json", cwd=example).stdout)
    assert data["task"] == "docs"
    assert data["manifest"]["env"] == []


def test_show_unknown_key(example: Path) -> None:
    """Through the entry point: ``python -m cachehook`` exits 1."""
    result = cachehook("cache", "show", "ffffffff", cwd=example)
    assert result.returncode == 1
    assert "no artifact with a key starting 'ffffffff'" in result.stderr


def test_prune_asks_and_a_no_keeps_everything(example: Path, cli: Cli) -> None:
    result = cli("cache", "prune", "--older-than", "0s", cwd=example, stdin="n\n")
    assert result.returncode == 1
    assert "Remove 3 of 3 artifacts" in result.stderr
    assert "nothing removed" in result.stderr
    assert len(listing(cli, example)) == 3
    eof = cli("cache", "prune", "--older-than", "0s", cwd=example, stdin="")
    assert eof.returncode == 1
    assert len(listing(cli, example)) == 3


def test_prune_older_than_removes_and_frees_the_files(
    example: Path, cli: Cli, cache_dir: Path
) -> None:
    kept = cli("cache", "prune", "--older-than", "1d", "--yes", cwd=example)
    assert kept.returncode == 0
    assert kept.stdout.startswith("nothing to prune: 3 artifacts, ")
    before = blob_files(cache_dir)
    result = cli("cache", "prune", "--older-than", "0s", cwd=example, stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert "removed 3 artifacts" in result.stdout
    assert listing(cli, example) == []
    assert blob_files(cache_dir) < before
    rerun = cli("run", "lint", "--summarize", cwd=example)
    assert "cachehook: 1 task: 0 cached, 1 ran" in rerun.stderr


def test_prune_max_size_removes_least_recently_used_first(example: Path, cli: Cli) -> None:
    assert cli("run", "lint", cwd=example).returncode == 0  # lint is now the freshest use
    rows = listing(cli, example)
    lint = next(row for row in rows if row["task"] == "lint")
    dry = cli("cache", "prune", "--max-size", "1", "--dry-run", cwd=example)
    assert dry.returncode == 0, dry.stderr
    assert len(listing(cli, example)) == 3
    # A cap that only the database itself exceeds removes everything, lint last.
    lines = [line for line in dry.stdout.splitlines() if line.startswith("would remove ")]
    assert len(lines) == 3
    assert lines[-1].startswith(f"would remove {lint['key']}")
    assert "3 of 3 artifacts (" in dry.stdout
    assert dry.stdout.endswith("would be removed\n")
    # Just under the present size: exactly one artifact goes, the least recently used one.
    size = json.loads(cli("stats", "--json", cwd=example).stdout)["cache"]["size"]
    result = cli("cache", "prune", "--max-size", str(size - 1), "--yes", cwd=example)
    assert result.returncode == 0, result.stderr
    assert "removed 1 artifacts" in result.stdout
    left = {row["key"] for row in listing(cli, example)}
    assert len(left) == 2
    assert lint["key"] in left


def test_prune_needs_a_limit(example: Path, cli: Cli) -> None:
    result = cli("cache", "prune", cwd=example)
    assert result.returncode == 2
    assert "say what to prune" in result.stderr
    bad = cli("cache", "prune", "--max-size", "lots", cwd=example)
    assert bad.returncode == 2
    assert "--max-size" in bad.stderr


def test_clear_asks_unless_yes(example: Path, cli: Cli) -> None:
    declined = cli("cache", "clear", cwd=example, stdin="n\n")
    assert declined.returncode == 1
    assert len(listing(cli, example)) == 3
    result = cli("cache", "clear", "--yes", cwd=example)
    assert result.returncode == 0, result.stderr
    assert "removed 3 artifacts" in result.stdout
    assert listing(cli, example) == []
    assert cli("cache", "clear", "--yes", cwd=example).returncode == 0


def test_prune_refuses_an_age_without_a_unit(tmp_path: Path, cli: Cli) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    (project / "in.txt").write_text("x")
    ran = cli("exec", "-i", "in.txt", "--", "true", cwd=project)
    assert ran.returncode == 0, ran.stderr
    for bare in ("7", "0", "1.5"):
        refused = cli("cache", "prune", "--older-than", bare, "--yes", cwd=project)
        assert refused.returncode == 2, refused
        assert f"--older-than {bare}: give a unit, e.g. {bare}d" in refused.stderr
        assert "2w, 7d, 12h, 30m, 45s" in refused.stderr
    kept = cli("cache", "ls", "--json", cwd=project)
    assert len(json.loads(kept.stdout)["artifacts"]) == 1
    pruned = cli("cache", "prune", "--older-than", "0s", "--yes", cwd=project)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 artifacts" in pruned.stdout


def test_clear_works_on_a_damaged_database(tmp_path: Path, cache_dir: Path) -> None:
    """Issue 10: a damaged cache.db is moved aside, not a cache that stays off for good."""
    from click.testing import CliRunner

    from cachehook.cli.cache import cache
    from cachehook.store import LocalStore

    LocalStore(cache_dir / "store", max_size=10**9).close()
    (cache_dir / "store" / "cache.db").write_bytes(b"garbage " * 2000)
    result = CliRunner().invoke(cache, ["clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output
    assert (cache_dir / "store" / "cache.db.damaged").exists()


def _rewrite_record(cache_dir: Path, key: str, changes: dict[str, Any]) -> None:
    """Change the store record of ``key`` as a hostile or damaged cache would (None: remove)."""
    from cachehook.store import LocalStore

    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        fields = json.loads(store._cache.get(f"m/{key}"))
        record = {n: v for n, v in {**fields, **changes}.items() if v is not None}
        store._cache.set(f"m/{key}", json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        pytest.param({"checksum": None}, "checksum", id="missing-field"),
        pytest.param({"duration_ms": "12"}, "duration_ms", id="wrong-type"),
        pytest.param({"size": -3}, "size", id="negative-size"),
        pytest.param({"checksum": "0" * 31 + "G"}, "checksum", id="bad-digest"),
    ],
)
def test_ls_and_show_treat_a_malformed_record_as_gone(
    example: Path, cli: Cli, cache_dir: Path, damage: dict[str, Any], field: str
) -> None:
    docs = next(row for row in listing(cli, example) if row["task"] == "docs")
    _rewrite_record(cache_dir, docs["key"], damage)
    result = cli("cache", "ls", "--json", cwd=example)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["artifacts"]
    assert sorted(row["task"] for row in rows) == ["gen", "lint"]
    assert f"evicted artifact {docs['key']}" in result.stderr
    assert f"its metadata is malformed: its {field!r}" in result.stderr
    shown = cli("cache", "show", docs["key"], cwd=example)
    assert shown.returncode == 1
    assert "no artifact with a key starting" in shown.stderr
    rerun = cli("run", "docs", cwd=example)
    assert rerun.returncode == 0, rerun.stderr
    assert "docs: cache miss" in rerun.stderr, "a miss, never a hit of that record"


def test_show_of_a_hostile_manifest_shows_no_env_value(
    example: Path, cli: Cli, cache_dir: Path
) -> None:
    """The manifest is checked whole only by ``explain``; ``show`` prints what is shaped right."""
    gen = next(row for row in listing(cli, example) if row["task"] == "gen")
    hostile = {"env": {"TOKEN": "hunter2-secret"}, "inputs": [5, {"path": 1}, "x"], "salt": 3}
    _rewrite_record(cache_dir, gen["key"], {"manifest": hostile})
    shown = cli("cache", "show", gen["key"], cwd=example)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    assert "input " not in shown.stdout
    data = cli("cache", "show", gen["key"], "--json", cwd=example)
    assert data.returncode == 0, data.stderr
    assert json.loads(data.stdout)["manifest"]["env"] == []
    assert "hunter2" not in data.stdout
