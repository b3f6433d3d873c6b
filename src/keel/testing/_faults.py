"""Fault injection at the Model and Tool seams, seeded so a failing run can be replayed.

:class:`FaultyModel` wraps any model and raises the same :class:`~keel.ModelError` s the real
adapters raise (a 429 with ``retry_after``, a 500 or 503, a timeout, a broken connection: all
retryable); :func:`faulty_tool` wraps any tool and returns the failures a real tool produces (a
transient ``tool_error`` as from a ``ConnectionError``, or a ``timeout``). Each call draws one
number from ``random.Random(seed)`` to pick its fault, so the same seed gives the same faults
in the same order. ``crash_rate`` kills the process with SIGKILL, for crash-recovery tests.
:class:`Faults` counts what was injected.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.core import (
    ConfigError,
    Message,
    ModelError,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    ToolContext,
    ToolSpec,
)
from keel.models import Model
from keel.tools import Tool, ToolResult

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Faults:
    """How many calls a wrapper saw and how many of each fault it injected."""

    calls: int = 0
    errors: int = 0
    rate_limits: int = 0
    server_errors: int = 0
    timeouts: int = 0
    delayed: int = 0
    delay_s: float = 0.0

    @property
    def injected(self) -> int:
        """Failures injected (latency alone is not a failure)."""
        return self.errors + self.rate_limits + self.server_errors + self.timeouts


def _check_rates(rates: dict[str, float]) -> None:
    for name, rate in rates.items():
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ConfigError(name, f"must be a probability between 0 and 1, not {rate!r}")
    if sum(rates.values()) > 1:
        used = " + ".join(name for name, rate in rates.items() if rate)
        raise ConfigError(used, f"the fault rates add up to {sum(rates.values()):g}; "
                          "together they must be at most 1")


def _check_latency(latency: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in latency)
    except (TypeError, ValueError):
        raise ConfigError("latency", f"must be (min_seconds, max_seconds), not "
                          f"{latency!r}") from None
    if not 0 <= low <= high:
        raise ConfigError("latency", f"must be (min, max) seconds with 0 <= min <= max, not "
                          f"{latency!r}")
    return low, high


def _crash() -> None:
    """Die the way a killed worker dies: no cleanup, no flush, no exit handlers."""
    os.kill(os.getpid(), signal.SIGKILL)


class _Dice:
    """One seeded source of faults: one draw picks the fault, another the latency."""

    def __init__(self, seed: int | str | None, rates: dict[str, float],
                 latency: tuple[float, float], sleep: Sleep, faults: Faults) -> None:
        _check_rates(rates)
        self.latency = _check_latency(latency)
        self.rates = rates
        self.random = random.Random(seed)
        self.sleep = sleep
        self.faults = faults

    async def roll(self) -> str | None:
        """Count the call, wait the injected latency, and name the fault to inject (the name
        of its rate, e.g. ``"timeout_rate"``), or None."""
        self.faults.calls += 1
        draw = self.random.random()
        low, high = self.latency
        delay = self.random.uniform(low, high) if high > 0 else 0.0
        fault: str | None = None
        edge = 0.0
        for name, rate in self.rates.items():
            edge += rate
            if draw < edge:
                fault = name
                break
        if delay > 0:
            self.faults.delayed += 1
            self.faults.delay_s += delay
            await self.sleep(delay)
        return fault


class FaultyModel(Model):
    """A model that fails the way real endpoints fail, at seeded random.

    Per request, with the given probabilities (at most 1 together): ``rate_limit_rate`` a 429
    (``retry_after`` set from ``retry_after``), ``server_error_rate`` a 500 or a 503,
    ``timeout_rate`` a timeout, ``error_rate`` a broken connection, ``crash_rate`` a SIGKILL of
    this process. Otherwise the wrapped model answers. ``latency=(min, max)`` adds a uniform
    random wait to every request (awaited with ``sleep``). All injected errors are retryable
    :class:`~keel.ModelError` s carrying ``model`` and, where a server would send one,
    ``status``.
    """

    def __init__(self, model: Model, *, seed: int | str | None, error_rate: float = 0.0,
                 rate_limit_rate: float = 0.0, server_error_rate: float = 0.0,
                 timeout_rate: float = 0.0, latency: tuple[float, float] = (0.0, 0.0),
                 retry_after: float | None = None, crash_rate: float = 0.0,
                 sleep: Sleep = asyncio.sleep) -> None:
        if retry_after is not None and (not isinstance(retry_after, int | float)
                                        or retry_after < 0):
            raise ConfigError("retry_after", f"must be seconds >= 0 or None, not "
                              f"{retry_after!r}")
        self.model = model
        self.name = model.name
        self.retry_after = retry_after
        self.faults = Faults()
        self._dice = _Dice(seed, {"crash_rate": crash_rate, "rate_limit_rate": rate_limit_rate,
                                  "server_error_rate": server_error_rate,
                                  "timeout_rate": timeout_rate, "error_rate": error_rate},
                           latency, sleep, self.faults)

    def __repr__(self) -> str:
        return f"FaultyModel({self.model!r})"

    async def _inject(self) -> None:
        fault = await self._dice.roll()
        if fault is None:
            return
        if fault == "crash_rate":
            _crash()
        name, faults = self.name, self.faults
        if fault == "rate_limit_rate":
            faults.rate_limits += 1
            raise ModelError(f"rate limited by {name} (429 rate_limit_error: injected fault)",
                             status=429, retry_after=self.retry_after, retryable=True,
                             model=name)
        if fault == "server_error_rate":
            faults.server_errors += 1
            status = self._dice.random.choice((500, 503))
            raise ModelError(f"{name} returned HTTP {status} (injected fault)", status=status,
                             retry_after=self.retry_after if status == 503 else None,
                             retryable=True, model=name)
        if fault == "timeout_rate":
            faults.timeouts += 1
            raise ModelError(f"request to {name} timed out (injected fault)", retryable=True,
                             model=name)
        faults.errors += 1
        raise ModelError(f"the connection to {name} broke off before the response was "
                         "complete (ConnectionResetError: injected fault)", retryable=True,
                         model=name)

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        await self._inject()
        return await self.model.request(messages, tools, settings)

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[ModelStreamEvent]:
        await self._inject()
        async for event in self.model.stream(messages, tools, settings):
            yield event

    async def aclose(self) -> None:
        await self.model.aclose()


class FaultyTool(Tool):
    """A tool that fails the way real tools fail, at seeded random (see :func:`faulty_tool`)."""

    def __init__(self, tool: Tool, *, seed: int | str | None, error_rate: float = 0.0,
                 timeout_rate: float = 0.0, latency: tuple[float, float] = (0.0, 0.0),
                 transient: bool = True, crash_rate: float = 0.0,
                 crash_point: Literal["before", "after"] = "before",
                 sleep: Sleep = asyncio.sleep) -> None:
        if crash_point not in ("before", "after"):
            raise ConfigError("crash_point", f"must be 'before' or 'after', not "
                              f"{crash_point!r}")
        self.tool = tool
        self.meta = tool.meta
        self.reconcile = tool.reconcile
        self.transient = transient
        self.crash_point = crash_point
        self.faults = Faults()
        rates = {"crash_rate": crash_rate, "timeout_rate": timeout_rate,
                 "error_rate": error_rate}
        self._dice = _Dice(seed, rates, latency, sleep, self.faults)

    def __repr__(self) -> str:
        return f"FaultyTool({self.tool!r})"

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tool.parameters

    async def call(self, arguments: str | dict[str, Any], ctx: ToolContext) -> ToolResult:
        fault = await self._dice.roll()
        name = self.meta.name
        if fault == "crash_rate":
            if self.crash_point == "after":  # the effect happens, its result is never recorded
                await self.tool.call(arguments, ctx)
            _crash()
        if fault == "timeout_rate":
            self.faults.timeouts += 1
            return ToolResult.fail(
                "timeout", f"{name} did not finish within {self.meta.timeout} s", retryable=True,
                hint="Try again, or with arguments that ask for less work.")
        if fault == "error_rate":
            self.faults.errors += 1
            if self.transient:
                return ToolResult.fail(
                    "tool_error", f"{name} failed: ConnectionError: injected fault",
                    retryable=False, transient="exception")
            return ToolResult.fail("tool_error", f"{name} failed: RuntimeError: injected fault",
                                   retryable=False)
        return await self.tool.call(arguments, ctx)


def faulty_tool(tool: Tool, *, seed: int | str | None, error_rate: float = 0.0,
                timeout_rate: float = 0.0, latency: tuple[float, float] = (0.0, 0.0),
                transient: bool = True, crash_rate: float = 0.0,
                crash_point: Literal["before", "after"] = "before",
                sleep: Sleep = asyncio.sleep) -> FaultyTool:
    """Wrap ``tool`` so that calls fail at seeded random.

    Per call, with the given probabilities: ``error_rate`` a ``tool_error`` as a real tool
    raising ``ConnectionError`` produces (``transient=True``; with ``transient=False`` one
    from a ``RuntimeError``, which is not retried), ``timeout_rate`` a ``timeout``,
    ``crash_rate`` a SIGKILL of this process (``crash_point="before"`` the call, or ``"after"``
    the wrapped tool ran, before its result can be recorded).
    ``latency=(min, max)`` adds a uniform random wait. ``.faults`` counts what was injected.
    """
    return FaultyTool(tool, seed=seed, error_rate=error_rate, timeout_rate=timeout_rate,
                      latency=latency, transient=transient, crash_rate=crash_rate,
                      crash_point=crash_point, sleep=sleep)
