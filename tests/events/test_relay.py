"""The relay end to end: real agent runs write their events to the outbox with the journal,
the relay publishes them to a bus and marks them, outages are retried without losing or
doubling anything, and a resumed run does not report its replayed steps again."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ApprovalRequired, ConfigError, StoreError, StoreUnavailable, tool
from keel.events import (
    Event,
    EventBus,
    EventBusUnavailable,
    MemoryBus,
    Relay,
    Start,
    Subscription,
)
from keel.runtime import decide_approval
from keel.store import MemoryStore, RunStore, TaskFilter
from keel.testing import ScriptedModel, call
from keel.testing._store_conformance import sample_entry, sample_run
from tests._stores import BACKENDS, fresh_store


def shop() -> list[Any]:
    @tool
    def lookup(order: str) -> str:
        """Find an order."""
        return f"order {order}: shipped, card 4111 1111 1111 1111"

    @tool
    def broken(order: str) -> str:
        """Fails."""
        raise ValueError("the backend is down for order " + order)

    @tool(risk="irreversible")
    def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    return [lookup, broken, refund]


class FlakyBus(EventBus):
    """A MemoryBus that is down for its first ``down`` publishes (test-only)."""

    def __init__(self, down: int) -> None:
        self.inner = MemoryBus()
        self.down = down
        self.calls = 0

    async def publish(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise EventBusUnavailable("the test bus is down")
        await self.inner.publish(events)

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        return await self.inner.subscribe(group, types=types, ack_wait=ack_wait, start=start)


class FlakyMarks(MemoryStore):
    """A memory store whose first ``down`` mark_published calls fail (the relay crashed or
    the store went away between the publish and the mark)."""

    def __init__(self, down: int) -> None:
        super().__init__(outbox=True)
        self.down = down

    async def mark_published(self, positions: Collection[int]) -> int:
        if self.down > 0:
            self.down -= 1
            raise StoreUnavailable("the test store is away")
        return await super().mark_published(positions)


def by_type(events: Sequence[Event]) -> Counter[str]:
    return Counter(e.type for e in events)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_agent_run_reaches_the_bus_through_the_outbox(backend: str,
                                                                tmp_path: Path) -> None:
    async with fresh_store(backend, tmp_path, "keel_relay", outbox=True) as store:
        model = ScriptedModel([call("lookup", {"order": "A1"}), call("broken", {"order": "A1"}),
                               "it shipped"])
        agent = Agent("shop", model=model, tools=shop())
        result = await agent.run("where is A1?", store=store, tenant="acme")
        bus = MemoryBus()
        relay = Relay(store, bus, batch=2)
        await relay.check()
        total = 0
        while (n := await relay.run_once()) > 0:
            total += n
        events = bus.events
        assert total == len(events) == relay.stats.published == 4
        assert [e.type for e in events] == ["run.started", "tool.called", "tool.called",
                                            "run.completed"]
        assert all(e.run_id == result.run_id and e.tenant == "acme" and e.agent == "shop"
                   for e in events)
        ok, failed = events[1], events[2]
        assert ok.data["tool"] == "lookup" and ok.data["ok"] is True
        assert failed.data["tool"] == "broken" and failed.data["ok"] is False
        assert failed.data["error_type"]
        assert "4111" not in "".join(e.to_json().decode() for e in events)
        # one tool.called per tool result in the journal, and only those
        journal = await store.read_journal(result.run_id)
        results = [e for e in journal if e.kind == "tool" and e.phase == "result"]
        assert {f"{result.run_id}:{e.seq}:result" for e in results} == \
            {e.id for e in events if e.type == "tool.called"}
        assert await store.read_outbox(0, 100) == []  # all marked


async def test_a_resumed_run_reports_each_step_once() -> None:
    store = MemoryStore(outbox=True)
    model = ScriptedModel([call("lookup", {"order": "B2"}), call("refund", {"order": "B2"}),
                           "refunded"])
    agent = Agent("shop", model=model, tools=shop())
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("refund B2", store=store)
    run_id = info.value.run_id or ""
    with pytest.raises(ApprovalRequired):  # resumed before the decision: parks again
        await agent.resume(run_id, store=store)
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    await decide_approval(task.task_id, store=store, approve=True, by="ann", comment="ok")
    await agent.resume(run_id, store=store)
    bus = MemoryBus()
    relay = Relay(store, bus)
    await relay.run_once()
    events = bus.events
    assert [e.type for e in events] == [
        "run.started", "tool.called", "approval.requested", "run.suspended",
        "approval.decided", "tool.called", "run.completed"]
    assert len({e.id for e in events}) == len(events)
    decided = events[4]
    assert decided.data["by"] == "ann" and decided.data["approved"] is True
    assert [e.data["tool"] for e in events if e.type == "tool.called"] == ["lookup", "refund"]


async def test_a_bus_outage_is_retried_and_nothing_is_lost_or_doubled() -> None:
    store = MemoryStore(outbox=True)
    agent = Agent("shop", model=ScriptedModel([call("lookup", {"order": "C3"}), "ok"]),
                  tools=shop())
    await agent.run("C3?", store=store)
    bus = FlakyBus(down=3)
    relay = Relay(store, bus, backoff_s=0.001, max_backoff_s=0.01, poll_s=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    sub = await bus.subscribe("g", start="all")
    got: list[Event] = []
    while len(got) < 3:
        got += [d.event for d in await sub.fetch(10, wait=5.0)]
    stop.set()
    await running
    assert relay.stats.retries == 3 and relay.stats.last_error is None
    assert [e.type for e in got] == ["run.started", "tool.called", "run.completed"]
    assert [e.type for e in bus.inner.events] == [e.type for e in got], "published twice"
    assert await store.read_outbox(0, 100) == []


async def test_a_failed_mark_is_retried_without_publishing_again() -> None:
    store = FlakyMarks(down=2)
    agent = Agent("shop", model=ScriptedModel(["hello"]), tools=[])
    await agent.run("hi", store=store)
    bus = MemoryBus()
    relay = Relay(store, bus)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await relay.run_once()
    assert await relay.run_once() == 0  # the held batch is marked, nothing new
    assert [e.type for e in bus.events] == ["run.started", "run.completed"]
    assert await store.read_outbox(0, 100) == []
    assert relay.stats.published == 2


async def test_a_relay_that_died_after_publishing_is_covered_by_the_next() -> None:
    """A relay that published and died before marking: its rows come back when the claim
    runs out, and the next relay publishes them again under the same ids (at least once)."""
    store = MemoryStore(outbox=True)
    await Agent("shop", model=ScriptedModel(["hi"]), tools=[]).run("hi", store=store)
    bus = MemoryBus()
    first = await store.read_outbox(0, 100, claim_s=0.001)
    await bus.publish([e for _, e in first])  # ... and the relay dies here
    await asyncio.sleep(0.01)
    await Relay(store, bus).run_once()
    ids = [e.id for e in bus.events]
    assert len(ids) == 4 and len(set(ids)) == 2, "republished under the same ids"


async def test_start_up_checks_fail_clearly() -> None:
    store = MemoryStore(outbox=True)
    with pytest.raises(EventBusUnavailable):
        await Relay(store, FlakyBus(down=1)).check()

    class PingBus(FlakyBus):
        async def ping(self) -> None:
            raise EventBusUnavailable("no route to the test bus")

    pinged = PingBus(down=0)
    with pytest.raises(EventBusUnavailable, match="no route"):
        await Relay(store, pinged).check()
    assert pinged.calls == 0, "a bus with ping() is pinged, not published to"

    class OldStore(MemoryStore):  # a third-party store written before the outbox
        read_outbox = RunStore.read_outbox
        mark_published = RunStore.mark_published
        prune_outbox = RunStore.prune_outbox

    with pytest.raises(StoreError, match="no outbox"):
        await Relay(OldStore(), MemoryBus()).check()
    relay = Relay(OldStore(), MemoryBus())
    with pytest.raises(StoreError, match="no outbox"):  # not retried for ever
        await asyncio.wait_for(relay.run(), 5)


@pytest.mark.parametrize("kwargs", [
    {"batch": 0}, {"batch": 10_001}, {"batch": "5"}, {"batch": True}, {"poll_s": 0},
    {"poll_s": float("nan")}, {"prune_after_s": -1}, {"backoff_s": 0},
    {"max_backoff_s": 0.0001}, {"claim_s": float("inf")},
])
def test_bad_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Relay(MemoryStore(outbox=True), MemoryBus(), **kwargs)


def test_a_relay_needs_a_store_and_a_bus() -> None:
    with pytest.raises(ConfigError, match="store"):
        Relay("memory:", MemoryBus())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bus"):
        Relay(MemoryStore(), object())  # type: ignore[arg-type]


async def test_prune_deletes_old_published_rows_only() -> None:
    store = MemoryStore(outbox=True)
    await Agent("shop", model=ScriptedModel(["hi"]), tools=[]).run("hi", store=store)
    relay = Relay(store, MemoryBus(), prune_after_s=0)
    await relay.run_once()
    await Agent("shop", model=ScriptedModel(["hi"]), tools=[]).run("again", store=store)
    assert await relay.prune() == 2  # the two published rows; the new ones stay
    assert len(await store.read_outbox(0, 100)) == 2
    assert await Relay(store, MemoryBus(), prune_after_s=None).prune() == 0


async def test_two_relays_on_one_postgres_outbox_share_it_without_overlap(
        tmp_path: Path) -> None:
    """Two relays (two store handles, as two processes would have) drain one Postgres outbox
    at once: every event is published, and none by both while their claims hold."""
    async with fresh_store("postgres", tmp_path, "keel_relays", outbox=True) as store:
        for i in range(40):
            await store.create_run(sample_run(f"run-{i:02d}", tenant="acme"))
            await store.append(f"run-{i:02d}", [sample_entry(s, f"k{s}", kind="tool",
                                                             name="lookup")
                                                for s in range(4)])
        schema = store.schema  # type: ignore[attr-defined]
        from keel.store import PostgresStore
        from tests._stores import PG_URL

        async with PostgresStore(PG_URL, schema=schema, outbox=True) as other:
            buses = [MemoryBus(), MemoryBus()]
            relays = [Relay(store, buses[0], batch=7), Relay(other, buses[1], batch=7)]

            async def drain(relay: Relay) -> None:
                published = await relay.run_once()
                while published:  # each call awaits the database: the relays interleave
                    published = await relay.run_once()

            await asyncio.gather(*(drain(r) for r in relays))
        ids = [[e.id for e in bus.events] for bus in buses]
        assert not set(ids[0]) & set(ids[1]), "an event was published by both relays"
        assert len(ids[0]) + len(ids[1]) == 40 * 5
        assert ids[0] and ids[1], "one relay did all the work: nothing was shared"
        assert await store.read_outbox(0, 1000) == []
