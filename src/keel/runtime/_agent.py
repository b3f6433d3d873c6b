"""Agent: instructions + model + tools (+ an optional typed output), run as a ReAct loop
with the journal, budgets, validation and repeated-failure detection switched on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Self, TypeVar, Unpack

import pydantic

from keel.core import ConfigError, ModelSettings, RunEvent, RunFinished, ToolSpec, UserError
from keel.models import Model, parse_model_id, resolve_model
from keel.runtime._approvals import ApprovalPolicy
from keel.runtime._budget import Budget
from keel.runtime._defaults import legacy_defaults
from keel.runtime._escalation import EscalationPolicy
from keel.runtime._forks import as_forked
from keel.runtime._journal import Durability, Journal
from keel.runtime._loop import AgentLoop, ToolPlan, model_name
from keel.runtime._middleware import AgentInput, Middleware, MiddlewareStack, with_defaults
from keel.runtime._runner import Launch, execute, using_store
from keel.runtime._runs import RUN_OPTIONS, RunOptions, Runs, check_options, new_run
from keel.runtime._version import VERSION_KEY, agent_version
from keel.store import RunRecord
from keel.tools import Tool, Toolset

OutputT = TypeVar("OutputT")
_DEFAULT_ESCALATION = EscalationPolicy(on_repeated_failure=False, on_budget_exhausted=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Everything an :class:`Agent` is made of, as one frozen value (checked when made).
    ``agent.config`` is the agent's; ``agent.clone(**changes)`` is a ``dataclasses.replace``
    of it. ``api_key`` is never shown (``repr``) nor stored with a run."""

    name: str = "agent"
    model: str | Model
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    output_type: type[Any] | None = None
    scopes: frozenset[str] = frozenset()
    budget: Budget = field(default_factory=Budget)
    settings: ModelSettings = field(default_factory=ModelSettings)
    max_repeated_failures: int = 3
    max_output_retries: int = 3
    middleware: tuple[Middleware, ...] = ()
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    escalation: EscalationPolicy = _DEFAULT_ESCALATION
    durability: Durability = field(default_factory=Durability)
    default_middleware: bool = True
    compensate_on_failure: bool = True
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._check_name_and_model()
        for name, kind, fix in _TYPED_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ConfigError(name, f"expected {fix}, got {type(value).__name__}")
        if self.max_repeated_failures < 1:
            raise ConfigError("max_repeated_failures", "must be at least 1")
        if self.max_output_retries < 0:
            raise ConfigError("max_output_retries", "must be 0 or more")

    def _check_name_and_model(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or "/" in name or "#" in name or ":" in name:
            raise ConfigError("name", f"{name!r} must be non-empty without '/', '#' or ':' "
                              "(it is the first part of every step key)")
        if isinstance(self.model, str):
            parse_model_id(self.model)  # an unknown id fails here, at definition time
        elif not isinstance(self.model, Model):
            raise ConfigError("model", f"expected a model id string or a keel Model, got "
                              f"{type(self.model).__name__}")
        if self.api_key is not None:
            if not isinstance(self.api_key, str) or not self.api_key:
                raise ConfigError("api_key", "must be a non-empty string (or None)")
            if isinstance(self.model, Model):
                raise ConfigError("api_key", "the model is already resolved (a Model object "
                                  "carries its own key); give a model id with api_key=, or "
                                  "resolve_model(id, api_key=...) and no api_key= here")

    @classmethod
    def of(cls, **given: Any) -> AgentConfig:
        """A config from constructor-style arguments: ``None`` means the default, iterables
        become tuples or frozensets."""
        return cls(**_config_values(given))


_CONFIG_FIELDS = frozenset(f.name for f in fields(AgentConfig))
#: The fields checked by type when a config is made: (field, type, what to pass instead).
_TYPED_FIELDS: tuple[tuple[str, type[Any], str], ...] = (
    ("budget", Budget, "a Budget (Budget.unlimited() switches the limits off)"),
    ("settings", ModelSettings, "ModelSettings"),
    ("approval", ApprovalPolicy, "an ApprovalPolicy (ApprovalPolicy.off() switches approval "
     "gates off)"),
    ("escalation", EscalationPolicy, "an EscalationPolicy (EscalationPolicy.off() switches "
     "escalation off)"),
    ("compensate_on_failure", bool, "True or False"),
    ("default_middleware", bool, "True or False (to change one default, pass a middleware "
     "of its type in middleware=)"),
)


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

    ``model`` is a model id (``"openai:gpt-4o-mini"``; ``api_key=`` is then handed to
    :func:`~keel.resolve_model` instead of the provider's environment variable) or a resolved
    :class:`~keel.Model`.

    Default middleware: this class (``keel.runtime.Agent``, the L2 runtime) has none of its
    own; ``keel.Agent`` is this agent composed with :func:`keel.defaults` (retry, circuit
    breaker ...), outside ``middleware``. A middleware of the same type as a default
    replaces that default; ``default_middleware=False`` drops them all. See
    docs/middleware.md.
    """

    #: A run of a conversation (``run(..., conversation=)``) starts from the earlier turns.
    takes_history: ClassVar[bool] = True

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
        api_key: str | None = None,
    ) -> None:
        self._configure(AgentConfig.of(
            name=name, model=model, instructions=instructions, tools=tools,
            output_type=output_type, scopes=scopes, budget=budget, settings=settings,
            max_repeated_failures=max_repeated_failures, max_output_retries=max_output_retries,
            middleware=middleware, approval=approval, escalation=escalation,
            durability=durability, default_middleware=default_middleware,
            compensate_on_failure=compensate_on_failure, api_key=api_key))

    def _configure(self, config: AgentConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.instructions = config.instructions
        self.toolset = Toolset(config.tools)
        if "final_result" in self.toolset and config.output_type is not None:
            raise UserError("'final_result' is reserved for the typed output; rename that tool.")
        self.output_type: type[OutputT] | None = config.output_type
        self.scopes = config.scopes
        self.budget = config.budget
        self.settings = config.settings
        self.max_repeated_failures = config.max_repeated_failures
        self.max_output_retries = config.max_output_retries
        self.default_middleware = config.default_middleware
        self.user_middleware = config.middleware
        defaults = self.make_defaults() if config.default_middleware else ()
        self.stack = MiddlewareStack(with_defaults(defaults, config.middleware))
        self.stack.attach(AgentInput(agent=config.name, tools=config.tools,
                                     scopes=config.scopes, model=config.model))
        self.approval = config.approval
        # By default only a user who asks for a person escalates; failures (repeated failure,
        # budget exhausted) fail the run with its error (resumable) unless a policy is given.
        self.escalation = config.escalation
        self.durability = config.durability
        #: When the run fails or is cancelled, undo its completed compensable tool calls
        #: (tools with ``compensate=``), newest first: a saga (docs/sagas.md).
        self.compensate_on_failure = config.compensate_on_failure
        self._model: Model | None = config.model if isinstance(config.model, Model) else None
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        self._plan: ToolPlan | None = None
        self.output_wrapped = False
        output_schema: Any = None if config.output_type is None else "str"
        if config.output_type is not None and config.output_type is not str:
            self._adapter = pydantic.TypeAdapter(config.output_type)
            output_schema = self._adapter.json_schema()
            self.output_wrapped = output_schema.get("type") != "object"
        #: A short content hash of what defines this agent's behaviour (instructions, model,
        #: tools and their schemas and risk, output schema, settings): equal agents have
        #: equal versions in every process. Each run records it in its metadata
        #: (``"version"``). See docs/rollout.md.
        self.version: str = agent_version(
            model=model_name(self), instructions=config.instructions, tools=config.tools,
            output_schema=output_schema, settings=config.settings, scopes=config.scopes,
            max_repeated_failures=config.max_repeated_failures,
            max_output_retries=config.max_output_retries)

    def make_defaults(self) -> Sequence[Middleware]:
        """Fresh default middleware for this agent, outermost first. The L2 runtime has none
        of its own (it cannot see the layers above it); ``keel.Agent`` returns
        :func:`keel.defaults`. Subclass and override to compose your own defaults."""
        return legacy_defaults()

    def clone(self, **changes: Any) -> Self:
        """A copy of this agent with some settings changed (``model=``, ``instructions=``
        ...: the fields of :class:`AgentConfig`); used by ``fork`` for counterfactual
        re-runs. It has fresh default middleware (a new circuit breaker ...)."""
        unknown = set(changes) - _CONFIG_FIELDS
        if unknown:
            raise UserError(f"Agent.clone() got unknown settings: {', '.join(sorted(unknown))}"
                            f"; it takes {', '.join(sorted(_CONFIG_FIELDS))}")
        if "model" in changes and isinstance(changes["model"], Model) \
                and "api_key" not in changes:
            changes["api_key"] = None  # a resolved model carries its own key
        config = replace(self.config, **_config_values(changes))
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)  # what a subclass added; the rest is rebuilt
        copy._configure(config)
        return copy

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) else self.model.name
        return f"<Agent {self.name} model={model}>"

    # --------------------------------------------------------------------------- internals

    def prepare(self) -> None:
        self.resolved_model()

    def for_record(self, record: RunRecord) -> Agent[OutputT]:
        return as_forked(self, record)

    def run_metadata(self) -> dict[str, Any]:
        return {"model": model_name(self), VERSION_KEY: self.version}

    def driver(self, journal: Journal, *, deps: Any, emit: Callable[[RunEvent], None] | None,
               streaming: bool, record: RunRecord, prefix: str | None = None) -> AgentLoop:
        return AgentLoop(self, journal, deps=deps, emit=emit, streaming=streaming,
                         record=record, prefix=prefix)

    def resolved_model(self) -> Model:
        if self._model is None:
            self._model = resolve_model(self.model, api_key=self.config.api_key)
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
                     **options: Unpack[RunOptions]) -> AsyncIterator[RunEvent]:
        """Run (or resume) as a stream of events: text and tool-call deltas, model turns,
        tool calls, observations and step records, ending in one ``RunFinished`` whose result
        equals what :meth:`run` returns. A failure is raised after the events so far.
        Options: :class:`RunOptions`, as :meth:`run` (a resume takes ``store``, ``deps``
        and ``on_event``, which sees each event before it is yielded)."""
        check_options("stream", options, RUN_OPTIONS)
        if (input is None) == (resume is None):
            raise UserError("stream() takes an input for a new run or resume=RUN_ID, not both.")
        queue: asyncio.Queue[RunEvent | BaseException | None] = asyncio.Queue()
        on_event = options.get("on_event")
        emit: Callable[[RunEvent], None] = queue.put_nowait
        if on_event is not None:
            def emit(event: RunEvent) -> None:
                on_event(event)
                queue.put_nowait(event)

        if resume is None:
            how = new_run(self, input, {**options, "on_event": emit}, streaming=True)
        else:
            only_new = sorted(set(options) - {"store", "deps", "on_event"})
            if only_new:
                raise UserError(f"stream(resume=...) continues a run: {only_new[0]}= is for a "
                                "new run (a deadline is stored with the run when it starts)")
            how = Launch(resume_id=resume, deps=options.get("deps"), emit=emit, streaming=True)
        store = options.get("store")

        async def drive() -> None:
            try:
                async with using_store(store) as opened:
                    await execute(self, opened, how)
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



_AS_CONFIG: dict[str, Callable[[Any], Any]] = {
    "tools": tuple, "scopes": frozenset, "middleware": tuple, "durability": Durability.of}
_NONE_MEANS: dict[str, Callable[[], Any]] = {
    "budget": Budget, "settings": ModelSettings, "approval": ApprovalPolicy,
    "escalation": lambda: _DEFAULT_ESCALATION}


def _config_values(given: dict[str, Any]) -> dict[str, Any]:
    """Constructor-style arguments (``tools=[...]``, ``budget=None``) as config values."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is None and key in _NONE_MEANS:
            value = _NONE_MEANS[key]()
        elif key in _AS_CONFIG:
            value = _AS_CONFIG[key](value)
        out[key] = value
    return out
