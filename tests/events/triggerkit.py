"""What the trigger tests share: an agent whose one tool writes an effect row to SQLite,
keyed by the call's idempotency key, and a model that measures how many runs are live."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel import Agent, ToolContext, tool
from keel.events import Event, Trigger
from keel.testing import FunctionModel, call


class OrderProcessed(BaseModel):
    order_id: str
    total: float


class Effects:
    """The outside system: one SQLite table of applied effects, written through one
    connection per process (opening and closing a connection per call hung in ``close()``
    under concurrent tool threads; see the triggers report)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, "
                        "order_id TEXT NOT NULL)")

    def apply(self, key: str, order_id: str) -> None:
        with self.lock:
            self.calls += 1
            self.db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, order_id))

    def rows(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.db.execute("SELECT key, order_id FROM effects"))


@dataclass
class Gauge:
    """Runs live between their first and last model request; the most at once."""

    live: int = 0
    high: int = 0
    seen: set[str] = field(default_factory=set)


def order_of(messages: list[Any]) -> str:
    first = next(m for m in messages if m.role == "user")
    return str(json.loads(first.text.split("\n", 1)[1])["order_id"])


def make_agent(effects: Effects, gauge: Gauge | None = None, *, name: str = "followup",
               pause: float = 0.0) -> Agent[str]:
    gauge = gauge or Gauge()

    @tool(idempotent=True, risk="write")
    def record(order: str, ctx: ToolContext) -> str:
        """Record the follow-up for an order."""
        effects.apply(ctx.idempotency_key, order)
        return "recorded"

    async def answer(messages: list[Any], tools: Any, settings: Any) -> Any:
        if any(m.role == "tool" for m in messages):
            gauge.live -= 1
            return "followed up"
        gauge.live += 1
        gauge.high = max(gauge.high, gauge.live)
        await asyncio.sleep(pause)
        return call("record", {"order": order_of(messages)})

    return Agent(name, model=FunctionModel(answer), tools=[record])


def order_trigger(agent: Agent[str], **kw: Any) -> Trigger:
    return Trigger("order_processed", agent=agent, payload=OrderProcessed, **kw)


def orders(n: int, *, start: int = 0) -> list[Event]:
    return [Event(id=f"evt-{i}", type="order_processed",
                  data={"order_id": f"o{i}", "total": float(i)}) for i in range(start, start + n)]
