"""Records, journal entries and tasks to and from the Postgres store's rows.

Payloads are stored as JSON text written with ``ensure_ascii``: Postgres ``text`` cannot hold
NUL, and UTF-8 cannot hold a lone surrogate, but their ``\\u`` escapes are plain ASCII and
``json.loads`` turns them back into the same ``str``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from keel.core import StoreError, dumps
from keel.store._base import HumanTask, JournalEntry, RunRecord

Row = tuple[Any, ...]


def _dumps(value: Any, what: str) -> str:
    try:
        return dumps(value, ensure_ascii=True)  # keel's codec, as the SQLite store
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what}: it is not JSON-able ({exc}).") from None


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} in the Postgres run store is not readable JSON ({exc}); the row was "
            "changed outside keel - restore it from a backup.") from None


# ------------------------------------------------------------------------------ runs


def run_values(r: RunRecord) -> dict[str, Any]:
    """The record's columns by name (JSON fields as text), lease fields included."""
    of = f"of run {r.run_id!r}"
    return {
        "run_id": r.run_id, "agent": r.agent, "status": r.status, "target": r.target,
        "input": _dumps(r.input, f"the input {of}"),
        "output": _dumps(r.output, f"the output {of}"),
        "error": None if r.error is None else _dumps(r.error, f"the error {of}"),
        "usage": _dumps(r.usage, f"the usage {of}"),
        "metadata": _dumps(r.metadata, f"the metadata {of}"),
        "created_at": r.created_at, "updated_at": r.updated_at,
        "lease_owner": r.lease_owner, "lease_expires_at": r.lease_expires_at,
        "deadline_at": r.deadline_at, "cancel_requested": r.cancel_requested,
        "schema_version": r.schema_version, "tenant": r.tenant, "user": r.user,
        "conversation": r.conversation,
    }


def record(row: Row) -> RunRecord:
    """A record from a row of ``RUN_COLUMNS``."""
    of = f"run {row[0]!r}:"
    return RunRecord(
        run_id=row[0], agent=row[1], status=row[2], target=row[3],
        input=_loads(row[4], f"{of} input"), output=_loads(row[5], f"{of} output"),
        error=None if row[6] is None else _loads(row[6], f"{of} error"),
        usage=_loads(row[7], f"{of} usage"), metadata=_loads(row[8], f"{of} metadata"),
        created_at=row[9], updated_at=row[10], lease_owner=row[11], lease_expires_at=row[12],
        deadline_at=row[13], cancel_requested=row[14], schema_version=row[15],
        tenant=row[16], user=row[17], conversation=row[18])


# --------------------------------------------------------------------------- journal


def entry_values(run_id: str, e: JournalEntry) -> tuple[Any, ...]:
    """One entry's columns after ``run_id``, in ``ENTRY_COLUMNS`` order. Times are made
    floats: a batch's columns go as arrays, which take one type per column."""
    what = f"the {e.phase} entry for step {e.key!r} of run {run_id!r}"
    data = _dumps(e.data, what)
    try:
        return (int(e.seq), e.key, e.phase, e.kind, e.name, e.input_hash, data,
                float(e.created_at), float(e.latency_ms), int(e.schema_version))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what}: seq, created_at, latency_ms and "
                         f"schema_version must be numbers ({exc}).") from None


def entry_columns(run_id: str, entries: Sequence[JournalEntry]) -> list[list[Any]]:
    """The entries as one list per column (for ``unnest``), in ``ENTRY_COLUMNS`` order."""
    return [list(column) for column in zip(*(entry_values(run_id, e) for e in entries),
                                           strict=True)]


def named_columns(run_id: str, entries: Sequence[JournalEntry]) -> dict[str, list[Any]]:
    """``entry_columns`` as the named parameters ``u0`` ... ``u9``; empty lists for none."""
    columns = entry_columns(run_id, entries) if entries else [[] for _ in range(10)]
    return {f"u{i}": column for i, column in enumerate(columns)}


def entry(run_id: str, row: Row) -> JournalEntry:
    """An entry from a row of ``ENTRY_COLUMNS``."""
    return JournalEntry(
        seq=row[0], key=row[1], phase=row[2], kind=row[3], name=row[4], input_hash=row[5],
        data=_loads(row[6], f"run {run_id!r}: the {row[2]} entry for step {row[1]!r}"),
        created_at=row[7], latency_ms=row[8], schema_version=row[9])


# ----------------------------------------------------------------------------- tasks


def task_values(t: HumanTask) -> tuple[Any, ...]:
    """The task's columns in ``TASK_COLUMNS`` order."""
    of = f"of {t.kind} {t.task_id!r}"
    return (t.task_id, t.run_id, t.kind, t.step_key, t.queue, t.status, t.created_at,
            _dumps(t.data, f"the data {of}"), t.due_at, t.claimed_by, t.claimed_at,
            _dumps(t.resolution, f"the resolution {of}"), t.by, t.resolved_at)


def dump_resolution(task_id: str, resolution: Any) -> str:
    return _dumps(resolution, f"the resolution of task {task_id!r}")


def task(row: Row) -> HumanTask:
    """A task from a row of ``TASK_COLUMNS``."""
    of = f"task {row[0]!r}:"
    return HumanTask(
        task_id=row[0], run_id=row[1], kind=row[2], step_key=row[3], queue=row[4],
        status=row[5], created_at=row[6], data=_loads(row[7], f"{of} data"), due_at=row[8],
        claimed_by=row[9], claimed_at=row[10], resolution=_loads(row[11], f"{of} resolution"),
        by=row[12], resolved_at=row[13])
