"""keel.Handoff raised by a tool: a recorded step, the turn finished, the signal raised from
the agent's run (again on resume and replay, without calling the model or the tool), and a
clear failure when nothing receives it."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, Handoff, MemoryStore, RunError, tool
from keel.runtime import Flow, FlowContext, replay_run
from keel.testing import ScriptedModel, call


class Calls:
    def __init__(self) -> None:
        self.lookups = 0
        self.transfers = 0


def _agent(calls: Calls) -> tuple[Agent[Any], ScriptedModel]:
    def lookup(order_id: str) -> str:
        """Look an order up."""
        calls.lookups += 1
        return f"order {order_id}: paid twice"

    def transfer(to: str, reason: str) -> None:
        """Hand the conversation to another agent."""
        calls.transfers += 1
        raise Handoff(to, reason)

    model = ScriptedModel([[call("transfer", {"to": "billing", "reason": "double charge"}),
                            call("lookup", {"order_id": "A1"}),
                            call("transfer", {"to": "tech", "reason": "second opinion"})]])
    return Agent("triage", model=model, tools=[tool(lookup), tool(transfer)]), model


class Catcher(Flow[str]):
    """Receives the handoff; crashes right after it once when asked to."""

    kind = "test"

    def __init__(self, agent: Agent[Any], *, crash: bool = False) -> None:
        super().__init__("desk")
        self.agent = agent
        self.crash = crash
        self.caught: list[Handoff] = []

    async def body(self, ctx: FlowContext, input: str) -> str:
        try:
            await ctx.run_agent(self.agent, input)
        except Handoff as exc:
            self.caught.append(exc)
            if self.crash:
                self.crash = False
                raise RuntimeError("the process stopped") from None
            return f"{exc.target}: {exc.reason}"
        return "no handoff"


async def test_a_tool_handoff_is_recorded_and_raised_after_the_turn() -> None:
    calls = Calls()
    agent, model = _agent(calls)
    flow = Catcher(agent)
    store = MemoryStore()
    result = await flow.run("I was charged twice", store=store)
    assert result.output == "billing: double charge"  # the first handoff of the turn wins
    [exc] = flow.caught
    assert exc.step_key == "desk/triage/turn:0/tool:transfer#0"
    assert (calls.lookups, calls.transfers, len(model.requests)) == (1, 2, 1)
    observed = exc.messages[-1]  # every call of the turn was answered
    assert observed.role == "tool"
    assert [(p.tool_name, p.is_error) for p in observed.tool_results] == [
        ("transfer", False), ("lookup", False), ("transfer", False)]
    assert "paid twice" in observed.tool_results[1].content
    assert [m.role for m in exc.messages] == ["user", "assistant", "tool"]
    journal = {e.key: e for e in await store.read_journal(result.run_id) if e.phase == "result"}
    recorded = journal["desk/triage/turn:0/tool:transfer#0"]
    assert recorded.kind == "tool" and recorded.data["failure"] is None
    assert recorded.data["handoff"] == {"target": "billing", "reason": "double charge"}
    assert journal["desk/triage/turn:0/tool:transfer#1"].data["handoff"]["target"] == "tech"
    assert "handoff" not in journal["desk/triage/turn:0/tool:lookup#0"].data


async def test_resume_and_replay_raise_the_same_handoff_without_calling_anything() -> None:
    calls = Calls()
    agent, model = _agent(calls)
    flow = Catcher(agent, crash=True)
    store = MemoryStore()
    with pytest.raises(RuntimeError, match="process stopped"):
        await flow.run("I was charged twice", store=store, run_id="r1")
    result = await flow.resume("r1", store=store)
    assert result.output == "billing: double charge"
    first, again = flow.caught
    assert (again.target, again.reason, again.step_key) == (
        first.target, first.reason, first.step_key)
    assert [m.role for m in again.messages] == [m.role for m in first.messages]
    assert (calls.lookups, calls.transfers, len(model.requests)) == (1, 2, 1)
    report = await replay_run(Catcher(agent), "r1", store=store)
    assert report.identical and not report.unused_steps, report
    assert (calls.lookups, calls.transfers, len(model.requests)) == (1, 2, 1)


async def test_a_handoff_nobody_receives_fails_the_run_clearly() -> None:
    calls = Calls()
    agent, _ = _agent(calls)
    store = MemoryStore()
    with pytest.raises(RunError, match="nothing receives a handoff here") as info:
        await agent.run("I was charged twice", store=store)
    assert info.value.step_key == "triage/turn:0/tool:transfer#0"
    assert isinstance(info.value.__cause__, Handoff)
    run_id = info.value.run_id or ""
    record = await store.get_run(run_id)
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "RunError"
    report = await replay_run(agent, run_id, store=store)
    assert report.identical and not report.unused_steps, report
    assert calls.transfers == 2
