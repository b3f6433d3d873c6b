"""Behavioural monitoring that acts: :class:`Monitor`, a middleware on the model and tool
seams.

The monitor learns each agent's normal (per tenant when it is told how to find the tenant)
from its ordinary completed runs: which tools it calls and how often, how much data each
returns (bytes and records), failed calls, latency, and cost per run. A run that deviates
(a tool the agent never used, a burst of calls, 100× the usual data, cost far above the
norm, the same call over and over) triggers the actions configured for that deviation:

- ``alert``: an :class:`~keel.guard.Alert` to the notifier (a log line, a webhook);
- ``throttle``: the agent's further calls to that tool are spaced ``throttle_interval``
  seconds apart for ``throttle_for`` seconds (across workers with a shared store); a call
  that would wait longer than ``throttle_max_wait`` gets a ``rate_limited`` observation;
- ``approve``: the agent's next high-impact calls wait for a person's approval (through the
  guardrail seam's ``check`` at ``tool_args``, the same gate as ``ApprovalPolicy``);
- ``disable``: the tool's circuit breaker is forced open for ``disable_for`` seconds;
- ``escalate``: the call becomes an ``escalated`` observation and the run is escalated to a
  person, with the evidence in the reason (the data a volume deviation read never reaches
  the model).

Until the baseline has ``warmup_runs`` runs only the absolute limits apply. Runs in which the
monitor acted are not learned from, so an attack does not become the new normal.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keel.core import ConfigError, Escalate, ModelResponse, canonical_json
from keel.guard import _monitor_checks as checks
from keel.guard._monitor_checks import Finding
from keel.guard._monitor_policy import MonitorPolicy
from keel.guard._monitor_state import Baseline, InMemoryMonitorStore, MonitorStore
from keel.guard._monitor_stats import RunStats, record_count, stats_from_journal
from keel.guard._notify import Alert, LogNotifier, Notifier
from keel.runtime import (
    GuardDecision,
    GuardInput,
    Middleware,
    ModelNext,
    ModelRequestInput,
    Place,
    RunEndInput,
    ToolCallInput,
    ToolNext,
)
from keel.store import RunFilter, RunRecord, RunStore
from keel.tools import ToolResult

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
TenantOf = Callable[[Any], "str | None"]
#: Runs whose counts are kept at once; the oldest is dropped past this (a run that never
#: reached on_run_end, because its process died, must not leak).
_MAX_LIVE_RUNS = 10_000


@runtime_checkable
class ToolSwitch(Protocol):
    """Something that can switch a tool off for a while: ``keel.CircuitBreaker`` is one
    (``force_open("tool:<name>", seconds)``)."""

    async def force_open(self, key: str, seconds: float) -> None: ...


def _switch_key(tool: Any) -> str:
    """The breaker key that switches ``tool`` off: the key its calls are counted under by
    keel's circuit breaker (``ToolMeta.breaker_key``, else ``tool:<name>``)."""
    return tool.meta.breaker_key or f"tool:{tool.meta.name}"


class Monitor(Middleware):
    """Middleware: watch each agent's behaviour against its baseline and act on deviations.

    ``policy`` sets thresholds and actions (:class:`MonitorPolicy`); ``store`` keeps the
    baselines, throttles and owed approvals (default in memory; a
    :class:`RedisMonitorStore` shares them across workers); ``notifier`` receives alerts
    (default :class:`LogNotifier`); ``breaker`` is the circuit breaker the ``disable`` action
    forces open (required when a deviation is configured to ``disable``: pass the same
    ``CircuitBreaker`` the agent uses). Baselines are per agent and tenant: the run's tenant
    (``run(..., tenant=)``) unless ``tenant`` is given, a function of the run's ``deps`` that
    overrides it. ``clock`` and ``sleep`` are for tests.
    """

    guard_places: frozenset[Place] = frozenset({"tool_args"})
    #: the monitor bounds its own waits (``throttle_max_wait``); a guard timeout would turn
    #: a throttled call into a block
    guard_timeout = None

    def __init__(self, policy: MonitorPolicy | None = None, *,
                 store: MonitorStore | None = None, notifier: Notifier | None = None,
                 breaker: ToolSwitch | None = None, tenant: TenantOf | None = None,
                 baseline_ttl: float = 30.0, clock: Clock = time.time,
                 sleep: Sleep = asyncio.sleep) -> None:
        if policy is not None and not isinstance(policy, MonitorPolicy):
            raise ConfigError("policy", f"must be a MonitorPolicy, not {type(policy).__name__}")
        policy = policy or MonitorPolicy()
        if store is not None and not isinstance(store, MonitorStore):
            raise ConfigError("store", f"must be a MonitorStore (baseline, fold, throttle, "
                                       f"reserve, owe_approvals, take_approval), not "
                                       f"{type(store).__name__}")
        if notifier is not None and not isinstance(notifier, Notifier):
            raise ConfigError("notifier", f"must have an async notify(alert) method, not "
                                          f"{type(notifier).__name__}")
        if breaker is not None and not isinstance(breaker, ToolSwitch):
            raise ConfigError("breaker", f"must have an async force_open(key, seconds) "
                                         f"method (a keel.CircuitBreaker), not "
                                         f"{type(breaker).__name__}")
        uses_disable = sorted(k for k, acts in policy.actions.items() if "disable" in acts)
        if uses_disable and breaker is None:
            raise ConfigError("breaker", f"the 'disable' action (for {', '.join(uses_disable)})"
                                         " forces a circuit breaker open: pass breaker= (the "
                                         "CircuitBreaker the agent uses)")
        if tenant is not None and not callable(tenant):
            raise ConfigError("tenant", "must be a function of the run's deps returning the "
                                        "tenant (or None)")
        if isinstance(baseline_ttl, bool) or not isinstance(baseline_ttl, int | float) \
                or not 0 <= baseline_ttl < float("inf"):
            raise ConfigError("baseline_ttl", f"must be seconds >= 0, not {baseline_ttl!r}")
        self.policy = policy
        self.store: MonitorStore = store if store is not None else InMemoryMonitorStore()
        self.notifier: Notifier = notifier if notifier is not None else LogNotifier()
        self.breaker = breaker
        self.tenant = tenant
        self.baseline_ttl = float(baseline_ttl)
        self.clock = clock
        self.sleep = sleep
        self._runs: OrderedDict[tuple[str, str], RunStats] = OrderedDict()
        self._baselines: dict[str, tuple[float, Baseline]] = {}

    def __repr__(self) -> str:
        return f"Monitor(store={type(self.store).__name__}, notifier={self.notifier!r})"

    # ------------------------------------------------------------------------- bookkeeping

    def scope(self, agent: str, tenant: str | None) -> str:
        """The baseline key: the agent, or ``agent@tenant``."""
        return agent if tenant is None else f"{agent}@{tenant}"

    def _stats(self, run_id: str, agent: str, deps: Any = None, *,
               with_deps: bool = False, run_tenant: str | None = None) -> RunStats:
        key = (run_id, agent)
        stats = self._runs.get(key)
        if stats is None:
            stats = RunStats(agent=agent, scope=agent)
            self._runs[key] = stats
            while len(self._runs) > _MAX_LIVE_RUNS:
                self._runs.popitem(last=False)
        if with_deps and not stats.deps_seen:  # model hooks do not see deps; tool calls do
            stats.deps_seen = True
            stats.tenant = self._tenant_of(deps, run_tenant)
            stats.scope = self.scope(agent, stats.tenant)
        return stats

    def _tenant_of(self, deps: Any, run_tenant: str | None) -> str | None:
        if self.tenant is None:
            return run_tenant
        value = self.tenant(deps)
        return None if value is None else str(value)

    async def baseline(self, scope: str) -> Baseline:
        """The scope's baseline (cached for ``baseline_ttl`` seconds)."""
        now = self.clock()
        cached = self._baselines.get(scope)
        if cached is not None and now - cached[0] < self.baseline_ttl:
            return cached[1]
        b = await self.store.baseline(scope)
        self._baselines[scope] = (now, b)
        return b

    async def learn(self, runs: RunStore, *, agent: str,
                    tenant: Callable[[RunRecord], str | None] | None = None,
                    limit: int = 1000) -> int:
        """Fold up to ``limit`` of ``agent``'s most recent completed runs in ``runs`` into
        its baseline (for a monitor deployed on an agent that already has history; runs it
        watched live are folded at their end, so do not learn them twice). Each run folds
        into its tenant's baseline: ``record.tenant``, unless ``tenant`` (a function of the
        record, ``lambda r: r.metadata.get("tenant")``) says otherwise. Returns how many
        runs were learned."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError("limit", f"must be a whole number >= 1, not {limit!r}")
        if tenant is not None and not callable(tenant):
            raise ConfigError("tenant", "must be a function of a RunRecord returning the "
                                        "tenant (or None)")
        learned = 0
        while learned < limit:
            page = await runs.list_runs(RunFilter(status="completed", agent=agent,
                                                  limit=min(100, limit - learned),
                                                  offset=learned))
            if not page:
                break
            for record in page:
                found = record.tenant if tenant is None else tenant(record)
                scope = self.scope(agent, None if found is None else str(found))
                stats = stats_from_journal(agent, scope, await runs.read_journal(record.run_id))
                await self.store.fold(scope, stats.fold_ops())
                self._baselines.pop(scope, None)
            learned += len(page)
        return learned

    # --------------------------------------------------------------------------- the hooks

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        response = await next(inp)
        stats = self._stats(inp.run_id, inp.agent)
        stats.cost += response.usage.cost_usd
        finding = checks.cost(stats, await self.baseline(stats.scope), self.policy)
        if finding is not None and ("cost", "") not in stats.acted:
            stats.pending.append(finding)  # acted on at the next tool call
            stats.acted.add(("cost", ""))
            await self._alert_only(finding, stats, inp.run_id, inp.step_key)
        return response

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        """At ``tool_args``: count the call, look for a new tool, a burst, a loop (and a cost
        deviation seen at the last model turn), take the configured actions, wait for a
        throttled tool's slot, and ask for approval of a high-impact call while approvals
        are owed. The decision (escalate, block, approve) is journaled by the runtime with
        the evidence."""
        if inp.place != "tool_args" or inp.tool is None:
            return None
        name = inp.tool.meta.name
        stats = self._stats(inp.run_id, inp.agent, inp.deps, with_deps=True,
                            run_tenant=inp.tenant)
        baseline = await self.baseline(stats.scope)
        now = self.clock()
        t = stats.tool(name)
        signature = f"{name}\x00{_args_hash(inp.text)}"
        t.calls += 1
        t.recent.append(now)
        stats.repeats[signature] = stats.repeats.get(signature, 0) + 1
        found = [*stats.pending,
                 checks.new_tool(name, baseline, self.policy),
                 checks.burst(name, t, now, baseline, self.policy),
                 checks.loop(name, signature, stats, self.policy)]
        stats.pending.clear()
        acted = await self._act(found, stats, name, inp.run_id, inp.step_key,
                                switch=_switch_key(inp.tool))
        if acted.escalate:
            return GuardDecision.escalate(acted.reason("escalated"), evidence=acted.evidence())
        if acted.disabled:
            return GuardDecision.block(acted.reason("switched off"), evidence=acted.evidence())
        slot = await self._wait_for_slot(stats, name)
        if slot is not None and slot.action != "allow":
            return slot
        if inp.tool.meta.risk != "read" and await self.store.take_approval(stats.scope):
            return GuardDecision.require_approval(
                f"the behaviour monitor asks a person to approve this {inp.tool.meta.risk} "
                f"call after a deviation of agent {stats.agent}",
                evidence={"monitor": [*acted.records, *stats.history]})
        if acted.records:  # alerted or throttled: journaled with the evidence, call allowed
            notes = [*acted.records, *(slot.evidence.get("monitor", []) if slot else [])]
            return GuardDecision.note(acted.reason("noted"), evidence={"monitor": notes})
        return slot  # a call that only waited for its slot: noted, or None

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        """After the call: count what it returned (bytes, records, a failure, its latency)
        and look for a volume, error or latency deviation. Escalating here replaces the
        result with an ``escalated`` observation, so data read in excess never reaches the
        model."""
        name = inp.tool.meta.name
        stats = self._stats(inp.run_id, inp.agent, inp.ctx.deps, with_deps=True,
                            run_tenant=inp.ctx.tenant)
        started = self.clock()
        result = await next(inp)
        seconds = self.clock() - started
        t = stats.tool(name)
        t.bytes += len(result.content)
        t.latency_sum += seconds
        t.latency_n += 1
        if result.failure is not None:
            t.errors += 1
        else:
            t.records += record_count(result.value)
        baseline = await self.baseline(stats.scope)
        after = [checks.volume(name, t, baseline, self.policy),
                 checks.errors(name, stats, baseline, self.policy),
                 checks.latency(name, seconds, baseline, self.policy)]
        acted = await self._act(after, stats, name, inp.run_id, inp.step_key,
                                switch=_switch_key(inp.tool))
        if acted.escalate:
            raise Escalate(f"{acted.reason('escalated')} (evidence: "
                           f"{canonical_json(acted.evidence())})", trigger="monitor")
        if acted.disabled:
            return ToolResult.fail(
                "circuit_open", f"{acted.reason('switched off')} (evidence: "
                f"{canonical_json(acted.evidence())})", retryable=False,
                hint="Use another approach or tell the user.")
        return result

    async def on_run_end(self, inp: RunEndInput) -> None:
        finished = [k for k in self._runs if k[0] == inp.run_id]
        for key in finished:
            stats = self._runs.pop(key)
            if inp.status == "completed" and not stats.flagged:
                await self.store.fold(stats.scope, stats.fold_ops())
                self._baselines.pop(stats.scope, None)

    # ---------------------------------------------------------------------------- actions

    async def _act(self, found: Sequence[Finding | None], stats: RunStats, tool: str,
                   run_id: str, step_key: str, *, switch: str) -> _Acted:
        """Take the configured side effects (throttle, owe approvals, force the breaker open,
        alert) of each finding not yet acted on in this run; what this call must become.
        ``switch`` is the breaker key the tool's calls count against (its ``breaker_key``,
        e.g. ``mcp:<server>`` for an MCP server's tools, else ``tool:<name>``)."""
        acted = _Acted()
        policy = self.policy
        for f in found:
            if f is None:
                continue
            mark = (f.deviation, f.tool)
            if mark in stats.acted and f.deviation != "cost":
                continue
            stats.acted.add(mark)
            actions = policy.actions_for(f.deviation)
            now = self.clock()
            if "throttle" in actions:
                await self.store.throttle(f"{stats.scope}\t{tool}",
                                          until=now + policy.throttle_for, now=now)
            if "approve" in actions:
                await self.store.owe_approvals(stats.scope, policy.approve_calls)
            if "disable" in actions and self.breaker is not None:
                await self.breaker.force_open(switch, policy.disable_for)
                acted.disabled = True
            if "alert" in actions and f.deviation != "cost":  # cost alerted at the model turn
                await self._notify(f, actions, stats, run_id, step_key)
            acted.escalate = acted.escalate or "escalate" in actions
            acted.findings.append(f)
            record = {"deviation": f.deviation, "actions": list(actions), "reason": f.reason,
                      **f.evidence}
            acted.records.append(record)
            stats.history.append(record)
        return acted

    async def _wait_for_slot(self, stats: RunStats, name: str) -> GuardDecision | None:
        policy = self.policy
        wait = await self.store.reserve(f"{stats.scope}\t{name}",
                                        interval=policy.throttle_interval,
                                        max_wait=policy.throttle_max_wait, now=self.clock())
        if wait is None or wait <= 0:
            return None
        if wait > policy.throttle_max_wait:
            return GuardDecision.block(
                f"calls to {name} are throttled by the behaviour monitor (one every "
                f"{policy.throttle_interval:g}s); the next slot is in {wait:.1f}s: slow down, "
                "make fewer calls, or stop and tell the user",
                evidence={"monitor": [{"action": "throttle", "tool": name,
                                       "wait_s": round(wait, 3),
                                       "max_wait_s": policy.throttle_max_wait,
                                       "interval_s": policy.throttle_interval}]})
        await self.sleep(wait)
        return GuardDecision.note(
            f"calls to {name} are throttled by the behaviour monitor; this one waited "
            f"{wait:.1f}s for its slot",
            evidence={"monitor": [{"action": "throttle", "tool": name, "waited_s": round(wait, 3),
                                   "interval_s": policy.throttle_interval}]})

    async def _alert_only(self, f: Finding, stats: RunStats, run_id: str,
                          step_key: str) -> None:
        actions = self.policy.actions_for(f.deviation)
        if "alert" in actions:
            await self._notify(f, actions, stats, run_id, step_key)

    async def _notify(self, f: Finding, actions: Sequence[str], stats: RunStats, run_id: str,
                      step_key: str) -> None:
        alert = Alert(deviation=f.deviation, actions=tuple(actions), reason=f.reason,
                      agent=stats.agent, tenant=stats.tenant, run_id=run_id, step_key=step_key,
                      tool=f.tool or None, at=self.clock(), evidence=dict(f.evidence))
        await self.notifier.notify(alert)


@dataclass(slots=True)
class _Acted:
    """What the actions taken for one call's findings mean for the call."""

    findings: list[Finding] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    escalate: bool = False
    disabled: bool = False

    def reason(self, what: str) -> str:
        said = "; ".join(f"{f.deviation}: {f.reason}" for f in self.findings)
        return f"behaviour monitor ({what}): {said}"

    def evidence(self) -> dict[str, Any]:
        return {"monitor": list(self.records)}


def _args_hash(arguments: str) -> str:
    """A short hash of a call's arguments, equal for equal JSON (key order aside)."""
    try:
        text = json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    except (ValueError, RecursionError):
        text = arguments
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


__all__ = ["Monitor", "ToolSwitch"]
