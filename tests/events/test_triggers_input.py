"""Triggers refuse misuse with clear keel errors, survive hostile events, and ride out bus
outages (never dropping an event); an unreachable bus at start is a clear error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from keel import ConfigError, StoreUnavailable, UserError
from keel.events import (
    Delivery,
    Event,
    EventBus,
    EventBusUnavailable,
    EventRejected,
    MemoryBus,
    RedisBus,
    Start,
    Subscription,
    Trigger,
    Triggers,
)
from keel.store import MemoryStore, SQLiteStore
from tests.events.triggerkit import Effects, OrderProcessed, make_agent, order_trigger, orders


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    return make_agent(Effects(tmp_path / "effects.db"))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"type": "Order Processed"}, "event type"),
    ({"type": "x" * 200}, "event type"),
    ({"type": 5}, "event type"),
    ({"agent": "followup"}, "Agent or a flow"),
    ({"agent": None}, "Agent or a flow"),
    ({"payload": object()}, "pydantic cannot validate"),
    ({"input": "text"}, "input"),
    ({"tenant": 5}, "tenant"),
    ({"user": ["u"]}, "user"),
    ({"name": ""}, "name"),
    ({"name": "a\x00b"}, "name"),
])
def test_a_malformed_trigger_is_a_config_error(agent: Any, kwargs: dict[str, Any],
                                               match: str) -> None:
    given: dict[str, Any] = {"type": "order_processed", "agent": agent, **kwargs}
    with pytest.raises(UserError, match=match):
        Trigger(given.pop("type"), **given)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"concurrency": 10**9}, "concurrency"),
    ({"group": "bad group!"}, "group"),
    ({"group": "g" * 100}, "group"),
    ({"bus": "redis://x"}, "bus"),
    ({"store": "sqlite:///x.db"}, "store"),
    ({"retry_delay": -1}, "retry_delay"),
])
def test_malformed_triggers_options_are_config_errors(agent: Any, kwargs: dict[str, Any],
                                                      match: str) -> None:
    given: dict[str, Any] = {"bus": MemoryBus(), "store": MemoryStore(), **kwargs}
    with pytest.raises(ConfigError, match=match):
        Triggers([order_trigger(agent)], **given)


def test_no_triggers_or_two_with_one_name_are_config_errors(agent: Any) -> None:
    with pytest.raises(ConfigError, match="one or more"):
        Triggers([], bus=MemoryBus(), store=MemoryStore())
    with pytest.raises(ConfigError, match="one or more"):
        Triggers(["order_processed"], bus=MemoryBus(), store=MemoryStore())  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="share a name"):
        Triggers([order_trigger(agent), order_trigger(agent)], bus=MemoryBus(),
                 store=MemoryStore())


def test_run_ids_are_stable_distinct_and_safe_for_hostile_event_ids(agent: Any) -> None:
    one, other = order_trigger(agent), order_trigger(agent, name="second")
    hostile = ["../../etc/passwd", "x" * 256, "'; DROP TABLE runs; --", "\u202e\u0000"[:1]]
    ids = {one.run_id(h) for h in hostile} | {other.run_id(h) for h in hostile}
    assert len(ids) == 2 * len(hostile)
    assert one.run_id("e-1") == order_trigger(agent).run_id("e-1")
    assert all(i.startswith("trg-") and len(i) == 44 and i[4:].isalnum() for i in ids)


def test_a_payload_that_does_not_validate_is_event_rejected_naming_the_event(
        agent: Any) -> None:
    trigger = order_trigger(agent)
    with pytest.raises(EventRejected, match=r"e-9 .*total") as caught:
        trigger.prepare(Event(id="e-9", type="order_processed", data={"order_id": "o"}))
    assert caught.value.event_id == "e-9"
    # an oversized payload that validates still cannot make an input over the limit
    huge = Event(id="e-10", type="order_processed",
                 data={"order_id": "o" * 200_000, "total": 1})
    with pytest.raises(EventRejected, match="e-10"):
        trigger.prepare(huge)
    typed = Trigger("order_processed", agent=agent, payload=list[int])
    with pytest.raises(EventRejected, match="e-11"):
        typed.prepare(Event(id="e-11", type="order_processed", data={"a": 1}))
    assert order_trigger(agent).prepare(orders(1)[0]).input.startswith(
        "Event order_processed (id evt-0)")
    assert isinstance(OrderProcessed.model_validate(orders(1)[0].data), OrderProcessed)


class FlakyBus(EventBus):
    """The memory bus behind a switch: while ``down``, every call fails as a real bus would."""

    def __init__(self, fail_fetches: int = 0, *, down: bool = False) -> None:
        self.inner = MemoryBus()
        self.fail_fetches = fail_fetches
        self.down = down

    def check(self) -> None:
        if self.down:
            raise EventBusUnavailable("connection refused (127.0.0.1:1)")

    async def publish(self, events: Sequence[Event]) -> None:
        await self.inner.publish(events)

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        self.check()
        return FlakySubscription(self, await self.inner.subscribe(
            group, types=types, ack_wait=ack_wait, start=start))


class FlakySubscription(Subscription):
    def __init__(self, bus: FlakyBus, inner: Subscription) -> None:
        self.bus, self.inner = bus, inner

    async def fetch(self, max_events: int = 100, *, wait: float = 1.0) -> list[Delivery]:
        if self.bus.fail_fetches > 0:
            self.bus.fail_fetches -= 1
            raise EventBusUnavailable("the connection was reset")
        return await self.inner.fetch(max_events, wait=wait)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        await self.inner.nak(deliveries, delay=delay)


@contextlib.asynccontextmanager
async def consuming(triggers: Triggers) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(triggers.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def test_bus_failures_while_running_are_retried_and_no_event_is_dropped(
        agent: Any, tmp_path: Path) -> None:
    bus = FlakyBus(fail_fetches=3)
    store = SQLiteStore(str(tmp_path / "runs.db"))
    try:
        triggers = Triggers([order_trigger(agent)], bus=bus, store=store, start="all")
        await bus.publish(orders(20))
        async with consuming(triggers):
            async with asyncio.timeout(60):
                while triggers.stats.started < 20:  # noqa: ASYNC110 - counters, no event
                    await asyncio.sleep(0.02)
        assert triggers.stats.bus_errors == 3
        assert len(await store.list_runs()) == 20
    finally:
        await store.close()


async def test_an_unreachable_bus_at_start_is_a_clear_error_and_writes_nothing(
        agent: Any) -> None:
    store = MemoryStore()
    triggers = Triggers([order_trigger(agent)], bus=FlakyBus(down=True), store=store)
    with pytest.raises(EventBusUnavailable, match=r"cannot start.*connection refused"):
        await triggers.run()
    assert await store.list_runs() == []


async def test_a_redis_bus_nobody_listens_on_is_a_clear_error_at_start(agent: Any) -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", connect_timeout=0.5)
    triggers = Triggers([order_trigger(agent)], bus=bus, store=MemoryStore())
    try:
        with pytest.raises(EventBusUnavailable, match="cannot start"):
            await triggers.run()
    finally:
        await bus.close()


class FlakyStore(MemoryStore):
    """A memory store whose first reads fail: as a store outage, then as a plain bug."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Exception] = [StoreUnavailable("the database went away"),
                                          RuntimeError("an unforeseen bug")]

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        return await super().get_run(run_id, tenant=tenant)


async def test_a_store_outage_or_a_bug_hands_the_event_back_and_it_runs_once_later(
        agent: Any) -> None:
    store = FlakyStore()
    bus = MemoryBus()
    triggers = Triggers([order_trigger(agent)], bus=bus, store=store, start="all",
                        retry_delay=0.05)
    await bus.publish(orders(1))
    async with consuming(triggers):
        async with asyncio.timeout(60):
            while triggers.stats.started < 1:  # noqa: ASYNC110 - counters, no event
                await asyncio.sleep(0.02)
    assert triggers.stats.retried == 2 and store.failures == []
    (run,) = await store.list_runs()
    assert run.status == "completed" and run.metadata["event_id"] == "evt-0"
