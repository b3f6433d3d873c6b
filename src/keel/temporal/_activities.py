"""The activities of the ``keel.run`` workflow: start a keel run, advance it by one model
request or tool call, read its status, stop it. Each runs keel's runtime against the
worker's run store, so the run's record and journal are keel's as for any other run, and
keel's own middleware (timeouts, retries, breakers, guards, the approval gate) runs inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.core import (
    ApprovalRequired,
    Escalate,
    KeelError,
    LeaseLost,
    RunError,
    RunLeased,
    RunNotFound,
    StoreUnavailable,
    redact,
)
from keel.runtime import Launch, Paused, cancel_run, execute, worker_id
from keel.store import ENGINE_KEY, TERMINAL_STATUSES, JournalEntry, RunRecord, RunStore
from keel.temporal._checks import check_request
from keel.temporal._types import (
    ADVANCE_ACTIVITY,
    ENGINE,
    START_ACTIVITY,
    STATUS_ACTIVITY,
    STOP_ACTIVITY,
    Outcome,
    RetrySpec,
    RunRequest,
    StopRequest,
)

#: How long the lease taken for a stop is held at most (it is released at once).
_STOP_LEASE_S = 30.0
#: Errors that are not the run's failure but the moment's: Temporal retries the activity.
_TRANSIENT = (LeaseLost, RunLeased, StoreUnavailable)


async def _heartbeat(every_s: float) -> None:
    """Tell Temporal this step's worker is alive, until cancelled."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(max(every_s, 0.05))


def outcome_of(record: RunRecord, waiting: list[str] | None = None) -> Outcome:
    """The workflow's view of a stored run."""
    return Outcome(run_id=record.run_id, status=record.status, agent=record.agent,
                   output=record.output,
                   error=dict(record.error) if record.error else None,
                   usage=dict(record.usage or {}), waiting=list(waiting or ()))


def _app_error(exc: BaseException, *, retryable: bool) -> ApplicationError:
    kind = exc.error_type if isinstance(exc, RunError) else type(exc).__name__
    return ApplicationError(redact(str(exc)), type=kind, non_retryable=not retryable)


class KeelActivities:
    """The activities, bound to a worker's runnables (by name) and run store."""

    def __init__(self, runnables: Mapping[str, Any], store: RunStore, *,
                 targets: Mapping[str, str] | None = None, address: str = "",
                 namespace: str = "default") -> None:
        """``address`` / ``namespace``: the Temporal server's, kept with each run so that a
        decision made elsewhere (CLI, server) can signal its workflow."""
        self.address = address
        self.namespace = namespace
        self.runnables = dict(runnables)
        self.store = store
        self.targets = dict(targets or {})

    def all(self) -> list[Any]:
        return [self.start, self.advance, self.status, self.stop]

    def _runnable(self, name: str) -> Any:
        found = self.runnables.get(name)
        if found is None:
            known = ", ".join(sorted(self.runnables)) or "none"
            raise ApplicationError(
                f"this worker has no agent or flow named {name!r} (it knows: {known}); start "
                "the run on a task queue whose workers serve it, or add it to the worker",
                type="UnknownTarget", non_retryable=True)
        return found

    @activity.defn(name=START_ACTIVITY)
    async def start(self, request: RunRequest) -> Outcome:
        """Create the keel run (input guards, the record, the start hooks) and stop before
        its first model request or tool call. A retry finds the run it created."""
        try:  # a workflow may be started by any client: check what arrived
            request = check_request(request)
        except KeelError as exc:
            raise _app_error(exc, retryable=False) from None
        runnable = self._runnable(request.target)
        info = activity.info()
        try:
            record = await self.store.get_run(request.run_id)
        except RunNotFound:
            record = None
        if record is not None:
            if record.metadata.get("workflow_id") != info.workflow_id:
                raise ApplicationError(
                    f"run {request.run_id} already exists in the run store (not started by "
                    "this workflow); start the run with another run id",
                    type="RunExists", non_retryable=True)
            return outcome_of(record)
        metadata = {ENGINE_KEY: ENGINE, "workflow_id": info.workflow_id,
                    "task_queue": info.task_queue, "temporal_address": self.address,
                    "namespace": self.namespace}
        launch = Launch(input=request.input, run_id=request.run_id, step_allowance=0,
                        target=self.targets.get(request.target), tenant=request.tenant,
                        user=request.user, conversation=request.conversation,
                        metadata=metadata)
        return await self._execute(runnable, launch, request.run_id)

    @activity.defn(name=ADVANCE_ACTIVITY)
    async def advance(self, request: RunRequest) -> Outcome:
        """Continue the run from its journal until one new model request or tool call has
        run (or it ends, or waits for people)."""
        runnable = self._runnable(request.target)
        record = await self._read(request.run_id)
        attempt = activity.info().attempt
        retried = (record.status == "failed" and attempt > 1
                   and bool((record.error or {}).get("retryable")))  # Temporal's retry
        if (record.status in TERMINAL_STATUSES and not retried) or record.status == "suspended":
            return outcome_of(record)
        holder = record.lease_owner
        if (attempt > 1 and holder is not None and holder != worker_id()
                and (record.lease_expires_at or 0.0) > time.time()):
            # A retried step: the attempt before it timed out or its worker died. Temporal
            # runs one attempt at a time, so take the run over now; the store fences off any
            # write the old attempt still tries.
            try:
                await self.store.acquire_lease(record.run_id, worker_id(), _STOP_LEASE_S,
                                               steal_from=holder)
                await self.store.release_lease(record.run_id, worker_id())
            except RunLeased as exc:  # changed hands meanwhile: try again later
                raise _app_error(exc, retryable=True) from None
        limit = (request.retry or RetrySpec()).max_attempts  # 0: Temporal retries for ever
        launch = Launch(resume_id=request.run_id, step_allowance=1,
                        retried_later=limit == 0 or attempt < limit)
        beat = asyncio.create_task(_heartbeat(request.heartbeat_s / 3.0),
                                   name=f"keel-heartbeat-{request.run_id}")
        try:
            return await self._execute(runnable, launch, request.run_id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    @activity.defn(name=STATUS_ACTIVITY)
    async def status(self, request: RunRequest) -> Outcome:
        """Where the run stands (while it waits for people: whether it may go on)."""
        return outcome_of(await self._read(request.run_id))

    @activity.defn(name=STOP_ACTIVITY)
    async def stop(self, request: StopRequest) -> Outcome:
        """End the run in keel's store: cancelled (the workflow was cancelled) or failed (the
        workflow's budget ran out). A run that already ended is left as it is."""
        record = await self._read(request.run_id)
        if record.status in TERMINAL_STATUSES:
            return outcome_of(record)
        if request.status == "cancelled":
            await cancel_run(request.run_id, store=self.store, reason=request.message,
                             by=request.by, agent=self.runnables.get(request.target))
            return outcome_of(await self._read(request.run_id))
        await self._fail(record, request)
        return outcome_of(await self._read(request.run_id))

    async def _fail(self, record: RunRecord, request: StopRequest) -> None:
        if record.lease_owner is not None and (record.lease_expires_at or 0.0) > time.time():
            # a step is still running (an attempt Temporal gave up on): try again later
            raise ApplicationError(f"run {record.run_id} is held by {record.lease_owner}",
                                   type="RunLeased", non_retryable=False)
        try:
            await self.store.acquire_lease(record.run_id, worker_id(), _STOP_LEASE_S)
        except RunLeased as exc:
            raise _app_error(exc, retryable=True) from None
        journal = await self.store.read_journal(record.run_id)
        now = time.time()
        key = f"{record.agent}/stopped"
        entry = JournalEntry(seq=max((e.seq for e in journal), default=-1) + 1, key=key,
                             phase="result", kind="stop", name=request.error_type,
                             input_hash="", created_at=now,
                             data={"reason": request.message, "by": request.by})
        error = {"type": request.error_type, "message": request.message, "step_key": key,
                 "retryable": False}
        await self.store.finish_run(record.with_status("failed", error=error, updated_at=now),
                                    [entry], lease=worker_id())

    async def _read(self, run_id: str) -> RunRecord:
        try:
            return await self.store.get_run(run_id)
        except StoreUnavailable as exc:
            raise _app_error(exc, retryable=True) from None
        except RunNotFound as exc:
            raise _app_error(exc, retryable=False) from None

    async def _execute(self, runnable: Any, launch: Launch, run_id: str) -> Outcome:
        """Run ``launch``; the outcome as stored. A retryable failure is raised for Temporal
        to retry the step; errors before the run was touched are raised as they are."""
        waiting: list[str] = []
        try:
            await execute(runnable, self.store, launch)
        except Paused:
            pass  # stored as running: the next step goes on
        except ApprovalRequired as signal:  # stored as suspended
            waiting = list(signal.approval_ids)
        except Escalate as signal:
            waiting = [signal.escalation_id] if signal.escalation_id else []
        except _TRANSIENT as exc:
            raise _app_error(exc, retryable=True) from None
        except Exception as exc:
            try:
                record: RunRecord | None = await self.store.get_run(run_id)
            except RunNotFound:  # refused before it was stored (an input guard, bad config)
                record = None
            if record is None or record.status in ("running", "suspended"):  # not recorded
                retryable = bool(getattr(exc, "retryable", False))
                raise _app_error(exc, retryable=retryable) from None
            if record.status == "failed" and (record.error or {}).get("retryable"):
                raise _app_error(exc, retryable=True) from None
            return outcome_of(record)
        return outcome_of(await self._read(run_id), waiting)
