"""Events: what a streaming model emits, and what a streaming run emits.

Model stream events (from ``Model.stream``) are text deltas, tool-call deltas and exactly one
final :class:`ResponseDone` carrying the assembled :class:`ModelResponse`.

Run events (from ``Agent.stream`` / ``Runner.stream``) describe the run as it happens and end
with exactly one :class:`RunFinished` whose result equals what a non-streamed run returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from keel.core._usage import ModelResponse, Usage

# ----------------------------------------------------------------------- model stream events


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A fragment of a streamed tool call. ``index`` identifies the call within the turn;
    ``call_id`` and ``tool_name`` arrive on the first fragment, ``arguments_delta`` after."""

    index: int
    call_id: str | None = None
    tool_name: str | None = None
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseDone:
    response: ModelResponse


ModelStreamEvent: TypeAlias = TextDelta | ToolCallDelta | ResponseDone

# -------------------------------------------------------------------------------- run events


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    run_id: str
    agent: str
    resumed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTurn:
    """A model turn finished: its thought (text), its tool calls and what it cost."""

    key: str
    text: str
    tool_calls: tuple[tuple[str, str], ...]  # (tool_name, arguments)
    usage: Usage
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallStarted:
    key: str
    tool_name: str
    arguments: str
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """A tool call's outcome as the model will see it."""

    key: str
    tool_name: str
    content: str
    is_error: bool
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecorded:
    """A journal step was completed (executed now, or read back from the journal)."""

    key: str
    kind: str
    name: str
    latency_ms: float
    replayed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    run_id: str
    status: str
    result: Any


RunEvent: TypeAlias = (
    RunStarted | TextDelta | ToolCallDelta | ModelTurn | ToolCallStarted | Observation
    | StepRecorded | RunFinished
)
