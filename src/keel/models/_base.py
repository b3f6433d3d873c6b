"""The Model seam: one request method and its streaming twin."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

from keel.core import (
    Message,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)


class Model(ABC):
    """A chat model. Adapters implement :meth:`request`; :meth:`stream` defaults to one
    request replayed as deltas, and adapters that can stream override it.

    Contract for implementers: raise :class:`keel.ModelError` (with ``status``, ``retryable``
    and ``retry_after`` where known) for endpoint failures; never retry inside the adapter (the
    reliability layer does, journaled and budgeted); fill ``ModelResponse.usage`` including
    ``cost_usd``. The final :class:`ResponseDone` of a stream carries exactly the response a
    :meth:`request` with the same input would return.
    """

    #: The model id string, e.g. ``openai:gpt-4o-mini``.
    name: str = "model"

    @abstractmethod
    async def request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> ModelResponse: ...

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[ModelStreamEvent]:
        response = await self.request(messages, tools, settings)
        for event in response_as_deltas(response):
            yield event

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release connections. Safe to call more than once."""


def response_as_deltas(response: ModelResponse) -> list[ModelStreamEvent]:
    """The stream events that assemble into ``response`` (used by non-streaming models)."""
    events: list[ModelStreamEvent] = []
    if response.text:
        events.append(TextDelta(text=response.text))
    for index, call in enumerate(response.tool_calls):
        events.append(ToolCallDelta(index=index, call_id=call.call_id, tool_name=call.tool_name,
                                    arguments_delta=call.arguments))
    events.append(ResponseDone(response=response))
    return events
