"""The support agent of tests/runtime/test_conversations.py, and a child process that runs one
turn of a conversation with it.

Run as ``python -m tests.runtime._conv_child STORE_URL CONVERSATION TEXT [--die] [--run-id ID]``:
the child runs the turn in its own process (nothing shared with the test but the store file)
and prints each model request it sends, one JSON line per request, as it sends it. With
``--die`` the lookup tool kills the process (SIGKILL) before it returns, as a worker dies mid
turn; the test then resumes the turn in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from keel import Agent, Message, ModelSettings, tool
from keel.core import ToolSpec
from keel.testing import FunctionModel, call

#: Set in the child only (``--die``): the lookup tool kills the process.
DIE_IN_TOOL = False


@tool(risk="read")
def lookup(order: str) -> str:
    """Where an order is."""
    if DIE_IN_TOOL:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"order {order} left the warehouse on Monday"


def answer(messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
           ) -> Any:
    """Looks an order up when the user names one, then answers; otherwise says how many
    user messages it has seen (so a test can tell what history it was given)."""
    last = messages[-1]
    if last.role == "tool":
        found = re.search(r"order \d+ left the warehouse", last.parts[0].content)  # type: ignore[union-attr]
        return f"Done: {found.group(0) if found else 'not found'}."
    found = re.search(r"order (\d+)", last.text)
    if found:
        return call("lookup", {"order": found.group(1)})
    users = [m.text for m in messages if m.role == "user"]
    return f"I have seen {len(users)} user messages: {' | '.join(users)}"


def support(model: Any = None) -> Agent[Any]:
    return Agent("support", model=model or FunctionModel(answer), tools=[lookup],
                 instructions="Answer briefly.")


def as_json(messages: Sequence[Message]) -> list[list[str]]:
    return [[m.role, m.text or json.dumps([str(p) for p in m.parts])] for m in messages]


class Printing(FunctionModel):
    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> Any:
        print(json.dumps(as_json(messages)), flush=True)
        return await super().request(messages, tools, settings)


async def _main(argv: list[str]) -> None:
    global DIE_IN_TOOL
    url, conversation, text, *rest = argv
    DIE_IN_TOOL = "--die" in rest
    run_id = rest[rest.index("--run-id") + 1] if "--run-id" in rest else None
    result = await support(Printing(answer)).run(text, store=url, conversation=conversation,
                                                 run_id=run_id)
    print(json.dumps({"output": result.output}), flush=True)


#: For the CLI tests: ``keel run tests/runtime/_conv_child.py:agent ... --conversation ID``.
agent = support()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
