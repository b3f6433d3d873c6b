"""Every long-term memory backend passes the same conformance suite: in memory, SQLite (a
file and ``:memory:``) and Postgres (plain arrays on the test server; pgvector when the
server has the extension)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.context import InMemoryMemory, MemoryBackend, PostgresMemory, SQLiteMemory
from keel.testing import MemoryConformance

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class TestInMemoryMemory(MemoryConformance):
    persistent = False

    @pytest.fixture
    def memory_at(self) -> Callable[..., MemoryBackend]:
        return lambda **options: InMemoryMemory(**options)


class TestSQLiteMemory(MemoryConformance):
    @pytest.fixture
    def memory_at(self, tmp_path: Path) -> Callable[..., MemoryBackend]:
        return lambda **options: SQLiteMemory(tmp_path / "memory.db", **options)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"keel_mem_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _has_pgvector() -> bool:
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
            return row is not None
    except psycopg.Error:
        return False


class TestPostgresMemoryArrays(MemoryConformance):
    @pytest.fixture
    def memory_at(self, pg_schema: str) -> Callable[..., MemoryBackend]:
        def make(**options: Any) -> MemoryBackend:
            return PostgresMemory(PG_URL, schema=pg_schema, pgvector=False, **options)
        return make


@pytest.mark.skipif(not _has_pgvector(), reason="the test server has no pgvector extension")
class TestPostgresMemoryPgvector(MemoryConformance):
    @pytest.fixture
    def memory_at(self, pg_schema: str) -> Callable[..., MemoryBackend]:
        def make(**options: Any) -> MemoryBackend:
            return PostgresMemory(PG_URL, schema=pg_schema, pgvector=True, **options)
        return make


