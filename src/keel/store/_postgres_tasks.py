"""The Postgres store's human tasks (approvals, escalations) and parking runs that wait for
them. Each function runs on one connection; those that change several rows run in one
transaction that the caller opens.

Deciding a task and parking its run can happen at the same moment in two processes. Both
lock the run's row first (``resolve_task`` then locks the task), so one waits for the other:
a decision committed before ``suspend_run`` takes the lock is seen by it (the run stays
runnable), and one that comes after finds the run suspended and wakes it. No run is left
suspended with every decision in.

With ``tenant`` (a tenant-scoped call) the statement that first finds the task carries the
tenant as a condition (``*_of`` statements: ``get_task_of``, ``claim_task_of``, and for
``resolve_task`` the lock of the task's run, ``lock_task_run_of``): a task of another
tenant's run is not found, and nothing of it is locked or changed. What ``resolve_task``
does next acts on the task and run it locked.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from psycopg import errors

from keel.store._base import TERMINAL_STATUSES, HumanTask, JournalEntry, RunRecord, TaskFilter
from keel.store._messages import (
    claimed_by_other,
    close_of_other_run,
    duplicate_entry,
    entry_conflict,
    lease_lost,
    not_found,
    run_not_waiting,
    task_conflict_if_resolved,
    task_not_found,
)
from keel.store._postgres_connect import Conn
from keel.store._postgres_rows import (
    dump_resolution,
    entry_values,
    named_columns,
    record,
    run_values,
    task,
    task_values,
)
from keel.store._postgres_sql import Statements


async def put_task(conn: Conn, q: Statements, t: HumanTask) -> bool:
    try:
        cur = await conn.execute(q.put_task, task_values(t))
    except errors.ForeignKeyViolation:
        raise not_found(t.run_id) from None
    if cur.rowcount == 1:
        return True
    if await (await conn.execute(q.run_lease, (t.run_id,))).fetchone() is None:
        raise not_found(t.run_id)
    return False


async def get_task(conn: Conn, q: Statements, task_id: str,
                   tenant: str | None = None) -> HumanTask:
    cur = await (conn.execute(q.get_task, (task_id,)) if tenant is None
                 else conn.execute(q.get_task_of, (task_id, tenant)))
    row = await cur.fetchone()
    if row is None:
        raise task_not_found(task_id)
    return task(row)


async def list_tasks(conn: Conn, q: Statements, f: TaskFilter) -> list[HumanTask]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("kind", f.kind), ("status", f.status), ("queue", f.queue),
                          ("run_id", f.run_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if f.tenant is not None:
        where.append(q.of_tenant)
        params.append(f.tenant)
    sql = q.list_tasks + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY created_at, task_id LIMIT %s OFFSET %s"
    cur = await conn.execute(sql, (*params, f.limit, f.offset))
    return [task(row) for row in await cur.fetchall()]


async def claim_task(conn: Conn, q: Statements, task_id: str, who: str,
                     tenant: str | None = None) -> HumanTask:
    params = {"task_id": task_id, "who": who, "tenant": tenant}
    cur = await conn.execute(q.claim_task if tenant is None else q.claim_task_of, params)
    row = await cur.fetchone()
    if row is not None:
        return task(row)
    current = await get_task(conn, q, task_id, tenant)  # TaskNotFound
    task_conflict_if_resolved(current)
    raise claimed_by_other(current)


async def resolve_task(conn: Conn, q: Statements, task_id: str, resolution: Any, *,
                       by: str, entry: JournalEntry | None,
                       close: RunRecord | None, tenant: str | None = None) -> HumanTask:
    """Decide a task; run inside a transaction (any error rolls all of it back)."""
    decided = dump_resolution(task_id, resolution)
    cur = await (conn.execute(q.lock_task_run, (task_id,)) if tenant is None
                 else conn.execute(q.lock_task_run_of, (task_id, tenant)))
    run_row = await cur.fetchone()
    task_row = await (await conn.execute(q.lock_task, (task_id,))).fetchone()
    if run_row is None or task_row is None:
        raise task_not_found(task_id)
    current, run = task(task_row), record(run_row)
    task_conflict_if_resolved(current)
    if close is not None and close.run_id != run.run_id:
        raise close_of_other_run(current, close.run_id)
    if run.status in TERMINAL_STATUSES:
        raise run_not_waiting(run.run_id, run.status, current)
    if entry is not None:
        try:
            await conn.execute(q.append_one, (run.run_id, *entry_values(run.run_id, entry)))
        except errors.UniqueViolation:  # the transaction is rolled back as this leaves it
            clash = duplicate_entry(run.run_id, (entry.key, entry.phase))
            raise entry_conflict(current, clash) from None
    row = await (await conn.execute(q.resolve_task, (decided, by, task_id))
                 ).fetchone()
    assert row is not None  # locked above
    if close is not None:
        await conn.execute(q.update_run, {**run_values(close), "lease": None})
    elif run.status == "suspended":
        await conn.execute(q.wake_run, (run.run_id,))
    return task(row)


async def suspend_run(conn: Conn, q: Statements, r: RunRecord,
                      entries: Sequence[JournalEntry], *, waiting_on: Collection[str],
                      lease: str | None) -> str:
    """Park a run; run inside a transaction. Returns the status written."""
    locked = await (await conn.execute(q.lock_run, (r.run_id,))).fetchone()
    if locked is None:
        raise not_found(r.run_id)
    if lease is not None and locked[1] != lease:
        raise lease_lost(r.run_id, lease, locked[1])
    params = {**run_values(r), **named_columns(r.run_id, entries),
              "waiting": list(waiting_on)}
    row = await (await conn.execute(q.park_run, params)).fetchone()
    assert row is not None  # locked above
    status: str = row[0]
    return status
