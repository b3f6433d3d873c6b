"""The child process of the outbox crash test: runs agents on a store with its outbox on,
with a relay publishing to a Redis stream, and SIGKILLs itself at an exact point of the
relay's N-th publish (``before_publish:N``: the events are in the store only;
``after_publish:N``: they are on the bus but not yet marked published). ``drain`` mode only
relays what is left.

    python -m tests.events._outbox_child work|drain STORE_URL REDIS_URL STREAM KILL RUNS
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Collection, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from keel import Agent, Budget, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.events import Event, EventBus, EventBusUnavailable, Relay, Start, Subscription
from keel.store import open_store
from keel.testing import FunctionModel, call

#: How long the rows a relay read stay hidden from other relays (the restart waits it out).
CLAIM_S = 0.3


class StreamBus(EventBus):
    """Publishes to one Redis stream with XADD (test-only), and dies where it is told."""

    def __init__(self, url: str, stream: str, kill: str) -> None:
        self.redis = aioredis.from_url(url)
        self.stream = stream
        point, _, n = kill.partition(":")
        self.kill_point, self.kill_at = point, int(n or 0)
        self.calls = 0

    def _die_if(self, point: str) -> None:
        if point == self.kill_point and self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except redis.RedisError as exc:
            raise EventBusUnavailable(f"redis: {exc}") from None

    async def publish(self, events: Sequence[Event]) -> None:
        self.calls += 1
        self._die_if("before_publish")
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for event in events:
                    pipe.xadd(self.stream, {"event": event.to_json()})
                await pipe.execute()
        except redis.RedisError as exc:
            raise EventBusUnavailable(f"redis: {exc}") from None
        self._die_if("after_publish")

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        raise NotImplementedError("the crash test reads the stream itself")

    async def close(self) -> None:
        await self.redis.aclose()


@tool
def lookup(order: str) -> str:
    """Find an order."""
    return f"order {order} shipped"


@tool
def broken(order: str) -> str:
    """Always fails."""
    raise ValueError(f"no invoice for {order}")


def model_fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
    """A pure function of the messages: look up, then try the invoice, then answer."""
    done = sum(1 for m in messages if m.role == "tool")
    order = (messages[-1].text or "?") if done == 0 else "x"
    if done == 0:
        return call("lookup", {"order": order})
    if done == 1:
        return call("broken", {"order": order})
    return "all done"


async def main(mode: str, store_url: str, redis_url: str, stream: str, kill: str,
               runs: int) -> None:
    agent = Agent("outbox-crash", model=FunctionModel(model_fn), tools=[lookup, broken],
                  budget=Budget.unlimited())
    bus = StreamBus(redis_url, stream, kill)
    async with open_store(store_url, outbox=True) as store:
        relay = Relay(store, bus, batch=3, poll_s=0.002, claim_s=CLAIM_S)
        await relay.check()
        if mode == "drain":  # the rows the dead relay read stay claimed until this runs out
            await asyncio.sleep(CLAIM_S * 1.5)
        if mode == "work":
            stop = asyncio.Event()
            running = asyncio.create_task(relay.run(stop))
            for i in range(runs):
                await agent.run(f"A{i}", store=store, run_id=f"run-{i:03d}")
            stop.set()
            await running
        while await relay.run_once():
            pass
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5],
                     int(sys.argv[6])))
