"""What only the NATS bus shows: JetStream's de-duplication, messages someone else wrote,
the server's payload limit, the stream's set-up, and an unreachable server (against the
nats-server CI runs on 127.0.0.1 with JetStream)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import nats
import pytest

from keel.core import ConfigError
from keel.events import Event, EventBusUnavailable, EventRejected, NatsBus
from keel.events._nats import msg_id
from keel.testing._bus_conformance import collect, sample_events
from tests.events._services import NATS_URL, drop_nats_stream, nats_bus, unique


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    name = f"TEST_{unique()}"
    yield name
    await drop_nats_stream(name)


@pytest.fixture
async def nc() -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(NATS_URL)
    yield conn
    await conn.close()


async def test_a_republished_id_is_stored_once(stream: str, nc: nats.NATS) -> None:
    async with nats_bus(NATS_URL, stream) as bus:
        sub = await bus.subscribe("workers")
        events = sample_events(5)
        await bus.publish(events)
        await bus.publish(events[2:])  # a relay retrying after a lost acknowledgement
        await bus.publish([Event(id="sp ace ", type="t"), Event(id="sp ace ", type="t")])
        info = await nc.jetstream().stream_info(stream)
        assert info.state.messages == 6
        got = await collect(sub, 6)
        assert [d.event.id for d in got] == ["e0", "e1", "e2", "e3", "e4", "sp ace "]
        assert await sub.fetch(10, wait=0.3) == []


def test_message_ids_are_safe_headers() -> None:
    assert msg_id("run-1:3:result") == "run-1:3:result"
    for hostile in ("a\r\nb", " lead", "trail ", "ünï", "", "\x00"):
        header = msg_id(hostile)
        assert header.startswith("sha256:") and header.isascii() and "\n" not in header
    assert msg_id("a\r\nb") != msg_id("a\nb")


async def test_messages_that_are_not_events_are_terminated_counted_and_skipped(
        stream: str, nc: nats.NATS) -> None:
    async with nats_bus(NATS_URL, stream) as bus:
        sub = await bus.subscribe("workers", ack_wait=0.3)
        js = nc.jetstream()
        await bus.publish(sample_events(1))
        await js.publish(f"{bus.prefix}.order.paid", b"\xff not json")
        await js.publish(f"{bus.prefix}.order.paid", json.dumps({"id": 5}).encode())
        await js.publish(f"{bus.prefix}.other", sample_events(1)[0].to_json())  # wrong subject
        await bus.publish(sample_events(1, start=1))
        got = await collect(sub, 2)
        assert [d.event.id for d in got] == ["e0", "e1"]
        assert bus.malformed == 3
        assert await sub.fetch(10, wait=0.8) == [], "terminated: never redelivered"
        info = await js.consumer_info(stream, "workers")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_an_event_over_the_servers_payload_limit_is_refused_not_sent(
        stream: str) -> None:
    async with nats_bus(NATS_URL, stream, max_event_bytes=8 << 20) as bus:
        assert bus.max_event_bytes < 1 << 20  # the server's max_payload (1 MB) rules
        sub = await bus.subscribe("workers")
        big = Event(id="big", type="blob", data={"blob": "x" * (2 << 20)})
        with pytest.raises(EventRejected, match="what the server takes") as caught:
            await bus.publish([*sample_events(1), big])
        assert caught.value.event_id == "big"
        await bus.publish(sample_events(1, start=1))  # the connection is still good
        assert [d.event.id for d in await collect(sub, 1)] == ["e1"]


async def test_the_stream_is_created_then_updated(stream: str, nc: nats.NATS) -> None:
    async with nats_bus(NATS_URL, stream, max_age=3600) as bus:
        await bus.publish(sample_events(1))
    async with nats_bus(NATS_URL, stream, max_age=7200, max_msgs=1000) as bus:
        info = await nc.jetstream().stream_info(stream)
        assert info.config.max_age == 7200 and info.config.max_msgs == 1000
        assert info.config.subjects == [f"{bus.prefix}.>"]
        assert info.state.messages == 1, "updating the limits keeps the events"


async def test_a_second_stream_on_the_same_subjects_is_a_config_error(stream: str) -> None:
    async with nats_bus(NATS_URL, stream) as bus:
        other = NatsBus(NATS_URL, stream=f"{stream}_2", prefix=bus.prefix)
        with pytest.raises(ConfigError, match="another prefix"):
            await other.connect()
        await other.close()


async def test_several_types_are_filtered_on_servers_before_2_10(stream: str) -> None:
    async with nats_bus(NATS_URL, stream) as bus:
        sub = await bus.subscribe("two", types=["a", "b"])
        await bus.publish([*sample_events(1, type="a"), *sample_events(1, type="c", start=1),
                           *sample_events(1, type="b", start=2)])
        assert [d.event.id for d in await collect(sub, 2)] == ["e0", "e2"]
        assert await sub.fetch(5, wait=0.3) == []


async def test_an_unreachable_server_is_unavailable_at_once() -> None:
    bus = NatsBus("nats://user:hunter2@127.0.0.1:1", connect_timeout=1)
    with pytest.raises(EventBusUnavailable, match="could not connect") as caught:
        await asyncio.wait_for(bus.connect(), 10)
    assert "hunter2" not in str(caught.value) and caught.value.retryable
    with pytest.raises(EventBusUnavailable):
        await asyncio.wait_for(bus.subscribe("workers"), 10)
    await bus.close()


async def test_a_server_that_never_answers_is_unavailable_after_the_connect_timeout() -> None:
    silent = socket.socket()  # listens, never accepts: the handshake completes, no INFO comes
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        bus = NatsBus(f"nats://127.0.0.1:{silent.getsockname()[1]}", connect_timeout=0.5)
        with pytest.raises(EventBusUnavailable, match="could not connect"):
            await asyncio.wait_for(bus.connect(), 10)
        await bus.close()
    finally:
        silent.close()


@pytest.mark.parametrize(("option", "value"), [
    ("stream", ""), ("stream", "has.dot"), ("stream", "x" * 65), ("prefix", "a.>"),
    ("prefix", "a..b"), ("prefix", ""), ("max_age", 0), ("max_msgs", 0),
    ("duplicate_window", 0), ("connect_timeout", 0), ("timeout", "1"),
    ("max_event_bytes", 1)])
def test_bad_options_are_config_errors(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        NatsBus(NATS_URL, **{option: value})  # type: ignore[arg-type]


async def test_a_deleted_group_is_unavailable_not_a_busy_loop(stream: str,
                                                              nc: nats.NATS) -> None:
    async with nats_bus(NATS_URL, stream) as bus:
        sub = await bus.subscribe("workers")
        assert await sub.fetch(1, wait=0.1) == []
        await asyncio.sleep(0.2)  # its pull request has expired
        await nc.jetstream().delete_consumer(stream, "workers")
        with pytest.raises(EventBusUnavailable, match="'workers' no longer exists"):
            await asyncio.wait_for(sub.fetch(1, wait=2), 10)
        again = await bus.subscribe("workers")  # subscribing creates the group anew
        await bus.publish(sample_events(1))
        assert [d.event.id for d in await collect(again, 1)] == ["e0"]
