"""Agents for the rollout tests: two versions of one support agent on scripted models."""

from __future__ import annotations

from typing import Any

import keel
from keel.testing import FunctionModel


def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: shipped"


def refund(order: str, amount: float) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


def agent(instructions: str = "Help.", *, tools: tuple[Any, ...] = (),
          answer: str = "ok") -> keel.Agent[str]:
    return keel.Agent("support", model=FunctionModel(lambda m, t, s: answer),
                      instructions=instructions, tools=list(tools))


def lookup_tool() -> Any:
    return keel.tool(risk="read")(lookup)


def refund_tool() -> Any:
    return keel.tool(risk="write")(refund)
