"""``cachehook explain``: checked against real runs of the example project, in this process
(the ``cli`` fixture) but for one ``python -m cachehook`` exit code."""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING

import pytest

from tests.cli.test_run import cachehook, copy_example, use_this_python

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.cli.conftest import Ran

    Cli = Callable[..., Ran]

pytestmark = pytest.mark.usefixtures("unmeasured_children")


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_this_python(monkeypatch)
    return copy_example(tmp_path)


def test_no_stored_run_yet(example: Path, cli: Cli) -> None:
    result = cli("explain", "docs", cwd=example)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("docs would run (key ")
    assert "no stored run of it to compare with" in result.stdout
    data = json.loads(cli("explain", "docs", "--json", cwd=example).stdout)
    assert (data["verdict"], data["compared_with"], data["changes"]) == ("would-run", None, [])


def test_lists_changed_added_and_removed_inputs_and_env_names_never_values(
    example: Path, cli: Cli
) -> None:
    assert cli("run", "docs", cwd=example).returncode == 0
    (example / "docs" / "index.md").write_text("# Changed\n")
    (example / "docs" / "extra.md").write_text("# New page\n")
    (example / "src" / "app" / "util.py").unlink()
    shutil.rmtree(example / "build")
    secret = "hunter2-very-secret"
    result = cli("explain", "docs", cwd=example, env={"DOCS_TOKEN": secret})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("docs would run (key ")
    assert "Since its last stored run" in lines[0]
    assert lines[1:] == [
        "  input added: docs/extra.md",
        "  input changed: docs/index.md",
        "  input removed: src/app/util.py",
        "  env changed: DOCS_TOKEN",
    ]
    assert secret not in result.stdout + result.stderr
    assert not (example / "build").exists(), "explain runs nothing"


def test_names_the_dependency_whose_key_changed(example: Path, cli: Cli) -> None:
    assert cli("run", "docs", cwd=example).returncode == 0
    (example / "tools" / "gen_models.py").write_text(
        (example / "tools" / "gen_models.py").read_text() + "\n# touched\n"
    )
    result = cli("explain", "docs", cwd=example)
    assert "  dependency changed: gen (see `cachehook explain gen`)" in result.stdout
    assert "  input changed: tools/gen_models.py" in cli("explain", "gen", cwd=example).stdout


def test_after_a_rerun_explains_why_that_run_missed(example: Path, cli: Cli) -> None:
    assert cli("run", "docs", cwd=example).returncode == 0
    toml = example / "pyproject.toml"
    toml.write_text(
        toml.read_text().replace('"--out", "build/docs"]', '"--out", "build/docs"]\nsalt = "2"')
    )
    assert cli("run", "docs", cwd=example).returncode == 0
    result = cli("explain", "docs", "--json", cwd=example)
    data = json.loads(result.stdout)
    assert data["verdict"] == "would-hit"
    assert data["changes"] == ["salt changed"]
    assert data["compared_with"]["key"] != data["key"]
    text = cli("explain", "docs", cwd=example).stdout
    assert "docs would hit: key " in text
    assert "  salt changed" in text


def test_unknown_task(example: Path) -> None:
    """Through the entry point: ``python -m cachehook explain`` exits 2."""
    result = cachehook("explain", "lnt", cwd=example)
    assert result.returncode == 2
    assert "unknown task 'lnt' (did you mean 'lint'?)" in result.stderr


def test_explain_compares_with_this_projects_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: explain in one project never compares with a same-named task of another."""
    from click.testing import CliRunner

    from cachehook.cli.explain import explain
    from cachehook.config import load_settings
    from cachehook.runner import Runner
    from cachehook.scheduler import run_tasks
    from cachehook.tasks import load_task_graph

    table = '[tool.cachehook.tasks.t]\ncommand = "true"\ninputs = ["*.txt"]\n'
    first, second = tmp_path / "first", tmp_path / "second"
    for root, text in ((first, "a"), (second, "b")):
        root.mkdir()
        (root / "pyproject.toml").write_text(table)
        (root / "in.txt").write_text(text)
    settings = load_settings(cwd=first, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None) as runner:
        graph = load_task_graph(settings, cwd=first)

        class Quiet:
            def live(self, name: str) -> None:
                return None

            def started(self, name: str, key: str) -> None:
                pass

            def finished(self, outcome: object) -> None:
                pass

        assert run_tasks(graph, ["t"], runner, reporter=Quiet()).exit_code == 0
    monkeypatch.chdir(second)
    result = CliRunner().invoke(explain, ["t", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["compared_with"] is None
    everywhere = CliRunner().invoke(explain, ["t", "--json", "--all-projects"])
    assert json.loads(everywhere.stdout)["changes"], "across projects: in.txt differs"


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        pytest.param({"key": None}, "its 'key'", id="missing-field"),
        pytest.param({"stored_at": "yesterday"}, "its 'stored_at'", id="wrong-type"),
        pytest.param({"size": -1}, "its 'size'", id="negative-size"),
        pytest.param({"log_checksum": "f" * 33}, "its 'log_checksum'", id="bad-digest"),
        # A record that reads whole but whose manifest does not: not compared, kept.
        pytest.param({"manifest": {"inputs": 5}}, None, id="hostile-manifest"),
    ],
)
def test_a_malformed_stored_record_is_never_compared_with(
    example: Path, cli: Cli, cache_dir: Path, damage: dict[str, object], said: str | None
) -> None:
    from cachehook.store import LocalStore

    assert cli("run", "docs", cwd=example).returncode == 0
    stored = json.loads(cli("explain", "docs", "--json", cwd=example).stdout)
    assert stored["verdict"] == "would-hit"
    (example / "docs" / "index.md").write_text("# Changed\n")
    with LocalStore(cache_dir / "store", max_size=10**9) as store:
        name = f"m/{stored['key']}"
        fields = json.loads(store._cache.get(name))
        record = {n: v for n, v in {**fields, **damage}.items() if v is not None}
        store._cache.set(name, json.dumps(record))
    result = cli("explain", "docs", cwd=example)
    assert result.returncode == 0, result.stderr
    assert "docs would run (key " in result.stdout
    assert "no stored run of it to compare with" in result.stdout
    if said is not None:
        assert f"evicted artifact {stored['key']}" in result.stderr
        assert f"its metadata is malformed: {said}" in result.stderr
    data = json.loads(cli("explain", "docs", "--json", cwd=example).stdout)
    assert (data["verdict"], data["compared_with"]) == ("would-run", None)
