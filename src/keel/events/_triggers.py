"""Triggers: agents and flows started by events, each event starting its run exactly once.

A :class:`Trigger` says which event type starts which agent (or flow), how the event's data
is validated (``payload``) and how the run's input is made from it. :class:`Triggers` reads
a consumer group of the bus and starts the runs, ``concurrency`` at a time.

**Exactly one run per (trigger, event id).** The run id is derived from the trigger's name
and the event id (:meth:`Trigger.run_id`), and the store refuses a second run with the same
id, so a redelivered or re-published event never starts a second run, in this process or
any other, before or after a crash. For each event the store's record decides:

- no run yet: start it (``metadata`` records the trigger, the event id and type);
- ``completed``, ``failed``, ``suspended`` (a person decides; the usual resume path goes on),
  or cancelled on purpose (``keel runs cancel``): nothing to do;
- ``running`` (or stopped by a crash of its consumer): resume it from its journal; if
  another live worker holds its lease, leave it and look again later.

**When the event is acknowledged.** Only once its run has come to rest (finished, failed or
suspended). A consumer that dies mid-run leaves the event unacknowledged; the bus delivers it
again after ``ack_wait`` and the run is resumed there, recorded steps not executed again.
Give ``ack_wait`` more than a run's usual length: an event redelivered while its run is
still live elsewhere is handed back (``nak``) and looked at again later, never run twice.

**Back-pressure.** Each event takes one of ``concurrency`` slots until its runs come to rest,
and the bus is asked for no more events than there are free slots: a burst waits on the
bus, not in memory. (Two triggers on one event type run one after the other in its slot.)

**Bad payloads.** An event whose data does not validate (or whose input cannot be made) is
:class:`EventRejected`: it is published as a ``keel.dead_letter`` event (the original event
and the reason), counted, logged, and acknowledged, so it never blocks the group and starts
no run. **Bus outages** while running are retried with jittered backoff; at start they are
a clear :class:`EventBusUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic

from keel.core import (
    ConfigError,
    KeelError,
    LeaseLost,
    RunLeased,
    RunNotFound,
    StoreError,
    UserError,
)
from keel.events._bus import Delivery, EventBus, Start, Subscription, check_group
from keel.events._errors import EventBusUnavailable, EventRejected
from keel.runtime import Agent, Flow
from keel.store import Event, RunRecord, RunStore, check_event_type, check_id

_log = logging.getLogger("keel.events.triggers")
P = TypeVar("P")

#: The type of the event published for an event that was rejected.
DEAD_LETTER_TYPE = "keel.dead_letter"
#: The longest run input a trigger makes (characters).
MAX_INPUT_CHARS = 100_000


#: What a trigger starts: an :class:`keel.Agent` or a flow (any pattern).
Startable = Agent[Any] | Flow[Any]


@dataclass(frozen=True, slots=True)
class Fired(Generic[P]):
    """What a trigger's ``input``, ``tenant`` and ``user`` functions receive: the event and
    its validated payload."""

    event: Event
    payload: P

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def type(self) -> str:
        return self.event.type


Maker = Callable[[Fired[Any]], Any]


def _default_input(fired: Fired[Any]) -> str:
    value = fired.payload
    data = value.model_dump(mode="json") if isinstance(value, pydantic.BaseModel) else value
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return f"Event {fired.type} (id {fired.id}):\n{text}"


class Trigger:
    """``Trigger("order_processed", agent=followup, payload=OrderProcessed,
    input=lambda fired: f"Follow up on order {fired.payload.order_id}")``.

    ``payload``: a pydantic model or any type a pydantic ``TypeAdapter`` validates, checked
    against ``event.data`` (None: the data as it is, a dict). ``input``: the run's input text
    from the :class:`Fired` event (default: the event type, id and payload as JSON).
    ``tenant``/``user``: a string, a function of the :class:`Fired` event, or None (the
    tenant defaults to ``event.tenant``). ``name``: part of every run id this trigger
    derives, so it must stay the same across deployments (default ``type:agent``).
    """

    def __init__(self, type: str, *, agent: Startable, payload: Any = None,
                 input: Maker | None = None, tenant: str | Maker | None = None,
                 user: str | Maker | None = None, name: str | None = None) -> None:
        self.type = check_event_type(type)
        if not isinstance(agent, Agent | Flow):
            raise ConfigError("agent", f"a trigger starts an Agent or a flow, not "
                              f"{type_name(agent)}")
        self.agent = agent
        try:
            self._adapter: pydantic.TypeAdapter[Any] | None = (
                None if payload is None else pydantic.TypeAdapter(payload))
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError,
                TypeError) as exc:
            raise ConfigError("payload", f"pydantic cannot validate {payload!r}: "
                              f"{str(exc)[:200]}") from None
        for what, value in (("input", input), ("tenant", tenant), ("user", user)):
            if value is not None and not callable(value) and (what == "input" or
                                                             not isinstance(value, str)):
                raise ConfigError(what, f"must be a function of the fired event"
                                  f"{'' if what == 'input' else ' or a string'}, not "
                                  f"{type_name(value)}")
        self._input = input or _default_input
        self._tenant, self._user = tenant, user
        self.name = check_id("name", name if name is not None else f"{type}:{agent.name}")

    def __repr__(self) -> str:
        return f"Trigger({self.type!r}, agent={self.agent.name!r}, name={self.name!r})"

    def run_id(self, event_id: str) -> str:
        """The id of the run this trigger starts for event ``event_id`` (the same in every
        process, every time)."""
        digest = hashlib.sha256(f"{self.name}\x00{event_id}".encode()).hexdigest()
        return f"trg-{digest[:40]}"

    def prepare(self, event: Event) -> Planned:
        """How to start this trigger's run for ``event``, or :class:`EventRejected`."""
        try:
            payload = event.data if self._adapter is None else \
                self._adapter.validate_python(event.data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(data)'}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise EventRejected(f"event {event.id} ({event.type}) does not validate for "
                                f"trigger {self.name}: {problems}", event_id=event.id) from None
        fired: Fired[Any] = Fired(event, payload)
        try:
            text = self._input(fired)
            tenant = _who(self._tenant, fired, event.tenant)
            user = _who(self._user, fired, None)
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_INPUT_CHARS:
                raise UserError(f"the input function must return non-empty text of at most "
                                f"{MAX_INPUT_CHARS:,} characters, not {_brief(text)}")
            tenant = None if tenant is None else check_id("tenant", tenant)
            user = None if user is None else check_id("user", user)
        except Exception as exc:  # the user's function failed on this event: reject it
            raise EventRejected(f"event {event.id} ({event.type}): trigger {self.name} "
                                f"could not make the run's input ({type(exc).__name__}: "
                                f"{str(exc)[:300]})", event_id=event.id) from None
        metadata = {"trigger": self.name, "event_id": event.id, "event_type": event.type}
        return Planned(self, self.run_id(event.id), text, tenant, user, metadata)


@dataclass(frozen=True, slots=True)
class Planned:
    """One run to start (internal)."""

    trigger: Trigger
    run_id: str
    input: str
    tenant: str | None
    user: str | None
    metadata: dict[str, str]


def _who(given: str | Maker | None, fired: Fired[Any], default: str | None) -> str | None:
    if given is None:
        return default
    if isinstance(given, str):
        return given
    value = given(fired)
    if value is not None and not isinstance(value, str):
        raise UserError(f"a tenant/user function must return a string or None, not "
                        f"{type_name(value)}")
    return value


def type_name(value: object) -> str:
    return type(value).__name__


def _brief(value: object) -> str:
    return f"{type_name(value)} {str(value)[:60]!r}"


@dataclass(slots=True)
class TriggerStats:
    """What a :class:`Triggers` did since it was made (counters for an operator)."""

    #: Runs this consumer created.
    started: int = 0
    #: Events whose run already existed and was at rest (a redelivery or a re-publish).
    duplicates: int = 0
    #: Runs found running or interrupted and resumed here.
    resumed: int = 0
    #: Events rejected (dead-lettered and acknowledged).
    rejected: int = 0
    #: Events handed back to the bus to be looked at again (run live elsewhere, store down).
    retried: int = 0
    #: Times the bus failed while running (each followed by a backoff).
    bus_errors: int = 0
    #: Events being handled now, and the most there ever were at once.
    in_flight: int = 0
    high_water: int = 0
    #: The last rejections (newest last, at most 100).
    last_rejections: list[str] = field(default_factory=list)


class _Retry(Exception):
    """Look at this event again later (internal)."""


class Triggers:
    """Consume ``bus`` in consumer ``group`` and start the triggers' runs in ``store``.

    ``concurrency``: the most events (hence runs) in flight at once. ``ack_wait``: seconds
    before an unacknowledged event is delivered again (see the module docstring).
    ``start``: where a new group begins (``"new"``: events published from now on).
    ``deps``: handed to every run's tools as ``ctx.deps``.
    """

    def __init__(self, triggers: Iterable[Trigger], *, bus: EventBus, store: RunStore,
                 group: str = "keel-triggers", concurrency: int = 16, ack_wait: float = 300.0,
                 start: Start = "new", deps: Any = None, retry_delay: float = 5.0) -> None:
        self.triggers = list(triggers) if not isinstance(triggers, Trigger) else [triggers]
        if not self.triggers or not all(isinstance(t, Trigger) for t in self.triggers):
            raise ConfigError("triggers", "give one or more keel.events.Trigger values")
        names = [t.name for t in self.triggers]
        if len(set(names)) != len(names):
            raise ConfigError("triggers", f"two triggers share a name ({names}); give each "
                              "its own name=")
        if not isinstance(bus, EventBus):
            raise ConfigError("bus", f"must be a keel.events.EventBus, not {type_name(bus)}")
        if not isinstance(store, RunStore):
            raise ConfigError("store", f"must be a keel.RunStore, not {type_name(store)}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or \
                not 1 <= concurrency <= 10_000:
            raise ConfigError("concurrency", f"must be an integer from 1 to 10000, not "
                              f"{concurrency!r}")
        if isinstance(retry_delay, bool) or not isinstance(retry_delay, int | float) or \
                not 0 <= retry_delay <= 3600:
            raise ConfigError("retry_delay", f"must be 0-3600 seconds, not {retry_delay!r}")
        self.bus, self.store, self.group = bus, store, check_group(group)
        self.concurrency, self.ack_wait, self.start = concurrency, ack_wait, start
        self.deps, self.retry_delay = deps, float(retry_delay)
        self.stats = TriggerStats()
        self._by_type: dict[str, list[Trigger]] = {}
        for t in self.triggers:
            self._by_type.setdefault(t.type, []).append(t)
        #: The events handled here right now, with their deliveries (answered together).
        self._active: dict[str, list[Delivery]] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (then finish the runs in flight and return), or
        until cancelled (a crash, as far as the runs are concerned: they are resumed when
        their events are delivered again)."""
        stop = stop or asyncio.Event()
        try:
            sub = await self.bus.subscribe(self.group, types=sorted(self._by_type),
                                           ack_wait=self.ack_wait, start=self.start)
        except EventBusUnavailable as exc:
            raise EventBusUnavailable(f"the triggers cannot start: the event bus is not "
                                      f"reachable ({exc})") from exc
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._consume(sub, stop, tasks)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.close()

    async def _consume(self, sub: Subscription, stop: asyncio.Event,
                       tasks: set[asyncio.Task[None]]) -> None:
        failures = 0
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                free = self.concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    got = await sub.fetch(free, wait=0.5)
                except EventBusUnavailable as exc:
                    failures += 1
                    self.stats.bus_errors += 1
                    nap = random.uniform(0, min(30.0, 0.2 * 2 ** min(failures, 8)))
                    _log.warning("event bus unavailable while fetching (%s); again in %.1fs",
                                 exc, nap)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopping), nap)
                    continue
                failures = 0
                for delivery in got:
                    same = self._active.get(delivery.event.id)
                    if same is not None:  # handled here right now (a redelivery or a
                        same.append(delivery)  # re-publish): answered with it, no new slot
                        continue
                    # registered before the task runs, so that a copy later in this
                    # same batch joins it instead of starting a second handler
                    self._active[delivery.event.id] = answer = [delivery]
                    task = asyncio.create_task(self._handle(sub, answer))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def _handle(self, sub: Subscription, answer: list[Delivery]) -> None:
        """Settle ``answer[0]``'s event, then ack or nak it with every copy of it that
        arrived meanwhile (``answer`` is the list registered in ``_active``)."""
        event = answer[0].event
        stats = self.stats
        stats.in_flight += 1
        stats.high_water = max(stats.high_water, stats.in_flight)
        try:
            done = await self._settle(event)
            await self._answer(sub, answer, done)
        finally:
            stats.in_flight -= 1
            self._active.pop(event.id, None)

    async def _answer(self, sub: Subscription, deliveries: list[Delivery], done: bool) -> None:
        try:
            if done:
                await sub.ack(deliveries)
            else:
                self.stats.retried += 1
                await sub.nak(deliveries, delay=self.retry_delay)
        except EventBusUnavailable as exc:  # it comes again after ack_wait; de-dup holds
            self.stats.bus_errors += 1
            _log.warning("event %s: could not %s it (%s); it will be delivered again",
                         deliveries[0].event.id, "ack" if done else "nak", exc)

    async def _settle(self, event: Event) -> bool:
        """True once every run this event starts is at rest (or the event was rejected)."""
        try:
            starts = [t.prepare(event) for t in self._by_type.get(event.type, [])]
            for start in starts:
                await self._run_once(start)
        except EventRejected as exc:
            return await self._reject(event, exc)
        except _Retry:
            return False
        except Exception:  # a bug or an unforeseen failure: never lose the event over it
            _log.exception("event %s: handling failed; it will be delivered again", event.id,
                           extra={"event_id": event.id})
            return False
        return True

    async def _reject(self, event: Event, exc: EventRejected) -> bool:
        self.stats.rejected += 1
        reason = str(exc)
        self.stats.last_rejections = [*self.stats.last_rejections[-99:], reason]
        _log.warning("rejected: %s", reason, extra={"event_id": event.id})
        letter = Event(id=f"dead:{self.group}:{event.id}"[:256], type=DEAD_LETTER_TYPE,
                       data={"group": self.group, "reason": reason[:2000],
                             "event": event.to_dict()},
                       time=event.time, tenant=event.tenant)
        try:
            await self.bus.publish([letter])
        except EventBusUnavailable as bus_down:  # not acknowledged: it comes again
            self.stats.bus_errors += 1
            _log.warning("event %s: the dead letter could not be published (%s)", event.id,
                         bus_down)
            return False
        return True

    async def _record(self, run_id: str) -> RunRecord | None:
        try:
            return await self.store.get_run(run_id)
        except RunNotFound:
            return None
        except KeelError as exc:  # the store is down: look again later
            raise _Retry from exc

    async def _run_once(self, start: Planned) -> None:
        """Bring the run of ``start`` to rest: create it, or resume it, or see it is done."""
        agent = start.trigger.agent
        record = await self._record(start.run_id)
        if record is None:
            error = await self._attempt(agent.run(
                start.input, store=self.store, run_id=start.run_id, tenant=start.tenant,
                user=start.user, metadata=start.metadata, deps=self.deps))
            if error is None:  # completed: at rest, no need to look again
                self.stats.started += 1
                return
            record = await self._record(start.run_id)
            if record is None:  # refused before anything was written (an input guard...)
                if not getattr(error, "retryable", False):
                    raise EventRejected(f"event {start.metadata['event_id']}: trigger "
                                        f"{start.trigger.name} could not start its run "
                                        f"({type_name(error)}: {str(error)[:300]})",
                                        event_id=start.metadata["event_id"]) from None
                raise _Retry
            if isinstance(error, StoreError) and not isinstance(error, RunLeased | LeaseLost):
                self.stats.duplicates += 1  # created by another consumer a moment before
            else:
                self.stats.started += 1
        elif _at_rest(record):
            self.stats.duplicates += 1
            return
        if _at_rest(record):
            return
        error = await self._attempt(agent.resume(start.run_id, store=self.store,
                                                 deps=self.deps))
        if isinstance(error, RunLeased):  # a live worker holds it: look again later
            raise _Retry
        self.stats.resumed += 1
        record = await self._record(start.run_id)
        if record is None or not _at_rest(record):
            raise _Retry  # live elsewhere, or the store went away: look again later

    async def _attempt(self, run: Any) -> BaseException | None:
        """Await a run or a resume; its failure is the store's business (recorded there),
        so it is returned, not raised."""
        try:
            await run
        except Exception as exc:
            return exc
        return None


def _at_rest(record: RunRecord) -> bool:
    if record.status in ("completed", "failed", "suspended"):
        return True
    error = record.error or {}
    return record.status == "cancelled" and error.get("type") == "RunCancelled"

