"""Token usage and cost, and the model response that carries them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core._messages import Message, Part, TextPart, ToolCallPart, part_from_dict, part_to_dict


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens and money spent. ``cost_usd`` is 0.0 when the model's price is unknown (local
    servers, unlisted models); ``ModelInfo.priced`` tells which."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": self.cost_usd}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(requests=int(data.get("requests", 0)),
                   input_tokens=int(data.get("input_tokens", 0)),
                   output_tokens=int(data.get("output_tokens", 0)),
                   cost_usd=float(data.get("cost_usd") or 0.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponse:
    """One model turn: text and/or tool calls, with usage. Adapters fill ``usage.cost_usd``.

    ``provider_details`` is optional JSON data about how the answer was obtained (e.g. which
    link of a :class:`~keel.reliability.FallbackModel` answered); it is journaled with the
    response and left out of :meth:`to_dict` when None, so older records are unchanged."""

    parts: tuple[Part, ...]
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    provider_details: dict[str, Any] | None = None

    @property
    def message(self) -> Message:
        return Message(role="assistant", parts=self.parts)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "parts": [part_to_dict(p) for p in self.parts], "usage": self.usage.to_dict(),
            "model": self.model, "finish_reason": self.finish_reason}
        if self.provider_details is not None:
            data["provider_details"] = self.provider_details
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(parts=tuple(part_from_dict(p) for p in data["parts"]),
                   usage=Usage.from_dict(data.get("usage", {})),
                   model=str(data.get("model", "")), finish_reason=data.get("finish_reason"),
                   provider_details=_details(data.get("provider_details")))


def _details(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None
