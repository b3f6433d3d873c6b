"""10,000 events through each real bus, with two consumers of one group working at once, a
relay-style re-publish of part of the stream, and a consumer that turns some events back:
every id arrives at least once, and exactly once after de-duplication by id."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from keel.events import EventBus, RedisBus, Subscription
from keel.testing._bus_conformance import sample_events
from tests.events._services import (
    NATS_URL,
    REDIS_URL,
    drop_nats_stream,
    drop_redis_stream,
    nats_bus,
    unique,
)

N = 10_000


async def _consume(sub: Subscription, seen: Counter[str], stop: asyncio.Event,
                   reached: tuple[int, asyncio.Event], turn_back: bool) -> None:
    while not stop.is_set():
        batch = await sub.fetch(200, wait=0.2)
        back = [d for d in batch if turn_back and d.attempt == 1 and
                int(d.event.id[1:]) % 97 == 0]
        keep = [d for d in batch if d not in back]
        seen.update(d.event.id for d in keep)
        seen.update("again" for d in keep if d.attempt > 1)
        if sum(seen.values()) - seen["again"] >= reached[0]:
            reached[1].set()
        await sub.ack(keep)
        if back:
            await sub.nak(back)


async def _push_through(make: Callable[[], EventBus], expected: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    stop = asyncio.Event()
    reached = (expected, asyncio.Event())
    async with make() as bus:
        subs = [await bus.subscribe("volume", ack_wait=30) for _ in range(2)]
        consumers = [asyncio.ensure_future(_consume(s, seen, stop, reached, turn_back=i == 0))
                     for i, s in enumerate(subs)]
        try:
            events = sample_events(N)
            for start in range(0, N, 500):
                await bus.publish(events[start:start + 500])
            await bus.publish(events[4000:5000])  # a relay that retried a batch
            await asyncio.wait_for(reached[1].wait(), 120)
            await asyncio.sleep(0.5)  # time for a duplicate too many to show up
        finally:
            stop.set()
            await asyncio.gather(*consumers)
    return seen


@pytest.mark.parametrize("backend", ["redis", "nats"])
async def test_ten_thousand_events_each_arrive(backend: str) -> None:
    name = unique()
    if backend == "redis":
        stream = f"keel:test:{name}"

        def make() -> EventBus:
            return RedisBus(REDIS_URL, stream=stream)
        drop = drop_redis_stream(stream)
    else:
        stream = f"TEST_{name}"

        def make() -> EventBus:
            return nats_bus(NATS_URL, stream)
        drop = drop_nats_stream(stream)
    try:
        seen = await _push_through(make, N if backend == "nats" else N + 1000)
    finally:
        await drop
    again = seen.pop("again", 0)
    assert again >= 1, "some events were turned back (nak) and delivered again"
    assert set(seen) == {f"e{i}" for i in range(N)}, "every id at least once"
    assert sum(seen.values()) >= N
    if backend == "nats":  # JetStream dropped the re-published ids (de-duplication window)
        assert sum(seen.values()) == N
    else:  # Redis stores the re-published batch again: consumers de-duplicate by id
        assert sum(seen.values()) == N + 1000
