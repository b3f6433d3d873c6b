"""Event buses for the event tests: memory, and the real Redis and NATS on loopback, each
test on its own stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from keel.events import EventBus, MemoryBus, NatsBus, RedisBus


def new_bus(kind: str, stream: str | None = None) -> EventBus:
    name = stream or f"t{uuid.uuid4().hex[:12]}"
    if kind == "redis":
        return RedisBus("redis://127.0.0.1:6379/0", stream=f"keel:test:{name}", maxlen=None)
    if kind == "nats":
        return NatsBus("nats://127.0.0.1:4222", stream=f"KEEL_T_{name}",
                       prefix=f"keel.t.{name}", max_age=600)
    return MemoryBus()


@pytest.fixture(params=["memory", "redis", "nats"])
async def any_bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    bus = new_bus(request.param)
    async with bus:
        yield bus
