"""Models for tests and offline demos: :class:`ScriptedModel` and :class:`FunctionModel`.

Both live at the Model seam, so everything above them (journal, budgets, tools, streaming)
runs exactly as with a real provider.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias

from keel.core import (
    ConfigError,
    Message,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    TextPart,
    ToolCallPart,
    ToolSpec,
    Usage,
    UserError,
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


#: What a scripted answer may be, for error messages (ScriptedModel and FunctionModel alike).
ACCEPTED = ("text (a str), a tool call (keel.testing.call(name, args)), a list of those (one "
            "turn: a thought and parallel calls), a ModelResponse, or an exception instance "
            "to raise")


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _describe(value: object) -> str:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{type(value).__name__} {shown}"


def script_response(item: object, *, turn: int, prompt: int, name: str,
                    source: str) -> ModelResponse:
    """The one reading of a scripted answer, shared by :class:`ScriptedModel` (a script item)
    and :class:`FunctionModel` (what its function returned): a :class:`ModelResponse` as is,
    an exception raised, text and tool calls (alone or a list of them, one turn) made into a
    response. Anything else is a :class:`UserError`: ``source`` (e.g. "ScriptedModel
    script[2] is") followed by what was given and what is accepted. ``turn`` numbers the
    call ids (``call_<turn>_<n>``); ``prompt`` is the estimated prompt size for the usage."""
    if isinstance(item, ModelResponse):
        return item
    if isinstance(item, BaseException):
        raise item
    parts: list[TextPart | ToolCallPart] = []
    n_calls = 0
    for piece in _pieces(item, source):
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


def _pieces(item: object, source: str) -> list[str | ToolCallPart]:
    """The parts of one scripted turn (text and tool calls), or a UserError saying why not."""
    if isinstance(item, str | ToolCallPart):
        return [item]
    if not isinstance(item, Sequence) or isinstance(item, bytes | bytearray):
        raise UserError(f"{source} {_describe(item)}; an answer must be {ACCEPTED}")
    pieces: list[str | ToolCallPart] = []
    for i, piece in enumerate(item):
        if not isinstance(piece, str | ToolCallPart):
            raise UserError(f"{source} a turn whose part {i} is {_describe(piece)}; the parts "
                            "of one turn must be text (a str) or tool calls "
                            "(keel.testing.call(name, args))")
        pieces.append(piece)
    return pieces


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
        if isinstance(script, str | ModelResponse) or not isinstance(script, Iterable):
            raise ConfigError("script", f"expected a list of script items (one per turn), "
                              f"got {_describe(script)}")
        self.script = list(script)
        for turn, item in enumerate(self.script):  # a bad item fails here, not at turn n
            if not isinstance(item, ModelResponse | BaseException):
                _pieces(item, f"ScriptedModel script[{turn}] is")
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
        # The same growing list (a list's id is reused once it is freed, so the last message
        # scanned must still be where it was, not only the first).
        if cached is not None and cached[1] <= len(messages) \
                and cached[0] is messages[cached[1] - 1]:
            start, count, tokens = cached[1], cached[2], cached[3]
        for i in range(start, len(messages)):
            m = messages[i]
            if m.role == "assistant":
                count += 1
            tokens += _estimate_tokens(m.text or "x")
        if len(self._turns) > 4096:
            self._turns.clear()
        self._turns[id(messages)] = (messages[-1], len(messages), count, tokens)
        return count, tokens

    def _pick(self, messages: Sequence[Message]) -> ModelResponse:
        turn, prompt = self._scan(messages)
        if turn >= len(self.script):
            raise AssertionError(
                f"ScriptedModel has {len(self.script)} turns but was asked for turn {turn + 1}")
        return script_response(self.script[turn], turn=turn, prompt=prompt, name=self.name,
                               source=f"ScriptedModel script[{turn}] is")

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
    [list[Message], list[ToolSpec], ModelSettings], ScriptItem | Awaitable[ScriptItem]]


class FunctionModel(Model):
    """A model whose answer is computed by a Python function, sync or async, called as
    ``fn(messages, tools, settings)`` for each request. It returns what a
    :class:`ScriptedModel` script item may be: text (a final answer), :func:`call` (a tool
    call), a list of those (one turn with a thought and parallel calls), a
    :class:`ModelResponse`, or an exception instance to raise (or it raises). Anything else is
    a :class:`~keel.UserError` at that request, saying what the function returned."""

    def __init__(self, fn: ModelFunction, *, name: str = "test:function") -> None:
        if not callable(fn):
            raise ConfigError("fn", f"FunctionModel needs a function fn(messages, tools, "
                              f"settings), got {_describe(fn)}")
        self.fn = fn
        self.name = name
        self.requests: list[list[Message]] = []

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        self.requests.append(list(messages))
        out = self.fn(list(messages), list(tools), settings or ModelSettings())
        if inspect.isawaitable(out):
            out = await out
        turn = sum(1 for m in messages if m.role == "assistant")
        prompt = sum(_estimate_tokens(m.text or "x") for m in messages) or 1
        fn_name = getattr(self.fn, "__qualname__", None) or type(self.fn).__name__
        return script_response(out, turn=turn, prompt=prompt, name=self.name,
                               source=f"the function {fn_name} of FunctionModel {self.name!r} "
                               "returned")
