"""A fixture noxfile for tests/integrations/test_nox.py: cached sessions that count their runs.

Every session appends its name to runs.log when its body runs, so a test can tell a hit
(the body skipped) from a miss.
"""

from __future__ import annotations

import pathlib

import nox

from cachehook.integrations.nox import cached

nox.options.default_venv_backend = "none"


def record(name: str) -> None:
    with pathlib.Path("runs.log").open("a") as log:
        log.write(name + "\n")


def write(path: str, text: str) -> None:
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


@nox.session
@cached(inputs=["src/*.txt"], outputs=["out/build.txt"])
def build(session: nox.Session) -> None:
    """Upper-case src/ into out/build.txt, with the posargs appended."""
    record("build")
    text = "".join(p.read_text() for p in sorted(pathlib.Path("src").glob("*.txt")))
    write("out/build.txt", text.upper() + " ".join(session.posargs))


@nox.session
@nox.parametrize("n", [1, 2])
@cached(outputs=["out/above-{n}.txt"])
def above(session: nox.Session, n: int) -> None:
    """nox.parametrize above cached: the wrapper gets the parameters."""
    record(f"above-{n}")
    write(f"out/above-{n}.txt", str(n))


@nox.session
@cached(outputs=["out/below-{n}.txt"])
@nox.parametrize("n", [1, 2])
def below(session: nox.Session, n: int) -> None:
    """nox.parametrize below cached: functools.wraps carries the marks up."""
    record(f"below-{n}")
    write(f"out/below-{n}.txt", str(n))


@nox.session
@cached(inputs=["src/*.txt"])
def fails(session: nox.Session) -> None:
    """Fails every time, so nothing is ever cached."""
    record("fails")
    session.error("this session fails")


@nox.session
@cached(inputs=["src/*.txt"])
def skips(session: nox.Session) -> None:
    """Skips itself: not a success, so nothing is cached."""
    record("skips")
    session.skip("not today")


@nox.session(venv_backend="uv|virtualenv")  # uv where installed: a venv in ms
@cached(inputs=["src/*.txt"], outputs=["out/venv.txt"])
def venv(session: nox.Session) -> None:
    """A real virtualenv: the body runs the venv's python."""
    record("venv")
    pathlib.Path("out").mkdir(exist_ok=True)
    session.run("python", "-c", "import sys; open('out/venv.txt', 'w').write(sys.prefix)")
