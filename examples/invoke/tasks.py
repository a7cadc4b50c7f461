"""invoke tasks whose bodies cachehook skips when nothing they read has changed."""

from invoke import Context, task

from cachehook.integrations.invoke import cached


@task(help={"fmt": "Output format: html or txt."})
@cached(inputs=["docs/*.md", "build_docs.py"], outputs=["build/{fmt}/**"])
def docs(c: Context, fmt: str = "html") -> None:
    """Build the docs; a hit restores build/<fmt>/ without running the build."""
    c.run(f"python build_docs.py {fmt}")
