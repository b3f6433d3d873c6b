"""The ``keel.run`` workflow: a small deterministic loop that schedules one keel step at a
time as an activity. The keel run itself (record, journal, human tasks) lives in keel's run
store; this code only schedules activities, timers and waits, so Temporal's replay of it is
exact. It imports nothing of keel beyond the plain dataclasses of ``_types``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from keel.temporal._types import (
        ADVANCE_ACTIVITY,
        DECIDED_SIGNAL,
        ENDED,
        START_ACTIVITY,
        STATUS_ACTIVITY,
        STOP_ACTIVITY,
        WORKFLOW_NAME,
        Outcome,
        RetrySpec,
        RunRequest,
        StopRequest,
    )

#: Quick bookkeeping activities (start, status, stop): short timeouts, retried until the
#: store answers again (an outage must not end a run that waits for days), never for a
#: mistake that would fail again the same way.
_QUICK = timedelta(seconds=60)
_QUICK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1),
                           maximum_interval=timedelta(seconds=60), maximum_attempts=0,
                           non_retryable_error_types=["UserError", "ConfigError",
                                                      "StoreError", "StoreVersionError",
                                                      "RunNotFound", "UnknownTarget",
                                                      "RunExists"])


def _retry(spec: RetrySpec | None) -> RetryPolicy:
    spec = spec or RetrySpec()
    return RetryPolicy(initial_interval=timedelta(seconds=spec.initial_interval_s),
                       backoff_coefficient=spec.backoff,
                       maximum_interval=timedelta(seconds=spec.max_interval_s),
                       maximum_attempts=spec.max_attempts,
                       non_retryable_error_types=list(spec.non_retryable))


@workflow.defn(name=WORKFLOW_NAME)
class KeelRunWorkflow:
    """One keel run: start it, then advance it a step at a time until it ends; while it waits
    for people, wait for the ``keel.decided`` signal or poll its status every ``poll_s``."""

    def __init__(self) -> None:
        self._decided = False

    @workflow.signal(name=DECIDED_SIGNAL)
    def decided(self) -> None:
        """A person decided something the run waits for (the poll is the guarantee; this
        only saves the wait)."""
        self._decided = True

    @workflow.run
    async def run(self, request: RunRequest) -> Outcome:
        try:
            return await self._drive(request)
        except BaseException as exc:
            if not (isinstance(exc, asyncio.CancelledError) or is_cancelled_exception(exc)):
                raise
            # Temporal cancelled the workflow (while it waited, or during a step): end the
            # keel run as cancelled (a step still running is asked to stop), then stop too.
            with contextlib.suppress(ActivityError):  # e.g. it ended meanwhile
                await asyncio.shield(workflow.execute_activity(
                    STOP_ACTIVITY, StopRequest(run_id=request.run_id, target=request.target,
                                               status="cancelled", error_type="RunCancelled",
                                               message="the Temporal workflow was cancelled"),
                    start_to_close_timeout=_QUICK, retry_policy=_QUICK_RETRY))
            raise

    async def _drive(self, request: RunRequest) -> Outcome:
        outcome: Outcome = await workflow.execute_activity(
            START_ACTIVITY, request, result_type=Outcome, start_to_close_timeout=_QUICK,
            retry_policy=_QUICK_RETRY)
        step = timedelta(seconds=request.step_timeout_s)
        retry = _retry(request.retry)
        while outcome.status not in ENDED:
            if outcome.status == "suspended":
                outcome = await self._wait(request)
                continue
            if workflow.info().is_continue_as_new_suggested():
                # a long run's history nears Temporal's limit: go on in a fresh workflow run
                # (same workflow id); its keel.start finds the run and carries on
                workflow.continue_as_new(request)
            over = _over_budget(request, outcome)
            if over is not None:
                outcome = await workflow.execute_activity(
                    STOP_ACTIVITY, StopRequest(run_id=request.run_id, target=request.target,
                                               status="failed", error_type="BudgetExceeded",
                                               message=over),
                    result_type=Outcome, start_to_close_timeout=_QUICK,
                    retry_policy=_QUICK_RETRY)
                break
            try:
                outcome = await workflow.execute_activity(
                    ADVANCE_ACTIVITY, request, result_type=Outcome,
                    start_to_close_timeout=step, retry_policy=retry,
                    heartbeat_timeout=timedelta(seconds=request.heartbeat_s))
            except ActivityError as failed:  # retries used up, or not retryable
                if not is_cancelled_exception(failed):
                    await self._record_failure(request, failed)
                raise
        if outcome.status != "completed":
            error = outcome.error or {}
            raise ApplicationError(str(error.get("message") or f"the run {outcome.status}"),
                                   outcome, type=str(error.get("type") or "RunError"),
                                   non_retryable=True)
        return outcome

    async def _record_failure(self, request: RunRequest, failed: ActivityError) -> None:
        """A step failed for good: the run is failed in keel's store too (a failure keel
        recorded itself stays as it is; a store that is down leaves the run as it was)."""
        cause = failed.cause
        kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "RunError"
        message = cause.message if isinstance(cause, ApplicationError) else str(failed)
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(
                STOP_ACTIVITY, StopRequest(run_id=request.run_id, target=request.target,
                                           status="failed", error_type=kind,
                                           message=message),
                result_type=Outcome, start_to_close_timeout=_QUICK, retry_policy=_QUICK_RETRY)

    async def _wait(self, request: RunRequest) -> Outcome:
        """Until a decision signal arrives or ``poll_s`` passes, then the run's status. A signal
        that arrived before the wait (a decision made while the step that suspended the run
        was still returning) ends the wait at once; it is consumed here."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._decided,
                                          timeout=timedelta(seconds=request.poll_s))
        self._decided = False
        outcome: Outcome = await workflow.execute_activity(
            STATUS_ACTIVITY, request, result_type=Outcome, start_to_close_timeout=_QUICK,
            retry_policy=_QUICK_RETRY)
        return outcome


def _over_budget(request: RunRequest, outcome: Outcome) -> str | None:
    """Why the run's totals so far break the workflow's budget, or None."""
    usage = outcome.usage
    steps = int(usage.get("steps") or 0)
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    cost = float(usage.get("cost_usd") or 0.0)
    if request.max_steps is not None and steps >= request.max_steps:
        return f"the run used its {request.max_steps} steps (workflow budget)"
    if request.max_tokens is not None and tokens >= request.max_tokens:
        return f"the run used {tokens} tokens of its {request.max_tokens} (workflow budget)"
    if request.max_cost_usd is not None and cost >= request.max_cost_usd:
        return (f"the run cost ${cost:.4f} of its ${request.max_cost_usd:.4f} "
                "(workflow budget)")
    return None
