"""A support agent whose order search returns a large result, for the paging tests.

Run as ``python -m tests.context._paging_child STORE_URL RUN_ID``: the agent searches, the
model drills into the handle (page 2), and the process kills itself with SIGKILL as the
model is asked for its third turn (the page is journaled by then). test_paging.py then
resumes the run in its own process: the remaining drill-downs read the journal.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from typing import Any

from keel import Agent, ToolContext, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.testing import FunctionModel, call

#: Set in the child only: die when the model is asked for this turn.
DIE_AT_TURN: int | None = None
CALLS = {"orders": 0}


def order(i: int) -> dict[str, Any]:
    return {"id": f"o{i}", "status": ("open", "paid", "refunded")[i % 3], "total": i * 7,
            "customer": {"name": f"customer {i % 17}", "tier": "gold" if i % 5 == 0 else "std"},
            "notes": f"order {i} " + "n" * 60}


@tool(fields=["id", "status", "total"], risk="read", paging=True)
def orders(ctx: ToolContext) -> list[dict[str, Any]]:
    """All orders of the shop."""
    CALLS["orders"] += 1
    return [order(i) for i in range(300)]


def handle_in(messages: list[Message]) -> str:
    """The first handle the model was shown (as a model reads it: anywhere in a result)."""
    for m in messages:
        for p in m.parts:
            found = re.search(r'"keel_handle": "(h[0-9a-f]+)"', getattr(p, "content", ""))
            if m.role == "tool" and found:
                return found.group(1)
    raise AssertionError("no handle in the conversation")


PLAN: list[tuple[str, dict[str, Any]]] = [
    ("orders", {}),
    ("result_page", {"page": 2}),
    ("result_filter", {"field": "customer.name", "equals": "customer 3"}),
    ("result_record", {"id": "o42", "path": "customer"}),
]
OFFERED: list[list[str]] = []


def plan(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    turn = sum(1 for m in messages if m.role == "assistant")
    OFFERED.append([t.name for t in tools])
    if DIE_AT_TURN is not None and turn == DIE_AT_TURN:
        os.kill(os.getpid(), signal.SIGKILL)
    if turn >= len(PLAN):
        return "done"
    name, args = PLAN[turn]
    if name != "orders":
        args = {"handle": handle_in(messages), **args}
    return call(name, args)


agent: Agent[Any] = Agent("support", model=FunctionModel(plan), tools=[orders])

if __name__ == "__main__":
    DIE_AT_TURN = 2
    asyncio.run(agent.run("find the orders", store=sys.argv[1], run_id=sys.argv[2]))
