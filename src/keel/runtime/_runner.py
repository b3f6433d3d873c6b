"""Run lifecycle: create or load the run record, drive the loop, record the outcome."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from keel.core import (
    ApprovalRequired,
    ConfigError,
    DeadlineExceeded,
    Escalate,
    Handoff,
    KeelError,
    LeaseLost,
    RunCancelled,
    RunError,
    RunEvent,
    RunFinished,
    RunStarted,
    Signal,
    StoreError,
    StoreUnavailable,
    UserError,
    new_run_id,
    redact,
    to_jsonable,
)
from keel.runtime._budget import BudgetTracker
from keel.runtime._conversation import check_joinable, conversation_history
from keel.runtime._forks import fork_trusted_seq
from keel.runtime._journal import Journal, Paused
from keel.runtime._kept_stores import Kept, borrow, give_back
from keel.runtime._lease import Hold, LeaseKeeper, keeper_for, worker_id
from keel.runtime._middleware import RunEndInput, RunStartInput
from keel.runtime._result import RunResult
from keel.runtime._saga import applies as _compensates
from keel.runtime._saga import compensate, recorded_failure
from keel.runtime._screens import record_input, screen_input
from keel.store import JournalEntry, RunRecord, RunStore

_log = logging.getLogger("keel.runs")

if TYPE_CHECKING:
    from keel.core import Message
    from keel.runtime._budget import Budget
    from keel.runtime._journal import Durability
    from keel.runtime._middleware import MiddlewareStack


class Driver(Protocol):
    """One execution of a runnable's body on a journal."""

    async def run(self, user_input: str, *,
                  history: list[Message] | None = None) -> RunResult[Any]: ...


class Runnable(Protocol):
    """What the runner runs as a journaled run: an :class:`Agent` or a pattern
    (:class:`~keel.runtime.Flow`)."""

    name: str
    budget: Budget
    durability: Durability
    stack: MiddlewareStack
    compensate_on_failure: bool

    def prepare(self) -> None:
        """Fail on bad configuration (an unknown model id, a missing key) before anything
        is written."""

    def for_record(self, record: RunRecord) -> Runnable:
        """The runnable to continue ``record`` with (a fork's model and instructions)."""

    def run_metadata(self) -> dict[str, Any]:
        """Stored with a new run (the model, the pattern)."""

    def driver(self, journal: Journal, *, deps: Any, emit: Callable[[RunEvent], None] | None,
               streaming: bool, record: RunRecord) -> Driver:
        """What runs the body on ``journal``."""

DEFAULT_STORE_URL = "sqlite:///.keel/runs.db"
T = TypeVar("T")


def default_store_url() -> str:
    """``KEEL_STORE`` if set, else ``.keel/runs.db`` under the working directory."""
    return os.environ.get("KEEL_STORE") or DEFAULT_STORE_URL


class using_store:
    """The given store, or one for a URL / the default. An SQLite store opened from a URL
    stays open for the next run that names the same file (see ``_kept_stores``); a store
    of another kind is opened for this run and closed afterwards.

    A plain class rather than ``@asynccontextmanager``: this runs once per run, and an async
    generator costs a registration with the event loop each time."""

    __slots__ = ("_kept", "_opened", "_store")

    def __init__(self, store: RunStore | str | None) -> None:
        self._store = store
        self._opened: RunStore | None = None
        self._kept: Kept | None = None

    async def __aenter__(self) -> RunStore:
        if isinstance(self._store, RunStore):
            return self._store
        self._opened, self._kept = await borrow(self._store or default_store_url())
        return self._opened

    async def __aexit__(self, *exc: object) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            await give_back(opened, self._kept)


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """How to start one execution: a new run (``input``) or a resume (``resume_id``).
    ``claimed``: this process already holds the run's lease (a worker's ``claim_runs``).
    ``step_allowance``: start at most this many new model requests / tool calls, then stop
    with :class:`~keel.runtime.Paused` (the run stays ``running``; replayed steps never
    count; None, the default: no limit). For engines that drive a run a step at a time.
    ``metadata``: joins a new run's metadata (e.g. which engine runs it).
    ``retried_later``: the caller retries a retryable failure itself (an engine's retry
    policy, before its last attempt): such a failure is recorded without compensating (the
    saga runs when the failure is final), unless the saga has begun already."""

    input: str | None = None
    resume_id: str | None = None
    run_id: str | None = None
    deps: Any = None
    target: str | None = None
    emit: Callable[[RunEvent], None] | None = None
    streaming: bool = False
    deadline_at: float | None = None
    claimed: bool = False
    tenant: str | None = None
    user: str | None = None
    conversation: str | None = None
    step_allowance: int | None = None
    metadata: dict[str, Any] | None = None
    retried_later: bool = False

    def __post_init__(self) -> None:
        n = self.step_allowance
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ConfigError("step_allowance", f"must be a whole number >= 0 or None, not "
                              f"{n!r}")


def blocking(what: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``what`` (``run_sync``, ``resume_sync``) from synchronous code: the coroutine run to
    completion; refused inside a running event loop, where it would block the loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(start())
    raise UserError(f"{what}() was called inside a running event loop; await "
                    f"{what.removesuffix('_sync')}() there instead.")


async def launch(runnable: Runnable, store: RunStore | str | None,
                 how: Launch) -> RunResult[Any]:
    """Run or resume ``runnable`` on ``store`` (a store, a URL, or the default)."""
    async with using_store(store) as opened:
        return await execute(runnable, opened, how)


#: How often one call may find every awaited decision already made and go round again.
_MAX_WAKES = 100


async def execute(agent: Runnable, store: RunStore, launch: Launch) -> RunResult[Any]:
    agent.prepare()  # fail on a bad id or a missing key before anything is written
    keeper = keeper_for(store)
    allowance = None if launch.step_allowance is None else [launch.step_allowance]
    for _ in range(_MAX_WAKES):
        try:
            return await _execute_once(agent, store, launch, keeper, allowance)
        except _Woken as woken:  # decided while we suspended: go on in this process
            launch = replace(launch, input=None, resume_id=woken.run_id, run_id=None,
                             claimed=False)
    raise StoreError(f"run {launch.resume_id} kept waking without progress; resume it with "
                     "`keel resume`.")


class _Woken(Exception):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


async def _execute_once(agent: Runnable, store: RunStore, launch: Launch,
                        keeper: LeaseKeeper, allowance: list[int] | None) -> RunResult[Any]:
    screened = None
    if launch.resume_id is None and launch.input is not None \
            and agent.stack.guards.active("input"):  # before anything is stored
        run_id = launch.run_id or new_run_id()
        screened = await screen_input(agent.stack.guards, run_id=run_id, agent=agent.name,
                                      text=launch.input, tenant=launch.tenant,
                                      user=launch.user)
        launch = replace(launch, input=screened.text, run_id=run_id)
    record, entries, hold = await _open_run(agent, store, launch, keeper)
    agent = agent.for_record(record)
    tracker = BudgetTracker(agent.budget)
    journal = Journal(store, record.run_id, agent.name, entries, tracker,
                      trusted_seq=fork_trusted_seq(record), lease=worker_id(),
                      durability=agent.durability, allowance=allowance)
    loop = agent.driver(journal, deps=launch.deps, emit=launch.emit,
                        streaming=launch.streaming, record=record)
    resumed = launch.resume_id is not None
    ended = False
    try:
        if launch.emit is not None:
            launch.emit(RunStarted(run_id=record.run_id, agent=agent.name, resumed=resumed))
        record = await _run_start(agent, store, record, resumed)
        try:
            if screened is not None:
                await record_input(journal, agent.name, screened)
            failed = recorded_failure(journal) if resumed else None
            if failed is not None:  # a run that began compensating finishes that, never goes on
                raise failed
            history = (await conversation_history(journal, store, record)
                       if getattr(agent, "takes_history", False) else None)
            result = await _drive(loop, record, hold, history)
        except (ApprovalRequired, Escalate) as signal:
            ended = True
            keeper.held.pop(record.run_id, None)  # the final write releases the lease
            await _suspend(agent, store, record, tracker, journal, signal)
            raise
        except LeaseLost as exc:
            ended = True
            await _interrupted(agent, record, exc)
            raise
        except Paused as paused:  # between steps: commit what ran, stay running
            await _pause(agent, store, record, tracker, journal, paused)
            raise
        except StoreUnavailable as exc:
            # The store went away (a lost connection, a deadlock, a busy pool): as after a
            # crash, the run stays running with its lease given back (best effort), so any
            # worker or `keel resume` continues it from its journal once the store is back.
            # Nothing is compensated and no failure is recorded: the run did not fail.
            await _interrupted(agent, record, exc)
            raise
        except BaseException as exc:
            ended = True
            failure = await _failed(agent, store, record, tracker, journal, hold, launch, exc)
            if failure is not exc:
                raise failure from exc
            raise
        keeper.held.pop(record.run_id, None)  # no cancel may hit the final write
        ended = True
        await store.finish_run(record.with_status(
            "completed", output=to_jsonable(result.output), updated_at=time.time(),
            usage=_totals(tracker), error=None), journal.take_pending(), lease=worker_id())
    finally:
        await keeper.release(hold, in_store=not ended)
    await agent.stack.run_end(RunEndInput(run_id=record.run_id, agent=agent.name,
                                          status="completed", output=result.output, error=None,
                                          tenant=record.tenant, user=record.user))
    if launch.emit is not None:
        launch.emit(RunFinished(run_id=record.run_id, status="completed", result=result))
    return result


async def _failed(agent: Runnable, store: RunStore, record: RunRecord,
                  tracker: BudgetTracker, journal: Journal, hold: Hold, launch: Launch,
                  exc: BaseException) -> BaseException:
    """End a run that failed (or was cancelled): compensate if its saga applies, record the
    failure, call the end hooks; returns the failure recorded (the compensation's own, if
    it broke)."""
    failure = exc
    if _compensates(agent, journal, exc) and not _retried_later(launch, journal, exc):
        failure = await _compensate(agent, store, record, tracker, journal, hold, launch, exc)
    keeper_for(store).held.pop(record.run_id, None)  # no renewal may cancel the final write
    await _record_failure(store, record, tracker, journal, failure)
    await agent.stack.run_end(RunEndInput(run_id=record.run_id, agent=agent.name,
                                          status=_status_for(failure), output=None,
                                          error=failure, tenant=record.tenant,
                                          user=record.user))
    return failure


async def _pause(agent: Runnable, store: RunStore, record: RunRecord, tracker: BudgetTracker,
                 journal: Journal, paused: Paused) -> None:
    """A run that used its step allowance: what ran is committed with its usage, the run
    stays ``running`` (its lease is released by the caller), the end hooks hear that it
    was interrupted."""
    await store.finish_run(record.with_status("running", updated_at=time.time(),
                                              usage=_totals(tracker)),
                           journal.take_pending(), lease=worker_id())
    await _interrupted(agent, record, paused)


def _retried_later(launch: Launch, journal: Journal, exc: BaseException) -> bool:
    """A retryable failure that the caller retries: not compensated (yet)."""
    return (launch.retried_later and bool(getattr(exc, "retryable", False))
            and recorded_failure(journal) is None)


async def _run_start(agent: Runnable, store: RunStore, record: RunRecord,
                     resumed: bool) -> RunRecord:
    """The start hooks; what they return joins the run record's metadata (stored once)."""
    extra = await agent.stack.run_start(RunStartInput(
        run_id=record.run_id, agent=agent.name, input=record.input, resumed=resumed,
        metadata=record.metadata, tenant=record.tenant, user=record.user))
    if extra and any(record.metadata.get(k) != v for k, v in extra.items()):
        # e.g. the trace context, for a resume to continue the run's trace
        record = replace(record, metadata={**record.metadata, **extra})
        await store.update_run(record, lease=worker_id())
    return record


async def _interrupted(agent: Runnable, record: RunRecord, exc: BaseException) -> None:
    """This process stops a run it no longer holds (lease lost, store gone): the end hooks
    hear ``interrupted`` (a span ends, per-run state is dropped); the run itself goes on
    elsewhere. A hook that fails here is logged, never raised over the reason we stop."""
    end = RunEndInput(run_id=record.run_id, agent=agent.name, status="interrupted",
                      output=None, error=exc, tenant=record.tenant, user=record.user)
    for mw in reversed(agent.stack.middleware):  # each hook on its own: one failing hook
        try:                                      # must not keep the others from hearing
            await mw.on_run_end(end)
        except Exception as hook_error:  # the run's own stop reason is what the caller needs
            _log.warning("run %s: an end hook failed while the run was interrupted (%s: %s)",
                         record.run_id, type(hook_error).__name__, hook_error,
                         extra={"run_id": record.run_id})


async def _compensate(agent: Any, store: RunStore, record: RunRecord,
                      tracker: BudgetTracker, journal: Journal, hold: Hold, launch: Launch,
                      exc: BaseException) -> BaseException:
    """Undo the failed run's completed steps (see ``_saga``) with its lease still renewed;
    returns the failure to record. A compensation that keeps failing suspends the run."""
    hold.stop_reason = hold.stop_reason or "compensating"  # a cancel request cannot stop it
    try:
        await compensate(agent, journal, record, exc, deps=launch.deps)
    except Escalate as signal:
        keeper_for(store).held.pop(record.run_id, None)
        await _suspend(agent, store, record, tracker, journal, signal)
        raise signal from exc
    except Exception as broke:  # the saga goes on when the run is resumed
        error = RunError(f"compensation stopped ({type(broke).__name__}: {broke}); resume "
                         "the run to finish it", run_id=record.run_id)
        error.__cause__ = exc
        return error
    return exc


async def _drive(loop: Driver, record: RunRecord, hold: Hold,
                 history: list[Message] | None = None) -> RunResult[Any]:
    """Run the loop within the run's deadline (``history``: the earlier turns of the run's
    conversation); turn our own stops into keel errors."""
    task = asyncio.current_task()
    try:
        if record.deadline_at is None:
            return await loop.run(str(record.input), history=history)
        left = record.deadline_at - time.time()
        if left <= 0:
            raise _deadline(record)
        try:
            async with asyncio.timeout(left):
                return await loop.run(str(record.input), history=history)
        except TimeoutError as exc:
            if time.time() < record.deadline_at - 0.001:
                raise  # not ours
            raise _deadline(record) from exc
    except Handoff as exc:
        raise unreceived(exc, record.run_id) from exc
    except asyncio.CancelledError:
        reason = hold.stop_reason
        if reason is None or task is None:
            raise
        task.uncancel()
        if reason == "lease-lost":
            raise LeaseLost(f"run {record.run_id}: this worker lost the run's lease (it "
                            "stalled past the expiry and another worker took the run over); "
                            "stopped here without writing.") from None
        if reason == "hand-back":
            raise LeaseLost(f"run {record.run_id}: this process is shutting down; the run "
                            "stopped at its current step and goes on in another worker "
                            "(or `keel resume`) from its journal.") from None
        raise RunCancelled(hold.cancel_reason or "the run was cancelled (`keel runs cancel`)",
                           by=hold.cancel_by, run_id=record.run_id) from None


def _deadline(record: RunRecord) -> DeadlineExceeded:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.deadline_at or 0))
    return DeadlineExceeded(f"the run's deadline ({when}) has passed", run_id=record.run_id)


async def _open_run(agent: Runnable, store: RunStore, launch: Launch,
                    keeper: LeaseKeeper) -> tuple[RunRecord, list[Any], Hold]:
    if launch.resume_id is None:
        if launch.conversation is not None:  # before anything is written
            await check_joinable(store, launch.conversation, tenant=launch.tenant,
                                 user=launch.user)
        now = time.time()
        record = RunRecord(run_id=launch.run_id or new_run_id(), agent=agent.name,
                           status="running", input=launch.input, created_at=now, updated_at=now,
                           target=launch.target,
                           metadata={**agent.run_metadata(), **(launch.metadata or {})},
                           lease_owner=worker_id(), lease_expires_at=now + keeper.seconds,
                           deadline_at=launch.deadline_at, tenant=launch.tenant,
                           user=launch.user, conversation=launch.conversation)
        await store.create_run(record)
        return record, [], await keeper.acquire(record.run_id, record=record)
    record = await store.get_run(launch.resume_id)
    if record.agent != agent.name:
        raise StoreError(
            f"run {record.run_id} belongs to agent {record.agent!r}, not {agent.name!r}; resume "
            "it with the agent that started it.")
    cancelled = record.status == "cancelled" and (record.error or {}).get("type") == "RunCancelled"
    if record.status == "completed" or cancelled:  # an interrupted run may go on; not these
        raise StoreError(
            f"run {record.run_id} already {record.status}; nothing to resume. `keel runs show "
            f"{record.run_id}` prints its journal.")
    hold = keeper.adopt(record.run_id) if launch.claimed else await keeper.acquire(
        record.run_id)
    try:
        record = await store.get_run(record.run_id)  # as of holding the lease: it may have
        if record.status == "completed":  # finished while we were taking it
            raise StoreError(f"run {record.run_id} already completed; nothing to resume.")
        entries = await store.read_journal(record.run_id)
        record = record.with_status("running", updated_at=time.time(), error=None)
        await store.update_run(record, lease=worker_id())
    except BaseException:
        await keeper.release(hold)
        raise
    return record, entries, hold


async def _suspend(agent: Runnable, store: RunStore, record: RunRecord,
                   tracker: BudgetTracker, journal: Journal,
                   signal: ApprovalRequired | Escalate) -> None:
    """Park the run until a person decides; if every decision is already in, go round."""
    signal.run_id = record.run_id
    waiting = (signal.approval_ids if isinstance(signal, ApprovalRequired)
               else (signal.escalation_id,) if signal.escalation_id else ())
    error = {"type": type(signal).__name__, "message": redact(signal.message),
             "step_key": None, "retryable": False}
    parked = record.with_status("suspended", error=error, updated_at=time.time(),
                                usage=_totals(tracker))
    if waiting:
        status = await asyncio.shield(store.suspend_run(
            parked, journal.take_pending(), waiting_on=waiting, lease=worker_id()))
    else:  # raised by code for something keel does not track: wait for `keel resume`
        await asyncio.shield(store.finish_run(parked, journal.take_pending(), lease=worker_id()))
        status = "suspended"
    await agent.stack.run_end(RunEndInput(run_id=record.run_id, agent=agent.name,
                                          status=status, output=None, error=signal,
                                          tenant=record.tenant, user=record.user))
    if status == "running":
        raise _Woken(record.run_id) from signal


def unreceived(exc: Handoff, run_id: str) -> RunError:
    """A handoff that left the run: nothing in it takes the conversation over."""
    return RunError(f"the run handed the conversation to {exc.target!r} "
                    f"({exc.reason or 'no reason given'}), but nothing receives a handoff "
                    "here: run the agent in a HandoffTeam, or catch keel.Handoff around "
                    "ctx.run_agent in a flow", run_id=run_id, step_key=exc.step_key)


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | RunCancelled):
        return "cancelled"
    if isinstance(exc, Signal):
        return "suspended"
    return "failed"


def _totals(tracker: BudgetTracker) -> dict[str, Any]:
    return {**tracker.usage.to_dict(), "steps": tracker.steps}


async def _record_failure(store: RunStore, record: RunRecord, tracker: BudgetTracker,
                          journal: Journal, exc: BaseException) -> None:
    """Mark the run failed, cancelled or suspended, committing its deferred records with the
    status; a failing store must not hide the run's own error."""
    if isinstance(exc, RunError) and exc.run_id is None:
        exc.run_id = record.run_id
    kind = exc.error_type if isinstance(exc, RunError) else type(exc).__name__
    error = {"type": kind, "message": redact(getattr(exc, "message", str(exc))),
             "step_key": getattr(exc, "step_key", None),
             "retryable": bool(getattr(exc, "retryable", False))}
    if not isinstance(exc, KeelError | asyncio.CancelledError | KeyboardInterrupt):
        error["message"] = redact(f"{type(exc).__name__}: {exc}")
    status = _status_for(exc)
    entries = journal.take_pending()
    # Sub-run failures held for a flow that would go past them, but nothing came after them:
    # the run failed of them, so they are not kept and resuming it tries those sub-runs again.
    while status != "suspended" and entries and entries[-1].kind == "failure":
        entries.pop()
    if status == "cancelled":  # the stop itself is a step of the run
        entries.append(JournalEntry(
            seq=journal.seq, key=f"{record.agent}/cancelled", phase="result", kind="cancel",
            name=type(exc).__name__, input_hash="", created_at=time.time(),
            data={"reason": error["message"],
                  "by": getattr(exc, "by", None) or worker_id()}))
        journal.seq += 1
    try:
        await asyncio.shield(store.finish_run(record.with_status(
            status, error=error, updated_at=time.time(),  # type: ignore[arg-type]
            usage=_totals(tracker)), entries, lease=worker_id()))
    except Exception:  # the original failure matters more than a failed status write
        return
