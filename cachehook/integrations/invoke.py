"""``@cached`` for invoke tasks: skip a task's body when nothing it reads changed.

Place it *under* ``@task``; the task keeps its name, flags and ``--help``::

    @task(help={"builder": "Sphinx builder"})
    @cached(inputs=["docs/**"], outputs=["docs/_build/**"])
    def docs(c, builder="html"):
        c.run(f"sphinx-build -b {builder} docs docs/_build")

The key holds the task function's qualified name and source digest, its arguments (every flag,
defaults applied; the context is left out), the context's ``cd`` directory and the declared
inputs and environment, and the toolchain: the running interpreter with its installed
distributions and the ``tools`` it names. On a hit the body is skipped, the declared outputs are
restored and one line goes to stderr.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, overload

from cachehook._api import (
    CacheOptions,
    FunctionIdentity,
    bind_arguments,
    canonical_json,
    describe_result,
    run_cached,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from cachehook.logs import LogRecorder

    TaskFunc = Callable[..., Any]

__all__ = ["cached"]


def _say(message: str) -> None:
    print(f"cachehook: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    _say(f"warning: {message}")


def _wrap(func: TaskFunc, options: CacheOptions, ignore: tuple[str, ...]) -> TaskFunc:
    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        msg = f"an invoke task takes the context first; {func.__qualname__} does not"
        raise TypeError(msg)
    unknown = sorted(set(ignore) - set(signature.parameters))
    if unknown:
        msg = f"cached(ignore=...) names no parameter of {func.__qualname__}: {', '.join(unknown)}"
        raise TypeError(msg)
    identity = FunctionIdentity(func)
    owner = f"invoke task {func.__name__!r}"

    @functools.wraps(func)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = bind_arguments(signature, (c, *args), kwargs, ignore=(parameters[0].name,))
        keyed = {name: value for name, value in arguments.items() if name not in ignore}
        command = (
            "invoke:",
            identity.qualname,
            identity.source_digest,
            canonical_json(keyed, owner=owner),
            str(getattr(c, "cwd", "")),
        )
        returned: list[Any] = []

        def execute(recorder: LogRecorder) -> int:
            del recorder  # invoke echoes the commands' output itself
            returned.append(func(c, *args, **kwargs))
            return 0

        filled = options.fill(arguments, owner=owner)
        result = run_cached(
            command, filled, execute, name=f"invoke:{func.__name__}", on_notice=_warn
        )
        _say(describe_result(result))
        return returned[0] if returned else None

    return wrapper


@overload
def cached(func: TaskFunc, /) -> TaskFunc: ...


@overload
def cached(
    *,
    inputs: str | Iterable[str] = (),
    outputs: str | Iterable[str] = (),
    env: str | Iterable[str] = (),
    salt: str = "",
    ignore: str | Iterable[str] = (),
    root: str | os.PathLike[str] | None = None,
    tools: str | Iterable[str] = (),
    toolchain: bool = True,
) -> Callable[[TaskFunc], TaskFunc]: ...


def cached(
    func: TaskFunc | None = None,
    /,
    *,
    inputs: str | Iterable[str] = (),
    outputs: str | Iterable[str] = (),
    env: str | Iterable[str] = (),
    salt: str = "",
    ignore: str | Iterable[str] = (),
    root: str | os.PathLike[str] | None = None,
    tools: str | Iterable[str] = (),
    toolchain: bool = True,
) -> TaskFunc | Callable[[TaskFunc], TaskFunc]:
    """Skip an invoke task's body when its inputs and arguments are unchanged.

    Args:
        func: the task function, when used bare.
        inputs: globs of the files the task reads, relative to the project root. List
            ``tasks.py`` too if helpers outside the task function shape its result.
        outputs: globs of the files it writes; stored after a successful run, restored on a hit.
            ``{name}`` in a glob is filled from the task's arguments (``build/{fmt}/**``).
        env: environment variables whose values enter the key (``PREFIX*`` matches many).
        salt: any string; change it to disown earlier results.
        ignore: arguments left out of the key (flags that do not change the result).
        root: the project root (default: found from the working directory, as the CLI does).
        tools: programs the task runs (``ruff`` in ``c.run("ruff check")``), found on ``PATH``;
            their toolchain enters the key with the running interpreter's environment.
        toolchain: False leaves the toolchain (interpreter, distributions, tools) out of the key.

    Returns:
        The task function, wrapped with its name and signature kept (so flags and help work).

    Raises:
        TypeError: the function takes no context argument, or ``ignore`` names no parameter.
    """
    options = CacheOptions.create(
        inputs=inputs,
        outputs=outputs,
        env=env,
        salt=salt,
        root=root,
        tools=tools,
        toolchain=toolchain,
    )
    ignored = (ignore,) if isinstance(ignore, str) else tuple(ignore)

    def decorate(func: TaskFunc) -> TaskFunc:
        return _wrap(func, options, ignored)

    return decorate if func is None else decorate(func)
