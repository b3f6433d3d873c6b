"""The reliability suite: the proof that retries, breakers and idempotency keys hold up
under load, end to end through real Agents.

- 1,000 scripted runs of three tool calls each (a read, a write carrying an idempotency key
  into a real SQLite table, a read), with 30% transient tool failures and 10% model 429/5xx,
  concurrently in batches: at least 99% finish with the right answer, every run that does
  not finish says why, and no write is ever applied twice.
- A tool that always fails: the breaker stops calling it for the cooldown, the model takes
  its other path, and the breaker closes once the tool is healthy again; two agents (two
  workers' worth of middleware) sharing a Redis breaker store see one breaker.

Unit behaviour lives next door: ``test_retry.py``, ``test_breaker.py`` (including two
processes sharing a :class:`RedisBreakerStore`), ``test_bulkhead.py`` (including an agent
whose pool is full while another agent's pool keeps serving) and ``test_ratelimit.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from keel import (
    Agent,
    CircuitBreaker,
    MemoryStore,
    ModelError,
    RepeatedFailure,
    Retry,
    RetryPolicy,
    RunError,
    ToolContext,
    tool,
)
from keel.core import Message, ModelResponse, ModelSettings, ToolCallPart, ToolSpec, Usage
from keel.guard import undelimit
from keel.reliability import BreakerPolicy, RedisBreakerStore
from keel.testing import FaultyModel, FaultyTool, FunctionModel, faulty_tool
from keel.tools import Tool

RUNS = 1_000
BATCH = 100
FAST = RetryPolicy(base_delay=0.001, max_delay=0.005, random=random.Random(7))
REDIS_URL = "redis://127.0.0.1:6379/0"


def tool_call(turn: int, name: str, args: dict[str, Any]) -> ModelResponse:
    return ModelResponse(
        parts=(ToolCallPart(call_id=f"call_{turn}", tool_name=name, arguments=json.dumps(args)),),
        model="test:ledger", finish_reason="tool_calls",
        usage=Usage(requests=1, input_tokens=20, output_tokens=10))


def observations(messages: list[Message]) -> list[tuple[str, bool, str]]:
    """(tool name, is_error, content) of every tool result so far, in order."""
    return [(p.tool_name, p.is_error, undelimit(p.content))
            for m in messages if m.role == "tool" for p in m.tool_results]


# ------------------------------------------------------------------ the ledger workload


@dataclass
class Ledger:
    """A real SQLite database: balances, every write attempt, and the applied effects, whose
    primary key is the idempotency key (an insert that finds it already there is a
    collision: a write that would have been applied twice)."""

    path: Path
    collisions: int = 0
    db: sqlite3.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.db = sqlite3.connect(self.path)
        self.db.executescript("""
            CREATE TABLE attempts (idempotency_key TEXT NOT NULL, account INTEGER NOT NULL,
                                   attempt INTEGER NOT NULL);
            CREATE TABLE effects (idempotency_key TEXT PRIMARY KEY, account INTEGER NOT NULL,
                                  amount INTEGER NOT NULL);
        """)

    def balance(self, account: int) -> int:
        row = self.db.execute("SELECT COALESCE(SUM(amount), 0) FROM effects WHERE account = ?",
                              (account,)).fetchone()
        return 100 + int(row[0])

    def credit(self, account: int, amount: int, key: str, attempt: int) -> int:
        self.db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (key, account, attempt))
        try:
            self.db.execute("INSERT INTO effects VALUES (?, ?, ?)", (key, account, amount))
        except sqlite3.IntegrityError:
            self.collisions += 1  # the outside system deduplicates; we count it
        self.db.commit()
        return self.balance(account)


def ledger_tools(ledger: Ledger, seed: int) -> list[FaultyTool]:
    @tool
    async def balance(account: int, phase: str) -> int:
        """Read an account's balance."""
        return ledger.balance(account)

    @tool(risk="write")  # not idempotent: keel never retries it blindly
    async def credit(account: int, amount: int, ctx: ToolContext) -> int:
        """Credit an account once, keyed by the call's idempotency key."""
        return ledger.credit(account, amount, ctx.idempotency_key, ctx.attempt)

    # 30% transient failures on every tool: 20% connection errors, 10% timeouts
    return [faulty_tool(t, seed=seed + n, error_rate=0.2, timeout_rate=0.1)
            for n, t in enumerate((balance, credit))]


def amount_for(account: int) -> int:
    return account % 7 + 1


def expected(account: int) -> str:
    return f"account {account}: 100 -> {100 + amount_for(account)}"


def ledger_model(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> ModelResponse | str:
    """Read, credit, read. A failed call is made again with the same arguments (as a model
    would); the answer quotes both reads."""
    account = int(messages[0].text.split(":")[1])
    plan: list[tuple[str, dict[str, Any]]] = [
        ("balance", {"account": account, "phase": "before"}),
        ("credit", {"account": account, "amount": amount_for(account)}),
        ("balance", {"account": account, "phase": "after"}),
    ]
    done = [json.loads(content) for _, is_error, content in observations(messages)
            if not is_error]
    if len(done) < len(plan):
        name, args = plan[len(done)]
        return tool_call(len(messages), name, args)
    return f"account {account}: {done[0]} -> {done[2]}"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger.db")
    yield book
    book.db.close()


@pytest.mark.slow
async def test_a_thousand_runs_under_faults_finish_correctly_and_write_once(
        ledger: Ledger) -> None:
    model = FaultyModel(FunctionModel(ledger_model, name="test:ledger"), seed=11,
                        rate_limit_rate=0.05, server_error_rate=0.05)
    tools = ledger_tools(ledger, seed=23)
    # One agent serves every run, as in production, with the DEFAULT circuit breaker: it
    # counts consecutive failures, so faults this common (and this busy) never open it.
    agent = Agent("ledger", model=model, tools=tools, max_repeated_failures=5,
                  middleware=[Retry(FAST)])
    store = MemoryStore()

    async def one(account: int) -> str:
        return (await agent.run(f"account:{account}", store=store,
                                run_id=f"ledger-{account}")).output

    started = time.perf_counter()
    outcomes: list[str | BaseException] = []
    for first in range(0, RUNS, BATCH):
        outcomes += await asyncio.gather(*(one(a) for a in range(first, first + BATCH)),
                                         return_exceptions=True)
    elapsed = time.perf_counter() - started

    correct = [a for a, out in enumerate(outcomes) if out == expected(a)]
    failed = {a: out for a, out in enumerate(outcomes) if isinstance(out, BaseException)}
    wrong = {a: out for a, out in enumerate(outcomes)
             if not isinstance(out, BaseException) and out != expected(a)}
    rate = len(correct) / RUNS
    print(f"\nreliability suite: {len(correct)}/{RUNS} runs correct ({rate:.1%}) in "
          f"{elapsed:.1f}s; failed: {dict(Counter(type(e).__name__ for e in failed.values()))}; "
          f"model faults {model.faults.injected}/{model.faults.calls} calls, tool faults "
          f"{sum(t.faults.injected for t in tools)}/{sum(t.faults.calls for t in tools)} "
          f"calls")
    assert wrong == {}
    assert rate >= 0.99
    assert model.faults.injected > 0.08 * model.faults.calls

    # every run that did not finish says why, with its run id, step and cause
    for account, exc in failed.items():
        assert isinstance(exc, RunError), repr(exc)
        assert exc.run_id == f"ledger-{account}" and exc.step_key
        record = await store.get_run(exc.run_id)
        assert record.status == "failed"
        assert record.error is not None and record.error["type"] == type(exc).__name__
        if isinstance(exc, RepeatedFailure):
            assert "failed 5 times with the same arguments" in exc.message
            # the underlying cause is named: the last failure the model saw
            assert "(timeout: " in exc.message or "(tool_error: " in exc.message
        else:
            assert isinstance(exc, ModelError), repr(exc)
            assert "gave up after 4 attempts" in " ".join(getattr(exc, "__notes__", ()))

    # no side effect twice: one effect per account that got past its write, none repeated
    effects = ledger.db.execute("SELECT account, COUNT(*) FROM effects GROUP BY account")
    per_account = dict(effects.fetchall())
    assert ledger.collisions == 0
    assert all(n == 1 for n in per_account.values())
    assert set(correct) <= set(per_account)
    # each idempotency key reached the database once (keel never re-sent a write)
    keys, rows, retried = ledger.db.execute(
        "SELECT COUNT(DISTINCT idempotency_key), COUNT(*), MAX(attempt) FROM attempts").fetchone()
    (applied,) = ledger.db.execute("SELECT COUNT(*) FROM effects").fetchone()
    assert keys == rows == applied == len(per_account) and retried == 1

    # every failed attempt is journaled; the non-idempotent write is never retried by keel
    attempts = Counter[str]()
    for account in range(RUNS):
        for entry in await store.read_journal(f"ledger-{account}"):
            if entry.kind == "attempt":
                attempts["credit" if "tool:credit" in entry.key else
                         "balance" if "tool:balance" in entry.key else "model"] += 1
    assert attempts["credit"] == 0
    assert attempts["balance"] > 0 and attempts["model"] > 0
    print(f"journaled failed attempts: {dict(attempts)}")


# ---------------------------------------------------------------- a tool that is down


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """The primary backend of a lookup; ``down`` makes every call fail."""

    down: bool = True
    calls: int = 0


def primary_and_backup(backend: Backend) -> list[Tool]:
    @tool
    async def lookup(order: int) -> str:
        """Look an order up in the primary system."""
        backend.calls += 1
        if backend.down:
            raise ConnectionError("primary orders service unreachable")
        return f"order {order}: shipped"

    @tool
    async def cached_lookup(order: int) -> str:
        """Look an order up in the read replica (may be stale)."""
        return f"order {order}: shipped (cached)"

    return [lookup, cached_lookup]


def lookup_model(messages: list[Message], tools: list[ToolSpec],
                 settings: ModelSettings) -> ModelResponse | str:
    """Try the primary lookup; on ``circuit_open`` use the replica; answer with what came."""
    order = int(messages[0].text.split(":")[1])
    seen = observations(messages)
    if not seen:
        return tool_call(0, "lookup", {"order": order})
    name, is_error, content = seen[-1]
    if not is_error:
        return f"{content} via {name}"
    error = json.loads(content)["error"]
    if error["error_type"] == "circuit_open" and name == "lookup":
        return tool_call(1, "cached_lookup", {"order": order})
    return f"failed: {error['error_type']}"


async def test_a_dead_tool_is_skipped_for_the_cooldown_then_recovers() -> None:
    backend = Backend()
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, window=60, cooldown=30)
    breaker = CircuitBreaker(policy, clock=clock)
    agent = Agent("orders", model=FunctionModel(lookup_model), tools=primary_and_backup(backend),
                  middleware=[Retry(FAST), breaker])
    store = MemoryStore()

    # first run: the retries are the three failures that open the breaker; the fourth
    # attempt is refused and the model takes the replica path
    first = await agent.run("order:1", store=store)
    assert backend.calls == 3
    assert first.output == "order 1: shipped (cached) via cached_lookup"
    assert (await breaker.state("tool:lookup")).state == "open"
    kinds = [e.kind for e in await store.read_journal(first.run_id)]
    assert kinds.count("attempt") == 3

    # while open: 50 more runs, not one real call, all served from the other path
    outs = await asyncio.gather(*(agent.run(f"order:{n}", store=store) for n in range(2, 52)))
    assert backend.calls == 3
    assert all(o.output.endswith("(cached) via cached_lookup") for o in outs)

    # the cooldown passes while the tool is still down: exactly one trial call, open again
    clock.now += 30
    again = await agent.run("order:60", store=store)
    assert backend.calls == 4
    assert again.output.endswith("via cached_lookup")
    assert (await breaker.state("tool:lookup")).state == "open"

    # the tool recovers and the cooldown passes: the trial succeeds and the breaker closes
    backend.down = False
    clock.now += 30
    healed = await agent.run("order:70", store=store)
    assert healed.output == "order 70: shipped via lookup"
    assert (await breaker.state("tool:lookup")).state == "closed"
    outs = await asyncio.gather(*(agent.run(f"order:{n}", store=store) for n in range(71, 81)))
    assert all(o.output.endswith("shipped via lookup") for o in outs)
    assert backend.calls == 4 + 1 + 10


def redis_up() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False
    return True


@pytest.fixture
async def shared_prefix() -> AsyncIterator[str]:
    if not redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"keel:test:suite:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_two_workers_sharing_a_redis_breaker_see_one_breaker(shared_prefix: str) -> None:
    """Agent-level: two workers' agents, each with its own RedisBreakerStore connection.
    (Two real processes sharing one breaker: test_breaker.py, ``Redis across processes``.)"""
    backend = Backend()
    stores = [RedisBreakerStore(REDIS_URL, prefix=shared_prefix) for _ in range(2)]
    policy = BreakerPolicy(failure_threshold=3, window=60, cooldown=30)
    workers = [Agent("orders", model=FunctionModel(lookup_model),
                     tools=primary_and_backup(backend),
                     middleware=[Retry(FAST), CircuitBreaker(policy, store=s)])
               for s in stores]
    store = MemoryStore()
    try:
        first = await workers[0].run("order:1", store=store)
        assert first.output.endswith("via cached_lookup") and backend.calls == 3
        # the other worker never calls the dead tool: it sees the breaker worker 0 opened
        second = await workers[1].run("order:2", store=store)
        assert second.output == "order 2: shipped (cached) via cached_lookup"
        assert backend.calls == 3
        snap = await stores[1].snapshot("tool:lookup", policy)
        assert snap.state == "open" and snap.retry_in is not None and 0 < snap.retry_in <= 30
    finally:
        for s in stores:
            await s.aclose()

