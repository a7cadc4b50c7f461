"""A slow 'build': concatenates src/*.txt into build/site.txt, upper-cased."""

import pathlib
import time

time.sleep(2)  # pretend this is real work
src = sorted(pathlib.Path("src").glob("*.txt"))
out = pathlib.Path("build")
out.mkdir(exist_ok=True)
(out / "site.txt").write_text("".join(p.read_text().upper() for p in src))
print(f"built build/site.txt from {len(src)} files")
