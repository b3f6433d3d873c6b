"""A conformance suite for any :class:`~keel.events.EventBus`.

Subclass :class:`keel.testing.EventBusConformance` in a test module and give the subclass
two fixtures:

* ``make_bus``: a function that returns a new, unopened bus on one stream that is fresh
  for this test (every call, the same stream: a second call is a second connection);
  clean the stream up after the test;
* ``sever``: an async function that waits until the given bus is blocked in a ``fetch``
  and then cuts its connections from the server's side (``CLIENT KILL`` for Redis, a
  proxy closing its sockets for NATS), or None for a bus that has no connection::

    class TestMyBus(EventBusConformance):
        @pytest.fixture
        def make_bus(self):
            stream = f"test-{uuid.uuid4().hex}"
            yield lambda: MyBus(stream=stream)
            drop_stream(stream)

        @pytest.fixture
        def sever(self):
            return None

What the tests require, beyond the docstrings of the seam: an event comes back with every
field equal; the events of one publish arrive in order; each group sees every event of its
types and the consumers of one group share them without duplicates; an event left
unacknowledged comes back after ``ack_wait`` with ``attempt`` 2, one ``nak``-ed comes back
after its delay; ``start`` is honoured; a new consumer of a group continues where the group
was; bad input is a :class:`keel.UserError` that publishes nothing; an event over the size
limit is an :class:`keel.events.EventRejected` naming it; a connection cut mid-fetch is an
:class:`keel.events.EventBusUnavailable`, after which the bus (and a new one) continue with
nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from keel.core import UserError
from keel.events import (
    Delivery,
    Event,
    EventBus,
    EventBusUnavailable,
    EventRejected,
    Subscription,
)

__all__ = ["EventBusConformance", "collect", "sample_events"]

MakeBus = Callable[[], EventBus]
Sever = Callable[[EventBus], Awaitable[None]] | None


def sample_events(n: int, *, type: str = "order.paid", start: int = 0,
                  prefix: str = "e") -> list[Event]:
    """``n`` events with every field filled in, ids ``<prefix><number>``."""
    return [Event(id=f"{prefix}{i}", type=type, time=1_700_000_000.0 + i, run_id=f"run-{i}",
                  agent="support", tenant="acme",
                  data={"i": i, "text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}})
            for i in range(start, start + n)]


async def collect(sub: Subscription, want: int, *, within: float = 15.0, ack: bool = True,
                  max_events: int = 100) -> list[Delivery]:
    """Fetch (and ack) until ``want`` deliveries came, or ``within`` seconds passed."""
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        batch = await sub.fetch(min(max_events, want - len(got)), wait=0.5)
        if ack and batch:
            await sub.ack(batch)
        got.extend(batch)
    return got


def _ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


class EventBusConformance:
    """The tests every EventBus must pass."""

    @pytest.fixture
    async def bus(self, make_bus: MakeBus) -> AsyncIterator[EventBus]:
        async with make_bus() as bus:
            yield bus

    # ------------------------------------------------------------------ delivery

    async def test_publish_fetch_ack_round_trip(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        sent = sample_events(3)
        await bus.publish(sent)
        got = await collect(sub, 3, ack=False)
        assert [d.event for d in got] == sent, "every field comes back equal"
        assert [d.attempt for d in got] == [1, 1, 1]
        await sub.ack(got)
        assert await sub.fetch(10, wait=0.3) == [], "an acknowledged event never comes back"
        await sub.close()

    async def test_the_events_of_one_publish_arrive_in_order(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        await bus.publish(sample_events(120))
        await bus.publish(sample_events(5, start=120))
        got = await collect(sub, 125, max_events=7)
        assert _ids(got) == [f"e{i}" for i in range(125)]

    async def test_two_groups_each_get_everything(self, bus: EventBus) -> None:
        billing = await bus.subscribe("billing")
        audit = await bus.subscribe("audit")
        await bus.publish(sample_events(20))
        for sub in (billing, audit):
            assert _ids(await collect(sub, 20)) == [f"e{i}" for i in range(20)]
            assert await sub.fetch(5, wait=0.2) == []

    async def test_the_consumers_of_one_group_share_without_duplicates(
            self, bus: EventBus) -> None:
        first = await bus.subscribe("workers", ack_wait=60)
        second = await bus.subscribe("workers", ack_wait=60)
        await bus.publish(sample_events(40))
        seen: dict[str, list[str]] = {"first": [], "second": []}
        deadline = time.monotonic() + 15
        while len(seen["first"]) + len(seen["second"]) < 40 and time.monotonic() < deadline:
            for name, sub in (("first", first), ("second", second)):
                batch = await sub.fetch(5, wait=0.2)
                await sub.ack(batch)
                seen[name] += _ids(batch)
        everything = seen["first"] + seen["second"]
        assert sorted(everything) == sorted(f"e{i}" for i in range(40)), "no loss, no double"
        assert seen["first"] and seen["second"], "both consumers got a share"

    async def test_an_unacknowledged_event_comes_back_after_ack_wait(
            self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers", ack_wait=0.3)
        await bus.publish(sample_events(2))
        first = await collect(sub, 2, ack=False)
        await sub.ack(first[1:])
        again = await collect(sub, 1, ack=False)
        assert _ids(again) == ["e0"] and again[0].attempt == 2
        assert again[0].event == first[0].event
        third = await collect(sub, 1)
        assert _ids(third) == ["e0"] and third[0].attempt == 3
        assert await sub.fetch(5, wait=0.6) == [], "acknowledged at last: gone"

    async def test_an_event_in_flight_is_not_handed_out_twice_before_ack_wait(
            self, bus: EventBus) -> None:
        first = await bus.subscribe("workers", ack_wait=60)
        second = await bus.subscribe("workers", ack_wait=60)
        await bus.publish(sample_events(1))
        assert _ids(await collect(first, 1, ack=False)) == ["e0"]
        assert await first.fetch(5, wait=0.3) == []
        assert await second.fetch(5, wait=0.3) == []

    async def test_nak_returns_an_event_after_its_delay(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers", ack_wait=60)
        await bus.publish(sample_events(2))
        got = await collect(sub, 2, ack=False)
        await sub.nak(got[:1])  # at once
        await sub.nak(got[1:], delay=30)  # not within this test
        again = await collect(sub, 1, ack=False)
        assert _ids(again) == ["e0"] and again[0].attempt == 2
        await sub.nak(again, delay=0.3)
        third = await collect(sub, 1)
        assert _ids(third) == ["e0"] and third[0].attempt == 3
        assert await sub.fetch(5, wait=0.5) == [], "e1 waits out its 30 s"

    async def test_type_filters(self, bus: EventBus) -> None:
        paid = await bus.subscribe("paid-only", types=["order.paid"])
        both = await bus.subscribe("both", types={"order.paid", "order.shipped"})
        every = await bus.subscribe("every")
        events = [*sample_events(2, type="order.paid"),
                  *sample_events(2, type="order.shipped", start=2),
                  *sample_events(2, type="order.paid.late", start=4),
                  *sample_events(2, type="order", start=6)]
        await bus.publish(events)
        assert _ids(await collect(paid, 2)) == ["e0", "e1"]
        assert _ids(await collect(both, 4)) == ["e0", "e1", "e2", "e3"]
        assert _ids(await collect(every, 8)) == [f"e{i}" for i in range(8)]
        for sub in (paid, both, every):
            assert await sub.fetch(10, wait=0.3) == [], "skipped types never come back"
        again = await bus.subscribe("paid-only", types=("order.paid",))
        assert await again.fetch(10, wait=0.2) == []

    async def test_a_group_keeps_the_types_it_was_created_with(self, bus: EventBus) -> None:
        await bus.subscribe("paid-only", types=["order.paid"])
        with pytest.raises(UserError, match=r"already reads order\.paid"):
            await bus.subscribe("paid-only", types=["order.shipped"])
        with pytest.raises(UserError, match=r"already reads order\.paid"):
            await bus.subscribe("paid-only")

    async def test_start_new_and_start_all(self, bus: EventBus) -> None:
        await bus.publish(sample_events(2))
        new = await bus.subscribe("from-now", start="new")
        everything = await bus.subscribe("from-start", start="all")
        await bus.publish(sample_events(2, start=2))
        assert _ids(await collect(new, 2)) == ["e2", "e3"]
        assert await new.fetch(5, wait=0.2) == []
        assert _ids(await collect(everything, 4)) == ["e0", "e1", "e2", "e3"]
        # start only matters when the group is created
        later = await bus.subscribe("from-start", start="all")
        assert await later.fetch(5, wait=0.2) == []

    async def test_a_new_consumer_continues_where_the_group_was(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers", ack_wait=0.5)
        await bus.publish(sample_events(10))
        got = await collect(sub, 6, ack=False, max_events=6)
        await sub.ack(got[:5])
        await sub.close()
        with pytest.raises(EventBusUnavailable):
            await sub.fetch(1, wait=0)
        await sub.close()  # twice is fine
        successor = await bus.subscribe("workers", ack_wait=0.5)
        rest = await collect(successor, 5)
        assert sorted(_ids(rest)) == ["e5", "e6", "e7", "e8", "e9"]
        assert {d.event.id: d.attempt for d in rest}["e5"] >= 2
        assert await successor.fetch(5, wait=0.8) == []

    async def test_an_empty_publish_and_an_empty_ack_do_nothing(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        await bus.publish([])
        await sub.ack([])
        await sub.nak([])
        assert await sub.fetch(5, wait=0) == []

    # ------------------------------------------------------------------ bad input

    @pytest.mark.parametrize("group", ["", "a" * 65, "has space", "dot.ted", "new\nline",
                                       "star*", None, 7, ["g"]])
    async def test_bad_group_names_are_refused(self, bus: EventBus, group: Any) -> None:
        with pytest.raises(UserError, match="group"):
            await bus.subscribe(group)

    @pytest.mark.parametrize("types", [[], ["Order"], ["a..b"], ["a.>"], ["a b"], [None], 42,
                                       b"order", ["x" * 200], [f"t{i}" for i in range(1001)]])
    async def test_bad_types_are_refused(self, bus: EventBus, types: Any) -> None:
        with pytest.raises(UserError):
            await bus.subscribe("workers", types=types)

    @pytest.mark.parametrize(("option", "value"), [
        ("ack_wait", -1), ("ack_wait", 0), ("ack_wait", math.nan), ("ack_wait", "5"),
        ("ack_wait", True), ("ack_wait", 10**9), ("start", "latest"), ("start", None)])
    async def test_bad_subscribe_options_are_refused(self, bus: EventBus, option: str,
                                                     value: Any) -> None:
        with pytest.raises(UserError, match=option):
            await bus.subscribe("workers", **{option: value})

    async def test_bad_fetch_ack_and_nak_arguments_are_refused(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        for max_events, wait in ((0, 1), (-1, 1), (10**6, 1), (True, 1), ("5", 1),
                                 (5, -1), (5, math.nan), (5, math.inf), (5, "1")):
            with pytest.raises(UserError):
                await sub.fetch(max_events, wait=wait)  # type: ignore[arg-type]
        forged = Delivery(sample_events(1)[0], 1, token=object())
        for bad in (forged, [forged], ["not a delivery"], None):
            with pytest.raises(UserError, match="deliveries"):
                await sub.ack(bad)  # type: ignore[arg-type]
            with pytest.raises(UserError, match="deliveries"):
                await sub.nak(bad)  # type: ignore[arg-type]
        await bus.publish(sample_events(1))
        got = await collect(sub, 1, ack=False)
        for delay in (-1, math.nan, "1", 10**7):
            with pytest.raises(UserError, match="delay"):
                await sub.nak(got, delay=delay)  # type: ignore[arg-type]
        await sub.ack(got)

    async def test_what_is_not_a_list_of_events_publishes_nothing(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        good = sample_events(1)[0]
        for bad in (good, "e0", b"e0", None, [good, {"id": "x", "type": "t"}], [good, None],
                    frozenset(["e0"])):
            with pytest.raises(UserError, match="events"):
                await bus.publish(bad)  # type: ignore[arg-type]
        assert await sub.fetch(5, wait=0.3) == [], "a refused batch publishes nothing of it"

    async def test_an_oversized_or_unencodable_event_is_refused_by_id(
            self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        big = Event(id="too-big", type="blob", data={"blob": "x" * (1 << 20)})
        with pytest.raises(EventRejected, match="too-big") as caught:
            await bus.publish([sample_events(1)[0], big])
        assert caught.value.event_id == "too-big"
        for data in ({"n": math.nan}, {"s": {1, 2}}, {"o": object()}):
            with pytest.raises(EventRejected, match="odd") as caught:
                await bus.publish([Event(id="odd", type="t", data=data)])
            assert caught.value.event_id == "odd"
        assert await sub.fetch(5, wait=0.3) == [], "a refused batch publishes nothing of it"
        large = Event(id="large", type="blob", data={"blob": "y" * (512 << 10)})
        await bus.publish([large])
        assert [d.event for d in await collect(sub, 1)] == [large]

    async def test_hostile_ids_and_payloads_round_trip(self, bus: EventBus) -> None:
        sub = await bus.subscribe("workers")
        events = [Event(id="line\r\nNats-Msg-Id: x", type="t", data={"k": "\x00\u2028"}),
                  Event(id="ünïcødé ✓" * 10, type="t", data={"quote": '"}], "e": "x'}),
                  Event(id="x" * 256, type="t", data={"deep": [[[[[[]]]]]]}),
                  Event(id="sp ace ", type="t.u-v_w", data={})]
        await bus.publish(events)
        assert [d.event for d in await collect(sub, 4)] == events

    # ------------------------------------------------------------------ failures

    async def test_a_connection_cut_mid_fetch_loses_nothing(
            self, bus: EventBus, make_bus: MakeBus, sever: Sever) -> None:
        if sever is None:
            pytest.skip("this bus has no connection to cut")
        sub = await bus.subscribe("workers", ack_wait=2)
        await bus.publish(sample_events(10))
        got = await collect(sub, 10, ack=False)
        await sub.ack(got[:5])
        blocked = asyncio.ensure_future(sub.fetch(10, wait=10))
        try:
            await sever(bus)
            with pytest.raises(EventBusUnavailable):
                await asyncio.wait_for(blocked, 15)
        finally:
            blocked.cancel()
            with contextlib.suppress(BaseException):
                await blocked
        await bus.publish(sample_events(5, start=10))  # the same bus connects again
        async with make_bus() as fresh:  # and a new connection continues the group
            successor = await fresh.subscribe("workers", ack_wait=2)
            rest = await collect(successor, 10, within=20)
            assert sorted(_ids(rest)) == sorted(f"e{i}" for i in range(5, 15))
            attempts = {d.event.id: d.attempt for d in rest}
            assert all(attempts[f"e{i}"] >= 2 for i in range(5, 10))
            assert all(attempts[f"e{i}"] == 1 for i in range(10, 15))

    async def test_a_closed_bus_refuses_calls(self, make_bus: MakeBus) -> None:
        bus = make_bus()
        async with bus:
            await bus.publish(sample_events(1))
        with pytest.raises(EventBusUnavailable):
            await bus.publish(sample_events(1))
        with pytest.raises(EventBusUnavailable):
            await bus.subscribe("workers")
        await bus.close()  # twice is fine
