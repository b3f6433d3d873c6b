"""A trigger consumer in its own process (the SIGKILL test): ``python -m
tests.events.trigger_child redis|nats NAME STORE_PATH EFFECTS_PATH``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from keel.events import EventBus, NatsBus, RedisBus, Triggers
from keel.store import SQLiteStore
from tests.events._services import NATS_URL, REDIS_URL
from tests.events.triggerkit import Effects, make_agent, order_trigger


def bus_for(kind: str, name: str) -> EventBus:
    """The bus the test and this child share: a Redis stream or a NATS stream by ``name``."""
    if kind == "nats":
        return NatsBus(NATS_URL, stream=f"KEEL_T_{name}", prefix=f"keel.t.{name}",
                       max_age=600)
    return RedisBus(REDIS_URL, stream=f"keel:test:{name}", maxlen=None)


async def main(kind: str, name: str, store_path: str, effects_path: str) -> None:
    store = SQLiteStore(store_path)
    async with bus_for(kind, name) as bus:
        triggers = Triggers([order_trigger(make_agent(Effects(Path(effects_path)),
                                                      pause=0.002))],
                            bus=bus, store=store, concurrency=32, ack_wait=1.0, start="all",
                            retry_delay=0.2)
        await triggers.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
