"""Fixtures shared by the positioning tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def bench() -> ModuleType:
    """bench/positioning.py as a module (a script, not a package): its metrics are tested too."""
    spec = importlib.util.spec_from_file_location(
        "bench_positioning", REPO / "bench/positioning.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
