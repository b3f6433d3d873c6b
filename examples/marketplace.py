"""Marketplace: translators bid on a task, the best bid wins, a failed award goes to the next.

Three agents bid on a translation with an estimate (in steps), a confidence and a plan; the
bids are gathered concurrently and scored (confidence, discounted by the estimate). One bid is
discarded (its confidence is out of range) and the reason is journaled. The winner's
translation fails the ``verify`` check, so the task goes to the next bid, which delivers.
Every bid, award and outcome is in the journal (``translate/bids``, ``translate/award:N/...``).
Runs offline on function models:

    python examples/marketplace.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run it on a real model.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from keel import Agent, Budget
from keel.core import Message, ModelResponse, ToolCallPart, ToolSpec
from keel.models import Model
from keel.patterns import Marketplace
from keel.testing import FunctionModel


def offline(bid: dict[str, Any], work: str) -> FunctionModel:
    """Bids when asked for a Bid (the ``final_result`` tool is offered), works otherwise."""

    def answer(messages: list[Message], tools: list[ToolSpec], settings: Any) -> Any:
        if any(t.name == "final_result" for t in tools):
            return ModelResponse(parts=(ToolCallPart(
                call_id="bid", tool_name="final_result", arguments=json.dumps(bid)),),
                finish_reason="tool_calls")
        return work

    return FunctionModel(answer)


def model(bid: dict[str, Any], work: str) -> str | Model:
    return os.environ.get("KEEL_MODEL") or offline(bid, work)


TRANSLATORS = [
    Agent("fast", instructions="You translate English to French, quickly.", model=model(
        {"estimate": 1, "confidence": 0.9, "plan": "word by word"}, "Bonjour, monde")),
    Agent("careful", instructions="You translate English to French with care.", model=model(
        {"estimate": 2, "confidence": 0.8, "plan": "translate, then proofread"},
        "« Bonjour le monde ! »")),
    Agent("boastful", instructions="You translate anything.", model=model(
        {"estimate": 1, "confidence": 1.7, "plan": "trust me"}, "Salut")),
]


def idiomatic(output: Any) -> bool:
    """The check a translation must pass (here: French quotes and punctuation)."""
    return isinstance(output, str) and "«" in output


INPUT = "Translate into French, with French punctuation: 'Hello, world!'"

flow = Marketplace("translate", TRANSLATORS, verify=idiomatic, min_confidence=0.5,
                   bid_budget=Budget(max_steps=3))

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT))
    market = result.output
    for bid in market.bids:
        print(f"bid {bid.bidder}: estimate {bid.estimate:g} steps, confidence "
              f"{bid.confidence:g}, score {bid.score:.2f}")
    for dropped in market.discarded:
        print(f"discarded {dropped['bidder']}: {dropped['reason']}")
    for attempt in market.attempts:
        print(f"award {attempt.bidder}: {'ok' if attempt.ok else attempt.reason}")
    print(f"winner {market.winner}: {market.output} (run {result.run_id})")
