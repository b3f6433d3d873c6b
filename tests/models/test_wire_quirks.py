"""Defects met when keel was pointed at real-world servers, reproduced against the loopback
wire servers: Anthropic-compatible servers that authenticate with ``x-api-key`` only, 401 and
missing-key messages that must name a fix that exists, and servers that answer a streamed
request with one whole JSON completion.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

import keel
from keel.core import (
    Message,
    MissingCredentials,
    ModelError,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    RunFinished,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from keel.models import Model, resolve_model
from keel.models._anthropic import DOCUMENTED_API_VERSION, AnthropicModel, auth_headers
from keel.models._openai import OpenAIModel
from keel.testing import AnthropicWireServer, OpenAIWireServer

ANT_KEY = "sk-ant-test-0000000000000000"
OAI_KEY = "sk-test-0123456789abcdefghijklmnop"
HELLO = [Message.user("Hello")]
WEATHER = ToolSpec(
    name="get_weather", description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]})
PASS_KEY = "Agent(..., api_key=...) or keel.resolve_model(..., api_key=...)"


class _Redirect(httpx2.AsyncHTTPTransport):
    """Sends every request meant for a provider's own host to a loopback server instead, so
    an adapter configured for the provider's default URL can be answered by a wire server."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return await super().handle_async_request(request)


async def drain(model: Model) -> list[ModelStreamEvent]:
    return [event async for event in model.stream(HELLO, [WEATHER])]


def final(events: list[ModelStreamEvent]) -> ModelResponse:
    assert isinstance(events[-1], ResponseDone)
    assert sum(isinstance(e, ResponseDone) for e in events) == 1
    return events[-1].response


# ------------------------------------------------------------------- x-api-key (Anthropic)


@pytest.fixture
def strict_anthropic() -> Iterator[AnthropicWireServer]:
    with AnthropicWireServer(require_api_key=ANT_KEY,
                             require_version=DOCUMENTED_API_VERSION) as srv:
        yield srv


@pytest.mark.parametrize("streaming", [False, True])
async def test_anthropic_adapter_sends_x_api_key(strict_anthropic: AnthropicWireServer,
                                                 streaming: bool) -> None:
    strict_anthropic.reply_text("authenticated")
    model = resolve_model(f"anthropic:claude-haiku-4-5@{strict_anthropic.base_url}",
                          api_key=ANT_KEY)
    try:
        if streaming:
            response = final(await drain(model))
        else:
            response = await model.request(HELLO)
    finally:
        await model.aclose()
    assert response.text == "authenticated"
    (sent,) = strict_anthropic.requests
    assert sent.headers["x-api-key"] == ANT_KEY
    assert sent.headers["anthropic-version"] == DOCUMENTED_API_VERSION
    assert "authorization" not in sent.headers  # the key travels once, in the documented header


async def test_strict_server_refuses_bearer_only_and_wrong_keys(
        strict_anthropic: AnthropicWireServer) -> None:
    # The installed SDK, used as keel used it before, sends only ``Authorization: Bearer``.
    bare = anthropic.AsyncAnthropic(api_key=ANT_KEY, base_url=strict_anthropic.base_url,
                                    max_retries=0)
    async with bare:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await bare.messages.create(model="m", max_tokens=5,
                                       messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert info.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "x-api-key header is required"}}

    wrong = AnthropicModel("claude-haiku-4-5", base_url=strict_anthropic.base_url,
                           api_key="sk-ant-wrong-key-11111111")
    try:
        with pytest.raises(ModelError) as refused:
            await wrong.request(HELLO)
    finally:
        await wrong.aclose()
    assert (refused.value.status, refused.value.retryable) == (401, False)
    assert "invalid x-api-key" in str(refused.value)
    assert strict_anthropic.pending == 0 and len(strict_anthropic.requests) == 2


def test_anthropics_own_host_gets_x_api_key_and_the_sdk_version() -> None:
    for base_url in (None, "https://api.anthropic.com"):
        headers = auth_headers(ANT_KEY, base_url)
        assert headers["x-api-key"] == ANT_KEY
        assert isinstance(headers["Authorization"], anthropic.Omit)
        assert "anthropic-version" not in headers  # the SDK's own version stays
    assert auth_headers(ANT_KEY, "http://127.0.0.1:9/")["anthropic-version"] == "2023-06-01"
    model = AnthropicModel("claude-haiku-4-5", api_key=ANT_KEY)
    sent = model._client.default_headers
    assert sent["x-api-key"] == ANT_KEY
    assert isinstance(sent["Authorization"], anthropic.Omit)
    assert sent["anthropic-version"] == anthropic.AsyncAnthropic(
        api_key="k").default_headers["anthropic-version"]


# ------------------------------------------------------------------------ 401 messages


async def test_openai_401_at_a_custom_url_says_to_pass_api_key() -> None:
    with OpenAIWireServer() as srv:
        srv.reply_error(401, "Missing bearer token")
        model = resolve_model(f"openai:qwen2.5@{srv.base_url}", env={"OPENAI_API_KEY": OAI_KEY})
        try:
            with pytest.raises(ModelError) as info:
                await model.request(HELLO)
        finally:
            await model.aclose()
    message = str(info.value)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert PASS_KEY in message
    assert "OPENAI_API_KEY is only read for api.openai.com, never sent to another host" in message
    assert "set the OPENAI_API_KEY" not in message


async def test_openai_401_at_the_default_url_names_the_env_var() -> None:
    with OpenAIWireServer() as srv:
        srv.reply_error(401, "Incorrect API key provided.")
        client = openai.AsyncOpenAI(api_key=OAI_KEY, max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=_Redirect(srv.port)))
        model = OpenAIModel("gpt-4o-mini", api_key=OAI_KEY, client=client)
        try:
            with pytest.raises(ModelError) as info:
                await model.request(HELLO)
        finally:
            await client.close()
    assert srv.requests  # it really went through the wire server
    message = str(info.value)
    assert "https://api.openai.com/v1" in message
    assert (f"set the OPENAI_API_KEY environment variable, or pass the key with "
            f"{PASS_KEY}") in message


async def test_anthropic_401_at_a_custom_url_says_to_pass_api_key(
        strict_anthropic: AnthropicWireServer) -> None:
    model = resolve_model(f"anthropic:claude-haiku-4-5@{strict_anthropic.base_url}",
                          env={"ANTHROPIC_API_KEY": ANT_KEY})  # never sent to this host
    try:
        with pytest.raises(ModelError) as info:
            await model.request(HELLO)
    finally:
        await model.aclose()
    message = str(info.value)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert "invalid x-api-key" in message  # the key "unused" was sent, not the env key
    assert PASS_KEY in message
    assert "ANTHROPIC_API_KEY is only read for api.anthropic.com" in message
    assert "set the ANTHROPIC_API_KEY" not in message


async def test_anthropic_401_at_the_default_url_names_the_env_var() -> None:
    with AnthropicWireServer() as srv:
        srv.reply_error(401, message="invalid x-api-key")
        port = int(srv.base_url.rsplit(":", 1)[1])
        client = anthropic.AsyncAnthropic(
            api_key=ANT_KEY, max_retries=0, base_url="https://api.anthropic.com",
            http_client=httpx2.AsyncClient(transport=_Redirect(port)))
        model = AnthropicModel("claude-haiku-4-5", api_key=ANT_KEY, client=client)
        try:
            with pytest.raises(ModelError) as info:
                await model.request(HELLO)
        finally:
            await client.close()
    assert srv.requests
    message = str(info.value)
    assert message.startswith("https://api.anthropic.com rejected the API key (401")
    assert (f"set the ANTHROPIC_API_KEY environment variable, or pass the key with "
            f"{PASS_KEY}") in message


@pytest.mark.parametrize(("model_id", "env_var"), [
    ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
    ("anthropic:claude-haiku-4-5", "ANTHROPIC_API_KEY"),
    # The provider's own host named explicitly: the env key applies, so a missing one is
    # reported (keel used to send the placeholder key "unused" to OpenAI / Anthropic).
    ("openai:gpt-4o-mini@https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("anthropic:claude-haiku-4-5@https://api.anthropic.com", "ANTHROPIC_API_KEY"),
])
def test_missing_credentials_names_fixes_that_exist(model_id: str, env_var: str) -> None:
    with pytest.raises(MissingCredentials) as info:
        resolve_model(model_id, env={})
    assert str(info.value) == (
        f"{model_id.split(':')[0]} model {model_id!r} needs an API key: set the {env_var} "
        f"environment variable, or pass the key with {PASS_KEY}. To run without a provider, "
        f"use keel.testing.ScriptedModel.")
    assert hasattr(keel, "resolve_model")  # the fix it names exists


# -------------------------------------------------- a JSON completion for a streamed request


@pytest.fixture
def json_openai() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer(ignore_stream=True) as srv:
        yield srv
        assert srv.errors == []


@pytest.fixture
async def openai_model(json_openai: OpenAIWireServer) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel("gpt-4o-mini", base_url=json_openai.base_url, api_key=OAI_KEY)
    yield model
    await model.aclose()


async def test_openai_stream_answered_with_json_is_read_as_the_completion(
        json_openai: OpenAIWireServer, openai_model: OpenAIModel) -> None:
    json_openai.reply_tool_calls([("get_weather", '{"city": "Paris"}', "call_a")],
                                 text="Let me look.")
    json_openai.reply_tool_calls([("get_weather", '{"city": "Paris"}', "call_a")],
                                 text="Let me look.")
    events = await drain(openai_model)
    streamed = final(events)
    assert streamed == await openai_model.request(HELLO, [WEATHER])
    assert streamed.text == "Let me look."
    assert [c.arguments for c in streamed.tool_calls] == ['{"city": "Paris"}']
    assert streamed.usage.input_tokens == 20
    assert any(isinstance(e, TextDelta) for e in events)
    assert any(isinstance(e, ToolCallDelta) for e in events)
    assert json_openai.requests[0]["stream"] is True


async def _streamed_run_completes(server: Any, model: Any, text: str) -> None:
    """An agent streamed against ``server`` (which answers streams with a JSON body)
    completes with ``text``, after one request, and the store says so."""
    server.reply_text(text)
    store = keel.MemoryStore()
    events = [event async for event in keel.Agent(model=model).stream("hi", store=store)]
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.result.output == text
    assert len(server.requests) == 1
    record = await store.get_run(finished.run_id)
    assert (record.status, record.output) == ("completed", text)


async def test_agent_run_completes_against_a_server_that_ignores_stream(
        json_openai: OpenAIWireServer, openai_model: OpenAIModel) -> None:
    await _streamed_run_completes(json_openai, openai_model, "The whole answer at once.")


@pytest.mark.parametrize("body", [
    b'{"object": "chat.completion", "choices": []}',
    b'{"status": "ok"}',
    b'[1, 2, 3]',
    b'{"choices": [{"message": {"content": ',
])
async def test_openai_unreadable_json_for_a_stream_fails_once_not_retried(
        json_openai: OpenAIWireServer, openai_model: OpenAIModel, body: bytes) -> None:
    json_openai.reply_raw(200, body)
    with pytest.raises(ModelError) as info:
        await drain(openai_model)
    assert info.value.retryable is False
    assert "answered a streamed request with a JSON body" in str(info.value)
    assert "not retried" in str(info.value)


async def test_agent_does_not_retry_an_unreadable_json_answer(
        json_openai: OpenAIWireServer, openai_model: OpenAIModel) -> None:
    for _ in range(5):
        json_openai.reply_raw(200, b'{"status": "ok"}')
    agent = keel.Agent(model=openai_model)
    store = keel.MemoryStore()
    with pytest.raises(ModelError, match="not retried"):
        async for _ in agent.stream("hi", store=store):
            pass
    assert len(json_openai.requests) == 1  # not four retries of the same answer
    (run,) = await store.list_runs()
    assert run.status == "failed"
    assert run.error is not None and "not retried" in json.dumps(run.error)


async def test_openai_error_object_for_a_stream_is_reported(
        json_openai: OpenAIWireServer, openai_model: OpenAIModel) -> None:
    json_openai.reply_raw(200, json.dumps({"error": {"message": "model is loading"}}))
    with pytest.raises(ModelError) as info:
        await drain(openai_model)
    assert "answered the streamed request with an error: model is loading" in str(info.value)
    assert info.value.retryable is True  # a loading model can answer later


@pytest.fixture
def json_anthropic() -> Iterator[AnthropicWireServer]:
    with AnthropicWireServer(ignore_stream=True, require_api_key=ANT_KEY) as srv:
        yield srv


@pytest.fixture
async def anthropic_model(json_anthropic: AnthropicWireServer
                          ) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel("claude-haiku-4-5", base_url=json_anthropic.base_url, api_key=ANT_KEY)
    yield model
    await model.aclose()


async def test_anthropic_stream_answered_with_json_is_read_as_the_message(
        json_anthropic: AnthropicWireServer, anthropic_model: AnthropicModel) -> None:
    for _ in range(2):
        json_anthropic.reply_tool_use([("get_weather", {"city": "Paris"}, "toolu_1")],
                                      text="Checking.")
    events = await drain(anthropic_model)
    streamed = final(events)
    assert streamed == await anthropic_model.request(HELLO, [WEATHER])
    assert streamed.text == "Checking."
    assert streamed.finish_reason == "tool_use"
    assert [json.loads(c.arguments) for c in streamed.tool_calls] == [{"city": "Paris"}]
    assert json_anthropic.requests[0].stream


async def test_anthropic_agent_run_completes_against_a_server_that_ignores_stream(
        json_anthropic: AnthropicWireServer, anthropic_model: AnthropicModel) -> None:
    await _streamed_run_completes(json_anthropic, anthropic_model, "Whole message.")


@pytest.mark.parametrize("body", [b'{"type": "message", "content": "nope"}', b'"text"',
                                  b"{not json"])
async def test_anthropic_unreadable_json_for_a_stream_fails_once(
        json_anthropic: AnthropicWireServer, anthropic_model: AnthropicModel,
        body: bytes) -> None:
    for _ in range(5):
        json_anthropic.reply_raw(200, body)
    agent = keel.Agent(model=anthropic_model)
    with pytest.raises(ModelError) as info:
        async for _ in agent.stream("hi", store=keel.MemoryStore()):
            pass
    assert info.value.retryable is False
    assert "instead of an event stream" in str(info.value)
    assert len(json_anthropic.requests) == 1


@pytest.mark.parametrize(("error_type", "retryable"), [("overloaded_error", True),
                                                       ("invalid_request_error", False)])
async def test_anthropic_error_object_for_a_stream(json_anthropic: AnthropicWireServer,
                                                   anthropic_model: AnthropicModel,
                                                   error_type: str, retryable: bool) -> None:
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": "busy"}}
    json_anthropic.reply_raw(200, json.dumps(body).encode())
    with pytest.raises(ModelError) as info:
        await drain(anthropic_model)
    assert info.value.retryable is retryable
    assert f"answered the streamed request with {error_type}: busy" in str(info.value)
