"""Thin adapters over the runner for host tools: nox sessions, invoke tasks, plain functions.

Import the one you use (``cachehook.integrations.nox``, ``.invoke``, ``.decorator``); this
package imports none of them, so neither nox nor invoke is needed to use the others.
"""

from __future__ import annotations

__all__: list[str] = []
