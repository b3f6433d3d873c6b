"""Group chat: a writer, a fact-checker and an editor take turns until the editor approves.

The three peers share one transcript (each sees the others' messages labelled ``[name]: ...``)
and speak in round-robin order. The chat stops when a message contains ``APPROVED``, with
``max_turns`` as the safety net; the result says who spoke, in which order, and why the chat
stopped. Every turn is journaled (``launch/turn:N/select``, the peer's run, ``.../stop``), so
the chat resumes and replays like a single agent. Runs offline on scripted models:

    python examples/group_chat.py

Set KEEL_MODEL (e.g. ``KEEL_MODEL=openai:gpt-4o-mini``) to run it on a real model.
"""

from __future__ import annotations

import asyncio
import os

from keel import Agent, Budget
from keel.models import Model
from keel.patterns import GroupChat, Keyword
from keel.testing import ScriptedModel


def model(*script: str) -> str | Model:
    return os.environ.get("KEEL_MODEL") or ScriptedModel(list(script))


writer = Agent("writer", model=model(
    "Draft: keel 1.0 ships today, the fastest agent runtime ever made.",
    "Draft 2: keel 1.0 ships today: durable runs, budgets and replay for AI agents."),
    instructions="You write a one-line product announcement and revise it on feedback.")
checker = Agent("checker", model=model(
    "'fastest ever' is a claim we cannot back up; say what it does instead.",
    "Every claim in draft 2 is in the release notes."),
    instructions="You check every claim in the latest draft against what keel does.")
editor = Agent("editor", model=model(
    "Waiting for a draft without unsupported claims.",
    "Clear and accurate. APPROVED"),
    instructions="You approve the draft with the word APPROVED once it is accurate and clear.")

INPUT = "Write a one-line announcement for the keel 1.0 release."

flow = GroupChat("launch", [writer, checker, editor], until=[Keyword("APPROVED")],
                 max_turns=9, peer_budget=Budget(max_steps=5))

if __name__ == "__main__":
    result = asyncio.run(flow.run(INPUT))
    chat = result.output
    for turn in chat.transcript:
        print(f"[{turn.speaker}] {turn.text}")
    print(f"-- stopped by {chat.stopped_by}: {chat.reason} (run {result.run_id})")
