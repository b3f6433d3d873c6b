"""A long conversation (many runs of one conversation id, one SQLite file) against a model
with an 8k window, with keel's defaults: each run starts from the whole conversation rebuilt
from the journal and the default History fits every request in the window; the user's first
message (the task, kept by Importance) and a pinned fact survive to the end; no tool call
travels without its result; the warning comes once the conversation outgrows the window;
and the last turn replays exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keel
from keel.context import count_message_tokens, pin
from keel.core import Message, ModelResponse, TextPart, ToolCallPart, ToolResultPart, Usage
from keel.models import ModelInfo, register_model_info
from keel.runtime import replay_run
from keel.store import open_store
from keel.testing import FunctionModel

register_model_info(ModelInfo(provider="test", model="conv-8k", context_window=8192,
                              tokenizer="o200k_base"))
WINDOW = 8192
TURNS = 120


def lookup(n: int) -> str:
    """Look a record up."""
    return f"record {n}: " + "shipped with the carrier, signed for at the door; " * 12


def _orphans(messages: list[Message]) -> int:
    calls = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolCallPart)}
    results = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolResultPart)}
    return len(calls ^ results)


async def test_a_long_conversation_stays_within_the_window_across_runs(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def fn(messages: list[Message], tools: Any, settings: Any) -> ModelResponse:
        latest = next(m for m in reversed(messages) if m.role == "user")
        n = int(latest.text.rsplit(" ", 1)[1])
        tokens = count_message_tokens(messages, "test:conv-8k", tools=tools)
        usage = Usage(requests=1, input_tokens=tokens)  # what a provider reports (calibration)
        seen.append({"turn": n, "tokens": tokens,
                     "orphans": _orphans(messages),
                     "task": any("account A-42" in m.text for m in messages),
                     "pinned": any("never call before 9am" in m.text for m in messages)})
        if messages[-1].role == "tool":
            return ModelResponse(parts=(TextPart(text=f"Record {n} is shipped."),), usage=usage)
        return ModelResponse(parts=(ToolCallPart(call_id=f"c{n}", tool_name="lookup",
                                                 arguments=f'{{"n": {n}}}'),),
                             finish_reason="tool_calls", usage=usage)

    agent = keel.Agent("desk", model=FunctionModel(fn, name="test:conv-8k"),
                       tools=[keel.tool(lookup, risk="read")],
                       settings=keel.ModelSettings(max_tokens=1024))
    store = open_store(str(tmp_path / "runs.db"))
    warned: list[int] = []
    async with store:
        first = await agent.run(f"I am account A-42. {pin('never call before 9am')} turn 0",
                                conversation="c-long", store=store)
        for n in range(1, TURNS):
            result = await agent.run(f"please check turn {n}", conversation="c-long",
                                     store=store)
            assert result.output == f"Record {n} is shipped."
            if result.context_warning is not None:
                warned.append(n)
        report = await replay_run(agent, result.run_id, store=store)
        runs = await keel.Conversation("c-long", store=store).runs()
    assert first.output == "Record 0 is shipped."
    assert len(runs) == TURNS
    assert len(seen) == 2 * TURNS
    assert max(s["tokens"] for s in seen) + 1024 <= WINDOW
    assert all(s["orphans"] == 0 for s in seen)
    assert all(s["task"] and s["pinned"] for s in seen)  # to the very end
    # the conversation outgrew the window (the last request would not fit otherwise) and the
    # user was told once, in the run where it first did: not before, not again
    assert len(warned) == 1 and warned[0] > 10
    assert report.identical, report
