"""The Anthropic adapter: keel messages <-> the Messages API, through the official SDK.

Mapping (keel -> Anthropic):

* ``system`` messages -> the ``system`` parameter (texts joined by a blank line);
* ``user`` / ``assistant`` messages -> content blocks (``text``, ``tool_use``);
* ``tool`` messages -> a ``user`` message of ``tool_result`` blocks;
* consecutive messages with the same Anthropic role are merged (the API requires user and
  assistant turns to alternate), and in a user turn the ``tool_result`` blocks come first.

The SDK never retries (``max_retries=0``): keel's reliability layer does, journaled and
budgeted. Every failure leaves this module as a :class:`keel.ModelError` with ``status``,
``retryable`` and ``retry_after`` filled in where known; SDK exceptions never escape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import anthropic
import pydantic
from anthropic.types import (
    AssistantMessageParam,
    InputJSONDelta,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    TextBlockParam,
    ToolChoiceAutoParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
    UserMessageParam,
)
from anthropic.types import Message as SDKMessage
from anthropic.types import TextDelta as SDKTextDelta

from keel.core import (
    REDACTED,
    ContextTooLong,
    Message,
    ModelError,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    Part,
    ResponseDone,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolSpec,
    redact_text,
)
from keel.models._base import Model, response_as_deltas
from keel.models._http import is_json, is_transport_error, retry_after_seconds
from keel.models._info import model_info
from keel.models._keys import is_official_host, key_fix

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "AnthropicModel",
    "auth_headers",
    "to_anthropic_messages",
    "to_anthropic_tools",
]

#: ``max_tokens`` is required by the Messages API; this is sent when settings leave it unset.
DEFAULT_MAX_TOKENS = 4096

#: The ``anthropic-version`` the Messages API documents; sent to servers other than
#: Anthropic's own (which get the SDK's version).
DOCUMENTED_API_VERSION = "2023-06-01"

# Error types the API reports in an SSE ``error`` event, and the HTTP status each one has when
# it is returned before the stream starts. Used to decide whether a mid-stream error is worth
# retrying; unknown types are treated as transient server trouble.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_Block: TypeAlias = TextBlockParam | ToolUseBlockParam | ToolResultBlockParam
_Role: TypeAlias = Literal["user", "assistant"]


# ------------------------------------------------------------------------ request mapping


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[MessageParam]]:
    """Map keel messages to the ``system`` text and the alternating ``messages`` list."""
    system: list[str] = []
    turns: list[tuple[_Role, list[_Block]]] = []
    for message in messages:
        if message.role == "system":
            system.extend(p.text for p in message.parts if isinstance(p, TextPart) and p.text)
            continue
        role: _Role = "assistant" if message.role == "assistant" else "user"
        blocks = [block for part in message.parts if (block := _to_block(part)) is not None]
        if not blocks:
            continue  # the API rejects empty content; an empty message carries nothing anyway
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    params: list[MessageParam] = []
    for role, blocks in turns:
        if role == "assistant":
            params.append(AssistantMessageParam(role="assistant", content=blocks))
        else:
            # The API wants a user turn's tool_result blocks before any text.
            ordered = sorted(blocks, key=lambda b: b["type"] != "tool_result")
            params.append(UserMessageParam(role="user", content=ordered))
    return "\n\n".join(system), params


def _to_block(part: Part) -> _Block | None:
    if isinstance(part, TextPart):
        return TextBlockParam(type="text", text=part.text) if part.text else None
    if isinstance(part, ToolCallPart):
        return ToolUseBlockParam(type="tool_use", id=part.call_id, name=part.tool_name,
                                 input=_arguments_object(part.arguments))
    return ToolResultBlockParam(type="tool_result", tool_use_id=part.call_id,
                                content=part.content, is_error=part.is_error)


def _arguments_object(arguments: str) -> dict[str, object]:
    """The recorded arguments of a past tool call, as the JSON object ``tool_use.input``
    must be.

    A model can produce malformed arguments; keel records them verbatim and the tool seam
    answers with an error ``tool_result``. The API, however, rejects a ``tool_use`` whose input
    is not an object, which would make the whole conversation unsendable. So such a call is
    sent with ``{}`` and the conversation goes on: the paired error result still tells the
    model what was wrong with its call.
    """
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_anthropic_tools(tools: Sequence[ToolSpec]) -> list[ToolParam]:
    """Map tool specs to the API's tool definitions."""
    return [
        ToolParam(name=spec.name, description=spec.description,
                  input_schema=spec.parameters or {"type": "object", "properties": {}})
        for spec in tools
    ]


@dataclass(frozen=True, slots=True)
class _Call:
    """Everything one ``messages.create`` call sends, built once for both paths."""

    system: str
    messages: list[MessageParam]
    tools: list[ToolParam]
    max_tokens: int
    timeout: float
    extra_body: dict[str, Any]
    disable_parallel: bool


# ----------------------------------------------------------------------- response mapping


def _arguments_text(tool_input: object) -> str:
    """The one normalisation both paths apply to a tool call's input: ``json.dumps`` of the
    parsed object, so a streamed call and a non-streamed one produce identical arguments."""
    return json.dumps(tool_input)


def _streamed_arguments(raw: str, start_input: object) -> str:
    if not raw.strip():
        return _arguments_text(start_input if start_input is not None else {})
    try:
        return _arguments_text(json.loads(raw))
    except ValueError:
        return raw  # keep malformed JSON verbatim: the tool seam reports it to the model


class _MalformedResponse(ValueError):
    """The endpoint answered 200 with something that is not a Messages API message."""


def _parts_from_content(content: object) -> list[Part]:
    if not isinstance(content, list):
        raise _MalformedResponse("'content' is not a list")
    parts: list[Part] = []
    for block in content:
        if isinstance(block, TextBlock):
            text = getattr(block, "text", None)
            if not isinstance(text, str):
                raise _MalformedResponse("a text block has no text")
            if text:
                parts.append(TextPart(text=text))
        elif isinstance(block, ToolUseBlock):
            call_id, name = getattr(block, "id", None), getattr(block, "name", None)
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _MalformedResponse("a tool_use block has no id or name")
            parts.append(ToolCallPart(call_id=call_id, tool_name=name,
                                      arguments=_arguments_text(getattr(block, "input", {}))))
        # Other block kinds (thinking, server tools) have no keel part and are skipped.
    return parts


def _tokens(usage: object, name: str) -> int:
    value = getattr(usage, name, None)
    if not isinstance(value, int):
        raise _MalformedResponse(f"usage has no {name}")
    return value


@dataclass
class _StreamedBlock:
    kind: str
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    tool_name: str = ""
    tool_index: int = 0
    start_input: object = None


@dataclass
class _StreamState:
    """Assembles the raw SSE events of one streamed message."""

    blocks: dict[int, _StreamedBlock] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    started: bool = False
    stopped: bool = False
    n_tools: int = 0

    def feed(self, event: object) -> list[ModelStreamEvent]:
        if isinstance(event, RawMessageStartEvent):
            self.started = True
            self.input_tokens = _tokens(event.message.usage, "input_tokens")
            output = getattr(event.message.usage, "output_tokens", None)
            self.output_tokens = output if isinstance(output, int) else 0
        elif isinstance(event, RawContentBlockStartEvent):
            return self._start_block(event)
        elif isinstance(event, RawContentBlockDeltaEvent):
            return self._delta(event)
        elif isinstance(event, RawMessageDeltaEvent):
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            # message_delta usage is cumulative; input_tokens appears there on newer APIs.
            self.output_tokens = _tokens(event.usage, "output_tokens")
            if isinstance(getattr(event.usage, "input_tokens", None), int):
                self.input_tokens = _tokens(event.usage, "input_tokens")
        elif isinstance(event, RawMessageStopEvent):
            self.stopped = True
        return []

    def _start_block(self, event: RawContentBlockStartEvent) -> list[ModelStreamEvent]:
        block = event.content_block
        if isinstance(block, ToolUseBlock):
            state = _StreamedBlock(kind="tool", call_id=block.id, tool_name=block.name,
                                   tool_index=self.n_tools, start_input=block.input)
            self.n_tools += 1
            self.blocks[event.index] = state
            return [ToolCallDelta(index=state.tool_index, call_id=state.call_id,
                                  tool_name=state.tool_name)]
        if isinstance(block, TextBlock):
            self.blocks[event.index] = _StreamedBlock(kind="text", text=[block.text])
            return [TextDelta(text=block.text)] if block.text else []
        self.blocks[event.index] = _StreamedBlock(kind="other")
        return []

    def _delta(self, event: RawContentBlockDeltaEvent) -> list[ModelStreamEvent]:
        state = self.blocks.get(event.index)
        if state is None:
            raise _MalformedResponse(f"delta for unknown content block {event.index}")
        delta = event.delta
        if isinstance(delta, SDKTextDelta) and state.kind == "text":
            state.text.append(delta.text)
            return [TextDelta(text=delta.text)] if delta.text else []
        if isinstance(delta, InputJSONDelta) and state.kind == "tool":
            state.text.append(delta.partial_json)
            if delta.partial_json:
                return [ToolCallDelta(index=state.tool_index, arguments_delta=delta.partial_json)]
        return []

    def parts(self) -> list[Part]:
        parts: list[Part] = []
        for _, state in sorted(self.blocks.items()):
            text = "".join(state.text)
            if state.kind == "text" and text:
                parts.append(TextPart(text=text))
            elif state.kind == "tool":
                parts.append(ToolCallPart(
                    call_id=state.call_id, tool_name=state.tool_name,
                    arguments=_streamed_arguments(text, state.start_input)))
        return parts


# --------------------------------------------------------------------------- error mapping


def _error_details(body: object) -> tuple[str, str]:
    """``(error.type, error.message)`` from an API error body, when it has them."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("type") or "error"), str(error.get("message") or "")
    if isinstance(body, str):
        return "error", body[:200]
    return "error", ""


def _is_retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def auth_headers(api_key: str, base_url: str | None) -> dict[str, str | anthropic.Omit]:
    """The documented authentication headers: ``x-api-key`` with the key, and no
    ``Authorization`` header.

    The installed SDK sends ``api_key`` as ``Authorization: Bearer``, which Anthropic-compatible
    servers that follow the API reference reject ("missing x-api-key header"), so the headers
    are set explicitly. Servers other than Anthropic's own also get the documented
    ``anthropic-version``."""
    headers: dict[str, str | anthropic.Omit] = {"x-api-key": api_key,
                                                "Authorization": anthropic.omit}
    if not is_official_host("anthropic", base_url):
        headers["anthropic-version"] = DOCUMENTED_API_VERSION
    return headers


# ------------------------------------------------------------------------------ the model


class AnthropicModel(Model):
    """A Claude model behind the Anthropic Messages API (or any server speaking it).

    ``name`` is ``anthropic:MODEL`` (plus ``@BASE_URL`` when one is given). ``client`` lets a
    caller supply a configured :class:`anthropic.AsyncAnthropic`; such a client belongs to the
    caller and :meth:`aclose` leaves it open (``base_url``, ``api_key`` and ``timeout`` are
    then only used in names and messages).
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str,
                 timeout: float = 60.0, client: anthropic.AsyncAnthropic | None = None) -> None:
        self.model = model
        self.name = f"anthropic:{model}" + (f"@{base_url}" if base_url else "")
        self.timeout = timeout
        self._api_key = api_key
        self._owns_client = client is None
        if client is None:
            client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url,
                                              timeout=timeout, max_retries=0,
                                              # Omit values drop a header (typed as str only)
                                              default_headers=cast(Mapping[str, str],
                                                                   auth_headers(api_key, base_url)))
        self._client = client
        self.base_url = base_url or str(client.base_url)

    def __repr__(self) -> str:
        return f"AnthropicModel({self.name!r})"

    # ------------------------------------------------------------------------- requests

    def _prepare(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                 settings: ModelSettings | None) -> _Call:
        settings = settings or ModelSettings()
        system, wire_messages = to_anthropic_messages(messages)
        extra: dict[str, Any] = {}
        if settings.temperature is not None:
            # The SDK's create() has no temperature argument; the API still accepts the field.
            extra["temperature"] = settings.temperature
        extra.update(settings.extra)
        return _Call(
            system=system, messages=wire_messages, tools=to_anthropic_tools(tools),
            max_tokens=settings.max_tokens or DEFAULT_MAX_TOKENS,
            timeout=settings.timeout if settings.timeout is not None else self.timeout,
            extra_body=extra,
            disable_parallel=bool(tools) and settings.parallel_tool_calls is False)

    def _tool_choice(self, call: _Call) -> ToolChoiceAutoParam | anthropic.Omit:
        if call.disable_parallel:
            return ToolChoiceAutoParam(type="auto", disable_parallel_tool_use=True)
        return anthropic.omit

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        call = self._prepare(messages, tools, settings)
        try:
            reply: object = await self._client.messages.create(
                model=self.model, max_tokens=call.max_tokens, messages=call.messages,
                system=call.system or anthropic.omit, tools=call.tools or anthropic.omit,
                tool_choice=self._tool_choice(call), extra_body=call.extra_body or None,
                timeout=call.timeout)
        except Exception as exc:
            error = self._error(exc, call.timeout)
            if error is exc:
                raise
            raise error from exc
        try:
            return self._read_message(reply)
        except _MalformedResponse as exc:
            raise self._malformed(exc) from exc

    def _read_message(self, reply: object) -> ModelResponse:
        """A non-streamed Messages API message as a response, or :class:`_MalformedResponse`."""
        if not isinstance(reply, SDKMessage):
            raise _MalformedResponse("the body is not a JSON message")
        parts = _parts_from_content(getattr(reply, "content", None))
        usage = getattr(reply, "usage", None)
        tokens = _tokens(usage, "input_tokens"), _tokens(usage, "output_tokens")
        return self._response(parts, tokens, getattr(reply, "stop_reason", None))

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[ModelStreamEvent]:
        call = self._prepare(messages, tools, settings)
        state = _StreamState()
        try:
            events = await self._client.messages.create(
                model=self.model, max_tokens=call.max_tokens, messages=call.messages,
                system=call.system or anthropic.omit, tools=call.tools or anthropic.omit,
                tool_choice=self._tool_choice(call), extra_body=call.extra_body or None,
                timeout=call.timeout, stream=True)
            if is_json(events.response.headers):
                # The server ignored ``stream: true`` and sent one whole message as JSON.
                for out in response_as_deltas(await self._json_instead_of_stream(events)):
                    yield out
                return
            async with events:
                async for event in events:
                    for out in state.feed(event):
                        yield out
                    if state.stopped:
                        break
        except _MalformedResponse as exc:
            raise self._malformed(exc) from exc
        except Exception as exc:
            error = self._error(exc, call.timeout)
            if error is exc:
                raise
            raise error from exc
        if not state.stopped:
            raise self._fail(
                f"the stream from {self.name} ended before message_stop (the connection was "
                "closed mid-response); the partial response was discarded" if state.started
                else f"{self.name} answered without a message stream (no message_start); the "
                "endpoint may be faulty or not an Anthropic Messages API", retryable=True)
        tokens = state.input_tokens, state.output_tokens
        yield ResponseDone(response=self._response(state.parts(), tokens, state.stop_reason))

    async def _json_instead_of_stream(self, events: anthropic.AsyncStream[Any]) -> ModelResponse:
        """Read a JSON answer to a streamed request as the message it should be.

        A message that cannot be read here would read the same way on every retry, so that
        failure is not retryable; an error object is retryable as its type says."""
        async with events:
            raw = await events.response.aread()  # transport errors: mapped by the caller
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("type") == "error":
            kind, detail = _error_details(body)
            wire_status = _ERROR_TYPE_STATUS.get(kind)
            raise self._fail(
                f"{self.name} answered the streamed request with {kind}"
                + (f": {detail}" if detail else ""),
                status=wire_status,
                retryable=wire_status is None or _is_retryable_status(wire_status))
        try:
            if not isinstance(body, dict):
                raise _MalformedResponse("the body is not a JSON object")
            try:
                message = SDKMessage.model_validate(body)
            except pydantic.ValidationError as exc:
                raise _MalformedResponse("; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_url=False)[:3])) from exc
            return self._read_message(message)
        except _MalformedResponse as exc:
            raise self._fail(
                f"{self.name} answered a streamed request with a JSON body (content-type "
                f"application/json) instead of an event stream, and that body is not a "
                f"Messages API message ({exc}); the server would answer the same way again, "
                f"so this is not retried", retryable=False) from exc

    def _response(self, parts: list[Part], tokens: tuple[int, int],
                  stop_reason: object) -> ModelResponse:
        # Looked up per response, so prices registered after construction apply.
        usage = model_info("anthropic", self.model).usage(*tokens)
        return ModelResponse(parts=tuple(parts), usage=usage, model=self.name,
                             finish_reason=stop_reason if isinstance(stop_reason, str) else None)

    async def aclose(self) -> None:
        """Close the SDK client (unless the caller supplied it). Safe to call twice."""
        if self._owns_client:
            await self._client.close()

    # --------------------------------------------------------------------------- errors

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, REDACTED)
        return redact_text(text)

    def _fail(self, message: str, *, retryable: bool, status: int | None = None,
              retry_after: float | None = None) -> ModelError:
        return ModelError(self._scrub(message), status=status, retryable=retryable,
                          retry_after=retry_after, model=self.name)

    def _malformed(self, exc: Exception) -> ModelError:
        return self._fail(f"{self.name} returned a malformed response ({exc}); the endpoint may "
                          f"be faulty or not an Anthropic Messages API", retryable=True)

    def _error(self, exc: Exception, timeout: float) -> ModelError | Exception:
        """Map anything the SDK (or the HTTP stack under it) raised to a ModelError.

        Anything else (a bug on keel's side, not an endpoint failure) is returned unchanged,
        to be re-raised as is."""
        if isinstance(exc, anthropic.APITimeoutError) or (
                is_transport_error(exc) and "Timeout" in type(exc).__name__):
            return self._fail(f"request to {self.name} timed out after {timeout:g}s",
                              retryable=True)
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__ or exc
            return self._fail(
                f"the Anthropic API at {self.base_url} is unreachable "
                f"({type(cause).__name__}: {cause}); check the base URL and the network",
                retryable=True)
        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
            return self._malformed(exc)
        if is_transport_error(exc):
            return self._fail(
                f"the connection to {self.base_url} failed mid-response "
                f"({type(exc).__name__}: {exc}); the partial response was discarded",
                retryable=True)
        if isinstance(exc, anthropic.AnthropicError):
            return self._fail(f"Anthropic SDK error for {self.name}: {exc}", retryable=False)
        return exc

    def _status_error(self, exc: anthropic.APIStatusError) -> ModelError | ContextTooLong:
        status = exc.status_code
        kind, detail = _error_details(exc.body)
        detail = f": {detail}" if detail else ""
        if status < 400:
            # An SSE `error` event: the HTTP status was 200, the error type says what failed.
            wire_status = _ERROR_TYPE_STATUS.get(kind)
            return self._fail(
                f"{self.name} failed mid-stream with {kind}{detail}",
                retryable=wire_status is None or _is_retryable_status(wire_status))
        retry_after = retry_after_seconds(exc.response.headers)
        retryable = _is_retryable_status(status)
        if status == 400 and "prompt is too long" in detail.lower():
            return ContextTooLong(self._scrub(
                f"{self.name} refused the request as longer than the model's context window "
                f"(400 {kind}{detail})"), model=self.name)
        if status == 401:
            message = (f"{self.base_url} rejected the API key (401 {kind}{detail}): "
                       f"{key_fix('anthropic', self.base_url)}")
        elif status == 403:
            message = (f"the API key may not use {self.model!r} (403 {kind}{detail}); check "
                       "the key's workspace and permissions")
        elif status == 404:
            message = (f"model {self.model!r} not found at {self.base_url} (404 {kind}{detail});"
                       " check the model name")
        elif status == 429:
            message = f"rate limited by {self.name} (429 {kind}{detail})"
        elif status == 529:
            message = f"{self.name} is overloaded (529 {kind}{detail})"
        else:
            message = f"{self.name} returned HTTP {status} ({kind}{detail})"
        return self._fail(message, status=status, retryable=retryable, retry_after=retry_after)
