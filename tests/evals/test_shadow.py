"""Shadow mode, proved: 1,000 production runs on a real SQLite store, each shadowed by a
candidate whose model calls an irreversible tool (a refund that INSERTs into a real SQLite
effects table) and a read tool. The shadow never makes an effect, every would-call is
counted, production answers exactly as it does without the shadow, and the read is served
from production's recorded result."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ApprovalRequired, MemoryStore, tool
from keel.core import Message, ToolContext
from keel.evals import EvalError, Shadow, shadow_report
from keel.runtime import ApprovalPolicy, ApprovalRule
from keel.store import RunFilter, SQLiteStore, TaskFilter
from keel.testing import FunctionModel, call

RUNS = 1000


class Shop:
    """A real SQLite effects table, and a record of who read what."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE effects (run_id TEXT, order_id TEXT, amount INTEGER)")
        self.reads: list[str] = []

        @tool(risk="irreversible")
        def issue_refund(order: str, amount: int, ctx: ToolContext) -> str:
            """Refund an order."""
            with sqlite3.connect(self.path, timeout=60) as db:
                db.execute("INSERT INTO effects VALUES (?, ?, ?)", (ctx.run_id, order, amount))
            return f"refund of {amount} issued for {order}"

        @tool(risk="read")
        def lookup_order(order: str, ctx: ToolContext) -> dict[str, Any]:
            """Look an order up."""
            self.reads.append(ctx.run_id)
            return {"order": order, "total": 40 + int(order) % 7}

        self.tools = [issue_refund, lookup_order]

    def effects(self) -> list[tuple[str, str, int]]:
        with sqlite3.connect(self.path, timeout=60) as db:
            return list(db.execute("SELECT run_id, order_id, amount FROM effects"))


def _order(messages: list[Message]) -> str:
    first = next(m.text for m in messages if m.role == "user")
    found = re.search(r"\d+", first)
    return found.group() if found else "0"


def _turn(messages: list[Message]) -> int:
    return sum(1 for m in messages if m.role == "assistant")


def production_model(messages: list[Message], tools: Any, settings: Any) -> Any:
    order, turn = _order(messages), _turn(messages)
    if turn == 0:
        return call("lookup_order", {"order": order})
    if turn == 1:
        return call("issue_refund", {"order": order, "amount": 10})
    return f"Refunded 10 on order {order}."


def candidate_model(messages: list[Message], tools: Any, settings: Any) -> Any:
    order, turn = _order(messages), _turn(messages)
    if turn == 0:
        return call("lookup_order", {"order": order})
    if turn == 1:
        return call("issue_refund", {"order": order, "amount": 25})
    if int(order) % 4 == 0:  # the candidate words a quarter of its answers differently
        return f"Order {order}: a refund of 25 is on its way."
    return f"Refunded 10 on order {order}."


def production_agent(shop: Shop) -> Agent[str]:
    # production's refunds up to 100 are exempt from approval (an explicit policy)
    small = ApprovalRule("issue_refund", lambda a: a["amount"] <= 100, "small refunds",
                         exempt=True)
    return Agent("support", model=FunctionModel(production_model), tools=shop.tools,
                 approval=ApprovalPolicy(rules=(small,)))


def candidate_agent(shop: Shop) -> Agent[str]:
    # the candidate keeps the default policy: its irreversible refund would need approval
    return Agent("support-v2", model=FunctionModel(candidate_model), tools=shop.tools)


async def _run_all(shadow: Shadow | None, agent: Agent[str], store: Any,
                   n: int) -> list[str]:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> str:
        async with sem:
            if shadow is None:
                result = await agent.run(f"Please refund order {i}", store=store,
                                         user=f"u{i % 50}")
            else:
                result = await shadow.run(agent, f"Please refund order {i}", store=store,
                                          user=f"u{i % 50}")
            return str(result.output)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_thousand_shadowed_runs_make_no_effects_and_count_every_would_call(
        tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")
    async with SQLiteStore(tmp_path / "runs.db") as store:
        shadow = Shadow(candidate_agent(shop), sample=1.0, max_pending=RUNS)
        outputs = await _run_all(shadow, production_agent(shop), store, RUNS)
        await shadow.drain()
        assert shadow.stats.started == RUNS and shadow.stats.skipped == 0
        assert shadow.stats.completed == RUNS, shadow.stats.errors

        runs = await store.list_runs(RunFilter(limit=10_000))
        shadows = [r for r in runs if "shadow_of" in r.metadata]
        production = {r.run_id for r in runs if "shadow_of" not in r.metadata}
        assert len(shadows) == RUNS and len(production) == RUNS
        assert {r.metadata["shadow_of"] for r in shadows} == production
        assert all(r.status == "completed" for r in shadows)

        # the effects table: exactly production's refunds, none from a shadow run
        effects = shop.effects()
        assert len(effects) == RUNS
        assert {e[0] for e in effects} == production
        assert all(amount == 10 for _, _, amount in effects)
        # the read tool ran once per production run; every shadow read was served from the
        # production run's recorded result
        assert sorted(shop.reads) == sorted(production)
        assert shadow.stats.reads_replayed == RUNS and shadow.stats.reads_live == 0
        # nobody was asked to approve anything
        assert await store.list_tasks(TaskFilter(limit=10_000)) == []

        report = await shadow_report(store)
        assert report.shadow_runs == RUNS and report.compared == RUNS
        assert report.compare == "exact"
        assert report.would_calls == {"issue_refund": RUNS}  # 1,000 runs x 1 call each
        assert report.would_calls_total == RUNS and report.unavailable == {}
        assert report.approvals_requested == 0 and report.errors == {}
        assert report.agreed == RUNS - RUNS // 4 and report.agreement == pytest.approx(0.75)
        md = report.to_markdown()
        assert "issue_refund: 1000" in md and "75.0%" in md

        # a would-call is journaled in the shadow run with its arguments and risk
        journal = await store.read_journal(shadows[0].run_id)
        [refund] = [e for e in journal if e.kind == "tool" and e.name == "issue_refund"
                    and e.phase == "result"]
        assert refund.data["value"]["keel_shadow"] == "would_call"
        assert refund.data["value"]["risk"] == "irreversible"
        assert refund.data["value"]["arguments"]["amount"] == 25

    # production outputs are identical to the same traffic without the shadow
    plain = Shop(tmp_path / "plain-effects.db")
    async with SQLiteStore(tmp_path / "plain.db") as store:
        baseline = await _run_all(None, production_agent(plain), store, RUNS)
    assert outputs == baseline
    assert len(plain.effects()) == RUNS


async def test_live_reads_run_for_calls_production_did_not_make(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")

    def other_order(messages: list[Message], tools: Any, settings: Any) -> Any:
        turn = _turn(messages)
        if turn == 0:  # reads an order production never looked up
            return call("lookup_order", {"order": "999"})
        return "checked"

    candidate = Agent("v2", model=FunctionModel(other_order), tools=shop.tools)
    store = MemoryStore()
    replay = Shadow(candidate, sample=1.0)
    live = Shadow(candidate, sample=1.0, read_tools="live")
    prod = production_agent(shop)
    await replay.run(prod, "refund order 7", store=store)
    await replay.drain()
    assert replay.stats.reads_unavailable == 1 and len(shop.reads) == 1  # production's only
    report = await shadow_report(store)
    assert report.unavailable == {"lookup_order": 1}
    await live.run(prod, "refund order 8", store=store)
    await live.drain()
    assert live.stats.reads_live == 1 and len(shop.reads) == 3  # production's and the live one


async def test_sampling_is_deterministic_and_bounded(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")
    candidate = candidate_agent(shop)
    a, b = Shadow(candidate, sample=0.3), Shadow(candidate, sample=0.3)
    keys = [f"run-{i}" for i in range(2000)]
    picked = [k for k in keys if a.sampled(k)]
    assert picked == [k for k in keys if b.sampled(k)]
    assert 0.25 < len(picked) / len(keys) < 0.35
    assert not Shadow(candidate, sample=0.0).sampled("x")

    # by user: every run of a user is in or out together
    store = MemoryStore()
    by_user = Shadow(candidate, sample=0.5, sample_by="user", max_pending=1000)
    prod = production_agent(shop)
    for i in range(20):
        await by_user.run(prod, f"refund order {i}", store=store, user="ann")
    await by_user.drain()
    assert by_user.stats.started in (0, 20)

    # a full queue skips and counts instead of piling up work
    gate = asyncio.Event()

    async def waiting(messages: list[Message], tools: Any, settings: Any) -> Any:
        await gate.wait()
        return "done"

    slow = Agent("slow", model=FunctionModel(waiting))
    tight = Shadow(slow, sample=1.0, max_pending=2)
    for i in range(10):
        await tight.run(prod, f"refund order {i}", store=store)
    assert (tight.pending, tight.stats.started, tight.stats.skipped) == (2, 2, 8)
    gate.set()
    await tight.drain()
    assert tight.pending == 0 and tight.stats.completed == 2


async def test_shadow_failures_never_reach_production(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")

    def broken(messages: list[Message], tools: Any, settings: Any) -> Any:
        raise RuntimeError("candidate model is down")

    candidate = Agent("v2", model=FunctionModel(broken), tools=shop.tools)
    shadow = Shadow(candidate, sample=1.0)
    store = MemoryStore()
    result = await shadow.run(production_agent(shop), "refund order 3", store=store)
    assert result.output == "Refunded 10 on order 3."
    await shadow.drain()
    assert shadow.stats.completed == 0
    report = await shadow_report(store)
    assert report.shadow_runs == 1 and report.compared == 0
    assert sum(report.errors.values()) == 1


async def test_tools_that_demand_approval_are_never_gated_in_a_shadow(tmp_path: Path) -> None:
    calls: list[str] = []

    @tool(risk="write", approval=True)
    def close_account(user: str) -> str:
        """Close an account."""
        calls.append(user)
        return "closed"

    @tool  # no declared risk: treated as having effects
    def notify(text: str) -> str:
        """Send a note."""
        calls.append(text)
        return "sent"

    def model(messages: list[Message], tools: Any, settings: Any) -> Any:
        if _turn(messages) == 0:
            return [call("close_account", {"user": "ann"}), call("notify", {"text": "hi"})]
        return "done"

    candidate = Agent("v2", model=FunctionModel(model), tools=[close_account, notify])
    store = MemoryStore()
    # the candidate on its own waits for a person ...
    with pytest.raises(ApprovalRequired):
        await candidate.run("close it", store=store)
    # ... its shadow never asks anyone and never calls either tool
    before, made = len(await store.list_tasks()), list(calls)
    shadow = Shadow(candidate, sample=1.0)
    shop = Shop(tmp_path / "effects.db")
    await shadow.run(production_agent(shop), "refund order 1", store=store)
    await shadow.drain()
    assert shadow.stats.completed == 1, shadow.stats.errors
    assert calls == made and len(await store.list_tasks()) == before
    report = await shadow_report(store)
    assert report.would_calls == {"close_account": 1, "notify": 1}


def test_shadow_refuses_bad_settings(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")
    candidate = candidate_agent(shop)
    for kwargs, fix in (({"sample": 1.5}, "from 0 to 1"), ({"sample": float("nan")}, "0 to 1"),
                        ({"sample": True}, "0 to 1"), ({"read_tools": "all"}, "'replay'"),
                        ({"sample_by": "tenant"}, "'run' or 'user'"),
                        ({"max_pending": 0}, "from 1"), ({"observation": ""}, "characters"),
                        ({"observation": "x" * 5000}, "characters"),
                        ({"store": 42}, "RunStore or a store URL")):
        with pytest.raises(EvalError, match=fix):
            Shadow(candidate, **kwargs)
    with pytest.raises(EvalError, match="Agent candidate"):
        Shadow("not an agent")  # type: ignore[arg-type]


async def test_shadow_report_refuses_bad_input() -> None:
    store = MemoryStore()
    with pytest.raises(EvalError, match="'exact', 'fuzzy'"):
        await shadow_report(store, compare="close")  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="not before"):
        await shadow_report(store, since=200.0, until=100.0)
    with pytest.raises(EvalError, match="epoch seconds"):
        await shadow_report(store, since="yesterday")  # type: ignore[arg-type]
    empty = await shadow_report(store)
    assert empty.shadow_runs == 0 and empty.agreement is None
    assert "0 shadow run(s)" in empty.to_markdown()


async def test_report_comparisons_fuzzy_and_callable(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")
    store = MemoryStore()
    shadow = Shadow(candidate_agent(shop), sample=1.0)
    prod = production_agent(shop)
    for i in (1, 4):  # order 4: the candidate words its answer differently
        await shadow.run(prod, f"refund order {i}", store=store)
    await shadow.drain()
    assert (await shadow_report(store)).agreed == 1
    assert (await shadow_report(store, compare="fuzzy")).agreed == 1

    def boom(a: Any, b: Any) -> float:
        raise ValueError("cannot judge")

    judged = await shadow_report(store, compare=boom)
    assert judged.compare_errors == 2 and judged.compared == 0
    always = await shadow_report(store, compare=lambda a, b: 0.9)
    assert always.agreement == 1.0



async def test_a_shadow_a_guard_escalates_is_cancelled_and_nobody_is_asked(
        tmp_path: Path) -> None:
    from keel.runtime import GuardDecision, Guardrail

    worried = Guardrail(lambda inp: GuardDecision.escalate("looks sensitive"), places="input")
    candidate = Agent("v2", model=FunctionModel(candidate_model),
                      tools=Shop(tmp_path / "c.db").tools, middleware=[worried])
    shadow = Shadow(candidate, sample=1.0)
    store = MemoryStore()
    shop = Shop(tmp_path / "effects.db")
    result = await shadow.run(production_agent(shop), "refund order 2", store=store)
    assert result.output == "Refunded 10 on order 2."
    await shadow.drain()
    assert shadow.stats.suspended == 1, shadow.stats
    [shadowed] = [r for r in await store.list_runs() if "shadow_of" in r.metadata]
    assert shadowed.status == "cancelled"
    assert [t for t in await store.list_tasks() if t.status != "resolved"] == []
    [task] = await store.list_tasks()
    assert task.by == "keel.shadow" and task.resolution["action"] == "dismiss"
    assert (await shadow_report(store)).errors == {"cancelled": 1}


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
async def test_shadow_and_report_on_every_backend(backend: str, tmp_path: Path) -> None:
    from tests._stores import fresh_store

    shop = Shop(tmp_path / "effects.db")
    async with fresh_store(backend, tmp_path, "keel_shadow") as store:
        shadow = Shadow(candidate_agent(shop), sample=1.0)
        prod = production_agent(shop)
        for i in range(8):
            await shadow.run(prod, f"refund order {i}", store=store, tenant="acme")
        await shadow.drain()
        assert shadow.stats.completed == 8 and shadow.stats.reads_replayed == 8
        report = await shadow_report(store, tenant="acme")
        assert (report.shadow_runs, report.would_calls, report.agreed) == (
            8, {"issue_refund": 8}, 6)
        assert (await shadow_report(store, tenant="other")).shadow_runs == 0
    assert len(shop.effects()) == 8


async def test_calls_a_guard_would_gate_are_refused_and_counted(tmp_path: Path) -> None:
    sent: list[str] = []

    @tool(risk="read")
    def customer(order: str) -> dict[str, str]:
        """The customer of an order."""
        return {"email": "ann.lee@example.com"}

    @tool(risk="write")
    def send_receipt(to: str) -> str:
        """E-mail a receipt."""
        sent.append(to)
        return "sent"

    def model(messages: list[Message], tools: Any, settings: Any) -> Any:
        turn = _turn(messages)
        if turn == 0:
            return call("customer", {"order": "3"})
        if turn == 1:  # the address comes from the tool's output: tainted
            return call("send_receipt", {"to": "ann.lee@example.com"})
        return "done"

    prod = Agent("v1", model=FunctionModel(model), tools=[customer, send_receipt])
    candidate = Agent("v2", model=FunctionModel(model), tools=[customer, send_receipt])
    store = MemoryStore()
    with pytest.raises(ApprovalRequired):  # production waits for a person ...
        await prod.run("receipt for order 3", store=store)
    tasks = len(await store.list_tasks())
    shadow = Shadow(candidate, sample=1.0, read_tools="live")
    shop = Shop(tmp_path / "effects.db")
    await shadow.run(production_agent(shop), "receipt for order 3", store=store)
    await shadow.drain()
    assert shadow.stats.completed == 1, shadow.stats.errors
    # ... the shadow asks nobody, sends nothing, and the report counts the gated call
    assert sent == [] and len(await store.list_tasks()) == tasks
    report = await shadow_report(store)
    assert report.would_calls == {"send_receipt": 1} and report.gated == {"send_receipt": 1}
    assert report.approvals_requested == 0
    assert "a guard wanted approved" in report.to_markdown()


async def test_the_shadows_own_report_uses_its_store_and_comparison(tmp_path: Path) -> None:
    shop = Shop(tmp_path / "effects.db")
    store = MemoryStore()
    shadow = Shadow(candidate_agent(shop), sample=1.0, store=store, compare="fuzzy")
    for i in (1, 4):
        await shadow.run(production_agent(shop), f"refund order {i}", store=store)
    await shadow.drain()
    report = await shadow.report()
    assert report.compare == "fuzzy" and report.shadow_runs == 2
    with pytest.raises(EvalError, match="'exact', 'fuzzy'"):
        Shadow(candidate_agent(shop), compare="semantic")  # type: ignore[arg-type]


async def test_a_flow_in_production_has_its_reads_served_to_the_shadow(tmp_path: Path) -> None:
    from keel.runtime import flow

    shop = Shop(tmp_path / "effects.db")
    inner = production_agent(shop)

    @flow("desk", agents=[inner])
    async def desk(ctx: Any, input: str) -> Any:
        return (await ctx.run_agent(inner, input)).output

    store = MemoryStore()
    shadow = Shadow(candidate_agent(shop), sample=1.0)
    result = await shadow.run(desk, "refund order 5", store=store)
    assert result.output == "Refunded 10 on order 5."
    await shadow.drain()
    assert shadow.stats.completed == 1 and shadow.stats.reads_replayed == 1
    assert len(shop.reads) == 1  # production's read only: the shadow's was served
