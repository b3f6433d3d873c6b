"""Flows: plain async bodies on the journal, nested agents with budget shares, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    Budget,
    BudgetExceeded,
    ConfigError,
    MemoryStore,
    ModelError,
    RunError,
    tool,
)
from keel.core import ToolContext, UserError
from keel.runtime import Flow, FlowContext, decide_approval, flow, replay_run
from keel.runtime._replay import _used
from keel.store import JournalEntry
from keel.testing import ScriptedModel, call


def _agent(name: str, answer: str, **kw: Any) -> Agent[str]:
    return Agent(name, model=ScriptedModel([answer]), **kw)


class TwoWriters(Flow[str]):
    kind = "test"

    def __init__(self, counter: list[str]) -> None:
        super().__init__("pair")
        self.a = _agent("alpha", "A says hi")
        self.b = _agent("beta", "B says hi")
        self.counter = counter

    async def body(self, ctx: FlowContext, input: str) -> str:
        def note() -> str:
            self.counter.append("note")
            return f"noted {input}"

        noted = await ctx.step("note", note, input=input)
        a, b = await ctx.gather(ctx.run_agent(self.a, input), ctx.run_agent(self.b, input))
        return f"{noted}: {a.output} / {b.output}"


async def test_flow_runs_agents_under_its_path_and_journals_every_step() -> None:
    store = MemoryStore()
    counter: list[str] = []
    result = await TwoWriters(counter).run("x", store=store)
    assert result.output == "noted x: A says hi / B says hi"
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert "pair/note" in keys
    assert "pair/alpha/turn:0/model" in keys and "pair/beta/turn:0/model" in keys
    record = await store.get_run(result.run_id)
    assert record.status == "completed" and record.metadata == {"pattern": "test"}
    assert record.usage["steps"] == 2  # two model turns; the note is a decision, not work


async def test_replay_of_a_flow_reproduces_it_without_running_steps() -> None:
    store = MemoryStore()
    counter: list[str] = []
    pair = TwoWriters(counter)
    result = await pair.run("x", store=store)
    report = await replay_run(pair, result.run_id, store=store)
    assert report.identical, report
    assert counter == ["note"]


async def test_a_sub_agent_cannot_spend_more_than_its_share() -> None:
    looping = Agent("looper", model=ScriptedModel([call("ping")] * 50 + ["done"]),
                    tools=[tool(lambda: "pong", name="ping")])

    @flow("outer", agents=[looping], budget=Budget(max_steps=100))
    async def outer(ctx: FlowContext, input: str) -> Any:
        return (await ctx.run_agent(looping, input, budget=Budget(max_steps=5))).output

    store = MemoryStore()
    with pytest.raises(BudgetExceeded) as info:
        await outer.run("go", store=store)
    assert info.value.limit == "steps" and info.value.allowed == 5
    assert len([e for e in await store.read_journal(info.value.run_id or "")
                if e.kind == "model"]) == 3  # 3 turns + 2 tools = 5 steps


async def test_the_parents_budget_caps_every_share() -> None:
    looping = Agent("looper", model=ScriptedModel([call("ping")] * 50 + ["done"]),
                    tools=[tool(lambda: "pong", name="ping")], budget=Budget(max_steps=80))

    @flow("outer", budget=Budget(max_steps=7))
    async def outer(ctx: FlowContext, input: str) -> Any:
        first = ctx.run_agent(looping, input, name="one", budget=0.5)
        await first
        return None

    with pytest.raises(BudgetExceeded) as info:
        await outer.run("go", store=MemoryStore())
    assert info.value.allowed == 3  # half of 7, rounded down


async def test_parallel_branches_waiting_for_approval_suspend_once_with_all_ids() -> None:
    def refund_fn(amount: int) -> str:
        return f"refunded {amount}"

    refund = tool(refund_fn, name="refund", risk="irreversible")
    a = Agent("a", model=ScriptedModel([call("refund", {"amount": 1}), "a done"]),
              tools=[refund])
    b = Agent("b", model=ScriptedModel([call("refund", {"amount": 2}), "b done"]),
              tools=[refund])

    @flow("both", agents=[a, b])
    async def both(ctx: FlowContext, input: str) -> str:
        ra, rb = await ctx.gather(ctx.run_agent(a, input), ctx.run_agent(b, input))
        return f"{ra.output}+{rb.output}"

    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await both.run("go", store=store)
    assert len(info.value.approval_ids) == 2
    run_id = info.value.run_id or ""
    assert (await store.get_run(run_id)).status == "suspended"
    for approval_id in info.value.approval_ids:
        await decide_approval(approval_id, store=store, approve=True, by="ops")
    result = await both.resume(run_id, store=store)
    assert result.output == "a done+b done"


async def test_resume_after_a_crash_does_not_run_finished_agents_again() -> None:
    calls: list[str] = []

    def slow() -> str:
        calls.append("slow")
        return "ok"

    first = Agent("first", model=ScriptedModel([call("work"), "first done"]),
                  tools=[tool(slow, name="work")])
    crashing = Agent("second", model=ScriptedModel([RuntimeError("boom"), "second done"]))

    @flow("crashy", agents=[first, crashing])
    async def crashy(ctx: FlowContext, input: str) -> str:
        one = await ctx.run_agent(first, input)
        two = await ctx.run_agent(crashing, one.output)
        return str(two.output)

    store = MemoryStore()
    with pytest.raises(Exception, match="boom"):
        await crashy.run("go", store=store, run_id="r1")
    assert calls == ["slow"]
    steady = Agent("second", model=ScriptedModel(["second done"]))

    @flow("crashy", agents=[first, steady])
    async def fixed(ctx: FlowContext, input: str) -> str:
        one = await ctx.run_agent(first, input)
        return str((await ctx.run_agent(steady, one.output)).output)

    result = await fixed.resume("r1", store=store)
    assert result.output == "second done" and calls == ["slow"]


def test_bad_flow_definitions_name_the_part() -> None:
    with pytest.raises(ConfigError, match="name"):
        Flow("a/b")
    with pytest.raises(ConfigError, match="budget"):
        Flow("ok", budget=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="async"):
        flow("f")(lambda ctx, x: x)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="fraction"):
        Budget().scaled(1.5)


async def test_a_step_name_must_be_relative_and_values_json() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        when: datetime.date

    store = MemoryStore()

    @flow("plain")
    async def plain(ctx: FlowContext, input: str) -> Any:
        return await ctx.step("p", lambda: Point(1, datetime.date(2024, 1, 2)))

    # The step's value is the plain data the journal holds, live and on replay alike.
    done = await plain.run("go", store=store)
    assert done.output == {"x": 1, "when": "2024-01-02"}
    steps = {e.key: e.data for e in await store.read_journal(done.run_id)
             if e.phase == "result"}
    assert steps["plain/p"] == {"x": 1, "when": "2024-01-02"}

    @flow("bad")
    async def bad(ctx: FlowContext, input: str) -> Any:
        loop: list[Any] = []
        loop.append(loop)
        return await ctx.step("x", lambda: loop)

    with pytest.raises(Exception, match="cannot be recorded"):
        await bad.run("go", store=MemoryStore())

    @flow("worse")
    async def worse(ctx: FlowContext, input: str) -> Any:
        return await ctx.step("/abs", lambda: 1)

    with pytest.raises(Exception, match="relative"):
        await worse.run("go", store=MemoryStore())


def test_run_sync_refuses_inside_a_loop() -> None:
    async def inside() -> None:
        @flow("f")
        async def f(ctx: FlowContext, input: str) -> str:
            return input
        f.run_sync("x")

    with pytest.raises(Exception, match="event loop"):
        asyncio.run(inside())


async def test_a_flow_escalates_to_a_person_and_goes_on_with_their_note() -> None:
    from keel import Escalate
    from keel.runtime import resolve_escalation

    seen: list[str] = []

    @flow("asker")
    async def asker(ctx: FlowContext, input: str) -> str:
        note = await ctx.escalate("not sure which team", trigger="low_route_confidence",
                                  queue="triage", proposal="billing?")
        seen.append(note)
        return f"routed by a person: {note}"

    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await asker.run("help", store=store)
    assert info.value.trigger == "low_route_confidence" and info.value.queue == "triage"
    task = await store.get_task(info.value.escalation_id or "")
    assert task.data["step_key"] == "asker/escalation" and task.data["proposal"] == "billing?"
    await resolve_escalation(task.task_id, store=store, by="ana", action="resume",
                             note="billing")
    result = await asker.resume(info.value.run_id or "", store=store)
    assert result.output == "routed by a person: billing" and seen == ["billing"]


async def test_a_worker_continues_a_flow_once_its_approval_is_decided() -> None:
    from keel import Worker

    def pay_fn(amount: int) -> str:
        return f"paid {amount}"

    pay = tool(pay_fn, name="pay", risk="irreversible")
    payer = Agent("payer", model=ScriptedModel([call("pay", {"amount": 5}), "paid"]),
                  tools=[pay])

    @flow("billing", agents=[payer])
    async def billing(ctx: FlowContext, input: str) -> str:
        return str((await ctx.run_agent(payer, input)).output)

    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await billing.run("pay it", store=store)
    [approval_id] = info.value.approval_ids
    await decide_approval(approval_id, store=store, approve=True, by="ops")
    outcomes = await Worker([billing], store=store).run_until_idle()
    assert [(o.agent, o.status) for o in outcomes] == [("billing", "completed")]
    record = await store.get_run(info.value.run_id or "")
    assert record.status == "completed" and record.output == "paid"
    pays = [e.phase for e in await store.read_journal(record.run_id)
            if e.kind == "tool" and e.name == "pay"]
    assert pays.count("result") == 1


class Inspector(Flow[str]):
    """An agent whose tool records steps of its own under the tool's step key."""

    kind = "test"

    def __init__(self, runs: list[str]) -> None:
        super().__init__("desk")
        self.runs = runs

    async def body(self, ctx: FlowContext, input: str) -> str:
        async def inspect(item: str, call: ToolContext) -> str:
            """Inspect an item."""
            inner = ctx.scope(call.step_key[len(ctx.path) + 1:])

            def look() -> str:
                self.runs.append(item)
                return f"{item} looks fine"

            return str(await inner.step("look", look, input=item))

        agent = Agent("clerk", model=ScriptedModel([call("inspect", {"item": "box"}), "done"]),
                      tools=[tool(inspect)])
        return str((await ctx.run_agent(agent, input)).output)


async def test_replay_counts_steps_recorded_under_a_replayed_step_as_used() -> None:
    store = MemoryStore()
    runs: list[str] = []
    result = await Inspector(runs).run("check", store=store)
    keys = [e.key for e in await store.read_journal(result.run_id) if e.phase == "result"]
    assert "desk/clerk/turn:0/tool:inspect#0/look" in keys and runs == ["box"]
    report = await replay_run(Inspector(runs), result.run_id, store=store)
    assert report.identical and not report.unused_steps, report
    assert report.steps_replayed == report.steps_recorded == len(keys) and runs == ["box"]


def test_only_steps_under_a_used_key_are_covered() -> None:
    def entry(key: str) -> JournalEntry:
        return JournalEntry(seq=0, key=key, phase="result", kind="call", name="x",
                            input_hash="", created_at=0.0, data=None)

    seen = {"f/a/tool:t#0"}
    assert _used(entry("f/a/tool:t#0/w/turn:0/model"), seen)
    assert _used(entry("f/a/tool:t#0"), seen)
    assert not _used(entry("f/a/tool:t#01/x"), seen)
    assert not _used(entry("f/a"), seen)


# ------------------------------------------------------------- failures a flow handles


class Crash(Exception):
    """A stand-in for the process dying (not a run error: nothing handles it)."""


def _flaky() -> tuple[Agent[str], ScriptedModel, list[str]]:
    """An agent that calls a tool (a recorded step), then its model fails for good."""
    pings: list[str] = []

    def ping() -> str:
        pings.append("ping")
        return "pong"

    model = ScriptedModel([call("ping"), RuntimeError("endpoint down")])
    return Agent("flaky", model=model, tools=[tool(ping, name="ping")]), model, pings


def _fallback_flow(flaky: Agent[str], crash: list[bool], seen: list[str],
                   durability: str | None = None) -> Flow[Any]:
    backup = _agent("backup", "backup done")

    @flow("fallback", agents=[flaky, backup], durability=durability)
    async def fallback(ctx: FlowContext, input: str) -> str:
        try:
            return str((await ctx.run_agent(flaky, input)).output)
        except ModelError as exc:
            seen.append(f"{type(exc).__name__}: {exc.message}")
            pending = [e for e in await ctx.journal.store.read_journal(ctx.run_id)
                       if e.kind == "failure"]
            seen.append(f"committed before going on: {len(pending)}")
        await ctx.step("went_on", lambda: "yes")
        if crash:
            crash.pop()
            raise Crash("the process died")
        return str((await ctx.run_agent(backup, input)).output)

    return fallback


@pytest.mark.parametrize("durability", ["balanced", "always", "batched"])
async def test_a_failure_the_flow_goes_past_is_journaled_and_not_attempted_again(
        durability: str) -> None:
    flaky, model, pings = _flaky()
    seen: list[str] = []
    fallback = _fallback_flow(flaky, [True], seen, durability)
    store = MemoryStore()
    with pytest.raises(Crash):
        await fallback.run("go", store=store, run_id="f1")
    assert len(model.requests) == 2 and pings == ["ping"]
    failed = [e for e in await store.read_journal("f1") if e.kind == "failure"]
    assert [(e.key, e.input_hash) for e in failed] == [("fallback/flaky/failed", "")]
    assert failed[0].data["type"] == "ModelError" and failed[0].data["retryable"] is False
    assert failed[0].data["step_key"] == "fallback/flaky/turn:1/model"
    result = await fallback.resume("f1", store=store)
    assert result.output == "backup done"
    assert len(model.requests) == 2 and pings == ["ping"]  # not attempted again
    assert seen[0] == seen[2] and "endpoint down" in seen[0]  # the same error, both times
    assert seen[1] == "committed before going on: 0"  # held until the flow went on
    report = await replay_run(fallback, "f1", store=store)
    assert report.identical, report
    assert len(model.requests) == 2 and pings == ["ping"]


async def test_a_failure_the_flow_does_not_handle_is_not_kept_and_resume_tries_again() -> None:
    flaky, model, _ = _flaky()

    @flow("strict", agents=[flaky])
    async def strict(ctx: FlowContext, input: str) -> str:
        return str((await ctx.run_agent(flaky, input)).output)

    store = MemoryStore()
    with pytest.raises(ModelError, match="endpoint down"):
        await strict.run("go", store=store, run_id="s1")
    record = await store.get_run("s1")
    assert record.status == "failed" and record.error is not None
    assert record.error["type"] == "ModelError"
    assert [e for e in await store.read_journal("s1") if e.kind == "failure"] == []
    model.script[1] = "fixed"  # the endpoint is back
    result = await strict.resume("s1", store=store)
    assert result.output == "fixed" and len(model.requests) == 3  # asked again
    report = await replay_run(strict, "s1", store=store)
    assert report.identical, report


async def test_a_failed_sub_flow_the_parent_goes_past_is_journaled() -> None:
    flaky, model, pings = _flaky()

    @flow("inner", agents=[flaky])
    async def inner(ctx: FlowContext, input: str) -> str:
        return str((await ctx.run_agent(flaky, input)).output)

    crash = [True]
    errors: list[RunError] = []

    @flow("outer", agents=[flaky])
    async def outer(ctx: FlowContext, input: str) -> str:
        try:
            return str((await ctx.run_flow(inner, input)).output)
        except RunError as exc:
            errors.append(exc)
        await ctx.step("went_on", lambda: "yes")
        if crash:
            crash.pop()
            raise Crash("the process died")
        return "without inner"

    store = MemoryStore()
    with pytest.raises(Crash):
        await outer.run("go", store=store, run_id="o1")
    keys = [e.key for e in await store.read_journal("o1") if e.kind == "failure"]
    assert keys == ["outer/inner/flaky/failed", "outer/inner/failed"]
    result = await outer.resume("o1", store=store)
    assert result.output == "without inner"
    assert len(model.requests) == 2 and pings == ["ping"]
    assert [type(e) for e in errors] == [ModelError, ModelError]
    assert errors[0].message == errors[1].message
    assert errors[1].step_key == "outer/inner/flaky/turn:1/model"
    report = await replay_run(outer, "o1", store=store)
    assert report.identical, report


async def test_a_budget_failure_comes_back_as_budget_exceeded() -> None:
    looping = Agent("looper", model=ScriptedModel([call("ping")] * 50 + ["done"]),
                    tools=[tool(lambda: "pong", name="ping")])
    limits: list[tuple[str, float]] = []

    @flow("capped", agents=[looping])
    async def capped(ctx: FlowContext, input: str) -> str:
        try:
            await ctx.run_agent(looping, input, budget=Budget(max_steps=3))
        except BudgetExceeded as exc:
            limits.append((exc.limit, exc.allowed))
        return "gave up"

    store = MemoryStore()
    result = await capped.run("go", store=store)
    report = await replay_run(capped, result.run_id, store=store)
    assert report.identical, report
    assert limits == [("steps", 3.0), ("steps", 3.0)]


async def test_a_flow_cannot_hand_a_sub_agent_an_empty_prompt() -> None:
    agent = Agent("helper", model=ScriptedModel(["never asked"]))
    store = MemoryStore()

    @flow("blank")
    async def blank(ctx: FlowContext, input: str) -> Any:
        return (await ctx.run_agent(agent, "   ")).output

    with pytest.raises(UserError, match="input is empty"):
        await blank.run("go", store=store)
    steps = [e.key for e in await store.read_journal((await store.list_runs())[0].run_id)]
    assert not any(k.startswith("blank/helper") for k in steps)
