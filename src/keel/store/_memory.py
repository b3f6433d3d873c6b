"""The in-memory run store: fast, process-local, gone when the process ends.

Every method runs without an ``await`` in the middle, so each one is atomic with respect to
other coroutines on the event loop (the memory store is not shared across threads).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Collection, Sequence
from typing import Any

from keel.core import ConfigError, StoreError
from keel.store._base import (
    CANCEL_REQUEST,
    ENGINE_KEY,
    TERMINAL_STATUSES,
    HumanTask,
    JournalEntry,
    RunFilter,
    RunRecord,
    RunStatus,
    RunStore,
    TaskFilter,
    cancel_request,
    check_conversation,
    check_tenant,
    who_acted,
)
from keel.store._messages import (
    already_stored,
    check_names,
    check_seconds,
    claimed_by_other,
    close_of_other_run,
    duplicate_entry,
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
from keel.store._records import (
    Feedback,
    MemoryRecords,
    Setting,
    check_feedback_query,
    check_put_setting,
    check_setting_key,
)
from keel.store._stats import StatsQuery, StatsResult, cache_hit, compute, tool_failure

_LEASE_FIELDS = ("lease_owner", "lease_expires_at", "cancel_requested")
#: Set when a run is created; never changed by the writes that replace its record.
_FIXED_FIELDS = ("tenant", "user", "conversation")


def merged(old: RunRecord, new: RunRecord) -> RunRecord:
    """``new`` with the lease fields kept from ``old`` (released if it leaves running), and
    its tenant and user."""
    keep: dict[str, Any] = {f: getattr(old, f) for f in (*_LEASE_FIELDS, *_FIXED_FIELDS)}
    if new.status != "running":
        keep["lease_owner"] = keep["lease_expires_at"] = None
    return dataclasses.replace(new, **keep)


def _scope(tenant: str | None) -> dict[str, Any]:
    """``tenant=`` for a call of one of the store's own methods: only when given, so that a
    subclass that overrides ``get_run`` / ``get_task`` as keel had them still works."""
    return {} if tenant is None else {"tenant": tenant}


class MemoryStore(RunStore):
    """Keeps runs in dicts. For tests, benchmarks and runs that need no durability."""

    def __init__(self, *, outbox: bool = False) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._journals: dict[str, list[JournalEntry]] = {}
        self._recorded: dict[str, set[tuple[str, str]]] = {}
        self._tasks: dict[str, HumanTask] = {}
        self._outbox = bool(outbox)
        self._rows: dict[int, _Row] = {}  # the outbox, by position
        self._event_ids: set[str] = set()
        self._position = 0
        self._records = MemoryRecords()

    @property
    def outbox(self) -> bool:
        return self._outbox

    def _emit(self, events: Sequence[Event | None]) -> None:
        """Add events to the outbox (after every check of the write passed: nothing awaits
        between here and the write, so both happen or neither); a known id is skipped."""
        for event in events:
            if event is None or event.id in self._event_ids:
                continue
            run = self._runs.get(event.run_id or "")
            if run is not None and (event.agent, event.tenant) != (run.agent, run.tenant):
                event = dataclasses.replace(event, agent=run.agent, tenant=run.tenant)
            self._position += 1
            self._event_ids.add(event.id)
            self._rows[self._position] = _Row(event)

    async def read_outbox(self, after: int = 0, limit: int = 500, *,
                          claim_s: float = 30.0) -> list[tuple[int, Event]]:
        after, limit, claim_s = check_read(after, limit, claim_s)
        now = time.time()
        out: list[tuple[int, Event]] = []
        for position in sorted(p for p in self._rows if p > after):
            row = self._rows[position]
            if row.published_at is None and row.claimed_until <= now:
                row.claimed_until = now + claim_s
                out.append((position, row.event))
                if len(out) >= limit:
                    break
        return out

    async def mark_published(self, positions: Collection[int]) -> int:
        now, marked = time.time(), 0
        for position in check_positions(positions):
            row = self._rows.get(position)
            if row is not None and row.published_at is None:
                row.published_at = now
                marked += 1
        return marked

    async def prune_outbox(self, before: float) -> int:
        before = check_before(before)
        doomed = [p for p, row in self._rows.items()
                  if row.published_at is not None and row.published_at < before]
        for position in doomed:
            self._event_ids.discard(self._rows.pop(position).event.id)
        return len(doomed)

    # ------------------------------------------------------------------------------ runs

    async def create_run(self, record: RunRecord) -> None:
        if record.run_id in self._runs:
            raise run_exists(record.run_id)
        self._runs[record.run_id] = record
        self._journals[record.run_id] = []
        self._recorded[record.run_id] = set()
        if self._outbox:
            self._emit([run_started(record)])

    def _fence(self, run_id: str, lease: str | None) -> RunRecord:
        record = self._runs.get(run_id)
        if record is None:
            raise not_found(run_id)
        if lease is not None and record.lease_owner != lease:
            raise lease_lost(run_id, lease, record.lease_owner)
        return record

    def _check_entries(self, run_id: str, entries: Sequence[JournalEntry]) -> None:
        recorded = self._recorded[run_id]
        clash = repeated_in_batch(run_id, entries)
        if clash is None and any((e.key, e.phase) in recorded for e in entries):
            clash = already_stored(run_id, entries, recorded)
        if clash is not None:
            raise clash

    def _add_entries(self, run_id: str, entries: Sequence[JournalEntry]) -> None:
        self._recorded[run_id].update((e.key, e.phase) for e in entries)
        self._journals[run_id].extend(entries)
        if self._outbox:
            run = self._runs[run_id]
            self._emit(tool_calls(run_id, entries, agent=run.agent, tenant=run.tenant))

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        self._fence(run_id, lease)
        if len(entries) == 1:  # the journal's usual call, without a temporary set
            entry = entries[0]
            one = (entry.key, entry.phase)
            recorded = self._recorded[run_id]
            if one in recorded:
                raise duplicate_entry(run_id, one)
            recorded.add(one)
            self._journals[run_id].append(entry)
            if self._outbox:
                run = self._runs[run_id]
                self._emit(tool_calls(run_id, entries, agent=run.agent, tenant=run.tenant))
            return
        self._check_entries(run_id, entries)
        self._add_entries(run_id, entries)

    async def put_feedback(self, feedback: Feedback, *, tenant: str | None = None) -> Feedback:
        run = await self.get_run(feedback.run_id, **_scope(tenant))
        return self._records.put_feedback(feedback, run.tenant)

    async def list_feedback(self, *, run_ids: Collection[str] | None = None,
                            tenant: str | None = None, since: float | None = None,
                            limit: int = 10_000) -> list[Feedback]:
        check_feedback_query(limit, since)
        return self._records.list_feedback(run_ids, check_tenant(tenant), since, limit)

    async def get_setting(self, key: str) -> Setting | None:
        return self._records.get_setting(check_setting_key(key))

    async def put_setting(self, key: str, value: Any, *, expect_version: int,
                          by: str | None = None, reason: str | None = None) -> Setting:
        body = check_put_setting(key, value, expect_version, by, reason)
        return self._records.put_setting(key, json.loads(body), expect_version, by, reason,
                                         time.time())

    async def list_settings(self, prefix: str = "") -> list[Setting]:
        return self._records.list_settings(str(prefix))

    async def setting_history(self, key: str, *, limit: int = 1000) -> list[Setting]:
        check_feedback_query(limit, None)
        return self._records.setting_history(check_setting_key(key), limit)

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        tenant = check_tenant(tenant)
        record = self._runs.get(run_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise not_found(run_id)
        return record

    async def read_journal(self, run_id: str, *,
                           tenant: str | None = None) -> list[JournalEntry]:
        await self.get_run(run_id, **_scope(tenant))
        return list(self._journals[run_id])

    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]:
        f = filt or RunFilter()
        rows = [r for r in self._runs.values()
                if (f.status is None or r.status == f.status)
                and (f.agent is None or r.agent == f.agent)
                and (f.tenant is None or r.tenant == f.tenant)
                and (f.conversation is None or r.conversation == f.conversation)]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return rows[f.offset:f.offset + f.limit]

    async def stats(self, query: StatsQuery | None = None) -> StatsResult:
        """Run analytics, computed in Python over the runs in memory."""
        escalated = {t.run_id for t in self._tasks.values() if t.kind == "escalation"}
        failures = [(run_id, *failed) for run_id, entries in self._journals.items()
                    for failed in map(tool_failure, entries) if failed is not None]
        hits = [(run_id, saved) for run_id, entries in self._journals.items()
                for saved in map(cache_hit, entries) if saved is not None]
        return compute(query or StatsQuery(), list(self._runs.values()), escalated, failures,
                       hits)

    async def update_run(self, record: RunRecord, *, lease: str | None = None) -> None:
        old = self._fence(record.run_id, lease)
        self._runs[record.run_id] = merged(old, record)
        if self._outbox:
            self._emit([run_status(record)])

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        old = self._fence(record.run_id, lease)
        self._check_entries(record.run_id, entries)
        self._add_entries(record.run_id, entries)
        self._runs[record.run_id] = merged(old, record)
        if self._outbox:
            self._emit([run_status(record)])

    async def prune_runs(self, *, before: float,
                         statuses: Collection[str] = TERMINAL_STATUSES) -> int:
        statuses = check_names("statuses", statuses)
        if isinstance(before, bool) or not isinstance(before, int | float):
            raise ConfigError("before", f"must be a time in epoch seconds, not {before!r}")
        doomed = [r.run_id for r in self._runs.values()
                  if r.status in statuses and r.updated_at < before]
        self._drop_runs(doomed)
        return len(doomed)

    async def delete_conversation(self, conversation: str, *, tenant: str | None) -> int:
        conversation, tenant = check_conversation(conversation, tenant)
        doomed = [r.run_id for r in self._runs.values()
                  if r.conversation == conversation and r.tenant == tenant]
        self._drop_runs(doomed)
        gone = set(doomed)
        for position in [p for p, row in self._rows.items() if row.event.run_id in gone]:
            self._event_ids.discard(self._rows.pop(position).event.id)
        return len(doomed)

    def _drop_runs(self, doomed: list[str]) -> None:
        for run_id in doomed:
            del self._runs[run_id], self._journals[run_id], self._recorded[run_id]
        gone = set(doomed)
        for task_id in [t.task_id for t in self._tasks.values() if t.run_id in gone]:
            del self._tasks[task_id]
        self._records.forget_runs(gone)

    # ---------------------------------------------------------------------------- leases

    async def acquire_lease(self, run_id: str, owner: str, seconds: float, *,
                            steal_from: str | None = None) -> RunRecord:
        check_seconds(seconds)
        record = await self.get_run(run_id)
        now = time.time()
        holder = record.lease_owner
        live = holder is not None and (record.lease_expires_at or 0.0) > now
        if live and holder not in (owner, steal_from):
            raise leased(run_id, holder, record.lease_expires_at)
        record = dataclasses.replace(record, lease_owner=owner, lease_expires_at=now + seconds)
        self._runs[run_id] = record
        return record

    async def renew_leases(self, owner: str, seconds: float) -> set[str]:
        check_seconds(seconds)
        until = time.time() + seconds
        held = {r.run_id for r in self._runs.values() if r.lease_owner == owner}
        for run_id in held:
            self._runs[run_id] = dataclasses.replace(self._runs[run_id], lease_expires_at=until)
        return held

    async def release_lease(self, run_id: str, owner: str) -> None:
        record = self._runs.get(run_id)
        if record is not None and record.lease_owner == owner:
            self._runs[run_id] = dataclasses.replace(record, lease_owner=None,
                                                     lease_expires_at=None)

    async def claim_runs(self, owner: str, seconds: float, *,
                         agents: Collection[str] | None = None,
                         limit: int = 1) -> list[RunRecord]:
        check_seconds(seconds)
        if agents is not None:
            agents = check_names("agents", agents)
        now = time.time()
        ready = sorted((r for r in self._runs.values()
                        if r.status == "running"
                        and (r.lease_owner is None or (r.lease_expires_at or 0.0) <= now)
                        and (agents is None or r.agent in agents)
                        and r.metadata.get(ENGINE_KEY) is None),
                       key=lambda r: (r.updated_at, r.run_id))[:max(0, limit)]
        claimed = []
        for r in ready:
            record = dataclasses.replace(r, lease_owner=owner, lease_expires_at=now + seconds)
            self._runs[r.run_id] = record
            claimed.append(record)
        return claimed

    async def request_cancel(self, run_id: str, *, reason: str | None = None,
                             by: str | None = None,
                             tenant: str | None = None) -> RunRecord:
        record = await self.get_run(run_id, **_scope(tenant))
        request = cancel_request(reason, by)
        metadata = record.metadata if request is None else {**record.metadata,
                                                             CANCEL_REQUEST: request}
        record = dataclasses.replace(record, cancel_requested=True, metadata=metadata)
        self._runs[run_id] = record
        return record

    # ------------------------------------------------------------------------ human tasks

    async def put_task(self, task: HumanTask) -> bool:
        await self.get_run(task.run_id)
        if task.task_id in self._tasks:
            return False
        self._tasks[task.task_id] = task
        if self._outbox:
            self._emit([task_requested(task)])
        return True

    def _tenant_of(self, task: HumanTask) -> str | None:
        run = self._runs.get(task.run_id)
        return None if run is None else run.tenant

    async def get_task(self, task_id: str, *, tenant: str | None = None) -> HumanTask:
        tenant = check_tenant(tenant)
        task = self._tasks.get(task_id)
        if task is None or (tenant is not None and self._tenant_of(task) != tenant):
            raise task_not_found(task_id)
        return task

    async def list_tasks(self, filt: TaskFilter | None = None) -> list[HumanTask]:
        f = filt or TaskFilter()
        rows = [t for t in self._tasks.values()
                if (f.kind is None or t.kind == f.kind)
                and (f.status is None or t.status == f.status)
                and (f.queue is None or t.queue == f.queue)
                and (f.run_id is None or t.run_id == f.run_id)
                and (f.tenant is None or self._tenant_of(t) == f.tenant)]
        rows.sort(key=lambda t: (t.created_at, t.task_id))
        return rows[f.offset:f.offset + f.limit]

    async def claim_task(self, task_id: str, who: str, *,
                         tenant: str | None = None) -> HumanTask:
        task = await self.get_task(task_id, **_scope(tenant))
        task_conflict_if_resolved(task)
        if task.status == "claimed" and task.claimed_by != who:
            raise claimed_by_other(task)
        task = dataclasses.replace(task, status="claimed", claimed_by=who,
                                   claimed_at=task.claimed_at if task.claimed_by == who
                                   else time.time())
        self._tasks[task_id] = task
        return task

    async def resolve_task(self, task_id: str, resolution: Any, *, by: str | None = None,
                           entry: JournalEntry | None = None, close: RunRecord | None = None,
                           resolved_by: str | None = None,
                           tenant: str | None = None) -> HumanTask:
        by = who_acted(by, resolved_by, "resolved_by")
        task = await self.get_task(task_id, **_scope(tenant))
        task_conflict_if_resolved(task)
        if close is not None and close.run_id != task.run_id:
            raise close_of_other_run(task, close.run_id)
        run = await self.get_run(task.run_id)
        if run.status in TERMINAL_STATUSES:
            raise run_not_waiting(run.run_id, run.status, task)
        entries = [] if entry is None else [entry]
        try:
            self._check_entries(run.run_id, entries)
        except StoreError as exc:
            raise entry_conflict(task, exc) from None
        now = time.time()
        self._add_entries(run.run_id, entries)
        task = dataclasses.replace(task, status="resolved", resolution=resolution,
                                   by=by, resolved_at=now)
        self._tasks[task_id] = task
        if self._outbox:
            self._emit([task_decided(task, resolution, by, now),
                        None if close is None else run_status(close)])
        if close is not None:
            self._runs[run.run_id] = merged(run, close)
        elif run.status == "suspended":
            self._runs[run.run_id] = dataclasses.replace(
                run, status="running", updated_at=now, lease_owner=None, lease_expires_at=None)
        return task

    async def suspend_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                          waiting_on: Collection[str], lease: str | None = None) -> str:
        waiting_on = check_names("waiting_on", waiting_on)
        old = self._fence(record.run_id, lease)
        self._check_entries(record.run_id, entries)
        waiting = any(t.status != "resolved" for t in
                      (self._tasks.get(i) for i in waiting_on) if t is not None)
        status: RunStatus = "suspended" if waiting else "running"
        self._add_entries(record.run_id, entries)
        self._runs[record.run_id] = dataclasses.replace(
            merged(old, record), status=status, lease_owner=None, lease_expires_at=None)
        if self._outbox and status == "suspended":
            self._emit([run_status(self._runs[record.run_id], waiting_on=waiting_on)])
        return status


@dataclasses.dataclass(slots=True)
class _Row:
    event: Event
    published_at: float | None = None
    claimed_until: float = 0.0
