"""open_bus(url): the schemes, the options each takes, and what a bad URL or a missing
extra says."""

from __future__ import annotations

import sys

import pytest

from keel.core import ConfigError, UserError
from keel.events import MemoryBus, NatsBus, RedisBus, open_bus
from keel.testing._bus_conformance import collect, sample_events
from tests.events._services import drop_nats_stream, drop_redis_stream, unique


def test_memory() -> None:
    assert isinstance(open_bus("memory://"), MemoryBus)
    for bad in ("memory://host", "memory://?x=1", "memory:///path"):
        with pytest.raises(ConfigError, match="memory://"):
            open_bus(bad)


def test_redis_options_and_pass_through() -> None:
    bus = open_bus("redis://127.0.0.1:6379/2?stream=app:events&maxlen=500&health_check_interval=5")
    assert isinstance(bus, RedisBus)
    assert bus.stream == "app:events" and bus.maxlen == 500
    assert bus.url == "redis://127.0.0.1:6379/2?health_check_interval=5"
    assert open_bus("rediss://h:6380/0?maxlen=none").maxlen is None  # type: ignore[attr-defined]
    plain = open_bus("redis://127.0.0.1:6379/0")
    assert isinstance(plain, RedisBus) and plain.stream == "keel:events"
    for bad, field in (("redis://h/0?maxlen=-5", "maxlen"), ("redis://h/0?maxlen=lots", "maxlen"),
                       ("redis://h/0?stream=a%20b", "stream"), ("redis:///0", "url"),
                       ("redis://h:notaport/0", "url")):
        with pytest.raises(ConfigError, match=field):
            open_bus(bad)


def test_nats_options() -> None:
    bus = open_bus("nats://127.0.0.1:4222?stream=APP&prefix=app.events")
    assert isinstance(bus, NatsBus)
    assert (bus.url, bus.stream, bus.prefix) == ("nats://127.0.0.1:4222", "APP", "app.events")
    default = open_bus("nats://127.0.0.1")
    assert isinstance(default, NatsBus) and default.stream == "KEEL_EVENTS"
    assert default.prefix == "keel.events"
    for bad, field in (("nats://h?bogus=1", "url"), ("nats://h/path", "url"),
                       ("nats://h?stream=a.b", "stream"), ("nats://h?prefix=a.*", "prefix"),
                       ("nats://", "url")):
        with pytest.raises(ConfigError, match=field):
            open_bus(bad)


@pytest.mark.parametrize("url", ["", "kafka://h:9092", "127.0.0.1:6379", "http://h", None, 5,
                                 "redis://[::1", "x" * 5000, "nats://h?a=1&&&="])
def test_bad_urls_name_the_fix(url: object) -> None:
    with pytest.raises(ConfigError, match=r"url|memory://|scheme") as caught:
        open_bus(url)  # type: ignore[arg-type]
    assert "redis://" in str(caught.value) or "memory://" in str(caught.value) or \
        "nats://" in str(caught.value)


def test_max_event_bytes_reaches_every_bus() -> None:
    for url in ("memory://", "redis://127.0.0.1/0", "nats://127.0.0.1"):
        with pytest.raises(ConfigError, match="max_event_bytes"):
            open_bus(url, max_event_bytes=5)


@pytest.mark.parametrize(("url", "module"), [("redis://127.0.0.1/0", "redis"),
                                             ("nats://127.0.0.1", "nats")])
def test_a_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, url: str,
                                           module: str) -> None:
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match=r"pip install 'keel-agents\[events\]'"):
        open_bus(url)


async def test_the_opened_buses_carry_events() -> None:
    name = unique()
    for url, drop in ((f"redis://127.0.0.1:6379/0?stream=keel:test:{name}",
                       drop_redis_stream(f"keel:test:{name}")),
                      (f"nats://127.0.0.1:4222?stream=TEST_{name}&prefix=keel.test.{name}",
                       drop_nats_stream(f"TEST_{name}"))):
        try:
            async with open_bus(url) as bus:
                sub = await bus.subscribe("workers")
                await bus.publish(sample_events(3))
                assert [d.event.id for d in await collect(sub, 3)] == ["e0", "e1", "e2"]
        finally:
            await drop
