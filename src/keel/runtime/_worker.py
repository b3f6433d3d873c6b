"""Workers and cancellation: the fleet side of runs.

A :class:`Worker` claims runnable runs from a shared store (a suspended run whose decision
arrived, a run whose worker died) and continues them, ``concurrency`` at a time. The lease
taken by ``claim_runs`` guarantees that no two workers continue the same run. A run whose
worker was a process on this host that no longer exists (SIGKILL, OOM) is taken over at once,
as a resume does; a dead worker elsewhere is waited out until its lease expires.

:func:`cancel_run` stops a run cleanly: an idle run (suspended, or running with no live
worker) is marked ``cancelled`` at once with a journaled ``cancel`` step; a run that a
worker is continuing gets a cancel request, which that worker acts on within a third of the
lease time (the run's task is cancelled, the stop is journaled, ``on_run_end`` middleware,
where compensation hooks live, sees status ``cancelled``).

:func:`resolve_unknown_outcome` records a person's finding about a step whose outcome is
unknown (the run stopped with :class:`keel.UnknownOutcome`), so the run can be resumed without
running that step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from keel.core import (
    ConfigError,
    KeelError,
    RunEvent,
    RunLeased,
    StoreError,
    UserError,
    redact,
)
from keel.runtime._engines import notify_engine
from keel.runtime._lease import DEFAULT_LEASE_SECONDS, holder_is_dead, keeper_for, worker_id
from keel.runtime._middleware import RunEndInput
from keel.runtime._runner import Launch, Runnable, execute
from keel.store import (
    ENGINE_KEY,
    TERMINAL_STATUSES,
    JournalEntry,
    RunFilter,
    RunRecord,
    RunStore,
    required_store,
    scoped,
    store_moved,
)

_log = logging.getLogger("keel.worker")
#: How many running runs per agent a worker looks through for a dead local holder per poll.
DEAD_SCAN_LIMIT = 500


@dataclass(frozen=True, slots=True)
class WorkOutcome:
    """What happened to one claimed run."""

    run_id: str
    agent: str
    status: str  # completed, suspended, failed, cancelled, lost, interrupted (store outage)
    error: str | None = None


class Worker:
    """Continues runnable runs of the given agents (or flows) from a shared store."""

    def __init__(self, agents: Iterable[Runnable], *, store: RunStore,
                 concurrency: int = 8, poll_seconds: float = 1.0,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 on_event: Callable[[str, RunEvent], None] | None = None) -> None:
        """``on_event(run_id, event)`` sees the events of every run this worker continues
        (for a server that streams them)."""
        self.agents = {a.name: a for a in agents}
        self.on_event = on_event
        self._woken = asyncio.Event()
        if not self.agents:
            raise ConfigError("agents", "a worker needs at least one agent to run")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency", f"must be a whole number >= 1, not {concurrency!r}")
        if not poll_seconds > 0:
            raise ConfigError("poll_seconds", "must be > 0")
        if not lease_seconds > 0:
            raise ConfigError("lease_seconds", "must be > 0")
        self.store = store
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        keeper_for(store, lease_seconds)

    async def run_once(self) -> list[WorkOutcome]:
        """Claim what is runnable now (up to ``concurrency``) and drive it until each run
        completes, suspends or fails."""
        claimed = await self._claim(self.concurrency)
        return list(await asyncio.gather(*(self._continue(r.run_id, r.agent)
                                           for r in claimed)))

    async def run_until_idle(self, *, max_rounds: int = 1000) -> list[WorkOutcome]:
        """Keep claiming until nothing is runnable (for tests and batch jobs)."""
        done: list[WorkOutcome] = []
        for _ in range(max_rounds):
            batch = await self.run_once()
            if not batch:
                break
            done.extend(batch)
        return done

    async def serve(self, *, stop: asyncio.Event | None = None) -> None:
        """Poll and continue runs until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        running: set[asyncio.Task[WorkOutcome]] = set()
        while not stop.is_set():
            free = self.concurrency - len(running)
            if free > 0:
                for r in await self._claim(free):
                    task = asyncio.create_task(self._continue(r.run_id, r.agent))
                    running.add(task)
                    task.add_done_callback(running.discard)
            await self._pause(stop)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    def wake(self) -> None:
        """Claim at once instead of at the next poll (a decision just made a run runnable).
        Use this rather than resuming the run beside the worker: in one process the two
        would share a lease holder, and the lease could not keep them apart."""
        self._woken.set()

    async def _pause(self, stop: asyncio.Event) -> None:
        """Until the next poll, a :meth:`wake` or ``stop``."""
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._woken.wait())}
        try:
            await asyncio.wait(waits, timeout=self.poll_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            self._woken.clear()

    async def _claim(self, limit: int) -> list[RunRecord]:
        """Up to ``limit`` runs to continue: the store's runnable runs (decided, or with an
        expired lease), then running runs whose lease a dead process of this host holds."""
        claimed = list(await self.store.claim_runs(worker_id(), self.lease_seconds,
                                                   agents=list(self.agents), limit=limit))
        if len(claimed) < limit:
            taken = {r.run_id for r in claimed}
            claimed += await self._take_over_dead(limit - len(claimed), taken)
        return claimed

    async def _take_over_dead(self, limit: int, taken: set[str]) -> list[RunRecord]:
        """Lease running runs whose holder is a process of this host that no longer exists,
        without waiting for the lease to expire (``holder_is_dead`` never says so for a
        worker on another host)."""
        now = time.time()
        found: list[RunRecord] = []
        for name in self.agents:
            for record in await self.store.list_runs(
                    RunFilter(status="running", agent=name, limit=DEAD_SCAN_LIMIT)):
                if len(found) >= limit:
                    return found
                holder = record.lease_owner
                if (record.run_id in taken or holder is None
                        or record.metadata.get(ENGINE_KEY) is not None  # another engine's
                        or (record.lease_expires_at or 0.0) <= now
                        or not holder_is_dead(holder)):
                    continue  # free or expired leases are claim_runs' part
                try:
                    found.append(await self.store.acquire_lease(
                        record.run_id, worker_id(), self.lease_seconds, steal_from=holder))
                except RunLeased:
                    continue  # another worker took it first
        return found

    async def _continue(self, run_id: str, agent_name: str) -> WorkOutcome:
        agent = self.agents[agent_name]
        try:
            emit = None if self.on_event is None else functools.partial(self.on_event, run_id)
            await execute(agent, self.store, Launch(resume_id=run_id, claimed=True, emit=emit))
        except KeelError as exc:
            status = _outcome_status(exc)
            _log.info("run %s %s: %s", run_id, status, exc, extra={"run_id": run_id})
            return WorkOutcome(run_id, agent_name, status, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in user code must not stop the worker
            _log.exception("run %s failed", run_id, extra={"run_id": run_id})
            return WorkOutcome(run_id, agent_name, "failed", f"{type(exc).__name__}: {exc}")
        return WorkOutcome(run_id, agent_name, "completed")


async def hand_back(store: RunStore, *, grace_s: float = 0.0) -> list[str]:
    """Stop the runs this process is continuing in ``store`` without failing them, for a
    graceful shutdown: each run gets ``grace_s`` seconds to finish (or to suspend) on its
    own, then stops at its current step, stays ``running`` and has its lease released, so
    that any worker (or ``keel resume``) continues it from its journal at once. Returns the
    ids of the runs handed back."""
    keeper = keeper_for(store)
    tasks = {h.run_id: h.task for h in keeper.held.values()
             if h.task is not None and not h.task.done()}
    if tasks and grace_s > 0:
        await asyncio.wait(set(tasks.values()), timeout=grace_s)
    stopped: list[str] = []
    for run_id, task in tasks.items():
        hold = keeper.held.get(run_id)
        if hold is None or task is None or task.done():
            continue
        keeper.stop(hold, "hand-back")
        stopped.append(run_id)
    if stopped:
        await asyncio.wait({t for r, t in tasks.items() if r in stopped and t is not None},
                           timeout=30)
    for run_id in stopped:
        with contextlib.suppress(Exception):  # the lease expires on its own anyway
            await store.release_lease(run_id, worker_id())
    if not keeper.held:
        await keeper.stop_renewing()
    return stopped


def _outcome_status(exc: KeelError) -> str:
    from keel.core import LeaseLost, RunCancelled, Signal, StoreUnavailable

    if isinstance(exc, Signal):
        return "suspended"
    if isinstance(exc, RunCancelled):
        return "cancelled"
    if isinstance(exc, LeaseLost):
        return "lost"
    if isinstance(exc, StoreUnavailable):  # left running: continued once the store is back
        return "interrupted"
    return "failed"


CancelOutcome = Literal["cancelled", "requested"]


async def cancel_run(run_id: str, _old: str | None = None, /, *,
                     store: RunStore | None = None, reason: str = "cancelled by request",
                     by: str = "api", agent: Runnable | None = None,
                     tenant: str | None = None) -> CancelOutcome:
    """Cancel run ``run_id`` of ``store``; ``reason`` and ``by`` (who asked) are journaled.
    Returns ``"cancelled"`` if it is now cancelled, ``"requested"`` if a live worker holds it
    and was asked to stop. ``agent`` (optional) gets its ``on_run_end`` middleware called for
    an idle run, as a live run's own agent would. With ``tenant``, the run is looked up (and
    re-read, and asked to stop) scoped to that tenant in the store's queries: another
    tenant's run, or one without a tenant, is RunNotFound, as an unknown id, and is left as
    it was. (``cancel_run(store, run_id)`` is the deprecated form.)"""
    (run_id,), given = store_moved("cancel_run", [run_id], _old, store)
    store = required_store("cancel_run", given)
    record = await store.get_run(run_id, **scoped(store.get_run, tenant))
    if record.status in TERMINAL_STATUSES:
        raise UserError(f"run {run_id} is already {record.status}; there is nothing to cancel.")
    hold = keeper_for(store).held.get(run_id)
    if hold is not None:  # this very process continues it: stop it now
        await request_cancel(store, run_id, reason=reason, by=by, tenant=tenant)
        keeper_for(store).stop(hold, "cancel", cancel_reason=reason, cancel_by=by)
        return "requested"
    outcome = await _cancel_idle(store, run_id, reason=reason, by=by, agent=agent,
                                 tenant=tenant)
    await notify_engine(store, run_id)
    return outcome


async def _cancel_idle(store: RunStore, run_id: str, *, reason: str, by: str,
                       agent: Runnable | None, tenant: str | None) -> CancelOutcome:
    """Cancel a run this process does not hold: at once if no live worker holds it, else
    by a request to its holder."""
    try:
        await store.acquire_lease(run_id, worker_id(), 30.0)
    except RunLeased as exc:
        if not holder_is_dead(exc.holder):
            await request_cancel(store, run_id, reason=reason, by=by, tenant=tenant)
            return "requested"
        await store.acquire_lease(run_id, worker_id(), 30.0, steal_from=exc.holder)
    record = await store.get_run(run_id, **scoped(store.get_run, tenant))
    journal = await store.read_journal(run_id, **scoped(store.read_journal, tenant))
    now = time.time()
    entry = JournalEntry(seq=max((e.seq for e in journal), default=-1) + 1,
                         key=f"{record.agent}/cancelled", phase="result", kind="cancel",
                         name="cancel_run", input_hash="", created_at=now,
                         data={"reason": reason, "by": by})
    if any(e.key == entry.key and e.phase == "result" for e in journal):
        entry = JournalEntry(**{**_fields(entry), "key": f"{record.agent}/cancelled#{now:.0f}"})
    error = {"type": "RunCancelled", "message": reason, "step_key": entry.key,
             "retryable": False}
    try:
        await store.finish_run(record.with_status("cancelled", error=error, updated_at=now),
                               [entry], lease=worker_id())
    except StoreError:
        await store.release_lease(run_id, worker_id())
        raise
    if agent is not None:
        await agent.stack.run_end(RunEndInput(run_id=run_id, agent=agent.name,
                                              status="cancelled", output=None, error=None,
                                              tenant=record.tenant, user=record.user))
    return "cancelled"


async def request_cancel(store: RunStore, run_id: str, *, reason: str, by: str,
                         tenant: str | None = None) -> None:
    """Ask the run's lease holder to stop, with the reason and who asked (kept by the store
    for the holder's journaled cancel step), scoped to ``tenant`` if given. A store written
    for an older keel, whose ``request_cancel`` takes only the run id, gets that (its holder
    journals no reason)."""
    scope = scoped(store.request_cancel, tenant)
    params = inspect.signature(store.request_cancel).parameters
    if "reason" in params and "by" in params:
        await store.request_cancel(run_id, reason=reason, by=by, **scope)
    else:
        await store.request_cancel(run_id, **scope)


def _fields(entry: JournalEntry) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in JournalEntry.__dataclass_fields__}


# ----------------------------------------------------------------------------- resolve

ResolvedOutcome = Literal["succeeded", "failed"]
#: Step kinds whose recorded result is a tool result (a tool call, a saga's compensation).
_TOOL_KINDS = frozenset({"tool", "compensate"})


async def resolve_unknown_outcome(store: RunStore, run_id: str, *, outcome: ResolvedOutcome,
                                  by: str, result: Any = None, comment: str | None = None,
                                  step_key: str | None = None) -> JournalEntry:
    """Record what a person found out about a step whose outcome is unknown (its intent was
    journaled, its result never was: the process stopped while a non-idempotent tool ran).

    ``outcome="succeeded"`` records the call as done, with ``result`` (any JSON value) as what
    it returned; ``"failed"`` records it as not done, so the model sees a failed call and can
    decide what to do. Two entries are appended under the run's lease: a ``resolve`` record
    (``<step>/resolved``: outcome, result, comment, ``by``) and the step's ``result``, so that
    resuming the run replays the step instead of running the tool again. ``step_key`` is needed
    only when more than one step is unresolved. Returns the step's new result entry."""
    if outcome not in ("succeeded", "failed"):
        raise UserError(f"outcome must be 'succeeded' or 'failed', not {outcome!r}.")
    record = await store.get_run(run_id)
    if record.status in TERMINAL_STATUSES and record.status != "failed":
        raise UserError(f"run {run_id} is {record.status}; only a failed or stopped run has a "
                        "step to resolve.")
    journal = await store.read_journal(run_id)
    intent = _unresolved(run_id, journal, step_key, (record.error or {}).get("step_key"))
    data = _resolved_data(intent, outcome, result, comment, by)
    await _lease_for_resolve(store, run_id)
    now = time.time()
    seq = max(e.seq for e in journal) + 1
    note = JournalEntry(seq=seq, key=f"{intent.key}/resolved", phase="result", kind="resolve",
                        name=intent.name, input_hash="", created_at=now,
                        data=redact({"step_key": intent.key, "outcome": outcome,
                                     "result": result, "comment": comment, "by": by}))
    entry = JournalEntry(seq=seq + 1, key=intent.key, phase="result", kind=intent.kind,
                         name=intent.name, input_hash=intent.input_hash, created_at=now,
                         data=redact(data))
    try:
        await store.append(run_id, [note, entry], lease=worker_id())
    finally:
        await store.release_lease(run_id, worker_id())
    return entry


def _unresolved(run_id: str, journal: list[JournalEntry], step_key: str | None,
                failed_at: str | None) -> JournalEntry:
    """The intent to resolve: ``step_key``'s, else the one the run failed at, else the only
    intent without a result."""
    done = {e.key for e in journal if e.phase == "result"}
    open_ = [e for e in journal if e.phase == "intent" and e.key not in done]
    by_key = {e.key: e for e in open_}
    if step_key is not None:
        if step_key not in by_key:
            known = ", ".join(by_key) or "none"
            raise UserError(f"run {run_id} has no unresolved step {step_key!r} (unresolved: "
                            f"{known}).")
        return by_key[step_key]
    if failed_at in by_key:
        return by_key[failed_at]
    if len(open_) == 1:
        return open_[0]
    if not open_:
        raise UserError(f"run {run_id} has no step whose outcome is unknown; nothing to "
                        f"resolve (`keel runs show {run_id}` prints its journal).")
    raise UserError(f"run {run_id} has {len(open_)} unresolved steps "
                    f"({', '.join(by_key)}); name one with --step.")


def _resolved_data(intent: JournalEntry, outcome: ResolvedOutcome, result: Any,
                   comment: str | None, by: str) -> Any:
    """The step's result as the runtime reads it back: a tool result for tool calls and
    compensations, the value itself for a flow's step."""
    from keel.tools import ToolResult

    if intent.kind in _TOOL_KINDS:
        if outcome == "failed":
            why = comment or "it did not take effect"
            return ToolResult.fail("tool_error", f"the call did not happen ({why}; resolved by "
                                   f"{by})", retryable=False).to_dict()
        if result is None:
            return ToolResult(content=f"the call succeeded (resolved by {by})").to_dict()
        return ToolResult.of(result).to_dict()
    if outcome == "failed":
        raise UserError(f"step {intent.key} is a {intent.kind} step, whose result is a value: it "
                        "can only be resolved as succeeded with --result; to give the run up, "
                        f"cancel it (`keel runs cancel`).")
    return result


async def _lease_for_resolve(store: RunStore, run_id: str) -> None:
    """Hold the run while resolving it: refused if a live worker is continuing it."""
    try:
        await store.acquire_lease(run_id, worker_id(), 30.0)
    except RunLeased as exc:
        if not holder_is_dead(exc.holder):
            raise UserError(f"run {run_id} is being continued by worker {exc.holder}; resolve "
                            "a step only of a run that stopped (`keel runs cancel` stops it)."
                            ) from None
        await store.acquire_lease(run_id, worker_id(), 30.0, steal_from=exc.holder)
