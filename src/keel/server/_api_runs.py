"""``/v1/agents``, ``/v1/runs`` and ``/v1/conversations``: start, follow, read, cancel and
list runs, and the conversations they are turns of. Every store call names the caller's
tenant, so another tenant's run is "not found" in the query itself."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from keel.core import RunNotFound, UserError, to_jsonable
from keel.runtime import Conversation, cancel_run
from keel.server._auth import Principal
from keel.server._errors import ApiError, not_found
from keel.server._events import Event, parse_last_id
from keel.server._models import (
    ERRORS,
    Agents,
    Cancelled,
    Conversations,
    ConversationView,
    Deleted,
    RunPage,
    RunResultView,
    RunView,
    StartedRun,
    Timeline,
)
from keel.server._state import ServerState, allowed, state
from keel.store import JournalEntry, RunFilter, RunRecord

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$"
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="a run id")]
ConversationId = Annotated[str, Path(pattern=ID_PATTERN, description="a conversation id")]
MAX_INPUT_CHARS = 100_000
#: heartbeat comments keep proxies from closing a quiet stream, and notice a gone client
_HEARTBEAT_S = 15.0

router = APIRouter(prefix="/v1", tags=["runs"], responses=ERRORS)


class StartRun(BaseModel):
    """Start a run of a named agent or flow."""

    model_config = ConfigDict(extra="forbid")
    agent: str = Field(min_length=1, max_length=200, description="the agent or flow to run")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    user: str | None = Field(default=None, min_length=1, max_length=200)
    conversation: str | None = Field(default=None, pattern=ID_PATTERN)
    wait: bool = Field(default=False, description="answer when the run stops (or at "
                       "timeout_s) instead of at once")
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class Continue(BaseModel):
    """The next turn of a conversation."""

    model_config = ConfigDict(extra="forbid")
    agent: str = Field(min_length=1, max_length=200)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    user: str | None = Field(default=None, min_length=1, max_length=200)
    wait: bool = False
    timeout_s: float = Field(default=30.0, gt=0, le=300)


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="cancelled over the HTTP API", min_length=1, max_length=500)


def run_view(s: ServerState, record: RunRecord) -> dict[str, Any]:
    """A run as the API shows it (scrubbed for export)."""
    out = {"run_id": record.run_id, "agent": record.agent, "status": record.status,
           "input": to_jsonable(record.input), "output": to_jsonable(record.output),
           "error": to_jsonable(record.error), "usage": to_jsonable(record.usage),
           "created_at": record.created_at, "updated_at": record.updated_at,
           "tenant": record.tenant, "user": record.user,
           "conversation": record.conversation,
           "cancel_requested": record.cancel_requested}
    return s.scrub(out, record)  # type: ignore[no-any-return]


def entry_view(entry: JournalEntry) -> dict[str, Any]:
    return {"seq": entry.seq, "key": entry.key, "phase": entry.phase, "kind": entry.kind,
            "name": entry.name, "latency_ms": entry.latency_ms,
            "created_at": entry.created_at, "data": to_jsonable(entry.data)}


async def _record(s: ServerState, run_id: str, who: Principal) -> RunRecord:
    try:
        return await s.store.get_run(run_id, tenant=who.tenant)
    except RunNotFound:
        raise not_found("run", run_id) from None


@router.get("/agents", summary="The agents and flows this server runs", response_model=Agents)
async def agents(request: Request,
                 who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    return {"agents": [{"name": name, "kind": type(a).__name__.lower()}
                       for name, a in sorted(s.executor.agents.items())]}


async def _start(s: ServerState, who: Principal, agent: str, text: str, user: str | None,
                 conversation: str | None, wait: bool, timeout_s: float,
                 response: Response) -> dict[str, Any]:
    try:
        run_id = await s.executor.start(agent, text, tenant=who.tenant, user=user,
                                        conversation=conversation)
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    await s.audit(who, "run.start", run_id, {"agent": agent})
    response.headers["Location"] = f"/v1/runs/{run_id}"
    if not wait:
        response.status_code = 202
        return {"run_id": run_id, "status": "running", "events": f"/v1/runs/{run_id}/events"}
    record = await s.executor.wait(run_id, timeout_s)
    response.status_code = 202 if record.status == "running" else 200
    return {"run_id": run_id, "status": record.status, "run": run_view(s, record),
            "events": f"/v1/runs/{run_id}/events"}


@router.post("/runs", summary="Start a run", status_code=202, response_model=StartedRun,
             responses={200: {"model": StartedRun, "description": "the run stopped within "
                              "timeout_s (wait=true)"}})
async def start_run(body: StartRun, request: Request, response: Response,
                    who: Annotated[Principal, Depends(allowed("run"))]) -> dict[str, Any]:
    return await _start(state(request), who, body.agent, body.input, body.user,
                        body.conversation, body.wait, body.timeout_s, response)


def _cursor(value: str | None) -> tuple[int, float | None, str | None]:
    if not value:
        return 0, None, None
    refused = ApiError(400, "invalid", "cursor is not one this server returned")
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode() + b"==").decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refused from None
    if not isinstance(data, dict):
        raise refused
    offset, at, run_id = data.get("o"), data.get("t"), data.get("r")
    if not (isinstance(offset, int) and not isinstance(offset, bool)
            and 0 <= offset <= 10_000_000 and isinstance(at, int | float)
            and not isinstance(at, bool) and isinstance(run_id, str) and len(run_id) <= 200):
        raise refused
    return offset, float(at), run_id


def _next_cursor(offset: int, last: RunRecord) -> str:
    raw = json.dumps({"o": offset, "t": last.created_at, "r": last.run_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@router.get("/runs", summary="List runs, newest first, a page at a time",
            response_model=RunPage)
async def list_runs(
        request: Request, who: Annotated[Principal, Depends(allowed("read"))],
        status: Annotated[Literal["running", "suspended", "completed", "failed", "cancelled"]
                          | None, Query()] = None,
        agent: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        conversation: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=400)] = None) -> dict[str, Any]:
    """Pages never repeat a run: the cursor remembers the last run seen, and runs started
    since (which come first) are skipped over."""
    s = state(request)
    offset, at, last_id = _cursor(cursor)
    found: list[tuple[int, RunRecord]] = []  # (position in the listing, run)
    while len(found) <= limit:
        want = limit + 1 - len(found)
        batch = await s.store.list_runs(RunFilter(
            status=status, agent=agent, conversation=conversation, tenant=who.tenant,
            limit=want, offset=offset))
        found += [(offset + i, r) for i, r in enumerate(batch)
                  if at is None or (r.created_at, r.run_id) < (at, last_id or "")]
        offset += len(batch)
        if len(batch) < want:
            break
    page = found[:limit]
    more = len(found) > limit
    return {"runs": [run_view(s, r) for _, r in page],
            "next_cursor": _next_cursor(page[-1][0] + 1, page[-1][1]) if more else None}


@router.get("/runs/{run_id}", summary="A run", response_model=RunView)
async def get_run(run_id: RunId, request: Request,
                  who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    return run_view(s, await _record(s, run_id, who))


@router.get("/runs/{run_id}/result", summary="A run's status and result",
            response_model=RunResultView)
async def get_result(run_id: RunId, request: Request,
                     who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    view = run_view(s, await _record(s, run_id, who))
    return {k: view[k] for k in ("run_id", "status", "output", "error", "usage")}


@router.get("/runs/{run_id}/timeline", summary="A run's journal, step by step",
            response_model=Timeline)
async def timeline(run_id: RunId, request: Request,
                   who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    record = await _record(s, run_id, who)
    try:
        entries = await s.store.read_journal(run_id, tenant=who.tenant)
    except RunNotFound:
        raise not_found("run", run_id) from None
    view = s.scrub({"run": {"run_id": record.run_id},
                    "journal": [entry_view(e) for e in entries]}, record)
    return {"run": run_view(s, record), "journal": view["journal"]}


@router.post("/runs/{run_id}/cancel", summary="Cancel a run", response_model=Cancelled)
async def cancel(run_id: RunId, request: Request,
                 who: Annotated[Principal, Depends(allowed("run"))],
                 body: CancelBody | None = None) -> dict[str, Any]:
    s = state(request)
    await _record(s, run_id, who)
    reason = (body or CancelBody()).reason
    try:
        outcome = await cancel_run(run_id, store=s.store, reason=reason, by=who.who,
                                   tenant=who.tenant)
    except RunNotFound:
        raise not_found("run", run_id) from None
    except UserError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await s.audit(who, "run.cancel", run_id, {"reason": reason, "outcome": outcome})
    s.tails.wake(run_id)
    return {"run_id": run_id, "outcome": outcome}


@router.get("/runs/{run_id}/events", summary="A run's events, live (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(run_id: RunId, request: Request,
                 who: Annotated[Principal, Depends(allowed("read"))],
                 last_event_id: Annotated[str | None, Header(max_length=40)] = None
                 ) -> StreamingResponse:
    """Each journal entry once, in order, with its sequence number as the event id; resume
    with ``Last-Event-ID``. See docs/server.md for the event types."""
    s = state(request)
    after = parse_last_id(last_event_id)
    await _record(s, run_id, who)  # 404 before the stream starts
    return StreamingResponse(stream(s, run_id, who.tenant, after, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stream(s: ServerState, run_id: str, tenant: str, after: int,
                  request: Request,
                  shown: Callable[[Event], Event | None] | None = None) -> AsyncIterator[bytes]:
    """The SSE body: the tail's events (as ``shown`` makes them; None: left out), a
    heartbeat comment when quiet, and an end as soon as the client goes away (watched on
    the connection itself, not at the next write)."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.create_task(_pump(s, run_id, tenant, after, queue, shown))
    watch = asyncio.create_task(gone())
    try:
        yield b"retry: 1000\n\n"
        while True:
            getting = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getting, watch}, timeout=_HEARTBEAT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                getting.cancel()
                return
            if getting not in done:
                getting.cancel()
                yield b": keep-alive\n\n"
                continue
            chunk = getting.result()
            if chunk is None:
                return
            batch, ended = [chunk], False
            while not queue.empty() and len(batch) < 64:  # what arrived together: one write
                more = queue.get_nowait()
                if more is None:
                    ended = True
                    break
                batch.append(more)
            yield b"".join(batch)
            if ended:
                return
    finally:
        task.cancel()
        watch.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)


async def _pump(s: ServerState, run_id: str, tenant: str, after: int,
                queue: asyncio.Queue[bytes | None],
                shown: Callable[[Event], Event | None] | None) -> None:
    """The tail's events into ``queue``, encoded; None at the end."""
    try:
        async for event in s.tails.follow(run_id, tenant, after):
            out = event if shown is None else shown(event)
            if out is not None:
                await queue.put(out.encode())
    except RunNotFound:
        await queue.put(b"event: error\ndata: {\"type\":\"not_found\"}\n\n")
    finally:
        await queue.put(None)


# ------------------------------------------------------------------------- conversations


@router.get("/conversations", summary="Recent conversations", tags=["conversations"],
            response_model=Conversations)
async def conversations(request: Request,
                        who: Annotated[Principal, Depends(allowed("read"))],
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The conversations of the tenant's latest 1,000 runs, most recent first."""
    s = state(request)
    runs = await s.store.list_runs(RunFilter(tenant=who.tenant, limit=1000))
    seen: dict[str, dict[str, Any]] = {}
    for r in runs:
        if r.conversation is None:
            continue
        row = seen.setdefault(r.conversation, {"conversation": r.conversation, "turns": 0,
                                               "last_at": r.created_at, "user": r.user,
                                               "agent": r.agent, "status": r.status})
        row["turns"] += 1
    return {"conversations": list(seen.values())[:limit]}


def _conversation(s: ServerState, conversation_id: str, who: Principal) -> Conversation:
    return Conversation(conversation_id, store=s.store, tenant=who.tenant)


@router.get("/conversations/{conversation_id}", summary="A conversation's turns",
            tags=["conversations"], response_model=ConversationView)
async def conversation(conversation_id: ConversationId, request: Request,
                       who: Annotated[Principal, Depends(allowed("read"))]) -> dict[str, Any]:
    s = state(request)
    runs = await _conversation(s, conversation_id, who).runs()
    if not runs:
        raise not_found("conversation", conversation_id)
    return {"conversation": conversation_id, "runs": [run_view(s, r) for r in runs]}


@router.post("/conversations/{conversation_id}/messages", status_code=202,
             summary="Continue a conversation with the next turn", tags=["conversations"],
             response_model=StartedRun)
async def continue_conversation(conversation_id: ConversationId, body: Continue,
                                request: Request, response: Response,
                                who: Annotated[Principal, Depends(allowed("run"))]
                                ) -> dict[str, Any]:
    return await _start(state(request), who, body.agent, body.input, body.user,
                        conversation_id, body.wait, body.timeout_s, response)


@router.delete("/conversations/{conversation_id}", summary="Delete a conversation's "
               "runs, journals and tasks (a data-protection request)", tags=["conversations"],
               response_model=Deleted)
async def delete_conversation(conversation_id: ConversationId, request: Request,
                              who: Annotated[Principal, Depends(allowed("run"))]
                              ) -> dict[str, Any]:
    s = state(request)
    removed = await _conversation(s, conversation_id, who).delete()
    if not removed:
        raise not_found("conversation", conversation_id)
    await s.audit(who, "conversation.delete", conversation_id, {"runs": removed})
    return {"conversation": conversation_id, "deleted_runs": removed}
