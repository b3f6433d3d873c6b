"""The proof subject of the regression gate: a support agent on a scripted FunctionModel whose
answers depend on its instructions, as a real model's do on its prompt.

Each case's difficulty is a stable hash of its input (0..99). The v1 prompt gets the
hardest tenth wrong; the "regressed" prompt (answer from memory) the hardest 30%; the
"improved" prompt (double-check) only the hardest 5%. The wrong sets are nested, so the
improved prompt is at least as good as v1 on every case.

``make_cases()`` builds the committed dataset tests/evals/data/support_110.jsonl.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

from keel import Agent, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.testing import FunctionModel, call

PROMPT_V1 = "You are a support agent. Look orders up with lookup_order; answer briefly."
PROMPT_REGRESSED = PROMPT_V1 + " Answer from memory to save time."
PROMPT_IMPROVED = PROMPT_V1 + " Double-check every number before you answer."


def difficulty(text: str) -> int:
    return zlib.crc32(text.encode()) % 100


def _wrong_below(instructions: str) -> int:
    if "from memory" in instructions:
        return 30
    if "Double-check" in instructions:
        return 5
    return 10


@tool(risk="read")
def lookup_order(order: str) -> str:
    """Look an order up by its number."""
    return f"Order {order} has shipped."


def reply(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    system = next((m.text for m in messages if m.role == "system"), "")
    user = next(m.text for m in reversed(messages) if m.role == "user")
    wrong = difficulty(user) < _wrong_below(system)
    order = re.search(r"order (\d+)", user)
    if order:
        number = int(order.group(1)) + (1 if wrong else 0)
        if messages[-1].role == "tool":  # the look-up answered: say what it said
            return f"Order {number} has shipped."
        return call("lookup_order", {"order": str(number)})
    a, b = map(int, re.findall(r"\d+", user)[:2])
    return str(a + b + (1 if wrong else 0))


def make_agent(instructions: str) -> Agent[str]:
    return Agent("support", model=FunctionModel(reply, name="test:support"),
                 instructions=instructions, tools=[lookup_order])


agent_v1 = make_agent(PROMPT_V1)
agent_regressed = make_agent(PROMPT_REGRESSED)
agent_improved = make_agent(PROMPT_IMPROVED)


def make_cases() -> list[dict[str, Any]]:
    """60 arithmetic answer cases and 50 order look-up (tool) cases, interleaved."""
    cases: list[dict[str, Any]] = []
    for i in range(110):
        if i % 11 < 6:
            a, b = 3 + i * 7 % 89, 11 + i * 13 % 97
            cases.append({"id": f"math-{i:03d}", "input": f"What is {a} plus {b}?",
                          "expected": str(a + b), "tags": ["math"]})
        else:
            order = 1000 + i * 37 % 9000
            cases.append({"id": f"order-{i:03d}", "input": f"Where is order {order}?",
                          "expected": f"Order {order} has shipped.",
                          "expect": {"tools": [{"name": "lookup_order",
                                                "args": {"order": str(order)}}],
                                     "forbid_tools": ["refund"]},
                          "tags": ["orders"]})
    return cases
