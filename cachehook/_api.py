"""What every integration shares: options, a function's identity, canonical JSON, one cached run.

The nox, invoke and function decorators differ only in how they name a task and where they
print; the key, store, remote and events are the runner's, exactly as for ``cachehook exec``.
A result reaches the host tool as the runner's ``TaskFinished``, told to the listener that
``run_cached`` lends the runner (``_reporter``). The runners kept open between calls are
``_pool``'s.

Just over the 400-line aim (~405): the option set, the function's identity and the one cached
run are what the three integrations share, and each is read with the others; the function's
identity (source, closure, defaults) is the seam to split along if it grows.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from cachehook._pool import close_runners, leased_runner

if TYPE_CHECKING:
    from types import CodeType
    from typing import Unpack

    from cachehook.facts import Fact, Listener
    from cachehook.runner import Execute, RunResult

__all__ = [
    "CacheArguments",
    "CacheOptions",
    "FunctionIdentity",
    "bare_or_configured",
    "bind_arguments",
    "canonical_json",
    "close_runners",
    "describe_result",
    "host_parameter",
    "interpreter_tag",
    "run_cached",
]

_SUPPORTED = "None, bool, int, float, str, list, tuple, dict with str keys, set, pathlib paths"


class CacheArguments(TypedDict, total=False):
    """What every ``cached()`` takes, as keywords: the function decorator, nox's and invoke's.

    Attributes:
        inputs: globs of the files the task reads, relative to the project root; ``{name}``
            is filled from the call's arguments.
        outputs: globs of the files it writes, stored after a successful run and restored on
            a hit; ``{name}`` as for inputs (``build/{fmt}/**``).
        env: environment variables whose values enter the key (``PREFIX*`` matches many).
        salt: any string; change it to disown earlier results.
        ignore: arguments left out of the key (a logger, a verbosity flag, ``self``).
        root: the project root (default: found from the working directory, as the CLI does).
        tools: programs the task runs (found on ``PATH``) whose toolchain enters the key, with
            the interpreter the task runs in and its installed distributions (issue 10).
        toolchain: False leaves the toolchain (interpreter, distributions, tools) out of the key.

    A bare string counts as one glob or name.
    """

    inputs: str | Iterable[str]
    outputs: str | Iterable[str]
    env: str | Iterable[str]
    salt: str
    ignore: str | Iterable[str]
    root: str | os.PathLike[str] | None
    tools: str | Iterable[str]
    toolchain: bool


def _strings(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    # A bare string is one glob, not a sequence of one-character globs.
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str):
            msg = f"{what} must be strings, got {item!r}"
            raise TypeError(msg)
    return items


@dataclass(frozen=True)
class CacheOptions:
    """What a ``cached()`` was told about the task it wraps, normalised (see CacheArguments)."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    salt: str = ""
    root: Path | None = None
    tools: tuple[str, ...] = ()
    toolchain: bool = True
    ignore: tuple[str, ...] = ()

    @classmethod
    def create(cls, **arguments: Unpack[CacheArguments]) -> CacheOptions:
        """Normalise what a ``cached()`` received; a bare string counts as one glob.

        Raises:
            TypeError: an unknown keyword, or a glob or name that is not a string.
        """
        unknown = sorted(set(arguments) - CacheArguments.__optional_keys__)
        if unknown:
            msg = f"cached() got an unexpected keyword argument {unknown[0]!r}"
            raise TypeError(msg)
        root = arguments.get("root")
        return cls(
            inputs=_strings(arguments.get("inputs", ()), "inputs"),
            outputs=_strings(arguments.get("outputs", ()), "outputs"),
            env=_strings(arguments.get("env", ()), "env"),
            salt=str(arguments.get("salt", "")),
            root=None if root is None else Path(root),
            tools=_strings(arguments.get("tools", ()), "tools"),
            toolchain=bool(arguments.get("toolchain", True)),
            ignore=_strings(arguments.get("ignore", ()), "ignore"),
        )

    def check_ignore(self, parameters: Iterable[str], *, owner: str) -> None:
        """Refuse an ``ignore`` that names no parameter of the wrapped function.

        Raises:
            TypeError: naming the parameters that do not exist.
        """
        unknown = sorted(set(self.ignore) - set(parameters))
        if unknown:
            msg = f"cached(ignore=...) names no parameter of {owner}: {', '.join(unknown)}"
            raise TypeError(msg)

    def fill(self, arguments: Mapping[str, object], *, owner: str) -> CacheOptions:
        """Fill ``{name}`` placeholders in the globs from the call's arguments.

        ``outputs=["build/{fmt}/**"]`` gives each value of ``fmt`` its own outputs; ``{{``
        is a literal brace.

        Raises:
            ConfigError: a placeholder names no argument, or is malformed.
        """
        if not any("{" in glob or "}" in glob for glob in (*self.inputs, *self.outputs)):
            return self
        return replace(
            self,
            inputs=tuple(_fill(glob, arguments, owner) for glob in self.inputs),
            outputs=tuple(_fill(glob, arguments, owner) for glob in self.outputs),
        )


F = TypeVar("F", bound=Callable[..., Any])


def bare_or_configured(
    func: F | None, options: CacheOptions, wrap: Callable[[F, CacheOptions], F]
) -> F | Callable[[F], F]:
    """``func`` wrapped (bare ``@cached``), or the decorator (``@cached(...)``)."""

    def decorate(func: F) -> F:
        return wrap(func, options)

    return decorate if func is None else decorate(func)


def host_parameter(func: Callable[..., Any], *, takes: str) -> str:
    """The name of ``func``'s first parameter, the one its host tool passes.

    Raises:
        TypeError: ``func`` does not take one positionally; ``takes`` says what it should
            (``"a nox session takes the session"``).
    """
    parameters = list(inspect.signature(func).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        msg = f"{takes} first; {func.__qualname__} does not"
        raise TypeError(msg)
    return parameters[0].name


def _fill(glob: str, arguments: Mapping[str, object], owner: str) -> str:
    if "{" not in glob and "}" not in glob:
        return glob
    try:
        return glob.format_map(arguments)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        from cachehook.errors import ConfigError

        names = ", ".join(arguments) or "none"
        msg = (
            f"{owner}: cannot fill the glob {glob!r} from the arguments ({names}): {exc!r}; "
            "write a literal brace as '{{' or '}}'"
        )
        raise ConfigError(msg) from None


def _code_text(code: CodeType) -> str:
    """A code object as text, without its file name or line numbers (machine-independent)."""
    parts = [code.co_code.hex(), repr((code.co_names, code.co_varnames, code.co_freevars))]
    for const in code.co_consts:
        if inspect.iscode(const):
            parts.append(_code_text(const))
        elif isinstance(const, frozenset):  # its repr's order changes with hash randomisation
            parts.append(repr(sorted(map(repr, const))))
        else:
            parts.append(repr(const))
    return "\x00".join(parts)


@dataclass
class FunctionIdentity:
    """A function's qualified name and a digest of its source, computed once, on first use."""

    func: Callable[..., Any]
    _source_digest: str | None = field(default=None, init=False, repr=False)

    @property
    def qualname(self) -> str:
        module = getattr(self.func, "__module__", None) or "?"
        return f"{module}.{getattr(self.func, '__qualname__', repr(self.func))}"

    @property
    def source_digest(self) -> str:
        if self._source_digest is None:
            from cachehook.hashing import digest_bytes

            try:
                source = inspect.getsource(self.func)
            except (OSError, TypeError):
                # No source file (a REPL, a frozen app): the bytecode stands in for it.
                code = getattr(inspect.unwrap(self.func), "__code__", None)
                source = "code:" + (_code_text(code) if code is not None else repr(self.func))
            self._source_digest = digest_bytes(source.encode("utf-8", "surrogatepass"))
        return self._source_digest


def _canonical(value: object, where: str) -> object:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{where} is {value!r}, which JSON cannot represent"
            raise TypeError(msg)
        return float(value)
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        return _canonical_mapping(value, where)
    if isinstance(value, set | frozenset):
        items = [_canonical(item, f"{where} (an item)") for item in value]
        return {"$set": sorted(items, key=_dumps)}
    if isinstance(value, PurePath):
        return {"$path": value.as_posix()}
    msg = f"{where} is a {type(value).__qualname__}, which has no canonical JSON form"
    raise TypeError(msg)


def _canonical_mapping(value: Mapping[Any, Any], where: str) -> object:
    result: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            msg = f"{where} has a key {key!r} that is not a str"
            raise TypeError(msg)
        result[key] = _canonical(item, f"{where}[{key!r}]")
    # '$'-keys tag paths and sets; a user dict using them is wrapped so the two never collide.
    return {"$dict": result} if any(key.startswith("$") for key in result) else result


def _dumps(value: object) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_json(arguments: Mapping[str, object], *, owner: str) -> str:
    """Arguments as canonical JSON text: sorted keys, no spaces, tuples as lists.

    Args:
        arguments: parameter name to value.
        owner: how to name the function in an error, e.g. ``"gen.generate_models()"``.

    Returns:
        The JSON text that enters the key.

    Raises:
        TypeError: a value has no canonical JSON form; the message names the parameter.
    """
    normalised: dict[str, object] = {}
    for name, value in arguments.items():
        try:
            normalised[name] = _canonical(value, f"argument {name!r}")
        except TypeError as exc:
            msg = (
                f"cannot cache {owner}: {exc}. Supported types: {_SUPPORTED}; "
                f"or leave it out of the key with ignore=[{name!r}]"
            )
            raise TypeError(msg) from None
    return _dumps(normalised)


def bind_arguments(
    signature: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Bind a call to ``signature`` with its defaults applied, minus the ``ignore``d names."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    skip = set(ignore)
    return {name: value for name, value in bound.arguments.items() if name not in skip}


def interpreter_tag() -> str:
    """``cpython-311``: the interpreter a result was made with, without its path."""
    return sys.implementation.cache_tag or sys.implementation.name


def run_cached(
    command: tuple[str, ...],
    options: CacheOptions,
    execute: Execute,
    *,
    name: str | None,
    on_notice: Callable[[str], None],
    on_status: Callable[[str], None] | None = None,
    force: bool = False,
    interpreter: Path | None = None,
    search_path: str | None = None,
) -> RunResult:
    """Look ``command`` up in the cache, or run ``execute`` and store what it made.

    Settings come from the environment and ``pyproject.toml`` exactly as for the CLI.

    Args:
        command: the task's identity, the first thing in its key.
        options: the decorator's inputs, outputs, env, salt and root.
        execute: runs the task body; returns 0 for "store the result".
        name: the task's name for ``cachehook explain``, or None.
        on_notice: receives each warning as a plain sentence.
        on_status: receives the task's status line (``describe_result``), when it finishes.
        force: run even on a hit, and overwrite the cached result.
        interpreter: the Python the task runs in, keyed with its environment (default: this
            one, ``sys.executable``).
        search_path: the ``PATH`` the task's ``tools`` are found on (default: this process's).

    Raises:
        ConfigError: a glob, env name or setting is malformed.
        HashingError: an input cannot be read.
    """
    from cachehook.config import load_settings
    from cachehook.runner import TaskSpec

    cwd = Path.cwd()
    settings = load_settings(cwd=cwd, environ=os.environ, root=options.root)
    spec = TaskSpec(
        command=command,
        inputs=options.inputs,
        outputs=options.outputs,
        env=options.env,
        salt=options.salt,
        cwd=cwd,
        name=name,
        tools=options.tools,
        toolchain=options.toolchain,
        interpreter=interpreter or (Path(sys.executable) if sys.executable else None),
        search_path=search_path,
    )
    with leased_runner(settings, _reporter(on_notice, on_status)) as runner:
        prepared = runner.prepare(spec)
        for pattern in prepared.unmatched_inputs:
            on_notice(f"input glob {pattern!r} matched no file")
        return runner.run(prepared, force=force, execute=execute)


def _reporter(
    on_notice: Callable[[str], None], on_status: Callable[[str], None] | None
) -> Listener:
    """The listener of one cached call: notices to ``on_notice``, its status to ``on_status``."""
    from cachehook.facts import Notice, TaskFinished

    def listener(fact: Fact, /) -> None:
        if type(fact) is Notice:
            on_notice(fact.message)
        elif type(fact) is TaskFinished and on_status is not None:
            on_status(describe_result(fact.result))

    return listener


def describe_result(result: RunResult) -> str:
    """The one line a host tool shows: ``local hit 3f2a…c91 (saved 4.21s)``."""
    from cachehook.cli import _output

    if result.status == "HIT":
        return f"{_output.describe_hit(result)}, skipped the body"
    if result.status == "BYPASS":
        return _output.describe_result(result)
    ran = _output.describe_ran(result.duration_ms, stored=result.stored)
    return f"miss {_output.short_key(result.key)}, {ran}"
