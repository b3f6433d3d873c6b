"""The seam for middleware that serves tools (``Middleware.provide_tools``) and for tools
that read their own run's journal (``ToolContext.steps``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from keel import MemoryStore, ToolContext, tool
from keel.runtime import Agent, Middleware
from keel.testing import ScriptedModel, call
from keel.tools import Tool


@tool
def numbers() -> list[int]:
    """Some numbers."""
    return [1, 2, 3]


@tool
def earlier(ctx: ToolContext) -> list[str]:
    """The keys and contents of the tool results this run recorded before."""
    assert ctx.steps is not None
    return [f"{k}={d['content']}" for k, d in ctx.steps.recorded_results("tool")]


class Serves(Middleware):
    def __init__(self, *tools: Tool) -> None:
        self.tools = tools

    def provide_tools(self) -> Sequence[Tool]:
        return self.tools


async def test_a_middleware_tool_is_resolved_and_journaled() -> None:
    store = MemoryStore()
    model = ScriptedModel([call("numbers"), call("earlier"), "done"])
    agent: Agent[Any] = Agent("a", model=model, tools=[numbers], middleware=[Serves(earlier)])
    result = await agent.run("go", store=store)
    assert result.output == "done"
    entries = await store.read_journal(result.run_id)
    tool_steps = [e for e in entries if e.kind == "tool" and e.phase == "result"]
    assert [e.name for e in tool_steps] == ["numbers", "earlier"]
    seen = tool_steps[1].data["value"]
    assert seen == ["a/turn:0/tool:numbers#0=[1, 2, 3]"]  # only what was recorded before it
    # not offered to the model by itself
    specs = agent.tool_plan().specs
    assert [s.name for s in specs] == ["numbers"]


async def test_the_agents_own_tool_wins_over_a_provided_one_of_the_same_name() -> None:
    @tool(name="numbers")
    def other() -> str:
        return "provided"

    model = ScriptedModel([call("numbers"), "done"])
    agent: Agent[Any] = Agent("a", model=model, tools=[numbers],
                              middleware=[Serves(other), Serves(earlier)])
    result = await agent.run("go")
    tool_msg = next(m for m in result.messages if m.role == "tool")
    assert json.loads(tool_msg.parts[0].content) == [1, 2, 3]  # type: ignore[union-attr]
    assert set(agent.stack.provided) == {"numbers", "earlier"}


async def test_without_provided_tools_an_unknown_name_is_still_unknown() -> None:
    model = ScriptedModel([call("earlier"), "done"])
    agent: Agent[Any] = Agent("a", model=model, tools=[numbers])
    result = await agent.run("go")
    tool_msg = next(m for m in result.messages if m.role == "tool")
    assert "unknown_tool" in tool_msg.parts[0].content  # type: ignore[union-attr]
