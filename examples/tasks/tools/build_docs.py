"""Render docs/*.md plus the generated models' fields into one HTML page."""

import ast
import html
import os
import pathlib
import sys
import time

out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
time.sleep(0.3)  # stands in for a slow documentation build
title = os.environ.get("DOCS_TITLE", "Example app")
parts = [f"<h1>{html.escape(title)}</h1>"]
for page in sorted(pathlib.Path("docs").glob("*.md")):
    parts += [f"<pre>{html.escape(page.read_text())}</pre>"]
tree = ast.parse(pathlib.Path("src/app/models.py").read_text())
for node in tree.body:
    if isinstance(node, ast.ClassDef):
        names = [item.target for item in node.body if isinstance(item, ast.AnnAssign)]
        fields = ", ".join(name.id for name in names if isinstance(name, ast.Name))
        parts += [f"<h2>{node.name}</h2><p>{fields}</p>"]
out.mkdir(parents=True, exist_ok=True)
(out / "index.html").write_text("\n".join(parts) + "\n")
print(f"docs: wrote {out / 'index.html'}")
