"""The Anthropic adapter against a real HTTP server speaking the Messages API wire format.

No mocks: the official SDK talks over a socket to :class:`AnthropicWireServer`, and the tests
assert on what the adapter returns and on the request bodies the server recorded.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anthropic
import pytest

from keel.core import (
    Message,
    MissingCredentials,
    ModelError,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
)
from keel.models import resolve_model
from keel.models._anthropic import AnthropicModel
from keel.testing._wire_anthropic import AnthropicWireServer

KEY = "sk-ant-test-0000000000000000"
MODEL = "claude-haiku-4-5"
WEATHER = ToolSpec(
    name="get_weather", description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]})
HELLO = [Message.user("Hello")]


@pytest.fixture
def server() -> Iterator[AnthropicWireServer]:
    with AnthropicWireServer() as srv:
        yield srv


@pytest.fixture
async def model(server: AnthropicWireServer) -> AsyncIterator[AnthropicModel]:
    adapter = AnthropicModel(MODEL, base_url=server.base_url, api_key=KEY)
    yield adapter
    await adapter.aclose()


async def collect(adapter: AnthropicModel, messages: list[Message] = HELLO,
                  tools: list[ToolSpec] | None = None,
                  settings: ModelSettings | None = None) -> list[ModelStreamEvent]:
    return [event async for event in adapter.stream(messages, tools or [], settings)]


def final(events: list[ModelStreamEvent]) -> ModelResponse:
    done = [e for e in events if isinstance(e, ResponseDone)]
    assert len(done) == 1
    assert events[-1] is done[0]
    return done[0].response


async def fails(adapter: AnthropicModel, *, stream: bool = False,
                settings: ModelSettings | None = None) -> ModelError:
    """Run one exchange that must fail, and return the ModelError (no partial result)."""
    seen: list[ModelStreamEvent] = []

    async def exchange() -> None:
        if stream:
            async for event in adapter.stream(HELLO, [], settings):
                seen.append(event)
        else:
            await adapter.request(HELLO, [], settings)

    with pytest.raises(ModelError) as info:
        await exchange()
    assert not any(isinstance(e, ResponseDone) for e in seen)
    assert info.value.model == adapter.name
    return info.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----------------------------------------------------------------------------- replies


async def test_text_reply(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_text("Hi there!", input_tokens=12, output_tokens=4)

    response = await model.request(HELLO)

    assert response.parts == (TextPart(text="Hi there!"),)
    assert response.finish_reason == "end_turn"
    assert response.model == f"anthropic:{MODEL}@{server.base_url}" == model.name
    assert (response.usage.requests, response.usage.input_tokens,
            response.usage.output_tokens) == (1, 12, 4)
    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.api_key == KEY
    assert "anthropic-version" in sent.headers
    assert sent.body["model"] == MODEL
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert "stream" not in sent.body or sent.body["stream"] is False


async def test_tool_use_reply(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_tool_use([("get_weather", {"city": "Paris"})], text="Let me check.")

    response = await model.request(HELLO, [WEATHER])

    assert response.finish_reason == "tool_use"
    assert response.text == "Let me check."
    [call] = response.tool_calls
    assert call.tool_name == "get_weather"
    assert call.call_id.startswith("toolu_")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert isinstance(response.parts[0], TextPart)  # block order is kept


async def test_several_tool_use_blocks_in_one_turn(model: AnthropicModel,
                                                   server: AnthropicWireServer) -> None:
    server.reply_tool_use([("get_weather", {"city": "Paris"}),
                           ("get_weather", {"city": "Oslo"}),
                           ("get_time", {"tz": "UTC", "format": {"h24": True}})])

    response = await model.request(HELLO, [WEATHER])

    calls = response.tool_calls
    assert [c.tool_name for c in calls] == ["get_weather", "get_weather", "get_time"]
    assert [json.loads(c.arguments) for c in calls] == [
        {"city": "Paris"}, {"city": "Oslo"}, {"tz": "UTC", "format": {"h24": True}}]
    assert len({c.call_id for c in calls}) == 3
    assert response.text == ""


# ----------------------------------------------------------------------------- mapping


async def test_request_mapping(model: AnthropicModel, server: AnthropicWireServer) -> None:
    conversation = [
        Message.system("You are terse."),
        Message.user("Weather in Paris and Oslo?"),
        Message.system("Use metric units."),
        Message(role="assistant", parts=(
            TextPart(text="Checking both."),
            ToolCallPart(call_id="toolu_1", tool_name="get_weather", arguments='{"city":"Paris"}'),
            ToolCallPart(call_id="toolu_2", tool_name="get_weather", arguments='{"city": Oslo'),
        )),
        Message(role="tool", parts=(
            ToolResultPart(call_id="toolu_1", tool_name="get_weather", content="18C sunny"),)),
        Message(role="tool", parts=(
            ToolResultPart(call_id="toolu_2", tool_name="get_weather",
                           content="arguments are not valid JSON", is_error=True),)),
        Message.user("Also, be brief."),
        Message.assistant("Paris 18C."),
        Message.assistant("Oslo unknown."),
    ]
    bare = ToolSpec(name="ping", description="No arguments.")
    server.reply_text("ok")

    await model.request(conversation, [WEATHER, bare])

    body = server.requests[0].body
    assert body["system"] == "You are terse.\n\nUse metric units."
    assert body["max_tokens"] == 4096
    assert "temperature" not in body
    assert "tool_choice" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant"]
    assistant = body["messages"][1]["content"]
    assert assistant == [
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
    ]
    # Both tool messages and the next user text merge into one user turn, results first.
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny",
         "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_2",
         "content": "arguments are not valid JSON", "is_error": True},
        {"type": "text", "text": "Also, be brief."},
    ]
    assert body["messages"][3]["content"] == [{"type": "text", "text": "Paris 18C."},
                                              {"type": "text", "text": "Oslo unknown."}]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather for a city.",
         "input_schema": WEATHER.parameters},
        {"name": "ping", "description": "No arguments.",
         "input_schema": {"type": "object", "properties": {}}},
    ]


async def test_tool_results_lead_their_user_turn(model: AnthropicModel,
                                                 server: AnthropicWireServer) -> None:
    conversation = [
        Message.user("Weather?"),
        Message(role="assistant", parts=(
            ToolCallPart(call_id="toolu_1", tool_name="get_weather", arguments="{}"),)),
        Message.user("(take your time)"),
        Message(role="tool", parts=(
            ToolResultPart(call_id="toolu_1", tool_name="get_weather", content="sunny"),)),
    ]
    server.reply_text("ok")

    await model.request(conversation, [WEATHER])

    last = server.requests[0].body["messages"][-1]
    assert last["role"] == "user"
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]


async def test_no_system_and_no_tools_are_omitted(model: AnthropicModel,
                                                  server: AnthropicWireServer) -> None:
    server.reply_text("ok")
    await model.request(HELLO)
    body = server.requests[0].body
    assert "system" not in body
    assert "tools" not in body


async def test_settings_mapping(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_text("ok")
    settings = ModelSettings(max_tokens=256, temperature=0.2, parallel_tool_calls=False,
                             extra={"top_k": 5, "metadata": {"user_id": "u-1"}})

    await model.request(HELLO, [WEATHER], settings)

    body = server.requests[0].body
    assert body["max_tokens"] == 256
    assert body["temperature"] == 0.2
    assert body["top_k"] == 5
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# --------------------------------------------------------------------------- streaming


async def test_stream_text(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_text("Streaming works fine.", input_tokens=7, output_tokens=6)
    server.reply_text("Streaming works fine.", input_tokens=7, output_tokens=6)

    events = await collect(model)
    expected = await model.request(HELLO)

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1  # really streamed, not one lump
    assert "".join(d.text for d in deltas) == "Streaming works fine."
    assert final(events) == expected
    assert server.requests[0].body["stream"] is True


async def test_stream_tool_use_equals_request(model: AnthropicModel,
                                              server: AnthropicWireServer) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("get_weather", {"city": "Paris", "units": ["C", "F"]}, "toolu_A"),
        ("get_weather", {"city": "Zürich"}, "toolu_B")]
    server.reply_tool_use(calls, text="Checking.")
    server.reply_tool_use(calls, text="Checking.")

    events = await collect(model, tools=[WEATHER])
    expected = await model.request(HELLO, [WEATHER])

    assert final(events) == expected
    assert [c.call_id for c in expected.tool_calls] == ["toolu_A", "toolu_B"]
    tool_deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    for index, (name, tool_input, call_id) in enumerate(calls):
        mine = [d for d in tool_deltas if d.index == index]
        assert (mine[0].call_id, mine[0].tool_name) == (call_id, name)
        assert all(d.call_id is None and d.tool_name is None for d in mine[1:])
        assert len(mine) > 2  # the input arrived in fragments
        assert json.loads("".join(d.arguments_delta for d in mine)) == tool_input


async def test_truncated_stream_is_a_retryable_error(model: AnthropicModel,
                                                     server: AnthropicWireServer) -> None:
    server.reply_truncated_stream(abort=True)  # connection dropped mid-body
    server.reply_truncated_stream(abort=False)  # body ends cleanly, without message_stop

    dropped = await fails(model, stream=True)
    cut = await fails(model, stream=True)

    assert dropped.retryable and cut.retryable
    assert "message_stop" in str(cut)


async def test_stream_error_event(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_stream_error("overloaded_error", "Overloaded")
    server.reply_stream_error("invalid_request_error", "prompt is too long")

    overloaded = await fails(model, stream=True)
    invalid = await fails(model, stream=True)

    assert overloaded.retryable
    assert "overloaded_error" in str(overloaded)
    assert not invalid.retryable
    assert "prompt is too long" in str(invalid)


async def test_stream_http_error_before_start(model: AnthropicModel,
                                              server: AnthropicWireServer) -> None:
    server.reply_error(429, headers={"retry-after": "3"})
    error = await fails(model, stream=True)
    assert (error.status, error.retryable, error.retry_after) == (429, True, 3.0)


async def test_stream_of_garbage_is_a_retryable_error(model: AnthropicModel,
                                                      server: AnthropicWireServer) -> None:
    server.reply_raw(200, b"this is not an event stream", content_type="text/event-stream")
    error = await fails(model, stream=True)
    assert error.retryable
    assert "message_start" in str(error)


async def test_abandoned_stream_releases_the_connection(model: AnthropicModel,
                                                        server: AnthropicWireServer) -> None:
    server.reply_text("a fairly long answer that the caller stops reading early")
    server.reply_text("next")

    events = model.stream(HELLO)
    first = await anext(events)
    await events.aclose()  # type: ignore[attr-defined]

    assert isinstance(first, TextDelta)
    assert (await model.request(HELLO)).text == "next"


# ------------------------------------------------------------------------------ errors


async def test_429_with_retry_after(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_error(429, headers={"retry-after": "2"})
    error = await fails(model)
    assert (error.status, error.retryable, error.retry_after) == (429, True, 2.0)


async def test_retry_after_as_http_date(model: AnthropicModel,
                                        server: AnthropicWireServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    server.reply_error(429, headers={"retry-after": format_datetime(when, usegmt=True)})
    error = await fails(model)
    assert error.retry_after is not None
    assert 25.0 <= error.retry_after <= 31.0


@pytest.mark.parametrize(("status", "retryable"), [
    (529, True), (500, True), (503, True), (408, True), (409, True),
    (400, False), (403, False), (413, False), (422, False),
])
async def test_status_retryability(model: AnthropicModel, server: AnthropicWireServer,
                                   status: int, retryable: bool) -> None:
    server.reply_error(status)
    error = await fails(model)
    assert (error.status, error.retryable) == (status, retryable)
    assert error.retry_after is None


@pytest.mark.parametrize("key", [KEY, "local-secret-4711"])
async def test_401_names_the_fix_and_hides_the_key(server: AnthropicWireServer,
                                                       key: str) -> None:
    server.reply_error(401, message=f"invalid x-api-key: {key}")  # even if the server echoes it
    adapter = AnthropicModel(MODEL, base_url=server.base_url, api_key=key)
    try:
        error = await fails(adapter)
    finally:
        await adapter.aclose()

    assert (error.status, error.retryable) == (401, False)
    # A custom base URL: keel never reads ANTHROPIC_API_KEY for it, so the fix is api_key=.
    assert "keel.resolve_model(..., api_key=...)" in str(error)
    assert "set the ANTHROPIC_API_KEY" not in str(error)
    for text in (str(error), repr(error), error.message, repr(error.args)):
        assert key not in text


async def test_404_says_model_not_found(model: AnthropicModel,
                                        server: AnthropicWireServer) -> None:
    server.reply_error(404, message=f"model: {MODEL}")
    error = await fails(model)
    assert (error.status, error.retryable) == (404, False)
    assert "not found" in str(error)
    assert MODEL in str(error)


async def test_html_error_page(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_raw(502, b"<html>Bad Gateway</html>", content_type="text/html")
    error = await fails(model)
    assert (error.status, error.retryable) == (502, True)


@pytest.mark.parametrize(("body", "content_type"), [
    (b"not json", "application/json"),
    (b"not json", "text/plain"),
    (b"{}", "application/json"),
    (b'{"content": "nope", "usage": {}}', "application/json"),
])
async def test_broken_200_body_is_retryable(model: AnthropicModel, server: AnthropicWireServer,
                                            body: bytes, content_type: str) -> None:
    server.reply_raw(200, body, content_type=content_type)
    error = await fails(model)
    assert error.retryable
    assert error.status is None
    assert "malformed" in str(error)


@pytest.mark.parametrize("stream", [False, True])
async def test_timeout(server: AnthropicWireServer, stream: bool) -> None:
    server.reply_delay(5.0)
    adapter = AnthropicModel(MODEL, base_url=server.base_url, api_key=KEY, timeout=0.3)
    started = time.monotonic()
    try:
        error = await fails(adapter, stream=stream)
    finally:
        await adapter.aclose()
    assert time.monotonic() - started < 3.0
    assert error.retryable
    assert "timed out" in str(error)


async def test_per_request_timeout_overrides_the_default(model: AnthropicModel,
                                                         server: AnthropicWireServer) -> None:
    server.reply_delay(5.0)
    error = await fails(model, settings=ModelSettings(timeout=0.3))
    assert error.retryable
    assert "timed out after 0.3s" in str(error)


async def test_unreachable_port() -> None:
    base_url = f"http://127.0.0.1:{free_port()}"
    adapter = AnthropicModel(MODEL, base_url=base_url, api_key=KEY)
    try:
        error = await fails(adapter)
    finally:
        await adapter.aclose()
    assert error.retryable
    assert error.status is None
    assert base_url in str(error)
    assert "unreachable" in str(error)


async def test_key_is_sent_but_never_logged(model: AnthropicModel, server: AnthropicWireServer,
                                            caplog: pytest.LogCaptureFixture) -> None:
    server.reply_text("ok")
    server.reply_error(401)
    with caplog.at_level(logging.DEBUG):
        await model.request(HELLO)
        await fails(model)
    assert [r.api_key for r in server.requests] == [KEY, KEY]
    assert caplog.records  # the SDK did log at debug level...
    assert KEY not in caplog.text  # ...but never the key


# ------------------------------------------------------------------------ usage, cost


async def test_usage_and_cost(model: AnthropicModel, server: AnthropicWireServer) -> None:
    server.reply_text("priced", input_tokens=1000, output_tokens=2000)
    server.reply_text("priced", input_tokens=1000, output_tokens=2000)

    response = await model.request(HELLO)
    streamed = final(await collect(model))

    for usage in (response.usage, streamed.usage):
        assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 1000, 2000)
        # claude-haiku-4-5: $1.00 / $5.00 per million input / output tokens
        assert usage.cost_usd == pytest.approx((1000 * 1.00 + 2000 * 5.00) / 1e6)


async def test_unlisted_model_costs_nothing(server: AnthropicWireServer) -> None:
    server.reply_text("ok", input_tokens=1000, output_tokens=1000)
    adapter = AnthropicModel("claude-imaginary-9", base_url=server.base_url, api_key=KEY)
    try:
        response = await adapter.request(HELLO)
    finally:
        await adapter.aclose()
    assert response.usage.input_tokens == 1000
    assert response.usage.cost_usd == 0.0


# ---------------------------------------------------------------------- ids, lifecycle


def test_resolve_without_key_raises_missing_credentials() -> None:
    with pytest.raises(MissingCredentials, match="ANTHROPIC_API_KEY"):
        resolve_model(f"anthropic:{MODEL}", env={})


async def test_resolve_with_base_url_reaches_the_server(server: AnthropicWireServer) -> None:
    server.reply_text("resolved")
    adapter = resolve_model(f"anthropic:{MODEL}@{server.base_url}", api_key=KEY,
                            env={"ANTHROPIC_API_KEY": "sk-ant-real-key-never-leaves-00000000"})
    try:
        assert isinstance(adapter, AnthropicModel)
        assert adapter.name == f"anthropic:{MODEL}@{server.base_url}"
        response = await adapter.request(HELLO)
    finally:
        await adapter.aclose()
    assert response.text == "resolved"
    assert server.requests[0].api_key == KEY


def test_name_without_base_url() -> None:
    adapter = AnthropicModel(MODEL, api_key=KEY)
    assert adapter.name == f"anthropic:{MODEL}"
    assert KEY not in repr(adapter)


async def test_aclose_is_idempotent_and_spares_a_callers_client(
        server: AnthropicWireServer) -> None:
    owned = AnthropicModel(MODEL, base_url=server.base_url, api_key=KEY)
    await owned.aclose()
    await owned.aclose()
    assert owned._client.is_closed()

    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
    try:
        borrowed = AnthropicModel(MODEL, api_key=KEY, client=client)
        await borrowed.aclose()
        assert not client.is_closed()
        server.reply_text("still open")
        assert (await borrowed.request(HELLO)).text == "still open"
    finally:
        await client.close()


async def test_unscripted_request_gets_a_clear_error(model: AnthropicModel,
                                                     server: AnthropicWireServer) -> None:
    error = await fails(model)
    assert error.status == 500
    assert "no scripted reply" in str(error)


def test_server_shuts_down_cleanly() -> None:
    before = set(threading.enumerate())
    with AnthropicWireServer() as srv:
        srv.reply_delay(30.0)
        with socket.create_connection(("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1]))) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            deadline = time.monotonic() + 5
            while not srv.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
    assert srv.requests  # the delayed request was in flight when the server closed...
    assert time.monotonic() - started < 5.0  # ...and closing did not wait out the delay
    for thread in set(threading.enumerate()) - before:  # a handler may still be unwinding
        thread.join(timeout=5)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
