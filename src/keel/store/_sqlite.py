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
    (:data:`BUSY_TIMEOUT_S`); readers never wait for writers. Every read-check-write (lease
    fencing, ``acquire_lease``, ``claim_runs``, ``claim_task``, ``resolve_task``,
    ``suspend_run`` ...) runs inside one such transaction, so two processes can never both
    win a lease, a run or a task. A write that is one statement is atomic by itself and
    skips the explicit transaction: an ``append`` of one entry (with ``lease=``, the INSERT
    itself checks the holder), an unfenced batch of up to 32, an unfenced ``update_run``.
    Calls run synchronously on the calling thread: an append costs tens of microseconds,
    less than a hop to a worker thread would. The price is that a wait - a megabyte-sized
    payload (about a millisecond), or another process's write holding the lock - holds the
    event loop for that long.

Outbox
    With ``outbox=True`` a write that is a run event (see :mod:`keel.store._outbox`) also
    inserts the event into the ``outbox`` table in its own transaction: an ``append`` of a
    tool result then takes a ``BEGIN IMMEDIATE`` transaction instead of one statement (about
    60-150 us more per tool result on this machine, see bench/outbox.py). With it off
    nothing of this runs.

Leases
    Lease times are ``time.time()`` of the writing process, so the machines sharing a file
    (one machine, for SQLite) share a clock. A fenced write (``lease=``) checks the holder,
    not the expiry: an expired lease that nobody took over still lets its owner write.

Files keel does not recognise
    The file is opened lazily, on the first call (or on ``async with``), and checked before
    anything is written to it. A file that is not SQLite, an SQLite database of some other
    program, one written by a newer keel, or a damaged one gives a :class:`keel.StoreError`
    (:class:`keel.StoreVersionError` for the version cases) that names the fix, and is left
    untouched. A new or empty file is initialised and an older keel's file upgraded in place
    (see :mod:`keel.store._sqlite_schema` for the layout); missing parent directories are
    created. With ``create=False`` (what keel's reading commands use) nothing is created: a
    missing, empty or table-less file is refused with a :class:`keel.StoreError` and left as
    it was.

Damage
    A file damaged past its first pages opens and may answer some reads. When a read looks
    impossible (a run that was listed is not found, a run has no journal, SQLite reports an
    error), :meth:`SQLiteStore.check` runs ``PRAGMA quick_check`` and a damaged file is
    reported as such, naming it, instead of the misleading answer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keel.core import ConfigError, StoreError, StoreUnavailable
from keel.store import _sqlite_outbox as outbox_sql
from keel.store import _sqlite_rows as q
from keel.store import _stats_sql as stats_sql
from keel.store._base import (
    CANCEL_REQUEST,
    TERMINAL_STATUSES,
    HumanTask,
    JournalEntry,
    RunFilter,
    RunRecord,
    RunStore,
    TaskFilter,
    cancel_request,
    check_conversation,
    check_status,
    check_tenant,
    who_acted,
)
from keel.store._messages import (
    already_stored,
    check_names,
    check_seconds,
    claimed_by_other,
    close_of_other_run,
    entry_conflict,
    lease_lost,
    leased,
    not_found,
    repeated_in_batch,
    run_exists,
    run_not_waiting,
    task_conflict_if_resolved,
    task_not_found,
)
from keel.store._outbox import (
    Event,
    check_before,
    check_positions,
    check_read,
    run_started,
    run_status,
    task_decided,
    task_requested,
    tool_calls,
)
from keel.store._sqlite_records import SQLiteRecords
from keel.store._sqlite_schema import (
    BUSY_TIMEOUT_S,
    MEMORY,
    damaged,
    error_name,
    failure,
    integrity,
    looks_damaged,
    open_db,
)
from keel.store._stats import StatsQuery, StatsResult

__all__ = ["BUSY_TIMEOUT_S", "SQLiteStore"]

_UNIQUE = ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


class SQLiteStore(SQLiteRecords, RunStore):
    """Runs, journals and human tasks in one SQLite file (``":memory:"`` for a private
    in-memory one).

    Use it as ``async with SQLiteStore(path) as store:`` or call :meth:`close` when done. The
    file is opened on the first call; ``async with`` opens it on entry, so a bad file is
    reported there. With ``create=False`` a missing, empty or table-less file is refused
    instead of initialised (for code that only reads).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 outbox: bool = False) -> None:
        raw = os.fspath(path)
        self._create = create
        self._outbox = bool(outbox)
        self._checked = False  # quick_check passed (see _miss)
        self._in_memory = raw == MEMORY
        self._path = Path(raw) if self._in_memory else Path(os.path.abspath(
            os.path.expanduser(raw)))
        self._label = "the in-memory SQLite run store" if self._in_memory else str(self._path)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def outbox(self) -> bool:
        return self._outbox

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

    # ------------------------------------------------------------------------------ runs

    async def create_run(self, record: RunRecord) -> None:
        row = q.run_row(record)
        with self._writing() if self._outbox else self._reading() as db:
            try:
                db.execute(q.INSERT_RUN, row)
            except sqlite3.IntegrityError as exc:
                if error_name(exc) in _UNIQUE:
                    raise run_exists(record.run_id) from None
                raise
            if self._outbox:
                outbox_sql.insert(db, [run_started(record)])

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        rows = [q.entry_row(run_id, entry) for entry in entries]
        events = tool_calls(run_id, entries) if self._outbox else None
        if events:  # the entries and their events in one transaction
            with self._writing() as db:
                if lease is not None:  # (unfenced, the entries' foreign key finds the run)
                    _fence(db, run_id, lease)
                self._add_entries(db, run_id, entries, rows)
                outbox_sql.insert(db, events)
            return
        if lease is not None:
            self._append_fenced(run_id, entries, rows, lease)
            return
        # The hot path: no context managers, and one statement where one will do.
        with self._lock:
            db = self._db()
            try:
                if not rows:
                    if db.execute(q.RUN_EXISTS, (run_id,)).fetchone() is None:
                        raise not_found(run_id)
                elif len(rows) == 1:  # one statement is atomic by itself
                    db.execute(q.INSERT_ENTRY, rows[0])
                elif len(rows) <= q.ROWS_PER_STATEMENT:
                    db.execute(q.insert_entries_sql(len(rows)), [v for r in rows for v in r])
                else:
                    _insert_batch(db, rows)
            except sqlite3.IntegrityError as exc:
                raise self._append_conflict(db, exc, run_id, entries) from None
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        tenant = check_tenant(tenant)
        sql, params = ((q.SELECT_RUN, (run_id,)) if tenant is None
                       else (q.SELECT_RUN_OF, (run_id, tenant)))
        with self._reading() as db:
            row = db.execute(sql, params).fetchone()
            if row is None:
                raise self._miss(db, "runs", run_id, tenant) or not_found(run_id)
        return q.record_from_row(row, self._label)

    async def read_journal(self, run_id: str, *,
                           tenant: str | None = None) -> list[JournalEntry]:
        tenant = check_tenant(tenant)
        if tenant is not None:
            return self._read_journal_of(run_id, tenant)
        with self._reading() as db:
            rows = db.execute(q.SELECT_JOURNAL, (run_id,)).fetchall()
            # Only an empty answer needs this one more look (runs go with their journals).
            if not rows:
                damage = self._miss(db, "journal", run_id)
                if damage is not None:
                    raise damage
                if db.execute(q.RUN_EXISTS, (run_id,)).fetchone() is None:
                    raise not_found(run_id)
        return [q.entry_from_row(row, run_id, self._label) for row in rows]

    def _read_journal_of(self, run_id: str, tenant: str) -> list[JournalEntry]:
        """``read_journal`` of a run that must be ``tenant``'s: one query tells a run that is
        not the tenant's (no row) from an empty journal (one row of NULLs)."""
        with self._reading() as db:
            rows = db.execute(q.SELECT_JOURNAL_OF, (run_id, tenant)).fetchall()
            if not rows:
                raise self._miss(db, "runs", run_id, tenant) or not_found(run_id)
            if rows[0][0] is None:  # the tenant's run, with an empty journal
                damage = self._miss(db, "journal", run_id)
                if damage is not None:
                    raise damage
                return []
        return [q.entry_from_row(row, run_id, self._label) for row in rows]

    async def check(self) -> None:
        """Check the file with ``PRAGMA quick_check``; a damaged one raises a
        :class:`keel.StoreError` naming it and what is wrong."""
        with self._reading() as db:
            damage = integrity(db, self._label)
        if damage is not None:
            raise damage

    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]:
        f = filt or RunFilter()
        where: list[str] = []
        params: list[Any] = []
        if f.status is not None:
            where.append("status = ?")
            params.append(f.status)
        if f.agent is not None:
            where.append("agent = ?")
            params.append(f.agent)
        if f.tenant is not None:
            where.append("tenant = ?")
            params.append(f.tenant)
        if f.conversation is not None:
            where.append("conversation = ?")
            params.append(f.conversation)
        sql = f"SELECT {q.RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        with self._reading() as db:
            rows = db.execute(sql, [*params, f.limit, f.offset]).fetchall()
        return [q.record_from_row(row, self._label) for row in rows]

    async def stats(self, query: StatsQuery | None = None) -> StatsResult:
        """Run analytics, aggregated by SQLite (see :mod:`keel.store._stats_sql`); the
        statements run in one read transaction, so they see one snapshot."""
        qry = query or StatsQuery()
        steps = stats_sql.plan(stats_sql.SQLITE, qry)
        with self._reading() as db:
            db.execute("BEGIN")
            try:
                fetched = [(step, db.execute(step[2], step[3]).fetchall()) for step in steps]
            finally:
                db.execute("COMMIT")
        return stats_sql.answer(qry, fetched)

    async def update_run(self, record: RunRecord, *, lease: str | None = None) -> None:
        args = q.update_args(record)
        event = run_status(record) if self._outbox else None
        if lease is None and event is None:
            with self._reading() as db:  # one statement: atomic by itself
                changed = db.execute(q.UPDATE_RUN, args).rowcount
            if changed == 0:
                raise not_found(record.run_id)
            return
        with self._writing() as db:
            _fence(db, record.run_id, lease)
            db.execute(q.UPDATE_RUN, args)
            if event is not None:
                outbox_sql.insert(db, [event])

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        """One transaction: the lease check, the entries, then the record."""
        if not entries and lease is None:
            await self.update_run(record)
            return
        rows = [q.entry_row(record.run_id, entry) for entry in entries]
        args = q.update_args(record)
        with self._writing() as db:
            _fence(db, record.run_id, lease)
            self._add_entries(db, record.run_id, entries, rows)
            db.execute(q.UPDATE_RUN, args)
            if self._outbox:
                outbox_sql.insert(db, [*tool_calls(record.run_id, entries),
                                       run_status(record)])

    async def prune_runs(self, *, before: float,
                         statuses: Collection[str] = TERMINAL_STATUSES) -> int:
        if isinstance(before, bool) or not isinstance(before, int | float) or math.isnan(before):
            raise ConfigError("before", f"must be a time in epoch seconds, not {before!r}")
        chosen = sorted({check_status(s) for s in check_names("statuses", statuses)})
        if not chosen:
            return 0
        doomed = f"status IN ({', '.join('?' * len(chosen))}) AND updated_at < ?"
        params = [*chosen, before]
        with self._writing() as db:
            for table in ("tasks", "journal", "feedback"):
                db.execute(f"DELETE FROM {table} WHERE run_id IN "
                           f"(SELECT run_id FROM runs WHERE {doomed})", params)
            deleted: int = db.execute(f"DELETE FROM runs WHERE {doomed}", params).rowcount
        return deleted

    async def read_journals(self, run_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """The journals of several runs, read in one transaction (one snapshot)."""
        ids = list(dict.fromkeys(run_ids))
        out: dict[str, list[JournalEntry]] = {}
        with self._reading() as db:
            db.execute("BEGIN")
            try:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    found = db.execute(f"SELECT run_id FROM runs WHERE run_id IN "
                                       f"({', '.join('?' * len(chunk))})", chunk).fetchall()
                    out.update((row[0], []) for row in found)
                    rows = db.execute(
                        f"SELECT run_id, {q.ENTRY_COLUMNS} FROM journal WHERE run_id IN "
                        f"({', '.join('?' * len(chunk))}) ORDER BY id", chunk).fetchall()
                    for row in rows:
                        out[row[0]].append(q.entry_from_row(row[1:], row[0], self._label))
            finally:
                db.execute("COMMIT")
        return {run_id: out[run_id] for run_id in ids if run_id in out}

    async def delete_conversation(self, conversation: str, *, tenant: str | None) -> int:
        conversation, tenant = check_conversation(conversation, tenant)
        doomed = "conversation = ? AND tenant IS ?"
        params = [conversation, tenant]
        with self._reading() as db:  # deleted content is overwritten, not left in free pages
            db.execute("PRAGMA secure_delete = ON")
        try:
            with self._writing() as db:
                outbox_sql.forget_runs(db, doomed, params)
                for table in ("tasks", "journal", "feedback"):
                    db.execute(f"DELETE FROM {table} WHERE run_id IN "
                               f"(SELECT run_id FROM runs WHERE {doomed})", params)
                deleted: int = db.execute(f"DELETE FROM runs WHERE {doomed}", params).rowcount
        finally:
            with self._reading() as db:
                db.execute("PRAGMA secure_delete = OFF")
        if deleted and not self._in_memory:
            with self._reading() as db:  # the old pages leave the write-ahead log too
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return deleted

    # ---------------------------------------------------------------------------- leases

    async def acquire_lease(self, run_id: str, owner: str, seconds: float, *,
                            steal_from: str | None = None) -> RunRecord:
        check_seconds(seconds)
        with self._writing() as db:
            row = db.execute(q.SELECT_RUN, (run_id,)).fetchone()
            if row is None:
                raise not_found(run_id)
            now = time.time()  # after the lock: a wait for it must not shorten the lease
            holder, expires_at = row[12], row[13]
            if (holder is not None and (expires_at or 0.0) > now
                    and holder not in (owner, steal_from)):
                raise leased(run_id, holder, expires_at)
            record = q.record_from_row(row, self._label)
            db.execute(q.SET_LEASE, (owner, now + seconds, run_id))
        return dataclasses.replace(record, lease_owner=owner, lease_expires_at=now + seconds)

    async def renew_leases(self, owner: str, seconds: float) -> set[str]:
        check_seconds(seconds)
        with self._writing() as db:
            held = {row[0] for row in db.execute(
                "SELECT run_id FROM runs WHERE lease_owner = ?", (owner,))}
            if held:
                db.execute("UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ?",
                           (time.time() + seconds, owner))
        return held

    async def release_lease(self, run_id: str, owner: str) -> None:
        with self._reading() as db:  # one statement: atomic by itself
            db.execute("UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL "
                       "WHERE run_id = ? AND lease_owner = ?", (run_id, owner))

    async def claim_runs(self, owner: str, seconds: float, *,
                         agents: Collection[str] | None = None,
                         limit: int = 1) -> list[RunRecord]:
        check_seconds(seconds)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ConfigError("limit", f"must be a whole number, not {limit!r}")
        names = None if agents is None else sorted(set(check_names("agents", agents)))
        if limit <= 0 or names == []:
            return []
        sql = q.SELECT_RUNNABLE
        if names is not None:
            sql += f" AND agent IN ({', '.join('?' * len(names))})"
        sql += " ORDER BY updated_at, run_id LIMIT ?"
        with self._writing() as db:
            now = time.time()
            rows = db.execute(sql, [now, *(names or ()), limit]).fetchall()
            records = [q.record_from_row(row, self._label) for row in rows]
            until = now + seconds
            db.executemany(q.SET_LEASE, [(owner, until, r.run_id) for r in records])
        return [dataclasses.replace(r, lease_owner=owner, lease_expires_at=until)
                for r in records]

    async def request_cancel(self, run_id: str, *, reason: str | None = None,
                             by: str | None = None,
                             tenant: str | None = None) -> RunRecord:
        tenant = check_tenant(tenant)
        request = cancel_request(reason, by)
        where, key = (("run_id = ?", (run_id,)) if tenant is None
                      else ("run_id = ? AND tenant = ?", (run_id, tenant)))
        with self._writing() as db:
            if not db.execute(f"UPDATE runs SET cancel_requested = 1 WHERE {where}",
                              key).rowcount:
                raise not_found(run_id)  # rolled back: nothing changed
            if request is not None:
                found = db.execute(f"SELECT metadata FROM runs WHERE {where}", key).fetchone()
                if found is not None:
                    old = q.loads(self._label, f"run {run_id!r}", "metadata", found[0])
                    metadata = {**(old if isinstance(old, dict) else {}),
                                CANCEL_REQUEST: request}
                    db.execute(f"UPDATE runs SET metadata = ? WHERE {where}",
                               (q.json_text(metadata, "the metadata of run " + run_id), *key))
            row = db.execute(f"SELECT {q.RUN_COLUMNS} FROM runs WHERE {where}", key).fetchone()
        if row is None:
            raise not_found(run_id)
        return q.record_from_row(row, self._label)

    # ------------------------------------------------------------------------ human tasks

    async def put_task(self, task: HumanTask) -> bool:
        row = q.task_row(task)
        with self._writing() as db:
            if db.execute(q.RUN_EXISTS, (task.run_id,)).fetchone() is None:
                raise not_found(task.run_id)
            stored: bool = db.execute(q.INSERT_TASK, row).rowcount == 1
            if stored and self._outbox:
                outbox_sql.insert(db, [task_requested(task)])
        return stored

    async def get_task(self, task_id: str, *, tenant: str | None = None) -> HumanTask:
        tenant = check_tenant(tenant)
        with self._reading() as db:
            return self._task(db, task_id, tenant)

    async def list_tasks(self, filt: TaskFilter | None = None) -> list[HumanTask]:
        sql, params = q.list_tasks_sql(filt or TaskFilter())
        with self._reading() as db:
            rows = db.execute(sql, params).fetchall()
        return [q.task_from_row(row, self._label) for row in rows]

    async def claim_task(self, task_id: str, who: str, *,
                         tenant: str | None = None) -> HumanTask:
        tenant = check_tenant(tenant)
        with self._writing() as db:
            task = self._task(db, task_id, tenant)
            task_conflict_if_resolved(task)
            if task.status == "claimed" and task.claimed_by != who:
                raise claimed_by_other(task)
            at = task.claimed_at if task.claimed_by == who else time.time()
            db.execute(q.CLAIM_TASK, (who, at, task_id))
        return dataclasses.replace(task, status="claimed", claimed_by=who, claimed_at=at)

    async def resolve_task(self, task_id: str, resolution: Any, *, by: str | None = None,
                           entry: JournalEntry | None = None, close: RunRecord | None = None,
                           resolved_by: str | None = None,
                           tenant: str | None = None) -> HumanTask:
        by = who_acted(by, resolved_by, "resolved_by")
        tenant = check_tenant(tenant)
        decision = q.json_text(resolution, f"the resolution of {task_id!r}")
        with self._writing() as db:
            task = self._task(db, task_id, tenant)
            task_conflict_if_resolved(task)
            run_id = task.run_id
            if close is not None and close.run_id != run_id:
                raise close_of_other_run(task, close.run_id)
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:  # only if the file was edited outside keel: tasks need their run
                raise not_found(run_id)
            status = row[0]
            if status in TERMINAL_STATUSES:
                raise run_not_waiting(run_id, status, task)
            if entry is not None:
                rows = [q.entry_row(run_id, entry)]
                try:
                    self._add_entries(db, run_id, [entry], rows)
                except StoreError as exc:
                    raise entry_conflict(task, exc) from None
            now = time.time()
            db.execute(q.RESOLVE_TASK, (decision, by, now, task_id))
            if self._outbox:
                outbox_sql.insert(db, [task_decided(task, resolution, by, now),
                                       None if close is None else run_status(close)])
            if close is not None:
                db.execute(q.UPDATE_RUN, q.update_args(close))
            elif status == "suspended":
                db.execute("UPDATE runs SET status = 'running', updated_at = ?, lease_owner = "
                           "NULL, lease_expires_at = NULL WHERE run_id = ?", (now, run_id))
        return dataclasses.replace(task, status="resolved", resolution=resolution,
                                   by=by, resolved_at=now)

    async def suspend_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                          waiting_on: Collection[str], lease: str | None = None) -> str:
        rows = [q.entry_row(record.run_id, entry) for entry in entries]
        ids = sorted(set(check_names("waiting_on", waiting_on)))
        with self._writing() as db:
            _fence(db, record.run_id, lease)
            self._add_entries(db, record.run_id, entries, rows)
            waiting = bool(ids) and db.execute(
                f"SELECT 1 FROM tasks WHERE task_id IN ({', '.join('?' * len(ids))}) "
                "AND status != 'resolved' LIMIT 1", ids).fetchone() is not None
            status = "suspended" if waiting else "running"
            db.execute(q.PARK_RUN, q.park_args(record, status))
            if self._outbox:
                outbox_sql.insert(db, [*tool_calls(record.run_id, entries), None
                                       if status == "running" else
                                       run_status(record.with_status("suspended"),
                                                  waiting_on=ids)])
        return status

    # ---------------------------------------------------------------------------- outbox

    async def read_outbox(self, after: int = 0, limit: int = 500, *,
                          claim_s: float = 30.0) -> list[tuple[int, Event]]:
        after, limit, claim_s = check_read(after, limit, claim_s)
        with self._writing() as db:
            return outbox_sql.read(db, after, limit, time.time(), claim_s)

    async def mark_published(self, positions: Collection[int]) -> int:
        chosen = check_positions(positions)
        if not chosen:
            return 0
        with self._writing() as db:
            return outbox_sql.mark(db, chosen, time.time())

    async def prune_outbox(self, before: float) -> int:
        before = check_before(before)
        with self._reading() as db:  # one statement: atomic by itself
            return outbox_sql.prune(db, before)

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
            conn = self._conn = open_db(None if self._in_memory else self._path, self._label,
                                           create=self._create)
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held against other threads; SQLite errors become StoreErrors.
        A single statement run here is atomic by itself."""
        with self._lock:
            db = self._db()
            try:
                yield db
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the file's write lock is taken before
        anything is read, so what the block reads still holds when it writes. Committed when
        the block returns, rolled back (changing nothing) when it raises."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

    def _task(self, db: sqlite3.Connection, task_id: str,
              tenant: str | None = None) -> HumanTask:
        """The task (with ``tenant``: only if its run is that tenant's), or TaskNotFound."""
        row = (db.execute(q.SELECT_TASK, (task_id,)) if tenant is None
               else db.execute(q.SELECT_TASK_OF, (task_id, tenant))).fetchone()
        if row is None:
            raise task_not_found(task_id)
        return q.task_from_row(row, self._label)

    def _add_entries(self, db: sqlite3.Connection, run_id: str,
                     entries: Sequence[JournalEntry], rows: list[q.Row]) -> None:
        """Insert entries inside the caller's transaction; a clash raises StoreError."""
        try:
            if len(rows) == 1:
                db.execute(q.INSERT_ENTRY, rows[0])
            elif 1 < len(rows) <= q.ROWS_PER_STATEMENT:
                db.execute(q.insert_entries_sql(len(rows)), [v for r in rows for v in r])
            elif rows:
                db.executemany(q.INSERT_ENTRY, rows)
        except sqlite3.IntegrityError as exc:
            raise self._append_conflict(db, exc, run_id, entries) from None

    def _append_fenced(self, run_id: str, entries: Sequence[JournalEntry],
                       rows: list[q.Row], lease: str) -> None:
        """``append(..., lease=)``: one entry goes in by one statement that checks the lease
        as it inserts; if that stores nothing, or for a batch, a transaction checks and
        inserts (and says why, if it still cannot)."""
        if len(rows) == 1:
            with self._reading() as db:
                try:
                    if db.execute(q.INSERT_ENTRY_FENCED, (*rows[0], run_id, lease)).rowcount:
                        return
                except sqlite3.IntegrityError as exc:
                    raise self._append_conflict(db, exc, run_id, entries) from None
        with self._writing() as db:
            _fence(db, run_id, lease)
            self._add_entries(db, run_id, entries, rows)

    def _failure(self, exc: sqlite3.Error) -> StoreError | StoreUnavailable:
        """The error for ``exc`` (hold ``_lock``); one that may come of a damaged file is
        checked with ``PRAGMA quick_check``, and a damaged file is reported as such."""
        if self._conn is not None and looks_damaged(exc):
            damage = integrity(self._conn, self._label)
            if damage is not None:
                return damage
        return failure(self._label, exc)

    def _miss(self, db: sqlite3.Connection, table: str, run_id: str,
              tenant: str | None = None) -> StoreError | None:
        """A store opened with ``create=False`` (to read what exists) found no ``run_id`` in
        ``table`` (``runs``: of ``tenant``, if given): look again past the indexes, and check
        the file once, so that a damaged file is reported as damaged rather than as a
        missing run or an empty journal. (Another tenant's run is missing, not damage.)"""
        if self._create:
            return None
        where, key = (("run_id = ?", (run_id,)) if tenant is None
                      else ("run_id = ? AND tenant = ?", (run_id, tenant)))
        found = db.execute(f"SELECT 1 FROM {table} NOT INDEXED WHERE {where} LIMIT 1",
                           key).fetchone()
        if found is not None:
            return damaged(self._label, [f"the {table} table holds run {run_id!r}, its index "
                                         "does not"], seen_by="a look past the index")
        if self._checked:
            return None
        damage = integrity(db, self._label)
        self._checked = damage is None
        return damage

    def _append_conflict(self, db: sqlite3.Connection, exc: sqlite3.IntegrityError,
                         run_id: str, entries: Sequence[JournalEntry]
                         ) -> StoreError | StoreUnavailable:
        """The error for an append that broke a constraint (nothing of it was stored)."""
        name = error_name(exc)
        if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return not_found(run_id)
        if name not in _UNIQUE:
            return self._failure(exc)
        repeated = repeated_in_batch(run_id, entries)
        if repeated is not None:
            return repeated
        try:
            stored = set(db.execute("SELECT key, phase FROM journal WHERE run_id = ?",
                                    (run_id,)).fetchall())
        except sqlite3.Error:
            stored = set()
        return already_stored(run_id, entries, stored)


# ------------------------------------------------------------------------------ helpers


def _fence(db: sqlite3.Connection, run_id: str, lease: str | None) -> None:
    """Inside a write transaction: the run must exist, and be ``lease``'s if one is given."""
    row = db.execute(q.SELECT_LEASE, (run_id,)).fetchone()
    if row is None:
        raise not_found(run_id)
    if lease is not None and row[0] != lease:
        raise lease_lost(run_id, lease, row[0])


def _insert_batch(db: sqlite3.Connection, rows: list[q.Row]) -> None:
    """Insert many entries in one transaction: all of them or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(q.INSERT_ENTRY, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
