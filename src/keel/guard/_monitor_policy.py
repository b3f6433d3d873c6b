"""What the behavioural monitor watches for and what it does when it sees it.

A :class:`MonitorPolicy` holds the thresholds of each deviation and the actions configured
for it. Every threshold has two parts: an *absolute* limit that applies from the first run
(so a monitor with no baseline yet still stops an obvious burst or loop), and a *relative*
limit, a multiple of the agent's baseline, that applies once the baseline has seen
``warmup_runs`` ordinary runs. Relative limits have a floor, so an agent whose normal is
"one call, ten records" is not flagged for reading twenty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias, get_args

from keel.core import ConfigError

#: What the monitor can notice.
Deviation: TypeAlias = Literal["new_tool", "burst", "volume", "cost", "loop", "errors",
                               "latency"]
#: What it can do about it.
Action: TypeAlias = Literal["alert", "throttle", "approve", "disable", "escalate"]

DEVIATIONS: tuple[Deviation, ...] = get_args(Deviation)
ACTIONS: tuple[Action, ...] = get_args(Action)

#: The actions taken when a policy does not say otherwise.
DEFAULT_ACTIONS: Mapping[Deviation, tuple[Action, ...]] = MappingProxyType({
    "new_tool": ("alert", "approve"),
    "burst": ("alert", "throttle"),
    "volume": ("alert", "escalate"),
    "cost": ("alert", "escalate"),
    "loop": ("alert", "escalate"),
    "errors": ("alert",),
    "latency": ("alert",),
})


def _number(name: str, value: object, *, minimum: float = 0.0, strict: bool = True,
            optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number, not {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(name, f"must be a finite number, not {value}")
    if value < minimum or (strict and value == minimum):
        sign = ">" if strict else ">="
        raise ConfigError(name, f"must be {sign} {minimum:g}, not {value}")


def _count(name: str, value: object, *, minimum: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be a whole number, not {value!r}")
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, not {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorPolicy:
    """Thresholds and actions of a :class:`~keel.guard.Monitor`.

    Baseline: ``warmup_runs`` ordinary runs of an agent (per tenant when the monitor knows
    it) before relative limits and the new-tool check apply.

    - ``burst``: more than ``burst_calls`` calls to one tool within ``burst_window``
      seconds in a run (absolute); after warm-up also more than ``burst_factor`` times the
      most calls to that tool any baseline run made (at least ``burst_floor``).
    - ``loop``: the same call (tool and arguments) made ``loop_repeats`` times in a run.
    - ``volume``: a run reading more than ``volume_factor`` times the usual bytes or records
      from a tool (the baseline mean per run, floors ``volume_floor_bytes`` and
      ``volume_floor_records``); ``max_bytes`` / ``max_records`` per run are absolute.
    - ``cost``: a run costing more than ``cost_factor`` times the baseline mean (at least
      ``cost_floor_usd``); ``max_cost_usd`` per run is absolute.
    - ``errors``: more than ``errors_factor`` times the usual failed calls per run (at least
      ``errors_floor``).
    - ``latency``: a call slower than ``latency_factor`` times its tool's mean (at least
      ``latency_floor`` seconds).
    - ``new_tool``: a tool no baseline run of this agent used.

    ``actions`` maps a deviation to what is done (merged over :data:`DEFAULT_ACTIONS`; an
    empty tuple switches that deviation off). ``throttle_interval`` seconds are kept between
    an agent's calls to a throttled tool for ``throttle_for`` seconds; a call that would wait
    more than ``throttle_max_wait`` is refused (``rate_limited``). ``approve`` makes the next
    ``approve_calls`` high-impact calls (tools not declared ``read``) of the agent wait for a
    person; ``disable`` forces the tool's circuit breaker open for ``disable_for`` seconds.
    """

    warmup_runs: int = 20
    burst_calls: int = 50
    burst_window: float = 60.0
    burst_factor: float = 5.0
    burst_floor: int = 10
    loop_repeats: int = 8
    volume_factor: float = 100.0
    volume_floor_bytes: int = 100_000
    volume_floor_records: int = 1_000
    max_bytes: int | None = None
    max_records: int | None = None
    cost_factor: float = 10.0
    cost_floor_usd: float = 0.05
    max_cost_usd: float | None = None
    errors_factor: float = 5.0
    errors_floor: int = 5
    latency_factor: float = 20.0
    latency_floor: float = 10.0
    throttle_interval: float = 2.0
    throttle_for: float = 300.0
    throttle_max_wait: float = 10.0
    approve_calls: int = 3
    disable_for: float = 300.0
    actions: Mapping[Deviation, tuple[Action, ...]] = field(
        default_factory=lambda: dict(DEFAULT_ACTIONS))

    def __post_init__(self) -> None:
        for name in ("warmup_runs", "burst_calls", "burst_floor", "loop_repeats",
                     "volume_floor_bytes", "volume_floor_records", "errors_floor",
                     "approve_calls"):
            _count(name, getattr(self, name))
        for name in ("max_bytes", "max_records"):
            _count(name, getattr(self, name), optional=True)
        _count("loop_repeats", self.loop_repeats, minimum=2)
        for name in ("burst_window", "burst_factor", "volume_factor", "cost_factor",
                     "errors_factor", "latency_factor", "latency_floor", "throttle_interval",
                     "throttle_for", "disable_for"):
            _number(name, getattr(self, name))
        for name in ("burst_factor", "volume_factor", "cost_factor", "errors_factor",
                     "latency_factor"):
            _number(name, getattr(self, name), minimum=1.0, strict=False)
        _number("cost_floor_usd", self.cost_floor_usd, strict=False)
        _number("throttle_max_wait", self.throttle_max_wait, strict=False)
        _number("max_cost_usd", self.max_cost_usd, optional=True)
        object.__setattr__(self, "actions", _merge_actions(self.actions))

    def actions_for(self, deviation: Deviation) -> tuple[Action, ...]:
        return self.actions.get(deviation, ())


def _merge_actions(given: object) -> Mapping[Deviation, tuple[Action, ...]]:
    if not isinstance(given, Mapping):
        raise ConfigError("actions", f"must map a deviation to a tuple of actions, not "
                                     f"{type(given).__name__}")
    merged: dict[Deviation, tuple[Action, ...]] = dict(DEFAULT_ACTIONS)
    for kind, acts in given.items():
        where = f"actions[{kind!r}]"
        if kind not in DEVIATIONS:
            raise ConfigError(where, f"unknown deviation; expected one of "
                                     f"{', '.join(DEVIATIONS)}")
        if isinstance(acts, str) or not isinstance(acts, tuple | list | frozenset | set):
            raise ConfigError(where, f"must be a tuple of actions, not {acts!r}")
        seen: list[Action] = []
        for act in acts:
            if act not in ACTIONS:
                raise ConfigError(where, f"unknown action {act!r}; expected one of "
                                         f"{', '.join(ACTIONS)}")
            if act in seen:
                raise ConfigError(where, f"action {act!r} is listed twice")
            seen.append(act)
        if "escalate" in seen and "approve" in seen:
            raise ConfigError(where, "'escalate' hands the run to a person now, 'approve' "
                                     "lets it go on with approvals: choose one")
        merged[kind] = tuple(seen)
    return MappingProxyType(merged)


__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "DEVIATIONS", "Action", "Deviation", "MonitorPolicy"]
