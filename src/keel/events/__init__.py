"""L3: events. The event-bus seam (memory, Redis Streams, NATS JetStream), the relay that
moves the journal's outbox to a bus, and triggers that start runs from events."""

from keel.events._bus import Delivery, EventBus, MemoryBus, Start, Subscription
from keel.events._errors import EventBusUnavailable, EventRejected
from keel.events._nats import NatsBus
from keel.events._open import open_bus
from keel.events._redis import RedisBus
from keel.events._relay import Relay, RelayStats
from keel.events._triggers import DEAD_LETTER_TYPE, Fired, Trigger, Triggers, TriggerStats
from keel.store import Event

EventBusUnavailable.__module__ = __name__
EventRejected.__module__ = __name__

__all__ = [
    "DEAD_LETTER_TYPE",
    "Delivery",
    "Event",
    "EventBus",
    "EventBusUnavailable",
    "EventRejected",
    "Fired",
    "MemoryBus",
    "NatsBus",
    "RedisBus",
    "Relay",
    "RelayStats",
    "Start",
    "Subscription",
    "Trigger",
    "TriggerStats",
    "Triggers",
    "open_bus",
]
