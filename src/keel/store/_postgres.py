"""The Postgres run store: for fleets of workers sharing runs, journals and human tasks.

Connections
    A pool of autocommit connections (``psycopg_pool.AsyncConnectionPool``, ``min_size`` to
    ``max_size``), opened on first use or on ``async with``: ``open_store`` stays synchronous
    and cheap. Opening checks the keel tables (see ``_postgres_schema``) on one connection
    first, so an unreachable server or a store written by a newer keel fails there, within
    the connect timeout, with a :class:`keel.StoreError` that names the server (never the
    password) and what to check. A store belongs to the event loop it was opened in.

Writes
    Every write that must be atomic is one statement or one transaction, so a failed call
    leaves nothing behind. ``append`` is one round trip: a single entry is one INSERT, a
    small batch one multi-row INSERT, a large one an INSERT over ``unnest`` of per-column
    arrays (in batch order). With ``lease=`` the INSERT selects from the run's row locked
    ``FOR SHARE`` where ``lease_owner = lease``, so the lease is checked by the same
    statement and a concurrent takeover either waits for the write or is seen by it.
    Only when nothing was written does a second query tell an unknown run from a lost lease.
    ``update_run`` and ``finish_run`` are one statement each as well.

Outbox
    With ``outbox=True`` a write that is a run event (see :mod:`keel.store._outbox`) also
    inserts the event into ``keel_outbox`` atomically with it: an ``append`` of tool results
    by the same statement (a CTE), the other writes in one transaction. Relays claim rows
    with ``FOR UPDATE SKIP LOCKED`` (see :mod:`keel.store._postgres_outbox`).

Leases
    Expiry is decided by the database clock (``clock_timestamp()``): workers with skewed
    clocks agree on it, and ``lease_expires_at`` is in the database's epoch seconds.
    ``claim_runs`` takes runs with ``FOR UPDATE SKIP LOCKED``: concurrent claimers never wait
    for each other and never get the same run.

Errors
    psycopg errors become :class:`keel.StoreError`, or :class:`keel.StoreUnavailable`
    (a retryable run error, not a usage error) for lost connections, deadlocks and a pool
    that stayed busy; a repeated ``(key, phase)`` is a StoreError
    naming the step, with nothing of its batch stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

try:
    import psycopg
    from psycopg import errors
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the Postgres run store needs psycopg and psycopg-pool: "
                      "pip install 'keel-agents[postgres]'") from exc

from keel.core import ConfigError, StoreError
from keel.store import _postgres_outbox as outbox_sql
from keel.store import _postgres_tasks as tasks
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
    check_tenant,
    who_acted,
)
from keel.store._messages import (
    already_stored,
    lease_lost,
    leased,
    not_found,
    repeated_in_batch,
    run_exists,
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
from keel.store._postgres_connect import (
    Conn,
    Pool,
    connect,
    failure,
    open_pool,
    parse_target,
)
from keel.store._postgres_records import PostgresRecords
from keel.store._postgres_rows import (
    entry,
    entry_columns,
    entry_values,
    named_columns,
    record,
    run_values,
)
from keel.store._postgres_schema import prepare
from keel.store._postgres_sql import VALUES_ROWS, Statements, statements
from keel.store._postgres_sql import _prefix as sql_prefix
from keel.store._stats import StatsQuery, StatsResult

__all__ = ["PostgresStore"]

T = TypeVar("T")

#: ``prune_runs`` deletes this many runs per transaction.
_PRUNE_BATCH = 500


class PostgresStore(PostgresRecords, RunStore):
    """Runs, journals and human tasks in a Postgres database, shared by many workers.

    ``url`` is ``postgresql://user:password@host:5432/dbname`` (``postgres://`` too, or a
    libpq ``key=value`` string); ``schema`` (or ``?schema=NAME`` in the URL) puts keel's
    tables in that schema, created if missing (with ``create=False`` a schema without keel
    tables is refused and nothing is created). Use it as ``async with PostgresStore(url) as
    store:`` or call :meth:`close` when done.
    """

    def __init__(self, url: str, *, schema: str | None = None, min_size: int = 1,
                 max_size: int = 10, create: bool = True, outbox: bool = False) -> None:
        if not isinstance(min_size, int) or min_size < 0:
            raise ConfigError("min_size", f"must be a whole number >= 0, not {min_size!r}")
        if not isinstance(max_size, int) or max_size < max(1, min_size):
            raise ConfigError("max_size", f"must be a whole number >= max(1, min_size), not "
                                          f"{max_size!r}")
        self._target = parse_target(url, schema)
        self._url, self._schema_arg = url, schema
        self._sizes = (min_size, max_size)
        self._create = create
        self._outbox = bool(outbox)
        self._pool: Pool | None = None
        self._q: Statements | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({self._target.label!r})"

    @property
    def outbox(self) -> bool:
        return self._outbox

    @property
    def url(self) -> str | None:
        """A URL that opens this same store (with ``?schema=`` when the schema was given
        apart), for what keeps its own tables beside the runs (the server's API keys); None
        for a libpq ``key=value`` string given with a separate schema."""
        url, schema = self._url, self._schema_arg
        if schema is None or "schema=" in url:
            return url
        if "://" not in url:
            return None
        return f"{url}{'&' if '?' in url else '?'}schema={quote(schema, safe='')}"

    @property
    def schema(self) -> str | None:
        """The schema holding keel's tables (known once the store is open)."""
        return self._q.schema if self._q is not None else self._target.schema

    async def __aenter__(self) -> PostgresStore:
        await self._ready()
        return self

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # ---------------------------------------------------------------------- connections

    async def _ready(self) -> tuple[Pool, Statements]:
        """The open pool and statements; opens them on first use."""
        pool, q = self._pool, self._q
        if pool is not None and q is not None and self._loop is asyncio.get_running_loop():
            return pool, q
        async with self._opening:
            if self._closed:
                raise StoreError(f"the run store {self._target.label} was closed; open a new "
                                 "one with open_store(...) or PostgresStore(...).")
            if self._pool is None:
                conn = await connect(self._target)
                try:
                    schema = await prepare(conn, self._target.schema, self._target.label,
                                           create=self._create)
                except psycopg.Error as exc:
                    raise failure(self._target, exc) from None
                finally:
                    await conn.close()
                pool = await open_pool(self._target, min_size=self._sizes[0],
                                       max_size=self._sizes[1])
                if self._closed:  # close() was called while this opened
                    await pool.close()
                    raise StoreError(f"the run store {self._target.label} was closed while "
                                     "it opened.")
                self._pool, self._q = pool, statements(schema)
                self._loop = asyncio.get_running_loop()
            elif self._loop is not asyncio.get_running_loop():
                raise StoreError(
                    f"the run store {self._target.label} was opened in another event loop; "
                    "a PostgresStore belongs to the loop that first used it - open one per "
                    "loop (e.g. inside each asyncio.run).")
            assert self._pool is not None and self._q is not None
            return self._pool, self._q

    async def _with(self, work: Callable[[Conn, Statements], Awaitable[T]], *,
                    transaction: bool = False) -> T:
        """``work`` on a pooled connection (in a transaction if asked), errors translated."""
        pool, q = await self._ready()
        try:
            async with pool.connection() as conn:
                if not transaction:
                    return await work(conn, q)
                async with conn.transaction():
                    return await work(conn, q)
        except psycopg.Error as exc:
            raise failure(self._target, exc) from None

    async def _fetchone(self, sql: Callable[[Statements], str],
                        params: Any) -> tuple[Any, ...] | None:
        async def work(conn: Conn, q: Statements) -> tuple[Any, ...] | None:
            return await (await conn.execute(sql(q), params)).fetchone()

        return await self._with(work)

    # ------------------------------------------------------------------------------ runs

    async def create_run(self, record: RunRecord) -> None:
        values = tuple(run_values(record).values())

        async def work(conn: Conn, q: Statements) -> None:
            try:
                await conn.execute(q.create_run, values)
            except errors.UniqueViolation:
                raise run_exists(record.run_id) from None
            if self._outbox:
                await outbox_sql.insert(conn, sql_prefix(q.schema), [run_started(record)])

        await self._with(work, transaction=self._outbox)

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        pool, q = self._pool, self._q
        if pool is None or q is None or self._loop is not asyncio.get_running_loop():
            pool, q = await self._ready()
        n = len(entries)
        if n == 0:
            await self._fence(run_id, lease)
            return
        params: Sequence[Any]
        if n == 1:
            values = entry_values(run_id, entries[0])
            sql, params = ((q.append_one, (run_id, *values)) if lease is None
                           else (q.append_one_fenced, (*values, run_id, lease)))
        elif n <= VALUES_ROWS:
            sql, params = _values_batch(q, run_id, entries, lease)
        else:
            columns = entry_columns(run_id, entries)
            sql, params = ((q.append_many, (run_id, *columns)) if lease is None
                           else (q.append_many_fenced, (*columns, run_id, lease)))
        events = tool_calls(run_id, entries) if self._outbox else None
        if events:
            await self._append_with_events(run_id, entries, lease, sql, params, events)
            return
        try:
            async with pool.connection() as conn:
                try:
                    if (await conn.execute(sql, params)).rowcount == n:
                        return
                    refused: psycopg.Error | None = None
                except (errors.UniqueViolation, errors.ForeignKeyViolation) as exc:
                    refused = exc
                raise await _refusal(conn, q, run_id, entries, lease, refused)
        except psycopg.Error as exc:
            raise failure(self._target, exc) from None

    async def _append_with_events(self, run_id: str, entries: Sequence[JournalEntry],
                                  lease: str | None, sql: str, params: Sequence[Any],
                                  events: list[Event]) -> None:
        """``append`` of entries that are events: the entries and their events in one
        statement (one round trip, atomic by itself)."""
        async def work(conn: Conn, q: Statements) -> None:
            both = outbox_sql.append_with_events(sql, sql_prefix(q.schema))
            try:
                row = await (await conn.execute(
                    both, (*params, *outbox_sql.event_arrays(events, run_id)))).fetchone()
                if row is not None and row[0] == len(entries):
                    return
                refused: psycopg.Error | None = None
            except (errors.UniqueViolation, errors.ForeignKeyViolation) as exc:
                refused = exc
            raise await _refusal(conn, q, run_id, entries, lease, refused)

        await self._with(work)

    async def _fence(self, run_id: str, lease: str | None) -> None:
        row = await self._fetchone(lambda q: q.run_lease, (run_id,))
        if row is None:
            raise not_found(run_id)
        if lease is not None and row[0] != lease:
            raise lease_lost(run_id, lease, row[0])

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        tenant = check_tenant(tenant)
        row = await (self._fetchone(lambda q: q.get_run, (run_id,)) if tenant is None
                     else self._fetchone(lambda q: q.get_run_of, (run_id, tenant)))
        if row is None:
            raise not_found(run_id)
        return record(row)

    async def read_journal(self, run_id: str, *,
                           tenant: str | None = None) -> list[JournalEntry]:
        tenant = check_tenant(tenant)

        async def work(conn: Conn, q: Statements) -> list[tuple[Any, ...]]:
            cur = await (conn.execute(q.read_journal, (run_id,)) if tenant is None
                         else conn.execute(q.read_journal_of, (run_id, tenant)))
            return await cur.fetchall()

        rows = await self._with(work)
        if not rows:
            raise not_found(run_id)
        return [entry(run_id, row) for row in rows if row[1] is not None]

    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]:
        f = filt or RunFilter()
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", f.status), ("agent", f.agent), ("tenant", f.tenant),
                              ("conversation", f.conversation)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)

        async def work(conn: Conn, q: Statements) -> list[tuple[Any, ...]]:
            sql = q.list_runs + (" WHERE " + " AND ".join(where) if where else "")
            sql += " ORDER BY created_at DESC, run_id DESC LIMIT %s OFFSET %s"
            return await (await conn.execute(sql, (*params, f.limit, f.offset))).fetchall()

        return [record(row) for row in await self._with(work)]

    async def stats(self, query: StatsQuery | None = None) -> StatsResult:
        """Run analytics, aggregated by Postgres (see :mod:`keel.store._stats_sql`); the
        statements run in one repeatable-read transaction, so they see one snapshot."""
        qry = query or StatsQuery()

        async def work(conn: Conn, q: Statements) -> list[Any]:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            steps = stats_sql.plan(stats_sql.postgres(sql_prefix(q.schema)), qry)
            return [(step, await (await conn.execute(step[2], tuple(step[3]))).fetchall())
                    for step in steps]

        return stats_sql.answer(qry, await self._with(work, transaction=True))

    async def update_run(self, record: RunRecord, *, lease: str | None = None) -> None:
        params = {**run_values(record), "lease": lease}
        event = run_status(record) if self._outbox else None

        async def work(conn: Conn, q: Statements) -> None:
            if (await conn.execute(q.update_run, params)).rowcount != 1:
                raise await _refusal(conn, q, record.run_id, (), lease, None)
            if event is not None:
                await outbox_sql.insert(conn, sql_prefix(q.schema), [event])

        await self._with(work, transaction=event is not None)

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        params = {**run_values(record), "lease": lease,
                  **named_columns(record.run_id, entries)}

        events = [*tool_calls(record.run_id, entries), run_status(record)] \
            if self._outbox else []

        async def work(conn: Conn, q: Statements) -> None:
            try:
                async with conn.transaction() if events else contextlib.nullcontext():
                    row = await (await conn.execute(q.finish_run, params)).fetchone()
                    if row is not None and row[0] == 1:
                        await outbox_sql.insert(conn, sql_prefix(q.schema), events)
                        return
                refused: psycopg.Error | None = None
            except (errors.UniqueViolation, errors.ForeignKeyViolation) as exc:
                refused = exc
            raise await _refusal(conn, q, record.run_id, entries, lease, refused)

        await self._with(work)

    async def prune_runs(self, *, before: float,
                         statuses: Collection[str] = TERMINAL_STATUSES) -> int:
        params = {"statuses": list(statuses), "before": before, "batch": _PRUNE_BATCH}

        async def work(conn: Conn, q: Statements) -> int:
            total = 0
            while True:
                deleted = (await conn.execute(q.prune_runs, params)).rowcount
                total += deleted
                if deleted < _PRUNE_BATCH:
                    return total

        return await self._with(work) if params["statuses"] else 0

    async def read_journals(self, run_ids: Sequence[str]) -> dict[str, list[JournalEntry]]:
        """The journals of several runs, read by one statement (one snapshot)."""
        ids = list(dict.fromkeys(run_ids))

        async def work(conn: Conn, q: Statements) -> list[tuple[Any, ...]]:
            return await (await conn.execute(q.read_journals, (ids,))).fetchall()

        found: dict[str, list[JournalEntry]] = {}
        for row in await self._with(work) if ids else []:
            entries = found.setdefault(row[0], [])
            if row[2] is not None:
                entries.append(entry(row[0], row[1:]))
        return {run_id: found[run_id] for run_id in ids if run_id in found}

    async def delete_conversation(self, conversation: str, *, tenant: str | None) -> int:
        conversation, tenant = check_conversation(conversation, tenant)

        async def work(conn: Conn, q: Statements) -> int:
            await conn.execute(outbox_sql.statements(sql_prefix(q.schema)).forget_conversation,
                               (conversation, tenant))
            return (await conn.execute(q.delete_conversation, (conversation, tenant))).rowcount

        return await self._with(work, transaction=True)

    # ---------------------------------------------------------------------------- leases

    async def acquire_lease(self, run_id: str, owner: str, seconds: float, *,
                            steal_from: str | None = None) -> RunRecord:
        params = {"run_id": run_id, "owner": owner, "seconds": float(seconds),
                  "steal": steal_from}

        async def work(conn: Conn, q: Statements) -> RunRecord:
            row = await (await conn.execute(q.acquire_lease, params)).fetchone()
            if row is not None:
                return record(row)
            held = await (await conn.execute(q.run_lease, (run_id,))).fetchone()
            if held is None:
                raise not_found(run_id)
            raise leased(run_id, held[0], held[1])

        return await self._with(work)

    async def renew_leases(self, owner: str, seconds: float) -> set[str]:
        async def work(conn: Conn, q: Statements) -> set[str]:
            cur = await conn.execute(q.renew_leases, (float(seconds), owner))
            return {row[0] for row in await cur.fetchall()}

        return await self._with(work)

    async def release_lease(self, run_id: str, owner: str) -> None:
        async def work(conn: Conn, q: Statements) -> None:
            await conn.execute(q.release_lease, (run_id, owner))

        await self._with(work)

    async def claim_runs(self, owner: str, seconds: float, *,
                         agents: Collection[str] | None = None,
                         limit: int = 1) -> list[RunRecord]:
        if limit <= 0:
            return []
        params = {"owner": owner, "seconds": float(seconds), "limit": limit,
                  "agents": None if agents is None else list(agents)}

        async def work(conn: Conn, q: Statements) -> list[tuple[Any, ...]]:
            sql = q.claim_runs if agents is None else q.claim_runs_of
            return await (await conn.execute(sql, params)).fetchall()

        claimed = [record(row) for row in await self._with(work)]
        claimed.sort(key=lambda r: (r.updated_at, r.run_id))
        return claimed

    async def request_cancel(self, run_id: str, *, reason: str | None = None,
                             by: str | None = None,
                             tenant: str | None = None) -> RunRecord:
        tenant = check_tenant(tenant)
        request = cancel_request(reason, by)
        text = None if request is None else json.dumps({CANCEL_REQUEST: request})
        row = await (self._fetchone(lambda q: q.request_cancel, (text, text, run_id))
                     if tenant is None else
                     self._fetchone(lambda q: q.request_cancel_of, (text, text, run_id, tenant)))
        if row is None:
            raise not_found(run_id)
        return record(row)

    # ------------------------------------------------------------------------ human tasks

    async def put_task(self, task: HumanTask) -> bool:
        async def work(conn: Conn, q: Statements) -> bool:
            stored = await tasks.put_task(conn, q, task)
            if stored and self._outbox:
                await outbox_sql.insert(conn, sql_prefix(q.schema), [task_requested(task)])
            return stored

        return await self._with(work, transaction=self._outbox)

    async def get_task(self, task_id: str, *, tenant: str | None = None) -> HumanTask:
        tenant = check_tenant(tenant)
        return await self._with(lambda conn, q: tasks.get_task(conn, q, task_id, tenant))

    async def list_tasks(self, filt: TaskFilter | None = None) -> list[HumanTask]:
        f = filt or TaskFilter()
        return await self._with(lambda conn, q: tasks.list_tasks(conn, q, f))

    async def claim_task(self, task_id: str, who: str, *,
                         tenant: str | None = None) -> HumanTask:
        tenant = check_tenant(tenant)
        return await self._with(lambda conn, q: tasks.claim_task(conn, q, task_id, who,
                                                                 tenant))

    async def resolve_task(self, task_id: str, resolution: Any, *, by: str | None = None,
                           entry: JournalEntry | None = None, close: RunRecord | None = None,
                           resolved_by: str | None = None,
                           tenant: str | None = None) -> HumanTask:
        by = who_acted(by, resolved_by, "resolved_by")
        tenant = check_tenant(tenant)
        async def work(conn: Conn, q: Statements) -> HumanTask:
            done = await tasks.resolve_task(conn, q, task_id, resolution, by=by, entry=entry,
                                            close=close, tenant=tenant)
            if self._outbox:
                await outbox_sql.insert(conn, sql_prefix(q.schema), [
                    task_decided(done, resolution, by, done.resolved_at or 0.0),
                    None if close is None else run_status(close)])
            return done

        return await self._with(work, transaction=True)

    async def suspend_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                          waiting_on: Collection[str], lease: str | None = None) -> str:
        async def work(conn: Conn, q: Statements) -> str:
            try:
                async with conn.transaction():
                    status = await tasks.suspend_run(conn, q, record, entries,
                                                     waiting_on=waiting_on, lease=lease)
                    if self._outbox:
                        await outbox_sql.insert(conn, sql_prefix(q.schema), [
                            *tool_calls(record.run_id, entries),
                            None if status != "suspended" else run_status(
                                record.with_status("suspended"), waiting_on=waiting_on)])
                    return status
            except errors.UniqueViolation as exc:  # rolled back: word it on the same conn
                raise await _refusal(conn, q, record.run_id, entries, lease, exc) from None

        return await self._with(work)

    # ---------------------------------------------------------------------------- outbox

    async def read_outbox(self, after: int = 0, limit: int = 500, *,
                          claim_s: float = 30.0) -> list[tuple[int, Event]]:
        after, limit, claim_s = check_read(after, limit, claim_s)

        async def work(conn: Conn, q: Statements) -> list[tuple[Any, ...]]:
            sql = outbox_sql.statements(sql_prefix(q.schema)).read
            cur = await conn.execute(sql, {"after": after, "limit": limit, "claim": claim_s})
            return await cur.fetchall()

        return sorted((outbox_sql.event(row) for row in await self._with(work)),
                      key=lambda pair: pair[0])

    async def mark_published(self, positions: Collection[int]) -> int:
        chosen = check_positions(positions)

        async def work(conn: Conn, q: Statements) -> int:
            sql = outbox_sql.statements(sql_prefix(q.schema)).mark
            return (await conn.execute(sql, (chosen,))).rowcount

        return await self._with(work) if chosen else 0

    async def prune_outbox(self, before: float) -> int:
        before = check_before(before)

        async def work(conn: Conn, q: Statements) -> int:
            sql = outbox_sql.statements(sql_prefix(q.schema)).prune
            return (await conn.execute(sql, (before,))).rowcount

        return await self._with(work)


def _values_batch(q: Statements, run_id: str, entries: Sequence[JournalEntry],
                  lease: str | None) -> tuple[str, list[Any]]:
    """A small batch as one multi-row VALUES insert, and its parameters."""
    params: list[Any] = []
    for e in entries:
        if lease is None:
            params.append(run_id)
        params.extend(entry_values(run_id, e))
    if lease is not None:
        params += (run_id, lease)
    return q.append_values(len(entries), fenced=lease is not None), params


async def _refusal(conn: Conn, q: Statements, run_id: str, entries: Sequence[JournalEntry],
                   lease: str | None, exc: psycopg.Error | None) -> StoreError:
    """Why a write stored nothing: an unknown run, a lost lease or a repeated entry."""
    row = await (await conn.execute(q.run_lease, (run_id,))).fetchone()
    if row is None or isinstance(exc, errors.ForeignKeyViolation):
        return not_found(run_id)
    if (lease is not None and row[0] != lease) or exc is None:
        return lease_lost(run_id, lease or "", row[0])
    repeated = repeated_in_batch(run_id, entries)
    if repeated is not None:
        return repeated
    cur = await conn.execute(q.stored_pairs, (run_id, sorted({e.key for e in entries})))
    stored = {(key, phase) for key, phase in await cur.fetchall()}
    return already_stored(run_id, entries, stored)
