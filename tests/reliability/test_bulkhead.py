"""Bulkheads: separate concurrency pools per tool group, agent and model endpoint.

Calls are held on asyncio events, never timed: a pool is shown full by its load, the other
pools by calls that complete while it stays full.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, tool
from keel.core import (
    BulkheadFull,
    Message,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolContext,
    ToolSpec,
)
from keel.models import Model
from keel.reliability import Bulkhead, BulkheadPolicy, PoolLoad
from keel.runtime import MiddlewareStack, ModelRequestInput, ToolCallInput
from keel.testing import ScriptedModel, call
from keel.tools import Tool, ToolResult


async def until(condition: Callable[[], bool], *, turns: int = 1000) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns, no sleeping)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def gated_tool(name: str, group: str, gate: asyncio.Event, started: list[str]) -> Tool:
    @tool(name=name, group=group)
    async def fn(n: int) -> int:
        """Wait for the gate."""
        started.append(f"{name}:{n}")
        await gate.wait()
        return n

    return fn


def tool_input(t: Tool, n: int, *, agent: str = "agent") -> ToolCallInput:
    key = f"{agent}/tool:{t.meta.name}#{n}"
    ctx = ToolContext(run_id="r1", step_key=key, agent=agent, idempotency_key=f"r1/{key}")
    return ToolCallInput(run_id="r1", step_key=key, agent=agent, tool=t,
                         arguments=json.dumps({"n": n}), ctx=ctx)


class GatedModel(Model):
    def __init__(self, name: str, gate: asyncio.Event) -> None:
        self.name = name
        self.gate = gate
        self.calls = 0

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        self.calls += 1
        await self.gate.wait()
        return ModelResponse(parts=(TextPart(text=f"{self.name} done"),), model=self.name)


def model_input(model: Model, *, agent: str = "agent", n: int = 0) -> ModelRequestInput:
    return ModelRequestInput(run_id="r1", step_key=f"{agent}/turn:{n}/model", agent=agent,
                             model=model, messages=[Message.user("hi")], tools=[],
                             settings=ModelSettings())


def failure(result: ToolResult) -> dict[str, Any]:
    assert result.failure is not None, result.content
    return result.failure.to_dict()


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"max_concurrent": True}, "max_concurrent"),
    ({"max_concurrent": 1.5}, "max_concurrent"),
    ({"max_concurrent": 1, "max_queue": -1}, "max_queue"),
    ({"max_concurrent": 1, "queue_timeout": 0}, "queue_timeout"),
    ({"max_concurrent": 1, "queue_timeout": -2.0}, "queue_timeout"),
    ({"max_concurrent": 1, "queue_timeout": "5"}, "queue_timeout"),
])
def test_policy_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        BulkheadPolicy(**kwargs)
    assert info.value.field == field


def test_bulkhead_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        Bulkhead({}, by="user")  # type: ignore[arg-type]
    assert info.value.field == "by"
    with pytest.raises(ConfigError) as info:
        Bulkhead({"x": 3})  # type: ignore[dict-item]
    assert info.value.field == "pools['x']"
    with pytest.raises(ConfigError) as info:
        Bulkhead({}, default=2)  # type: ignore[arg-type]
    assert info.value.field == "default"


def test_policy_defaults() -> None:
    policy = BulkheadPolicy(max_concurrent=3)
    assert (policy.max_queue, policy.queue_timeout) == (0, None)


# ------------------------------------------------------------------------------ tool groups


async def test_full_pool_rejects_while_other_pools_keep_serving() -> None:
    heavy_gate, chat_gate = asyncio.Event(), asyncio.Event()
    chat_gate.set()
    started: list[str] = []
    crunch = gated_tool("crunch", "analytics", heavy_gate, started)
    reply = gated_tool("reply", "chat", chat_gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=2),
                         "chat": BulkheadPolicy(max_concurrent=2)})
    stack = MiddlewareStack([bulkhead])

    heavy = [asyncio.create_task(stack.tool_call(tool_input(crunch, i))) for i in range(2)]
    await until(lambda: bulkhead.load("analytics") == PoolLoad(
        pool="analytics", active=2, waiting=0, max_concurrent=2, max_queue=0))

    # The analytics pool is full; the chat pool serves, several calls in a row.
    for i in range(5):
        result = await stack.tool_call(tool_input(reply, i))
        assert result.failure is None and result.value == i

    # A third analytics call is turned away at once, with the pool, limits and load.
    rejected = failure(await stack.tool_call(tool_input(crunch, 9)))
    assert rejected["error_type"] == "bulkhead_full"
    assert rejected["retryable"] is True
    assert "'analytics'" in rejected["message"]
    assert "2/2 calls running" in rejected["message"]
    assert "0/0 queued" in rejected["message"]
    assert "crunch:9" not in started

    heavy_gate.set()
    assert [r.value for r in await asyncio.gather(*heavy)] == [0, 1]
    assert bulkhead.load("analytics") == PoolLoad(pool="analytics", active=0, waiting=0,
                                                  max_concurrent=2, max_queue=0)


async def test_queued_calls_run_in_turn_and_a_full_queue_rejects() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    crunch = gated_tool("crunch", "analytics", gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1, max_queue=2)})
    stack = MiddlewareStack([bulkhead])

    first = asyncio.create_task(stack.tool_call(tool_input(crunch, 0)))
    await until(lambda: started == ["crunch:0"])
    queued = [asyncio.create_task(stack.tool_call(tool_input(crunch, i))) for i in (1, 2)]
    await until(lambda: (load := bulkhead.load("analytics")) is not None and load.waiting == 2)
    assert started == ["crunch:0"]  # the queued calls have not started

    rejected = failure(await stack.tool_call(tool_input(crunch, 3)))
    assert rejected["error_type"] == "bulkhead_full"
    assert "1/1 calls running, 2/2 queued; the queue is full" in rejected["message"]

    gate.set()
    results = await asyncio.gather(first, *queued)
    assert [r.value for r in results] == [0, 1, 2]
    assert started == ["crunch:0", "crunch:1", "crunch:2"]  # first in, first served
    load = bulkhead.load("analytics")
    assert load is not None and (load.active, load.waiting) == (0, 0)


async def test_queue_timeout_turns_a_waiting_call_away() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    crunch = gated_tool("crunch", "analytics", gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1, max_queue=5,
                                                     queue_timeout=0.01)})
    stack = MiddlewareStack([bulkhead])

    first = asyncio.create_task(stack.tool_call(tool_input(crunch, 0)))
    await until(lambda: started == ["crunch:0"])
    rejected = failure(await stack.tool_call(tool_input(crunch, 1)))  # the gate stays shut
    assert rejected["error_type"] == "bulkhead_full"
    assert "waited 0.01s in the queue" in rejected["message"]
    load = bulkhead.load("analytics")
    assert load is not None and (load.active, load.waiting) == (1, 0)

    gate.set()
    assert (await first).value == 0
    assert started == ["crunch:0"]


async def test_a_cancelled_call_gives_its_slot_back() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    crunch = gated_tool("crunch", "analytics", gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1, max_queue=1)})
    stack = MiddlewareStack([bulkhead])

    running = asyncio.create_task(stack.tool_call(tool_input(crunch, 0)))
    await until(lambda: started == ["crunch:0"])
    waiting = asyncio.create_task(stack.tool_call(tool_input(crunch, 1)))
    await until(lambda: (load := bulkhead.load("analytics")) is not None and load.waiting == 1)
    waiting.cancel()
    running.cancel()
    for task in (running, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    load = bulkhead.load("analytics")
    assert load is not None and (load.active, load.waiting) == (0, 0)
    gate.set()
    assert (await stack.tool_call(tool_input(crunch, 2))).value == 2


async def test_unlisted_groups_use_the_default_policy_each_in_its_own_pool() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    a = gated_tool("a", "group-a", gate, started)
    b = gated_tool("b", "group-b", gate, started)
    bulkhead = Bulkhead({}, default=BulkheadPolicy(max_concurrent=1))
    stack = MiddlewareStack([bulkhead])

    holding = [asyncio.create_task(stack.tool_call(tool_input(t, 0))) for t in (a, b)]
    await until(lambda: len(started) == 2)  # one pool each: both run
    assert failure(await stack.tool_call(tool_input(a, 1)))["error_type"] == "bulkhead_full"
    gate.set()
    await asyncio.gather(*holding)


async def test_without_a_default_unlisted_groups_are_not_limited() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    free = gated_tool("free", "other", gate, started)
    stack = MiddlewareStack([Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1)})])
    tasks = [asyncio.create_task(stack.tool_call(tool_input(free, i))) for i in range(10)]
    await until(lambda: len(started) == 10)
    gate.set()
    assert len(await asyncio.gather(*tasks)) == 10


# ------------------------------------------------------------------- models and agents


async def test_model_pools_raise_bulkhead_full_and_leave_other_endpoints_alone() -> None:
    gate = asyncio.Event()
    heavy = GatedModel("openai:big", gate)
    light_gate = asyncio.Event()
    light_gate.set()
    light = GatedModel("openai:small", light_gate)
    bulkhead = Bulkhead({"openai:big": BulkheadPolicy(max_concurrent=1)}, by="model",
                        default=BulkheadPolicy(max_concurrent=4))
    stack = MiddlewareStack([bulkhead])

    holding = asyncio.create_task(stack.model_request(model_input(heavy)))
    await until(lambda: heavy.calls == 1)
    assert (await stack.model_request(model_input(light))).text == "openai:small done"
    with pytest.raises(BulkheadFull) as info:
        await stack.model_request(model_input(heavy, n=1))
    err = info.value
    assert err.retryable is True
    assert (err.pool, err.max_concurrent, err.max_queue, err.active, err.waiting) == (
        "openai:big", 1, 0, 1, 0)
    assert err.run_id == "r1" and err.step_key == "agent/turn:1/model"
    assert "bulkhead pool 'openai:big' (by model) is full" in str(err)
    assert heavy.calls == 1  # the rejected request never reached the endpoint

    # by="model" leaves tool calls alone
    started: list[str] = []
    t = gated_tool("t", "default", light_gate, started)
    assert (await stack.tool_call(tool_input(t, 0))).value == 0

    gate.set()
    assert (await holding).text == "openai:big done"


async def test_agent_pools_cover_model_requests_and_tool_calls() -> None:
    gate = asyncio.Event()
    open_gate = asyncio.Event()
    open_gate.set()
    started: list[str] = []
    crunch = gated_tool("crunch", "default", gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1)}, by="agent",
                        default=BulkheadPolicy(max_concurrent=1))
    stack = MiddlewareStack([bulkhead])

    holding = asyncio.create_task(stack.tool_call(tool_input(crunch, 0, agent="analytics")))
    await until(lambda: started == ["crunch:0"])
    model = GatedModel("test:m", open_gate)
    with pytest.raises(BulkheadFull, match="'analytics' \\(by agent\\)"):
        await stack.model_request(model_input(model, agent="analytics"))
    # The chat agent has its own pool (from the default) and is served.
    assert (await stack.model_request(model_input(model, agent="chat"))).text == "test:m done"
    gate.set()
    assert (await holding).value == 0


async def test_through_an_agent_a_full_pool_reaches_the_model_as_an_observation() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    crunch = gated_tool("crunch", "analytics", gate, started)
    chat_gate = asyncio.Event()
    chat_gate.set()
    lookup = gated_tool("lookup", "chat", chat_gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1),
                         "chat": BulkheadPolicy(max_concurrent=1)})
    store = MemoryStore()
    analytics = Agent("analytics", model=ScriptedModel([call("crunch", {"n": 1}), "crunched"]),
                      tools=[crunch], middleware=[bulkhead])
    chat = Agent("chat", model=ScriptedModel([call("lookup", {"n": 2}), "answered"]),
                 tools=[lookup], middleware=[bulkhead])

    blocked = asyncio.create_task(analytics.run("report", store=store, run_id="heavy-1"))
    await until(lambda: started == ["crunch:1"])

    # The chat agent, sharing the same bulkhead, completes while analytics is full.
    answered = await chat.run("hello", store=store, run_id="chat-1")
    assert answered.text == "answered"

    # A second analytics run is turned away at the tool and the model is told why.
    second = await analytics.run("report", store=store, run_id="heavy-2")
    assert second.text == "crunched"
    observations = [p for m in second.messages if m.role == "tool" for p in m.parts]
    rendered = json.dumps([getattr(p, "content", "") for p in observations])
    assert "bulkhead_full" in rendered and "analytics" in rendered
    assert started == ["crunch:1", "lookup:2"]

    gate.set()
    first = await blocked
    assert first.text == "crunched"
    observations = [p for m in first.messages if m.role == "tool" for p in m.parts]
    assert "bulkhead_full" not in json.dumps([getattr(p, "content", "") for p in observations])


def test_a_bulkhead_survives_consecutive_event_loops() -> None:
    started: list[str] = []
    gate = asyncio.Event()
    gate.set()
    crunch = gated_tool("crunch", "analytics", gate, started)
    bulkhead = Bulkhead({"analytics": BulkheadPolicy(max_concurrent=1, max_queue=1)})
    stack = MiddlewareStack([bulkhead])

    async def two_calls() -> list[Any]:
        return [r.value for r in await asyncio.gather(stack.tool_call(tool_input(crunch, 0)),
                                                      stack.tool_call(tool_input(crunch, 1)))]

    assert asyncio.run(two_calls()) == [0, 1]
    assert asyncio.run(two_calls()) == [0, 1]  # an idle pool is rebuilt for the new loop
