"""What only the Redis bus shows: entries someone else wrote, trimming, the stream's
bookkeeping, and an unreachable or unfit server (against the Redis CI runs on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from keel.core import ConfigError
from keel.events import EventBusUnavailable, RedisBus
from keel.testing._bus_conformance import collect, sample_events
from tests.events._services import REDIS_URL, drop_redis_stream, unique


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"keel:test:{unique()}"
    yield name
    await drop_redis_stream(name)


@pytest.fixture
async def admin() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_entries_that_are_not_events_are_acknowledged_counted_and_skipped(
        stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        sub = await bus.subscribe("workers", ack_wait=0.2)
        await bus.publish(sample_events(1))
        await admin.xadd(stream, {"x": "no event field"})
        await admin.xadd(stream, {"e": b"\xff\xfenot json"})
        await admin.xadd(stream, {"e": json.dumps({"id": "x", "type": "Bad Type"})})
        await admin.xadd(stream, {"e": json.dumps(["a", "list"])})
        await bus.publish(sample_events(1, start=1))
        got = await collect(sub, 2)
        assert [d.event.id for d in got] == ["e0", "e1"]
        assert bus.malformed == 4
        assert await sub.fetch(10, wait=0.5) == [], "dropped entries never come back"
        assert (await admin.xpending(stream, "workers"))["pending"] == 0


async def test_an_entry_trimmed_while_pending_is_dropped_not_fatal(
        stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        sub = await bus.subscribe("workers", ack_wait=0.2)
        await bus.publish(sample_events(3))
        got = await collect(sub, 3, ack=False)
        await admin.xdel(stream, got[0].token)
        await sub.ack(got[1:])
        assert await sub.fetch(10, wait=0.6) == []
        assert (await admin.xpending(stream, "workers"))["pending"] == 0


async def test_maxlen_trims_the_stream_about_there(stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream, maxlen=100) as bus:
        for start in range(0, 2000, 200):
            await bus.publish(sample_events(200, start=start))
        length = await admin.xlen(stream)
        assert 100 <= length < 2000


async def test_a_closed_consumer_that_holds_nothing_leaves_no_name(
        stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        done = await bus.subscribe("workers")
        holding = await bus.subscribe("workers", ack_wait=60)
        await bus.publish(sample_events(2))
        await collect(done, 1)
        await collect(holding, 1, ack=False)
        await done.close()
        await holding.close()
        consumers = await admin.xinfo_consumers(stream, "workers")
        assert [c["pending"] for c in consumers] == [1], "the one holding an entry stays"


async def test_a_batch_is_one_transaction(stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        await bus.publish(sample_events(50))
        assert await admin.xlen(stream) == 50
    # a stream key holding something else: the whole batch fails, nothing is written
    await admin.delete(stream)
    await admin.set(stream, "not a stream")
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        with pytest.raises(EventBusUnavailable, match="WRONGTYPE"):
            await bus.publish(sample_events(3))
        with pytest.raises(EventBusUnavailable, match="WRONGTYPE"):
            await bus.subscribe("workers")
    assert await admin.get(stream) == b"not a stream"


async def test_an_unreachable_server_is_unavailable_at_once_without_the_password() -> None:
    bus = RedisBus("redis://:hunter2@127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(EventBusUnavailable, match="could not connect") as caught:
        await asyncio.wait_for(bus.connect(), 10)
    assert "hunter2" not in str(caught.value) and caught.value.retryable
    with pytest.raises(EventBusUnavailable):
        await asyncio.wait_for(bus.publish(sample_events(1)), 10)
    await bus.close()


async def test_a_killed_idle_connection_is_replaced_on_the_next_call(
        stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream) as bus:
        await bus.publish(sample_events(1))
        for client in await admin.client_list():
            if client.get("name") == bus.client_name:
                await admin.client_kill_filter(_id=client["id"])
        await bus.publish(sample_events(1, start=1))  # a dead idle connection is replaced
        assert await admin.xlen(stream) == 2


@pytest.mark.parametrize(("option", "value"), [
    ("stream", ""), ("stream", "has space"), ("stream", "x" * 201), ("maxlen", 0),
    ("maxlen", True), ("maxlen", "5"), ("poll_interval", 0), ("connect_timeout", -1),
    ("max_event_bytes", 10), ("max_event_bytes", 1 << 40)])
def test_bad_options_are_config_errors(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        RedisBus(REDIS_URL, **{option: value})  # type: ignore[arg-type]


def test_a_url_that_is_not_redis_is_a_config_error() -> None:
    for url in ("http://127.0.0.1", "", None, "127.0.0.1:6379"):
        with pytest.raises(ConfigError, match="url"):
            RedisBus(url)  # type: ignore[arg-type]


async def test_a_server_that_never_answers_is_unavailable_after_the_timeouts() -> None:
    silent = socket.socket()  # listens, never accepts: the handshake completes, no reply comes
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        bus = RedisBus(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", connect_timeout=0.5,
                       timeout=0.5, poll_interval=0.1)
        with pytest.raises(EventBusUnavailable, match="could not connect"):
            await asyncio.wait_for(bus.connect(), 10)
        await bus.close()
    finally:
        silent.close()


async def test_a_group_destroyed_on_the_server_is_unavailable_until_subscribed_again(
        stream: str, admin: aioredis.Redis) -> None:
    async with RedisBus(REDIS_URL, stream=stream, poll_interval=0.05) as bus:
        sub = await bus.subscribe("workers")
        await admin.xgroup_destroy(stream, "workers")
        with pytest.raises(EventBusUnavailable, match="NOGROUP"):
            await asyncio.wait_for(sub.fetch(1, wait=1), 10)
        again = await bus.subscribe("workers")
        await bus.publish(sample_events(1))
        assert [d.event.id for d in await collect(again, 1)] == ["e0"]
