"""Workers and cancellation: the fleet side of runs.

A :class:`Worker` claims runnable runs from a shared store (a suspended run whose decision
arrived, a run whose worker died) and continues them, ``concurrency`` at a time. The lease
taken by ``claim_runs`` guarantees that no two workers continue the same run.

:func:`cancel_run` stops a run cleanly: an idle run (suspended, or running with no live
worker) is marked ``cancelled`` at once with a journaled ``cancel`` step; a run that a
worker is continuing gets a cancel request, which that worker acts on within a third of the
lease time (the run's task is cancelled, the stop is journaled, ``on_run_end`` middleware,
where compensation hooks live, sees status ``cancelled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from keel.core import ConfigError, KeelError, RunLeased, StoreError, UserError
from keel.runtime._lease import DEFAULT_LEASE_SECONDS, holder_is_dead, keeper_for, worker_id
from keel.runtime._middleware import RunEndInput
from keel.runtime._runner import Launch, Runnable, execute
from keel.store import TERMINAL_STATUSES, JournalEntry, RunStore, required_store, store_moved

if TYPE_CHECKING:
    pass

_log = logging.getLogger("keel.worker")


@dataclass(frozen=True, slots=True)
class WorkOutcome:
    """What happened to one claimed run."""

    run_id: str
    agent: str
    status: str  # completed, suspended, failed, cancelled, lost
    error: str | None = None


class Worker:
    """Continues runnable runs of the given agents (or flows) from a shared store."""

    def __init__(self, agents: Iterable[Runnable], *, store: RunStore,
                 concurrency: int = 8, poll_seconds: float = 1.0,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.agents = {a.name: a for a in agents}
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
        claimed = await self.store.claim_runs(worker_id(), self.lease_seconds,
                                              agents=list(self.agents),
                                              limit=self.concurrency)
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
                claimed = await self.store.claim_runs(worker_id(), self.lease_seconds,
                                                      agents=list(self.agents), limit=free)
                for r in claimed:
                    task = asyncio.create_task(self._continue(r.run_id, r.agent))
                    running.add(task)
                    task.add_done_callback(running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _continue(self, run_id: str, agent_name: str) -> WorkOutcome:
        agent = self.agents[agent_name]
        try:
            await execute(agent, self.store, Launch(resume_id=run_id, claimed=True))
        except KeelError as exc:
            status = _outcome_status(exc)
            _log.info("run %s %s: %s", run_id, status, exc, extra={"run_id": run_id})
            return WorkOutcome(run_id, agent_name, status, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in user code must not stop the worker
            _log.exception("run %s failed", run_id, extra={"run_id": run_id})
            return WorkOutcome(run_id, agent_name, "failed", f"{type(exc).__name__}: {exc}")
        return WorkOutcome(run_id, agent_name, "completed")


def _outcome_status(exc: KeelError) -> str:
    from keel.core import LeaseLost, RunCancelled, Signal

    if isinstance(exc, Signal):
        return "suspended"
    if isinstance(exc, RunCancelled):
        return "cancelled"
    if isinstance(exc, LeaseLost):
        return "lost"
    return "failed"


CancelOutcome = Literal["cancelled", "requested"]


async def cancel_run(run_id: str, _old: str | None = None, /, *,
                     store: RunStore | None = None, reason: str = "cancelled by request",
                     by: str = "api", agent: Runnable | None = None) -> CancelOutcome:
    """Cancel run ``run_id`` of ``store``; ``reason`` and ``by`` (who asked) are journaled.
    Returns ``"cancelled"`` if it is now cancelled, ``"requested"`` if a live worker holds it
    and was asked to stop. ``agent`` (optional) gets its ``on_run_end`` middleware called for
    an idle run, as a live run's own agent would. (``cancel_run(store, run_id)`` is the
    deprecated form.)"""
    (run_id,), given = store_moved("cancel_run", [run_id], _old, store)
    store = required_store("cancel_run", given)
    record = await store.get_run(run_id)
    if record.status in TERMINAL_STATUSES:
        raise UserError(f"run {run_id} is already {record.status}; there is nothing to cancel.")
    hold = keeper_for(store).held.get(run_id)
    if hold is not None:  # this very process continues it: stop it now
        await request_cancel(store, run_id, reason=reason, by=by)
        keeper_for(store).stop(hold, "cancel", cancel_reason=reason, cancel_by=by)
        return "requested"
    try:
        await store.acquire_lease(run_id, worker_id(), 30.0)
    except RunLeased as exc:
        if not holder_is_dead(exc.holder):
            await request_cancel(store, run_id, reason=reason, by=by)
            return "requested"
        await store.acquire_lease(run_id, worker_id(), 30.0, steal_from=exc.holder)
    record = await store.get_run(run_id)
    journal = await store.read_journal(run_id)
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
                                              status="cancelled", output=None, error=None))
    return "cancelled"


async def request_cancel(store: RunStore, run_id: str, *, reason: str, by: str) -> None:
    """Ask the run's lease holder to stop, with the reason and who asked (kept by the store
    for the holder's journaled cancel step). A store written for an older keel, whose
    ``request_cancel`` takes only the run id, gets that (its holder journals no reason)."""
    params = inspect.signature(store.request_cancel).parameters
    if "reason" in params and "by" in params:
        await store.request_cancel(run_id, reason=reason, by=by)
    else:
        await store.request_cancel(run_id)


def _fields(entry: JournalEntry) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in JournalEntry.__dataclass_fields__}
