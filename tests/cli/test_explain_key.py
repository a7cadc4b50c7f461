"""``cachehook explain`` and the next ``cachehook run`` agree on the key, or explain says why not.

Reproduced with examples/tasks (issue 9): after a new schema, ``gen`` would run and rewrite
``src/app/models.py``, an input of ``docs``, so ``docs``' key as the files are now is not the
key its run will have.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli.test_run import copy_example, use_this_python

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("unmeasured_children")


@pytest.fixture
def example(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_this_python(monkeypatch)  # the tasks' python is this one, as under python -m cachehook
    project = copy_example(tmp_path)
    ran = cli("run", "docs", cwd=project)
    assert ran.returncode == 0, ran.stderr
    return project


def explained(cli: Any, project: Path) -> tuple[dict[str, Any], str]:
    data = cli("explain", "docs", "--json", cwd=project)
    text = cli("explain", "docs", cwd=project)
    assert data.returncode == text.returncode == 0, data.stderr + text.stderr
    return json.loads(data.stdout), text.stdout


def key_of_the_next_run(cli: Any, project: Path) -> str:
    ran = cli("run", "docs", "--summarize", cwd=project)
    assert ran.returncode == 0, ran.stderr
    path = ran.stderr.rsplit("run summary written to ", 1)[1].strip()
    with open(path, encoding="utf-8") as summary:
        tasks = json.load(summary)["tasks"]
    key: str = next(task["key"] for task in tasks if task["name"] == "docs")
    return key


def test_a_dependency_that_rewrites_an_input_is_named(example: Path, cli: Any) -> None:
    (example / "schema" / "tag.json").write_text('{"name": "Tag", "fields": {"id": "int"}}\n')
    data, text = explained(cli, example)
    assert data["rewritten_by"] == {"gen": ["src/app/models.py"]}
    assert (
        "Note: gen would run first and writes src/app/models.py, read by docs: this key is for "
        "the files as they are now, and the key of docs will change once gen has run."
    ) in " ".join(text.split())
    assert key_of_the_next_run(cli, example) != data["key"]  # the note was needed


def test_without_such_a_dependency_explain_and_run_agree(example: Path, cli: Any) -> None:
    (example / "docs" / "index.md").write_text("# Changed\n")
    data, text = explained(cli, example)
    assert data["rewritten_by"] == {}
    assert "Note:" not in text
    assert data["verdict"] == "would-run"
    assert key_of_the_next_run(cli, example) == data["key"]
