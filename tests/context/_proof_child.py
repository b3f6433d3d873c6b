"""The child process of the history proof: a 500-turn tool-calling conversation against a
model with an 8k window, with keel's defaults and a summarising history policy.

``python _proof_child.py MODE STORE OUT`` where MODE is ``full`` (run to the end), ``crash``
(start, and kill the process at the model request for step 250) or ``resume`` (resume the
run). Each model request the model function sees is checked and written to OUT as one JSON
line: the step it is for, a digest of the messages, their exact token count with the tool
specs and the reply reserve, orphaned tool calls or results, and whether the pinned facts are
in it. The last line (full, resume) is the run's result."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any

import keel
from keel.context import (
    History,
    Importance,
    Summarize,
    TokenBudget,
    TokenCalibration,
    count_message_tokens,
    pin,
)
from keel.core import Message, ToolCallPart, ToolResultPart
from keel.models import ModelInfo, register_model_info
from keel.testing import FunctionModel

TURNS = 500
CRASH_AT = 250
WINDOW = 8192
MODEL_ID = "test:proof-8k"
RUN_ID = "history-proof-run"
FACTS = ("Customer account: ACC-9931", "Vault code: 7-4-1")

register_model_info(ModelInfo(provider="test", model="proof-8k", context_window=WINDOW,
                              tokenizer="cl100k_base"))


def step_of(messages: list[Message]) -> int:
    """The step the conversation is at: from the latest tool result (`step N done`)."""
    for m in reversed(messages):
        for p in m.parts:
            if isinstance(p, ToolResultPart) and "step " in p.content:
                return int(p.content.split("step ", 1)[1].split(" ", 1)[0])
    return 0


def orphans(messages: list[Message]) -> int:
    calls = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolCallPart)}
    results = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolResultPart)}
    return len(calls ^ results)


def main(mode: str, store: str, out_path: str) -> None:
    out = open(out_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open to the end

    def fn(messages: list[Message], tools: list[Any], settings: Any) -> Any:
        if messages and messages[0].text.startswith("You compress"):
            n = step_of(messages)
            return f"Steps up to {n} were look-ups of records; nothing failed."
        n = step_of(messages) + 1
        text = "\n".join(m.text for m in messages) + "\n".join(
            p.content for m in messages for p in m.parts if isinstance(p, ToolResultPart))
        line = {"step": n, "digest": hashlib.sha256(repr(messages).encode()).hexdigest(),
                "tokens": count_message_tokens(messages, MODEL_ID, tools),
                "reserve": settings.max_tokens, "orphans": orphans(messages),
                "facts": all(f in text for f in FACTS), "count": len(messages)}
        out.write(json.dumps(line) + "\n")
        out.flush()
        if mode == "crash" and n == CRASH_AT:
            os._exit(3)
        if n > TURNS:
            return "All records checked."
        return keel.models.call("lookup", {"n": n, "note": "checking record " * 20})

    def lookup(n: int, note: str) -> str:
        """Look a record up."""
        return f"step {n} done: " + "field value " * 60

    agent = keel.Agent(
        "proof", model=FunctionModel(fn, name=MODEL_ID),
        tools=[keel.tool(lookup, risk="read")],
        settings=keel.ModelSettings(max_tokens=1024), durability="batched",
        budget=keel.Budget(max_steps=5000),
        middleware=[History(Importance(), Summarize(keep_recent=6),
                            TokenBudget(), pinned=[FACTS[1]],
                            calibration=TokenCalibration())])
    if mode == "resume":
        result = asyncio.run(agent.resume(RUN_ID, store=store))
    else:
        result = asyncio.run(agent.run(pin(f"Check every record. {FACTS[0]}"), store=store,
                                       run_id=RUN_ID))
    out.write(json.dumps({"result": result.output, "warning": result.context_warning,
                          "replayed": result.replayed_steps}) + "\n")
    out.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
