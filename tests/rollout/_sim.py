"""The rollout proof's traffic simulation: a driver and worker processes sharing one SQLite
run store, with a simulated clock (the driver sends each batch with its time).

Two versions of one support agent on scripted models: ``v1`` (current) always answers;
``v2`` (candidate) answers too, until the rollout reaches 10%: from then on it hands most
conversations to a person (it escalates), which the escalation-rate gate must catch.
Users hold conversations of one to three turns; each turn goes to whichever worker the
driver picks, so a worker often serves a conversation another one started.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import keel
from keel import Escalate
from keel.rollout import Gates, Rollout, Tick, Versions
from keel.store import RunFilter, RunRecord, SQLiteStore
from keel.testing import FunctionModel, call

#: Real seconds after a rollback during which the driver paces its batches (TTL + 3 s).
PACED_S = 5.0


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    runs: int = 10_000
    users: int = 2000
    batch: int = 100  # runs per batch (split between the workers)
    batch_s: float = 10.0  # simulated seconds per batch
    steps: tuple[float, ...] = (1, 10, 50, 100)
    step_interval_s: float = 150.0
    window_s: float = 300.0
    min_runs: int = 20
    ttl_s: float = 2.0
    workers: int = 2
    start: float = 1_700_000_000.0
    seed: int = 16


def _escalates(text: str) -> bool:
    return hashlib.blake2b(text.encode(), digest_size=2).digest()[0] < 154  # ~60%


def versions(degraded: list[bool]) -> Versions:
    @keel.tool(risk="read")
    def hand_over() -> str:
        """Hand the conversation to a person."""
        raise Escalate("needs a person")

    def candidate(messages: list[Any], tools: Any, settings: Any) -> Any:
        last = messages[-1]
        if last.role == "user" and degraded[0] and _escalates(last.text or ""):
            return call("hand_over")
        return "v2: done"

    v1 = keel.Agent("support", model=FunctionModel(lambda m, t, s: "v1: done"),
                    instructions="Answer the customer.")
    v2 = keel.Agent("support", model=FunctionModel(candidate),
                    instructions="Answer the customer, briefly.", tools=[hand_over])
    return Versions(v1=v1, v2=v2)


def rollout(store: SQLiteStore, cfg: SimConfig, clock: Any, degraded: list[bool]) -> Rollout:
    return Rollout("support", versions(degraded), store=store, current="v1", candidate="v2",
                   steps=cfg.steps, step_interval_s=cfg.step_interval_s,
                   window_s=cfg.window_s, ttl_s=cfg.ttl_s, clock=clock,
                   gates=Gates(min_runs=cfg.min_runs, p95_latency_ratio=None,
                               cost_per_run_ratio=None))


# ------------------------------------------------------------------------------ workers


def worker_main(conn: Connection, path: str, cfg: SimConfig) -> None:
    asyncio.run(_serve(conn, path, cfg))


async def _serve(conn: Connection, path: str, cfg: SimConfig) -> None:
    now = [cfg.start]
    degraded = [False]
    async with SQLiteStore(path) as store:
        r = rollout(store, cfg, lambda: now[0], degraded)
        conn.send("ready")
        while True:
            msg = await asyncio.to_thread(conn.recv)
            if msg is None:
                break
            now[0], items = msg
            state = await r.state()
            degraded[0] = state.status == "active" and state.percent >= 10
            outcomes = await asyncio.gather(*(_one(r, item) for item in items))
            conn.send(outcomes)


async def _one(r: Rollout, item: tuple[str, str, int, str]) -> str:
    user, conversation, turn, run_id = item
    try:
        await r.run(f"{conversation} turn {turn}: where is my order?", user=user,
                    conversation=conversation, run_id=run_id,
                    metadata={"turn": turn, "worker": os.getpid()})
        return "completed"
    except Escalate:
        return "escalated"


# ------------------------------------------------------------------------------- driver


@dataclass(kw_only=True)
class SimResult:
    #: (batch, tick, wall-clock time just before the tick) of each advance and rollback
    ticks: list[tuple[int, Tick, float]] = field(default_factory=list)
    wall_s: float = 0.0
    runs: list[RunRecord] = field(default_factory=list)


class Traffic:
    """Who talks next: each user has a conversation of 1 to 3 turns; a batch is distinct
    users (so one conversation never has two turns in flight)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.users = [f"user-{i}" for i in range(cfg.users)]
        self.left: dict[str, int] = {}
        self.conv: dict[str, int] = {}
        self.turn: dict[str, int] = {}
        self.n = 0

    def batch(self, size: int) -> list[tuple[str, str, int, str]]:
        items = []
        for user in self.rng.sample(self.users, size):
            if self.left.get(user, 0) == 0:
                self.conv[user] = self.conv.get(user, 0) + 1
                self.left[user] = self.rng.randint(1, 3)
                self.turn[user] = 0
            self.left[user] -= 1
            self.turn[user] += 1
            self.n += 1
            items.append((user, f"{user}-c{self.conv[user]}", self.turn[user],
                          f"sim{self.n:06d}"))
        return items


async def drive(path: str, cfg: SimConfig) -> SimResult:
    ctx = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for _ in range(cfg.workers):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(theirs, path, cfg), daemon=True)
        p.start()
        pipes.append(mine)
        procs.append(p)
    result = SimResult()
    try:
        for conn in pipes:
            assert await asyncio.to_thread(conn.recv) == "ready"
        now = [cfg.start]
        async with SQLiteStore(path) as store:
            controller = rollout(store, cfg, lambda: now[0], [False])
            await controller.start(now=now[0])
            traffic = Traffic(cfg)
            began = time.perf_counter()
            rolled_back_at: float | None = None
            next_at = 0.0
            for b in range(cfg.runs // cfg.batch):
                now[0] = cfg.start + b * cfg.batch_s
                if rolled_back_at is not None and time.time() - rolled_back_at < PACED_S:
                    # after the rollback, batches go out at most PACED_S / 15 apart for
                    # PACED_S (real) seconds, so that traffic outlasts the workers' TTL
                    # however fast this machine runs them: the rollback's reach is measured
                    # on it
                    await asyncio.sleep(max(0.0, next_at - time.time()))
                    next_at = time.time() + PACED_S / 15
                items = traffic.batch(cfg.batch)
                share = -(-len(items) // cfg.workers)
                for i, conn in enumerate(pipes):
                    conn.send((now[0], items[i * share:(i + 1) * share]))
                for conn in pipes:
                    await asyncio.to_thread(conn.recv)
                before = time.time()  # the change is written after this instant
                tick = await controller.tick(now=now[0])
                if tick.action in ("advanced", "rolled_back"):
                    result.ticks.append((b, tick, before))
                if tick.action == "rolled_back":
                    rolled_back_at = next_at = before
                if tick.action == "advanced":
                    # a batch stands for 10 s, longer than the workers' state TTL, but runs
                    # in a fraction of a second: let the TTL pass, as it would between two
                    # batches, so the workers serve the new share from the next batch on. A
                    # rollback gets no such pause: its reach is what the test measures.
                    await asyncio.sleep(cfg.ttl_s + 0.2)
            result.wall_s = time.perf_counter() - began
            result.runs = await _all_runs(store)
    finally:
        for conn in pipes:
            conn.send(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return result


async def _all_runs(store: SQLiteStore) -> list[RunRecord]:
    runs: list[RunRecord] = []
    while True:
        page = await store.list_runs(RunFilter(limit=10_000, offset=len(runs)))
        runs.extend(page)
        if len(page) < 10_000:
            return runs
