"""Shadow mode: a candidate agent runs beside production on a sampled share of live traffic,
without affecting anyone.

``await shadow.run(production, input, **options)`` runs the production agent or flow as
usual and returns its result unchanged; for a sampled share of runs (decided by a hash of
the run id, or of the user, so the same traffic always gives the same sample) it then starts
the candidate on the same input in the background, as an ordinary journaled run whose
metadata says ``{"shadow_of": <production run id>}``.

In a shadow run no tool with effects ever executes. The interception is middleware
(:class:`ShadowTools`, a ``wrap_tool_call`` innermost in the candidate's stack):

* a tool with ``risk="write"``, ``"irreversible"`` or no declared risk is never called: the
  call is journaled as the step's result, a *would-call* ``{"keel_shadow": "would_call",
  "tool", "risk", "arguments"}``, and the model gets a neutral observation;
* a ``risk="read"`` tool is served the production run's recorded result for the same tool
  and arguments (``read_tools="replay"``, the default; a call production did not make gets
  an observation saying the information is unavailable), or, with ``read_tools="live"``,
  runs for real when production made no such call.

The approval gate comes before middleware in keel's loop, so the candidate's shadow copy
runs with approvals off and its tools' own approval demands lifted: a would-call never
reaches the gate and no person is ever asked about a shadow run. The copy also runs without
escalation and without saga compensation (nothing it did needs undoing); a shadow run that
would still wait for a person (a guard escalated it) is closed at once (its escalation
dismissed by ``keel.shadow``, the run cancelled).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol, Unpack

from keel.core import (
    ApprovalRequired,
    Escalate,
    ModelResponse,
    TaskConflict,
    ToolContext,
    canonical_json,
    new_run_id,
    redact_text,
)
from keel.evals._errors import EvalError
from keel.evals._shadow_marks import SHADOW_KEY
from keel.evals._shadow_report import CompareSpec, ShadowReport, check_compare, shadow_report
from keel.runtime import (
    Agent,
    AgentInput,
    ApprovalPolicy,
    EscalationPolicy,
    Middleware,
    RunOptions,
    RunResult,
    ToolCallInput,
    ToolNext,
    cancel_run,
    resolve_escalation,
    using_store,
)
from keel.store import TERMINAL_STATUSES, RunStore, TaskFilter
from keel.tools import Tool, ToolResult

ReadTools = Literal["replay", "live"]
SampleBy = Literal["run", "user"]
#: What the model of a shadow run is told after a call of a tool with effects.
DEFAULT_OBSERVATION = "The request was received."
#: What it is told after a read that production did not make (``read_tools="replay"``).
UNAVAILABLE = "This information is not available right now."
#: How many shadow runs may be pending at once by default; more are skipped (and counted).
DEFAULT_MAX_PENDING = 64
_KEEP_ERRORS = 20
#: Who closes a shadow run that stopped for a person, and why.
SHADOW_BY = "keel.shadow"
NEVER_WAITS = "a shadow run never waits for a person"


@dataclass(slots=True)
class ShadowStats:
    """What one :class:`Shadow` did in this process (the store holds the runs themselves;
    :func:`shadow_report` reads them). ``errors`` keeps the last few failures as text."""

    seen: int = 0
    sampled: int = 0
    skipped: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    suspended: int = 0
    would_calls: int = 0
    reads_replayed: int = 0
    reads_live: int = 0
    reads_unavailable: int = 0
    errors: list[str] = field(default_factory=list)

    def note(self, exc: BaseException) -> None:
        self.errors.append(f"{type(exc).__name__}: {exc}"[:500])
        del self.errors[:-_KEEP_ERRORS]


def has_effects(tool: Tool) -> bool:
    """Whether a shadow run must never execute ``tool``: its risk is ``write`` or
    ``irreversible``, or was never declared."""
    return tool.meta.risk != "read" or not tool.meta.risk_declared


def call_key(tool: str, arguments: str) -> tuple[str, str]:
    """How a call is matched with a recorded one: the tool name and its arguments as
    canonical JSON, secrets masked as the journal stores them."""
    text = redact_text(arguments or "{}")
    try:
        return tool, canonical_json(json.loads(text))
    except (ValueError, RecursionError):
        return tool, text


async def recorded_reads(store: RunStore, run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The recorded tool results of run ``run_id``, by :func:`call_key`: each model turn's
    tool calls matched with the results journaled under the turn's step keys."""
    entries = await store.read_journal(run_id)
    results = {e.key: e.data for e in entries if e.kind == "tool" and e.phase == "result"}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for e in entries:
        if e.kind != "model" or e.phase != "result" or not e.key.endswith("/model"):
            continue
        try:
            calls = ModelResponse.from_dict(e.data).tool_calls
        except (KeyError, TypeError, ValueError):
            continue
        base = e.key[:-len("/model")]
        counts: dict[str, int] = {}
        for c in calls:
            n = counts.get(c.tool_name, 0)
            counts[c.tool_name] = n + 1
            data = results.get(f"{base}/tool:{c.tool_name}#{n}")
            if isinstance(data, dict) and isinstance(data.get("content"), str):
                out.setdefault(call_key(c.tool_name, c.arguments), data)
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except (ValueError, RecursionError):
        return {"_raw": text[:2000]}


class ShadowTools(Middleware):
    """The interception of a shadow run's tool calls (see the module docstring): effects
    become journaled would-calls, reads are served from production's recorded results (or
    run live with ``read_tools="live"``). Innermost in the shadow copy's stack, so guards,
    retries and tracing see each call as they would in production. Runs it was not told
    about (:meth:`begin`) get no recorded reads: their effects are still never executed."""

    def __init__(self, *, read_tools: ReadTools = "replay",
                 observation: str = DEFAULT_OBSERVATION,
                 stats: ShadowStats | None = None) -> None:
        self.read_tools = read_tools
        self.observation = observation
        self.stats = stats if stats is not None else ShadowStats()
        self._own: frozenset[str] = frozenset()
        self._reads: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    def on_agent(self, inp: AgentInput) -> None:
        self._own = frozenset(t.name for t in inp.tools)

    def begin(self, run_id: str, reads: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Serve ``reads`` (production's recorded results) to shadow run ``run_id``."""
        self._reads[run_id] = reads

    def end(self, run_id: str) -> None:
        self._reads.pop(run_id, None)

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        tool = inp.tool
        if tool.name not in self._own:  # served by middleware (paging): keel's own reads
            return await next(inp)
        if has_effects(tool):
            self.stats.would_calls += 1
            return would_call(tool, inp.arguments, self.observation)
        recorded = self._reads.get(inp.run_id, {}).get(call_key(tool.name, inp.arguments))
        if recorded is not None:
            self.stats.reads_replayed += 1
            return ToolResult.from_dict(recorded)
        if self.read_tools == "live":
            self.stats.reads_live += 1
            return await next(inp)
        self.stats.reads_unavailable += 1
        return ToolResult(content=UNAVAILABLE, value={
            SHADOW_KEY: "unavailable", "tool": tool.name,
            "arguments": _arguments(inp.arguments)})


def would_call(tool: Tool, arguments: str, observation: str) -> ToolResult:
    """The journaled stand-in for a call a shadow run does not make."""
    meta = tool.meta
    return ToolResult(content=observation, value={
        SHADOW_KEY: "would_call", "tool": meta.name,
        "risk": meta.risk if meta.risk_declared else "undeclared",
        "arguments": _arguments(arguments)})


class _ShadowTool(Tool):
    """A candidate's tool as its shadow copy holds it: the same name, schema and risk, no
    approval demand, no compensation, no reconcile hook; and a call of a tool with effects
    that reached it anyway (the middleware removed) is still not made."""

    def __init__(self, inner: Tool, observation: str) -> None:
        self.inner = inner
        self.observation = observation
        self.meta = replace(inner.meta, approval=False, compensate=None)
        self.reconcile = None

    @property
    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters

    async def call(self, arguments: str | dict[str, Any], ctx: ToolContext) -> ToolResult:
        if has_effects(self):
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            return would_call(self, text, self.observation)
        return await self.inner.call(arguments, ctx)


class Production(Protocol):
    """What a shadow wraps: an agent or flow (anything with ``run``)."""

    async def run(self, input: str, **options: Unpack[RunOptions]) -> RunResult[Any]: ...


class Shadow:
    """Runs ``candidate`` (an :class:`~keel.Agent`) in the shadow of production.

    ``sample``: the share of production runs shadowed (0 to 1), decided by a hash of the
    production run id (``sample_by="run"``) or of its user (``"user"``, falling back to the
    run id for a run without one), so a given run or user is always in or out.
    ``store``: where shadow runs are written (a store or URL); default: the production run's
    store. ``read_tools``: ``"replay"`` or ``"live"`` (see :class:`ShadowTools`).
    ``max_pending``: at most this many shadow runs at once in this process; a sampled run
    arriving when that many are pending is skipped and counted (``stats.skipped``).
    ``observation``: what the model is told after a would-call.

    ``compare``: how :meth:`report` compares answers (see :func:`shadow_report`). The
    comparison is made afterwards, from the stored runs, so it can change without
    re-running anything.
    """

    def __init__(self, candidate: Agent[Any], *, sample: float = 0.05,
                 store: RunStore | str | None = None, read_tools: ReadTools = "replay",
                 sample_by: SampleBy = "run", max_pending: int = DEFAULT_MAX_PENDING,
                 observation: str = DEFAULT_OBSERVATION,
                 compare: CompareSpec = "exact") -> None:
        _check(candidate, sample, store, read_tools, sample_by, max_pending, observation)
        check_compare(compare)
        self.compare = compare
        self.candidate = candidate
        self.sample = float(sample)
        self.store = store
        self.read_tools: ReadTools = read_tools
        self.sample_by: SampleBy = sample_by
        self.max_pending = max_pending
        self.stats = ShadowStats()
        self.tools = ShadowTools(read_tools=read_tools, observation=observation,
                                 stats=self.stats)
        config = candidate.config
        #: The candidate as shadow runs run it (see the module docstring).
        self.agent: Agent[Any] = candidate.clone(
            tools=tuple(_ShadowTool(t, observation) for t in config.tools),
            approval=ApprovalPolicy.off(), escalation=EscalationPolicy.off(),
            compensate_on_failure=False, middleware=(*config.middleware, self.tools))
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """How many shadow runs are under way."""
        return len(self._pending)

    def sampled(self, key: str) -> bool:
        """Whether the run (or user) ``key`` is in the shadowed share."""
        if self.sample >= 1.0:
            return True
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.sample

    async def run(self, production: Production, input: str,
                  **options: Unpack[RunOptions]) -> RunResult[Any]:
        """Run ``production`` on ``input`` with ``options`` exactly as ``production.run``
        would, return its result, and (for a sampled run) start the candidate's shadow run in
        the background. A failing production run raises as usual and is not shadowed."""
        result = await production.run(input, **options)
        self.submit(result, input, **options)
        return result

    def submit(self, result: RunResult[Any], input: str,
               **options: Unpack[RunOptions]) -> bool:
        """The hook form: shadow a production run that already finished with ``result`` (on
        ``input``, started with ``options``). Returns whether a shadow run was started. Never
        raises: a problem is counted in ``stats`` and production goes on."""
        try:
            self.stats.seen += 1
            user = options.get("user")
            key = user if self.sample_by == "user" and user else result.run_id
            if not self.sampled(key):
                return False
            self.stats.sampled += 1
            if len(self._pending) >= self.max_pending:
                self.stats.skipped += 1
                return False
            task = asyncio.get_running_loop().create_task(
                self._shadow(result.run_id, input, dict(options)))
        except Exception as exc:  # never let the shadow reach production
            self.stats.note(exc)
            return False
        self.stats.started += 1
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def drain(self) -> None:
        """Wait for the pending shadow runs (tests, shutdown). To bound the wait, wrap it:
        ``async with asyncio.timeout(30): await shadow.drain()`` (the shadow runs still
        pending are then cancelled, like any task at shutdown)."""
        while self._pending:
            tasks = list(self._pending)
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError:
                for task in tasks:
                    task.cancel()
                raise

    async def report(self, *, store: RunStore | str | None = None,
                     since: float | datetime | None = None,
                     until: float | datetime | None = None,
                     tenant: str | None = None) -> ShadowReport:
        """:func:`shadow_report` of this shadow's ``store`` (or ``store=``; the default store
        if neither) with its ``compare``: every shadow run in the window, whichever
        process made it."""
        return await shadow_report(store if store is not None else self.store, since=since,
                                   until=until, compare=self.compare, tenant=tenant)

    async def _shadow(self, production_id: str, input: str, options: dict[str, Any]) -> None:
        where = options.get("store")
        try:
            async with using_store(where) as prod_store:
                reads = await recorded_reads(prod_store, production_id)
                if self.store is None or self.store is where:
                    await self._run_candidate(prod_store, production_id, input, options, reads)
                else:
                    async with using_store(self.store) as store:
                        await self._run_candidate(store, production_id, input, options, reads)
        except Exception as exc:  # recorded, never raised: production is not affected
            self.stats.failed += 1
            self.stats.note(exc)

    async def _run_candidate(self, store: RunStore, production_id: str, input: str,
                             options: dict[str, Any],
                             reads: dict[tuple[str, str], dict[str, Any]]) -> None:
        run_id = new_run_id()
        self.tools.begin(run_id, reads)
        try:
            await self.agent.run(input, store=store, run_id=run_id, deps=options.get("deps"),
                                 tenant=options.get("tenant"), user=options.get("user"),
                                 metadata={"shadow_of": production_id,
                                           "shadow": self.candidate.name})
            self.stats.completed += 1
        except (ApprovalRequired, Escalate):  # a guard escalated: nobody is asked
            self.stats.suspended += 1
            await close_waiting(store, run_id)
        finally:
            self.tools.end(run_id)


async def close_waiting(store: RunStore, run_id: str) -> None:
    """End a shadow run that stopped for a person: its open escalations are dismissed by
    ``keel.shadow`` (which cancels the run and takes the task off the queue), and a run still
    not finished is cancelled."""
    tasks = await store.list_tasks(TaskFilter(run_id=run_id, limit=100))
    for task in tasks:
        if task.status == "resolved" or task.kind != "escalation":
            continue
        try:
            await resolve_escalation(task.task_id, store=store, by=SHADOW_BY,
                                     action="dismiss", comment=NEVER_WAITS)
        except TaskConflict:  # the run was closed by the one before
            continue
    if (await store.get_run(run_id)).status not in TERMINAL_STATUSES:
        await cancel_run(run_id, store=store, by=SHADOW_BY, reason=NEVER_WAITS)


def _check(candidate: object, sample: object, store: object, read_tools: object,
           sample_by: object, max_pending: object, observation: object) -> None:
    if not isinstance(candidate, Agent):
        raise EvalError(f"Shadow runs an Agent candidate, not {type(candidate).__name__}; a "
                        "flow's tool calls belong to the agents inside it: shadow one of them")
    if isinstance(sample, bool) or not isinstance(sample, int | float) \
            or not math.isfinite(sample) or not 0 <= sample <= 1:
        raise EvalError(f"sample={sample!r}: give the share of runs to shadow, from 0 to 1 "
                        "(0.05 shadows 5%)")
    if store is not None and not isinstance(store, RunStore | str):
        raise EvalError(f"store= takes a RunStore or a store URL, not {type(store).__name__}")
    if read_tools not in ("replay", "live"):
        raise EvalError(f"read_tools={read_tools!r}: use 'replay' (production's recorded "
                        "results) or 'live' (run reads production did not make)")
    if sample_by not in ("run", "user"):
        raise EvalError(f"sample_by={sample_by!r}: use 'run' or 'user'")
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) \
            or not 1 <= max_pending <= 100_000:
        raise EvalError(f"max_pending={max_pending!r}: give a whole number from 1 to 100000")
    if not isinstance(observation, str) or not observation.strip() \
            or len(observation) > 2000:
        raise EvalError("observation= is the text the model reads after a would-call: give "
                        "1 to 2000 characters")

