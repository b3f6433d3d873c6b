"""Building a Postgres store as an older keel left it (today's DDL without the columns added
since), for the in-place upgrade tests of each schema version."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from keel.testing._store_conformance_fleet import sample_task

URL = os.environ.get("KEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: The human task every old store holds (an approval of the suspended run).
TASK = sample_task("ap-old", "old-susp")
TASK_ROW = (TASK.task_id, TASK.run_id, TASK.kind, TASK.step_key, TASK.queue, TASK.status,
            TASK.created_at, json.dumps(TASK.data), TASK.due_at, None, None, "null", None,
            None)


def sql(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def fresh_schema() -> Iterator[str]:
    """A fresh schema name, dropped after the test (the upgrade tests' ``schema`` fixture)."""
    name = f"keel_test_{uuid.uuid4().hex[:12]}"
    yield name
    sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def entry_row(run_id: str, e: Any, version: int) -> tuple[Any, ...]:
    return (run_id, e.seq, e.key, e.phase, e.kind, e.name, e.input_hash, json.dumps(e.data),
            e.created_at, e.latency_ms, version)


def create_old_store(schema: str, *, version: int, ddl: Sequence[str], run_columns: str,
                     runs: Sequence[tuple[Any, ...]], entries: Sequence[Any]) -> None:
    """Schema ``schema`` made with ``ddl`` at ``version``, holding ``runs`` (rows in
    ``run_columns`` order), ``entries`` of run ``old-done`` and :data:`TASK`."""
    s = f'"{schema}".'
    marks = ", ".join(["%s"] * len(run_columns.split(",")))
    with psycopg.connect(URL, autocommit=True, connect_timeout=5) as conn, conn.transaction():
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for statement in ddl:
            conn.execute(statement.replace("{s}", s).encode())
        conn.execute(f"INSERT INTO {s}keel_meta VALUES ('schema_version', '{version}')")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {s}keel_runs ({run_columns}) VALUES ({marks})", runs)
            cur.executemany(
                f"INSERT INTO {s}keel_journal (run_id, seq, key, phase, kind, name, "
                "input_hash, data, created_at, latency_ms, schema_version) VALUES "
                f"({', '.join(['%s'] * 11)})",
                [entry_row("old-done", e, version) for e in entries])
        conn.execute(f"INSERT INTO {s}keel_tasks VALUES ({', '.join(['%s'] * 14)})", TASK_ROW)
