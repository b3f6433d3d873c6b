"""The event buses side by side: MemoryBus (the baseline), Redis Streams and NATS JetStream.

For each bus, on a fresh stream (dropped afterwards):

* **publish throughput**: ``--events`` events published in batches of ``--batch``, one
  batch after the other, with no consumer running; events per second of wall time.
* **end-to-end latency**: the same number of events published at ``--rate`` events per
  second (batches of 10 on a fixed schedule, open loop) while a consumer of its own group
  fetches (up to 100, waiting up to 1 s) and acknowledges concurrently. An event's latency is
  the time its fetch returned minus the time its publish call started (one process, one
  monotonic clock); p50, p95 and p99 over every event.

Every id must arrive at least once, and exactly once after de-duplication by id, or the run
exits 1. The table shows each figure and its ratio to MemoryBus measured in the same run.

    python -m bench.events_bus [--events 10000] [--batch 100] [--rate 1000]
                               [--backends memory,redis,nats] [--json PATH]

Redis and NATS are the servers on 127.0.0.1 (``KEEL_BENCH_REDIS_URL``, ``KEEL_BENCH_NATS_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass

from keel.events import Event, EventBus, MemoryBus, NatsBus, RedisBus, Subscription

REDIS_URL = os.environ.get("KEEL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("KEEL_BENCH_NATS_URL", "nats://127.0.0.1:4222")


@dataclass
class Result:
    backend: str
    events: int
    publish_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    delivered: int  # deliveries, redeliveries included
    unique: int  # distinct ids delivered


@contextlib.asynccontextmanager
async def open_backend(name: str) -> AsyncIterator[Callable[[], EventBus]]:
    """A factory of buses on one fresh stream; the stream is dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    if name == "memory":
        yield MemoryBus
    elif name == "redis":
        stream = f"keel:bench:{tag}"
        try:
            yield lambda: RedisBus(REDIS_URL, stream=stream, maxlen=None)
        finally:
            bus = RedisBus(REDIS_URL, stream=stream)
            await bus.client().delete(stream, bus.groups_key)
            await bus.close()
    elif name == "nats":
        stream = f"BENCH_{tag}"
        try:
            yield lambda: NatsBus(NATS_URL, stream=stream, prefix=f"keel.bench.{tag}")
        finally:
            bus = NatsBus(NATS_URL, stream=stream, prefix=f"keel.bench.{tag}")
            js = await bus.jetstream()
            await js.delete_stream(stream)
            await bus.close()
    else:
        raise SystemExit(f"unknown backend {name!r}: memory, redis or nats")


def _events(run: str, start: int, n: int) -> list[Event]:
    return [Event(id=f"{run}-{i}", type="bench.tick", data={"i": i, "pad": "x" * 100})
            for i in range(start, start + n)]


async def publish_throughput(bus: EventBus, n: int, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, n, batch):
        await bus.publish(_events("tp", start, min(batch, n - start)))
    return n / (time.perf_counter() - started)


async def _consume(sub: Subscription, n: int, arrived: dict[str, float],
                   counts: list[int]) -> None:
    while len(arrived) < n:
        batch = await sub.fetch(100, wait=1.0)
        now = time.perf_counter()
        counts[0] += len(batch)
        for d in batch:
            arrived.setdefault(d.event.id, now)
        if batch:
            await sub.ack(batch)
    await sub.close()


async def latency(bus: EventBus, n: int, rate: float) -> tuple[list[float], int, int]:
    """Per-event latencies (ms), deliveries, distinct ids."""
    arrived: dict[str, float] = {}
    counts = [0]
    sub = await bus.subscribe("latency", start="new")
    consumer = asyncio.ensure_future(_consume(sub, n, arrived, counts))
    sent: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for k, start in enumerate(range(0, n, 10)):
            due = started + k * 10 / rate
            if (pause := due - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
            batch = _events("lat", start, min(10, n - start))
            at = time.perf_counter()
            for e in batch:
                sent[e.id] = at
            await bus.publish(batch)
        await asyncio.wait_for(consumer, 60 + n / 100)
    finally:
        consumer.cancel()
        with contextlib.suppress(BaseException):
            await consumer
    return sorted((arrived[i] - sent[i]) * 1000 for i in sent if i in arrived), \
        counts[0], len(arrived)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def measure(backend: str, n: int, batch: int, rate: float) -> Result:
    async with open_backend(backend) as make:
        async with make() as bus:
            per_s = await publish_throughput(bus, n, batch)
        async with make() as bus:
            lat, delivered, unique = await latency(bus, n, rate)
    return Result(backend, n, per_s, _pct(lat, 0.5), _pct(lat, 0.95), _pct(lat, 0.99),
                  delivered, unique)


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.backend == "memory"), results[0])
    lines = [f"{'bus':<8} {'publish ev/s':>13} {'x mem':>7} {'p50 ms':>8} {'p95 ms':>8} "
             f"{'p99 ms':>8} {'p50 x mem':>10} {'delivered':>10} {'unique':>7}"]
    for r in results:
        lines.append(
            f"{r.backend:<8} {r.publish_per_s:>13,.0f} {r.publish_per_s / base.publish_per_s:>7.3f}"
            f" {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.p99_ms:>8.2f}"
            f" {r.p50_ms / base.p50_ms if base.p50_ms else float('nan'):>10.1f}"
            f" {r.delivered:>10} {r.unique:>7}")
    return "\n".join(lines)


async def run(backends: list[str], n: int, batch: int, rate: float) -> list[Result]:
    return [await measure(name, n, batch, rate) for name in backends]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--backends", default="memory,redis,nats")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.backends.split(","), args.events, args.batch, args.rate))
    print(f"{args.events} events; publish in batches of {args.batch}; latency at "
          f"{args.rate:.0f} events/s\n")
    print(table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([asdict(r) for r in results], f, indent=2)
    bad = [r.backend for r in results if r.unique != r.events or r.delivered < r.events]
    if bad:
        print(f"\nLOST EVENTS on: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
