"""Opening the SQLite run store's file: checking it, creating its tables, upgrading old ones.

Layout (schema 6)
    ``keel_meta(key, value)`` holds ``schema_version``. ``runs`` holds one row per run, with
    JSON text in ``input``, ``output``, ``error``, ``usage`` and ``metadata``, and the lease
    (``lease_owner``, ``lease_expires_at``), ``deadline_at``, ``cancel_requested``, and the
    run's ``tenant`` and ``"user"`` (quoted: a keyword) and its ``conversation``.
    ``journal`` holds the entries; its rowid gives the append order and ``UNIQUE (run_id,
    key, phase)`` makes a step's intent and result each recordable once. That unique index also
    finds a run's entries for ``read_journal`` (which sorts them by rowid): one index fewer to
    update keeps ``append`` cheap. ``tasks`` holds the human tasks (approvals, escalations),
    with JSON text in ``data`` and ``resolution``.

    ``runs_runnable (status, updated_at, run_id, lease_owner, lease_expires_at)`` lets
    ``claim_runs`` walk the running runs oldest first and test their leases without reading
    the rows (it also serves ``prune_runs``); ``runs_by_lease_owner`` (partial: leased runs
    only) serves ``renew_leases``; ``runs_by_tenant (tenant, created_at, run_id)`` serves
    ``list_runs`` for one tenant; ``runs_by_conversation (conversation, created_at, run_id)``
    serves ``list_runs`` of one conversation and ``delete_conversation``; the
    ``tasks_by_*`` indexes serve ``list_tasks`` filtered by status, kind, queue or run,
    oldest first. ``outbox`` holds the run events (schema 5; see
    :mod:`keel.store._sqlite_outbox`). ``feedback`` and ``settings`` hold people's feedback on
    runs and versioned settings such as rollouts (schema 6; see :mod:`keel.store._records_sql`).

Versions
    A new file gets schema 1 and then every upgrade step, so a new file and an upgraded one
    have the same layout. An older file is upgraded in place when it is opened, in one
    transaction under the write lock (several processes opening it at once upgrade it once);
    its data is kept. Schema 1 is frozen below as it shipped: never edit a released step, add
    the next one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from keel.core import StoreError, StoreUnavailable, StoreVersionError, use_wal
from keel.store._base import SCHEMA_VERSION
from keel.store._records_sql import SQLITE_V5_TO_V6
from keel.store._sqlite_outbox import V4_TO_V5

#: How long a write waits for another connection's write to finish before failing.
BUSY_TIMEOUT_S = 5.0

MEMORY = ":memory:"
_SQLITE_HEADER = b"SQLite format 3\x00"

#: Schema 1, as keel wrote it (with ``schema_version`` '1' in ``keel_meta``).
_SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS keel_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id         TEXT PRIMARY KEY,
        agent          TEXT NOT NULL,
        status         TEXT NOT NULL,
        target         TEXT,
        input          TEXT NOT NULL,
        output         TEXT NOT NULL,
        error          TEXT,
        usage          TEXT NOT NULL,
        metadata       TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        schema_version INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_agent ON runs (agent, created_at, run_id)",
    """CREATE TABLE IF NOT EXISTS journal (
        id             INTEGER PRIMARY KEY,
        run_id         TEXT NOT NULL REFERENCES runs (run_id),
        seq            INTEGER NOT NULL,
        key            TEXT NOT NULL,
        phase          TEXT NOT NULL,
        kind           TEXT NOT NULL,
        name           TEXT NOT NULL,
        input_hash     TEXT NOT NULL,
        data           TEXT NOT NULL,
        created_at     REAL NOT NULL,
        latency_ms     REAL NOT NULL,
        schema_version INTEGER NOT NULL,
        UNIQUE (run_id, key, phase)
    )""",
    "INSERT INTO keel_meta (key, value) VALUES ('schema_version', '1')",
)

#: Schema 1 -> 2: leases, deadlines and cancel requests on runs; the human task table.
_V1_TO_V2: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN lease_owner TEXT",
    "ALTER TABLE runs ADD COLUMN lease_expires_at REAL",
    "ALTER TABLE runs ADD COLUMN deadline_at REAL",
    "ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    """CREATE INDEX runs_runnable
        ON runs (status, updated_at, run_id, lease_owner, lease_expires_at)""",
    """CREATE INDEX runs_by_lease_owner
        ON runs (lease_owner) WHERE lease_owner IS NOT NULL""",
    """CREATE TABLE tasks (
        task_id     TEXT PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs (run_id),
        kind        TEXT NOT NULL,
        step_key    TEXT NOT NULL,
        queue       TEXT NOT NULL,
        status      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        data        TEXT NOT NULL,
        due_at      REAL,
        claimed_by  TEXT,
        claimed_at  REAL,
        resolution  TEXT NOT NULL,
        resolved_by TEXT,
        resolved_at REAL
    )""",
    "CREATE INDEX tasks_by_created ON tasks (created_at, task_id)",
    "CREATE INDEX tasks_by_status ON tasks (status, created_at, task_id)",
    "CREATE INDEX tasks_by_kind ON tasks (kind, status, created_at, task_id)",
    "CREATE INDEX tasks_by_queue ON tasks (queue, status, created_at, task_id)",
    "CREATE INDEX tasks_by_run ON tasks (run_id, created_at, task_id)",
    "UPDATE keel_meta SET value = '2' WHERE key = 'schema_version'",
)

#: Schema 2 -> 3: each run's tenant and user (NULL for the runs stored before), and the index
#: that lists one tenant's runs newest first.
_V2_TO_V3: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN tenant TEXT",
    'ALTER TABLE runs ADD COLUMN "user" TEXT',
    "CREATE INDEX runs_by_tenant ON runs (tenant, created_at, run_id)",
    "UPDATE keel_meta SET value = '3' WHERE key = 'schema_version'",
)

#: Schema 3 -> 4: each run's conversation (NULL for the runs stored before), and the index
#: that lists one conversation's runs.
_V3_TO_V4: tuple[str, ...] = (
    "ALTER TABLE runs ADD COLUMN conversation TEXT",
    "CREATE INDEX runs_by_conversation ON runs (conversation, created_at, run_id)",
    "UPDATE keel_meta SET value = '4' WHERE key = 'schema_version'",
)

#: The step that takes a store from version ``v`` to ``v + 1`` (4 -> 5: the outbox table,
#: see :mod:`keel.store._sqlite_outbox`).
UPGRADES: dict[int, tuple[str, ...]] = {1: _V1_TO_V2, 2: _V2_TO_V3, 3: _V3_TO_V4,
                                        4: V4_TO_V5, 5: SQLITE_V5_TO_V6}

#: The tables each version must have (a file missing one is damaged, not re-created).
_TABLES: dict[int, frozenset[str]] = {
    1: frozenset({"runs", "journal"}),
    2: frozenset({"runs", "journal", "tasks"}),
    3: frozenset({"runs", "journal", "tasks"}),
    4: frozenset({"runs", "journal", "tasks"}),
    5: frozenset({"runs", "journal", "tasks", "outbox"}),
    6: frozenset({"runs", "journal", "tasks", "outbox", "feedback", "settings"}),
}


def error_name(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def looks_damaged(exc: sqlite3.Error) -> bool:
    """An error a damaged file gives (rather than a busy, full or read-only one)."""
    return (error_name(exc).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
            or type(exc) is sqlite3.DatabaseError)


def integrity(conn: sqlite3.Connection, label: str) -> StoreError | None:
    """``PRAGMA quick_check``: a StoreError naming the file if it is damaged, else None."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    else:
        problems = [str(row[0]) for row in rows if row[0] != "ok"]
    return damaged(label, problems) if problems else None


def damaged(label: str, problems: list[str], *, seen_by: str = "PRAGMA quick_check"
            ) -> StoreError:
    found = " ".join("; ".join(problems[:3]).split())
    return StoreError(
        f"the run store {label} is damaged ({seen_by}: {found}); what it answers "
        "cannot be trusted: restore it from a backup, or point keel at another file "
        "(`sqlite3 FILE .recover` may save what is left).")


def failure(label: str, exc: sqlite3.Error) -> StoreError | StoreUnavailable:
    """The error for an SQLite failure, saying what to do about it (a file locked past the
    busy timeout is a retryable :class:`StoreUnavailable`)."""
    name = error_name(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreUnavailable(
            f"the run store {label} stayed locked by another connection for more than "
            f"{BUSY_TIMEOUT_S:g}s; retry, or find the process holding a long write on it.")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StoreError(
            f"the run store {label} is damaged ({exc}); restore it from a backup, or point "
            "keel at another file.")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")):
        return StoreError(
            f"cannot use the run store {label} ({exc}); check that the file and its directory "
            "are writable, or point keel at another file.")
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"the disk holding the run store {label} is full; free some space.")
    return StoreError(f"the run store {label} failed: {exc} ({name or type(exc).__name__}).")


def open_db(path: Path | None, label: str, *, create: bool = True) -> sqlite3.Connection:
    """Connect to ``path`` (None: in memory), check what is there, and set it up. With
    ``create=False`` a missing, empty or table-less file is refused, never initialised."""
    if path is not None:
        _check_file(path, create=create)
    try:
        if path is None or create:
            conn = sqlite3.connect(MEMORY if path is None else str(path),
                                   timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        else:  # mode=rw: a file removed since the check is not created again
            conn = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True,
                                   timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
    except sqlite3.Error as exc:
        raise failure(label, exc) from exc
    try:
        _prepare(conn, label, create=create)
    except sqlite3.Error as exc:
        found = integrity(conn, label) if looks_damaged(exc) else None
        conn.close()
        raise (found or failure(label, exc)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_file(path: Path, *, create: bool = True) -> None:
    """Refuse, without touching it, a file that is not an SQLite database; make the dirs
    (with ``create=False`` refuse a missing or empty file instead).

    The file is never opened with a plain ``open()``: closing any descriptor of a file drops
    every POSIX lock this process holds on it, so a check made while another connection of
    this process has the database open would leave that connection unlocked (another process
    could then checkpoint and delete the write-ahead log under it). SQLite's own open shares
    one lock per file among a process's connections; the check reads the header through it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if not create:
            raise StoreError(f"there is no keel run store at {path}; pass --store (or set "
                             "KEEL_STORE) to the store the runs were written to.") from None
        size = 0
    except OSError as exc:
        raise StoreError(
            f"cannot read the run store {path} ({exc.strerror}); check its permissions or "
            "point keel at another file.") from None
    if path.is_dir():
        raise StoreError(
            f"{path} is a directory, not a keel run store; point keel at a file, e.g. "
            f"{path / 'runs.db'}.")
    head = b"" if size == 0 else _SQLITE_HEADER
    if size and not _is_sqlite(path):
        raise StoreError(
            f"{path} is not a keel run store (not an SQLite database); point keel at another "
            "file - a new path is created and initialised.")
    if not create:
        if not head:
            raise no_store(str(path), "an empty file")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {path.parent} for the run store ({exc.strerror}); "
            "create it or point keel at another file.") from None


def _is_sqlite(path: Path) -> bool:
    """Whether ``path`` (not empty) holds an SQLite database, read by SQLite, read-only."""
    try:
        probe = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the run store {path} ({exc}); check its permissions "
                         "or point keel at another file.") from None
    try:
        probe.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            return False
        raise StoreError(f"cannot read the run store {path} ({exc}); try again, or check "
                         "the file.") from None
    finally:
        probe.close()
    return True


def no_store(label: str, what: str) -> StoreError:
    """A reading command pointed at a file that holds no keel store: it is left as it was."""
    return StoreError(
        f"there is no keel run store in {label} ({what}); nothing was written to it. Pass "
        "--store (or set KEEL_STORE) to the store the runs were written to; only commands "
        "that write (keel run, keel worker) create a store.")


def _prepare(conn: sqlite3.Connection, label: str, *, create: bool = True) -> None:
    """Check the database is a keel store this keel can read, initialise an empty one (unless
    ``create`` is false) or upgrade an old one, then switch on WAL. Nothing is written to a
    database that fails the check."""
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    if conn.execute("PRAGMA foreign_keys").fetchone() != (1,):
        raise StoreError(
            "this Python's SQLite library has no foreign-key support, which the keel run "
            "store needs; use a Python built with a standard SQLite.")
    conn.execute("BEGIN")  # one read snapshot: another opener may be upgrading the file
    try:
        version = _inspect(conn, label)
    finally:
        conn.execute("COMMIT")
    if version is None and not create:
        raise no_store(label, "an SQLite database with no tables")
    if version != SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _create_or_upgrade(conn, label)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    use_wal(conn, timeout=BUSY_TIMEOUT_S)


def _create_or_upgrade(conn: sqlite3.Connection, label: str) -> None:
    """Inside the write transaction: look again (another connection may have done it while
    this one waited for the lock), then create schema 1 if empty and apply each upgrade."""
    version = _inspect(conn, label)
    if version is None:
        for statement in _SCHEMA_V1:
            conn.execute(statement)
        version = 1
    while version < SCHEMA_VERSION:
        for statement in UPGRADES[version]:
            conn.execute(statement)
        version += 1


def _inspect(conn: sqlite3.Connection, label: str) -> int | None:
    """The store's schema version, or None for an empty database. Raises for anything that
    is not a keel store this keel can read."""
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if not names:
        return None
    if "keel_meta" not in names:
        shown = ", ".join(sorted(n for n in names if not n.startswith("sqlite_"))[:5])
        raise StoreVersionError(
            f"{label} is not a keel run store (an SQLite database with other tables: "
            f"{shown}); point keel at another file - a new path is created and initialised.")
    row = conn.execute("SELECT value FROM keel_meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise StoreVersionError(
            f"{label} is not a keel run store (its keel_meta table has no valid "
            "schema_version); point keel at another file.")
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{label} was written by a newer keel (schema {version}, this keel reads up to "
            f"{SCHEMA_VERSION}); upgrade keel-agents (pip install -U keel-agents).")
    missing = sorted(_TABLES[version] - names)
    if missing:
        raise StoreError(
            f"the run store {label} is damaged: its {' and '.join(missing)} table is missing; "
            "restore it from a backup, or point keel at another file.")
    return version
