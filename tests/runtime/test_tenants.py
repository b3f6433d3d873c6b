"""Every run carries a tenant and a user (``run(..., tenant=, user=)``): stored with the run on
every backend, seen by tools, guards, approval rules and middleware, kept by resumes, forks,
sub-runs and exports, and filtered on in ``list_runs``. Bad ids are refused before anything is
stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keel import (
    Agent,
    ApprovalRequired,
    Escalate,
    MemoryStore,
    RunStore,
    ToolContext,
    UserError,
    decide_approval,
    tool,
)
from keel.runtime import (
    ApprovalContext,
    ApprovalPolicy,
    FlowContext,
    GuardInput,
    Guardrail,
    Middleware,
    RunEndInput,
    RunStartInput,
    Worker,
    cancel_run,
    flow,
    fork_run,
)
from keel.store import (
    RunFilter,
    TaskFilter,
    export_run,
    import_run,
)
from keel.testing import ScriptedModel, call
from tests._stores import BACKENDS, fresh_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    """A fresh, empty store of each backend."""
    async with fresh_store(request.param, tmp_path, "keel_tenant") as opened:
        yield opened


class Seen:
    """What the tools, guards, approval rules and middleware of a run were told."""

    def __init__(self) -> None:
        self.tool: list[tuple[str | None, str | None]] = []
        self.guard: list[tuple[str, str | None, str | None]] = []
        self.approval: list[tuple[str | None, str | None]] = []
        self.start: list[RunStartInput] = []
        self.end: list[RunEndInput] = []


def _agent(seen: Seen, script: list[Any], *, name: str = "desk",
           approval: ApprovalPolicy | None = None) -> Agent[Any]:
    @tool
    def whoami(ctx: ToolContext) -> str:
        """Say whose run this is."""
        seen.tool.append((ctx.tenant, ctx.user))
        return f"tenant={ctx.tenant} user={ctx.user}"

    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        return f"sent {amount}"

    async def check(inp: GuardInput) -> None:
        seen.guard.append((inp.place, inp.tenant, inp.user))

    class Watch(Middleware):
        async def on_run_start(self, inp: RunStartInput) -> None:
            seen.start.append(inp)

        async def on_run_end(self, inp: RunEndInput) -> None:
            seen.end.append(inp)

    def rule(tool: Any, args: dict[str, Any], ctx: ApprovalContext) -> str | None:
        seen.approval.append((ctx.tenant, ctx.user))
        return "wires need a person" if tool.name == "wire" else None

    policy = approval or ApprovalPolicy(risks=frozenset(), callback=rule)
    return Agent(name, model=ScriptedModel(script), tools=[whoami, wire], approval=policy,
                 middleware=[Guardrail(check, places=("input", "tool_args", "tool_output",
                                                      "output")), Watch()])


# ------------------------------------------------------------------------ stored and seen


async def test_the_run_stores_its_tenant_and_everything_in_it_sees_it(store: RunStore) -> None:
    seen = Seen()
    agent = _agent(seen, [call("whoami", {}), "done"])
    result = await agent.run("who am I?", store=store, tenant="acme", user="alice")
    record = await store.get_run(result.run_id)
    assert (record.tenant, record.user) == ("acme", "alice")
    assert seen.tool == [("acme", "alice")]
    assert {(p, t, u) for p, t, u in seen.guard} == {
        ("input", "acme", "alice"), ("tool_args", "acme", "alice"),
        ("tool_output", "acme", "alice"), ("output", "acme", "alice")}
    assert [(i.tenant, i.user, i.resumed) for i in seen.start] == [("acme", "alice", False)]
    assert [(i.tenant, i.user, i.status) for i in seen.end] == [("acme", "alice", "completed")]
    # a run given none has none
    plain = await _agent(Seen(), ["hi"]).run("hello", store=store)
    assert (await store.get_run(plain.run_id)).tenant is None


async def test_list_runs_by_tenant_shows_only_that_tenants_runs(store: RunStore) -> None:
    ids: dict[str, list[str]] = {"acme": [], "globex": [], "acme' OR '1'='1": []}
    for i in range(3):
        for tenant in ids:
            result = await _agent(Seen(), [f"answer {i}"]).run(
                f"q{i}", store=store, tenant=tenant, user=f"u{i}")
            ids[tenant].append(result.run_id)
    await _agent(Seen(), ["x"]).run("no tenant", store=store)
    for tenant, mine in ids.items():
        listed = await store.list_runs(RunFilter(tenant=tenant))
        assert sorted(r.run_id for r in listed) == sorted(mine), tenant
        assert {r.tenant for r in listed} == {tenant}
    assert len(await store.list_runs()) == 10


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("option", "value", "words"), [
    ("tenant", "", "empty"),
    ("tenant", "   ", "empty"),
    ("user", "x" * 10_240, "10,240 characters"),
    ("tenant", "x" * 201, "at most 200"),
    ("tenant", "acme\x00", "control"),
    ("user", "bob\nroot", "control"),
    ("tenant", "\x1b[31mred", "control"),
    ("tenant", "zero\u200bwidth", "control"),
    ("tenant", 42, "must be a string"),
    ("user", b"bytes", "must be a string"),
])
async def test_bad_tenant_or_user_ids_are_refused_before_anything_is_stored(
        option: str, value: Any, words: str) -> None:
    store = MemoryStore()
    agent = _agent(Seen(), ["never"])
    with pytest.raises(UserError) as info:
        await agent.run("hi", store=store, **{option: value})
    assert f"{option}=" in str(info.value) and words in str(info.value)
    with pytest.raises(UserError):
        agent.run_sync("hi", store=store, **{option: value})
    with pytest.raises(UserError):
        async for _ in agent.stream("hi", store=store, **{option: value}):
            pass
    assert await store.list_runs() == []


async def test_sql_and_unicode_ids_are_kept_exactly(store: RunStore) -> None:
    for tenant, user in [("x'); DROP TABLE runs; --", "Robert'); --"),
                         ("Müller & Söhne", "株式会社 \U0001f600"), ("t" * 200, "u" * 200)]:
        result = await _agent(Seen(), ["ok"]).run("hi", store=store, tenant=tenant, user=user)
        record = await store.get_run(result.run_id)
        assert (record.tenant, record.user) == (tenant, user)
        assert [r.run_id for r in await store.list_runs(RunFilter(tenant=tenant))] == [
            result.run_id]


def test_run_sync_and_stream_take_the_options() -> None:
    seen = Seen()
    store = MemoryStore()
    result = _agent(seen, [call("whoami", {}), "done"]).run_sync(
        "hi", store=store, tenant="acme", user="alice")
    assert result.output == "done" and seen.tool == [("acme", "alice")]

    async def streamed() -> str:
        out = ""
        async for chunk in _agent(seen, [call("whoami", {}), "done"]).stream(
                "hi", store=store, tenant="globex", user="bob"):
            out += chunk if isinstance(chunk, str) else ""
        return out

    asyncio.run(streamed())
    assert seen.tool[-1] == ("globex", "bob")
    assert {r.tenant for r in asyncio.run(store.list_runs())} == {"acme", "globex"}


# --------------------------------------------------------------- resumes, forks, sub-runs


async def test_a_resumed_run_keeps_its_tenant_and_the_approval_request_records_it(
        store: RunStore) -> None:
    seen = Seen()
    agent = _agent(seen, [call("wire", {"amount": 5}), call("whoami", {}), "done"])
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("pay", store=store, tenant="acme", user="alice")
    run_id = info.value.run_id or ""
    assert seen.approval == [("acme", "alice")]
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert (task.data["tenant"], task.data["user"]) == ("acme", "alice")
    await decide_approval(task.task_id, store=store, approve=True, by="ann")
    result = await agent.resume(run_id, store=store)
    assert result.output == "done"
    record = await store.get_run(run_id)
    assert (record.status, record.tenant, record.user) == ("completed", "acme", "alice")
    assert seen.tool == [("acme", "alice")], "the resumed run's tools saw its tenant"
    assert [(i.tenant, i.resumed) for i in seen.start] == [("acme", False), ("acme", True)]


async def test_an_escalation_packet_records_the_tenant(store: RunStore) -> None:
    @tool
    def check_fraud(order: str) -> str:
        """Check an order."""
        raise Escalate("looks fraudulent")

    agent = Agent("fraud", model=ScriptedModel([call("check_fraud", {"order": "o1"}), "ok"]),
                  tools=[check_fraud])
    with pytest.raises(Escalate):
        await agent.run("check o1", store=store, tenant="acme", user="alice")
    [task] = await store.list_tasks(TaskFilter(kind="escalation"))
    assert (task.data["tenant"], task.data["user"]) == ("acme", "alice")


async def test_a_fork_keeps_the_tenant(store: RunStore) -> None:
    seen = Seen()
    agent = _agent(seen, [call("whoami", {}), "done", call("whoami", {}), "again"])
    first = await agent.run("hi", store=store, tenant="acme", user="alice")
    forked = await fork_run(agent, first.run_id, at=1, store=store)
    record = await store.get_run(forked.run_id)
    assert record.run_id != first.run_id
    assert (record.tenant, record.user) == ("acme", "alice")
    assert seen.tool[-1] == ("acme", "alice")


async def test_agents_inside_a_flow_inherit_the_runs_tenant(store: RunStore) -> None:
    seen = Seen()
    inner = _agent(seen, [call("whoami", {}), "inner done"], name="inner")

    @flow("outer", agents=[inner])
    async def outer(ctx: FlowContext, input: str) -> str:
        assert (ctx.tenant, ctx.user) == ("acme", "alice")
        return str((await ctx.run_agent(inner, input)).output)

    result = await outer.run("go", store=store, tenant="acme", user="alice")
    assert result.output == "inner done"
    assert seen.tool == [("acme", "alice")]
    assert {(t, u) for _, t, u in seen.guard} == {("acme", "alice")}
    assert (await store.get_run(result.run_id)).tenant == "acme"


# ------------------------------------------------------------------------------- exports


async def test_export_and_import_keep_the_tenant(store: RunStore) -> None:
    source = MemoryStore()
    result = await _agent(Seen(), ["ok"]).run("hi", store=source, tenant="acme", user="alice")
    data = await export_run(result.run_id, store=source)
    assert (data["run"]["tenant"], data["run"]["user"]) == ("acme", "alice")
    assert data["schema_version"] == 3
    await import_run(data, store=store)
    record = await store.get_run(result.run_id)
    assert (record.tenant, record.user) == ("acme", "alice")
    new_id = await import_run(data, store=store, new_id=True)
    assert (await store.get_run(new_id)).tenant == "acme"
    # an export written before runs had tenants imports as a run without one
    old = {**data, "schema_version": 2,
           "run": {k: v for k, v in data["run"].items() if k not in ("tenant", "user")}}
    old_id = await import_run(old, store=store, new_id=True)
    assert (await store.get_run(old_id)).tenant is None
    # a hostile tenant in a file is refused, nothing stored
    for bad in ("", "x" * 10_240, "a\x00b"):
        forged = {**data, "run": {**data["run"], "tenant": bad}}
        with pytest.raises(Exception, match="tenant"):
            await import_run(forged, store=store, new_id=True)
    assert len(await store.list_runs()) == 3


async def test_a_worker_continues_a_run_with_its_tenant_and_a_cancel_reports_it(
        store: RunStore) -> None:
    seen = Seen()

    def agent() -> Agent[Any]:
        return _agent(seen, [call("wire", {"amount": 5}), call("whoami", {}), "done"])

    for i, tenant in enumerate(("acme", "globex")):
        with pytest.raises(ApprovalRequired):
            await agent().run("pay", store=store, run_id=f"w{i}", tenant=tenant,
                              user=f"user-{i}")
    acme_task = next(t for t in await store.list_tasks() if t.data["tenant"] == "acme")
    await decide_approval(acme_task.task_id, store=store, approve=True, by="ann")
    outcomes = await Worker([agent()], store=store).run_until_idle()
    assert [(o.run_id, o.status) for o in outcomes] == [("w0", "completed")]
    assert seen.tool == [("acme", "user-0")]
    assert await cancel_run("w1", store=store, agent=agent(), by="ops") == "cancelled"
    assert (seen.end[-1].status, seen.end[-1].tenant, seen.end[-1].user) == (
        "cancelled", "globex", "user-1")
    assert [(r.run_id, r.tenant) for r in await store.list_runs(RunFilter(tenant="globex"))] == [
        ("w1", "globex")]
