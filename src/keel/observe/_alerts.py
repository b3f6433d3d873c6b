"""Alerts on the fleet's behaviour: rules over keel's metrics, evaluated periodically.

:class:`FleetAlerts` samples the metrics (the multi-process view under ``keel worker``),
keeps the samples of the longest window, and checks each rule over its window from the
difference between now and the sample at the window's start (counters are cumulative).
A rule that holds is sent **once per rule and window**: not again until its window has
passed since it was sent.

Each alert is journaled as a warning on the ``keel.observe.alerts`` logger (the structured
fields under ``fleet_alert``: a JSON log line, see ``keel.configure_json_logging``), counted
in ``keel_alerts_total{rule}`` and kept in :attr:`FleetAlerts.sent` (the last 1000); then it
goes to the notifier in the background, retried with exponential back-off, so a webhook that
is down never blocks a tick, a run or the worker.

A notifier is anything with ``async notify(alert)``; an alert that fails to arrive raises,
or counts up the notifier's ``failures`` attribute (as ``keel.guard.WebhookNotifier``
does): both are retried. :class:`FleetAlert` has the fields of ``keel.guard.Alert``
(``deviation``, ``reason``, ``to_dict()``...), so ``keel.guard``'s ``LogNotifier`` and
``WebhookNotifier`` take it as they are: the notifier seam is shared by duck typing, and
observe does not import guard (same layer).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from keel.core import ConfigError
from keel.observe._metrics import TASK_KINDS, instruments
from keel.observe._serve import scrape_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_log = logging.getLogger("keel.observe.alerts")
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetAlert:
    """One rule that held over its window."""

    rule: str
    reason: str
    value: float
    threshold: float
    window_s: float
    at: float
    evidence: Mapping[str, Any] = field(default_factory=dict)

    # the fields of keel.guard.Alert, so that its notifiers take a FleetAlert as it is
    @property
    def deviation(self) -> str:
        return f"fleet:{self.rule}"

    @property
    def actions(self) -> tuple[str, ...]:
        return ("alert",)

    agent = "*"
    run_id = "-"
    step_key = None
    tool = None
    tenant = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "deviation": self.deviation, "actions": list(self.actions),
                "reason": self.reason, "value": self.value, "threshold": self.threshold,
                "window_s": self.window_s, "at": self.at, "agent": self.agent,
                "run_id": self.run_id, "tenant": None, "evidence": dict(self.evidence)}


@runtime_checkable
class Notifier(Protocol):
    """Where fleet alerts go (the notifier seam of ``keel.guard`` takes the same call)."""

    async def notify(self, alert: Any) -> None: ...


# ------------------------------------------------------------------------------- rules


def _number(part: str, value: object, low: float, high: float, *,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or value < low or value > high or (low_open and value == low):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConfigError(part, f"must be a number in {span}, not {value!r}")
    return float(value)


def _window(part: str, minutes: object) -> float:
    return 60 * _number(part, minutes, 0, 7 * 24 * 60, low_open=True)


def _count(part: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(part, f"must be a whole number >= 0, not {value!r}")
    return value


class Window:
    """What a rule reads: the metric samples now and at its window's start."""

    def __init__(self, now: Series, then: Series) -> None:
        self.now, self.then = now, then

    def delta(self, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True,
              ) -> float:
        total = 0.0
        for (sample, labels), value in self.now.items():
            if sample == name:
                lab = dict(labels)
                if where(lab):
                    total += value - self.then.get((sample, labels), 0.0)
        return total

    def buckets(self, name: str, where: Callable[[dict[str, str]], bool]) -> list[tuple[float,
                                                                                     float]]:
        """(upper bound, count in the window) of a histogram, ascending."""
        per: dict[float, float] = {}
        for (sample, labels), value in self.now.items():
            if sample == f"{name}_bucket":
                lab = dict(labels)
                if where(lab):
                    le = float(lab["le"])
                    per[le] = per.get(le, 0.0) + value - self.then.get((sample, labels), 0.0)
        return sorted(per.items())

    def gauge(self, name: str, where: Callable[[dict[str, str]], bool]) -> float:
        return max((v for (s, labels), v in self.now.items() if s == name
                    and where(dict(labels))), default=0.0)


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative histogram buckets (as Prometheus' histogram_quantile:
    linear within a bucket; the last finite bound if it falls in +Inf)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, count
    return lower


def _agent_is(agent: str | None) -> Callable[[dict[str, str]], bool]:
    return (lambda _: True) if agent is None else (lambda lab: lab.get("agent") == agent)


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A rule: ``name`` (unique among the rules), ``minutes`` (its window)."""

    name: str
    minutes: float

    @property
    def window_s(self) -> float:
        return _window(f"rule {self.name!r}: minutes", self.minutes)

    def _check_name(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 80:
            raise ConfigError(f"{type(self).__name__}.name",
                              f"must be a non-empty string of up to 80 characters, not "
                              f"{self.name!r}")
        _ = self.window_s

    def evaluate(self, w: Window) -> tuple[float, str] | None:  # pragma: no cover - abstract
        """(value, reason) if the rule holds over ``w``, else None."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class SuccessRateBelow(Rule):
    """Completed runs / ended runs (completed, failed, cancelled, escalated) below
    ``threshold`` over the window, once at least ``min_runs`` ended (of ``agent``, or all)."""

    threshold: float
    min_runs: int = 10
    agent: str | None = None

    def __post_init__(self) -> None:
        self._check_name()
        _number(f"rule {self.name!r}: threshold", self.threshold, 0, 1)
        _count(f"rule {self.name!r}: min_runs", self.min_runs)

    def evaluate(self, w: Window) -> tuple[float, str] | None:
        agent = _agent_is(self.agent)
        ended: dict[str, float] = {}
        for status in ("completed", "failed", "cancelled", "escalated"):
            def where(lab: dict[str, str], status: str = status) -> bool:
                return agent(lab) and lab.get("status") == status
            ended[status] = w.delta("keel_runs_finished_total", where)
        total = sum(ended.values())
        if total < max(1, self.min_runs):
            return None
        rate = ended["completed"] / total
        if rate >= self.threshold:
            return None
        return rate, (f"success rate {rate:.1%} over the last {self.minutes:g} min "
                      f"({int(ended['completed'])} of {int(total)} runs) is below "
                      f"{self.threshold:.1%}")


_LATENCY = {"run": ("keel_run_duration_seconds", None), "model": ("keel_step_duration_seconds",
            "model"), "tool": ("keel_step_duration_seconds", "tool")}


@dataclass(frozen=True, kw_only=True)
class LatencyAbove(Rule):
    """The ``q`` quantile (0.95: p95) of run, model-step or tool-step durations
    (``of``) above ``seconds`` over the window, once ``min_count`` were seen."""

    seconds: float
    q: float = 0.95
    of: Literal["run", "model", "tool"] = "model"
    min_count: int = 10
    agent: str | None = None

    def __post_init__(self) -> None:
        self._check_name()
        _number(f"rule {self.name!r}: seconds", self.seconds, 0, 86_400, low_open=True)
        _number(f"rule {self.name!r}: q", self.q, 0, 1, low_open=True)
        _count(f"rule {self.name!r}: min_count", self.min_count)
        if self.of not in _LATENCY:
            raise ConfigError(f"rule {self.name!r}: of", f"must be one of {sorted(_LATENCY)}, "
                              f"not {self.of!r}")

    def evaluate(self, w: Window) -> tuple[float, str] | None:
        metric, kind = _LATENCY[self.of]
        agent = _agent_is(self.agent)
        buckets = w.buckets(metric, lambda lab: agent(lab) and (kind is None
                                                                or lab.get("kind") == kind))
        if not buckets or buckets[-1][1] < max(1, self.min_count):
            return None
        value = quantile(self.q, buckets)
        if value is None or value <= self.seconds:
            return None
        return value, (f"p{self.q * 100:g} {self.of} latency {value:.3g}s over the last "
                       f"{self.minutes:g} min is above {self.seconds:g}s")


@dataclass(frozen=True, kw_only=True)
class ErrorRateAbove(Rule):
    """Failed model requests (``of="model"``) or tool calls (``of="tool"``) over all of
    them above ``threshold`` over the window, once ``min_calls`` were made."""

    threshold: float
    of: Literal["model", "tool"] = "tool"
    min_calls: int = 10
    agent: str | None = None

    def __post_init__(self) -> None:
        self._check_name()
        _number(f"rule {self.name!r}: threshold", self.threshold, 0, 1)
        _count(f"rule {self.name!r}: min_calls", self.min_calls)
        if self.of not in ("model", "tool"):
            raise ConfigError(f"rule {self.name!r}: of", f"must be 'model' or 'tool', not "
                              f"{self.of!r}")

    def evaluate(self, w: Window) -> tuple[float, str] | None:
        agent = _agent_is(self.agent)
        if self.of == "model":
            calls = w.delta("keel_model_requests_total", agent)
            failed = w.delta("keel_model_requests_total",
                             lambda lab: agent(lab) and lab.get("outcome") == "error")
        else:
            calls = w.delta("keel_tool_calls_total", agent)
            failed = w.delta("keel_tool_failures_total", agent)
        if calls < max(1, self.min_calls):
            return None
        rate = failed / calls
        if rate <= self.threshold:
            return None
        return rate, (f"{self.of} error rate {rate:.1%} over the last {self.minutes:g} min "
                      f"({int(failed)} of {int(calls)}) is above {self.threshold:.1%}")


@dataclass(frozen=True, kw_only=True)
class CostSpike(Rule):
    """Spend over the window above ``factor`` times the spend per window over the
    ``baseline_minutes`` before it (and above ``min_usd``)."""

    factor: float
    baseline_minutes: float = 60
    min_usd: float = 0.0

    def __post_init__(self) -> None:
        self._check_name()
        _number(f"rule {self.name!r}: factor", self.factor, 1, 1e6, low_open=True)
        _window(f"rule {self.name!r}: baseline_minutes", self.baseline_minutes)
        _number(f"rule {self.name!r}: min_usd", self.min_usd, 0, 1e12)
        if self.baseline_minutes < self.minutes:
            raise ConfigError(f"rule {self.name!r}: baseline_minutes",
                              f"must be at least the window ({self.minutes:g} min), not "
                              f"{self.baseline_minutes!r}")

    def evaluate(self, w: Window) -> tuple[float, str] | None:  # needs the baseline too
        raise NotImplementedError

    def compare(self, recent: float, before: float) -> tuple[float, str] | None:
        per_window = before * self.minutes / self.baseline_minutes
        if recent <= self.min_usd or recent <= self.factor * per_window:
            return None
        return recent, (f"spend ${recent:.4g} over the last {self.minutes:g} min is above "
                        f"{self.factor:g}x the usual ${per_window:.4g} per {self.minutes:g} min")


@dataclass(frozen=True, kw_only=True)
class ApprovalsOverdue(Rule):
    """More than ``more_than`` waiting tasks of ``kind`` past their due time, or the oldest
    waiting longer than ``older_than_minutes`` (when given). Read from the human-task gauges
    (``refresh_human_tasks``); ``minutes`` is how often it may be sent again."""

    more_than: int = 0
    older_than_minutes: float | None = None
    kind: Literal["approval", "escalation"] = "approval"

    def __post_init__(self) -> None:
        self._check_name()
        _count(f"rule {self.name!r}: more_than", self.more_than)
        if self.older_than_minutes is not None:
            _window(f"rule {self.name!r}: older_than_minutes", self.older_than_minutes)
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"rule {self.name!r}: kind", f"must be one of {TASK_KINDS}, "
                              f"not {self.kind!r}")

    def evaluate(self, w: Window) -> tuple[float, str] | None:
        kind = self.kind
        overdue = w.gauge("keel_human_tasks_overdue", lambda lab: lab.get("kind") == kind)
        if overdue > self.more_than:
            return overdue, f"{int(overdue)} {kind}s waiting past their due time"
        if self.older_than_minutes is not None:
            age = w.gauge("keel_human_task_oldest_age_seconds",
                          lambda lab: lab.get("kind") == kind)
            if age > 60 * self.older_than_minutes:
                return age, (f"the oldest waiting {kind} has waited {age / 60:.1f} min, more "
                             f"than {self.older_than_minutes:g} min")
        return None


# ---------------------------------------------------------------------------- evaluator


def _threshold(rule: Rule) -> float:
    for attr in ("threshold", "seconds", "factor", "more_than"):
        value = getattr(rule, attr, None)
        if value is not None:
            return float(value)
    return 0.0


def _snapshot(registry: CollectorRegistry | None) -> Series:
    series: Series = {}
    for family in scrape_registry(registry).collect():
        if not family.name.startswith("keel_"):
            continue
        for s in family.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid")))
            series[key] = series.get(key, 0.0) + s.value
    return series


class FleetAlerts:
    """Evaluates ``rules`` over the metrics of ``registry`` (default: what ``/metrics``
    serves, the multi-process view when ``PROMETHEUS_MULTIPROC_DIR`` is set) each time
    :meth:`evaluate` is called (``keel worker`` calls it every ``--alert-interval``
    seconds), and sends what holds to ``notifier`` (always to the log as well).

    ``attempts`` and ``backoff`` (seconds, doubled each time, with jitter, at most 60) govern
    the retries of a notifier that fails. Bad rules (a non-rule, duplicate names, values out
    of range) raise :class:`keel.ConfigError` here.
    """

    def __init__(self, rules: Iterable[Rule], *, notifier: Notifier | None = None,
                 registry: CollectorRegistry | None = None, attempts: int = 5,
                 backoff: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        if isinstance(rules, Rule) or not isinstance(rules, Iterable):
            raise ConfigError("FleetAlerts.rules", "must be a list of rules "
                              "(SuccessRateBelow, LatencyAbove, ErrorRateAbove, CostSpike, "
                              "ApprovalsOverdue)")
        self.rules = tuple(rules)
        names: set[str] = set()
        for rule in self.rules:
            if not isinstance(rule, Rule) or type(rule) is Rule:
                raise ConfigError("FleetAlerts.rules", f"{rule!r} is not a rule")
            if rule.name in names:
                raise ConfigError("FleetAlerts.rules", f"two rules are named {rule.name!r}: "
                                  "names say which alert was sent, make them unique")
            names.add(rule.name)
        if notifier is not None and not isinstance(notifier, Notifier):
            raise ConfigError("FleetAlerts.notifier", f"must have an async notify(alert) "
                              f"method, not {type(notifier).__name__}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) \
                or not 1 <= attempts <= 20:
            raise ConfigError("FleetAlerts.attempts", f"must be 1 to 20, not {attempts!r}")
        self.backoff = _number("FleetAlerts.backoff", backoff, 0, 60)
        self.attempts = attempts
        self.notifier = notifier
        self.registry = registry
        self.clock = clock
        self.sent: deque[FleetAlert] = deque(maxlen=1000)
        #: alerts the notifier never took (after every attempt)
        self.undelivered = 0
        self._last: dict[str, float] = {}
        longest = max((max(r.window_s, 60 * getattr(r, "baseline_minutes", 0) + r.window_s)
                       for r in self.rules), default=0.0)
        self._keep = longest
        self._history: deque[tuple[float, Series]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = instruments(registry).alerts

    def __repr__(self) -> str:
        return f"FleetAlerts({[r.name for r in self.rules]})"

    def _at(self, when: float) -> Series:
        """The newest sample taken at or before ``when`` (none: counting from zero)."""
        found: Series = {}
        for t, series in self._history:
            if t > when:
                break
            found = series
        return found

    async def evaluate(self) -> list[FleetAlert]:
        """Sample the metrics, check every rule, send the new alerts (in the background);
        returns the alerts sent by this call."""
        now = self.clock()
        current = _snapshot(self.registry)
        self._history.append((now, current))
        while len(self._history) > 1 and self._history[1][0] <= now - self._keep:
            self._history.popleft()
        fired: list[FleetAlert] = []
        for rule in self.rules:
            window = rule.window_s
            last = self._last.get(rule.name)
            if last is not None and now - last < window:
                continue  # once per rule and window
            found = self._check(rule, now, current)
            if found is None:
                continue
            value, reason = found
            alert = FleetAlert(rule=rule.name, reason=reason, value=value,
                               threshold=_threshold(rule), window_s=window, at=now,
                               evidence={"kind": type(rule).__name__})
            self._last[rule.name] = now
            fired.append(alert)
            self._journal(alert)
        return fired

    def _check(self, rule: Rule, now: float, current: Series) -> tuple[float, str] | None:
        if isinstance(rule, CostSpike):
            start = now - rule.window_s
            recent = Window(current, self._at(start)).delta("keel_cost_usd_total")
            base = self._at(start - 60 * rule.baseline_minutes)
            if not base and self._history[0][0] > start - 60 * rule.baseline_minutes:
                return None  # no baseline yet: too early to call anything a spike
            before = Window(self._at(start), base).delta("keel_cost_usd_total")
            return rule.compare(recent, before)
        return rule.evaluate(Window(current, self._at(now - rule.window_s)))

    def _journal(self, alert: FleetAlert) -> None:
        self.sent.append(alert)
        _log.warning("fleet alert %s: %s", alert.rule, alert.reason,
                     extra={"fleet_alert": alert.to_dict()})
        self._counter.labels(alert.rule[:80]).inc()
        if self.notifier is not None:
            task = asyncio.get_running_loop().create_task(self._deliver(alert))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, alert: FleetAlert) -> None:
        notifier = self.notifier
        assert notifier is not None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            before = getattr(notifier, "failures", None)
            try:
                await notifier.notify(alert)
                failed = isinstance(before, int) and getattr(notifier, "failures", 0) > before
                problem = "it counted a failure"
            except Exception as exc:  # a notifier's failure is never the worker's
                failed, problem = True, f"{type(exc).__name__}: {exc}"
            if not failed:
                return
            if attempt == self.attempts:
                break
            _log.info("fleet alert %s: the notifier did not take it (%s); trying again in "
                      "%.1fs", alert.rule, problem, delay)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(60.0, delay * 2)
        self.undelivered += 1
        _log.warning("fleet alert %s: the notifier %r did not take it after %d attempts",
                     alert.rule, notifier, self.attempts,
                     extra={"fleet_alert": alert.to_dict()})

    async def drain(self, wait: float | None = None) -> None:
        """Wait for the deliveries in flight (up to ``wait`` seconds, then cancel them)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=wait)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
