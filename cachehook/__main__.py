from __future__ import annotations

from cachehook.cli import main

raise SystemExit(main())
