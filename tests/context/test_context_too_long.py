"""A provider's "context too long" refusal is keel.ContextTooLong in both adapters, both wire
test servers produce it, and History compacts and retries once instead of surfacing a 400."""

from __future__ import annotations

import pytest

import keel
from keel import ContextTooLong, MemoryStore, ModelError
from keel.context import History, TokenBudget
from keel.core import Message
from keel.models._anthropic import AnthropicModel
from keel.models._openai import OpenAIModel
from keel.testing import FunctionModel
from keel.testing._wire_anthropic import AnthropicWireServer
from keel.testing._wire_openai import OpenAIWireServer

HELLO = [Message.user("hello")]


async def test_openai_context_length_exceeded_is_context_too_long() -> None:
    with OpenAIWireServer() as srv:
        model = OpenAIModel("gpt-4o-mini", base_url=srv.base_url, api_key="sk-test", timeout=5.0)
        try:
            srv.reply_context_too_long(window=8192, tokens=9100)
            with pytest.raises(ContextTooLong, match="context window") as info:
                await model.request(HELLO)
            assert info.value.retryable is False
            assert "9100" in str(info.value)
            # an ordinary 400 stays a ModelError
            srv.reply_error(400, "bad tool schema")
            with pytest.raises(ModelError):
                await model.request(HELLO)
        finally:
            await model.aclose()


async def test_anthropic_prompt_is_too_long_is_context_too_long() -> None:
    with AnthropicWireServer() as srv:
        model = AnthropicModel("claude-haiku-4-5", base_url=srv.base_url,
                               api_key="sk-ant-test-0000000000000000")
        try:
            srv.reply_context_too_long(window=200_000, tokens=210_000)
            with pytest.raises(ContextTooLong, match="prompt is too long") as info:
                await model.request(HELLO)
            assert info.value.retryable is False
            srv.reply_error(400, message="messages: roles must alternate")
            with pytest.raises(ModelError) as other:
                await model.request(HELLO)
            assert not isinstance(other.value, ContextTooLong)
        finally:
            await model.aclose()


def _conversation(n: int) -> list[Message]:
    out = [Message.system("You are terse.")]
    for i in range(n):
        out += [Message.user(f"question {i} " + "word " * 40),
                Message.assistant(f"answer {i} " + "word " * 40)]
    return [*out, Message.user("last question")]


async def _through(history: History, fn: object, messages: list[Message]) -> keel.ModelResponse:
    async def next_(inp: keel.ModelRequestInput) -> keel.ModelResponse:
        return await inp.model.request(inp.messages, inp.tools, inp.settings)

    inp = keel.ModelRequestInput(run_id="r", step_key="a/turn:0/model", agent="a",
                                 model=FunctionModel(fn), messages=messages,  # type: ignore[arg-type]
                                 tools=[], settings=keel.ModelSettings())
    return await history.wrap_model_request(inp, next_)


async def test_history_compacts_and_retries_once_on_a_providers_refusal() -> None:
    sent: list[list[Message]] = []

    def fn(messages: list[Message], tools: object, settings: object) -> object:
        sent.append(messages)
        if len(sent) == 1:  # the provider counts more than keel did
            return ContextTooLong("HTTP 400 context_length_exceeded")
        return "fine"

    response = await _through(History(TokenBudget(window=100_000, reserve=1000)), fn,
                              _conversation(30))
    assert response.text == "fine"
    assert len(sent) == 2 and len(sent[1]) < len(sent[0])


async def test_a_refused_request_with_nothing_to_leave_out_is_a_clear_error() -> None:
    calls: list[int] = []

    def fn(messages: list[Message], tools: object, settings: object) -> object:
        calls.append(1)
        return ContextTooLong("HTTP 400 context_length_exceeded")

    agent = keel.Agent("a", model=FunctionModel(fn), middleware=[
        History(TokenBudget(window=100_000, reserve=1000))])
    with pytest.raises(ContextTooLong, match="nothing more can be left out") as info:
        await agent.run("one long question", store=MemoryStore())
    assert isinstance(info.value.__cause__, ContextTooLong)
    assert info.value.step_key == "a/turn:0/model"
    assert len(calls) == 1  # the same request is not sent again


async def test_history_retry_sends_fewer_messages_and_a_second_refusal_raises() -> None:
    sent: list[list[Message]] = []

    def fn(messages: list[Message], tools: object, settings: object) -> object:
        sent.append(messages)
        return ContextTooLong("HTTP 400 context_length_exceeded")

    with pytest.raises(ContextTooLong):
        await _through(History(TokenBudget(window=100_000, reserve=1000)), fn,
                       _conversation(30))
    assert len(sent) == 2  # tried once more, then gave up
    assert len(sent[1]) < len(sent[0])
    assert sent[1][0].role == "system" and sent[1][-1].text == "last question"
