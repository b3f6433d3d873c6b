"""One way to put an SQLite file in WAL mode when other processes may be opening it too."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite3 is imported by the stores that use it, not with keel
    import sqlite3

#: how long to keep asking when a concurrent opener holds the lock the mode change needs
_WAL_WAIT_S = 10.0


def use_wal(conn: sqlite3.Connection, *, timeout: float = _WAL_WAIT_S) -> None:
    """Set a busy timeout and switch ``conn``'s database to write-ahead logging.

    Changing the journal mode needs the database to itself for a moment, and SQLite can answer
    "database is locked" at once (without waiting in its busy handler) while another process is
    creating or recovering the same file. So the change is retried until ``timeout``; a file
    already in WAL mode returns at the first try. In-memory databases are left alone.
    """
    import sqlite3

    conn.execute(f"PRAGMA busy_timeout = {max(0, int(timeout * 1000))}")
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
