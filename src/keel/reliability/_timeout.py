"""Per-attempt timeouts on the model seam (and an optional ceiling on tool calls).

:class:`Timeout` is middleware. A model request that takes longer than ``model`` seconds is
cancelled and raises a retryable :class:`~keel.ModelError` (``status=None``, "timed out
after N s"), which :class:`~keel.Retry` retries, a :class:`~keel.CircuitBreaker` counts as a
failure and a :class:`~keel.reliability.FallbackModel` hands to its next link. Put it in an
agent's ``middleware``: user middleware sits inside the default Retry and CircuitBreaker, so
each attempt gets the full timeout (not the retries together)::

    Agent("support", model="openai:gpt-4o-mini", middleware=[Timeout(model=30)])

Tools have their own per-call timeout (``@tool(timeout=...)``, :attr:`ToolMeta.timeout
<keel.tools.ToolMeta>`); ``tool=`` adds a ceiling over every tool of the agent. A timed-out
tool call is recorded as a ``timeout`` observation; a sync tool's worker thread cannot be
stopped, and whatever it returns later is discarded (never journaled, never shown to the model).

This is not a whole-run limit: use ``agent.run(deadline=...)`` (stored with the run, across
restarts) or :attr:`Budget.max_wall_seconds <keel.Budget>` (time spent running) for that.
"""

from __future__ import annotations

import asyncio

from keel.core import ConfigError, ModelError, ModelResponse
from keel.runtime import Middleware, ModelNext, ModelRequestInput, ToolCallInput, ToolNext
from keel.tools import ToolResult


def _seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(name, f"must be a number of seconds > 0 or None, not {value!r}")
    return float(value)


class Timeout(Middleware):
    """Cancel a model attempt after ``model`` seconds (None: no limit), and a tool call after
    ``tool`` seconds (None: each tool's own ``timeout`` only)."""

    def __init__(self, model: float | None = 60.0, tool: float | None = None) -> None:
        self.model = _seconds("model", model)
        self.tool = _seconds("tool", tool)

    def __repr__(self) -> str:
        return f"Timeout(model={self.model!r}, tool={self.tool!r})"

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        seconds = self.model
        if seconds is None:
            return await next(inp)
        try:
            async with asyncio.timeout(seconds) as scope:
                return await next(inp)
        except TimeoutError:
            if not scope.expired():
                raise  # a timeout of the call itself, not ours
            name = inp.model.name
            raise ModelError(f"request to {name} timed out after {seconds:g} s (Timeout "
                             "middleware)", status=None, retryable=True, model=name,
                             run_id=inp.run_id or None, step_key=inp.step_key or None) from None

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        seconds = self.tool
        if seconds is None:
            return await next(inp)
        try:
            async with asyncio.timeout(seconds) as scope:
                return await next(inp)
        except TimeoutError:
            if not scope.expired():
                raise
            return ToolResult.fail(
                "timeout", f"{inp.tool.name} did not finish within {seconds:g} s (Timeout "
                "middleware)", retryable=True)
