"""A run's events as the HTTP API streams them (Server-Sent Events), read from the journal.

The journal is the source of truth, so a stream is the same whichever process runs the run
(this server or a ``keel worker`` sharing the store) and survives a reconnect:

* every journal entry becomes one event whose SSE ``id`` is its sequence number. A client
  that reconnects with ``Last-Event-ID: N`` gets the entries after ``N``, each exactly once
  and in order;
* ``status`` events (no ``id``: they are snapshots, not history) say where the run stands;
  one is sent first on every (re)connection and whenever it changes;
* ``delta`` events carry a streamed model turn's text as it is generated, for runs this
  process executes. They have no ``id`` either: after a reconnect the turn's whole text
  arrives in its ``thought`` event;
* one ``result`` event when the run is finished (completed, failed or cancelled); then the
  stream ends. A suspended run's stream stays open: a decision resumes the run and the
  stream goes on.

One :class:`RunTail` per followed run reads the journal once for all its followers, when
the run's executor in this process reports a step, and otherwise every ``poll_s``.

Entries can reach the store out of order: parallel tool calls append their results at the
same time, each numbered before its append, and on Postgres a later one may commit first (a
journal then also reads back in commit order). So a tail sends entries in sequence order and,
while the run is running, only up to the first missing number: the entries after it wait
for the late one. A number still missing after ``gap_s`` is taken as lost (a process that
stopped between two appends) and passed over; once the run is no longer running, its journal
is complete and everything is sent. The number after an approval request or an escalation
is kept for a person's decision and may stay empty while the run goes on: it holds nothing
back (and a decision written there after later entries were sent is not sent live; it is
in the timeline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from keel.core import to_jsonable
from keel.store import TERMINAL_STATUSES, JournalEntry, RunRecord, RunStore

_log = logging.getLogger("keel.server")

#: how long a tail with no followers stays (a reconnecting client finds it warm)
_IDLE_S = 30.0
#: the most events one run's tail keeps in memory; a longer journal is read from the store
_KEEP = 10_000
#: how long a running run's missing sequence number holds back the entries after it
_GAP_S = 5.0
#: the kinds of journal intent that keep the next sequence number for a decision made
#: elsewhere (``Journal.write(reserve_next=True)``)
_RESERVING = frozenset({"approval", "escalation"})


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE message: ``name`` (the ``event:`` field), JSON ``data``, and an ``id`` for
    journal entries."""

    name: str
    data: dict[str, Any]
    id: str | None = None

    def encode(self) -> bytes:
        lines = [f"event: {self.name}"]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        lines.append("data: " + json.dumps(self.data, separators=(",", ":"),
                                           ensure_ascii=False, default=str))
        return ("\n".join(lines) + "\n\n").encode()


def _parts(data: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text, calls = [], []
    for part in data.get("parts") or ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            text.append(str(part.get("text", "")))
        elif part.get("type") == "tool_call":
            calls.append({"tool": part.get("tool_name"), "arguments": part.get("arguments"),
                          "call_id": part.get("call_id")})
    return "".join(text), calls


def entry_event(entry: JournalEntry, scrub: Callable[[Any], Any]) -> Event:
    """The event for one journal entry (its data scrubbed as for an export)."""
    data = scrub(to_jsonable(entry.data))
    base: dict[str, Any] = {"seq": entry.seq, "key": entry.key, "phase": entry.phase,
                            "kind": entry.kind, "name": entry.name,
                            "latency_ms": round(entry.latency_ms, 3),
                            "at": entry.created_at}
    name = "step"
    if entry.kind == "model" and entry.phase == "result" and isinstance(data, dict):
        name = "thought"
        base["text"], base["tool_calls"] = _parts(data)
        base["usage"] = data.get("usage")
    elif entry.kind == "tool" and isinstance(data, dict):
        name = "tool_call" if entry.phase == "intent" else "observation"
        if entry.phase == "intent":
            base["arguments"] = data.get("arguments")
        else:
            base["content"] = data.get("content")
            base["failure"] = data.get("failure")
    elif entry.kind in ("approval", "escalation", "guard"):
        name = entry.kind
    base["data"] = data
    return Event(name, base, id=str(entry.seq))


def status_event(record: RunRecord) -> Event:
    return Event("status", {"run_id": record.run_id, "status": record.status,
                            "agent": record.agent, "updated_at": record.updated_at,
                            "error": record.error, "usage": record.usage})


def result_event(record: RunRecord, scrub: Callable[[Any], Any]) -> Event:
    return Event("result", {"run_id": record.run_id, "status": record.status,
                            "output": scrub(to_jsonable(record.output)),
                            "error": record.error, "usage": record.usage})


def parse_last_id(value: str | None) -> int:
    """The sequence number a reconnecting client saw last (``-1``: none)."""
    if value is None or not value.strip():
        return -1
    text = value.strip()
    if not text.isdigit() or len(text) > 12:
        from keel.server._errors import ApiError

        raise ApiError(400, "invalid", "Last-Event-ID must be a journal sequence number "
                       "sent by this stream")
    return int(text)


@dataclass(slots=True)
class RunTail:
    """What this process knows of one run: its last record and journal events, refreshed
    for all followers at once."""

    run_id: str
    tenant: str | None
    events: list[Event] = field(default_factory=list)
    record: RunRecord | None = None
    #: set (and replaced) whenever the tail changes: what idle followers wait on
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    followers: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    deltas: list[Event] = field(default_factory=list)
    generation: int = 0
    pending: bool = False
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)
    gap_since: float | None = None  #: since when a missing entry holds the others back

    @property
    def last_seq(self) -> int:
        return int(self.events[-1].id or -1) if self.events else -1


class Tails:
    """The tails of the runs being followed, and the wake-ups that refresh them."""

    def __init__(self, store: RunStore, scrub: Callable[[Any, RunRecord], Any], *,
                 poll_s: float = 0.5, gap_s: float = _GAP_S) -> None:
        self.store = store
        self.scrub = scrub
        self.poll_s = poll_s
        self.gap_s = gap_s
        self._tails: dict[tuple[str | None, str], RunTail] = {}
        self._live: dict[str, RunTail] = {}  # run id -> the tail whose tenant owns it
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self, run_id: str) -> None:
        """A step of ``run_id`` was written by this process: refresh its followers now
        (one read for every wake-up that arrives while a read is under way)."""
        tail = self._live.get(run_id)
        if tail is None or not tail.followers or tail.pending:
            return
        tail.pending = True
        self._spawn(self._refresh_quietly(tail))

    def delta(self, run_id: str, text: str) -> None:
        """Streamed text of ``run_id``'s current model turn (live only)."""
        tail = self._live.get(run_id)
        if tail is None or not tail.followers:
            return
        tail.deltas.append(Event("delta", {"run_id": run_id, "text": text}))
        self._notify(tail)

    def _scrub_for(self, record: RunRecord) -> Callable[[Any], Any]:
        return lambda value: self.scrub(value, record)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_quietly(self, tail: RunTail) -> None:
        try:
            await self.refresh(tail)
        except Exception as exc:  # the followers' own poll reads it again and reports
            _log.warning("run %s: reading its journal for a stream failed (%s)",
                         tail.run_id, type(exc).__name__)

    @staticmethod
    def _notify(tail: RunTail) -> None:
        tail.generation += 1
        woken, tail.changed = tail.changed, asyncio.Event()
        woken.set()

    async def refresh(self, tail: RunTail) -> None:
        async with tail.reading:
            tail.pending = False  # a wake-up from now on needs another read
            record = await self.store.get_run(tail.run_id, tenant=tail.tenant)
            journal = await self.store.read_journal(tail.run_id, tenant=tail.tenant)
            self._live[tail.run_id] = tail
            known = tail.last_seq
            scrub = self._scrub_for(record)
            fresh = [entry_event(e, scrub) for e in self._ready(tail, record, journal, known)]
            changed = bool(fresh) or tail.record is None \
                or (record.status, record.updated_at) != (tail.record.status,
                                                          tail.record.updated_at)
            if fresh:
                tail.events.extend(fresh)
                tail.deltas.clear()  # the turn they belonged to is in the journal now
                if len(tail.events) > _KEEP:
                    del tail.events[: len(tail.events) - _KEEP]
            tail.record = record
        if changed:
            self._notify(tail)

    def _ready(self, tail: RunTail, record: RunRecord, journal: list[JournalEntry],
               known: int) -> list[JournalEntry]:
        """The entries after ``known`` that may be sent now, in sequence order: while the
        run is running, up to the first missing number (for at most ``gap_s``). The number
        after an approval request or an escalation is kept free for a person's decision and
        may stay empty while the run goes on: it holds nothing back."""
        fresh = sorted((e for e in journal if e.seq > known), key=lambda e: e.seq)
        if record.status != "running":
            tail.gap_since = None
            return fresh
        reserved = {e.seq + 1 for e in journal
                    if e.phase == "intent" and e.kind in _RESERVING}
        ready = []
        for entry in fresh:
            if entry.seq == known + 2 and known + 1 in reserved:
                known += 1
            if entry.seq != known + 1:
                break
            ready.append(entry)
            known = entry.seq
        if len(ready) == len(fresh):
            tail.gap_since = None
            return ready
        now = time.monotonic()
        if tail.gap_since is None or ready:  # (a new gap, further on, if some were ready)
            tail.gap_since = now
        if now - tail.gap_since < self.gap_s:
            return ready
        _log.warning("run %s: journal entry %d is missing after %.0f s; its stream goes on "
                     "without it", tail.run_id, known + 1, self.gap_s)
        tail.gap_since = None
        return fresh

    async def follow(self, run_id: str, tenant: str | None,
                     after: int) -> AsyncIterator[Event]:
        """The events of ``run_id`` after sequence number ``after``, live, until the run
        finishes or the caller stops iterating. Raises RunNotFound before the first event
        for an unknown run or another tenant's."""
        tail = self._tails.get((tenant, run_id))
        if tail is None:
            tail = self._tails[(tenant, run_id)] = RunTail(run_id, tenant)
        tail.followers += 1
        try:
            await self.refresh(tail)
            async for event in self._follow(tail, after):
                yield event
        finally:
            tail.followers -= 1
            tail.idle_since = time.monotonic()
            self._forget_idle()

    async def _follow(self, tail: RunTail, after: int) -> AsyncIterator[Event]:
        first = tail.record
        assert first is not None
        yield status_event(first)  # where the run stands, before its history
        sent_status: tuple[str, float] | None = (first.status, first.updated_at)
        sent_deltas = 0
        seen_seq = after
        if tail.events and int(tail.events[0].id or 0) > after + 1:
            # older than what the tail keeps: read them from the store once
            journal = await self.store.read_journal(tail.run_id, tenant=tail.tenant)
            for entry in sorted(journal, key=lambda e: e.seq):
                if seen_seq < entry.seq < int(tail.events[0].id or 0):
                    seen_seq = entry.seq
                    yield entry_event(entry, self._scrub_for(first))
        while True:
            generation = tail.generation
            for event in [e for e in tail.events if int(e.id or -1) > seen_seq]:
                seen_seq = int(event.id or seen_seq)
                yield event
            record = tail.record
            assert record is not None  # refreshed before the first event
            if sent_status != (record.status, record.updated_at):
                sent_status = (record.status, record.updated_at)
                yield status_event(record)
            if record.status in TERMINAL_STATUSES:
                yield result_event(record, self._scrub_for(record))
                return
            if len(tail.deltas) < sent_deltas:
                sent_deltas = 0
            for event in tail.deltas[sent_deltas:]:
                yield event
            sent_deltas = len(tail.deltas)
            await self._wait(tail, generation)

    async def _wait(self, tail: RunTail, generation: int) -> None:
        """Until the tail changes after ``generation``; after ``poll_s`` without a change,
        read the store (another process may be running the run)."""
        if tail.generation != generation:
            return
        changed = tail.changed  # no await since the check: this is the next change's event
        try:
            await asyncio.wait_for(changed.wait(), self.poll_s)
        except TimeoutError:
            await self.refresh(tail)

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key, tail in list(self._tails.items()):
            if not tail.followers and (tail.record is None or now - tail.idle_since > _IDLE_S):
                del self._tails[key]
                if self._live.get(tail.run_id) is tail:
                    del self._live[tail.run_id]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["Event", "Tails", "entry_event", "parse_last_id"]
