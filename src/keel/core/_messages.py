"""Messages and their parts: the provider-neutral conversation format.

A conversation is a list of :class:`Message`. Each message has a role and a tuple of parts.
Adapters map these to and from each provider's wire format; the journal stores parts as plain
dicts through :func:`part_to_dict` / :func:`part_from_dict`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextPart:
    """Plain text. In an assistant message that also calls tools, this is the thought."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallPart:
    """The model asks to call a tool. ``arguments`` is the raw JSON text the model produced
    (it may be malformed; validation happens at the tool seam, never here)."""

    call_id: str
    tool_name: str
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultPart:
    """What a tool call produced, as the model will see it."""

    call_id: str
    tool_name: str
    content: str
    is_error: bool = False


Part: TypeAlias = TextPart | ToolCallPart | ToolResultPart


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", parts=(TextPart(text=text),))

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", parts=(TextPart(text=text),))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls(role="assistant", parts=(TextPart(text=text),))

    @property
    def text(self) -> str:
        """All text parts joined (empty when there are none)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [p for p in self.parts if isinstance(p, ToolResultPart)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool as the model sees it: a name, a description and a JSON Schema for arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSettings:
    """Per-request settings. ``None`` means the provider's default."""

    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    parallel_tool_calls: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- hashing


def hash_messages(messages: Sequence[Message], *, scrub: Callable[[str], str],
                  salt: str = "") -> str:
    """A stable digest of ``messages`` (strings passed through ``scrub`` first), without
    building dicts or JSON: cheap enough to run on every model turn."""
    chunks = [salt]
    for m in messages:
        chunks.append("\x1e" + m.role)
        for p in m.parts:
            kind = type(p)
            if kind is TextPart:
                chunks.append("\x1ft\x1f" + p.text)  # type: ignore[union-attr]
            elif kind is ToolCallPart:
                chunks.append(f"\x1fc\x1f{p.call_id}\x1f{p.tool_name}\x1f"  # type: ignore[union-attr]
                              f"{p.arguments}")  # type: ignore[union-attr]
            else:
                chunks.append(f"\x1fr\x1f{p.call_id}\x1f{p.tool_name}\x1f"  # type: ignore[union-attr]
                              f"{p.content}\x1f{int(p.is_error)}")  # type: ignore[union-attr]
    text = scrub("".join(chunks))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


# ----------------------------------------------------------------------- (de)serialization


def part_to_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_call", "call_id": part.call_id, "tool_name": part.tool_name,
                "arguments": part.arguments}
    return {"type": "tool_result", "call_id": part.call_id, "tool_name": part.tool_name,
            "content": part.content, "is_error": part.is_error}


def part_from_dict(data: dict[str, Any]) -> Part:
    kind = data.get("type")
    if kind == "text":
        return TextPart(text=str(data["text"]))
    if kind == "tool_call":
        return ToolCallPart(call_id=str(data["call_id"]), tool_name=str(data["tool_name"]),
                            arguments=str(data["arguments"]))
    if kind == "tool_result":
        return ToolResultPart(call_id=str(data["call_id"]), tool_name=str(data["tool_name"]),
                              content=str(data["content"]), is_error=bool(data["is_error"]))
    raise ValueError(f"unknown message part type {kind!r}")
