"""``/v1/approvals`` and ``/v1/escalations``: the queue of what waits for a person, read and
decided exactly as ``keel approvals`` and ``keel escalations`` do (the same functions), with
the caller's tenant in every store query and every decision in the audit log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from keel.core import RunNotFound, TaskConflict, TaskNotFound, UserError, to_jsonable
from keel.runtime import (
    approval_reviews,
    claim_escalation,
    decide_approval,
    resolve_escalation,
    review_summary,
    reviewers_needed,
)
from keel.server._api_runs import ID_PATTERN
from keel.server._auth import Principal
from keel.server._errors import ApiError, not_found
from keel.server._models import ERRORS, TaskPage, TaskView, TaskWithRun
from keel.server._state import ServerState, allowed, state
from keel.store import HumanTask, TaskFilter

TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="an approval or escalation id")]
_TEXT = 4000

router = APIRouter(prefix="/v1", responses=ERRORS)


class Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(default=None, max_length=_TEXT)
    edited_args: dict[str, Any] | None = Field(
        default=None, description="the tool's arguments as the reviewer corrected them "
        "(checked against the tool's schema)")


class Deny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=_TEXT, description="why (required)")


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str = Field(min_length=1, max_length=20_000,
                        description="becomes the run's output")


class ResumeNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=_TEXT,
                             description="guidance for the agent as it goes on")


class Dismiss(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=_TEXT)


async def task_view(s: ServerState, task: HumanTask) -> dict[str, Any]:
    """A task as the API shows it; an approval with its reviewers and the reviews so far."""
    view = _plain_view(task)
    if task.kind == "approval":
        needed = reviewers_needed(task.data if isinstance(task.data, dict) else {})
        reviews = await approval_reviews(s.store, task)
        view.update(reviewers=needed, reviews=to_jsonable(reviews),
                    progress=review_summary(needed, reviews) if needed > 1 else None)
    return view


def _plain_view(task: HumanTask) -> dict[str, Any]:
    return {"id": task.task_id, "kind": task.kind, "run_id": task.run_id,
            "status": task.status, "queue": task.queue, "step_key": task.step_key,
            "created_at": task.created_at, "due_at": task.due_at,
            "claimed_by": task.claimed_by, "claimed_at": task.claimed_at,
            "resolution": to_jsonable(task.resolution), "by": task.by,
            "resolved_at": task.resolved_at, "data": to_jsonable(task.data)}


async def _task(s: ServerState, task_id: str, kind: str, who: Principal) -> HumanTask:
    try:
        task = await s.store.get_task(task_id, tenant=who.tenant)
    except (TaskNotFound, RunNotFound):
        raise not_found(kind, task_id) from None
    if task.kind != kind:
        raise not_found(kind, task_id)
    return task


async def _queue(s: ServerState, kind: Literal["approval", "escalation"], who: Principal,
                 status: Literal["open", "claimed", "resolved"] | None, limit: int,
                 offset: int) -> dict[str, Any]:
    tasks = await s.store.list_tasks(TaskFilter(kind=kind, status=status, tenant=who.tenant,
                                                limit=limit + 1, offset=offset))
    more = len(tasks) > limit
    return {"items": [await task_view(s, t) for t in tasks[:limit]],
            "next_offset": offset + limit if more else None}


async def _with_run(s: ServerState, task: HumanTask, who: Principal) -> dict[str, Any]:
    """A task with what the reviewer needs of its run: the run's input and status."""
    view = await task_view(s, task)
    try:
        record = await s.store.get_run(task.run_id, tenant=who.tenant)
    except RunNotFound:
        raise not_found(task.kind, task.task_id) from None
    view["run"] = s.scrub({"run_id": record.run_id, "agent": record.agent,
                           "status": record.status, "input": to_jsonable(record.input),
                           "user": record.user}, record)
    return view


async def _decided(s: ServerState, who: Principal, task: HumanTask, action: str,
                   details: dict[str, Any]) -> dict[str, Any]:
    await s.audit(who, action, task.task_id, {"run_id": task.run_id, **details})
    record = await s.store.get_run(task.run_id, tenant=who.tenant)
    if record.status == "running":
        s.executor.resume_soon(record.run_id, record.agent)
    s.tails.wake(task.run_id)
    return await task_view(s, task)


async def _act(s: ServerState, who: Principal, task_id: str, kind: str,
               call: Callable[[], Awaitable[HumanTask]]) -> HumanTask:
    """``call`` (a decision on ``task_id``, a ``kind`` of the caller's tenant) with keel's
    refusals as HTTP answers: an unknown or foreign id 404, a decided one 409, a bad
    decision 400."""
    await _task(s, task_id, kind, who)
    try:
        return await call()
    except (TaskNotFound, RunNotFound):
        raise not_found(kind, task_id) from None
    except (TaskConflict, UserError) as exc:
        raise _refused(exc) from None


def _refused(exc: Exception) -> ApiError:
    if isinstance(exc, TaskConflict):
        return ApiError(409, "conflict", str(exc))
    return ApiError(400, "invalid", str(exc))


# ------------------------------------------------------------------------------ approvals

Status = Annotated[Literal["open", "claimed", "resolved"] | None, Query()]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("/approvals", tags=["approvals"], summary="Approval requests, oldest first",
            response_model=TaskPage)
async def approvals(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                    status: Status = "open", limit: Limit = 50,
                    offset: Offset = 0) -> dict[str, Any]:
    return await _queue(state(request), "approval", who, status, limit, offset)


@router.get("/approvals/{task_id}", tags=["approvals"], summary="One approval request",
            response_model=TaskWithRun)
async def approval(task_id: TaskId, request: Request,
                   who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    return await _with_run(s, await _task(s, task_id, "approval", who), who)


@router.post("/approvals/{task_id}/approve", tags=["approvals"],
             summary="Approve (optionally with edited arguments)",
             response_model=TaskView)
async def approve(task_id: TaskId, body: Approve, request: Request,
                  who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    s = state(request)
    task = await _act(s, who, task_id, "approval", lambda: decide_approval(
        task_id, store=s.store, approve=True, by=who.who, comment=body.comment,
        edited_args=body.edited_args, tenant=who.tenant))
    return await _decided(s, who, task, "approval.approve",
                          {"comment": body.comment, "edited": body.edited_args is not None})


@router.post("/approvals/{task_id}/deny", tags=["approvals"], summary="Deny, with a comment",
             response_model=TaskView)
async def deny(task_id: TaskId, body: Deny, request: Request,
               who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    s = state(request)
    task = await _act(s, who, task_id, "approval", lambda: decide_approval(
        task_id, store=s.store, approve=False, by=who.who, comment=body.comment,
        tenant=who.tenant))
    return await _decided(s, who, task, "approval.deny", {"comment": body.comment})


# ---------------------------------------------------------------------------- escalations


@router.get("/escalations", tags=["escalations"], summary="Escalations, oldest first",
            response_model=TaskPage)
async def escalations(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                      status: Status = None, limit: Limit = 50,
                      offset: Offset = 0) -> dict[str, Any]:
    return await _queue(state(request), "escalation", who, status, limit, offset)


@router.get("/escalations/{task_id}", tags=["escalations"],
            summary="One escalation and its context packet",
            response_model=TaskWithRun)
async def escalation(task_id: TaskId, request: Request,
                     who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    return await _with_run(s, await _task(s, task_id, "escalation", who), who)


@router.post("/escalations/{task_id}/claim", tags=["escalations"],
             summary="Take an escalation (colleagues see someone is on it)",
             response_model=TaskView)
async def claim(task_id: TaskId, request: Request,
                who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    s = state(request)
    task = await _act(s, who, task_id, "escalation", lambda: claim_escalation(
        task_id, who.who, store=s.store, tenant=who.tenant))
    await s.audit(who, "escalation.claim", task_id, {"run_id": task.run_id})
    return await task_view(s, task)


async def _resolve(request: Request, who: Principal, task_id: str, action: str,
                   **decision: Any) -> dict[str, Any]:
    s = state(request)
    task = await _act(s, who, task_id, "escalation", lambda: resolve_escalation(
        task_id, store=s.store, by=who.who, action=action, tenant=who.tenant, **decision))
    return await _decided(s, who, task, f"escalation.{action}",
                          {k: v for k, v in decision.items() if v is not None})


@router.post("/escalations/{task_id}/answer", tags=["escalations"],
             summary="Answer: the reply becomes the run's output",
             response_model=TaskView)
async def answer(task_id: TaskId, body: Answer, request: Request,
                 who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    return await _resolve(request, who, task_id, "answer", answer=body.answer)


@router.post("/escalations/{task_id}/resolve", tags=["escalations"],
             summary="Hand the run back to the agent, with a note",
             response_model=TaskView)
async def resolve(task_id: TaskId, body: ResumeNote, request: Request,
                  who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    return await _resolve(request, who, task_id, "resume", note=body.note)


@router.post("/escalations/{task_id}/dismiss", tags=["escalations"],
             summary="Close the run as cancelled, with a comment",
             response_model=TaskView)
async def dismiss(task_id: TaskId, body: Dismiss, request: Request,
                  who: Annotated[Principal, Depends(allowed("decide"))]) -> dict[str, Any]:
    return await _resolve(request, who, task_id, "dismiss", comment=body.comment)
