"""The SQLite run store's outbox (schema 5): the table, and the statements that write and
drain it. Every function runs inside the caller's transaction (or is one statement).

``outbox.position`` is the rowid: positions grow with each insert (one a prune emptied the
table of may be used again, harmless: relays read every unpublished row, ``after`` is a
hint); ``event_id`` is unique, so an event written again
(the same write executed twice) is ignored. ``agent`` and ``tenant`` are copied from the
run's row by the INSERT itself. A row is unpublished while ``published_at`` is NULL;
``claimed_until`` keeps a row a relay read from other relays until it runs out.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from keel.store._outbox import Event

#: Schema 4 -> 5: the outbox table.
V4_TO_V5: tuple[str, ...] = (
    """CREATE TABLE outbox (
        position      INTEGER PRIMARY KEY,
        event_id      TEXT NOT NULL UNIQUE,
        type          TEXT NOT NULL,
        run_id        TEXT,
        tenant        TEXT,
        agent         TEXT,
        data          TEXT NOT NULL,
        time          REAL NOT NULL,
        published_at  REAL,
        claimed_until REAL NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL",
    """CREATE INDEX outbox_published ON outbox (published_at)
        WHERE published_at IS NOT NULL""",
    "UPDATE keel_meta SET value = '5' WHERE key = 'schema_version'",
)

_INSERT = (
    "INSERT INTO outbox (event_id, type, run_id, tenant, agent, data, time) "
    "SELECT ?, ?, r.run_id, r.tenant, r.agent, ?, ? FROM runs r WHERE r.run_id = ? "
    "ON CONFLICT (event_id) DO NOTHING")
_COLUMNS = "position, event_id, type, run_id, tenant, agent, data, time"


def data_text(event: Event) -> str:
    return json.dumps(event.data, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str)


def insert(db: sqlite3.Connection, events: Sequence[Event | None]) -> None:
    """Write ``events`` (None: nothing) inside the caller's transaction."""
    rows = [(e.id, e.type, data_text(e), e.time, e.run_id) for e in events if e is not None]
    if len(rows) == 1:
        db.execute(_INSERT, rows[0])
    elif rows:
        db.executemany(_INSERT, rows)


def read(db: sqlite3.Connection, after: int, limit: int, now: float,
         claim_s: float) -> list[tuple[int, Event]]:
    """Inside a write transaction: claim and return the next unpublished rows."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE published_at IS NULL AND position > ? "
        "AND claimed_until <= ? ORDER BY position LIMIT ?", (after, now, limit)).fetchall()
    if rows:
        db.executemany("UPDATE outbox SET claimed_until = ? WHERE position = ?",
                       [(now + claim_s, row[0]) for row in rows])
    return [(row[0], Event(id=row[1], type=row[2], run_id=row[3], tenant=row[4],
                           agent=row[5], data=json.loads(row[6]), time=row[7]))
            for row in rows]


def mark(db: sqlite3.Connection, positions: list[int], now: float) -> int:
    marked = 0
    for start in range(0, len(positions), 500):
        chunk = positions[start:start + 500]
        marked += db.execute(
            f"UPDATE outbox SET published_at = ? WHERE published_at IS NULL AND position IN "
            f"({', '.join('?' * len(chunk))})", (now, *chunk)).rowcount
    return marked


def prune(db: sqlite3.Connection, before: float) -> int:
    deleted: int = db.execute("DELETE FROM outbox WHERE published_at IS NOT NULL "
                              "AND published_at < ?", (before,)).rowcount
    return deleted


def forget_runs(db: sqlite3.Connection, doomed: str, params: Sequence[object]) -> None:
    """Delete the outbox rows of the runs ``doomed`` (a condition on ``runs``) picks."""
    db.execute(f"DELETE FROM outbox WHERE run_id IN (SELECT run_id FROM runs WHERE {doomed})",
               params)
