"""Flows: runs whose body is plain async Python over the journal (every pattern is one).

A :class:`Flow` is run, resumed, replayed and traced like an :class:`Agent`. Its body gets a
:class:`FlowContext`: steps keyed under the flow's path, sub-agents and sub-flows that run
on the same journal under their own keys (``triage/route``, ``triage/billing/turn:0/model``)
with a share of the run's budget, a ``gather`` that runs branches concurrently without
leaving any of them behind, and journaled ``now()``, ``uuid()`` and ``random()`` so that a
resumed or replayed run sees the values the original saw.
"""

from __future__ import annotations

import asyncio
import inspect
import random as _random
import time
import uuid as _uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Unpack

from keel.core import (
    ApprovalRequired,
    ConfigError,
    Escalate,
    Message,
    RunEvent,
    Signal,
    UserError,
    stable_hash,
    to_jsonable,
    to_text,
)
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._escalation import EscalationPolicy
from keel.runtime._failures import guarded
from keel.runtime._gates import escalate_at
from keel.runtime._journal import Durability, Journal
from keel.runtime._middleware import Middleware, MiddlewareStack, SubRunInput
from keel.runtime._result import RunResult
from keel.runtime._runs import FLOW_OPTIONS, FlowOptions, Runs, check_input, check_options
from keel.store import RunRecord
from keel.tools import run_in_worker

if TYPE_CHECKING:

    from keel.runtime._agent import Agent

OutputT = TypeVar("OutputT")
T = TypeVar("T")
#: A share of the parent's budget: a :class:`Budget` (capped by what is left), a fraction of
#: what is left, or None (the sub-agent's own budget, capped by what is left).
Share = Budget | float | None
_POLICY = EscalationPolicy()


def check_name(part: str, name: object) -> str:
    """A name that becomes part of step keys: non-empty, without '/', '#' or ':'."""
    if not isinstance(name, str) or not name or any(c in name for c in "/#:"):
        raise ConfigError(part, f"{name!r} must be a non-empty string without '/', '#' or ':' "
                          "(it becomes part of step keys)")
    return name


class FlowContext:
    """What a flow's body uses: :meth:`step` for side effects and decisions,
    :meth:`run_agent` / :meth:`run_flow` for sub-runs, :meth:`gather` for branches, and
    :meth:`now` / :meth:`uuid` / :meth:`random` for values that must be the same when the
    run is resumed or replayed."""

    __slots__ = ("_counters", "deps", "emit", "journal", "path", "record")

    def __init__(self, journal: Journal, *, path: str | None = None, deps: Any = None,
                 emit: Callable[[RunEvent], None] | None = None,
                 record: RunRecord | None = None) -> None:
        """``path``: the prefix of this scope's step keys (by default the journal's agent
        name, i.e. the run's top level)."""
        self.journal = journal
        self.path = journal.agent if path is None else path
        self.deps = deps
        self.emit = emit
        self.record = record
        # Calls of now()/uuid()/random() so far in this execution, per key prefix; shared by
        # every scope of the run, so two views of one scope never hand out the same key.
        self._counters: dict[str, int] = {}

    def _child(self, journal: Journal, path: str) -> FlowContext:
        ctx = FlowContext(journal, path=path, deps=self.deps, emit=self.emit,
                          record=self.record)
        ctx._counters = self._counters
        return ctx

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def tenant(self) -> str | None:
        """The run's tenant (``run(..., tenant=)``), None when not given."""
        return None if self.record is None else self.record.tenant

    @property
    def user(self) -> str | None:
        """The run's user (``run(..., user=)``), None when not given."""
        return None if self.record is None else self.record.user

    @property
    def conversation(self) -> str | None:
        """The conversation the run is a turn of (``run(..., conversation=)``), None when
        not given. A flow's body is not handed the history; ``Conversation(ctx.conversation,
        ...).messages()`` reads it (outside the journal: journal what it decides on)."""
        return None if self.record is None else self.record.conversation

    @property
    def budget(self) -> BudgetTracker:
        """This scope's tracker (its share, counting into the run's)."""
        return self.journal.budget

    def remaining(self) -> Budget | None:
        """What is left of this scope's budget (None when a limit is used up)."""
        return self.journal.budget.remaining()

    def key(self, name: str) -> str:
        """The full step key of ``name`` in this scope."""
        if not isinstance(name, str) or not name or name.startswith("/"):
            raise UserError(f"a step name must be a non-empty relative path, not {name!r}")
        return f"{self.path}/{name}"

    def recorded(self, name: str) -> Any:
        """The recorded result of step ``name`` in this scope, or None."""
        entry = self.journal.recorded(self.key(name))
        return None if entry is None else entry.data

    async def step(self, name: str, fn: Callable[[], Any], *, kind: str = "call",
                   input: Any = None, idempotent: bool = True, budgeted: bool = False,
                   blocking: bool = True) -> Any:
        """Run ``fn`` once for this run, keyed ``<path>/<name>``, and return its result as
        plain JSON data (:func:`keel.core.to_jsonable`: a dataclass or pydantic model becomes a
        dict, a date its ISO text, a set a sorted list), the same value a resumed or replayed
        run gets back from the journal without calling ``fn``.

        An ``async def`` is awaited on the event loop. A plain function runs in a worker
        thread (like a sync tool), so a slow one does not stall the run's other branches or
        other runs; if it returns an awaitable, that is awaited on the loop. ``blocking=False``
        says a plain function is quick and never blocks (it returns a value already at hand):
        it is then called on the loop, saving the thread hop. ``budgeted`` counts the step
        against the budget (for steps that do work, not decisions)."""
        key = self.key(name)

        async def run() -> Any:
            out = await _call(fn, blocking)
            try:
                return to_jsonable(out)
            except ValueError as exc:  # a value that contains itself
                raise UserError(f"step {key!r} returned {type(out).__name__}, which cannot be "
                                f"recorded ({exc}); return plain data from a flow step") from exc

        value, _ = await self.journal.step(
            key, kind, name.rsplit("/", 1)[-1].split("#", 1)[0], run,
            input_hash=stable_hash(input), intent=input, idempotent=idempotent,
            budgeted=budgeted)
        return value

    async def now(self) -> float:
        """The time (seconds since the epoch, as :func:`time.time`), read once and journaled
        at ``<path>/now#<n>`` (the n-th call in this scope): a resumed or replayed run gets
        the recorded time. Use it instead of ``time.time()`` / ``datetime.now()`` in a flow's
        body."""
        return float(await self._draw("now", "clock", time.time))

    async def uuid(self) -> str:
        """A random UUID (version 4, as a string), journaled at ``<path>/uuid#<n>``."""
        return str(await self._draw("uuid", "uuid", lambda: str(_uuid.uuid4())))

    async def random(self) -> float:
        """A random float in [0, 1) (as :func:`random.random`), journaled at
        ``<path>/random#<n>``. Derive other draws from it (``int(await ctx.random() * 6)``)."""
        return float(await self._draw("random", "random", _random.random))

    async def _draw(self, name: str, kind: str, make: Callable[[], Any]) -> Any:
        """Record one value of a non-deterministic source at the next key of ``name``."""
        prefix = self.key(name)
        n = self._counters.get(prefix, 0)
        self._counters[prefix] = n + 1

        async def run() -> Any:
            return make()

        value, _ = await self.journal.step(f"{prefix}#{n}", kind, name, run,
                                           input_hash=stable_hash(None), budgeted=False)
        return value

    def scope(self, name: str, *, budget: Share = None) -> FlowContext:
        """A sub-scope ``<path>/<name>``; with ``budget``, its steps count against that share
        (and still against this scope's)."""
        view = self.journal if budget is None else self.journal.view(
            budget=self._share(budget))
        return self._child(view, self.key(name))

    def _share(self, share: Share, own: Budget | None = None) -> BudgetTracker:
        tracker = self.journal.budget
        if share is None:
            return tracker.child(own)
        if isinstance(share, Budget):
            return tracker.child(share)
        left = tracker.remaining() or tracker.budget
        return tracker.child(left.scaled(share))

    async def run_agent(self, agent: Agent[Any], input: str, *, name: str | None = None,
                        history: Sequence[Message] | None = None,
                        budget: Share = None) -> RunResult[Any]:
        """Run ``agent`` on this run's journal under ``<path>/<name or agent.name>``, with a
        share of the budget (by default the agent's own budget, capped by what is left).
        ``history``: earlier conversation the agent continues (a handoff). A run error it
        fails with is journaled once the flow goes past it: a resumed or replayed run gets
        the same error again without running the agent (see ``_failures``)."""
        check_input("agent", input, empty=bool(history))  # a handoff may continue on history
        prefix = self.key(check_name("name", name or agent.name))
        view = self.journal.view(budget=self._share(budget, agent.budget), agent=agent.name)
        loop = agent.driver(view, deps=self.deps, emit=self.emit, streaming=False,
                            record=self._record(), prefix=prefix)

        async def run() -> RunResult[Any]:
            return await loop.run(input, history=list(history) if history else None)

        sub = SubRunInput(run_id=self.run_id, path=prefix, name=agent.name, kind="agent")
        return await guarded(view, prefix, lambda: agent.stack.sub_run(sub, run))

    async def run_flow(self, flow: Flow[T], input: str, *, name: str | None = None,
                       budget: Share = None) -> RunResult[T]:
        """Run ``flow``'s body as part of this run, under ``<path>/<name or flow.name>``."""
        view = self.journal.view(budget=self._share(budget, flow.budget))
        ctx = self._child(view, self.key(check_name("name", name or flow.name)))

        async def run() -> RunResult[T]:
            return await _finish(flow, ctx, await flow.body(ctx, input))

        sub = SubRunInput(run_id=self.run_id, path=ctx.path, name=flow.name, kind="flow")
        return await guarded(view, ctx.path, lambda: flow.stack.sub_run(sub, run))

    async def escalate(self, reason: str, *, name: str = "escalation",
                       trigger: str = "requested", queue: str | None = None,
                       proposal: str | None = None,
                       policy: EscalationPolicy | None = None) -> str:
        """Hand the run to a person (step ``<path>/<name>``): the packet goes to the queue
        (``keel escalations``) and the run is suspended with ``Escalate``. Once the person
        lets it go on (``resume``), this returns their note; ``answer`` completes the run
        with their answer and ``dismiss`` cancels it (both without running the body on)."""
        exc = Escalate(reason, trigger=trigger, queue=queue, proposal=proposal)
        return await escalate_at(self.journal, self._record(), self.key(name), exc,
                                 policy or _POLICY)

    async def gather(self, *branches: Awaitable[T]) -> list[T]:
        """Run branches concurrently and wait for all of them (none is left running). If
        any failed, the first failure is raised; if branches only wait for people, one
        ``ApprovalRequired`` carries every approval they wait for."""
        results = await asyncio.gather(*branches, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise _merged(errors)
        return list(results)  # type: ignore[arg-type]

    def _record(self) -> RunRecord:
        if self.record is None:
            raise UserError("this FlowContext has no run record; run the flow with flow.run()")
        return self.record


def _is_async(fn: Callable[..., Any]) -> bool:
    """An ``async def`` (or a partial of one, or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        type(fn).__call__)


async def _call(fn: Callable[[], Any], blocking: bool) -> Any:
    """Call a step's function without blocking the loop: async on the loop, sync in a
    worker thread unless it says it does not block; an awaitable it returns is awaited."""
    if _is_async(fn) or not blocking:
        out = fn()
    else:
        out = await run_in_worker(fn, None)
    if inspect.isawaitable(out):
        out = await out
    return out


def _merged(errors: list[BaseException]) -> BaseException:
    hard = [e for e in errors if not isinstance(e, Signal)]
    if hard:
        return hard[0]
    approvals = [e for e in errors if isinstance(e, ApprovalRequired)]
    if len(approvals) == len(errors) and len(approvals) > 1:
        ids = tuple(i for e in approvals for i in e.approval_ids)
        return ApprovalRequired(f"{len(ids)} calls wait for approval", approval_ids=ids)
    return errors[0]


async def _finish(flow: Flow[Any], ctx: FlowContext, output: Any) -> RunResult[Any]:
    tracker = ctx.journal.budget
    return RunResult(run_id=ctx.run_id, agent=flow.name, output=output,
                     text=to_text(output),
                     usage=tracker.usage, steps=tracker.steps)



class _FlowDriver:
    __slots__ = ("ctx", "flow")

    def __init__(self, flow: Flow[Any], ctx: FlowContext) -> None:
        self.flow = flow
        self.ctx = ctx

    async def run(self, user_input: str, *,
                  history: list[Message] | None = None) -> RunResult[Any]:
        return await _finish(self.flow, self.ctx, await self.flow.body(self.ctx, user_input))


class Flow(Runs[OutputT]):
    """A run whose body is plain async Python (subclass and implement :meth:`body`, or use
    :func:`flow`). Runs, resumes and replays like an :class:`Agent`: the journal, the
    budget (shared down to sub-agents), leases, deadlines and cancellation all apply."""

    #: Stored with each run (``keel runs show`` says which pattern made it).
    kind: ClassVar[str] = "flow"
    noun: ClassVar[str] = "flow"
    #: A flow's body decides what a blank input means (an agent refuses one).
    empty_input: ClassVar[bool] = True

    def __init__(self, name: str, **options: Unpack[FlowOptions]) -> None:
        """``options``: :class:`FlowOptions` (``budget``, ``durability``, ``middleware``),
        the same for every pattern."""
        check_options(type(self).__name__, options, FLOW_OPTIONS)
        self.name = check_name("name", name)
        budget = options.get("budget")
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError("budget", f"expected a Budget, got {type(budget).__name__}")
        self.budget = budget or Budget()
        self.durability = Durability.of(options.get("durability"))
        self.stack = MiddlewareStack(list(options.get("middleware", ())))
        #: Compensation (sagas) applies to an agent's own tool calls; a flow's failure is
        #: recorded and the flow can be resumed.
        self.compensate_on_failure = False

    async def body(self, ctx: FlowContext, input: str) -> OutputT:
        raise NotImplementedError(f"{type(self).__name__} must implement body(ctx, input)")

    def agents(self) -> Sequence[Agent[Any]]:
        """The agents this flow runs (checked before a run starts)."""
        return ()

    # -------------------------------------------------------------------- the runner's side

    def prepare(self) -> None:
        for agent in self.agents():
            agent.prepare()
        self._adopt_flow_observers()

    def _adopt_flow_observers(self) -> None:
        """Middleware of this flow's agents that observes flows too
        (``Middleware.observes_flows``: tracing) joins the flow's own stack, outermost, unless
        the flow already has one of its type: a pattern run is then traced as a whole."""
        have = {type(m) for m in self.stack.middleware}
        extra: list[Middleware] = []
        for agent in self.agents():
            for mw in agent.stack.middleware:
                if mw.observes_flows and type(mw) not in have:
                    have.add(type(mw))
                    extra.append(mw)
        if extra:
            self.stack = MiddlewareStack([*extra, *self.stack.middleware])

    def for_record(self, record: RunRecord) -> Flow[OutputT]:
        return self

    def run_metadata(self) -> dict[str, Any]:
        return {"pattern": self.kind}

    def driver(self, journal: Journal, *, deps: Any, emit: Callable[[RunEvent], None] | None,
               streaming: bool, record: RunRecord, prefix: str | None = None) -> _FlowDriver:
        ctx = FlowContext(journal, path=prefix or self.name, deps=deps, emit=emit,
                          record=record)
        return _FlowDriver(self, ctx)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


Body = Callable[[FlowContext, str], Awaitable[Any]]


class _FunctionFlow(Flow[Any]):
    kind = "flow"

    def __init__(self, fn: Body, name: str, agents: Sequence[Agent[Any]],
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        self._fn = fn
        self._agents = tuple(agents)

    async def body(self, ctx: FlowContext, input: str) -> Any:
        return await self._fn(ctx, input)

    def agents(self) -> Sequence[Agent[Any]]:
        return self._agents


def flow(name: str | None = None, *, agents: Sequence[Agent[Any]] = (),
         **options: Unpack[FlowOptions]) -> Callable[[Body], Flow[Any]]:
    """Make a :class:`Flow` of an ``async def body(ctx, input)`` function; ``options`` are
    :class:`FlowOptions` (``budget``, ``durability``, ``middleware``)."""
    check_options("flow", options, FLOW_OPTIONS)

    def wrap(fn: Body) -> Flow[Any]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError("flow", f"{getattr(fn, '__name__', fn)!r} must be an async "
                              "function body(ctx, input)")
        return _FunctionFlow(fn, name or fn.__name__, agents, **options)

    return wrap
