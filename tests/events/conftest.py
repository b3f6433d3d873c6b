"""Event buses for the trigger tests: memory, and the real Redis and NATS on loopback, each
test on its own stream, dropped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.events import EventBus, MemoryBus, NatsBus, RedisBus
from tests.events._services import (
    NATS_URL,
    REDIS_URL,
    drop_nats_stream,
    drop_redis_stream,
    unique,
)


@pytest.fixture(params=["memory", "redis", "nats"])
async def any_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    name = unique()
    bus: EventBus
    if request.param == "redis":
        bus = RedisBus(REDIS_URL, stream=f"keel:test:{name}", maxlen=None)
    elif request.param == "nats":
        bus = NatsBus(NATS_URL, stream=f"KEEL_T_{name}", prefix=f"keel.t.{name}", max_age=600)
    else:
        bus = MemoryBus()
    try:
        async with bus:
            yield bus
    finally:
        if request.param == "redis":
            await drop_redis_stream(f"keel:test:{name}")
        elif request.param == "nats":
            await drop_nats_stream(f"KEEL_T_{name}")
