"""The event bus on NATS JetStream (nats-py, the ``events`` extra).

One stream (``KEEL_EVENTS`` unless named) captures the subjects ``<prefix>.>`` (prefix
``keel.events``); it is created, or its limits updated, when the bus connects. An event of
type ``order.paid`` is published to ``keel.events.order.paid`` with the header
``Nats-Msg-Id`` set from the event id, so JetStream drops a re-publish of the same id within
its de-duplication window (``duplicate_window``, two minutes by default). A batch is
published concurrently and every acknowledgement awaited: when the call fails, a prefix of
the batch may be stored, and publishing it again stores each id once (within the window).

A consumer group is a durable pull consumer named after the group (explicit acks,
``ack_wait``, unlimited redeliveries, deliver policy ``new`` or ``all``), filtered to the
subjects of its types: one type by the server; several types by the server from NATS 2.10
(``filter_subjects``), and on the client before it (the other types are acknowledged at
once). The attempt is JetStream's delivery count; ``nak`` takes a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.core import ConfigError, UserError
from keel.events._bus import (
    DEFAULT_MAX_EVENT_BYTES,
    Delivery,
    EventBus,
    Start,
    Subscription,
    check_ack_wait,
    check_delay,
    check_deliveries,
    check_fetch,
    check_group,
    check_max_event_bytes,
    check_start,
    check_types,
    decode_event,
    encode_events,
    logger,
    types_mismatch,
)
from keel.events._errors import EventBusUnavailable
from keel.store import Event

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

_STREAM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,7}$")
_SAFE_ID = re.compile(r"^[!-~]([ -~]*[!-~])?$")  # printable ASCII, no edge spaces
_DESCRIPTION = "keel consumer group; types: "
EXTRA_HINT = "pip install 'keel-agents[events]'"


def _import_nats() -> Any:
    try:
        import nats
        import nats.aio.client
        import nats.aio.msg
        import nats.errors
        import nats.js.api
        import nats.js.errors
    except ImportError:
        raise UserError(f"the NATS event bus needs nats-py: {EXTRA_HINT}") from None
    return nats


def msg_id(event_id: str) -> str:
    """The ``Nats-Msg-Id`` for an event id: the id itself when it is plain printable ASCII,
    else a digest of it (a header cannot carry line breaks or other bytes)."""
    if _SAFE_ID.match(event_id):
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def _show_types(types: frozenset[str] | None) -> str:
    return "*" if types is None else ",".join(sorted(types))


class NatsBus(EventBus):
    """An event bus on a JetStream stream. See the module docstring for the design.

    ``max_age`` (seconds) and ``max_msgs`` bound the stream's retention (None: unbounded);
    an event removed before a group read it is lost to that group. The connection opens on
    first use (or ``async with``) and never reconnects by itself: a call that loses it
    raises :class:`EventBusUnavailable`, and the next call connects again.
    """

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, stream: str = "KEEL_EVENTS",
                 prefix: str = "keel.events", max_age: float | None = 7 * 86_400,
                 max_msgs: int | None = None, duplicate_window: float = 120.0,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 connect_timeout: float = 5.0, timeout: float = 10.0) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("nats", "tls"):
            raise ConfigError("url", f"a NATS URL starts nats:// or tls://, not "
                              f"{str(url)[:80]!r}")
        if not isinstance(stream, str) or not _STREAM.match(stream):
            raise ConfigError("stream", "a stream name is 1-64 letters, digits, '_' or '-', "
                              f"not {str(stream)[:80]!r}")
        if not isinstance(prefix, str) or len(prefix) > 100 or not _PREFIX.match(prefix):
            raise ConfigError("prefix", "a subject prefix is 1-8 dot-separated tokens of "
                              f"letters, digits, '_' or '-', not {str(prefix)[:80]!r}")
        _check_limits(max_age, max_msgs, duplicate_window, connect_timeout, timeout)
        self._nats = _import_nats()
        #: What nats-py raises when the server is away or says no.
        self.failures: tuple[type[BaseException], ...] = (
            self._nats.errors.Error, OSError, TimeoutError)
        self.url = url
        self.stream = stream
        self.prefix = prefix
        #: Messages on the stream that were not keel events (terminated, logged).
        self.malformed = 0
        self._max_age = max_age
        self._max_msgs = max_msgs
        self._dup_window = float(duplicate_window)
        self._max_bytes = check_max_event_bytes(max_event_bytes)
        self._connect_timeout = float(connect_timeout)
        self._timeout = float(timeout)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.generation = 0  # counts connections; subscriptions bind again when it moves
        self.server_version = (0, 0)
        self._server_max = self._max_bytes

    @property
    def max_event_bytes(self) -> int:
        """The largest event accepted: ``max_event_bytes``, or less when the server's
        ``max_payload`` is smaller (known once connected)."""
        return min(self._max_bytes, self._server_max)

    # ------------------------------------------------------------------ connection

    def _unavailable(self, what: str, exc: BaseException) -> EventBusUnavailable:
        detail = str(exc)[:300] or "no answer in time"
        return EventBusUnavailable(
            f"the NATS event bus at {_safe(self.url)} could not {what}: {type(exc).__name__}: "
            f"{detail} (is the server running with JetStream? try again later)")


    async def jetstream(self) -> JetStreamContext:
        """The JetStream context of a live connection (connecting, or again, if needed)."""
        if self._closed:
            raise EventBusUnavailable("this NATS event bus was closed; open a new one")
        nc, js = self._nc, self._js
        if nc is not None and js is not None and nc.is_connected:
            return js
        async with self._lock:
            if self._nc is None or not self._nc.is_connected:
                await self._connect()
            assert self._js is not None
            return self._js

    async def _connect(self) -> None:
        old, self._nc, self._js = self._nc, None, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        nc = self._nats.aio.client.Client()
        try:
            await asyncio.wait_for(nc.connect(
                servers=[self.url], connect_timeout=self._connect_timeout,
                allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
                error_cb=_log_error, name="keel-events"), self._connect_timeout + 1)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # nats-py leaves the socket of a failed try
                await asyncio.wait_for(nc.close(), 2)
            if isinstance(exc, self.failures):
                raise self._unavailable("connect", exc) from exc
            raise
        try:
            js = nc.jetstream(timeout=self._timeout)
            await self._ensure_stream(js)
        except BaseException:
            await nc.close()
            raise
        # the server closes a connection that sends more than its max_payload (1 MB unless
        # configured): keep each message, headers and all, well below it
        self._server_max = max(1024, nc.max_payload - 4096)
        version = nc.connected_server_version
        self.server_version = (version.major, version.minor)
        self._nc, self._js = nc, js
        self.generation += 1

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        api = self._nats.js.api
        config = api.StreamConfig(
            name=self.stream, subjects=[f"{self.prefix}.>"], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS, max_age=self._max_age,
            max_msgs=self._max_msgs if self._max_msgs is not None else -1,
            max_msg_size=self._max_bytes + 4096, duplicate_window=self._dup_window)
        try:
            try:
                await js.stream_info(self.stream)
            except self._nats.js.errors.NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)
        except self._nats.js.errors.BadRequestError as exc:
            raise ConfigError("stream", f"JetStream refused stream {self.stream!r} on subjects "
                              f"{self.prefix}.>: {exc.description} (another stream may hold "
                              "those subjects: choose another prefix or stream)") from None
        except self.failures as exc:
            raise self._unavailable(f"set up stream {self.stream!r}", exc) from exc

    async def connect(self) -> None:
        """Connect now (and create or update the stream), so problems show at once."""
        await self.jetstream()

    async def __aenter__(self) -> NatsBus:
        await self.connect()
        return self

    async def close(self) -> None:
        self._closed = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def connection(self) -> Client:
        if self._nc is None:
            raise EventBusUnavailable(f"not connected to NATS at {_safe(self.url)}")
        return self._nc

    def is_live(self, generation: int) -> bool:
        return self._nc is not None and self._nc.is_connected and generation == self.generation

    async def flush(self) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise EventBusUnavailable(f"lost the connection to NATS at {_safe(self.url)}; "
                                      "the events not acknowledged come back after ack_wait")
        try:
            await nc.flush(timeout=max(1, int(self._timeout)))
        except self.failures as exc:
            raise self._unavailable("send acknowledgements", exc) from exc

    # ------------------------------------------------------------------ the seam

    async def publish(self, events: Sequence[Event]) -> None:
        encode_events(events, self._max_bytes)  # refuse bad input before connecting
        js = await self.jetstream()
        payloads = encode_events(events, self.max_event_bytes)
        if not payloads:
            return
        sent = await asyncio.gather(*(
            js.publish(f"{self.prefix}.{event.type}", payload, timeout=self._timeout,
                       headers={"Nats-Msg-Id": msg_id(event.id)})
            for event, payload in zip(events, payloads, strict=True)), return_exceptions=True)
        for result in sent:
            if isinstance(result, BaseException):
                if isinstance(result, self.failures):
                    raise self._unavailable(f"publish {len(payloads)} event(s)", result) \
                        from result
                raise result

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        check_group(group)
        wanted = check_types(types)
        wait = check_ack_wait(ack_wait)
        check_start(start)
        js = await self.jetstream()
        api = self._nats.js.api
        subjects = None if wanted is None else [f"{self.prefix}.{t}" for t in sorted(wanted)]
        by_server = subjects is None or len(subjects) == 1 or self.server_version >= (2, 10)
        config = api.ConsumerConfig(
            durable_name=group, description=_DESCRIPTION + _show_types(wanted),
            deliver_policy=api.DeliverPolicy.NEW if start == "new" else api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=wait, max_deliver=-1,
            filter_subject=subjects[0] if subjects and len(subjects) == 1 else None,
            filter_subjects=subjects if subjects and len(subjects) > 1 and by_server else None)
        try:
            try:
                info = await js.consumer_info(self.stream, group)
            except self._nats.js.errors.NotFoundError:
                info = await js.add_consumer(self.stream, config)
        except self.failures as exc:
            raise self._unavailable(f"create consumer group {group!r}", exc) from exc
        had = (info.config.description or "").removeprefix(_DESCRIPTION)
        if had != _show_types(wanted):
            loaded = None if had == "*" else frozenset(had.split(","))
            raise types_mismatch(group, loaded, wanted)
        return _NatsSubscription(self, group, None if by_server else wanted)

    async def check_group(self, group: str) -> None:
        """Raise :class:`EventBusUnavailable` when the group's consumer is gone (deleted on
        the server: JetStream then leaves pull requests unanswered)."""
        js = await self.jetstream()
        try:
            await js.consumer_info(self.stream, group)
        except self._nats.js.errors.NotFoundError:
            raise EventBusUnavailable(
                f"consumer group {group!r} no longer exists on stream {self.stream!r} (it was "
                "deleted on the server); subscribe again to create it") from None
        except self.failures as exc:
            raise self._unavailable(f"look up consumer group {group!r}", exc) from exc

    def drop(self, msg: Msg, why: str) -> None:
        self.malformed += 1
        logger.warning("event bus %s: dropped message on %s, %s; %d dropped so far",
                       self.stream, msg.subject[:200], why, self.malformed)


class _NatsSubscription(Subscription):
    def __init__(self, bus: NatsBus, group: str, types: frozenset[str] | None) -> None:
        self._bus = bus
        self._group = group
        self._types = types  # filtered here (None: the server filters, or every type)
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{bus.stream}.{group}"
        self._sub: Any = None
        self._open_left = 0  # deliveries the open pull request may still bring
        self._open_until = 0.0  # when it expires (monotonic)
        self._expired = False  # the server said the open request ended
        self._generation = -1
        self._closed = False

    async def _bound(self) -> Any:
        """This consumer's inbox on the live connection (subscribed again after a new one)."""
        if self._closed:
            raise EventBusUnavailable("this subscription was closed; subscribe again")
        bus = self._bus
        await bus.jetstream()
        if self._sub is None or not bus.is_live(self._generation):
            nc = bus.connection()
            try:
                self._sub = await nc.subscribe(nc.new_inbox())
                self._open_left = 0
            except bus.failures as exc:
                raise bus._unavailable(f"read consumer group {self._group!r}", exc) from exc
            self._generation = bus.generation
        return self._sub

    async def _pull(self, sub: Any, count: int, wait: float) -> list[Msg]:
        """Up to ``count`` messages, as soon as one is there (waiting up to ``wait``).

        One pull request is open at a time, for ``count`` messages until it expires; what
        it delivers after this call returned waits in the inbox for the next call. (nats-py's
        own ``fetch`` waits for all ``count`` once it had to wait for the first.)"""
        out = await self._drain(sub, count)
        deadline = time.monotonic() + wait
        asked = False
        while not out and (left := deadline - time.monotonic()) > 0:
            if self._open_left <= 0 or self._open_until <= time.monotonic() + 0.001:
                if asked and left < 0.1:
                    break  # not worth another request
                # expire a little early, so that the server's note that it expired (a 408)
                # comes within this call: none at all means the group is gone
                expires = max(0.001, left - 0.05) if left > 0.1 else left
                request = {"batch": count, "expires": int(expires * 1e9)}
                await self._bus.connection().publish(
                    self._next, json.dumps(request).encode(), reply=sub.subject)
                self._open_left, self._open_until = count, time.monotonic() + expires
                asked, self._expired = True, False
            try:
                msg = await sub.next_msg(timeout=max(0.001, min(
                    left, self._open_until - time.monotonic() + 0.04)))
            except self._bus._nats.errors.TimeoutError:
                if asked and not self._expired and \
                        time.monotonic() >= self._open_until + 0.03:
                    await self._bus.check_group(self._group)
                    asked = False
                continue
            if self._note(msg):
                out = [msg, *await self._drain(sub, count - 1)]
        return out

    def _note(self, msg: Msg) -> bool:
        """Count a delivery against the open request; False for a status note (the request
        expired, or the server ended it), which closes it."""
        status = msg.headers.get("Status") if msg.headers and not msg.reply else None
        if status:
            self._open_left = 0
            self._expired = True
            if status == "409":  # the group was deleted, or the server refuses more pulls
                raise EventBusUnavailable(
                    f"NATS refused to deliver to consumer group {self._group!r}: "
                    f"{msg.headers.get('Description', '409')[:200]}")  # type: ignore[union-attr]
            return False
        self._open_left -= 1
        return True

    async def _drain(self, sub: Any, count: int) -> list[Msg]:
        """The messages already in the inbox, at most ``count``."""
        out: list[Msg] = []
        while len(out) < count and sub.pending_msgs > 0:
            msg = await sub.next_msg(timeout=1)
            if self._note(msg):
                out.append(msg)
        return out

    async def _sort(self, msgs: list[Msg]) -> list[Delivery]:
        out: list[Delivery] = []
        prefix = self._bus.prefix + "."
        for msg in msgs:
            event = decode_event(msg.data)
            if event is None or msg.subject != prefix + event.type:
                why = "not a keel event" if event is None else \
                    f"an event of type {event.type!r} on another type's subject"
                self._bus.drop(msg, why)
                await msg.term()
            elif self._types is not None and event.type not in self._types:
                await msg.ack()
            else:
                out.append(Delivery(event, msg.metadata.num_delivered or 1, msg))
        return out

    async def fetch(self, max_events: int = 100, *, wait: float = 1.0) -> list[Delivery]:
        count, wait = check_fetch(max_events, wait)
        bus = self._bus
        deadline = time.monotonic() + wait
        while True:
            sub = await self._bound()
            try:
                msgs = await self._pull(sub, count, max(deadline - time.monotonic(), 0.05))
            except bus.failures as exc:
                raise bus._unavailable(f"read consumer group {self._group!r}", exc) from exc
            if not msgs and not bus.is_live(self._generation):
                raise EventBusUnavailable(f"lost the connection to NATS at {_safe(bus.url)} "
                                          f"while reading consumer group {self._group!r}")
            try:
                out = await self._sort(msgs)
            except bus.failures as exc:
                raise bus._unavailable("acknowledge skipped messages", exc) from exc
            if out or time.monotonic() >= deadline:
                return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle(deliveries, "ack", 0.0)

    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        await self._settle(deliveries, "nak", check_delay(delay))

    async def _settle(self, deliveries: Sequence[Delivery], how: str, delay: float) -> None:
        msg_type = self._bus._nats.aio.msg.Msg
        checked = check_deliveries(deliveries, msg_type)
        if not checked:
            return
        errors = self._bus._nats.errors
        try:
            for d in checked:
                with contextlib.suppress(errors.MsgAlreadyAckdError):
                    if how == "ack":
                        await d.token.ack()
                    else:
                        await d.token.nak(delay=delay or None)
        except self._bus.failures as exc:
            raise self._bus._unavailable(f"{how} events", exc) from exc
        await self._bus.flush()

    async def close(self) -> None:
        """Stop consuming; the group (the durable consumer) stays on the server."""
        if self._closed:
            return
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None and self._bus.is_live(self._generation):
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _check_limits(max_age: object, max_msgs: object, duplicate_window: object,
                  connect_timeout: object, timeout: object) -> None:
    def number(value: object) -> bool:
        return not isinstance(value, bool) and isinstance(value, int | float)
    if max_age is not None and (not number(max_age) or not 1 <= max_age <= 10 * 365 * 86_400):  # type: ignore[operator]
        raise ConfigError("max_age", f"must be seconds (at least 1) or None, not {max_age!r}")
    if max_msgs is not None and (isinstance(max_msgs, bool) or not isinstance(max_msgs, int)
                                 or max_msgs < 1):
        raise ConfigError("max_msgs", f"must be a positive whole number or None, not "
                          f"{max_msgs!r}")
    if not number(duplicate_window) or not 0.1 <= duplicate_window <= 86_400:  # type: ignore[operator]
        raise ConfigError("duplicate_window", f"must be seconds from 0.1 to 86400, not "
                          f"{duplicate_window!r}")
    for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
        if not number(value) or not 0.1 <= value <= 600:  # type: ignore[operator]
            raise ConfigError(name, f"must be seconds from 0.1 to 600, not {value!r}")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return f"{parts.scheme}://***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")


async def _log_error(exc: Exception) -> None:
    logger.debug("nats: %s: %s", type(exc).__name__, exc)
