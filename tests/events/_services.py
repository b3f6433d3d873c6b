"""The Redis and NATS servers the event-bus tests use (CI runs both on 127.0.0.1; the
``KEEL_TEST_REDIS_URL`` and ``KEEL_TEST_NATS_URL`` variables point them elsewhere), fresh
stream names, clean-up, and a TCP proxy that can cut its connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import nats
import redis.asyncio as aioredis

from keel.events import EventBus, NatsBus, RedisBus

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("KEEL_TEST_NATS_URL", "nats://127.0.0.1:4222")


def unique() -> str:
    return uuid.uuid4().hex[:12]


async def drop_redis_stream(stream: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(stream, f"{stream}:groups")
    finally:
        await client.aclose()


async def drop_nats_stream(stream: str) -> None:
    nc = await nats.connect(NATS_URL)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def sever_redis(bus: EventBus) -> None:
    """Wait until the bus is blocked in XREADGROUP, then kill its connections (CLIENT KILL)."""
    assert isinstance(bus, RedisBus)
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = [c for c in await admin.client_list() if c.get("name") == bus.client_name]
            if any(c.get("cmd") == "xreadgroup" for c in mine):
                for client in mine:
                    await admin.client_kill_filter(_id=client["id"])
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the bus never blocked in XREADGROUP")
    finally:
        await admin.aclose()


class Proxy:
    """A TCP proxy on 127.0.0.1 to a server; ``cut`` closes every connection through it as
    a server going away would (new connections are still accepted)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.BaseTransport] = []
        self.sent = bytearray()  # everything clients sent
        self.port = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._transports += [writer.transport, up_writer.transport]
        await asyncio.gather(self._pipe(reader, up_writer, record=True),
                             self._pipe(up_reader, writer, record=False))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    self.sent += data
                writer.write(data)
                await writer.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            writer.transport.abort()

    async def wait_for(self, marker: bytes, after: int, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while marker not in self.sent[after:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} never went through the proxy")
            await asyncio.sleep(0.005)

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def nats_proxy() -> Proxy:
    host, _, port = NATS_URL.removeprefix("nats://").partition(":")
    return await Proxy(host, int(port or 4222)).start()


def nats_bus(url: str, stream: str, **options: object) -> NatsBus:
    return NatsBus(url, stream=stream, prefix=f"keel.test.{stream.lower()}",
                   **options)  # type: ignore[arg-type]
