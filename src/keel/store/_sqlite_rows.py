"""How runs, journal entries and human tasks map to rows of the SQLite run store (schema 4):
the SQL that reads and writes them, and the JSON text their payloads are stored as."""

from __future__ import annotations

import functools
import json
from typing import Any

from keel.core import StoreError
from keel.core import dumps as codec_dumps
from keel.store._base import HumanTask, JournalEntry, RunRecord, TaskFilter

Row = tuple[Any, ...]

# ---------------------------------------------------------------------------------- runs

RUN_COLUMNS = (
    "run_id, agent, status, target, input, output, error, usage, metadata, created_at, "
    "updated_at, schema_version, lease_owner, lease_expires_at, deadline_at, cancel_requested, "
    'tenant, "user", conversation'
)
INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 19)})"
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
#: The run if it is the tenant's (``run_id, tenant``): a tenant-scoped read.
SELECT_RUN_OF = SELECT_RUN + " AND tenant = ?"
RUN_EXISTS = "SELECT 1 FROM runs WHERE run_id = ?"
SELECT_LEASE = "SELECT lease_owner FROM runs WHERE run_id = ?"
_SET_RECORD = (
    "UPDATE runs SET agent = ?, status = ?, target = ?, input = ?, output = ?, error = ?, "
    "usage = ?, metadata = ?, created_at = ?, updated_at = ?, schema_version = ?, "
    "deadline_at = ?, "
)
#: Replace a record but its lease and cancel flag; the lease goes if it leaves ``running``
#: (``status`` on the right is the old value, so the new one is bound a second time).
UPDATE_RUN = (
    _SET_RECORD + "lease_owner = CASE WHEN ? = 'running' THEN lease_owner END, "
    "lease_expires_at = CASE WHEN ? = 'running' THEN lease_expires_at END WHERE run_id = ?"
)
#: Replace a record but its cancel flag, and release its lease (``suspend_run``).
PARK_RUN = _SET_RECORD + "lease_owner = NULL, lease_expires_at = NULL WHERE run_id = ?"
SET_LEASE = "UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE run_id = ?"
#: Running runs with no live lease, least recently updated first (index ``runs_runnable``);
#: never a run another engine drives (``metadata.engine`` set, see ``RunStore.claim_runs``).
SELECT_RUNNABLE = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' "
    "AND (lease_owner IS NULL OR coalesce(lease_expires_at, 0) <= ?) "
    "AND json_extract(metadata, '$.engine') IS NULL"
)

# ------------------------------------------------------------------------------- journal

ENTRY_COLUMNS = (
    "seq, key, phase, kind, name, input_hash, data, created_at, latency_ms, schema_version"
)
INSERT_ENTRY = (
    f"INSERT INTO journal (run_id, {ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: One entry, stored only while ``lease`` holds the run (``run_id, lease`` bound last).
INSERT_ENTRY_FENCED = (
    f"INSERT INTO journal (run_id, {ENTRY_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND lease_owner = ?)"
)
SELECT_JOURNAL = f"SELECT {ENTRY_COLUMNS} FROM journal WHERE run_id = ? ORDER BY id"
#: A tenant's run's entries (``run_id, tenant``): no row if the run is not the tenant's, one
#: row of NULLs if its journal is empty.
SELECT_JOURNAL_OF = (
    "SELECT " + ", ".join(f"j.{c.strip()}" for c in ENTRY_COLUMNS.split(",")) +
    " FROM runs r LEFT JOIN journal j ON j.run_id = r.run_id "
    "WHERE r.run_id = ? AND r.tenant = ? ORDER BY j.id")
#: Batches up to this size go in as one multi-row INSERT; larger ones as a transaction.
ROWS_PER_STATEMENT = 32


@functools.cache
def insert_entries_sql(n: int) -> str:
    """One INSERT of ``n`` entries: cheaper than a transaction of ``n`` INSERTs."""
    return INSERT_ENTRY + ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


# --------------------------------------------------------------------------------- tasks

TASK_COLUMNS = (
    "task_id, run_id, kind, step_key, queue, status, created_at, data, due_at, claimed_by, "
    "claimed_at, resolution, resolved_by, resolved_at"
)
INSERT_TASK = f"INSERT OR IGNORE INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 14)})"
SELECT_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?"
#: The tasks of one tenant's runs, as a condition on ``tasks`` (binds the tenant).
OF_TENANT = "run_id IN (SELECT run_id FROM runs WHERE tenant = ?)"
#: The task if its run is the tenant's (``task_id, tenant``).
SELECT_TASK_OF = f"{SELECT_TASK} AND {OF_TENANT}"
CLAIM_TASK = ("UPDATE tasks SET status = 'claimed', claimed_by = ?, claimed_at = ? "
              "WHERE task_id = ?")
RESOLVE_TASK = ("UPDATE tasks SET status = 'resolved', resolution = ?, resolved_by = ?, "
                "resolved_at = ? WHERE task_id = ?")


def list_tasks_sql(f: TaskFilter) -> tuple[str, list[Any]]:
    """The query for ``list_tasks``: oldest first, ties by id; ``tenant`` keeps the tasks
    of that tenant's runs."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("kind", f.kind), ("status", f.status), ("queue", f.queue),
                          ("run_id", f.run_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.tenant is not None:
        where.append(OF_TENANT)
        params.append(f.tenant)
    sql = f"SELECT {TASK_COLUMNS} FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY created_at, task_id LIMIT ? OFFSET ?", [*params, f.limit, f.offset]


# ---------------------------------------------------------------------------- encoding

def dumps(value: Any) -> str:
    """JSON text for a value (keel's codec); raises ValueError for what JSON cannot hold."""
    text = codec_dumps(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escape it, json.loads restores it
            text = codec_dumps(value, ensure_ascii=True)
    return text


def not_json(what: str, exc: Exception) -> StoreError:
    return StoreError(f"cannot store {what}: it is not JSON-able ({exc}).")


def json_text(value: Any, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise not_json(what, exc) from None


def run_row(r: RunRecord) -> Row:
    """The record as ``RUN_COLUMNS``."""
    field = "input"
    try:
        input_ = dumps(r.input)
        field = "output"
        output = dumps(r.output)
        field = "error"
        error = None if r.error is None else dumps(r.error)
        field = "usage"
        usage = dumps(r.usage)
        field = "metadata"
        metadata = dumps(r.metadata)
    except (TypeError, ValueError) as exc:
        raise not_json(f"the {field} of run {r.run_id!r}", exc) from None
    return (r.run_id, r.agent, r.status, r.target, input_, output, error, usage, metadata,
            r.created_at, r.updated_at, r.schema_version, r.lease_owner, r.lease_expires_at,
            r.deadline_at, int(r.cancel_requested), r.tenant, r.user, r.conversation)


def update_args(r: RunRecord) -> Row:
    """The parameters of ``UPDATE_RUN`` for the record."""
    row = run_row(r)
    return (*row[1:12], r.deadline_at, r.status, r.status, r.run_id)


def park_args(r: RunRecord, status: str) -> Row:
    """The parameters of ``PARK_RUN`` for the record with ``status``."""
    row = run_row(r)
    return (row[1], status, *row[3:12], r.deadline_at, r.run_id)


def entry_row(run_id: str, e: JournalEntry) -> Row:
    """The entry as ``run_id, ENTRY_COLUMNS``."""
    try:
        data = dumps(e.data)
    except (TypeError, ValueError) as exc:
        raise not_json(f"the {e.phase} entry for step {e.key!r} of run {run_id!r}",
                       exc) from None
    return (run_id, e.seq, e.key, e.phase, e.kind, e.name, e.input_hash, data, e.created_at,
            e.latency_ms, e.schema_version)


def task_row(t: HumanTask) -> Row:
    """The task as ``TASK_COLUMNS``."""
    data = json_text(t.data, f"the data of task {t.task_id!r}")
    resolution = json_text(t.resolution, f"the resolution of task {t.task_id!r}")
    return (t.task_id, t.run_id, t.kind, t.step_key, t.queue, t.status, t.created_at, data,
            t.due_at, t.claimed_by, t.claimed_at, resolution, t.by, t.resolved_at)


# ---------------------------------------------------------------------------- decoding


def loads(label: str, owner: str, what: str, text: str) -> Any:
    """Parse stored JSON; ``owner`` (``run 'x'``) and ``what`` name it if it is broken."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{owner} in {label} has unreadable JSON in its {what} ({exc}); the file was "
            "changed outside keel or is damaged - restore it from a backup.") from None


def record_from_row(row: Row, label: str) -> RunRecord:
    owner = f"run {row[0]!r}"
    return RunRecord(
        run_id=row[0], agent=row[1], status=row[2], target=row[3],
        input=loads(label, owner, "input", row[4]),
        output=loads(label, owner, "output", row[5]),
        error=None if row[6] is None else loads(label, owner, "error", row[6]),
        usage=loads(label, owner, "usage", row[7]),
        metadata=loads(label, owner, "metadata", row[8]),
        created_at=row[9], updated_at=row[10], schema_version=row[11],
        lease_owner=row[12], lease_expires_at=row[13], deadline_at=row[14],
        cancel_requested=bool(row[15]), tenant=row[16], user=row[17], conversation=row[18])


def entry_from_row(row: Row, run_id: str, label: str) -> JournalEntry:
    try:
        data = json.loads(row[6])
    except (TypeError, ValueError):
        data = loads(label, f"run {run_id!r}",
                     f"journal entry for step {row[1]!r} ({row[2]})", row[6])
    return JournalEntry(
        seq=row[0], key=row[1], phase=row[2], kind=row[3], name=row[4], input_hash=row[5],
        data=data, created_at=row[7], latency_ms=row[8], schema_version=row[9])


def task_from_row(row: Row, label: str) -> HumanTask:
    owner = f"task {row[0]!r}"
    return HumanTask(
        task_id=row[0], run_id=row[1], kind=row[2], step_key=row[3], queue=row[4],
        status=row[5], created_at=row[6], data=loads(label, owner, "data", row[7]),
        due_at=row[8], claimed_by=row[9], claimed_at=row[10],
        resolution=loads(label, owner, "resolution", row[11]), by=row[12],
        resolved_at=row[13])
