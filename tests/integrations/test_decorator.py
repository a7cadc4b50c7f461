"""``cachehook.cached`` on plain functions: real files, the real runner and store, in-process."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import cachehook
from cachehook._api import (
    CacheOptions,
    FunctionIdentity,
    canonical_json,
    close_runners,
    run_cached,
)
from cachehook.errors import ConfigError
from cachehook.integrations.decorator import UncachedValueWarning, cached


@pytest.fixture
def schema(project: Path) -> Path:
    (project / "schema").mkdir()
    (project / "schema" / "user.json").write_text('{"title": "User"}\n')
    return project / "schema"


def test_a_hit_skips_the_body_restores_outputs_and_returns_the_cached_value(
    project: Path, schema: Path
) -> None:
    calls: list[str] = []

    @cached(inputs=["schema/*.json"], outputs=["gen/models.py"])
    def generate(prefix: str = "class ") -> dict[str, Any]:
        calls.append(prefix)
        titles = [json.loads(p.read_text())["title"] for p in sorted(schema.glob("*.json"))]
        (project / "gen").mkdir(exist_ok=True)
        (project / "gen" / "models.py").write_text("".join(f"{prefix}{t}: ...\n" for t in titles))
        return {"titles": titles, "count": len(titles), "ok": True, "ratio": 0.5, "none": None}

    first = generate()
    (project / "gen" / "models.py").unlink()
    second = generate()

    assert calls == ["class "]
    assert (
        second
        == first
        == {
            "titles": ["User"],
            "count": 1,
            "ok": True,
            "ratio": 0.5,
            "none": None,
        }
    )
    assert (project / "gen" / "models.py").read_text() == "class User: ...\n"


def test_an_input_change_is_a_miss(project: Path, schema: Path) -> None:
    calls: list[int] = []

    @cached(inputs=["schema/*.json"])
    def count() -> int:
        calls.append(1)
        return len(list(schema.glob("*.json")))

    assert count() == 1
    assert count() == 1
    (schema / "order.json").write_text('{"title": "Order"}\n')
    assert count() == 2
    assert len(calls) == 2


def test_arguments_enter_the_key_with_defaults_applied(project: Path) -> None:
    calls: list[tuple[int, str]] = []

    @cached
    def render(n: int, mode: str = "a") -> str:
        calls.append((n, mode))
        return f"{n}{mode}"

    assert render(1) == "1a"
    assert render(1, "a") == "1a"  # the same call, spelled differently: a hit
    assert render(n=1, mode="a") == "1a"
    assert render(2) == "2a"
    assert render(1, mode="b") == "1b"
    assert calls == [(1, "a"), (2, "a"), (1, "b")]


def test_tuples_lists_and_dict_order_are_one_canonical_form(project: Path) -> None:
    calls: list[object] = []

    @cached
    def f(items: object, options: dict[str, int]) -> int:
        calls.append(items)
        return 0

    f((1, 2), {"a": 1, "b": 2})
    f([1, 2], {"b": 2, "a": 1})
    assert len(calls) == 1


def test_paths_and_sets_are_supported_arguments(project: Path) -> None:
    calls: list[object] = []

    @cached
    def f(path: Path, tags: frozenset[str]) -> None:
        calls.append(path)

    f(Path("a") / "b.txt", frozenset({"x", "y"}))
    f(Path("a") / "b.txt", frozenset({"y", "x"}))
    f(Path("a") / "c.txt", frozenset({"y", "x"}))
    assert len(calls) == 2


def test_an_unsupported_argument_is_a_clear_type_error_naming_it(project: Path) -> None:
    @cached
    def f(value: object, other: int = 0) -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match=r"argument 'value' is a object") as caught:
        f(object())
    assert "f()" in str(caught.value)
    assert "ignore=['value']" in str(caught.value)
    with pytest.raises(TypeError, match=r"argument 'value'\['k'\]\[0\] is a bytes"):
        f({"k": [b"raw"]})
    with pytest.raises(TypeError, match=r"argument 'value' has a key 1 that is not a str"):
        f({1: "x"})
    with pytest.raises(TypeError, match=r"argument 'value' is nan"):
        f(float("nan"))


def test_ignored_parameters_stay_out_of_the_key(project: Path) -> None:
    calls: list[object] = []

    @cached(ignore=["log"])
    def f(n: int, log: object = None) -> int:
        calls.append(log)
        return n

    assert f(1, log=object()) == 1
    assert f(1, log=print) == 1
    assert len(calls) == 1


def test_ignore_must_name_a_parameter() -> None:
    with pytest.raises(TypeError, match=r"names no parameter of .*: nope"):

        @cached(ignore="nope")
        def f(n: int) -> int:
            return n


def test_a_value_that_is_not_plain_json_runs_every_time_and_warns_once(project: Path) -> None:
    calls: list[int] = []

    @cached
    def pair() -> tuple[int, int]:
        calls.append(1)
        return (1, 2)

    with pytest.warns(UncachedValueWarning, match=r"pair\(\) returned .*the value is a tuple"):
        assert pair() == (1, 2)
    assert pair() == (1, 2)  # no second warning: filterwarnings=error would raise it
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({1: "a"}, "has the key 1"),
        ([1, {"a": (2,)}], r"\[1\]\['a'\] is a tuple"),
        (float("inf"), "is inf"),
        ({"a", "b"}, "is a set"),
    ],
)
def test_values_json_would_change_are_not_cached(
    project: Path, value: object, problem: str
) -> None:
    @cached
    def f() -> object:
        return value

    with pytest.warns(UncachedValueWarning, match=problem):
        assert f() == value or value != value


def test_the_warning_points_at_the_caller(project: Path) -> None:
    @cached
    def f() -> object:
        return object()

    with pytest.warns(UncachedValueWarning) as record:
        f()
    assert record[0].filename == __file__


def test_a_failing_function_raises_and_caches_nothing(project: Path) -> None:
    calls: list[int] = []

    @cached
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return 7

    with pytest.raises(RuntimeError, match="first call fails"):
        flaky()
    assert flaky() == 7
    assert flaky() == 7
    assert len(calls) == 2


def test_a_missing_output_is_not_cached(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    @cached(outputs=["never.txt"])
    def f() -> None:
        calls.append(1)

    f()
    f()
    assert len(calls) == 2
    assert "matched no file after the task; not caching it" in caplog.text


def test_output_globs_are_filled_from_the_arguments(project: Path) -> None:
    calls: list[str] = []

    @cached(outputs=["out/{name}.txt"])
    def write(name: str) -> None:
        calls.append(name)
        (project / "out").mkdir(exist_ok=True)
        (project / "out" / f"{name}.txt").write_text(name)

    write("a")
    write("b")
    (project / "out" / "a.txt").unlink()
    (project / "out" / "b.txt").unlink()
    write("a")
    assert calls == ["a", "b"]
    assert (project / "out" / "a.txt").read_text() == "a"
    assert not (project / "out" / "b.txt").exists()  # a's artifact holds only a's output


def test_a_placeholder_naming_no_argument_is_a_config_error(project: Path) -> None:
    @cached(outputs=["out/{nope}.txt"])
    def f(name: str) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ConfigError, match=r"cannot fill the glob 'out/\{nope\}.txt'"):
        f("a")


def test_the_source_enters_the_key(project: Path) -> None:
    # Two functions with one qualified name, module and arguments, but different bodies.
    namespace: dict[str, Any] = {}
    module = project / "genmod.py"
    module.write_text("from cachehook import cached\n@cached\ndef f():\n    return 1\n")
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    assert namespace["f"]() == 1
    module.write_text("from cachehook import cached\n@cached\ndef f():\n    return 2\n")
    import linecache

    linecache.checkcache(str(module))
    namespace = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    assert namespace["f"]() == 2


def test_without_source_the_bytecode_stands_in(project: Path) -> None:
    values = []
    for body in ("return 1", "return 2", "return 1"):
        namespace: dict[str, Any] = {}
        exec(f"from cachehook import cached\n@cached\ndef f():\n    {body}\n", namespace)
        values.append(namespace["f"]())
    assert values == [1, 2, 1]


def test_the_wrapper_keeps_name_doc_and_signature() -> None:
    def original(a: int, *, b: str = "x") -> int:
        """Docs."""
        return a

    wrapped = cached(inputs="src/*.py")(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(original)


def test_async_and_generator_functions_are_refused() -> None:
    async def coroutine() -> None:
        pass

    def generator() -> Any:
        yield 1

    with pytest.raises(TypeError, match="async function"):
        cached(coroutine)
    with pytest.raises(TypeError, match="generator function"):
        cached(generator)


def test_globs_must_be_strings() -> None:
    with pytest.raises(TypeError, match="inputs must be strings"):
        cached(inputs=[Path("src")])  # type: ignore[list-item]


def test_disabled_cache_runs_every_time(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEHOOK_DISABLE", "1")
    calls: list[int] = []

    @cached
    def f() -> int:
        calls.append(1)
        return 1

    assert f() == f() == 1
    assert len(calls) == 2


def test_a_hit_without_a_stored_value_runs_again(project: Path) -> None:
    calls: list[int] = []

    def five() -> int:
        calls.append(1)
        return 5

    # The same key stored without a value, as by hand or by an older version.
    identity = FunctionIdentity(five)
    command = ("py:", identity.qualname, identity.source_digest, canonical_json({}, owner="-"))
    stored = run_cached(command, CacheOptions(), lambda _: 0, name=None, on_notice=print)
    assert stored.stored
    assert stored.value is None

    wrapped = cached(five)
    assert wrapped() == 5
    assert wrapped() == 5
    assert len(calls) == 1


def test_cached_is_exported_lazily() -> None:
    assert cachehook.cached is cached
    assert "cached" in cachehook.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cachehook.nope
    code = textwrap.dedent(
        """
        import sys, cachehook
        from cachehook import cached
        heavy = [m for m in ("click", "httpx", "diskcache", "cachehook.runner") if m in sys.modules]
        print(heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.integration
def test_a_remote_hit_returns_the_value_and_restores_outputs(
    project: Path,
    remote_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in remote_env.items():
        monkeypatch.setenv(name, value)
    calls: list[int] = []

    @cached(outputs=["out.txt"])
    def build(n: int) -> list[int]:
        calls.append(n)
        (project / "out.txt").write_text(str(n))
        return [n, n * 2]

    assert build(3) == [3, 6]
    close_runners()
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(tmp_path / "another-machine"))
    (project / "out.txt").unlink()
    assert build(3) == [3, 6]
    assert calls == [3]
    assert (project / "out.txt").read_text() == "3"
