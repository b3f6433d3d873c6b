"""The OpenAI-compatible adapter against a real HTTP server speaking the wire format.

Nothing here mocks the SDK: ``OpenAIModel`` talks HTTP to :class:`OpenAIWireServer` on
127.0.0.1, so the SDK, its HTTP client and keel's mapping all run for real.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence

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
from keel.models._http import retry_after_seconds
from keel.models._openai import OpenAIModel
from keel.testing._wire_openai import OpenAIWireServer

KEY = "sk-test-0123456789abcdefghijklmnop"
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]},
)
HELLO = [Message.user("hello")]


@pytest.fixture
def server() -> Iterator[OpenAIWireServer]:
    with OpenAIWireServer(chunk_size=3) as srv:
        yield srv
        assert srv.errors == []


@pytest.fixture
async def model(server: OpenAIWireServer) -> AsyncIterator[OpenAIModel]:
    adapter = OpenAIModel("gpt-4o-mini", base_url=server.base_url, api_key=KEY, timeout=5.0)
    yield adapter
    await adapter.aclose()


async def collect(model: OpenAIModel, messages: Sequence[Message] = HELLO,
                  tools: Sequence[ToolSpec] = (),
                  settings: ModelSettings | None = None) -> list[ModelStreamEvent]:
    return [event async for event in model.stream(messages, tools, settings)]


async def stream_until_error(model: OpenAIModel) -> tuple[list[ModelStreamEvent], ModelError]:
    """Consume a stream that must fail; return the events seen before the error, and it."""
    events: list[ModelStreamEvent] = []

    async def drain() -> None:
        async for event in model.stream(HELLO):
            events.append(event)

    with pytest.raises(ModelError) as info:
        await drain()
    return events, info.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ requests


async def test_plain_text_reply(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_text("Hello there!")

    response = await model.request(HELLO)

    assert response.parts == (TextPart(text="Hello there!"),)
    assert response.finish_reason == "stop"
    assert response.model == f"openai:gpt-4o-mini@{server.base_url}" == model.name
    assert server.last_request["model"] == "gpt-4o-mini"
    assert server.last_request["messages"] == [{"role": "user", "content": "hello"}]


async def test_single_tool_call(server: OpenAIWireServer, model: OpenAIModel) -> None:
    [call_id] = server.reply_tool_calls([("get_weather", '{"city":"Paris"}')])

    response = await model.request(HELLO, [WEATHER])

    assert response.parts == (
        ToolCallPart(call_id=call_id, tool_name="get_weather", arguments='{"city":"Paris"}'),)
    assert response.finish_reason == "tool_calls"
    assert response.text == ""


async def test_parallel_tool_calls_keep_order_and_thought(server: OpenAIWireServer,
                                                          model: OpenAIModel) -> None:
    calls = [("get_weather", '{"city":"Paris"}', "call_a"),
             ("get_weather", '{"city":"Oslo"}', "call_b"),
             ("get_time", '{"tz":"UTC"}', "call_c")]
    server.reply_tool_calls(calls, text="Let me check both cities.")

    response = await model.request(HELLO, [WEATHER])

    assert response.parts == (
        TextPart(text="Let me check both cities."),
        *(ToolCallPart(call_id=cid, tool_name=name, arguments=args) for name, args, cid in calls),
    )


async def test_message_and_tool_mapping_on_the_wire(server: OpenAIWireServer,
                                                    model: OpenAIModel) -> None:
    conversation = [
        Message.system("You are terse."),
        Message.user("Weather in Paris and Oslo?"),
        Message(role="assistant", parts=(
            TextPart(text="Checking."),
            ToolCallPart(call_id="c1", tool_name="get_weather", arguments='{"city":"Paris"}'),
            ToolCallPart(call_id="c2", tool_name="get_weather", arguments='{"city":"Oslo"}'),
        )),
        Message(role="tool", parts=(
            ToolResultPart(call_id="c1", tool_name="get_weather", content="sunny"),
            ToolResultPart(call_id="c2", tool_name="get_weather", content="boom", is_error=True),
        )),
        Message.assistant("Paris is sunny."),
        Message.user("Thanks"),
    ]
    settings = ModelSettings(temperature=0.25, max_tokens=64, parallel_tool_calls=False,
                             extra={"seed": 7, "top_k": 3})
    server.reply_text("You're welcome.")

    await model.request(conversation, [WEATHER], settings)

    body = server.last_request
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "boom"},
        {"role": "assistant", "content": "Paris is sunny."},
        {"role": "user", "content": "Thanks"},
    ]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": WEATHER.parameters}}]
    assert body["parallel_tool_calls"] is False
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 64
    assert (body["seed"], body["top_k"]) == (7, 3)
    assert body.get("stream") in (None, False)


async def test_assistant_with_only_tool_calls_sends_null_content(
        server: OpenAIWireServer, model: OpenAIModel) -> None:
    turn = Message(role="assistant", parts=(
        ToolCallPart(call_id="c1", tool_name="get_weather", arguments="{}"),))
    server.reply_text("ok")

    await model.request([Message.user("hi"), turn], [WEATHER])

    assert server.last_request["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"}}]}


async def test_tool_options_are_omitted_without_tools(server: OpenAIWireServer,
                                                      model: OpenAIModel) -> None:
    server.reply_text("ok")

    await model.request(HELLO, (), ModelSettings(parallel_tool_calls=True))

    assert "tools" not in server.last_request
    assert "parallel_tool_calls" not in server.last_request
    assert "temperature" not in server.last_request


async def test_malformed_tool_arguments_pass_through_raw(server: OpenAIWireServer,
                                                         model: OpenAIModel) -> None:
    broken = '{"city": "Par'
    server.reply_tool_calls([("get_weather", broken, "c1")])
    server.reply_tool_calls([("get_weather", broken, "c1")])

    response = await model.request(HELLO, [WEATHER])
    events = await collect(model, tools=[WEATHER])

    assert response.tool_calls == [ToolCallPart(call_id="c1", tool_name="get_weather",
                                                arguments=broken)]
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response == response


async def test_adapter_does_not_retry(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_error(500)
    server.reply_text("second")

    with pytest.raises(ModelError):
        await model.request(HELLO)

    assert len(server.requests) == 1
    assert server.pending == 1


# ----------------------------------------------------------------------------- streaming


async def test_stream_text_matches_request(server: OpenAIWireServer,
                                           model: OpenAIModel) -> None:
    server.reply_text("Streaming works fine.", usage=(11, 6))
    server.reply_text("Streaming works fine.", usage=(11, 6))

    events = await collect(model)
    expected = await model.request(HELLO)

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == "Streaming works fine."
    assert [type(e) for e in events].count(ResponseDone) == 1
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response == expected
    assert server.requests[0]["stream"] is True
    assert server.requests[0]["stream_options"] == {"include_usage": True}


async def test_stream_parallel_tool_calls_interleave_and_match_request(
        server: OpenAIWireServer, model: OpenAIModel) -> None:
    calls = [("get_weather", '{"city":"Paris"}', "call_p"),
             ("get_weather", '{"city":"Oslo"}', "call_o"),
             ("get_time", '{"tz":"Europe/Oslo"}', "call_t")]
    server.reply_tool_calls(calls, text="Checking.")
    server.reply_tool_calls(calls, text="Checking.")

    events = await collect(model, tools=[WEATHER])
    expected = await model.request(HELLO, [WEATHER])

    call_deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    indices = [d.index for d in call_deltas]
    assert indices != sorted(indices), "fragments of parallel calls should interleave"
    assembled: dict[int, list[str]] = {}
    for delta in call_deltas:
        assembled.setdefault(delta.index, []).append(delta.arguments_delta)
    assert {i: "".join(parts) for i, parts in assembled.items()} == {
        i: args for i, (_, args, _) in enumerate(calls)}
    heads = {d.index: (d.call_id, d.tool_name) for d in call_deltas if d.call_id}
    assert heads == {i: (cid, name) for i, (name, _, cid) in enumerate(calls)}
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response == expected
    assert events[-1].response.finish_reason == "tool_calls"


async def test_stream_sends_parallel_flag_only_with_tools(server: OpenAIWireServer,
                                                          model: OpenAIModel) -> None:
    server.reply_text("a")
    server.reply_text("b")

    await collect(model, settings=ModelSettings(parallel_tool_calls=True))
    await collect(model, tools=[WEATHER], settings=ModelSettings(parallel_tool_calls=True))

    assert "parallel_tool_calls" not in server.requests[0]
    assert server.requests[1]["parallel_tool_calls"] is True


@pytest.mark.parametrize("abort", [True, False], ids=["connection-dropped", "clean-eof"])
async def test_truncated_stream_is_a_retryable_error(server: OpenAIWireServer,
                                                     model: OpenAIModel, abort: bool) -> None:
    server.reply_truncated_stream("The answer is forty-two", abort=abort)

    events, error = await stream_until_error(model)

    assert error.retryable is True
    assert error.model == model.name
    assert not any(isinstance(e, ResponseDone) for e in events)
    assert any(isinstance(e, TextDelta) for e in events)  # it really was cut mid-stream


async def test_truncated_json_body_is_a_retryable_error(server: OpenAIWireServer,
                                                        model: OpenAIModel) -> None:
    server.reply_truncated_stream("never complete")

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert info.value.retryable is True
    assert "broke off" in str(info.value)
    assert "unreachable" not in str(info.value)


def sse(*payloads: object) -> bytes:
    return b"".join(f"data: {json.dumps(p)}\n\n".encode() for p in payloads) + b"data: [DONE]\n\n"


async def test_stream_from_a_server_that_omits_indices_and_ids(
        server: OpenAIWireServer, model: OpenAIModel) -> None:
    """Some local servers send each tool call whole, without ``index`` or ``id``."""
    calls = [{"type": "function", "function": {"name": "get_weather", "arguments": a}}
             for a in ('{"city":"Paris"}', '{"city":"Oslo"}')]
    server.reply_raw(200, sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [calls[0]]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [calls[1]]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ), content_type="text/event-stream")
    server.reply_raw(200, json.dumps({"choices": [{"index": 0, "finish_reason": "tool_calls",
                                                   "message": {"role": "assistant",
                                                               "tool_calls": calls}}]}))

    events = await collect(model, tools=[WEATHER])
    expected = await model.request(HELLO, [WEATHER])

    assert [c.arguments for c in expected.tool_calls] == ['{"city":"Paris"}', '{"city":"Oslo"}']
    assert len({c.call_id for c in expected.tool_calls}) == 2
    assert isinstance(events[-1], ResponseDone)
    assert events[-1].response == expected


async def test_error_event_inside_a_stream(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_raw(200, sse(
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"error": {"message": "upstream overloaded", "type": "server_error"}},
    ), content_type="text/event-stream")

    events, error = await stream_until_error(model)

    assert events == [TextDelta(text="Hel")]
    assert error.retryable is True
    assert "upstream overloaded" in str(error)


async def test_garbage_chunk_inside_a_stream(server: OpenAIWireServer,
                                             model: OpenAIModel) -> None:
    server.reply_raw(200, b"data: {not json\n\n", content_type="text/event-stream")

    _, error = await stream_until_error(model)

    assert error.retryable is True


async def test_stream_maps_http_errors(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_error(429, headers={"Retry-After": "3"})

    _, error = await stream_until_error(model)

    assert (error.status, error.retryable, error.retry_after) == (429, True, 3.0)


# -------------------------------------------------------------------------------- errors


async def test_rate_limit_carries_retry_after(server: OpenAIWireServer,
                                              model: OpenAIModel) -> None:
    server.reply_error(429, headers={"Retry-After": "2"})

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    error = info.value
    assert error.status == 429
    assert error.retryable is True
    assert error.retry_after == 2.0
    assert error.model == model.name


async def test_retry_after_ms_header_wins(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_error(429, headers={"retry-after-ms": "1500", "Retry-After": "9"})

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert info.value.retry_after == 1.5


def test_retry_after_parsing() -> None:
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    http_date = retry_after_seconds({"retry-after": future})
    assert http_date is not None
    assert 25 <= http_date <= 31


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
async def test_server_errors_are_retryable(server: OpenAIWireServer, model: OpenAIModel,
                                           status: int) -> None:
    server.reply_error(status)

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert info.value.status == status
    assert info.value.retryable is True
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_client_errors_are_not_retryable(server: OpenAIWireServer, model: OpenAIModel,
                                               status: int) -> None:
    server.reply_error(status, f"problem {status}")

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert info.value.status == status
    assert info.value.retryable is False
    assert f"problem {status}" in str(info.value)


async def test_not_found_names_the_fix(server: OpenAIWireServer, model: OpenAIModel) -> None:
    server.reply_error(404, "The model `gpt-4o-mini` does not exist")

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert "model not found on this server" in str(info.value).lower()
    assert server.base_url in str(info.value)


async def test_auth_error_names_the_fix_and_hides_key(server: OpenAIWireServer,
                                                      model: OpenAIModel) -> None:
    masked = KEY[:7] + "*" * 20 + KEY[-4:]
    server.reply_error(401, f"Incorrect API key provided: {KEY}. Also seen as {masked}.",
                       code="invalid_api_key")

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    error = info.value
    assert (error.status, error.retryable) == (401, False)
    # A custom base URL: keel never reads OPENAI_API_KEY for it, so the fix is api_key=.
    assert "keel.resolve_model(..., api_key=...)" in str(error)
    assert "set the OPENAI_API_KEY" not in str(error)
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert masked not in str(error)
    assert KEY not in repr(model)


async def test_any_key_is_kept_out_of_error_messages(server: OpenAIWireServer) -> None:
    secret = "local-token-Zq81Xv"  # not shaped like a provider key: only exact scrubbing helps
    adapter = OpenAIModel("qwen2.5", base_url=server.base_url, api_key=secret)
    server.reply_error(403, f"token {secret} may not use qwen2.5")
    try:
        with pytest.raises(ModelError) as info:
            await adapter.request(HELLO)
    finally:
        await adapter.aclose()

    assert "qwen2.5" in str(info.value)
    assert secret not in str(info.value)
    assert server.request_headers[0]["authorization"] == f"Bearer {secret}"


@pytest.mark.parametrize(("body", "content_type"), [
    (b"not json", "application/json"),
    (b"<html>gateway says hi</html>", "text/html"),
    (b'{"object": "chat.completion", "choices": []}', "application/json"),
    (b'{"id": "x", "object": "chat.completion"}', "application/json"),
    (b'{"choices": [{"index": 0, "message": {"content": 42}}]}', "application/json"),
    (b'{"choices": [{"index": 0, "message": {"tool_calls": [{"id": "c"}]}}]}',
     "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b"null", "application/json"),
    (b'"just a string"', "application/json"),
], ids=["not-json", "html", "no-choices", "no-choices-key", "bad-content", "call-no-function",
        "not-utf8", "array", "null", "string"])
async def test_broken_200_body_is_a_retryable_error(server: OpenAIWireServer,
                                                    model: OpenAIModel, body: bytes,
                                                    content_type: str) -> None:
    server.reply_raw(200, body, content_type=content_type)

    with pytest.raises(ModelError) as info:
        await model.request(HELLO)

    assert info.value.retryable is True
    assert info.value.model == model.name
    assert info.value.status is None


async def test_settings_timeout_is_a_retryable_error(server: OpenAIWireServer,
                                                     model: OpenAIModel) -> None:
    server.reply_delay(3.0)
    started = time.monotonic()

    with pytest.raises(ModelError) as info:
        await model.request(HELLO, settings=ModelSettings(timeout=0.2))

    assert time.monotonic() - started < 2.0
    assert info.value.retryable is True
    assert "timed out" in str(info.value)


async def test_adapter_timeout_applies_to_streams(server: OpenAIWireServer) -> None:
    adapter = OpenAIModel("gpt-4o-mini", base_url=server.base_url, api_key=KEY, timeout=0.2)
    server.reply_delay(3.0)
    try:
        _, error = await stream_until_error(adapter)
    finally:
        await adapter.aclose()

    assert error.retryable is True
    assert "timed out" in str(error)


@pytest.mark.parametrize("streaming", [False, True], ids=["request", "stream"])
async def test_unreachable_server_names_the_url(streaming: bool) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    adapter = OpenAIModel("qwen2.5", base_url=url, api_key=KEY, timeout=5.0)
    attempt = collect(adapter) if streaming else adapter.request(HELLO)
    try:
        with pytest.raises(ModelError) as info:
            await attempt
    finally:
        await adapter.aclose()

    assert info.value.retryable is True
    assert url in str(info.value)
    assert "unreachable" in str(info.value)
    assert info.value.model == f"openai:qwen2.5@{url}"


# ------------------------------------------------------------------------- usage and cost


async def test_usage_and_cost_from_the_price_table(server: OpenAIWireServer,
                                                   model: OpenAIModel) -> None:
    server.reply_text("priced", usage=(1200, 345))
    server.reply_text("priced", usage=(1200, 345))

    response = await model.request(HELLO)
    streamed = (await collect(model))[-1]

    usage = response.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 1200, 345)
    assert usage.cost_usd == pytest.approx(1200 * 0.15 / 1e6 + 345 * 0.60 / 1e6)
    assert isinstance(streamed, ResponseDone)
    assert streamed.response.usage == usage


async def test_unpriced_model_costs_nothing_and_missing_usage_is_zero(
        server: OpenAIWireServer) -> None:
    adapter = OpenAIModel("qwen2.5", base_url=server.base_url, api_key="unused")
    server.reply_text("local", usage=(50, 7))
    server.reply_text("no usage reported", usage=None)
    try:
        priced = await adapter.request(HELLO)
        bare = await adapter.request(HELLO)
    finally:
        await adapter.aclose()

    assert (priced.usage.input_tokens, priced.usage.cost_usd) == (50, 0.0)
    assert (bare.usage.requests, bare.usage.total_tokens) == (1, 0)


# --------------------------------------------------------------------------- resolution


async def test_resolve_local_server_without_a_key(server: OpenAIWireServer) -> None:
    adapter = resolve_model(f"openai:qwen2.5@{server.base_url}", env={})
    server.reply_text("local hello")
    try:
        response = await adapter.request(HELLO)
    finally:
        await adapter.aclose()

    assert isinstance(adapter, OpenAIModel)
    assert response == ModelResponse(parts=(TextPart(text="local hello"),),
                                     usage=response.usage, model=adapter.name,
                                     finish_reason="stop")
    assert server.last_request["model"] == "qwen2.5"


def test_resolve_hosted_model_without_a_key_fails() -> None:
    with pytest.raises(MissingCredentials, match="OPENAI_API_KEY"):
        resolve_model("openai:gpt-4o-mini", env={})


def test_name_without_base_url() -> None:
    assert OpenAIModel("gpt-4o-mini", api_key=KEY).name == "openai:gpt-4o-mini"


async def test_aclose_is_idempotent_and_reopens(server: OpenAIWireServer,
                                                model: OpenAIModel) -> None:
    server.reply_text("one")
    server.reply_text("two")

    first = await model.request(HELLO)
    await model.aclose()
    await model.aclose()
    second = await model.request(HELLO)

    assert (first.text, second.text) == ("one", "two")


# ------------------------------------------------------------------------- the fake server


def test_wire_server_records_and_shuts_down_idle_connections() -> None:
    before = {t.ident for t in threading.enumerate()}
    with OpenAIWireServer() as srv:
        srv.reply_text("hi")
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("POST", "/v1/chat/completions",
                     body=json.dumps({"model": "m", "messages": []}),
                     headers={"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        started = time.monotonic()
    # the keep-alive connection is still open on our side; close() must not wait for it
    conn.close()

    assert time.monotonic() - started < 2.0
    assert reply["choices"][0]["message"]["content"] == "hi"
    assert srv.requests == [{"model": "m", "messages": []}]
    assert {t.ident for t in threading.enumerate()} - before == set()


def test_wire_server_without_script_answers_500() -> None:
    with OpenAIWireServer() as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", body=b"{}")
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()

    assert response.status == 500
    assert "no scripted reply" in body["error"]["message"]


async def test_env_key_is_never_sent_to_a_custom_base_url(server: OpenAIWireServer) -> None:
    real_key = "sk-proj-real-key-that-must-stay-home-000000"
    server.reply_text("hi")
    adapter = resolve_model(f"openai:qwen2.5@{server.base_url}", env={"OPENAI_API_KEY": real_key})
    try:
        await adapter.request([Message.user("hi")])
    finally:
        await adapter.aclose()
    sent = json.dumps(server.request_headers)
    assert real_key not in sent


async def test_reasoning_models_get_max_completion_tokens(server: OpenAIWireServer) -> None:
    server.reply_text("a")
    server.reply_text("b")
    for model in ("o4-mini", "gpt-4o-mini"):
        adapter = OpenAIModel(model, base_url=server.base_url, api_key="sk-test")
        try:
            await adapter.request([Message.user("hi")], settings=ModelSettings(max_tokens=50))
        finally:
            await adapter.aclose()
    reasoning, classic = server.requests[0], server.requests[1]
    assert reasoning["max_completion_tokens"] == 50 and "max_tokens" not in reasoning
    assert classic["max_tokens"] == 50 and "max_completion_tokens" not in classic
