"""Developer sessions: ``nox`` runs tests, lint and typing; ``.ci/run`` runs the same checks."""

from __future__ import annotations

import nox

from cachehook.integrations.nox import cached

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

SOURCES = ["cachehook/**/*.py", "tests/**/*.py", "pyproject.toml"]


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """The test suite (integration tests start their own servers; see .ci/run)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
@cached(inputs=[*SOURCES, "benchmarks/**/*.py", "examples/**/*.py", "noxfile.py"])
def lint(session: nox.Session) -> None:
    """ruff check and format, skipped by cachehook when no Python file changed."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@cached(inputs=SOURCES)
def typing(session: nox.Session) -> None:
    """mypy --strict over the package and the tests, cached the same way."""
    session.install("-e", ".[test]")
    session.run("mypy")
