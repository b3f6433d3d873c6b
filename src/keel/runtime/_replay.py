"""Replay and fork: the two things a finished journal is good for besides resuming.

**Replay** (:func:`replay_run`) re-executes a finished run's agent code against its journal
with no model or tool calls: every step must come from the journal (a step the recorded run
never took is a :class:`Divergence`), nothing is written to the store, and the outcome must be
the recorded one: the same output (compared as canonical JSON) or, for a failed run, the same
error type at the same step. It answers "does this code still do what it did?", so it runs in
CI on recorded runs (``keel replay --file``).

A run that failed because of something outside the journal (a model endpoint that was down, a
budget, a tool that raised) never recorded its failing step; its replay stops when the code
asks for that step. Reaching exactly that step with every recorded step matched counts as
identical: the journal cannot say more.

**Fork** (:func:`fork_run`) copies the journal entries before step *k* into a new run and
continues it live, for example with another model or other instructions: a counterfactual
re-run. The copied steps are replayed without the name and input-hash checks (the fork changed
the model or the prompt on purpose); from step *k* on the fork calls the model and its tools
for real, through the normal resume path (budgets, middleware, leases). Any run can be forked,
finished or not: the entries before *k* are committed and never change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.core import (
    Divergence,
    Handoff,
    KeelError,
    Message,
    ModelResponse,
    ModelSettings,
    RunEvent,
    ToolSpec,
    UserError,
    new_run_id,
    redact_text,
    to_jsonable,
)
from keel.models import Model
from keel.runtime._budget import BudgetTracker
from keel.runtime._conversation import conversation_history
from keel.runtime._diff import same_json, summarize
from keel.runtime._forks import fork_overrides, fork_trusted_seq
from keel.runtime._journal import Journal
from keel.runtime._loop import model_name
from keel.runtime._result import RunResult
from keel.runtime._runner import (
    Runnable,
    unreceived,
    using_store,
)
from keel.runtime._saga import applies as compensation_applies
from keel.runtime._saga import compensate, compensation_key, saga_key
from keel.store import JournalEntry, MemoryStore, RunRecord, RunStore

if TYPE_CHECKING:
    from keel.runtime._agent import Agent

REPLAYABLE = ("completed", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayDivergence:
    """Where a replay left the journal: the step, the error's message, and both sides
    (``recorded``: what the journal holds at that key, ``kind`` ``None`` if nothing;
    ``requested``: what the code asked for)."""

    step: str
    message: str
    recorded: dict[str, Any]
    requested: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "message": self.message, "recorded": self.recorded,
                "requested": self.requested}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    """The outcome of :func:`replay_run`. ``identical`` is the verdict and ``reason`` says
    why in one line; ``steps_replayed`` of ``steps_recorded`` result steps were read back."""

    run_id: str
    agent: str
    status: str
    identical: bool
    reason: str
    recorded_output: Any = None
    replayed_output: Any = None
    recorded_error: dict[str, Any] | None = None
    replayed_error: dict[str, Any] | None = None
    steps_recorded: int = 0
    steps_replayed: int = 0
    unused_steps: tuple[str, ...] = ()
    divergence: ReplayDivergence | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent, "status": self.status,
                "identical": self.identical, "reason": self.reason,
                "recorded_output": self.recorded_output,
                "replayed_output": self.replayed_output,
                "recorded_error": self.recorded_error, "replayed_error": self.replayed_error,
                "steps_recorded": self.steps_recorded, "steps_replayed": self.steps_replayed,
                "unused_steps": list(self.unused_steps),
                "divergence": None if self.divergence is None else self.divergence.to_dict()}


# --------------------------------------------------------------------------------- replay


async def replay_run(agent: Runnable, run_id: str, *,
                     store: RunStore | str | None = None) -> ReplayReport:
    """Re-execute the finished run ``run_id`` against its journal, calling no model and no
    tool and writing nothing, and report whether it reproduces the recorded outcome.

    Raises :class:`~keel.RunNotFound` for an unknown id, and :class:`~keel.UserError` for a
    run that is not finished (completed or failed) or was made by another agent. A run that
    does not reproduce is reported (``identical=False``), not raised."""
    async with using_store(store) as opened:
        record = await opened.get_run(run_id)
        entries = await opened.read_journal(run_id)
        return await replay_journal(agent, record, entries, source=opened)


async def replay_journal(agent: Runnable, record: RunRecord,
                         entries: Sequence[JournalEntry], *,
                         source: RunStore | None = None) -> ReplayReport:
    """:func:`replay_run` on a record and journal already read (from a store or an export).
    ``source``: the store holding the run's earlier conversation turns, which a turn of a
    conversation needs to rebuild its history (it is only read)."""
    _check_replayable(agent, record)
    from keel.runtime._agent import Agent

    if isinstance(agent, Agent):
        agent = as_recorded(agent, record)
    # The journal gets a scratch store of its own: whatever the code does, a replay cannot
    # write to the run's store.
    scratch = MemoryStore()
    await scratch.create_run(record)
    journal = _ReplayJournal(scratch, record.run_id, agent.name, list(entries),
                             BudgetTracker(agent.budget), replay_only=True,
                             trusted_seq=fork_trusted_seq(record))
    loop = agent.driver(journal, deps=None, emit=None, streaming=False, record=record)
    outcome = _Outcome()
    try:
        history = (await conversation_history(journal, source or scratch, record)
                   if getattr(agent, "takes_history", False) else None)
        result = await loop.run(str(record.input), history=history)
        outcome.output = to_jsonable(result.output)
        outcome.completed = True
    except Handoff as exc:  # as the runner records it
        outcome.error = unreceived(exc, record.run_id)
    except Exception as exc:  # the replay's failure is the finding, reported not raised
        outcome.error = await _replay_compensation(agent, journal, record, exc)
    return _judge(record, entries, outcome, journal.used)


async def _replay_compensation(agent: Runnable, journal: Journal, record: RunRecord,
                               exc: Exception) -> Exception:
    """A failed agent run that compensated (a saga) is replayed as the runner ran it: the
    recorded compensations are read back, none runs. Returns the failure to judge: the run's
    own, or where the compensation no longer matches the journal."""
    from keel.runtime._agent import Agent

    if not isinstance(agent, Agent) or not compensation_applies(agent, journal, exc):
        return exc
    try:
        await compensate(agent, journal, record, exc)
    except Exception as broke:
        return broke
    if isinstance(journal, _ReplayJournal) and journal.recorded(saga_key(agent.name),
                                                                "result") is not None:
        # A finished saga's result covers the compensations it ran (as a step's result
        # covers the work inside it): they were read back, not run again.
        prefix = compensation_key(agent.name, "")
        journal.used.update(e.key for e in journal.entries() if e.key.startswith(prefix))
    return exc


class _ReplayJournal(Journal):
    """A journal that only reads: it notes which recorded results the code used (steps, and
    the decisions that gates read directly), and a record the code tries to write (a new
    approval request or escalation) is a divergence."""

    __slots__ = ("used",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.used: set[str] = set()

    async def step(self, key: str, *args: Any, **kwargs: Any) -> Any:
        out = await super().step(key, *args, **kwargs)
        self.used.add(key)
        return out

    def recorded(self, key: str, phase: str = "result") -> JournalEntry | None:
        entry = super().recorded(key, phase)
        if entry is not None and phase == "result":
            self.used.add(key)
        return entry

    async def write(self, key: str, phase: str, kind: str, name: str, input_hash: str,
                    data: Any, *, reserve_next: bool = False) -> JournalEntry:
        raise Divergence(
            f"replay: the code wrote a new {kind} {phase} at step {key!r}, which the recorded "
            "run never wrote", recorded={"kind": None, "name": None},
            requested={"kind": kind, "name": name, "input_hash": input_hash},
            run_id=self.run_id, step_key=key)


@dataclass(slots=True)
class _Outcome:
    completed: bool = False
    output: Any = None
    error: Exception | None = None


def _check_replayable(agent: Runnable, record: RunRecord) -> None:
    if record.agent != agent.name:
        raise UserError(
            f"run {record.run_id} was made by agent {record.agent!r}, not {agent.name!r}; "
            "replay it with the agent that made it (its step keys start with that name).")
    if record.status not in REPLAYABLE:
        raise UserError(
            f"run {record.run_id} is {record.status}: only a finished run (completed or "
            "failed) can be replayed. Resume it to finish it, or fork it from a recorded "
            "step.")


def as_recorded(agent: Agent[Any], record: RunRecord) -> Agent[Any]:
    """For a fork: ``agent`` with the model and instructions the fork ran with (from its
    metadata), so that it replays with the agent that made it. The model is a stand-in that
    carries only the name: a replay never calls it."""
    model, instructions = fork_overrides(agent, record)
    changes: dict[str, Any] = {}
    if model is not None:
        changes["model"] = _RecordedModel(model)
    if instructions is not None:
        changes["instructions"] = instructions
    return agent.clone(**changes) if changes else agent


class _RecordedModel(Model):
    def __init__(self, name: str) -> None:
        self.name = name

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        raise UserError(f"{self.name} stands in for a recorded model; a replay calls no model.")


def _judge(record: RunRecord, entries: Sequence[JournalEntry], outcome: _Outcome,
           seen: set[str]) -> ReplayReport:
    results = [e.key for e in entries if e.phase == "result"]
    unused = tuple(e.key for e in entries if e.phase == "result" and not _used(e, seen))
    err = record.error if isinstance(record.error, dict) else None
    base: dict[str, Any] = {
        "run_id": record.run_id, "agent": record.agent, "status": record.status,
        "recorded_output": record.output, "replayed_output": outcome.output,
        "recorded_error": err,
        "replayed_error": None if outcome.error is None else _error_dict(outcome.error),
        "steps_recorded": len(results), "steps_replayed": len(results) - len(unused),
        "unused_steps": unused}
    exc = outcome.error
    if isinstance(exc, Divergence):
        div = _divergence(exc, entries)
        base["divergence"] = div
        missing = div.step not in set(results)
        if (record.status == "failed" and err is not None and missing
                and err.get("step_key") == div.step and not unused):
            return ReplayReport(**base, identical=True, reason=(
                f"the replay reached step {div.step}, where the recorded run failed with "
                f"{err.get('type')} (a failure from outside the journal: that step never "
                "recorded a result); every recorded step matched"))
        why = ("asked for a step the recorded run never took" if missing
               else "asked for something else than the journal holds")
        return ReplayReport(**base, identical=False,
                            reason=f"diverged at step {div.step}: the code {why}")
    if unused:
        return ReplayReport(**base, identical=False, reason=(
            f"the replay ended without using {len(unused)} recorded step(s), first "
            f"{unused[0]}: the code now stops earlier than the recorded run"))
    if record.status == "completed":
        if exc is not None:
            return ReplayReport(**base, identical=False, reason=(
                f"the recorded run completed, the replay failed with {type(exc).__name__}"))
        if not same_json(record.output, outcome.output):
            return ReplayReport(**base, identical=False,
                                reason="the replay produced a different output")
        return ReplayReport(**base, identical=True,
                            reason="the replay produced the recorded output")
    return _judge_failure(base, err, exc)


def _used(entry: JournalEntry, seen: set[str]) -> bool:
    """Whether a replay used a recorded result: its own key, or a step it lies under. Work
    done inside a step (a nested agent run by a tool, a retry attempt, the approval decision
    ``STEP/approval`` read before the call) is covered by that step's recorded result, which
    the replay read instead of running the step again."""
    key = entry.key
    while True:
        if key in seen:
            return True
        key, sep, _ = key.rpartition("/")
        if not sep:
            return False


def _judge_failure(base: dict[str, Any], err: dict[str, Any] | None,
                   exc: Exception | None) -> ReplayReport:
    recorded_type = err.get("type") if err else None
    if exc is None:
        return ReplayReport(**base, identical=False, reason=(
            f"the recorded run failed with {recorded_type}, the replay completed"))
    replayed = _error_dict(exc)
    if replayed["type"] != recorded_type:
        return ReplayReport(**base, identical=False, reason=(
            f"the recorded run failed with {recorded_type}, the replay with "
            f"{replayed['type']}"))
    recorded_step = err.get("step_key") if err else None
    if recorded_step and replayed["step_key"] and recorded_step != replayed["step_key"]:
        return ReplayReport(**base, identical=False, reason=(
            f"both failed with {recorded_type}, but at step {recorded_step} and at step "
            f"{replayed['step_key']}"))
    return ReplayReport(**base, identical=True,
                        reason=f"the replay failed with the recorded error, {recorded_type}")


def _error_dict(exc: Exception) -> dict[str, Any]:
    message = exc.message if isinstance(exc, KeelError) else str(exc)
    return {"type": type(exc).__name__, "message": message,
            "step_key": getattr(exc, "step_key", None)}


def _divergence(exc: Divergence, entries: Sequence[JournalEntry]) -> ReplayDivergence:
    step = exc.step_key or "?"
    recorded: dict[str, Any] = dict(exc.recorded)
    at_step = [e for e in entries if e.key == step]
    if at_step:
        entry = next((e for e in at_step if e.phase == "result"), at_step[0])
        recorded = {"kind": entry.kind, "name": entry.name, "input_hash": entry.input_hash,
                    "summary": summarize(entry)}
    return ReplayDivergence(step=step, message=exc.message, recorded=recorded,
                            requested=dict(exc.requested))


# ----------------------------------------------------------------------------------- fork


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkPlan:
    """What a fork of ``parent`` at ``at`` copies: the entries before the step's first
    record, ``trusted_seq`` the last of them (-1 when nothing is copied)."""

    parent: RunRecord
    at: str
    index: int | None
    copied: tuple[JournalEntry, ...] = field(default=())
    trusted_seq: int = -1

    @property
    def copied_steps(self) -> frozenset[str]:
        return frozenset(e.key for e in self.copied if e.phase == "result")


def step_keys(entries: Sequence[JournalEntry]) -> list[str]:
    """The run's steps as fork numbers them: result entries in journal order."""
    return [e.key for e in entries if e.phase == "result"]


def plan_fork(parent: RunRecord, entries: Sequence[JournalEntry], at: int | str) -> ForkPlan:
    """Check ``at`` against the parent's journal and say what a fork there copies. ``at`` may
    also be the step a failed run failed at (never recorded): the fork then copies the whole
    journal and takes that step again live. Raises :class:`~keel.UserError` for an unknown
    step, and for a cut inside an unresolved intent (a step started before ``at`` whose
    result is recorded only after it, or never)."""
    steps = step_keys(entries)
    index: int | None
    if isinstance(at, bool) or not isinstance(at, int | str):
        raise UserError(f"fork at= takes a step key or a 0-based step number, not {at!r}.")
    if isinstance(at, int):
        if not 0 <= at < len(steps):
            span = f"0 to {len(steps) - 1}" if steps else "none: its journal is empty"
            raise UserError(f"run {parent.run_id} has no step {at}: it has {len(steps)} "
                            f"step(s), numbered {span}.")
        key, index = steps[at], at
    else:
        key = at
        index = steps.index(key) if key in steps else None
    at_key = [e.seq for e in entries if e.key == key]
    if at_key:
        cut = min(at_key)
    elif _failed_at(parent) == key:  # the step the run failed at: copy all, retry it live
        cut = max((e.seq for e in entries), default=-1) + 1
    else:
        raise UserError(f"run {parent.run_id} has no step {key!r}; {_listing(steps)}")
    copied = tuple(e for e in entries if e.seq < cut)
    resolved = {e.key for e in copied if e.phase == "result"}
    unresolved = [e.key for e in copied if e.phase == "intent" and e.key not in resolved]
    if unresolved:
        raise UserError(
            f"cannot fork run {parent.run_id} at {key!r}: it falls inside the unresolved "
            f"intent of step {unresolved[0]!r} (that step started before {key!r} but its "
            "result is recorded after it, or never). Fork at that step, or at a step after "
            "its result.")
    trusted = max((e.seq for e in copied), default=-1)
    return ForkPlan(parent=parent, at=key, index=index, copied=copied, trusted_seq=trusted)


def _failed_at(record: RunRecord) -> str | None:
    err = record.error if record.status == "failed" and isinstance(record.error, dict) else None
    step = err.get("step_key") if err else None
    return step if isinstance(step, str) else None


def _listing(steps: list[str], limit: int = 12) -> str:
    if not steps:
        return "its journal has no steps."
    shown = ", ".join(f"{i} {k}" for i, k in enumerate(steps[:limit]))
    more = f", … ({len(steps) - limit} more)" if len(steps) > limit else ""
    return f"its steps are: {shown}{more}."


def forked_agent(agent: Agent[Any], *, model: str | Model | None = None,
                 instructions: str | None = None) -> Agent[Any]:
    """The agent a fork continues with (an unknown model id fails here)."""
    changes: dict[str, Any] = {}
    if model is not None:
        changes["model"] = model
    if instructions is not None:
        changes["instructions"] = instructions
    return agent.clone(**changes) if changes else agent


async def fork_run(agent: Agent[Any], run_id: str, *, at: int | str,
                   store: RunStore | str | None = None, model: str | Model | None = None,
                   instructions: str | None = None, deps: Any = None,
                   on_event: Callable[[RunEvent], None] | None = None) -> RunResult[Any]:
    """Copy run ``run_id``'s journal up to (not including) step ``at`` into a new run and
    continue it live with ``agent`` (or a clone of it with ``model`` / ``instructions``).
    ``at`` is a step key or a 0-based step number (an index among the run's result entries:
    its model turns, tool calls and other steps in journal order), or the step a failed run
    failed at. Returns the new run's result; its id is ``result.run_id`` and its metadata
    records the fork (``metadata["fork"]``).

    Raises :class:`~keel.RunNotFound`, :class:`~keel.UnknownModel` for a bad model id,
    :class:`~keel.UserError` for an unknown step, a step inside an unresolved intent, or a
    run made by another agent; nothing is written in those cases. The fork calls the model
    and tools for real from step ``at`` on: tools with effects act again, under the new
    run's idempotency keys."""
    forked = forked_agent(agent, model=model, instructions=instructions)
    resolved = forked.resolved_model()  # a bad id or a missing key fails before any write
    try:
        return await _fork(agent, forked, run_id, at, store=store, deps=deps,
                           on_event=on_event)
    finally:
        if forked is not agent and isinstance(forked.model, str):
            await resolved.aclose()  # the clone built this client from an id: ours to close


async def _fork(agent: Agent[Any], forked: Agent[Any], run_id: str, at: int | str, *,
                store: RunStore | str | None, deps: Any,
                on_event: Callable[[RunEvent], None] | None) -> RunResult[Any]:
    async with using_store(store) as opened:
        parent = await opened.get_run(run_id)
        if parent.agent != agent.name:
            raise UserError(f"run {run_id} was made by agent {parent.agent!r}, not "
                            f"{agent.name!r}; fork it with the agent that made it.")
        plan = plan_fork(parent, await opened.read_journal(run_id), at)
        changed = forked.instructions != agent.instructions
        new_id = await create_fork(opened, plan, model=model_name(forked),
                                   instructions=forked.instructions if changed else None)
        return await forked.resume(new_id, store=opened, deps=deps, on_event=on_event)


async def create_fork(store: RunStore, plan: ForkPlan, *, model: str,
                      instructions: str | None) -> str:
    """Write the fork's run (status ``suspended``, ready to resume) with the copied entries;
    returns its id. The run is first created marked failed ("fork incomplete") and then its
    entries and real record land in one transaction, so a failed copy never looks like a
    fork that can be continued."""
    parent = plan.parent
    now = time.time()
    fork = {"parent": parent.run_id, "at": plan.at, "trusted_seq": plan.trusted_seq,
            "model": model, "instructions_changed": instructions is not None,
            "instructions": None if instructions is None else redact_text(instructions)}
    record = RunRecord(run_id=new_run_id(), agent=parent.agent, status="suspended",
                       input=parent.input, created_at=now, updated_at=now,
                       target=parent.target, metadata={"model": model, "fork": fork},
                       tenant=parent.tenant, user=parent.user)
    await store.create_run(record.with_status("failed", error={
        "type": "ForkIncomplete", "message": f"copying the journal of run {parent.run_id} "
        "did not finish; fork it again.", "step_key": None, "retryable": False}))
    await store.finish_run(record, plan.copied)
    return record.run_id
