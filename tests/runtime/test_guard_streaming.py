"""Streaming with output guards: text reaches the caller only after the guards passed it, in
chunks, and the streamed text ends as the answer run() returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from keel import Agent, GuardDecision, GuardInput, Guardrail, GuardrailTripped, MemoryStore
from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    RunFinished,
    TextDelta,
    TextPart,
    ToolSpec,
)
from keel.models import Model
from keel.runtime import Agent as BareAgent

KEY = "sk-proj-" + "Q" * 24


class Trickle(Model):
    """Streams its one answer three characters at a time."""

    name = "test:trickle"

    def __init__(self, text: str) -> None:
        self.text = text

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        return ModelResponse(parts=(TextPart(text=self.text),))

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[Any]:
        for i in range(0, len(self.text), 3):
            yield TextDelta(text=self.text[i:i + 3])
        yield ResponseDone(response=await self.request(messages, tools, settings))


async def collect(agent: Any, prompt: str) -> tuple[list[str], Any]:
    deltas: list[str] = []
    finished = None
    async for event in agent.stream(prompt, store=MemoryStore()):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
            assert "QQQQ" not in "".join(deltas)  # never, at any point of the stream
        elif isinstance(event, RunFinished):
            finished = event
    return deltas, finished


async def test_a_secret_never_streams_and_the_stream_ends_as_run_returns() -> None:
    text = (f"Here is what I found. Your key is {KEY} and it works. "
            "Keep it safe! Anything else?")
    agent = Agent("a", model=Trickle(text))  # keel's defaults: SecretsGuard on the answer
    deltas, finished = await collect(agent, "what is my key?")
    assert finished is not None
    assert "".join(deltas) == finished.result.output
    assert "[OPENAI_KEY]" in finished.result.output and "QQQQ" not in finished.result.output
    assert 1 < len(deltas) < len(text) // 3  # chunks, not every delta nor one block
    assert (await agent.run("what is my key?", store=MemoryStore())).output == \
        finished.result.output


async def test_a_long_answer_without_sentence_ends_streams_in_chunks() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    deltas, finished = await collect(Agent("a", model=Trickle(text)), "talk")
    assert "".join(deltas) == finished.result.output == text
    assert len(deltas) > 3


async def test_a_blocked_phrase_never_streams() -> None:
    def no_codes(inp: GuardInput) -> GuardDecision | None:
        return GuardDecision.block("internal code") if "ZEBRA" in inp.text else None

    agent = BareAgent("a", model=Trickle("All fine so far. The code is ZEBRA-9. Bye."),
                      middleware=[Guardrail(no_codes, places="output")])
    deltas: list[str] = []

    async def consume() -> None:
        async for event in agent.stream("code?", store=MemoryStore()):
            if isinstance(event, TextDelta):
                deltas.append(event.text)

    with pytest.raises(GuardrailTripped):
        await consume()
    assert "".join(deltas) == "All fine so far."
    assert "ZEB" not in "".join(deltas)


async def test_without_output_guards_deltas_pass_as_they_come() -> None:
    text = "Hello there. General greeting."
    agent = BareAgent("a", model=Trickle(text))
    deltas, _ = await collect(agent, "hi")
    assert len(deltas) == len(range(0, len(text), 3)) and "".join(deltas) == text
