"""Loading an example file as a module, for the example tests.

A pattern example's test module sets ``EXAMPLE`` (the path of its example) and takes the
``example`` fixture: the example loaded on its scripted models (``KEEL_MODEL`` unset).
``live_example(path)`` loads it as it is configured now (for the ``KEEL_MODEL`` checks)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest


def load_example(path: Path, module_name: str) -> ModuleType:
    """Execute the example at ``path`` as module ``module_name`` (registered in
    ``sys.modules`` while it loads, as dataclasses and pydantic need)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def live_example(path: Path) -> ModuleType:
    """The example loaded with the environment as it is (e.g. ``KEEL_MODEL`` set)."""
    name = f"_keel_example_{path.stem}_live"
    try:
        return load_example(path, name)
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def example(request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    path: Path = request.module.EXAMPLE
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    name = f"_keel_example_{path.stem}_t"
    module = load_example(path, name)
    try:
        yield module
    finally:
        sys.modules.pop(name, None)
