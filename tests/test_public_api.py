from __future__ import annotations

import importlib
import pkgutil

import pytest

import cachehook

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(cachehook.__path__, "cachehook.")
    if not m.name.startswith(("cachehook.server", "cachehook.integrations", "cachehook.__main__"))
)


def test_top_level_all_is_sorted_and_complete() -> None:
    assert cachehook.__all__ == sorted(cachehook.__all__)
    for name in cachehook.__all__:
        assert getattr(cachehook, name) is not None


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    if name.endswith("__main__"):
        return
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.__all__ names missing {exported!r}"
