"""The app the server tests serve: a support agent on a scripted model (no network), with a
read tool, an irreversible refund that waits for approval, and escalation on request."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from keel import Agent, tool
from keel.core import Message, ModelSettings, ToolResultPart, ToolSpec
from keel.server import App
from keel.testing import FunctionModel, call

#: seconds the scripted model "thinks" per request (0 in the API tests; the load benchmark
#: sets it)
DELAY = {"s": 0.0}


@tool(risk="read")
def lookup(order: str) -> str:
    """Look up an order's status."""
    return f"order {order}: shipped <b>on time</b>"


@tool(risk="irreversible")
def refund(order: str, amount: float) -> str:
    """Refund an order."""
    return f"refunded {amount:.2f} on {order}"


async def _think(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> Any:
    if DELAY["s"]:
        await asyncio.sleep(DELAY["s"])
    asked = next(m.text for m in messages if m.role == "user")
    results = [p.content for m in messages for p in m.parts if isinstance(p, ToolResultPart)]
    if results:  # tool output reaches the model marked untrusted: take what is inside
        inner = re.search(r"<untrusted[^>]*>\n?(.*?)\n?</untrusted>", results[-1], re.S)
        return f"Done: {inner[1] if inner else results[-1]}"
    wanted = re.search(r"refund (\w+) (\d+(?:\.\d+)?)", asked)
    if wanted:
        return call("refund", {"order": wanted[1], "amount": float(wanted[2])})
    order = re.search(r"order (\w+)", asked)
    if order:
        return call("lookup", {"order": order[1]})
    return f"You said: {asked}"


support = Agent("support", model=FunctionModel(_think), tools=[lookup, refund],
                instructions="Help the customer.")


def make_app(store: str, **options: Any) -> App:
    return App([support], store=store, **options)
