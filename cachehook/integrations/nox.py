"""``@cached`` for nox sessions: skip the whole session body when nothing it reads changed.

Place it *under* ``@nox.session`` (and under or over ``@nox.parametrize``), so nox registers the
wrapper::

    @nox.session
    @cached(inputs=["src/**/*.py", "tests/**/*.py", "pyproject.toml"], env=["PYTHON*"])
    def tests(session):
        session.install("-e", ".[test]")
        session.run("pytest")

The key holds the session's name as nox prints it (Python version and parameters included), the
parametrized arguments, ``session.posargs``, the interpreter, a digest of the session function's
source, the declared inputs and environment, and the toolchain: the session virtualenv's
interpreter and the distributions installed in it when the session starts (what its body
installs enters the next run's key, so pin what it installs), plus the ``tools`` named. On a
hit the body is skipped (nothing is installed or run), the declared outputs are restored, one
line goes to ``session.log`` and the session counts as a success. nox has already created or
reused the virtualenv by then.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from cachehook._api import (
    CacheOptions,
    FunctionIdentity,
    bare_or_configured,
    canonical_json,
    host_parameter,
    interpreter_tag,
    run_cached,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Unpack

    from nox import Session

    from cachehook._api import CacheArguments
    from cachehook.logs import LogRecorder

    SessionFunc = Callable[..., Any]

__all__ = ["cached"]


def _python_tag(session: Session) -> str:
    python = session.python
    if isinstance(python, str):
        return python
    # No version asked for: the venv (or, without one, the commands) use the host interpreter.
    return interpreter_tag()


def _session_toolchain(session: Session) -> tuple[Path | None, str | None]:
    """The session virtualenv's interpreter and the PATH its commands see (issue 10).

    Without a virtualenv (``python=False``, ``venv_backend="none"``) the body runs commands
    from PATH, and its own code in nox's interpreter: that one is keyed.
    """
    location = getattr(getattr(session, "virtualenv", None), "location", None)
    if not location:
        return None, None
    bin_dir = Path(location) / ("Scripts" if sys.platform == "win32" else "bin")
    for name in ("python", "python3", "python.exe"):
        if (bin_dir / name).exists():
            path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
            return bin_dir / name, path
    return None, None


def _command(
    identity: FunctionIdentity, session: Session, arguments: dict[str, Any]
) -> tuple[str, ...]:
    owner = f"nox session {session.name!r}"
    return (
        "nox:",
        session.name,
        _python_tag(session),
        canonical_json(arguments, owner=owner),
        canonical_json({"posargs": list(session.posargs)}, owner=owner),
        identity.qualname,
        identity.source_digest,
    )


def _wrap(func: SessionFunc, options: CacheOptions) -> SessionFunc:
    host_parameter(func, takes="a nox session takes the session")
    identity = FunctionIdentity(func)

    @functools.wraps(func)
    def wrapper(session: Session, *args: Any, **kwargs: Any) -> Any:
        # Parametrized values arrive as keyword arguments (nox's Call); positional extras
        # would come from a caller nox does not have, so they enter the key the same way.
        arguments = {f"${index}": value for index, value in enumerate(args)}
        arguments.update((k, v) for k, v in kwargs.items() if k not in options.ignore)
        command = _command(identity, session, arguments)
        filled = options.fill(kwargs, owner=f"nox session {session.name!r}")
        returned: list[Any] = []

        def execute(recorder: LogRecorder) -> int:
            del recorder  # nox writes the commands' output straight to the terminal
            returned.append(func(session, *args, **kwargs))
            return 0

        interpreter, search_path = _session_toolchain(session)
        run_cached(
            command,
            filled,
            execute,
            name=f"nox:{session.name}",
            on_notice=lambda message: session.warn(f"cachehook: {message}"),
            on_status=lambda line: session.log(f"cachehook: {line}"),
            interpreter=interpreter,
            search_path=search_path,
        )
        return returned[0] if returned else None

    return wrapper


@overload
def cached(func: SessionFunc, /) -> SessionFunc: ...


@overload
def cached(**options: Unpack[CacheArguments]) -> Callable[[SessionFunc], SessionFunc]: ...


def cached(
    func: SessionFunc | None = None, /, **options: Unpack[CacheArguments]
) -> SessionFunc | Callable[[SessionFunc], SessionFunc]:
    """Skip a nox session's body when its inputs, parameters and posargs are unchanged.

    Args:
        func: the session function, when used bare.
        **options: as for every ``cached()`` (``inputs``, ``outputs``, ``env``, ``salt``,
            ``ignore``, ``root``, ``tools``, ``toolchain``; see ``CacheArguments``). For a
            session: list the noxfile in ``inputs`` if helpers outside the session function
            shape its result; ``{name}`` in a glob is filled from the parametrized arguments;
            ``ignore`` leaves out parametrized arguments with no JSON form (their id in the
            session name still counts: give them stable ``ids``); ``tools`` names programs run
            outside the virtualenv (``external=True``), found on ``PATH`` after its ``bin``;
            ``toolchain=False`` leaves out the virtualenv's interpreter and distributions too.

    Returns:
        The session function, wrapped with its name, signature and nox attributes kept.

    Raises:
        TypeError: an unknown option, or a function that does not take the session first.
    """
    return bare_or_configured(func, CacheOptions.create(**options), _wrap)
