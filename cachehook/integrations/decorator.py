"""``@cached``: skip a Python function when its code, arguments and input files are unchanged.

The key is the function's qualified name, a digest of its source, its arguments as canonical
JSON (defaults applied) and the declared input files, globs and environment, as for
``cachehook exec``. On a hit the body does not run: the declared outputs are restored and the
cached return value is returned.

Return values are cached as JSON, never pickled. A function that returns anything else (a
tuple, a dataclass, a dict with int keys...) still runs and returns normally, but nothing is
cached for that call and an :class:`UncachedValueWarning` says why, once per function.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from cachehook._api import (
    CacheArguments,
    CacheOptions,
    FunctionIdentity,
    bare_or_configured,
    bind_arguments,
    canonical_json,
    run_cached,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from cachehook.logs import LogRecorder
    from cachehook.runner import RunResult

__all__ = ["CacheArguments", "UncachedValueWarning", "cached"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("cachehook")

_PLAIN_JSON = "None, bool, int, float, str, list, dict with str keys"


class UncachedValueWarning(UserWarning):
    """A cached function returned a value that is not plain JSON, so that call was not cached."""


def _json_problem(value: object, where: str = "the value") -> str | None:
    """Why ``value`` would not come back from JSON as it is (None if it would)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return None
    if kind is float:
        return None if math.isfinite(cast("float", value)) else f"{where} is {value!r}"
    if kind is list:
        for index, item in enumerate(cast("list[object]", value)):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    if kind is dict:
        for key, item in cast("dict[object, object]", value).items():
            if type(key) is not str:
                return f"{where} has the key {key!r}, not a str"
            problem = _json_problem(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    return f"{where} is a {kind.__qualname__}"


class _CachedFunction:
    """One decorated function: its identity, options and the once-only warning."""

    def __init__(self, func: Callable[..., Any], options: CacheOptions) -> None:
        self.func = func
        self.options = options
        self.signature = inspect.signature(func)
        self.identity = FunctionIdentity(func)
        self.has_warned = False
        options.check_ignore(self.signature.parameters, owner=self.owner)

    @property
    def owner(self) -> str:
        return f"{self.identity.qualname}()"

    def prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[str, ...], CacheOptions]:
        arguments = bind_arguments(self.signature, args, kwargs)
        keyed = {k: v for k, v in arguments.items() if k not in self.options.ignore}
        identity = self.identity
        arguments_json = canonical_json(keyed, owner=self.owner)
        command = ("py:", identity.qualname, identity.source_digest, arguments_json)
        return command, self.options.fill(arguments, owner=self.owner)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        command, options = self.prepare(args, kwargs)
        produced: list[Any] = []
        problems: list[str] = []

        def execute(recorder: LogRecorder) -> int:
            value = self.func(*args, **kwargs)
            produced.append(value)
            problem = _json_problem(value)
            if problem is not None:
                problems.append(problem)
                return 1  # a value a hit could not give back: store nothing for this call
            recorder.value = json.dumps(value, ensure_ascii=False, allow_nan=False)
            return 0

        result = self._run(command, options, execute, force=False)
        if not produced and not _is_loadable(result.value):
            # A hit without a usable value (stored by hand, or damaged): run and store again.
            result = self._run(command, options, execute, force=True)
        if problems and not self.has_warned:
            self.has_warned = True
            msg = (
                f"{self.owner} returned a value that is not plain JSON ({problems[0]}), "
                f"so its result is not cached; return {_PLAIN_JSON} to cache it"
            )
            warnings.warn(msg, UncachedValueWarning, stacklevel=3)
        if produced:
            return produced[0]
        assert result.value is not None
        return json.loads(result.value)

    def _run(
        self,
        command: tuple[str, ...],
        options: CacheOptions,
        execute: Callable[[LogRecorder], int],
        *,
        force: bool,
    ) -> RunResult:
        return run_cached(
            command,
            options,
            execute,
            name=f"py:{self.identity.qualname}",
            on_notice=logger.warning,
            on_status=self._log_status if logger.isEnabledFor(logging.INFO) else None,
            force=force,
        )

    def _log_status(self, line: str) -> None:
        logger.info("%s: %s", self.owner, line)


def _is_loadable(value: str | None) -> bool:
    if value is None:
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


@overload
def cached(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def cached(**options: Unpack[CacheArguments]) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def cached(
    func: Callable[P, R] | None = None, /, **options: Unpack[CacheArguments]
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a function's outputs and return value; skip it when nothing it depends on changed.

    Use it bare (``@cached``) or with options (``@cached(inputs=[...], outputs=[...])``).

    Args:
        func: the function, when used bare.
        **options: as for every ``cached()``: ``inputs``, ``outputs``, ``env``, ``salt``,
            ``ignore``, ``root``, ``tools``, ``toolchain`` (see ``CacheArguments``). The
            running interpreter and its installed distributions always enter the key, unless
            ``toolchain=False``.

    Returns:
        The wrapped function, with the same signature.

    Raises:
        TypeError: an unknown option, ``func`` is a coroutine or generator function, or
            ``ignore`` names no parameter. When called, the wrapper raises TypeError for an
            argument with no canonical JSON form (the message names the parameter), and
            whatever the function itself raises.
    """
    return bare_or_configured(func, CacheOptions.create(**options), _wrap)


def _wrap(func: Callable[P, R], options: CacheOptions) -> Callable[P, R]:
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        msg = f"cached() cannot wrap the async function {func.__qualname__}"
        raise TypeError(msg)
    if inspect.isgeneratorfunction(func):
        msg = f"cached() cannot wrap the generator function {func.__qualname__}"
        raise TypeError(msg)
    state = _CachedFunction(func, options)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return cast("R", state.call(args, kwargs))

    return wrapper
