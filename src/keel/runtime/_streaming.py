"""A model wrapper that streams: it forwards deltas as run events and returns the response."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keel.core import (
    Message,
    ModelError,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    RunEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from keel.models import Model


class StreamingModel(Model):
    """Wraps a model so that ``request`` consumes its stream, emitting deltas on the way."""

    def __init__(self, inner: Model, emit: Callable[[RunEvent], None]) -> None:
        self.inner = inner
        self.emit = emit
        self.name = inner.name

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        final: ModelResponse | None = None
        async for event in self.inner.stream(messages, tools, settings):
            if isinstance(event, TextDelta | ToolCallDelta):
                self.emit(event)
            elif isinstance(event, ResponseDone):
                final = event.response
        if final is None:
            raise ModelError(f"{self.name} ended its stream without a final response",
                             retryable=True, model=self.name)
        return final
