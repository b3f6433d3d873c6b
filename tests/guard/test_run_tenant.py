"""The guard layer reads the run's own tenant (``run(..., tenant=)``) by default: ToolPolicy's
tenant rules, DataGuard's and DataPolicy's tenant rules, and the Monitor's per-tenant
baselines. A ``tenant_of`` / ``tenant`` function still overrides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from keel import Agent, GuardrailTripped, MemoryStore, tool
from keel.guard import DataGuard, DataPolicy, Monitor, MonitorPolicy, ToolPolicy
from keel.store import RunRecord
from keel.testing import ScriptedModel, call

EMAIL = "jane.doe@example.com"


@dataclass
class Deps:
    tenant: str | None = None


def _tools(effects: list[Any]) -> list[Any]:
    @tool
    def lookup(order: str) -> str:
        """Look an order up."""
        effects.append(("lookup", order))
        return f"order {order}: shipped"

    @tool(risk="write")
    def refund(order: str, amount: int) -> str:
        """Refund an order."""
        effects.append(("refund", order, amount))
        return "refunded"

    return [lookup, refund]


async def _effects(policy: ToolPolicy, **options: Any) -> list[Any]:
    effects: list[Any] = []
    calls = [call("lookup", {"order": "A"}), call("refund", {"order": "A", "amount": 80})]
    agent = Agent("support", model=ScriptedModel([*calls, "done"]), tools=_tools(effects),
                  middleware=[policy])
    await agent.run("go", store=MemoryStore(), **options)
    return effects


async def test_tool_policy_tenant_rules_apply_to_the_runs_tenant() -> None:
    policy = ToolPolicy(tenants={"acme": {"allow": ["lookup"]},
                                 "globex": {"deny": ["lookup"]}})
    assert await _effects(policy, tenant="acme") == [("lookup", "A")]
    assert await _effects(policy, tenant="globex") == [("refund", "A", 80)]
    assert await _effects(policy) == [("lookup", "A"), ("refund", "A", 80)]
    assert await _effects(policy, tenant="initech") == [("lookup", "A"), ("refund", "A", 80)]


async def test_tool_policy_require_tenant_refuses_runs_without_a_known_tenant() -> None:
    policy = ToolPolicy(tenants={"acme": {"allow": ["lookup", "refund"]}}, require_tenant=True)
    assert await _effects(policy, tenant="acme") == [("lookup", "A"), ("refund", "A", 80)]
    assert await _effects(policy) == []
    assert await _effects(policy, tenant="acme' OR '1'='1") == []


async def test_tenant_of_still_overrides_the_runs_tenant() -> None:
    policy = ToolPolicy(tenants={"acme": {"allow": ["lookup"]}},
                        tenant_of=lambda ctx: ctx.deps.tenant)
    # the run says globex, the override says acme: the override wins
    assert await _effects(policy, tenant="globex", deps=Deps("acme")) == [("lookup", "A")]
    assert await _effects(policy, tenant="acme", deps=Deps(None)) == [
        ("lookup", "A"), ("refund", "A", 80)]


async def test_data_guard_applies_the_runs_tenant_rules() -> None:
    policy = DataPolicy(tenants={"acme": {"journal": {"email": "block"}}})

    def agent() -> Agent[Any]:
        return Agent("support", model=ScriptedModel(["ok"]), middleware=[DataGuard(policy)])

    store = MemoryStore()
    with pytest.raises(GuardrailTripped):
        await agent().run(f"mail me at {EMAIL}", store=store, tenant="acme")
    [blocked] = await store.list_runs()
    assert blocked.tenant == "acme" and EMAIL not in str(blocked.input)
    result = await agent().run(f"mail me at {EMAIL}", store=store, tenant="globex")
    assert result.output == "ok"  # another tenant: the default rules
    # an override names the tenant instead of the run's
    def overridden(tenant: str) -> Agent[Any]:
        return Agent("support", model=ScriptedModel(["ok"]), middleware=[
            DataGuard(policy, tenant=lambda inp: tenant)])

    result = await overridden("x").run(f"mail me at {EMAIL}", store=store, tenant="acme")
    assert result.output == "ok"
    with pytest.raises(GuardrailTripped):
        await overridden("acme").run(f"mail me at {EMAIL}", store=store, tenant="globex")


def test_data_policy_tenant_of_reads_the_records_tenant_first() -> None:
    policy = DataPolicy(tenants={"acme": {"packets": {"email": "allow"}}})
    record = RunRecord(run_id="r", agent="support", status="completed", input="", created_at=0,
                       updated_at=0, tenant="acme", metadata={"tenant": "globex"})
    assert policy.tenant_of(record) == "acme"
    legacy = RunRecord(run_id="r", agent="support", status="completed", input="",
                       created_at=0, updated_at=0, metadata={"tenant": "globex"})
    assert policy.tenant_of(legacy) == "globex"
    assert EMAIL in policy.scope_of(record).scrub(EMAIL, "packets")


async def test_monitor_baselines_are_per_the_runs_tenant() -> None:
    monitor = Monitor(MonitorPolicy())
    effects: list[Any] = []

    def agent() -> Agent[Any]:
        return Agent("support", model=ScriptedModel([call("lookup", {"order": "A"}), "done"]),
                     tools=_tools(effects), middleware=[monitor])

    store = MemoryStore()
    for tenant in ("acme", "acme", "globex", None):
        await agent().run("go", store=store, tenant=tenant)
    runs = {scope: (await monitor.store.baseline(scope)).runs
            for scope in ("support@acme", "support@globex", "support")}
    assert runs == {"support@acme": 2, "support@globex": 1, "support": 1}
    # learning from stored runs folds each into its tenant's baseline too
    learner = Monitor(MonitorPolicy())
    assert await learner.learn(store, agent="support") == 4
    assert (await learner.store.baseline("support@acme")).runs == 2
    # an override reads the tenant from deps instead
    override = Monitor(MonitorPolicy(), tenant=lambda deps: deps.tenant)
    await Agent("support", model=ScriptedModel([call("lookup", {"order": "A"}), "done"]),
                tools=_tools(effects), middleware=[override]).run(
        "go", store=store, tenant="acme", deps=Deps("initech"))
    assert (await override.store.baseline("support@initech")).runs == 1
    assert (await override.store.baseline("support@acme")).runs == 0
