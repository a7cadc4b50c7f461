"""A slow 'build': packs src/shout into dist/shout.pyz, an executable zip app."""

import pathlib
import time
import zipapp

time.sleep(1)  # pretend this is real work
pathlib.Path("dist").mkdir(exist_ok=True)
zipapp.create_archive("src", "dist/shout.pyz", main="shout:shout")
print("built dist/shout.pyz")
