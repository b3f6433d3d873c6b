"""A built-in copy of ``examples/tool_use.py`` for ``keel demo`` when keel is installed from a
wheel (no ``examples/`` directory). Keep it in step with the example."""

from __future__ import annotations

from typing import Any, Literal

from keel.models import ScriptedModel, call
from keel.models._scripted import ScriptItem
from keel.runtime import Agent
from keel.tools import tool

WEATHER = {
    "paris": {"temp_c": 18, "sky": "cloudy"},
    "tokyo": {"temp_c": 24, "sky": "sunny"},
    "oslo": {"temp_c": 9, "sky": "rain"},
}

SCRIPT: list[ScriptItem] = [
    ["I'll look up both cities at once.",
     call("get_weather", {"city": "Paris"}),
     call("get_weather", {"city": "Tokyo"})],
    call("calculate", {"a": 24, "op": "-", "b": 18}),
    "Tokyo is warmer: 24°C and sunny, 6°C more than Paris (18°C and cloudy).",
]

INPUT = "Which is warmer right now, Paris or Tokyo, and by how much?"


def get_weather(city: str) -> dict[str, Any]:
    """Current weather for a city.

    Args:
        city: The city's name, e.g. "Paris".
    """
    weather = WEATHER.get(city.strip().lower())
    if weather is None:
        raise ValueError(f"no weather data for {city!r}; try Paris, Tokyo or Oslo")
    return {"city": city, **weather}


def calculate(a: float, op: Literal["+", "-", "*", "/"], b: float) -> float:
    """Arithmetic on two numbers: a op b."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b


def builtin_tool_use() -> tuple[Agent[Any], str]:
    """The tool-use agent on its scripted model, and its input."""
    agent: Agent[Any] = Agent(
        "weather", model=ScriptedModel(SCRIPT),
        instructions="Answer weather questions with the tools. Use calculate for arithmetic.",
        tools=[tool(get_weather), tool(calculate)])
    return agent, INPUT
