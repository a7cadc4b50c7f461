"""nox sessions whose bodies cachehook skips when nothing they read has changed."""

import nox

from cachehook.integrations.nox import cached

nox.options.sessions = ["tests", "docs"]
# Fresh venvs are made by uv when it is installed (milliseconds), else by virtualenv.
nox.options.default_venv_backend = "uv|virtualenv"


@nox.session
@cached(inputs=["src/**/*.py", "tests/**/*.py", "noxfile.py"], env=["PYTHON*"])
def tests(session: nox.Session) -> None:
    """Run the tests in a fresh virtualenv (a hit skips them, and any installs)."""
    session.run("python", "-m", "unittest", "discover", "-s", "tests", env={"PYTHONPATH": "src"})


@nox.session(venv_backend="none")
@nox.parametrize("fmt", ["html", "txt"])
@cached(inputs=["docs/*.md", "build_docs.py"], outputs=["build/{fmt}/**"])
def docs(session: nox.Session, fmt: str) -> None:
    """Build the docs in one format; a hit restores build/<fmt>/."""
    session.run("python", "build_docs.py", fmt)
