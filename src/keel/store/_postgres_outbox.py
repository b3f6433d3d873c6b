"""The Postgres run store's outbox (schema 5): the table, and the statements that write and
drain it.

``keel_outbox.position`` is an identity column: positions only grow, but a row may commit
after one with a higher position, so relays read every unpublished row (``after`` is a hint,
not a cursor). ``event_id`` is unique: an event written again is ignored. ``agent`` and
``tenant`` are copied from the run's row by the INSERT. ``read_outbox`` claims the rows it
returns (``claimed_until``) with ``FOR UPDATE SKIP LOCKED``: two relays at once never read
the same unpublished row while its claim runs; a relay that dies leaves its claim to run
out, and the rows are read again (at least once).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keel.store._outbox import Event
from keel.store._postgres_connect import Conn

NOW = "extract(epoch FROM clock_timestamp())::float8"

TABLE = """CREATE TABLE {s}keel_outbox (
        position      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id      text NOT NULL UNIQUE,
        type          text NOT NULL,
        run_id        text,
        tenant        text,
        agent         text,
        data          text NOT NULL,
        "time"        double precision NOT NULL,
        published_at  double precision,
        claimed_until double precision NOT NULL DEFAULT 0
    )"""
INDEXES = (
    """CREATE INDEX keel_outbox_unpublished ON {s}keel_outbox (position)
        WHERE published_at IS NULL""",
    """CREATE INDEX keel_outbox_published ON {s}keel_outbox (published_at)
        WHERE published_at IS NOT NULL""",
)
#: Schema 4 -> 5: the outbox table.
V4_TO_V5: tuple[str, ...] = (
    TABLE, *INDEXES, "UPDATE {s}keel_meta SET value = '5' WHERE key = 'schema_version'")

_COLUMNS = 'position, event_id, type, run_id, tenant, agent, data, "time"'


@dataclass(frozen=True, slots=True)
class OutboxStatements:
    insert: str
    read: str
    mark: str
    prune: str
    forget_conversation: str


@functools.lru_cache(maxsize=64)
def statements(s: str) -> OutboxStatements:
    """The statements for the schema prefix ``s`` (quoted schema and a dot)."""
    return OutboxStatements(
        insert=(
            'INSERT INTO {s}keel_outbox (event_id, type, run_id, tenant, agent, data, "time") '
            "SELECT %s, %s, r.run_id, r.tenant, r.agent, %s, %s FROM {s}keel_runs r "
            "WHERE r.run_id = %s ON CONFLICT (event_id) DO NOTHING").replace("{s}", s),
        read=(
            "WITH c AS (SELECT position FROM {s}keel_outbox WHERE published_at IS NULL "
            f"AND position > %(after)s AND claimed_until <= {NOW} ORDER BY position "
            "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            f"UPDATE {{s}}keel_outbox AS o SET claimed_until = {NOW} + %(claim)s FROM c "
            "WHERE o.position = c.position RETURNING "
            + ", ".join(f"o.{c.strip()}" for c in _COLUMNS.split(","))).replace("{s}", s),
        mark=(f"UPDATE {{s}}keel_outbox SET published_at = {NOW} WHERE published_at IS NULL "
              "AND position = ANY(%s::bigint[])").replace("{s}", s),
        prune=("DELETE FROM {s}keel_outbox WHERE published_at IS NOT NULL "
               "AND published_at < %s").replace("{s}", s),
        forget_conversation=(
            "DELETE FROM {s}keel_outbox WHERE run_id IN (SELECT run_id FROM {s}keel_runs "
            "WHERE conversation = %s AND tenant IS NOT DISTINCT FROM %s::text)"
        ).replace("{s}", s),
    )


@functools.lru_cache(maxsize=256)
def append_with_events(append_sql: str, s: str) -> str:
    """One statement: ``append_sql`` (an INSERT of journal entries, its parameters first)
    and, if it stored them, the events (four arrays: ids, types, data, times, then the run
    id); it answers how many entries were stored. A repeated entry aborts all of it."""
    return (
        f"WITH j AS ({append_sql} RETURNING run_id), "
        f'o AS (INSERT INTO {s}keel_outbox (event_id, type, run_id, tenant, agent, data, "time") '
        "SELECT e.id, e.type, r.run_id, r.tenant, r.agent, e.data, e.t FROM "
        "unnest(%s::text[], %s::text[], %s::text[], %s::float8[]) WITH ORDINALITY "
        f"AS e (id, type, data, t, n) JOIN {s}keel_runs r ON r.run_id = %s "
        "WHERE EXISTS (SELECT 1 FROM j) ORDER BY e.n ON CONFLICT (event_id) DO NOTHING) "
        "SELECT count(*) FROM j")


def event_arrays(events: Sequence[Event], run_id: str) -> tuple[Any, ...]:
    """The parameters :func:`append_with_events` takes after the append's own."""
    return ([e.id for e in events], [e.type for e in events],
            [_data(e) for e in events], [e.time for e in events], run_id)


def _data(e: Event) -> str:
    return json.dumps(e.data, separators=(",", ":"), allow_nan=False, default=str)


async def insert(conn: Conn, s: str, events: Sequence[Event | None]) -> None:
    """Write ``events`` (None: nothing) on ``conn``, inside the caller's transaction."""
    rows = [(e.id, e.type, _data(e), e.time, e.run_id) for e in events if e is not None]
    sql = statements(s).insert
    if len(rows) == 1:
        await conn.execute(sql, rows[0])
    elif rows:
        async with conn.cursor() as cur:
            await cur.executemany(sql, rows)


def event(row: tuple[Any, ...]) -> tuple[int, Event]:
    return int(row[0]), Event(id=row[1], type=row[2], run_id=row[3], tenant=row[4],
                              agent=row[5], data=json.loads(row[6]), time=row[7])
