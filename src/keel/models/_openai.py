"""The OpenAI-compatible chat-completions adapter, built on the official ``openai`` SDK.

One adapter serves OpenAI itself and every server that speaks the same wire format (Ollama,
vLLM, llama.cpp server): point ``base_url`` at it. The SDK never retries (``max_retries=0``);
keel's reliability layer does, journaled and budgeted, driven by :class:`keel.ModelError`'s
``retryable`` / ``retry_after`` fields that this module fills in.

Responses are read defensively: local servers often omit fields, so a missing ``usage`` is
zero tokens and a missing tool-call id is synthesized, but a body with no usable choice is a
retryable :class:`keel.ModelError`, as is a stream that ends before a ``finish_reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
)

from keel.core import (
    REDACTED,
    ContextTooLong,
    Message,
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
    Usage,
    redact_text,
)
from keel.models._base import Model, response_as_deltas
from keel.models._http import is_json, is_transport_error, retry_after_seconds
from keel.models._info import model_info
from keel.models._keys import key_fix

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_MASKED_KEY = re.compile(r"\bsk-[A-Za-z0-9_*\-.]{4,}")
_MAX_DETAIL = 300
#: What the SDK raises (unwrapped) when a 200 body or a stream chunk is not JSON.
_UNDECODABLE = (json.JSONDecodeError, UnicodeDecodeError)


class _BadBody(Exception):
    """The server answered 200 but the body is not a usable chat completion."""


# --------------------------------------------------------------------------- the adapter


class OpenAIModel(Model):
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``model`` is the provider's model name (``gpt-4o-mini``, ``qwen2.5`` ...). ``base_url``
    selects another server (e.g. ``http://localhost:11434/v1`` for Ollama); without it the SDK
    default (OpenAI) is used. ``timeout`` is the default per-request timeout in seconds;
    ``ModelSettings.timeout`` overrides it per request. Pass ``client`` to reuse a configured
    ``openai.AsyncOpenAI``; such a client is the caller's to close (``aclose`` only closes a
    client this adapter created).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str,
        timeout: float = 60.0,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.name = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self._label = f"openai:{model}"  # error messages name the URL separately
        self.timeout = timeout
        self._api_key = api_key
        self._client = client
        self._owns_client = client is None

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r})"

    # ------------------------------------------------------------------------ plumbing

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client, created on first use with ``max_retries=0``."""
        if self._client is None:
            self._client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                              timeout=self.timeout, max_retries=0)
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client this adapter created. Safe to call more than once; a later
        request opens a fresh client."""
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.close()

    def _display_url(self) -> str:
        url = str(self._client.base_url) if self._client is not None else (
            self.base_url or DEFAULT_BASE_URL)
        return _public_url(url)

    def _params(self, messages: Sequence[Message], tools: Sequence[ToolSpec],
                settings: ModelSettings) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_wire_messages(messages),
            "timeout": self._timeout(settings),
        }
        if tools:
            params["tools"] = [to_wire_tool(t) for t in tools]
            if settings.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = settings.parallel_tool_calls
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.max_tokens is not None:
            params[model_info("openai", self.model).max_tokens_param] = settings.max_tokens
        if settings.extra:
            params["extra_body"] = dict(settings.extra)
        return params

    def _timeout(self, settings: ModelSettings) -> float:
        return settings.timeout if settings.timeout is not None else self.timeout

    def _usage(self, input_tokens: int, output_tokens: int) -> Usage:
        return model_info("openai", self.model).usage(input_tokens, output_tokens)

    # ------------------------------------------------------------------------ the seam

    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        settings = settings or ModelSettings()
        params = self._params(messages, tools, settings)
        try:
            completion: object = await self.client.chat.completions.create(**params,
                                                                           stream=False)
            parsed = parse_completion(completion)
        except openai.OpenAIError as exc:
            raise self._error(exc, timeout=params["timeout"]) from exc
        except (*_UNDECODABLE, _BadBody) as exc:
            raise self._bad_body(exc) from exc
        return ModelResponse(parts=parsed.parts(), usage=self._usage(*parsed.tokens),
                             model=self.name, finish_reason=parsed.finish_reason)

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        settings = settings or ModelSettings()
        params = self._params(messages, tools, settings)
        try:
            chunks = await self.client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True})
        except openai.OpenAIError as exc:
            raise self._error(exc, timeout=params["timeout"]) from exc
        except _UNDECODABLE as exc:
            raise self._bad_body(exc) from exc
        if is_json(chunks.response.headers):
            # The server ignored ``stream: true`` and sent one whole completion as JSON.
            response = await self._json_instead_of_stream(chunks)
            for event in response_as_deltas(response):
                yield event
            return
        acc = _StreamAccumulator()
        async with chunks:
            try:
                async for chunk in chunks:
                    for event in acc.feed(chunk):
                        yield event
            except openai.OpenAIError as exc:
                raise self._error(exc, timeout=params["timeout"], mid_stream=True) from exc
            except (*_UNDECODABLE, _BadBody) as exc:
                raise self._bad_body(exc, stream=True) from exc
        yield ResponseDone(response=self._stream_response(acc))

    async def _json_instead_of_stream(self, chunks: openai.AsyncStream[Any]) -> ModelResponse:
        """Read a JSON answer to a streamed request as the completion it should be.

        A completion that cannot be read here would read the same way on every retry, so that
        failure is not retryable; an error object or a lost connection may be transient."""
        async with chunks:
            try:
                raw = await chunks.response.aread()
            except Exception as exc:
                if not is_transport_error(exc):
                    raise
                raise ModelError(self._scrub(
                    f"{self._label}: the connection to {self._display_url()} broke off while "
                    f"reading its JSON answer ({_describe(exc)})"), retryable=True,
                    model=self.name) from exc
        try:
            body = json.loads(raw)
            if isinstance(body, dict) and "error" in body and "choices" not in body:
                raise ModelError(self._scrub(
                    f"{self._label}: {self._display_url()} answered the streamed request with "
                    f"an error: {_server_detail(body) or 'no detail'}"), retryable=True,
                    model=self.name)
            parsed = parse_completion(body)
        except (*_UNDECODABLE, _BadBody) as exc:
            raise ModelError(self._scrub(
                f"{self._label}: {self._display_url()} answered a streamed request with a JSON "
                f"body (content-type application/json) instead of an event stream, and that body "
                f"is not a valid chat completion ({_describe(exc)}); the server would answer "
                f"the same way again, so this is not retried"), retryable=False,
                model=self.name) from exc
        return ModelResponse(parts=parsed.parts(), usage=self._usage(*parsed.tokens),
                             model=self.name, finish_reason=parsed.finish_reason)

    def _stream_response(self, acc: _StreamAccumulator) -> ModelResponse:
        if acc.finish_reason is None:
            raise ModelError(
                f"{self._label}: the stream from {self._display_url()} ended before the model "
                "finished (no finish_reason); the response was truncated and is discarded",
                retryable=True, model=self.name)
        try:
            parts = acc.parts()
        except _BadBody as exc:
            raise self._bad_body(exc, stream=True) from exc
        return ModelResponse(parts=parts, usage=self._usage(*acc.tokens), model=self.name,
                             finish_reason=acc.finish_reason)

    # ------------------------------------------------------------------------ errors

    def _scrub(self, text: str) -> str:
        if len(self._api_key) >= 4:
            text = text.replace(self._api_key, REDACTED)
        return _MASKED_KEY.sub(REDACTED, redact_text(text))

    def _bad_body(self, exc: Exception, *, stream: bool = False) -> ModelError:
        what = "a stream chunk" if stream else "a response body"
        return ModelError(self._scrub(
            f"{self._label}: {self._display_url()} sent {what} that is not a valid chat "
            f"completion ({_describe(exc)})"), retryable=True, model=self.name)

    def _error(self, exc: openai.OpenAIError, *, timeout: float,
               mid_stream: bool = False) -> ModelError | ContextTooLong:
        url = self._display_url()
        if isinstance(exc, openai.APITimeoutError):
            message = (f"{self._label}: request to {url} timed out after {timeout:g}s; raise the "
                       "timeout (ModelSettings.timeout) or check the server's load")
            return ModelError(message, retryable=True, model=self.name)
        if isinstance(exc, openai.APIConnectionError):
            cause = _describe(exc.__cause__) if exc.__cause__ is not None else exc.message
            if mid_stream:
                message = f"{self._label}: the connection to {url} was lost mid-stream ({cause})"
            elif _broke_off(exc.__cause__):
                message = (f"{self._label}: the connection to {url} broke off before the "
                           f"response was complete ({cause})")
            else:
                message = (f"{self._label}: the model server at {url} is unreachable ({cause}); "
                           "check that it is running and that the base URL is right")
            return ModelError(self._scrub(message), retryable=True, model=self.name)
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, url)
        if isinstance(exc, openai.APIError):  # an error event inside a stream, a bad schema
            return ModelError(self._scrub(f"{self._label}: {url} reported an error: "
                                          f"{_server_detail(exc.body) or exc.message}"),
                              retryable=True, model=self.name)
        return ModelError(self._scrub(f"{self._label}: the OpenAI client failed: {exc}"),
                          retryable=False, model=self.name)

    def _status_error(self, exc: openai.APIStatusError,
                      url: str) -> ModelError | ContextTooLong:
        status = exc.status_code
        retryable = status in _RETRYABLE_STATUSES or status >= 500
        detail = _server_detail(exc.body) or exc.response.reason_phrase or "no detail"
        if status == 400 and (getattr(exc, "code", None) == "context_length_exceeded"
                              or "maximum context length" in detail.lower()):
            return ContextTooLong(self._scrub(
                f"{self._label}: {url} refused the request as longer than the model's context "
                f"window (HTTP 400 context_length_exceeded: {detail.rstrip('. ')})"),
                model=self.name)
        message = f"{self._label}: HTTP {status} from {url}: {detail.rstrip('. ')}"
        hint = _STATUS_HINTS.get(status)
        if status == 401:
            message += f". The API key was rejected (or none was sent): {key_fix('openai', url)}"
        elif hint:
            message += f". {hint.format(model=self.model, url=url)}"
        return ModelError(self._scrub(message), status=status, retryable=retryable,
                          retry_after=retry_after_seconds(exc.response.headers),
                          model=self.name)


_STATUS_HINTS = {
    400: "The server rejected the request; check the messages, tools and settings sent",
    403: "The API key may not use this model or endpoint; check its permissions",
    404: "Model not found on this server: check that {model!r} is served at {url} (the model "
         "name and the base URL)",
    408: "The server timed out reading the request",
    409: "The server reported a conflict",
    422: "The server could not process the request; check the tool schemas and settings",
    429: "Rate limited; retry after the delay the server asked for",
}


# --------------------------------------------------------------------- keel -> wire format


def to_wire_messages(messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    """Map keel messages to chat-completions messages. Each :class:`ToolResultPart` becomes
    its own ``role: tool`` message, in order."""
    wire: list[ChatCompletionMessageParam] = []
    for message in messages:
        results = [p for p in message.parts if isinstance(p, ToolResultPart)]
        if message.role == "system":
            wire.append({"role": "system", "content": message.text})
        elif message.role == "user":
            wire.extend(_tool_result(r) for r in results)
            if message.text or not results:
                wire.append({"role": "user", "content": message.text})
        elif message.role == "assistant":
            wire.append(_assistant(message))
        else:
            wire.extend(_tool_result(r) for r in results)
    return wire


def _assistant(message: Message) -> ChatCompletionAssistantMessageParam:
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {"id": c.call_id, "type": "function",
         "function": {"name": c.tool_name, "arguments": c.arguments}}
        for c in message.tool_calls]
    out: ChatCompletionAssistantMessageParam = {"role": "assistant"}
    if calls:
        out["content"] = message.text or None
        out["tool_calls"] = calls
    else:
        out["content"] = message.text
    return out


def _tool_result(part: ToolResultPart) -> ChatCompletionToolMessageParam:
    return {"role": "tool", "tool_call_id": part.call_id, "content": part.content}


def to_wire_tool(spec: ToolSpec) -> ChatCompletionFunctionToolParam:
    """A :class:`ToolSpec` as a chat-completions function tool."""
    parameters = spec.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                             "parameters": parameters}}


# --------------------------------------------------------------------- wire format -> keel


def _get(obj: object, name: str) -> Any:
    """A field of an SDK object or a plain dict; ``None`` when absent. The SDK builds its
    objects without validation, so any field may be missing or of the wrong type."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _opt_str(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _BadBody(f"{what} is {type(value).__name__}, not a string")


def _tokens(usage: object) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    prompt, completion = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
    if not isinstance(prompt, int | None) or not isinstance(completion, int | None):
        raise _BadBody("usage token counts are not integers")
    return prompt or 0, completion or 0


@dataclass(slots=True)
class _Parsed:
    text: str = ""
    calls: list[ToolCallPart] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: tuple[int, int] = (0, 0)

    def parts(self) -> tuple[TextPart | ToolCallPart, ...]:
        head: tuple[TextPart, ...] = (TextPart(text=self.text),) if self.text else ()
        return head + tuple(self.calls)


def parse_completion(completion: object) -> _Parsed:
    """Read a non-streamed chat completion (first choice), or raise :class:`_BadBody`."""
    if isinstance(completion, str | bytes) or completion is None:
        raise _BadBody("the body is not JSON")
    choices = _get(completion, "choices")
    if not isinstance(choices, list) or not choices:
        raise _BadBody("it has no choices")
    message = _get(choices[0], "message")
    if message is None:
        raise _BadBody("its first choice has no message")
    content = _opt_str(_get(message, "content"), "message.content") or ""
    refusal = _opt_str(_get(message, "refusal"), "message.refusal") or ""
    raw_calls = _get(message, "tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _BadBody("message.tool_calls is not a list")
    calls = [_tool_call(raw, i) for i, raw in enumerate(raw_calls)]
    return _Parsed(text=content or refusal, calls=calls, tokens=_tokens(_get(completion, "usage")),
                   finish_reason=_opt_str(_get(choices[0], "finish_reason"), "finish_reason"))


def _tool_call(raw: object, index: int) -> ToolCallPart:
    call_id = _opt_str(_get(raw, "id"), "tool_call.id") or _synthetic_id(index)
    function = _get(raw, "function") or _get(raw, "custom")  # custom tools carry ``input``
    if function is None:
        raise _BadBody("a tool call has no function")
    name = _opt_str(_get(function, "name"), "tool_call.function.name")
    if not name:
        raise _BadBody("a tool call has no function name")
    arguments = _get(function, "arguments")
    if arguments is None:
        arguments = _get(function, "input")
    return ToolCallPart(call_id=call_id, tool_name=name, arguments=_raw_arguments(arguments))


def _raw_arguments(value: object) -> str:
    """Arguments stay the raw text the server sent; a server that sends a JSON object instead
    of a string gets it re-encoded (validation happens later, at the tool seam)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _synthetic_id(index: int) -> str:
    """Some local servers omit tool-call ids; the same index gives the same id when streamed
    and when not, so both paths agree."""
    return f"call_{index}"


@dataclass(slots=True)
class _CallBuilder:
    call_id: str | None = None
    tool_name: str | None = None
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _StreamAccumulator:
    """Folds ``chat.completion.chunk`` objects into events and, at the end, into the same
    parts a non-streamed request would return."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _CallBuilder] = field(default_factory=dict)
    finish_reason: str | None = None
    tokens: tuple[int, int] = (0, 0)

    def feed(self, chunk: object) -> list[ModelStreamEvent]:
        if isinstance(chunk, str | bytes | int | float | list) or chunk is None:
            raise _BadBody("a chunk is not a JSON object")
        usage = _get(chunk, "usage")
        if usage is not None:
            self.tokens = _tokens(usage)
        choices = _get(chunk, "choices") or []
        if not isinstance(choices, list):
            raise _BadBody("chunk.choices is not a list")
        events: list[ModelStreamEvent] = []
        for choice in choices:
            if _get(choice, "index") not in (0, None):
                continue  # keel asks for one choice; ignore any others
            events.extend(self._delta(_get(choice, "delta")))
            reason = _opt_str(_get(choice, "finish_reason"), "finish_reason")
            if reason:
                self.finish_reason = reason
        return events

    def _delta(self, delta: object) -> list[ModelStreamEvent]:
        if delta is None:
            return []
        events: list[ModelStreamEvent] = []
        text = (_opt_str(_get(delta, "content"), "delta.content") or
                _opt_str(_get(delta, "refusal"), "delta.refusal"))
        if text:
            self.text.append(text)
            events.append(TextDelta(text=text))
        raw_calls = _get(delta, "tool_calls") or []
        if not isinstance(raw_calls, list):
            raise _BadBody("delta.tool_calls is not a list")
        for raw in raw_calls:
            event = self._call_delta(raw)
            if event is not None:
                events.append(event)
        return events

    def _call_delta(self, raw: object) -> ToolCallDelta | None:
        call_id = _opt_str(_get(raw, "id"), "tool_call.id") or None
        function = _get(raw, "function")
        name = _opt_str(_get(function, "name"), "tool_call.function.name") or None
        index = _get(raw, "index")
        if not isinstance(index, int):  # some servers omit it: an id or a name starts a call
            starts = call_id is not None or name is not None or not self.calls
            index = len(self.calls) if starts else max(self.calls)
        arguments = _get(function, "arguments")
        args = "" if arguments is None else _raw_arguments(arguments)
        builder = self.calls.setdefault(index, _CallBuilder())
        builder.call_id = builder.call_id or call_id
        builder.tool_name = builder.tool_name or name
        builder.arguments.append(args)
        if call_id is None and name is None and not args:
            return None
        return ToolCallDelta(index=index, call_id=call_id, tool_name=name, arguments_delta=args)

    def parts(self) -> tuple[TextPart | ToolCallPart, ...]:
        calls = []
        for position, index in enumerate(sorted(self.calls)):
            b = self.calls[index]
            if not b.tool_name:
                raise _BadBody(f"streamed tool call {index} never named its tool")
            calls.append(ToolCallPart(call_id=b.call_id or _synthetic_id(position),
                                      tool_name=b.tool_name, arguments="".join(b.arguments)))
        return _Parsed(text="".join(self.text), calls=calls).parts()


# ------------------------------------------------------------------------------ helpers


def _server_detail(body: object) -> str:
    """The human part of an error body: ``error.message``, ``message`` or ``error`` text."""
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                return _server_detail(value)
            if isinstance(value, str) and value:
                return value[:_MAX_DETAIL]
        return ""
    if isinstance(body, str):
        return body.strip()[:_MAX_DETAIL]
    return ""


def _broke_off(cause: BaseException | None) -> bool:
    """True when the HTTP client reached the server but the exchange failed part-way (the
    SDK wraps these in the same ``APIConnectionError`` as a refused connection)."""
    names = {k.__name__ for k in type(cause).__mro__} if cause is not None else set()
    return bool(names & {"ProtocolError", "ReadError", "WriteError"})


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, _BadBody):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _public_url(url: str) -> str:
    """``url`` without credentials, query or trailing slash (safe to put in messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid base URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
