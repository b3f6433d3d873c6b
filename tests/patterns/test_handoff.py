"""Handoffs: agent to agent with a filtered history, to a person, loops, resume, replay,
bad input."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, ConfigError, Escalate, MemoryStore, tool
from keel.core import Message, ModelResponse, TextPart, ToolCallPart, ToolResultPart, ToolSpec
from keel.guard import undelimit
from keel.patterns import HandoffLoop, HandoffTeam, HistoryFilter
from keel.runtime import replay_run, resolve_escalation
from keel.testing import FunctionModel, ScriptedModel, call


def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: paid twice"


def _always(answer: str | BaseException) -> FunctionModel:
    """A model that always gives the same answer (a carried history shifts a
    ScriptedModel's turns); ``.requests`` keeps what it was sent."""

    def answer_fn(messages: list[Message], tools: list[ToolSpec], settings: Any) -> str:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return FunctionModel(answer_fn)


def _desk(**kw: Any) -> tuple[HandoffTeam, ScriptedModel, FunctionModel]:
    triage_model = ScriptedModel([
        call("lookup_order", {"order_id": "A1"}),
        ["It looks like a billing problem.",
         call("transfer_to_billing", {"reason": "double charge on A1"})]])
    billing_model = _always("Refunded the second charge on A1.")
    triage = Agent("triage", model=triage_model, tools=[tool(lookup_order)],
                   instructions="Sort requests.")
    billing = Agent("billing", model=billing_model, instructions="Fix billing problems.")
    return HandoffTeam("desk", agents=[triage, billing], **kw), triage_model, billing_model


async def test_an_agent_hands_over_with_a_reason_and_the_next_sees_filtered_history() -> None:
    team, triage_model, billing_model = _desk()
    store = MemoryStore()
    result = await team.run("I was charged twice for A1", store=store)
    assert result.output == "Refunded the second charge on A1."
    assert len(triage_model.requests) == 2 and len(billing_model.requests) == 1
    seen = billing_model.requests[0]
    assert seen[0].text.startswith("Fix billing problems.")  # + the untrusted-content note
    assert [(m.role, m.text) for m in seen[1:]] == [
        ("user", "I was charged twice for A1"),
        ("assistant", "It looks like a billing problem."),
        ("user", "[triage handed this conversation to you. Reason: double charge on A1]")]
    assert not any(isinstance(p, ToolCallPart | ToolResultPart) for m in seen for p in m.parts)
    journal = await store.read_journal(result.run_id)
    handoffs = [e for e in journal if e.kind == "handoff"]
    assert [(e.key, e.data["from"], e.data["to"], e.data["reason"]) for e in handoffs] == [
        ("desk/hop:0/handoff", "triage", "billing", "double charge on A1")]
    keys = [e.key for e in journal]
    assert keys.index("desk/hop:0/triage/turn:1/tool:transfer_to_billing#0") < keys.index(
        "desk/hop:0/handoff") < keys.index("desk/hop:1/billing/turn:0/model")
    record = await store.get_run(result.run_id)
    assert record.metadata == {"pattern": "handoff"}
    report = await replay_run(team, result.run_id, store=store)
    assert report.identical and not report.unused_steps, report


async def test_a_full_history_carries_tool_work_but_not_the_unanswered_transfer() -> None:
    team, _, billing_model = _desk(history=HistoryFilter.full())
    await team.run("I was charged twice for A1", store=MemoryStore())
    seen = billing_model.requests[0]
    calls = [p.tool_name for m in seen for p in m.parts if isinstance(p, ToolCallPart)]
    results = [undelimit(p.content) for m in seen for p in m.tool_results]
    assert calls == ["lookup_order"] and results == ["order A1: paid twice"]


async def test_a_context_packet_replaces_the_history() -> None:
    def packet(messages: Any) -> str:
        return f"Packet: {len(messages)} messages; customer says: {messages[1].text}"

    team, _, billing_model = _desk(history=HistoryFilter.packet(packet))
    await team.run("I was charged twice for A1", store=MemoryStore())
    seen = billing_model.requests[0]
    assert [m.role for m in seen] == ["system", "user"]
    assert seen[1].text.endswith("Packet: 5 messages; customer says: I was charged twice for A1")


def test_history_filters() -> None:
    history = [Message.system("s"), Message.user("u1"),
               Message(role="assistant", parts=(TextPart(text="thinking"),
                                                ToolCallPart(call_id="1", tool_name="t",
                                                             arguments="{}"))),
               Message(role="tool", parts=(ToolResultPart(call_id="1", tool_name="t",
                                                          content="r"),)),
               Message.assistant("a1"), Message.user("u2")]
    texts = lambda f: [m.text for m in f.apply(history)]  # noqa: E731
    assert texts(HistoryFilter.conversation()) == ["u1", "thinking", "a1", "u2"]
    assert texts(HistoryFilter.last(2)) == ["a1", "u2"]
    assert texts(HistoryFilter.user_only()) == ["u1", "u2"]
    assert [m.role for m in HistoryFilter.full().apply(history)] == [
        "user", "assistant", "tool", "assistant", "user"]
    assert HistoryFilter.packet(lambda ms: "p").apply(history) == []
    with pytest.raises(ConfigError):
        HistoryFilter.last(0)


async def test_a_handoff_to_a_person_escalates_and_goes_on_with_their_note() -> None:
    model = ScriptedModel([call("transfer_to_human", {"reason": "wants a manager"}),
                           "Our manager approved a full refund."])
    agent = Agent("triage", model=model)
    team = HandoffTeam("desk", agents=[agent], human_queue="managers")
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await team.run("my parcel is lost", store=store)
    assert info.value.trigger == "handoff" and info.value.queue == "managers"
    task = await store.get_task(info.value.escalation_id or "")
    assert task.data["step_key"] == "desk/hop:0/human"
    assert "wants a manager" in task.data["reason"]
    run_id = info.value.run_id or ""
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                             note="full refund approved")
    result = await team.resume(run_id, store=store)
    assert result.output == "Our manager approved a full refund."
    assert model.requests[-1][-1].text == ("[A person took the conversation over and says: "
                                           "full refund approved]")
    answered = model.requests[-1][-2]  # the handoff call got its answer: a valid history
    assert answered.role == "tool" and answered.tool_results[0].tool_name == "transfer_to_human"
    assert (await replay_run(team, run_id, store=store)).identical


def _bouncing(name: str, other: str) -> Agent[Any]:
    return Agent(name, model=ScriptedModel([call(f"transfer_to_{other}", {"reason": "not mine"})]))


async def test_ping_pong_is_detected_and_fails_when_set_to() -> None:
    team = HandoffTeam("desk", agents=[_bouncing("a", "b"), _bouncing("b", "a")],
                       on_loop="fail", max_repeats=2)
    store = MemoryStore()
    with pytest.raises(HandoffLoop) as info:
        await team.run("help", store=store)
    assert "a handed to b 3 times (a -> b -> a -> b -> a -> b)" in info.value.message
    assert info.value.step_key == "desk/hop:4/handoff"
    handoffs = [e for e in await store.read_journal(info.value.run_id or "")
                if e.kind == "handoff"]
    assert len(handoffs) == 5
    assert (await store.get_run(info.value.run_id or "")).status == "failed"


async def test_ping_pong_escalates_by_default_and_the_person_breaks_the_loop() -> None:
    def stubborn(messages: list[Message], tools: list[ToolSpec], settings: Any) -> Any:
        if "says: I'll answer: yes" in messages[-1].text:
            return "Yes, we ship to Norway."
        return ModelResponse(parts=(ToolCallPart(call_id="c", tool_name="transfer_to_b",
                                                 arguments='{"reason": "not mine"}'),))

    a = Agent("a", model=FunctionModel(stubborn))
    team = HandoffTeam("desk", agents=[a, _bouncing("b", "a")], max_repeats=1)
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await team.run("do you ship to Norway?", store=store)
    assert info.value.trigger == "handoff_loop"
    task = await store.get_task(info.value.escalation_id or "")
    assert task.data["step_key"] == "desk/hop:2/loop"
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                             note="I'll answer: yes")
    result = await team.resume(info.value.run_id or "", store=store)
    assert result.output == "Yes, we ship to Norway."
    assert (await replay_run(team, result.run_id, store=store)).identical


async def test_more_handoffs_than_allowed_are_stopped() -> None:
    team = HandoffTeam("desk", agents=[_bouncing("a", "b"), _bouncing("b", "c"),
                                       _bouncing("c", "a")],
                       max_handoffs=2, max_repeats=5, on_loop="fail")
    with pytest.raises(HandoffLoop, match=r"more than 2 handoffs in a row \(a -> b -> c -> a\)"):
        await team.run("help", store=MemoryStore())


async def test_resume_after_a_crash_does_not_ask_the_first_agent_again() -> None:
    team, triage_model, _ = _desk()
    team.members["billing"] = team.members["billing"].clone(
        model=_always(RuntimeError("billing model down")))
    store = MemoryStore()
    with pytest.raises(Exception, match="billing model down"):
        await team.run("I was charged twice for A1", store=store, run_id="r1")
    assert len(triage_model.requests) == 2
    fixed, _, billing_model = _desk()
    fixed.members["triage"] = team.members["triage"]
    result = await fixed.resume("r1", store=store)
    assert result.output == "Refunded the second charge on A1."
    assert len(triage_model.requests) == 2 and len(billing_model.requests) == 1
    report = await replay_run(fixed, "r1", store=store)
    assert report.identical and not report.unused_steps, report


def test_routes_decide_who_gets_which_transfer_tools() -> None:
    team = HandoffTeam("desk", agents=[_bouncing("a", "b"), _bouncing("b", "a"),
                                       _bouncing("c", "a")],
                       routes={"a": ["b", "c"], "b": ["a"]}, human=False)
    names = {n: sorted(s.name for s in m.tool_plan().specs) for n, m in team.members.items()}
    assert names == {"a": ["transfer_to_b", "transfer_to_c"], "b": ["transfer_to_a"], "c": []}


def _a(name: str = "a", **kw: Any) -> Agent[Any]:
    return Agent(name, model=ScriptedModel(["ok"]), **kw)


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"agents": []}, "agents"),
    ({"agents": [_a(), "b"]}, "agents[1]"),
    ({"agents": [_a(), _a()]}, "agents[1].name"),
    ({"agents": [_a("human")]}, "agents[0].name"),
    ({"agents": [_a("9lives")]}, "agents[0].name"),
    ({"agents": [_a()], "start": "b"}, "start"),
    ({"agents": [_a(), _a("b")], "routes": {"a": ["z"]}}, "routes['a']"),
    ({"agents": [_a(), _a("b")], "routes": {"z": ["a"]}}, "routes['z']"),
    ({"agents": [_a(), _a("b")], "routes": {"a": ["a"]}}, "routes['a']"),
    ({"agents": [_a(), _a("b")], "routes": {"a": "b"}}, "routes['a']"),
    ({"agents": [_a()], "history": "full"}, "history"),
    ({"agents": [_a()], "max_handoffs": 0}, "max_handoffs"),
    ({"agents": [_a()], "max_repeats": True}, "max_repeats"),
    ({"agents": [_a()], "on_loop": "ignore"}, "on_loop"),
    ({"agents": [_a(tools=[tool(lambda: 1, name="transfer_to_human")])]}, "agents['a'].tools"),
])
def test_bad_definitions_name_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as info:
        HandoffTeam("desk", **kwargs)
    assert info.value.field == part
