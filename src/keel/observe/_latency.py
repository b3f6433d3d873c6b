"""Latency budgets per turn, and where a run's time went: the model, the tools, keel.

:class:`LatencyBudget` is middleware. It measures, for each run it sees, the time spent
inside model requests and inside tool calls (wall-clock time with at least one call running,
so parallel calls are not counted twice), and at the run's end reports
``keel_s = wall_s - model_s - tools_s``: everything else (the journal's writes, guards,
middleware, the loop itself, retry back-off waits). A *turn* is one model request and the
tool calls it asked for (the steps keyed ``<agent>/turn:N/...``).

With ``turn_seconds`` set, each turn has a time budget from the start of its model request:

* a model request still running when the turn's time is up is cancelled and the run fails
  with :class:`~keel.BudgetExceeded` (``limit="turn_seconds"``; an agent's
  ``EscalationPolicy`` may hand it to a person, as for any budget);
* a tool call gets what is left of the turn; one that does not finish in it, or that starts
  after the time is up, is recorded as a ``budget_exceeded`` observation (not retryable, and
  not retried by :class:`~keel.Retry`, which would only spend more of the turn), so the model
  answers with what it has on the next turn, which has a budget of its own.

The report (:class:`RunTimings`) is handed to ``on_report`` and kept, for the last ``keep``
runs, in :meth:`LatencyBudget.timings`. Put it last in an agent's ``middleware`` so that it
measures the calls themselves (inside retries, guards and other middleware). Times cover the
execution that ran in this process (a resumed run reports the part it ran). A sub-agent run
inside a tool counts as tool time of its parent; give it its own LatencyBudget to see its
parts.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from keel.core import BudgetExceeded, ConfigError, ModelResponse
from keel.runtime import (
    Middleware,
    ModelNext,
    ModelRequestInput,
    RunEndInput,
    RunStartInput,
    ToolCallInput,
    ToolNext,
)
from keel.tools import ToolResult


@dataclass(frozen=True, slots=True, kw_only=True)
class RunTimings:
    """Where one run's time went, in seconds. ``turns`` maps each turn's key
    (``<agent>/turn:N``) to ``(model_s, tools_s)``; ``over_budget`` lists the turns that ran
    out of their ``turn_seconds``."""

    run_id: str
    agent: str
    status: str
    wall_s: float
    model_s: float
    tools_s: float
    keel_s: float
    model_calls: int
    tool_calls: int
    turns: dict[str, tuple[float, float]] = field(default_factory=dict)
    over_budget: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "agent": self.agent, "status": self.status,
                "wall_s": self.wall_s, "model_s": self.model_s, "tools_s": self.tools_s,
                "keel_s": self.keel_s, "model_calls": self.model_calls,
                "tool_calls": self.tool_calls,
                "turns": {k: list(v) for k, v in self.turns.items()},
                "over_budget": list(self.over_budget)}


class _Run:
    __slots__ = ("active", "agent", "model_calls", "model_s", "over", "since", "started",
                 "tool_calls", "tools_s", "turn_model", "turn_started", "turn_tools")

    def __init__(self, agent: str, now: float) -> None:
        self.agent = agent
        self.started = now
        self.model_s = 0.0
        self.tools_s = 0.0
        self.model_calls = 0
        self.tool_calls = 0
        self.active = 0  # tool calls running now
        self.since = 0.0  # when the running tool calls began
        self.turn_started: dict[str, float] = {}
        self.turn_model: dict[str, float] = {}
        self.turn_tools: dict[str, float] = {}
        self.over: list[str] = []


def _turn_of(step_key: str) -> str:
    """``a/turn:3/model`` and ``a/turn:3/tool:x#0`` both give ``a/turn:3``."""
    head, _, tail = step_key.rpartition("/")
    return head if tail == "model" or tail.startswith("tool:") else step_key


class LatencyBudget(Middleware):
    """Measure each run's time in model, tools and keel; optionally give each turn a time
    budget (``turn_seconds``). See the module docstring."""

    def __init__(self, turn_seconds: float | None = None, *,
                 on_report: Callable[[RunTimings], None] | None = None, keep: int = 1000,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if turn_seconds is not None and (isinstance(turn_seconds, bool) or not isinstance(
                turn_seconds, int | float) or not 0 < turn_seconds < float("inf")):
            raise ConfigError("LatencyBudget.turn_seconds", f"must be a number of seconds > 0 "
                                                            f"or None, not {turn_seconds!r}")
        if on_report is not None and not callable(on_report):
            raise ConfigError("LatencyBudget.on_report", "must be a function of a RunTimings")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigError("LatencyBudget.keep", f"must be a whole number >= 0, not {keep!r}")
        self.turn_seconds = None if turn_seconds is None else float(turn_seconds)
        self.on_report = on_report
        self.keep = keep
        self.clock = clock
        self._runs: dict[str, _Run] = {}
        self._reports: OrderedDict[str, RunTimings] = OrderedDict()

    def __repr__(self) -> str:
        return f"LatencyBudget(turn_seconds={self.turn_seconds!r})"

    def timings(self, run_id: str) -> RunTimings | None:
        """The report of a run that ended in this process (the last ``keep`` runs)."""
        return self._reports.get(run_id)

    def _run(self, run_id: str, agent: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(agent, self.clock())
        return run

    async def on_run_start(self, inp: RunStartInput) -> None:
        self._runs[inp.run_id] = _Run(inp.agent, self.clock())

    async def on_run_end(self, inp: RunEndInput) -> None:
        run = self._runs.pop(inp.run_id, None)
        if run is None:
            return
        wall = self.clock() - run.started
        turns = {k: (round(run.turn_model.get(k, 0.0), 6), round(run.turn_tools.get(k, 0.0), 6))
                 for k in run.turn_started}
        report = RunTimings(
            run_id=inp.run_id, agent=run.agent, status=inp.status, wall_s=round(wall, 6),
            model_s=round(run.model_s, 6), tools_s=round(run.tools_s, 6),
            keel_s=round(max(0.0, wall - run.model_s - run.tools_s), 6),
            model_calls=run.model_calls, tool_calls=run.tool_calls, turns=turns,
            over_budget=tuple(run.over))
        if self.keep:
            self._reports[inp.run_id] = report
            while len(self._reports) > self.keep:
                self._reports.popitem(last=False)
        if self.on_report is not None:
            self.on_report(report)

    def _over(self, run: _Run, turn: str) -> None:
        if turn not in run.over:
            run.over.append(turn)

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        run = self._run(inp.run_id, inp.agent)
        turn = _turn_of(inp.step_key)
        t0 = self.clock()
        started = run.turn_started.setdefault(turn, t0)
        run.model_calls += 1
        try:
            if self.turn_seconds is None:
                return await next(inp)
            left = started + self.turn_seconds - t0
            try:
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left) as scope:
                    response = await next(inp)
                if self.clock() - started > self.turn_seconds:
                    self._over(run, turn)  # answered late (by the clock): kept, reported
                return response
            except TimeoutError:
                if left > 0 and not scope.expired():
                    raise  # the call's own timeout, not the turn's
                self._over(run, turn)
                spent = self.clock() - started
                raise BudgetExceeded(
                    f"budget exceeded: turn_seconds used {spent:.3f} of {self.turn_seconds:g} "
                    f"in {turn}. Raise LatencyBudget(turn_seconds=...) if the model needs "
                    "longer", limit="turn_seconds", used=round(spent, 3),
                    allowed=self.turn_seconds, run_id=inp.run_id or None,
                    step_key=inp.step_key or None) from None
        finally:
            spent = self.clock() - t0
            run.model_s += spent
            run.turn_model[turn] = run.turn_model.get(turn, 0.0) + spent

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        run = self._run(inp.run_id, inp.agent)
        turn = _turn_of(inp.step_key)
        t0 = self.clock()
        started = run.turn_started.setdefault(turn, t0)
        run.tool_calls += 1
        if run.active == 0:
            run.since = t0
        run.active += 1
        try:
            if self.turn_seconds is None:
                return await next(inp)
            return await self._bounded(inp, next, run, turn, started + self.turn_seconds - t0)
        finally:
            now = self.clock()
            run.turn_tools[turn] = run.turn_tools.get(turn, 0.0) + (now - t0)
            run.active -= 1
            if run.active == 0:
                run.tools_s += now - run.since

    async def _bounded(self, inp: ToolCallInput, next: ToolNext, run: _Run, turn: str,
                       left: float) -> ToolResult:
        message = (f"{inp.tool.name} was stopped: the turn's time budget "
                   f"({self.turn_seconds:g} s, LatencyBudget) is used up")
        if left <= 0:
            self._over(run, turn)
            return ToolResult.fail("budget_exceeded", message, retryable=False,
                                   hint="Answer with what you have.")
        try:
            async with asyncio.timeout(left) as scope:
                return await next(inp)
        except TimeoutError:
            if not scope.expired():
                raise
            self._over(run, turn)
            return ToolResult.fail("budget_exceeded", message, retryable=False,
                                   hint="Answer with what you have.")
