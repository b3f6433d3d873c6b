"""Sequential and parallel workflow: a typed pipeline with fan-out, a gate and a branch.

A support request goes through: parse it (a function) -> look the order up (a tool) and read
the customer's history (a function) at the same time, joined into one case -> a gate that
stops the run when the order does not exist -> a branch: refunds over 100 go to a reviewing
agent, smaller ones get an automatic reply. The step types are checked when the workflow is
built, every result is journaled (resume skips finished steps) and the worst-case budget is
known before it runs. Runs offline on a scripted model (no LLM is called):

    python examples/workflow.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the reviewing agent on a real
model.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from pydantic import BaseModel

from keel import Agent, Budget, tool
from keel.patterns import Branch, Gate, Parallel, Step, Workflow
from keel.testing import ScriptedModel

ORDERS = {1001: {"item": "espresso machine", "amount": 249.0, "status": "delivered"},
          1002: {"item": "kettle", "amount": 39.0, "status": "delivered"}}
REFUNDS = {"ana@example.com": 0, "bo@example.com": 3}


class Request(BaseModel):
    email: str
    order_id: int


class Case(BaseModel):
    email: str
    order_id: int
    item: str
    amount: float
    status: str
    past_refunds: int


def parse_request(text: str) -> Request:
    email = re.search(r"[\w.]+@[\w.]+", text)
    order = re.search(r"\b(\d{4})\b", text)
    if email is None or order is None:
        raise ValueError("the request must name an email address and a 4-digit order number")
    return Request(email=email.group(0), order_id=int(order.group(1)))


@tool(risk="read")
def lookup_order(order_id: int) -> dict[str, Any]:
    """Find an order by its number."""
    return ORDERS.get(order_id, {"item": "", "amount": 0.0, "status": "unknown"})


def refund_history(request: Request) -> int:
    return REFUNDS.get(request.email, 0)


def to_case(parts: dict[str, Any]) -> Case:
    request: Request = parts["request"]
    return Case(email=request.email, order_id=request.order_id, past_refunds=parts["history"],
                **parts["order"])


def carry_request(request: Request) -> Request:
    return request


def auto_reply(case: Case) -> str:
    return f"Refund of {case.amount:.2f} for your {case.item} is on its way."


reviewer = Agent(
    "reviewer",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel([
        "Approved: first refund for this customer and the machine was delivered; refund "
        "249.00 for order 1001."]),
    instructions="You review refund requests over 100. Approve or decline in one sentence.",
    budget=Budget(max_steps=4, max_tokens=20_000, max_cost_usd=0.05, max_wall_seconds=60),
)

flow = Workflow("refunds", [
    parse_request,
    Parallel({"order": Step(lookup_order, args=lambda r: {"order_id": r.order_id}),
              "history": refund_history,
              "request": carry_request}, name="gather", join=to_case),
    Gate("order_exists", lambda case: case.status != "unknown", "no such order"),
    Branch(lambda case: case.amount > 100, name="amount",
           then=Step(reviewer, prompt=lambda case: f"Refund request: {case.model_dump_json()}"),
           otherwise=auto_reply),
], budget=Budget(max_steps=20))

INPUT = "From ana@example.com: my espresso machine (order 1001) arrived broken, refund please."

if __name__ == "__main__":
    print("worst case:", flow.worst_case_budget())
    result = asyncio.run(flow.run(INPUT))
    print(result.output)
