"""``/v1/runs/{run_id}/feedback``: a person's thumbs up or down, score and comment on a run,
given and read over HTTP with the caller's tenant in every store query (another tenant's run
is "not found"), recorded by :func:`keel.record_feedback` and counted in the
``keel_feedback_total`` metric."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from keel.core import RunNotFound, UserError, to_jsonable
from keel.observe import count_feedback
from keel.runtime import record_feedback, summarize_feedback
from keel.server._api_runs import ID_PATTERN, RunId
from keel.server._auth import Principal
from keel.server._errors import ApiError, not_found
from keel.server._keys import allows
from keel.server._models import ERRORS
from keel.server._state import ServerState, allowed, state
from keel.store import MAX_COMMENT_CHARS, Feedback, RunRecord

router = APIRouter(prefix="/v1", tags=["feedback"], responses=ERRORS)


class GiveFeedback(BaseModel):
    """A verdict on a run: thumbs, a score, a comment, or any of them together."""

    model_config = ConfigDict(extra="forbid")
    thumbs: Literal["up", "down"] | None = None
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                description="0 (bad) to 1 (good)")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    by: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="who gives it (your end user's id); default: the calling key. Each "
                    "person's newest verdict on a run is the one that counts")
    feedback_id: str | None = Field(
        default=None, pattern=ID_PATTERN,
        description="an id of yours: a retried request with the same id adds nothing")
    metadata: dict[str, Any] | None = Field(default=None, description="free JSON (16 KB)")


class FeedbackView(BaseModel):
    feedback_id: str
    run_id: str
    created_at: float
    thumbs: str | None = None
    score: float | None = None
    comment: str | None = None
    by: str | None = None
    negative: bool
    metadata: dict[str, Any] = {}


class FeedbackSummaryView(BaseModel):
    records: int
    verdicts: int
    runs: int
    up: int
    down: int
    scored: int
    mean_score: float | None = None
    negative: int
    negative_rate: float | None = None


class FeedbackList(BaseModel):
    items: list[FeedbackView]
    summary: FeedbackSummaryView


async def _may_give(request: Request, who: Annotated[Principal, Depends(allowed("read"))],
                    ) -> Principal:
    """Feedback is given by the keys that start runs (operator) or review them (reviewer)."""
    if not (allows(who.role, "run") or allows(who.role, "decide")):
        raise ApiError(403, "forbidden", f"role {who.role!r} may not give feedback here "
                       "(operator, reviewer or admin may)")
    return who


def feedback_view(s: ServerState, feedback: Feedback, record: RunRecord) -> dict[str, Any]:
    """A feedback record as the API shows it (its comment scrubbed as exports are)."""
    return {"feedback_id": feedback.feedback_id, "run_id": feedback.run_id,
            "created_at": feedback.created_at, "thumbs": feedback.thumbs,
            "score": feedback.score,
            "comment": None if feedback.comment is None else s.scrub(feedback.comment, record),
            "by": feedback.by, "negative": feedback.negative,
            "metadata": to_jsonable(feedback.metadata)}


async def _record(s: ServerState, run_id: str, who: Principal) -> RunRecord:
    try:
        return await s.store.get_run(run_id, tenant=who.tenant)
    except RunNotFound:
        raise not_found("run", run_id) from None


@router.post("/runs/{run_id}/feedback", summary="Give feedback on a run", status_code=201,
             response_model=FeedbackView,
             responses={200: {"model": FeedbackView, "description": "a retry: the "
                              "feedback_id was kept already; the kept record, unchanged"}})
async def give_feedback(run_id: RunId, body: GiveFeedback, request: Request,
                        response: Response,
                        who: Annotated[Principal, Depends(_may_give)]) -> dict[str, Any]:
    s = state(request)
    record = await _record(s, run_id, who)
    asked_at = time.time()
    try:
        kept = await record_feedback(run_id, thumbs=body.thumbs, score=body.score,
                                     comment=body.comment, by=body.by or who.who,
                                     tenant=who.tenant, store=s.store,
                                     feedback_id=body.feedback_id, metadata=body.metadata)
    except RunNotFound:
        raise not_found("run", run_id) from None
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    response.headers["Location"] = f"/v1/runs/{run_id}/feedback"
    if kept.created_at < asked_at:  # a retry of a feedback_id already kept: nothing new
        response.status_code = 200
        return feedback_view(s, kept, record)
    count_feedback(kept, agent=record.agent)
    await s.audit(who, "run.feedback", run_id, {"feedback_id": kept.feedback_id,
                                                "thumbs": kept.thumbs, "score": kept.score})
    return feedback_view(s, kept, record)


@router.get("/runs/{run_id}/feedback", summary="The feedback on a run",
            response_model=FeedbackList)
async def read_feedback(run_id: RunId, request: Request,
                        who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    record = await _record(s, run_id, who)
    records = await s.store.list_feedback(run_ids=[run_id], tenant=who.tenant)
    return {"items": [feedback_view(s, f, record) for f in records],
            "summary": summarize_feedback(records).to_dict()}
