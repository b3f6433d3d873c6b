"""What a tool call produces, and the normalized error observation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from keel.core import to_jsonable, to_text

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
    "guardrail_blocked",
    "bulkhead_full",
    "rate_limited",
    "circuit_open",
    "budget_exceeded",
]

#: Why a ``tool_error`` is worth retrying as is (see :attr:`ToolFailure.transient`).
Transient: TypeAlias = Literal["exception", "declared"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFailure:
    """The normalized observation a model gets for any failed call, so it can correct itself.

    ``retryable`` is for the model: it may call again (perhaps with other arguments).
    ``transient`` is for retrying middleware, and is not shown to the model: set when the
    same call may succeed if simply made again. ``"exception"``: the tool raised a transient
    error (a connection error, a timeout, an OS error); ``"declared"``: the tool raised
    ``ToolError(retryable=True)``, its author asserting that the call did not take effect
    (so it may be retried even when the tool is not idempotent).
    """

    error_type: ErrorType
    message: str
    retryable: bool
    hint: str | None = None
    transient: Transient | None = None

    def observation(self) -> dict[str, Any]:
        """What the model sees: ``{error_type, message, retryable, hint}``."""
        return {"error_type": self.error_type, "message": self.message,
                "retryable": self.retryable, "hint": self.hint}

    def to_dict(self) -> dict[str, Any]:
        data = self.observation()
        if self.transient is not None:
            data["transient"] = self.transient
        return data

    def render(self) -> str:
        return json.dumps({"error": self.observation()}, ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """A tool call's outcome.

    ``content`` is what the model sees (possibly cut to the tool's output limit); ``value`` is
    the JSON-able return value, kept whole in the journal; ``failure`` is set when the call
    failed, and then ``content`` is its rendering. ``handoff`` (``{"target", "reason"}``) is
    set when the tool handed the conversation on (it raised ``keel.Handoff``): a successful
    call whose recorded result makes the agent's run hand off again on resume and replay.
    """

    content: str
    value: Any = None
    failure: ToolFailure | None = None
    truncated: bool = False
    handoff: dict[str, str] | None = None

    @property
    def is_error(self) -> bool:
        return self.failure is not None

    @classmethod
    def of(cls, value: Any) -> ToolResult:
        """The result of a call that returned ``value``: ``value`` becomes plain JSON data
        (:func:`keel.core.to_jsonable`), and the model sees that data as text
        (:func:`keel.core.to_text`), so the journal and the model agree."""
        data = to_jsonable(value)
        return cls(content=to_text(data), value=data)

    @classmethod
    def fail(cls, error_type: ErrorType, message: str, *, retryable: bool,
             hint: str | None = None, transient: Transient | None = None) -> ToolResult:
        failure = ToolFailure(error_type=error_type, message=message, retryable=retryable,
                              hint=hint, transient=transient)
        return cls(content=failure.render(), failure=failure)

    @classmethod
    def handed_off(cls, target: str, reason: str = "") -> ToolResult:
        """The result of a call that handed the conversation to ``target``."""
        handoff = {"target": target, "reason": reason}
        return cls(content=json.dumps({"handoff": handoff}, ensure_ascii=False),
                   handoff=handoff)

    def to_dict(self) -> dict[str, Any]:
        data = {"content": self.content, "value": self.value, "truncated": self.truncated,
                "failure": None if self.failure is None else self.failure.to_dict()}
        if self.handoff is not None:  # only then: other results keep their stored shape
            data["handoff"] = dict(self.handoff)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolResult:
        f = data.get("failure")
        failure = None if f is None else ToolFailure(
            error_type=f["error_type"], message=f["message"], retryable=bool(f["retryable"]),
            hint=f.get("hint"), transient=f.get("transient"))
        h = data.get("handoff")
        handoff = None if not isinstance(h, dict) else {
            "target": str(h.get("target", "")), "reason": str(h.get("reason", ""))}
        return cls(content=str(data["content"]), value=data.get("value"), failure=failure,
                   truncated=bool(data.get("truncated", False)), handoff=handoff)
