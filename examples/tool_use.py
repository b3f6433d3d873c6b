"""Tool use: a weather and calculator agent that calls two tools in parallel.

Runs offline on a scripted model (no LLM is called, no API key is needed):

    python examples/tool_use.py
    keel run examples/tool_use.py:agent "Which is warmer right now, Paris or Tokyo?"

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to try it on a real model.
"""

from __future__ import annotations

import os
from typing import Literal

from keel import Agent, tool
from keel.testing import ScriptedModel, call

WEATHER = {
    "paris": {"temp_c": 18, "sky": "cloudy"},
    "tokyo": {"temp_c": 24, "sky": "sunny"},
    "oslo": {"temp_c": 9, "sky": "rain"},
}


@tool(risk="read")
def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city.

    Args:
        city: The city's name, e.g. "Paris".
    """
    weather = WEATHER.get(city.strip().lower())
    if weather is None:
        raise ValueError(f"no weather data for {city!r}; try Paris, Tokyo or Oslo")
    return {"city": city, **weather}


@tool(risk="read")
def calculate(a: float, op: Literal["+", "-", "*", "/"], b: float) -> float:
    """Arithmetic on two numbers: a op b."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b  # a ZeroDivisionError becomes an error observation, not a crash


# What the scripted model answers, turn by turn.
SCRIPT = [
    # Turn 0: a thought and two calls in one turn; keel runs them in parallel.
    ["I'll look up both cities at once.",
     call("get_weather", {"city": "Paris"}),
     call("get_weather", {"city": "Tokyo"})],
    # Turn 1: work out the difference.
    call("calculate", {"a": 24, "op": "-", "b": 18}),
    # Turn 2: plain text is the final answer.
    "Tokyo is warmer: 24°C and sunny, 6°C more than Paris (18°C and cloudy).",
]

INPUT = "Which is warmer right now, Paris or Tokyo, and by how much?"

agent = Agent(
    "weather",
    model=os.environ.get("KEEL_MODEL") or ScriptedModel(SCRIPT),
    instructions="Answer weather questions with the tools. Use calculate for arithmetic.",
    tools=[get_weather, calculate],
)

if __name__ == "__main__":
    result = agent.run_sync(INPUT)  # journaled in .keel/runs.db (or KEEL_STORE)
    print(result.output)
    print(f"{result.steps} steps; see them with `keel runs show {result.run_id}`")
