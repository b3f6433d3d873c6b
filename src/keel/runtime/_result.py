"""What a finished run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from keel.core import Message, Usage

OutputT = TypeVar("OutputT")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult(Generic[OutputT]):
    """A completed run: its typed ``output``, the final ``text``, totals and the conversation."""

    run_id: str
    agent: str
    output: OutputT
    text: str
    usage: Usage
    steps: int
    replayed_steps: int = 0
    messages: list[Message] = field(default_factory=list)
    status: str = "completed"
    #: Set once a history policy had to compact the conversation to fit the model's context
    #: window (older turns summarised or left out): a note for the user suggesting a new
    #: conversation. Journaled, so a resumed or replayed run reports it too.
    context_warning: str | None = None
