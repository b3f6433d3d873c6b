"""ToolMeta.breaker_key: tools that share a failure domain share one circuit breaker."""

from __future__ import annotations

from typing import Any

from keel import Agent, MemoryStore, ToolError, tool_from_schema
from keel.reliability import BreakerPolicy, CircuitBreaker
from keel.testing import ScriptedModel, call

SCHEMA = {"type": "object", "properties": {}}


async def test_tools_with_one_breaker_key_open_and_fail_fast_together() -> None:
    calls: list[str] = []

    def failing(arguments: dict[str, Any]) -> str:
        calls.append("a")
        raise ToolError("backend down")

    def healthy(name: str) -> Any:
        def run(arguments: dict[str, Any]) -> str:
            calls.append(name)
            return "fine"
        return run

    a = tool_from_schema("a", None, SCHEMA, failing, breaker_key="svc:backend")
    b = tool_from_schema("b", None, SCHEMA, healthy("b"), breaker_key="svc:backend")
    c = tool_from_schema("c", None, SCHEMA, healthy("c"))
    assert (a.meta.breaker_key, c.meta.breaker_key) == ("svc:backend", None)
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1))
    model = ScriptedModel([call("a", {}), call("b", {}), call("c", {}), "done"])
    agent = Agent("x", model=model, tools=[a, b, c], middleware=[breaker])
    assert (await agent.run("go", store=MemoryStore())).output == "done"
    assert calls == ["a", "c"]  # b shares a's open breaker: refused without a call
    assert (await breaker.state("svc:backend")).state == "open"
    assert (await breaker.state("tool:c")).state == "closed"
    seen = [str(m) for m in model.requests[-1]]
    assert any("circuit_open" in m and "'b'" in m for m in seen)
