"""Models for tests and offline demos: :class:`ScriptedModel` and :class:`FunctionModel`.

Both live at the Model seam, so everything above them (journal, budgets, tools, streaming)
runs exactly as with a real provider.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
)
from keel.models._base import Model, response_as_deltas


def call(tool_name: str, arguments: dict[str, Any] | str | None = None, *,
         call_id: str | None = None) -> ToolCallPart:
    """A scripted tool call. ``arguments`` may be a dict or raw (even malformed) JSON text."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCallPart(call_id=call_id or "", tool_name=tool_name, arguments=raw)


ScriptItem: TypeAlias = (
    str | ToolCallPart | Sequence[str | ToolCallPart] | ModelResponse | BaseException
)


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _to_response(item: ScriptItem, turn: int, prompt: int, name: str) -> ModelResponse:
    if isinstance(item, ModelResponse):
        return item
    if isinstance(item, BaseException):
        raise item
    items: Sequence[str | ToolCallPart] = [item] if isinstance(item, str | ToolCallPart) else item
    parts: list[TextPart | ToolCallPart] = []
    n_calls = 0
    for piece in items:
        if isinstance(piece, str):
            parts.append(TextPart(text=piece))
        else:
            call_id = piece.call_id or f"call_{turn}_{n_calls}"
            parts.append(ToolCallPart(call_id=call_id, tool_name=piece.tool_name,
                                      arguments=piece.arguments))
            n_calls += 1
    completion = sum(_estimate_tokens(p.text if isinstance(p, TextPart) else p.arguments)
                     for p in parts)
    return ModelResponse(
        parts=tuple(parts), model=name, finish_reason="tool_calls" if n_calls else "stop",
        usage=Usage(requests=1, input_tokens=prompt, output_tokens=completion, cost_usd=0.0))


class ScriptedModel(Model):
    """Answers from a script. Turn *n* of a conversation (the number of assistant messages
    already in the request) gets ``script[n]``, so a resumed or replayed run sees the same
    answers as the original, and one instance can serve many concurrent runs.

    Script items: a ``str`` (final text), :func:`call` (a tool call), a list of those (one turn
    with several parts, e.g. a thought and parallel calls), a :class:`ModelResponse`, or an
    exception instance to raise. ``delay`` awaits that many seconds per request;
    ``record_requests=False`` stops keeping a copy of every request in ``requests``.
    """

    def __init__(self, script: Sequence[ScriptItem], *, name: str = "test:scripted",
                 delay: float = 0.0, record_requests: bool = True) -> None:
        self.script = list(script)
        self.name = name
        self.delay = delay
        self.record_requests = record_requests
        self.requests: list[list[Message]] = []
        # id(conversation list) -> (first message, length seen, assistant turns, prompt tokens):
        # only new messages are looked at when the same growing list comes again (O(1) a turn).
        self._turns: dict[int, tuple[Message, int, int, int]] = {}

    def _scan(self, messages: Sequence[Message]) -> tuple[int, int]:
        """(assistant turns so far, estimated prompt tokens) of a conversation."""
        if not messages:
            return 0, 1
        cached = self._turns.get(id(messages))
        start, count, tokens = 0, 0, 0
        if cached is not None and cached[0] is messages[0] and cached[1] <= len(messages):
            start, count, tokens = cached[1], cached[2], cached[3]
        for i in range(start, len(messages)):
            m = messages[i]
            if m.role == "assistant":
                count += 1
            tokens += _estimate_tokens(m.text or "x")
        if len(self._turns) > 4096:
            self._turns.clear()
        self._turns[id(messages)] = (messages[0], len(messages), count, tokens)
        return count, tokens

    def _pick(self, messages: Sequence[Message]) -> ModelResponse:
        turn, prompt = self._scan(messages)
        if turn >= len(self.script):
            raise AssertionError(
                f"ScriptedModel has {len(self.script)} turns but was asked for turn {turn + 1}")
        item = self.script[turn]
        if isinstance(item, BaseException):
            raise item
        return _to_response(item, turn, prompt, self.name)

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        if self.record_requests:
            self.requests.append(list(messages))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._pick(messages)

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[ModelStreamEvent]:
        response = await self.request(messages, tools, settings)
        for event in response_as_deltas(response):
            yield event


ModelFunction: TypeAlias = Callable[
    [list[Message], list[ToolSpec], ModelSettings],
    ModelResponse | str | Awaitable[ModelResponse | str],
]


class FunctionModel(Model):
    """A model whose answer is computed by a Python function (sync or async) from the
    conversation, the tools and the settings. A returned ``str`` is a final text answer."""

    def __init__(self, fn: ModelFunction, *, name: str = "test:function") -> None:
        self.fn = fn
        self.name = name
        self.requests: list[list[Message]] = []

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        self.requests.append(list(messages))
        out = self.fn(list(messages), list(tools), settings or ModelSettings())
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, str):
            turn = sum(1 for m in messages if m.role == "assistant")
            prompt = sum(_estimate_tokens(m.text or "x") for m in messages)
            return _to_response(out, turn, prompt, self.name)
        return out
