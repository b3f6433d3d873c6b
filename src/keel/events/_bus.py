"""The event-bus seam: publish events, and read them in consumer groups with acknowledgement.

Delivery is **at least once**. A consumer group is a durable name: the groups each see every
event (of the types they asked for); the consumers of one group share them, each event going
to one consumer at a time. An event a consumer fetched but did not acknowledge within
``ack_wait`` seconds (it crashed, or it ``nak``-ed the event) is delivered again, with
``attempt`` counting up. Consumers de-duplicate by :attr:`Event.id`.

Backends: :class:`MemoryBus` (one process; tests), Redis Streams and NATS JetStream.
``keel.testing.EventBusConformance`` is the contract each of them passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from keel.core import ConfigError
from keel.events._errors import EventBusUnavailable
from keel.store import Event, check_event_type

#: Where a new consumer group starts: with the events published after it was created
#: (``new``), or with every event the bus still holds (``all``).
Start: TypeAlias = Literal["new", "all"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to a consumer. ``attempt`` is 1 the first time, then counts the
    redeliveries; ``token`` is the backend's handle for ack/nak."""

    event: Event
    attempt: int
    token: Any = field(default=None, compare=False, repr=False)


def check_group(group: object) -> str:
    if not isinstance(group, str) or not group or len(group) > 64 or \
            not all(c.isalnum() or c in "_-" for c in group):
        raise ConfigError("group", f"a consumer group is 1-64 letters, digits, '_' or '-', "
                          f"not {str(group)[:80]!r}")
    return group


def check_types(types: Collection[str] | None) -> frozenset[str] | None:
    """None (every type) or the set of event types a subscription wants."""
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    checked = frozenset(check_event_type(t) for t in types)
    if not checked:
        raise ConfigError("types", "subscribe to at least one event type, or pass None "
                          "for every type")
    return checked


class Subscription(ABC):
    """A consumer's handle on its group."""

    @abstractmethod
    async def fetch(self, max_events: int = 100, *, wait: float = 1.0) -> list[Delivery]:
        """Up to ``max_events`` deliveries (new events, and events whose ``ack_wait`` ran out
        unacknowledged), waiting up to ``wait`` seconds for the first. An empty list means
        none arrived in time. Raises :class:`EventBusUnavailable`."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The events are handled: never deliver them to this group again."""

    @abstractmethod
    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        """The events are not handled: deliver them again (to any consumer of the group)
        after about ``delay`` seconds."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop consuming. Unacknowledged deliveries are delivered again after ack_wait."""


class EventBus(ABC):
    """Where events go. See the module docstring for the delivery contract."""

    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Store the events on the bus durably, in order, before returning. Raises
        :class:`EventBusUnavailable`; a caller that retries publishes the same ids again,
        which consumers de-duplicate."""

    @abstractmethod
    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        """A consumer of ``group`` for the events of ``types`` (None: every type).
        Raises :class:`EventBusUnavailable`, and ConfigError for a bad group or type."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call more than once."""

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_ack_wait(ack_wait: object) -> float:
    if isinstance(ack_wait, bool) or not isinstance(ack_wait, int | float) or \
            not 0.05 <= ack_wait <= 86_400:
        raise ConfigError("ack_wait", f"must be a number of seconds from 0.05 to 86400, not "
                          f"{ack_wait!r}")
    return float(ack_wait)


# ------------------------------------------------------------------------- the memory bus


@dataclass(slots=True)
class _Pending:
    index: int
    attempt: int
    due: float


@dataclass(slots=True)
class _Group:
    types: frozenset[str] | None
    ack_wait: float
    cursor: int
    pending: dict[int, _Pending] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)


class MemoryBus(EventBus):
    """An event bus inside one process: the events live in a list, the groups in dicts.
    Nothing survives the process; for tests and for single-process applications."""

    def __init__(self) -> None:
        self._log: list[Event] = []
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Condition()
        self._closed = False

    @property
    def events(self) -> list[Event]:
        """Every event published, in order (a copy)."""
        return list(self._log)

    def _check_open(self) -> None:
        if self._closed:
            raise EventBusUnavailable("the memory event bus is closed")

    async def publish(self, events: Sequence[Event]) -> None:
        self._check_open()
        for event in events:
            if not isinstance(event, Event):
                raise ConfigError("events", f"publish takes keel.events.Event values, not "
                                  f"{type(event).__name__}")
        async with self._changed:
            self._log.extend(events)
            self._changed.notify_all()

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        self._check_open()
        check_group(group)
        wanted = check_types(types)
        wait = check_ack_wait(ack_wait)
        if start not in ("new", "all"):
            raise ConfigError("start", f"must be 'new' or 'all', not {start!r}")
        if group not in self._groups:
            self._groups[group] = _Group(wanted, wait, 0 if start == "all" else len(self._log))
        return _MemorySubscription(self, self._groups[group])


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, group: _Group) -> None:
        self._bus = bus
        self._group = group

    def _take(self, max_events: int) -> list[Delivery]:
        group, log, now = self._group, self._bus._log, time.monotonic()
        out: list[Delivery] = []
        for pending in sorted(group.pending.values(), key=lambda p: p.index):
            if len(out) >= max_events:
                return out
            if pending.due <= now:
                pending.attempt += 1
                pending.due = now + group.ack_wait
                out.append(Delivery(log[pending.index], pending.attempt, pending.index))
        while len(out) < max_events and group.cursor < len(log):
            index = group.cursor
            group.cursor += 1
            event = log[index]
            if group.types is not None and event.type not in group.types:
                continue
            group.pending[index] = _Pending(index, 1, now + group.ack_wait)
            out.append(Delivery(event, 1, index))
        return out

    async def fetch(self, max_events: int = 100, *, wait: float = 1.0) -> list[Delivery]:
        self._bus._check_open()
        if max_events < 1:
            raise ConfigError("max_events", f"must be at least 1, not {max_events!r}")
        deadline = time.monotonic() + max(0.0, wait)
        cond = self._bus._changed
        async with cond:
            while True:
                got = self._take(max_events)
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                due = [p.due for p in self._group.pending.values()]
                nap = min([left, *(max(0.001, d - time.monotonic()) for d in due)])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), nap)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self._group.pending.pop(d.token, None)
            self._group.acked.add(d.token)

    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        now = time.monotonic()
        for d in deliveries:
            pending = self._group.pending.get(d.token)
            if pending is not None:
                pending.due = now + max(0.0, delay)
        async with self._bus._changed:
            self._bus._changed.notify_all()
