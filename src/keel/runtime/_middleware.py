"""The middleware grid: one set of hooks, each taking one input object and a ``next``.

Hooks wrap the live execution of a step (inside the journal), so a replayed step does not
pass through them again. Middleware listed first is outermost. Input objects are frozen
dataclasses that can grow fields without breaking anyone.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.core import ConfigError, Message, ModelResponse, ModelSettings, ToolContext, ToolSpec
from keel.models import Model
from keel.runtime._guarding import (
    PLACES,
    GuardDecision,
    GuardFunction,
    GuardInput,
    GuardPipeline,
    Place,
    check_places,
    check_timeout,
    every_tool,
)
from keel.tools import Tool, ToolResult

#: ``on_retry(attempt, error, delay_seconds)``: a retrying middleware calls it before it waits
#: and tries again; the run journals the failed attempt and charges it to the budget (raising
#: ``BudgetExceeded`` when the budget has no room for another attempt).
RetryHook = Callable[[int, str, float], Awaitable[None]]


async def _no_retry_hook(attempt: int, error: str, delay: float) -> None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequestInput:
    run_id: str
    step_key: str
    agent: str
    model: Model
    messages: Sequence[Message]
    tools: Sequence[ToolSpec]
    settings: ModelSettings
    on_retry: RetryHook = _no_retry_hook
    #: The run's tenant and user (``run(..., tenant=, user=)``), for per-tenant caches,
    #: caps and metrics.
    tenant: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallInput:
    run_id: str
    step_key: str
    agent: str
    tool: Tool
    arguments: str
    ctx: ToolContext
    on_retry: RetryHook = _no_retry_hook
    #: The model's id for this call (``ToolCallPart.call_id``; "" when it gave none).
    call_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStartInput:
    """A run starting (or resuming: ``resumed``). ``metadata`` is the run record's metadata
    as stored (what ``on_run_start`` hooks returned when the run was first started)."""

    run_id: str
    agent: str
    input: Any
    resumed: bool
    #: The run's tenant and user (``run(..., tenant=, user=)``); None when not given.
    tenant: str | None = None
    user: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubRunInput:
    """An agent or flow run as part of a run (``FlowContext.run_agent`` / ``run_flow``), on
    the run's journal under the step-key prefix ``path``."""

    run_id: str
    path: str
    name: str
    kind: Literal["agent", "flow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEndInput:
    run_id: str
    agent: str
    status: str
    output: Any
    error: BaseException | None
    #: The run's tenant and user (``run(..., tenant=, user=)``); None when not given.
    tenant: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInput:
    """An agent being built with this middleware in its stack: its name, tools, scopes and
    model (an id or a Model; None where a caller has none to give)."""

    agent: str
    tools: Sequence[Tool]
    scopes: frozenset[str]
    model: str | Model | None = None


ModelNext = Callable[[ModelRequestInput], Awaitable[ModelResponse]]
ToolNext = Callable[[ToolCallInput], Awaitable[ToolResult]]
SubRunNext = Callable[[], Awaitable[Any]]


class Middleware:
    """Override any hook; the defaults pass through.

    ``check`` makes a middleware a *guard* (see ``keel.runtime._guarding``): the runtime asks
    it at the places in ``guard_places`` (the user's input, a tool call's arguments, a tool's
    output, the final answer) and journals any decision that is not "allow".
    ``guard_timeout`` (seconds, or None) bounds an async check; ``guard_concurrent`` lets it
    run together with adjacent concurrent guards (a detector that never redacts)."""

    guard_places: frozenset[Place] = PLACES
    guard_timeout: float | None = 10.0
    guard_concurrent: bool = False
    #: Whether the guard can judge part of a streamed answer (``GuardInput.partial``); an LLM
    #: judge cannot, and the stream then holds the answer until it passed.
    guard_partial: bool = True
    #: A middleware of an agent that also wants the runs of the flows (patterns) the agent
    #: is part of: such a flow adopts it into its own stack (outermost) when it is prepared,
    #: unless the flow's stack has one of the same type (tracing: one span per pattern run).
    observes_flows: bool = False

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        """A guard's decision on ``inp`` (``None``: allow). Not a guard unless overridden."""
        return None

    #: ``guard_applies(tool) -> bool``: whether ``check`` may act on a call of ``tool`` (at
    #: the two tool places); a place where no guard applies is skipped. Default: every tool.
    guard_applies = every_tool

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        return await next(inp)

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        return await next(inp)

    async def on_run_start(self, inp: RunStartInput) -> Mapping[str, Any] | None:
        """Called as a run starts or resumes. A mapping returned is merged into the run
        record's metadata and stored (one write, only when it changes something); a resumed
        run reads it back in ``inp.metadata``."""
        return None

    async def wrap_sub_run(self, inp: SubRunInput, next: SubRunNext) -> Any:
        """Wraps a sub-run (an agent or flow run inside a flow) of the agent or flow whose
        stack this is; ``next()`` runs it."""
        return await next()

    def on_guard_decision(self, inp: GuardInput, decision: GuardDecision) -> None:
        """Told each decision of the stack's guards that is not a plain allow (to observe
        it: tracing). Must not raise or block."""
        return None

    async def on_run_end(self, inp: RunEndInput) -> None:
        return None

    def provide_tools(self) -> Sequence[Tool]:
        """Tools this middleware serves to the agents whose stack it is in (the paging
        middleware's drill-down tools). A call to one of them is resolved when the agent has
        no tool of that name, and runs as any call does (journaled, through the whole
        stack). They are *not* offered to the model by themselves: the middleware adds their
        specs in ``wrap_model_request`` when the conversation needs them."""
        return ()

    def on_agent(self, inp: AgentInput) -> None:
        """Called once for each agent built with this middleware (again for a clone): check
        the middleware's configuration against the agent, raising ``keel.ConfigError``
        naming the part (a policy naming a tool the agent does not have)."""
        return None


class Guardrail(Middleware):
    """A guard from a plain function: ``Guardrail(fn)`` where ``fn(inp: GuardInput)``
    (sync or async) returns a :class:`GuardDecision`, ``None`` or ``True`` (allow) or
    ``False`` (block). ``places`` (default: all four) says where it checks; ``timeout``
    bounds an async check (it then fails closed); ``concurrent=True`` lets it run together
    with adjacent concurrent guards (for detectors that never redact)."""

    def __init__(self, check: GuardFunction, *, places: Iterable[Place] | Place = PLACES,
                 name: str | None = None, timeout: float | None = 10.0,
                 concurrent: bool = False) -> None:
        if not callable(check):
            raise ConfigError("Guardrail.check", f"must be a function of a GuardInput, got "
                              f"{type(check).__name__}")
        self.guard_places = check_places(places, "Guardrail.places")
        self.guard_timeout = check_timeout(timeout, "Guardrail.timeout")
        if not isinstance(concurrent, bool):
            raise ConfigError("Guardrail.concurrent", "must be True or False")
        self.guard_concurrent = concurrent
        label = name if name is not None else getattr(check, "__name__", None)
        if label is None:
            label = type(check).__name__
        if not isinstance(label, str) or not label.strip():
            raise ConfigError("Guardrail.name", "must be a non-empty string")
        self.name = label
        self._fn = check

    async def check(self, inp: GuardInput) -> GuardDecision | None:
        out = self._fn(inp)
        if inspect.isawaitable(out):
            out = await out
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<Guardrail {self.name} places={sorted(self.guard_places)}>"


async def _call_model(inp: ModelRequestInput) -> ModelResponse:
    return await inp.model.request(inp.messages, inp.tools, inp.settings)


async def _call_tool(inp: ToolCallInput) -> ToolResult:
    return await inp.tool.call(inp.arguments, inp.ctx)


def _bind_model(mw: Middleware, nxt: ModelNext) -> ModelNext:
    async def handler(inp: ModelRequestInput) -> ModelResponse:
        return await mw.wrap_model_request(inp, nxt)
    return handler


def _bind_tool(mw: Middleware, nxt: ToolNext) -> ToolNext:
    async def handler(inp: ToolCallInput) -> ToolResult:
        return await mw.wrap_tool_call(inp, nxt)
    return handler


def _bind_sub_run(mw: Middleware, inp: SubRunInput, nxt: SubRunNext) -> SubRunNext:
    async def handler() -> Any:
        return await mw.wrap_sub_run(inp, nxt)
    return handler


def with_defaults(defaults: Sequence[Middleware],
                  middleware: Sequence[Middleware]) -> list[Middleware]:
    """An agent's whole stack: ``defaults`` (outermost first), then its own ``middleware``.
    A middleware of the same type as a default replaces that default in the default's place
    (so ``Retry(RetryPolicy(max_attempts=6))`` stays outside the default breaker, as the
    default retry was); the others follow the defaults, in their order."""
    own: dict[type[Middleware], Middleware] = {}
    for mw in middleware:
        own.setdefault(type(mw), mw)
    stack = [own.get(type(d), d) for d in defaults]
    placed = {id(mw) for mw in stack}
    return [*stack, *(mw for mw in middleware if id(mw) not in placed)]


class MiddlewareStack:
    """Middleware composed once, in order (first = outermost)."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware = tuple(middleware)
        model: ModelNext = _call_model
        tool: ToolNext = _call_tool
        for mw in reversed(self.middleware):
            if type(mw).wrap_model_request is not Middleware.wrap_model_request:
                model = _bind_model(mw, model)
            if type(mw).wrap_tool_call is not Middleware.wrap_tool_call:
                tool = _bind_tool(mw, tool)
        self.model_request = model
        self.tool_call = tool
        #: True when no middleware wraps model requests / tool calls (the loop then skips
        #: building input objects).
        self.bare_model = model is _call_model
        self.bare_tool = tool is _call_tool
        #: The guards (middleware overriding ``check``), per place, in order.
        self.guards = GuardPipeline(
            [mw for mw in self.middleware if type(mw).check is not Middleware.check],
            observers=[mw.on_guard_decision for mw in self.middleware
                       if type(mw).on_guard_decision is not Middleware.on_guard_decision])
        self._sub_runs = tuple(mw for mw in self.middleware
                               if type(mw).wrap_sub_run is not Middleware.wrap_sub_run)
        #: The tools the middleware serves (:meth:`Middleware.provide_tools`), by name; the
        #: first middleware to provide a name wins.
        self.provided: dict[str, Tool] = {}
        for mw in self.middleware:
            if type(mw).provide_tools is not Middleware.provide_tools:
                for t in mw.provide_tools():
                    self.provided.setdefault(t.name, t)

    def attach(self, inp: AgentInput) -> None:
        for mw in self.middleware:
            if type(mw).on_agent is not Middleware.on_agent:
                mw.on_agent(inp)

    async def run_start(self, inp: RunStartInput) -> dict[str, Any]:
        """Every ``on_run_start``; the metadata they returned, merged (usually empty)."""
        metadata: dict[str, Any] = {}
        for mw in self.middleware:
            extra = await mw.on_run_start(inp)
            if extra:
                metadata.update(extra)
        return metadata

    async def sub_run(self, inp: SubRunInput, run: SubRunNext) -> Any:
        """``run()`` wrapped by every ``wrap_sub_run`` (first = outermost)."""
        call = run
        for mw in reversed(self._sub_runs):
            call = _bind_sub_run(mw, inp, call)
        return await call()

    async def run_end(self, inp: RunEndInput) -> None:
        for mw in reversed(self.middleware):
            await mw.on_run_end(inp)
