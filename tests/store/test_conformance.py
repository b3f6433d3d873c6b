"""Every run store passes the same conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.store import MemoryStore, RunStore
from keel.store._sqlite import SQLiteStore
from keel.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[RunStore]:
        async with MemoryStore() as store:
            yield store



class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[RunStore]:
        async with SQLiteStore(tmp_path / "runs.db") as store:
            yield store


class TestSQLiteStoreInMemory(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[RunStore]:
        async with SQLiteStore(":memory:") as store:
            yield store
