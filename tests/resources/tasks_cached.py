"""A fixture tasks.py for tests/integrations/test_invoke.py: cached tasks that count their runs."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from invoke.tasks import task

from cachehook.integrations.invoke import cached

if TYPE_CHECKING:
    from invoke.context import Context


@task(help={"fmt": "Output format.", "loud": "Shout it."})
@cached(inputs=["src/*.txt"], outputs=["out/{fmt}.txt"])
def build(c: Context, fmt: str = "txt", loud: bool = False) -> None:
    """Render src/ into out/<fmt>.txt."""
    with pathlib.Path("runs.log").open("a") as log:
        log.write(f"build-{fmt}\n")
    c.run(f"python render.py {fmt} {int(loud)}")


@task(pre=[build])
@cached(inputs=["out/txt.txt"], outputs=["out/final.txt"])
def final(c: Context) -> None:
    """Depends on build (a pre-task, which hits or misses on its own)."""
    with pathlib.Path("runs.log").open("a") as log:
        log.write("final\n")
    c.run("python -c \"import shutil; shutil.copy('out/txt.txt', 'out/final.txt')\"")
