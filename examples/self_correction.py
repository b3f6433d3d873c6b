"""Self-correction: bad tool calls come back as clear error observations, not crashes.

The model calls a tool that does not exist, then sends arguments of the wrong type, then
broken JSON. Each time keel answers with a normalized error (``unknown_tool``,
``invalid_arguments``, ``invalid_json``) that says how to fix the call, and the model gets it
right. Runs offline on a scripted model (no LLM is called):

    python examples/self_correction.py
    keel run examples/self_correction.py:agent "Where is order 1001?"

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to try it on a real model.
"""

from __future__ import annotations

import os

from keel import Agent, tool
from keel.core import ToolResultPart
from keel.testing import ScriptedModel, call

ORDERS = {1001: {"item": "blue kettle", "status": "shipped", "eta": "6 March"}}


@tool(risk="read")
def get_order(order_id: int) -> dict[str, str]:
    """Look up an order by its number.

    Args:
        order_id: The order number, digits only (e.g. 1001).
    """
    order = ORDERS.get(order_id)
    if order is None:
        raise ValueError(f"there is no order {order_id}")
    return order


SCRIPT = [
    call("find_order", {"order_id": 1001}),   # no such tool -> unknown_tool (lists the tools)
    call("get_order", {"order_id": "#1001"}),  # not an integer -> invalid_arguments (the schema)
    call("get_order", '{"order_id": 1001'),    # broken JSON -> invalid_json
    call("get_order", {"order_id": 1001}),     # corrected
    "Order 1001 (a blue kettle) has shipped and should arrive by 6 March.",
]

INPUT = "Where is my order #1001?"

agent = Agent(
    "orders",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(SCRIPT),
    instructions="Answer questions about orders using the tools.",
    tools=[get_order],
)

if __name__ == "__main__":
    result = agent.run_sync(INPUT)
    for message in result.messages:  # the error observations the model corrected itself from
        for part in message.parts:
            if isinstance(part, ToolResultPart) and part.is_error:
                print("observation:", part.content)
    print(result.output)
