"""Prometheus metrics for runs, steps, models, tools, retries, breakers and human tasks.

:class:`Metrics` is middleware. It counts what passes through the run, model and tool hooks
into ``prometheus_client`` instruments (one set per registry, shared by every agent that
records into it) and keeps nothing per run but the start time and tenant of the runs in
flight. Labels are bounded: agent, model, tool, error type, status and tenant, never a run
id; past ``max_label_values`` distinct values per label, new ones are counted as ``other``.

What it records (all names start ``keel_``):

* ``runs_started_total{agent,tenant}`` (fresh runs), ``runs_resumed_total{agent,tenant}``,
  ``runs_finished_total{agent,tenant,status}`` with status ``completed``, ``failed``,
  ``cancelled``, ``escalated``, ``awaiting_approval`` or ``suspended``; success rate is
  ``completed / (completed + failed + cancelled + escalated)``.
* ``run_duration_seconds{agent,status}``: a run's time in this process, from its start (or
  resume) hook to its end hook.
* ``step_duration_seconds{agent,kind}`` (``kind`` model or tool; retries and back-off
  included: what the run waited for), ``model_latency_seconds{model}`` and
  ``time_to_first_token_seconds{model}`` (streamed requests only: the first text or tool-call
  delta the endpoint sent in the attempt that answered).
* ``model_requests_total{agent,model,outcome}``, ``model_failures_total{agent,model,
  error_type}``, ``tokens_total{agent,model,tenant,direction}``,
  ``cost_usd_total{agent,model,tenant}``.
* ``tool_calls_total{agent,tool}``, ``tool_failures_total{agent,tool,error_type}``.
* ``retries_total{agent,kind,name}`` (one per failed attempt that is retried: the journal's
  ``attempt`` entries).
* ``circuit_breaker_state{agent,breaker}`` (0 closed, 1 half-open, 2 open), set through
  :meth:`Metrics.breaker_changed` (``keel.Agent`` wires the default breaker to it).
* ``feedback_total{agent,thumbs}`` (``thumbs`` up, down or none: a score or comment only),
  counted by :func:`count_feedback` where feedback is recorded (the server's
  ``POST /v1/runs/{id}/feedback`` does it).
* ``human_tasks_waiting{kind}``, ``human_tasks_overdue{kind}`` and
  ``human_task_oldest_age_seconds{kind}``, refreshed from a store by
  :func:`refresh_human_tasks` (``keel worker`` does it on every alert tick).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.core import (
    ApprovalRequired,
    ConfigError,
    Escalate,
    ModelResponse,
    TextDelta,
    ToolCallDelta,
)
from keel.models import Model
from keel.observe._serve import multiprocess_dir
from keel.runtime import (
    Middleware,
    ModelNext,
    ModelRequestInput,
    RunEndInput,
    RunStartInput,
    ToolCallInput,
    ToolNext,
)
from keel.store import Feedback, RunStore, TaskFilter, TaskKind, TaskStatus
from keel.tools import ToolResult

if TYPE_CHECKING:  # prometheus_client is imported with the first Metrics, not with keel
    from prometheus_client import CollectorRegistry

#: ``tenant_of(start) -> tenant id or None``: the tenant a run's metrics are counted under.
TenantOf = Callable[[RunStartInput], str | None]


def run_tenant(inp: RunStartInput) -> str | None:
    """The default ``tenant_of``: the run's ``tenant`` field, once runs carry one."""
    return getattr(inp, "tenant", None)

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600, 1800, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
TASK_KINDS: tuple[TaskKind, ...] = ("approval", "escalation")
TASK_WAITING: tuple[TaskStatus, ...] = ("open", "claimed")
OTHER = "other"
_MAX_RUNS = 100_000  # runs in flight remembered (start time, tenant) per Metrics
NONE = ""


class Instruments:
    """The instruments of one registry (created once per registry, shared). In one
    process, plain slots read at scrape time; with ``PROMETHEUS_MULTIPROC_DIR`` set (and
    the global registry), prometheus_client's instruments, which write to shared files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import REGISTRY

        from keel.observe._instruments import Factory

        self.registry = registry
        f = Factory(registry, fast=registry is not REGISTRY or multiprocess_dir() is None)
        self.factory = f
        self.fast = f.fast
        #: the label values recorded so far, per label name (bounded by each Metrics)
        self.seen: dict[str, set[str]] = {}
        self.runs_started = f.counter("keel_runs_started", "Runs started (not resumed).",
                                      ["agent", "tenant"])
        self.runs_resumed = f.counter("keel_runs_resumed", "Runs resumed.", ["agent", "tenant"])
        self.runs_finished = f.counter("keel_runs_finished", "Runs that ended, by status.",
                                       ["agent", "tenant", "status"])
        self.run_duration = f.histogram("keel_run_duration_seconds",
                                        "A run's time in this process, start hook to end hook.",
                                        ["agent", "status"], RUN_BUCKETS)
        self.step_duration = f.histogram("keel_step_duration_seconds",
                                         "Model and tool steps, retries included.",
                                         ["agent", "kind"], STEP_BUCKETS)
        self.model_latency = f.histogram("keel_model_latency_seconds",
                                         "Model requests, retries included.", ["model"],
                                         STEP_BUCKETS)
        self.ttft = f.histogram("keel_time_to_first_token_seconds",
                                "Streamed model requests: time to the first delta.", ["model"],
                                TTFT_BUCKETS)
        self.model_requests = f.counter("keel_model_requests", "Model requests by outcome.",
                                        ["agent", "model", "outcome"])
        self.model_failures = f.counter("keel_model_failures",
                                        "Model requests that failed (after retries).",
                                        ["agent", "model", "error_type"])
        self.tokens = f.counter("keel_tokens", "Tokens by direction (input, output).",
                                ["agent", "model", "tenant", "direction"])
        self.cost = f.counter("keel_cost_usd", "Model cost in US dollars.",
                              ["agent", "model", "tenant"])
        self.tool_calls = f.counter("keel_tool_calls", "Tool calls.", ["agent", "tool"])
        self.tool_failures = f.counter("keel_tool_failures", "Tool calls that failed.",
                                       ["agent", "tool", "error_type"])
        self.retries = f.counter("keel_retries", "Failed attempts that were retried.",
                                 ["agent", "kind", "name"])
        self.breaker = f.gauge("keel_circuit_breaker_state",
                               "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                               ["agent", "breaker"])
        self.tasks_waiting = f.gauge("keel_human_tasks_waiting",
                                     "Approvals and escalations waiting for a person.", ["kind"])
        self.tasks_overdue = f.gauge("keel_human_tasks_overdue",
                                     "Waiting tasks past their due time.", ["kind"])
        self.tasks_oldest = f.gauge("keel_human_task_oldest_age_seconds",
                                    "Age of the oldest waiting task.", ["kind"])
        self.alerts = f.counter("keel_alerts", "Fleet alerts sent, by rule.", ["rule"])
        self.feedback = f.counter("keel_feedback", "User feedback recorded on runs, by "
                                  "thumbs (up, down, none).", ["agent", "thumbs"])


_log = logging.getLogger("keel.observe")
_INSTRUMENTS: dict[int, tuple[CollectorRegistry, Instruments]] = {}
_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()


def instruments(registry: CollectorRegistry | None = None) -> Instruments:
    """The keel instruments of ``registry`` (default: prometheus_client's global one),
    created on first use."""
    from prometheus_client import REGISTRY

    reg = REGISTRY if registry is None else registry
    found = _INSTRUMENTS.get(id(reg))
    if found is None or found[0] is not reg:
        found = (reg, Instruments(reg))
        _INSTRUMENTS[id(reg)] = found
    return found[1]


class _Labels:
    """Bounded label values: at most ``cap`` distinct values, then ``other``. The values
    seen are shared by every Metrics of a registry (one set per label name)."""

    __slots__ = ("cap", "seen")

    def __init__(self, cap: int, seen: set[str]) -> None:
        self.cap = cap
        self.seen = seen

    def __call__(self, value: str | None) -> str:
        if value is None:
            return NONE
        if value in self.seen:
            return value
        value = value[:64]
        if value in self.seen:
            return value
        if len(self.seen) >= self.cap:
            return OTHER
        self.seen.add(value)
        return value


class _Run:
    __slots__ = ("agent", "started", "tenant")

    def __init__(self, agent: str, tenant: str, started: float) -> None:
        self.agent, self.tenant, self.started = agent, tenant, started


class Metrics(Middleware):
    """Middleware recording keel's Prometheus metrics (see the module docs for the list).

    ``registry``: where the instruments live (default: prometheus_client's global registry,
    which is what ``keel worker --metrics-port`` serves). ``tenant_of(start)`` gives the
    tenant of a run (default: its ``tenant`` field when runs carry one; none, label
    ``""``, until then). ``max_label_values`` bounds the distinct
    values of each label. Place it outermost (``keel.defaults()`` does) so that retries are
    counted through the ``on_retry`` hook and step times include them.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None,
                 tenant_of: TenantOf | None = None, max_label_values: int = 200) -> None:
        from prometheus_client import CollectorRegistry

        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise ConfigError("Metrics.registry", f"must be a prometheus_client "
                              f"CollectorRegistry, not {type(registry).__name__}")
        if tenant_of is not None and not callable(tenant_of):
            raise ConfigError("Metrics.tenant_of", "must be a function of a RunStartInput "
                              "returning a tenant id or None")
        if isinstance(max_label_values, bool) or not isinstance(max_label_values, int) \
                or not 1 <= max_label_values <= 100_000:
            raise ConfigError("Metrics.max_label_values",
                              f"must be a whole number from 1 to 100000, not "
                              f"{max_label_values!r}")
        self.i = instruments(registry)
        self.tenant_of: TenantOf = run_tenant if tenant_of is None else tenant_of
        self.max_label_values = max_label_values
        self._label = {name: _Labels(max_label_values, self.i.seen.setdefault(name, set()))
                       for name in ("agent", "model", "tool", "tenant", "error")}
        self._runs: dict[str, _Run] = {}
        _LIVE.add(self)
        self._model: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._tool: dict[tuple[str, str], tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"Metrics(max_label_values={self.max_label_values})"

    # ------------------------------------------------------------------------------ runs

    async def on_run_start(self, inp: RunStartInput) -> None:
        try:
            tenant = self.tenant_of(inp)
        except Exception as exc:  # metrics never fail a run: count it under no tenant
            tenant = None
            _log.warning("Metrics.tenant_of raised %s: %s; the run is counted under no "
                         "tenant (fix tenant_of)", type(exc).__name__, exc)
        if tenant is not None and not isinstance(tenant, str):
            tenant = str(tenant)
        run = _Run(self._label["agent"](inp.agent), self._label["tenant"](tenant),
                   time.perf_counter())
        runs = self._runs
        if len(runs) >= _MAX_RUNS:  # runs that never ended here (their lease was lost)
            del runs[next(iter(runs))]
        runs[inp.run_id] = run
        counter = self.i.runs_resumed if inp.resumed else self.i.runs_started
        counter.labels(run.agent, run.tenant).inc()

    async def on_run_end(self, inp: RunEndInput) -> None:
        run = self._runs.pop(inp.run_id, None)
        status = run_status(inp)
        if status is None:  # woken at once: the run goes round, it did not end
            if run is not None:
                self._runs[inp.run_id] = run
            return
        if run is None:
            run = _Run(self._label["agent"](inp.agent), NONE, time.perf_counter())
        self.i.runs_finished.labels(run.agent, run.tenant, status).inc()
        self.i.run_duration.labels(run.agent, status).observe(
            time.perf_counter() - run.started)

    def _tenant(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        return NONE if run is None else run.tenant

    # ----------------------------------------------------------------------------- model

    def _model_children(self, agent: str, model: str, tenant: str) -> tuple[Any, ...]:
        key = (agent, model, tenant)
        kids = self._model.get(key)
        if kids is None:
            a, m = self._label["agent"](agent), self._label["model"](model)
            i = self.i
            kids = (i.step_duration.labels(a, "model"), i.model_latency.labels(m),
                    i.model_requests.labels(a, m, "ok"), i.tokens.labels(a, m, tenant, "input"),
                    i.tokens.labels(a, m, tenant, "output"), i.cost.labels(a, m, tenant),
                    i.ttft.labels(m))
            if len(self._model) < 10_000:
                self._model[key] = kids
        return kids

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        name = inp.model.name
        self._count_retries(inp, "model", name)
        first: list[float] = []
        streamed, inner = _streaming(inp.model)
        if streamed is not None:
            streamed.inner = _FirstDelta(inner, first)
        start = time.perf_counter()
        try:
            response = await next(inp)
        except BaseException as exc:
            self._model_failed(inp.agent, name, exc, time.perf_counter() - start)
            raise
        finally:
            if streamed is not None:
                streamed.inner = inner
        took = time.perf_counter() - start
        step, latency, ok, tin, tout, cost, ttft = self._model_children(
            inp.agent, name, self._tenant(inp.run_id))
        step.observe(took)
        latency.observe(took)
        ok.inc()
        usage = response.usage
        if usage.input_tokens:
            tin.inc(usage.input_tokens)
        if usage.output_tokens:
            tout.inc(usage.output_tokens)
        if usage.cost_usd:
            cost.inc(usage.cost_usd)
        if first:
            ttft.observe(first[-1] - first[0])
        return response

    def _model_failed(self, agent: str, model: str, exc: BaseException, took: float) -> None:
        if isinstance(exc, ApprovalRequired | Escalate):
            return
        a, m = self._label["agent"](agent), self._label["model"](model)
        error = self._label["error"](error_type(exc))
        i = self.i
        i.step_duration.labels(a, "model").observe(took)
        i.model_latency.labels(m).observe(took)
        i.model_requests.labels(a, m, "error").inc()
        i.model_failures.labels(a, m, error).inc()

    # ------------------------------------------------------------------------------ tools

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        name = inp.tool.meta.name
        self._count_retries(inp, "tool", name)
        start = time.perf_counter()
        result = await next(inp)
        took = time.perf_counter() - start
        key = (inp.agent, name)
        kids = self._tool.get(key)
        if kids is None:
            a, t = self._label["agent"](inp.agent), self._label["tool"](name)
            kids = (self.i.step_duration.labels(a, "tool"), self.i.tool_calls.labels(a, t))
            if len(self._tool) < 10_000:
                self._tool[key] = kids
        kids[0].observe(took)
        kids[1].inc()
        if result.failure is not None:
            self.i.tool_failures.labels(
                self._label["agent"](inp.agent), self._label["tool"](name),
                self._label["error"](str(result.failure.error_type))).inc()
        return result

    # ---------------------------------------------------------------------------- retries

    def _count_retries(self, inp: ModelRequestInput | ToolCallInput, kind: str,
                       name: str) -> None:
        """Make the call's ``on_retry`` hook count too. The input is the call's own (the
        loop builds one per call), so its hook is swapped in place: copying the frozen input
        (``dataclasses.replace``) costs 4 µs a call, more than all the counting. A hook that
        already counts for this Metrics (an inner copy of the input) is left as it is."""
        hook = inp.on_retry
        if getattr(hook, "_keel_metrics", None) is self:
            return
        label, agent, retries = self._label, inp.agent, self.i.retries

        async def on_retry(attempt: int, error: str, delay: float) -> None:  # no cycle: not inp
            await hook(attempt, error, delay)  # the journal entry first: it may refuse
            bucket = label["model" if kind == "model" else "tool"](name)
            retries.labels(label["agent"](agent), kind, bucket).inc()

        on_retry._keel_metrics = self  # type: ignore[attr-defined]
        object.__setattr__(inp, "on_retry", on_retry)

    # ---------------------------------------------------------------------------- breaker

    def breaker_changed(self, agent: str, key: str, state: str) -> None:
        """Record that the breaker ``key`` (``model:<name>``/``tool:<name>``) of ``agent``
        is now ``state`` (closed, half_open, open)."""
        value = BREAKER_STATES.get(state)
        if value is not None:
            self.i.breaker.labels(self._label["agent"](agent), key[:80]).set(value)


def _streaming(model: Model) -> tuple[Any, Model | None]:
    """The runtime's streaming wrapper (a fresh one per request, which consumes its
    ``inner`` model's stream and emits the deltas) and its inner model, or (None, None)."""
    if type(model).__name__ != "StreamingModel":
        return None, None
    inner = getattr(model, "inner", None)
    if isinstance(inner, Model) and callable(getattr(model, "emit", None)):
        return model, inner
    return None, None


class _FirstDelta(Model):
    """Wraps a streaming model's inner model to note when each attempt starts and when its
    first delta arrives (the list ends up ``[start, first]`` of the last attempt)."""

    def __init__(self, inner: Model | None, marks: list[float]) -> None:
        assert inner is not None
        self.inner = inner
        self.name = inner.name
        self.marks = marks

    async def request(self, messages: Any, tools: Any = (),
                      settings: Any = None) -> ModelResponse:
        return await self.inner.request(messages, tools, settings)

    async def stream(self, messages: Any, tools: Any = (),
                     settings: Any = None) -> Any:
        self.marks.clear()
        start = time.perf_counter()
        async for event in self.inner.stream(messages, tools, settings):
            if not self.marks and isinstance(event, TextDelta | ToolCallDelta):
                self.marks.extend((start, time.perf_counter()))
            yield event


def run_status(inp: RunEndInput) -> str | None:
    """The status a run's end is counted under (None: it did not end, it goes round)."""
    if inp.status == "suspended":
        if isinstance(inp.error, Escalate):
            return "escalated"
        if isinstance(inp.error, ApprovalRequired):
            return "awaiting_approval"
        return "suspended"
    if inp.status == "running":
        return None
    return inp.status


def error_type(exc: BaseException) -> str:
    """A bounded name for an error: a RunError's ``error_type`` or the exception class."""
    kind = getattr(exc, "error_type", None)
    return kind if isinstance(kind, str) and kind else type(exc).__name__


def use_opentelemetry(meter_provider: Any = None, *,
                      registry: CollectorRegistry | None = None) -> None:
    """Record keel's metrics into OpenTelemetry too (the ``opentelemetry-api`` meter of
    ``meter_provider``, default: the global one), as ``keel.<name>`` instruments with the
    same attributes as the Prometheus labels. Call it once, before the agents run; what
    was recorded before stays in Prometheus only. Each record then costs one more
    instrument call (the SDK's), only for those who ask for it."""
    try:
        from opentelemetry import metrics as otel
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("OpenTelemetry metrics", "need opentelemetry-api: pip install "
                          "opentelemetry-api opentelemetry-sdk") from None
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    meter = provider.get_meter("keel")
    i = instruments(registry)
    i.factory.with_opentelemetry(meter, i)
    _reset_children()


def _reset_children() -> None:
    """Drop the children cached by live Metrics so that new ones (teed) are taken."""
    for metrics in list(_LIVE):
        metrics._model.clear()
        metrics._tool.clear()


async def refresh_human_tasks(store: RunStore, *, registry: CollectorRegistry | None = None,
                              now: float | None = None, limit: int = 10_000) -> dict[str, Any]:
    """Set the human-task gauges from ``store``: per kind, how many tasks wait (open or
    claimed, up to ``limit``), how many are past ``due_at`` and the oldest one's age.
    Returns the figures (``{"approval": {"waiting", "overdue", "oldest_age"}, ...}``)."""
    i = instruments(registry)
    at = time.time() if now is None else now
    figures: dict[str, Any] = {}
    for kind in TASK_KINDS:
        tasks: list[Any] = []
        for status in TASK_WAITING:
            tasks += await store.list_tasks(TaskFilter(kind=kind, status=status,
                                                       limit=limit))
        oldest = min((t.created_at for t in tasks), default=None)
        overdue = sum(1 for t in tasks if t.due_at is not None and t.due_at < at)
        age = 0.0 if oldest is None else max(0.0, at - oldest)
        i.tasks_waiting.labels(kind).set(len(tasks))
        i.tasks_overdue.labels(kind).set(overdue)
        i.tasks_oldest.labels(kind).set(age)
        figures[kind] = {"waiting": len(tasks), "overdue": overdue, "oldest_age": age}
    return figures


#: The most distinct agent names ``count_feedback`` labels per registry (then ``other``).
FEEDBACK_AGENTS = 200


def count_feedback(feedback: Feedback, *, agent: str,
                   registry: CollectorRegistry | None = None) -> None:
    """Count one feedback record on a run of ``agent`` in ``keel_feedback_total{agent,thumbs}``
    (``thumbs`` is ``up``, ``down`` or ``none``). Call it where feedback is recorded; past
    :data:`FEEDBACK_AGENTS` distinct agents, new ones are counted as ``other``."""
    i = instruments(registry)
    seen = i.seen.setdefault("feedback_agent", set())
    if agent not in seen and len(seen) >= FEEDBACK_AGENTS:
        agent = "other"
    seen.add(agent)
    i.feedback.labels(agent, feedback.thumbs or "none").inc()
