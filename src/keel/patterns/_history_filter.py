"""What part of a conversation travels with a handoff.

A :class:`HistoryFilter` turns the conversation the handing agent had into the history the
receiving agent continues. By default only the conversation itself travels (user messages and
the assistants' text), not tool calls and tool results: the receiving agent gets what was
said, not how the previous agent worked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from keel.context import History
from keel.core import ConfigError, Message, TextPart, ToolCallPart, ToolResultPart
from keel.models import Model

FilterMode: TypeAlias = Literal["conversation", "full", "last", "user", "packet", "policy"]
#: Builds the "context packet" a receiving agent (or a person) gets instead of the history.
Packet = Callable[[Sequence[Message]], str]


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which messages travel with a handoff. Build one with the class methods:

    * :meth:`conversation` (default): user messages and assistant text; no tool internals.
    * :meth:`full`: everything except system messages (tool calls and results included).
    * :meth:`last`: the last ``n`` messages of the conversation (as :meth:`conversation`).
    * :meth:`user_only`: only what the user said.
    * :meth:`packet`: no history; a function writes a summary the receiver gets as its input.
    * :meth:`within`: what a :class:`keel.context.History` keeps of the conversation (as
      :meth:`conversation`, or :meth:`full` with ``tools=True``) for the receiving model:
      sliding window, token budget, importance (no summarising: nothing is asked of a model).
    """

    mode: FilterMode = "conversation"
    n: int = 0
    summarize: Packet | None = None
    policy: History | None = None
    tools: bool = False

    @classmethod
    def conversation(cls) -> HistoryFilter:
        return cls("conversation")

    @classmethod
    def full(cls) -> HistoryFilter:
        return cls("full")

    @classmethod
    def last(cls, n: int) -> HistoryFilter:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError("history.last", f"n must be a whole number >= 1, not {n!r}")
        return cls("last", n=n)

    @classmethod
    def user_only(cls) -> HistoryFilter:
        return cls("user")

    @classmethod
    def packet(cls, summarize: Packet) -> HistoryFilter:
        if not callable(summarize):
            raise ConfigError("history.packet", "expected a function(messages) -> str")
        return cls("packet", summarize=summarize)

    @classmethod
    def within(cls, history: History, *, tools: bool = False) -> HistoryFilter:
        if not isinstance(history, History):
            raise ConfigError("history.within", f"expected a keel.context.History (e.g. "
                              f"History(SlidingWindow(6))), got {type(history).__name__}")
        if not isinstance(tools, bool):
            raise ConfigError("history.within", "tools must be True or False")
        return cls("policy", policy=history, tools=tools)

    def apply(self, messages: Sequence[Message], *,
              model: str | Model | None = None) -> list[Message]:
        """The history the receiving agent continues (system messages never travel);
        ``model``: the receiving agent's (the window a :meth:`within` policy fits)."""
        if self.mode == "policy":
            assert self.policy is not None
            base = HistoryFilter("full" if self.tools else "conversation").apply(messages)
            return self.policy.select(base, model=model)
        if self.mode == "full":
            return complete_calls(messages)
        if self.mode == "packet":
            return []
        if self.mode == "user":
            return [m for m in messages if m.role == "user"]
        said = [_said(m) for m in messages if m.role in ("user", "assistant")]
        kept = [m for m in said if m is not None]
        return kept[-self.n:] if self.mode == "last" else kept

    def packet_text(self, messages: Sequence[Message]) -> str | None:
        """The context packet (only in ``packet`` mode)."""
        if self.summarize is None:
            return None
        text = self.summarize(list(messages))
        if not isinstance(text, str):
            raise ConfigError("history.packet", f"the packet function must return a str, "
                              f"not {type(text).__name__}")
        return text


def _said(message: Message) -> Message | None:
    """The message's text only (a turn that only called tools says nothing)."""
    texts = tuple(p for p in message.parts if isinstance(p, TextPart) and p.text)
    if not texts:
        return None
    return message if len(texts) == len(message.parts) else Message(role=message.role,
                                                                       parts=texts)


def complete_calls(messages: Sequence[Message]) -> list[Message]:
    """``messages`` without system messages and without tool calls that have no result (the
    call that handed off is answered by the handoff, not by a tool result): providers reject
    a history with unanswered calls."""
    answered = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolResultPart)}
    out: list[Message] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            parts = tuple(p for p in m.parts
                          if not isinstance(p, ToolCallPart) or p.call_id in answered)
            if not parts:
                continue
            if len(parts) != len(m.parts):
                m = Message(role="assistant", parts=parts)
        out.append(m)
    return out


def answer_calls(messages: Sequence[Message], answer: str) -> list[Message]:
    """``messages`` without system messages, each call left without a result (the handoff
    call, and any call made beside it) answered with ``answer``: for the agent that goes on
    with its own conversation after a handoff was refused or a person took over."""
    answered = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolResultPart)}
    out = [m for m in messages if m.role != "system"]
    open_calls = [p for m in out for p in m.parts
                  if isinstance(p, ToolCallPart) and p.call_id not in answered]
    if open_calls:
        out.append(Message(role="tool", parts=tuple(
            ToolResultPart(call_id=c.call_id, tool_name=c.tool_name, content=answer)
            for c in open_calls)))
    return out
