"""What a tool call produces, and the normalized error observation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

ErrorType: TypeAlias = Literal[
    "unknown_tool",
    "permission_denied",
    "invalid_json",
    "invalid_arguments",
    "rejected_arguments",
    "timeout",
    "tool_error",
    "repeated_failure",
    "approval_denied",
    "escalated",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFailure:
    """The normalized observation a model gets for any failed call, so it can correct itself."""

    error_type: ErrorType
    message: str
    retryable: bool
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"error_type": self.error_type, "message": self.message,
                "retryable": self.retryable, "hint": self.hint}

    def render(self) -> str:
        return json.dumps({"error": self.to_dict()}, ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """A tool call's outcome.

    ``content`` is what the model sees (possibly cut to the tool's output limit); ``value`` is
    the JSON-able return value, kept whole in the journal; ``failure`` is set when the call
    failed, and then ``content`` is its rendering.
    """

    content: str
    value: Any = None
    failure: ToolFailure | None = None
    truncated: bool = False

    @property
    def is_error(self) -> bool:
        return self.failure is not None

    @classmethod
    def fail(cls, error_type: ErrorType, message: str, *, retryable: bool,
             hint: str | None = None) -> ToolResult:
        failure = ToolFailure(error_type=error_type, message=message, retryable=retryable,
                              hint=hint)
        return cls(content=failure.render(), failure=failure)

    def to_dict(self) -> dict[str, Any]:
        return {"content": self.content, "value": self.value, "truncated": self.truncated,
                "failure": None if self.failure is None else self.failure.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolResult:
        f = data.get("failure")
        failure = None if f is None else ToolFailure(
            error_type=f["error_type"], message=f["message"], retryable=bool(f["retryable"]),
            hint=f.get("hint"))
        return cls(content=str(data["content"]), value=data.get("value"), failure=failure,
                   truncated=bool(data.get("truncated", False)))
