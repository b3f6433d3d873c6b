"""Behavioural monitoring: a scripted agent that suddenly bursts, loops, reads far more than
usual, uses a tool it never used or costs far more is throttled, escalated, switched off or
reported within the configured limits, and ordinary runs are never touched.

Time is a fake clock that the tools (and the fake sleep) advance; nothing sleeps for real.
What the tests read back is the run store (journal entries, escalation tasks) and what the
notifier received.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    CircuitBreaker,
    ConfigError,
    Escalate,
    MemoryStore,
    ToolError,
    tool,
)
from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
)
from keel.guard import (
    DEFAULT_ACTIONS,
    Alert,
    InMemoryMonitorStore,
    Monitor,
    MonitorPolicy,
)
from keel.reliability import BreakerPolicy
from keel.store import JournalEntry
from keel.testing import FunctionModel
from keel.tools import Tool


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Alerts:
    """A notifier that keeps what it is told."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    async def notify(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def kinds(self) -> list[str]:
        return [a.deviation for a in self.alerts]


@dataclass
class Plan:
    """What the scripted model does in one run: tool calls in order, then an answer."""

    calls: list[tuple[str, dict[str, Any]]]
    cost_per_turn: float = 0.002


@dataclass
class Desk:
    """A support desk agent with a lookup tool (returns ``records`` records and takes
    ``seconds`` on the fake clock), a refund tool (write) and an export tool (never used by
    ordinary runs), watched by a monitor."""

    monitor: Monitor
    clock: Clock
    records: int = 5
    seconds: float = 0.5
    fail_next: bool = False
    executed: dict[str, int] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    sleeps: list[float] = field(default_factory=list)

    def tools(self) -> list[Tool]:
        @tool
        def lookup(order_id: int) -> dict[str, Any]:
            """Look up an order's lines."""
            self._ran("lookup")
            if self.fail_next:
                self.fail_next = False
                raise ToolError("the order service said no", retryable=False)
            return {"records": [{"line": i, "order": order_id} for i in range(self.records)]}

        @tool(risk="write")
        def refund(order_id: int, amount: float) -> str:
            """Refund part of an order."""
            self._ran("refund")
            return f"refunded {amount} on {order_id}"

        @tool
        def export_customers(segment: str) -> list[dict[str, Any]]:
            """Export a customer segment."""
            self._ran("export_customers")
            return [{"customer": i} for i in range(self.records)]

        @tool(risk="irreversible")
        def close_account(customer: int) -> str:
            """Close a customer's account."""
            self._ran("close_account")
            return "closed"

        return [lookup, refund, export_customers, close_account]

    def _ran(self, name: str) -> None:
        self.executed[name] = self.executed.get(name, 0) + 1
        self.clock.now += self.seconds

    def model(self) -> FunctionModel:
        def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
            plan = self.plans[messages[-1].text if messages[-1].role == "user" else next(
                m.text for m in messages if m.role == "user")]
            turn = sum(1 for m in messages if m.role == "assistant")
            usage = Usage(requests=1, input_tokens=100, output_tokens=20,
                          cost_usd=plan.cost_per_turn)
            if turn < len(plan.calls):
                name, args = plan.calls[turn]
                part = ToolCallPart(call_id=f"c{turn}", tool_name=name,
                                    arguments=json.dumps(args))
                return ModelResponse(parts=(part,), usage=usage)
            return ModelResponse(parts=(TextPart(text="Done."),), usage=usage)

        return FunctionModel(fn)

    def agent(self, *, middleware: list[Any] | None = None) -> Agent[str]:
        return Agent("desk", model=self.model(), tools=self.tools(),
                     middleware=middleware if middleware is not None else [self.monitor])

    async def run(self, agent: Agent[str], store: MemoryStore, plan: Plan, tag: str) -> Any:
        self.plans[tag] = plan
        return await agent.run(tag, store=store)


def make_desk(policy: MonitorPolicy | None = None, **kwargs: Any) -> tuple[Desk, Alerts]:
    clock = Clock()
    alerts = Alerts()
    desk_holder: list[Desk] = []

    async def sleep(seconds: float) -> None:
        desk_holder[0].sleeps.append(seconds)
        clock.now += seconds

    kwargs.setdefault("sleep", sleep)
    monitor = Monitor(policy, notifier=alerts, clock=clock, **kwargs)
    desk = Desk(monitor=monitor, clock=clock)
    desk_holder.append(desk)
    return desk, alerts


def normal_plan(rng: random.Random, i: int) -> Plan:
    """An ordinary run: one to three lookups, every fifth run a small refund."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("lookup", {"order_id": rng.randrange(1, 10**6)}) for _ in range(rng.randint(1, 3))]
    if i % 5 == 0:
        calls.append(("refund", {"order_id": rng.randrange(1, 10**6),
                                 "amount": round(rng.uniform(1, 50), 2)}))
    return Plan(calls=calls, cost_per_turn=rng.uniform(0.001, 0.004))


async def warm_up(desk: Desk, agent: Agent[str], store: MemoryStore, runs: int = 20,
                  seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(runs):
        desk.records = rng.randint(1, 20)
        desk.seconds = rng.uniform(0.1, 1.0)
        result = await desk.run(agent, store, normal_plan(rng, i), f"normal {seed} {i}")
        assert result.output == "Done."
    desk.records, desk.seconds = 5, 0.5


async def tool_results(store: MemoryStore, run_id: str) -> list[JournalEntry]:
    return [e for e in await store.read_journal(run_id)
            if e.kind == "tool" and e.phase == "result"]


async def guard_records(store: MemoryStore, run_id: str) -> list[JournalEntry]:
    """The monitor's decisions the runtime journaled (escalate, block, approve)."""
    return [e for e in await store.read_journal(run_id)
            if e.kind == "guard" and e.data["action"] != "allow"]


async def guard_notes(store: MemoryStore, run_id: str) -> list[JournalEntry]:
    """The monitor's notes: calls it let through after acting (an alert, a throttle)."""
    return [e for e in await store.read_journal(run_id)
            if e.kind == "guard" and e.data["action"] == "allow"]


def failure(entry: JournalEntry) -> dict[str, Any] | None:
    f = entry.data.get("failure")
    return f if isinstance(f, dict) else None


async def only_escalation(store: MemoryStore) -> Any:
    tasks = await store.list_tasks()
    assert [t.kind for t in tasks] == ["escalation"]
    return tasks[0]


# ------------------------------------------------------------------------------- bursts


async def test_a_sudden_burst_is_throttled_once_the_baseline_knows_the_agent() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    assert desk.sleeps == [] and alerts.alerts == []
    burst = Plan(calls=[("lookup", {"order_id": n}) for n in range(50)], cost_per_turn=0.0001)
    result = await desk.run(agent, store, burst, "fetch everything")
    assert result.output == "Done."
    # baseline: at most 3 lookups a run, so the relative limit is max(10, 5 * 3) = 15 calls
    # in a minute; the 16th call trips it and every later call waits for its slot
    assert alerts.kinds() == ["burst"]
    evidence = alerts.alerts[0].evidence
    assert evidence["calls"] == 16 and evidence["limit"] == 15
    assert evidence["baseline_max_calls_per_run"] == 3
    assert alerts.alerts[0].actions == ("alert", "throttle")
    assert len(desk.sleeps) == 50 - 16
    assert all(0 < s <= 2.0 for s in desk.sleeps)
    # the calls were spaced: 34 throttled calls took at least 34 intervals on the clock
    assert sum(desk.sleeps) + 34 * desk.seconds >= 34 * 2.0 - 1e-6


async def test_a_burst_without_a_baseline_is_held_to_the_absolute_limit() -> None:
    policy = MonitorPolicy(actions={"burst": ("alert", "escalate")})
    desk, alerts = make_desk(policy)
    agent = desk.agent()
    store = MemoryStore()
    burst = Plan(calls=[("lookup", {"order_id": n}) for n in range(60)])
    with pytest.raises(Escalate) as info:
        await desk.run(agent, store, burst, "fetch everything")
    # 50 calls a minute is the absolute limit; the 51st is escalated and never runs
    assert desk.executed == {"lookup": 50}
    results = await tool_results(store, info.value.run_id or "")
    assert len(results) == 51
    last = failure(results[-1])
    assert last is not None and last["error_type"] == "escalated"
    assert "behaviour monitor" in last["message"] and "51 calls" in last["message"]
    [decision] = await guard_records(store, info.value.run_id or "")
    assert decision.key == results[-1].key + "/guard:args"
    assert decision.data["action"] == "escalate" and decision.data["guard"] == "Monitor"
    [evidence] = decision.data["evidence"]["monitor"]
    assert evidence["deviation"] == "burst" and evidence["calls"] == 51
    assert evidence["limit"] == 50 and evidence["actions"] == ["alert", "escalate"]
    task = await only_escalation(store)
    assert "(limit 50)" in task.data["reason"]
    assert (await store.get_run(info.value.run_id or "")).status == "suspended"
    assert alerts.kinds() == ["burst"]


async def test_calls_beyond_the_throttle_wait_are_refused_and_journaled() -> None:
    policy = MonitorPolicy(burst_calls=5, throttle_interval=3.0, throttle_max_wait=7.0)
    desk, alerts = make_desk(policy)

    async def no_time_passes(seconds: float) -> None:
        desk.sleeps.append(seconds)

    desk.monitor.sleep = no_time_passes
    desk.seconds = 0.0  # all calls at the same instant: waits pile up
    agent = desk.agent()
    store = MemoryStore()
    result = await desk.run(agent, store, Plan(
        calls=[("lookup", {"order_id": n}) for n in range(12)]), "flood")
    assert result.output == "Done."
    # the 6th call trips the throttle and takes the first slot; then waits of 3 and 6
    # seconds are taken, a wait of 9 would exceed 7 and is refused
    assert desk.sleeps == [3.0, 6.0]
    results = await tool_results(store, result.run_id)
    kinds = [(failure(e) or {}).get("error_type") for e in results]
    assert kinds == [None] * 8 + ["guardrail_blocked"] * 4
    refused = failure(results[-1])
    assert refused is not None and "throttled by the behaviour monitor" in refused["message"]
    decisions = await guard_records(store, result.run_id)
    assert [d.data["action"] for d in decisions] == ["block"] * 4
    # the calls that were slowed down (or that tripped the throttle) are journaled as notes
    notes = await guard_notes(store, result.run_id)
    waited = [n for n in notes if any("waited_s" in m for m in n.data["evidence"]["monitor"])]
    assert [m["waited_s"] for n in waited for m in n.data["evidence"]["monitor"]
            if "waited_s" in m] == [3.0, 6.0]
    assert any(m.get("deviation") == "burst" for n in notes
               for m in n.data["evidence"]["monitor"])
    assert decisions[0].data["evidence"]["monitor"][0]["wait_s"] == 9.0
    assert desk.executed == {"lookup": 8}
    assert alerts.kinds() == ["burst"]


async def test_a_throttle_holds_for_the_agents_other_runs_until_it_expires() -> None:
    policy = MonitorPolicy(burst_calls=5, throttle_interval=2.0, throttle_for=60.0)
    desk, _ = make_desk(policy)
    agent = desk.agent()
    store = MemoryStore()
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": n}) for n in range(6)]),
                   "burst")
    desk.sleeps.clear()
    desk.clock.now += 1.0
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1})]), "next run")
    # the 6th call took the slot at t and the next is at t + 2; that call took 0.5s and a
    # second passed: the next run's first call waits the remaining 0.5s
    assert desk.sleeps == [0.5], "the next run of the agent waits for its slot"
    desk.sleeps.clear()
    desk.clock.now += 120.0
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 2})]), "later")
    assert desk.sleeps == [], "the throttle has expired"


# ------------------------------------------------------------------------ data volume


async def test_reading_far_more_records_than_usual_escalates_before_the_model_sees_them(
) -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    desk.records = 5000
    with pytest.raises(Escalate) as info:
        await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1}),
                                                 ("refund", {"order_id": 1, "amount": 5.0})]),
                       "dump the table")
    run_id = info.value.run_id or ""
    results = await tool_results(store, run_id)
    assert len(results) == 1
    f = failure(results[0])
    assert f is not None and f["error_type"] == "escalated"
    assert '"records":5000' in f["message"]
    assert "order" not in (results[0].data.get("value") or ""), "the records are not kept"
    assert alerts.kinds() == ["volume"]
    evidence = alerts.alerts[0].evidence
    assert evidence["limit_records"] == int(100 * evidence["baseline_mean_records"]) < 5000
    assert desk.executed.get("refund", 0) == 4, "only the warm-up's refunds ran"
    assert "volume" in (await only_escalation(store)).data["reason"]


async def test_an_absolute_byte_limit_applies_from_the_first_run() -> None:
    policy = MonitorPolicy(max_bytes=2_000, actions={"volume": ("alert",)})
    desk, alerts = make_desk(policy)
    desk.records = 200
    result = await desk.run(desk.agent(), MemoryStore(),
                            Plan(calls=[("lookup", {"order_id": 1})]), "big")
    assert result.output == "Done."
    assert alerts.kinds() == ["volume"]
    assert alerts.alerts[0].evidence["bytes"] > 2_000


# ------------------------------------------------------------------- new tools, loops


async def test_a_tool_the_agent_never_used_is_reported_and_owes_approvals() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    result = await desk.run(agent, store, Plan(calls=[("export_customers",
                                                       {"segment": "all"})]), "export")
    assert result.output == "Done."
    assert alerts.kinds() == ["new_tool"]
    assert alerts.alerts[0].evidence["known_tools"] == ["lookup", "refund"]
    assert alerts.alerts[0].actions == ("alert", "approve")
    owed = desk.monitor.store
    assert [await owed.take_approval("desk") for _ in range(4)] == [True, True, True, False]


async def test_after_a_deviation_the_next_high_impact_calls_wait_for_a_person() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    refunds_before = desk.executed["refund"]
    with pytest.raises(ApprovalRequired) as info:
        await desk.run(agent, store, Plan(calls=[
            ("export_customers", {"segment": "all"}),
            ("lookup", {"order_id": 3}),
            ("refund", {"order_id": 3, "amount": 900.0})]), "export then refund")
    assert alerts.kinds() == ["new_tool"]
    assert desk.executed["export_customers"] == 1 and desk.executed["lookup"] > 0
    assert desk.executed["refund"] == refunds_before, "the refund waits for a person"
    [task] = await store.list_tasks()
    assert task.kind == "approval" and task.step_key.endswith("tool:refund#0/approval")
    shown = json.dumps(task.data)
    assert "behaviour monitor" in shown and "new_tool" in shown
    [decision] = await guard_records(store, info.value.run_id or "")
    assert decision.data["action"] == "approve"
    [evidence] = decision.data["evidence"]["monitor"]
    assert evidence["tool"] == "export_customers" and evidence["actions"] == ["alert", "approve"]
    # a read call does not consume an owed approval; two more high-impact calls will ask
    assert [await desk.monitor.store.take_approval("desk") for _ in range(3)] == [
        True, True, False]


async def test_the_first_call_of_a_new_high_impact_tool_waits_for_a_person() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    with pytest.raises(ApprovalRequired):
        await desk.run(agent, store, Plan(calls=[("close_account", {"customer": 1})]), "close")
    assert "close_account" not in desk.executed
    assert alerts.kinds() == ["new_tool"]
    [task] = await store.list_tasks()
    assert task.kind == "approval" and "close_account" in task.step_key


async def test_a_new_tool_is_not_flagged_during_warm_up() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store, runs=19)
    await desk.run(agent, store, Plan(calls=[("export_customers", {"segment": "x"})]), "e")
    assert alerts.alerts == []


async def test_the_same_call_over_and_over_is_a_loop_and_is_escalated() -> None:
    desk, alerts = make_desk(MonitorPolicy(loop_repeats=4))
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await desk.run(desk.agent(), store,
                       Plan(calls=[("lookup", {"order_id": 424242})] * 10), "loop")
    assert desk.executed == {"lookup": 3}
    results = await tool_results(store, info.value.run_id or "")
    f = failure(results[-1])
    assert f is not None and f["error_type"] == "escalated" and "loop" in f["message"]
    [decision] = await guard_records(store, info.value.run_id or "")
    assert decision.data["evidence"]["monitor"][0]["repeats"] == 4
    assert "424242" not in json.dumps(decision.data), "arguments are hashed, not journaled"
    assert alerts.kinds() == ["loop"]


# ---------------------------------------------------------------------- cost, errors


async def test_a_run_costing_far_above_the_norm_is_escalated_at_its_next_call() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    plan = Plan(calls=[("lookup", {"order_id": 1}), ("lookup", {"order_id": 2})],
                cost_per_turn=0.5)
    with pytest.raises(Escalate) as info:
        await desk.run(agent, store, plan, "expensive")
    assert alerts.kinds() == ["cost"]
    evidence = alerts.alerts[0].evidence
    assert evidence["limit_usd"] == pytest.approx(10 * evidence["baseline_mean_usd"], rel=1e-3)
    results = await tool_results(store, info.value.run_id or "")
    f = failure(results[0])
    assert f is not None and "cost" in f["message"]
    assert desk.executed["lookup"] < 20 * 3 + 1


async def test_many_failures_are_reported() -> None:
    desk, alerts = make_desk(MonitorPolicy(warmup_runs=1, errors_floor=2))
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store, runs=1)
    calls = [("lookup", {"order_id": n}) for n in range(4)]

    class Failing:
        n = 0

    @tool(name="lookup")
    def broken(order_id: int) -> str:
        """Look up an order."""
        Failing.n += 1
        raise ToolError("down", retryable=False)

    flaky = Agent("desk", model=desk.model(), tools=[broken], middleware=[desk.monitor],
                  default_middleware=False)
    await desk.run(flaky, store, Plan(calls=calls), "failing")
    assert alerts.kinds() == ["errors"]
    assert alerts.alerts[0].evidence["errors"] == 3


async def test_a_call_far_slower_than_usual_is_reported() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    await warm_up(desk, agent, store)
    desk.seconds = 60.0
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1})]), "slow")
    assert alerts.kinds() == ["latency"]
    assert alerts.alerts[0].evidence["seconds"] == pytest.approx(60.0)


# --------------------------------------------------------------------------- disable


async def test_disable_forces_the_tools_circuit_breaker_open_for_a_while() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(), clock=clock)
    policy = MonitorPolicy(burst_calls=3, disable_for=120.0,
                           actions={"burst": ("alert", "disable")})
    desk, alerts = make_desk(policy, breaker=breaker)
    desk.clock = clock
    desk.monitor.clock = clock
    agent = desk.agent(middleware=[breaker, desk.monitor])
    store = MemoryStore()
    result = await desk.run(agent, store,
                            Plan(calls=[("lookup", {"order_id": n}) for n in range(6)]), "b")
    assert result.output == "Done."
    assert desk.executed == {"lookup": 3}
    results = await tool_results(store, result.run_id)
    kinds = [(failure(e) or {}).get("error_type") for e in results]
    assert kinds == [None] * 3 + ["guardrail_blocked"] + ["circuit_open"] * 2
    first = failure(results[3])
    assert first is not None and "switched off" in first["message"]
    [decision] = await guard_records(store, result.run_id)
    assert decision.data["evidence"]["monitor"][0]["actions"] == ["alert", "disable"]
    assert (await breaker.state("tool:lookup")).state == "open"
    clock.now += 121.0
    assert (await breaker.state("tool:lookup")).state == "half_open"
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1})]), "after")
    assert (await breaker.state("tool:lookup")).state == "closed"
    assert alerts.kinds() == ["burst"]


async def test_disable_opens_the_breaker_the_tools_calls_count_against() -> None:
    """A tool that shares a breaker (an MCP server's tools share ``mcp:<server>``) is
    switched off through that breaker, which is the one keel's CircuitBreaker checks for
    its calls; forcing ``tool:<name>`` open would switch nothing off."""
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(), clock=clock)
    policy = MonitorPolicy(burst_calls=3, disable_for=120.0,
                           actions={"burst": ("alert", "disable")})
    desk, _ = make_desk(policy, breaker=breaker)
    desk.clock = clock
    desk.monitor.clock = clock
    tools = desk.tools()
    for t in tools:
        t.meta = dataclasses.replace(t.meta, breaker_key="mcp:shop")
    agent = Agent("desk", model=desk.model(), tools=tools, middleware=[breaker, desk.monitor])
    store = MemoryStore()
    result = await desk.run(agent, store,
                            Plan(calls=[("lookup", {"order_id": n}) for n in range(6)]), "b")
    assert desk.executed == {"lookup": 3}
    assert (await breaker.state("mcp:shop")).state == "open"
    assert (await breaker.state("tool:lookup")).state == "closed"
    results = await tool_results(store, result.run_id)
    assert [(failure(e) or {}).get("error_type") for e in results][4:] == ["circuit_open"] * 2


# ----------------------------------------------------------------- the false positives


async def test_a_thousand_ordinary_runs_are_never_touched() -> None:
    desk, alerts = make_desk()
    agent = desk.agent()
    store = MemoryStore()
    rng = random.Random(2026)
    for i in range(1000):
        desk.records = rng.randint(1, 20)
        desk.seconds = rng.uniform(0.1, 1.0)
        desk.fail_next = rng.random() < 0.05
        desk.clock.now += rng.uniform(0.0, 30.0)
        result = await desk.run(agent, store, normal_plan(rng, i), f"ordinary {i}")
        assert result.output == "Done."
        desk.plans.clear()
    assert alerts.alerts == []
    assert desk.sleeps == []
    baseline = await desk.monitor.store.baseline("desk")
    assert baseline.runs == 1000, "every ordinary run was learned from"
    # the same monitor still catches an abnormal run (the quiet above is not deafness)
    desk.records = 5000
    with pytest.raises(Escalate):
        await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1})]), "abnormal")
    assert alerts.kinds() == ["volume"]


async def test_flagged_runs_are_not_learned_from() -> None:
    desk, alerts = make_desk(MonitorPolicy(max_records=100, actions={"volume": ("alert",)}))
    agent = desk.agent()
    store = MemoryStore()
    desk.records = 500
    await desk.run(agent, store, Plan(calls=[("lookup", {"order_id": 1})]), "big")
    assert alerts.kinds() == ["volume"]
    assert (await desk.monitor.store.baseline("desk")).runs == 0


# ------------------------------------------------------------------ learning, tenants


async def test_a_baseline_can_be_learned_from_the_journal_of_completed_runs() -> None:
    desk, alerts = make_desk()
    plain = desk.agent(middleware=[])
    store = MemoryStore()
    await warm_up(desk, plain, store, runs=25)
    learned = await desk.monitor.learn(store, agent="desk")
    assert learned == 25
    baseline = await desk.monitor.store.baseline("desk")
    assert baseline.runs == 25 and baseline.tools() == {"lookup", "refund"}
    assert 1 <= baseline.tool_mean("lookup", "records") <= 60
    assert baseline.mean("cost") > 0
    await desk.run(desk.agent(), store, Plan(calls=[("export_customers", {"segment": "a"})]),
                   "new")
    assert alerts.kinds() == ["new_tool"]


async def test_learning_per_tenant_reads_the_tenant_from_the_stored_run() -> None:
    desk, _ = make_desk()
    store = MemoryStore()
    await warm_up(desk, desk.agent(middleware=[]), store, runs=6)
    runs = await store.list_runs()
    for n, r in enumerate(runs):
        await store.update_run(r.with_status(r.status, metadata={
            "tenant": "acme" if n % 3 else "globex"}))
    learned = await desk.monitor.learn(store, agent="desk",
                                       tenant=lambda r: r.metadata.get("tenant"))
    assert learned == 6
    assert (await desk.monitor.store.baseline("desk@acme")).runs == 4
    assert (await desk.monitor.store.baseline("desk@globex")).runs == 2
    with pytest.raises(ConfigError) as err:
        await desk.monitor.learn(store, agent="desk", limit=0)
    assert err.value.field == "limit"


@dataclass
class Deps:
    tenant: str


async def test_baselines_are_per_tenant_when_the_tenant_is_known() -> None:
    desk, alerts = make_desk(tenant=lambda deps: deps.tenant if deps else None)
    agent = desk.agent()
    store = MemoryStore()
    rng = random.Random(3)
    for i in range(20):
        desk.plans[f"n{i}"] = normal_plan(rng, i)
        await agent.run(f"n{i}", store=store, deps=Deps("acme"))
    assert (await desk.monitor.store.baseline("desk@acme")).runs == 20
    assert (await desk.monitor.store.baseline("desk")).runs == 0
    desk.plans["x"] = Plan(calls=[("export_customers", {"segment": "a"})])
    await agent.run("x", store=store, deps=Deps("globex"))
    assert alerts.alerts == [], "globex has no baseline yet: only absolute limits"
    await agent.run("x", store=store, deps=Deps("acme"))
    assert [(a.deviation, a.tenant) for a in alerts.alerts] == [("new_tool", "acme")]


# ------------------------------------------------------------------------ bad config


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"warmup_runs": 0}, "warmup_runs"),
    ({"burst_calls": 2.5}, "burst_calls"),
    ({"burst_window": 0}, "burst_window"),
    ({"burst_window": float("nan")}, "burst_window"),
    ({"volume_factor": 0.5}, "volume_factor"),
    ({"loop_repeats": 1}, "loop_repeats"),
    ({"max_cost_usd": -1.0}, "max_cost_usd"),
    ({"throttle_max_wait": -1}, "throttle_max_wait"),
    ({"throttle_interval": True}, "throttle_interval"),
    ({"max_records": 0}, "max_records"),
    ({"actions": {"bursts": ("alert",)}}, "actions['bursts']"),
    ({"actions": {"burst": ("shout",)}}, "actions['burst']"),
    ({"actions": {"burst": "alert"}}, "actions['burst']"),
    ({"actions": {"burst": ("alert", "alert")}}, "actions['burst']"),
    ({"actions": {"loop": ("escalate", "approve")}}, "actions['loop']"),
    ({"actions": ["burst"]}, "actions"),
])
def test_bad_policies_are_refused_naming_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as err:
        MonitorPolicy(**kwargs)
    assert err.value.field == part


@pytest.mark.parametrize(("kwargs", "part"), [
    ({"policy": {"burst_calls": 5}}, "policy"),
    ({"store": object()}, "store"),
    ({"notifier": print}, "notifier"),
    ({"breaker": object()}, "breaker"),
    ({"policy": MonitorPolicy(actions={"burst": ("disable",)})}, "breaker"),
    ({"tenant": "acme"}, "tenant"),
    ({"baseline_ttl": -1}, "baseline_ttl"),
])
def test_bad_monitors_are_refused_naming_the_part(kwargs: dict[str, Any], part: str) -> None:
    with pytest.raises(ConfigError) as err:
        Monitor(**kwargs)
    assert err.value.field == part


def test_actions_merge_over_the_defaults_and_an_empty_tuple_switches_one_off() -> None:
    policy = MonitorPolicy(actions={"burst": (), "loop": ("alert",)})
    assert policy.actions_for("burst") == ()
    assert policy.actions_for("loop") == ("alert",)
    assert policy.actions_for("volume") == DEFAULT_ACTIONS["volume"]
    assert isinstance(Monitor().store, InMemoryMonitorStore)
