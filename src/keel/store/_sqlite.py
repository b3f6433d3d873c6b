"""The SQLite run store: one file, durable, shared safely by several processes.

Durability
    The file is in WAL mode with ``synchronous=NORMAL``. When ``append`` (or any other write)
    returns, its transaction is committed to the write-ahead log, so it survives the process
    crashing or being killed (an exception, ``SIGKILL``, the OOM killer): the operating system
    still holds the written pages and writes them out. The log is flushed to disk (fsync) at
    checkpoints, not at every commit, so only an OS crash or a power loss can lose the last
    transactions - and even then the file stays consistent: a batch is there whole or not at
    all. This trade buys appends of tens of microseconds instead of a disk flush each.

Concurrency
    Several stores - threads or processes - may open the same file. A write takes the write
    lock up front (``BEGIN IMMEDIATE``) and waits for other writers up to the busy timeout
    (:data:`BUSY_TIMEOUT_S`); readers never wait for writers. Calls run synchronously on the
    calling thread: an append costs tens of microseconds, less than a hop to a worker thread
    would. The price is that a wait - a megabyte-sized payload (about a millisecond), or
    another process's write holding the lock - holds the event loop for that long.

Files keel does not recognise
    The file is opened lazily, on the first call (or on ``async with``), and checked before
    anything is written to it. A file that is not SQLite, an SQLite database of some other
    program, one written by a newer keel, or a damaged one gives a :class:`keel.StoreError`
    (:class:`keel.StoreVersionError` for the version cases) that names the fix, and is left
    untouched. A new or empty file is initialised; missing parent directories are created.

Layout (schema 1)
    ``keel_meta(key, value)`` holds ``schema_version``. ``runs`` holds one row per run, with
    JSON text in ``input``, ``output``, ``error``, ``usage`` and ``metadata``. ``journal``
    holds the entries; its rowid gives the append order and ``UNIQUE (run_id, key, phase)``
    makes a step's intent and result each recordable once. That unique index also finds a
    run's entries for ``read_journal`` (which sorts them by rowid): one index fewer to update
    keeps ``append`` cheap.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.core import RunNotFound, StoreError, StoreVersionError
from keel.store._base import (
    SCHEMA_VERSION,
    JournalEntry,
    Phase,
    RunFilter,
    RunRecord,
    RunStatus,
    RunStore,
)

__all__ = ["BUSY_TIMEOUT_S", "SQLiteStore"]

#: How long a write waits for another connection's write to finish before failing.
BUSY_TIMEOUT_S = 5.0

_SQLITE_HEADER = b"SQLite format 3\x00"
_MEMORY = ":memory:"

_SCHEMA: tuple[str, ...] = (
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
)

_RUN_COLUMNS = (
    "run_id, agent, status, target, input, output, error, usage, metadata, created_at, "
    "updated_at, schema_version"
)
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE_RUN = (
    "UPDATE runs SET agent = ?, status = ?, target = ?, input = ?, output = ?, error = ?, "
    "usage = ?, metadata = ?, created_at = ?, updated_at = ?, schema_version = ? "
    "WHERE run_id = ?"
)
_SELECT_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"
_ENTRY_COLUMNS = (
    "seq, key, phase, kind, name, input_hash, data, created_at, latency_ms, schema_version"
)
_INSERT_ENTRY = (
    f"INSERT INTO journal (run_id, {_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_JOURNAL = f"SELECT {_ENTRY_COLUMNS} FROM journal WHERE run_id = ? ORDER BY id"
_RUN_EXISTS = "SELECT 1 FROM runs WHERE run_id = ?"
#: Batches up to this size go in as one multi-row INSERT; larger ones as a transaction.
_ROWS_PER_STATEMENT = 32

_RunRow = tuple[Any, ...]
_EntryRow = tuple[Any, ...]


def _not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run {run_id!r} in this store; `keel runs list` shows the runs.")


class SQLiteStore(RunStore):
    """Runs and journals in one SQLite file (``":memory:"`` for a private in-memory one).

    Use it as ``async with SQLiteStore(path) as store:`` or call :meth:`close` when done. The
    file is opened on the first call; ``async with`` opens it on entry, so a bad file is
    reported there.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = os.fspath(path)
        self._in_memory = raw == _MEMORY
        self._path = Path(raw) if self._in_memory else Path(os.path.abspath(
            os.path.expanduser(raw)))
        self._label = "the in-memory SQLite run store" if self._in_memory else str(self._path)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The database file, made absolute when the store was created."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"

    async def __aenter__(self) -> SQLiteStore:
        with self._lock:
            self._db()
        return self

    # ---------------------------------------------------------------------------- the seam

    async def create_run(self, record: RunRecord) -> None:
        row = _run_row(record)
        with self._lock:
            db = self._db()
            try:
                db.execute(_INSERT_RUN, row)
            except sqlite3.IntegrityError as exc:
                if _error_name(exc) in ("SQLITE_CONSTRAINT_PRIMARYKEY",
                                        "SQLITE_CONSTRAINT_UNIQUE"):
                    raise StoreError(
                        f"a run with id {record.run_id!r} already exists; give the new run "
                        "another id, or use update_run to change this one.") from None
                raise self._failure(exc) from exc
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    async def append(self, run_id: str, entries: Sequence[JournalEntry]) -> None:
        rows = [_entry_row(run_id, entry) for entry in entries]
        with self._lock:
            db = self._db()
            try:
                if not rows:
                    if db.execute(_RUN_EXISTS, (run_id,)).fetchone() is None:
                        raise _not_found(run_id)
                elif len(rows) == 1:  # one statement is atomic by itself
                    db.execute(_INSERT_ENTRY, rows[0])
                elif len(rows) <= _ROWS_PER_STATEMENT:
                    db.execute(_insert_sql(len(rows)), [v for row in rows for v in row])
                else:
                    _insert_batch(db, rows)
            except sqlite3.IntegrityError as exc:
                raise self._append_conflict(db, exc, run_id, entries) from None
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    async def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            db = self._db()
            try:
                row = db.execute(_SELECT_RUN, (run_id,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        if row is None:
            raise _not_found(run_id)
        return self._record(row)

    async def read_journal(self, run_id: str) -> list[JournalEntry]:
        with self._lock:
            db = self._db()
            try:
                rows = db.execute(_SELECT_JOURNAL, (run_id,)).fetchall()
                # Runs are never deleted, so an empty answer needs just this one more look.
                if not rows and db.execute(_RUN_EXISTS, (run_id,)).fetchone() is None:
                    raise _not_found(run_id)
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        return [self._entry(run_id, row) for row in rows]

    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]:
        f = filt or RunFilter()
        if f.limit < 0 or f.offset < 0:
            raise StoreError(
                f"RunFilter limit and offset must be 0 or more (got limit={f.limit}, "
                f"offset={f.offset}).")
        where: list[str] = []
        params: list[Any] = []
        if f.status is not None:
            where.append("status = ?")
            params.append(f.status)
        if f.agent is not None:
            where.append("agent = ?")
            params.append(f.agent)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        params += [f.limit, f.offset]
        with self._lock:
            db = self._db()
            try:
                rows = db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        return [self._record(row) for row in rows]

    async def update_run(self, record: RunRecord) -> None:
        row = _run_row(record)
        with self._lock:
            db = self._db()
            try:
                changed = db.execute(_UPDATE_RUN, (*row[1:], row[0])).rowcount
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
        if changed == 0:
            raise _not_found(record.run_id)

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry]) -> None:
        """One transaction: the entries, then the record."""
        if not entries:
            await self.update_run(record)
            return
        rows = [_entry_row(record.run_id, entry) for entry in entries]
        run_row = _run_row(record)
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(_INSERT_ENTRY, rows)
                    changed = db.execute(_UPDATE_RUN, (*run_row[1:], run_row[0])).rowcount
                    if changed == 0:
                        raise _not_found(record.run_id)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError as exc:
                raise self._append_conflict(db, exc, record.run_id, entries) from None
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # ------------------------------------------------------------------------- internals

    def _db(self) -> sqlite3.Connection:
        """The open connection; opens and checks the file on first use. Hold ``_lock``."""
        conn = self._conn
        if conn is None:
            if self._closed:
                raise StoreError(
                    f"the run store {self._label} was closed; open a new one with "
                    "open_store(...) or SQLiteStore(...).")
            conn = self._conn = _open(None if self._in_memory else self._path, self._label)
        return conn

    def _failure(self, exc: sqlite3.Error) -> StoreError:
        return _failure(self._label, exc)

    def _append_conflict(self, db: sqlite3.Connection, exc: sqlite3.IntegrityError,
                         run_id: str, entries: Sequence[JournalEntry]) -> StoreError:
        """The error for an append that broke a constraint (nothing of it was stored)."""
        name = _error_name(exc)
        if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return _not_found(run_id)
        if name not in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
            return self._failure(exc)
        seen: set[tuple[str, str]] = set()
        clash: tuple[str, str] | None = None
        for entry in entries:
            pair = (entry.key, entry.phase)
            if pair in seen:
                clash = pair
                break
            seen.add(pair)
        if clash is None:
            try:
                stored = set(db.execute("SELECT key, phase FROM journal WHERE run_id = ?",
                                        (run_id,)).fetchall())
            except sqlite3.Error:
                stored = set()
            clash = next((p for p in ((e.key, e.phase) for e in entries) if p in stored), None)
        what = f"the {clash[1]} entry for step {clash[0]!r}" if clash else "one of these entries"
        return StoreError(
            f"run {run_id!r} already has {what}: a journal holds one intent and one result per "
            "step, so nothing of this batch was stored. Give each step a distinct key.")

    def _record(self, row: _RunRow) -> RunRecord:
        run_id = row[0]
        error = self._loads(run_id, "error", row[6]) if row[6] is not None else None
        status: RunStatus = row[2]
        return RunRecord(
            run_id=run_id, agent=row[1], status=status, target=row[3],
            input=self._loads(run_id, "input", row[4]),
            output=self._loads(run_id, "output", row[5]),
            error=error,
            usage=self._loads(run_id, "usage", row[7]),
            metadata=self._loads(run_id, "metadata", row[8]),
            created_at=row[9], updated_at=row[10], schema_version=row[11])

    def _entry(self, run_id: str, row: _EntryRow) -> JournalEntry:
        phase: Phase = row[2]
        try:
            data = json.loads(row[6])
        except (TypeError, ValueError):
            data = self._loads(run_id, f"journal entry for step {row[1]!r} ({phase})", row[6])
        return JournalEntry(
            seq=row[0], key=row[1], phase=phase, kind=row[3], name=row[4], input_hash=row[5],
            data=data, created_at=row[7], latency_ms=row[8], schema_version=row[9])

    def _loads(self, run_id: str, what: str, text: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"run {run_id!r} in {self._label} has unreadable JSON in its {what} ({exc}); "
                "the file was changed outside keel or is damaged - restore it from a backup."
            ) from None


# ------------------------------------------------------------------------------ helpers


@functools.cache
def _insert_sql(n: int) -> str:
    """One INSERT of ``n`` entries: cheaper than a transaction of ``n`` INSERTs."""
    return _INSERT_ENTRY + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


def _insert_batch(db: sqlite3.Connection, rows: list[_EntryRow]) -> None:
    """Insert many entries in one transaction: all of them or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(_INSERT_ENTRY, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode
_ENCODE_ASCII = json.JSONEncoder(ensure_ascii=True, default=str).encode


def _dumps(value: Any) -> str:
    """JSON text for a value; raises TypeError/ValueError for what JSON cannot hold."""
    text = _ENCODE(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escape it, json.loads restores it
            text = _ENCODE_ASCII(value)
    return text


def _not_json(what: str, exc: Exception) -> StoreError:
    return StoreError(f"cannot store {what}: it is not JSON-able ({exc}).")


def _run_row(r: RunRecord) -> _RunRow:
    field = "input"
    try:
        input_ = _dumps(r.input)
        field = "output"
        output = _dumps(r.output)
        field = "error"
        error = None if r.error is None else _dumps(r.error)
        field = "usage"
        usage = _dumps(r.usage)
        field = "metadata"
        metadata = _dumps(r.metadata)
    except (TypeError, ValueError) as exc:
        raise _not_json(f"the {field} of run {r.run_id!r}", exc) from None
    return (r.run_id, r.agent, r.status, r.target, input_, output, error, usage, metadata,
            r.created_at, r.updated_at, r.schema_version)


def _entry_row(run_id: str, e: JournalEntry) -> _EntryRow:
    try:
        data = _dumps(e.data)
    except (TypeError, ValueError) as exc:
        raise _not_json(f"the {e.phase} entry for step {e.key!r} of run {run_id!r}",
                        exc) from None
    return (run_id, e.seq, e.key, e.phase, e.kind, e.name, e.input_hash, data, e.created_at,
            e.latency_ms, e.schema_version)


def _error_name(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def _failure(label: str, exc: sqlite3.Error) -> StoreError:
    """A StoreError for an SQLite failure, saying what to do about it."""
    name = _error_name(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            f"the run store {label} stayed locked by another connection for more than "
            f"{BUSY_TIMEOUT_S:g}s; retry, or find the process holding a long write on it.",
            retryable=True)
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


# ------------------------------------------------------------------------------ opening


def _open(path: Path | None, label: str) -> sqlite3.Connection:
    """Connect to ``path`` (None: in memory), check what is there, and set it up."""
    if path is not None:
        _check_file(path)
    try:
        conn = sqlite3.connect(_MEMORY if path is None else str(path), timeout=BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _failure(label, exc) from exc
    try:
        _prepare(conn, label)
    except sqlite3.Error as exc:
        conn.close()
        raise _failure(label, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_file(path: Path) -> None:
    """Refuse, without touching it, a file that is not an SQLite database; make the dirs."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        head = b""
    except IsADirectoryError:
        raise StoreError(
            f"{path} is a directory, not a keel run store; point keel at a file, e.g. "
            f"{path / 'runs.db'}.") from None
    except OSError as exc:
        raise StoreError(
            f"cannot read the run store {path} ({exc.strerror}); check its permissions or "
            "point keel at another file.") from None
    if head and head != _SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a keel run store (not an SQLite database); point keel at another "
            "file - a new path is created and initialised.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory {path.parent} for the run store ({exc.strerror}); "
            "create it or point keel at another file.") from None


def _prepare(conn: sqlite3.Connection, label: str) -> None:
    """Check the database is a keel store this keel can read (initialising an empty one),
    then switch on WAL. Nothing is written to a database that fails the check."""
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    if conn.execute("PRAGMA foreign_keys").fetchone() != (1,):
        raise StoreError(
            "this Python's SQLite library has no foreign-key support, which the keel run "
            "store needs; use a Python built with a standard SQLite.")
    if _inspect(conn, label) is None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _inspect(conn, label) is None:  # nobody initialised it while we waited
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO keel_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    conn.execute("PRAGMA journal_mode = WAL")


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
    missing = sorted({"runs", "journal"} - names)
    if missing:
        raise StoreError(
            f"the run store {label} is damaged: its {' and '.join(missing)} table is missing; "
            "restore it from a backup, or point keel at another file.")
    return version
