"""Structured output: the answer is a validated pydantic object, not free text.

The model answers through the ``final_result`` tool, whose schema is the output type. Its first
answer breaks a constraint (priority 9 is not in 1..5); keel rejects it, tells the model why,
and the model corrects it. Runs offline on a scripted model (no LLM is called):

    python examples/structured_output.py
    keel run examples/structured_output.py:agent "ana@example.com: charged twice!"

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to try it on a real model.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, Field

from keel import Agent, tool
from keel.testing import ScriptedModel, call


class Ticket(BaseModel):
    """A triaged support ticket."""

    category: Literal["billing", "bug", "feature_request"]
    priority: int = Field(ge=1, le=5, description="1 = can wait, 5 = drop everything")
    summary: str = Field(max_length=80)


CUSTOMERS = {"ana@example.com": {"name": "Ana", "plan": "pro"}}


@tool(risk="read")
def lookup_customer(email: str) -> dict[str, str]:
    """Find a customer's name and plan by email address."""
    return CUSTOMERS.get(email.strip().lower(), {"plan": "unknown"})


SCRIPT = [
    call("lookup_customer", {"email": "ana@example.com"}),
    # Priority 9 breaks `le=5`: keel rejects this answer and the model sees why.
    call("final_result", {"category": "billing", "priority": 9,
                          "summary": "Pro customer charged twice this month"}),
    # The corrected answer validates and ends the run.
    call("final_result", {"category": "billing", "priority": 4,
                          "summary": "Pro customer charged twice this month"}),
]

INPUT = "From ana@example.com: I was charged twice this month!! Please fix this ASAP."

agent: Agent[Ticket] = Agent(
    "triage",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(SCRIPT),
    instructions="Triage the support message into a ticket. Look the customer up first.",
    tools=[lookup_customer],
    output_type=Ticket,
)

if __name__ == "__main__":
    ticket = agent.run_sync(INPUT).output  # a Ticket instance, already validated
    print(ticket.model_dump_json(indent=2))
