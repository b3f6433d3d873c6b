"""Handoffs: triage hands a customer to billing, with a reason and only the conversation.

``triage`` looks the order up, sees a double charge and calls ``transfer_to_billing(reason)``.
Its run stops there; the handoff is journaled (``desk/hop:0/handoff``: from, to, reason) and
``billing`` continues the conversation. Billing sees what the customer and triage *said*, not
triage's tool calls (the default :class:`HistoryFilter`). Every agent can also call
``transfer_to_human(reason)``, which puts the conversation in the ``support`` escalation queue
(``keel escalations``); handoffs that go round in circles are stopped and escalated too.
Runs offline on scripted models (no LLM is called):

    python examples/handoff.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the agents on a real model.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from keel import Agent, tool
from keel.core import ModelResponse, ToolCallPart
from keel.patterns import HandoffTeam, HistoryFilter
from keel.testing import FunctionModel, ScriptedModel, call

ORDERS = {"A-1001": {"item": "kettle", "charged": [49.0, 49.0]}}


@tool(risk="read")
def get_order(order_id: str) -> dict[str, Any]:
    """Look an order up by id."""
    return ORDERS.get(order_id, {"error": f"no order {order_id}"})


@tool(risk="write")  # not idempotent: journaled with an intent first, never run twice
def refund(order_id: str, amount: float) -> str:
    """Refund an amount on an order."""
    return f"refunded {amount:.2f} on {order_id}"


def _billing_script(messages: list[Any], tools: list[Any], settings: Any) -> Any:
    """Billing's scripted turns: refund the duplicate charge, then confirm. (A function
    model, because billing's turn count starts after the conversation it takes over.)"""
    if messages[-1].role == "user":
        return ModelResponse(parts=(ToolCallPart(
            call_id="r1", tool_name="refund",
            arguments='{"order_id": "A-1001", "amount": 49.0}'),))
    return "I refunded the duplicate charge of 49.00 on order A-1001; it shows in 3-5 days."


def _model(scripted: ScriptedModel | FunctionModel) -> str | ScriptedModel | FunctionModel:
    return os.environ.get("KEEL_MODEL") or scripted


triage = Agent(
    "triage",
    model=_model(ScriptedModel([
        call("get_order", {"order_id": "A-1001"}),
        ["You were charged twice for order A-1001; billing will sort that out.",
         call("transfer_to_billing", {"reason": "double charge of 49.00 on A-1001"})]])),
    instructions="Find out what the customer needs. Billing problems go to billing; anything "
                 "you cannot handle goes to a human.",
    tools=[get_order],
)
billing = Agent(
    "billing",
    model=_model(FunctionModel(_billing_script)),
    instructions="Fix billing problems: refunds of duplicate charges.",
    tools=[refund],
)

flow = HandoffTeam("desk", agents=[triage, billing], routes={"triage": ["billing"]},
                   history=HistoryFilter.conversation(), human_queue="support",
                   max_handoffs=4)
INPUT = "Hi, my card was charged twice for order A-1001."

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT))
    print(result.output)
