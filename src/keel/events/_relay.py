"""The relay: moves the run store's outbox to an event bus.

The store writes each run event into its outbox in the same transaction as the journal
record it reports (``open_store(url, outbox=True)``). A relay reads a batch of unpublished
rows (claiming them, so that other relays skip them), publishes them to the bus, and then
marks them published. A crash between the publish and the mark publishes the batch again,
under the same event ids: delivery is **at least once**, and consumers de-duplicate by
:attr:`keel.events.Event.id`. Nothing is ever dropped: while the bus or the store is down
the relay keeps its batch and tries again, backing off exponentially (with full jitter) up
to a cap.

Several relays may drain one store at once (on Postgres each reads rows the others have
not claimed); events then reach the bus in position order per relay, not overall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from keel.core import ConfigError, StoreUnavailable
from keel.events._bus import EventBus
from keel.events._errors import EventBusUnavailable
from keel.store import Event, RunStore

_log = logging.getLogger("keel.events.relay")

#: How often the running relay deletes published rows older than ``prune_after_s``.
PRUNE_EVERY_S = 60.0


@dataclass(slots=True)
class RelayStats:
    """What a relay did: events ``published`` (counting a batch published again after a
    failure each time), ``batches``, ``retries`` after a failure, the ``last_error`` (None
    once a batch went through again) and ``pruned`` rows."""

    published: int = 0
    batches: int = 0
    retries: int = 0
    last_error: str | None = None
    pruned: int = 0


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not low <= value <= high:
        raise ConfigError(name, f"must be a number from {low:g} to {high:g}, not "
                          f"{str(value)[:40]!r}")
    return float(value)


class Relay:
    """Publish ``store``'s outbox to ``bus``: ``await relay.run(stop)`` until ``stop`` is
    set, or ``await relay.run_once()`` for one batch.

    ``batch`` rows are read at a time; an empty outbox is polled every ``poll_s`` seconds;
    published rows older than ``prune_after_s`` are deleted (None: never). After a failure
    the relay waits a random time up to ``backoff_s * 2**n`` (at most ``max_backoff_s``);
    ``claim_s`` is how long the rows it read stay hidden from other relays.
    """

    def __init__(self, store: RunStore, bus: EventBus, *, batch: int = 500,
                 poll_s: float = 0.2, prune_after_s: float | None = 86_400,
                 backoff_s: float = 0.1, max_backoff_s: float = 30.0,
                 claim_s: float = 30.0) -> None:
        if not isinstance(store, RunStore):
            raise ConfigError("store", f"must be a keel RunStore, not {type(store).__name__}")
        if not isinstance(bus, EventBus):
            raise ConfigError("bus", f"must be a keel.events.EventBus, not "
                              f"{type(bus).__name__}")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise ConfigError("batch", f"must be a whole number from 1 to 10000, not "
                              f"{str(batch)[:40]!r}")
        self.store, self.bus, self.batch = store, bus, batch
        self.poll_s = _number("poll_s", poll_s, 0.001, 3600)
        self.prune_after_s = None if prune_after_s is None else _number(
            "prune_after_s", prune_after_s, 0, 10 * 365 * 86_400)
        self.backoff_s = _number("backoff_s", backoff_s, 0.001, 3600)
        self.max_backoff_s = _number("max_backoff_s", max_backoff_s, self.backoff_s, 86_400)
        self.claim_s = _number("claim_s", claim_s, 0.001, 86_400)
        self.stats = RelayStats()
        self._held: list[tuple[int, Event]] = []  # read, not yet published
        self._unmarked: list[int] = []  # published, not yet marked
        self._pruned_at = 0.0

    async def check(self) -> None:
        """Raise now, rather than retry for ever, if the bus or the store cannot be used:
        :class:`EventBusUnavailable` for an unreachable bus, :class:`keel.StoreError` /
        :class:`keel.StoreUnavailable` for the store (one without an outbox, too). A bus
        with a ``ping()`` method is pinged; any other is sent an empty publish."""
        ping = getattr(self.bus, "ping", None)
        if callable(ping):
            await ping()
        else:
            await self.bus.publish([])
        await self.store.prune_outbox(0.0)  # deletes nothing; reaches the outbox table

    async def run_once(self) -> int:
        """Publish one batch and mark it published; returns how many events were published
        (0: the outbox is empty). Raises EventBusUnavailable or StoreUnavailable after a
        failure, keeping the batch for the next call: nothing is dropped."""
        if self._unmarked:  # published before a failed mark: mark them first
            await self._mark()
        if not self._held:
            self._held = await self.store.read_outbox(0, self.batch, claim_s=self.claim_s)
            if not self._held:
                return 0
        held = self._held
        await self.bus.publish([event for _, event in held])
        self._held, self._unmarked = [], [position for position, _ in held]
        self.stats.published += len(held)
        self.stats.batches += 1
        await self._mark()
        self.stats.last_error = None
        return len(held)

    async def _mark(self) -> None:
        await self.store.mark_published(self._unmarked)
        self._unmarked = []

    async def prune(self) -> int:
        """Delete the published rows older than ``prune_after_s``; returns how many."""
        self._pruned_at = time.monotonic()
        if self.prune_after_s is None:
            return 0
        pruned = await self.store.prune_outbox(time.time() - self.prune_after_s)
        self.stats.pruned += pruned
        return pruned

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (None: until cancelled). Bus and store outages are
        logged and retried with backoff; other errors (a store without an outbox) raise."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                published = await self.run_once()
                if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    await self.prune()
            except (EventBusUnavailable, StoreUnavailable) as exc:
                failures += 1
                self.stats.retries += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                wait = random.uniform(0, min(self.max_backoff_s,  # full jitter
                                             self.backoff_s * 2 ** min(failures, 30)))
                _log.warning("the relay could not publish (%s); trying again in %.2fs",
                             self.stats.last_error, wait)
                await _wait(stop, wait)
                continue
            failures = 0
            if published < self.batch:
                await _wait(stop, self.poll_s)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
