"""Agents for the keel.temporal tests: models whose answers are pure functions of the
conversation (a run may continue in another activity or worker process)."""

from __future__ import annotations

import re
from typing import Any

from keel import Agent, Flow, FlowContext, Message, ToolContext, flow, tool
from keel.core import ToolResultPart
from keel.testing import FunctionModel, call

#: Every call of ``add`` made in this process: (a, b, idempotency key).
CALLS: list[tuple[int, int, str]] = []


def _tool_results(messages: list[Message]) -> list[str]:
    return [re.sub(r"<[^>]+>", "", p.content).strip()
            for m in messages if m.role == "tool" for p in m.parts
            if isinstance(p, ToolResultPart)]


def adder_answer(messages: list[Message], tools: Any, settings: Any) -> Any:
    """Add 2 and 3, then 5 and 10, then answer with what the tools said."""
    seen = _tool_results(messages)
    if len(seen) == 0:
        return call("add", {"a": 2, "b": 3})
    if len(seen) == 1:
        return call("add", {"a": 5, "b": 10})
    return "sums: " + ", ".join(seen)


def adder(name: str = "adder") -> Agent[Any]:
    @tool(risk="read")
    def add(a: int, b: int, ctx: ToolContext) -> int:
        """Add two numbers."""
        CALLS.append((a, b, ctx.idempotency_key))
        return a + b

    return Agent(name, model=FunctionModel(adder_answer), tools=[add])


def payer_answer(messages: list[Message], tools: Any, settings: Any) -> Any:
    """Pay once, then report what the payment said."""
    seen = _tool_results(messages)
    if not seen:
        return call("pay", {"amount": 40})
    return f"done: {seen[0]}"


#: Every payment made in this process: (amount, idempotency key).
PAYMENTS: list[tuple[int, str]] = []


def payer(name: str = "payer") -> Agent[Any]:
    """An agent whose one tool is irreversible: every call waits for a person's approval."""

    @tool(risk="irreversible")
    def pay(amount: int, ctx: ToolContext) -> str:
        """Pay an amount."""
        PAYMENTS.append((amount, ctx.idempotency_key))
        return f"paid {amount}"

    return Agent(name, model=FunctionModel(payer_answer), tools=[pay])


def escalating_flow(name: str = "triage") -> Flow[Any]:
    """A flow that runs the adder as a sub-agent, then asks a person before it answers."""
    sub = adder("sub")

    @flow(name, agents=[sub])
    async def body(ctx: FlowContext, text: str) -> str:
        summed = await ctx.run_agent(sub, text)
        note = await ctx.escalate("check the sums")
        return f"{summed.output} / {note}"

    return body
