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




_FAKE_PGVECTOR = """
CREATE DOMAIN {s}.vector AS text;
CREATE FUNCTION {s}.cosine_distance(a text, b text) RETURNS float8 LANGUAGE sql IMMUTABLE
AS $$ SELECT 1 - sum(x * y) / NULLIF(sqrt(sum(x * x)) * sqrt(sum(y * y)), 0)
      FROM unnest(string_to_array(trim(both '[]' from a), ',')::float8[],
                  string_to_array(trim(both '[]' from b), ',')::float8[]) AS v(x, y) $$;
CREATE OPERATOR {s}.<=> (LEFTARG = text, RIGHTARG = text, FUNCTION = {s}.cosine_distance);
"""


class TestPostgresMemoryPgvectorPath(MemoryConformance):
    """The pgvector code path (a ``vector`` column, ``'[...]'::vector`` parameters, the
    ``<=>`` cosine distance) against a stand-in for the extension: a ``vector`` domain over
    text and a ``<=>`` operator written in SQL, found first on the search path. It checks
    keel's SQL, not pgvector itself (TestPostgresMemoryPgvector does, where installed)."""

    @pytest.fixture
    def memory_at(self, pg_schema: str,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., MemoryBackend]]:
        fake = f"{pg_schema}_fake"
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{fake}"')
            conn.execute(_FAKE_PGVECTOR.format(s=fake))

        async def installed(self: PostgresMemory) -> bool:
            return True

        monkeypatch.setattr(PostgresMemory, "_has_extension", installed)
        url = f"{PG_URL}?options=-csearch_path%3D{fake}%2Cpublic"

        def make(**options: Any) -> MemoryBackend:
            return PostgresMemory(url, schema=pg_schema, **options)

        try:
            yield make
        finally:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{fake}" CASCADE')

    async def test_it_really_took_the_pgvector_path(
            self, memory_at: Callable[..., MemoryBackend]) -> None:
        memory = memory_at()
        assert isinstance(memory, PostgresMemory)
        async with memory:
            assert memory.vectors == "pgvector"
            await memory.remember("The user's dog is called Rex.", user="u")
            [(kind,)] = await memory._run(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                f"'{memory.schema}.keel_memory'::regclass AND attname = 'embedding'")
            assert kind.endswith("vector")
