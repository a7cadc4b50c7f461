"""``cachehook._api``: what the adapters share (canonical JSON, globs, the runner pool)."""

from __future__ import annotations

import importlib
import os
import threading
import time
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from cachehook import _api, _pool
from cachehook._api import CacheOptions, canonical_json, run_cached
from cachehook.errors import ConfigError
from cachehook.integrations.decorator import cached


def test_canonical_json_is_sorted_compact_and_order_free() -> None:
    text = canonical_json({"b": (1, 2.5), "a": {"y": None, "x": True}}, owner="f()")
    assert text == '{"a":{"x":true,"y":null},"b":[1,2.5]}'


def test_tagged_values_never_collide_with_user_dicts() -> None:
    path = canonical_json({"v": PurePosixPath("a/b")}, owner="f()")
    lookalike = canonical_json({"v": {"$path": "a/b"}}, owner="f()")
    assert path == '{"v":{"$path":"a/b"}}'
    assert lookalike == '{"v":{"$dict":{"$path":"a/b"}}}'
    assert canonical_json({"v": {3, 1, 2}}, owner="f()") == '{"v":{"$set":[1,2,3]}}'


def test_a_bare_string_is_one_glob() -> None:
    options = CacheOptions.create(inputs="src/**/*.py", outputs=["a", "b"], env="PYTHON*")
    assert options.inputs == ("src/**/*.py",)
    assert options.outputs == ("a", "b")
    assert options.env == ("PYTHON*",)


@pytest.mark.parametrize("module", ["decorator", "nox", "invoke"])
def test_every_cached_takes_the_same_options_and_refuses_a_misspelt_one(module: str) -> None:
    """The three ``cached()`` share one definition of their keywords (issue 11)."""
    adapter = importlib.import_module(f"cachehook.integrations.{module}")
    every: dict[str, Any] = {
        "inputs": "a",
        "outputs": ["b"],
        "env": "E",
        "salt": "s",
        "ignore": (),
        "root": ".",
        "tools": [],
        "toolchain": False,
    }
    assert set(every) == _api.CacheArguments.__optional_keys__
    assert callable(adapter.cached(**every))
    with pytest.raises(TypeError, match="unexpected keyword argument 'input'"):
        adapter.cached(input="src/**")
    with pytest.raises(TypeError, match="ignore must be strings"):
        adapter.cached(ignore=[1])


def test_fill_replaces_placeholders_and_keeps_literal_braces() -> None:
    options = CacheOptions.create(inputs=["src/{{x}}.txt"], outputs=["build/{fmt}/**"])
    filled = options.fill({"fmt": "html"}, owner="t")
    assert filled.outputs == ("build/html/**",)
    assert filled.inputs == ("src/{x}.txt",)
    assert CacheOptions.create(outputs=["plain/**"]).fill({}, owner="t").outputs == ("plain/**",)
    with pytest.raises(ConfigError, match=r"the glob '\{nope\}' from the arguments \(fmt\)"):
        CacheOptions.create(outputs=["{nope}"]).fill({"fmt": "x"}, owner="t")


def test_sequential_calls_reuse_one_runner(project: Path) -> None:
    @cached
    def f(n: int) -> int:
        return n

    for n in range(5):
        assert f(n) == n
    assert len(_pool._POOL._idle) == 1
    _pool.close_runners()
    assert _pool._POOL._idle == []


def test_another_cache_directory_gets_another_runner(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []

    @cached
    def f() -> int:
        calls.append(1)
        return 1

    f()
    monkeypatch.setenv("CACHEHOOK_CACHE_DIR", str(tmp_path / "other"))
    f()  # a miss: a new cache
    f()
    assert len(calls) == 2
    assert len(_pool._POOL._idle) == 2


def test_concurrent_calls_each_get_a_runner(project: Path) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    @cached
    def slow(n: int) -> int:
        with lock:
            calls.append(n)
        time.sleep(0.05)
        return n * n

    results: dict[int, int] = {}

    def work(n: int) -> None:
        results[n] = slow(n % 4)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: (n % 4) ** 2 for n in range(12)}
    assert set(calls) == {0, 1, 2, 3}
    assert len(_pool._POOL._idle) <= 4  # the pool keeps a few, closes the rest


def test_notices_go_to_the_current_caller(project: Path) -> None:
    seen: list[str] = []
    result = run_cached(
        ("t",),
        CacheOptions.create(inputs=["missing/*.txt"]),
        lambda _: 0,
        name=None,
        on_notice=seen.append,
    )
    assert result.status == "MISS"
    assert seen == ["input glob 'missing/*.txt' matched no file"]
    other: list[str] = []
    run_cached(
        ("t",),
        CacheOptions.create(inputs=["missing/*.txt"]),
        lambda _: 0,
        name=None,
        on_notice=other.append,
    )
    assert len(seen) == 1
    assert other == ["input glob 'missing/*.txt' matched no file"]


def test_the_status_line_is_told_to_the_current_caller_once(project: Path) -> None:
    """A pooled runner tells each call's TaskFinished to that call's ``on_status`` only."""
    first: list[str] = []
    miss = run_cached(
        ("s",), CacheOptions(), lambda _: 0, name=None, on_notice=print, on_status=first.append
    )
    second: list[str] = []
    hit = run_cached(
        ("s",), CacheOptions(), lambda _: 0, name=None, on_notice=print, on_status=second.append
    )
    assert (miss.status, hit.status) == ("MISS", "HIT")
    assert first == [_api.describe_result(miss)]
    assert second == [_api.describe_result(hit)]
    assert second[0].endswith(", skipped the body")
    assert len(_pool._POOL._idle) == 1  # one runner served both calls


def test_a_forked_child_opens_its_own_runner(project: Path) -> None:
    @cached
    def f(n: int) -> int:
        return n

    assert f(1) == 1
    parent_runner = _pool._POOL._idle[0][0]
    with warnings.catch_warnings():  # 3.12+: fork with (other tests') threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: a hit through its own runner, then leave without cleanup
        code = 0 if f(1) == 1 and _pool._POOL._idle[0][0] is not parent_runner else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f(2) == 2
    assert _pool._POOL._idle[0][0] is parent_runner
