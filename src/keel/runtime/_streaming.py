"""A model wrapper that streams: it forwards deltas as run events and returns the response.

With output guards (``screen``), text is not forwarded as it arrives: it is held, and shown
in chunks (up to a sentence end, or about ``chunk`` characters cut at a space) only after the
guards passed the text so far, as they would redact it. So a secret or a blocked phrase never
reaches the caller half-way; the tail is shown once the final answer passed the guards
(:meth:`StreamingModel.finish`), so the text shown is the answer ``run()`` returns. What the
guards would withhold stops the text there.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

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

#: ``screen(text_so_far) -> text to show`` (redacted as the guards would), or None to
#: withhold it.
Screen = Callable[[str], Awaitable[str | None]]
_SENTENCE_END = re.compile(r"[.!?:;](?=\s)|\n")
_HOLD_BACK = 32  # characters kept back past a cut that is not at a sentence end


class StreamingModel(Model):
    """Wraps a model so that ``request`` consumes its stream, emitting deltas on the way."""

    def __init__(self, inner: Model, emit: Callable[[RunEvent], None], *,
                 screen: Screen | None = None, chunk: int = 160) -> None:
        self.inner = inner
        self.emit = emit
        self.name = inner.name
        self.screen = screen
        self.chunk = chunk
        self._raw = ""
        self._cut = 0  # how much of _raw the guards passed
        self._shown = ""  # the text emitted so far (as the guards let it be shown)
        self._held = False

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        final: ModelResponse | None = None
        self._raw, self._cut, self._shown, self._held = "", 0, "", False
        async for event in self.inner.stream(messages, tools, settings):
            if isinstance(event, TextDelta):
                if self.screen is None:
                    self.emit(event)
                else:
                    self._raw += event.text
                    await self._flush(self._boundary())
            elif isinstance(event, ToolCallDelta):
                self.emit(event)
            elif isinstance(event, ResponseDone):
                final = event.response
        if final is None:
            raise ModelError(f"{self.name} ended its stream without a final response",
                             retryable=True, model=self.name)
        return final

    async def finish(self, response: ModelResponse, *, final: bool) -> None:
        """Show the rest of the text: a final answer as the guards let it leave
        (``response`` is the screened one), a thought before tool calls through the guards."""
        if self.screen is None or self._held:
            return
        if not final:
            await self._flush(len(self._raw))
            return
        self._show(response.text)

    def _boundary(self) -> int:
        """How far the held text may be shown now: after the last sentence end, or (past
        ``chunk`` characters without one) at the last space before the held-back tail."""
        raw, start = self._raw, self._cut
        end = 0
        for match in _SENTENCE_END.finditer(raw, start):
            end = match.end()
        if end:
            return end
        if len(raw) - start >= self.chunk:
            space = raw.rfind(" ", start, len(raw) - _HOLD_BACK)
            if space > start:
                return space
        return start

    async def _flush(self, upto: int) -> None:
        if self._held or self.screen is None or upto <= self._cut:
            return
        shown = await self.screen(self._raw[:upto])
        self._cut = upto
        if shown is None:
            self._held = True
            return
        self._show(shown)

    def _show(self, text: str) -> None:
        if not text.startswith(self._shown):  # what was shown cannot be taken back: stop
            self._held = True
            return
        delta = text[len(self._shown):]
        if delta:
            self._shown = text
            self.emit(TextDelta(text=delta))
