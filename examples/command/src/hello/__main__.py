"""A tiny command-line app, packed into dist/hello.pyz by `python -m zipapp`."""

import sys

print(f"hello, {sys.argv[1] if len(sys.argv) > 1 else 'world'}!")
