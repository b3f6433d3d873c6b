"""``/v1/chat``: what a customer's chat needs and nothing more, for customer tokens (and the
staff's, whose chat page uses the same calls).

* ``POST /v1/chat/tokens`` (an operator's or admin's key): a customer token for one end
  user. The service that signs its customers in mints it and hands it to their browser or
  app; the token carries the user's id, so a customer can never act as another.
* ``POST /v1/chat/messages``: a message to a named agent, in a new conversation (the server
  picks its id) or in one of the caller's own conversations. A customer's runs carry their
  user id; another user's conversation is "not found", whether it exists or not.
* ``GET /v1/chat/conversations/{id}``: the caller's turns of a conversation: what they said,
  the answer, and where each turn stands.
* ``GET /v1/chat/runs/{id}/events``: a turn's answer, live (Server-Sent Events): only
  what a customer may see: ``status``, streamed text (``delta``) and model text
  (``thought``, without tool calls), ``approval`` and ``escalation`` notices (no data), and
  the ``result`` (the answer; for a failure, a plain sentence). Tool calls, their results and
  the journal's data are never sent.

Messages are 1 to :data:`MAX_MESSAGE_CHARS` characters of text that is not only whitespace;
anything else is refused with a message that says so.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from keel.core import RunNotFound, UserError, to_jsonable
from keel.runtime import Conversation
from keel.server._api_runs import ID_PATTERN, MAX_INPUT_CHARS, stream
from keel.server._auth import Principal
from keel.server._errors import ApiError, not_found
from keel.server._events import Event, parse_last_id
from keel.server._keys import ApiKey
from keel.server._models import ERRORS
from keel.server._state import ServerState, allowed, state
from keel.server._tokens import MAX_TTL_S, issue_token
from keel.store import RunRecord

#: the longest chat message (characters): a person's message, not a document
MAX_MESSAGE_CHARS = 10_000
#: what a customer is told when a turn failed (the reason is for the staff)
FAILED = "Sorry, something went wrong with this request. Please try again later."
Id = Annotated[str, Path(pattern=ID_PATTERN)]

router = APIRouter(prefix="/v1/chat", tags=["chat"], responses=ERRORS)


class CustomerToken(BaseModel):
    """Mint a customer token."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=200, description="the end user's id")
    ttl_s: int = Field(default=3600, ge=60, le=MAX_TTL_S)


class ChatMessage(BaseModel):
    """A customer's message."""

    model_config = ConfigDict(extra="forbid")
    agent: str = Field(min_length=1, max_length=200)
    input: str = Field(max_length=MAX_INPUT_CHARS)
    conversation: str | None = Field(default=None, pattern=ID_PATTERN)


@router.post("/tokens", summary="Mint a customer token for one end user", status_code=201)
async def customer_token(body: CustomerToken, request: Request,
                         who: Annotated[Principal, Depends(allowed("run"))]) -> dict[str, Any]:
    """The token may only chat, as ``user``, and lasts ``ttl_s`` seconds; revoking the key
    that minted it ends it at once."""
    s = state(request)
    if who.user is not None:
        raise ApiError(403, "forbidden", "a customer token cannot mint tokens")
    key: ApiKey = await s.keys.get_key(who.key_id, tenant=who.tenant)
    try:
        token = issue_token(key, s.auth.secret, ttl_s=body.ttl_s, audience=s.auth.audience,
                            user=body.user)
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    await s.audit(who, "token.customer", body.user, {"ttl_s": body.ttl_s})
    return {"token": token, "token_type": "bearer", "expires_in": body.ttl_s,
            "tenant": who.tenant, "role": "customer", "user": body.user}


#: the fields of an output object that hold its answer, in the order they are looked for
_ANSWER_FIELDS = ("answer", "text", "reply", "message")


def answer_text(output: Any) -> Any:
    """What a chat shows of a run's output: a string as it is; a router's result (a
    ``decision`` and an ``output``): the routed answer, or its clarifying question; an object
    with an ``answer``, ``text``, ``reply`` or ``message`` string: that; anything else as it
    is (the page shows it as JSON). Never the routing decision or other internals."""
    if isinstance(output, dict):
        decision = output.get("decision")
        if isinstance(decision, dict) and "output" in output:
            if decision.get("action") == "clarify":
                return decision.get("question") or ""
            return answer_text(output["output"])
        for name in _ANSWER_FIELDS:
            if isinstance(output.get(name), str):
                return output[name]
    return output


def check_message(text: str) -> str:
    """``text`` if it is a message a person could have written; a 400 saying what is wrong."""
    if not text.strip():
        raise ApiError(400, "empty", "the message is empty: write something first")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ApiError(400, "too_long", f"the message is {len(text):,} characters; a chat "
                       f"message is at most {MAX_MESSAGE_CHARS:,} (send a shorter one, or "
                       "split it)")
    return text


def chat_agent(request: Request, name: str) -> str:
    """``name`` if the caller may chat with it: one of the app's ``chat_agents``."""
    allowed_names = getattr(request.app.state.spec, "chat_agents", None)
    known = state(request).executor.agents
    if name not in known or (allowed_names is not None and name not in allowed_names):
        raise ApiError(404, "not_found", f"no agent {name[:80]!r} to chat with here")
    return name


async def own_turns(s: ServerState, conversation: str, who: Principal) -> list[RunRecord]:
    """The caller's turns of ``conversation`` (a customer's own only), oldest first; a
    conversation with any turn of another user is not the customer's: not found."""
    runs = await Conversation(conversation, store=s.store, tenant=who.tenant).runs()
    if who.user is not None and any(r.user != who.user for r in runs):
        raise not_found("conversation", conversation)
    return runs


def turn_view(s: ServerState, record: RunRecord, who: Principal) -> dict[str, Any]:
    """One turn as the chat shows it."""
    view = s.scrub({"input": to_jsonable(record.input), "output": to_jsonable(record.output)},
                   record)
    out = {"run_id": record.run_id, "agent": record.agent, "status": record.status,
           "input": view["input"],
           "answer": answer_text(view["output"]) if record.status == "completed" else None,
           "created_at": record.created_at}
    if record.status in ("failed", "cancelled"):
        out["notice"] = _failure(record, who)
    return out


def _failure(record: RunRecord, who: Principal) -> str:
    if record.status == "cancelled":
        return "This request was cancelled."
    if who.user is None and isinstance(record.error, dict):
        return f"The run failed: {str(record.error.get('message', ''))[:300]}"
    return FAILED


@router.post("/messages", summary="Send a message (a turn of a conversation)",
             status_code=202)
async def send(body: ChatMessage, request: Request, response: Response,
               who: Annotated[Principal, Depends(allowed("chat"))]) -> dict[str, Any]:
    s = state(request)
    text = check_message(body.input)
    agent = chat_agent(request, body.agent)
    conversation = body.conversation
    if conversation is None:
        conversation = secrets.token_hex(16)
    else:
        await own_turns(s, conversation, who)
    try:
        run_id = await s.executor.start(agent, text, tenant=who.tenant, user=who.user,
                                        conversation=conversation)
    except UserError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    await s.audit(who, "chat.message", run_id, {"agent": agent,
                                                "conversation": conversation})
    response.headers["Location"] = f"/v1/chat/runs/{run_id}/events"
    return {"run_id": run_id, "conversation": conversation, "status": "running",
            "events": f"/v1/chat/runs/{run_id}/events"}


@router.get("/conversations/{conversation_id}", summary="The caller's turns of a conversation")
async def conversation(conversation_id: Id, request: Request,
                       who: Annotated[Principal, Depends(allowed("chat"))]) -> dict[str, Any]:
    s = state(request)
    runs = await own_turns(s, conversation_id, who)
    if not runs:
        raise not_found("conversation", conversation_id)
    return {"conversation": conversation_id, "turns": [turn_view(s, r, who) for r in runs]}


async def own_run(s: ServerState, run_id: str, who: Principal) -> RunRecord:
    try:
        record = await s.store.get_run(run_id, tenant=who.tenant)
    except RunNotFound:
        raise not_found("run", run_id) from None
    if who.user is not None and record.user != who.user:
        raise not_found("run", run_id)
    return record


@router.get("/runs/{run_id}", summary="Where one turn stands, and its answer")
async def turn(run_id: Id, request: Request,
               who: Annotated[Principal, Depends(allowed("chat"))]) -> dict[str, Any]:
    s = state(request)
    return turn_view(s, await own_run(s, run_id, who), who)


@router.get("/runs/{run_id}/events", summary="A turn's answer, live (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(run_id: Id, request: Request,
                 who: Annotated[Principal, Depends(allowed("chat"))],
                 last_event_id: Annotated[str | None, Header(max_length=40)] = None
                 ) -> StreamingResponse:
    s = state(request)
    after = parse_last_id(last_event_id)
    await own_run(s, run_id, who)  # 404 before the stream starts
    return StreamingResponse(stream(s, run_id, who.tenant, after, request,
                                    lambda event: customer_event(event, who)),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def customer_event(event: Event, who: Principal) -> Event | None:
    """What a chat may see of one run event (None: nothing)."""
    d = event.data
    if event.name == "status":
        return Event("status", {"status": d.get("status")})
    if event.name == "delta":
        return Event("delta", {"text": d.get("text", "")})
    if event.name == "thought":
        return Event("thought", {"text": d.get("text", "")}, id=event.id)
    if event.name in ("approval", "escalation"):
        return Event(event.name, {"phase": d.get("phase")}, id=event.id)
    if event.name == "result":
        status = d.get("status")
        out: dict[str, Any] = {"status": status,
                               "output": answer_text(d.get("output"))
                               if status == "completed" else None}
        if status != "completed":
            raw = d.get("error")
            error: dict[str, Any] = raw if isinstance(raw, dict) else {}
            out["notice"] = ("This request was cancelled." if status == "cancelled"
                             else FAILED if who.user is not None
                             else f"The run failed: {str(error.get('message', ''))[:300]}")
        return Event("result", out)
    return None
