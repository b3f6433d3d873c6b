"""The shapes the HTTP API answers with, as pydantic models: they are what ``/openapi.json``
publishes (and what the schema fuzzing checks each answer against)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str
    status: int


class ErrorBody(BaseModel):
    """Every refusal: a status code and this body."""

    error: ErrorDetail


#: the answers every authenticated route may give besides its own
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what} for code, what in (
        (400, "the request is invalid"), (401, "no valid token"),
        (403, "the role may not do this, or a CSRF check failed"),
        (404, "no such object for this tenant"), (409, "the object's state forbids it"),
        (413, "the body is too large"), (422, "the body or a parameter is malformed"),
        (429, "this key's rate limit"), (503, "the store is unavailable"))}


class RunView(BaseModel):
    run_id: str
    agent: str
    status: str
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    created_at: float
    updated_at: float
    tenant: str | None = None
    user: str | None = None
    conversation: str | None = None
    cancel_requested: bool = False


class StartedRun(BaseModel):
    run_id: str
    status: str
    events: str
    run: RunView | None = None


class RunPage(BaseModel):
    runs: list[RunView]
    next_cursor: str | None = None


class RunResultView(BaseModel):
    run_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] = {}


class EntryView(BaseModel):
    seq: int
    key: str
    phase: str
    kind: str
    name: str
    latency_ms: float
    created_at: float
    data: Any = None


class Timeline(BaseModel):
    run: RunView
    journal: list[EntryView]


class Cancelled(BaseModel):
    run_id: str
    outcome: str


class AgentInfo(BaseModel):
    name: str
    kind: str


class Agents(BaseModel):
    agents: list[AgentInfo]


class ConversationSummary(BaseModel):
    conversation: str
    turns: int
    last_at: float
    user: str | None = None
    agent: str
    status: str


class Conversations(BaseModel):
    conversations: list[ConversationSummary]


class ConversationView(BaseModel):
    conversation: str
    runs: list[RunView]


class Deleted(BaseModel):
    conversation: str
    deleted_runs: int


class TaskView(BaseModel):
    id: str
    kind: str
    run_id: str
    status: str
    queue: str
    step_key: str
    created_at: float
    due_at: float | None = None
    claimed_by: str | None = None
    claimed_at: float | None = None
    resolution: Any = None
    by: str | None = None
    resolved_at: float | None = None
    data: Any = None
    #: For an approval: how many different people must approve (1 for most), and every
    #: person's part so far (who, approved, comment, decided_at); None for an escalation.
    reviewers: int | None = None
    reviews: list[dict[str, Any]] | None = None
    #: ``"1 of 2 approved (ana)"`` for an approval that needs several people, else None.
    progress: str | None = None


class TaskWithRun(TaskView):
    run: dict[str, Any]


class TaskPage(BaseModel):
    items: list[TaskView]
    next_offset: int | None = None


class Token(BaseModel):
    token: str
    token_type: str
    expires_in: int
    tenant: str
    role: str


class CostRow(BaseModel):
    day: str | None = None
    agent: str | None = None
    runs: int
    cost_usd: float
    input_tokens: float
    output_tokens: float


class Costs(BaseModel):
    tenant: str
    days: float
    total_usd: float
    rows: list[CostRow]


class FailureModeView(BaseModel):
    kind: str
    cause: str
    where: str
    count: int
    runs: int
    share: float
    examples: list[str]
    first_seen: float
    last_seen: float
    mitigation: str
    versions: dict[str, int] = {}


class Failures(BaseModel):
    """The failure-modes report of the caller's tenant (``keel runs failures``)."""

    since: float | None = None
    agent: str | None = None
    tenant: str | None = None
    version: str | None = None
    runs: int
    failed: int
    blocked: int
    escalated: int
    complete: bool
    modes: list[FailureModeView]


class AuditEntryView(BaseModel):
    id: int
    at: float
    who: str
    tenant: str | None = None
    action: str
    target: str
    details: dict[str, Any] | None = None


class AuditPage(BaseModel):
    entries: list[AuditEntryView]


class KeyView(BaseModel):
    key_id: str
    tenant: str
    role: str
    name: str
    created_at: float
    created_by: str
    generation: int
    rotated_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None
    last_used_at: float | None = None
    active: bool


class KeyList(BaseModel):
    keys: list[KeyView]
    roles: list[str]


class KeyIssued(BaseModel):
    key: KeyView
    api_key: str


class KeyChanged(BaseModel):
    key: KeyView


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, str]
    shutting_down: bool
