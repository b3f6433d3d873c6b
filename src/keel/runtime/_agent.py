"""Agent: instructions + model + tools (+ an optional typed output), run as a ReAct loop
with the journal, budgets, validation and repeated-failure detection switched on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import pydantic

from keel.core import ConfigError, ModelSettings, RunEvent, RunFinished, ToolSpec, UserError
from keel.models import Model, parse_model_id, resolve_model
from keel.runtime._approvals import ApprovalPolicy
from keel.runtime._budget import Budget
from keel.runtime._defaults import default_middleware as defaults_for
from keel.runtime._escalation import EscalationPolicy
from keel.runtime._forks import as_forked
from keel.runtime._journal import Durability, Journal
from keel.runtime._loop import AgentLoop, ToolPlan, model_name
from keel.runtime._middleware import Middleware, MiddlewareStack
from keel.runtime._runner import Launch, execute, using_store
from keel.runtime._runs import Runs
from keel.store import RunRecord, RunStore
from keel.tools import Tool, Toolset

OutputT = TypeVar("OutputT")
_DEFAULT_ESCALATION = EscalationPolicy(on_repeated_failure=False, on_budget_exhausted=False)


class Agent(Runs[OutputT]):
    """A ReAct agent.

    Everything is on by default: argument validation, per-tool timeouts, a per-run
    :class:`Budget`, repeated-failure detection, structured step logs and the journal (an
    SQLite file at ``.keel/runs.db`` unless ``store=`` or ``KEEL_STORE`` says otherwise),
    a lease so that one worker at a time continues a run, approval gates
    (:class:`ApprovalPolicy`: ``irreversible`` tools wait for a human) and escalation to a
    person (:class:`EscalationPolicy`). ``durability`` chooses when journal records are
    committed (:class:`Durability`; ``"balanced"`` by default). ``compensate_on_failure``
    (on by default) undoes a failed or cancelled run's completed calls of tools that declare
    ``compensate=``, newest first (a saga, see docs/sagas.md).
    """

    def __init__(
        self,
        name: str = "agent",
        *,
        model: str | Model,
        instructions: str = "",
        tools: Iterable[Tool] = (),
        output_type: type[OutputT] | None = None,
        scopes: Iterable[str] = (),
        budget: Budget | None = None,
        settings: ModelSettings | None = None,
        max_repeated_failures: int = 3,
        max_output_retries: int = 3,
        middleware: Sequence[Middleware] = (),
        approval: ApprovalPolicy | None = None,
        escalation: EscalationPolicy | None = None,
        durability: Durability | str | None = None,
        default_middleware: bool = True,
        compensate_on_failure: bool = True,
    ) -> None:
        if not name or "/" in name or "#" in name or ":" in name:
            raise ConfigError("name", f"{name!r} must be non-empty without '/', '#' or ':' "
                              "(it is the first part of every step key)")
        if isinstance(model, str):
            parse_model_id(model)  # an unknown id fails here, at definition time
        elif not isinstance(model, Model):
            raise ConfigError("model", f"expected a model id string or a keel Model, got "
                              f"{type(model).__name__}")
        if max_repeated_failures < 1:
            raise ConfigError("max_repeated_failures", "must be at least 1")
        if max_output_retries < 0:
            raise ConfigError("max_output_retries", "must be 0 or more")
        self.name = name
        self.model = model
        self.instructions = instructions
        self.toolset = Toolset(tools)
        if "final_result" in self.toolset and output_type is not None:
            raise UserError("'final_result' is reserved for the typed output; rename that tool.")
        self.output_type = output_type
        self.scopes = frozenset(scopes)
        self.budget = budget or Budget()
        self.settings = settings or ModelSettings()
        self.max_repeated_failures = max_repeated_failures
        self.max_output_retries = max_output_retries
        middleware = tuple(middleware)
        self.default_middleware = default_middleware
        self.user_middleware = middleware
        defaults = defaults_for(middleware) if default_middleware else []
        self.stack = MiddlewareStack([*defaults, *middleware])
        if approval is not None and not isinstance(approval, ApprovalPolicy):
            raise ConfigError("approval", "expected an ApprovalPolicy (ApprovalPolicy.off() "
                              "switches approval gates off)")
        if escalation is not None and not isinstance(escalation, EscalationPolicy):
            raise ConfigError("escalation", "expected an EscalationPolicy "
                              "(EscalationPolicy.off() switches escalation off)")
        self.approval = approval or ApprovalPolicy()
        # By default only a user who asks for a person escalates; failures (repeated failure,
        # budget exhausted) fail the run with its error (resumable) unless a policy is given.
        self.escalation = escalation or _DEFAULT_ESCALATION
        self.durability = Durability.of(durability)
        if not isinstance(compensate_on_failure, bool):
            raise ConfigError("compensate_on_failure", "must be True or False")
        #: When the run fails or is cancelled, undo its completed compensable tool calls
        #: (tools with ``compensate=``), newest first: a saga (docs/sagas.md).
        self.compensate_on_failure = compensate_on_failure
        self._model: Model | None = model if isinstance(model, Model) else None
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        self._plan: ToolPlan | None = None
        self.output_wrapped = False
        if output_type is not None and output_type is not str:
            self._adapter = pydantic.TypeAdapter(output_type)
            schema = self._adapter.json_schema()
            self.output_wrapped = schema.get("type") != "object"

    def clone(self, **changes: Any) -> Agent[OutputT]:
        """A copy of this agent with some constructor arguments changed (``model=``,
        ``instructions=`` ...); used by ``fork`` for counterfactual re-runs."""
        args: dict[str, Any] = {
            "name": self.name, "model": self.model, "instructions": self.instructions,
            "tools": list(self.toolset), "output_type": self.output_type,
            "scopes": self.scopes, "budget": self.budget, "settings": self.settings,
            "max_repeated_failures": self.max_repeated_failures,
            "max_output_retries": self.max_output_retries,
            "middleware": self.user_middleware, "approval": self.approval,
            "default_middleware": self.default_middleware,
            "escalation": self.escalation, "durability": self.durability,
            "compensate_on_failure": self.compensate_on_failure,
        }
        unknown = set(changes) - set(args)
        if unknown:
            raise UserError(f"Agent.clone() got unknown settings: {', '.join(sorted(unknown))}")
        args.update(changes)
        return Agent(**args)

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) else self.model.name
        return f"<Agent {self.name} model={model}>"

    # --------------------------------------------------------------------------- internals

    def prepare(self) -> None:
        self.resolved_model()

    def for_record(self, record: RunRecord) -> Agent[OutputT]:
        return as_forked(self, record)

    def run_metadata(self) -> dict[str, Any]:
        return {"model": model_name(self)}

    def driver(self, journal: Journal, *, deps: Any, emit: Callable[[RunEvent], None] | None,
               streaming: bool, record: RunRecord, prefix: str | None = None) -> AgentLoop:
        return AgentLoop(self, journal, deps=deps, emit=emit, streaming=streaming,
                         record=record, prefix=prefix)

    def resolved_model(self) -> Model:
        if self._model is None:
            self._model = resolve_model(self.model)
        return self._model

    def tool_plan(self) -> ToolPlan:
        """The tools offered to the model (built on first use; an agent's tools, scopes and
        output type do not change after construction)."""
        if self._plan is None:
            self._plan = ToolPlan.build(self)
        return self._plan

    def output_adapter(self) -> pydantic.TypeAdapter[Any] | None:
        return self._adapter

    def final_result_spec(self) -> ToolSpec | None:
        if self._adapter is None:
            return None
        schema = self._adapter.json_schema()
        if self.output_wrapped:
            schema = {"type": "object", "properties": {"result": schema}, "required": ["result"]}
        return ToolSpec(name="final_result", parameters=schema,
                        description="Give the final answer. Call this once, when done.")

    # ------------------------------------------------------------------------------ running

    async def stream(self, input: str | None = None, *, resume: str | None = None,
                     store: RunStore | str | None = None, run_id: str | None = None,
                     deps: Any = None) -> AsyncIterator[RunEvent]:
        """Run (or resume) as a stream of events: text and tool-call deltas, model turns,
        tool calls, observations and step records, ending in one ``RunFinished`` whose result
        equals what :meth:`run` returns. A failure is raised after the events so far."""
        if (input is None) == (resume is None):
            raise UserError("stream() takes an input for a new run or resume=RUN_ID, not both.")
        queue: asyncio.Queue[RunEvent | BaseException | None] = asyncio.Queue()

        async def drive() -> None:
            try:
                async with using_store(store) as opened:
                    await execute(self, opened, Launch(
                        input=input, resume_id=resume, run_id=run_id, deps=deps,
                        emit=queue.put_nowait, streaming=True))
            except BaseException as exc:  # handed to the consumer
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, RunFinished):
                    break
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
