"""A trigger consumer in its own process (the SIGKILL test): ``python -m
tests.events.trigger_child REDIS_STREAM STORE_PATH EFFECTS_PATH``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from keel.events import RedisBus, Triggers
from keel.store import SQLiteStore
from tests.events.triggerkit import Effects, make_agent, order_trigger


async def main(stream: str, store_path: str, effects_path: str) -> None:
    store = SQLiteStore(store_path)
    async with RedisBus("redis://127.0.0.1:6379/0", stream=stream, maxlen=None) as bus:
        triggers = Triggers([order_trigger(make_agent(Effects(Path(effects_path)),
                                                      pause=0.002))],
                            bus=bus, store=store, concurrency=32, ack_wait=1.0, start="all",
                            retry_delay=0.2)
        await triggers.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
