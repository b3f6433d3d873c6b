"""Fresh run stores of each backend for tests that run on all three."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg

from keel import MemoryStore, RunStore
from keel.store import PostgresStore, SQLiteStore

PG_URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["memory", "sqlite", "postgres"]


@asynccontextmanager
async def fresh_store(kind: str, tmp_path: Path, prefix: str, *,
                      outbox: bool = False) -> AsyncIterator[RunStore]:
    """An empty store of ``kind``: in memory, a SQLite file in ``tmp_path``, or a Postgres
    schema of its own (``<prefix>_<random>``), dropped afterwards; with ``outbox``, its
    outbox on."""
    if kind == "memory":
        yield MemoryStore(outbox=outbox)
    elif kind == "sqlite":
        async with SQLiteStore(tmp_path / "runs.db", outbox=outbox) as opened:
            yield opened
    else:
        schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
        try:
            async with PostgresStore(PG_URL, schema=schema, outbox=outbox) as opened:
                yield opened
        finally:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
