"""Fixtures of the SIGKILL tests: the fork server and the store under test (an SQLite file,
or a fresh Postgres schema dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.crash._harness", "tests.crash._forkserver")

from tests.crash._forkserver import ForkServer  # noqa: E402
from tests.crash._harness import POSTGRES_URL  # noqa: E402


@pytest.fixture(scope="session")
def forker() -> Iterator[ForkServer]:
    server = ForkServer(["crash_agent", "approval_agent"])
    try:
        yield server
    finally:
        server.close()


def _drop_schema(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The run store the children share: an SQLite file, or a fresh Postgres schema (dropped
    afterwards). Postgres must be reachable (see tests/store/test_postgres.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    schema = f"keel_crash_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        _drop_schema(schema)


