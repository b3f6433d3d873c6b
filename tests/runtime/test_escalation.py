"""Escalation: the policy's checks, the packet a person reads, and recording their decision."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

import pydantic
import pytest

from keel.core import (
    BudgetExceeded,
    ConfigError,
    Escalate,
    ModelResponse,
    RepeatedFailure,
    TaskConflict,
    TaskNotFound,
    TextPart,
    ToolCallPart,
    ToolError,
    Usage,
    UserError,
)
from keel.runtime._escalation import (
    PACKET_MAX_BYTES,
    EscalationPolicy,
    build_packet,
    claim_escalation,
    escalation_id,
    escalation_task,
    packet_size,
    resolve_escalation,
)
from keel.store import HumanTask, JournalEntry, MemoryStore, RunRecord
from keel.tools import ToolResult

NOW = 1_700_000_000.0
RUN = "01RUNESCALATION0000000000"
KEY = "support/turn:2/escalation"


# ------------------------------------------------------------------------------ helpers


def model_entry(seq: int, turn: int, text: str = "", calls: tuple[tuple[str, Any], ...] = (),
                agent: str = "support") -> JournalEntry:
    parts: list[Any] = [TextPart(text=text)] if text else []
    parts += [ToolCallPart(call_id=f"c{turn}{i}", tool_name=name,
                           arguments=args if isinstance(args, str) else json.dumps(args))
              for i, (name, args) in enumerate(calls)]
    response = ModelResponse(parts=tuple(parts), model="scripted",
                             usage=Usage(requests=1, input_tokens=100, output_tokens=20))
    return JournalEntry(seq=seq, key=f"{agent}/turn:{turn}/model", phase="result", kind="model",
                        name="scripted", input_hash="h", data=response.to_dict(),
                        created_at=NOW + seq)


def tool_entry(seq: int, turn: int, name: str, content: str, *, error: bool = False,
               index: int = 0, agent: str = "support") -> JournalEntry:
    result = (ToolResult.fail("tool_error", content, retryable=False) if error
              else ToolResult(content=content, value=content))
    return JournalEntry(seq=seq, key=f"{agent}/turn:{turn}/tool:{name}#{index}", phase="result",
                        kind="tool", name=name, input_hash="h", data=result.to_dict(),
                        created_at=NOW + seq)


def record(status: str = "suspended", **changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": RUN, "agent": "support", "status": status,
        "input": "Where is my order 1234? It was due last week.", "created_at": NOW,
        "updated_at": NOW,
        "usage": {"requests": 2, "input_tokens": 200, "output_tokens": 40, "cost_usd": 0.01,
                  "steps": 3}}
    fields.update(changes)
    return RunRecord(**fields)


def journal() -> list[JournalEntry]:
    return [
        model_entry(0, 0, "Let me look the order up.", (("lookup_order", {"order_id": 1234}),)),
        tool_entry(1, 0, "lookup_order", "order 1234: shipped 2024-05-01, carrier lost it"),
        model_entry(2, 1, "", (("track", {"carrier": "ACME"}),)),
        tool_entry(3, 1, "track", "carrier API unavailable", error=True),
        model_entry(4, 2, "The carrier lost the parcel; I propose a reshipment."),
    ]


async def escalated(store: MemoryStore, *, trigger: str = "human_requested",
                    entries: list[JournalEntry] | None = None,
                    proposal: str | None = None) -> HumanTask:
    """A run suspended on an escalation, written as the runtime writes it: the packet as the
    step's intent, the task, the run suspended."""
    rec = record("running")
    await store.create_run(rec)
    entries = journal() if entries is None else entries
    await store.append(RUN, entries)
    exc = Escalate("the customer asked for a person", trigger=trigger, proposal=proposal)
    packet = build_packet(rec, entries, exc, EscalationPolicy(), key=KEY, now=NOW)
    task = escalation_task(packet)
    intent = JournalEntry(seq=len(entries), key=KEY, phase="intent", kind="escalation",
                          name=trigger, input_hash="esc-hash", data=packet, created_at=NOW)
    await store.put_task(task)
    await store.suspend_run(rec, [intent], waiting_on=[task.task_id])
    return task


async def snapshot(store: MemoryStore, task_id: str) -> tuple[Any, ...]:
    task = await store.get_task(task_id)
    return task, await store.get_run(task.run_id), await store.read_journal(task.run_id)


# ------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(("changes", "field"), [
    ({"queue": ""}, "EscalationPolicy.queue"),
    ({"queue": "   "}, "EscalationPolicy.queue"),
    ({"sla_seconds": 0}, "EscalationPolicy.sla_seconds"),
    ({"sla_seconds": -5.0}, "EscalationPolicy.sla_seconds"),
    ({"sla_seconds": float("nan")}, "EscalationPolicy.sla_seconds"),
    ({"sla_seconds": "1h"}, "EscalationPolicy.sla_seconds"),
    ({"min_confidence": 1.5}, "EscalationPolicy.min_confidence"),
    ({"min_confidence": -0.1}, "EscalationPolicy.min_confidence"),
    ({"min_confidence": True}, "EscalationPolicy.min_confidence"),
    ({"min_confidence": float("nan")}, "EscalationPolicy.min_confidence"),
    ({"confidence": 0.5}, "EscalationPolicy.confidence"),
    ({"novelty": "weather"}, "EscalationPolicy.novelty"),
    ({"human_phrases": ("(unclosed",)}, "EscalationPolicy.human_phrases"),
    ({"human_phrases": "talk to a human"}, "EscalationPolicy.human_phrases"),
    ({"human_phrases": ("",)}, "EscalationPolicy.human_phrases"),
    ({"on_repeated_failure": "yes"}, "EscalationPolicy.on_repeated_failure"),
    ({"enabled": 1}, "EscalationPolicy.enabled"),
])
def test_policy_validates_each_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        EscalationPolicy(**changes)
    assert info.value.field == field


def test_policy_defaults_are_frozen_and_keyword_only() -> None:
    policy = EscalationPolicy()
    assert (policy.queue, policy.sla_seconds, policy.min_confidence) == ("support", 14400, None)
    assert policy.enabled and policy.on_repeated_failure and policy.on_budget_exhausted
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.queue = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        EscalationPolicy("billing")  # type: ignore[call-arg]
    assert EscalationPolicy(sla_seconds=None).sla_seconds is None
    assert EscalationPolicy() == EscalationPolicy()


def test_off_switches_every_check_off() -> None:
    policy = EscalationPolicy.off()
    assert not policy.enabled
    assert policy.check_input("let me talk to a human") is None
    assert policy.check_output({"confidence": 0.0}) is None
    assert policy.from_failure(RepeatedFailure("x")) is None
    low = dataclasses.replace(policy, min_confidence=0.9)
    assert low.check_output({"confidence": 0.0}) is None


@pytest.mark.parametrize("text", [
    "Can I talk to a human please?",
    "I want to speak to a person",
    "let me speak to a representative",
    "Is there a real person there?",
    "get me a human agent",
    "I need to speak to your manager right now",
    "TRANSFER ME TO AN AGENT",
    "connect me with a live agent",
    "I'd like to chat with someone",
    "I want a human",
    "speak with\na\treal   human",
])
def test_a_request_for_a_person_escalates(text: str) -> None:
    exc = EscalationPolicy(queue="billing").check_input(text)
    assert isinstance(exc, Escalate)
    assert exc.trigger == "human_requested"
    assert exc.queue == "billing"
    assert "asked for a person" in exc.reason


@pytest.mark.parametrize("text", [
    "Which is warmer, Paris or Tokyo?",
    "My manager asked me to check the refund",
    "I'm a real estate agent and need an invoice",
    "Human error caused the outage, per the report",
    "my password manager lost the key",
    "The travel agent booked the wrong date",
    "I speak to customers every day",
    "This person was charged twice",
    "The agent field is empty in my profile",
    "",
])
def test_ordinary_requests_do_not_escalate(text: str) -> None:
    assert EscalationPolicy().check_input(text) is None


def test_custom_phrases_replace_the_defaults_and_non_text_input_is_read_as_json() -> None:
    policy = EscalationPolicy(human_phrases=(r"\bmensch\b",))
    exc = policy.check_input("Ich will einen MENSCH sprechen")
    assert exc is not None and exc.trigger == "human_requested"
    assert policy.check_input("talk to a human") is None
    assert EscalationPolicy().check_input({"text": "talk to a human"}) is not None  # type: ignore[arg-type]


def test_novel_input_escalates_with_the_checks_reason() -> None:
    seen: list[str] = []

    def novelty(text: str) -> str | None:
        seen.append(text)
        return "a legal question" if "lawsuit" in text else None

    policy = EscalationPolicy(novelty=novelty)
    exc = policy.check_input("I will file a lawsuit")
    assert exc is not None and exc.trigger == "novel_input"
    assert "a legal question" in exc.reason and exc.queue == "support"
    assert policy.check_input("where is my parcel") is None
    human = policy.check_input("lawsuit! talk to a human")
    assert human is not None and human.trigger == "human_requested"  # asked for: checked first
    assert seen == ["I will file a lawsuit", "where is my parcel"]


class Answer(pydantic.BaseModel):
    text: str
    confidence: float


def test_low_confidence_output_escalates_with_it_as_the_proposal() -> None:
    policy = EscalationPolicy(min_confidence=0.7)
    exc = policy.check_output({"text": "refund 40 EUR", "confidence": 0.4})
    assert exc is not None and exc.trigger == "low_confidence"
    assert "0.40" in exc.reason and "0.70" in exc.reason
    assert exc.proposal is not None and json.loads(exc.proposal)["text"] == "refund 40 EUR"
    model_exc = policy.check_output(Answer(text="ok", confidence=0.1))
    assert model_exc is not None and json.loads(model_exc.proposal or "")["text"] == "ok"
    assert policy.check_output(Answer(text="ok", confidence=0.7)) is None
    assert policy.check_output("plain text has no confidence") is None
    for unclear in ("high", True, 85, float("nan"), None):
        assert policy.check_output({"confidence": unclear}) is None
    assert EscalationPolicy().check_output({"confidence": 0.0}) is None  # no threshold set


def test_a_custom_scorer_decides_and_must_return_a_probability() -> None:
    policy = EscalationPolicy(min_confidence=0.5, confidence=lambda out: 0.2)
    exc = policy.check_output("We will refund you.")
    assert exc is not None and exc.proposal == "We will refund you."
    assert EscalationPolicy(min_confidence=0.5, confidence=lambda out: None).check_output(
        {"confidence": 0.0}) is None
    with pytest.raises(ConfigError) as info:
        EscalationPolicy(min_confidence=0.5, confidence=lambda out: 2).check_output("x")
    assert info.value.field == "EscalationPolicy.confidence"


def test_failures_a_person_can_rescue() -> None:
    policy = EscalationPolicy(queue="tier2")
    repeated = policy.from_failure(RepeatedFailure("track failed 3 times", run_id=RUN))
    assert repeated is not None and repeated.trigger == "repeated_failure"
    assert "track failed 3 times" in repeated.reason and repeated.queue == "tier2"
    budget = policy.from_failure(BudgetExceeded("tokens ran out", limit="tokens", used=12000,
                                                allowed=10000))
    assert budget is not None and budget.trigger == "budget_exhausted"
    assert "tokens budget" in budget.reason and "12,000 of 10,000" in budget.reason
    assert policy.from_failure(ToolError("boom")) is None
    assert policy.from_failure(ValueError("bug")) is None
    quiet = EscalationPolicy(on_repeated_failure=False, on_budget_exhausted=False)
    assert quiet.from_failure(RepeatedFailure("x")) is None
    assert quiet.from_failure(BudgetExceeded("x", limit="steps", used=1, allowed=1)) is None


def test_escalation_ids_are_deterministic() -> None:
    one = escalation_id(RUN, KEY)
    assert re.fullmatch(r"es-[0-9a-f]{12}", one)
    assert one == escalation_id(RUN, KEY)
    assert one != escalation_id(RUN, KEY + "x")
    assert one != escalation_id("other", KEY)


# ------------------------------------------------------------------------------ packet


def test_packet_has_what_a_person_needs() -> None:
    exc = Escalate("the customer asked for a person", trigger="human_requested")
    packet = build_packet(record(), journal(), exc, EscalationPolicy(sla_seconds=600),
                          key=KEY, now=NOW)
    assert packet["escalation_id"] == escalation_id(RUN, KEY)
    assert (packet["run_id"], packet["agent"], packet["step_key"]) == (RUN, "support", KEY)
    assert packet["request"] == "Where is my order 1234? It was due last week."
    assert packet["reason"] == "the customer asked for a person"
    assert (packet["trigger"], packet["queue"]) == ("human_requested", "support")
    assert (packet["created_at"], packet["due_at"]) == (NOW, NOW + 600)
    assert packet["usage"]["input_tokens"] == 200 and packet["usage"]["steps"] == 3
    assert packet["proposal"] == "The carrier lost the parcel; I propose a reshipment."
    assert packet["steps"] == 5 and packet["evidence_omitted"] == 0
    assert packet["evidence"] == [
        {"step_key": "support/turn:0/tool:lookup_order#0", "tool": "lookup_order",
         "arguments": {"order_id": 1234},
         "content": "order 1234: shipped 2024-05-01, carrier lost it", "is_error": False},
        {"step_key": "support/turn:1/tool:track#0", "tool": "track",
         "arguments": {"carrier": "ACME"}, "content": packet["evidence"][1]["content"],
         "is_error": True},
    ]
    assert "carrier API unavailable" in packet["evidence"][1]["content"]
    summary = packet["summary"].splitlines()
    assert summary == [
        "turn 0: the agent said: Let me look the order up.",
        'turn 0: it called lookup_order {"order_id": 1234}',
        "turn 0: lookup_order returned: order 1234: shipped 2024-05-01, carrier lost it",
        'turn 1: it called track {"carrier": "ACME"}',
        "turn 1: track failed: tool_error: carrier API unavailable",
        "turn 2: the agent said: The carrier lost the parcel; I propose a reshipment.",
    ]
    json.dumps(packet)  # plain JSON
    assert build_packet(record(), journal(), exc, EscalationPolicy(sla_seconds=600),
                        key=KEY, now=NOW) == packet  # deterministic


def test_packet_uses_the_signals_queue_proposal_and_id_and_the_policys_sla() -> None:
    exc = Escalate("unsure", trigger="low_route_confidence", queue="billing",
                   proposal="send to billing", escalation_id="es-custom")
    packet = build_packet(record(), journal(), exc, EscalationPolicy(sla_seconds=None),
                          key=KEY, now=NOW)
    assert (packet["queue"], packet["proposal"]) == ("billing", "send to billing")
    assert packet["escalation_id"] == "es-custom" and packet["due_at"] is None
    task = escalation_task(packet)
    assert (task.task_id, task.kind, task.queue, task.status) == (
        "es-custom", "escalation", "billing", "open")
    assert (task.run_id, task.step_key, task.created_at, task.due_at) == (RUN, KEY, NOW, None)
    assert task.data == packet


def test_packet_of_an_empty_journal_and_an_unrecorded_outcome() -> None:
    exc = Escalate("asked", trigger="human_requested")
    empty = build_packet(record(usage={}), [], exc, EscalationPolicy(), key=KEY, now=NOW)
    assert empty["summary"] == "The agent took no steps before it escalated."
    assert empty["evidence"] == [] and empty["proposal"] is None
    assert empty["usage"] == {"steps": 0}
    intent = JournalEntry(seq=1, key="support/turn:0/tool:refund#0", phase="intent",
                          kind="tool", name="refund", input_hash="h",
                          data={"tool": "refund", "arguments": '{"amount": 40}',
                                "idempotency_key": "k"}, created_at=NOW)
    packet = build_packet(record(), [model_entry(0, 0, "", (("refund", {"amount": 40}),)),
                                     intent], exc, EscalationPolicy(), key=KEY, now=NOW)
    assert "turn 0: refund started but its outcome was never recorded" in packet["summary"]


def test_intent_arguments_and_parallel_calls_find_their_arguments() -> None:
    entries = [
        model_entry(0, 0, "", (("get", {"id": 1}), ("get", {"id": 2}), ("put", "not json"))),
        tool_entry(1, 0, "get", "one", index=0),
        tool_entry(2, 0, "get", "two", index=1),
        tool_entry(3, 0, "put", "ok"),
    ]
    packet = build_packet(record(), entries, Escalate("x"), EscalationPolicy(), key=KEY,
                          now=NOW)
    assert [e["arguments"] for e in packet["evidence"]] == [{"id": 1}, {"id": 2}, "not json"]


def huge_journal(turns: int, blob: str) -> list[JournalEntry]:
    entries = []
    for turn in range(turns):
        entries.append(model_entry(2 * turn, turn, blob, (("search", {"q": blob}),)))
        entries.append(tool_entry(2 * turn + 1, turn, "search", f"result {turn}: {blob}"))
    return entries


@pytest.mark.parametrize("blob", ["x" * 50_000, "é€😀\x1b[31m" * 10_000, "[bold]" * 9000])
def test_packet_stays_under_the_size_bound(blob: str) -> None:
    entries = huge_journal(300, blob)
    rec = record(input=blob * 3)
    exc = Escalate(blob, trigger="repeated_failure", proposal=blob)
    packet = build_packet(rec, entries, exc, EscalationPolicy(), key=KEY, now=NOW)
    assert packet_size(packet) <= PACKET_MAX_BYTES
    assert packet["steps"] == 600
    assert "more lines not shown" in packet["summary"]
    assert packet["evidence"], "the most recent evidence is kept"
    assert packet["evidence"][-1]["step_key"] == "support/turn:299/tool:search#0"
    assert packet["evidence_omitted"] == 300 - len(packet["evidence"])
    assert packet["summary"].startswith("turn 0:")
    assert "turn 299" in packet["summary"]


def test_a_modest_journal_keeps_evidence_at_full_length() -> None:
    entries = huge_journal(4, "y" * 5000)
    packet = build_packet(record(), entries, Escalate("x"), EscalationPolicy(), key=KEY,
                          now=NOW)
    assert packet_size(packet) <= PACKET_MAX_BYTES
    assert len(packet["evidence"]) >= 2
    assert all(len(e["content"]) <= 2100 for e in packet["evidence"])
    assert packet["evidence"][-1]["content"].startswith("result 3: yyyy")


def test_packet_masks_secrets() -> None:
    secret = "sk-abcdefghijklmnopqrstuvwxyz123456"
    entries = [model_entry(0, 0, f"using key {secret}", (("auth", {"api_key": secret}),)),
               tool_entry(1, 0, "auth", f"token {secret} accepted")]
    packet = build_packet(record(input=f"my key is {secret}"), entries, Escalate("x"),
                          EscalationPolicy(), key=KEY, now=NOW)
    assert secret not in json.dumps(packet)


# -------------------------------------------------------------------------- decisions


async def test_answer_completes_the_run_with_the_answer() -> None:
    store = MemoryStore()
    task = await escalated(store)
    done = await resolve_escalation(task.task_id, store=store, by="ana", action="answer",
                                    answer="Your parcel is re-shipped today.",
                                    comment="called the carrier")
    assert (done.status, done.by) == ("resolved", "ana")
    assert done.resolution["action"] == "answer"
    run = await store.get_run(RUN)
    assert (run.status, run.output, run.error) == (
        "completed", "Your parcel is re-shipped today.", None)
    last = (await store.read_journal(RUN))[-1]
    assert (last.key, last.phase, last.kind, last.name, last.input_hash) == (
        KEY, "result", "escalation", "human_requested", "esc-hash")
    assert set(last.data) == {"action", "answer", "note", "comment", "by",
                              "resolved_at"}
    assert last.data["answer"] == "Your parcel is re-shipped today."
    assert last.data["comment"] == "called the carrier" and last.data["by"] == "ana"
    assert last.seq == 6


async def test_resume_wakes_the_run_with_the_note() -> None:
    store = MemoryStore()
    task = await escalated(store, trigger="repeated_failure")
    await resolve_escalation(task.task_id, store=store, by="bo", action="resume",
                             note="The tracking API is back; try again.")
    run = await store.get_run(RUN)
    assert (run.status, run.lease_owner, run.output) == ("running", None, None)
    last = (await store.read_journal(RUN))[-1]
    assert last.data["action"] == "resume" and last.name == "repeated_failure"
    assert last.data["note"] == "The tracking API is back; try again."
    assert (await store.get_task(task.task_id)).status == "resolved"


async def test_resume_is_refused_after_an_exhausted_budget() -> None:
    store = MemoryStore()
    task = await escalated(store, trigger="budget_exhausted")
    before = await snapshot(store, task.task_id)
    with pytest.raises(UserError, match=r"budget ran out.*--answer.*--dismiss"):
        await resolve_escalation(task.task_id, store=store, by="bo", action="resume")
    assert await snapshot(store, task.task_id) == before
    await resolve_escalation(task.task_id, store=store, by="bo", action="dismiss",
                             comment="customer refunded by phone")


async def test_dismiss_cancels_the_run_with_the_comment() -> None:
    store = MemoryStore()
    task = await escalated(store)
    await resolve_escalation(task.task_id, store=store, by="cy", action="dismiss",
                             comment="duplicate of ticket 77")
    run = await store.get_run(RUN)
    assert run.status == "cancelled"
    assert run.error is not None and run.error["message"] == "duplicate of ticket 77"
    assert run.error["type"] == "EscalationDismissed" and run.error["step_key"] == KEY


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"action": "dismiss"}, UserError, "needs a comment"),
    ({"action": "dismiss", "comment": "  "}, UserError, "needs a comment"),
    ({"action": "answer"}, UserError, "an answer is needed"),
    ({"action": "answer", "answer": " \n"}, UserError, "an answer is needed"),
    ({"action": "resume", "answer": "x"}, UserError, "only goes with the answer action"),
    ({"action": "answer", "answer": "x", "note": "y"}, UserError, "does not go with answer"),
    ({"action": "close"}, UserError, "unknown action"),
    ({"action": "answer", "answer": "x", "by": ""}, UserError, "say who"),
    ({"action": "answer", "answer": "x" * 70_000}, UserError, "at most 65,536"),
    ({"action": "resume", "note": "n" * 70_000}, UserError, "at most 65,536"),
    ({"action": "answer", "answer": {"too": "x" * 70_000}}, UserError, "characters of JSON"),
    ({"action": "answer", "answer": {1, 2}}, UserError, "text or JSON"),
    ({"action": "resume", "note": 5}, UserError, "must be text"),
])
async def test_bad_decisions_change_nothing(kwargs: dict[str, Any], error: type[Exception],
                                            match: str) -> None:
    store = MemoryStore()
    task = await escalated(store)
    before = await snapshot(store, task.task_id)
    kwargs = {"by": "ana", **kwargs}
    with pytest.raises(error, match=match):
        await resolve_escalation(task.task_id, store=store, **kwargs)
    assert await snapshot(store, task.task_id) == before


async def test_unknown_ids_approvals_repeats_and_finished_runs_are_refused() -> None:
    store = MemoryStore()
    task = await escalated(store)
    with pytest.raises(TaskNotFound):
        await resolve_escalation("es-000000000000", store=store, by="a", action="resume")
    approval = HumanTask(task_id="ap-1", run_id=RUN, kind="approval", step_key="k/approval",
                         queue="approvals", status="open", created_at=NOW, data={})
    await store.put_task(approval)
    with pytest.raises(UserError, match="is an approval"):
        await resolve_escalation("ap-1", store=store, by="a", action="resume")
    with pytest.raises(UserError, match="is an approval"):
        await claim_escalation("ap-1", "a", store=store)
    await resolve_escalation(task.task_id, store=store, by="a", action="resume")
    after = await snapshot(store, task.task_id)
    with pytest.raises(TaskConflict, match="already resolved by a"):
        await resolve_escalation(task.task_id, store=store, by="b", action="answer",
                                 answer="x")
    assert await snapshot(store, task.task_id) == after


async def test_a_finished_run_is_not_waiting_any_more() -> None:
    store = MemoryStore()
    task = await escalated(store)
    run = await store.get_run(RUN)
    await store.finish_run(run.with_status("failed", updated_at=time.time()), [])
    before = await snapshot(store, task.task_id)
    with pytest.raises(TaskConflict, match="is failed; nothing waits"):
        await resolve_escalation(task.task_id, store=store, by="a", action="answer",
                                 answer="x")
    assert await snapshot(store, task.task_id) == before


async def test_claiming() -> None:
    store = MemoryStore()
    task = await escalated(store)
    claimed = await claim_escalation(task.task_id, "ana", store=store)
    assert (claimed.status, claimed.claimed_by) == ("claimed", "ana")
    assert (await claim_escalation(task.task_id, "ana", store=store)).claimed_by == "ana"
    with pytest.raises(TaskConflict, match="claimed by ana"):
        await claim_escalation(task.task_id, "bo", store=store)
    with pytest.raises(UserError, match="say who"):
        await claim_escalation(task.task_id, " ", store=store)
    with pytest.raises(TaskNotFound):
        await claim_escalation("es-nope", "ana", store=store)
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume")
    with pytest.raises(TaskConflict, match="already resolved"):
        await claim_escalation(task.task_id, "ana", store=store)
