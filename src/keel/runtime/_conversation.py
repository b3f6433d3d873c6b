"""Conversations: successive runs (turns) of one thread share their history through the store.

A run started with ``conversation="c-1"`` carries that id in its record. When an agent's run
of a conversation starts, it reads the earlier turns of the conversation from the store, in
any process, and the model sees their messages before the new user message. The journal is
the source of truth: the messages are rebuilt from each earlier run's journal exactly as its
loop recorded them (user input, assistant turns, tool calls and their results), never from a
separate transcript.

Which earlier turns a run built on is itself a journal step, ``<agent>/conversation``: its
result holds the conversation id and, for each earlier run (oldest first), its id, how many
journal entries it had when the new run read it, and its status then. A resume or a replay of
the new run reads that step back and rebuilds the same messages from the same prefix of the
same journals, so it sends the same model requests even if the conversation grew meanwhile
(a later turn, or an earlier suspended turn that has since finished).

What each earlier run contributes (see docs/context.md, "Conversations"):

* its user input, always;
* an agent run: every recorded model turn (assistant text and tool calls) and every recorded
  tool result, in the order the loop made them; a call without a recorded result (a run that
  failed, was cancelled or is suspended mid-turn) gets a result saying so, so no tool call is
  ever left without its result; a ``final_result`` call gets a short acknowledgement;
* an escalation a person resolved: ``resume`` carries the person's note as the loop gave it
  to the model, ``answer`` carries the person's answer as the assistant's reply (it is the
  run's output); ``dismiss`` adds nothing;
* a flow's run (or any run with no agent turns): its input and, if it had completed when it
  was read, its output as the assistant's reply.

Corrections keel itself gave the model inside a turn (a rejected final answer) are not
carried: they were never the conversation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core import (
    Message,
    ModelResponse,
    StoreError,
    ToolCallPart,
    ToolResultPart,
    UserError,
    stable_hash,
    to_text,
)
from keel.runtime._journal import Journal
from keel.runtime._substeps import CONTEXT_KIND
from keel.store import JournalEntry, RunFilter, RunRecord, RunStore
from keel.tools import ToolResult

__all__ = ["ConversationTurn", "check_joinable", "conversation_history", "earlier_turns",
           "messages_of", "step_key"]

FINAL_TOOL = "final_result"
#: What the model sees for a call whose turn stopped before its result was recorded.
UNFINISHED = ("[keel: this call has no result: the turn stopped before it finished "
              "(status {status})]")
FINAL_ACK = "[keel: final answer given]"
_PAGE = 10_000


def step_key(agent: str) -> str:
    """The journal key of the step that records which earlier turns a run built on."""
    return f"{agent}/conversation"


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A completed run's contribution to its conversation, rebuilt once per process: a
    completed run's journal does not grow, so later turns reuse it instead of reading and
    parsing the journal again (``updated_at`` guards against a record that changed)."""

    updated_at: float
    count: int
    messages: tuple[Message, ...]
    warned: bool


#: Completed runs rebuilt in this process, by run id (least recently used dropped first).
_REBUILT: OrderedDict[str, Rebuilt] = OrderedDict()
_REBUILT_MAX = 4096
_rebuilt_lock = threading.Lock()


def _cached(record: RunRecord) -> Rebuilt | None:
    if record.status != "completed":
        return None
    with _rebuilt_lock:
        hit = _REBUILT.get(record.run_id)
        if hit is None or hit.updated_at != record.updated_at:
            return None
        _REBUILT.move_to_end(record.run_id)
        return hit


def forget_rebuilt(run_ids: Sequence[str]) -> None:
    """Drop these runs' rebuilt messages from the process (their conversation was deleted:
    no copy of the user's text stays in memory)."""
    with _rebuilt_lock:
        for run_id in run_ids:
            _REBUILT.pop(run_id, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationTurn:
    """One earlier run as a later turn read it: the record, the status it had then, and the
    journal entries it had then (in append order), or, for a completed run rebuilt earlier in
    this process, that rebuild (``cached``) instead of the entries."""

    record: RunRecord
    status: str
    entries: list[JournalEntry] = field(default_factory=list)
    cached: Rebuilt | None = None

    @property
    def count(self) -> int:
        """How many journal entries the run had when it was read."""
        return self.cached.count if self.cached is not None else len(self.entries)

    @property
    def warned(self) -> bool:
        """Whether the run warned that the conversation outgrew the context window."""
        if self.cached is not None:
            return self.cached.warned
        return any(e.kind == CONTEXT_KIND and e.name == "warning" and e.phase == "result"
                   for e in self.entries)


async def check_joinable(store: RunStore, conversation: str, *, tenant: str | None,
                         user: str | None) -> None:
    """Refuse a new run of ``conversation`` if the conversation already belongs to another
    tenant or user: a run can only continue its own owner's conversation."""
    first = await store.list_runs(RunFilter(conversation=conversation, limit=1))
    if first and (first[0].tenant, first[0].user) != (tenant, user):
        raise UserError(
            f"conversation {conversation!r} belongs to another tenant or user; a run can only "
            "continue a conversation of its own tenant and user. Start a new conversation id "
            "(nothing was stored).")


async def _records(store: RunStore, conversation: str, tenant: str | None) -> list[RunRecord]:
    """Every run of the conversation of this tenant, oldest first (by created_at, run_id)."""
    found: list[RunRecord] = []
    while True:
        page = await store.list_runs(RunFilter(conversation=conversation, tenant=tenant,
                                               limit=_PAGE, offset=len(found)))
        found.extend(page)
        if len(page) < _PAGE:
            break
    if tenant is None:  # RunFilter(tenant=None) is no filter: keep the untenanted runs only
        found = [r for r in found if r.tenant is None]
    found.sort(key=lambda r: (r.created_at, r.run_id))
    return found


async def earlier_turns(store: RunStore, record: RunRecord) -> list[ConversationTurn]:
    """The runs of ``record``'s conversation started before it (same tenant and user), each
    with its journal as it stands now, oldest first."""
    assert record.conversation is not None
    mine = (record.created_at, record.run_id)
    runs = [r for r in await _records(store, record.conversation, record.tenant)
            if r.user == record.user and (r.created_at, r.run_id) < mine]
    cached = {r.run_id: hit for r in runs if (hit := _cached(r)) is not None}
    journals = await store.read_journals([r.run_id for r in runs if r.run_id not in cached])
    return [ConversationTurn(record=r, status=r.status, cached=cached[r.run_id])
            if r.run_id in cached else
            ConversationTurn(record=r, status=r.status, entries=journals[r.run_id])
            for r in runs if r.run_id in cached or r.run_id in journals]


async def _recorded_turns(store: RunStore, data: Any, record: RunRecord
                          ) -> list[ConversationTurn]:
    """The earlier turns a recorded conversation step names, cut to the entries they had."""
    try:
        conversation = data["conversation"]
        wanted = [(str(r[0]), int(r[1]), str(r[2])) for r in data["runs"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise StoreError(f"run {record.run_id}: its conversation step is not readable "
                         f"({str(data)[:200]!r}); the journal was changed outside keel."
                         ) from None
    if not wanted:
        return []
    by_id = {r.run_id: r for r in await _records(store, conversation, record.tenant)}
    journals = await store.read_journals([run_id for run_id, _, _ in wanted])
    turns = []
    for run_id, count, status in wanted:
        earlier = by_id.get(run_id)
        entries = journals.get(run_id)
        if earlier is None or entries is None or len(entries) < count:
            raise StoreError(
                f"run {record.run_id} continues conversation {conversation!r} from run "
                f"{run_id}, which is no longer in the store as it was (deleted or pruned); "
                "its history cannot be rebuilt, so it cannot be resumed or replayed.")
        turns.append(ConversationTurn(record=earlier, status=status, entries=entries[:count]))
    return turns


async def conversation_history(journal: Journal, store: RunStore,
                               record: RunRecord) -> list[Message] | None:
    """The messages of the earlier turns ``record`` continues, through the journaled
    ``<agent>/conversation`` step (None for a run of no conversation). ``store`` is where
    the earlier turns are (for a replay: the run's store, not the replay's scratch one)."""
    key = step_key(record.agent)
    recorded = journal.recorded(key)
    if record.conversation is None and recorded is None:
        return None
    conversation = record.conversation
    if recorded is not None and isinstance(recorded.data, dict):
        conversation = recorded.data.get("conversation", conversation)  # a fork has none
    found: list[ConversationTurn] = []

    async def read() -> dict[str, Any]:
        found.extend(await earlier_turns(store, record))
        data: dict[str, Any] = {
            "conversation": conversation,
            "runs": [[t.record.run_id, t.count, t.status] for t in found]}
        if any(t.warned for t in found):
            # an earlier turn already told the user the conversation outgrew the window
            data["warned"] = True
        return data

    data, replayed = await journal.step(key, "conversation", str(conversation), read,
                                        input_hash=stable_hash([conversation]),
                                        budgeted=False, defer=True)
    turns = await _recorded_turns(store, data, record) if replayed else found
    return [m for turn in turns for m in messages_of(turn)]


# ------------------------------------------------------------------------ the messages


def messages_of(turn: ConversationTurn) -> list[Message]:
    """The messages one earlier run contributes (see the module docstring); a completed
    run's are kept for the next turns of this process."""
    if turn.cached is not None:
        return list(turn.cached.messages)
    out = _messages_of(turn)
    if turn.status == "completed" and turn.record.status == "completed":
        rebuilt = Rebuilt(updated_at=turn.record.updated_at, count=len(turn.entries),
                          messages=tuple(out), warned=turn.warned)
        with _rebuilt_lock:
            _REBUILT[turn.record.run_id] = rebuilt
            _REBUILT.move_to_end(turn.record.run_id)
            while len(_REBUILT) > _REBUILT_MAX:
                _REBUILT.popitem(last=False)
    return out


def _messages_of(turn: ConversationTurn) -> list[Message]:
    record = turn.record
    out = [Message.user(to_text(record.input))]
    prefix = f"{record.agent}/turn:"
    if not any(e.key.startswith(prefix) for e in turn.entries):
        if turn.status == "completed" and record.output is not None:
            out.append(Message.assistant(to_text(record.output)))
        return out
    _Rebuild(record.agent, turn.status, out).walk(turn.entries)
    return out


class _Rebuild:
    """Walks one agent run's result entries in append order, rebuilding its messages."""

    def __init__(self, agent: str, status: str, out: list[Message]) -> None:
        self.agent = agent
        self.status = status
        self.out = out
        self.calls: dict[str, ToolCallPart] = {}  # the open turn's calls by step key
        self.results: dict[str, ToolResultPart] = {}

    def walk(self, entries: Sequence[JournalEntry]) -> None:
        escalation = f"{self.agent}/escalation#"
        for e in entries:
            if e.phase != "result":
                continue
            turn = _turn_of(self.agent, e.key)
            if turn is not None and e.key == f"{self.agent}/turn:{turn}/model":
                self.flush()
                self._model(turn, e.data)
            elif e.kind == "tool" and e.key in self.calls:
                self._tool(e)
            elif e.kind == "escalation" and e.key.startswith(escalation):
                self.flush()
                self._decision(e.data)
        self.flush()

    def _model(self, turn: int, data: Any) -> None:
        if not isinstance(data, dict):
            return
        response = ModelResponse.from_dict(data)
        self.out.append(response.message)
        counts: dict[str, int] = {}
        for call in response.tool_calls:
            n = counts.get(call.tool_name, 0)
            counts[call.tool_name] = n + 1
            self.calls[f"{self.agent}/turn:{turn}/tool:{call.tool_name}#{n}"] = call

    def _tool(self, e: JournalEntry) -> None:
        call = self.calls[e.key]
        result = ToolResult.from_dict(e.data) if isinstance(e.data, dict) else None
        if result is not None:
            self.results[e.key] = ToolResultPart(call_id=call.call_id,
                                                 tool_name=call.tool_name,
                                                 content=result.content,
                                                 is_error=result.is_error)

    def _decision(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        action = data.get("action")
        if action == "resume":
            note = str(data.get("note") or "").strip() or "(no note)"
            self.out.append(Message.user(f"[A human reviewed this conversation and says: "
                                         f"{note}]"))
        elif action == "answer" and data.get("answer") is not None:
            self.out.append(Message.assistant(to_text(data["answer"])))

    def flush(self) -> None:
        """Close the last model turn: one tool message with a result for each of its calls."""
        if not self.calls:
            return
        parts = []
        for key, call in self.calls.items():
            part = self.results.get(key)
            if part is None:
                final = call.tool_name == FINAL_TOOL
                part = ToolResultPart(
                    call_id=call.call_id, tool_name=call.tool_name,
                    content=FINAL_ACK if final else UNFINISHED.format(status=self.status),
                    is_error=not final)
            parts.append(part)
        self.out.append(Message(role="tool", parts=tuple(parts)))
        self.calls, self.results = {}, {}


def _turn_of(agent: str, key: str) -> int | None:
    """N for a key ``<agent>/turn:N/...`` of the run's own loop (not a nested agent's)."""
    head = f"{agent}/turn:"
    if not key.startswith(head):
        return None
    number, _, _ = key[len(head):].partition("/")
    return int(number) if number.isdigit() else None
