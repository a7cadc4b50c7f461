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
    bare_or_configured,
    bind_arguments,
    canonical_json,
    host_parameter,
    run_cached,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from cachehook._api import CacheArguments
    from cachehook.logs import LogRecorder

    TaskFunc = Callable[..., Any]

__all__ = ["cached"]


def _say(message: str) -> None:
    print(f"cachehook: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    _say(f"warning: {message}")


def _wrap(func: TaskFunc, options: CacheOptions) -> TaskFunc:
    context = host_parameter(func, takes="an invoke task takes the context")
    signature = inspect.signature(func)
    options.check_ignore(signature.parameters, owner=func.__qualname__)
    identity = FunctionIdentity(func)
    owner = f"invoke task {func.__name__!r}"

    @functools.wraps(func)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = bind_arguments(signature, (c, *args), kwargs, ignore=(context,))
        keyed = {name: value for name, value in arguments.items() if name not in options.ignore}
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
        run_cached(
            command,
            filled,
            execute,
            name=f"invoke:{func.__name__}",
            on_notice=_warn,
            on_status=_say,
        )
        return returned[0] if returned else None

    return wrapper


@overload
def cached(func: TaskFunc, /) -> TaskFunc: ...


@overload
def cached(**options: Unpack[CacheArguments]) -> Callable[[TaskFunc], TaskFunc]: ...


def cached(
    func: TaskFunc | None = None, /, **options: Unpack[CacheArguments]
) -> TaskFunc | Callable[[TaskFunc], TaskFunc]:
    """Skip an invoke task's body when its inputs and arguments are unchanged.

    Args:
        func: the task function, when used bare.
        **options: as for every ``cached()`` (``inputs``, ``outputs``, ``env``, ``salt``,
            ``ignore``, ``root``, ``tools``, ``toolchain``; see ``CacheArguments``). For a task:
            list ``tasks.py`` in ``inputs`` if helpers outside the task function shape its
            result; ``ignore`` leaves out flags that do not change it; ``tools`` names what
            ``c.run`` runs (``ruff`` in ``c.run("ruff check")``).

    Returns:
        The task function, wrapped with its name and signature kept (so flags and help work).

    Raises:
        TypeError: an unknown option, a function that takes no context argument, or an
            ``ignore`` that names no parameter.
    """
    return bare_or_configured(func, CacheOptions.create(**options), _wrap)
