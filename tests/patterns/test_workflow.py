"""Workflows: typed pipelines, fan-out/fan-in, branches, gates, budgets, resume and replay."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from pydantic import BaseModel

from keel import Agent, Budget, BudgetExceeded, ConfigError, MemoryStore, tool
from keel.patterns import (
    Branch,
    Gate,
    GateFailed,
    Parallel,
    Sequential,
    Step,
    Workflow,
    WorkflowError,
)
from keel.runtime import replay_run
from keel.testing import ScriptedModel, call


class Order(BaseModel):
    order_id: int
    amount: float


def parse(text: str) -> int:
    return int(text.strip().split()[-1])


def render(order: Order) -> str:
    return f"order {order.order_id}: {order.amount:.2f}"


def extractor(answer: dict[str, Any] | None = None) -> Agent[Order]:
    script = [call("final_result", answer or {"order_id": 7, "amount": 12.5})]
    return Agent("extract", model=ScriptedModel(script), output_type=Order)


async def entries(store: MemoryStore, run_id: str) -> dict[str, Any]:
    return {e.key: e for e in await store.read_journal(run_id) if e.phase == "result"}


async def test_a_typed_pipeline_feeds_each_output_to_the_next_step() -> None:
    agent = extractor()
    wf = Workflow("orders", [Step(agent, prompt=lambda n: f"fetch order {n}", name="extract"),
                             render], budget=Budget(max_steps=10))
    wf2 = Workflow("orders", [parse, Step(agent, prompt=lambda n: f"fetch order {n}"), render])
    assert wf2.output_type is str and wf.output_type is str
    store = MemoryStore()
    result = await wf2.run("look up 7", store=store)
    assert result.output == "order 7: 12.50"
    journal = await entries(store, result.run_id)
    assert journal["orders/parse"].data == 7 and journal["orders/parse"].kind == "function"
    assert "orders/extract/turn:0/model" in journal
    assert journal["orders/render"].data == "order 7: 12.50"
    assert (await store.get_run(result.run_id)).metadata == {"pattern": "workflow"}
    assert agent.model.requests[0][-1].text == "fetch order 7"  # type: ignore[union-attr]


async def test_parallel_branches_run_concurrently_and_fan_in() -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def left(text: str) -> str:
        a_started.set()
        await asyncio.wait_for(b_started.wait(), 5)  # deadlocks unless b runs meanwhile
        return text.upper()

    async def right(text: str) -> int:
        b_started.set()
        await asyncio.wait_for(a_started.wait(), 5)
        return len(text)

    def join(parts: dict[str, Any]) -> str:
        return f"{parts['left']}/{parts['right']}"

    wf = Workflow("fan", [Parallel({"left": left, "right": right}, name="both", join=join)])
    store = MemoryStore()
    result = await wf.run("abc", store=store)
    assert result.output == "ABC/3"
    journal = await entries(store, result.run_id)
    assert journal["fan/both/left"].data == "ABC" and journal["fan/both/right"].data == 3
    assert journal["fan/both/join"].data == "ABC/3"
    plain = Workflow("fan2", [Parallel({"n": len, "s": str.upper})])
    assert (await plain.run("ab", store=store)).output == {"n": 2, "s": "AB"}


async def test_branch_takes_the_chosen_route_and_journals_it() -> None:
    ran: list[str] = []

    def small(n: int) -> str:
        ran.append("small")
        return "small"

    def big(n: int) -> str:
        ran.append("big")
        return "big"

    router = Branch({"small": small, "big": big}, by=lambda n: "big" if n > 10 else "small",
                    name="size")
    wf = Workflow("route", [parse, router])
    store = MemoryStore()
    result = await wf.run("n 42", store=store)
    assert result.output == "big" and ran == ["big"]
    journal = await entries(store, result.run_id)
    assert journal["route/size/route"].data == "big"
    assert journal["route/size/route"].kind == "decision"
    assert "route/size/big" in journal and "route/size/small" not in journal

    def double(n: int) -> int:
        return n * 2

    cond = Workflow("cond", [parse, Branch(lambda n: n % 2 == 0, then=double, name="even")])
    assert (await cond.run("x 4", store=store)).output == 8
    assert (await cond.run("x 5", store=store)).output == 5  # passed through unchanged


async def test_a_failing_gate_names_itself_and_stops_before_the_next_step() -> None:
    shipped: list[int] = []

    def ship(n: int) -> str:
        shipped.append(n)
        return "shipped"

    wf = Workflow("ship", [parse, Gate("in_stock", lambda n: n < 100, "not enough stock"),
                           ship])
    store = MemoryStore()
    with pytest.raises(GateFailed) as info:
        await wf.run("qty 500", store=store)
    assert info.value.step == "in_stock" and info.value.reason == "not enough stock"
    assert "in_stock" in str(info.value) and info.value.step_key == "ship/in_stock"
    assert shipped == []
    journal = await entries(store, info.value.run_id or "")
    assert journal["ship/in_stock"].data == {"passed": False, "reason": "not enough stock"}
    assert "ship/ship" not in journal
    assert (await wf.run("qty 5", store=store)).output == "shipped" and shipped == [5]


async def test_a_failing_step_is_named_in_the_error() -> None:
    wf = Workflow("p", [parse, render_int])
    with pytest.raises(WorkflowError) as info:
        await wf.run("no number here", store=MemoryStore())
    assert info.value.step == "parse" and info.value.step_key == "p/parse"
    assert isinstance(info.value.__cause__, ValueError)
    assert "'parse' failed: ValueError" in str(info.value)


def render_int(n: int) -> str:
    return str(n)


def test_steps_whose_types_do_not_connect_are_rejected_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        Workflow("bad", [parse, render])  # int into a step that takes an Order
    assert "step 'render'" in str(info.value) and "step 'parse'" in str(info.value)
    assert "Order" in str(info.value) and "int" in str(info.value)
    with pytest.raises(ConfigError, match=r"step 'render_int'.*the workflow input"):
        Workflow("bad2", [render_int])  # the input is a string
    with pytest.raises(ConfigError, match="step 'parse'"):
        Workflow("bad5", [Step(extractor(), prompt=lambda s: s), parse])  # Order into str
    with pytest.raises(ConfigError, match="unique"):
        Workflow("dup", [parse, parse])
    with pytest.raises(ConfigError, match="approval"):
        Step(tool(lambda: "x", name="wipe", risk="irreversible"))


def test_bad_inputs_are_rejected_at_build_time() -> None:
    with pytest.raises(ConfigError, match="at least one step"):
        Workflow("empty", [])
    with pytest.raises(ConfigError, match="exactly one"):
        Workflow("two", [lambda a, b: a])
    with pytest.raises(ConfigError, match="function, an Agent or a Tool"):
        Step(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="by="):
        Branch({"a": parse})


def test_worst_case_budget_adds_sequences_and_branches_and_takes_max_of_routes() -> None:
    a = Agent("a", model=ScriptedModel(["x"]), budget=Budget(
        max_steps=5, max_tokens=1000, max_cost_usd=0.5, max_wall_seconds=60))
    b = Agent("b", model=ScriptedModel(["x"]), budget=Budget(
        max_steps=8, max_tokens=3000, max_cost_usd=1.0, max_wall_seconds=30))
    share = Budget(max_steps=2, max_tokens=100, max_cost_usd=0.1, max_wall_seconds=10)
    wf = Workflow("cost", [
        Step(a, name="first"),                                    # 5 / 1000 / 0.5 / 60
        Parallel({"x": Step(a, name="x"), "y": Step(b, name="y")}),  # 13 / 4000 / 1.5 / 60
        Branch({"cheap": Step(b, budget=share, name="cheap", prompt=lambda d: str(d)),
                "dear": Step(b, name="dear", prompt=lambda d: str(d))},
               by=lambda s: "cheap"),                             # 8 / 3000 / 1.0 / 30
        Step(lambda d: str(d), name="fmt"),                      # 1 step
    ])
    worst = wf.worst_case()
    assert worst.steps == 5 + 13 + 8 + 1
    assert worst.tokens == 1000 + 4000 + 3000
    assert worst.cost_usd == pytest.approx(3.0)
    assert worst.wall_seconds == 60 + 60 + 30
    assert wf.worst_case_budget() == Budget(max_steps=27, max_tokens=8000, max_cost_usd=3.0,
                                            max_wall_seconds=150)
    unbounded = Workflow("u", [Step(Agent("c", model=ScriptedModel(["x"]),
                                          budget=Budget.unlimited()))])
    assert math.isinf(unbounded.worst_case().steps)
    assert unbounded.worst_case_budget().max_steps is None
    with pytest.raises(ConfigError, match="max_steps 27 > 20"):
        Workflow("cost", wf.steps, budget=Budget(max_steps=20), strict_budget=True)
    Workflow("cost", wf.steps, budget=Budget(max_steps=30, max_wall_seconds=200),
             strict_budget=True)


async def test_an_agent_step_cannot_spend_more_than_its_share() -> None:
    looping = Agent("looper", model=ScriptedModel([call("ping")] * 50 + ["done"]),
                    tools=[tool(lambda: "pong", name="ping")])
    wf = Workflow("w", [Step(looping, budget=Budget(max_steps=3))],
                  budget=Budget(max_steps=100))
    store = MemoryStore()
    with pytest.raises(BudgetExceeded) as info:
        await wf.run("go", store=store)
    assert info.value.allowed == 3 and info.value.limit == "steps"
    assert (info.value.step_key or "").startswith("w/looper/")
    models = [e for e in await store.read_journal(info.value.run_id or "") if e.kind == "model"]
    assert len(models) == 2  # 2 turns + 1 tool call = 3 steps


async def test_a_tool_step_is_called_with_arguments_built_from_the_previous_output() -> None:
    @tool
    def price(order_id: int, qty: int) -> float:
        """Price an order."""
        return order_id * qty * 1.5

    wf = Workflow("t", [parse, Step(price, args=lambda n: {"order_id": n, "qty": 2})])
    store = MemoryStore()
    result = await wf.run("order 4", store=store)
    assert result.output == 12.0
    entry = (await entries(store, result.run_id))["t/price"]
    assert entry.kind == "tool" and entry.data["value"] == 12.0
    bad = Workflow("t2", [Step(price, args=lambda n: {"order_id": n})])
    with pytest.raises(WorkflowError, match=r"'price' \(tool price\) failed: invalid_arguments"):
        await bad.run("x", store=store)


async def test_resume_skips_completed_steps_and_replay_is_identical() -> None:
    calls: list[str] = []
    crash = [True]

    def fetch(text: str) -> int:
        calls.append("fetch")
        return parse(text)

    async def enrich(n: int) -> dict[str, int]:
        calls.append("enrich")
        return {"n": n, "double": n * 2}

    def finish(data: dict[str, int]) -> str:
        calls.append("finish")
        if crash[0]:
            raise RuntimeError("disk full")
        return f"{data['n']}->{data['double']}"

    wf = Workflow("job", [fetch, Sequential([enrich], name="stage"), finish])
    store = MemoryStore()
    with pytest.raises(WorkflowError, match="'finish' failed"):
        await wf.run("item 21", store=store, run_id="r1")
    assert calls == ["fetch", "enrich", "finish"]
    crash[0] = False
    result = await wf.resume("r1", store=store)
    assert result.output == "21->42"
    assert calls == ["fetch", "enrich", "finish", "finish"]  # only the missing step ran
    assert "job/stage/enrich" in await entries(store, "r1")
    report = await replay_run(wf, "r1", store=store)
    assert report.identical, report
    assert calls == ["fetch", "enrich", "finish", "finish"]


async def test_a_condition_is_read_as_true_or_false_and_unknown_labels_fail() -> None:
    cond = Workflow("c", [Branch(lambda s: s.strip(), then=str.upper, name="nonblank")])
    store = MemoryStore()
    assert (await cond.run("abc", store=store)).output == "ABC"  # a truthy string: then
    assert (await cond.run("  ", store=store)).output == "  "
    router = Workflow("r", [Branch({"a": str.upper}, by=lambda s: s, name="pick")])
    with pytest.raises(WorkflowError, match="'pick' chose 'zz'") as info:
        await router.run("zz", store=store)
    assert info.value.step == "pick"
    with pytest.raises(ConfigError, match="'route'"):
        Branch({"route": str.upper}, by=lambda s: "route")
