"""The event bus on Redis Streams (redis-py's asyncio client, the ``events`` extra).

One stream (``keel:events`` unless named) holds every event: an entry per event, with the
event's JSON in field ``e`` and its type in field ``t``. A batch is published in one
``MULTI``/``EXEC`` pipeline of ``XADD`` s, so it is stored whole or not at all, in order;
``maxlen`` trims the stream approximately (``MAXLEN ~``) as it grows.

A consumer group is a Redis consumer group on that stream (``XGROUP CREATE … MKSTREAM``,
at ``$`` for ``start="new"``, ``0`` for ``"all"``); each :class:`Subscription` is a consumer
with a name of its own. ``fetch`` first takes over entries of the group that were delivered
and left unacknowledged longer than ``ack_wait`` (``XAUTOCLAIM``; the attempt is Redis's
delivery counter), then reads new ones (``XREADGROUP … BLOCK``). ``nak`` makes an entry
claimable again after ``delay`` by setting its idle time (``XCLAIM … IDLE``).

Types are filtered on the client: a group reads the one stream and acknowledges the entries
of other types at once. One stream keeps every event of a publish in its order, lets a group
of every type see types that did not exist when it was created, and keeps one retention
setting; the price is that each group reads (and skips) the other types' entries. The types
of a group are recorded in a hash beside the stream (``<stream>:groups``) so that every
consumer of the group filters alike.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

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
    from redis.asyncio import Redis

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_STREAM = re.compile(r"^[A-Za-z0-9_:.{}-]{1,200}$")
EXTRA_HINT = "pip install 'keel-agents[events]'"


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.retry
        import redis.backoff
    except ImportError:
        raise UserError(f"the Redis event bus needs redis-py: {EXTRA_HINT}") from None
    return redis


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisBus(EventBus):
    """An event bus on a Redis stream. See the module docstring for the design.

    ``maxlen`` caps the stream at about that many entries (None: never trimmed); an entry
    trimmed before a group read it is lost to that group, so size it above the backlog a
    consumer may fall behind by. ``poll_interval`` bounds how long an idle ``fetch`` goes
    without looking for entries whose ``ack_wait`` ran out (new entries wake it at once).
    Connections open on first use (or ``async with``); a call that loses its connection
    raises :class:`EventBusUnavailable`, and the next call connects again.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, stream: str = "keel:events",
                 maxlen: int | None = 1_000_000,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 connect_timeout: float = 5.0, timeout: float = 10.0,
                 poll_interval: float = 0.25) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("url", f"a Redis URL starts redis://, rediss:// or unix://, not "
                              f"{str(url)[:80]!r}")
        if not isinstance(stream, str) or not _STREAM.match(stream):
            raise ConfigError("stream", "a stream name is 1-200 letters, digits or _ : . { } -, "
                              f"not {str(stream)[:80]!r}")
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)
                                   or maxlen < 1):
            raise ConfigError("maxlen", f"must be a positive whole number or None, not "
                              f"{maxlen!r}")
        for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout),
                            ("poll_interval", poll_interval)):
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not 0.01 <= value <= 600:
                raise ConfigError(name, f"must be a number of seconds from 0.01 to 600, not "
                                  f"{value!r}")
        self._redis_module = _import_redis()
        self.url = url
        self.stream = stream
        self.groups_key = f"{stream}:groups"
        self.maxlen = maxlen
        self.poll_interval = float(poll_interval)
        self.client_name = f"keel-bus-{uuid.uuid4().hex[:12]}"
        #: Entries on the stream that were not keel events (dropped, acknowledged, logged).
        self.malformed = 0
        self._max_bytes = check_max_event_bytes(max_event_bytes)
        self._connect_timeout = float(connect_timeout)
        self._timeout = max(float(timeout), self.poll_interval + 1.0)
        self._client: Redis | None = None
        self._closed = False

    # ------------------------------------------------------------------ connection

    def client(self) -> Redis:
        if self._closed:
            raise EventBusUnavailable("this Redis event bus was closed; open a new one")
        if self._client is None:
            r = self._redis_module
            retry = r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0)
            self._client = r.asyncio.Redis.from_url(
                self.url, socket_connect_timeout=self._connect_timeout,
                socket_timeout=self._timeout, retry=retry, client_name=self.client_name)
        return self._client

    @contextlib.asynccontextmanager
    async def errors(self, what: str) -> AsyncIterator[None]:
        """Redis's failures as keel errors: the server is away or refused the command."""
        exc_mod = self._redis_module.exceptions
        try:
            yield
        except (TimeoutError, exc_mod.ConnectionError, exc_mod.TimeoutError, OSError) as exc:
            raise EventBusUnavailable(
                f"the Redis event bus at {safe_url(self.url)} could not {what}: "
                f"{type(exc).__name__}: {str(exc)[:300]} (is the server running? try again "
                "later)") from exc
        except exc_mod.RedisError as exc:
            raise EventBusUnavailable(
                f"the Redis event bus at {safe_url(self.url)} refused to {what}: "
                f"{str(exc)[:300]}") from exc

    async def connect(self) -> None:
        """Open a connection now (a ping), so an unreachable server shows at once."""
        async with self.errors("connect"):
            await self.client().ping()

    async def __aenter__(self) -> RedisBus:
        await self.connect()
        return self

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # ------------------------------------------------------------------ the seam

    async def publish(self, events: Sequence[Event]) -> None:
        payloads = encode_events(events, self._max_bytes)
        if not payloads:
            return
        client = self.client()
        async with self.errors(f"publish {len(payloads)} event(s)"):
            pipe = client.pipeline(transaction=True)
            for event, payload in zip(events, payloads, strict=True):
                pipe.xadd(self.stream, {"e": payload, "t": event.type}, maxlen=self.maxlen,
                          approximate=True)
            await pipe.execute()

    async def subscribe(self, group: str, *, types: Collection[str] | None = None,
                        ack_wait: float = 30.0, start: Start = "new") -> Subscription:
        check_group(group)
        wanted = check_types(types)
        wait = check_ack_wait(ack_wait)
        check_start(start)
        client = self.client()
        recorded = json.dumps(None if wanted is None else sorted(wanted))
        async with self.errors(f"create consumer group {group!r}"):
            await client.hsetnx(self.groups_key, group, recorded)
            had = await client.hget(self.groups_key, group)
            try:
                await client.xgroup_create(self.stream, group, id="$" if start == "new"
                                           else "0", mkstream=True)
            except self._redis_module.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if isinstance(had, bytes) and had.decode() != recorded:
            loaded = json.loads(had)
            raise types_mismatch(group, None if loaded is None else frozenset(loaded), wanted)
        return _RedisSubscription(self, group, wanted, wait)

    def drop(self, entry_id: str, fields: Any) -> None:
        self.malformed += 1
        logger.warning("event bus %s: dropped stream entry %s, which is not a keel event "
                       "(fields %s); %d dropped so far", self.stream, entry_id,
                       str(list(fields or {}))[:200], self.malformed)


class _RedisSubscription(Subscription):
    def __init__(self, bus: RedisBus, group: str, types: frozenset[str] | None,
                 ack_wait: float) -> None:
        self._bus = bus
        self._group = group
        self._types = types
        self._ack_wait_ms = max(1, int(ack_wait * 1000))
        self._consumer = f"{group}:{uuid.uuid4().hex[:16]}"
        self._cursor = "0-0"
        self._closed = False

    def _sort(self, entries: list[Any], attempts: dict[str, int],
              drop: list[str]) -> list[Delivery]:
        """Deliveries from raw entries; entries to acknowledge unread go to ``drop``."""
        out: list[Delivery] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            event = decode_event(fields.get(b"e")) if fields else None
            if event is None:
                self._bus.drop(entry_id, fields)
                drop.append(entry_id)
            elif self._types is not None and event.type not in self._types:
                drop.append(entry_id)
            else:
                out.append(Delivery(event, attempts.get(entry_id, 1), entry_id))
        return out

    async def _claim(self, client: Redis, count: int, drop: list[str]) -> list[Delivery]:
        """Entries of the group left unacknowledged past ack_wait, taken over."""
        reply = await client.xautoclaim(self._bus.stream, self._group, self._consumer,
                                        min_idle_time=self._ack_wait_ms,
                                        start_id=self._cursor, count=count)
        cursor, entries = reply[0], reply[1]
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if not entries:
            return []
        ids = [e[0].decode() if isinstance(e[0], bytes) else str(e[0]) for e in entries]
        pending = await client.xpending_range(self._bus.stream, self._group, min=ids[0],
                                              max=ids[-1], count=len(ids) + 16,
                                              consumername=self._consumer)
        attempts = {(p["message_id"].decode() if isinstance(p["message_id"], bytes)
                     else str(p["message_id"])): int(p["times_delivered"]) for p in pending}
        return self._sort(entries, attempts, drop)

    async def _read(self, client: Redis, count: int, block_ms: int | None,
                    drop: list[str]) -> list[Delivery]:
        reply = await client.xreadgroup(self._group, self._consumer, {self._bus.stream: ">"},
                                        count=count, block=block_ms)
        entries = [entry for _, batch in (reply or []) for entry in batch]  # type: ignore[union-attr, str-unpack]
        return self._sort(entries, {}, drop)

    async def fetch(self, max_events: int = 100, *, wait: float = 1.0) -> list[Delivery]:
        count, wait = check_fetch(max_events, wait)
        if self._closed:
            raise EventBusUnavailable("this subscription was closed; subscribe again")
        client = self._bus.client()
        deadline = time.monotonic() + wait
        while True:
            drop: list[str] = []
            async with self._bus.errors(f"read consumer group {self._group!r}"):
                out = await self._claim(client, count, drop)
                left = deadline - time.monotonic()
                if len(out) < count:
                    block = None if out or left <= 0 else \
                        max(1, int(min(left, self._bus.poll_interval) * 1000))
                    out += await self._read(client, count - len(out), block, drop)
                if drop:
                    await client.xack(self._bus.stream, self._group, *drop)
            if out or time.monotonic() >= deadline:
                return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        ids = _entry_ids(deliveries)
        if ids:
            async with self._bus.errors("acknowledge events"):
                await self._bus.client().xack(self._bus.stream, self._group, *ids)

    async def nak(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        ids = _entry_ids(deliveries)
        delay_ms = int(check_delay(delay) * 1000)
        if not ids:
            return
        # Claimable once idle for ack_wait: make it idle for ack_wait - delay already (a
        # delay longer than ack_wait is cut to ack_wait: Redis keeps no future time).
        idle = max(0, self._ack_wait_ms - delay_ms)
        async with self._bus.errors("return events to the group"):
            await self._bus.client().xclaim(self._bus.stream, self._group, self._consumer,
                                            min_idle_time=0, message_ids=list[Any](ids), idle=idle,
                                            justid=True)

    async def close(self) -> None:
        """Stop consuming; the consumer's name is removed once it holds no entries."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(EventBusUnavailable):
            client = self._bus.client()
            async with self._bus.errors("remove a consumer"):
                held = await client.xpending_range(self._bus.stream, self._group, min="-",
                                                   max="+", count=1,
                                                   consumername=self._consumer)
                if not held:
                    await client.xgroup_delconsumer(self._bus.stream, self._group,
                                                    self._consumer)


def _entry_ids(deliveries: Sequence[Delivery]) -> list[str]:
    ids = [d.token for d in check_deliveries(deliveries, str)]
    for entry_id in ids:
        if not _ENTRY_ID.match(entry_id):
            raise ConfigError("deliveries", "pass the Delivery values this subscription's "
                              f"fetch returned (not a Redis entry id: {entry_id[:40]!r})")
    return ids
