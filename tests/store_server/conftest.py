"""Fixtures of the store server tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import Stack, make_stack


@pytest.fixture
def saved_garbage() -> Iterator[list]:
    """gc.garbage filled with what the collector finds unreachable (nothing is freed meanwhile)."""
    gc.collect()
    gc.garbage.clear()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        gc.collect()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A store server of this test's own (demo world, fresh database and key prefix): no
    background jobs touch its keys. Modules sharing one across their tests define their own."""
    s = make_stack(tmp_path)
    yield s
    s.close()
