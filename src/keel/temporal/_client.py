"""Starting keel runs on Temporal and reading their results: :func:`connect`,
:func:`start_run`, :func:`run_result`, :func:`run`."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeout,
)
from temporalio.service import RPCError, RPCStatusCode

import keel.core as _core
from keel.core import (
    ConfigError,
    RunCancelled,
    RunError,
    RunNotFound,
    Usage,
    UserError,
    new_run_id,
    to_text,
)
from keel.runtime import RunResult, register_engine
from keel.store import RunRecord
from keel.temporal._checks import build_request, check_run_id
from keel.temporal._errors import TemporalUnavailable
from keel.temporal._policy import retry_spec
from keel.temporal._types import (
    DECIDED_SIGNAL,
    ENGINE,
    WORKFLOW_NAME,
    Outcome,
    RetrySpec,
    workflow_id_for,
)

_UNREACHABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


async def connect(address: str = "127.0.0.1:7233", *, namespace: str = "default",
                  timeout_s: float = 5.0) -> Client:
    """A Temporal client, or :class:`TemporalUnavailable` within ``timeout_s`` if no server
    answers at ``address``."""
    if not isinstance(address, str) or not address.strip() or len(address) > 500:
        raise ConfigError("address", f"must be host:port of a Temporal server, not "
                          f"{address!r:.80}")
    if not isinstance(namespace, str) or not namespace.strip() or len(namespace) > 200:
        raise ConfigError("namespace", f"must be a Temporal namespace name, not "
                          f"{namespace!r:.80}")
    register()  # decisions made in this process signal the workflows they unblock
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            return await Client.connect(address, namespace=namespace,
                                        connect_timeout=timedelta(seconds=timeout_s))
    except (TimeoutError, RuntimeError, RPCError, OSError) as exc:
        raise TemporalUnavailable(f"no Temporal server answered at {address} (namespace "
                                  f"{namespace!r}): {exc}; start one (`temporal server "
                                  "start-dev`) or check the address") from None


async def start_run(client: Client, target: Any, input: str, *, task_queue: str = "keel",
                    run_id: str | None = None, tenant: str | None = None,
                    user: str | None = None, conversation: str | None = None,
                    max_steps: int | None = None, max_tokens: int | None = None,
                    max_cost_usd: float | None = None, poll_s: float = 60.0,
                    step_timeout_s: float = 600.0, heartbeat_s: float = 30.0,
                    retry: RetrySpec | None = None) -> str:
    """Start keel run of ``target`` (an agent or flow, or its name as the workers know it)
    on ``input`` as a ``keel.run`` workflow on ``task_queue``; returns the run id. The run's
    record and journal are written by the worker into its run store. A run id that was used
    before (by any run on this Temporal namespace) is refused with a UserError."""
    request = build_request(
        run_id=new_run_id() if run_id is None else run_id, target=target, input=input,
        tenant=tenant, user=user, conversation=conversation, max_steps=max_steps,
        max_tokens=max_tokens, max_cost_usd=max_cost_usd, poll_s=poll_s,
        step_timeout_s=step_timeout_s, heartbeat_s=heartbeat_s, retry=retry or retry_spec())
    if not isinstance(task_queue, str) or not task_queue.strip() or len(task_queue) > 200:
        raise ConfigError("task_queue", f"must be a task queue name, not {task_queue!r:.80}")
    try:
        await client.start_workflow(WORKFLOW_NAME, request,
                                    id=workflow_id_for(request.run_id), task_queue=task_queue,
                                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        raise UserError(f"run id {request.run_id!r} is already taken (a run with this id was "
                        "started on Temporal before); leave run_id out for a new one") from None
    except RPCError as exc:
        raise _rpc_error(exc, request.run_id) from None
    except RuntimeError as exc:  # a lazy client that cannot connect
        raise TemporalUnavailable(f"the Temporal server did not answer: {exc}",
                                  run_id=request.run_id) from None
    return request.run_id


def _rpc_error(exc: RPCError, run_id: str) -> Exception:
    if exc.status in _UNREACHABLE:
        return TemporalUnavailable(f"the Temporal server did not answer: {exc.message}",
                                   run_id=run_id)
    if exc.status == RPCStatusCode.NOT_FOUND:
        return RunNotFound(f"no run {run_id!r} on Temporal ({exc.message})")
    return RunError(f"Temporal refused the request: {exc.message}", run_id=run_id)


async def run_result(client: Client, run_id: str) -> RunResult[Any]:
    """Wait for run ``run_id`` to end; its result (``output`` as stored: JSON data), or the
    keel error it failed with (:class:`keel.RunCancelled` if it was cancelled)."""
    run_id = check_run_id(run_id)
    handle = client.get_workflow_handle(workflow_id_for(run_id), result_type=Outcome)
    try:
        out: Outcome = await handle.result()
    except WorkflowFailureError as exc:
        raise _failure(exc, run_id) from None
    except RPCError as exc:
        raise _rpc_error(exc, run_id) from None
    except RuntimeError as exc:  # a lazy client that cannot connect
        raise TemporalUnavailable(f"the Temporal server did not answer: {exc}",
                                  run_id=run_id) from None
    usage = dict(out.usage)
    return RunResult(run_id=run_id, agent=out.agent, output=out.output,
                     text=to_text(out.output), usage=Usage.from_dict(usage),
                     steps=int(usage.get("steps") or 0), status=out.status)


async def run(client: Client, target: Any, input: str, **options: Any) -> RunResult[Any]:
    """:func:`start_run` then :func:`run_result`."""
    run_id = await start_run(client, target, input, **options)
    return await run_result(client, run_id)


def _failure(exc: WorkflowFailureError, run_id: str) -> Exception:
    """The keel error a failed ``keel.run`` workflow stands for."""
    cause = exc.cause
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, CancelledError):
        return RunCancelled("the run's Temporal workflow was cancelled", run_id=run_id)
    if isinstance(cause, TerminatedError):
        return RunError(f"the run's Temporal workflow was terminated: {cause}", run_id=run_id)
    if isinstance(cause, TemporalTimeout):
        return RunError(f"the run's Temporal workflow timed out: {cause}", run_id=run_id)
    if isinstance(cause, ApplicationError):
        return _keel_error(cause.type or "RunError", cause.message, run_id, cause.details)
    return RunError(f"the run's Temporal workflow failed: {cause or exc}", run_id=run_id)


def _keel_error(kind: str, message: str, run_id: str, details: Any) -> Exception:
    step_key = None
    for item in details or ():
        error = item.get("error") if isinstance(item, dict) else None
        if isinstance(error, dict):
            step_key = error.get("step_key")
    if kind == "UnknownTarget":
        return ConfigError("target", message)
    cls = getattr(_core, kind, None)
    if kind == "RunExists" or (isinstance(cls, type) and issubclass(cls, UserError)):
        return UserError(message)
    if kind == "RunCancelled":
        return RunCancelled(message, run_id=run_id)
    if isinstance(cls, type) and issubclass(cls, RunError) and cls is not RunCancelled:
        try:
            return cls(message, run_id=run_id, step_key=step_key)
        except TypeError:
            return _bare(cls, message, run_id, step_key)
    error = RunError(message, run_id=run_id, step_key=step_key)
    error.recorded_type = kind  # error_type names what the run failed with
    return error


def _bare(cls: type[RunError], message: str, run_id: str, step_key: str | None) -> RunError:
    """A ``cls`` error whose constructor needs details that Temporal's failure does not
    carry (``BudgetExceeded``'s limit, ``Divergence``'s two sides): the right type, so that
    ``except BudgetExceeded`` catches it as on keel's own engine, with the message, the run
    and the step; the missing details are None."""
    error = cls.__new__(cls)
    RunError.__init__(error, message, run_id=run_id, step_key=step_key)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.kind is param.KEYWORD_ONLY and not hasattr(error, name):
            setattr(error, name, None)
    return error


# ------------------------------------------------------------------------------ notices

#: Seconds to wait for the Temporal server when signalling (the workflow polls anyway).
SIGNAL_CONNECT_S = 2.0


async def notify_decided(record: RunRecord) -> None:
    """Signal the run's workflow (named in its metadata) that a person decided something it
    waits for, or that it was cancelled: it reads the run's status at once instead of at its
    next poll."""
    meta = record.metadata
    address, namespace = meta.get("temporal_address"), meta.get("namespace")
    workflow_id = meta.get("workflow_id")
    if not (isinstance(address, str) and isinstance(namespace, str)
            and isinstance(workflow_id, str)):
        return  # not enough to find the workflow: its poll sees the decision
    client = await connect(address, namespace=namespace, timeout_s=SIGNAL_CONNECT_S)
    await client.get_workflow_handle(workflow_id).signal(DECIDED_SIGNAL)


def register() -> None:
    """Have decisions and cancels of Temporal runs in this process signal their workflows
    (see :func:`keel.runtime.notify_engine`)."""
    register_engine(ENGINE, notify_decided)
