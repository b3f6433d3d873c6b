"""Every event bus passes the same conformance suite: the memory bus, Redis Streams and NATS
JetStream (the servers CI runs on 127.0.0.1; each test on a stream of its own, dropped
afterwards). When a server is not reachable its tests fail: a backend never tested is not a
passing one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from keel.events import EventBus, MemoryBus, RedisBus
from keel.testing import EventBusConformance
from tests.events._services import (
    REDIS_URL,
    Proxy,
    drop_nats_stream,
    drop_redis_stream,
    nats_bus,
    nats_proxy,
    sever_redis,
    unique,
)


class TestMemoryBus(EventBusConformance):
    @pytest.fixture
    def make_bus(self) -> Callable[[], EventBus]:
        return MemoryBus

    @pytest.fixture
    def sever(self) -> None:
        return None


class TestRedisBus(EventBusConformance):
    @pytest.fixture
    async def make_bus(self) -> AsyncIterator[Callable[[], EventBus]]:
        stream = f"keel:test:{unique()}"
        yield lambda: RedisBus(REDIS_URL, stream=stream, poll_interval=0.05)
        await drop_redis_stream(stream)

    @pytest.fixture
    def sever(self) -> object:
        return sever_redis


class TestNatsBus(EventBusConformance):
    @pytest.fixture
    async def proxy(self) -> AsyncIterator[Proxy]:
        proxy = await nats_proxy()
        yield proxy
        await proxy.close()

    @pytest.fixture
    async def make_bus(self, proxy: Proxy) -> AsyncIterator[Callable[[], EventBus]]:
        stream = f"TEST_{unique()}"
        yield lambda: nats_bus(f"nats://127.0.0.1:{proxy.port}", stream)
        await drop_nats_stream(stream)

    @pytest.fixture
    def sever(self, proxy: Proxy) -> object:
        async def cut(bus: EventBus) -> None:
            await proxy.wait_for(b"CONSUMER.MSG.NEXT", after=len(proxy.sent))
            proxy.cut()
        return cut
