"""Escalation inside real runs: each trigger suspends the run with a packet in the store, and
each resolution (answer, resume with a note, dismiss) does what it says to the run."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from keel import Agent, Budget, Escalate, MemoryStore, TaskConflict, tool
from keel.runtime import EscalationPolicy, resolve_escalation
from keel.store import RunStore, TaskFilter
from keel.testing import ScriptedModel, call


async def _only_escalation(store: RunStore) -> Any:
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    return task


async def test_user_asking_for_a_person_escalates_by_default_and_an_answer_closes_it() -> None:
    model = ScriptedModel(["I can help with that."], record_requests=True)
    agent = Agent("support", model=model)
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await agent.run("I want to talk to a human about my bill", store=store)
    assert info.value.trigger == "human_requested" and info.value.run_id
    assert model.requests == [], "the model is not asked once a person was requested"
    task = await _only_escalation(store)
    packet = task.data
    assert packet["request"] == "I want to talk to a human about my bill"
    assert packet["trigger"] == "human_requested" and packet["queue"] == "support"
    assert packet["due_at"] > packet["created_at"]
    assert (await store.get_run(task.run_id)).status == "suspended"
    await resolve_escalation(task.task_id, store=store, by="ann", action="answer",
                             answer="Your bill is fixed; I refunded the late fee.")
    record = await store.get_run(task.run_id)
    assert record.status == "completed"
    assert record.output == "Your bill is fixed; I refunded the late fee."
    with pytest.raises(TaskConflict):
        await resolve_escalation(task.task_id, store=store, by="bob", action="answer",
                                 answer="again")


async def test_resume_with_a_note_hands_the_note_to_the_model() -> None:
    model = ScriptedModel(["Sure, here is the plan."], record_requests=True)
    agent = Agent("support", model=model)
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await agent.run("can I speak to a person?", store=store)
    task = await _only_escalation(store)
    await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                             note="Customer is verified; go ahead and help.")
    result = await agent.resume(info.value.run_id or "", store=store)
    assert result.output == "Sure, here is the plan."
    last_user = [m for m in model.requests[0] if m.role == "user"][-1]
    assert "Customer is verified; go ahead and help." in last_user.text
    # replay-safe: resuming the completed run is refused, the journal holds the decision
    journal = await store.read_journal(result.run_id)
    assert [e.phase for e in journal if e.kind == "escalation"] == ["intent", "result"]


class Answer(pydantic.BaseModel):
    text: str
    confidence: float


async def test_low_confidence_answer_escalates_with_the_answer_as_proposal() -> None:
    unsure = call("final_result", {"text": "Maybe 3 days?", "confidence": 0.3})
    sure = call("final_result", {"text": "It ships tomorrow.", "confidence": 0.95})
    agent = Agent("ship", model=ScriptedModel([unsure, sure]), output_type=Answer,
                  escalation=EscalationPolicy(min_confidence=0.7, queue="shipping"))
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await agent.run("when does it ship?", store=store)
    task = await _only_escalation(store)
    assert task.queue == "shipping" and task.data["trigger"] == "low_confidence"
    assert "Maybe 3 days?" in task.data["proposal"]
    await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                             note="Check the warehouse status first.")
    result = await agent.resume(info.value.run_id or "", store=store)
    assert result.output == Answer(text="It ships tomorrow.", confidence=0.95)


async def test_repeated_failure_and_budget_escalate_when_the_policy_says_so() -> None:
    @tool
    def flaky(q: str) -> str:
        """Fails."""
        raise RuntimeError("database down")

    script = [call("flaky", {"q": "x"})] * 3 + ["done"]
    policy = EscalationPolicy(queue="tier2")
    store = MemoryStore()
    failing = Agent("ops", model=ScriptedModel(script), tools=[flaky], escalation=policy)
    with pytest.raises(Escalate) as info:
        await failing.run("go", store=store)
    task = await _only_escalation(store)
    assert task.data["trigger"] == "repeated_failure" and task.queue == "tier2"
    assert any("database down" in str(e) for e in task.data["evidence"])
    await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                             note="DB is back.")
    assert (await failing.resume(info.value.run_id or "", store=store)).output == "done"

    broke = Agent("ops", model=ScriptedModel([call("flaky", {"q": "y"}), "done"]),
                  tools=[flaky], escalation=policy, budget=Budget(max_steps=1))
    other = MemoryStore()
    with pytest.raises(Escalate) as budget_info:
        await broke.run("go", store=other)
    assert budget_info.value.trigger == "budget_exhausted"
    [btask] = await other.list_tasks()
    with pytest.raises(Exception, match="budget"):
        await resolve_escalation(btask.task_id, store=other, by="ann", action="resume")
    await resolve_escalation(btask.task_id, store=other, by="ann", action="dismiss",
                             comment="duplicate ticket")
    assert (await other.get_run(btask.run_id)).status == "cancelled"


async def test_without_a_policy_failures_fail_as_before() -> None:
    from keel import RepeatedFailure

    @tool
    def flaky(q: str) -> str:
        """Fails."""
        raise RuntimeError("down")

    agent = Agent("ops", model=ScriptedModel([call("flaky", {"q": "x"})] * 3), tools=[flaky])
    with pytest.raises(RepeatedFailure):
        await agent.run("go", store=MemoryStore())


async def test_a_tool_can_escalate_and_the_run_goes_on_after_resolution() -> None:
    effects: list[str] = []

    @tool
    def check_fraud(order: str) -> str:
        """Check an order for fraud."""
        effects.append(order)
        raise Escalate("the order looks fraudulent; a person must look")

    agent = Agent("fraud", model=ScriptedModel([call("check_fraud", {"order": "o1"}),
                                                "Order held."]), tools=[check_fraud])
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await agent.run("check o1", store=store)
    task = await _only_escalation(store)
    assert task.data["trigger"] == "tool" and "fraudulent" in task.data["reason"]
    await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                             note="Genuine customer.")
    result = await agent.resume(info.value.run_id or "", store=store)
    assert result.output == "Order held."
    assert effects == ["o1"], "the escalating tool call is recorded, not run again"


async def test_switched_off_escalation_lets_the_agent_answer() -> None:
    agent = Agent("support", model=ScriptedModel(["Hello!"]),
                  escalation=EscalationPolicy.off())
    result = await agent.run("let me talk to a human", store=MemoryStore())
    assert result.output == "Hello!"
