"""Per-run budgets: steps, tokens, cost and wall time, checked before every call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from keel.core import BudgetExceeded, ConfigError, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """Limits for one run. ``None`` switches one limit off; :meth:`unlimited` all of them.

    Defaults are generous: they stop runaway loops and bills, not normal work. ``max_steps``
    counts journal steps that do work (model turns and tool calls); ``max_wall_seconds`` counts
    time spent running (time suspended or between a crash and a resume does not count).
    """

    max_steps: int | None = 200
    max_tokens: int | None = 2_000_000
    max_cost_usd: float | None = 10.0
    max_wall_seconds: float | None = 1800.0

    def __post_init__(self) -> None:
        for field_name in ("max_steps", "max_tokens", "max_cost_usd", "max_wall_seconds"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ConfigError(field_name, f"must be a positive number or None, got {value!r}")

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(max_steps=None, max_tokens=None, max_cost_usd=None, max_wall_seconds=None)

    def scaled(self, fraction: float) -> Budget:
        """This budget times ``fraction`` (0 < fraction <= 1), each limit kept positive."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not (
                0 < fraction <= 1):
            raise ConfigError("budget share", f"a fraction must be in (0, 1], not {fraction!r}")
        return Budget(
            max_steps=None if self.max_steps is None else max(1, int(self.max_steps * fraction)),
            max_tokens=None if self.max_tokens is None else max(
                1, int(self.max_tokens * fraction)),
            max_cost_usd=None if self.max_cost_usd is None else self.max_cost_usd * fraction,
            max_wall_seconds=None if self.max_wall_seconds is None
            else self.max_wall_seconds * fraction)

    def capped(self, other: Budget) -> Budget:
        """Each limit the smaller of this budget's and ``other``'s."""
        def low(a: float | None, b: float | None) -> Any:
            return b if a is None else a if b is None else min(a, b)
        return Budget(max_steps=low(self.max_steps, other.max_steps),
                      max_tokens=low(self.max_tokens, other.max_tokens),
                      max_cost_usd=low(self.max_cost_usd, other.max_cost_usd),
                      max_wall_seconds=low(self.max_wall_seconds, other.max_wall_seconds))


class BudgetTracker:
    """What a run has used so far, against its :class:`Budget`."""

    __slots__ = ("_started", "budget", "cost_usd", "input_tokens", "output_tokens", "parent",
                 "prior_seconds", "requests", "steps")

    def __init__(self, budget: Budget, *, parent: BudgetTracker | None = None) -> None:
        self.budget = budget
        #: A sub-agent's or pattern step's tracker counts into its parent's too, and a step
        #: must fit both.
        self.parent = parent
        self.steps = 0
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.prior_seconds = 0.0
        self._started = time.monotonic()

    @property
    def usage(self) -> Usage:
        return Usage(requests=self.requests, input_tokens=self.input_tokens,
                     output_tokens=self.output_tokens, cost_usd=self.cost_usd)

    @property
    def elapsed(self) -> float:
        return self.prior_seconds + (time.monotonic() - self._started)

    def remaining(self) -> Budget | None:
        """What is left of every limit, or None when one is already used up."""
        b = self.budget
        tokens = self.input_tokens + self.output_tokens
        left = (None if b.max_steps is None else b.max_steps - self.steps,
                None if b.max_tokens is None else b.max_tokens - tokens,
                None if b.max_cost_usd is None else b.max_cost_usd - self.cost_usd,
                None if b.max_wall_seconds is None else b.max_wall_seconds - self.elapsed)
        if any(v is not None and v <= 0 for v in left):
            return None
        mine = Budget(max_steps=left[0], max_tokens=left[1],
                      max_cost_usd=left[2], max_wall_seconds=left[3])
        if self.parent is None:
            return mine
        above = self.parent.remaining()
        return None if above is None else mine.capped(above)

    def child(self, budget: Budget | None = None) -> BudgetTracker:
        """A tracker for a sub-agent or a pattern step: ``budget`` (or all that is left) capped
        by what is left of this one; what the child uses counts here too."""
        left = self.remaining()
        if left is None:  # nothing left: the child's first step fails with our limit
            return BudgetTracker(budget or self.budget, parent=self)
        return BudgetTracker(left if budget is None else budget.capped(left), parent=self)

    def check(self, kind: str, *, run_id: str, step_key: str) -> None:
        """Raise :class:`BudgetExceeded` if one more ``kind`` step would cross a limit (this
        tracker's or any parent's)."""
        if self.parent is not None:
            self.parent.check(kind, run_id=run_id, step_key=step_key)
        b = self.budget
        if b.max_steps is not None and self.steps + 1 > b.max_steps:
            self._fail("steps", self.steps, b.max_steps, run_id, step_key)
        tokens = self.input_tokens + self.output_tokens
        if b.max_tokens is not None and tokens >= b.max_tokens:
            self._fail("tokens", tokens, b.max_tokens, run_id, step_key)
        if b.max_cost_usd is not None and self.cost_usd >= b.max_cost_usd:
            self._fail("cost_usd", self.cost_usd, b.max_cost_usd, run_id, step_key)
        if b.max_wall_seconds is not None and self.elapsed >= b.max_wall_seconds:
            self._fail("wall_seconds", round(self.elapsed, 3), b.max_wall_seconds, run_id,
                       step_key)

    def record(self, usage: Usage | None, *, replayed_latency_ms: float = 0.0) -> None:
        if self.parent is not None:
            self.parent.record(usage, replayed_latency_ms=replayed_latency_ms)
        self.steps += 1
        if usage is not None:
            self.requests += usage.requests
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cost_usd += usage.cost_usd
        if replayed_latency_ms:
            self.prior_seconds += replayed_latency_ms / 1000.0

    @staticmethod
    def _fail(limit: str, used: float, allowed: float, run_id: str, step_key: str) -> None:
        raise BudgetExceeded(
            f"budget exceeded: {limit} used {used} of {allowed}. Raise the limit with "
            f"Agent(budget=Budget({_FIELD[limit]}=...)) if this run legitimately needs more",
            limit=limit, used=used, allowed=allowed, run_id=run_id, step_key=step_key)


_FIELD = {"steps": "max_steps", "tokens": "max_tokens", "cost_usd": "max_cost_usd",
          "wall_seconds": "max_wall_seconds"}
