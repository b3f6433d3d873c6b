"""The errors every run store raises, worded once so that all backends say the same thing."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Container, Sequence

from keel.core import (
    ConfigError,
    LeaseLost,
    RunLeased,
    RunNotFound,
    StoreError,
    TaskConflict,
    TaskNotFound,
)
from keel.store._base import HumanTask, JournalEntry


def not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run {run_id!r} in this store; `keel runs list` shows the runs.")


def task_not_found(task_id: str) -> TaskNotFound:
    return TaskNotFound(f"no approval or escalation {task_id!r} in this store; `keel approvals "
                        "list` and `keel escalations list` show the open ones.")


def run_exists(run_id: str) -> StoreError:
    return StoreError(f"a run with id {run_id!r} already exists; give the new run another id, "
                      "or use update_run to change this one.")


def duplicate_entry(run_id: str, clash: object, *, in_batch: bool = False) -> StoreError:
    """A batch repeats a ``(key, phase)``: ``clash`` is that pair (already stored, or twice in
    the batch when ``in_batch``), or anything else when the backend cannot say which."""
    if isinstance(clash, tuple) and len(clash) == 2:
        key, phase = clash
        what = (f"this batch holds the {phase} entry for step {key!r} twice" if in_batch
                else f"it already has the {phase} entry for step {key!r}")
    else:
        what = "one of these entries is already recorded, or repeated within the batch"
    return StoreError(
        f"run {run_id!r}: {what}. A journal holds one intent and one result per step, so "
        "nothing of this batch was stored; give each step a distinct key.")


def repeated_in_batch(run_id: str, entries: Sequence[JournalEntry]) -> StoreError | None:
    """The error for the first ``(key, phase)`` that ``entries`` holds twice; None if none is
    repeated."""
    seen: set[tuple[str, str]] = set()
    for e in entries:
        pair = (e.key, e.phase)
        if pair in seen:
            return duplicate_entry(run_id, pair, in_batch=True)
        seen.add(pair)
    return None


def already_stored(run_id: str, entries: Sequence[JournalEntry],
                   stored: Container[tuple[str, str]]) -> StoreError:
    """The error for a batch with an entry the journal already has: the first of ``entries``
    found in ``stored`` (the run's ``(key, phase)`` pairs), else a general one."""
    return duplicate_entry(run_id, next(
        ((e.key, e.phase) for e in entries if (e.key, e.phase) in stored), None))


def lease_lost(run_id: str, owner: str, holder: str | None) -> LeaseLost:
    who = f"worker {holder}" if holder else "no worker"
    return LeaseLost(f"run {run_id}: this worker ({owner}) no longer holds the run's lease "
                     f"({who} does); nothing was written. Another worker continues the run.")


def leased(run_id: str, holder: str | None, expires_at: float | None) -> RunLeased:
    left = max(0.0, (expires_at or 0.0) - time.time())
    return RunLeased(f"run {run_id} is being continued by worker {holder} (lease ends in "
                     f"{left:.0f} s); wait for it, or for the lease to expire if that worker "
                     "died.", holder=holder, expires_at=expires_at)


def task_conflict_if_resolved(task: HumanTask) -> None:
    if task.status == "resolved":
        raise TaskConflict(
            f"{task.kind} {task.task_id} was already decided by {task.by} "
            f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(task.resolved_at or 0))}; "
            "nothing was changed.")


def claimed_by_other(task: HumanTask) -> TaskConflict:
    return TaskConflict(f"{task.kind} {task.task_id} is already claimed by {task.claimed_by}; "
                        "nothing was changed.")


def run_not_waiting(run_id: str, status: str, task: HumanTask) -> TaskConflict:
    return TaskConflict(f"run {run_id} is {status}; nothing waits for {task.kind} "
                        f"{task.task_id} any more. Nothing was changed.")


def entry_conflict(task: HumanTask, exc: StoreError) -> TaskConflict:
    return TaskConflict(f"{task.kind} {task.task_id}: {exc}")


def check_seconds(seconds: object) -> None:
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not math.isfinite(seconds) or seconds <= 0):
        raise ConfigError("seconds", f"a lease lasts a positive number of seconds, not "
                                     f"{seconds!r}")


def check_names(what: str, values: Collection[str]) -> Collection[str]:
    """A collection of names, refusing a bare string (which would be taken letter by letter)."""
    if isinstance(values, str | bytes):
        raise ConfigError(what, f"must be a collection of names such as [{values!r}], not a "
                                "string")
    return values


def close_of_other_run(task: HumanTask, close_run_id: str) -> StoreError:
    return StoreError(
        f"{task.kind} {task.task_id} belongs to run {task.run_id!r}; the record that closes it "
        f"is run {close_run_id!r}. Nothing was changed.")
