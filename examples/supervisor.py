"""Supervisor: a lead agent splits a question between two workers and writes the answer.

The ``editor`` gets one tool per worker (``ask_researcher``, ``ask_analyst``). In its first
turn it delegates to both at once (the two workers run concurrently, each with its own
instructions and tools and half of what is left of the budget); it sees their answers, not
their tool calls, and synthesizes. Every worker step is journaled under the delegation that
started it (``desk/editor/turn:0/tool:ask_researcher#0/researcher/...``), so a resumed run
does not ask the workers again. Runs offline on scripted models (no LLM is called):

    python examples/supervisor.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the editor and the workers on
a real model.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from keel import Agent, Budget, tool
from keel.patterns import Supervisor
from keel.testing import ScriptedModel, call

NOTES = {
    "heat pumps": "Heat pumps move heat instead of making it; a typical unit delivers about "
                  "3 kWh of heat per kWh of electricity (COP 3).",
    "gas boilers": "A modern condensing gas boiler turns about 90% of the gas into heat.",
}


@tool(risk="read")
def search_notes(topic: str) -> str:
    """Search the research notes for a topic."""
    return NOTES.get(topic.lower(), f"no notes on {topic!r}")


@tool(risk="read")
def heat_cost(price_per_kwh: float, efficiency: float) -> float:
    """Cost of one kWh of heat, given the energy price and the efficiency (1.0 = 100%)."""
    return round(price_per_kwh / efficiency, 3)


def _model(script: list[Any]) -> str | ScriptedModel:
    return os.environ.get("KEEL_MODEL") or ScriptedModel(script)


researcher = Agent(
    "researcher",
    model=_model([call("search_notes", {"topic": "heat pumps"}),
                  "Heat pumps deliver about 3 kWh of heat per kWh of electricity (COP 3)."]),
    instructions="Find facts in the research notes and report them briefly.",
    tools=[search_notes],
)
analyst = Agent(
    "analyst",
    model=_model([[call("heat_cost", {"price_per_kwh": 0.30, "efficiency": 3.0}),
                   call("heat_cost", {"price_per_kwh": 0.10, "efficiency": 0.9})],
                  "Heat from a heat pump costs 0.10 per kWh; from a gas boiler 0.111."]),
    instructions="Do the arithmetic with the heat_cost tool. Electricity 0.30/kWh, gas "
                 "0.10/kWh, heat pump efficiency 3.0, boiler 0.9.",
    tools=[heat_cost],
)
editor = Agent(
    "editor",
    model=_model([[call("ask_researcher", {"task": "How efficient are heat pumps?"}),
                   call("ask_analyst", {"task": "Cost per kWh of heat: heat pump vs gas "
                                                "boiler?"})],
                  "A heat pump delivers about 3 kWh of heat per kWh of electricity, so its "
                  "heat costs 0.10 per kWh against 0.111 from a gas boiler: about 10% cheaper "
                  "at these prices."]),
    instructions="Split the question between your workers, ask independent things in the "
                 "same turn, then answer in two sentences using only what they found.",
)

flow = Supervisor("desk", lead=editor, workers=[researcher, analyst], worker_budget=0.5,
                  budget=Budget(max_steps=40))
INPUT = "Is heating with a heat pump cheaper than with a gas boiler?"

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT))
    print(result.output)
    print(f"({result.steps} steps, run {result.run_id})")
