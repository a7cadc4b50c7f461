"""A slow docs 'build': renders docs/*.md into build/<format>/."""

import pathlib
import sys
import time

fmt = sys.argv[1]
time.sleep(1)  # pretend this is real work
out = pathlib.Path("build", fmt)
out.mkdir(parents=True, exist_ok=True)
for page in sorted(pathlib.Path("docs").glob("*.md")):
    text = page.read_text()
    if fmt == "html":
        text = "<pre>\n" + text + "</pre>\n"
    (out / page.with_suffix(f".{fmt}").name).write_text(text)
print(f"built {fmt} docs into {out}")
