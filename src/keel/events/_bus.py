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
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from keel.core import ConfigError, UserError
from keel.events._errors import EventBusUnavailable, EventRejected
from keel.store import Event, check_event_type

logger = logging.getLogger("keel.events")

#: The largest event (its JSON form) a bus accepts by default: 1 MiB.
DEFAULT_MAX_EVENT_BYTES = 1 << 20

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
    if not isinstance(types, Collection) or isinstance(types, bytes | dict):
        raise ConfigError("types", f"pass event types as a list of strings, or None, not "
                          f"{type(types).__name__}")
    if len(types) > 1000:
        raise ConfigError("types", f"a subscription takes at most 1000 event types, not "
                          f"{len(types)}")
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


def check_max_event_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 64 << 20:
        raise ConfigError("max_event_bytes", f"must be a whole number of bytes from 1024 to "
                          f"{64 << 20}, not {value!r}")
    return value


def encode_events(events: object, max_bytes: int) -> list[bytes]:
    """The JSON form of each event, every one checked before any is written (a batch is
    refused whole): a list of :class:`Event` values, each at most ``max_bytes`` long."""
    if isinstance(events, str | bytes | Event) or not isinstance(events, Sequence):
        raise ConfigError("events", f"publish takes a list of keel.events.Event values, not "
                          f"{type(events).__name__}")
    out: list[bytes] = []
    for event in events:
        if not isinstance(event, Event):
            raise ConfigError("events", f"publish takes keel.events.Event values, not "
                              f"{type(event).__name__}")
        try:
            raw = event.to_json()
        except (TypeError, ValueError) as exc:
            raise EventRejected(f"event {event.id[:80]!r} cannot be written as JSON ({exc}); "
                                "its data must hold only JSON values (no NaN, no objects)",
                                event_id=event.id) from None
        if len(raw) > max_bytes:
            raise EventRejected(f"event {event.id[:80]!r} is {len(raw)} bytes as JSON, over the "
                                f"bus's limit of {max_bytes} (max_event_bytes, or what the "
                                "server takes): store the bulk elsewhere and put a reference "
                                "in the event", event_id=event.id)
        out.append(raw)
    return out


def decode_event(raw: object) -> Event | None:
    """The event in a message read off a bus, or None when it is not one (someone else wrote
    to the stream): the caller drops it, logs it and counts it, never crashes on it."""
    if not isinstance(raw, bytes | str):
        return None
    try:
        return Event.from_json(raw)
    except UserError:
        return None


def check_fetch(max_events: object, wait: object) -> tuple[int, float]:
    if isinstance(max_events, bool) or not isinstance(max_events, int) or \
            not 1 <= max_events <= 10_000:
        raise ConfigError("max_events", f"must be a whole number from 1 to 10000, not "
                          f"{max_events!r}")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or math.isnan(wait) or \
            not 0 <= wait <= 3600:
        raise ConfigError("wait", f"must be a number of seconds from 0 to 3600, not {wait!r}")
    return max_events, float(wait)


def check_delay(delay: object) -> float:
    if isinstance(delay, bool) or not isinstance(delay, int | float) or math.isnan(delay) or \
            not 0 <= delay <= 86_400:
        raise ConfigError("delay", f"must be a number of seconds from 0 to 86400, not {delay!r}")
    return float(delay)


def check_start(start: object) -> Start:
    if start not in ("new", "all"):
        raise ConfigError("start", f"must be 'new' or 'all', not {str(start)[:80]!r}")
    return start


def check_deliveries(deliveries: object, token_type: type | tuple[type, ...]) -> list[Delivery]:
    """The deliveries to ack or nak, each one handed out by this kind of bus."""
    if isinstance(deliveries, Delivery) or not isinstance(deliveries, Sequence):
        raise ConfigError("deliveries", f"pass a list of Delivery values, not "
                          f"{type(deliveries).__name__}")
    for d in deliveries:
        if not isinstance(d, Delivery) or not isinstance(d.token, token_type):
            raise ConfigError("deliveries", "pass the Delivery values this subscription's "
                              f"fetch returned, not {type(d).__name__}")
    return list(deliveries)


def types_mismatch(group: str, had: frozenset[str] | None,
                   asked: frozenset[str] | None) -> ConfigError:
    def show(types: frozenset[str] | None) -> str:
        return "every type" if types is None else ", ".join(sorted(types))[:300]
    return ConfigError("types", f"consumer group {group!r} already reads {show(had)}; "
                       f"subscribe with the same types, or use another group name for "
                       f"{show(asked)}")


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

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._log: list[Event] = []
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Condition()
        self._closed = False
        self._max_bytes = check_max_event_bytes(max_event_bytes)

    @property
    def events(self) -> list[Event]:
        """Every event published, in order (a copy)."""
        return list(self._log)

    def _check_open(self) -> None:
        if self._closed:
            raise EventBusUnavailable("the memory event bus is closed")

    async def publish(self, events: Sequence[Event]) -> None:
        self._check_open()
        encode_events(events, self._max_bytes)
        async with self._changed:
            self._log.extend(events)
            self._changed.notify_all()

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        self._check_open()
        check_group(group)
        wanted = check_types(types)
        wait = check_ack_wait(ack_wait)
        check_start(start)
        if group not in self._groups:
            self._groups[group] = _Group(wanted, wait, 0 if start == "all" else len(self._log))
        elif self._groups[group].types != wanted:
            raise types_mismatch(group, self._groups[group].types, wanted)
        return _MemorySubscription(self, self._groups[group])

    async def close(self) -> None:
        self._closed = True


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, group: _Group) -> None:
        self._bus = bus
        self._group = group
        self._closed = False

    async def close(self) -> None:
        self._closed = True

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
        if self._closed:
            raise EventBusUnavailable("this subscription was closed; subscribe again")
        max_events, wait = check_fetch(max_events, wait)
        deadline = time.monotonic() + wait
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
        for d in check_deliveries(deliveries, int):
            self._group.pending.pop(d.token, None)
            self._group.acked.add(d.token)

    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        delay = check_delay(delay)
        now = time.monotonic()
        for d in check_deliveries(deliveries, int):
            pending = self._group.pending.get(d.token)
            if pending is not None:
                pending.due = now + max(0.0, delay)
        async with self._bus._changed:
            self._bus._changed.notify_all()
