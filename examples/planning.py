"""Planning: a planner writes a structured plan, an executor runs it step by step.

The planner (an agent whose output is a :class:`Plan`) splits a trip budget into four steps:
look up flights and hotels (two ``scout`` agent steps that run concurrently), fetch an
exchange rate (a tool step), then total it up (an ``accountant`` step that gets the three
results). The exchange-rate service fails once; the step is retried and succeeds. A writer
agent turns the step results into the answer. The plan, every status change and every step
outcome are in the journal (``trip/plan#N``, ``trip/step.<id>.v0.<attempt>/...``), and
``keel runs show RUN_ID`` prints the plan as a table. Runs offline on function models:

    python examples/planning.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run it on a real model.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from keel import Agent, tool
from keel.core import Message, ModelResponse, ToolCallPart, ToolSpec
from keel.models import Model
from keel.patterns import Planner, read_plan
from keel.testing import FunctionModel

INPUT = "Budget a 5-night trip from Paris to Tokyo in April, in euros."

PLAN = {"steps": [
    {"id": "flights", "description": "Find a return flight Paris-Tokyo in April and its price "
     "in EUR", "agent": "scout"},
    {"id": "hotels", "description": "Find a mid-range hotel in Tokyo for 5 nights and its "
     "total price in JPY", "agent": "scout"},
    {"id": "rate", "description": "Get the JPY to EUR exchange rate", "tool": "exchange_rate",
     "args": {"currency": "JPY"}},
    {"id": "total", "description": "Add flights and hotels in EUR", "agent": "accountant",
     "depends_on": ["flights", "hotels", "rate"]},
]}

#: What the offline workers answer, by the step id in their task.
ANSWERS = {"flights": "Return flight with ANA, 890 EUR",
           "hotels": "Hotel Gracery Shinjuku, 5 nights, 105000 JPY",
           "total": "Flights 890 EUR + hotel 105000 JPY x 0.0062 = 651 EUR: 1541 EUR in total"}


def offline_worker(messages: list[Message], tools: list[ToolSpec], settings: Any) -> Any:
    task = messages[-1].text
    if any(t.name == "final_result" for t in tools):  # the planner is asked for a plan
        return ModelResponse(parts=(ToolCallPart(
            call_id="plan", tool_name="final_result", arguments=json.dumps(PLAN)),))
    if task.startswith("The goal:"):  # the writer
        return ("About 1541 EUR: flights 890 EUR (ANA) and 5 nights at the Hotel Gracery "
                "Shinjuku (651 EUR at 0.0062 EUR/JPY).")
    step = task.split("(step ", 1)[1].split(" ", 1)[0]
    return ANSWERS[step]


def model() -> str | Model:
    return os.environ.get("KEEL_MODEL") or FunctionModel(offline_worker)


_calls: list[str] = []


@tool(risk="read")
def exchange_rate(currency: str) -> float:
    """The value of one unit of ``currency`` in EUR."""
    _calls.append(currency)
    if len(_calls) == 1:
        raise ConnectionError("rates service unavailable")  # fails once, then works
    return {"JPY": 0.0062, "USD": 0.92}[currency.upper()]


flow = Planner(
    "trip",
    planner=Agent("planner", model=model(), instructions=(
        "You plan work for a team. Split the goal into small steps, one worker each.")),
    workers=[
        Agent("scout", model=model(), instructions="You find travel options and prices."),
        Agent("accountant", model=model(), instructions="You add up costs, showing the sum."),
    ],
    tools=[exchange_rate],
    synthesizer=Agent("writer", model=model(), instructions="Answer in two sentences."),
    max_step_attempts=2,
)

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT))
    print(result.output)
    plan = asyncio.run(read_plan(result.run_id))
    print()
    print(plan.render() if plan else "(no plan recorded)")
    print(f"\nkeel runs show {result.run_id}  # the plan and the journal")
