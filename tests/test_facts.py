"""The facts a runner tells its listeners, and the import cycles they removed (issue 11)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import cachehook
from cachehook.config import load_settings
from cachehook.facts import LookupDone, Notice, TaskFinished, Transfer
from cachehook.history import read_history
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from cachehook.facts import Fact

PACKAGE = Path(cachehook.__file__).parent


def _writer(root: Path, outputs: tuple[str, ...] = ("out/**",)) -> TaskSpec:
    code = "import os; os.makedirs('out', exist_ok=True); open('out/o.txt', 'w').write('o')"
    return TaskSpec(
        command=(sys.executable, "-c", code), inputs=("src/**",), outputs=outputs, cwd=root
    )


def test_a_miss_then_a_hit_tell_their_lookups_and_results(project: Path) -> None:
    facts: list[Fact] = []
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=lambda message: None, listeners=[facts.append]) as runner:
        miss = runner.run(runner.prepare(_writer(project)))
        (project / "out" / "o.txt").unlink()
        hit = runner.run(runner.prepare(_writer(project)))
        project_id = runner.project

    assert (miss.status, hit.status, hit.restored) == ("MISS", "HIT", ("out/o.txt",))
    assert facts == [
        LookupDone(miss.key, "LOCAL", hit=False, saved_ms=0),
        TaskFinished(miss, None, project_id),
        LookupDone(hit.key, "LOCAL", hit=True, saved_ms=hit.saved_ms),
        TaskFinished(hit, None, project_id),
    ]
    # The history is a listener of the same facts: one line per TaskFinished.
    lines = [(e.key, e.status, e.project) for e in read_history(settings.cache_dir)]
    assert lines == [(miss.key, "MISS", project_id), (hit.key, "HIT", project_id)]


def test_a_notice_reaches_on_notice_and_every_listener(project: Path) -> None:
    facts: list[Fact] = []
    said: list[str] = []
    settings = load_settings(cwd=project, environ=dict(os.environ))
    with Runner(settings, on_notice=said.append, listeners=[facts.append]) as runner:
        result = runner.run(runner.prepare(_writer(project, outputs=("dist/**",))))

    assert not result.stored
    notices = [fact for fact in facts if type(fact) is Notice]
    assert [n.message for n in notices] == said
    assert said == ["output glob 'dist/**' matched no file after the task; not caching it"]


def test_transfers_reach_on_progress_and_the_listeners(
    project: Path, tmp_path: Path, remote_env: dict[str, str]
) -> None:
    told: dict[str, tuple[list[Fact], list[tuple[str, int, int | None]]]] = {}
    for run in ("upload", "download"):
        facts: list[Fact] = []
        progress: list[tuple[str, int, int | None]] = []
        told[run] = (facts, progress)
        cache_dir = tmp_path / f"cache-{run}"  # the download's local cache is empty
        environ = {**os.environ, **remote_env, "CACHEHOOK_CACHE_DIR": str(cache_dir)}
        settings = load_settings(cwd=project, environ=environ)
        with Runner(
            settings,
            on_notice=lambda message: None,
            on_progress=lambda *args, into=progress: into.append(args),
            listeners=[facts.append],
        ) as runner:
            result = runner.run(runner.prepare(_writer(project)))
        (project / "out" / "o.txt").unlink()
        assert (result.status, result.source) == (
            ("MISS", None) if run == "upload" else ("HIT", "REMOTE")
        )

    for run, (facts, progress) in told.items():
        transfers = [tuple(fact) for fact in facts if type(fact) is Transfer]
        assert transfers, f"the {run} told its progress"
        assert transfers == progress
        assert {what for what, _, _ in transfers} == {run}
    lookups = [
        (f.where, f.hit) for facts, _ in told.values() for f in facts if type(f) is LookupDone
    ]
    assert lookups == [("LOCAL", False), ("REMOTE", False), ("LOCAL", False), ("REMOTE", True)]


def _cachehook_imports(module: str) -> set[str]:
    """Every ``cachehook.*`` module ``module`` names in an import, at any level."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("cachehook.")}


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("remote", "cachehook.events"),  # events sends through remote
        ("history", "cachehook.runner"),  # the runner tells the history
        ("facts", "cachehook.runner"),
        ("_restore", "cachehook.runner"),
        ("_publish", "cachehook.runner"),
        ("_prepare", "cachehook.runner"),
    ],
)
def test_no_import_cycle_with_the_runner_or_the_events(module: str, never: str) -> None:
    assert never not in _cachehook_imports(module), f"{module} imports {never}, even if typed"


def test_the_facts_module_imports_no_cachehook_module_at_run_time() -> None:
    tree = ast.parse((PACKAGE / "facts.py").read_text())
    top_level = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cachehook")
    }
    assert top_level == set()
