"""The journal: every side effect of a run is a step, recorded before the run moves on.

``Journal.step`` is the one door. For a key already recorded it returns the recorded result
(after checking that kind, name and input hash still match, else :class:`Divergence`); for a
new key it runs the function and appends a ``result`` entry. Steps that must not run twice
(non-idempotent tools) append an ``intent`` entry first; finding an intent without a result on
resume means the outcome is unknown: the step's reconcile hook decides, or the run stops with
:class:`UnknownOutcome`. It never silently runs such a step again.

A model response has no effect outside the run, so its record may be *deferred*: it is
committed together with the next record (a tool's intent or result), and always before a tool
with an effect runs. A crash in that window loses only the response; the resumed run asks the
model again (meanwhile at most read-only tools ran). This halves the commits of a typical step.

Secrets (API keys, bearer tokens, values under secret-named keys) are masked in everything
written to the store. Input hashes are computed over the masked form, so a resumed run still
matches its journal; the price is that a secret which flowed through the conversation is seen
masked by the model after a resume.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from keel.core import (
    STEP_LOGGER,
    ConfigError,
    Divergence,
    RunError,
    Signal,
    UnknownOutcome,
    Usage,
    UserError,
    redact,
)
from keel.runtime._budget import BudgetTracker
from keel.store import JournalEntry, RunStore

T = TypeVar("T")
_log = logging.getLogger(STEP_LOGGER)
_INFO = logging.INFO

#: Called after each completed step: (entry, value, replayed).
StepObserver = Callable[[JournalEntry, Any, bool], None]


def _identity(value: Any) -> Any:
    return value


DurabilityMode: TypeAlias = Literal["always", "balanced", "batched"]


@dataclass(frozen=True, slots=True)
class Durability:
    """When journal records reach the store. In every mode, intents of non-idempotent tools,
    approval requests and decisions, and the run's status are committed before the run moves
    on, and anything pending is committed before a tool with an effect runs.

    * ``always``: every step is committed before the run moves on. A crash loses nothing
      that finished.
    * ``balanced`` (default): a model response is committed together with the next record
      (half the commits). A crash can lose the last model response; the resumed run asks the
      model again (meanwhile at most read-only tools ran).
    * ``batched``: results of idempotent steps (model responses, read-only tools,
      ``ctx.step``) are committed in batches of up to ``batch_size``. A crash can lose up to
      that many such steps, which the resumed run executes again.
    """

    mode: DurabilityMode = "balanced"
    batch_size: int = 20

    def __post_init__(self) -> None:
        if self.mode not in ("always", "balanced", "batched"):
            raise ConfigError("durability", f"mode must be 'always', 'balanced' or 'batched', "
                              f"not {self.mode!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("durability.batch_size", f"must be a whole number >= 1, not "
                              f"{self.batch_size!r}")

    @classmethod
    def of(cls, value: Durability | str | None) -> Durability:
        if value is None:
            return _BALANCED
        if isinstance(value, Durability):
            return value
        if isinstance(value, str):
            return cls(value)  # type: ignore[arg-type]
        raise ConfigError("durability", f"expected 'always', 'balanced', 'batched' or a "
                          f"Durability, got {type(value).__name__}")


_BALANCED = Durability()

#: The step kinds a step allowance counts: the steps that do work outside the run.
ALLOWANCE_KINDS = frozenset({"model", "tool"})
#: Inside a counted step: [the allowance it was counted against, whether its unit is still
#: free for the first new step nested in it]. Tasks a step starts share the same list.
_UNIT: ContextVar[list[Any] | None] = ContextVar("keel_allowance_unit", default=None)


class Paused(Signal):
    """The run used up its step allowance (``Launch.step_allowance``, for an engine that
    drives a run a step at a time, such as keel.temporal): it stopped before its next new
    model request or tool call, with everything before it committed; the run stays
    ``running`` and goes on from its journal when it is resumed. Not a failure."""


class Journal:
    """One run's journal, backed by a :class:`RunStore`."""

    __slots__ = ("_batch", "_cursor", "_intents", "_mode", "_pending", "_results", "_seen",
                 "agent", "allowance", "budget", "failed", "lease", "observer", "replay_only",
                 "run_id", "store", "trusted_seq")

    def __init__(self, store: RunStore, run_id: str, agent: str, entries: list[JournalEntry],
                 budget: BudgetTracker, *, replay_only: bool = False,
                 trusted_seq: int = -1, lease: str | None = None,
                 durability: Durability = _BALANCED,
                 allowance: list[int] | None = None) -> None:
        """``replay_only``: every step must come from the journal (a determinism check: a
        step that is not recorded raises :class:`Divergence` instead of running).
        ``trusted_seq``: entries up to this seq were copied from another run by a fork and
        are replayed without the name and input-hash checks (the fork changed the model or
        the instructions on purpose). ``lease``: the worker id whose lease fences every
        write (see :meth:`RunStore.append`). ``allowance``: a one-item list (shared with
        every view, and with the caller) of how many new model/tool steps may still start;
        the next one past it raises :class:`Paused` (None, the default: no limit; replayed
        steps never count)."""
        self.store = store
        self.allowance = allowance
        self.lease = lease
        self._mode = durability.mode
        self._batch = durability.batch_size
        self.replay_only = replay_only
        self.trusted_seq = trusted_seq
        self.run_id = run_id
        self.agent = agent
        self.budget = budget
        self.observer: StepObserver | None = None
        #: Set on the view of a sub-run whose failure is recorded: its recorded steps replay,
        #: and the first step not recorded raises this error instead of running.
        self.failed: RunError | None = None
        self._results: dict[str, JournalEntry] = {}
        self._intents: dict[str, JournalEntry] = {}
        for e in entries:
            (self._results if e.phase == "result" else self._intents)[e.key] = e
        # One cell shared with every view (see :meth:`view`): the next seq to write.
        self._cursor = [max((e.seq for e in entries), default=-1) + 1]
        self._seen: set[str] = set()
        self._pending: list[JournalEntry] = []

    @property
    def seq(self) -> int:
        """The seq the next record gets."""
        return self._cursor[0]

    @seq.setter
    def seq(self, value: int) -> None:
        self._cursor[0] = value

    def view(self, *, budget: BudgetTracker, agent: str | None = None) -> Journal:
        """The same journal (records, seqs, deferred writes, used keys) seen through another
        budget and with its own step observer: what a nested agent or pattern step writes
        through, so its steps count against its own share and against the run's."""
        other = copy.copy(self)
        other.budget = budget
        other.observer = None
        if agent is not None:
            other.agent = agent
        return other

    def is_recorded(self, key: str) -> bool:
        return key in self._results

    def recorded(self, key: str, phase: str = "result") -> JournalEntry | None:
        """The entry recorded for ``key`` in ``phase``, if any (read when the run started, or
        written since by this journal)."""
        return (self._results if phase == "result" else self._intents).get(key)

    async def write(self, key: str, phase: str, kind: str, name: str, input_hash: str,
                    data: Any, *, reserve_next: bool = False) -> JournalEntry:
        """Commit one record now, with anything deferred (for approval requests, escalation
        packets and other records the run must not move past unrecorded). ``reserve_next``
        keeps the following seq free for a record another process writes (a person's
        decision on this request), so seqs stay unique while the run goes on."""
        entry = await self._record(key, phase, kind, name, input_hash, redact(data), 0.0)
        if reserve_next:
            self.seq += 1
        return entry

    def recorded_results(self, kind: str) -> Iterator[tuple[str, Any]]:
        """``(key, data)`` of each recorded result of ``kind``, in seq order (what a tool
        reads of its run through ``ToolContext.steps``)."""
        found = [e for e in self._results.values() if e.kind == kind]
        found.sort(key=lambda e: e.seq)
        return ((e.key, e.data) for e in found)

    def entries(self) -> list[JournalEntry]:
        """Every record this journal knows (read at start or written since), in seq order."""
        return sorted([*self._intents.values(), *self._results.values()], key=lambda e: e.seq)

    def count(self, kind: str, phase: str = "intent") -> int:
        """How many records of ``kind`` this run has in ``phase``."""
        pool = self._results if phase == "result" else self._intents
        return sum(1 for e in pool.values() if e.kind == kind)

    async def step(
        self,
        key: str,
        kind: str,
        name: str,
        fn: Callable[[], Awaitable[T]],
        *,
        input_hash: str,
        intent: Any = None,
        idempotent: bool = True,
        reconcile: Callable[[], Awaitable[Any | None]] | None = None,
        encode: Callable[[T], Any] = _identity,
        decode: Callable[[Any], T] = _identity,
        usage_of: Callable[[T], Usage | None] | None = None,
        budgeted: bool = True,
        scrubbed: bool = False,
        defer: bool = False,
        flush_first: bool = False,
    ) -> tuple[T, bool]:
        """Run or replay one step. Returns ``(value, replayed)``.

        ``encode`` turns the value into JSON-able data for the store; unless ``scrubbed``
        says the encoder already masked secrets, the data is walked and masked here.
        ``defer`` lets the result ride along with the next record written (one commit instead
        of two; only for steps without outside effects, such as a model request), and
        ``flush_first`` commits anything deferred before ``fn`` runs (for steps with effects).
        """
        self._claim(key)
        mode = self._mode
        if mode != "balanced":
            defer = mode == "batched" and idempotent
        recorded = self._results.get(key)
        if recorded is not None:
            self._check(recorded, kind, name, input_hash)
            value = decode(recorded.data)
            self._replayed(recorded, value, usage_of, budgeted)
            return value, True
        self._may_run(key, kind, name, input_hash, budgeted)
        if self.allowance is not None and kind in ALLOWANCE_KINDS:
            fn = self._spend(key, fn)
        started_intent = self._intents.get(key)
        if started_intent is not None:
            self._check(started_intent, kind, name, input_hash)
            if not idempotent:
                decided = await self._reconcile(key, name, reconcile)
                if decided is not None:
                    value = decode(decided)
                    await self._record(key, "result", kind, name, input_hash, redact(decided),
                                       0.0)
                    return value, False
        else:
            if flush_first and self._pending:
                await self.flush()
            if not idempotent:
                await self._record(key, "intent", kind, name, input_hash, redact(intent), 0.0)
        t0 = time.perf_counter()
        value = await fn()
        latency_ms = (time.perf_counter() - t0) * 1000.0
        data = encode(value)
        entry = await self._record(key, "result", kind, name, input_hash,
                                   data if scrubbed else redact(data), latency_ms, defer=defer)
        if budgeted:
            self.budget.record(usage_of(value) if usage_of else None)
        if self.observer is not None:
            self.observer(entry, value, False)
        return value, False

    def _claim(self, key: str) -> None:
        """Each step key once per execution: a repeat is a programming error."""
        if key in self._seen:
            raise UserError(
                f"step key {key!r} was used twice in run {self.run_id}; every step of a run "
                "needs its own deterministic key (add a counter or an index to the path).")
        self._seen.add(key)

    def _replayed(self, recorded: JournalEntry, value: Any,
                  usage_of: Callable[[Any], Usage | None] | None, budgeted: bool) -> None:
        """A step read back from the journal: charged to the budget, shown to the observer."""
        if budgeted:
            self.budget.record(usage_of(value) if usage_of else None,
                               replayed_latency_ms=recorded.latency_ms)
        if self.observer is not None:
            self.observer(recorded, value, True)

    def _may_run(self, key: str, kind: str, name: str, input_hash: str,
                 budgeted: bool) -> None:
        """Before a step not in the journal runs: raise if it must not (a sub-run whose
        failure is recorded, a replay, an exhausted budget)."""
        if self.failed is not None:
            raise self.failed
        if self.replay_only:
            raise Divergence(
                f"replay: step {key!r} is not in the journal; the code asked for a step the "
                "recorded run never took", recorded={"kind": None, "name": None},
                requested={"kind": kind, "name": name, "input_hash": input_hash},
                run_id=self.run_id, step_key=key)
        if budgeted:
            self.budget.check(kind, run_id=self.run_id, step_key=key)

    def _spend(self, key: str, fn: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """Count one new model/tool step against the allowance, or pause before it. A step
        inside another counted step (a sub-agent's request inside the tool call that
        delegates to it) uses its parent's unit if no other nested step used it yet: the
        parent only contains work, and counting both would pause before the nested step on
        every execution (the parent never finishing, the run never moving)."""
        left = self.allowance
        assert left is not None
        unit = _UNIT.get()
        if unit is not None and unit[0] is left and unit[1]:
            unit[1] = False
        elif left[0] <= 0:
            paused = Paused(f"run {self.run_id} paused before step {key!r}: its step "
                            "allowance is used up")
            paused.run_id = self.run_id
            raise paused
        else:
            left[0] -= 1

        async def counted() -> T:
            token = _UNIT.set([left, True])
            try:
                return await fn()
            finally:
                _UNIT.reset(token)

        return counted

    async def _reconcile(self, key: str, name: str,
                         reconcile: Callable[[], Awaitable[Any | None]] | None) -> Any | None:
        if reconcile is None:
            raise UnknownOutcome(
                f"{name} started but its result was never recorded (the process stopped in "
                "between), and it is not idempotent, so keel will not run it again. Check the "
                "outside system, record what you found with `keel runs resolve "
                f"{self.run_id} --outcome succeeded|failed` (or keel.runtime."
                "resolve_unknown_outcome) and resume the run; a reconcile= hook on the tool "
                "decides this by itself next time",
                run_id=self.run_id, step_key=key)
        try:
            return await reconcile()
        except Exception as exc:
            raise UnknownOutcome(
                f"{name} started but its result was never recorded, and its reconcile hook "
                f"failed: {type(exc).__name__}: {exc}", run_id=self.run_id, step_key=key) from exc

    def _check(self, entry: JournalEntry, kind: str, name: str, input_hash: str) -> None:
        if entry.seq <= self.trusted_seq and entry.kind == kind:
            return
        if entry.kind != kind or entry.name != name or entry.input_hash != input_hash:
            raise Divergence(
                f"journal divergence at step {entry.key!r}",
                recorded={"kind": entry.kind, "name": entry.name, "input_hash": entry.input_hash},
                requested={"kind": kind, "name": name, "input_hash": input_hash},
                run_id=self.run_id, step_key=entry.key)

    async def _record(self, key: str, phase: str, kind: str, name: str, input_hash: str,
                      data: Any, latency_ms: float, *, defer: bool = False) -> JournalEntry:
        entry = JournalEntry(seq=self.seq, key=key, phase=phase,  # type: ignore[arg-type]
                             kind=kind, name=name, input_hash=input_hash, data=data,
                             created_at=time.time(), latency_ms=latency_ms)
        self.seq += 1
        if defer:
            self._pending.append(entry)
            if self._mode == "batched" and len(self._pending) >= self._batch:
                await self.flush()
        elif self._pending:
            batch = [*self._pending, entry]
            self._pending.clear()
            await self.store.append(self.run_id, batch, lease=self.lease)
        else:
            await self.store.append(self.run_id, (entry,), lease=self.lease)
        (self._results if phase == "result" else self._intents)[key] = entry
        return entry

    def hold(self, key: str, kind: str, name: str, data: Any) -> JournalEntry:
        """Defer a record whatever the durability mode: it is committed with the next record
        the run commits, or with the run's final status (for a sub-run's failure that the
        flow may handle, which must not reach the store before the flow goes on)."""
        entry = JournalEntry(seq=self.seq, key=key, phase="result", kind=kind, name=name,
                             input_hash="", data=redact(data), created_at=time.time())
        self.seq += 1
        self._pending.append(entry)
        self._results[key] = entry
        return entry

    def take_pending(self) -> list[JournalEntry]:
        """Hand over the deferred records (for a caller that commits them itself, together
        with the run's final status)."""
        batch = self._pending[:]
        self._pending.clear()  # in place: views share this list
        return batch

    async def flush(self) -> None:
        """Commit deferred records. Called before effects, and when the run ends or stops."""
        if self._pending:
            await self.store.append(self.run_id, self.take_pending(), lease=self.lease)

    def log_step(self, entry: JournalEntry, *, tool_name: str | None, success: bool,
                 usage: Usage | None, error_type: str | None = None) -> None:
        """One structured log line for a completed step (INFO on ``keel.step``)."""
        if not _log.isEnabledFor(_INFO):
            return
        _log.info(
            "%s %s", entry.kind, entry.key,
            extra={
                "run_id": self.run_id, "step_key": entry.key, "agent": self.agent,
                "action": entry.kind, "tool_name": tool_name,
                "latency_ms": round(entry.latency_ms, 3), "success": success,
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "cost_usd": usage.cost_usd if usage else 0.0, "error_type": error_type,
            })
