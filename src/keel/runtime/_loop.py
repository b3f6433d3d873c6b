"""The ReAct loop: model turn, tool calls, observations, until a valid final answer.

Every model request and tool call is a journal step with a deterministic key
(``agent/turn:N/model``, ``agent/turn:N/tool:NAME#I``), so the same loop both runs a new run
and resumes or replays a recorded one.

A tool that raises :class:`keel.Handoff` is a successful call, recorded with
``ToolResult.handoff`` set; once the turn's other calls are done the loop raises ``Handoff``
with the conversation so far (``messages``) and the call's ``step_key``; on resume or replay
the recorded call raises it again. Only the first handoff of a turn (in call order) is
raised. A tool's ``Escalate`` becomes an ``escalated`` observation and an escalation of this
agent, unless it already carries an ``escalation_id`` (a nested run escalated and a person
has the task): that one propagates unchanged and the run waits on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from keel.core import (
    ApprovalRequired,
    BudgetExceeded,
    Escalate,
    Handoff,
    KeelError,
    Message,
    ModelError,
    ModelResponse,
    ModelTurn,
    Observation,
    OutputValidationError,
    RepeatedFailure,
    RunError,
    RunEvent,
    StepRecorded,
    ToolCallPart,
    ToolCallStarted,
    ToolContext,
    ToolResultPart,
    ToolSpec,
    Usage,
    canonical_json,
    hash_messages,
    redact,
    redact_text,
    stable_hash,
)
from keel.runtime._gates import Gates
from keel.runtime._journal import Journal
from keel.runtime._middleware import ModelRequestInput, RetryHook, ToolCallInput
from keel.runtime._result import RunResult
from keel.runtime._screens import Screens, answer_escalation, input_escalation
from keel.store import JournalEntry, RunRecord
from keel.tools import Tool, ToolResult, Toolset

if TYPE_CHECKING:
    from keel.core import ModelSettings
    from keel.models import Model
    from keel.runtime._approvals import ApprovalPolicy
    from keel.runtime._escalation import EscalationPolicy
    from keel.runtime._middleware import MiddlewareStack

FINAL_TOOL = "final_result"
Emit = Callable[[RunEvent], None]
#: Returned by the output checks when the model's final answer was rejected (``None`` can be a
#: valid output).
_REJECTED: Any = object()


def _encode_tool(result: ToolResult) -> Any:
    """The tool result as stored, secrets masked (cheaply: only its strings are scanned)."""
    data = result.to_dict()
    data["content"] = redact_text(result.content)
    value = result.value
    if isinstance(value, str):
        data["value"] = redact_text(value)
    elif isinstance(value, dict | list):
        data["value"] = redact(value)
    f = data["failure"]
    if f is not None:
        f["message"] = redact_text(f["message"])
    h = data.get("handoff")
    if h is not None:
        h["reason"] = redact_text(h["reason"])
    return data


def _encode_model(resp: ModelResponse) -> Any:
    """The model response as stored, secrets masked in its text and tool arguments."""
    data = resp.to_dict()
    for part in data["parts"]:
        if "text" in part:
            part["text"] = redact_text(part["text"])
        elif "arguments" in part:
            part["arguments"] = redact_text(part["arguments"])
    return data


def _model_usage(resp: ModelResponse) -> Usage:
    return resp.usage


class HasModel(Protocol):
    """Anything that names its model (an agent, a fork's stand-in)."""

    @property
    def model(self) -> str | Model: ...


class LoopAgent(HasModel, Protocol):
    """What the ReAct loop reads of the agent it runs: its configuration and the few things
    built from it. :class:`~keel.runtime.Agent` is one; the loop depends on nothing else."""

    @property
    def name(self) -> str: ...
    @property
    def instructions(self) -> str: ...
    @property
    def toolset(self) -> Toolset: ...
    @property
    def scopes(self) -> frozenset[str]: ...
    @property
    def settings(self) -> ModelSettings: ...
    @property
    def stack(self) -> MiddlewareStack: ...
    @property
    def approval(self) -> ApprovalPolicy: ...
    @property
    def escalation(self) -> EscalationPolicy: ...
    @property
    def max_repeated_failures(self) -> int: ...
    @property
    def max_output_retries(self) -> int: ...
    @property
    def output_wrapped(self) -> bool: ...

    def resolved_model(self) -> Model: ...
    def tool_plan(self) -> ToolPlan: ...
    def output_adapter(self) -> pydantic.TypeAdapter[Any] | None: ...
    def final_result_spec(self) -> ToolSpec | None: ...


class AgentLoop:
    """One execution (fresh or resumed) of an agent's ReAct loop."""

    def __init__(self, agent: LoopAgent, journal: Journal, *, deps: Any,
                 emit: Emit | None, streaming: bool, record: RunRecord | None = None,
                 prefix: str | None = None) -> None:
        """``prefix``: the path under which this loop's steps are keyed (the agent's name for
        a run of its own; ``<pattern path>/<agent>`` for an agent inside a pattern)."""
        self.agent = agent
        self.prefix = prefix or agent.name
        self.gates = Gates(agent, journal, record, prefix=self.prefix, deps=deps)
        self.journal = journal
        self.deps = deps
        self.emit = emit
        self.streaming = streaming
        self.history: list[Message] = []
        self._sent = 0
        self._failures: dict[str, int] = {}
        self._output_retries = 0
        self._tool_escalation: str | None = None
        self._handoff: tuple[str, dict[str, str]] | None = None
        self.replayed = 0
        plan = agent.tool_plan()
        self._permitted = plan.permitted
        self._provided = agent.stack.provided
        self._final_spec = plan.final_spec
        self.specs = plan.specs
        self._specs_hash = plan.specs_hash
        guards = agent.stack.guards
        self.screens = Screens(guards, journal, agent.name, deps, record, agent.scopes)
        self._screen_output = guards.active("tool_output")
        self._screen_answer = guards.active("output")
        journal.observer = self._on_step

    # ------------------------------------------------------------------------------ driving

    async def run(self, user_input: str, *,
                  history: list[Message] | None = None) -> RunResult[Any]:
        """Run to a valid final answer. ``history``: earlier conversation to continue (its
        system messages are dropped in favour of this agent's instructions), for an agent
        that takes over a conversation (a handoff)."""
        agent = self.agent
        if agent.instructions:
            self.history.append(Message.system(agent.instructions))
        if history:
            self.history.extend(m for m in history if m.role != "system")
        self.history.append(Message.user(user_input))
        flagged = input_escalation(self.journal, self.prefix)
        if flagged is not None:  # a guard sent the user's input to a person
            self._guidance(await self.gates.escalate(Escalate(
                f"guard {flagged.guard}: {flagged.reason}", trigger="guardrail")))
        policy = agent.escalation
        if policy.enabled:
            asked = policy.check_input(user_input)
            if asked is not None:
                self._guidance(await self.gates.escalate(asked))
        turn = 0
        while True:
            try:
                done, response = await self._turn(turn)
            except (BudgetExceeded, RepeatedFailure) as exc:
                wanted = policy.from_failure(exc) if policy.enabled else None
                if wanted is None:
                    raise
                wanted.__cause__ = exc
                self._failures.clear()
                self._guidance(await self.gates.escalate(wanted))
                done = _REJECTED
            if done is not _REJECTED:
                unsure = policy.check_output(done) if policy.enabled else None
                if unsure is None:
                    return self._result(done, response)
                self._guidance(await self.gates.escalate(unsure))
            turn += 1

    async def _turn(self, turn: int) -> tuple[Any, ModelResponse]:
        """One model turn and its tool calls: the accepted output, or _REJECTED to go on."""
        response = await self._model_turn(turn)
        if self._screen_answer:
            held = answer_escalation(self.journal, f"{self.prefix}/turn:{turn}/model")
            if held is not None:  # a guard sent the answer to a person before it left
                self._guidance(await self.gates.escalate(Escalate(
                    f"guard {held.guard}: {held.reason}", trigger="guardrail")))
                return _REJECTED, response
        calls = response.tool_calls
        final = [c for c in calls if c.tool_name == FINAL_TOOL and self._final_spec]
        if final:
            return self._accept_final_call(final[0], calls), response
        if not calls:
            return self._accept_text(response.text), response
        self._handoff = None
        await self._tool_calls(turn, calls)
        if self._tool_escalation is not None:
            reason, self._tool_escalation = self._tool_escalation, None
            self._guidance(await self.gates.escalate(Escalate(reason, trigger="tool")))
        if self._handoff is not None:
            # Every call of the turn is recorded and observed; the first handoff wins.
            key, handoff = self._handoff
            self._handoff = None
            raise Handoff(handoff["target"], handoff["reason"], messages=list(self.history),
                          step_key=key)
        return _REJECTED, response

    def _guidance(self, note: str) -> None:
        """A person resolved an escalation and let the run go on: tell the model."""
        text = note.strip() or "(no note)"
        self.history.append(Message.user(f"[A human reviewed this conversation and says: "
                                         f"{text}]"))

    def _result(self, output: Any, response: ModelResponse) -> RunResult[Any]:
        tracker = self.journal.budget
        return RunResult(run_id=self.journal.run_id, agent=self.agent.name, output=output,
                         text=response.text, usage=tracker.usage, steps=tracker.steps,
                         replayed_steps=self.replayed, messages=list(self.history))

    # ---------------------------------------------------------------------------- the model

    async def _model_turn(self, turn: int) -> ModelResponse:
        agent = self.agent
        key = f"{self.prefix}/turn:{turn}/model"
        input_hash = hash_messages(self.history[self._sent:], scrub=redact_text,
                                   salt=self._specs_hash)
        self._sent = len(self.history)
        history = self.history
        specs = self.specs

        async def request() -> ModelResponse:
            model = agent.resolved_model()
            streamed = None
            if self.streaming and self.emit is not None:
                from keel.runtime._streaming import StreamingModel

                streamed = model = StreamingModel(
                    model, self.emit, screen=self.screens.chunk_screen(key, history)
                    if self._screen_answer else None,
                    hold=self._screen_answer and not agent.stack.guards.partial_ok("output"))
            try:
                if agent.stack.bare_model:
                    response = await model.request(history, specs, agent.settings)
                else:
                    inp = ModelRequestInput(run_id=self.journal.run_id, step_key=key,
                                            agent=agent.name, model=model, messages=history,
                                            tools=specs, settings=agent.settings,
                                            on_retry=self._retry_hook(key, "model", model.name),
                                            tenant=self.screens.tenant, user=self.screens.user)
                    response = await agent.stack.model_request(inp)
                if self._screen_answer:
                    response = await self.screens.answer(key, response, history,
                                                         self._final_spec is not None)
                if streamed is not None:
                    await streamed.finish(response, final=not response.tool_calls)
                return response
            except KeelError as exc:
                if isinstance(exc, RunError) and exc.step_key is None:
                    exc.step_key = key
                raise
            except Exception as exc:
                raise ModelError(f"{model.name} raised {type(exc).__name__}: {exc}",
                                 retryable=False, model=model.name, run_id=self.journal.run_id,
                                 step_key=key) from exc

        response, replayed = await self.journal.step(
            key, "model", model_name(agent), request, input_hash=input_hash,
            encode=_encode_model, decode=ModelResponse.from_dict, usage_of=_model_usage,
            scrubbed=True, defer=True)
        self.history.append(response.message)
        if self.emit is not None:
            self.emit(ModelTurn(key=key, text=response.text, usage=response.usage,
                                tool_calls=tuple((c.tool_name, c.arguments)
                                                 for c in response.tool_calls),
                                replayed=replayed))
        return response

    # -------------------------------------------------------------------------------- tools

    async def _tool_calls(self, turn: int, calls: list[ToolCallPart]) -> None:
        if len(calls) == 1:  # the common case, without the bookkeeping for parallel calls
            call = calls[0]
            key = f"{self.prefix}/turn:{turn}/tool:{call.tool_name}#0"
            result, replayed = await self._tool_step(key, call)
            part = self._observe(key, call, result, replayed)
            self.history.append(Message(role="tool", parts=(part,)))
            return
        counts: dict[str, int] = {}
        keyed: list[tuple[str, ToolCallPart]] = []
        for call in calls:
            n = counts.get(call.tool_name, 0)
            counts[call.tool_name] = n + 1
            keyed.append((f"{self.prefix}/turn:{turn}/tool:{call.tool_name}#{n}", call))
        parallel = [(k, c) for k, c in keyed if not self._runs_alone(c.tool_name)]
        alone = [(k, c) for k, c in keyed if self._runs_alone(c.tool_name)]
        outcomes: dict[str, tuple[ToolResult, bool] | BaseException] = {}
        if len(parallel) == 1:
            k, c = parallel[0]
            outcomes[k] = await self._guarded(k, c)
        elif parallel:
            results = await asyncio.gather(*(self._guarded(k, c) for k, c in parallel))
            outcomes.update({k: r for (k, _), r in zip(parallel, results, strict=True)})
        for k, c in alone:
            outcomes[k] = await self._guarded(k, c)
        waiting = [o for o in outcomes.values() if isinstance(o, ApprovalRequired)]
        if len(waiting) > 1:  # each call that needs approval gets its own decision
            ids = tuple(i for w in waiting for i in w.approval_ids)
            raise ApprovalRequired(f"{len(ids)} calls need a human's approval: "
                                   f"{', '.join(ids)}", approval_ids=ids)
        parts: list[ToolResultPart] = []
        for key, call in keyed:
            outcome = outcomes[key]
            if isinstance(outcome, BaseException):
                raise outcome
            parts.append(self._observe(key, call, *outcome))
        self.history.append(Message(role="tool", parts=tuple(parts)))

    def _runs_alone(self, name: str) -> bool:
        t = self._resolve(name)
        return t is not None and t.meta.run_alone

    def _resolve(self, name: str) -> Tool | None:
        """The agent's tool of this name (one its scopes permit), else one its middleware
        serves (:meth:`Middleware.provide_tools`), else None."""
        t = self._permitted.get(name)
        if t is None and self._provided:
            t = self._provided.get(name)
        return t

    async def _guarded(self, key: str,
                       call: ToolCallPart) -> tuple[ToolResult, bool] | BaseException:
        """Run one call; an exception is returned (not raised) so sibling calls finish and
        their results are recorded before the run stops."""
        try:
            return await self._tool_step(key, call)
        except Exception as exc:  # re-raised by the caller after siblings finish
            return exc

    async def _tool_step(self, key: str, call: ToolCallPart) -> tuple[ToolResult, bool]:  # noqa: C901 - replay, gates, reconcile; to split
        """Run or replay one call; returns (result, replayed)."""
        agent = self.agent
        tool = self._resolve(call.tool_name)
        if self.emit is not None:
            self.emit(ToolCallStarted(key=key, tool_name=call.tool_name, arguments=call.arguments,
                                      replayed=self.journal.is_recorded(key)))
        idempotent = True if tool is None else tool.meta.idempotent
        input_hash = _tool_hash(call.tool_name, call.arguments)
        arguments = call.arguments
        denied: ToolResult | None = None
        if tool is not None and not self.journal.is_recorded(key):
            arguments, denied = await self._before_call(key, tool, arguments, input_hash)
            if denied is not None:
                tool, idempotent = None, True  # record the denial instead of calling
        ctx = ToolContext(run_id=self.journal.run_id, step_key=key, agent=agent.name,
                          idempotency_key=f"{self.journal.run_id}/{key}", scopes=agent.scopes,
                          deps=self.deps, tenant=self.screens.tenant, user=self.screens.user,
                          steps=self.journal)

        async def execute() -> ToolResult:
            if tool is None:
                return denied if denied is not None else self._missing_tool(call.tool_name)
            try:
                if agent.stack.bare_tool:
                    result = await tool.call(arguments, ctx)
                else:
                    inp = ToolCallInput(run_id=ctx.run_id, step_key=key, agent=agent.name,
                                        tool=tool, arguments=arguments, ctx=ctx,
                                        on_retry=self._retry_hook(key, "tool", tool.name),
                                        call_id=call.call_id)
                    result = await agent.stack.tool_call(inp)
                if self._screen_output:
                    result = await self.screens.tool_output(key, tool, arguments, result,
                                                            self.history)
                return result
            except Escalate as exc:  # recorded as the call's result, then escalated
                if exc.escalation_id is not None:
                    raise  # a person already has the task (a nested run escalated): wait
                return ToolResult.fail("escalated", exc.reason, retryable=False,
                                       hint="A human takes over from here.")
            except Handoff as exc:  # a successful call; the run hands off after the turn
                return ToolResult.handed_off(exc.target, exc.reason)

        reconcile = None
        intent = None
        if not idempotent:
            intent = {"tool": call.tool_name, "arguments": arguments,
                      "idempotency_key": ctx.idempotency_key}
        if tool is not None and tool.reconcile is not None:
            hook = tool.reconcile

            async def reconcile_call() -> Any | None:
                args = json.loads(arguments or "{}")
                value = await hook(args, ctx)
                if value is None:
                    return None
                return ToolResult.of(value).to_dict()

            reconcile = reconcile_call
        return await self.journal.step(
            key, "tool", call.tool_name, execute,
            input_hash=input_hash, intent=intent,
            idempotent=idempotent, reconcile=reconcile, encode=_encode_tool,
            decode=ToolResult.from_dict, scrubbed=True,
            flush_first=tool is not None and tool.meta.risk != "read")

    async def _before_call(self, key: str, tool: Tool, arguments: str,
                           input_hash: str) -> tuple[str, ToolResult | None]:
        """The guards on the call's arguments, then the approval gate: the arguments to call
        with, or a result to record instead of calling (blocked, escalated, denied)."""
        decision = await self.screens.tool_args(key, tool, arguments, self.history)
        approve = None
        if decision is not None:
            if decision.action == "block":
                denied = decision.error_type == "permission_denied"
                return arguments, ToolResult.fail(
                    decision.error_type, decision.reason if denied else
                    f"guard {decision.guard} blocked this call: {decision.reason}",
                    retryable=False, hint="Do not retry this call: it is not permitted. Use "
                    "another tool or tell the user what you cannot do." if denied else
                    "Do not repeat this call; take another approach or tell the user.")
            if decision.action == "escalate":
                return arguments, ToolResult.fail(
                    "escalated", f"guard {decision.guard}: {decision.reason}", retryable=False,
                    hint="A human takes over from here.")
            if decision.action == "redact":
                arguments = decision.text or "{}"
            elif decision.action == "approve":
                approve = decision
        gate = await self.gates.approval(key, tool, arguments, input_hash, self.history,
                                         guard=approve)
        if isinstance(gate, ToolResult):
            return arguments, gate
        return (arguments if gate is None else gate), None

    def _retry_hook(self, key: str, kind: str, name: str) -> RetryHook:
        """Journal each failed attempt of a step and charge it to the budget."""
        journal = self.journal

        async def on_retry(attempt: int, error: str, delay: float) -> None:
            attempt_key = f"{key}/attempt:{attempt}"
            journal.budget.check(kind, run_id=journal.run_id, step_key=attempt_key)
            if journal.recorded(attempt_key) is None:
                entry = await journal.write(attempt_key, "result", "attempt", name, "",
                                            {"attempt": attempt, "error": error,
                                             "retry_in_s": round(delay, 3)})
                journal.log_step(entry, tool_name=name if kind == "tool" else None,
                                 success=False, usage=None,
                                 error_type=error.partition(":")[0] or "error")
            journal.budget.record(None)

        return on_retry

    def _missing_tool(self, name: str) -> ToolResult:
        if name in self.agent.toolset:
            return ToolResult.fail(
                "permission_denied", f"this agent may not call {name}: it needs scopes "
                f"{sorted(self.agent.toolset.get(name).meta.scopes)}",  # type: ignore[union-attr]
                retryable=False, hint="Use one of the tools you were given.")
        available = ", ".join(self._permitted.names) or "(none)"
        return ToolResult.fail("unknown_tool", f"there is no tool named {name!r}",
                               retryable=True, hint=f"Available tools: {available}.")

    def _observe(self, key: str, call: ToolCallPart, result: ToolResult,
                 replayed: bool) -> ToolResultPart:
        content = result.content
        if result.handoff is not None:
            self._handoff = self._handoff or (key, result.handoff)
        elif result.failure is not None and result.failure.error_type == "escalated":
            self._tool_escalation = self._tool_escalation or result.failure.message
        elif result.failure is not None:
            sig = f"{call.tool_name}\x00{_canonical_args(call.arguments)}"
            n = self._failures.get(sig, 0) + 1
            self._failures[sig] = n
            limit = self.agent.max_repeated_failures
            if n >= limit:
                raise RepeatedFailure(
                    f"{call.tool_name} failed {n} times with the same arguments "
                    f"({result.failure.error_type}: {result.failure.message}); stopping instead "
                    "of looping. Raise Agent(max_repeated_failures=...) to allow more",
                    run_id=self.journal.run_id, step_key=key)
            if n >= 2:
                content += (f"\n[keel: this exact call has now failed {n} times; the run stops "
                            f"after {limit}. Change the arguments or take another approach.]")
        if self.emit is not None:
            self.emit(Observation(key=key, tool_name=call.tool_name, content=content,
                                  is_error=result.is_error, replayed=replayed))
        return ToolResultPart(call_id=call.call_id, tool_name=call.tool_name, content=content,
                              is_error=result.is_error)

    # ------------------------------------------------------------------------- final output

    def _accept_final_call(self, final: ToolCallPart, calls: list[ToolCallPart]) -> Any:
        adapter = self.agent.output_adapter()
        assert adapter is not None
        try:
            data = json.loads(final.arguments or "{}")
            if self.agent.output_wrapped:
                data = data.get("result") if isinstance(data, dict) else data
            return adapter.validate_python(data)
        except (ValueError, pydantic.ValidationError) as exc:
            message = _validation_message(exc)
        rejected = json.dumps({"error": f"final_result rejected: {message}"})
        parts = [ToolResultPart(call_id=c.call_id, tool_name=c.tool_name,
                                content=(rejected if c is final else
                                         '{"error": "not run: final_result was called"}'),
                                is_error=True) for c in calls]
        self.history.append(Message(role="tool", parts=tuple(parts)))
        self._rejected_output(message)
        return _REJECTED

    def _accept_text(self, text: str) -> Any:
        adapter = self.agent.output_adapter()
        if adapter is None:
            return text
        try:
            data = json.loads(_strip_fences(text))
            if self.agent.output_wrapped and isinstance(data, dict) and "result" in data:
                data = data["result"]
            return adapter.validate_python(data)
        except (ValueError, pydantic.ValidationError) as exc:
            message = _validation_message(exc)
        self.history.append(Message.user(
            f"Your answer does not match the required output: {message}. Call the "
            f"{FINAL_TOOL} tool with arguments that match its schema."))
        self._rejected_output(message)
        return _REJECTED

    def _rejected_output(self, message: str) -> None:
        if self.emit is not None:
            self.emit(Observation(key=f"{self.prefix}/output", tool_name=FINAL_TOOL,
                                  content=f"final answer rejected: {message}", is_error=True))
        self._output_retries += 1
        if self._output_retries > self.agent.max_output_retries:
            raise OutputValidationError(
                f"the model's final answer failed validation {self._output_retries} times "
                f"(last: {message}); raise Agent(max_output_retries=...) or simplify the output "
                "type", run_id=self.journal.run_id)

    # ------------------------------------------------------------------------------ observer

    def _on_step(self, entry: JournalEntry, value: Any, replayed: bool) -> None:
        if replayed:
            self.replayed += 1
        else:
            if isinstance(value, ModelResponse):
                self.journal.log_step(entry, tool_name=None, success=True, usage=value.usage)
            elif isinstance(value, ToolResult):
                f = value.failure
                self.journal.log_step(entry, tool_name=entry.name, success=f is None, usage=None,
                                      error_type=None if f is None else f.error_type)
        if self.emit is not None:
            self.emit(StepRecorded(key=entry.key, kind=entry.kind, name=entry.name,
                                   latency_ms=entry.latency_ms, replayed=replayed))


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolPlan:
    """What an agent offers the model, computed once per agent: the tools its scopes permit,
    their specs (plus ``final_result`` for a typed output) and a hash of them for the
    journal's divergence check."""

    permitted: Toolset
    specs: list[ToolSpec]
    final_spec: ToolSpec | None
    specs_hash: str

    @classmethod
    def build(cls, agent: LoopAgent) -> ToolPlan:
        permitted = agent.toolset.permitted(agent.scopes)
        specs = permitted.specs()
        final_spec = agent.final_result_spec()
        if final_spec is not None:
            specs.append(final_spec)
        return cls(permitted=permitted, specs=specs, final_spec=final_spec,
                   specs_hash=stable_hash([model_name(agent), [s.name for s in specs]]))


def model_name(agent: HasModel) -> str:
    m = agent.model
    return m if isinstance(m, str) else m.name


def _tool_hash(name: str, arguments: str) -> str:
    raw = f"{name}\x00{redact_text(arguments)}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=10).hexdigest()


def _canonical_args(arguments: str) -> str:
    try:
        return canonical_json(json.loads(arguments))
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for json
        return arguments


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t


def _validation_message(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}"
                         for e in exc.errors(include_url=False))
    return f"not valid JSON ({exc})"

