"""Agents for the keel.temporal tests: models whose answers are pure functions of the
conversation (a run may continue in another activity or worker process)."""

from __future__ import annotations

import re
from typing import Any

from keel import Agent, Message, ToolContext, tool
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
