"""Routing: a support desk that sends each request to the right specialist.

Code rules catch the obvious cases first (a password, a tracking number, an invoice); the
rest is routed by embeddings: the 7 nearest of ~190 labelled examples vote (WordLlama,
offline, well under a millisecond per query). The router reads the conversation, not only
the last message, so the follow-up in INPUT ("and the kettle from the same order?") goes to
returns because of what came before. Below the confidence threshold the desk asks a
clarifying question instead of guessing. The decision and its confidence are journaled
(step ``desk/route``), so misroutes can be found later with ``route_decisions``.

Runs offline on scripted specialists (no LLM is called, no API key is needed):

    python examples/routing.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the specialists on a real
model; the routing itself stays local.
"""

from __future__ import annotations

import asyncio
import os

from keel import Agent
from keel.patterns import (
    EmbeddingRouter,
    HybridRouter,
    Router,
    Rule,
    RuleRouter,
    conversation_input,
    routes_from,
    routing_dataset,
)
from keel.testing import ScriptedModel

ANSWERS = {
    "billing": "I've checked your invoices; the duplicate charge is being refunded.",
    "shipping": "Your parcel is with the courier and should arrive tomorrow.",
    "returns": "I've added the kettle to the same return; one label covers both items.",
    "technical": "Let's restart the device and update its firmware.",
    "account": "I've sent a password reset link to your email.",
    "other": "Happy to help! Could you tell me a little more?",
}


def specialist(name: str) -> Agent[str]:
    # A scripted model answers turn n (counted by the assistant messages it sees, history
    # included) with script[n]: the same answer for any conversation length up to 8 turns.
    scripted = ScriptedModel([ANSWERS[name]] * 8)
    return Agent(name, model=os.environ.get("KEEL_MODEL") or scripted,
                 instructions=f"You are the {name} specialist of a web shop's support desk. "
                              "Answer in two sentences.")


# One route per intent, its labelled utterances (the train split) as examples.
routes = routes_from(routing_dataset("train"),
                     targets={name: specialist(name) for name in ANSWERS})

rules = RuleRouter([
    Rule("account", regex=r"\b(password|username|two-factor)\b"),
    Rule("shipping", regex=r"\b(tracking number|courier|out for delivery)\b"),
    Rule("billing", regex=r"\b(invoice|charged twice)\b"),
])

flow = Router(
    "desk",
    HybridRouter([rules, EmbeddingRouter(routes, k=7, threshold=0.6)]),
    catch_all="other",  # required: requests that fit nowhere go here
    on_low_confidence="clarify",
)

INPUT = conversation_input([
    {"role": "user", "content": "My blender arrived broken and I'd like to send it back."},
    {"role": "assistant", "content": "Sorry about that! I've started a return for the "
                                     "blender; the label is in your email."},
    {"role": "user", "content": "and the kettle from the same order?"},
])

if __name__ == "__main__":
    result = flow.run_sync(INPUT)  # journaled in .keel/runs.db (or KEEL_STORE)
    decision = result.output.decision
    print(f"route: {decision.route} ({decision.action}, {decision.router}, "
          f"confidence {decision.confidence:.2f} >= {decision.threshold})")
    print(f"answer: {result.output.text}")
    alone = asyncio.run(flow.decide("and the kettle from the same order?"))
    print(f"the last message alone: {alone.action} (best guess {alone.proposed}, "
          f"confidence {alone.confidence:.2f})")
