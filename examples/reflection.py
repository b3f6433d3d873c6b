"""Reflection: a writer drafts, checks and a model judge critique, the writer revises.

The writer's first draft of a product blurb is missing a field the JSON schema requires and
shouts ("!!!"), so two criteria fail; the critique goes back to the writer, whose revision
passes every check, and the loop stops early (at most 3 rounds). The result is the best
version with the critique of every round. Runs offline on scripted models (no LLM is called):

    python examples/reflection.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run the writer and the judge on a
real model.
"""

from __future__ import annotations

import asyncio
import os

from keel import Agent
from keel.patterns import JsonSchema, Judgement, Predicate, Reflection, Rubric
from keel.testing import ScriptedModel, call

SCHEMA = {
    "type": "object",
    "required": ["name", "blurb", "bullets"],
    "properties": {
        "name": {"type": "string"},
        "blurb": {"type": "string", "maxLength": 160},
        "bullets": {"type": "array", "items": {"type": "string"}, "minItems": 3},
    },
}

DRAFTS = [
    '{"name": "Trail Mug", "blurb": "The best mug ever!!!"}',
    '{"name": "Trail Mug", "blurb": "Keeps coffee hot for six hours and fits any cup '
    'holder.", "bullets": ["Double-walled steel", "Leak-proof lid", "350 ml"]}',
]
VERDICT = {"scores": [{"item": "Concrete: names what the product does", "passed": True,
                       "score": 0.8, "feedback": ""}],
           "feedback": "Specific enough for a shop page."}

INPUT = ("Write a product blurb for our insulated travel mug as JSON with name, blurb "
         "(under 160 characters) and at least three bullets.")

model = os.environ.get("KEEL_MODEL")
writer = Agent("writer", model=model or ScriptedModel(DRAFTS),
               instructions="You write product copy. Answer with the JSON only.")
judge = Agent("judge", model=model or ScriptedModel([call("final_result", VERDICT)]),
              instructions="You are a strict copy editor.", output_type=Judgement)

flow = Reflection(
    "blurb",
    generator=writer,
    critic=judge,
    criteria=[
        JsonSchema(SCHEMA),
        Predicate("calm tone", lambda text: "!" not in text, "do not use exclamation marks"),
        Rubric("Concrete: names what the product does"),
    ],
    max_rounds=3,
)

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT)).output
    for r in result.history:
        failed = [f"{c.name}: {c.message}" for c in r.checks if not c.passed]
        print(f"round {r.index}: score {r.score:.2f}", *failed, sep="\n  ")
    print(f"stopped: {result.stopped}, best round {result.best_round}, passed: {result.passed}")
    print(result.best)
