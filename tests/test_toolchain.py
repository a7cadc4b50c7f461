"""The toolchain in the key (issue 10, finding 4), on real venvs, real wheels, real interpreters.

Two versions of a tiny package with a console script are built here as wheels by a real build
backend (hatchling, through ``pip wheel --no-index``) and installed by real pip into venvs made
by ``python -m venv``. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cachehook import toolchain as toolchain_module
from cachehook.cli import main
from cachehook.config import load_settings
from cachehook.errors import ConfigError
from cachehook.hashing import Manifest, ToolDigest, diff_manifests
from cachehook.logs import decode
from cachehook.runner import Runner, RunResult, TaskSpec
from cachehook.tasks import load_tasks
from cachehook.toolchain import INTERPRETER_LABEL, Toolchain, describe_tool, find_executable

BIN = "Scripts" if sys.platform == "win32" else "bin"


# --------------------------------------------------------------------------- fixtures


def _quiet_run(argv: list[str], **kwargs: object) -> None:
    """Run a build tool (pip, venv): cachehook does not run in it, so coverage stays out
    (under coverage's tracer pip took most of this file's time, issue 9)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    kwargs.setdefault("env", env)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tool 1.0 and tool 2.0: a console script ``tool`` that prints its version."""
    out = tmp_path_factory.mktemp("wheels")
    built: dict[str, Path] = {}
    for version in ("1.0", "2.0"):
        source = tmp_path_factory.mktemp(f"tool-{version}")
        (source / "pyproject.toml").write_text(
            textwrap.dedent(
                f"""\
                [build-system]
                requires = ["hatchling"]
                build-backend = "hatchling.build"

                [project]
                name = "tool"
                version = "{version}"

                [project.scripts]
                tool = "tool:main"

                [tool.hatch.build.targets.wheel]
                packages = ["tool"]
                """
            )
        )
        (source / "tool").mkdir()
        (source / "tool" / "__init__.py").write_text(
            f"VERSION = {version!r}\n\ndef main():\n    print('tool', VERSION)\n"
        )
        _quiet_run(
            [
                *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"),
                *("--no-build-isolation", "--no-index", "-w", str(out / version), str(source)),
            ]
        )
        (wheel,) = (out / version).glob("tool-*.whl")
        built[version] = wheel
    return built


def make_venv(path: Path, python: str = sys.executable) -> Path:
    _quiet_run([python, "-m", "venv", "--without-pip", str(path)])
    return path


def install(venv: Path, wheel: Path) -> None:
    python = venv / BIN / "python"
    _quiet_run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--no-index", "--no-deps", "--no-compile", str(wheel)),
        ]
    )


@pytest.fixture(scope="session")
def shared_venvs(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]
) -> dict[str, Path]:
    """Venvs that tests read and never change: "a" and "b" with tool 1.0, "empty" without."""
    base = tmp_path_factory.mktemp("venvs")
    venvs = {name: make_venv(base / name) for name in ("a", "b", "empty")}
    install(venvs["a"], wheels["1.0"])
    install(venvs["b"], wheels["1.0"])
    return venvs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (root / "v.py").write_text(
        "import sys\nprint(sys.version_info[:2])\n"
        "try:\n    import tool\nexcept ImportError:\n    print('no tool')\n"
        "else:\n    print('tool', tool.VERSION)\n"
    )
    return root


def runner_for(root: Path, *, use_toolchain: bool = True) -> Runner:
    settings = load_settings(cwd=root, environ=dict(os.environ))
    return Runner(settings, on_notice=lambda message: None, use_toolchain=use_toolchain)


def run_task(
    root: Path, spec: TaskSpec, *, use_toolchain: bool = True
) -> tuple[RunResult, Manifest]:
    with runner_for(root, use_toolchain=use_toolchain) as runner:
        prepared = runner.prepare(spec)
        return runner.run(prepared), prepared.manifest


def log_text(result: RunResult) -> str:
    return b"".join(chunk for _, chunk in decode(result.log)).decode("utf-8", "replace")


def cli(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in-process; its output, the task's included (written straight to the fds)."""
    capfd.readouterr()
    code = main(list(args))
    captured = capfd.readouterr()
    return code, captured.out + captured.err


def other_interpreter() -> str:
    """A real Python 3 whose version differs from this one's (pyenv's, or the system's)."""
    import pwd  # the tests point HOME elsewhere: the user's real home holds pyenv

    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    roots = [os.environ.get("PYENV_ROOT", ""), str(home / ".pyenv")]
    candidates = [p for r in roots if r for p in sorted(Path(r).glob("versions/3.*/bin/python3"))]
    candidates += [*sorted(Path("/usr/bin").glob("python3.*[0-9]")), Path("/usr/bin/pypy3")]
    for candidate in candidates:
        if not candidate.exists() or candidate.resolve() == Path(sys.executable).resolve():
            continue
        done = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:3] >= (3, 8))"],
            capture_output=True,
            text=True,
            check=False,
        )
        version = subprocess.run(
            [str(candidate), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if done.stdout.strip() == "True" and version != ".".join(map(str, sys.version_info[:3])):
            return str(candidate)
    pytest.fail(  # a missing interpreter must not pass by skipping; .ci/run provides one
        "no second Python 3 interpreter: install one (pyenv versions/3.x or /usr/bin/python3.x)"
    )


# --------------------------------------------------------------------------- finding 4


@pytest.mark.integration
def test_upgrading_a_console_script_misses_and_explain_names_the_versions(
    project: Path,
    wheels: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Saved at once, however recent the install: the cache must see the upgrade by its stat.
    monkeypatch.setattr(toolchain_module, "_RACY_WINDOW_NS", 0)
    venv = make_venv(project / "venv")
    install(venv, wheels["1.0"])
    (project / "pyproject.toml").write_text(
        '[project]\nname = "p"\n\n[tool.cachehook.tasks.lint]\ncommand = "tool"\n'
        'inputs = ["v.py"]\n'
    )
    monkeypatch.setenv("PATH", f"{venv / BIN}{os.pathsep}{os.environ['PATH']}")
    table = load_settings(cwd=project, environ=dict(os.environ)).table
    spec = load_tasks(table, source="pyproject.toml", root=project).tasks["lint"].spec(project, [])
    first, before = run_task(project, spec)
    assert (first.status, log_text(first).strip()) == ("MISS", "tool 1.0")
    again, _ = run_task(project, spec)
    assert (again.status, log_text(again).strip()) == ("HIT", "tool 1.0")

    install(venv, wheels["2.0"])
    monkeypatch.chdir(project)
    code, output = cli(capfd, "explain", "lint")
    assert code == 0, output
    assert "would run" in output
    assert "toolchain: tool 1.0 -> 2.0" in output
    upgraded, after = run_task(project, spec)
    assert (upgraded.status, log_text(upgraded).strip()) == ("MISS", "tool 2.0")
    assert "toolchain: tool 1.0 -> 2.0" in diff_manifests(before, after)
    assert describe_tool(after.toolchain[0]).startswith("python ")


@pytest.mark.integration
def test_the_same_script_under_two_interpreters_misses(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = other_interpreter()
    shims = tmp_path / "shims"
    shims.mkdir()
    link = shims / "python"
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    spec = TaskSpec(command=("python", "v.py"), inputs=("v.py",), cwd=project)

    link.symlink_to(Path(sys.executable).resolve())
    first, before = run_task(project, spec)
    assert first.status == "MISS"
    assert run_task(project, spec)[0].status == "HIT"

    link.unlink()
    link.symlink_to(other)
    second, after = run_task(project, spec)
    assert second.status == "MISS", "3.x's result replayed for another interpreter"
    assert log_text(second) != log_text(first)
    mine = ".".join(map(str, sys.version_info[:3]))
    lines = diff_manifests(before, after)
    assert any(
        re.fullmatch(rf"toolchain: python {re.escape(mine)} -> .*3\.\d+\.\d+\)?", line)
        for line in lines
    ), lines


@pytest.mark.integration
def test_two_venvs_of_one_interpreter_differing_in_a_distribution_differ(
    project: Path, shared_venvs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TaskSpec(command=("python", "v.py"), inputs=("v.py",), cwd=project)
    results = []
    for venv in (shared_venvs["a"], shared_venvs["empty"]):
        monkeypatch.setenv("PATH", f"{venv / BIN}{os.pathsep}{os.environ['PATH']}")
        results.append(run_task(project, spec))
    (first, before), (second, after) = results
    assert log_text(first).splitlines()[-1] == "tool 1.0"
    assert second.status == "MISS"
    assert log_text(second).splitlines()[-1] == "no tool"
    assert "toolchain: tool 1.0 uninstalled" in diff_manifests(before, after)


@pytest.mark.integration
def test_two_clones_with_the_same_venv_share_keys(
    tmp_path: Path, shared_venvs: dict[str, Path]
) -> None:
    keys, blobs = [], []
    clones = (tmp_path / "a" / "clone", tmp_path / "b" / "deeper" / "other")
    for clone, venv in zip(clones, (shared_venvs["a"], shared_venvs["b"]), strict=True):
        clone.mkdir(parents=True)
        (clone / "pyproject.toml").write_text("[project]\nname = 'p'\n")
        (clone / "v.py").write_text("print('hi')\n")
        (clone / ".venv").symlink_to(venv)  # each clone's own venv, at its own absolute path
        specs = [
            TaskSpec(command=(f".venv/{BIN}/tool",), inputs=("v.py",), cwd=clone),
            TaskSpec(command=(f".venv/{BIN}/python", "v.py"), inputs=("v.py",), cwd=clone),
        ]
        with runner_for(clone) as runner:
            manifests = [runner.prepare(spec).manifest for spec in specs]
        keys.append([m.key() for m in manifests])
        blobs.append(b"".join(m.canonical_bytes() for m in manifests))
        for part in (str(clone), str(venv), str(tmp_path), os.path.expanduser("~")):
            assert part.encode() not in blobs[-1]
    assert keys[0] == keys[1]


def test_a_plain_executable_is_keyed_on_its_bytes(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    true, false = shutil.which("true"), shutil.which("false")
    assert true is not None
    assert false is not None
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(true, tools / "mytool")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    spec = TaskSpec(command=("mytool",), inputs=("v.py",), cwd=project)
    first, before = run_task(project, spec)
    assert (first.status, first.exit_code) == ("MISS", 0)
    assert run_task(project, spec)[0].status == "HIT"

    (tools / "mytool").unlink()
    shutil.copy(false, tools / "mytool")
    second, after = run_task(project, spec)
    assert (second.status, second.exit_code) == ("MISS", 1), "true's success replayed for false"
    (line,) = diff_manifests(before, after)
    assert re.fullmatch(r"toolchain: mytool [0-9a-f]{12} -> [0-9a-f]{12}", line)

    # The same bytes elsewhere (another clone, another machine): the same key.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(false, elsewhere / "mytool")
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ['PATH']}")
    assert run_task(project, spec)[1].key() == after.key()


def test_tools_behind_sh_c_enter_the_key(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(shutil.which("true") or "", tools / "helper")
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    spec = TaskSpec(
        command=("sh", "-c", "helper"), inputs=("v.py",), cwd=project, tools=("helper",)
    )
    before = run_task(project, spec)[1]
    assert [t.name for t in before.toolchain] == ["helper", "sh"]
    (tools / "helper").write_bytes(b"#!/bin/sh\nexit 3\n")
    (tools / "helper").chmod(0o755)
    result, after = run_task(project, spec)
    assert (result.status, result.exit_code) == ("MISS", 3)
    assert after.key() != before.key()


def test_opting_out_leaves_the_toolchain_out(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TaskSpec(command=(sys.executable, "v.py"), inputs=("v.py",), cwd=project)
    assert run_task(project, spec)[1].toolchain
    assert run_task(project, spec._replace(toolchain=False))[1].toolchain == ()
    assert run_task(project, spec, use_toolchain=False)[1].toolchain == ()


def test_the_running_interpreter_keys_an_in_process_task(project: Path) -> None:
    spec = TaskSpec(
        command=("py:", "mod.fn"), cwd=project, inputs=("v.py",), interpreter=Path(sys.executable)
    )
    with runner_for(project) as runner:
        (tool,) = runner.prepare(spec).manifest.toolchain
    assert tool.name == INTERPRETER_LABEL
    mine = ".".join(map(str, sys.version_info[:3]))
    assert tool.versions[0] == ("python", mine)
    assert ("pytest", pytest.__version__) in tool.versions


def test_decorators_key_their_interpreter_and_nox_its_session_venv(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from cachehook._api import CacheOptions, run_cached
    from cachehook.integrations.nox import _session_toolchain

    monkeypatch.chdir(project)
    options = CacheOptions.create(inputs="v.py")
    result = run_cached(("py:", "f"), options, lambda _: 0, name=None, on_notice=print)
    assert result.manifest is not None
    assert [t.name for t in result.manifest.toolchain] == [INTERPRETER_LABEL]
    bare = CacheOptions.create(inputs="v.py", toolchain=False)
    other = run_cached(("py:", "f"), bare, lambda _: 0, name=None, on_notice=print)
    assert other.manifest is not None
    assert other.manifest.toolchain == ()

    venv = make_venv(tmp_path / "session")
    session = SimpleNamespace(virtualenv=SimpleNamespace(location=str(venv)))
    interpreter, search_path = _session_toolchain(session)  # type: ignore[arg-type]
    assert interpreter == venv / BIN / "python"
    assert search_path is not None
    assert search_path.split(os.pathsep)[0] == str(venv / BIN)
    passthrough = SimpleNamespace(virtualenv=SimpleNamespace(location=None))
    assert _session_toolchain(passthrough) == (None, None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cheap when warm


def test_a_warm_lookup_reads_the_cache_and_starts_nothing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toolchain_module, "_RACY_WINDOW_NS", 0)
    other = other_interpreter()
    path = tmp_path / "toolchain.json"
    cold = Toolchain.load(path)
    first = cold.identify([other, "sh"], cwd=str(project))
    cold.save()
    assert other not in json.dumps([t.versions for t in first])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm lookup started a process or re-read distributions")

    monkeypatch.setattr(toolchain_module, "_probe_child", refuse)
    monkeypatch.setattr(toolchain_module, "_distributions", refuse)
    monkeypatch.setattr(toolchain_module, "_digest_whole", refuse)
    assert Toolchain.load(path).identify([other, "sh"], cwd=str(project)) == first


def test_a_damaged_cache_file_is_ignored(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "toolchain.json"
    good = Toolchain(None).identify([sys.executable, "sh"], cwd=str(project))
    python, sh = sys.executable, str(find_executable("sh", cwd=str(project)))
    for text in (
        "not json",
        '{"version": 2, "files": [], "pythons": {}}',
        json.dumps({"version": 2, "files": {sh: ["x"]}, "pythons": {python: {"site": 1}}}),
        json.dumps(
            {"version": 2, "files": {}, "pythons": {python: {"interpreter": None, "site": []}}}
        ),
    ):
        path.write_text(text)
        assert Toolchain.load(path).identify([python, "sh"], cwd=str(project)) == good


# --------------------------------------------------------------------------- resolution


def test_find_executable_follows_path_and_cwd(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for directory in (first, second):
        directory.mkdir()
        (directory / "prog").write_text("#!/bin/sh\n")
        (directory / "prog").chmod(0o755)
    (first / "plain").write_text("not executable")
    search = os.pathsep.join([str(first), str(second)])
    assert find_executable("prog", cwd="/", search_path=search) == str(first / "prog")
    assert find_executable("plain", cwd="/", search_path=search) is None
    assert find_executable("./prog", cwd=str(second)) == str(second / "prog")
    assert find_executable("prog", cwd=str(tmp_path), search_path="two") == str(second / "prog")
    assert find_executable("nope", cwd="/", search_path=search) is None


def test_a_missing_program_is_keyed_as_missing_and_fails_at_run(project: Path) -> None:
    spec = TaskSpec(command=("no-such-program-anywhere",), inputs=("v.py",), cwd=project)
    with runner_for(project) as runner:
        (tool,) = runner.prepare(spec).manifest.toolchain
    assert tool.versions == (("no-such-program-anywhere", "not found"),)


def test_shebangs_name_their_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse = toolchain_module._parse_shebang
    assert parse(b"#!/usr/bin/env -S python3 -u\nprint(1)\n") == (
        ["/usr/bin/env", "-S", "python3", "-u"],
        29,
    )
    trampoline = b"#!/bin/sh\n'''exec' \"/a b/bin/python\" \"$0\" \"$@\"\n' '''\nimport x\n"
    argv, skip = parse(trampoline) or ([], 0)
    assert argv == ["/a b/bin/python"]
    assert trampoline[skip:] == b"import x\n"
    assert parse(b"\x7fELF") is None
    # A script whose interpreter is not Python: its body and its interpreter's bytes.
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (tool,) = Toolchain(None).identify([str(script)], cwd=str(tmp_path))
    assert [name for name, _ in tool.versions] == ["run.sh", "sh"]


def test_direct_url_sources_carry_no_path(tmp_path: Path) -> None:
    cases = {
        '{"url": "file:///home/me/src/x", "dir_info": {"editable": true}}': "editable",
        '{"url": "https://h/x.git", "vcs_info": {"vcs": "git", "commit_id": "abc"}}': "git abc",
        '{"url": "file:///home/me/x.whl", "archive_info": {"hashes": {"sha256": "f0"}}}': (
            "archive sha256=f0"
        ),
        '{"url": "file:///home/me/x.whl", "archive_info": {}}': "archive x.whl",
    }
    for text, expected in cases.items():
        dist = tmp_path / "x-1.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "direct_url.json").write_text(text)
        assert toolchain_module._direct_source(str(dist)) == expected
    (dist / "direct_url.json").write_text('{"url": "file:///home/me/x", "dir_info": {}}')
    (dist / "RECORD").write_text("x/__init__.py,sha256=aa,1\n../../../bin/x,sha256=bb,2\n")
    source = toolchain_module._direct_source(str(dist))
    assert source.startswith("directory ")
    assert "/home/me" not in source


def test_a_pyenv_shim_is_followed_to_the_version_it_picks(
    project: Path, tmp_path: Path, shared_venvs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pyenv"
    (root / "shims").mkdir(parents=True)
    (root / "versions").mkdir()
    (root / "versions" / "with").symlink_to(shared_venvs["a"])  # pyenv-virtualenv's layout
    (root / "versions" / "without").symlink_to(shared_venvs["empty"])
    shim = root / "shims" / "python"
    shim.write_text(f'#!/bin/sh\nexec "{root}/versions/$(cat .python-version)/bin/python" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{root / 'shims'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PYENV_VERSION", raising=False)
    spec = TaskSpec(command=("python", "v.py"), inputs=("v.py",), cwd=project)
    (project / ".python-version").write_text("with\n")
    first, before = run_task(project, spec)
    assert log_text(first).splitlines()[-1] == "tool 1.0"
    (project / ".python-version").write_text("without\n")
    second, after = run_task(project, spec)
    assert (second.status, log_text(second).splitlines()[-1]) == ("MISS", "no tool")
    assert "toolchain: tool 1.0 uninstalled" in diff_manifests(before, after)
    monkeypatch.setenv("PYENV_VERSION", "with")
    assert run_task(project, spec)[1].key() == before.key()


def test_pyenv_system_prefixes_and_unknown_versions(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pyenv"
    (root / "shims").mkdir(parents=True)
    for version in ("3.1.9", "3.1.10"):
        (root / "versions" / version / "bin").mkdir(parents=True)
        shutil.copy(shutil.which("true") or "", root / "versions" / version / "bin" / "tool")
    (root / "versions" / "3.1.10" / "bin" / "tool").write_bytes(b"#!/bin/sh\nexit 0\n")
    (root / "versions" / "3.1.10" / "bin" / "tool").chmod(0o755)
    (root / "shims" / "tool").write_text("#!/bin/sh\n")
    (root / "shims" / "tool").chmod(0o755)
    system = tmp_path / "system"
    system.mkdir()
    shutil.copy(shutil.which("false") or "", system / "tool")
    search = os.pathsep.join([str(root / "shims"), str(system)])
    toolchain = Toolchain(None)

    def identify(version: str) -> ToolDigest:
        monkeypatch.setenv("PYENV_VERSION", version)
        (tool,) = toolchain.identify(["tool"], cwd=str(project), search_path=search)
        return tool

    direct = Toolchain(None).identify([str(system / "tool")], cwd=str(project))[0]
    assert identify("system").digest == direct.digest  # the next `tool` on PATH
    assert identify("3.1").versions[0][0] == "tool"  # the latest 3.1.x: the script
    assert identify("3.1").versions == identify("3.1.10").versions
    assert identify("3.1").digest != identify("3.1.9").digest
    assert identify("nope:also-nope").versions == (("pyenv", "nope:also-nope"),)


def test_unusual_installs_and_interpreters(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "old.egg-info").mkdir(parents=True)
    (site / "old.egg-info" / "PKG-INFO").write_text("Name: Old_Pkg\nVersion: 0.1\n\nbody\n")
    (site / "flat-2.0.egg-info").write_text("Metadata-Version: 1.0\nName: flat\nVersion: 2.0\n")
    (site / "broken-3.0.dist-info").mkdir()
    found = toolchain_module._distributions([str(site), str(tmp_path / "missing")])
    assert found == [
        ["broken", "3.0", "no metadata"],
        ["flat", "2.0", "egg"],
        ["old-pkg", "0.1", "egg"],
    ]
    # Named like an interpreter but not one: keyed on its bytes.
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    shutil.copy(shutil.which("true") or "", fake)
    (tool,) = Toolchain(None).identify([str(fake)], cwd=str(tmp_path))
    assert tool.versions[0][0] == "python3"
    assert tool.digest == toolchain_module._digest_whole(str(fake))
    # "#!/usr/bin/env python3" names the interpreter on PATH.
    script = tmp_path / "bin" / "gen"
    script.write_text("#!/usr/bin/env python3\nprint(1)\n")
    script.chmod(0o755)
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    (tool,) = Toolchain(None).identify([str(script)], cwd=str(tmp_path), search_path=search)
    assert tool.versions[0] == ("python", ".".join(map(str, sys.version_info[:3])))


# --------------------------------------------------------------------------- the manifest


def test_the_toolchain_is_in_the_canonical_bytes_and_round_trips() -> None:
    tool = ToolDigest("ruff", "a" * 32, (("python", "3.11.7"), ("ruff", "0.15.9")))
    m = Manifest(command=("ruff",), cwd=".", inputs=(), env=(), outputs=(), toolchain=(tool,))
    text = json.dumps(m.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert m.canonical_bytes() == text.encode()
    assert Manifest.from_json(json.loads(json.dumps(m.to_json()))) == m
    newer = m.replace(
        toolchain=(
            tool._replace(digest="b" * 32, versions=(("python", "3.12.1"), ("ruff", "0.17.6"))),
        ),
    )
    assert newer.key() != m.key()
    assert diff_manifests(m, newer) == [
        "toolchain: python 3.11.7 -> 3.12.1",
        "toolchain: ruff 0.15.9 -> 0.17.6",
    ]
    same_versions = m.replace(toolchain=(tool._replace(digest="c" * 32),))
    assert diff_manifests(m, same_versions) == ["toolchain changed: ruff"]
    assert diff_manifests(m, m.replace(toolchain=())) == ["toolchain removed: ruff"]


def test_a_manifest_stored_before_the_toolchain_still_loads() -> None:
    data = Manifest(command=("x",), cwd=".", inputs=(), env=(), outputs=()).to_json()
    del data["toolchain"]
    data["version"] = 1
    old = Manifest.from_json(data)
    assert old.toolchain == ()
    with pytest.raises(ValueError, match="toolchain"):
        Manifest.from_json({**data, "toolchain": [{"name": "x"}]})


# --------------------------------------------------------------------------- task tables, CLI


def test_task_tables_take_tools_and_toolchain(tmp_path: Path) -> None:
    table = {
        "tasks": {"t": {"command": "sh -c 'ruff .'", "tools": ["ruff", "ruff"], "toolchain": False}}
    }
    task = load_tasks(table, source="pyproject.toml", root=tmp_path).tasks["t"]
    assert (task.tools, task.toolchain) == (("ruff",), False)
    spec = task.spec(tmp_path, [])
    assert (spec.tools, spec.toolchain) == (("ruff",), False)
    for body, message in (
        ({"command": "x", "toolchain": "no"}, "toolchain: expected true or false, got a string"),
        (
            {"command": "x", "tools": "ruff"},
            'tools: expected an array of strings, got a string (write ["ruff"])',
        ),
        ({"command": "x", "tools": [""]}, "tools: an empty name"),
        ({"command": "x", "toolchian": False}, "did you mean 'toolchain'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_tasks({"tasks": {"t": body}}, source="pyproject.toml", root=tmp_path)


def test_exec_no_toolchain_and_tool_flags(
    project: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    argv = ["exec", "-i", "v.py", "--dry-run=json", "--tool", "sh", "--", sys.executable, "v.py"]
    keyed = json.loads(cli(capfd, *argv)[1])
    assert sorted(t["name"] for t in keyed["toolchain"]) == sorted([sys.executable, "sh"])
    bare = json.loads(cli(capfd, *argv[:4], "--no-toolchain", *argv[4:])[1])
    assert bare["toolchain"] == []
    assert bare["key"] != keyed["key"]
    _, text = cli(capfd, "exec", "-i", "v.py", "--dry-run", "--", sys.executable, "v.py")
    line = r"^tool     [0-9a-f]{32}  \S+  \(python \d+\.\d+\.\d+, \d+ distributions\)$"
    assert re.search(line, text, re.MULTILINE), text


def test_run_no_toolchain(
    project: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (project / "pyproject.toml").write_text(
        f'[tool.cachehook.tasks.t]\ncommand = ["{sys.executable}", "v.py"]\ninputs = ["v.py"]\n'
    )
    monkeypatch.chdir(project)
    keyed = json.loads(cli(capfd, "run", "t", "--dry-run=json")[1])
    bare = json.loads(cli(capfd, "run", "t", "--dry-run=json", "--no-toolchain")[1])
    assert keyed["tasks"][0]["key"] != bare["tasks"][0]["key"]
    (tool,) = keyed["tasks"][0]["toolchain"]
    assert tool["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert bare["tasks"][0]["toolchain"] == []
    assert re.search(r"^  tool     [0-9a-f]{32}  ", cli(capfd, "run", "t", "--dry-run")[1], re.M)
    code, output = cli(capfd, "run", "t", "--no-toolchain")
    assert code == 0, output
    assert "would hit" in cli(capfd, "explain", "t", "--no-toolchain")[1]
    assert "would run" in cli(capfd, "explain", "t")[1]
