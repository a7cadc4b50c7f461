"""uv workspace discovery and uv.lock closures, on real files in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from cachehook.errors import ConfigError
from cachehook.workspace import (
    find_workspace_root,
    load_workspace,
    locked_closures,
    normalize_name,
)
from tests.integrations.hosts import BIN

if TYPE_CHECKING:
    from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def member(
    root: Path, path: str, name: str, deps: tuple[str, ...] = (), third: tuple[str, ...] = ()
) -> None:
    """A member at ``path`` depending on members ``deps`` and third-party ``third``."""
    lines = [
        "[project]",
        f'name = "{name}"',
        'version = "0.1.0"',
        f"dependencies = {[*deps, *third]!r}".replace("'", '"'),
    ]
    if deps:
        lines.append("[tool.uv.sources]")
        lines += [f"{d.split('>')[0].split('[')[0]} = {{ workspace = true }}" for d in deps]
    write(root / path / "pyproject.toml", "\n".join(lines) + "\n")


def workspace_root(root: Path, members: str = '["packages/*"]', exclude: str = "[]") -> Path:
    write(
        root / "pyproject.toml", f"[tool.uv.workspace]\nmembers = {members}\nexclude = {exclude}\n"
    )
    return root


def test_names_are_normalized_as_pep_503_says() -> None:
    assert normalize_name("Foo.Bar__baz-") == "foo-bar-baz-"
    assert normalize_name("My_Lib") == "my-lib"


def test_members_come_from_globs_less_exclude_and_skip_non_members(tmp_path: Path) -> None:
    root = workspace_root(tmp_path, '["packages/*", "tools/cli"]', '["packages/old*"]')
    member(root, "packages/core", "Core_Lib")
    member(root, "packages/app", "app", ("core-lib>=0.1",), ("extra-thing",))
    member(root, "packages/oldstuff", "oldstuff")
    member(root, "tools/cli", "cli", ("app[fast]",))
    (root / "packages" / "empty").mkdir()  # an empty directory is no member, as uv skips it
    write(root / "packages" / ".hidden" / "x.txt", "")  # nor a hidden one
    write(root / "packages" / "README.md", "a file matched by the glob is not a directory")
    write(root / "docs" / "pyproject.toml", '[project]\nname = "docs"\n')  # not matched

    workspace = load_workspace(root)

    assert workspace is not None
    assert workspace.names() == ["app", "cli", "core-lib"]
    assert workspace.members["app"].path == "packages/app"
    # "extra-thing" is a third-party requirement (no workspace source): not an edge.
    assert workspace.members["app"].dependencies == {"core-lib"}
    assert workspace.dependencies("cli") == ["app", "core-lib"]
    assert workspace.dependents("core-lib") == ["app", "cli"]
    assert workspace.member_at("packages/app/src/app/x.py") == workspace.members["app"]
    assert workspace.member_at("docs/index.md") is None


def test_a_matched_directory_without_pyproject_stops_discovery_like_uv(tmp_path: Path) -> None:
    root = workspace_root(tmp_path)
    member(root, "packages/core", "core")
    write(root / "packages" / "notes" / "todo.txt", "not a project")
    with pytest.raises(ConfigError, match=r"packages/notes has no pyproject.toml.*exclude"):
        load_workspace(root)


def test_dependencies_through_extras_groups_and_root_sources(tmp_path: Path) -> None:
    root = tmp_path
    write(
        root / "pyproject.toml",
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        "[tool.uv.sources]\nlib-b = { workspace = true }\nlib-c = { workspace = true }\n"
        "lib-d = { workspace = true }\n",
    )
    for name in ("lib-b", "lib-c", "lib-d"):
        member(root, f"packages/{name}", name)
    write(
        root / "packages" / "a" / "pyproject.toml",
        '[project]\nname = "a"\ndependencies = []\n'
        '[project.optional-dependencies]\nfast = ["lib_b"]\n'
        '[dependency-groups]\ntest = ["lib-c", { include-group = "other" }]\nother = []\n'
        '[tool.uv]\ndev-dependencies = ["lib.d"]\n',
    )
    workspace = load_workspace(root)
    assert workspace is not None
    assert workspace.members["a"].dependencies == {"lib-b", "lib-c", "lib-d"}


def test_the_root_is_a_member_when_it_is_a_project(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "root-app"\ndependencies = ["core"]\n'
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        "[tool.uv.sources]\ncore = { workspace = true }\n",
    )
    member(tmp_path, "packages/core", "core")
    workspace = load_workspace(tmp_path)
    assert workspace is not None
    assert workspace.members["root-app"].path == "."
    assert workspace.members["root-app"].dependencies == {"core"}
    assert workspace.member_at("packages/core/x.py") == workspace.members["core"]
    assert workspace.member_at("README.md") == workspace.members["root-app"]


def test_bad_workspaces_are_named(tmp_path: Path) -> None:
    root = workspace_root(tmp_path)
    member(root, "packages/a", "a", ("ghost",))
    with pytest.raises(
        ConfigError, match=r"packages/a/pyproject.toml.*no workspace member.*'ghost'"
    ):
        load_workspace(root)
    member(root, "packages/a", "same")
    member(root, "packages/b", "Same")
    with pytest.raises(ConfigError, match="both named 'same'"):
        load_workspace(root)
    write(root / "pyproject.toml", '[tool.uv.workspace]\nmembers = ["../elsewhere/*"]\n')
    with pytest.raises(ConfigError, match=r"without '\.\.'"):
        load_workspace(root)


def test_not_a_workspace(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "solo"\n')
    assert load_workspace(tmp_path) is None
    assert find_workspace_root(tmp_path) is None


def test_a_workspace_key_spelled_with_an_escape_is_still_a_workspace(tmp_path: Path) -> None:
    # The text of pyproject.toml is skipped unparsed only when no key can spell "workspace":
    # a quoted key may, with a \u escape, and uv reads it as the workspace table.
    write(tmp_path / "pyproject.toml", '[tool.uv."work\\u0073pace"]\nmembers = ["packages/*"]\n')
    member(tmp_path, "packages/core", "core")
    uv_lock(tmp_path)
    locked = tomllib.loads((tmp_path / "uv.lock").read_text())["manifest"]["members"]
    workspace = load_workspace(tmp_path)
    assert workspace is not None
    assert workspace.names() == sorted(locked) == ["core"]


def test_the_root_is_found_from_inside_a_member(tmp_path: Path) -> None:
    root = workspace_root(tmp_path / "repo")
    member(root, "packages/core", "core")
    (root / "packages" / "core" / "src").mkdir()
    assert find_workspace_root(root / "packages" / "core" / "src") == root.resolve()


LOCK = """
version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "packages/app" }}
dependencies = [{{ name = "lib" }}, {{ name = "httpx" }}]

[package.optional-dependencies]
fast = [{{ name = "uvloop" }}]

[package.dev-dependencies]
test = [{{ name = "pytest" }}]

[[package]]
name = "lib"
version = "0.1.0"
source = {{ editable = "packages/lib" }}
dependencies = [{{ name = "attrs" }}]

[package.dev-dependencies]
test = [{{ name = "hypothesis" }}]

[[package]]
name = "attrs"
version = "{attrs}"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://example.invalid/attrs.tar.gz", hash = "sha256:{attrs}" }}

[[package]]
name = "httpx"
version = "{httpx}"
source = {{ registry = "https://pypi.org/simple" }}

[[package]]
name = "uvloop"
version = "0.21.0"
source = {{ registry = "https://pypi.org/simple" }}

[[package]]
name = "pytest"
version = "8.3.0"
source = {{ registry = "https://pypi.org/simple" }}

[[package]]
name = "hypothesis"
version = "{hypothesis}"
source = {{ registry = "https://pypi.org/simple" }}
"""


def closures(**versions: str) -> dict[str, Any]:
    text = LOCK.format(**({"attrs": "24.2.0", "httpx": "0.27.0", "hypothesis": "6.0"} | versions))
    return locked_closures(text, ["app", "lib", "absent"])


def test_a_closure_follows_requirements_extras_and_own_groups_only() -> None:
    found = closures()
    assert "absent" not in found
    assert [p.name for p in found["app"]] == ["app", "attrs", "httpx", "lib", "pytest", "uvloop"]
    # lib's own test group is in lib's closure, not in app's (uv installs no dependency's groups).
    assert [p.name for p in found["lib"]] == ["attrs", "hypothesis", "lib"]
    attrs = next(p for p in found["lib"] if p.name == "attrs")
    assert attrs.version == "24.2.0"
    assert attrs.hashes == ("sha256:24.2.0",)


def test_a_bump_changes_only_the_closures_that_reach_it() -> None:
    before = closures()
    httpx_bumped = closures(httpx="0.28.1")
    assert httpx_bumped["app"] != before["app"]
    assert httpx_bumped["lib"] == before["lib"]
    attrs_bumped = closures(attrs="25.1.0")
    assert attrs_bumped["app"] != before["app"]
    assert attrs_bumped["lib"] != before["lib"]
    groups_bumped = closures(hypothesis="6.1")
    assert groups_bumped["app"] == before["app"]


def test_a_malformed_lock_is_named() -> None:
    with pytest.raises(ConfigError, match=r"uv.lock: malformed TOML.*uv lock"):
        locked_closures("[[package]\n", ["a"])


def test_a_member_missing_from_the_lock_takes_the_whole_lock(tmp_path: Path) -> None:
    root = workspace_root(tmp_path)
    member(root, "packages/app", "app")
    member(root, "packages/new", "new")
    write(root / "uv.lock", LOCK.format(attrs="1", httpx="1", hypothesis="1"))
    workspace = load_workspace(root)
    assert workspace is not None
    assert workspace.closure_digest("new") == f"uv.lock {workspace.lock_digest}"
    assert workspace.closure_digest("app") != workspace.closure_digest("new")
    (root / "uv.lock").unlink()
    workspace = load_workspace(root)
    assert workspace is not None
    assert workspace.closure_digest("app") is None


SHARED_TOOLS = """
version = 1

[manifest]
members = ["app", "lib"]

[manifest.dependency-groups]
dev = [{{ name = "pytest" }}]

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "packages/app" }}
dependencies = [{{ name = "httpx" }}]

[[package]]
name = "lib"
version = "0.1.0"
source = {{ editable = "packages/lib" }}

[[package]]
name = "httpx"
version = "{httpx}"
source = {{ registry = "https://pypi.org/simple" }}

[[package]]
name = "pytest"
version = "{pytest}"
source = {{ registry = "https://pypi.org/simple" }}
dependencies = [{{ name = "pluggy" }}]

[[package]]
name = "pluggy"
version = "1.5.0"
source = {{ registry = "https://pypi.org/simple" }}
"""


def test_the_roots_dependency_groups_are_in_every_members_closure() -> None:
    def closures(**versions: str) -> dict[str, Any]:
        text = SHARED_TOOLS.format(**({"httpx": "0.27.0", "pytest": "8.3.0"} | versions))
        return locked_closures(text, ["app", "lib"])

    before = closures()
    # The shared dev tools (a virtual root's groups) and what they pull in reach every member.
    assert [p.name for p in before["lib"]] == ["lib", "pluggy", "pytest"]
    bumped = closures(pytest="8.4.0")
    assert bumped["lib"] != before["lib"]
    assert bumped["app"] != before["app"]
    # A package only app requires still leaves lib alone.
    assert closures(httpx="0.28.1")["lib"] == before["lib"]


def test_a_root_projects_own_groups_are_shared_too() -> None:
    text = (
        'version = 1\n[[package]]\nname = "root"\nversion = "0"\nsource = { virtual = "." }\n'
        '[package.dev-dependencies]\ndev = [{ name = "ruff" }]\n'
        '[[package]]\nname = "lib"\nversion = "0.1.0"\nsource = { editable = "packages/lib" }\n'
        '[[package]]\nname = "ruff"\nversion = "0.15.0"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
    )
    assert [p.name for p in locked_closures(text, ["lib"])["lib"]] == ["lib", "ruff"]


def uv_lock(root: Path) -> None:
    """``uv lock`` on the workspace at ``root``, offline, with this interpreter."""
    uv = shutil.which("uv", path=str(BIN))
    assert uv, "uv is missing: pip install '.[test]' installs it"
    env = {**os.environ, "UV_OFFLINE": "1", "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}
    env["UV_CACHE_DIR"] = os.fspath(root / ".uv-cache")
    argv = [uv, "lock", "--python", sys.executable]
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_members_are_those_uv_itself_locks(tmp_path: Path) -> None:
    """The same tree through real ``uv lock``: its ``[manifest] members`` are ours."""
    root = workspace_root(
        tmp_path,
        '["packages/*", "tools/cli", "libs/**"]',
        '["packages/old*", "libs/a", "libs/a/notes"]',
    )
    for path, name in (
        ("packages/core", "Core_Lib"),
        ("packages/app", "app"),
        ("packages/oldstuff", "oldstuff"),
        ("tools/cli", "cli"),
        ("libs/a/b", "deep"),  # under an excluded directory, matched by libs/** itself
        ("libs/x", "x"),
    ):
        member(root, path, name)
    (root / "packages" / "empty").mkdir()
    write(root / "packages" / ".hidden" / "x.txt", "")
    write(root / "libs" / "a" / "notes" / "todo.txt", "")  # libs itself is not matched
    uv_lock(root)

    locked = tomllib.loads((root / "uv.lock").read_text())["manifest"]["members"]
    workspace = load_workspace(root)
    assert workspace is not None
    assert workspace.names() == sorted(locked) == ["app", "cli", "core-lib", "deep", "x"]


def test_member_dependencies_are_the_edges_uv_locks(tmp_path: Path) -> None:
    """Through dependencies, an extra, a group, an included group and a root source: uv's own."""
    root = tmp_path
    write(
        root / "pyproject.toml",
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        "[tool.uv.sources]\nlib-c = { workspace = true }\n",
    )
    for name in ("lib-b", "lib-c", "lib-d", "lib-e"):
        member(root, f"packages/{name}", name)
    write(
        root / "packages" / "a" / "pyproject.toml",
        '[project]\nname = "a"\nversion = "0.1.0"\ndependencies = ["lib-e"]\n'
        '[project.optional-dependencies]\nfast = ["lib_b"]\n'
        '[dependency-groups]\ntest = ["lib-c", { include-group = "more" }]\nmore = ["lib.d"]\n'
        "[tool.uv.sources]\nlib-b = { workspace = true }\nlib-d = { workspace = true }\n"
        "lib-e = { workspace = true }\n",
    )
    uv_lock(root)

    (locked_a,) = [
        p for p in tomllib.loads((root / "uv.lock").read_text())["package"] if p["name"] == "a"
    ]
    edges = [*locked_a.get("dependencies", [])]
    for table in ("optional-dependencies", "dev-dependencies"):
        for group in locked_a.get(table, {}).values():
            edges += group
    workspace = load_workspace(root)
    assert workspace is not None
    assert workspace.members["a"].dependencies == {e["name"] for e in edges}
    assert workspace.members["a"].dependencies == {"lib-b", "lib-c", "lib-d", "lib-e"}
